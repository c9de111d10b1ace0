//! A shard: a directory of segments that together hold one ordered log of records.
//!
//! One writer at a time appends (a mutex around the active segment); readers never take that
//! mutex. They take a snapshot of the segment list and read each segment up to the end its writer
//! published, so they never see a partial frame and never wait for an append or an fsync.
//!
//! This file holds the options and opening (with recovery); `append` is the write path and its
//! syncs, `read` reads by offset and time, `retention` deletes old segments, `verify` checks a
//! shard directory offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, RecordError, Result};
use crate::log::format::{
    parse_file_name, FOOTER_LEN, INDEX_EXT, MAX_PARTITION_KEY_LEN, MAX_RECORD_BYTES_LIMIT,
    SEGMENT_EXT,
};
use crate::log::lock::DirLock;
use crate::log::log_start::write_log_start;
pub use crate::log::log_start::{read_log_start, LOG_START_FILE};
use crate::log::remote::{read_remote_log, RemoteSegment, ShardTier};
use crate::log::segment::{
    index_path, load_newest_read_only, max_batched_len, ActiveSegment, RemoteCopy, Segment,
    SegmentLimits, Tail,
};
pub use crate::log::segment::{Problem, SegmentReport};
use crate::types::{NewRecord, Offset};

mod append;
mod read;
mod retention;
mod sync_pool;
mod tier;
mod verify;

pub use tier::{TierReport, TierStatus};

pub use verify::{
    segment_bases, segment_file, summarize_segment, verify, verify_log_start, verify_remote,
    verify_segment,
};

/// When an append counts as done, relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Each append returns after its bytes are on disk (fdatasync). Concurrent appenders that
    /// arrive while a sync runs share the next one.
    Always,
    /// Appenders wait for a shared fdatasync that runs at most once per `interval`: many appenders,
    /// one sync. Same guarantee as `Always`, more throughput under concurrency, more latency.
    GroupCommit {
        /// Shortest time between the starts of two syncs.
        interval: Duration,
    },
    /// The operating system writes pages back when it likes. Survives a crash of the process
    /// (the page cache keeps every acknowledged record), not a crash of the machine.
    #[default]
    Never,
}

/// How a shard stores records. `ShardOptions::default()` suits most uses.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// A segment is sealed and a new one started once it holds this many bytes (default 128 MiB).
    pub segment_bytes: u64,
    /// A segment is also sealed once it is this old, at the next append (default: no limit).
    pub max_segment_age: Option<Duration>,
    /// Largest record, data plus partition key (default 1 MiB, at most 10 MiB).
    pub max_record_bytes: usize,
    /// When appends are durable.
    pub flush: FlushPolicy,
    /// Where arrival times come from.
    pub clock: Arc<dyn Clock>,
    /// An append is stored in batches of about this many bytes (a larger record makes a batch of
    /// its own), each with one header and CRC. Reading any record checks its whole batch, so
    /// smaller batches make reads of single records cheaper and larger ones cut per-batch
    /// costs. Default [`DEFAULT_BATCH_BYTES`] (4 KiB); [`MIN_BATCH_BYTES`]..=[`MAX_BATCH_BYTES`].
    /// Not part of the format: a shard reads batches of any size.
    pub batch_bytes: usize,
    /// Where sealed segments are copied to, and read from once only remote (tiered storage;
    /// default none). See [`crate::log::remote`].
    pub tier: Option<ShardTier>,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            segment_bytes: 128 * 1024 * 1024,
            max_segment_age: None,
            max_record_bytes: 1024 * 1024,
            flush: FlushPolicy::Never,
            clock: Arc::new(SystemClock),
            batch_bytes: DEFAULT_BATCH_BYTES,
            tier: None,
        }
    }
}

/// Default [`ShardOptions::batch_bytes`]: one record at a random offset of 1 GiB of 100 B records
/// reads in 2.6 µs (64 KiB batches: 14.1 µs), see benches/README.md, "Batch size is a trade-off".
pub const DEFAULT_BATCH_BYTES: usize = 4 * 1024;

/// Smallest [`ShardOptions::batch_bytes`].
pub const MIN_BATCH_BYTES: usize = 256;

