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

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash_key::HashKeyRange;

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

/// One record of `topology.log`: its number, the shards a change added or altered (whole
/// entries) and removed, and the next shard index.
///
/// Records are numbered 1, 2, ... on from the manifest's `topology_changes`, which counts the
/// records folded into it: a log that a fold could not remove (a crash between writing the
/// manifest and removing the log) holds only records at or below it, and they are skipped, not
/// replayed over the newer manifest (which would undo later changes). Records without a number
/// (version 2) apply only to a manifest that has folded none.
///
/// Format: one line per record, `CRC32-HEX JSON\n`, the CRC32 (8 lowercase hex digits) over the
/// JSON bytes. A last line that is incomplete or fails its CRC is the torn end of a crash (the
/// change it held was not acknowledged) and is ignored; one before it is damage (`Corrupt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyChange {
    /// Its number (see above); `None` in a version-2 log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The manifest's `next_shard_index` after the change.
    pub next_shard_index: u32,
    /// Shards added or changed, whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<ShardEntry>,
    /// Indexes of shards removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<u32>,
}

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
    /// How many topology-log records this manifest includes (see [`TopologyChange`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub topology_changes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// Reads the records of a topology log (none if there is no log).
fn read_log(path: &Path) -> Result<Vec<TopologyChange>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut changes = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            break; // the last record, torn by a crash: its change was never acknowledged
        };
        match parse_record(&rest[..end]) {
            Some(change) => changes.push(change),
            None if pos + end + 1 == bytes.len() => break, // torn too
            None => {
                return Err(Error::corrupt(
                    path,
                    pos as u64,
                    "a damaged topology record before the last one",
                ))
            }
        }
        pos += end + 1;
    }
    Ok(changes)
}

