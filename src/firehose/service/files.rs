//! A delivery stream's `delivery.json` (what it is: name, version, configuration, destination),
//! and reading all of a delivery stream's files without opening it (`shardlog inspect`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DestinationConfig;
use crate::error::{Error, Result};
use crate::firehose::config::DeliveryConfig;
use crate::io;

/// A delivery stream's description file.
pub const DELIVERY_FILE: &str = "delivery.json";

/// Version of `delivery.json`'s format.
pub const DELIVERY_FORMAT_VERSION: u16 = 1;

/// Everything `delivery.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct DeliveryRecord {
    pub(super) format_version: u16,
    pub(super) name: String,
    pub(super) created_ms: i64,
    pub(super) version: u64,
    pub(super) config: DeliveryConfig,
    pub(super) destination: DestinationConfig,
    /// Name of a transform registered in [`FirehoseOptions::transforms`].
    pub(super) transform: Option<String>,
    /// The stream of the store it reads (KinesisStreamAsSource); none for direct put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) source_stream: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) tags: BTreeMap<String, String>,
    /// Settings stored for describe, by their Firehose API names (see [`DeliveryStreamConfig`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) settings: BTreeMap<String, serde_json::Value>,
    /// When the configuration, tags or settings last changed (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) updated_ms: Option<i64>,
}

pub(super) fn read_record(dir: &Path) -> Result<DeliveryRecord> {
    let path = dir.join(DELIVERY_FILE);
    let bytes = std::fs::read(&path).map_err(Error::io_at("read delivery stream", &path))?;
    let record: DeliveryRecord = io::parse_json(&path, &bytes)?;
    io::check_version(
        &path,
        record.format_version,
        DELIVERY_FORMAT_VERSION,
        DELIVERY_FORMAT_VERSION,
    )?;
    record
        .config
        .validate()
        .map_err(|e| Error::corrupt(&path, 0, e.to_string()))?;
    Ok(record)
}

pub(super) fn write_record(dir: &Path, record: &DeliveryRecord) -> Result<()> {
    io::write_json(dir, DELIVERY_FILE, record)
}

/// A delivery stream as its files show it, read without opening it (no lock, nothing changed):
/// what `shardlog inspect` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryStreamFiles {
    /// Its name.
    pub name: String,
    /// Configuration version.
    pub version: u64,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
    /// Its delivery configuration.
    pub config: DeliveryConfig,
    /// Where objects go.
    pub destination: DestinationConfig,
    /// The registered transform it names.
    pub transform: Option<String>,
    /// Every buffered record below this offset is delivered.
    pub delivered: u64,
    /// A batch being delivered: first and end offset, and its object key.
    pub pending: Option<(u64, u64, String)>,
    /// One past the newest buffered record.
    pub buffered_end: u64,
    /// Records buffered and not yet delivered (direct put).
    pub backlog: u64,
    /// The stream it reads (`KinesisStreamAsSource`).
    pub source_stream: Option<String>,
    /// For a stream source: how far each shard is delivered (its consumer group), once it has
    /// delivered or looked for something to deliver.
    pub source_group: Option<crate::consumer::GroupFiles>,
}

/// Reads a delivery stream's files (`DATA_DIR/firehose/NAME`) without opening it.
pub fn read_delivery_stream(dir: &Path) -> Result<DeliveryStreamFiles> {
    let record = read_record(dir)?;
    let checkpoint = crate::firehose::delivery::read_checkpoint(dir)?;
    let delivered = checkpoint.delivered;
    let pending = checkpoint.pending.map(|p| (p.from, p.to, p.key));
    let buffer = dir.join(crate::firehose::delivery::BUFFER_DIR);
    let buffered_end = match crate::log::shard::segment_bases(&buffer) {
        Ok(bases) => match bases.last() {
            Some(&newest) => {
                let s = crate::log::shard::summarize_segment(&buffer, newest)?;
                s.end_offset().get().saturating_add(s.lost_after)
            }
            None => delivered,
        },
        Err(_) => delivered, // never written
    };
    Ok(DeliveryStreamFiles {
        name: record.name,
        version: record.version,
        created_ms: record.created_ms,
        config: record.config,
        destination: record.destination,
        transform: record.transform,
        delivered,
        pending,
        buffered_end,
        backlog: buffered_end.saturating_sub(delivered),
        source_group: match &record.source_stream {
            Some(_) => crate::consumer::read_group_file(
                &dir.join(crate::firehose::delivery::SOURCE_GROUP_FILE),
            )?,
            None => None,
        },
        source_stream: record.source_stream,
    })
}
