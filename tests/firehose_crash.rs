//! SIGKILL during heavy delivery: a child process puts batches into a delivery stream (whose
//! background worker delivers gzip objects as fast as it can) and reports each acknowledged
//! batch; the parent kills it at random moments, restarts it, and at the end checks that the
//! union of all delivered objects holds every acknowledged record exactly once, and nothing but
//! records that were put. The same for a delivery stream reading a Kinesis stream (whose
//! positions its consumer group keeps) while the stream is resharded.
#![cfg(feature = "firehose")]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{crash_rng, spawn_acking_child};
use rand::Rng;
use shardlog::firehose::{
    BufferingHints, Compression, DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose,
    FirehoseOptions, SourceStart,
};
use shardlog::{Store, StoreOptions};

const DIR_ENV: &str = "SHARDLOG_FIREHOSE_CRASH_DIR";
const ROUND_ENV: &str = "SHARDLOG_FIREHOSE_CRASH_ROUND";
const BATCH: u64 = 20;

fn open(dir: &Path, interval: Option<Duration>) -> Firehose {
    open_store(dir, interval).1
}

fn open_store(dir: &Path, interval: Option<Duration>) -> (Arc<Store>, Firehose) {
    let store = Arc::new(
        Store::open(
            dir.join("data"),
            StoreOptions {
                retention_interval: None,
                ..StoreOptions::default()
            },
        )
        .expect("open store"),
    );
    let firehose = Firehose::open(
        Arc::clone(&store),
        FirehoseOptions {
            delivery_interval: interval,
            ..FirehoseOptions::default()
        },
    )
    .expect("open firehose");
    (store, firehose)
}

fn gzip_delivery(dir: &Path, source_stream: Option<&str>) -> DeliveryStreamConfig {
    DeliveryStreamConfig {
        delivery: DeliveryConfig {
            buffering: BufferingHints {
                size_mib: 1,
                interval_secs: 0,
            },
            compression: Compression::Gzip,
            record_delimiter: Some(b"\n".to_vec()),
            ..DeliveryConfig::default()
        },
        destination: DestinationConfig::LocalDirectory {
            path: dir.join("out"),
        },
        transform: None,
        source_stream: source_stream.map(str::to_string),
        source_start: SourceStart::TrimHorizon,
        tags: Default::default(),
        settings: Default::default(),
    }
}

/// The records a child puts in `round`, batch `b`.
fn batch_records(round: u64, b: u64) -> Vec<Vec<u8>> {
    (b * BATCH..(b + 1) * BATCH)
        .map(|i| format!("r{round}-{i}-{}", "p".repeat((i % 50) as usize)).into_bytes())
        .collect()
}

/// The child: puts batches of `BATCH` records `r{round}-{i}` and prints `ack N` after each, N
/// the number of records acknowledged so far.
#[test]
#[ignore = "run by the crash test as its child process"]
fn child_putter() {
    let dir = std::env::var(DIR_ENV).expect("the parent sets the directory");
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let dir = Path::new(&dir);
    let firehose = open(dir, Some(Duration::from_millis(5)));
    let stream = match firehose.delivery_stream("events") {
        Ok(s) => s,
        Err(_) => firehose
            .create_delivery_stream("events", gzip_delivery(dir, None))
            .expect("create"),
    };
    let mut out = std::io::stdout();
    for b in 0u64.. {
        let records = batch_records(round, b);
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let results = stream.put_record_batch(&refs).expect("put");
        assert!(results.iter().all(Result::is_ok));
        writeln!(out, "ack {}", (b + 1) * BATCH).unwrap();
        out.flush().unwrap();
    }
}

