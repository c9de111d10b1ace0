//! Delivery into S3, tested against a real S3-compatible server started on 127.0.0.1: moto's
//! (`pip install "moto[server]"`, which `.ci/run` does), spoken to over HTTP, not a mock.
#![cfg(feature = "s3")]

use std::io::Read;
use std::sync::Arc;

use crate::common::moto::{http, start_moto};

use shardlog::firehose::{
    Compression, DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose,
    FirehoseOptions, S3Config,
};
use shardlog::{Store, StoreOptions};

/// An object's bytes, read with a signed S3 client.
fn read_object(port: u16, bucket: &str, key: &str) -> Vec<u8> {
    use object_store::ObjectStore;
    let client = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let location = object_store::path::Path::parse(key).unwrap();
        client
            .get(&location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    })
}

/// Delivery streams of a store in `dir`, delivered only on request.
fn firehose_in(dir: &std::path::Path) -> Firehose {
    let store = Store::open(
        dir,
        StoreOptions {
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let options = FirehoseOptions {
        delivery_interval: None,
        ..FirehoseOptions::default()
    };
    Firehose::open(Arc::new(store), options).unwrap()
}

#[test]
fn delivery_streams_write_gzip_objects_into_an_s3_bucket() {
    let moto = start_moto();
    assert_eq!(
        http(moto.port, "PUT", "/archive").0,
        200,
        "create the bucket"
    );
    let dir = tempfile::tempdir().unwrap();
    let firehose = firehose_in(dir.path());
    let stream = firehose
        .create_delivery_stream(
            "events-to-s3",
            DeliveryStreamConfig {
                delivery: DeliveryConfig {
                    compression: Compression::Gzip,
                    prefix: Some("events/dt=!{timestamp:yyyy-MM-dd}/".into()),
                    error_output_prefix: Some("errors/".into()),
                    record_delimiter: Some(b"\n".to_vec()),
                    ..DeliveryConfig::default()
                },
                destination: DestinationConfig::S3(S3Config {
                    bucket: "archive".into(),
                    region: "us-east-1".into(),
                    endpoint: Some(format!("http://127.0.0.1:{}", moto.port)),
                    access_key_id: Some("test".into()),
                    secret_access_key: Some("test".into()),
                }),
                transform: None,
                source_stream: None,
                source_start: Default::default(),
                tags: Default::default(),
                settings: Default::default(),
            },
        )
        .unwrap();
    for i in 0..1000 {
        stream
            .put_record(format!("event {i:04}").as_bytes())
            .unwrap();
    }
    let keys = firehose.flush().and_then(|_| {
        Ok(firehose
            .describe_delivery_stream("events-to-s3")?
            .stats
            .objects_written)
    });
    assert_eq!(keys.unwrap(), 1);

    let (status, listing) = http(moto.port, "GET", "/archive?list-type=2");
    assert_eq!(status, 200);
    let listing = String::from_utf8(listing).unwrap();
    let keys: Vec<&str> = listing
        .split("<Key>")
        .skip(1)
        .map(|s| &s[..s.find("</Key>").unwrap()])
        .collect();
    assert_eq!(keys.len(), 1, "{listing}");
    assert!(keys[0].starts_with("events/dt="), "{}", keys[0]);
    assert!(keys[0].contains("/events-to-s3-1-") && keys[0].ends_with(".gz"));
    // moto refuses unsigned GETs of objects: read it back through a signed client.
    let object = read_object(moto.port, "archive", keys[0]);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&object[..])
        .read_to_string(&mut text)
        .unwrap();
    let expected: Vec<String> = (0..1000).map(|i| format!("event {i:04}")).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_missing_bucket_is_an_error_and_keeps_the_records() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let firehose = firehose_in(dir.path());
    let stream = firehose
        .create_delivery_stream(
            "nowhere",
            DeliveryStreamConfig {
                delivery: DeliveryConfig::default(),
                destination: DestinationConfig::S3(S3Config {
                    bucket: "no-such-bucket".into(),
                    region: "us-east-1".into(),
                    endpoint: Some(format!("http://127.0.0.1:{}", moto.port)),
                    access_key_id: Some("test".into()),
                    secret_access_key: Some("test".into()),
                }),
                transform: None,
                source_stream: None,
                source_start: Default::default(),
                tags: Default::default(),
                settings: Default::default(),
            },
        )
        .unwrap();
    stream.put_record(b"kept").unwrap();
    assert!(firehose.flush().is_err());
    let d = firehose.describe_delivery_stream("nowhere").unwrap();
    assert_eq!(d.backlog, 1);
    assert!(d.stats.last_error.is_some());
    // Once the bucket exists, the same batch goes through.
    assert_eq!(http(moto.port, "PUT", "/no-such-bucket").0, 200);
    assert_eq!(firehose.flush().unwrap(), 1);
    assert_eq!(
        firehose
            .describe_delivery_stream("nowhere")
            .unwrap()
            .backlog,
        0
    );
}
