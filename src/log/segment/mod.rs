//! One segment file: its readable view (shared by readers), the writer of the active segment,
//! and the scan that verifies frames and recovers a torn tail.
//!
//! A segment is `header | frames… | (footer, once sealed)`; see `format` for the bytes. Readers see
//! a segment through [`SegmentData`], whose bytes are either a memory map (the writer's own process)
//! or an owned snapshot (a read-only open of a segment another process may still be writing).
//!
//! This file holds the readable view; `scan` checks batches and finds a segment's good end, `open`
//! opens segments no one writes, `verify` reports on one, and `active` is the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::log::format::{
    decode_batch, file_name, peek_batch, BatchHead, FrameError, IndexEntry, Layout, RecordRef,
    INDEX_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN,
};
use crate::log::index::SparseIndex;
use crate::log::mmap::SharedMap;
use crate::log::remote::{RemoteSegment, ShardTier};
use crate::types::{Offset, ReadLimits, Record};

mod active;
mod open;
mod scan;
mod verify;

pub(crate) use active::{
    batched_len, count_fitting, max_batched_len, ActiveSegment, SegmentLimits, Tail,
};
use open::load_sealed;
pub(crate) use open::{load_newest_read_only, load_remote_copy, remote_window, Window, WindowFit};
pub(crate) use scan::{good_batch_at, offset_limit, scan};
pub(crate) use verify::{index_problem, summarize_segment, verify_segment};
pub use verify::{Problem, SegmentReport};

/// First allocation of a new segment file; later ones double up to [`MAX_GROWTH`].
const INITIAL_ALLOCATION: usize = 64 * 1024;

/// Largest single growth of a segment file.
const MAX_GROWTH: usize = 16 * 1024 * 1024;

/// Appends smaller than this (all their frames) are stored through the map under `Never`.
pub(crate) const MAP_APPEND_MAX: usize = 128 * 1024;

/// Payloads at least this large are written straight from the caller's slice.
pub(crate) const DIRECT_WRITE_MIN: usize = 32 * 1024;

/// Frames are gathered in a buffer of about this size between pwrites: small enough to stay in
/// cache, large enough to make the system calls cheap and the page cache's folios large.
const PWRITE_CHUNK: usize = 256 * 1024;

/// A read that has walked this many bytes of a segment in one call starts asking for the bytes
/// ahead of it, [`READ_AHEAD`] at a time (re-asked every half): short reads never pay the system
/// call.
const READ_AHEAD_AFTER: usize = 1024 * 1024;

/// See [`READ_AHEAD_AFTER`].
const READ_AHEAD: usize = 8 * 1024 * 1024;

/// How far ahead of small appends the file is zero-filled at a time.
const PREFILL_AHEAD: usize = 256 * 1024;

/// New index entries are written to the sidecar file once this many have piled up, or once they
/// cover [`INDEX_FLUSH_BYTES`] of batches (and at seal and close), bounding what a recovery after
/// a crash must scan to about `INDEX_FLUSH_EVERY` index intervals, or one flush's worth of
/// large batches.
const INDEX_FLUSH_EVERY: usize = 64;

/// See [`INDEX_FLUSH_EVERY`].
const INDEX_FLUSH_BYTES: usize = 256 * 1024;

/// Paths of a segment's files.
pub(crate) fn segment_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(file_name(base, SEGMENT_EXT))
}

pub(crate) fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(file_name(base, INDEX_EXT))
}

/// The final shape of a segment that takes no more records (sealed, or a read-only snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealInfo {
    /// One past the last offset the segment holds.
    pub end_offset: Offset,
    /// Where its verified frames end.
    pub data_end: usize,
    /// Arrival time of its newest record (`None` if it holds none).
    pub last_arrival_ms: Option<i64>,
    /// Offsets `repair` recorded as lost between this segment and the next (see the footer).
    pub lost_after: u64,
}

/// Damage found in a segment: verified frames stop short of what it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub position: u64,
    pub reason: String,
}

enum Storage {
    Mapped(Arc<SharedMap>),
    Owned(Bytes),
}

/// Owner that lets a `Bytes` borrow the published prefix of a map and keep the map alive.
struct MapView {
    map: Arc<SharedMap>,
    len: usize,
}

impl AsRef<[u8]> for MapView {
    fn as_ref(&self) -> &[u8] {
        &self.map.bytes()[..self.len]
    }
}

