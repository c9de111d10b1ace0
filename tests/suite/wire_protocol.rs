//! The protocol's edges as AWS answers them (issue #18, item 4): empty bodies for operations
//! without output, errors in the right framing for bad methods and content types, AWS JSON 1.0
//! requests, empty bodies, and CORS for browsers.
#![cfg(feature = "server")]

use crate::common;

use serde_json::json;

use crate::server_semantics::start;

#[test]
fn operations_without_output_answer_an_empty_body() {
    let (_dir, _server, mut c) = start();
    let created = c
        .kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 1}))
        .unwrap();
    assert_eq!(created.status, 200);
    assert!(created.body.is_empty(), "{}", common::text(&created.body));
    assert_eq!(
        created.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    let tagged = c
        .kinesis(
            "AddTagsToStream",
            &json!({"StreamName": "s", "Tags": {"k": "v"}}),
        )
        .unwrap();
    assert!(tagged.status == 200 && tagged.body.is_empty());
    // Operations with output still answer JSON.
    let listed = c.kinesis("ListStreams", &json!({})).unwrap();
    assert_eq!(listed.json()["StreamNames"], json!(["s"]));
}

#[test]
fn methods_content_types_and_bodies_are_framed_as_aws_frames_them() {
    let (_dir, _server, mut c) = start();
    const DENIED: &str = "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n";
    // Not a POST: 403 in XML (GET /health and /metrics stay).
    for method in ["GET", "PUT", "DELETE"] {
        let reply = c
            .raw(format!("{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(
            (reply.status, common::text(&reply.body).as_str()),
            (403, DENIED),
            "{method}"
        );
    }
    assert_eq!(c.get("/health").unwrap().status, 200);
    // No content type it serves: 404 when the target names an operation, else 403.
    let body = b"{}";
    let reply = c
        .post("Kinesis_20131202.ListStreams", "text/plain", body)
        .unwrap();
    assert_eq!(
        (reply.status, common::text(&reply.body).as_str()),
        (404, "<UnknownOperationException/>\n")
    );
    let reply = c
        .raw(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    assert_eq!(
        (reply.status, common::text(&reply.body).as_str()),
        (403, DENIED)
    );
    // AWS JSON 1.0 framing: 200 with the JSON 1.0 envelope, the operation never run.
    let reply = c
        .post("Kinesis_20131202.ListStreams", "application/json", body)
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"Output": {"__type": "com.amazon.coral.service#UnknownOperationException", "message": null}, "Version": "1.0"})
    );
    let reply = c
        .post("Kinesis_20131202.ListStreams", "application/json", b"nope")
        .unwrap();
    assert_eq!(
        reply.json()["Output"]["__type"],
        "com.amazon.coral.service#SerializationException"
    );
    // A charset parameter is fine; an empty body is not a request.
    let reply = c
        .post(
            "Kinesis_20131202.ListStreams",
            "application/x-amz-json-1.1; charset=utf-8",
            body,
        )
        .unwrap();
    assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
    let reply = c
        .post(
            "Kinesis_20131202.ListStreams",
            "application/x-amz-json-1.1",
            b"",
        )
        .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["__type"], "SerializationException");
    // A target naming no operation, with a body: UnknownOperationException.
    let reply = c
        .post(
            "Kinesis_20131202.NoSuchThing",
            "application/x-amz-json-1.1",
            body,
        )
        .unwrap();
    assert_eq!(
        (reply.status, reply.json()["__type"].as_str()),
        (400, Some("UnknownOperationException"))
    );
    // The path is not looked at.
    let reply = c
        .raw(b"POST /anything HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
}

