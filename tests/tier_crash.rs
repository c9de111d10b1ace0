//! SIGKILL while segments are being tiered to S3 (moto on 127.0.0.1): a child process appends
//! without pause to a store whose tiering thread uploads every sealed segment and drops local
//! copies at once; the parent kills it at random moments and checks, after every kill, that no
//! segment is both gone locally and missing remotely, and that every acknowledged record reads
//! back through a reopened store.
#![cfg(feature = "s3")]

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::moto::{http, start_moto};
use common::{crash_rng, spawn_acking_child};
use rand::Rng;
use shardlog::log::remote::{read_remote_log, RemoteSegment, S3Bucket, S3BucketConfig};
use shardlog::{
    Bucket, FlushPolicy, Offset, PutRecord, ReadLimits, ShardId, ShardOptions, Store, StoreOptions,
    StreamConfig, TierConfig, TierOptions,
};

const DIR_ENV: &str = "SHARDLOG_TIER_CRASH_DIR";
const PORT_ENV: &str = "SHARDLOG_TIER_CRASH_PORT";

fn bucket(port: u16) -> Arc<S3Bucket> {
    Arc::new(
        S3Bucket::new(&S3BucketConfig {
            bucket: "crash".into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..S3BucketConfig::default()
        })
        .unwrap(),
    )
}

fn options(port: u16, interval: Option<Duration>) -> StoreOptions {
    StoreOptions {
        shard: ShardOptions {
            flush: FlushPolicy::Always,
            segment_bytes: 16 * 1024,
            ..ShardOptions::default()
        },
        retention_interval: None,
        tier: Some(TierConfig {
            bucket: bucket(port),
            options: TierOptions {
                local_retention_bytes: Some(32 * 1024),
                local_retention: None,
                interval,
                ..TierOptions::default()
            },
        }),
        ..StoreOptions::default()
    }
}

fn data(i: u64) -> Vec<u8> {
    let mut d = format!("record {i:010} ").into_bytes();
    d.resize(300, b'a' + (i % 26) as u8);
    d
}

/// The child: puts records 0, 1, 2, … (going on from what the store holds), ten a call,
/// acknowledging the count after each call; its tiering thread runs every millisecond.
#[test]
#[ignore = "run by the crash test as its child process"]
fn child_appender() {
    let dir = std::env::var(DIR_ENV).expect("the parent sets the directory");
    let port: u16 = std::env::var(PORT_ENV).unwrap().parse().unwrap();
    let store =
        Store::open(&dir, options(port, Some(Duration::from_millis(1)))).expect("child open");
    let stream = match store.stream("s") {
        Ok(stream) => stream,
        Err(_) => store
            .create_stream("s", StreamConfig::provisioned(1))
            .unwrap(),
    };
    let mut next = stream.shard_ends().unwrap().values().sum::<u64>();
    let mut out = std::io::stdout();
    loop {
        let datas: Vec<Vec<u8>> = (next..next + 10).map(data).collect();
        let records: Vec<PutRecord<'_>> = datas.iter().map(|d| PutRecord::new("k", d)).collect();
        for result in stream.put_records(&records).unwrap() {
            result.unwrap();
        }
        next += 10;
        writeln!(out, "ack {next}").unwrap();
        out.flush().unwrap();
    }
}

/// Every segment of the shard is local or recorded as remote with its object in the bucket
/// (of the recorded size), and together they leave no offset out.
fn check_segments_are_somewhere(shard_dir: &Path, bucket: &S3Bucket, round: usize) {
    let remote: std::collections::BTreeMap<u64, RemoteSegment> = read_remote_log(shard_dir)
        .unwrap_or_else(|e| panic!("round {round}: remote.log: {e}"))
        .into_values()
        .map(|s| (s.base, s))
        .collect();
    let objects: std::collections::BTreeMap<String, u64> =
        bucket.list("streams/").unwrap().into_iter().collect();
    for segment in remote.values() {
        let key = objects
            .keys()
            .find(|k| k.ends_with(&format!("/{:020}.seg", segment.base)))
            .unwrap_or_else(|| {
                panic!(
                    "round {round}: segment {} recorded as remote but not in the bucket",
                    segment.base
                )
            });
        assert_eq!(objects[key], segment.bytes, "round {round}: {key}");
    }
    let mut local: Vec<u64> = std::fs::read_dir(shard_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    local.sort_unstable();
    // Walk the segments oldest first: each begins where the one before ended.
    let mut bases: Vec<u64> = local.iter().chain(remote.keys()).copied().collect();
    bases.sort_unstable();
    bases.dedup();
    for pair in bases.windows(2) {
        if let Some(r) = remote.get(&pair[0]) {
            assert_eq!(
                r.end, pair[1],
                "round {round}: remote segment {} ends at {}, the next begins at {}",
                pair[0], r.end, pair[1]
            );
        }
    }
}

#[test]
fn sigkill_during_uploads_loses_no_segment_and_no_acknowledged_record() {
    let moto = start_moto();
    assert_eq!(http(moto.port, "PUT", "/crash").0, 200);
    let mut rng = crash_rng("tier crash test");
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        (DIR_ENV, dir.path().display().to_string()),
        (PORT_ENV, moto.port.to_string()),
    ];
    let mut acked = 0;
    let mut uploads_seen = 0;
    let mut remote_only_read = 0;
    for round in 0..8 {
        let (mut child, reader) = spawn_acking_child("child_appender", &envs);
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1200)));
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(n) = reader.join().unwrap() {
            acked = acked.max(n);
        }
        let shards = dir.path().join("streams/s/shards");
        let Some(shard_dir) = std::fs::read_dir(&shards)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path())
        else {
            continue;
        };
        let bucket = bucket(moto.port);
        check_segments_are_somewhere(&shard_dir, &bucket, round);
        uploads_seen = bucket.list("streams/").unwrap().len();
        // Reopened (without its own tiering pass), every acknowledged record reads back.
        let store = Store::open(dir.path(), options(moto.port, None))
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let stream = store.stream("s").unwrap();
        let mut from = Offset::new(0);
        let mut seen = 0u64;
        loop {
            let read = stream
                .read(ShardId(0), from, ReadLimits::default())
                .unwrap_or_else(|e| panic!("round {round}: read at {from}: {e}"));
            if read.records.is_empty() {
                break;
            }
            for record in &read.records {
                assert_eq!(&record.data[..], &data(seen)[..], "round {round}");
                seen += 1;
            }
            from = read.end.next;
        }
        assert!(
            seen >= acked,
            "round {round}: {acked} acknowledged, {seen} read back"
        );
        remote_only_read = remote_only_read.max(store.tier_status().segments.remote_only);
    }
    assert!(
        remote_only_read > 0,
        "no read went to the bucket: no segment was only remote"
    );
    assert!(acked > 0, "the child never acknowledged a put");
    assert!(uploads_seen > 10, "few uploads happened: {uploads_seen}");
}
