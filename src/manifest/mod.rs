//! A stream's manifest, `stream.json`: its settings and every shard it has (open or closed) with
//! its hash-key range and parents. The manifest is the truth about a stream's topology; the shard
//! directories hold only records.
//!
//! It is replaced atomically: written to a temporary file in the same directory, fsynced, renamed
//! over the old one, and the directory fsynced. A crash leaves either the old or the new manifest.
//!
//! A change of shards alone (a split, a merge, a rescale, retention forgetting closed shards) is
//! not a rewrite: it is appended to `topology.log` beside it (see [`TopologyChange`]), so its I/O
//! grows with the shards it changes, not with every shard the stream has had. Reading replays the
//! log over `stream.json`; once the log outgrows a quarter of `stream.json` (and 64 KiB), the
//! next change writes a new `stream.json` and removes the log.

mod topology_log;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash_key::HashKeyRange;

pub use topology_log::TopologyChange;
use topology_log::{append_log, read_log};

/// File name of a stream's manifest.
pub const MANIFEST_FILE: &str = "stream.json";
/// Version of the manifest format written; versions 1 (no topology log) and 2 (log records not
/// numbered) are read too, any other is refused. Version 2 was written so that a build that
/// knows no topology log refuses the manifest instead of ignoring the log's changes; version 3
/// so that a build that would replay a stale log over a manifest that already holds it (and
/// later changes) refuses it instead.
pub const MANIFEST_VERSION: u16 = 3;
/// The oldest manifest version read.
pub const OLDEST_MANIFEST_VERSION: u16 = 1;
/// File name of a stream's topology log.
pub const TOPOLOGY_LOG_FILE: &str = "topology.log";
/// The log is folded into `stream.json` once it is larger than this...
const LOG_FOLD_MIN_BYTES: u64 = 64 * 1024;
/// ... and than this fraction (1/N) of `stream.json`.
const LOG_FOLD_RATIO: u64 = 4;

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
    /// The stream's own tiering in a tiered store (`None`: the store's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiering: Option<StreamTiering>,
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
    /// How many topology-log records this manifest includes (see [`TopologyChange`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub topology_changes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stream's own tiering in a tiered store, over the store's `TierOptions`: whether its sealed
/// segments go to the object store at all, and how much of them its shards keep locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTiering {
    /// Whether its segments are uploaded. Off, its shards keep everything locally (segments
    /// already remote stay readable, and retention still deletes them).
    pub enabled: bool,
    /// A shard keeps about this many bytes of sealed segments locally (`None`: the store's
    /// setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_retention_bytes: Option<u64>,
    /// A shard keeps the segments younger than this many hours locally (`None`: the store's
    /// setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_retention_hours: Option<u32>,
}

impl StreamTiering {
    /// Tiering off for the stream.
    pub fn off() -> StreamTiering {
        StreamTiering {
            enabled: false,
            local_retention_bytes: None,
            local_retention_hours: None,
        }
    }