#[test]
fn browsers_get_cors_preflights_and_headers() {
    let (_dir, _server, mut c) = start();
    let reply = c
        .raw(b"OPTIONS / HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-amz-target,authorization\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("content-type,x-amz-target,authorization")
    );
    assert_eq!(reply.header("access-control-max-age"), Some("172800"));
    let reply = c
        .raw(b"POST / HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert!(reply
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("x-amzn-RequestId")));
    // Without an Origin, no CORS headers.
    let reply = c.kinesis("ListStreams", &json!({})).unwrap();
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[test]
fn streams_and_consumers_pass_through_transient_states_when_asked() {
    use shardlog::server::{Server, ServerOptions, TransientStates};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        shardlog::Store::open(dir.path(), shardlog::StoreOptions::default()).unwrap(),
    );
    // Long enough that no pause of a busy machine between two requests outlasts it.
    let delay = Duration::from_millis(1500);
    let server = Server::start(
        store,
        None,
        ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            transient_states: TransientStates {
                create: delay,
                update: delay,
                delete: delay,
            },
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let mut c = common::http::Client::connect(server.local_addr()).unwrap();
    let status = |c: &mut common::http::Client| {
        let d = c
            .kinesis("DescribeStreamSummary", &json!({"StreamName": "s"}))
            .unwrap();
        d.json()["StreamDescriptionSummary"]["StreamStatus"]
            .as_str()
            .map(str::to_string)
    };
    let wait_active = |c: &mut common::http::Client, from: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = status(c);
            if now.as_deref() == Some("ACTIVE") {
                return;
            }
            assert_eq!(now.as_deref(), Some(from));
            assert!(Instant::now() < deadline, "still {from}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    c.kinesis("CreateStream", &json!({"StreamName": "s", "ShardCount": 2}))
        .unwrap();
    assert_eq!(status(&mut c).as_deref(), Some("CREATING"));
    // Not found for reads and writes, in use for changes, while CREATING.
    let put = json!({"StreamName": "s", "PartitionKey": "k", "Data": "AA=="});
    let reply = c.kinesis("PutRecord", &put).unwrap();
    assert_eq!(reply.json()["__type"], "ResourceNotFoundException");
    let reply = c
        .kinesis(
            "PutRecords",
            &json!({"StreamName": "s", "Records": [{"PartitionKey": "k", "Data": "AA=="}]}),
        )
        .unwrap();
    assert_eq!(reply.json()["__type"], "ResourceNotFoundException");
    let reply = c
        .kinesis(
            "UpdateShardCount",
            &json!({"StreamName": "s", "TargetShardCount": 4, "ScalingType": "UNIFORM_SCALING"}),
        )
        .unwrap();
    assert_eq!(reply.json()["__type"], "ResourceInUseException");
    assert_eq!(
        reply.json()["message"],
        "Stream s under account 000000000000 not ACTIVE, instead in state CREATING."
    );
    wait_active(&mut c, "CREATING");
    assert_eq!(c.kinesis("PutRecord", &put).unwrap().status, 200);
    // UPDATING after a change: writes go on, further changes wait.
    let reply = c
        .kinesis(
            "IncreaseStreamRetentionPeriod",
            &json!({"StreamName": "s", "RetentionPeriodHours": 48}),
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(status(&mut c).as_deref(), Some("UPDATING"));
    assert_eq!(c.kinesis("PutRecord", &put).unwrap().status, 200);
    let reply = c
        .kinesis(
            "DecreaseStreamRetentionPeriod",
            &json!({"StreamName": "s", "RetentionPeriodHours": 24}),
        )
        .unwrap();
    assert_eq!(reply.json()["__type"], "ResourceInUseException");
    wait_active(&mut c, "UPDATING");
    // A consumer is CREATING at first, and cannot be subscribed to yet.
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s";
    let registered = c
        .kinesis(
            "RegisterStreamConsumer",
            &json!({"StreamARN": arn, "ConsumerName": "c"}),
        )
        .unwrap()
        .json();
    assert_eq!(registered["Consumer"]["ConsumerStatus"], "CREATING");
    let consumer_arn = registered["Consumer"]["ConsumerARN"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = c
        .kinesis(
            "SubscribeToShard",
            &json!({"ConsumerARN": consumer_arn, "ShardId": "shardId-0", "StartingPosition": {"Type": "LATEST"}}),
        )
        .unwrap();
    assert_eq!(reply.json()["__type"], "ResourceInUseException");
    std::thread::sleep(delay + Duration::from_millis(100));
    let described = c
        .kinesis(
            "DescribeStreamConsumer",
            &json!({"ConsumerARN": consumer_arn}),
        )
        .unwrap()
        .json();
    assert_eq!(described["ConsumerDescription"]["ConsumerStatus"], "ACTIVE");
    c.kinesis(
        "DeregisterStreamConsumer",
        &json!({"ConsumerARN": consumer_arn}),
    )
    .unwrap();
    // DELETING, then gone.
    let reply = c
        .kinesis("DeleteStream", &json!({"StreamName": "s"}))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
    assert_eq!(status(&mut c).as_deref(), Some("DELETING"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = c
            .kinesis("DescribeStreamSummary", &json!({"StreamName": "s"}))
            .unwrap();
        if reply.status == 400 {
            assert_eq!(reply.json()["__type"], "ResourceNotFoundException");
            break;
        }
        assert!(Instant::now() < deadline, "never deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop().unwrap();
}