/// What readers see of one segment.
pub(crate) struct SegmentData {
    base: Offset,
    layout: Layout,
    path: PathBuf,
    storage: Storage,
    index: RwLock<SparseIndex>,
    sealed: OnceLock<SealInfo>,
    /// A `Bytes` over the whole (immutable) readable range, made once the segment is sealed.
    sealed_bytes: OnceLock<Bytes>,
    damage: Option<Damage>,
    /// Where `bytes()` begin in the segment file (not 0 only for a window of a remote segment,
    /// see `open::remote_window`): errors name positions in the whole segment.
    origin: u64,
    /// A window that stops short of the segment's end: a read that reaches its end must stop
    /// there (the records after it are in the segment, only not in the window).
    partial: bool,
}

/// How far one read may still go.
#[derive(Debug)]
pub(crate) struct Budget {
    records: usize,
    /// Bytes of partition keys and data still to take.
    bytes: usize,
    /// Whether a record was taken: the first is taken even if larger than `bytes`.
    started: bool,
}

impl Budget {
    pub(crate) fn new(limits: ReadLimits) -> Budget {
        Budget {
            records: limits.max_records,
            bytes: limits.max_bytes,
            started: false,
        }
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.records == 0
    }

    /// Bytes of partition keys and data the read may still take.
    pub(crate) fn bytes_left(&self) -> usize {
        self.bytes
    }

    /// Records the read may still take.
    pub(crate) fn records_left(&self) -> usize {
        self.records
    }

    /// Whether any record was taken.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Takes a record of `size` bytes (partition key and data) if it fits; once one does not,
    /// the budget is exhausted.
    #[inline]
    fn take(&mut self, size: usize) -> bool {
        if self.records == 0 || (size > self.bytes && self.started) {
            self.records = 0;
            return false;
        }
        self.bytes = self.bytes.saturating_sub(size);
        self.records -= 1;
        self.started = true;
        true
    }
}

