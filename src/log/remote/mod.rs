//! Tiered storage: sealed segments (and their indexes) copied to an object store, so a shard can
//! keep more than its disk holds and a store survives the loss of its machine.
//!
//! The object store is reached through [`Bucket`] (a directory, [`DirBucket`], or S3 and
//! S3-compatible servers, `S3Bucket` with the `s3` feature). A shard opened with a
//! [`ShardTier`] in its options uploads each sealed segment once (`Shard::tier_step`, run by
//! the store's tiering thread, never by an append), records it in its `remote.log`
//! ([`RemoteRecord`]) only after the store acknowledged both objects, and deletes its local copy
//! only once it is recorded as remote and past the local retention. A segment that is only
//! remote is read through the store-wide [`SegmentCache`]: downloaded whole into a bounded cache
//! directory, checked against the CRC32 recorded at upload, then mapped and read like any
//! sealed segment (every batch's CRC checked as it is read); a read that starts inside a large
//! segment fetches only a window of it, found through its index (`window.rs`).
//!
//! Object keys are deterministic: `PREFIX` + the shard's key (a stream's is
//! `streams/NAME/CREATED_MS/shardId-…`, so a stream deleted and created again never shares
//! objects with its predecessor) + `/` + the segment's file name (`…020-digit base….seg` and
//! `.idx`). Uploading the same segment twice writes the same bytes under the same key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::log::format::{file_name, INDEX_EXT, SEGMENT_EXT};
use crate::types::Offset;

mod cache;
mod dir_bucket;
#[cfg(feature = "s3")]
mod s3;
mod window;

pub(crate) use cache::check_copy;
pub use cache::{CacheStats, SegmentCache};
pub use dir_bucket::DirBucket;
#[cfg(feature = "s3")]
pub use s3::{S3Bucket, S3BucketConfig};

/// An object store as tiering uses it: whole objects put and got by key.
pub trait Bucket: Send + Sync + fmt::Debug {
    /// Stores the file at `path` under `key` and returns once the store acknowledged it (an
    /// acknowledged object is durable there), with what was sent.
    fn put_file(&self, key: &str, path: &Path) -> Result<Transfer>;
    /// Stores `bytes` under `key` (small objects: stream manifests).
    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Copies the object `key` into the file `path` (replacing it); returns its length and
    /// CRC32, computed as it arrived. A missing object is `Error::ResourceNotFound`.
    fn get_to_file(&self, key: &str, path: &Path) -> Result<Transfer>;
    /// The object `key`, or `None` if there is none.
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Bytes `range` of the object `key` (fewer if the object ends first). A missing object is
    /// `Error::ResourceNotFound`.
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes>;
    /// Removes the object `key`; a missing one is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Every object whose key starts with `prefix`, with its size, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// How to name the object `key` in messages (`s3://bucket/key`, a path).
    fn url(&self, key: &str) -> String;
}

/// What [`Bucket::put_file`] sent or [`Bucket::get_to_file`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes stored.
    pub len: u64,
    /// CRC32 (IEEE) of them.
    pub crc32: u32,
}

/// How a store tiers its shards. `TierOptions::default()` keeps a day locally.
#[derive(Debug, Clone)]
pub struct TierOptions {
    /// Keys of every object start with this (`""`, or e.g. `"prod/shardlog/"`).
    pub prefix: String,
    /// A shard keeps at most about this many bytes of sealed segments locally (its newest
    /// segments; older ones are read from the object store). `None`: no bound by size.
    pub local_retention_bytes: Option<u64>,
    /// A shard keeps the segments whose newest record is younger than this locally. `None`: no
    /// bound by age. With both `None`, everything stays local too (tiering as a backup).
    pub local_retention: Option<Duration>,
    /// The active segment is sealed (so it can be uploaded) once it is this old and holds a
    /// record: at most this much of a shard's data is only on the local disk.
    pub max_segment_age: Duration,
    /// Most bytes of remote segments kept downloaded in the cache (a quarter more in memory
    /// for windows fetched by range reads).
    pub cache_bytes: u64,
    /// The smallest range read: a read that starts inside a remote segment larger than four
    /// times this fetches a window of at least this many bytes (found through the segment's
    /// index) instead of downloading it whole. Reads from a segment's start download it whole.
    /// `u64::MAX`: remote segments are always downloaded whole.
    pub range_read_bytes: u64,
    /// The tiering thread runs a round whenever a segment is sealed, and at least this often
    /// (for old active segments and retention by age). `None`: there is no tiering thread;
    /// rounds run only when asked (`Store::tier_now`).
    pub interval: Option<Duration>,
}