/// Largest [`ShardOptions::batch_bytes`].
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Smallest segment size accepted (small sizes are for tests of rolling).
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Largest segment size accepted: byte positions in the index are 32-bit.
pub const MAX_SEGMENT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl ShardOptions {
    fn validate(&self) -> Result<()> {
        in_range(
            "segment_bytes",
            self.segment_bytes,
            MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES,
        )?;
        in_range(
            "batch_bytes",
            self.batch_bytes,
            MIN_BATCH_BYTES..=MAX_BATCH_BYTES,
        )?;
        in_range(
            "max_record_bytes",
            self.max_record_bytes,
            1..=MAX_RECORD_BYTES_LIMIT,
        )
    }

    fn limits(&self) -> SegmentLimits {
        let largest_frame = max_batched_len(MAX_PARTITION_KEY_LEN, self.max_record_bytes);
        SegmentLimits {
            capacity: (self.segment_bytes as usize + largest_frame + FOOTER_LEN)
                .next_multiple_of(4096),
            sync: self.flush != FlushPolicy::Never,
            map_small_appends: self.flush == FlushPolicy::Never,
            batch_bytes: self.batch_bytes,
        }
    }

    /// Checks one record against the limits.
    pub fn check_record(&self, record: &NewRecord<'_>) -> Result<(), RecordError> {
        let key = record.partition_key.len();
        if key == 0 {
            return Err(RecordError::EmptyPartitionKey);
        }
        if key > MAX_PARTITION_KEY_LEN {
            return Err(RecordError::PartitionKeyTooLong {
                len: key,
                limit: MAX_PARTITION_KEY_LEN,
            });
        }
        let size = key + record.data.len();
        if size > self.max_record_bytes {
            return Err(RecordError::TooLarge {
                size,
                limit: self.max_record_bytes,
            });
        }
        Ok(())
    }
}

/// `Ok` if option `name`'s `value` lies in `range`, else an `InvalidArgument` saying so.
fn in_range<T: PartialOrd + std::fmt::Display>(
    name: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        name,
        reason: format!("{value} is outside {}..={}", range.start(), range.end()),
    })
}

/// What [`Shard::delete_before`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Segments deleted.
    pub segments: usize,
    /// Records they held.
    pub records: u64,
    /// Bytes of disk they used.
    pub bytes: u64,
}

struct Writer {
    active: Option<ActiveSegment>,
    next_offset: Offset,
    last_arrival_ms: Option<i64>,
    poisoned: Option<String>,
    /// Segments sealed without a sync (policy `Never`), which [`Shard::flush`] must still sync,
    /// with the directory that names them.
    unsynced: Vec<(Arc<std::fs::File>, PathBuf)>,
}

#[derive(Default)]
struct SyncState {
    /// Every offset below this is durable.
    durable: Offset,
    syncing: bool,
    last_sync_start: Option<Instant>,
}

