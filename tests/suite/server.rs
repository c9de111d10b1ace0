//! `shardlog serve`: the Kinesis wire API, driven by raw HTTP (malformed input, limits, errors),
//! by boto3 and the aws CLI against the real binary, and through a SIGKILL of the server.
#![cfg(feature = "server")]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::http::Client;
use common::serve::{spawn_server, spawn_server_with};
use serde_json::json;
use shardlog::server::{Server, ServerOptions};
use shardlog::{Store, StoreOptions};

fn start(dir: &Path) -> (Server, Arc<Store>) {
    let store = Arc::new(Store::open(dir, StoreOptions::default()).unwrap());
    let server = Server::start(
        Arc::clone(&store),
        None,
        ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_body_bytes: 16 * 1024 * 1024,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    (server, store)
}

fn error_type(reply: &common::http::Reply) -> String {
    reply.json()["__type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn bad_requests_get_the_models_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _store) = start(dir.path());
    let mut c = Client::connect(server.local_addr()).unwrap();
    let health = c.get("/health").unwrap();
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "Kinesis_20131202.Nope",
            "application/x-amz-json-1.1",
            b"{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        (
            "Bogus",
            "application/x-amz-json-1.1",
            b"{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        (
            "Kinesis_20131202.CreateStream",
            "application/x-amz-json-1.1",
            b"{\"StreamName\":".to_vec(),
            400,
            "SerializationException",
        ),
        (
            "Kinesis_20131202.CreateStream",
            "application/x-amz-json-1.1",
            b"[1,2]".to_vec(),
            400,
            "SerializationException",
        ),
        (
            "Kinesis_20131202.CreateStream",
            "application/x-amz-json-1.1",
            br#"{"StreamName":7,"ShardCount":1}"#.to_vec(),
            400,
            "SerializationException",
        ),
        (
            "Kinesis_20131202.CreateStream",
            "application/x-amz-json-1.1",
            br#"{"ShardCount":1}"#.to_vec(),
            400,
            "ValidationException",
        ),
        (
            "Kinesis_20131202.CreateStream",
            "application/x-amz-json-1.1",
            br#"{"StreamName":"bad name!","ShardCount":1}"#.to_vec(),
            400,
            "ValidationException",
        ),
        (
            "Kinesis_20131202.CreateStream",
            "application/x-amz-json-1.1",
            br#"{"StreamName":"s","ShardCount":0}"#.to_vec(),
            400,
            "ValidationException",
        ),
        (
            "Kinesis_20131202.DescribeStream",
            "application/x-amz-json-1.1",
            br#"{"StreamName":"missing"}"#.to_vec(),
            400,
            "ResourceNotFoundException",
        ),
        (
            "Kinesis_20131202.DescribeStream",
            "application/x-amz-json-1.1",
            br#"{"StreamARN":"arn:aws:sqs:us-east-1:000000000000:q"}"#.to_vec(),
            400,
            // The model's pattern for StreamARN.
            "ValidationException",
        ),
        (
            "Kinesis_20131202.PutRecord",
            "application/x-amz-json-1.1",
            br#"{"StreamName":"missing","Data":"!!!","PartitionKey":"k"}"#.to_vec(),
            400,
            "SerializationException",
        ),
        (
            "Kinesis_20131202.GetRecords",
            "application/x-amz-json-1.1",
            br#"{"ShardIterator":"garbage"}"#.to_vec(),
            400,
            "InvalidArgumentException",
        ),
    ];
    for (target, content_type, body, status, kind) in cases {
        let reply = c.post(target, content_type, &body).unwrap();
        assert_eq!(
            (reply.status, error_type(&reply).as_str()),
            (status, kind),
            "{target} {}: {}",
            common::text(&body),
            common::text(&reply.body)
        );
        assert!(reply
            .header("x-amzn-requestid")
            .is_some_and(|id| id.len() == 36));
        // AWS spells the member `Message` for a SerializationException, `message` otherwise.
        let answer = reply.json();
        let member = if kind == "SerializationException" {
            "Message"
        } else {
            "message"
        };
        assert!(
            answer[member].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }

    // A body over the limit is refused without being read into memory; a fresh connection works.
    let mut big = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
        17 * 1024 * 1024
    )
    .into_bytes();
    big.resize(big.len() + 17 * 1024 * 1024, b' ');
    let reply = c.raw_while_reading(big).unwrap();
    assert_eq!(
        (reply.status, error_type(&reply).as_str()),
        (413, "SerializationException")
    );
    let mut c = Client::connect(server.local_addr()).unwrap();

    // Records over the limit, too many records, bad keys: the model's exceptions.
    let ok = c
        .kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
    use base64::Engine;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    let too_big = c
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "s", "PartitionKey": "k", "Data": b64(1024 * 1024)}),
        )
        .unwrap();
    assert_eq!(error_type(&too_big), "InvalidArgumentException");
    let empty_key = c
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "s", "PartitionKey": "", "Data": b64(1)}),
        )
        .unwrap();
    // The model's minimum length: a ValidationException, as AWS answers.
    assert_eq!(error_type(&empty_key), "ValidationException");
    let records: Vec<_> = (0..501)
        .map(|_| json!({"PartitionKey": "k", "Data": b64(1)}))
        .collect();
    let too_many = c
        .kinesis(
            "PutRecords",
            &json!({"StreamName": "s", "Records": records}),
        )
        .unwrap();
    assert_eq!(error_type(&too_many), "ValidationException");
    // Over the 10 MiB a PutRecords call takes (each record within its own 1 MiB).
    let records: Vec<_> = (0..11)
        .map(|_| json!({"PartitionKey": "k", "Data": b64(1000 * 1024)}))
        .collect();
    let too_much = c
        .kinesis(
            "PutRecords",
            &json!({"StreamName": "s", "Records": records}),
        )
        .unwrap();
    assert_eq!(error_type(&too_much), "InvalidArgumentException");
    let dup = c
        .kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    assert_eq!(error_type(&dup), "ResourceInUseException");

    // Nothing above broke the stream, and /metrics counted it all.
    let put = c
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "s", "PartitionKey": "k", "Data": b64(3)}),
        )
        .unwrap();
    assert_eq!(put.status, 200);
    let metrics = String::from_utf8(c.get("/metrics").unwrap().body).unwrap();
    assert!(
        metrics.contains("shardlog_requests_total{operation=\"PutRecord\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardlog_request_errors_total{operation=\"PutRecord\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardlog_records_in_total{stream=\"s\"} 1"),
        "{metrics}"
    );
    server.stop().unwrap();
}

