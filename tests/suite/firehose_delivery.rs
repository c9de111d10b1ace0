//! Direct-put delivery streams: buffering hints, codecs, prefixes, transforms, error output,
//! restarts, and exactly-once delivery when the destination fails halfway.
#![cfg(feature = "firehose")]

use crate::common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use shardlog::firehose::{
    BufferingHints, Compression, DeliveryConfig, DeliveryStream, DeliveryStreamSpec, Destination,
    LocalDirectory, Transformed,
};
use shardlog::{FlushPolicy, ManualClock, ShardOptions};

const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

fn spec(
    config: DeliveryConfig,
    destination: Arc<dyn Destination>,
    clock: &Arc<ManualClock>,
) -> DeliveryStreamSpec {
    DeliveryStreamSpec {
        name: "orders-to-files".into(),
        version: 1,
        config,
        destination,
        transform: None,
        buffer: ShardOptions {
            segment_bytes: 1 << 20,
            flush: FlushPolicy::Always,
            clock: clock.clone(),
            ..ShardOptions::default()
        },
        paused: None,
        source: Default::default(),
    }
}

fn newline_config(compression: Compression) -> DeliveryConfig {
    DeliveryConfig {
        compression,
        record_delimiter: Some(b"\n".to_vec()),
        ..DeliveryConfig::default()
    }
}

/// Every object under `root` (`common::snapshot_dir`): key → decompressed bytes.
fn objects(root: &Path, compression: Compression) -> BTreeMap<String, Vec<u8>> {
    common::snapshot_dir(root)
        .into_iter()
        .map(|(key, bytes)| {
            assert!(
                !key.starts_with('.') && !key.contains("/."),
                "a temporary file was left: {key}"
            );
            let plain = match compression {
                Compression::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                _ => bytes,
            };
            (key, plain)
        })
        .collect()
}

