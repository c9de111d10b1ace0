//! Tiered storage against a real S3-compatible server (moto on 127.0.0.1): a store whose
//! sealed segments go to the bucket, read back through the Kinesis read path once only remote,
//! and a bucket that is down for a while.
#![cfg(feature = "s3")]

use std::sync::Arc;
use std::time::Duration;

use crate::common::moto::{http, start_moto};
use shardlog::log::remote::{S3Bucket, S3BucketConfig};
use shardlog::stream::Start;
use shardlog::{
    Bucket, ReadLimits, ShardId, ShardOptions, Store, StoreOptions, StreamConfig, TierConfig,
    TierOptions,
};

fn bucket(port: u16, name: &str) -> Arc<S3Bucket> {
    Arc::new(
        S3Bucket::new(&S3BucketConfig {
            bucket: name.into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..S3BucketConfig::default()
        })
        .unwrap(),
    )
}

fn tiered_store(dir: &std::path::Path, bucket: Arc<S3Bucket>) -> Store {
    tiered_store_with(
        dir,
        bucket,
        TierOptions {
            prefix: "tiered/".into(),
            local_retention_bytes: Some(128 * 1024),
            local_retention: None,
            cache_bytes: 256 * 1024,
            ..TierOptions::default()
        },
    )
}

/// A store with 64 KiB segments tiered into `bucket` with `options`; rounds run when the test
/// asks.
fn tiered_store_with(dir: &std::path::Path, bucket: Arc<S3Bucket>, options: TierOptions) -> Store {
    Store::open(
        dir,
        StoreOptions {
            shard: ShardOptions {
                segment_bytes: 64 * 1024,
                ..ShardOptions::default()
            },
            retention_interval: None,
            tier: Some(TierConfig {
                bucket,
                options: TierOptions {
                    interval: None,
                    ..options
                },
            }),
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Puts `count` records of 500 bytes numbered from `from` into `stream` (one shard).
fn put(store: &Store, from: u32, count: u32) {
    let stream = store.stream("orders").unwrap();
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(100) {
        let datas: Vec<Vec<u8>> = chunk.iter().map(|&i| data(i)).collect();
        let records: Vec<_> = datas
            .iter()
            .map(|d| shardlog::stream::PutRecord::new("key", d))
            .collect();
        for result in stream.put_records(&records).unwrap() {
            result.unwrap();
        }
    }
}

fn data(i: u32) -> Vec<u8> {
    let mut d = format!("record {i:08} ").into_bytes();
    d.resize(500, b'a' + (i % 26) as u8);
    d
}

/// Every record of the stream's one shard, read through the stream from `start`.
fn read_from(store: &Store, start: Start) -> Vec<Vec<u8>> {
    let stream = store.stream("orders").unwrap();
    let shard = ShardId(0);
    let mut from = stream.resolve(shard, start).unwrap();
    let mut out = Vec::new();
    loop {
        let read = stream.read(shard, from, ReadLimits::default()).unwrap();
        if read.records.is_empty() {
            return out;
        }
        from = read.end.next;
        out.extend(read.records.into_iter().map(|r| r.data.to_vec()));
    }
}

#[test]
fn segments_tier_to_s3_and_read_back_through_the_stream() {
    let moto = start_moto();
    let (status, _) = http(moto.port, "PUT", "/tiered-bucket");
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(moto.port, "tiered-bucket");
    let store = tiered_store(dir.path(), Arc::clone(&bucket));
    store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    put(&store, 0, 2000);
    let report = store.tier_now().unwrap();
    assert!(report.uploaded >= 10, "{report:?}");
    assert!(report.dropped_local >= 5, "{report:?}");
    let status = store.tier_status();
    assert_eq!(status.segments.local_only, 0, "{status:?}");
    assert!(status.segments.remote_only >= 5, "{status:?}");
    // Objects: every uploaded segment and index, and the stream's manifest.
    let objects = bucket.list("tiered/streams/orders/").unwrap();
    assert!(
        objects.iter().any(|(k, _)| k.ends_with("/stream.json")),
        "{objects:?}"
    );
    let segments = objects.iter().filter(|(k, _)| k.ends_with(".seg")).count();
    assert_eq!(segments, report.uploaded, "{objects:?}");
    // Local disk: about the local retention.
    let shard_dir = std::fs::read_dir(dir.path().join("streams/orders/shards"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let local: u64 = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        local <= 128 * 1024 + 2 * 64 * 1024 + 8192,
        "{local} bytes local"
    );
    // Every record reads back, from the start and from a sequence number inside a remote
    // segment.
    let expected: Vec<Vec<u8>> = (0..2000).map(data).collect();
    assert_eq!(read_from(&store, Start::TrimHorizon), expected);
    let stream = store.stream("orders").unwrap();
    let first = stream
        .read(
            ShardId(0),
            shardlog::Offset::new(0),
            ReadLimits::records(300),
        )
        .unwrap();
    let seq = first.records[250].sequence_number;
    assert_eq!(read_from(&store, Start::At(seq)), expected[250..].to_vec());
    assert!(store.tier_status().cache.downloads > 0);
    // Reopened: the same.
    drop(stream);
    drop(store);
    let store = tiered_store(dir.path(), Arc::clone(&bucket));
    assert_eq!(read_from(&store, Start::TrimHorizon), expected);
}

#[test]
fn reads_inside_remote_segments_fetch_ranges_from_s3() {
    let moto = start_moto();
    let (status, _) = http(moto.port, "PUT", "/ranged-bucket");
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(moto.port, "ranged-bucket");
    let store = tiered_store_with(
        dir.path(),
        Arc::clone(&bucket),
        TierOptions {
            local_retention_bytes: Some(0),
            local_retention: None,
            range_read_bytes: 8 * 1024,
            ..TierOptions::default()
        },
    );
    store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    put(&store, 0, 2000);
    store.tier_now().unwrap();
    assert!(store.tier_status().segments.remote_only >= 10);
    let stream = store.stream("orders").unwrap();
    let expected: Vec<Vec<u8>> = (0..2000).map(data).collect();
    // From sequence numbers inside remote segments (never a segment's first record: 64 KiB
    // segments hold more than 100 records of 500 bytes).
    for at in [250u32, 777, 1234] {
        let seq = shardlog::SequenceNumber::new(0, shardlog::Offset::new(u64::from(at)));
        let read = stream
            .read(
                ShardId(0),
                stream.resolve(ShardId(0), Start::At(seq)).unwrap(),
                ReadLimits::records(20),
            )
            .unwrap();
        let got: Vec<Vec<u8>> = read.records.iter().map(|r| r.data.to_vec()).collect();
        assert!(!got.is_empty());
        assert_eq!(got, expected[at as usize..at as usize + got.len()].to_vec());
    }
    let after = store.tier_status().cache;
    assert!(after.range_reads >= 3, "{after:?}");
    assert_eq!(after.downloads, 0, "{after:?}");
    // Reading on from there reaches the end.
    assert_eq!(
        read_from(
            &store,
            Start::After(shardlog::SequenceNumber::new(
                0,
                shardlog::Offset::new(1500)
            ))
        ),
        expected[1501..].to_vec()
    );
}

#[test]
fn appends_go_on_while_the_bucket_is_down_and_uploads_resume() {
    // The port of a server that is not there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let store = tiered_store(dir.path(), bucket(port, "late-bucket"));
    store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    put(&store, 0, 1000);
    assert!(store.tier_now().is_err());
    put(&store, 1000, 1000);
    let status = store.tier_status();
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(status.segments.local_only >= 10, "{status:?}");
    assert_eq!(status.segments.remote_only + status.segments.both, 0);
    // The server comes up on that port.
    let moto = crate::common::moto::start_moto_on(port);
    let (code, _) = http(moto.port, "PUT", "/late-bucket");
    assert_eq!(code, 200);
    let report = store.tier_now().unwrap();
    assert_eq!(report.uploaded, status.segments.local_only, "{report:?}");
    let status = store.tier_status();
    assert_eq!(status.last_error, None);
    assert_eq!(status.segments.local_only, 0);
    let expected: Vec<Vec<u8>> = (0..2000).map(data).collect();
    assert_eq!(read_from(&store, Start::TrimHorizon), expected);
}

#[test]
fn restore_from_s3_brings_back_every_uploaded_record() {
    let moto = start_moto();
    assert_eq!(http(moto.port, "PUT", "/backup").0, 200);
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(moto.port, "backup");
    {
        let store = tiered_store_with(
            &dir.path().join("primary"),
            bucket,
            TierOptions {
                prefix: "site-a/".into(),
                max_segment_age: Duration::ZERO,
                ..TierOptions::default()
            },
        );
        store
            .create_stream("orders", StreamConfig::provisioned(1))
            .unwrap();
        put(&store, 0, 1500);
        store.tier_now().unwrap();
    }
    let restored = dir.path().join("restored");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["restore", "--from", "s3://backup/site-a", "--s3-endpoint"])
        .arg(format!("http://127.0.0.1:{}", moto.port))
        .arg(&restored)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&restored, StoreOptions::default()).unwrap();
    let expected: Vec<Vec<u8>> = (0..1500).map(data).collect();
    assert_eq!(read_from(&store, Start::TrimHorizon), expected);
}

/// A replica server following a primary that tiers into moto, through a reshard.
#[cfg(feature = "server")]
#[test]
fn a_replica_follows_a_primary_through_s3() {
    use crate::replica::{eventually, replica_records};
    use serde_json::json;
    let moto = start_moto();
    assert_eq!(http(moto.port, "PUT", "/shared").0, 200);
    let dir = tempfile::tempdir().unwrap();
    let store = tiered_store_with(
        &dir.path().join("primary"),
        bucket(moto.port, "shared"),
        TierOptions {
            prefix: "east/".into(),
            max_segment_age: Duration::ZERO,
            ..TierOptions::default()
        },
    );
    store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    put(&store, 0, 400);
    store.tier_now().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let (server, addr) = crate::common::serve::spawn_server_env(
        &dir.path().join("replica"),
        "never",
        &[
            "--replica-of",
            "s3://shared/east",
            "--tier-s3-endpoint",
            &endpoint,
            "--replica-poll-ms",
            "100",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let mut client = crate::common::http::Client::connect(addr).unwrap();
    assert_eq!(
        replica_records(&mut client, "shardId-000000000000").len(),
        400
    );
    let stream = store.stream("orders").unwrap();
    stream.split_shard(ShardId(0), 1u128 << 127).unwrap();
    put(&store, 400, 300);
    store.tier_now().unwrap();
    eventually("the children's records", || {
        let shards = client
            .kinesis("ListShards", &json!({"StreamName": "orders"}))
            .unwrap()
            .json();
        shards["Shards"].as_array().map_or(0, Vec::len) == 3
            && ["shardId-000000000001", "shardId-000000000002"]
                .iter()
                .map(|id| replica_records(&mut client, id).len())
                .sum::<usize>()
                == 300
    });
    assert!(server.terminate());
}
