//! SIGKILL during heavy delivery: a child process puts batches into a delivery stream (whose
//! background worker delivers gzip objects as fast as it can) and reports each acknowledged
//! batch; the parent kills it at random moments, restarts it, and at the end checks that the
//! union of all delivered objects holds every acknowledged record exactly once, and nothing but
//! records that were put.
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
    FirehoseOptions,
};
use shardlog::{Store, StoreOptions};

const DIR_ENV: &str = "SHARDLOG_FIREHOSE_CRASH_DIR";
const ROUND_ENV: &str = "SHARDLOG_FIREHOSE_CRASH_ROUND";
const BATCH: u64 = 20;

fn open(dir: &Path, interval: Option<Duration>) -> Firehose {
    let store = Store::open(
        dir.join("data"),
        StoreOptions {
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .expect("open store");
    Firehose::open(
        Arc::new(store),
        FirehoseOptions {
            delivery_interval: interval,
            ..FirehoseOptions::default()
        },
    )
    .expect("open firehose")
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
            .create_delivery_stream(
                "events",
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
                    source_stream: None,
                    tags: Default::default(),
                    settings: Default::default(),
                },
            )
            .expect("create"),
    };
    let mut out = std::io::stdout();
    for b in 0u64.. {
        let records: Vec<Vec<u8>> = (b * BATCH..(b + 1) * BATCH)
            .map(|i| format!("r{round}-{i}-{}", "p".repeat((i % 50) as usize)).into_bytes())
            .collect();
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

#[test]
fn sigkill_during_heavy_delivery_loses_and_duplicates_nothing() {
    let mut rng = crash_rng("firehose crash test");
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for round in 0..6u64 {
        let envs = [
            (DIR_ENV, dir.path().display().to_string()),
            (ROUND_ENV, round.to_string()),
        ];
        let (mut child, reader) = spawn_acking_child("child_putter", &envs);
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
        child.kill().unwrap();
        child.wait().unwrap();
        acked.push(reader.join().unwrap().unwrap_or(0));
    }
    let firehose = open(dir.path(), None);
    firehose.flush().expect("final delivery");
    assert_eq!(
        firehose.describe_delivery_stream("events").unwrap().backlog,
        0
    );
    let lines = delivered_lines(&dir.path().join("out"));
    let mut seen = HashSet::new();
    for line in &lines {
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