#[test]
fn a_consumer_follows_a_split_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _store) = start(dir.path());
    let mut c = Client::connect(server.local_addr()).unwrap();
    let call = |c: &mut Client, op: &str, body: serde_json::Value| {
        let reply = c.kinesis(op, &body).unwrap();
        assert_eq!(reply.status, 200, "{op}: {}", common::text(&reply.body));
        reply.json()
    };
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    call(
        &mut c,
        "CreateStream",
        json!({"StreamName": "s", "ShardCount": 1}),
    );
    let put = |c: &mut Client, from: usize, to: usize| {
        let records: Vec<_> = (from..to)
            .map(|i| json!({"PartitionKey": format!("k{}", i % 7), "Data": b64(&format!("k{}:{i}", i % 7))}))
            .collect();
        let out = call(
            c,
            "PutRecords",
            json!({"StreamName": "s", "Records": records}),
        );
        assert_eq!(out["FailedRecordCount"], 0);
    };
    put(&mut c, 0, 50);
    call(
        &mut c,
        "SplitShard",
        json!({"StreamName": "s", "ShardToSplit": "shardId-000000000000",
               "NewStartingHashKey": (u128::MAX / 2).to_string()}),
    );
    put(&mut c, 50, 100);
    // Read parent to its end, then its children, as a KCL-style consumer does.
    let mut queue = vec!["shardId-000000000000".to_string()];
    let mut seen: Vec<String> = Vec::new();
    while let Some(shard) = queue.pop() {
        let mut it = call(
            &mut c,
            "GetShardIterator",
            json!({"StreamName": "s", "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
        )["ShardIterator"]
            .as_str()
            .map(str::to_string);
        while let Some(iterator) = it {
            let out = call(
                &mut c,
                "GetRecords",
                json!({"ShardIterator": iterator, "Limit": 7}),
            );
            for r in out["Records"].as_array().unwrap() {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                seen.push(String::from_utf8(data).unwrap());
            }
            if out["Records"].as_array().unwrap().is_empty()
                && out.get("NextShardIterator").is_some()
                && out.get("ChildShards").is_none()
            {
                // An open shard read to its current end.
                break;
            }
            if let Some(children) = out.get("ChildShards").and_then(|c| c.as_array()) {
                for child in children.iter().rev() {
                    queue.push(child["ShardId"].as_str().unwrap().to_string());
                }
            }
            it = out
                .get("NextShardIterator")
                .and_then(|v| v.as_str())
                .map(str::to_string);
        }
    }
    assert_eq!(seen.len(), 100, "{seen:?}");
    let mut per_key: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for s in &seen {
        let (k, i) = s.split_once(':').unwrap();
        per_key.entry(k).or_default().push(i.parse().unwrap());
    }
    for (k, ns) in per_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{k}: {ns:?}");
    }
}

