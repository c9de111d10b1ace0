//! The semantic checks Kinesis makes beyond the model's constraints, with its messages where they
//! are known (issue #18, item 3): iterator types against StartingSequenceNumber and Timestamp,
//! and where SplitShard may split.
#![cfg(feature = "server")]

use crate::common;

use std::sync::Arc;

use common::http::Client;
use serde_json::{json, Value};
use shardlog::server::Server;
use shardlog::{Store, StoreOptions};

const RULE: &str = "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and \
     StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber.";

/// A server on a fresh store, and a client connected to it.
pub(crate) fn start() -> (tempfile::TempDir, Server, Client) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let server = common::serve::in_process(store);
    let c = Client::connect(server.local_addr()).unwrap();
    (dir, server, c)
}

/// The error type and message (either spelling of the member) of a refused Kinesis request.
pub(crate) fn refusal(c: &mut Client, operation: &str, body: &Value) -> (String, String) {
    let reply = c.kinesis(operation, body).unwrap();
    assert_eq!(
        reply.status,
        400,
        "{operation}: {}",
        common::text(&reply.body)
    );
    let body = reply.json();
    let message = body.get("message").or_else(|| body.get("Message"));
    (
        body["__type"].as_str().unwrap().to_string(),
        message.and_then(Value::as_str).unwrap().to_string(),
    )
}

#[test]
fn iterator_types_and_starting_sequence_numbers_go_together_as_kinesis_says() {
    let (_dir, _server, mut c) = start();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    let put = c
        .kinesis(
            "PutRecord",
            &json!({"StreamName": "s", "PartitionKey": "k", "Data": "YQ=="}),
        )
        .unwrap()
        .json();
    let seq = put["SequenceNumber"].as_str().unwrap().to_string();
    let request = |kind: &str, seq: Option<&str>| {
        let mut body =
            json!({"StreamName": "s", "ShardId": "shardId-0", "ShardIteratorType": kind});
        if let Some(seq) = seq {
            body["StartingSequenceNumber"] = json!(seq);
        }
        body
    };
    for kind in ["LATEST", "TRIM_HORIZON"] {
        assert_eq!(
            refusal(&mut c, "GetShardIterator", &request(kind, Some(&seq))),
            (
                "InvalidArgumentException".to_string(),
                format!("{RULE} Request specified {kind} and also a StartingSequenceNumber.")
            )
        );
        let ok = c.kinesis("GetShardIterator", &request(kind, None)).unwrap();
        assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
    }
    for kind in ["AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"] {
        assert_eq!(
            refusal(&mut c, "GetShardIterator", &request(kind, None)),
            (
                "InvalidArgumentException".to_string(),
                format!("{RULE} Request specified {kind} and no StartingSequenceNumber.")
            )
        );
        let ok = c
            .kinesis("GetShardIterator", &request(kind, Some(&seq)))
            .unwrap();
        assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
    }
}

