//! One segment file: its readable view (shared by readers), the writer of the active segment,
//! and the scan that verifies frames and recovers a torn tail.
//!
//! A segment is `header | frames… | (footer, once sealed)`; see `format` for the bytes. Readers see
//! a segment through [`SegmentData`], whose bytes are either a memory map (the writer's own process)
//! or an owned snapshot (a read-only open of a segment another process may still be writing).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::faults;
use crate::format::{
    batch_record_len, decode_batch, encode_batch, file_name, peek_batch, varint_len, BatchHead,
    DecodeError, FrameError, IndexEntry, Layout, RecordRef, SegmentFooter, SegmentHeader,
    BATCH_OVERHEAD, FOOTER_LEN, FORMAT_VERSION, INDEX_ENTRY_LEN, INDEX_EXT, INDEX_HEADER_LEN,
    SEGMENT_EXT, SEGMENT_HEADER_LEN,
};
use crate::index::{self, IndexFile, SparseIndex};
use crate::io::sync_dir;
use crate::mmap::{MapWriter, SharedMap};
use crate::types::{NewRecord, Offset, ReadLimits, Record};

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
}

/// How far one read may still go.
#[derive(Debug)]
pub(crate) struct Budget {
    records: usize,
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
        Error::corrupt(&self.path, position as u64, reason)
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
}

impl Segment {
    /// A sealed segment that is loaded (mapped, index read) only when first used.
    pub(crate) fn lazy(dir: &Path, base: Offset, read_only: bool) -> Segment {
        Segment {
            base,
            dir: dir.to_path_buf(),
            read_only,
            data: Mutex::new(None),
        }
    }

    /// A segment whose data is already at hand (the active one, or a read-only snapshot).
    pub(crate) fn loaded(dir: &Path, data: Arc<SegmentData>, read_only: bool) -> Segment {
        Segment {
            base: data.base,
            dir: dir.to_path_buf(),
            read_only,
            data: Mutex::new(Some(data)),
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

    /// The segment's data, loading and verifying a sealed segment on first use.
    pub(crate) fn data(&self) -> Result<Arc<SegmentData>> {
        let mut slot = self.data.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(data) = slot.as_ref() {
            return Ok(Arc::clone(data));
        }
        let data = Arc::new(load_sealed(&self.dir, self.base, self.read_only)?);
        *slot = Some(Arc::clone(&data));
        Ok(data)
    }
}

/// What a scan of frames found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub end: usize,
    pub next_offset: Offset,
    pub last_arrival_ms: Option<i64>,
    /// Why the scan stopped before a clean end (zero length or end of bytes), if it did.
    pub corrupt: Option<&'static str>,
}

/// Verifies batches from `(pos, offset)` on (CRC, every record's fields, offset sequence,
/// non-decreasing arrival time) and extends `entries` with the index entries the batches call for.
pub(crate) fn scan(
    bytes: &[u8],
    base: Offset,
    layout: Layout,
    (mut pos, mut offset): (usize, Offset),
    entries: &mut SparseIndex,
) -> Scan {
    let mut last_arrival_ms = None;
    let corrupt = loop {
        let batch = match decode_batch(bytes, pos, layout) {
            Ok(b) => b,
            Err(FrameError::End) => break None,
            Err(FrameError::Corrupt(reason)) => break Some(reason),
        };
        let head = batch.head;
        if head.base_offset != offset {
            break Some("offset out of sequence");
        }
        if last_arrival_ms.is_some_and(|t| head.first_arrival_ms < t) {
            break Some("arrival time went backwards");
        }
        if let Err(e) = batch.check() {
            break Some(match e {
                FrameError::Corrupt(reason) => reason,
                FrameError::End => "records end early",
            });
        }
        if index::entry_due(layout, entries.last(), pos) {
            entries.push(index_entry(base, offset, pos, head.first_arrival_ms));
        }
        last_arrival_ms = Some(head.last_arrival_ms);
        pos += head.len;
        offset = head.end_offset();
    };
    Scan {
        end: pos,
        next_offset: offset,
        last_arrival_ms,
        corrupt,
    }
}

/// Whether a batch at `pos` verifies and could follow: offsets from `expected` up to below
/// `limit`, arrival times no earlier than `last_arrival`.
pub(crate) fn good_batch_at(
    bytes: &[u8],
    pos: usize,
    layout: Layout,
    expected: Offset,
    limit: Offset,
    last_arrival: i64,
) -> bool {
    match peek_batch(bytes, pos, layout) {
        Ok(head)
            if head.base_offset >= expected
                && head.end_offset() <= limit
                && head.first_arrival_ms >= last_arrival =>
        {
            decode_batch(bytes, pos, layout).is_ok_and(|b| b.check().is_ok())
        }
        _ => false,
    }
}

/// The most offsets `len` bytes of records of `layout` can hold, past `expected`: what a search
/// for intact records after damage may accept.
pub(crate) fn offset_limit(expected: Offset, len: usize, layout: Layout) -> Offset {
    Offset::new(
        expected
            .get()
            .saturating_add((len / layout.min_record_len()) as u64 + 1),
    )
}

/// The position of the first batch at or after `from` that verifies and could follow a
/// segment's good batches (offsets from `expected`, arrival no earlier than `last_arrival`), if
/// any: a batch after a tail that stopped verifying means damage followed by intact records,
/// which a cut would lose (and whose offsets it would hand out again).
pub(crate) fn intact_batch_after(
    bytes: &[u8],
    from: usize,
    layout: Layout,
    expected: Offset,
    last_arrival: Option<i64>,
) -> Option<usize> {
    let limit = offset_limit(expected, bytes.len(), layout);
    let last_arrival = last_arrival.unwrap_or(i64::MIN);
    (from..bytes.len()).find(|&p| good_batch_at(bytes, p, layout, expected, limit, last_arrival))
}

/// The index entry for the batch starting with `offset` at byte `pos`. Segments are at most 2 GiB
/// plus one batch, so relative offsets and positions fit in 32 bits.
fn index_entry(base: Offset, offset: Offset, pos: usize, arrival_ms: i64) -> IndexEntry {
    IndexEntry {
        relative_offset: (offset.get() - base.get()) as u32,
        position: pos as u32,
        max_arrival_ms: arrival_ms,
    }
}

/// Drops index entries that do not point at a valid batch of `bytes`, from the end back, and
/// returns where a scan should resume: the batch of the last good entry (which the scan
/// re-verifies and indexes again), or the first batch.
fn trust_index(
    bytes: &[u8],
    base: Offset,
    layout: Layout,
    entries: &mut SparseIndex,
) -> (usize, Offset) {
    while let Some(last) = entries.pop() {
        let offset = Offset::new(base.get() + u64::from(last.relative_offset));
        match decode_batch(bytes, last.position as usize, layout) {
            Ok(b)
                if b.head.base_offset == offset
                    && b.head.first_arrival_ms == last.max_arrival_ms =>
            {
                return (last.position as usize, offset);
            }
            _ => {}
        }
    }
    (SEGMENT_HEADER_LEN, base)
}

/// Where the data of `file` (`len` bytes) ends at or after `from`: the end of its last data
/// region, skipping holes and the unwritten (preallocated) extents that read as zeros, so a
/// recovery need not read them. `len` where the filesystem cannot say (no `SEEK_DATA`).
fn data_end(file: &File, from: usize, len: usize) -> usize {
    use rustix::fs::{seek, SeekFrom};
    let mut end = from.min(len);
    let mut at = from as u64;
    while (at as usize) < len {
        let data = match seek(file, SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return len,
        };
        if data as usize >= len {
            break;
        }
        match seek(file, SeekFrom::Hole(data)) {
            Ok(hole) => {
                end = (hole as usize).min(len);
                at = hole;
            }
            Err(_) => return len,
        }
    }
    end
}

fn header_error(path: &Path, e: DecodeError) -> Error {
    match e {
        DecodeError::Version(found) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: crate::format::FORMAT_VERSION,
        },
        other => Error::corrupt(path, 0, format!("segment header: {other}")),
    }
}

