//! `shardlog serve` under load: PutRecords of 500 × 100 B and GetRecords over keep-alive HTTP/1.1
//! connections, from client threads in the same process (target: ≥ 500,000 records/s put), and
//! PutRecords latency (p50/p99) at a fixed rate of half that (target: p99 < 10 ms).

mod common;
#[path = "../tests/common/http.rs"]
mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use criterion::{Criterion, Throughput};
use serde_json::json;
use shardlog::server::{Server, ServerOptions};
use shardlog::ShardId;
use shardlog::{FlushPolicy, ShardOptions, Store, StoreOptions};

const RECORDS_PER_CALL: usize = 500;
const CLIENTS: usize = 4;
const SHARDS: u32 = 4;

fn start(flush: FlushPolicy) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            StoreOptions {
                shard: ShardOptions {
                    flush,
                    ..ShardOptions::default()
                },
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    let server = Server::start(
        store,
        None,
        ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let mut c = http::Client::connect(server.local_addr()).unwrap();
    let r = c
        .kinesis(
            "CreateStream",
            &json!({"StreamName": "load", "ShardCount": SHARDS}),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    (dir, server)
}

/// The body of one PutRecords call: 500 records of 100 bytes, keys spread over the shards.
fn put_records_body(call: usize) -> Vec<u8> {
    let data = base64::engine::general_purpose::STANDARD.encode([b'x'; 100]);
    let records: Vec<_> = (0..RECORDS_PER_CALL)
        .map(|i| json!({"PartitionKey": format!("k{}", (call * RECORDS_PER_CALL + i) % 1000), "Data": data}))
        .collect();
    serde_json::to_vec(&json!({"StreamName": "load", "Records": records})).unwrap()
}

fn put(c: &mut http::Client, body: &[u8]) {
    let reply = c
        .post(
            "Kinesis_20131202.PutRecords",
            "application/x-amz-json-1.1",
            body,
        )
        .unwrap();
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("server");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..16).map(put_records_body).collect());
    for (label, flush) in [
        ("never", FlushPolicy::Never),
        ("always", FlushPolicy::Always),
    ] {
        let (_dir, server) = start(flush);
        let addr = server.local_addr();
        group.throughput(Throughput::Elements((RECORDS_PER_CALL * CLIENTS) as u64));
        // One iteration: each of CLIENTS keep-alive connections puts one batch of 500.
        group.bench_function(
            format!("put_records_500x100B_{CLIENTS}_clients_{label}"),
            |b| {
                b.iter_custom(|iterations| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..CLIENTS {
                            let bodies = Arc::clone(&bodies);
                            s.spawn(move || {
                                let mut c = http::Client::connect(addr).unwrap();
                                for i in 0..iterations as usize {
                                    put(&mut c, &bodies[(t + i) % bodies.len()]);
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            },
        );
        if label == "never" {
            // GetRecords of up to 10,000 records from the start of each shard (filled first, in
            // case the put bench was filtered out).
            let mut c = http::Client::connect(addr).unwrap();
            for i in 0..120 {
                put(&mut c, &bodies[i % bodies.len()]);
            }
            let iterators: Vec<String> = (0..SHARDS)
                .map(|s| {
                    let r = c
                        .kinesis(
                            "GetShardIterator",
                            &json!({"StreamName": "load", "ShardId": format!("shardId-{s:012}"),
                                    "ShardIteratorType": "TRIM_HORIZON"}),
                        )
                        .unwrap();
                    r.json()["ShardIterator"].as_str().unwrap().to_string()
                })
                .collect();
            group.throughput(Throughput::Elements(10_000));
            group.bench_function("get_records_10000x100B", |b| {
                let mut i = 0;
                b.iter(|| {
                    let r = c
                        .kinesis(
                            "GetRecords",
                            &json!({"ShardIterator": iterators[i % iterators.len()], "Limit": 10_000}),
                        )
                        .unwrap();
                    i += 1;
                    // Counted without parsing (one object per record, plus the answer's own;
                    // base64 data and these partition keys hold no brace): the client's JSON
                    // decoding is not the server's cost.
                    let records = r.body.iter().filter(|&&b| b == b'{').count() - 1;
                    assert_eq!(records, 10_000);
                })
            });
        }
        server.stop().unwrap();
    }
    group.finish();
}

/// PutRecords latency at a fixed rate (open loop: calls are due on a schedule, and a late call's
/// latency counts from when it was due), over CLIENTS connections.
fn latency_at(records_per_sec: usize, flush: FlushPolicy, label: &str) {
    let (_dir, server) = start(flush);
    let addr = server.local_addr();
    let calls_per_sec = records_per_sec / RECORDS_PER_CALL;
    let seconds = 10;
    let per_client = calls_per_sec * seconds / CLIENTS;
    let interval = Duration::from_secs_f64(CLIENTS as f64 / calls_per_sec as f64);
    let bodies: Vec<Vec<u8>> = (0..16).map(put_records_body).collect();
    let began = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let bodies = &bodies;
                s.spawn(move || {
                    let mut c = http::Client::connect(addr).unwrap();
                    let offset = interval.mul_f64(t as f64 / CLIENTS as f64);
                    let start = Instant::now() + offset;
                    let mut out = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let due = start + interval * i as u32;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        put(&mut c, &bodies[i % bodies.len()]);
                        out.push(Instant::now().duration_since(due));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let took = began.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "server/put_records_latency_{label}: {} calls ({} records/s offered, {:.0} achieved) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        records_per_sec,
        (latencies.len() * RECORDS_PER_CALL) as f64 / took.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    server.stop().unwrap();
}

/// GetRecords' answer for 10,000 records of 100 B written as the wire's JSON, in process: the
/// server's serialization alone, without HTTP or a client.
fn get_records_json(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let stream = store
        .create_stream("json", shardlog::StreamConfig::provisioned(1))
        .unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i:08}")).collect();
    let data = [0x42u8; 100];
    let batch: Vec<shardlog::PutRecord<'_>> = keys
        .iter()
        .map(|k| shardlog::PutRecord::new(k, &data))
        .collect();
    for _ in 0..20 {
        assert!(stream
            .put_records(&batch)
            .unwrap()
            .iter()
            .all(|r| r.is_ok()));
    }
    let iterator = stream
        .shard_iterator(ShardId(0), shardlog::Start::TrimHorizon)
        .unwrap();
    let mut group = c.benchmark_group("server");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("get_records_json_10000x100B", |b| {
        b.iter(|| {
            let (body, end, _) =
                shardlog::server::get_records_json(&store, &iterator, 10_000).unwrap();
            assert_eq!(end.records, 10_000);
            body
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    get_records_json(&mut c);
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_none_or(|f| "server/put_records_latency".contains(f) || f.contains("latency"))
    {
        latency_at(250_000, FlushPolicy::Never, "250k_never");
        latency_at(250_000, FlushPolicy::Always, "250k_always");
    }
    throughput(&mut c);
    c.final_summary();
}
