//! The wire API over segments that are only in the object store: GetRecords from a sequence
//! number inside a remote segment (a range read), and SubscribeToShard's event stream.
#![cfg(feature = "server")]

use crate::common;

use std::sync::Arc;

use base64::Engine;
use common::http::Client;
use serde_json::json;
use shardlog::{Offset, PutRecord, SequenceNumber, Store, StreamConfig, TierOptions};

const RECORDS: usize = 300;

fn data(i: usize) -> Vec<u8> {
    format!("record {i:04} {}", "z".repeat(200)).into_bytes()
}

/// A store whose stream `orders` (one shard) holds [`RECORDS`] records, all but the newest
/// segment's only in the bucket, read through windows of 2 KiB and more.
fn remote_only_store(root: &std::path::Path) -> Arc<Store> {
    let tier = TierOptions {
        local_retention_bytes: Some(0),
        local_retention: None,
        range_read_bytes: 2 * 1024,
        ..TierOptions::default()
    };
    let options = common::tiered_store_options(&root.join("bucket"), 16 * 1024, tier);
    let store = Store::open(root.join("data"), options).unwrap();
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    for i in 0..RECORDS {
        stream.put_record(&PutRecord::new("k", &data(i))).unwrap();
    }
    store.tier_now().unwrap();
    let status = store.tier_status();
    assert!(status.segments.remote_only >= 3, "{status:?}");
    Arc::new(store)
}

fn sequence(i: usize) -> String {
    SequenceNumber::new(0, Offset::new(i as u64)).to_string()
}

fn decoded(record: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(record["Data"].as_str().unwrap())
        .unwrap()
}

#[test]
fn get_records_from_a_sequence_number_inside_a_remote_segment() {
    let root = tempfile::tempdir().unwrap();
    let store = remote_only_store(root.path());
    let server = common::serve::in_process(Arc::clone(&store));
    let mut c = Client::connect(server.local_addr()).unwrap();
    let iterator = c
        .kinesis(
            "GetShardIterator",
            &json!({"StreamName": "orders", "ShardId": "shardId-000000000000",
                "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": sequence(150)}),
        )
        .unwrap()
        .json()["ShardIterator"]
        .clone();
    let mut next = iterator;
    let mut got = Vec::new();
    while got.len() < RECORDS - 150 {
        let reply = c
            .kinesis("GetRecords", &json!({"ShardIterator": next, "Limit": 25}))
            .unwrap();
        assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
        let body = reply.json();
        let records = body["Records"].as_array().unwrap();
        assert!(
            !records.is_empty(),
            "a read short of the end returns records"
        );
        got.extend(records.iter().map(decoded));
        next = body["NextShardIterator"].clone();
    }
    let expected: Vec<Vec<u8>> = (150..RECORDS).map(data).collect();
    assert_eq!(got, expected);
    let cache = store.tier_status().cache;
    assert!(cache.range_reads > 0, "{cache:?}");
    server.stop().unwrap();
}

#[test]
fn subscribe_to_shard_streams_records_that_are_only_remote() {
    let root = tempfile::tempdir().unwrap();
    let store = remote_only_store(root.path());
    let server = common::serve::in_process(Arc::clone(&store));
    let mut c = Client::connect(server.local_addr()).unwrap();
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/orders";
    let consumer = c
        .kinesis(
            "RegisterStreamConsumer",
            &json!({"StreamARN": arn, "ConsumerName": "archiver"}),
        )
        .unwrap()
        .json();
    let request = json!({
        "ConsumerARN": consumer["Consumer"]["ConsumerARN"],
        "ShardId": "shardId-000000000000",
        "StartingPosition": {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": sequence(40)},
    });
    let Some(events) = common::http::subscribe_h2(server.local_addr(), &request, 2) else {
        println!("SKIPPED: no curl with HTTP/2");
        return;
    };
    let expected: Vec<Vec<u8>> = (40..RECORDS).map(data).collect();
    assert_eq!(common::http::subscribed_records(&events), expected);
    server.stop().unwrap();
}
