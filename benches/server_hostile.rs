//! `shardlog serve` (the release binary, defaults but `--flush never`) under what careless or
//! hostile clients do, measured from another process: the latency of a legitimate ListStreams
//! while 1,000 idle or half-sent connections are held, then while 2,500 subscriptions stream,
//! and the server's peak RSS while 1,000 clients send maximum-size (16 MiB) bodies at once.
//!
//! `cargo bench --features server --bench server_hostile` (`SHARDLOG_BIN=path` measures another
//! build of `shardlog` the same way)

#[path = "../tests/common/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

fn spawn(data: &std::path::Path) -> (std::process::Child, SocketAddr) {
    // SHARDLOG_BIN runs another build (an older one, to compare) under the same load.
    let binary = std::env::var_os("SHARDLOG_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_shardlog").into(),
        std::path::PathBuf::from,
    );
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--flush",
            "never",
            "--data-dir",
        ])
        .arg(data)
        .env("SHARDLOG_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start shardlog serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit_once("http://")
        .unwrap()
        .1
        .parse()
        .unwrap();
    (child, addr)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// p50 / p99 / max of 200 ListStreams on a fresh connection each, in ms.
fn legit_latency(addr: SocketAddr) -> (f64, f64, f64) {
    let mut samples: Vec<f64> = (0..200)
        .map(|_| {
            let started = Instant::now();
            let mut c = http::Client::connect(addr).unwrap();
            let reply = c.kinesis("ListStreams", &json!({})).unwrap();
            assert_eq!(reply.status, 200);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    (samples[100], samples[198], samples[199])
}

fn raise_open_files() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(dir.path());
    let pid = child.id();
    let (p50, p99, max) = legit_latency(addr);
    println!("idle server: ListStreams p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");

    // 1,000 connections: idle, half a header, half a body.
    let held: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            let part: &[u8] = match i % 3 {
                0 => b"",
                1 => b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Tar",
                // A content type the API serves, so the server waits for the body.
                _ => b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n{",
            };
            s.write_all(part).unwrap();
            s
        })
        .collect();
    let (p50, p99, max) = legit_latency(addr);
    println!("1,000 idle/half-sent connections held: ListStreams p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    drop(held);

    // 2,500 subscriptions: 20 consumers x 125 shards, each on its own HTTP/1.1 connection.
    let mut c = http::Client::connect(addr).unwrap();
    c.kinesis(
        "CreateStream",
        &json!({"StreamName": "fan", "ShardCount": 125}),
    )
    .unwrap();
    let arn = c
        .kinesis("DescribeStreamSummary", &json!({"StreamName": "fan"}))
        .unwrap()
        .json()["StreamDescriptionSummary"]["StreamARN"]
        .as_str()
        .unwrap()
        .to_string();
    let mut subscriptions = Vec::new();
    for consumer in 0..20 {
        let consumer_arn = c
            .kinesis(
                "RegisterStreamConsumer",
                &json!({"StreamARN": arn, "ConsumerName": format!("c{consumer}")}),
            )
            .unwrap()
            .json()["Consumer"]["ConsumerARN"]
            .as_str()
            .unwrap()
            .to_string();
        for shard in 0..125 {
            let body = serde_json::to_vec(&json!({
                "ConsumerARN": consumer_arn,
                "ShardId": format!("shardId-{shard:012}"),
                "StartingPosition": {"Type": "LATEST"},
            }))
            .unwrap();
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.SubscribeToShard\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
            s.write_all(&body).unwrap();
            subscriptions.push(s);
        }
    }
    let mut streaming = 0;
    for s in &mut subscriptions {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200" {
            streaming += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let (p50, p99, max) = legit_latency(addr);
    println!("{streaming} subscriptions streaming ({threads} server threads): ListStreams p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    drop(subscriptions);
    std::thread::sleep(Duration::from_secs(2));

    // 1,000 clients at once, each sending a 16 MiB body (ListStreams padded with spaces).
    let rss_before = status_kib(pid, "VmRSS:");
    let body: Arc<Vec<u8>> = Arc::new({
        let mut b = b"{}".to_vec();
        b.resize(16 * 1024 * 1024 - 1024, b' ');
        b
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..1000)
        .map(|_| {
            let body = Arc::clone(&body);
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || -> u16 {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        return 0;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let head = format!("POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n", body.len());
                    if s.write_all(head.as_bytes()).is_err() {
                        return 0;
                    }
                    let _ = s.write_all(&body);
                    let mut status = [0u8; 12];
                    match s.read_exact(&mut status) {
                        Ok(()) => std::str::from_utf8(&status[9..12])
                            .ok()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0),
                        Err(_) => 0,
                    }
                })
                .unwrap()
        })
        .collect();
    let mut peak_during = 0;
    let mut outcomes = std::collections::BTreeMap::new();
    for client in clients {
        peak_during = peak_during.max(status_kib(pid, "VmRSS:"));
        *outcomes.entry(client.join().unwrap_or(0)).or_insert(0) += 1;
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "1,000 clients x 16 MiB bodies in {:.1} s: answers {outcomes:?} (0 = connection closed); server RSS before {} MiB, peak {} MiB (VmHWM), after {} MiB",
        started.elapsed().as_secs_f64(),
        rss_before / 1024,
        hwm.max(peak_during) / 1024,
        rss_after / 1024
    );
    let (p50, p99, max) = legit_latency(addr);
    println!("afterwards: ListStreams p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
}
