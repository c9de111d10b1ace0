//! A load generator for `shardlog serve` built on the AWS SDK for Rust, as users run it: the
//! server in its own process (started here, or any endpoint), the SDK's JSON over HTTP/1.1,
//! retries off, every record read back and checked.
//!
//! Modes: `max` sends PutRecords of `--batch` records with `--in-flight` requests outstanding
//! until `--records` are stored; `rate` schedules one request every `batch / rate` seconds and
//! measures each from its *scheduled* start, so a stalled server is charged for the requests
//! that queue behind it (no coordinated omission). `--canned` runs the same client against a
//! server (a child process of this program) that answers every request with a canned success:
//! the ceiling of the client and the machine.
//!
//! Reported: records/s, request latency p50/p99/max, the server's CPU seconds per record (from
//! /proc) and peak RSS, and GetRecords throughput of the read-back.
//!
//! ```text
//! cargo run --release -- --serve ../../target/release/shardlog --mode max --records 1000000
//! cargo run --release -- --serve ../../target/release/shardlog --mode rate --rate 150000
//! cargo run --release -- --canned --mode max --records 1000000
//! cargo run --release -- --kinesalite node_modules/.bin/kinesalite --mode max --records 100000
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use aws_sdk_kinesis::Client;

const STREAM: &str = "load";

#[derive(Debug, Clone)]
struct Args {
    mode: String,
    records: u64,
    rate: u64,
    batch: usize,
    size: usize,
    shards: i32,
    in_flight: usize,
    serve: Option<String>,
    kinesalite: Option<String>,
    endpoint: Option<String>,
    canned: bool,
    flush: String,
    server_cpus: Option<String>,
    verify: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: "max".into(),
        records: 1_000_000,
        rate: 150_000,
        batch: 500,
        size: 100,
        shards: 4,
        in_flight: 16,
        serve: None,
        kinesalite: None,
        endpoint: None,
        canned: false,
        flush: "always".into(),
        server_cpus: None,
        verify: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--mode" => a.mode = value()?,
            "--records" => a.records = num(value()?)?,
            "--rate" => a.rate = num(value()?)?,
            "--batch" => a.batch = num(value()?)? as usize,
            "--size" => a.size = num(value()?)? as usize,
            "--shards" => a.shards = num(value()?)? as i32,
            "--in-flight" => a.in_flight = num(value()?)? as usize,
            "--serve" => a.serve = Some(value()?),
            "--kinesalite" => a.kinesalite = Some(value()?),
            "--endpoint" => a.endpoint = Some(value()?),
            "--flush" => a.flush = value()?,
            "--server-cpus" => a.server_cpus = Some(value()?),
            "--canned" => a.canned = true,
            "--no-verify" => a.verify = false,
            "--canned-server" => {
                canned_server(value()?);
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.batch == 0 || a.batch > 500 || a.size < 16 {
        return Err("--batch is 1 to 500 and --size at least 16".into());
    }
    Ok(a)
}

/// A server process this program started, and where it listens.
struct Server {
    child: Child,
    endpoint: String,
    _dir: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn command(args: &Args, program: &str) -> Command {
    match &args.server_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, program]);
            c
        }
        None => Command::new(program),
    }
}

