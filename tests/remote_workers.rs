//! Consumer-group workers in other processes, through the server: two child processes share a
//! stream's shards with leases kept by the server (`ShardlogConsumerGroups_20261126.*`) and read
//! with Kinesis `GetRecords`; the stream is split while they run; one is SIGKILLed and the other
//! takes its shards over once the leases expire, resuming after the last checkpoint. Every
//! record is processed, per partition key in order.
#![cfg(feature = "server")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::http::Client;
use serde_json::{json, Value};
use shardlog::server::Server;
use shardlog::ShardId;
use shardlog::{PutRecord, Store, StoreOptions, StreamConfig};

const ADDR_ENV: &str = "SHARDLOG_REMOTE_WORKER_ADDR";
const ID_ENV: &str = "SHARDLOG_REMOTE_WORKER_ID";
const GROUPS: &str = "ShardlogConsumerGroups_20261126";

fn call(c: &mut Client, target: &str, body: &Value) -> Value {
    let reply = c
        .post(
            target,
            "application/x-amz-json-1.1",
            &serde_json::to_vec(body).unwrap(),
        )
        .expect("the server answers");
    assert_eq!(reply.status, 200, "{target}: {}", common::text(&reply.body));
    reply.json()
}

fn group_call(c: &mut Client, operation: &str, body: Value) -> Value {
    call(c, &format!("{GROUPS}.{operation}"), &body)
}