/// Whether the Python clients are here; with SHARDLOG_REQUIRE_CLIENT_TESTS=1 (CI) they must be.
pub(crate) fn clients_available(what: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("aws")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("SHARDLOG_REQUIRE_CLIENT_TESTS").is_none(),
            "boto3 and the aws CLI are required (pip install boto3 awscli)"
        );
        println!("SKIPPED {what}: boto3 or the aws CLI is not installed");
    }
    ok
}

/// Runs `tests/clients/SCRIPT` against `shardlog serve` on a data directory in `dir` (objects
/// of S3-style destinations under `dir/objects`); it must pass and serve stop cleanly.
pub(crate) fn run_boto3_script(script: &str, dir: &Path) {
    let (server, addr) = spawn_server(dir, "always");
    let status = Command::new("python3")
        .arg(format!(
            "{}/tests/clients/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env("SHARDLOG_ENDPOINT", format!("http://{addr}"))
        .env("SHARDLOG_OBJECTS", dir.join("objects"))
        .status()
        .unwrap();
    assert!(status.success(), "{script} failed");
    assert!(server.terminate(), "serve did not stop cleanly on SIGTERM");
}

#[test]
fn boto3_drives_every_served_kinesis_operation() {
    if !clients_available("boto3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_boto3_script("boto3_kinesis.py", dir.path());
}

#[test]
fn boto3_drives_every_firehose_operation() {
    if !clients_available("boto3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_boto3_script("boto3_firehose.py", dir.path());
}

#[test]
fn the_aws_cli_works_unchanged() {
    if !clients_available("aws CLI") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn_server(dir.path(), "always");
    let endpoint = format!("http://{addr}");
    // CLI v1 sends a blob argument's text as the bytes; v2 reads it as base64.
    let version = Command::new("aws").arg("--version").output().unwrap();
    let v1 = common::text(&version.stdout).starts_with("aws-cli/1.")
        || common::text(&version.stderr).starts_with("aws-cli/1.");
    let data = if v1 { "hello" } else { "aGVsbG8=" };
    let aws = |args: &[&str]| {
        let out = Command::new("aws")
            .args([
                "--endpoint-url",
                &endpoint,
                "--region",
                "us-east-1",
                "--output",
                "json",
                "kinesis",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_PAGER", "")
            .output()
            .unwrap();
        (
            out.status.success(),
            common::text(&out.stdout),
            common::text(&out.stderr),
        )
    };
    let (ok, _, err) = aws(&[
        "create-stream",
        "--stream-name",
        "cli",
        "--shard-count",
        "2",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = aws(&[
        "put-record",
        "--stream-name",
        "cli",
        "--partition-key",
        "k",
        "--data",
        data,
    ]);
    assert!(ok, "{err}");
    let put: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shard = put["ShardId"].as_str().unwrap().to_string();
    let (ok, out, err) = aws(&[
        "get-shard-iterator",
        "--stream-name",
        "cli",
        "--shard-id",
        &shard,
        "--shard-iterator-type",
        "TRIM_HORIZON",
    ]);
    assert!(ok, "{err}");
    let it: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (ok, out, err) = aws(&[
        "get-records",
        "--shard-iterator",
        it["ShardIterator"].as_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(records["Records"][0]["Data"], "aGVsbG8=");
    assert_eq!(
        records["Records"][0]["SequenceNumber"],
        put["SequenceNumber"]
    );
    let (ok, out, _) = aws(&["list-streams"]);
    assert!(ok && out.contains("\"cli\""), "{out}");
    let (ok, _, err) = aws(&["describe-stream", "--stream-name", "nope"]);
    assert!(!ok && err.contains("ResourceNotFoundException"), "{err}");
    assert!(server.terminate());
}

#[test]
fn every_acknowledged_put_survives_a_sigkill_of_the_server() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::crash_rng("server sigkill");
    let (server, addr) = spawn_server(dir.path(), "always");
    let mut c = Client::connect(addr).unwrap();
    let created = c
        .kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 4}))
        .unwrap();
    assert_eq!(created.status, 200);
    // Writers put batches until the server dies; each remembers what was acknowledged.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            std::thread::spawn(move || {
                let mut acked: Vec<(String, String)> = Vec::new();
                let Ok(mut c) = Client::connect(addr) else { return acked };
                for batch in 0.. {
                    let entries: Vec<(String, String)> = (0..100)
                        .map(|i| (format!("w{w}-k{}", i % 13), format!("w{w}:{batch}:{i}")))
                        .collect();
                    let records: Vec<_> = entries
                        .iter()
                        .map(|(k, d)| json!({"PartitionKey": k, "Data": base64::engine::general_purpose::STANDARD.encode(d)}))
                        .collect();
                    let Ok(reply) = c.kinesis("PutRecords", &json!({"StreamName": "s", "Records": records})) else {
                        break;
                    };
                    assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
                    for ((_, data), r) in entries.into_iter().zip(reply.json()["Records"].as_array().unwrap()) {
                        if let Some(seq) = r["SequenceNumber"].as_str() {
                            acked.push((seq.to_string(), data));
                        }
                    }
                }
                acked
            })
        })
        .collect();
    use rand::Rng;
    std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(200..1200)));
    server.kill(); // SIGKILL
    let acked: Vec<(String, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() > 100,
        "only {} puts acknowledged before the kill",
        acked.len()
    );

    // Restart: every acknowledged record is there, under its sequence number.
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let stream = store.stream("s").unwrap();
    let mut stored = std::collections::HashMap::new();
    for shard in stream.describe().shards {
        let (records, _) = common::drain(&store, &stream, shard.shard_id);
        for r in records {
            stored.insert(r.sequence_number.to_string(), r.data.to_vec());
        }
    }
    for (seq, data) in &acked {
        assert_eq!(
            stored.get(seq).map(|d| common::text(d)),
            Some(data.clone()),
            "acknowledged record {seq} is missing or wrong"
        );
    }
    println!(
        "{} acknowledged records all found after SIGKILL; {} stored",
        acked.len(),
        stored.len()
    );
}

