//! Consumer groups end to end: a 4-shard stream consumed by 2 workers (threads) through
//! `Worker::process_round`, checkpointing every batch; records/s, and the lag while a producer
//! puts at a fixed rate.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shardlog::consumer::{ConsumerGroup, GroupConfig, ProcessOptions};
use shardlog::{PutRecord, Store, StoreOptions, StreamConfig, StreamRecord};

const RECORDS: usize = 200_000;
const SHARDS: u32 = 4;
const WORKERS: usize = 2;

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            StoreOptions {
                retention_interval: None,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    store
        .create_stream("s", StreamConfig::provisioned(SHARDS))
        .unwrap();
    (dir, store)
}

fn put(store: &Store, from: usize, count: usize) {
    let stream = store.stream("s").unwrap();
    let data = [b'x'; 100];
    let keys: Vec<String> = (from..from + count).map(|i| format!("k{i}")).collect();
    for chunk in keys.chunks(500) {
        let batch: Vec<PutRecord<'_>> = chunk.iter().map(|k| PutRecord::new(k, &data)).collect();
        for r in stream.put_records(&batch).unwrap() {
            r.unwrap();
        }
    }
}

/// Runs WORKERS workers until every record put so far is checkpointed (or `stop` is set, when
/// `wait_for_lag_zero` is false). Returns the records handed to the closures (at least once:
/// a shard moving to another worker mid-batch is processed again from its checkpoint).
fn consume(group: &Arc<ConsumerGroup>, stop: &AtomicBool, wait_for_lag_zero: bool) -> u64 {
    let options = ProcessOptions {
        max_records: 10_000,
        idle_wait: Duration::from_millis(1),
    };
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let worker = group.worker(&format!("w{w}"));
            let done = &done;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let report = worker
                        .process_round(&options, &mut |_: &str, r: &[StreamRecord]| {
                            done.fetch_add(r.len() as u64, Ordering::Relaxed);
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                    if report.records == 0 {
                        std::thread::sleep(options.idle_wait);
                    }
                }
                worker.release().unwrap();
            });
        }
        if wait_for_lag_zero {
            loop {
                std::thread::sleep(Duration::from_millis(2));
                let d = group.describe().unwrap();
                if d.shards.iter().all(|s| s.lag_records == 0) {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
    });
    done.load(Ordering::Relaxed)
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("consumer");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("consume_200k_4_shards_2_workers", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for i in 0..iterations {
                let (_dir, store) = store();
                put(&store, 0, RECORDS);
                let g = ConsumerGroup::open(
                    Arc::clone(&store),
                    &format!("g{i}"),
                    GroupConfig::new("s"),
                )
                .unwrap();
                let start = Instant::now();
                let handed = consume(&g, &AtomicBool::new(false), true);
                timed += start.elapsed();
                assert!(handed >= RECORDS as u64);
                if i == 0 {
                    println!(
                        "(records handed to closures: {handed} for {RECORDS}; {} again after a lease moved)",
                        handed - RECORDS as u64
                    );
                }
            }
            timed
        })
    });
    group.finish();
}

/// Lag while a producer puts 100,000 records/s for 5 s and two workers consume.
fn lag_under_load() {
    let (_dir, store) = store();
    let g = ConsumerGroup::open(Arc::clone(&store), "lag", GroupConfig::new("s")).unwrap();
    let stop = AtomicBool::new(false);
    let rate = 100_000usize;
    let seconds = 5;
    let mut lags_ms = Vec::new();
    let mut lags_records = Vec::new();
    let mut handed = 0;
    std::thread::scope(|s| {
        let consumer = s.spawn(|| consume(&g, &stop, false));
        s.spawn(|| {
            let start = Instant::now();
            for tick in 0..(seconds * 10) {
                put(&store, tick * rate / 10, rate / 10);
                let due = start + Duration::from_millis(100 * (tick as u64 + 1));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(seconds as u64) {
            std::thread::sleep(Duration::from_millis(250));
            let d = g.describe().unwrap();
            lags_ms.push(d.shards.iter().map(|s| s.lag_ms).max().unwrap_or(0));
            lags_records.push(d.shards.iter().map(|s| s.lag_records).sum::<u64>());
        }
        // Let the workers drain, then stop them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && g.describe()
                .unwrap()
                .shards
                .iter()
                .any(|s| s.lag_records > 0)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        handed = consumer.join().unwrap();
    });
    lags_ms.sort();
    lags_records.sort();
    println!(
        "consumer/lag_at_100k_per_s: {} records handed to closures for {}; lag p50 {} ms / {} records, max {} ms / {} records",
        handed,
        rate * seconds,
        lags_ms[lags_ms.len() / 2],
        lags_records[lags_records.len() / 2],
        lags_ms.last().unwrap(),
        lags_records.last().unwrap(),
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().is_none_or(|f| f.contains("lag")) {
        lag_under_load();
    }
    throughput(&mut c);
    c.final_summary();
}