#[test]
fn at_timestamp_needs_a_timestamp_not_in_the_future() {
    let (_dir, _server, mut c) = start();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    let body = |timestamp: Option<f64>| {
        let mut body =
            json!({"StreamName": "s", "ShardId": "shardId-0", "ShardIteratorType": "AT_TIMESTAMP"});
        if let Some(t) = timestamp {
            body["Timestamp"] = json!(t);
        }
        body
    };
    assert_eq!(
        refusal(&mut c, "GetShardIterator", &body(None)),
        (
            "InvalidArgumentException".to_string(),
            "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. \
             Current request has no timestamp parameter."
                .to_string()
        )
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (kind, message) = refusal(&mut c, "GetShardIterator", &body(Some(now + 3600.0)));
    assert_eq!(kind, "InvalidArgumentException");
    assert!(
        message.starts_with(
            "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. \
             timestampInMillis: "
        ),
        "{message}"
    );
    let ok = c
        .kinesis("GetShardIterator", &body(Some(now - 60.0)))
        .unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
}

#[test]
fn split_shard_takes_keys_above_the_start_plus_one_and_below_the_end() {
    let (_dir, _server, mut c) = start();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    let split = |key: &str| json!({"StreamName": "s", "ShardToSplit": "shardId-0", "NewStartingHashKey": key});
    for refused in ["0", "1", &u128::MAX.to_string()] {
        let (kind, message) = refusal(&mut c, "SplitShard", &split(refused));
        assert_eq!(kind, "InvalidArgumentException", "{refused}");
        assert!(
            message.contains("is not both greater than one plus the shard's StartingHashKey 0"),
            "{message}"
        );
    }
    // Not a decimal number: the model's pattern refuses it, before the shard is looked up.
    for garbage in ["abc", "-1", "1.5", "1e39"] {
        let (kind, message) = refusal(&mut c, "SplitShard", &split(garbage));
        assert_eq!(kind, "ValidationException", "{garbage}");
        assert_eq!(
            message,
            format!(
                "1 validation error detected: Value '{garbage}' at 'newStartingHashKey' failed to \
                 satisfy constraint: Member must satisfy regular expression pattern: \
                 0|([1-9]\\d{{0,38}})"
            )
        );
    }
    // A decimal number past 2^128 - 1 keeps the pattern and is refused by the server.
    let (kind, message) = refusal(
        &mut c,
        "SplitShard",
        &split("340282366920938463463374607431768211456"),
    );
    assert_eq!(kind, "InvalidArgumentException");
    assert!(message.contains("NewStartingHashKey"), "{message}");
    // The smallest key Kinesis takes: children [0, 1] and [2, max].
    let ok = c.kinesis("SplitShard", &split("2")).unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
    let shards = c
        .kinesis("ListShards", &json!({"StreamName": "s"}))
        .unwrap()
        .json();
    let ranges: Vec<(String, String)> = shards["Shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["HashKeyRange"]["StartingHashKey"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                s["HashKeyRange"]["EndingHashKey"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        ranges[1..],
        [
            ("0".to_string(), "1".to_string()),
            ("2".to_string(), u128::MAX.to_string())
        ]
    );
}

#[test]
fn merge_shards_takes_the_pair_in_key_order_only() {
    let (_dir, _server, mut c) = start();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 3}))
        .unwrap();
    let merge =
        |a: &str, b: &str| json!({"StreamName": "s", "ShardToMerge": a, "AdjacentShardToMerge": b});
    for (a, b) in [("shardId-1", "shardId-0"), ("shardId-0", "shardId-2")] {
        let (kind, message) = refusal(&mut c, "MergeShards", &merge(a, b));
        assert_eq!(kind, "InvalidArgumentException");
        assert!(
            message.contains("are not an adjacent pair of shards eligible for merging"),
            "{message}"
        );
    }
    let ok = c
        .kinesis("MergeShards", &merge("shardId-0", "shardId-1"))
        .unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
}