    /// Tiering on, keeping locally what the store keeps, unless a field says otherwise.
    pub fn on() -> StreamTiering {
        StreamTiering {
            enabled: true,
            ..StreamTiering::off()
        }
    }
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
        let manifest: StreamManifest = crate::io::parse_json(&path, &bytes)?;
        crate::io::check_version(
            &path,
            manifest.format_version,
            OLDEST_MANIFEST_VERSION,
            MANIFEST_VERSION,
        )?;
        let mut manifest = manifest;
        let log = dir.join(TOPOLOGY_LOG_FILE);
        for change in read_log(&log)? {
            match change.seq {
                Some(seq) if seq <= manifest.topology_changes => {} // folded in already
                Some(seq) => {
                    manifest.apply(&change);
                    manifest.topology_changes = seq;
                }
                None if manifest.topology_changes == 0 => manifest.apply(&change),
                None => {} // a version-2 log folded in already
            }
        }
        manifest.check().map_err(|reason| {
            let blamed = if log.exists() { &log } else { &path };
            Error::corrupt(blamed, 0, reason)
        })?;
        Ok(manifest)
    }

    /// Applies a topology change: upserts by index (keeping index order), removals, and the
    /// next shard index.
    fn apply(&mut self, change: &TopologyChange) {
        for entry in &change.upsert {
            match self.shards.binary_search_by_key(&entry.index, |s| s.index) {
                Ok(at) => self.shards[at] = entry.clone(),
                Err(at) => self.shards.insert(at, entry.clone()),
            }
        }
        if !change.remove.is_empty() {
            let removed: std::collections::BTreeSet<u32> = change.remove.iter().copied().collect();
            self.shards.retain(|s| !removed.contains(&s.index));
        }
        self.next_shard_index = change.next_shard_index;
    }

    /// Everything but the topology (shards, next shard index) and the format version.
    fn without_topology(&self) -> StreamManifest {
        StreamManifest {
            format_version: 0,
            name: self.name.clone(),
            created_ms: self.created_ms,
            mode: self.mode,
            retention_hours: self.retention_hours,
            max_record_bytes: self.max_record_bytes,
            throughput_limits: self.throughput_limits,
            tiering: self.tiering,
            tags: self.tags.clone(),
            settings: self.settings.clone(),
            consumers: self.consumers.clone(),
            next_shard_index: 0,
            shards: Vec::new(),
            topology_changes: 0,
        }
    }

    /// The topology change from `self` to `next`, if that is all that differs between them
    /// (`None` when anything else changed too, which takes a rewrite).
    fn change_to(&self, next: &StreamManifest) -> Option<TopologyChange> {
        if self.without_topology() != next.without_topology() {
            return None;
        }
        let mut change = TopologyChange {
            seq: None,
            next_shard_index: next.next_shard_index,
            upsert: Vec::new(),
            remove: Vec::new(),
        };
        // Both lists are in index order: one merge pass.
        let (mut a, mut b) = (0, 0);
        loop {
            match (self.shards.get(a), next.shards.get(b)) {
                (Some(old), Some(new)) if old.index == new.index => {
                    if old != new {
                        change.upsert.push(new.clone());
                    }
                    a += 1;
                    b += 1;
                }
                (Some(old), Some(new)) if old.index < new.index => {
                    change.remove.push(old.index);
                    a += 1;
                }
                (Some(old), None) => {
                    change.remove.push(old.index);
                    a += 1;
                }
                (_, Some(new)) => {
                    change.upsert.push(new.clone());
                    b += 1;
                }
                (None, None) => break,
            }
        }
        Some(change)
    }

    /// Makes `self`, the manifest after a change of `previous` (what `dir` holds now), durable:
    /// appended to the topology log when only shards changed and the log is still small, else
    /// written whole (which removes the log). Sets `self.topology_changes`.
    pub fn persist_change(&mut self, dir: &Path, previous: &StreamManifest) -> Result<()> {
        let log = dir.join(TOPOLOGY_LOG_FILE);
        self.topology_changes = previous.topology_changes;
        // A log beside a version-1 manifest would be ignored by the builds that wrote it, and
        // one of unnumbered records could not be told from a stale one: the first change after
        // an upgrade writes the manifest whole, as the current version.
        let log_ok = previous.format_version >= 3;
        let change = previous.change_to(self);
        if log_ok
            && self.format_version == previous.format_version
            && change.as_ref().is_some_and(|c| {
                c.upsert.is_empty()
                    && c.remove.is_empty()
                    && c.next_shard_index == previous.next_shard_index
            })
        {
            return Ok(()); // nothing changed
        }
        if let Some(mut change) = change.filter(|_| log_ok) {
            let log_len = std::fs::metadata(&log).map_or(0, |m| m.len());
            let snapshot_len = std::fs::metadata(dir.join(MANIFEST_FILE)).map_or(0, |m| m.len());
            if log_len < LOG_FOLD_MIN_BYTES.max(snapshot_len / LOG_FOLD_RATIO) {
                let seq = previous.topology_changes + 1;
                change.seq = Some(seq);
                append_log(&log, &change)?;
                self.topology_changes = seq;
                return Ok(());
            }
        }
        self.write(dir)
    }

    /// Checks what the code relies on: shards in strictly increasing index order, all below
    /// `next_shard_index`; valid ranges; open shards tiling the whole hash-key space exactly.
    pub fn check(&self) -> Result<(), String> {
        if crate::names::check_stream_name(&self.name).is_err() {
            return Err(format!("invalid stream name {:?}", self.name));
        }
        if !self.shards.windows(2).all(|w| w[0].index < w[1].index) {
            return Err("shards are not in strictly increasing index order".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &self.consumers {
            if crate::names::check_resource_name("ConsumerName", &c.name, 128).is_err()
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
        crate::io::write_json(dir, MANIFEST_FILE, self)?;
        // The log's changes are in the manifest now; should the removal not happen (a crash),
        // its records, numbered at or below `topology_changes`, are skipped when read.
        let log = dir.join(TOPOLOGY_LOG_FILE);
        if crate::io::remove_file("remove", &log)? {
            crate::io::sync_dir(dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
