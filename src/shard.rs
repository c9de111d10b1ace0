//! A shard: a directory of segments that together hold one ordered log of records.
//!
//! One writer at a time appends (a mutex around the active segment); readers never take that
//! mutex. They take a snapshot of the segment list and read each segment up to the end its writer
//! published, so they never see a partial frame and never wait for an append or an fsync.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, RecordError, Result};
use crate::format::{
    parse_file_name, RecordRef, FOOTER_LEN, INDEX_EXT, MAX_PARTITION_KEY_LEN,
    MAX_RECORD_BYTES_LIMIT, SEGMENT_EXT, SEGMENT_HEADER_LEN,
};
use crate::io::sync_dir;
use crate::lock::DirLock;
use crate::log_start::write_log_start;
pub use crate::log_start::{read_log_start, LOG_START_FILE};
use crate::segment::{
    self, batched_len, count_fitting, index_path, load_newest_read_only, max_batched_len,
    segment_path, ActiveSegment, Budget, Segment, SegmentData, SegmentLimits, Tail,
};
pub use crate::segment::{Problem, SegmentReport};
use crate::types::{Appended, NewRecord, Offset, ReadBatch, ReadLimits};

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
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len() + 1);
        let mut writer = Writer {
            active: None,
            next_offset: Offset::new(0),
            last_arrival_ms: None,
            poisoned: None,
            unsynced: Vec::new(),
        };
        if let Some((&newest, older)) = bases.split_last() {
            segments.extend(
                older
                    .iter()
                    .map(|&b| Arc::new(Segment::lazy(&dir, b, false))),
            );
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
                    let plan = crate::repair::apply_repair(&dir, None, now)?;
                    for repair in &plan.repairs {
                        tracing::warn!(shard = %dir.display(), "repaired: {repair}");
                    }
                    drop(segments);
                    return Shard::open_repairing(dir, options, lock, false);
                }
                Tail::Sealed { end_offset } => {
                    segments.push(Arc::new(Segment::lazy(&dir, newest, false)));
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
            if writer.last_arrival_ms.is_none() {
                // The newest segment is sealed: keep arrival times non-decreasing across the
                // restart by looking at the newest sealed records.
                for seg in segments.iter().rev() {
                    if let Some(t) = seg.data()?.seal_info().and_then(|s| s.last_arrival_ms) {
                        writer.last_arrival_ms = Some(t);
                        break;
                    }
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
        })
    }

    /// Opens the shard in `dir` for reading only: takes no lock, changes no byte, and works while
    /// another process writes it. It sees the records that were complete when it opened.
    pub fn open_read_only(dir: impl AsRef<Path>, options: ShardOptions) -> Result<Shard> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let bases = list_segments(&dir, false)?;
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
        let mut next = Offset::new(0);
        if let Some((&newest, older)) = bases.split_last() {
            segments.extend(
                older
                    .iter()
                    .map(|&b| Arc::new(Segment::lazy(&dir, b, true))),
            );
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

    /// Appends `records` in order and returns the offsets they got. Every record is checked first;
    /// an invalid one fails the whole append with nothing written. Returns once the records are as
    /// durable as the [`FlushPolicy`] promises.
    ///
    /// An append that fits in one segment becomes visible to readers all at once. One larger than
    /// a segment is split across segments, and an error (a full disk) partway leaves the records of
    /// the segments already filled stored.
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<Appended> {
        if records.is_empty() {
            return Err(Error::InvalidArgument {
                name: "records",
                reason: "an append needs at least one record".into(),
            });
        }
        for (index, record) in records.iter().enumerate() {
            self.options
                .check_record(record)
                .map_err(|error| Error::InvalidRecord { index, error })?;
        }
        let mut w = self.lock_writer()?;
        let now = self.options.clock.now_ms();
        let arrival_ms = w.last_arrival_ms.map_or(now, |last| now.max(last));
        let first = w.next_offset;
        let mut rest = records;
        while !rest.is_empty() {
            let (fitting, len) = self.prepare_active(&mut w, rest, now)?;
            let active = w
                .active
                .as_mut()
                .expect("prepare_active leaves an active segment");
            active.append(&rest[..fitting], len, arrival_ms)?;
            w.next_offset = active.next_offset();
            w.last_arrival_ms = Some(arrival_ms);
            self.next_offset
                .store(w.next_offset.get(), Ordering::Release);
            rest = &rest[fitting..];
        }
        let end = w.next_offset;
        drop(w);
        if self.options.flush != FlushPolicy::Never {
            self.wait_durable(end)?;
        }
        Ok(Appended {
            first,
            last: Offset::new(end.get() - 1),
        })
    }

    /// Makes sure an active segment exists that can take a first part of `records`, rolling when
    /// the current one is full or too old; returns how many records go into it and the bytes
    /// their batches take.
    fn prepare_active(
        &self,
        w: &mut Writer,
        records: &[NewRecord<'_>],
        now: i64,
    ) -> Result<(usize, usize)> {
        let fresh_room = self.options.segment_bytes as usize - SEGMENT_HEADER_LEN;
        // Computed once: most appends fit, and then no record-by-record count is needed.
        let batch_bytes = self.options.batch_bytes;
        let total = batched_len(records, batch_bytes);
        // The batches of a prefix are the batches of the whole up to its end (`plan_batches`).
        let sized = |fitting: usize| {
            let len = if fitting == records.len() {
                total
            } else {
                batched_len(&records[..fitting], batch_bytes)
            };
            (fitting, len)
        };
        loop {
            let Some(active) = w.active.as_ref() else {
                self.start_segment(w, now)?;
                continue;
            };
            if active.is_empty() {
                // A fresh segment takes as much as fits, and always at least one record.
                if total <= fresh_room {
                    return Ok(sized(records.len()));
                }
                return Ok(sized(
                    count_fitting(records, fresh_room, batch_bytes).max(1),
                ));
            }
            let too_old = self.options.max_segment_age.is_some_and(|age| {
                now.saturating_sub(active.created_ms()) >= age.as_millis() as i64
            });
            let room = fresh_room.saturating_sub(active.end() - SEGMENT_HEADER_LEN);
            let fitting = if total <= room {
                records.len()
            } else {
                count_fitting(records, room, batch_bytes)
            };
            let all_fit_fresh = total <= fresh_room;
            // Roll rather than split an append that a fresh segment would hold whole.
            if too_old || fitting == 0 || (fitting < records.len() && all_fit_fresh) {
                self.roll(w, now)?;
                continue;
            }
            return Ok(sized(fitting));
        }
    }

    fn start_segment(&self, w: &mut Writer, now: i64) -> Result<()> {
        let floor = w.last_arrival_ms.unwrap_or(i64::MIN);
        let active = ActiveSegment::create(&self.dir, w.next_offset, now, floor, self.limits)?;
        let segment = Arc::new(Segment::loaded(&self.dir, Arc::clone(active.data()), false));
        self.replace_segments(|list| list.push(segment));
        w.active = Some(active);
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&self, w: &mut Writer, now: i64) -> Result<()> {
        if let Some(active) = w.active.take() {
            let file = Arc::clone(active.file());
            match active.seal(now, self.limits.sync) {
                Ok(data) if !self.limits.sync => w.unsynced.push((file, data.path().to_path_buf())),
                Ok(_) => {}
                Err(e) => {
                    w.poisoned = Some(format!("sealing a segment failed: {e}"));
                    return Err(e);
                }
            }
        }
        self.start_segment(w, now)
    }

    /// Blocks until every record below `end` is durable, leading a sync if none is running.
    fn wait_durable(&self, end: Offset) -> Result<()> {
        let mut state = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.durable >= end {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .sync_done
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.syncing = true;
            let wait = match (self.options.flush, state.last_sync_start) {
                (FlushPolicy::GroupCommit { interval }, Some(last)) => {
                    interval.saturating_sub(last.elapsed())
                }
                _ => Duration::ZERO,
            };
            drop(state);
            if !wait.is_zero() {
                // Let more appenders join this sync.
                std::thread::sleep(wait);
            }
            let started = Instant::now();
            let synced = self.sync_active();
            state = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
            state.syncing = false;
            state.last_sync_start = Some(started);
            self.sync_done.notify_all();
            match synced {
                Ok(upto) => state.durable = state.durable.max(upto),
                Err(e) => return Err(e),
            }
        }
    }

    /// fdatasyncs the active segment (and any segment sealed without a sync, and then the
    /// directory); returns the offset below which everything is durable.
    fn sync_active(&self) -> Result<Offset> {
        let (upto, active, unsynced) = {
            let mut w = self.lock_writer()?;
            let active = w
                .active
                .as_ref()
                .map(|a| (Arc::clone(a.file()), a.data().path().to_path_buf(), a.end()));
            (w.next_offset, active, std::mem::take(&mut w.unsynced))
        };
        let poison = |e: Error| {
            if let Some(writer) = &self.writer {
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                w.poisoned = Some(e.to_string());
            }
            e
        };
        for (file, path) in &unsynced {
            crate::faults::sync_data(file, path).map_err(|e| poison(Error::io("sync", path, e)))?;
        }
        if !unsynced.is_empty() {
            sync_dir(&self.dir).map_err(poison)?;
        }
        if let Some((file, path, end)) = active {
            crate::faults::sync_data(&file, &path)
                .map_err(|e| poison(Error::io("sync", &path, e)))?;
            let mut w = self.lock_writer()?;
            if let Some(a) = w.active.as_mut().filter(|a| a.data().path() == path) {
                a.mark_durable(end);
            }
        }
        Ok(upto)
    }

    /// Makes every record appended so far durable, whatever the flush policy.
    pub fn flush(&self) -> Result<()> {
        let upto = self.sync_active()?;
        if !self.limits.sync {
            // Segments created without a sync of the directory that names them.
            sync_dir(&self.dir)?;
        }
        let mut state = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
        state.durable = state.durable.max(upto);
        Ok(())
    }

    /// Reads records from `from` on (the first record at or after it; from the oldest record if
    /// `from` was deleted), within `limits`. Every record's CRC is checked; damage is an
    /// [`Error::Corrupt`] naming file and position, after the good records before it were returned.
    pub fn read(&self, from: Offset, limits: ReadLimits) -> Result<ReadBatch> {
        let mut out = Vec::with_capacity(limits.max_records.min(1024));
        let next_offset = self.read_segments(from, limits, |data, cursor, budget| {
            data.read(cursor, budget, &mut out)
        })?;
        Ok(ReadBatch {
            records: out,
            next_offset,
        })
    }

    /// Lends the records from `from` on, within `limits`, to `visit`, as [`Shard::read`] reads
    /// them but without handing out owned views: no reference count, no allocation per record,
    /// one CRC check per batch. For consumers that use each record and let it go (encoders,
    /// serializers, counters). Returns the offset to read from next.
    pub fn visit(
        &self,
        from: Offset,
        limits: ReadLimits,
        mut visit: impl FnMut(RecordRef<'_>),
    ) -> Result<Offset> {
        self.read_segments(from, limits, |data, cursor, budget| {
            data.visit(cursor, budget, &mut visit)
        })
    }

    /// Walks the segments holding `from` and after, handing each to `read_segment` with the
    /// offset to read from and the budget left; returns the offset to read from next.
    fn read_segments(
        &self,
        from: Offset,
        limits: ReadLimits,
        mut read_segment: impl FnMut(&SegmentData, Offset, &mut Budget) -> Result<Option<Offset>>,
    ) -> Result<Offset> {
        // Loaded before the snapshot: records below it were in segments listed before it was
        // published, so if the snapshot lists none, they are all gone (expired). Loaded after,
        // it could count records appended (to a segment created) since the snapshot, and the
        // read would skip them.
        let next_offset = self.next_offset();
        let segments = self.snapshot();
        let Some(first) = segments.first() else {
            return Ok(from.max(next_offset));
        };
        let mut cursor = from.max(first.base());
        // cursor >= the first segment's base, so at least one segment starts at or before it.
        let start = segments.partition_point(|s| s.base() <= cursor) - 1;
        let mut budget = Budget::new(limits);
        for (i, segment) in segments.iter().enumerate().skip(start) {
            if budget.exhausted() {
                break;
            }
            let data = segment.data()?;
            if let Some(next) = read_segment(&data, cursor, &mut budget)? {
                cursor = next;
            }
            if budget.exhausted() {
                break;
            }
            let Some(newer) = segments.get(i + 1) else {
                break;
            };
            let seal = data.seal_info();
            let lost = seal.map_or(0, |s| s.lost_after);
            // A read that starts inside the gap a repair recorded after this segment's records
            // reads on from the next segment.
            let in_recorded_gap = seal.is_some_and(|s| {
                cursor >= s.end_offset
                    && s.end_offset.get().saturating_add(s.lost_after) == newer.base().get()
            });
            if cursor < newer.base()
                && cursor.get().saturating_add(lost) != newer.base().get()
                && !in_recorded_gap
            {
                // This segment ended before the next one begins, and no repair accounted for the
                // gap: records are missing.
                if budget.started() {
                    break;
                }
                let (position, reason) = match data.damage() {
                    Some(d) => (d.position, d.reason.clone()),
                    None => (0, format!("offsets {cursor}..{} are missing", newer.base())),
                };
                return Err(Error::corrupt(data.path(), position, reason));
            }
            cursor = cursor.max(newer.base());
        }
        Ok(cursor)
    }

    /// The offset of the first record that arrived at or after `t_ms` (ms since the Unix epoch),
    /// or [`Shard::next_offset`] if none did.
    pub fn seek_time(&self, t_ms: i64) -> Result<Offset> {
        // Before the snapshot, for the reason `read` gives (used only if there are no segments).
        let next_offset = self.next_offset();
        let segments = self.snapshot();
        // Arrival times never decrease, so the segments whose newest record is older than t come
        // first: binary search for the first one that is not.
        let (mut lo, mut hi) = (0, segments.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let newest = match segments[mid].data()?.seal_info() {
                Some(seal) => seal.last_arrival_ms.unwrap_or(i64::MIN),
                None => i64::MAX, // the active segment: search it
            };
            if newest < t_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // No record at or after t: the end of what was looked at, all of it older than t (not
        // the shard's end now, which may have moved past records that are not).
        let mut end = match segments.last() {
            Some(last) => last
                .data()?
                .seal_info()
                .map_or(next_offset, |seal| seal.end_offset),
            None => next_offset,
        };
        for segment in &segments[lo..] {
            match segment.data()?.seek_time(t_ms)? {
                Ok(offset) => return Ok(offset),
                Err(after) => end = after,
            }
        }
        Ok(end)
    }

    /// Reads records from the first that arrived at or after `t_ms` on.
    pub fn read_from_time(&self, t_ms: i64, limits: ReadLimits) -> Result<ReadBatch> {
        let from = self.seek_time(t_ms)?;
        self.read(from, limits)
    }

    /// Deletes, oldest first, whole segments whose newest record arrived before `cutoff_ms`. The
    /// active segment counts too once everything before it is deleted: it is sealed and a new,
    /// empty one takes over, so the shard keeps its next offset. Readers holding records of a
    /// deleted segment keep them; later reads start at the oldest remaining record.
    pub fn delete_before(&self, cutoff_ms: i64) -> Result<Deleted> {
        self.delete_where(
            |seal| seal.last_arrival_ms.is_none_or(|t| t < cutoff_ms),
            |active| active.last_arrival_ms().is_some_and(|t| t < cutoff_ms),
        )
    }

    /// Deletes, oldest first, whole segments holding only offsets below `offset` (records
    /// already consumed, like a delivery stream's delivered buffer), the active segment included
    /// as in [`Shard::delete_before`].
    pub fn delete_below(&self, offset: Offset) -> Result<Deleted> {
        self.delete_where(
            |seal| seal.end_offset <= offset,
            |active| active.next_offset() <= offset,
        )
    }

    /// Deletes the leading segments `sealed_expired` accepts (and the active segment, sealing it
    /// first, when all before it went and `active_expired` accepts it).
    fn delete_where(
        &self,
        sealed_expired: impl Fn(&crate::segment::SealInfo) -> bool,
        active_expired: impl Fn(&ActiveSegment) -> bool,
    ) -> Result<Deleted> {
        let mut w = self.lock_writer()?;
        let segments = self.snapshot();
        let mut expired = 0;
        for segment in segments.iter() {
            match segment.data()?.seal_info() {
                Some(seal) if sealed_expired(&seal) => expired += 1,
                _ => break,
            }
        }
        let now = self.options.clock.now_ms();
        if expired == segments.len() && expired > 0 {
            // Every segment is sealed and expired (no active one: the process died between
            // sealing the newest and creating the next). An empty segment must hold the next
            // offset before they go, or a restart would begin again at 0.
            self.start_segment(&mut w, now)?;
        } else if expired + 1 == segments.len()
            && w.active
                .as_ref()
                .is_some_and(|a| !a.is_empty() && active_expired(a))
        {
            self.roll(&mut w, now)?;
            expired += 1;
        }
        if expired == 0 {
            return Ok(Deleted::default());
        }
        let doomed: Vec<Arc<Segment>> = segments[..expired].to_vec();
        // Where the log starts now, recorded before the files go: a missing oldest segment is
        // then told apart from one retention deleted.
        let start = segments.get(expired).map_or(w.next_offset, |s| s.base());
        write_log_start(&self.dir, start, true)?;
        self.replace_segments(|list| {
            list.drain(..expired);
        });
        let mut deleted = Deleted::default();
        for (i, segment) in doomed.iter().enumerate() {
            let end = doomed
                .get(i + 1)
                .map(|s| s.base())
                .or_else(|| self.snapshot().first().map(|s| s.base()))
                .unwrap_or(w.next_offset);
            deleted.records += end.get() - segment.base().get();
            let path = segment.path();
            deleted.bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
            crate::io::remove_file("delete segment", &path)?;
            crate::io::remove_file("delete index", &segment.index_path())?;
            deleted.segments += 1;
        }
        if self.limits.sync {
            sync_dir(&self.dir)?;
        }
        drop(w);
        Ok(deleted)
    }
}

/// Checks the oldest segment of the shard in `dir` against the recorded log start: a segment
/// base above it means records were lost that retention did not delete.
pub fn verify_log_start(dir: &Path) -> Result<Option<Problem>> {
    let start = match read_log_start(dir) {
        Ok(start) => start,
        Err(e) => {
            return Ok(Some(Problem {
                path: dir.join(LOG_START_FILE),
                position: None,
                what: e.to_string(),
            }))
        }
    };
    let bases = segment_bases(dir)?;
    Ok(match bases.first() {
        Some(&oldest) if oldest > start => Some(Problem {
            path: segment_file(dir, oldest),
            position: None,
            what: format!(
                "the oldest segment starts at offset {oldest}, but the log starts at {start}: offsets {start}..{oldest} are missing (not deleted by retention)"
            ),
        }),
        _ => None,
    })
}

/// Checks a shard directory without changing it: every frame's CRC and offset in every segment,
/// each seal against its frames, each index against its segment, and that segments follow each
/// other without missing offsets. Returns every problem found, with file and byte position; an
/// empty list means the shard is clean. Safe to run while a writer has the directory open (it sees
/// the newest segment as it is at that moment).
pub fn verify(dir: impl AsRef<Path>) -> Result<Vec<Problem>> {
    let dir = dir.as_ref();
    let bases = segment_bases(dir)?;
    let mut problems: Vec<Problem> = verify_log_start(dir)?.into_iter().collect();
    for (i, &base) in bases.iter().enumerate() {
        problems.extend(verify_segment(dir, base, bases.get(i + 1).copied())?.problems);
    }
    Ok(problems)
}

/// The base offsets of the segment files in a shard directory, oldest first. Changes nothing.
pub fn segment_bases(dir: impl AsRef<Path>) -> Result<Vec<Offset>> {
    list_segments(dir.as_ref(), false)
}

/// Verifies one segment of a shard directory as [`verify`] does (`next_base`: the base offset
/// of the segment after it, `None` for the newest), reporting its shape and every problem.
pub fn verify_segment(
    dir: &Path,
    base: Offset,
    next_base: Option<Offset>,
) -> Result<SegmentReport> {
    segment::verify_segment(dir, base, next_base)
}

/// The shape of one segment (records, arrival times, seal, index size) from its header, footer
/// and index file size; only an unsealed segment's frames are read. Verifies nothing else.
pub fn summarize_segment(dir: &Path, base: Offset) -> Result<SegmentReport> {
    segment::summarize_segment(dir, base)
}

/// The path of the segment file of `base` in a shard directory (for tools and tests).
pub fn segment_file(dir: &Path, base: Offset) -> PathBuf {
    segment_path(dir, base)
}
