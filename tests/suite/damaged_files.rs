//! A damaged side file costs only what depends on it: the real `shardlog serve` starts over a
//! data directory with a damaged stream manifest, a manifest whose shards no longer tile the
//! key space, a damaged `delivery.json`, a damaged Firehose `checkpoint.json`, a damaged
//! `settings.json` and a damaged group file; everything else serves, every call touching a
//! damaged thing names its file, and `shardlog verify` reports each one.
#![cfg(feature = "server")]

use crate::common;

use std::path::Path;
use std::process::Command;

use common::http::Client;
use common::serve::spawn_server_with;
use serde_json::json;

fn firehose(c: &mut Client, operation: &str, body: &serde_json::Value) -> common::http::Reply {
    c.post(
        &format!("Firehose_20150804.{operation}"),
        "application/x-amz-json-1.1",
        &serde_json::to_vec(body).unwrap(),
    )
    .unwrap()
}

fn groups(c: &mut Client, operation: &str, body: &serde_json::Value) -> common::http::Reply {
    c.post(
        &format!("ShardlogConsumerGroups_20261126.{operation}"),
        "application/x-amz-json-1.1",
        &serde_json::to_vec(body).unwrap(),
    )
    .unwrap()
}

fn create_delivery_stream(c: &mut Client, name: &str) {
    let reply = firehose(
        c,
        "CreateDeliveryStream",
        &json!({
            "DeliveryStreamName": name,
            "ExtendedS3DestinationConfiguration": {
                "BucketARN": "arn:aws:s3:::bucket",
                "RoleARN": "arn:aws:iam::000000000000:role/r",
            },
        }),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.json());
}

fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.truncate(bytes.len() / 2);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_side_files_cost_only_their_own_resource() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let (server, addr) = spawn_server_with(&data, "always", &[]);
        let mut c = Client::connect(addr).unwrap();
        for name in ["good", "broken", "untiled"] {
            let reply = c
                .kinesis(
                    "CreateStream",
                    &json!({"StreamName": name, "ShardCount": 2}),
                )
                .unwrap();
            assert_eq!(reply.status, 200);
        }
        for name in ["fine", "bad-config", "bad-checkpoint"] {
            create_delivery_stream(&mut c, name);
            let reply = firehose(
                &mut c,
                "PutRecord",
                &json!({"DeliveryStreamName": name, "Record": {"Data": "eA=="}}),
            );
            assert_eq!(reply.status, 200);
        }
        let reply = c
            .kinesis(
                "UpdateAccountSettings",
                &json!({"MinimumThroughputBillingCommitment": {"Status": "DISABLED"}}),
            )
            .unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        for group in ["g-ok", "g-bad"] {
            let reply = groups(
                &mut c,
                "LeaseShards",
                &json!({"GroupName": group, "StreamName": "good", "WorkerId": "w"}),
            );
            assert_eq!(reply.status, 200, "{:?}", reply.json());
        }
        assert!(server.terminate());
    }
    damage(&data.join("streams/broken/stream.json"));
    // Parses, but its open shards no longer tile the key space.
    let untiled = data.join("streams/untiled/stream.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&untiled).unwrap()).unwrap();
    manifest["shards"].as_array_mut().unwrap().pop();
    std::fs::write(&untiled, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    damage(&data.join("firehose/bad-config/delivery.json"));
    // (Written at the first delivery; a torn one is what damage would look like.)
    std::fs::write(
        data.join("firehose/bad-checkpoint/checkpoint.json"),
        b"{\"delivered\": ",
    )
    .unwrap();
    damage(&data.join("settings.json"));
    damage(&data.join("groups/g-bad.json"));
    std::fs::write(data.join("iterator.key"), b"torn").unwrap();

    // verify names every damaged file.
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .arg("verify")
        .arg(&data)
        .output()
        .unwrap();
    let report = common::text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for file in [
        "streams/broken/stream.json",
        "streams/untiled/stream.json",
        "firehose/bad-config/delivery.json",
        "firehose/bad-checkpoint/checkpoint.json",
        "settings.json",
        "groups/g-bad.json",
        "iterator.key",
    ] {
        assert!(
            report.contains(file),
            "verify does not name {file}:\n{report}"
        );
    }
    // A torn JSON file is reported where it breaks off: the checkpoint's last byte, 13 (serde's
    // 1-based column 14).
    assert!(
        report.contains(
            "bad-checkpoint/checkpoint.json at byte 13: does not parse: line 1 column 14"
        ),
        "{report}"
    );

    // The server starts; what is intact serves.
    let (server, addr) = spawn_server_with(&data, "always", &[]);
    let mut c = Client::connect(addr).unwrap();
    let reply = c
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "good", "PartitionKey": "k", "Data": "eA=="}),
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    let listed = c.kinesis("ListStreams", &json!({})).unwrap().json();
    assert_eq!(listed["StreamNames"], json!(["broken", "good", "untiled"]));
    for name in ["broken", "untiled"] {
        let reply = c
            .kinesis("DescribeStreamSummary", &json!({"StreamName": name}))
            .unwrap();
        assert_eq!(reply.status, 500);
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("{name}/stream.json")),
            "{message}"
        );
    }
    let reply = firehose(
        &mut c,
        "PutRecord",
        &json!({"DeliveryStreamName": "fine", "Record": {"Data": "eA=="}}),
    );
    assert_eq!(reply.status, 200);
    for (name, file) in [
        ("bad-config", "delivery.json"),
        ("bad-checkpoint", "checkpoint.json"),
    ] {
        let reply = firehose(
            &mut c,
            "DescribeDeliveryStream",
            &json!({"DeliveryStreamName": name}),
        );
        assert_eq!(reply.status, 500, "{name}");
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(file), "{message}");
    }
    let reply = c.kinesis("DescribeAccountSettings", &json!({})).unwrap();
    assert_eq!(reply.status, 500);
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("settings.json"));
    let listed = groups(&mut c, "ListGroups", &json!({}));
    assert_eq!(listed.status, 200, "{:?}", listed.json());
    assert!(listed.json().to_string().contains("g-ok"));
    let reply = groups(&mut c, "DescribeGroup", &json!({"GroupName": "g-bad"}));
    assert!(reply.status >= 400);
    // A damaged stream can be deleted, and its name used again.
    let reply = c
        .kinesis("DeleteStream", &json!({"StreamName": "broken"}))
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let reply = c
        .kinesis(
            "CreateStream",
            &json!({"StreamName": "broken", "ShardCount": 1}),
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    let reply = firehose(
        &mut c,
        "DeleteDeliveryStream",
        &json!({"DeliveryStreamName": "bad-config"}),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert!(server.terminate());
}