impl Default for TierOptions {
    fn default() -> Self {
        TierOptions {
            prefix: String::new(),
            local_retention_bytes: None,
            local_retention: Some(Duration::from_secs(24 * 3600)),
            max_segment_age: Duration::from_secs(600),
            cache_bytes: 1024 * 1024 * 1024,
            range_read_bytes: 1024 * 1024,
            interval: Some(Duration::from_secs(5)),
        }
    }
}

impl TierOptions {
    /// What a round does to a shard under these options.
    pub fn policy(&self) -> TierPolicy {
        TierPolicy {
            upload: true,
            local_retention_bytes: self.local_retention_bytes,
            local_retention: self.local_retention,
            max_segment_age: self.max_segment_age,
        }
    }
}

/// What a tiering round does to one shard: the store's [`TierOptions`], or its stream's own
/// setting over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierPolicy {
    /// Whether sealed segments are uploaded (and old active ones sealed for it). Off, a round
    /// only copies `remote.log` when retention changed it; segments already remote stay
    /// readable.
    pub upload: bool,
    /// See [`TierOptions::local_retention_bytes`].
    pub local_retention_bytes: Option<u64>,
    /// See [`TierOptions::local_retention`].
    pub local_retention: Option<Duration>,
    /// See [`TierOptions::max_segment_age`].
    pub max_segment_age: Duration,
}

/// What a store tiers into, and how ([`crate::StoreOptions::tier`]).
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// The object store.
    pub bucket: Arc<dyn Bucket>,
    /// How.
    pub options: TierOptions,
}

/// A store's tiering: the bucket, the options and the cache of downloaded segments.
#[derive(Debug)]
pub struct Tier {
    bucket: Arc<dyn Bucket>,
    options: TierOptions,
    cache: SegmentCache,
    /// What the next round has to do (see [`Tier::wait_for_work`]).
    work: std::sync::Mutex<TierWork>,
    work_signal: std::sync::Condvar,
}

impl Tier {
    /// Tiering into `bucket`, caching downloads in `cache_dir` (emptied first: its files are
    /// only copies).
    pub fn new(bucket: Arc<dyn Bucket>, options: TierOptions, cache_dir: PathBuf) -> Result<Tier> {
        let cache = SegmentCache::new(cache_dir, options.cache_bytes, options.range_read_bytes)?;
        Ok(Tier {
            bucket,
            options,
            cache,
            // The first round covers every shard: segments sealed before a restart wait.
            work: std::sync::Mutex::new(TierWork::everything()),
            work_signal: std::sync::Condvar::new(),
        })
    }

    /// Asks for a round over every shard, waking [`Tier::wait_for_work`].
    pub fn notify(&self) {
        self.lock_work().everything = true;
        self.work_signal.notify_all();
    }

    /// Says `shard` sealed a segment: a round has work there, now.
    pub fn notify_sealed(&self, shard: &ShardTier) {
        self.lock_work().shards.insert(shard.key.clone());
        self.work_signal.notify_all();
    }

    fn lock_work(&self) -> std::sync::MutexGuard<'_, TierWork> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a round has work or `timeout` passed, and takes the work: the shards that
    /// sealed segments, or (asked for, or at the timeout: old active segments, local retention
    /// by age) every shard.
    pub fn wait_for_work(&self, timeout: Duration) -> TierWork {
        let work = self.lock_work();
        let (mut work, waited) = self
            .work_signal
            .wait_timeout_while(work, timeout, |work| work.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            work.everything = true;
        }
        std::mem::take(&mut *work)
    }

    /// The bucket.
    pub fn bucket(&self) -> &Arc<dyn Bucket> {
        &self.bucket
    }

    /// The options.
    pub fn options(&self) -> &TierOptions {
        &self.options
    }

    /// The cache of downloaded segments.
    pub fn cache(&self) -> &SegmentCache {
        &self.cache
    }
}

/// What a tiering round has to do: every shard, or the shards (by key) that sealed segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierWork {
    /// Every shard.
    pub everything: bool,
    /// Keys of the shards that sealed a segment since the last round.
    pub shards: std::collections::BTreeSet<String>,
}

