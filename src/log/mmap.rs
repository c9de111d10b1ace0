//! The one module allowed to use `unsafe`: shared memory maps of segment files.
//!
//! A [`SharedMap`] is a mapping that many readers hold through an `Arc`; at most one [`MapWriter`]
//! exists for it. Soundness rests on four invariants, each enforced here rather than by callers:
//!
//! 1. **Published bytes are frozen.** Bytes `[0, published)` are fully written and never written
//!    again while the map lives. Readers only ever form `&[u8]` over that range.
//! 2. **The writer writes only unpublished bytes.** [`MapWriter::unpublished_mut`] hands out
//!    `&mut [u8]` only for `[published, writable_end)`, and there is exactly one writer (it is
//!    created with the map and is not `Clone`), so no two references ever alias mutably.
//! 3. **No access past the end of the file.** The mapping may be longer than the file (the active
//!    segment reserves address space for its full size and grows the file in chunks), and touching
//!    a page past the end of the file raises SIGBUS. `writable_end` only grows after the file has been
//!    extended ([`MapWriter::grow`]), `published <= writable_end`, and truncation
//!    ([`MapWriter::truncate_file`]) never goes below `published`.
//! 4. **Nobody else modifies the file.** Segment files are written only through this writer, by the
//!    one process holding the directory lock; sealed files are never modified again (they are only
//!    unlinked, which leaves an existing mapping intact). A process that ignores the lock and
//!    rewrites or truncates a mapped file can make readers see changing bytes or fault: that is the
//!    usual mmap caveat, and read-only opens of a live directory avoid it by copying the
//!    still-growing active segment instead of mapping it.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::faults;

/// Zero-fills are written in pieces of this size, aligned to it: the page cache then holds the
/// range in large folios. Measured on the dev VM (A/B, same benchmark): 2 MiB pieces made random
/// reads faster (1.92 vs 2.15 µs a seek) but appends slower and erratic (9.4 vs 11.6 M records/s,
/// samples from 8.6 to 11.5: 2 MiB folios need contiguous memory, which the kernel may have to
/// compact); 512 KiB gave the best appends (12.3-12.5 M/s) with seeks at 2.2 µs.
const ZERO_CHUNK: usize = 512 * 1024;

/// A memory map of a segment file whose first `published` bytes are immutable and readable.
pub(crate) struct SharedMap {
    raw: MmapRaw,
    published: AtomicUsize,
}

impl std::fmt::Debug for SharedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap")
            .field("capacity", &self.raw.len())
            .field("published", &self.published())
            .finish()
    }
}

impl SharedMap {
    /// Maps the first `len` bytes of a file that is never modified again (a sealed segment).
    /// The file must be at least `len` bytes long; this is checked.
    pub(crate) fn map_immutable(file: &File, len: usize) -> io::Result<Arc<SharedMap>> {
        let file_len = file.metadata()?.len();
        if (file_len as u128) < len as u128 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file is {file_len} bytes, cannot map {len}"),
            ));
        }
        let raw = MmapOptions::new().len(len.max(1)).map_raw_read_only(file)?;
        Ok(Arc::new(SharedMap {
            raw,
            published: AtomicUsize::new(len),
        }))
    }

    /// Maps `capacity` bytes of a writable file for appending. The first `published` bytes (already
    /// valid content) become readable; the writer may write from there up to the current length of
    /// the file and [`MapWriter::grow`] the file further, up to `capacity`.
    pub(crate) fn map_appendable(
        file: Arc<File>,
        path: &Path,
        capacity: usize,
        published: usize,
    ) -> io::Result<(Arc<SharedMap>, MapWriter)> {
        let file_len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        if published > file_len || published > capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot publish {published} bytes of a {file_len}-byte file"),
            ));
        }
        let raw = MmapOptions::new().len(capacity).map_raw(&*file)?;
        let map = Arc::new(SharedMap {
            raw,
            published: AtomicUsize::new(published),
        });
        let writable_end = file_len.min(capacity);
        let writer = MapWriter {
            map: Arc::clone(&map),
            file,
            path: path.to_path_buf(),
            writable_end,
            prefilled_end: published,
        };
        Ok((map, writer))
    }

    /// How many bytes from the start are published (complete and immutable).
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Tells the kernel how `range` of the map will be read. Advice only: a failure changes
    /// nothing, so it is ignored. Recovery scans a segment's tail under `Random` with `WillNeed` of
    /// exactly the bytes it scans, instead of faulting in whole readahead windows (8 MiB around
    /// each fault on a disk with `read_ahead_kb` 8192), then restores `Normal` for readers.
    pub(crate) fn advise(&self, advice: memmap2::Advice, range: Range<usize>) {
        let end = range.end.min(self.raw.len());
        if range.start < end {
            let _ = self
                .raw
                .advise_range(advice, range.start, end - range.start);
        }
    }

    /// The published bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        let len = self.published();
        // SAFETY: invariant 1: [0, published) is initialised file content that no one writes while
        // the map lives, and invariant 3: it lies within the file, so no SIGBUS. The Acquire load of
        // `published` pairs with the writer's Release store, so the bytes written before
        // publication are visible. The slice borrows `self`, which keeps the mapping alive.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), len) }
    }
}

