//! Stream benchmarks: put_records with MD5 routing, get_records draining a stream, opening a
//! store of many empty shards, describe/list of many shards, rescaling a wide stream.
//!
//! `cargo bench --bench stream`. Like the shard benchmarks, puts write each sample into a fresh
//! store that is deleted afterwards, so dirty page-cache data never reaches writeback throttling.

use std::time::{Duration, Instant};

mod common;

use common::bench_dir;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardlog::{PutRecord, ShardFilter, Start, Store, StoreOptions, StreamConfig};

fn options() -> StoreOptions {
    StoreOptions {
        retention_interval: None,
        ..StoreOptions::default()
    }
}

fn put_records(c: &mut Criterion) {
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i:08}")).collect();
    let data = [0x42u8; 100];
    let batch: Vec<PutRecord<'_>> = keys.iter().map(|k| PutRecord::new(k, &data)).collect();
    let mut group = c.benchmark_group("put_records_500x100B_4_shards");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(500));
    for threads in [1usize, 2] {
        group.bench_function(format!("{threads}_thread"), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir_in(bench_dir()).unwrap();
                let store = Store::open(dir.path(), options()).unwrap();
                let stream = store
                    .create_stream("bench", StreamConfig::provisioned(4))
                    .unwrap();
                let per_thread = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            for _ in 0..per_thread {
                                let results = stream.put_records(&batch).unwrap();
                                assert!(results.iter().all(|r| r.is_ok()));
                            }
                        });
                    }
                });
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
            })
        });
    }
    group.finish();
}

/// MD5 routing of 500 partition keys: one at a time (`md-5`, assembly) and lane-parallel.
fn hash_keys(c: &mut Criterion) {
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i:08}")).collect();
    let mut group = c.benchmark_group("hash_keys_500");
    group.throughput(Throughput::Elements(500));
    group.bench_function("one_at_a_time", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| shardlog::hash_key::hash_key_of(k))
                .fold(0u128, |acc, h| acc ^ h)
        })
    });
    let mut out = Vec::with_capacity(500);
    group.bench_function("lanes", |b| {
        b.iter(|| {
            shardlog::hash_key::hash_keys_of(keys.iter().map(|k| k.as_bytes()), &mut out);
            out.iter().fold(0u128, |acc, h| acc ^ h)
        })
    });
    group.finish();
}

fn get_records(c: &mut Criterion) {
    const GIB: u64 = 1 << 30;
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let stream = store
        .create_stream("bench", StreamConfig::provisioned(4))
        .unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i:08}")).collect();
    let data = vec![0x17u8; 1024];
    let batch: Vec<PutRecord<'_>> = keys.iter().map(|k| PutRecord::new(k, &data)).collect();
    let mut written = 0;
    while written < GIB {
        stream.put_records(&batch).unwrap();
        written += 500 * 1024;
    }
    let shards: Vec<shardlog::ShardId> = stream
        .describe()
        .shards
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    let mut group = c.benchmark_group("get_records");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(written));
    group.bench_function("drain_1GiB_of_1KiB_in_4_shards", |b| {
        b.iter(|| {
            let mut bytes = 0u64;
            for shard in &shards {
                let mut it = stream.shard_iterator(*shard, Start::TrimHorizon).unwrap();
                loop {
                    let got = store.get_records(&it, 10_000).unwrap();
                    if got.records.is_empty() {
                        break;
                    }
                    bytes += got.records.iter().map(|r| r.data.len() as u64).sum::<u64>();
                    it = got.next_shard_iterator.unwrap();
                }
            }
            assert_eq!(bytes, written);
        })
    });
    group.finish();
}

fn many_shards(c: &mut Criterion) {
    let mut group = c.benchmark_group("many_shards");
    group.sample_size(10);
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        store
            .create_stream("wide", StreamConfig::provisioned(10_000))
            .unwrap();
        store
            .create_stream("thousand", StreamConfig::provisioned(1_000))
            .unwrap();
    }
    group.bench_function("open_store_with_11000_empty_shards", |b| {
        b.iter(|| Store::open(dir.path(), options()).unwrap())
    });
    let store = Store::open(dir.path(), options()).unwrap();
    let stream = store.stream("thousand").unwrap();
    group.bench_function("describe_1000_shards", |b| b.iter(|| stream.describe()));
    group.bench_function("list_shards_1000", |b| {
        b.iter(|| stream.list_shards(&ShardFilter::All).unwrap())
    });
    // One UpdateShardCount of a 10,000-shard stream to 20,000 (each sample a fresh stream).
    group.bench_function("update_shard_count_10000_to_20000", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for i in 0..iterations {
                let name = format!("rescale-{i}");
                let s = store
                    .create_stream(&name, StreamConfig::provisioned(10_000))
                    .unwrap();
                let started = Instant::now();
                s.update_shard_count(20_000).unwrap();
                total += started.elapsed();
                drop(s);
                store.delete_stream(&name).unwrap();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, hash_keys, put_records, get_records, many_shards);
criterion_main!(benches);