fn check_header(path: &Path, bytes: &[u8], base: Offset) -> Result<SegmentHeader> {
    let header = SegmentHeader::decode(bytes).map_err(|e| header_error(path, e))?;
    if header.base_offset != base {
        return Err(Error::corrupt(
            path,
            0,
            format!(
                "header says base offset {}, file name says {base}",
                header.base_offset
            ),
        ));
    }
    Ok(header)
}

/// Verifies a segment that takes no more records: checks header and seal, loads the index, scans
/// what the index does not cover. A missing or wrong seal is recorded as damage (the readable part
/// is the verified prefix), except for `snapshot`s of a segment still being written elsewhere.
fn verify_final(
    dir: &Path,
    base: Offset,
    storage: Storage,
    snapshot: bool,
    read_only: bool,
) -> Result<SegmentData> {
    let path = segment_path(dir, base);
    let map = match &storage {
        Storage::Mapped(map) => Some(Arc::clone(map)),
        Storage::Owned(_) => None,
    };
    let all: &[u8] = match &storage {
        Storage::Mapped(map) => map.bytes(),
        Storage::Owned(bytes) => bytes,
    };
    // Only the header, the seal and the batches after the last index entry are read here: no
    // readahead window around each of them (see `SharedMap::advise`).
    if let Some(map) = &map {
        map.advise(memmap2::Advice::Random, 0..all.len());
    }
    let layout = check_header(&path, all, base)?.layout();
    let footer = SegmentFooter::decode_at_end(all).ok();
    let frames_end = footer.map_or(all.len(), |f| f.data_end as usize);
    let frames = &all[..frames_end];

    let idx_path = index_path(dir, base);
    let loaded = index::load(&idx_path, base);
    let mut entries = loaded.clone().unwrap_or_default();
    if let (Some(map), Some(last)) = (&map, entries.last()) {
        map.advise(
            memmap2::Advice::WillNeed,
            last.position as usize..frames_end,
        );
    }
    let start = trust_index(frames, base, layout, &mut entries);
    let scan = scan(frames, base, layout, start, &mut entries);
    if let Some(map) = &map {
        map.advise(memmap2::Advice::Normal, 0..all.len());
    }
    let last_arrival_ms = match (scan.last_arrival_ms, footer) {
        (Some(t), _) => Some(t),
        (None, Some(f)) if f.record_count > 0 => Some(f.last_arrival_ms),
        _ => None,
    };

    let damage = match footer {
        Some(f)
            if scan.end == frames_end && scan.next_offset.get() == base.get() + f.record_count =>
        {
            None
        }
        Some(f) => Some(Damage {
            position: scan.end as u64,
            reason: format!(
                "{}; the seal promises {} records ending at byte {}",
                scan.corrupt.unwrap_or("frames end early"),
                f.record_count,
                f.data_end
            ),
        }),
        None if snapshot => None,
        None => Some(Damage {
            position: scan.end as u64,
            reason: format!(
                "segment is not sealed though a newer one exists ({})",
                scan.corrupt.unwrap_or("frames end")
            ),
        }),
    };
    if !read_only && loaded.as_ref() != Some(&entries) {
        // The sidecar was short or damaged: rewrite it. It is a cache, so a failure to write it
        // costs only a longer scan next time and is not an error.
        let _ = IndexFile::rewrite(&idx_path, base, &entries);
    }
    let data = SegmentData {
        damage,
        ..SegmentData::new(base, layout, path, storage, entries)
    };
    let _ = data.sealed.set(SealInfo {
        end_offset: scan.next_offset,
        data_end: scan.end,
        last_arrival_ms,
        // Only an intact seal vouches for a gap after the segment.
        lost_after: footer
            .filter(|_| data.damage.is_none())
            .map_or(0, |f| f.lost_after),
    });
    Ok(data)
}