impl SegmentData {
    fn new(
        base: Offset,
        layout: Layout,
        path: PathBuf,
        storage: Storage,
        index: SparseIndex,
    ) -> SegmentData {
        SegmentData {
            base,
            layout,
            path,
            storage,
            index: RwLock::new(index),
            sealed: OnceLock::new(),
            sealed_bytes: OnceLock::new(),
            damage: None,
            origin: 0,
            partial: false,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    pub(crate) fn seal_info(&self) -> Option<SealInfo> {
        self.sealed.get().copied()
    }

    /// Whether this is a window of a remote segment that ends before the segment does.
    pub(crate) fn is_partial(&self) -> bool {
        self.partial
    }

    /// Whether this is a window of a remote segment (fetched by a range read) rather than all
    /// of it.
    pub(crate) fn is_window(&self) -> bool {
        self.partial || self.origin > 0
    }

    /// Whether the records this holds include `offset` (for a window: whether a read from
    /// `offset` can start in it).
    pub(crate) fn holds(&self, offset: Offset) -> bool {
        self.base <= offset && self.seal_info().is_some_and(|s| offset < s.end_offset)
    }

    /// Where the readable bytes end in the segment file (for a window, in the object).
    pub(crate) fn end_position(&self) -> u64 {
        self.origin + self.bytes().len() as u64
    }

    /// The verified, readable bytes (header included) as of now.
    fn bytes(&self) -> &[u8] {
        let all = match &self.storage {
            Storage::Mapped(map) => map.bytes(),
            Storage::Owned(bytes) => bytes,
        };
        match self.sealed.get() {
            Some(seal) => &all[..seal.data_end.min(all.len())],
            None => all,
        }
    }

    /// A `Bytes` over the readable bytes, so records can be handed out as zero-copy views.
    fn shared_bytes(&self) -> Bytes {
        if let Some(b) = self.sealed_bytes.get() {
            return b.clone();
        }
        let make = || match &self.storage {
            Storage::Mapped(map) => Bytes::from_owner(MapView {
                map: Arc::clone(map),
                len: self.bytes().len(),
            }),
            Storage::Owned(bytes) => bytes.slice(..self.bytes().len()),
        };
        if self.sealed.get().is_some() {
            self.sealed_bytes.get_or_init(make).clone()
        } else {
            make()
        }
    }

    fn index(&self) -> RwLockReadGuard<'_, SparseIndex> {
        // A poisoned lock means a writer panicked mid-push; the Vec itself is still valid.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn corrupt(&self, position: usize, reason: impl Into<String>) -> Error {
        Error::corrupt(&self.path, self.origin + position as u64, reason)
    }

    fn start_of(&self, entry: Option<IndexEntry>) -> (usize, Offset) {
        match entry {
            Some(e) => (
                e.position as usize,
                Offset::new(self.base.get() + u64::from(e.relative_offset)),
            ),
            None => (SEGMENT_HEADER_LEN, self.base),
        }
    }

    /// Asks the kernel to read `range` of a mapped segment ahead of a reader walking it: a cold
    /// sequential read then waits for the disk far less often than page faults alone would make it
    /// (their readahead is a guess, and the segment tail's recovery advice resets it).
    fn read_ahead(&self, range: std::ops::Range<usize>) {
        if let Storage::Mapped(map) = &self.storage {
            map.advise(memmap2::Advice::WillNeed, range);
        }
    }

    fn frame_error(&self, position: usize, e: FrameError) -> Error {
        match e {
            FrameError::End => self.corrupt(position, "records end where a batch was promised"),
            FrameError::Corrupt(reason) => self.corrupt(position, reason),
        }
    }

    /// Walks batch heads (without CRC checks) from an index entry until `stop` says so; returns
    /// the position and head of that batch, or at the end of the readable batches `Err` with the
    /// offset after the last one.
    fn find_batch(
        &self,
        bytes: &[u8],
        entry: Option<IndexEntry>,
        mut stop: impl FnMut(&BatchHead) -> bool,
    ) -> Result<std::result::Result<(usize, BatchHead), Offset>> {
        let (mut pos, mut offset) = self.start_of(entry);
        if pos >= bytes.len() {
            return Ok(Err(offset));
        }
        loop {
            match peek_batch(bytes, pos, self.layout) {
                Ok(head) => {
                    if head.base_offset != offset {
                        return Err(self.corrupt(
                            pos,
                            format!(
                                "batch starts at offset {}, expected {offset}",
                                head.base_offset
                            ),
                        ));
                    }
                    if stop(&head) {
                        return Ok(Ok((pos, head)));
                    }
                    pos += head.len;
                    offset = head.end_offset();
                }
                Err(FrameError::End) => return Ok(Err(offset)),
                Err(FrameError::Corrupt(reason)) => return Err(self.corrupt(pos, reason)),
            }
        }
    }

    /// Position and head of the batch holding `offset` (clamped up to the segment's first), if
    /// readable now.
    fn batch_of(&self, bytes: &[u8], offset: Offset) -> Result<Option<(usize, BatchHead)>> {
        let offset = offset.max(self.base);
        let Ok(rel) = u32::try_from(offset.get() - self.base.get()) else {
            return Ok(None);
        };
        let entry = self.index().for_offset(rel);
        Ok(self
            .find_batch(bytes, entry, |h| h.end_offset() > offset)?
            .ok())
    }

    /// The first record that arrived at or after `t`, if any is readable now; otherwise `Err`
    /// with the offset after the readable records (all of which arrived before `t`), read from
    /// the same view.
    pub(crate) fn seek_time(&self, t: i64) -> Result<std::result::Result<Offset, Offset>> {
        let bytes = self.bytes();
        let entry = self.index().for_time(t);
        let (pos, _) = match self.find_batch(bytes, entry, |h| h.last_arrival_ms >= t)? {
            Ok(found) => found,
            Err(end) => return Ok(Err(end)),
        };
        let batch = decode_batch(bytes, pos, self.layout).map_err(|e| self.frame_error(pos, e))?;
        for record in batch.records() {
            let record = record.map_err(|e| self.frame_error(pos, e))?;
            if record.arrival_ms >= t {
                return Ok(Ok(record.offset));
            }
        }
        Err(self.corrupt(pos, "no record has the batch's last arrival time"))
    }

    /// Calls `visit` with every record from `from` on, within `budget`, in `bytes` (this
    /// segment's readable bytes, or a prefix of them), checking each batch's CRC once. Returns
    /// the offset after the last record visited, or `None` if `from` is past the readable records.
    fn visit_in<'b>(
        &self,
        bytes: &'b [u8],
        from: Offset,
        budget: &mut Budget,
        mut visit: impl FnMut(RecordRef<'b>),
    ) -> Result<Option<Offset>> {
        let Some((mut pos, head)) = self.batch_of(bytes, from)? else {
            return Ok(None);
        };
        let mut next = from.max(self.base);
        let mut expected_base = head.base_offset;
        // A long read asks for the bytes ahead of it (see `READ_AHEAD`); a short one never does.
        let mut advised_to = pos + READ_AHEAD_AFTER;
        while !budget.exhausted() {
            if pos >= advised_to {
                advised_to = pos + READ_AHEAD / 2;
                self.read_ahead(pos..pos + READ_AHEAD);
            }
            let batch = match decode_batch(bytes, pos, self.layout) {
                Ok(b) => b,
                Err(FrameError::End) => break,
                Err(FrameError::Corrupt(reason)) => return Err(self.corrupt(pos, reason)),
            };
            if batch.head.base_offset != expected_base {
                return Err(self.corrupt(
                    pos,
                    format!(
                        "batch starts at offset {}, expected {expected_base}",
                        batch.head.base_offset
                    ),
                ));
            }
            for record in batch.records() {
                let record = record.map_err(|e| self.frame_error(pos, e))?;
                if record.offset < next {
                    continue;
                }
                if !budget.take(record.partition_key.len() + record.data.len()) {
                    return Ok(Some(next));
                }
                next = record.offset.next();
                visit(record);
            }
            pos += batch.head.len;
            expected_base = batch.head.end_offset();
        }
        Ok(Some(next))
    }

    /// Lends every record from `from` on, within `budget`, to `visit` (no copy, no reference
    /// count). Returns the offset after the last record visited, or `None` if `from` is past the
    /// readable records.
    pub(crate) fn visit(
        &self,
        from: Offset,
        budget: &mut Budget,
        visit: impl FnMut(RecordRef<'_>),
    ) -> Result<Option<Offset>> {
        self.visit_in(self.bytes(), from, budget, visit)
    }

    /// Appends records from `from` on to `out` within `budget` as zero-copy views of the
    /// segment. Returns as [`SegmentData::visit`].
    pub(crate) fn read(
        &self,
        from: Offset,
        budget: &mut Budget,
        out: &mut Vec<Record>,
    ) -> Result<Option<Offset>> {
        let shared = self.shared_bytes();
        self.visit_in(&shared, from, budget, |r| {
            out.push(Record {
                offset: r.offset,
                arrival_ms: r.arrival_ms,
                explicit_hash_key: r.explicit_hash_key,
                partition_key: shared.slice_ref(r.partition_key),
                data: shared.slice_ref(r.data),
            })
        })
    }
}

/// A segment in a shard's list: its base offset and, once needed, its loaded data.
pub(crate) struct Segment {
    base: Offset,
    dir: PathBuf,
    read_only: bool,
    data: Mutex<Option<Arc<SegmentData>>>,
    location: Location,
}

/// Where a segment's bytes are.
#[derive(Debug, Clone)]
enum Location {
    /// Only its files in the shard's directory.
    Local,
    /// Its files, and a copy in an object store (uploaded and recorded).
    Both(RemoteCopy),
    /// Only the object store: read through the tier's cache.
    Remote(RemoteCopy),
}

/// A segment's copy in an object store: where, and what was recorded of it at upload.
#[derive(Debug, Clone)]
pub(crate) struct RemoteCopy {
    /// `None` when the shard was opened without tiering (offline tools): the segment is known
    /// but cannot be read.
    pub tier: Option<ShardTier>,
    pub info: RemoteSegment,
}

impl Segment {
    /// A sealed segment that is loaded (mapped, index read) only when first used.
    pub(crate) fn lazy(dir: &Path, base: Offset, read_only: bool) -> Segment {
        Segment {
            base,
            dir: dir.to_path_buf(),
            read_only,
            data: Mutex::new(None),
            location: Location::Local,
        }
    }

    /// A segment whose data is already at hand (the active one, or a read-only snapshot).
    pub(crate) fn loaded(dir: &Path, data: Arc<SegmentData>, read_only: bool) -> Segment {
        Segment {
            base: data.base,
            dir: dir.to_path_buf(),
            read_only,
            data: Mutex::new(Some(data)),
            location: Location::Local,
        }
    }

    /// A segment that is only in the object store.
    pub(crate) fn remote_only(dir: &Path, copy: RemoteCopy, read_only: bool) -> Segment {
        Segment {
            base: Offset::new(copy.info.base),
            dir: dir.to_path_buf(),
            read_only,
            data: Mutex::new(None),
            location: Location::Remote(copy),
        }
    }

    /// This (local) segment, now also in the object store; its loaded data is kept.
    pub(crate) fn with_remote(&self, copy: RemoteCopy) -> Segment {
        Segment {
            base: self.base,
            dir: self.dir.clone(),
            read_only: self.read_only,
            data: Mutex::new(self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            location: match self.location {
                Location::Remote(_) => Location::Remote(copy),
                Location::Local | Location::Both(_) => Location::Both(copy),
            },
        }
    }

    pub(crate) fn base(&self) -> Offset {
        self.base
    }

    pub(crate) fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.base)
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        index_path(&self.dir, self.base)
    }

    /// Its copy in the object store, if it has one.
    pub(crate) fn remote(&self) -> Option<&RemoteCopy> {
        match &self.location {
            Location::Local => None,
            Location::Both(copy) | Location::Remote(copy) => Some(copy),
        }
    }

    /// Whether its files are on the local disk.
    pub(crate) fn is_local(&self) -> bool {
        !matches!(self.location, Location::Remote(_))
    }

    /// The segment's data, loading and verifying a sealed segment on first use; a segment that
    /// is only remote comes from the tier's cache (downloaded when not cached).
    pub(crate) fn data(&self) -> Result<Arc<SegmentData>> {
        if let Location::Remote(copy) = &self.location {
            return self.remote_data(copy);
        }
        let mut slot = self.data.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(data) = slot.as_ref() {
            return Ok(Arc::clone(data));
        }
        let data = match (
            load_sealed(&self.dir, self.base, self.read_only),
            &self.location,
        ) {
            (Ok(data), _) => Arc::new(data),
            // A reader's older view of a segment whose local copy tiering has since dropped:
            // its remote copy has the same bytes.
            (Err(Error::Io { source, .. }), Location::Both(copy))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return self.remote_data(copy);
            }
            (Err(e), _) => return Err(e),
        };
        *slot = Some(Arc::clone(&data));
        Ok(data)
    }

