//! What one client can do to `shardlog serve` (the real binary): idle and half-sent
//! connections are closed by timeouts and at shutdown, connections and request bytes are
//! capped, subscriptions hold no threads, metrics labels stay bounded and escaped, `/metrics` is
//! not served unauthenticated beside `--auth`, and shard iterators cannot be forged.
#![cfg(feature = "server")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use common::http::Client;
use common::serve::spawn_server_with;
use serde_json::json;

fn error_type(reply: &common::http::Reply) -> String {
    reply.json()["__type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A connection that sent `bytes` and then nothing more.
fn hold(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// Whether the server closed `stream` (EOF or reset, possibly after an error answer) within
/// `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an error answer; the close follows
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

const HALF_HEADER: &[u8] = b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Tar";
const HALF_BODY: &[u8] = b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 1000\r\n\r\n{\"Lim";

#[test]
fn idle_and_half_sent_connections_are_closed_and_never_block_others_or_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn_server_with(
        dir.path(),
        "never",
        &[
            "--header-timeout-secs",
            "2",
            "--body-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "2",
        ],
    );
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..300 {
        held.push(hold(
            addr,
            if i % 3 == 0 {
                b""
            } else if i % 3 == 1 {
                HALF_HEADER
            } else {
                HALF_BODY
            },
        ));
    }
    // A legitimate request is answered meanwhile.
    let started = Instant::now();
    let mut client = Client::connect(addr).unwrap();
    let reply = client.kinesis("ListStreams", &json!({})).unwrap();
    assert_eq!(reply.status, 200);
    println!(
        "answered in {:?} beside 300 held connections",
        started.elapsed()
    );
    // Each held connection is closed by its timeout (idle, header or body).
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(10)),
            "connection {i} still open"
        );
    }
    // Half-sent requests do not hold up a stop either.
    let mut held: Vec<TcpStream> = (0..50)
        .map(|i| hold(addr, if i % 2 == 0 { HALF_HEADER } else { HALF_BODY }))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    assert!(server.terminate(), "serve did not stop cleanly");
    let took = stopping.elapsed();
    // The grace period for running requests is 30 s; nothing here is running.
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    for stream in &mut held {
        assert!(closed_within(stream, Duration::from_secs(1)));
    }
}

#[test]
fn connections_and_request_bytes_are_capped_with_retryable_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn_server_with(
        dir.path(),
        "never",
        &["--max-connections", "20", "--max-mib-in-flight", "1"],
    );
    // One request holds 900 KiB of the 1 MiB budget while its body trickles in...
    let big = 900 * 1024;
    let head = |len: usize| {
        format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let mut first = hold(addr, head(big).as_bytes());
    first.write_all(b"{\"Limit\": 1").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ... so another that big waits, then is refused with a retryable error.
    let mut second = Client::connect(addr).unwrap();
    let mut request = head(big).into_bytes();
    request.extend(std::iter::repeat_n(b' ', big));
    let reply = second.raw_while_reading(request).unwrap();
    assert_eq!(
        (reply.status, error_type(&reply).as_str()),
        (503, "LimitExceededException")
    );
    drop(second);
    // The first completes once its body arrives.
    let rest = format!("}}{}", " ".repeat(big - 12));
    first.write_all(rest.as_bytes()).unwrap();
    let mut answer = vec![0u8; 12];
    first.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    drop(first);
    std::thread::sleep(Duration::from_millis(200));

    // Connections past the cap are answered 503 and closed; the others keep working.
    let mut open: Vec<Client> = (0..20).map(|_| Client::connect(addr).unwrap()).collect();
    for c in &mut open[..3] {
        assert_eq!(c.kinesis("ListStreams", &json!({})).unwrap().status, 200);
    }
    // (Read without writing: the server answers and closes at once.)
    let mut over = hold(addr, b"");
    let mut answer = String::new();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = over.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("LimitExceededException"), "{answer}");
    drop(open.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = Client::connect(addr).unwrap();
    assert_eq!(
        again.kinesis("ListStreams", &json!({})).unwrap().status,
        200
    );
    assert!(server.terminate());
}

#[test]
fn metrics_labels_are_bounded_and_escaped_and_metrics_stay_private_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn_server_with(&dir.path().join("open"), "never", &[]);
    let mut client = Client::connect(addr).unwrap();
    for i in 0..200 {
        let reply = client
            .post(
                &format!("Kinesis_20131202.Junk{i}"),
                "application/x-amz-json-1.1",
                b"{}",
            )
            .unwrap();
        assert_eq!(reply.status, 400);
    }
    let reply = client
        .post(
            "Kinesis_20131202.Ju\"nk",
            "application/x-amz-json-1.1",
            b"{}",
        )
        .unwrap();
    assert_eq!(reply.status, 400);
    client.kinesis("ListStreams", &json!({})).unwrap();
    let metrics = String::from_utf8(client.get("/metrics").unwrap().body).unwrap();
    assert!(!metrics.contains("Junk"), "junk operations became labels");
    assert!(
        metrics.contains("shardlog_requests_total{operation=\"unknown\"} 201"),
        "{metrics}"
    );
    assert!(metrics.contains("shardlog_requests_total{operation=\"ListStreams\"} 1"));
    assert!(server.terminate());

    // With --auth, /metrics names every stream: not on the API port, only on its own address.
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKID\naws_secret_access_key = secret\n",
    )
    .unwrap();
    let (server, addr) = spawn_server_with(
        &dir.path().join("auth"),
        "never",
        &["--auth", credentials.to_str().unwrap()],
    );
    let reply = Client::connect(addr).unwrap().get("/metrics").unwrap();
    assert_eq!(reply.status, 403);
    assert!(server.terminate());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (server, addr) = spawn_server_with(
        &dir.path().join("auth"),
        "never",
        &[
            "--auth",
            credentials.to_str().unwrap(),
            "--metrics-listen",
            &metrics_port.to_string(),
        ],
    );
    assert_eq!(
        Client::connect(addr)
            .unwrap()
            .get("/metrics")
            .unwrap()
            .status,
        403
    );
    let reply = Client::connect(metrics_port)
        .unwrap()
        .get("/metrics")
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8(reply.body)
        .unwrap()
        .contains("# TYPE shardlog_requests_total"));
    let reply = Client::connect(metrics_port)
        .unwrap()
        .kinesis("ListStreams", &json!({}))
        .unwrap();
    assert_eq!(reply.status, 404, "the metrics address serves no API");
    assert!(server.terminate());
}