/// Maps and verifies a sealed segment (never modifying it, except rewriting a bad index cache when
/// opened for writing).
fn load_sealed(dir: &Path, base: Offset, read_only: bool) -> Result<SegmentData> {
    let path = segment_path(dir, base);
    let file = File::open(&path).map_err(Error::io_at("open segment", &path))?;
    let len = file_len(&file, &path)?;
    let map = SharedMap::map_immutable(&file, len).map_err(Error::io_at("map segment", &path))?;
    verify_final(dir, base, Storage::Mapped(map), false, read_only)
}

/// The newest segment of a shard opened read-only, verified and never modified. Mapped if it is
/// sealed; otherwise another process may still be appending to (or cutting) it, so it is copied
/// and served up to its first torn frame.
pub(crate) fn load_newest_read_only(dir: &Path, base: Offset) -> Result<SegmentData> {
    let path = segment_path(dir, base);
    let mut file = File::open(&path).map_err(Error::io_at("open segment", &path))?;
    let len = file_len(&file, &path)?;
    if read_footer(&file, len as u64).is_some() {
        return load_sealed(dir, base, true);
    }
    let mut bytes = Vec::with_capacity(len);
    file.read_to_end(&mut bytes)
        .map_err(Error::io_at("read segment", &path))?;
    verify_final(dir, base, Storage::Owned(Bytes::from(bytes)), true, true)
}

fn file_len(file: &File, path: &Path) -> Result<usize> {
    let len = file
        .metadata()
        .map_err(Error::io_at("stat segment", path))?
        .len();
    let len = usize::try_from(len).map_err(|_| Error::corrupt(path, 0, "file too large"))?;
    if len < SEGMENT_HEADER_LEN {
        return Err(Error::corrupt(path, len as u64, "shorter than a header"));
    }
    Ok(len)
}

/// A problem `verify` found in a shard directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Byte position in the file, where one applies.
    pub position: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} at byte {p}: {}", self.path.display(), self.what),
            None => write!(f, "{}: {}", self.path.display(), self.what),
        }
    }
}

/// What a look at one segment file found: its shape, and (for a full verification) every problem.
/// `inspect`, `verify` and `repair` are built on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// Its base offset (from the file name).
    pub base: Offset,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Format version in its header (0 if the header is unreadable).
    pub version: u16,
    /// Whether it carries a valid footer (takes no more records).
    pub sealed: bool,
    /// Records in it: those that verified, or (summary of a sealed segment) the seal's count.
    pub records: u64,
    /// Arrival time of its first and last record, ms since the Unix epoch.
    pub first_arrival_ms: Option<i64>,
    /// See `first_arrival_ms`.
    pub last_arrival_ms: Option<i64>,
    /// Offsets the seal records as lost after this segment (set by `repair`).
    pub lost_after: u64,
    /// Entries in its index file (0 if the file is missing or its header is bad).
    pub index_entries: u64,
    /// Everything found wrong; empty when clean.
    pub problems: Vec<Problem>,
}

impl SegmentReport {
    /// The report of a segment file of `file_bytes` bytes before its frames are looked at.
    fn unread(dir: &Path, base: Offset, file_bytes: u64) -> SegmentReport {
        SegmentReport {
            path: segment_path(dir, base),
            base,
            file_bytes,
            version: 0,
            sealed: false,
            records: 0,
            first_arrival_ms: None,
            last_arrival_ms: None,
            lost_after: 0,
            index_entries: index_entries_in(&index_path(dir, base)),
            problems: Vec::new(),
        }
    }

    /// One past the offset of its last record.
    pub fn end_offset(&self) -> Offset {
        Offset::new(self.base.get().saturating_add(self.records))
    }
}

/// Entries an index file of `len` bytes holds (whole entries after the header).
fn index_entries_in(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| {
        m.len().saturating_sub(INDEX_HEADER_LEN as u64) / INDEX_ENTRY_LEN as u64
    })
}

/// The shape of a segment from its header, footer and index file size alone, without reading its
/// frames, except for an unsealed segment, whose frames are scanned to count them. Problems found
/// on the way (a bad header) are reported; the frames are not verified.
pub(crate) fn summarize_segment(dir: &Path, base: Offset) -> Result<SegmentReport> {
    let path = segment_path(dir, base);
    let file = File::open(&path).map_err(Error::io_at("open segment", &path))?;
    let file_bytes = file
        .metadata()
        .map_err(Error::io_at("stat segment", &path))?
        .len();
    let mut report = SegmentReport::unread(dir, base, file_bytes);
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let header = file
        .read_exact_at(&mut head, 0)
        .map_err(|_| Error::corrupt(&path, file_bytes, "shorter than a header"))
        .and_then(|()| check_header(&path, &head, base));
    let header = match header {
        Ok(header) => header,
        Err(e) => {
            report.problems.push(Problem {
                path,
                position: Some(0),
                what: e.to_string(),
            });
            return Ok(report);
        }
    };
    report.version = header.version;
    if let Some(f) = read_footer(&file, file_bytes) {
        let known = |t: i64| Some(t).filter(|_| f.record_count > 0);
        return Ok(SegmentReport {
            sealed: true,
            records: f.record_count,
            first_arrival_ms: known(f.first_arrival_ms),
            last_arrival_ms: known(f.last_arrival_ms),
            lost_after: f.lost_after,
            ..report
        });
    }
    drop(file);
    let bytes = std::fs::read(&path).map_err(Error::io_at("read segment", &path))?;
    let mut entries = SparseIndex::default();
    let scanned = scan(
        &bytes,
        base,
        header.layout(),
        (SEGMENT_HEADER_LEN, base),
        &mut entries,
    );
    Ok(SegmentReport {
        records: scanned.next_offset.get() - base.get(),
        first_arrival_ms: entries.first().map(|e| e.max_arrival_ms),
        last_arrival_ms: scanned.last_arrival_ms,
        ..report
    })
}

