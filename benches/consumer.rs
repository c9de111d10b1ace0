//! Consumer groups end to end: a 4-shard stream consumed by 2 workers (threads) through
//! `Worker::process_round`, checkpointing every batch; records/s, and the lag while a producer
//! puts at a fixed rate. Also the latency from a put to a `Worker::run` closure and to a
//! fan-out subscription's event, with default options, at a trickle of one record a ms.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shardlog::consumer::{
    ConsumerGroup, GroupConfig, InitialPosition, ProcessOptions, ShardSubscription,
    SubscribeOptions,
};
use shardlog::{PutRecord, ShardId, Store, StoreOptions, StreamConfig, StreamRecord};

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
                        .process_round(&options, &mut |_: ShardId, r: &[StreamRecord]| {
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

/// Microseconds from a put to its processing, for a group's workers (`Worker::run`, default
/// options) and for one fan-out subscription per shard, while one record is put each ms for
/// 3 s (the first 0.5 s, while leases are taken, is not counted).
fn put_to_process_latency() {
    let (_dir, store) = store();
    let stream = store.stream("s").unwrap();
    stream
        .register_consumer("fanout", &BTreeMap::new())
        .unwrap();
    let group = ConsumerGroup::open(
        Arc::clone(&store),
        "latency",
        GroupConfig {
            initial_position: InitialPosition::Latest,
            ..GroupConfig::new("s")
        },
    )
    .unwrap();
    let origin = Instant::now();
    let counted_from = 500_000u64; // µs
    let elapsed = |data: &[u8]| -> Option<u64> {
        let put_at: u64 = std::str::from_utf8(data).ok()?.parse().ok()?;
        (put_at >= counted_from).then(|| origin.elapsed().as_micros() as u64 - put_at)
    };
    let workers = Mutex::new(Vec::new());
    let subscriptions = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let worker = group.worker(&format!("w{w}"));
            let (stop, workers, elapsed) = (&stop, &workers, &elapsed);
            s.spawn(move || {
                worker
                    .run(&ProcessOptions::default(), stop, |_, records| {
                        let mut out = workers.lock().unwrap();
                        out.extend(records.iter().filter_map(|r| elapsed(&r.data)));
                        Ok::<(), ()>(())
                    })
                    .unwrap();
            });
        }
        for shard in 0..SHARDS {
            let mut sub = ShardSubscription::open(
                Arc::clone(&store),
                "s",
                "fanout",
                ShardId(shard),
                SubscribeOptions::new(shardlog::Start::Latest),
            )
            .unwrap();
            let (stop, subscriptions, elapsed) = (&stop, &subscriptions, &elapsed);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let event = sub.next_event(Duration::from_millis(100)).unwrap().unwrap();
                    let mut out = subscriptions.lock().unwrap();
                    out.extend(event.records.iter().filter_map(|r| elapsed(&r.data)));
                }
            });
        }
        for i in 0..3000u64 {
            let due = origin + Duration::from_millis(i + 1);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let put_at = origin.elapsed().as_micros().to_string();
            stream
                .put_record(&PutRecord::new(&format!("k{i}"), put_at.as_bytes()))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    for (what, samples) in [("worker", workers), ("subscription", subscriptions)] {
        let mut v = samples.into_inner().unwrap();
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1));
            v.get(i).copied().unwrap_or(0)
        };
        println!(
            "consumer/put_to_{what}_latency: {} records; p50 {} µs, p99 {} µs, max {} µs",
            v.len(),
            at(0.5),
            at(0.99),
            at(1.0),
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().is_none_or(|f| f.contains("lag")) {
        lag_under_load();
    }
    if filter.as_deref().is_none_or(|f| f.contains("latency")) {
        put_to_process_latency();
    }
    throughput(&mut c);
    c.final_summary();
}