fn lines(objects: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    objects
        .values()
        .flat_map(|o| {
            String::from_utf8(o.clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_flush_delivers_everything_under_firehose_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let clock = Arc::new(ManualClock::new(T0));
    let stream = DeliveryStream::open(
        dir.path().join("ds"),
        spec(
            newline_config(Compression::Gzip),
            Arc::new(LocalDirectory::new(&out)),
            &clock,
        ),
    )
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..1000 {
        ids.push(
            stream
                .put_record(format!("{{\"n\":{i}}}").as_bytes())
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "record ids increase");
    assert_eq!(stream.backlog(), 1000);
    // Not due yet: 5 MiB / 60 s defaults.
    assert_eq!(stream.deliver_due().unwrap().batches, 0);
    let report = stream.flush().unwrap();
    assert_eq!(report.batches, 1);
    assert_eq!(stream.backlog(), 0);
    let found = objects(&out, Compression::Gzip);
    assert_eq!(found.len(), 1);
    let key = found.keys().next().unwrap();
    assert!(
        key.starts_with("2023/11/14/22/orders-to-files-1-2023-11-14-22-13-20-"),
        "{key}"
    );
    assert!(key.ends_with(".gz"));
    let expected: Vec<String> = (0..1000).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(lines(&found), expected);
    let stats = stream.stats();
    assert_eq!((stats.records_delivered, stats.objects_written), (1000, 1));
}

#[test]
fn batches_are_cut_at_the_size_hint_and_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let clock = Arc::new(ManualClock::new(T0));
    let config = DeliveryConfig {
        buffering: BufferingHints {
            size_mib: 1,
            interval_secs: 60,
        },
        ..newline_config(Compression::Uncompressed)
    };
    let stream = DeliveryStream::open(
        dir.path().join("ds"),
        spec(config, Arc::new(LocalDirectory::new(&out)), &clock),
    )
    .unwrap();
    let record = vec![b'x'; 100 * 1024];
    for _ in 0..25 {
        stream.put_record(&record).unwrap(); // 2.5 MiB in all
    }
    let report = stream.deliver_due().unwrap();
    assert_eq!(report.batches, 2, "two full batches of 1 MiB");
    assert_eq!(stream.backlog(), 25 - 2 * 11);
    clock.advance(59_999);
    assert_eq!(stream.deliver_due().unwrap().batches, 0, "the rest waits");
    clock.advance(1);
    assert_eq!(
        stream.deliver_due().unwrap().batches,
        1,
        "the interval has passed"
    );
    let found = objects(&out, Compression::Uncompressed);
    let sizes: Vec<usize> = found.values().map(|o| o.len() / (100 * 1024 + 1)).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 25);
    assert_eq!(found.len(), 3);
}

/// A destination that, after `healthy_first` good puts, fails: before writing (the next
/// `fail_before` puts) or after writing (the next `fail_after` puts), like a crash between the
/// write and the checkpoint.
struct Flaky {
    inner: LocalDirectory,
    healthy_first: AtomicUsize,
    fail_before: AtomicUsize,
    fail_after: AtomicUsize,
    puts: Mutex<Vec<String>>,
}

impl Destination for Flaky {
    fn put(&self, key: &str, bytes: &[u8]) -> shardlog::Result<()> {
        self.puts.lock().unwrap().push(key.to_string());
        if self.healthy_first.load(Ordering::SeqCst) > 0 {
            self.healthy_first.fetch_sub(1, Ordering::SeqCst);
            return self.inner.put(key, bytes);
        }
        if self.fail_before.load(Ordering::SeqCst) > 0 {
            self.fail_before.fetch_sub(1, Ordering::SeqCst);
            return Err(shardlog::Error::Io {
                op: "put",
                path: PathBuf::from(key),
                source: std::io::Error::other("destination unavailable"),
            });
        }
        self.inner.put(key, bytes)?;
        if self.fail_after.load(Ordering::SeqCst) > 0 {
            self.fail_after.fetch_sub(1, Ordering::SeqCst);
            return Err(shardlog::Error::Io {
                op: "put",
                path: PathBuf::from(key),
                source: std::io::Error::other("lost the answer"),
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "flaky".into()
    }
}

#[test]
fn a_failed_or_interrupted_delivery_is_retried_exactly_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let clock = Arc::new(ManualClock::new(T0));
    let flaky = Arc::new(Flaky {
        inner: LocalDirectory::new(&out),
        healthy_first: AtomicUsize::new(0),
        fail_before: AtomicUsize::new(1),
        fail_after: AtomicUsize::new(1),
        puts: Mutex::new(Vec::new()),
    });
    let config = newline_config(Compression::Zstd);
    {
        let stream = DeliveryStream::open(
            dir.path().join("ds"),
            spec(config.clone(), flaky.clone(), &clock),
        )
        .unwrap();
        for i in 0..300 {
            stream.put_record(format!("r{i}").as_bytes()).unwrap();
        }
        assert!(stream.flush().is_err(), "the destination is down");
        assert!(stream.stats().last_error.is_some());
        assert_eq!(stream.backlog(), 300, "nothing skipped");
        // The object is written, but the answer is lost: the batch stays pending.
        assert!(stream.flush().is_err());
        // More records arrive before the "crash".
        for i in 300..400 {
            stream.put_record(format!("r{i}").as_bytes()).unwrap();
        }
    }
    let stream =
        DeliveryStream::open(dir.path().join("ds"), spec(config, flaky.clone(), &clock)).unwrap();
    let report = stream.flush().unwrap();
    assert_eq!(
        report.batches, 2,
        "the pending batch as it was, then the rest"
    );
    let puts = flaky.puts.lock().unwrap().clone();
    assert_eq!(puts[0], puts[1], "a retry uses the same key");
    assert_eq!(
        puts[1], puts[2],
        "and so does the delivery after the restart"
    );
    let found = objects(&out, Compression::Uncompressed);
    assert_eq!(found.len(), 2);
    let mut all = Vec::new();
    for bytes in found.values() {
        all.extend(zstd::stream::decode_all(&bytes[..]).unwrap());
    }
    let text = String::from_utf8(all).unwrap();
    let mut got: Vec<&str> = text.lines().collect();
    got.sort_by_key(|l| l[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..400).map(|i| format!("r{i}")).collect();
    assert_eq!(got, expected, "every record exactly once");
}

#[test]
fn a_backlog_is_delivered_in_order_and_a_failure_midway_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let clock = Arc::new(ManualClock::new(T0));
    let flaky = Arc::new(Flaky {
        inner: LocalDirectory::new(&out),
        healthy_first: AtomicUsize::new(1),
        fail_before: AtomicUsize::new(1),
        fail_after: AtomicUsize::new(0),
        puts: Mutex::new(Vec::new()),
    });
    let config = DeliveryConfig {
        buffering: BufferingHints {
            size_mib: 1,
            interval_secs: 60,
        },
        ..newline_config(Compression::Gzip)
    };
    let open = || {
        DeliveryStream::open(
            dir.path().join("ds"),
            spec(config.clone(), flaky.clone(), &clock),
        )
        .unwrap()
    };
    let stream = open();
    // Four batches' worth: 44 records of ~100 KiB, 11 to a 1 MiB batch.
    let record = |i: usize| format!("{i:03}{}", "y".repeat(100 * 1024 - 3)).into_bytes();
    for i in 0..44 {
        stream.put_record(&record(i)).unwrap();
    }
    // The first batch is written; the second fails while the third is already cut.
    assert!(stream.deliver_due().is_err());
    assert_eq!(stream.stats().objects_written, 1);
    assert!(stream.stats().last_error.is_some());
    assert_eq!(
        stream.delivered(),
        11,
        "only the first batch counts as delivered"
    );
    assert_eq!(stream.backlog(), 33, "nothing skipped");
    // After a restart the failed batch goes again under its key, then the rest, in order.
    drop(stream);
    let stream = open();
    assert_eq!(stream.deliver_due().unwrap().batches, 3);
    assert_eq!(stream.backlog(), 0);
    let puts = flaky.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 5, "{puts:?}");
    assert_eq!(
        puts[1], puts[2],
        "the failed batch is retried under its own key"
    );
    let found = objects(&out, Compression::Gzip);
    assert_eq!(found.len(), 4);
    // In the order the objects were written: every record once, in order.
    let got: Vec<usize> = [&puts[0], &puts[2], &puts[3], &puts[4]]
        .into_iter()
        .flat_map(|key| {
            found[key.as_str()]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    std::str::from_utf8(&l[..3])
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        got,
        (0..44).collect::<Vec<_>>(),
        "every record once, in order"
    );
}

#[test]
fn transforms_deliver_drop_or_fail_records_to_the_error_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let clock = Arc::new(ManualClock::new(T0));
    let config = DeliveryConfig {
        prefix: Some("orders/dt=!{timestamp:yyyy-MM-dd}/".into()),
        error_output_prefix: Some("errors/!{firehose:error-output-type}/".into()),
        ..newline_config(Compression::Uncompressed)
    };
    let mut spec = spec(config, Arc::new(LocalDirectory::new(&out)), &clock);
    spec.transform = Some(Arc::new(|batch: &[(String, &[u8])]| {
        batch
            .iter()
            .map(|(_, data)| match data.first() {
                Some(b'd') => Transformed::Dropped,
                Some(b'f') => Transformed::ProcessingFailed("not an order".into()),
                _ => Transformed::Ok(data.to_ascii_uppercase()),
            })
            .collect()
    }));
    let stream = DeliveryStream::open(dir.path().join("ds"), spec).unwrap();
    for r in ["ok1", "drop", "fail", "ok2"] {
        stream.put_record(r.as_bytes()).unwrap();
    }
    stream.flush().unwrap();
    let found = objects(&out, Compression::Uncompressed);
    assert_eq!(found.len(), 2, "{:?}", found.keys());
    let (main_key, main) = found
        .iter()
        .find(|(k, _)| k.starts_with("orders/"))
        .unwrap();
    assert!(main_key.starts_with("orders/dt=2023-11-14/orders-to-files-1-"));
    assert_eq!(main, b"OK1\nOK2\n");
    let (error_key, errors) = found
        .iter()
        .find(|(k, _)| k.starts_with("errors/"))
        .unwrap();
    assert!(error_key.starts_with("errors/processing-failed/orders-to-files-1-"));
    let error: serde_json::Value =
        serde_json::from_slice(errors.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(error["errorMessage"], "not an order");
    assert_eq!(error["rawData"], "ZmFpbA=="); // "fail"
    let stats = stream.stats();
    assert_eq!(
        (
            stats.records_delivered,
            stats.records_dropped,
            stats.records_failed
        ),
        (2, 1, 1)
    );
}

#[test]
fn put_record_batch_limits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let stream = DeliveryStream::open(
        dir.path().join("ds"),
        spec(
            DeliveryConfig::default(),
            Arc::new(LocalDirectory::new(dir.path().join("out"))),
            &clock,
        ),
    )
    .unwrap();
    let small = vec![b'a'; 10];
    let huge = vec![b'b'; 1_024_001];
    let results = stream.put_record_batch(&[&small, &huge, &small]).unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    let failure = results[1].as_ref().unwrap_err();
    assert!(failure.message.contains("1024001"), "{failure:?}");
    assert_eq!(stream.backlog(), 2);
    let many: Vec<&[u8]> = vec![&small[..]; 501];
    assert!(stream.put_record_batch(&many).is_err());
    let big = vec![b'c'; 1_000_000];
    let too_much: Vec<&[u8]> = vec![&big[..]; 5];
    assert!(stream.put_record_batch(&too_much).is_err(), "over 4 MiB");
    assert!(stream.put_record(&huge).is_err());
    assert!(stream.put_record_batch(&[]).is_err());
}