#[test]
fn with_auth_only_valid_sigv4_signatures_get_through() {
    if !clients_available("SigV4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIDSHARDLOG\naws_secret_access_key = s3cr3t/key+value\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (server, addr) =
        spawn_server_with(&data, "never", &["--auth", credentials.to_str().unwrap()]);
    let script = r#"
import os, boto3, botocore
endpoint = os.environ["SHARDLOG_ENDPOINT"]
def client(key, secret, region="us-east-1", **kw):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1}, **kw))
good = client("AKIDSHARDLOG", "s3cr3t/key+value")
for name in ["signed", "scratch", "prod"]:
    good.create_stream(StreamName=name, ShardCount=1)
good.put_record(StreamName="signed", Data=b"x" * 1000, PartitionKey="k")
assert sorted(good.list_streams()["StreamNames"]) == ["prod", "scratch", "signed"]
for name, c, code in [
    ("wrong secret", client("AKIDSHARDLOG", "wrong"), "InvalidSignatureException"),
    ("unknown key", client("AKIDOTHER", "s3cr3t/key+value"), "UnrecognizedClientException"),
    ("no signature", client("x", "y", signature_version=botocore.UNSIGNED), "MissingAuthenticationTokenException"),
    ("another region", client("AKIDSHARDLOG", "s3cr3t/key+value", region="eu-west-1"), "InvalidSignatureException"),
]:
    try:
        c.list_streams()
        raise AssertionError(name + " got through")
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == code, (name, e.response["Error"])