impl TierWork {
    /// A round over every shard.
    pub fn everything() -> TierWork {
        TierWork {
            everything: true,
            shards: Default::default(),
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.shards.is_empty()
    }

    /// Whether the shard keyed `key` is to be tiered.
    pub fn covers(&self, key: &str) -> bool {
        self.everything || self.shards.contains(key)
    }

    /// Whether any shard whose key starts with `prefix` (a stream's key and `/`) is.
    pub fn covers_any_under(&self, prefix: &str) -> bool {
        self.everything
            || self
                .shards
                .range(prefix.to_string()..)
                .next()
                .is_some_and(|k| k.starts_with(prefix))
    }
}

/// One shard's place in a [`Tier`]: the tier and the shard's key (see the module docs).
#[derive(Clone)]
pub struct ShardTier {
    tier: Arc<Tier>,
    key: String,
}

impl fmt::Debug for ShardTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardTier")
            .field("bucket", &self.tier.bucket.url(&self.key))
            .finish()
    }
}

impl ShardTier {
    /// The shard (or, extended with [`ShardTier::child`], the group of shards) keyed `key`.
    pub fn new(tier: Arc<Tier>, key: impl Into<String>) -> ShardTier {
        ShardTier {
            tier,
            key: key.into(),
        }
    }

    /// `self`'s key extended by `/part`.
    pub fn child(&self, part: &str) -> ShardTier {
        ShardTier {
            tier: Arc::clone(&self.tier),
            key: format!("{}/{part}", self.key),
        }
    }

    /// The tier.
    pub fn tier(&self) -> &Arc<Tier> {
        &self.tier
    }

    /// The shard's key, without the tier's prefix.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object key of the segment (`SEGMENT_EXT`) or index (`INDEX_EXT`) file at `base`.
    pub(crate) fn object_key(&self, base: Offset, ext: &str) -> String {
        self.object_key_of(&file_name(base, ext))
    }

    /// The object key of the shard's file `name` (its `remote.log`).
    pub fn object_key_of(&self, name: &str) -> String {
        format!("{}{}/{name}", self.tier.options.prefix, self.key)
    }

    pub(crate) fn segment_key(&self, base: Offset) -> String {
        self.object_key(base, SEGMENT_EXT)
    }

    pub(crate) fn index_key(&self, base: Offset) -> String {
        self.object_key(base, INDEX_EXT)
    }
}

/// A shard's record of its remote segments, `remote.log` in its directory.
pub const REMOTE_LOG_FILE: &str = "remote.log";

/// One line of `remote.log` (checked JSON lines, as `topology.log`): a segment uploaded, or
/// deleted from the object store by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RemoteRecord {
    /// Both objects of the segment at `base` were acknowledged by the object store.
    Uploaded(RemoteSegment),
    /// The segment at `base` was deleted (retention): it is neither local nor remote any more.
    Deleted {
        /// Its base offset.
        base: u64,
    },
}

/// What a shard knows of one remote segment without downloading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    /// Base offset (the first record's).
    pub base: u64,
    /// One past its last offset.
    pub end: u64,
    /// Offsets recorded as lost after it (its seal's `lost_after`).
    #[serde(default)]
    pub lost_after: u64,
    /// Arrival time of its newest record (`None` if it holds none).
    pub last_arrival_ms: Option<i64>,
    /// Length of the segment object.
    pub bytes: u64,
    /// CRC32 of the segment object, checked on every download.
    pub crc32: u32,
    /// Whether an index object was uploaded beside it.
    #[serde(default)]
    pub has_index: bool,
}

/// Reads a shard's `remote.log` into the segments it holds remotely, by base (none if there is
/// no log). Changes nothing.
pub fn read_remote_log(dir: &Path) -> Result<std::collections::BTreeMap<Offset, RemoteSegment>> {
    let records: Vec<RemoteRecord> =
        crate::io::read_checked_lines(&dir.join(REMOTE_LOG_FILE), "remote.log record")?;
    Ok(fold_remote_records(records))
}

/// The segments `records` (in the order `remote.log` holds them) leave remote, by base.
pub(crate) fn fold_remote_records(
    records: impl IntoIterator<Item = RemoteRecord>,
) -> std::collections::BTreeMap<Offset, RemoteSegment> {
    let mut remote = std::collections::BTreeMap::new();
    for record in records {
        match record {
            RemoteRecord::Uploaded(segment) => {
                remote.insert(Offset::new(segment.base), segment);
            }
            RemoteRecord::Deleted { base } => {
                remote.remove(&Offset::new(base));
            }
        }
    }
    remote
}

/// What [`salvage_remote_log`] made of a damaged `remote.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvagedRemoteLog {
    /// The file's new bytes: every good line, in order.
    pub bytes: Vec<u8>,
    /// The records they hold.
    pub records: Vec<RemoteRecord>,
    /// Damaged lines taken from the bucket's copy of the log instead (the line at the same
    /// place there, when that one is good).
    pub from_copy: usize,
    /// Damaged lines left out: their uploads or deletions are forgotten.
    pub lost: usize,
}

