//! A stream's manifest, `stream.json`: its settings and every shard it has (open or closed) with
//! its hash-key range and parents. The manifest is the truth about a stream's topology; the shard
//! directories hold only records.
//!
//! It is replaced atomically: written to a temporary file in the same directory, fsynced, renamed
//! over the old one, and the directory fsynced. A crash leaves either the old or the new manifest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash_key::HashKeyRange;
use crate::segment::write_atomically;

/// File name of a stream's manifest.
pub const MANIFEST_FILE: &str = "stream.json";
/// Version of the manifest format; a manifest of another version is refused.
pub const MANIFEST_VERSION: u16 = 1;

/// How a stream's capacity is managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamMode {
    /// A fixed number of shards, changed by resharding.
    Provisioned,
    /// Shards are split automatically when their write rate stays above the per-shard limit.
    OnDemand,
}

/// Everything `stream.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamManifest {
    /// [`MANIFEST_VERSION`].
    pub format_version: u16,
    /// The stream's name.
    pub name: String,
    /// When the stream was created, ms since the Unix epoch. Part of every iterator token, so a
    /// token does not outlive a re-creation of the stream under the same name.
    pub created_ms: i64,
    /// Provisioned or on-demand.
    pub mode: StreamMode,
    /// How long records are kept, in hours (24 to 8,760).
    pub retention_hours: u32,
    /// Largest record (data + partition key), in bytes.
    pub max_record_bytes: usize,
    /// Whether the Kinesis per-shard throughput limits apply (`None`: the store's default).
    #[serde(default)]
    pub throughput_limits: Option<bool>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Settings the engine keeps for the wire API but does not act on (encryption, enhanced
    /// monitoring, resource policy, warm throughput), by their Kinesis API names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Registered (enhanced fan-out) consumers, in registration order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerEntry>,
    /// Index the next new shard gets.
    pub next_shard_index: u32,
    /// Every shard still known, in index order.
    pub shards: Vec<ShardEntry>,
}

/// A registered consumer of a stream (Kinesis RegisterStreamConsumer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerEntry {
    /// Its name: 1 to 128 of `[a-zA-Z0-9_.-]`, unique in the stream.
    pub name: String,
    /// When it was registered, ms since the Unix epoch (part of its ARN).
    pub created_ms: i64,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// One shard in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Its index: `shardId-{index:012}`, and the high part of its sequence numbers.
    pub index: u32,
    /// The hash keys it owns.
    pub hash_range: HashKeyRange,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent: Option<u32>,
    /// The second shard it was merged from.
    pub adjacent_parent: Option<u32>,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
    /// Set once the shard is closed by resharding: it takes no more records.
    pub closed: Option<Closed>,
}

/// How a shard was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// One past its last offset: it holds offsets below this, and never more.
    pub end_offset: u64,
    /// When it was closed.
    pub closed_ms: i64,
}

impl StreamManifest {
    /// Reads and checks the manifest in `dir`.
    pub fn read(dir: &Path) -> Result<StreamManifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(Error::io_at("read manifest", &path))?;
        let manifest: StreamManifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(
                &path,
                0,
                format!("line {} column {}: {e}", e.line(), e.column()),
            )
        })?;
        if manifest.format_version != MANIFEST_VERSION {
            return Err(Error::UnsupportedVersion {
                path,
                found: manifest.format_version,
                supported: MANIFEST_VERSION,
            });
        }
        manifest
            .check()
            .map_err(|reason| Error::corrupt(&path, 0, reason))?;
        Ok(manifest)
    }

    /// Checks what the code relies on: shards in strictly increasing index order, all below
    /// `next_shard_index`; valid ranges; open shards tiling the whole hash-key space exactly.
    pub fn check(&self) -> Result<(), String> {
        if crate::stream::check_stream_name(&self.name).is_err() {
            return Err(format!("invalid stream name {:?}", self.name));
        }
        if !self.shards.windows(2).all(|w| w[0].index < w[1].index) {
            return Err("shards are not in strictly increasing index order".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &self.consumers {
            if crate::stream::check_resource_name("ConsumerName", &c.name, 128).is_err()
                || !names.insert(c.name.as_str())
            {
                return Err(format!("invalid or repeated consumer name {:?}", c.name));
            }
        }
        if self
            .shards
            .last()
            .is_some_and(|s| s.index >= self.next_shard_index)
        {
            return Err("a shard index is not below next_shard_index".into());
        }
        if let Some(s) = self
            .shards
            .iter()
            .find(|s| s.hash_range.start > s.hash_range.end)
        {
            return Err(format!("shard {} has an empty hash-key range", s.index));
        }
        let mut open: Vec<HashKeyRange> = self
            .shards
            .iter()
            .filter(|s| s.closed.is_none())
            .map(|s| s.hash_range)
            .collect();
        open.sort();
        let tiles = open.first().is_some_and(|r| r.start == 0)
            && open.last().is_some_and(|r| r.end == u128::MAX)
            && open
                .windows(2)
                .all(|w| w[0].end.checked_add(1) == Some(w[1].start));
        if !tiles {
            return Err("the open shards do not cover the hash-key space exactly".into());
        }
        if !(1024 * 1024..=10 * 1024 * 1024).contains(&self.max_record_bytes) {
            return Err(format!(
                "max_record_bytes {} is out of range",
                self.max_record_bytes
            ));
        }
        Ok(())
    }

    /// Replaces the manifest in `dir` atomically and durably.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Io {
            op: "encode manifest",
            path: dir.join(MANIFEST_FILE),
            source: std::io::Error::other(e),
        })?;
        write_atomically(dir, MANIFEST_FILE, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StreamManifest {
        StreamManifest {
            format_version: MANIFEST_VERSION,
            name: "orders".into(),
            created_ms: 5,
            mode: StreamMode::Provisioned,
            retention_hours: 24,
            max_record_bytes: 1 << 20,
            throughput_limits: None,
            tags: BTreeMap::from([("team".into(), "data".into())]),
            settings: BTreeMap::new(),
            consumers: Vec::new(),
            next_shard_index: 2,
            shards: vec![
                ShardEntry {
                    index: 0,
                    hash_range: HashKeyRange::ALL,
                    parent: None,
                    adjacent_parent: None,
                    created_ms: 5,
                    closed: Some(Closed {
                        end_offset: 9,
                        closed_ms: 7,
                    }),
                },
                ShardEntry {
                    index: 1,
                    hash_range: HashKeyRange::ALL,
                    parent: Some(0),
                    adjacent_parent: None,
                    created_ms: 7,
                    closed: None,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_keeps_128_bit_keys_exact() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), m);
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(
            text.contains("\"340282366920938463463374607431768211455\""),
            "{text}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_topology_the_code_cannot_route_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut gap = sample();
        gap.shards[1].hash_range.start = 1;
        let mut none_open = sample();
        none_open.shards[1].closed = Some(Closed {
            end_offset: 0,
            closed_ms: 0,
        });
        let mut overlap = sample();
        overlap.shards[0].closed = None;
        let mut index_too_high = sample();
        index_too_high.next_shard_index = 1;
        for bad in [gap, none_open, overlap, index_too_high] {
            bad.write(dir.path()).unwrap();
            assert!(
                matches!(StreamManifest::read(dir.path()), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn damage_and_other_versions_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{\"format_version\": 1, ").unwrap();
        assert!(matches!(
            StreamManifest::read(dir.path()),
            Err(Error::Corrupt { .. })
        ));
        let mut m = sample();
        m.format_version = 2;
        m.write(dir.path()).unwrap();
        assert!(matches!(
            StreamManifest::read(dir.path()),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }
}
