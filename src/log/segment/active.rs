//! The active segment: the one writer of a shard's newest segment, which allocates, writes
//! batches (through the map or pwrite), keeps the index, syncs, recovers a torn tail and seals.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::faults;
use crate::io::sync_dir;
use crate::log::format::{
    batch_record_len, encode_batch, varint_len, Layout, SegmentFooter, SegmentHeader,
    BATCH_OVERHEAD, FOOTER_LEN, FORMAT_VERSION, SEGMENT_HEADER_LEN,
};
use crate::log::index::{self, IndexFile, SparseIndex};
use crate::log::mmap::{MapWriter, SharedMap};
use crate::types::{NewRecord, Offset};

use super::scan::{
    check_header, data_end, index_entry, intact_batch_after, is_all_zero, read_footer, scan,
    trust_index,
};
use super::{
    index_path, segment_path, SealInfo, SegmentData, Storage, DIRECT_WRITE_MIN, INDEX_FLUSH_BYTES,
    INDEX_FLUSH_EVERY, INITIAL_ALLOCATION, MAP_APPEND_MAX, MAX_GROWTH, PREFILL_AHEAD, PWRITE_CHUNK,
};

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
pub(super) struct PwriteBuffer<'a> {
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