/// Salvages a `remote.log` that [`read_remote_log`] finds damaged (a bad line before the last):
/// keeps every good line, and replaces a damaged one by the line at the same place in `copy`
/// (the bucket's copy of the log, which `Shard::tier_step` uploads after each round that
/// changed it and so is the same lines up to where it ends) when that one is good. `None` if the
/// log is not damaged. Changes nothing.
pub fn salvage_remote_log(dir: &Path, copy: Option<&[u8]>) -> Result<Option<SalvagedRemoteLog>> {
    if read_remote_log(dir).is_ok() {
        return Ok(None);
    }
    let path = dir.join(REMOTE_LOG_FILE);
    let bytes = std::fs::read(&path).map_err(crate::error::Error::io_at("read", &path))?;
    let copy_lines: Vec<&[u8]> = copy.map_or_else(Vec::new, |c| c.split(|&b| b == b'\n').collect());
    let mut salvaged = SalvagedRemoteLog {
        bytes: Vec::with_capacity(bytes.len()),
        records: Vec::new(),
        from_copy: 0,
        lost: 0,
    };
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if bytes.last() == Some(&b'\n') {
        lines.pop(); // after the last newline: nothing
    }
    for (i, line) in lines.iter().enumerate() {
        let parsed = crate::io::parse_checked_line::<RemoteRecord>(line).map(|r| (r, *line));
        let good = parsed.or_else(|| {
            let copied = copy_lines.get(i)?;
            let record = crate::io::parse_checked_line::<RemoteRecord>(copied)?;
            salvaged.from_copy += 1;
            Some((record, *copied))
        });
        match good {
            Some((record, line)) => {
                salvaged.records.push(record);
                salvaged.bytes.extend_from_slice(line);
                salvaged.bytes.push(b'\n');
            }
            // A torn last line was never acknowledged: nothing is lost with it.
            None if i + 1 == lines.len() && bytes.last() != Some(&b'\n') => {}
            None => salvaged.lost += 1,
        }
    }
    Ok(Some(salvaged))
}

/// Appends a record to a shard's `remote.log`, durably.
pub(crate) fn append_remote_log(dir: &Path, record: &RemoteRecord) -> Result<()> {
    crate::io::append_checked_line(&dir.join(REMOTE_LOG_FILE), record)
}

/// Where a shard's local segments may begin given what its `remote.log` holds: one past the
/// newest remote segment (`None` without remote segments). Offline checks compare the oldest
/// local segment with this rather than with the log start when older segments are only remote.
pub(crate) fn remote_end(dir: &Path) -> Result<Option<Offset>> {
    Ok(remote_end_of(&read_remote_log(dir)?))
}

/// [`remote_end`] of the remote segments `remote`.
pub(crate) fn remote_end_of(
    remote: &std::collections::BTreeMap<Offset, RemoteSegment>,
) -> Option<Offset> {
    remote
        .values()
        .map(|s| Offset::new(s.end.saturating_add(s.lost_after)))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploaded(base: u64) -> RemoteRecord {
        RemoteRecord::Uploaded(RemoteSegment {
            base,
            end: base + 10,
            lost_after: 0,
            last_arrival_ms: Some(1),
            bytes: 100,
            crc32: 7,
            has_index: true,
        })
    }

    #[test]
    fn salvage_keeps_good_lines_and_takes_damaged_ones_from_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        for base in [0, 10, 20] {
            append_remote_log(dir.path(), &uploaded(base)).unwrap();
        }
        let path = dir.path().join(REMOTE_LOG_FILE);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(salvage_remote_log(dir.path(), None).unwrap(), None);
        // The second line damaged, and a torn fourth one (never acknowledged).
        let mut damaged = good.clone();
        let second = damaged.iter().position(|&b| b == b'\n').unwrap() + 1;
        damaged[second + 12] ^= 1;
        damaged.extend_from_slice(b"0123abcd {\"op\":\"upl");
        std::fs::write(&path, &damaged).unwrap();
        let alone = salvage_remote_log(dir.path(), None).unwrap().unwrap();
        assert_eq!((alone.lost, alone.from_copy), (1, 0));
        assert_eq!(alone.records, [uploaded(0), uploaded(20)]);
        // The bucket's copy, as uploaded after the first two lines: the second comes from it.
        let two_lines = second + good[second..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let copy = &good[..two_lines];
        let healed = salvage_remote_log(dir.path(), Some(copy)).unwrap().unwrap();
        assert_eq!((healed.lost, healed.from_copy), (0, 1));
        assert_eq!(healed.bytes, good);
        assert_eq!(healed.records, [uploaded(0), uploaded(10), uploaded(20)]);
    }
}