#[test]
fn hash_keys_and_sequence_numbers_that_do_not_parse_are_refused() {
    let (_dir, _server, mut c) = start();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 2}))
        .unwrap();
    let too_big = "340282366920938463463374607431768211456"; // 2^128
                                                             // Off the model's pattern: a ValidationException naming the member; a number past
                                                             // 2^128 - 1 keeps the pattern and is refused by the server.
    for (bad, expected, path) in [
        ("-1", "ValidationException", "explicitHashKey"),
        ("01", "ValidationException", "explicitHashKey"),
        ("x", "ValidationException", "explicitHashKey"),
        (too_big, "InvalidArgumentException", "ExplicitHashKey"),
    ] {
        let put =
            json!({"StreamName": "s", "PartitionKey": "k", "Data": "AA==", "ExplicitHashKey": bad});
        let (kind, message) = refusal(&mut c, "PutRecord", &put);
        assert_eq!(kind, expected, "{bad}");
        assert!(message.contains(path), "{message}");
        if bad == too_big {
            assert_eq!(
                message,
                format!(
                    "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: \
                     [0, 2^128-1]. Specified value was {too_big}"
                )
            );
        }
        let entries = json!({"StreamName": "s", "Records": [
            {"PartitionKey": "k", "Data": "AA=="},
            {"PartitionKey": "k", "Data": "AA==", "ExplicitHashKey": bad},
        ]});
        let (kind, message) = refusal(&mut c, "PutRecords", &entries);
        assert_eq!(kind, expected, "{bad} in PutRecords");
        if expected == "ValidationException" {
            assert!(
                message.contains("at 'records.2.member.explicitHashKey'"),
                "{message}"
            );
        }
    }
    let ordering = json!({"StreamName": "s", "PartitionKey": "k", "Data": "AA==", "SequenceNumberForOrdering": "123"});
    let (kind, message) = refusal(&mut c, "PutRecord", &ordering);
    assert_eq!(kind, "InvalidArgumentException");
    assert_eq!(
        message,
        "ExclusiveMinimumSequenceNumber 123 used in PutRecord on stream s under account \
         000000000000 is invalid."
    );
    // Sequence numbers are parsed by the server too.
    for kind in ["AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"] {
        let iterator = json!({"StreamName": "s", "ShardId": "shardId-000000000000",
            "ShardIteratorType": kind, "StartingSequenceNumber": "12"});
        let (kind, message) = refusal(&mut c, "GetShardIterator", &iterator);
        assert_eq!(kind, "InvalidArgumentException");
        assert!(message.contains("StartingSequenceNumber"), "{message}");
    }
    // Nothing was stored by the refused requests.
    let listed = c
        .kinesis("DescribeStreamSummary", &json!({"StreamName": "s"}))
        .unwrap()
        .json();
    assert_eq!(listed["StreamDescriptionSummary"]["OpenShardCount"], 2);
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let it = c
            .kinesis(
                "GetShardIterator",
                &json!({"StreamName": "s", "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
            )
            .unwrap()
            .json();
        let page = c
            .kinesis("GetRecords", &json!({"ShardIterator": it["ShardIterator"]}))
            .unwrap()
            .json();
        assert_eq!(page["Records"], json!([]), "{shard}");
    }
}

#[test]
fn tags_are_checked_as_kinesis_checks_them() {
    let (_dir, _server, mut c) = start();
    const CHARACTERS: &str = "Some tags contain invalid characters. Valid characters: Unicode \
         letters, digits, white space, _ . / = + - % @ :.";
    // Characters outside Kinesis' set, in keys and values, on every operation that takes tags.
    for bad in ["a;b", "a,b", "a\tb", "a\nb", "a*b"] {
        let (kind, message) = refusal(
            &mut c,
            "CreateStream",
            &json!({"StreamName": "t", "ShardCount": 1, "Tags": {bad: "v"}}),
        );
        assert_eq!(
            (kind.as_str(), message.as_str()),
            ("InvalidArgumentException", CHARACTERS),
            "{bad:?}"
        );
    }
    let ok = c
        .kinesis(
            "CreateStream",
            &json!({"StreamName": "s", "ShardCount": 1,
                "Tags": {"team:é 1": "a_b.c/d=e+f-g%h@i", "empty": ""}}),
        )
        .unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
    let (kind, message) = refusal(
        &mut c,
        "AddTagsToStream",
        &json!({"StreamName": "s", "Tags": {"ok": "semi;colon"}}),
    );
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("InvalidArgumentException", CHARACTERS)
    );
    let (kind, message) = refusal(
        &mut c,
        "RemoveTagsFromStream",
        &json!({"StreamName": "s", "TagKeys": ["tab\there"]}),
    );
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("InvalidArgumentException", CHARACTERS)
    );
    // 50 tags is the most a stream has: the 51st is an InvalidArgumentException naming it.
    let tags: serde_json::Map<String, Value> =
        (0..48).map(|i| (format!("k{i}"), json!("v"))).collect();
    let ok = c
        .kinesis("AddTagsToStream", &json!({"StreamName": "s", "Tags": tags}))
        .unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
    let (kind, message) = refusal(
        &mut c,
        "AddTagsToStream",
        &json!({"StreamName": "s", "Tags": {"one-more": "v"}}),
    );
    assert_eq!(kind, "InvalidArgumentException");
    assert_eq!(
        message,
        "Failed to add tags to stream s under account 000000000000 because a given stream \
         cannot have more than 50 tags associated with it."
    );
    // Replacing an existing key adds none.
    let ok = c
        .kinesis(
            "AddTagsToStream",
            &json!({"StreamName": "s", "Tags": {"k0": "w"}}),
        )
        .unwrap();
    assert_eq!(ok.status, 200, "{}", common::text(&ok.body));
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (kind, _) = refusal(
        &mut c,
        "CreateStream",
        &json!({"StreamName": "u", "ShardCount": 1, "Tags": many}),
    );
    assert_eq!(kind, "InvalidArgumentException");
    let (kind, message) = refusal(
        &mut c,
        "RemoveTagsFromStream",
        &json!({"StreamName": "s", "TagKeys": (0..51).map(|i| format!("k{i}")).collect::<Vec<_>>()}),
    );
    assert_eq!(kind, "ValidationException");
    assert!(
        message.contains("Member must have length less than or equal to 50"),
        "{message}"
    );
}