/// Reads a whole segment and its index file, checking every frame's CRC and offset, the seal
/// against the frames, and every index entry against the frame it points to. `next_base` is the
/// base offset of the next segment (`None` for the newest). Changes nothing.
pub(crate) fn verify_segment(
    dir: &Path,
    base: Offset,
    next_base: Option<Offset>,
) -> Result<SegmentReport> {
    let path = segment_path(dir, base);
    let problem = |position: Option<u64>, what: String| Problem {
        path: path.clone(),
        position,
        what,
    };
    let idx_path = index_path(dir, base);
    let bytes = std::fs::read(&path).map_err(Error::io_at("read segment", &path))?;
    let mut report = SegmentReport::unread(dir, base, bytes.len() as u64);
    let header = match check_header(&path, &bytes, base) {
        Ok(header) => header,
        Err(e) => {
            report.problems.push(problem(Some(0), e.to_string()));
            return Ok(report);
        }
    };
    report.version = header.version;
    let mut problems = Vec::new();
    let footer = SegmentFooter::decode_at_end(&bytes).ok();
    if footer.is_none() && next_base.is_some() {
        problems.push(problem(
            None,
            "not sealed, though a newer segment follows".into(),
        ));
    }
    let frames_end = footer.map_or(bytes.len(), |f| f.data_end as usize);
    let mut rebuilt = SparseIndex::default();
    let scanned = scan(
        &bytes[..frames_end],
        base,
        header.layout(),
        (SEGMENT_HEADER_LEN, base),
        &mut rebuilt,
    );
    let (pos, offset) = (scanned.end, scanned.next_offset);
    let stop = scanned.corrupt;
    let damaged = stop.is_some();
    match (stop, footer) {
        (Some(reason), _) => problems.push(problem(
            Some(pos as u64),
            format!(
                "{reason}; {} bytes of frames after it are unreadable",
                frames_end - pos
            ),
        )),
        (None, Some(f)) if pos != frames_end || offset.get() - base.get() != f.record_count => {
            problems.push(problem(
                Some(pos as u64),
                format!(
                    "frames end early: the seal promises {} records ending at byte {}",
                    f.record_count, f.data_end
                ),
            ))
        }
        (None, None) if bytes[pos..].iter().any(|&b| b != 0) => problems.push(problem(
            Some(pos as u64),
            "bytes after the last frame (a torn write?)".into(),
        )),
        _ => {}
    }
    let lost_after = footer.map_or(0, |f| f.lost_after);
    // Offsets lost to damage reported above are not reported again.
    if let Some(next) = next_base.filter(|_| !damaged) {
        if offset.get().saturating_add(lost_after) != next.get() {
            let accounted = if lost_after > 0 {
                format!(" (the seal accounts for {lost_after} lost offsets)")
            } else {
                String::new()
            };
            problems.push(problem(
                None,
                format!(
                    "holds offsets up to {offset}{accounted}, but the next segment starts at {next}"
                ),
            ));
        }
    }
    problems.extend(index_problem(
        &idx_path,
        base,
        &rebuilt,
        pos,
        footer.is_some(),
    ));
    Ok(SegmentReport {
        sealed: footer.is_some(),
        records: offset.get() - base.get(),
        first_arrival_ms: rebuilt.first().map(|e| e.max_arrival_ms),
        last_arrival_ms: scanned.last_arrival_ms,
        lost_after,
        problems,
        ..report
    })
}

/// What is wrong with the index file of the segment based at `base`, if anything: `rebuilt` is
/// the index its frames call for, up to `frames_end` where its good frames end (entries past
/// that are not blamed). A sealed segment's index must hold every entry; an active one's may
/// lag behind its frames.
pub(crate) fn index_problem(
    idx_path: &Path,
    base: Offset,
    rebuilt: &SparseIndex,
    frames_end: usize,
    sealed: bool,
) -> Option<Problem> {
    match (std::fs::metadata(idx_path), index::load(idx_path, base)) {
        (Err(_), _) => Some(Problem {
            path: idx_path.to_path_buf(),
            position: None,
            what: "index file missing (it will be rebuilt)".into(),
        }),
        (Ok(_), None) => Some(Problem {
            path: idx_path.to_path_buf(),
            position: Some(0),
            what: "index header is damaged or names another segment".into(),
        }),
        (Ok(meta), Some(entries)) => {
            // An index is determined by its frames, so every stored entry must equal the one the
            // scan rebuilt. Entries past damage reported above cannot be checked, and are not
            // blamed.
            let wrong = entries
                .iter()
                .take_while(|e| (e.position as usize) < frames_end)
                .enumerate()
                .position(|(i, e)| rebuilt.get(i) != Some(e));
            let expected_len = (INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN) as u64;
            if let Some(i) = wrong {
                Some(Problem {
                    path: idx_path.to_path_buf(),
                    position: Some((INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN) as u64),
                    what: format!("entry {i} does not point at the frame it names"),
                })
            } else if meta.len() != expected_len {
                Some(Problem {
                    path: idx_path.to_path_buf(),
                    position: Some(expected_len),
                    what: format!(
                        "{} bytes of damaged entries after entry {}",
                        meta.len() - expected_len,
                        entries.len()
                    ),
                })
            } else if entries.len() < rebuilt.len() && sealed {
                Some(Problem {
                    path: idx_path.to_path_buf(),
                    position: Some(expected_len),
                    what: format!(
                        "holds {} of the segment's {} entries",
                        entries.len(),
                        rebuilt.len()
                    ),
                })
            } else {
                None
            }
        }
    }
}