# Hand-made requests: sign one thing, send another.
import hashlib, json, urllib.request, urllib.error
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
def signed(target, body, service="kinesis", region="us-east-1", sign_target=True):
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if sign_target:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=endpoint + "/", data=body, headers=headers)
    SigV4Auth(Credentials("AKIDSHARDLOG", "s3cr3t/key+value"), service, region).add_auth(request)
    sent = dict(request.headers.items())
    sent["X-Amz-Target"] = target
    return sent
def send_to(url, headers, body):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
def send(headers, body):
    return send_to(endpoint + "/", headers, body)
scratch = json.dumps({"StreamName": "scratch"}).encode()
prod = json.dumps({"StreamName": "prod"}).encode()
headers = signed("Kinesis_20131202.DeleteStream", scratch)
# Replayed with another body, claiming the original body's hash in an unsigned header.
replay = dict(headers, **{"X-Amz-Content-Sha256": hashlib.sha256(scratch).hexdigest()})
status, answer = send(replay, prod)
assert status == 400, (status, answer)
# Replayed with another body, no hash claimed.
status, answer = send(headers, prod)
assert status == 400 and answer["__type"] == "InvalidSignatureException", answer
# The target left unsigned: a signed ListStreams turned into a DeleteStream.
unsigned_target = signed("Kinesis_20131202.DeleteStream", prod, sign_target=False)
status, answer = send(unsigned_target, prod)
assert status == 400 and answer["__type"] == "IncompleteSignatureException", answer
# Scoped to another service.
status, answer = send(signed("Kinesis_20131202.DeleteStream", prod, service="s3"), prod)
assert status == 400 and answer["__type"] == "InvalidSignatureException", answer
assert "prod" in good.list_streams()["StreamNames"], "prod was deleted by a forged request"
# The genuine request still works.
status, answer = send(headers, scratch)
assert status == 200, (status, answer)
assert "scratch" not in good.list_streams()["StreamNames"]

# Presigned (query-string) requests, signed by botocore's own query signer over the body.
from botocore.auth import SigV4QueryAuth
class BodySignedQueryAuth(SigV4QueryAuth):
    # botocore's query signer moves a body into the query (for query-protocol services);
    # a JSON service keeps its body, whose hash the signature covers.
    def _modify_request_before_signing(self, request):
        body, request.data = request.data, b""
        super()._modify_request_before_signing(request)
        request.data = body