fn start_server(args: &Args) -> Option<Server> {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (child, dir) = if args.canned {
        let me = std::env::current_exe().expect("own path");
        let child = command(args, &me.to_string_lossy())
            .args(["--canned-server", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the canned server");
        (child, None)
    } else if let Some(binary) = &args.kinesalite {
        // In memory, no artificial delays: its fastest configuration.
        let child = command(args, binary)
            .args(["--port", &port.to_string(), "--createStreamMs", "0"])
            .args([
                "--deleteStreamMs",
                "0",
                "--updateStreamMs",
                "0",
                "--shardLimit",
                "1000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kinesalite");
        (child, None)
    } else {
        let binary = args.serve.as_ref()?;
        let dir = std::env::temp_dir().join(format!("sdk-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let child = command(args, binary)
            .args(["serve", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--flush",
                &args.flush,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shardlog serve");
        (child, Some(TempDir(dir)))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server {
        child,
        endpoint,
        _dir: dir,
    })
}

/// CPU seconds (user + system) a process has used, and its peak RSS in KiB, from /proc.
fn process_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the state.
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

fn client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("load", "load", None, None, "static"))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .http_client(http)
        .build();
    Client::from_conf(config)
}

/// Record `id`'s data: the id, then filler derived from it (so a read-back checks every byte).
fn record_data(id: u64, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size);
    data.extend_from_slice(&id.to_le_bytes());
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push(x as u8);
    }
    data
}

fn request(first_id: u64, args: &Args) -> Vec<PutRecordsRequestEntry> {
    (0..args.batch as u64)
        .map(|i| {
            let id = first_id + i;
            PutRecordsRequestEntry::builder()
                .data(Blob::new(record_data(id, args.size)))
                .partition_key(format!("pk-{id}"))
                .build()
                .expect("data and key are set")
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    latencies_us: Mutex<Vec<u64>>,
    stored: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
}

/// Every request of a run, built before the clock starts (so the client's own cost is the SDK's,
/// not making data); each is taken once by the task that sends it.
struct Requests(Vec<Mutex<Option<Vec<PutRecordsRequestEntry>>>>);

impl Requests {
    fn build(args: &Args) -> Requests {
        let count = args.records / args.batch as u64;
        Requests(
            (0..count)
                .map(|n| Mutex::new(Some(request(n * args.batch as u64, args))))
                .collect(),
        )
    }

    fn take(&self, n: u64) -> Vec<PutRecordsRequestEntry> {
        self.0[n as usize]
            .lock()
            .unwrap()
            .take()
            .expect("each request is sent once")
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

async fn put(
    client: &Client,
    tally: &Tally,
    entries: Vec<PutRecordsRequestEntry>,
    started: Instant,
) {
    let count = entries.len() as u64;
    let out = client
        .put_records()
        .stream_name(STREAM)
        .set_records(Some(entries))
        .send()
        .await;
    let us = started.elapsed().as_micros() as u64;
    match out {
        Ok(out) => {
            let failed = out.failed_record_count().unwrap_or(0) as u64;
            tally.failed.fetch_add(failed, Ordering::Relaxed);
            tally.stored.fetch_add(count - failed, Ordering::Relaxed);
        }
        Err(e) => {
            if tally.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("PutRecords failed: {e:?}");
            }
        }
    }
    tally.latencies_us.lock().unwrap().push(us);
}

async fn run_max(client: &Client, args: &Args, tally: &Arc<Tally>, requests: &Arc<Requests>) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.in_flight {
        let (client, tally, next, requests) = (
            client.clone(),
            Arc::clone(tally),
            Arc::clone(&next),
            Arc::clone(requests),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests.len() {
                    break;
                }
                put(&client, &tally, requests.take(n), Instant::now()).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("a sender task");
    }
}

async fn run_rate(client: &Client, args: &Args, tally: &Arc<Tally>, requests: &Arc<Requests>) {
    let interval = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(requests.len() as usize);
    for n in 0..requests.len() {
        let scheduled = start + interval * n as u32;
        tokio::time::sleep_until(scheduled).await;
        let (client, tally, entries) = (client.clone(), Arc::clone(tally), requests.take(n));
        tasks.push(tokio::spawn(async move {
            // Measured from when it was due, not from when it could be sent.
            put(&client, &tally, entries, scheduled.into_std()).await;
        }));
    }
    for t in tasks {
        t.await.expect("a sender task");
    }
}

/// A TRIM_HORIZON iterator for each shard of the stream.
async fn trim_horizon_iterators(client: &Client) -> Vec<String> {
    let shards = client
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .expect("ListShards")
        .shards
        .unwrap_or_default();
    let mut iterators = Vec::new();
    for shard in shards {
        let iterator = client
            .get_shard_iterator()
            .stream_name(STREAM)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator
            .expect("an iterator");
        iterators.push(iterator);
    }
    iterators
}

/// Reads every shard from its start, all shards at once (one GetRecords of up to 10,000 records
/// in flight per shard); checks each record's bytes and that every id stored is there exactly
/// once. Returns (records, wall seconds of the read).
async fn read_back(client: &Client, args: &Args, expected: u64) -> (u64, f64) {
    let iterators = trim_horizon_iterators(client).await;
    let t = Instant::now();
    let mut readers = Vec::new();
    for first in iterators {
        let client = client.clone();
        let size = args.size;
        readers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut iterator = Some(first);
            while let Some(it) = iterator.take() {
                let page = client
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await
                    .expect("GetRecords");
                for r in page.records() {
                    let data = r.data().as_ref();
                    let id = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
                    assert_eq!(data, &record_data(id, size)[..], "record {id}");
                    assert_eq!(
                        r.partition_key(),
                        Some(format!("pk-{id}").as_str()),
                        "record {id}"
                    );
                    ids.push(id);
                }
                if !page.records().is_empty() {
                    iterator = page.next_shard_iterator;
                }
            }
            ids
        }));
    }
    let mut seen = HashSet::with_capacity(expected as usize);
    for reader in readers {
        for id in reader.await.expect("a shard reader") {
            assert!(seen.insert(id), "record {id} came back twice");
        }
    }
    let spent = t.elapsed().as_secs_f64();
    assert_eq!(seen.len() as u64, expected, "records read back");
    (expected, spent)
}

/// Reads every shard from its start again, all shards at once, over plain HTTP/1.1 keep-alive
/// without parsing the answers (records counted, `NextShardIterator` found by a text search):
/// what the server can serve when the client's JSON and base64 decoding are not the limit.
/// Returns (records, wall seconds).
async fn read_raw(client: &Client, endpoint: &str) -> (u64, f64) {
    let iterators = trim_horizon_iterators(client).await;
    let address = endpoint.trim_start_matches("http://").to_string();
    let t = Instant::now();
    let mut readers = Vec::new();
    for first in iterators {
        let address = address.clone();
        readers.push(tokio::spawn(async move {
            let mut iterator = first;
            let stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            let mut records = 0u64;
            loop {
                let request = hyper::Request::post("/")
                    .header("host", &address)
                    .header("content-type", "application/x-amz-json-1.1")
                    .header("x-amz-target", "Kinesis_20131202.GetRecords")
                    .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                        r#"{{"ShardIterator":"{iterator}","Limit":10000}}"#
                    ))))
                    .expect("a request");
                let response = sender.send_request(request).await.expect("GetRecords");
                assert!(response.status().is_success(), "GetRecords: {}", response.status());
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .expect("a body")
                    .to_bytes();
                // Every record is an object; the answer is one more (keys and base64 hold no
                // braces). The members after Records are in the last few hundred bytes.
                let page = body.iter().filter(|&&b| b == b'{').count() as u64 - 1;
                records += page;
                let marker = b"\"NextShardIterator\":\"";
                let tail_start = body.len().saturating_sub(2048);
                let Some(at) = find(&body[tail_start..], marker) else { break };
                let rest = &body[tail_start + at + marker.len()..];
                let end = rest.iter().position(|&b| b == b'"').expect("a closing quote");
                iterator = String::from_utf8(rest[..end].to_vec()).expect("ASCII");
                if page == 0 {
                    break;
                }
            }
            records
        }));
    }
    let mut records = 0;
    for reader in readers {
        records += reader.await.expect("a shard reader");
    }
    (records, t.elapsed().as_secs_f64())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    // Parsed before any runtime starts: `--canned-server` runs a runtime of its own.
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run(args));
}