    /// What a read from `from` on, within `budget`, reads: [`Segment::data`], except
    /// that a segment only remote and not downloaded may be served by a window of it fetched
    /// with a range read guided by its index (see `SegmentCache::read_from`). A window may be
    /// partial ([`SegmentData::is_partial`]): the read stops at its end.
    pub(crate) fn data_from(&self, from: Offset, budget: &Budget) -> Result<Arc<SegmentData>> {
        match &self.location {
            Location::Remote(RemoteCopy {
                tier: Some(tier),
                info,
            }) => tier.tier().cache().read_from(tier, info, from, budget),
            _ => self.data(),
        }
    }

    /// The first record that arrived at or after `t` (see [`SegmentData::seek_time`]); a
    /// segment only remote is searched through range reads guided by its index's times.
    pub(crate) fn seek_time(&self, t: i64) -> Result<std::result::Result<Offset, Offset>> {
        match &self.location {
            Location::Remote(RemoteCopy {
                tier: Some(tier),
                info,
            }) => tier.tier().cache().seek_time(tier, info, t),
            _ => self.data()?.seek_time(t),
        }
    }

    /// Starts downloading this segment in the background if it is only remote (a sequential
    /// reader is about to need it).
    pub(crate) fn read_ahead(&self) {
        if let Location::Remote(RemoteCopy {
            tier: Some(tier),
            info,
        }) = &self.location
        {
            tier.tier().cache().read_ahead(tier, info);
        }
    }

    /// The segment's remote copy `copy`, through the tier's cache.
    fn remote_data(&self, copy: &RemoteCopy) -> Result<Arc<SegmentData>> {
        match &copy.tier {
            Some(tier) => tier.tier().cache().load(tier, &copy.info),
            None => Err(Error::invalid(
                "tier",
                format!(
                    "segment {} is only in the object store, and this shard was opened without tiering",
                    self.path().display()
                ),
            )),
        }
    }

    /// Its seal, without downloading a segment that is only remote (`None`: the active
    /// segment).
    pub(crate) fn seal_info(&self) -> Result<Option<SealInfo>> {
        match &self.location {
            Location::Remote(copy) => Ok(Some(copy.seal_info())),
            Location::Local | Location::Both(_) => Ok(self.data()?.seal_info()),
        }
    }
}

impl RemoteCopy {
    /// The seal as recorded at upload.
    pub(crate) fn seal_info(&self) -> SealInfo {
        let info = &self.info;
        SealInfo {
            end_offset: Offset::new(info.end),
            data_end: (info.bytes as usize).saturating_sub(crate::log::format::FOOTER_LEN),
            last_arrival_ms: info.last_arrival_ms,
            lost_after: info.lost_after,
        }
    }
}