/// A directory of segments holding one ordered log. `Send + Sync`: share it with an `Arc`.
pub struct Shard {
    dir: PathBuf,
    options: ShardOptions,
    limits: SegmentLimits,
    _lock: Option<DirLock>,
    writer: Option<Mutex<Writer>>,
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    next_offset: AtomicU64,
    sync_state: Mutex<SyncState>,
    sync_done: Condvar,
    /// Length of `remote.log` as last copied to the tier (tiered shards).
    remote_log_uploaded: Mutex<Option<u64>>,
    /// Held by a tiering round ([`Shard::tier_step`]).
    tier_round: Mutex<()>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("dir", &self.dir)
            .field("read_only", &self.writer.is_none())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

/// Lists the base offsets of the segments in `dir`, oldest first. With `tidy`, index files whose
/// segment is gone (left by a crash while deleting) are removed.
fn list_segments(dir: &Path, tidy: bool) -> Result<Vec<Offset>> {
    let mut segments = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io_at("list", dir))? {
        let entry = entry.map_err(Error::io_at("list", dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_file_name) {
            Some((base, SEGMENT_EXT)) => segments.push(base),
            Some((base, INDEX_EXT)) => indexes.push(base),
            _ => {}
        }
    }
    segments.sort_unstable();
    if tidy {
        for base in indexes {
            if segments.binary_search(&base).is_err() {
                let path = index_path(dir, base);
                crate::io::remove_file("remove orphan index", &path)?;
            }
        }
    }
    Ok(segments)
}

/// The segments of a shard directory but `newest_local` (which the caller opens): local ones
/// loaded lazily, each with its remote copy if `remote.log` records one, and those only the
/// object store holds, oldest first.
fn tiered_segments(
    dir: &Path,
    bases: &[Offset],
    remote: &BTreeMap<Offset, RemoteSegment>,
    options: &ShardOptions,
    newest_local: Option<Offset>,
    read_only: bool,
) -> Vec<Arc<Segment>> {
    let mut all: Vec<Offset> = bases.iter().chain(remote.keys()).copied().collect();
    all.sort_unstable();
    all.dedup();
    let copy = |base: &Offset| {
        remote.get(base).map(|&info| RemoteCopy {
            tier: options.tier.clone(),
            info,
        })
    };
    all.iter()
        .filter(|&&base| Some(base) != newest_local)
        .filter_map(|base| {
            let local = bases.binary_search(base).is_ok();
            let segment = match (local, copy(base)) {
                (true, Some(copy)) => Segment::lazy(dir, *base, read_only).with_remote(copy),
                (true, None) => Segment::lazy(dir, *base, read_only),
                (false, Some(copy)) => Segment::remote_only(dir, copy, read_only),
                (false, None) => return None,
            };
            Some(Arc::new(segment))
        })
        .collect()
}

/// Where a shard whose newest segment is only remote goes on: after that segment's records and
/// any gap recorded after them (0 without segments).
fn end_of_remote_tail(segments: &[Arc<Segment>]) -> Offset {
    segments.last().map_or(Offset::new(0), |s| {
        s.remote().map_or(s.base(), |r| {
            Offset::new(r.info.end.saturating_add(r.info.lost_after))
        })
    })
}

impl Shard {
    /// Opens (creating if needed) the shard in `dir` for writing, recovering from any crash: the
    /// newest segment is verified from its last index entry on and cut at the first bad frame.
    /// Fails with [`Error::Locked`] if another handle has it open for writing.
    pub fn open(dir: impl AsRef<Path>, options: ShardOptions) -> Result<Shard> {
        let dir = dir.as_ref().to_path_buf();
        crate::io::create_dir_all(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        Shard::open_with_lock(dir, options, Some(lock))
    }

    /// Opens a shard whose directory lies inside one the caller holds the writer lock of (a
    /// store's data directory): no lock file, no file descriptor held for the lock.
    pub(crate) fn open_in_locked_dir(dir: PathBuf, options: ShardOptions) -> Result<Shard> {
        crate::io::create_dir_all(&dir)?;
        Shard::open_with_lock(dir, options, None)
    }

    fn open_with_lock(dir: PathBuf, options: ShardOptions, lock: Option<DirLock>) -> Result<Shard> {
        Shard::open_repairing(dir, options, lock, true)
    }

    /// Opens for writing. A newest segment with damage followed by intact frames is repaired
    /// once (`may_repair`), as `shardlog repair --apply` would: every intact frame is kept and
    /// the lost offsets are recorded, so no acknowledged record is cut and no offset is handed
    /// out twice; every change is logged.
    fn open_repairing(
        dir: PathBuf,
        options: ShardOptions,
        lock: Option<DirLock>,
        may_repair: bool,
    ) -> Result<Shard> {
        options.validate()?;
        let limits = options.limits();
        let bases = list_segments(&dir, true)?;
        let remote = read_remote_log(&dir)?;
        let now = options.clock.now_ms();
        if !dir.join(LOG_START_FILE).exists() {
            // A new shard starts at 0; a shard written before the log start was recorded takes
            // what retention left as its start (once).
            write_log_start(
                &dir,
                bases.first().copied().unwrap_or(Offset::new(0)),
                limits.sync,
            )?;
        }
        // The newest local segment is recovered (and may be the active one) unless a segment
        // only the object store holds is newer (a local disk that lost its files).
        let newest_local = bases
            .last()
            .copied()
            .filter(|&b| remote.keys().next_back().is_none_or(|&r| r <= b));
        let mut segments = tiered_segments(&dir, &bases, &remote, &options, newest_local, false);
        let mut writer = Writer {
            active: None,
            next_offset: end_of_remote_tail(&segments),
            last_arrival_ms: None,
            poisoned: None,
            unsynced: Vec::new(),
        };
        if let Some(newest) = newest_local {
            let recorded = remote.get(&newest).map(|&info| RemoteCopy {
                tier: options.tier.clone(),
                info,
            });
            match ActiveSegment::recover(&dir, newest, now, limits)? {
                Tail::Damaged {
                    path,
                    position,
                    intact_at,
                    reason,
                } => {
                    if !may_repair {
                        return Err(Error::corrupt(
                            &path,
                            position,
                            format!("{reason}, with intact records after it at byte {intact_at}, still after a repair"),
                        ));
                    }
                    tracing::warn!(
                        file = %path.display(),
                        position,
                        intact_at,
                        reason,
                        "damage followed by intact records: repairing the shard (keeping every intact record)"
                    );
                    let plan = crate::log::repair::apply_repair(&dir, &Default::default(), now)?;
                    for repair in &plan.repairs {
                        tracing::warn!(shard = %dir.display(), "repaired: {repair}");
                    }
                    drop(segments);
                    return Shard::open_repairing(dir, options, lock, false);
                }
                Tail::Sealed { end_offset } => {
                    let segment = Segment::lazy(&dir, newest, false);
                    segments.push(Arc::new(match recorded {
                        Some(copy) => segment.with_remote(copy),
                        None => segment,
                    }));
                    writer.next_offset = end_offset;
                }
                Tail::Active(active) => {
                    segments.push(Arc::new(Segment::loaded(
                        &dir,
                        Arc::clone(active.data()),
                        false,
                    )));
                    writer.next_offset = active.next_offset();
                    // The header's floor keeps arrival times non-decreasing even when retention
                    // deleted every older record.
                    let floor = Some(active.arrival_floor_ms()).filter(|&t| t > i64::MIN);
                    writer.last_arrival_ms = active.last_arrival_ms().max(floor);
                    writer.active = Some(active);
                }
            }
        }
        if writer.last_arrival_ms.is_none() {
            // The newest segment is sealed: keep arrival times non-decreasing across the
            // restart by looking at the newest sealed records.
            for seg in segments.iter().rev() {
                if let Some(t) = seg.seal_info()?.and_then(|s| s.last_arrival_ms) {
                    writer.last_arrival_ms = Some(t);
                    break;
                }
            }
        }
        let next = writer.next_offset;
        Ok(Shard {
            dir,
            limits,
            options,
            _lock: lock,
            writer: Some(Mutex::new(writer)),
            segments: RwLock::new(Arc::new(segments)),
            next_offset: AtomicU64::new(next.get()),
            sync_state: Mutex::new(SyncState {
                durable: next,
                ..SyncState::default()
            }),
            sync_done: Condvar::new(),
            remote_log_uploaded: Mutex::new(None),
            tier_round: Mutex::new(()),
        })
    }

    /// Opens the shard in `dir` for reading only: takes no lock, changes no byte, and works while
    /// another process writes it. It sees the records that were complete when it opened.
    pub fn open_read_only(dir: impl AsRef<Path>, options: ShardOptions) -> Result<Shard> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let bases = list_segments(&dir, false)?;
        // Without a tier, segments only in the object store cannot be read: the view starts at
        // the oldest local segment (as if retention had deleted the older ones).
        let remote = match options.tier {
            Some(_) => read_remote_log(&dir)?,
            None => BTreeMap::new(),
        };
        let newest_local = bases
            .last()
            .copied()
            .filter(|&b| remote.keys().next_back().is_none_or(|&r| r <= b));
        let mut segments = tiered_segments(&dir, &bases, &remote, &options, newest_local, true);
        let mut next = end_of_remote_tail(&segments);
        if let Some(newest) = newest_local {
            let snapshot = Arc::new(load_newest_read_only(&dir, newest)?);
            next = snapshot.seal_info().map_or(newest, |s| {
                Offset::new(s.end_offset.get().saturating_add(s.lost_after))
            });
            segments.push(Arc::new(Segment::loaded(&dir, snapshot, true)));
        }
        Ok(Shard {
            limits: options.limits(),
            options,
            _lock: None,
            writer: None,
            segments: RwLock::new(Arc::new(segments)),
            next_offset: AtomicU64::new(next.get()),
            sync_state: Mutex::new(SyncState {
                durable: next,
                ..SyncState::default()
            }),
            sync_done: Condvar::new(),
            remote_log_uploaded: Mutex::new(None),
            tier_round: Mutex::new(()),
            dir,
        })
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &ShardOptions {
        &self.options
    }

    /// The offset the next appended record will get (one past the newest record).
    pub fn next_offset(&self) -> Offset {
        Offset::new(self.next_offset.load(Ordering::Acquire))
    }

    /// The oldest offset still stored (equal to [`Shard::next_offset`] when the shard is empty).
    pub fn first_offset(&self) -> Offset {
        // Before the snapshot, for the reason `read` gives.
        let next_offset = self.next_offset();
        self.snapshot().first().map_or(next_offset, |s| s.base())
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.snapshot().len()
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&self.segments.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace_segments(&self, f: impl FnOnce(&mut Vec<Arc<Segment>>)) {
        let mut guard = self.segments.write().unwrap_or_else(|e| e.into_inner());
        let mut list = Vec::clone(&guard);
        f(&mut list);
        *guard = Arc::new(list);
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let writer = self.writer.as_ref().ok_or_else(|| Error::ReadOnly {
            path: self.dir.clone(),
        })?;
        let guard = writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &guard.poisoned {
            return Err(Error::Poisoned {
                path: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        Ok(guard)
    }
}