/// One line of the log: `CRC32-HEX JSON`, checked.
fn parse_record(line: &[u8]) -> Option<TopologyChange> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Appends a record to a topology log and makes it durable.
fn append_log(path: &Path, change: &TopologyChange) -> Result<()> {
    let json = serde_json::to_vec(change)
        .map_err(|e| Error::io("encode topology change", path, std::io::Error::other(e)))?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    crate::io::append_line_durably(path, &line, |record| parse_record(record).is_some())
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
            topology_changes: 0,
        }
    }

    /// `sample` with shard 1 split in two at `mid` (shard 1 closed at `end`).
    fn split(m: &StreamManifest, mid: u128, end: u64) -> StreamManifest {
        let mut next = m.clone();
        next.shards[1].closed = Some(Closed {
            end_offset: end,
            closed_ms: 9,
        });
        for (index, range) in [
            (
                next.next_shard_index,
                HashKeyRange {
                    start: 0,
                    end: mid - 1,
                },
            ),
            (
                next.next_shard_index + 1,
                HashKeyRange {
                    start: mid,
                    end: u128::MAX,
                },
            ),
        ] {
            next.shards.push(ShardEntry {
                index,
                hash_range: range,
                parent: Some(1),
                adjacent_parent: None,
                created_ms: 9,
                closed: None,
            });
        }
        next.next_shard_index += 2;
        next
    }

    #[test]
    fn shard_changes_go_to_the_log_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        let snapshot = std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
        let mut next = split(&m, 1 << 100, 40);
        next.persist_change(dir.path(), &m).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap(),
            snapshot,
            "a split appends; it does not rewrite"
        );
        assert!(dir.path().join(TOPOLOGY_LOG_FILE).exists());
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), next);
        // Retention forgetting shard 0 is a removal record.
        let mut pruned = next.clone();
        pruned.shards.remove(0);
        pruned.persist_change(dir.path(), &next).unwrap();
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), pruned);
        // Anything else rewrites the manifest and removes the log.
        let mut tagged = pruned.clone();
        tagged.tags.insert("k".into(), "v".into());
        tagged.persist_change(dir.path(), &pruned).unwrap();
        assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), tagged);
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_earlier_damage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        let mut a = split(&m, 1 << 100, 40);
        a.persist_change(dir.path(), &m).unwrap();
        let mut b = split(&a, 1 << 50, 7);
        b.persist_change(dir.path(), &a).unwrap();
        let log = dir.path().join(TOPOLOGY_LOG_FILE);
        let bytes = std::fs::read(&log).unwrap();
        let first_line = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
        // Every cut inside the second record: the first change stands.
        for cut in first_line..bytes.len() {
            std::fs::write(&log, &bytes[..cut]).unwrap();
            assert_eq!(StreamManifest::read(dir.path()).unwrap(), a, "cut at {cut}");
        }
        // A flipped byte in the first record, with a good one after it: damage.
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        std::fs::write(&log, &damaged).unwrap();
        assert!(matches!(
            StreamManifest::read(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }

    /// Found by the `store` fuzz target: after an append that failed partway (or a crash that
    /// tore the last record), the next record was written after the torn bytes, read as part of
    /// one torn last record, and dropped although acknowledged.
    #[test]
    fn a_record_appended_after_a_torn_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        let mut a = split(&m, 1 << 100, 40);
        a.persist_change(dir.path(), &m).unwrap();
        let log = dir.path().join(TOPOLOGY_LOG_FILE);
        let good = std::fs::read(&log).unwrap();
        let mut b = a.clone();
        b.shards[2].created_ms = 11;
        for torn in [
            &b"0badc0de {\"seq\": 2, \"next_sh"[..],
            b"garbage with a newline\n",
            b"\n",
        ] {
            let mut bytes = good.clone();
            bytes.extend_from_slice(torn);
            std::fs::write(&log, &bytes).unwrap();
            let mut next = b.clone();
            next.persist_change(dir.path(), &a).unwrap();
            assert_eq!(
                StreamManifest::read(dir.path()).unwrap(),
                next,
                "after {torn:?}"
            );
        }
    }

    #[test]
    fn a_change_that_changes_nothing_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        let mut same = m.clone();
        same.persist_change(dir.path(), &m).unwrap();
        assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
    }

    #[test]
    fn the_log_is_folded_into_the_manifest_once_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample();
        m.write(dir.path()).unwrap();
        let mut folded = false;
        for i in 0..2_000u64 {
            let mut next = m.clone();
            next.shards[1].created_ms = i as i64; // any change of a shard entry
            next.persist_change(dir.path(), &m).unwrap();
            m = next;
            let log = std::fs::metadata(dir.path().join(TOPOLOGY_LOG_FILE)).map_or(0, |f| f.len());
            assert!(log <= LOG_FOLD_MIN_BYTES + 1024, "{log} bytes of log");
            folded |= log == 0;
        }
        assert!(folded, "the log was folded at least once");
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), m);
    }

    #[test]
    fn a_version_1_manifest_is_read_and_rewritten_before_any_log() {
        let dir = tempfile::tempdir().unwrap();
        let m = StreamManifest {
            format_version: 1,
            ..sample()
        };
        m.write(dir.path()).unwrap();
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), m);
        let mut next = StreamManifest {
            format_version: MANIFEST_VERSION,
            ..split(&m, 1 << 100, 40)
        };
        next.persist_change(dir.path(), &m).unwrap();
        assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
        assert_eq!(
            StreamManifest::read(dir.path()).unwrap().format_version,
            MANIFEST_VERSION
        );
    }

    #[test]
    fn a_version_2_log_is_replayed_then_folded_by_the_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let m = StreamManifest {
            format_version: 2,
            ..sample()
        };
        m.write(dir.path()).unwrap();
        let a = split(&m, 1 << 100, 40);
        let change = m.change_to(&a).unwrap();
        assert_eq!(change.seq, None);
        append_log(&dir.path().join(TOPOLOGY_LOG_FILE), &change).unwrap();
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), a);
        let mut b = StreamManifest {
            format_version: MANIFEST_VERSION,
            ..a.clone()
        };
        b.shards[2].created_ms = 11;
        b.persist_change(dir.path(), &a).unwrap();
        assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), b);
    }

    /// Found by the `store` fuzz target: a crash after a fold wrote the manifest but before it
    /// removed the log left records that, replayed over the newer manifest, set an older
    /// `next_shard_index` and reopened closed shards.
    #[test]
    fn a_log_a_fold_left_behind_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        let mut a = split(&m, 1 << 100, 40);
        a.persist_change(dir.path(), &m).unwrap();
        let log = dir.path().join(TOPOLOGY_LOG_FILE);
        let stale = std::fs::read(&log).unwrap();
        // A change that is not only shards rewrites the manifest (and removes the log)...
        let mut b = a.clone();
        b.shards[2].closed = Some(Closed {
            end_offset: 5,
            closed_ms: 12,
        });
        b.shards[3].hash_range.start = b.shards[2].hash_range.start;
        b.tags.insert("k".into(), "v".into());
        b.persist_change(dir.path(), &a).unwrap();
        assert!(!log.exists());
        // ... which a crash kept from happening.
        std::fs::write(&log, &stale).unwrap();
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), b);
        // Later records are numbered past it, and apply.
        let mut c = b.clone();
        c.shards[3].created_ms = 13;
        c.persist_change(dir.path(), &b).unwrap();
        assert_eq!(c.topology_changes, 2);
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), c);
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
        m.format_version = MANIFEST_VERSION + 1;
        m.write(dir.path()).unwrap();
        assert!(matches!(
            StreamManifest::read(dir.path()),
            Err(Error::UnsupportedVersion { found, .. }) if found == MANIFEST_VERSION + 1
        ));
    }
}
