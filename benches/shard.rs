//! Shard benchmarks: appends (record sizes × batching × flush policy), sequential reads, seeks by
//! offset and by time, reopen time as sealed data grows, and group commit under concurrency.
//!
//! `cargo bench --bench shard` runs them all; `cargo bench --bench shard -- append/batch500`
//! picks some. Append benchmarks write each sample into a fresh shard that is deleted afterwards,
//! so dirty page-cache data never builds up to the kernel's writeback throttle: they measure the
//! engine, not the disk. Durable policies (Always, GroupCommit) measure the disk too, by design.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::bench_dir;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use shardlog::{FlushPolicy, ManualClock, NewRecord, Offset, ReadLimits, Shard, ShardOptions};

const GIB: u64 = 1024 * 1024 * 1024;

fn policies() -> [(&'static str, FlushPolicy); 3] {
    [
        ("never", FlushPolicy::Never),
        (
            "group1ms",
            FlushPolicy::GroupCommit {
                interval: Duration::from_millis(1),
            },
        ),
        ("always", FlushPolicy::Always),
    ]
}

fn records<'a>(keys: &'a [String], data: &'a [u8], n: usize) -> Vec<NewRecord<'a>> {
    (0..n)
        .map(|i| NewRecord {
            partition_key: keys[i % keys.len()].as_bytes(),
            explicit_hash_key: None,
            data,
        })
        .collect()
}

fn keys() -> Vec<String> {
    (0..500).map(|i| format!("partition-{i:05}")).collect()
}

/// Appends `iters` calls of `batch` into a fresh shard and returns the time they took.
fn timed_appends(options: &ShardOptions, batch: &[NewRecord<'_>], iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let shard = Shard::open(dir.path(), options.clone()).unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        shard.append(batch).unwrap();
    }
    let elapsed = start.elapsed();
    drop(shard);
    elapsed
}

fn append(c: &mut Criterion) {
    let keys = keys();
    for (mode, batch_len) in [("single", 1usize), ("batch500", 500)] {
        let mut group = c.benchmark_group(format!("append/{mode}"));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        for size in [100usize, 1024, 64 * 1024] {
            let data = vec![0x5Au8; size];
            let batch = records(&keys, &data, batch_len);
            for (policy_name, flush) in policies() {
                // Durable appends of 32 MiB batches take a long while per call: a few suffice.
                if flush != FlushPolicy::Never && size == 64 * 1024 && batch_len == 500 {
                    continue;
                }
                let options = ShardOptions {
                    flush,
                    max_record_bytes: 1024 * 1024,
                    ..ShardOptions::default()
                };
                group.throughput(Throughput::Elements(batch_len as u64));
                group.bench_function(BenchmarkId::new(policy_name, format!("{size}B")), |b| {
                    b.iter_custom(|iters| timed_appends(&options, &batch, iters))
                });
            }
        }
        group.finish();
    }
}

/// The same appends measured in bytes, for the MB/s column.
fn append_bytes(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("append_bytes/batch500");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    for size in [100usize, 64 * 1024] {
        let data = vec![0x5Au8; size];
        let batch = records(&keys, &data, 500);
        group.throughput(Throughput::Bytes((500 * size) as u64));
        group.bench_function(BenchmarkId::new("never", format!("{size}B")), |b| {
            b.iter_custom(|iters| timed_appends(&ShardOptions::default(), &batch, iters))
        });
    }
    group.finish();
}

/// Fills a shard with `total` bytes of `size`-byte records whose arrival times advance 1 ms per
/// batch of 500, and closes it cleanly.
fn fill(dir: &Path, total: u64, size: usize, segment_bytes: u64) -> u64 {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let options = ShardOptions {
        segment_bytes,
        clock: Arc::clone(&clock) as Arc<dyn shardlog::Clock>,
        ..ShardOptions::default()
    };
    let shard = Shard::open(dir, options).unwrap();
    let keys = keys();
    let data = vec![0xA5u8; size];
    let per_batch = (500usize).min((4 << 20) / size).max(1);
    let batch = records(&keys, &data, per_batch);
    let mut written = 0;
    while written < total {
        shard.append(&batch).unwrap();
        clock.advance(1);
        written += (per_batch * size) as u64;
    }
    shard.next_offset().get()
}

fn read(c: &mut Criterion) {
    for size in [1024usize, 64 * 1024] {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let count = fill(dir.path(), GIB, size, 128 * 1024 * 1024);
        let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
        let mut group = c.benchmark_group("read/sequential");
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Bytes(GIB));
        group.bench_function(format!("1GiB_of_{size}B"), |b| {
            b.iter(|| {
                let mut cursor = Offset::new(0);
                let mut bytes = 0u64;
                while cursor.get() < count {
                    let batch = shard.read(cursor, ReadLimits::default()).unwrap();
                    bytes += batch
                        .records
                        .iter()
                        .map(|r| r.data.len() as u64)
                        .sum::<u64>();
                    cursor = batch.next_offset;
                }
                assert!(bytes >= GIB);
                bytes
            })
        });
        group.finish();
    }
}

fn seek(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let count = fill(dir.path(), GIB, 100, 128 * 1024 * 1024);
    let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
    let one = ReadLimits {
        max_records: 1,
        max_bytes: usize::MAX,
    };
    let first_ms = shard.read(Offset::new(0), one).unwrap().records[0].arrival_ms;
    let last_ms = shard.read(Offset::new(count - 1), one).unwrap().records[0].arrival_ms;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut group = c.benchmark_group("seek");
    group.throughput(Throughput::Elements(1));
    group.bench_function("by_offset_1GiB_of_100B", |b| {
        b.iter(|| {
            let at = Offset::new(rng.gen_range(0..count));
            let batch = shard.read(at, one).unwrap();
            assert_eq!(batch.records[0].offset, at);
        })
    });
    group.bench_function("by_time_1GiB_of_100B", |b| {
        b.iter(|| {
            let t = rng.gen_range(first_ms..=last_ms);
            shard.seek_time(t).unwrap()
        })
    });
    group.finish();
}

fn reopen(c: &mut Criterion) {
    let mut group = c.benchmark_group("reopen");
    group.sample_size(20);
    for (label, total) in [("256MiB", GIB / 4), ("1GiB", GIB), ("4GiB", 4 * GIB)] {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        // 16 MiB segments: many of them, as a shard that has rolled for a while.
        fill(dir.path(), total, 1024, 16 * 1024 * 1024);
        group.bench_function(format!("{label}_in_16MiB_segments"), |b| {
            b.iter(|| Shard::open(dir.path(), ShardOptions::default()).unwrap())
        });
    }
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let keys = keys();
    let data = vec![0x33u8; 100];
    let batch = records(&keys, &data, 500);
    let mut group = c.benchmark_group("durable_batches_500x100B");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for (label, threads, flush) in [
        ("always_1_thread", 1usize, FlushPolicy::Always),
        (
            "group1ms_4_threads",
            4,
            FlushPolicy::GroupCommit {
                interval: Duration::from_millis(1),
            },
        ),
        ("always_4_threads", 4, FlushPolicy::Always),
    ] {
        let options = ShardOptions {
            flush,
            ..ShardOptions::default()
        };
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir_in(bench_dir()).unwrap();
                let shard = Shard::open(dir.path(), options.clone()).unwrap();
                let per_thread = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            for _ in 0..per_thread {
                                shard.append(&batch).unwrap();
                            }
                        });
                    }
                });
                // Time per batch, over all threads' batches.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    append,
    append_bytes,
    read,
    seek,
    reopen,
    group_commit
);
criterion_main!(benches);
