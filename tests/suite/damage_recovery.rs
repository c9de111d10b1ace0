//! A damaged byte in the middle of an active segment is not a torn tail: a restart keeps the
//! intact records after it, never hands out an acknowledged sequence number again, and a
//! Firehose buffer delivers every intact record exactly once.
#![cfg(feature = "firehose")]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shardlog::firehose::{
    DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose, FirehoseOptions, SourceStart,
};
use shardlog::ShardId;
use shardlog::{PutRecord, Start, Store, StreamConfig};

/// Flips one byte in the middle of the only segment under `shard_dir`.
fn flip_middle_byte(shard_dir: &Path) {
    let segments = common::segment_files(shard_dir);
    assert_eq!(segments.len(), 1, "{segments:?}");
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end / 2] ^= 0x40;
    std::fs::write(&segments[0], &bytes).unwrap();
}

fn shard_dir(data: &Path, stream: &str) -> PathBuf {
    data.join("streams")
        .join(stream)
        .join("shards")
        .join("shardId-000000000000")
}

fn sequence_numbers(store: &Store, stream: &str) -> Vec<(String, Vec<u8>)> {
    let stream = store.stream(stream).unwrap();
    let it = stream
        .shard_iterator(ShardId(0), Start::TrimHorizon)
        .unwrap();
    let page = store.get_records(&it, 10_000).unwrap();
    page.records
        .iter()
        .map(|r| (r.sequence_number.to_string(), r.data.to_vec()))
        .collect()
}

#[test]
fn a_restart_after_damage_keeps_intact_records_and_never_reuses_a_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = Vec::new();
    {
        let store = Store::open(dir.path(), common::durable_store_options()).unwrap();
        let stream = store
            .create_stream("s", StreamConfig::provisioned(1))
            .unwrap();
        for i in 0..40 {
            let data = format!("record-{i:02}-{}", "x".repeat(40));
            let put = stream
                .put_record(&PutRecord::new("k", data.as_bytes()))
                .unwrap();
            acknowledged.push((put.sequence_number.to_string(), data.into_bytes()));
        }
    }
    flip_middle_byte(&shard_dir(dir.path(), "s"));
    let store = Store::open(dir.path(), common::durable_store_options()).unwrap();
    let kept = sequence_numbers(&store, "s");
    assert_eq!(kept.len(), 39, "only the damaged record is lost");
    for record in &kept {
        assert!(
            acknowledged.contains(record),
            "{record:?} was not acknowledged as is"
        );
    }
    let stream = store.stream("s").unwrap();
    let next = stream
        .put_record(&PutRecord::new("k", b"after the restart"))
        .unwrap();
    let newest = acknowledged.last().unwrap().0.clone();
    assert!(
        next.sequence_number.to_string() > newest,
        "{} reuses or precedes acknowledged {newest}",
        next.sequence_number
    );
}

#[test]
fn a_firehose_buffer_with_a_damaged_record_delivers_every_intact_one_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let options = || FirehoseOptions {
        delivery_interval: None,
        ..FirehoseOptions::default()
    };
    let config = DeliveryStreamConfig {
        delivery: DeliveryConfig {
            record_delimiter: Some(b"\n".to_vec()),
            ..DeliveryConfig::default()
        },
        destination: DestinationConfig::LocalDirectory { path: out.clone() },
        transform: None,
        source_stream: None,
        source_start: SourceStart::TrimHorizon,
        tags: Default::default(),
        settings: Default::default(),
    };
    {
        let store = Arc::new(Store::open(&data, common::durable_store_options()).unwrap());
        let firehose = Firehose::open(store, options()).unwrap();
        let stream = firehose.create_delivery_stream("d", config).unwrap();
        for i in 0..40 {
            stream
                .put_record(format!("record-{i:02}-{}", "y".repeat(40)).as_bytes())
                .unwrap();
        }
    }
    let buffer = data.join("firehose").join("d").join("buffer");
    flip_middle_byte(&buffer);
    let store = Arc::new(Store::open(&data, common::durable_store_options()).unwrap());
    let firehose = Firehose::open(store, options()).unwrap();
    firehose.flush().unwrap();
    let mut lines: Vec<String> = common::snapshot_dir(&out)
        .iter()
        .flat_map(|(_, bytes)| {
            String::from_utf8(bytes.clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    let before = lines.len();
    lines.dedup();
    assert_eq!(before, lines.len(), "a record was delivered twice");
    assert_eq!(
        lines.len(),
        39,
        "every intact record is delivered: {lines:?}"
    );
}