#[test]
fn refusals_in_kinesis_words() {
    let (_dir, _server, mut c) = start();
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    let (kind, message) = refusal(&mut c, "DescribeStream", &json!({"StreamName": "nope"}));
    assert_eq!(kind, "ResourceNotFoundException");
    assert_eq!(message, "Stream nope under account 000000000000 not found.");
    let (kind, message) = refusal(
        &mut c,
        "PutRecords",
        &json!({"StreamName": "nope", "Records": [{"PartitionKey": "k", "Data": "AA=="}]}),
    );
    assert_eq!(kind, "ResourceNotFoundException");
    assert_eq!(message, "Stream nope under account 000000000000 not found.");
    let (kind, message) = refusal(
        &mut c,
        "GetShardIterator",
        &json!({"StreamName": "s", "ShardId": "shardId-7", "ShardIteratorType": "LATEST"}),
    );
    assert_eq!(kind, "ResourceNotFoundException");
    assert_eq!(
        message,
        "Shard shardId-000000000007 in stream s under account 000000000000 does not exist"
    );
    let (kind, message) = refusal(&mut c, "GetRecords", &json!({"ShardIterator": "garbage"}));
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("InvalidArgumentException", "Invalid ShardIterator.")
    );
    for (operation, hours, expected) in [
        ("IncreaseStreamRetentionPeriod", 23, "Minimum allowed retention period is 24 hours. Requested retention period (23 hours) is too short."),
        ("IncreaseStreamRetentionPeriod", 8761, "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) is too long."),
        ("DecreaseStreamRetentionPeriod", 48, "Requested retention period (48 hours) for stream s can not be longer than existing retention period (24 hours). Use IncreaseRetentionPeriod API."),
    ] {
        let (kind, message) = refusal(
            &mut c,
            operation,
            &json!({"StreamName": "s", "RetentionPeriodHours": hours}),
        );
        assert_eq!((kind.as_str(), message.as_str()), ("InvalidArgumentException", expected));
    }
    let ok = c
        .kinesis(
            "IncreaseStreamRetentionPeriod",
            &json!({"StreamName": "s", "RetentionPeriodHours": 72}),
        )
        .unwrap();
    assert_eq!(ok.status, 200);
    let (_, message) = refusal(
        &mut c,
        "IncreaseStreamRetentionPeriod",
        &json!({"StreamName": "s", "RetentionPeriodHours": 48}),
    );
    assert_eq!(message, "Requested retention period (48 hours) for stream s can not be shorter than existing retention period (72 hours). Use DecreaseRetentionPeriod API.");
}