/// Where the newest segment of a shard stands after recovery.
pub(crate) enum Tail {
    /// It is sealed (the process died after sealing it, before creating the next one).
    Sealed { end_offset: Offset },
    /// It takes appends.
    Active(ActiveSegment),
    /// Its frames stop verifying at `position`, but intact frames follow (at `intact_at`): not a
    /// torn tail. Nothing was changed; the shard repairs it (keeping every intact frame and
    /// recording the lost offsets) rather than cut records that were acknowledged.
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// Where the frames stop verifying.
        position: u64,
        /// Where the next intact frame is.
        intact_at: u64,
        /// What is wrong at `position`.
        reason: &'static str,
    },
}

/// Sizes and policy the writer needs from the shard's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentLimits {
    /// Mapping size: the most a segment file can grow to.
    pub capacity: usize,
    /// Whether creating and sealing segments fsyncs (off for `FlushPolicy::Never`).
    pub sync: bool,
    /// Whether small appends store frames straight into the map (`FlushPolicy::Never`); large
    /// appends, and all appends under the durable policies, are written with pwrite. Under the
    /// durable policies because fdatasync of pages dirtied through a map measured 3-4x slower
    /// (0.55 ms vs 0.14-0.18 ms for 72 KB): writeback must write-protect every such page and the
    /// next store faults it back in.
    pub map_small_appends: bool,
    /// Batches take records until they would grow past this many bytes (`ShardOptions::batch_bytes`).
    pub batch_bytes: usize,
}

/// The segment that takes appends, owned by the shard's writer.
pub(crate) struct ActiveSegment {
    data: Arc<SegmentData>,
    writer: MapWriter,
    index_file: IndexFile,
    end: usize,
    next_offset: Offset,
    last_arrival_ms: Option<i64>,
    created_ms: i64,
    arrival_floor_ms: i64,
    map_small_appends: bool,
    /// See [`SegmentLimits::batch_bytes`].
    batch_bytes: usize,
    /// Whether the shard's policy syncs (see [`ActiveSegment::mark_durable`]).
    sync: bool,
    /// Bytes known to be on disk (fsynced). Under a syncing policy, index entries reach the index
    /// file only for frames below this: an entry written before its frames are durable could
    /// survive a power cut that its frames, or frames before them, do not, and recovery would
    /// trust it past a hole.
    durable_end: usize,
    /// Batches of one append, encoded here first when they are written with pwrite.
    scratch: Vec<u8>,
    /// Whether it was sealed (its file then ends with the footer, which a drop must keep).
    sealed: bool,
}

