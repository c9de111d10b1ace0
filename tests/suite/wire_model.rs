//! Requests checked against the service model as AWS checks them (issue #18, item 1): the whole
//! body's types first (`SerializationException`), then every constraint of the model at once
//! (`ValidationException`, AWS's wording, the model's member order), and only then the semantic
//! checks and the lookups. Through the real server, with raw HTTP and with boto3 (its own
//! validation off, so the server's answers are what is tested); and the embedded model checked
//! against the installed botocore so the two cannot drift.
#![cfg(feature = "server")]

use crate::common;

use std::process::Command;

use serde_json::json;

use crate::server_semantics::{refusal, start};

#[test]
fn the_embedded_models_are_botocores() {
    if !crate::server::clients_available("the botocore model comparison") {
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/server/model/strip_model.py"
    );
    let out = Command::new("python3")
        .args([script, "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "src/server/model/*.json differ from the installed botocore (run {script} to update):\n{}{}",
        common::text(&out.stdout),
        common::text(&out.stderr)
    );
}

#[test]
fn every_violation_in_one_validation_exception_before_any_lookup() {
    let (_dir, _server, mut c) = start();
    let long = "a".repeat(129);
    // Both members broken: both reported, in the model's member order.
    let (kind, message) = refusal(
        &mut c,
        "CreateStream",
        &json!({"StreamName": long, "ShardCount": 0}),
    );
    assert_eq!(kind, "ValidationException");
    assert_eq!(
        message,
        format!(
            "2 validation errors detected: Value '{long}' at 'streamName' failed to satisfy \
             constraint: Member must have length less than or equal to 128; Value '0' at \
             'shardCount' failed to satisfy constraint: Member must have value greater than or \
             equal to 1"
        )
    );
    // A required member missing.
    let (kind, message) = refusal(&mut c, "GetRecords", &json!({}));
    assert_eq!(kind, "ValidationException");
    assert_eq!(
        message,
        "1 validation error detected: Value null at 'shardIterator' failed to satisfy \
         constraint: Member must not be null"
    );
    // Model bounds that were InvalidArgumentException before.
    for (operation, body, path) in [
        (
            "GetRecords",
            json!({"ShardIterator": "x", "Limit": 0}),
            "limit",
        ),
        (
            "GetRecords",
            json!({"ShardIterator": "x", "Limit": 10001}),
            "limit",
        ),
        ("GetRecords", json!({"ShardIterator": ""}), "shardIterator"),
        (
            "GetRecords",
            json!({"ShardIterator": "x".repeat(513)}),
            "shardIterator",
        ),
        (
            "ListStreams",
            json!({"ExclusiveStartStreamName": ""}),
            "exclusiveStartStreamName",
        ),
        (
            "ListStreams",
            json!({"ExclusiveStartStreamName": long}),
            "exclusiveStartStreamName",
        ),
        (
            "ListShards",
            json!({"StreamName": "s", "MaxResults": 0}),
            "maxResults",
        ),
        (
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": "k".repeat(257), "Data": "AA=="}),
            "partitionKey",
        ),
        (
            "PutRecords",
            json!({"StreamName": "s", "Records": [
                {"PartitionKey": "k", "Data": "AA=="},
                {"PartitionKey": "k".repeat(257), "Data": "AA=="},
            ]}),
            "records.2.member.partitionKey",
        ),
        (
            "GetShardIterator",
            json!({"StreamName": "s", "ShardId": "shardId-0", "ShardIteratorType": "SOMEWHERE"}),
            "shardIteratorType",
        ),
    ] {
        let (kind, message) = refusal(&mut c, operation, &body);
        assert_eq!(kind, "ValidationException", "{operation} {body}: {message}");
        // An empty name breaks both the pattern and the minimum length: two violations.
        assert!(
            message.contains(" validation error")
                && message.contains(&format!(" at '{path}' failed to satisfy constraint: ")),
            "{operation}: {message}"
        );
    }
    // The tags are checked before the (missing) stream is looked up.
    let (kind, message) = refusal(
        &mut c,
        "AddTagsToStream",
        &json!({"StreamName": "missing", "Tags": {long.clone(): "v"}}),
    );
    assert_eq!(kind, "ValidationException");
    assert!(
        message.contains("at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]"),
        "{message}"
    );
    let (kind, _) = refusal(
        &mut c,
        "AddTagsToStream",
        &json!({"StreamName": "missing", "Tags": {"k": "v"}}),
    );
    assert_eq!(kind, "ResourceNotFoundException");
}

#[test]
fn a_wrongly_typed_member_is_a_serialization_exception_before_any_constraint() {
    let (_dir, _server, mut c) = start();
    // StreamName is missing too; the type error is what AWS reports.
    for (body, message) in [
        (
            json!({"ShardCount": "3"}),
            "class java.lang.String can not be converted to an Integer",
        ),
        (
            json!({"ShardCount": true}),
            "class java.lang.Boolean can not be converted to an Integer",
        ),
        (
            json!({"StreamName": 5, "ShardCount": 1}),
            "class java.math.BigDecimal can not be converted to an String",
        ),
        (
            json!({"StreamName": ["s"], "ShardCount": 1}),
            "Start of list found where not expected",
        ),
        (
            json!({"StreamName": "s", "ShardCount": 1, "Tags": []}),
            "Start of list found where not expected",
        ),
        (
            json!({"StreamName": "s", "StreamModeDetails": "ON_DEMAND"}),
            "Expected null",
        ),
    ] {
        let reply = c.kinesis("CreateStream", &body).unwrap();
        assert_eq!(reply.status, 400);
        let answer = reply.json();
        assert_eq!(answer["__type"], "SerializationException", "{body}");
        // AWS spells this exception's member `Message`, and sends nothing else.
        assert_eq!(answer["Message"], message, "{body}");
        assert_eq!(answer.as_object().unwrap().len(), 2, "{answer}");
    }
    let (kind, message) = refusal(
        &mut c,
        "PutRecord",
        &json!({"StreamName": "s", "PartitionKey": "k", "Data": "A?=="}),
    );
    assert_eq!(kind, "SerializationException");
    assert_eq!(
        message,
        "'A?==' can not be converted to a Blob: Invalid Base64 character: '?'"
    );
    // Members the model does not have are ignored, as AWS ignores them.
    let ok = c
        .kinesis(
            "CreateStream",
            &json!({"StreamName": "s", "ShardCount": 1, "Colour": "red"}),
        )
        .unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
}

#[test]
fn boto3_without_its_own_validation_gets_the_models_answers() {
    if !crate::server::clients_available("boto3_validation.py") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    crate::server::run_boto3_script("boto3_validation.py", dir.path());
}