async fn run(args: Args) {
    let server = start_server(&args);
    let endpoint = match (&server, &args.endpoint) {
        (Some(s), _) => s.endpoint.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) => {
            eprintln!("give --serve PATH_TO_SHARDLOG, --canned or --endpoint URL");
            std::process::exit(2);
        }
    };
    let client = client(&endpoint);
    if !args.canned {
        client
            .create_stream()
            .stream_name(STREAM)
            .shard_count(args.shards)
            .send()
            .await
            .expect("CreateStream");
        // Servers that create streams asynchronously (kinesalite) are waited for.
        loop {
            let summary = client
                .describe_stream_summary()
                .stream_name(STREAM)
                .send()
                .await
                .expect("DescribeStreamSummary");
            let status = summary
                .stream_description_summary()
                .map(|d| d.stream_status().as_str().to_string());
            if status.as_deref() == Some("ACTIVE") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let pid = server.as_ref().map(|s| s.child.id());
    let cpu_before = pid.map_or(0.0, |p| process_usage(p).0);
    let tally = Arc::new(Tally::default());
    let requests = Arc::new(Requests::build(&args));
    let t = Instant::now();
    match args.mode.as_str() {
        "max" => run_max(&client, &args, &tally, &requests).await,
        "rate" => run_rate(&client, &args, &tally, &requests).await,
        other => panic!("--mode {other}: max or rate"),
    }
    let secs = t.elapsed().as_secs_f64();
    let (cpu_after, rss_kib) = pid.map_or((0.0, 0), process_usage);
    let stored = tally.stored.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let what = if args.canned {
        "canned".to_string()
    } else if args.kinesalite.is_some() {
        "kinesalite".to_string()
    } else {
        format!("shardlog --flush {}", args.flush)
    };
    println!(
        "{what} | {} | {} B x {} per call | {:.0} records/s | p50 {:.1} ms | p99 {:.1} ms | max {:.1} ms | server CPU {:.2} us/record | peak RSS {} MiB | failed {} | errors {}",
        if args.mode == "rate" {
            format!("rate {}/s", args.rate)
        } else {
            format!("max, {} in flight", args.in_flight)
        },
        args.size,
        args.batch,
        (stored + tally.failed.load(Ordering::Relaxed)) as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        (cpu_after - cpu_before) * 1e6 / stored.max(1) as f64,
        rss_kib / 1024,
        tally.failed.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    if args.verify && !args.canned {
        let cpu_before = pid.map_or(0.0, |p| process_usage(p).0);
        let (n, spent) = read_back(&client, &args, stored).await;
        let cpu_after = pid.map_or(0.0, |p| process_usage(p).0);
        println!(
            "read back: {n} records, every byte checked; GetRecords served {:.0} records/s (all shards at once) | server CPU {:.3} us/record",
            n as f64 / spent,
            (cpu_after - cpu_before) * 1e6 / n.max(1) as f64
        );
        let cpu_before = pid.map_or(0.0, |p| process_usage(p).0);
        let (n, spent) = read_raw(&client, &endpoint).await;
        let cpu_after = pid.map_or(0.0, |p| process_usage(p).0);
        assert_eq!(n, stored, "records read raw");
        println!(
            "read raw (answers not parsed): {n} records; GetRecords served {:.0} records/s | server CPU {:.3} us/record",
            n as f64 / spent,
            (cpu_after - cpu_before) * 1e6 / n.max(1) as f64
        );
    }
}

/// A server that answers every request with a canned PutRecords success for 500 records (the
/// client's ceiling on this machine), on HTTP/1.1 keep-alive.
fn canned_server(listen: String) {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    let records: Vec<String> = (0..500)
        .map(|i| format!(r#"{{"SequenceNumber":"4963{i:0>52}","ShardId":"shardId-000000000000"}}"#))
        .collect();
    let body = bytes::Bytes::from(format!(
        r#"{{"FailedRecordCount":0,"Records":[{}],"EncryptionType":"NONE"}}"#,
        records.join(",")
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let addr: SocketAddr = listen.parse().expect("an address");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        // Read the request whole, as a real server must.
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-amz-json-1.1")
                                .body(Full::new(body))
                                .expect("a response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