impl ActiveSegment {
    /// Creates the segment file for `base` and writes its header.
    pub(crate) fn create(
        dir: &Path,
        base: Offset,
        now_ms: i64,
        arrival_floor_ms: i64,
        limits: SegmentLimits,
    ) -> Result<ActiveSegment> {
        let path = segment_path(dir, base);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io_at("create segment", &path))?;
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            base_offset: base,
            created_ms: now_ms,
            arrival_floor_ms,
        };
        let created = Self::init(dir, header, file, limits);
        if created.is_err() {
            // Leave no half-made segment behind: the next attempt creates it afresh.
            let _ = crate::io::remove_file("remove half-made segment", &path);
        }
        created
    }

    fn init(
        dir: &Path,
        header: SegmentHeader,
        file: File,
        limits: SegmentLimits,
    ) -> Result<ActiveSegment> {
        let base = header.base_offset;
        let path = segment_path(dir, base);
        let (map, mut writer) =
            SharedMap::map_appendable(Arc::new(file), &path, limits.capacity, 0)
                .map_err(Error::io_at("map segment", &path))?;
        writer
            .grow(INITIAL_ALLOCATION.min(limits.capacity))
            .map_err(Error::io_at("allocate segment", &path))?;
        writer
            .write_at(0, &header.encode())
            .map_err(Error::io_at("write segment header", &path))?;
        writer.publish(SEGMENT_HEADER_LEN);
        let index_file = IndexFile::rewrite(&index_path(dir, base), base, &SparseIndex::default())?;
        if limits.sync {
            faults::sync_data(writer.file(), &path).map_err(Error::io_at("sync segment", &path))?;
            sync_dir(dir)?;
        }
        Ok(ActiveSegment {
            data: Arc::new(SegmentData::new(
                base,
                Layout::CURRENT,
                path,
                Storage::Mapped(map),
                SparseIndex::default(),
            )),
            writer,
            index_file,
            end: SEGMENT_HEADER_LEN,
            next_offset: base,
            last_arrival_ms: None,
            created_ms: header.created_ms,
            arrival_floor_ms: header.arrival_floor_ms,
            map_small_appends: limits.map_small_appends,
            batch_bytes: limits.batch_bytes,
            sync: limits.sync,
            durable_end: SEGMENT_HEADER_LEN,
            scratch: Vec::new(),
            sealed: false,
        })
    }

    /// Opens the newest segment of a shard for appending: verifies its tail from the last index
    /// entry on and cuts the file at the first torn or corrupt frame.
    pub(crate) fn recover(
        dir: &Path,
        base: Offset,
        now_ms: i64,
        limits: SegmentLimits,
    ) -> Result<Tail> {
        let path = segment_path(dir, base);
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io_at("open segment", &path))?;
        let len = file
            .metadata()
            .map_err(Error::io_at("stat segment", &path))?
            .len();
        // A file too short for a header keeps zeros there, and fails the check below.
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let _ = file.read_exact_at(&mut head, 0);
        let header = match check_header(&path, &head, base) {
            Ok(header) => header,
            Err(e) => {
                // A crash while creating the segment leaves a short or zeroed header and no
                // records; anything else is damage that only `repair` may decide about.
                if !is_all_zero(&file, len).map_err(Error::io_at("read segment", &path))? {
                    return Err(e);
                }
                drop(file);
                crate::io::remove_file("remove empty segment", &path)?;
                return Self::create(dir, base, now_ms, i64::MIN, limits).map(Tail::Active);
            }
        };
        if let Some(footer) = read_footer(&file, len) {
            // Offsets lost after the newest segment are never handed out again.
            return Ok(Tail::Sealed {
                end_offset: Offset::new(
                    base.get()
                        .saturating_add(footer.record_count)
                        .saturating_add(footer.lost_after),
                ),
            });
        }
        let layout = header.layout();

        let len = usize::try_from(len).map_err(|_| Error::corrupt(&path, 0, "file too large"))?;
        let capacity = limits.capacity.max(len);
        let (map, mut writer) = SharedMap::map_appendable(Arc::new(file), &path, capacity, 0)
            .map_err(Error::io_at("map segment", &path))?;
        let idx_path = index_path(dir, base);
        let loaded = index::load(&idx_path, base);
        let mut entries = loaded.clone().unwrap_or_default();
        // Only the bytes after the last index entry are scanned, and only up to where data
        // ends: the rest of the file is preallocated, unwritten space that reads as zeros.
        let tail_start = entries
            .last()
            .map_or(SEGMENT_HEADER_LEN, |e| e.position as usize);
        let data_end = data_end(writer.file(), tail_start, len);
        map.advise(memmap2::Advice::Random, 0..capacity);
        map.advise(memmap2::Advice::WillNeed, tail_start..data_end);
        let (scan, cut) = {
            // Nothing is published yet, so the writer's view covers the whole file.
            let content: &[u8] = writer
                .unpublished_mut(0..len)
                .expect("a fresh writer may view its whole file");
            let start = trust_index(content, base, layout, &mut entries);
            let scan = scan(
                &content[..data_end.max(start.0)],
                base,
                layout,
                start,
                &mut entries,
            );
            let content = &content[..data_end.max(scan.end)];
            let rest = &content[scan.end..];
            let cut = rest.iter().rposition(|&b| b != 0).map(|last| last + 1);
            if cut.is_some() {
                // Bytes after the last good frame: a torn write (the last one of a crash) may be
                // cut, but damage followed by intact frames is not a torn tail.
                if let Some(at) = intact_batch_after(
                    content,
                    scan.end,
                    layout,
                    scan.next_offset,
                    scan.last_arrival_ms,
                ) {
                    return Ok(Tail::Damaged {
                        path,
                        position: scan.end as u64,
                        intact_at: at as u64,
                        reason: scan.corrupt.unwrap_or("a zeroed range"),
                    });
                }
            }
            (scan, cut)
        };
        map.advise(memmap2::Advice::Normal, 0..capacity);
        if let Some(torn) = cut {
            tracing::warn!(
                file = %path.display(),
                position = scan.end,
                bytes = torn,
                next_offset = scan.next_offset.get(),
                reason = scan.corrupt.unwrap_or("bytes after the end of frames"),
                "recovery cut a torn tail: no whole record followed it"
            );
        }
        // Cut whatever follows the last good frame (a torn write, or garbage) and allocate fresh,
        // zero-filled space for the next appends.
        writer
            .set_file_len(scan.end)
            .map_err(Error::io_at("cut torn tail", &path))?;
        writer.publish(scan.end);
        writer
            .grow(
                (scan.end + FOOTER_LEN)
                    .max(INITIAL_ALLOCATION)
                    .min(capacity),
            )
            .map_err(Error::io_at("allocate segment", &path))?;
        if limits.sync {
            // What recovery keeps becomes durable before the index may point into it.
            faults::sync_data(writer.file(), &path).map_err(Error::io_at("sync segment", &path))?;
        }
        let index_file = if loaded.as_ref() == Some(&entries) {
            IndexFile::open_for_append(&idx_path, entries.len())?
        } else {
            IndexFile::rewrite(&idx_path, base, &entries)?
        };
        let active = ActiveSegment {
            data: Arc::new(SegmentData::new(
                base,
                layout,
                path,
                Storage::Mapped(map),
                entries,
            )),
            writer,
            index_file,
            end: scan.end,
            next_offset: scan.next_offset,
            last_arrival_ms: scan.last_arrival_ms,
            created_ms: header.created_ms,
            arrival_floor_ms: header.arrival_floor_ms,
            map_small_appends: limits.map_small_appends,
            batch_bytes: limits.batch_bytes,
            sync: limits.sync,
            durable_end: scan.end,
            scratch: Vec::new(),
            sealed: false,
        };
        if layout != Layout::CURRENT {
            // A segment of an older format takes no more records: it is sealed as it is (and read
            // in its own layout), and the shard starts a segment of the current format after it.
            let floor = header.arrival_floor_ms;
            if active.is_empty() {
                drop(active);
                crate::io::remove_file("remove old index", &idx_path)?;
                crate::io::remove_file("remove empty segment", &segment_path(dir, base))?;
                return Self::create(dir, base, now_ms, floor, limits).map(Tail::Active);
            }
            let end_offset = active.next_offset;
            active.seal(now_ms, limits.sync)?;
            return Ok(Tail::Sealed { end_offset });
        }
        Ok(Tail::Active(active))
    }

    pub(crate) fn data(&self) -> &Arc<SegmentData> {
        &self.data
    }

    pub(crate) fn next_offset(&self) -> Offset {
        self.next_offset
    }

    pub(crate) fn last_arrival_ms(&self) -> Option<i64> {
        self.last_arrival_ms
    }

    pub(crate) fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// Arrival times of this segment's records are at least this (see `SegmentHeader`).
    pub(crate) fn arrival_floor_ms(&self) -> i64 {
        self.arrival_floor_ms
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.next_offset == self.data.base
    }

    /// Byte position where the next frame goes.
    pub(crate) fn end(&self) -> usize {
        self.end
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        self.writer.file()
    }

    /// Makes room for `extra` more bytes of frames plus the footer, growing the file in chunks.
    fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = self.end + extra + FOOTER_LEN;
        let allocated = self.writer.writable_end();
        if needed <= allocated {
            return Ok(());
        }
        let capacity = self.writer.capacity();
        if needed > capacity {
            return Err(Error::corrupt(
                &self.data.path,
                self.end as u64,
                format!("internal: {extra} bytes do not fit the {capacity}-byte segment"),
            ));
        }
        let step = allocated.clamp(INITIAL_ALLOCATION, MAX_GROWTH);
        let target = needed
            .max(allocated + step)
            .next_multiple_of(INITIAL_ALLOCATION);
        self.writer
            .grow(target.min(capacity))
            .map_err(Error::io_at("grow segment", &self.data.path))
    }

    /// Writes `records` in batches (see [`plan_batches`]) with arrival time `arrival_ms` and
    /// publishes them. A small append (under [`MAP_APPEND_MAX`] bytes, policy `Never`) is stored
    /// straight into the map, with no system call; any other is written with pwrite from a small,
    /// cache-resident buffer (payloads of [`DIRECT_WRITE_MIN`] bytes and more straight from the
    /// caller's slice), which puts each byte into the page cache once instead of zero-filling the
    /// pages first. The caller has checked that the records fit the segment and passes the
    /// bytes their batches take (`batched_len`, which it computed for that check); space is
    /// allocated before any byte is written, so a full disk leaves nothing behind.
    pub(crate) fn append(
        &mut self,
        records: &[NewRecord<'_>],
        total: usize,
        arrival_ms: i64,
    ) -> Result<()> {
        debug_assert_eq!(total, batched_len(records, self.batch_bytes));
        self.reserve(total)?;
        let base = self.data.base;
        let start = self.end;
        let through_map = self.map_small_appends && total < MAP_APPEND_MAX;
        if through_map {
            self.writer
                .prefill_ahead(start + total, PREFILL_AHEAD)
                .map_err(Error::io_at("write segment", &self.data.path))?;
        }
        let mut pos = start;
        let mut offset = self.next_offset;
        let mut new_entries = Vec::new();
        let mut last_entry = self.data.index().last();
        let mut pending = PwriteBuffer::new(&mut self.scratch, start);
        for (range, len) in plan_batches(records, self.batch_bytes) {
            let batch = &records[range];
            if through_map {
                let dst = self
                    .writer
                    .unpublished_mut(pos..pos + len)
                    .expect("reserve() allocated room for every batch of the append");
                encode_batch(offset, arrival_ms, batch, dst, false);
            } else {
                pending
                    .push(&mut self.writer, offset, arrival_ms, batch, len)
                    .map_err(Error::io_at("write segment", &self.data.path))?;
            }
            if index::entry_due(self.data.layout, last_entry, pos) {
                let e = index_entry(base, offset, pos, arrival_ms);
                new_entries.push(e);
                last_entry = Some(e);
            }
            pos += len;
            offset = Offset::new(offset.get() + batch.len() as u64);
        }
        pending
            .flush(&mut self.writer)
            .map_err(Error::io_at("write segment", &self.data.path))?;
        self.writer.publish(pos);
        self.end = pos;
        self.next_offset = offset;
        self.last_arrival_ms = Some(arrival_ms);
        if !new_entries.is_empty() {
            let mut index = self.data.index.write().unwrap_or_else(|e| e.into_inner());
            index.extend(new_entries);
            let persistable = self.persistable(&index);
            let persisted = self.index_file.persisted();
            let unpersisted_bytes = match (index.get(persisted), persistable.checked_sub(1)) {
                (Some(first), Some(last)) => index.get(last).map_or(0, |last| {
                    (last.position as usize).saturating_sub(first.position as usize)
                }),
                _ => 0,
            };
            if persistable.saturating_sub(persisted) >= INDEX_FLUSH_EVERY
                || unpersisted_bytes >= INDEX_FLUSH_BYTES
            {
                // The records are stored and visible: failing the append now would invite a
                // retry that duplicates them. The index file is a cache; what it misses now is
                // written with the next group, or rebuilt by the next open.
                let _ = self.index_file.append_new(&index, persistable);
            }
        }
        Ok(())
    }

    /// How many index entries may be written to the index file: all of them, or under a syncing
    /// policy those of frames already durable.
    fn persistable(&self, index: &SparseIndex) -> usize {
        if self.sync {
            index.count_before(self.durable_end)
        } else {
            index.len()
        }
    }

    /// Records that every byte below `end` has been fsynced.
    pub(crate) fn mark_durable(&mut self, end: usize) {
        self.durable_end = self.durable_end.max(end.min(self.end));
    }

    /// Seals the segment: writes the footer, cuts the file to its used length, (when `sync`)
    /// makes all of it durable, and completes its index file. Returns the now-immutable data.
    pub(crate) fn seal(mut self, now_ms: i64, sync: bool) -> Result<Arc<SegmentData>> {
        self.reserve(0)?;
        let footer = SegmentFooter {
            record_count: self.next_offset.get() - self.data.base.get(),
            data_end: self.end as u64,
            first_arrival_ms: self
                .data
                .index()
                .first()
                .map_or(i64::MIN, |e| e.max_arrival_ms),
            last_arrival_ms: self.last_arrival_ms.unwrap_or(i64::MIN),
            sealed_ms: now_ms,
            lost_after: 0,
        };
        let end = self.end;
        let path = self.data.path.clone();
        if sync && self.durable_end < end {
            // The seal vouches for the frames (recovery trusts a valid footer without scanning),
            // so the frames must be on disk before it can be: a power cut may keep a later page
            // and lose an earlier one.
            faults::sync_data(self.writer.file(), &path)
                .map_err(Error::io_at("sync segment before sealing", &path))?;
            self.durable_end = end;
        }
        self.writer
            .write_at(end, &footer.encode())
            .map_err(Error::io_at("write footer", &path))?;
        self.writer
            .set_file_len(end + FOOTER_LEN)
            .map_err(Error::io_at("cut sealed segment", &path))?;
        if sync {
            faults::sync_data(self.writer.file(), &path)
                .map_err(Error::io_at("sync sealed segment", &path))?;
        }
        // A cache: if it cannot be completed, a later load rebuilds it from the frames.
        let index = self.data.index();
        let persistable = self.persistable(&index);
        let _ = self.index_file.append_new(&index, persistable);
        drop(index);
        self.sealed = true;
        let _ = self.data.sealed.set(SealInfo {
            end_offset: self.next_offset,
            data_end: end,
            last_arrival_ms: self.last_arrival_ms,
            lost_after: 0,
        });
        Ok(Arc::clone(&self.data))
    }
}

