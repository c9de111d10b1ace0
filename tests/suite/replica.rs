//! Read replicas: a `shardlog serve --replica-of BUCKET` process follows a primary that tiers
//! into the bucket (a directory here; the same code reads S3): streams, reshards and records
//! appear as the primary uploads them, and every write is refused naming the bucket.

use crate::common;

use std::time::{Duration, Instant};

use common::http::Client;
use common::serve::spawn_server_with;
use serde_json::json;
use shardlog::{PutRecord, ShardId, Store, StreamConfig, TierOptions};

fn primary(data: &std::path::Path, bucket: &std::path::Path) -> Store {
    // Every round seals the active segment: the replica sees every record.
    let tier = TierOptions {
        max_segment_age: Duration::ZERO,
        ..TierOptions::default()
    };
    Store::open(data, common::tiered_store_options(bucket, 16 * 1024, tier)).unwrap()
}

/// Every record's data of the stream's shard `shard`, read through the replica's wire API.
pub(crate) fn replica_records(client: &mut Client, shard: &str) -> Vec<String> {
    let reply = client
        .kinesis(
            "GetShardIterator",
            &json!({"StreamName": "orders", "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .unwrap();
    assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
    let mut iterator = reply.json()["ShardIterator"].as_str().unwrap().to_string();
    let mut out = Vec::new();
    loop {
        let reply = client
            .kinesis("GetRecords", &json!({"ShardIterator": iterator}))
            .unwrap();
        assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
        let page = reply.json();
        let records = page["Records"].as_array().unwrap();
        if records.is_empty() {
            return out;
        }
        for r in records {
            let data = base64_decode(r["Data"].as_str().unwrap());
            out.push(String::from_utf8(data).unwrap());
        }
        match page["NextShardIterator"].as_str() {
            Some(next) => iterator = next.to_string(),
            None => return out,
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Waits (up to 20 s) until `check` holds.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "the replica never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replica_follows_uploads_and_reshards_and_refuses_writes() {
    let root = tempfile::tempdir().unwrap();
    let bucket = root.path().join("bucket");
    let store = primary(&root.path().join("primary"), &bucket);
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    let put = |from: u32, to: u32| {
        for i in from..to {
            let data = format!("record {i:05} {}", "z".repeat(100));
            stream
                .put_record(&PutRecord::new(&format!("key {i}"), data.as_bytes()))
                .unwrap();
        }
    };
    put(0, 300);
    store.tier_now().unwrap();

    let (server, addr) = spawn_server_with(
        &root.path().join("replica"),
        "never",
        &[
            "--replica-of",
            bucket.to_str().unwrap(),
            "--replica-poll-ms",
            "100",
        ],
    );
    let mut client = Client::connect(addr).unwrap();
    let listed = client.kinesis("ListStreams", &json!({})).unwrap().json();
    assert_eq!(listed["StreamNames"], json!(["orders"]));
    let records = replica_records(&mut client, "shardId-000000000000");
    assert_eq!(records.len(), 300);
    assert!(records[0].starts_with("record 00000"));

    // Writes are refused, naming the bucket.
    let refused = client
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "orders", "PartitionKey": "k", "Data": "AA=="}),
        )
        .unwrap();
    assert_eq!(refused.status, 400);
    let error = refused.json();
    assert_eq!(error["__type"], "AccessDeniedException");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(bucket.to_str().unwrap()),
        "{error}"
    );
    let refused = client
        .kinesis("DeleteStream", &json!({"StreamName": "orders"}))
        .unwrap();
    assert_eq!(refused.json()["__type"], "AccessDeniedException");

    // New records, and a reshard, appear once uploaded.
    put(300, 500);
    stream.split_shard(ShardId(0), 1u128 << 127).unwrap();
    put(500, 800);
    store.tier_now().unwrap();
    eventually("the reshard", || {
        let shards = client
            .kinesis("ListShards", &json!({"StreamName": "orders"}))
            .unwrap()
            .json();
        shards["Shards"].as_array().map_or(0, Vec::len) == 3
    });
    eventually("the new records", || {
        replica_records(&mut client, "shardId-000000000000").len() == 500
    });
    let children: usize = ["shardId-000000000001", "shardId-000000000002"]
        .iter()
        .map(|id| replica_records(&mut client, id).len())
        .sum();
    assert_eq!(children, 300);

    // A second stream appears; a deleted one goes.
    store
        .create_stream("audit", StreamConfig::provisioned(1))
        .unwrap();
    store.tier_now().unwrap();
    eventually("the new stream", || {
        client.kinesis("ListStreams", &json!({})).unwrap().json()["StreamNames"]
            == json!(["audit", "orders"])
    });
    store.delete_stream("audit").unwrap();
    store.tier_now().unwrap();
    eventually("the deletion", || {
        client.kinesis("ListStreams", &json!({})).unwrap().json()["StreamNames"]
            == json!(["orders"])
    });
    assert!(server.terminate());
}

#[test]
fn a_replica_streams_records_to_subscribe_to_shard() {
    let root = tempfile::tempdir().unwrap();
    let bucket = root.path().join("bucket");
    let store = primary(&root.path().join("primary"), &bucket);
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    for i in 0..200 {
        stream
            .put_record(&PutRecord::new("k", format!("record {i:05}").as_bytes()))
            .unwrap();
    }
    // Consumers are registered on the primary; the replica learns of them from its manifest.
    stream
        .register_consumer("archiver", &Default::default())
        .unwrap();
    store.tier_now().unwrap();
    let (server, addr) = spawn_server_with(
        &root.path().join("replica"),
        "never",
        &["--replica-of", bucket.to_str().unwrap()],
    );
    let mut client = Client::connect(addr).unwrap();
    let described = client
        .kinesis(
            "DescribeStreamConsumer",
            &json!({"StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders",
                "ConsumerName": "archiver"}),
        )
        .unwrap()
        .json();
    let request = json!({
        "ConsumerARN": described["ConsumerDescription"]["ConsumerARN"],
        "ShardId": "shardId-000000000000",
        "StartingPosition": {"Type": "TRIM_HORIZON"},
    });
    let Some(events) = common::http::subscribe_h2(addr, &request, 2) else {
        println!("SKIPPED: no curl with HTTP/2");
        return;
    };
    let expected: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("record {i:05}").into_bytes())
        .collect();
    assert_eq!(common::http::subscribed_records(&events), expected);
    assert!(server.terminate());
}