/// A remote worker: lease, read, print each record (`rec <unix ns> <data>`), checkpoint; at a
/// closed shard's end, finish it. Runs until killed.
#[test]
#[ignore = "run by the remote-worker test as its child process"]
fn remote_worker_child() {
    use base64::Engine;
    let addr: SocketAddr = std::env::var(ADDR_ENV).unwrap().parse().unwrap();
    let id = std::env::var(ID_ENV).unwrap();
    let mut c = Client::connect(addr).unwrap();
    let mut out = std::io::stdout();
    loop {
        let leased = group_call(
            &mut c,
            "LeaseShards",
            json!({"GroupName": "billing", "StreamName": "s", "WorkerId": id,
                   "LeaseDurationMillis": 1000}),
        );
        let mut idle = true;
        for shard in leased["Shards"].as_array().unwrap() {
            let shard_id = shard["ShardId"].as_str().unwrap();
            let page = call(
                &mut c,
                "Kinesis_20131202.GetRecords",
                &json!({"ShardIterator": shard["ShardIterator"], "Limit": 100}),
            );
            let records = page["Records"].as_array().unwrap();
            if let Some(last) = records.last() {
                idle = false;
                for r in records {
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(r["Data"].as_str().unwrap())
                        .unwrap();
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos();
                    writeln!(out, "rec {now} {}", String::from_utf8(data).unwrap()).unwrap();
                }
                out.flush().unwrap();
                let reply = c
                    .post(
                        &format!("{GROUPS}.Checkpoint"),
                        "application/x-amz-json-1.1",
                        &serde_json::to_vec(&json!({"GroupName": "billing", "WorkerId": id,
                            "SequenceNumber": last["SequenceNumber"]}))
                        .unwrap(),
                    )
                    .unwrap();
                // A lease lost meanwhile: the new owner processes the batch again.
                assert!(
                    reply.status == 200 || common::text(&reply.body).contains("LeaseLost"),
                    "{}",
                    common::text(&reply.body)
                );
            } else if page.get("NextShardIterator").is_none_or(Value::is_null) {
                idle = false;
                group_call(
                    &mut c,
                    "FinishShard",
                    json!({"GroupName": "billing", "WorkerId": id, "ShardId": shard_id}),
                );
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Worker {
    child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn(addr: SocketAddr, id: &str, seen: &Arc<Mutex<Vec<(u128, String)>>>) -> Worker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "remote_worker_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ADDR_ENV, addr.to_string())
            .env(ID_ENV, id)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::clone(seen);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness prints "test remote_worker_child ... " before the first line.
                let Some(rest) = line.find("rec ").map(|at| &line[at + 4..]) else {
                    continue;
                };
                let (at, data) = rest.split_once(' ').unwrap();
                seen.lock()
                    .unwrap()
                    .push((at.parse().unwrap(), data.to_string()));
            }
        });
        Worker {
            child,
            reader: Some(reader),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn put(store: &Store, from: usize, to: usize) {
    let stream = store.stream("s").unwrap();
    for i in from..to {
        let key = format!("k{}", i % 13);
        stream
            .put_record(&PutRecord::new(&key, format!("{key}:{i}").as_bytes()))
            .unwrap();
    }
}

/// Waits (up to a minute) for `done`, describing the group each time.
fn wait_for(c: &mut Client, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Until a worker's first LeaseShards creates the group, it is not found.
        let reply = c
            .post(
                &format!("{GROUPS}.DescribeGroup"),
                "application/x-amz-json-1.1",
                br#"{"GroupName": "billing"}"#,
            )
            .unwrap();
        let d = if reply.status == 200 {
            reply.json()
        } else {
            Value::Null
        };
        if !d.is_null() && done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "never {what}: {d}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn owners(d: &Value) -> BTreeMap<String, usize> {
    let mut owners = BTreeMap::new();
    for s in d["Shards"].as_array().unwrap() {
        if let Some(o) = s["Owner"].as_str() {
            *owners.entry(o.to_string()).or_default() += 1;
        }
    }
    owners
}

fn caught_up(d: &Value) -> bool {
    d["Shards"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["LagRecords"] == 0)
}

/// A store in `dir` with the stream `s` of `shards` shards, served on a free port.
fn serve(dir: &std::path::Path, shards: u32) -> (Arc<Store>, Server) {
    let store = Arc::new(Store::open(dir, StoreOptions::default()).unwrap());
    store
        .create_stream("s", StreamConfig::provisioned(shards))
        .unwrap();
    let server = common::serve::in_process(Arc::clone(&store));
    (store, server)
}

#[test]
fn workers_in_other_processes_share_shards_and_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (store, server) = serve(dir.path(), 4);
    let addr = server.local_addr();
    let mut c = Client::connect(addr).unwrap();
    put(&store, 0, 2000);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut a = Worker::spawn(addr, "a", &seen);
    let b = Worker::spawn(addr, "b", &seen);
    wait_for(&mut c, "shared two and two", |d| {
        owners(d).values().copied().collect::<Vec<_>>() == [2, 2]
    });
    // Resharding while they run: the children wait for their parent.
    store
        .stream("s")
        .unwrap()
        .split_shard(ShardId(0), u128::MAX / 8)
        .unwrap();
    put(&store, 2000, 4000);
    wait_for(&mut c, "caught up", caught_up);
    // SIGKILL one; the other takes its shards once the leases (1 s) expire.
    a.kill();
    put(&store, 4000, 6000);
    let d = wait_for(&mut c, "taken over and caught up", |d| {
        caught_up(d) && owners(d).keys().map(String::as_str).collect::<Vec<_>>() == ["b"]
    });
    assert_eq!(
        d["Workers"].as_array().unwrap().len(),
        1,
        "the dead worker is forgotten: {d}"
    );
    let listed = group_call(&mut c, "ListGroups", json!({}));
    assert_eq!(listed["Groups"][0]["GroupName"], "billing");

    // Stopping the worker drains its output: everything it printed is counted.
    drop(b);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut distinct = BTreeSet::new();
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (_, data) in &seen {
        if distinct.insert(data.clone()) {
            let (key, n) = data.split_once(':').unwrap();
            per_key
                .entry(key.into())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    let missing: Vec<usize> = (0..6000)
        .filter(|i| !distinct.contains(&format!("k{}:{i}", i % 13)))
        .collect();
    assert!(missing.is_empty(), "never processed: {missing:?}");
    assert!(
        seen.len() - 6000 <= 4 * 100,
        "again only what a killed worker had not checkpointed: {} extra",
        seen.len() - 6000
    );
    for (key, ns) in &per_key {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {ns:?}"
        );
    }
    // With its workers gone, the group can be deleted; it is then unknown.
    group_call(&mut c, "DeleteGroup", json!({"GroupName": "billing"}));
    let gone = c
        .post(
            &format!("{GROUPS}.DescribeGroup"),
            "application/x-amz-json-1.1",
            &serde_json::to_vec(&json!({"GroupName": "billing"})).unwrap(),
        )
        .unwrap();
    assert_eq!(gone.status, 400);
    assert_eq!(gone.json()["__type"], "ResourceNotFoundException");
}

fn group_error(c: &mut Client, operation: &str, body: Value) -> (u16, String) {
    let reply = c
        .post(
            &format!("{GROUPS}.{operation}"),
            "application/x-amz-json-1.1",
            &serde_json::to_vec(&body).unwrap(),
        )
        .unwrap();
    let kind = if reply.status == 200 {
        String::new()
    } else {
        reply.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (reply.status, kind)
}

#[test]
fn the_group_api_refuses_bad_requests_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (store, server) = serve(dir.path(), 1);
    let mut c = Client::connect(server.local_addr()).unwrap();
    put(&store, 0, 10);
    let lease = |extra: Value| {
        let mut body = json!({"GroupName": "g", "StreamName": "s", "WorkerId": "w"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (
            "LeaseShards",
            lease(json!({"InitialPosition": {"Type": "SOMEWHERE"}})),
            "InvalidArgumentException",
        ),
        (
            "LeaseShards",
            lease(json!({"InitialPosition": {"Type": "AT_TIMESTAMP"}})),
            "InvalidArgumentException",
        ),
        (
            "LeaseShards",
            lease(json!({"LeaseDurationMillis": 5})),
            "InvalidArgumentException",
        ),
        (
            "LeaseShards",
            lease(json!({"StreamName": "nope", "GroupName": "h"})),
            "ResourceNotFoundException",
        ),
        (
            "LeaseShards",
            json!({"GroupName": "g", "StreamName": "s"}),
            "ValidationException",
        ),
        (
            "LeaseShards",
            lease(json!({"GroupName": "bad name!"})),
            "InvalidArgumentException",
        ),
        (
            "Checkpoint",
            json!({"GroupName": "unknown", "WorkerId": "w", "SequenceNumber": "1"}),
            "ResourceNotFoundException",
        ),
        ("Frobnicate", json!({}), "UnknownOperationException"),
    ];
    for (operation, body, expected) in cases {
        assert_eq!(
            group_error(&mut c, operation, body.clone()),
            (400, expected.to_string()),
            "{operation} {body}"
        );
    }
    // A worker checkpoints what it was given; another worker's checkpoint is refused, as is
    // finishing an open shard or one with records left.
    let leased = group_call(&mut c, "LeaseShards", lease(json!({})));
    let shard = leased["Shards"][0]["ShardId"].as_str().unwrap().to_string();
    let page = call(
        &mut c,
        "Kinesis_20131202.GetRecords",
        &json!({"ShardIterator": leased["Shards"][0]["ShardIterator"]}),
    );
    let last = page["Records"][9]["SequenceNumber"].clone();
    // Sequence numbers and shard ids are parsed by the server: text that is neither is refused.
    for (operation, member, text) in [
        ("Checkpoint", "SequenceNumber", "12"),
        ("FinishShard", "ShardId", "nonsense"),
    ] {
        let mut body = json!({"GroupName": "g", "WorkerId": "w"});
        body[member] = json!(text);
        assert_eq!(
            group_error(&mut c, operation, body),
            (400, "InvalidArgumentException".to_string()),
            "{operation} with {member} {text:?}"
        );
    }
    assert_eq!(
        group_error(
            &mut c,
            "Checkpoint",
            json!({"GroupName": "g", "WorkerId": "intruder", "SequenceNumber": last})
        ),
        (400, "LeaseLostException".to_string())
    );
    assert_eq!(
        group_error(
            &mut c,
            "FinishShard",
            json!({"GroupName": "g", "WorkerId": "w", "ShardId": shard})
        ),
        (400, "InvalidArgumentException".to_string()),
        "records are left and the shard is open"
    );
    group_call(
        &mut c,
        "Checkpoint",
        json!({"GroupName": "g", "WorkerId": "w", "SequenceNumber": last}),
    );
    assert_eq!(
        group_error(
            &mut c,
            "FinishShard",
            json!({"GroupName": "g", "WorkerId": "w", "ShardId": shard})
        ),
        (400, "InvalidArgumentException".to_string()),
        "the shard is still open"
    );
    let d = group_call(&mut c, "DescribeGroup", json!({"GroupName": "g"}));
    assert_eq!(d["Shards"][0]["Checkpoint"], last);
    assert_eq!(d["Shards"][0]["Owner"], "w");
    group_call(
        &mut c,
        "ReleaseLeases",
        json!({"GroupName": "g", "WorkerId": "w"}),
    );
    let d = group_call(&mut c, "DescribeGroup", json!({"GroupName": "g"}));
    assert!(d["Shards"][0]["Owner"].is_null(), "{d}");
}

/// Whether python3 with boto3 is here; with SHARDLOG_REQUIRE_CLIENT_TESTS=1 (CI) it must be.
fn boto3_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("SHARDLOG_REQUIRE_CLIENT_TESTS").is_none(),
            "boto3 is required (pip install boto3)"
        );
        println!("SKIPPED: boto3 is not installed");
    }
    ok
}

#[test]
fn a_python_worker_with_boto3_consumes_a_resharded_stream_in_key_order() {
    if !boto3_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, server) = serve(dir.path(), 2);
    put(&store, 0, 300);
    store
        .stream("s")
        .unwrap()
        .split_shard(ShardId(0), u128::MAX / 4)
        .unwrap();
    put(&store, 300, 600);
    let out = Command::new("python3")
        .args([
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/remote_worker.py"
            ),
            "py",
            "s",
            "worker-1",
            "600",
        ])
        .env(
            "SHARDLOG_ENDPOINT",
            format!("http://{}", server.local_addr()),
        )
        .output()
        .unwrap();
    let text = common::text(&out.stdout);
    assert!(
        out.status.success() && text.ends_with("done\n"),
        "{text}\n{}",
        common::text(&out.stderr)
    );
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut distinct = BTreeSet::new();
    for line in text.lines().filter(|l| *l != "done") {
        let (key, n) = line.split_once(':').unwrap();
        if distinct.insert(line.to_string()) {
            per_key
                .entry(key.into())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    assert_eq!(distinct.len(), 600, "every record");
    for (key, ns) in &per_key {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {ns:?}"
        );
    }
}