/// Frames on their way to the file by pwrite: gathered in a reused buffer, flushed every
/// [`PWRITE_CHUNK`] bytes; large payloads go from the caller's slice without a copy.
struct PwriteBuffer<'a> {
    buf: &'a mut Vec<u8>,
    /// File position of `buf[0]`.
    at: usize,
}

impl<'a> PwriteBuffer<'a> {
    fn new(buf: &'a mut Vec<u8>, at: usize) -> PwriteBuffer<'a> {
        buf.clear();
        PwriteBuffer { buf, at }
    }

    /// Adds the batch of `records` (`len` bytes, starting with `offset`); a batch of one large
    /// payload is written at once, its payload straight from the caller's slice.
    fn push(
        &mut self,
        writer: &mut MapWriter,
        offset: Offset,
        arrival_ms: i64,
        records: &[NewRecord<'_>],
        len: usize,
    ) -> std::io::Result<()> {
        let from = self.buf.len();
        if let [single] = records {
            if single.data.len() >= DIRECT_WRITE_MIN {
                let head = len - single.data.len();
                self.buf.resize(from + head, 0);
                encode_batch(offset, arrival_ms, records, &mut self.buf[from..], true);
                self.flush(writer)?;
                writer.write_at(self.at, single.data)?;
                self.at += single.data.len();
                return Ok(());
            }
        }
        self.buf.resize(from + len, 0);
        encode_batch(offset, arrival_ms, records, &mut self.buf[from..], false);
        if self.buf.len() >= PWRITE_CHUNK {
            self.flush(writer)?;
        }
        Ok(())
    }

    fn flush(&mut self, writer: &mut MapWriter) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            writer.write_at(self.at, self.buf)?;
            self.at += self.buf.len();
            self.buf.clear();
        }
        Ok(())
    }
}

