//! Delivery into S3, tested against a real S3-compatible server started on 127.0.0.1: moto's
//! (`pip install "moto[server]"`, which `.ci/run` does), spoken to over HTTP, not a mock.
#![cfg(feature = "s3")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardlog::firehose::{
    Compression, DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose,
    FirehoseOptions, S3Config,
};
use shardlog::{Store, StoreOptions};

/// A moto S3 server on a free local port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server must be installed: pip install \"moto[server]\" (.ci/run does)");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// One plain HTTP/1.1 request; returns the status code and the body. A connection refused or
/// reset (moto's server can drop the first connections while it starts under load) is retried
/// for up to 10 s.
fn http(port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        let attempt = (|| -> std::io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response)?;
            Ok(response)
        })();
        match attempt {
            Ok(response) if !response.is_empty() => break response,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(_) => panic!("moto answered {method} {path} with nothing"),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    };
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = response[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&bytes[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[line_end + 2..line_end + 2 + size]);
        bytes = &bytes[line_end + 4 + size..];
    }
}

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
