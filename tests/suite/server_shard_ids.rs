//! Shard ids as Kinesis reads them from callers: `shardId-2`, `shard-2`, `anything-2` and `2`
//! all name `shardId-000000000002`, wherever a request gives a shard id.
#![cfg(feature = "server")]

use crate::common;

use std::sync::Arc;

use common::http::Client;
use serde_json::json;
use shardlog::{Store, StoreOptions};

fn records_read(c: &mut Client, shard_id: &str) -> Vec<String> {
    let reply = c
        .kinesis(
            "GetShardIterator",
            &json!({"StreamName": "s", "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .unwrap();
    assert_eq!(
        reply.status,
        200,
        "{shard_id}: {}",
        common::text(&reply.body)
    );
    let iterator = reply.json()["ShardIterator"].as_str().unwrap().to_string();
    let page = c
        .kinesis("GetRecords", &json!({"ShardIterator": iterator}))
        .unwrap()
        .json();
    page["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["PartitionKey"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn short_shard_ids_name_the_shard_kinesis_would() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let server = common::serve::in_process(Arc::clone(&store));
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 3}))
        .unwrap();
    // A record into shard 1 (its explicit hash key is in shard 1's third of the key space).
    let in_shard_1 = (u128::MAX / 3 + 10).to_string();
    let put = c
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "s", "PartitionKey": "one", "Data": "AA==", "ExplicitHashKey": in_shard_1}),
        )
        .unwrap()
        .json();
    assert_eq!(put["ShardId"], "shardId-000000000001");
    for id in [
        "shardId-000000000001",
        "shardId-1",
        "shard-1",
        "x-y-1",
        "1",
        "0001",
    ] {
        assert_eq!(records_read(&mut c, id), ["one"], "{id}");
    }
    assert!(records_read(&mut c, "0").is_empty());

    // An id of no shard is named the long way in the error.
    let missing = c
        .kinesis(
            "GetShardIterator",
            &json!({"StreamName": "s", "ShardId": "9", "ShardIteratorType": "LATEST"}),
        )
        .unwrap();
    assert_eq!(missing.json()["__type"], "ResourceNotFoundException");
    let message = missing.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("shardId-000000000009"), "{message}");

    // Resharding takes them too.
    let split = c
        .kinesis(
            "SplitShard",
            &json!({"StreamName": "s", "ShardToSplit": "shard-0", "NewStartingHashKey": "1000"}),
        )
        .unwrap();
    assert_eq!(split.status, 200, "{}", common::text(&split.body));
    let merge = c
        .kinesis(
            "MergeShards",
            &json!({"StreamName": "s", "ShardToMerge": "1", "AdjacentShardToMerge": "shardId-2"}),
        )
        .unwrap();
    assert_eq!(merge.status, 200, "{}", common::text(&merge.body));
    let open: Vec<String> = c
        .kinesis(
            "ListShards",
            &json!({"StreamName": "s", "ShardFilter": {"Type": "AT_LATEST"}}),
        )
        .unwrap()
        .json()["Shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ShardId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        open,
        [
            "shardId-000000000003",
            "shardId-000000000004",
            "shardId-000000000005"
        ]
    );
}