def presigned(target, body, expires=300, secret="s3cr3t/key+value"):
    request = AWSRequest(method="POST", url=endpoint + "/", data=body,
                         headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    BodySignedQueryAuth(Credentials("AKIDSHARDLOG", secret), "kinesis", "us-east-1", expires).add_auth(request)
    return request.url, dict(request.headers.items())
signed_body = json.dumps({"StreamName": "signed"}).encode()
url, headers = presigned("Kinesis_20131202.DescribeStreamSummary", signed_body)
assert "X-Amz-Signature=" in url and "authorization" not in {k.lower() for k in headers}, (url, headers)
status, answer = send_to(url, headers, signed_body)
assert status == 200 and answer["StreamDescriptionSummary"]["StreamName"] == "signed", (status, answer)
# Another body under the same URL.
status, answer = send_to(url, headers, prod)
assert status == 400 and answer["__type"] == "InvalidSignatureException", answer
# Another operation under the same URL and body.
status, answer = send_to(url, dict(headers, **{"X-Amz-Target": "Kinesis_20131202.DeleteStream"}), signed_body)
assert status == 400 and answer["__type"] == "InvalidSignatureException", answer
# A lengthened expiry.
status, answer = send_to(url.replace("X-Amz-Expires=300", "X-Amz-Expires=3600"), headers, signed_body)
assert status == 400 and answer["__type"] == "InvalidSignatureException", answer
# The wrong secret, and a URL without its signature.
url_wrong, headers_wrong = presigned("Kinesis_20131202.DescribeStreamSummary", signed_body, secret="wrong")
status, answer = send_to(url_wrong, headers_wrong, signed_body)
assert status == 400 and answer["__type"] == "InvalidSignatureException", answer
status, answer = send_to(url.split("&X-Amz-Signature=")[0], headers, signed_body)
assert status == 400 and answer["__type"] == "IncompleteSignatureException", answer
assert answer["message"].startswith("AWS query-string parameters must include 'X-Amz-Signature'."), answer
assert "signed" in good.list_streams()["StreamNames"]
print("sigv4 checks passed")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("SHARDLOG_ENDPOINT", format!("http://{addr}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        common::text(&out.stdout),
        common::text(&out.stderr)
    );
    // The aws CLI signs the same way.
    let cli = Command::new("aws")
        .args([
            "--endpoint-url",
            &format!("http://{addr}"),
            "--region",
            "us-east-1",
            "kinesis",
            "list-streams",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDSHARDLOG")
        .env("AWS_SECRET_ACCESS_KEY", "s3cr3t/key+value")
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", common::text(&cli.stderr));
    assert!(common::text(&cli.stdout).contains("signed"));
    assert!(server.terminate());
}

#[test]
fn http2_without_tls_is_served() {
    let curl_h2 = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| common::text(&o.stdout).contains("HTTP2"));
    if !curl_h2 {
        println!("SKIPPED: no curl with HTTP/2");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _store) = start(dir.path());
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            "-X",
            "POST",
        ])
        .args(["-H", "X-Amz-Target: Kinesis_20131202.ListStreams"])
        .args(["-H", "Content-Type: application/x-amz-json-1.1", "-d", "{}"])
        .arg(format!("http://{}/", server.local_addr()))
        .output()
        .unwrap();
    let text = common::text(&out.stdout);
    let (body, version) = text.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{text}");
    let reply: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(reply["StreamNames"], json!([]));

    // SubscribeToShard over HTTP/2, as the Java SDK does it: event stream messages.
    let mut c = Client::connect(server.local_addr()).unwrap();
    let ok = |r: common::http::Reply| {
        assert_eq!(r.status, 200, "{}", common::text(&r.body));
        r.json()
    };
    ok(c.kinesis(
        "CreateStream",
        &json!({"StreamName": "h2", "ShardCount": 1}),
    )
    .unwrap());
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/h2";
    let consumer = ok(c
        .kinesis(
            "RegisterStreamConsumer",
            &json!({"StreamARN": arn, "ConsumerName": "c"}),
        )
        .unwrap());
    ok(c.kinesis(
        "PutRecord",
        &json!({"StreamName": "h2", "PartitionKey": "k", "Data": "aGk="}),
    )
    .unwrap());
    let request = json!({
        "ConsumerARN": consumer["Consumer"]["ConsumerARN"],
        "ShardId": "shardId-000000000000",
        "StartingPosition": {"Type": "TRIM_HORIZON"},
    });
    let events = common::http::subscribe_h2(server.local_addr(), &request, 2).unwrap();
    assert!(events.len() >= 2, "{events:?}");
    assert!(events[0].0.contains("initial-response"), "{:?}", events[0]);
    assert!(
        events[1].0.contains("SubscribeToShardEvent"),
        "{:?}",
        events[1]
    );
    assert!(events[1].1.contains("\"Data\":\"aGk=\""), "{:?}", events[1]);
}