fn delivered_lines(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, bytes) in common::snapshot_dir(out) {
        if key
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with('.'))
        {
            continue; // a temporary file a killed write left, never an object
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{key}: not a whole gzip object: {e}"));
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

/// The child for a stream source: puts batches into the 2-shard stream `orders` (splitting a
/// shard in rounds 2 and 4) that the delivery stream `orders-archive` reads.
#[test]
#[ignore = "run by the crash test as its child process"]
fn child_stream_putter() {
    use shardlog::{PutRecord, StreamConfig};
    let dir = std::env::var(DIR_ENV).expect("the parent sets the directory");
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let dir = Path::new(&dir);
    let (store, firehose) = open_store(dir, Some(Duration::from_millis(5)));
    let orders = match store.stream("orders") {
        Ok(s) => s,
        Err(_) => store
            .create_stream("orders", StreamConfig::provisioned(2))
            .expect("create stream"),
    };
    if firehose.delivery_stream("orders-archive").is_err() {
        firehose
            .create_delivery_stream("orders-archive", gzip_delivery(dir, Some("orders")))
            .expect("create");
    }
    let mut out = std::io::stdout();
    for b in 0u64.. {
        if b == 10 && (round == 2 || round == 4) {
            // Split the open shard with the widest range, in the middle of it.
            let widest = orders
                .describe()
                .shards
                .into_iter()
                .filter(|s| s.ending_sequence_number.is_none())
                .max_by_key(|s| s.hash_key_range.end - s.hash_key_range.start)
                .expect("an open shard");
            let range = widest.hash_key_range;
            let middle = range.start + (range.end - range.start) / 2;
            orders.split_shard(widest.shard_id, middle).expect("split");
        }
        let records = batch_records(round, b);
        let keys: Vec<String> = (0..BATCH).map(|i| format!("k{}", (b + i) % 7)).collect();
        let puts: Vec<PutRecord<'_>> = records
            .iter()
            .zip(&keys)
            .map(|(data, key)| PutRecord::new(key, data))
            .collect();
        let results = orders.put_records(&puts).expect("put");
        assert!(results.iter().all(Result::is_ok));
        writeln!(out, "ack {}", (b + 1) * BATCH).unwrap();
        out.flush().unwrap();
    }
}

/// Kills `child` (a putter) at random moments over six rounds; returns per round how many
/// records it acknowledged.
fn kill_rounds(test: &str, child: &str, dir: &Path) -> Vec<u64> {
    let mut rng = crash_rng(test);
    let mut acked = Vec::new();
    for round in 0..6u64 {
        let envs = [
            (DIR_ENV, dir.display().to_string()),
            (ROUND_ENV, round.to_string()),
        ];
        let (mut process, reader) = spawn_acking_child(child, &envs);
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
        process.kill().unwrap();
        process.wait().unwrap();
        acked.push(reader.join().unwrap().unwrap_or(0));
    }
    acked
}

#[test]
fn sigkill_during_heavy_delivery_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let acked = kill_rounds("firehose crash test", "child_putter", dir.path());
    let firehose = open(dir.path(), None);
    firehose.flush().expect("final delivery");
    assert_eq!(
        firehose.describe_delivery_stream("events").unwrap().backlog,
        0
    );
    check_exactly_once(&delivered_lines(&dir.path().join("out")), &acked);
}

#[test]
fn sigkill_during_delivery_from_a_resharded_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let acked = kill_rounds(
        "firehose stream-source crash test",
        "child_stream_putter",
        dir.path(),
    );
    let (store, firehose) = open_store(dir.path(), None);
    firehose.flush().expect("final delivery");
    assert_eq!(
        firehose
            .describe_delivery_stream("orders-archive")
            .unwrap()
            .backlog,
        0
    );
    let shards = store.stream("orders").unwrap().describe().shards.len();
    assert!(shards >= 4, "the child split twice: {shards} shards");
    check_exactly_once(&delivered_lines(&dir.path().join("out")), &acked);
}

/// Every acknowledged record delivered exactly once; of the rest only a round's batch in flight.
fn check_exactly_once(lines: &[String], acked: &[u64]) {
    let mut seen = HashSet::new();
    for line in lines {
        assert!(seen.insert(line.clone()), "delivered twice: {line}");
    }
    let mut total_acked = 0;
    for (round, &n) in acked.iter().enumerate() {
        total_acked += n;
        for i in 0..n {
            let line = format!("r{round}-{i}-{}", "p".repeat((i % 50) as usize));
            assert!(seen.contains(&line), "acknowledged but lost: {line}");
        }
        // Anything else of this round is the batch in flight when the child died.
        let extra = lines
            .iter()
            .filter(|l| l.starts_with(&format!("r{round}-")))
            .count() as u64;
        assert!(
            extra <= n + BATCH,
            "round {round}: {extra} delivered, {n} acknowledged"
        );
    }
    assert!(total_acked > 0, "the child never acknowledged a batch");
    eprintln!(
        "{} records delivered, {total_acked} acknowledged",
        lines.len()
    );
}
