//! Firehose delivery throughput per codec on 1 KiB JSON-like records, against the codec alone on
//! the same bytes (target: delivery within 1.25x of the codec), and the direct-put path alone.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog::firehose::{
    BufferingHints, Compression, DeliveryConfig, DeliveryStream, DeliveryStreamSpec,
    LocalDirectory, ObjectEncoder,
};
use shardlog::{FlushPolicy, ShardOptions};

/// Records per delivered object (5 MiB: the default size hint).
const RECORDS: usize = 5 * 1024;

/// Objects delivered per measured flush (a backlog, as under sustained load).
const BACKLOG: usize = 4;

/// 1 KiB JSON-like records, varied enough that compression has work to do.
fn records() -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| {
            let mut r = format!(
                "{{\"event_id\":{i},\"user\":\"u{:05}\",\"page\":\"/products/{}\",\"ms\":{},\"ua\":\"",
                i * 7919 % 100_000,
                i % 313,
                1_700_000_000_000u64 + i as u64 * 37
            )
            .into_bytes();
            let mut x = i as u64 | 1;
            while r.len() < 1021 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                r.push(b"abcdefghij klmnopqrstuvwxyz0123456789"[(x % 37) as usize]);
            }
            r.extend_from_slice(b"\"}");
            r.truncate(1023);
            r.push(b'\n');
            r
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let records = records();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("firehose");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(bytes as u64));
    for compression in Compression::ALL {
        group.bench_function(BenchmarkId::new("codec", compression), |b| {
            b.iter(|| {
                let mut e = ObjectEncoder::new(compression, "entry", 0).unwrap();
                for r in &records {
                    e.write(r).unwrap();
                }
                e.finish().unwrap()
            })
        });
        let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
        let stream = DeliveryStream::open(
            dir.path().join("ds"),
            DeliveryStreamSpec {
                name: "bench".into(),
                version: 1,
                config: DeliveryConfig {
                    buffering: BufferingHints {
                        size_mib: 5,
                        interval_secs: 900,
                    },
                    compression,
                    ..DeliveryConfig::default()
                },
                destination: Arc::new(LocalDirectory::new(dir.path().join("out"))),
                transform: None,
                buffer: ShardOptions {
                    flush: FlushPolicy::Never,
                    ..ShardOptions::default()
                },
                paused: None,
                source: Default::default(),
            },
        )
        .unwrap();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        // Delivery alone: a backlog of BACKLOG objects' worth of records is put (untimed), then
        // delivered (timed): read, encode, write, fsync, checkpoint, delete buffer segments.
        group.throughput(Throughput::Bytes((bytes * BACKLOG) as u64));
        group.bench_function(BenchmarkId::new("deliver", compression), |b| {
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    for _ in 0..BACKLOG {
                        for batch in refs.chunks(500) {
                            stream.put_record_batch(batch).unwrap();
                        }
                    }
                    let start = Instant::now();
                    let report = stream.flush().unwrap();
                    timed += start.elapsed();
                    assert_eq!(report.batches, BACKLOG as u64);
                }
                timed
            })
        });
        group.throughput(Throughput::Bytes(bytes as u64));
    }
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let stream = DeliveryStream::open(
        dir.path().join("ds"),
        DeliveryStreamSpec {
            name: "bench".into(),
            version: 1,
            config: DeliveryConfig::default(),
            destination: Arc::new(LocalDirectory::new(dir.path().join("out"))),
            transform: None,
            buffer: ShardOptions::default(),
            paused: None,
            source: Default::default(),
        },
    )
    .unwrap();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    group.bench_function("put_only_500x1KiB", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                for batch in refs.chunks(500) {
                    stream.put_record_batch(batch).unwrap();
                }
                timed += start.elapsed();
                // Untimed: keeps the buffer from growing across iterations.
                stream.flush().unwrap();
            }
            timed
        })
    });
    group.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