/// CBOR 1.1 (the Java SDK's default for Kinesis): blobs travel as byte strings and timestamps
/// under tag 1, both ways; errors come back as CBOR maps.
#[test]
fn cbor_requests_get_cbor_answers() {
    use ciborium::value::Value as Cbor;
    let dir = tempfile::tempdir().unwrap();
    let (server, _store) = start(dir.path());
    let mut c = Client::connect(server.local_addr()).unwrap();
    let call = |c: &mut Client, op: &str, body: Cbor| {
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&body, &mut bytes).unwrap();
        let reply = c
            .post(
                &format!("Kinesis_20131202.{op}"),
                "application/x-amz-cbor-1.1",
                &bytes,
            )
            .unwrap();
        assert_eq!(
            reply.header("content-type"),
            Some("application/x-amz-cbor-1.1")
        );
        // Operations without output answer an empty body.
        let value: Cbor = if reply.body.is_empty() {
            Cbor::Map(Vec::new())
        } else {
            ciborium::de::from_reader(&reply.body[..]).unwrap()
        };
        (reply.status, value)
    };
    let text = |s: &str| Cbor::Text(s.into());
    let get = |v: &Cbor, key: &str| -> Cbor {
        v.as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v.clone())
            .unwrap_or(Cbor::Null)
    };
    let (status, _) = call(
        &mut c,
        "CreateStream",
        Cbor::Map(vec![
            (text("StreamName"), text("c")),
            (text("ShardCount"), Cbor::Integer(1.into())),
        ]),
    );
    assert_eq!(status, 200);
    let payload = vec![0u8, 159, 146, 150, 255];
    let (status, put) = call(
        &mut c,
        "PutRecord",
        Cbor::Map(vec![
            (text("StreamName"), text("c")),
            (text("PartitionKey"), text("k")),
            (text("Data"), Cbor::Bytes(payload.clone())),
        ]),
    );
    assert_eq!(status, 200, "{put:?}");
    let (_, it) = call(
        &mut c,
        "GetShardIterator",
        Cbor::Map(vec![
            (text("StreamName"), text("c")),
            (text("ShardId"), get(&put, "ShardId")),
            (text("ShardIteratorType"), text("AT_TIMESTAMP")),
            (
                text("Timestamp"),
                Cbor::Tag(1, Box::new(Cbor::Integer(0.into()))),
            ),
        ]),
    );
    let (status, records) = call(
        &mut c,
        "GetRecords",
        Cbor::Map(vec![(text("ShardIterator"), get(&it, "ShardIterator"))]),
    );
    assert_eq!(status, 200, "{records:?}");
    let first = get(&records, "Records").as_array().unwrap()[0].clone();
    assert_eq!(
        get(&first, "Data"),
        Cbor::Bytes(payload),
        "the blob is a byte string"
    );
    assert_eq!(get(&first, "SequenceNumber"), get(&put, "SequenceNumber"));
    assert!(
        matches!(get(&first, "ApproximateArrivalTimestamp"), Cbor::Tag(1, _)),
        "timestamps are tagged"
    );
    let (status, error) = call(
        &mut c,
        "DescribeStream",
        Cbor::Map(vec![(text("StreamName"), text("missing"))]),
    );
    assert_eq!(status, 400);
    assert_eq!(get(&error, "__type"), text("ResourceNotFoundException"));
    let bad = c
        .post(
            "Kinesis_20131202.ListStreams",
            "application/x-amz-cbor-1.1",
            b"\xff\xff",
        )
        .unwrap();
    assert_eq!(bad.status, 400);
}