/// The unique handle that appends into a [`SharedMap`] and grows its file.
pub(crate) struct MapWriter {
    map: Arc<SharedMap>,
    file: Arc<File>,
    /// Where `file` is (for the fault-injection seams, which are keyed by path).
    path: PathBuf,
    writable_end: usize,
    /// Bytes below this are in the page cache as initialized pages (written, or zero-filled),
    /// so storing into them through the map faults cheaply. Never above `writable_end`.
    prefilled_end: usize,
}

impl MapWriter {
    /// The file behind the map.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Bytes that exist in the file and may be written (the allocated length).
    pub(crate) fn writable_end(&self) -> usize {
        self.writable_end
    }

    /// The mapping's size: the most the file may grow to.
    pub(crate) fn capacity(&self) -> usize {
        self.map.raw.len()
    }

    /// Extends the file to `new_end` bytes with blocks reserved by `fallocate`, so a full disk
    /// is an error here and never a SIGBUS on a later write into the map.
    pub(crate) fn grow(&mut self, new_end: usize) -> io::Result<()> {
        if new_end > self.capacity() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot grow past the {}-byte mapping", self.capacity()),
            ));
        }
        if new_end <= self.writable_end {
            return Ok(());
        }
        let start = self.writable_end as u64;
        let len = (new_end - self.writable_end) as u64;
        // Not fs2's `allocate`: it reads errno after posix_fallocate, which returns its error
        // instead of setting errno, so a full disk came back as "Success".
        match faults::allocate(&self.file, &self.path, start, len) {
            Ok(()) => {}
            // A filesystem without fallocate: writing the range allocates it (and reports a
            // full disk).
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
                let from = self.prefilled_end.max(self.writable_end);
                self.zero_fill(from, new_end)?;
            }
            Err(e) => return Err(e),
        }
        self.writable_end = new_end;
        Ok(())
    }

    /// Makes sure bytes up to `needed` are initialized pages in the page cache: when they are not,
    /// writes zeros from where nothing was written yet to `ahead` bytes past `needed` (within the
    /// allocation), in aligned writes of `ZERO_CHUNK` (large folios), so this happens once a
    /// chunk, not once an append. Stores through the map into pages that are not there fault into the filesystem,
    /// which zero-fills whole readahead windows of the unwritten extent: measured at 71% of append
    /// time on ext4, against the cost of this one write. `MADV_POPULATE_WRITE` over the same range
    /// instead of the write was tried (2026-12-05): `put_records` 19% slower.
    pub(crate) fn prefill_ahead(&mut self, needed: usize, ahead: usize) -> io::Result<()> {
        if needed <= self.prefilled_end {
            return Ok(());
        }
        // End on a chunk boundary, so every fill after the first is one aligned chunk and the
        // page cache can hold the range in large folios.
        let upto = needed
            .saturating_add(ahead)
            .next_multiple_of(ZERO_CHUNK)
            .min(self.writable_end);
        self.zero_fill(self.prefilled_end, upto)?;
        self.prefilled_end = upto;
        Ok(())
    }

    fn zero_fill(&self, from: usize, to: usize) -> io::Result<()> {
        static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
        // Published bytes are frozen (invariant 1), whatever a caller's bookkeeping says.
        let mut at = from.max(self.map.published());
        while at < to {
            // Up to the next chunk boundary, so later pieces are aligned.
            let n = (to - at).min(ZERO_CHUNK - at % ZERO_CHUNK);
            faults::write_all_at(&self.file, &self.path, &ZEROS[..n], at as u64)?;
            at += n;
        }
        Ok(())
    }

    /// Writes `bytes` at `pos` through the file (pwrite) instead of the map. Like
    /// [`MapWriter::unpublished_mut`], it refuses published bytes and bytes past the allocated end.
    pub(crate) fn write_at(&mut self, pos: usize, bytes: &[u8]) -> io::Result<()> {
        let end = pos.checked_add(bytes.len());
        if pos < self.map.published() || end.is_none_or(|e| e > self.writable_end) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write of {} bytes at {pos} outside the unpublished range",
                    bytes.len()
                ),
            ));
        }
        faults::write_all_at(&self.file, &self.path, bytes, pos as u64)?;
        if pos <= self.prefilled_end {
            self.prefilled_end = self.prefilled_end.max(pos + bytes.len());
        }
        Ok(())
    }

    /// A mutable view of not-yet-published bytes, or `None` if `range` reaches into published bytes
    /// or past the allocated end.
    pub(crate) fn unpublished_mut(&mut self, range: Range<usize>) -> Option<&mut [u8]> {
        let published = self.map.published();
        if range.start < published || range.end > self.writable_end || range.start > range.end {
            return None;
        }
        // SAFETY: invariant 2: the range lies at or after `published`, where no reader forms a
        // reference, and this writer is the only one (it is unique and borrowed mutably for the
        // lifetime of the slice). Invariant 3: it ends within the allocated file, so no SIGBUS.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.map.raw.as_mut_ptr().add(range.start),
                range.end - range.start,
            )
        })
    }

    /// Makes bytes `[0, end)` visible to readers. They must not be written again.
    ///
    /// # Panics
    /// If `end` goes backwards or past the allocated end: a writer bug, never caused by data.
    pub(crate) fn publish(&mut self, end: usize) {
        let published = self.map.published();
        assert!(
            end >= published && end <= self.writable_end,
            "publish({end}) outside [{published}, {}]",
            self.writable_end
        );
        self.map.published.store(end, Ordering::Release);
        // Published bytes are initialized pages; only what lies beyond may need zero-filling.
        self.prefilled_end = self.prefilled_end.max(end);
    }

    /// Sets the file's length to `len`, which must not cut published bytes. Shrinking drops
    /// whatever lay past `len` (a torn tail, unused preallocation); a later [`MapWriter::grow`]
    /// brings back zero-filled space.
    pub(crate) fn set_file_len(&mut self, len: usize) -> io::Result<()> {
        if len < self.map.published() || len > self.capacity() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot set length {len}: below published bytes or past the mapping"),
            ));
        }
        // Lower the bounds before shrinking, so no write can land past the new end.
        self.writable_end = self.writable_end.min(len);
        self.prefilled_end = self.prefilled_end.min(len);
        faults::set_len(&self.file, &self.path, len as u64)?;
        self.writable_end = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_cannot_touch_published_or_unallocated_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let (map, mut w) = SharedMap::map_appendable(Arc::new(file), &path, 1 << 20, 0).unwrap();
        assert_eq!(w.writable_end(), 0);
        assert!(w.unpublished_mut(0..1).is_none(), "nothing allocated yet");
        w.grow(8192).unwrap();
        w.prefill_ahead(5, 1 << 20).unwrap();
        w.unpublished_mut(0..5).unwrap().copy_from_slice(b"hello");
        assert!(map.bytes().is_empty(), "unpublished bytes are invisible");
        w.publish(5);
        assert_eq!(map.bytes(), b"hello");
        assert!(
            w.unpublished_mut(4..6).is_none(),
            "published bytes are frozen"
        );
        assert!(w.unpublished_mut(5..8193).is_none(), "past the allocation");
        assert!(w.grow(2 << 20).is_err(), "past the mapping");
        assert!(
            w.write_at(3, b"xy").is_err(),
            "published bytes are frozen for pwrite too"
        );
        assert!(w.write_at(8190, b"xyz").is_err(), "past the allocation");
        w.write_at(5, b"!!").unwrap();
        w.publish(7);
        assert_eq!(map.bytes(), b"hello!!");
        // Zero-filling never touches published bytes, even asked to start below them.
        w.zero_fill(0, 8).unwrap();
        assert_eq!(map.bytes(), b"hello!!");
        assert!(w.set_file_len(6).is_err(), "would cut published bytes");
        w.set_file_len(7).unwrap();
        assert!(w.unpublished_mut(7..8).is_none(), "the file ends at 7 now");
        assert_eq!(map.bytes(), b"hello!!");
    }

    #[test]
    fn immutable_map_refuses_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        assert!(SharedMap::map_immutable(&file, 4).is_err());
        assert_eq!(SharedMap::map_immutable(&file, 3).unwrap().bytes(), b"abc");
    }
}