#[test]
fn shard_iterators_cannot_be_forged_and_offsets_do_not_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn_server_with(dir.path(), "never", &[]);
    let mut c = Client::connect(addr).unwrap();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    for i in 0..3 {
        c.kinesis(
            "PutRecord",
            &json!({"StreamName": "s", "PartitionKey": "k", "Data": base64::engine::general_purpose::STANDARD.encode(format!("r{i}"))}),
        )
        .unwrap();
    }
    let it = c
        .kinesis(
            "GetShardIterator",
            &json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .unwrap()
        .json()["ShardIterator"]
        .as_str()
        .unwrap()
        .to_string();
    let ok = c
        .kinesis("GetRecords", &json!({"ShardIterator": it}))
        .unwrap();
    assert_eq!(ok.json()["Records"].as_array().unwrap().len(), 3);
    // A token built by hand (the layout is documented; only the key is secret): refused.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut forged = b64.decode(&it).unwrap();
    let n = forged.len();
    forged[13..21].copy_from_slice(&i64::MAX.to_le_bytes()); // issued in the far future
    forged[n - 1] ^= 1;
    let reply = c
        .kinesis("GetRecords", &json!({"ShardIterator": b64.encode(&forged)}))
        .unwrap();
    assert_eq!(error_type(&reply), "InvalidArgumentException");
    // The largest sequence number of shard 0: nothing comes after it, and it does not wrap.
    let last = (1u128 << 127) | u128::from(u64::MAX);
    let reply = c
        .kinesis(
            "GetShardIterator",
            &json!({"StreamName": "s", "ShardId": "shardId-000000000000",
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "StartingSequenceNumber": last.to_string()}),
        )
        .unwrap();
    assert_eq!(
        error_type(&reply),
        "InvalidArgumentException",
        "{:?}",
        reply.json()
    );
    assert!(server.terminate());
}

/// Threads of a process.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[test]
fn hundreds_of_subscriptions_hold_no_threads_and_starve_nothing() {
    // Both ends of every subscription live in this process: room for the descriptors.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn_server_with(dir.path(), "never", &[]);
    let pid = server.0.id();
    let mut c = Client::connect(addr).unwrap();
    let shards = 30;
    c.kinesis(
        "CreateStream",
        &json!({"StreamName": "fan", "ShardCount": shards}),
    )
    .unwrap();
    c.kinesis(
        "CreateStream",
        &json!({"StreamName": "other", "ShardCount": 1}),
    )
    .unwrap();
    let stream_arn = c
        .kinesis("DescribeStreamSummary", &json!({"StreamName": "fan"}))
        .unwrap()
        .json()["StreamDescriptionSummary"]["StreamARN"]
        .as_str()
        .unwrap()
        .to_string();
    let mut subscriptions = Vec::new();
    for consumer in 0..20 {
        let arn = c
            .kinesis(
                "RegisterStreamConsumer",
                &json!({"StreamARN": stream_arn, "ConsumerName": format!("c{consumer}")}),
            )
            .unwrap()
            .json()["Consumer"]["ConsumerARN"]
            .as_str()
            .unwrap()
            .to_string();
        for shard in 0..shards {
            let body = serde_json::to_vec(&json!({
                "ConsumerARN": arn,
                "ShardId": format!("shardId-{shard:012}"),
                "StartingPosition": {"Type": "LATEST"},
            }))
            .unwrap();
            let request = format!(
                "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: Kinesis_20131202.SubscribeToShard\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
            subscriptions.push(stream);
        }
    }
    // Every subscription answers 200 and streams.
    for stream in &mut subscriptions {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    std::thread::sleep(Duration::from_secs(2));
    let threads = threads_of(pid);
    // A blocking thread held per waiting subscription was the old design: 512 threads (tokio's
    // blocking pool is full) for 600 subscriptions, and every API call queued behind them. Now
    // only the burst of SubscribeToShard calls themselves leaves idle pool threads for a while.
    assert!(
        threads < 300,
        "{threads} server threads for {} subscriptions",
        subscriptions.len()
    );
    let started = Instant::now();
    let reply = c
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "other", "PartitionKey": "k", "Data": "eA=="}),
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    println!(
        "PutRecord beside {} subscriptions: {:?}, {threads} server threads",
        subscriptions.len(),
        started.elapsed()
    );
    assert!(server.terminate());
}