/// How an append is cut into batches: consecutive runs of records, each run's encoding at most
/// `target` bytes unless a single record is larger, and a payload of
/// [`DIRECT_WRITE_MIN`] bytes or more alone in its batch (so it is written from where it lies).
/// Yields each run's range and its encoded length. The cut of a prefix of `records` is the same
/// as the cut of the whole up to its last run, which [`count_fitting`] relies on.
pub(crate) fn plan_batches<'r>(
    records: &'r [NewRecord<'_>],
    target: usize,
) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> + 'r {
    let mut at = 0;
    std::iter::from_fn(move || {
        let first = records.get(at)?;
        let start = at;
        let mut len = BATCH_OVERHEAD + batch_record_len(first);
        at += 1;
        if first.data.len() < DIRECT_WRITE_MIN {
            while let Some(r) = records.get(at) {
                let r_len = batch_record_len(r);
                if r.data.len() >= DIRECT_WRITE_MIN || len + r_len > target {
                    break;
                }
                len += r_len;
                at += 1;
            }
        }
        Some((start..at, len))
    })
}

/// Bytes `records` take once cut into batches of about `target` bytes.
pub(crate) fn batched_len(records: &[NewRecord<'_>], target: usize) -> usize {
    plan_batches(records, target).map(|(_, len)| len).sum()
}

/// How many leading `records` fit in `room` bytes of batches of about `target` bytes.
pub(crate) fn count_fitting(records: &[NewRecord<'_>], room: usize, target: usize) -> usize {
    let mut used = 0;
    let mut fitting = 0;
    for (range, _) in plan_batches(records, target) {
        used += BATCH_OVERHEAD;
        for r in &records[range] {
            used += batch_record_len(r);
            if used > room {
                return fitting;
            }
            fitting += 1;
        }
    }
    fitting
}

/// The most bytes one record of `key_len` and `data_len` bytes can take, alone in its batch with
/// an explicit hash key.
pub(crate) fn max_batched_len(key_len: usize, data_len: usize) -> usize {
    BATCH_OVERHEAD
        + varint_len((key_len as u64) << 1 | 1)
        + 1
        + varint_len(data_len as u64)
        + 16
        + key_len
        + data_len
}

impl Drop for ActiveSegment {
    fn drop(&mut self) {
        // A clean close leaves a complete index, so the next open scans nothing. Best effort: the
        // index is a cache, and an error here only means a longer scan then.
        let index = self.data.index();
        let persistable = self.persistable(&index);
        let _ = self.index_file.append_new(&index, persistable);
        drop(index);
        if !self.sealed {
            // Give back the space allocated ahead of appends (up to 16 MiB): a closed shard
            // takes only what it holds. Readers never read past the published end, which this
            // keeps; the next open allocates afresh.
            let _ = self.writer.set_file_len(self.end);
        }
    }
}

/// Reads and checks the footer of a file of `len` bytes.
fn read_footer(file: &File, len: u64) -> Option<SegmentFooter> {
    let at = len.checked_sub(FOOTER_LEN as u64)?;
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut footer, at).ok()?;
    SegmentFooter::decode(&footer, at).ok()
}

fn is_all_zero(file: &File, len: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    while at < len {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
