//! The sparse index of one segment: an entry every ~[`Layout::index_interval`] bytes of batches
//! mapping a relative offset to a byte position and the newest arrival time so far.
//!
//! The index is a cache. Its sidecar file is written without fsync and is checked entry by entry
//! (CRC, monotonic fields) when loaded; whatever fails the checks is dropped and rebuilt by scanning
//! the segment, which is the source of truth.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::format::{
    decode_index_header, encode_index_header, IndexEntry, Layout, INDEX_ENTRY_LEN,
    INDEX_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::Offset;

/// A segment's sparse index in memory, stored column-wise: a seek binary-searches the relative
/// offsets (or times) alone, 4 (or 8) bytes an entry, so the search stays in cache instead of
/// touching a 24-byte entry on a new cache line at every step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    relative_offsets: Vec<u32>,
    positions: Vec<u32>,
    max_arrival_ms: Vec<i64>,
}

impl SparseIndex {
    pub(crate) fn len(&self) -> usize {
        self.relative_offsets.len()
    }

    pub(crate) fn get(&self, i: usize) -> Option<IndexEntry> {
        Some(IndexEntry {
            relative_offset: *self.relative_offsets.get(i)?,
            position: self.positions[i],
            max_arrival_ms: self.max_arrival_ms[i],
        })
    }

    pub(crate) fn first(&self) -> Option<IndexEntry> {
        self.get(0)
    }

    pub(crate) fn last(&self) -> Option<IndexEntry> {
        self.get(self.len().checked_sub(1)?)
    }

    pub(crate) fn push(&mut self, e: IndexEntry) {
        self.relative_offsets.push(e.relative_offset);
        self.positions.push(e.position);
        self.max_arrival_ms.push(e.max_arrival_ms);
    }

    pub(crate) fn pop(&mut self) -> Option<IndexEntry> {
        let last = self.last()?;
        self.relative_offsets.pop();
        self.positions.pop();
        self.max_arrival_ms.pop();
        Some(last)
    }

    pub(crate) fn extend(&mut self, entries: impl IntoIterator<Item = IndexEntry>) {
        for e in entries {
            self.push(e);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = IndexEntry> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// How many entries point at frames starting before byte `position`.
    pub(crate) fn count_before(&self, position: usize) -> usize {
        self.positions.partition_point(|&p| (p as usize) < position)
    }

    /// The entry to start scanning from to find relative offset `rel`: the last one at or
    /// before it.
    pub(crate) fn for_offset(&self, rel: u32) -> Option<IndexEntry> {
        let after = self.relative_offsets.partition_point(|&r| r <= rel);
        self.get(after.checked_sub(1)?)
    }

    /// The entry after `entry` (by position), if any.
    pub(crate) fn next_after(&self, entry: IndexEntry) -> Option<IndexEntry> {
        self.get(self.positions.partition_point(|&p| p <= entry.position))
    }

    /// The entry to start scanning from to find the first record that arrived at or after `t`:
    /// the last entry whose time is still before `t`. Relies on arrival times never decreasing.
    pub(crate) fn for_time(&self, t: i64) -> Option<IndexEntry> {
        let after = self.max_arrival_ms.partition_point(|&m| m < t);
        self.get(after.checked_sub(1)?)
    }
}

impl FromIterator<IndexEntry> for SparseIndex {
    fn from_iter<I: IntoIterator<Item = IndexEntry>>(iter: I) -> Self {
        let mut index = SparseIndex::default();
        index.extend(iter);
        index
    }
}

/// Whether the batch at byte `pos` of a segment in `layout` gets an index entry, given the last
/// entry so far: the first batch does, and then the first batch at least the layout's
/// [`Layout::index_interval`] bytes past the last entry.
pub(crate) fn entry_due(layout: Layout, last: Option<IndexEntry>, pos: usize) -> bool {
    last.is_none_or(|e| pos >= e.position as usize + layout.index_interval())
}

/// Whether `next` may follow `prev` in an index (or start one, when `prev` is `None`).
pub(crate) fn follows(prev: Option<&IndexEntry>, next: &IndexEntry) -> bool {
    match prev {
        None => next.relative_offset == 0 && next.position as usize == SEGMENT_HEADER_LEN,
        Some(p) => {
            next.relative_offset > p.relative_offset
                && next.position > p.position
                && next.max_arrival_ms >= p.max_arrival_ms
        }
    }
}

/// Reads the index file of the segment based at `base` and returns its longest valid prefix of
/// entries, or `None` if the file is missing or its header is not this segment's. Damage only ever
/// means fewer entries, never an error.
pub(crate) fn load(path: &Path, base: Offset) -> Option<SparseIndex> {
    parse(&std::fs::read(path).ok()?, base)
}

/// The longest valid prefix of the entries of an index file's bytes, or `None` if its header is
/// not the segment at `base`'s (see [`load`]).
pub(crate) fn parse(bytes: &[u8], base: Offset) -> Option<SparseIndex> {
    if decode_index_header(bytes) != Ok(base) {
        return None;
    }
    let mut entries = SparseIndex::default();
    for chunk in bytes[INDEX_HEADER_LEN..].chunks_exact(INDEX_ENTRY_LEN) {
        match IndexEntry::decode(chunk) {
            Some(e) if follows(entries.last().as_ref(), &e) => entries.push(e),
            _ => break,
        }
    }
    Some(entries)
}

/// The writable sidecar file of the active segment's index. Entries are appended in batches and
/// never fsynced: losing some only means a longer scan at the next open.
#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    file: File,
    persisted: usize,
}

impl IndexFile {
    /// Replaces whatever is at `path` with an index holding `entries`.
    pub(crate) fn rewrite(path: &Path, base: Offset, entries: &SparseIndex) -> Result<IndexFile> {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(Error::io_at("create index", path))?;
        let mut bytes = Vec::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN);
        bytes.extend_from_slice(&encode_index_header(base));
        for e in entries.iter() {
            bytes.extend_from_slice(&e.encode());
        }
        file.write_all(&bytes)
            .map_err(Error::io_at("write index", path))?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            persisted: entries.len(),
        })
    }

    /// Opens an index file that [`load`] found to hold `entries` valid entries, to append to it.
    pub(crate) fn open_for_append(path: &Path, entries: usize) -> Result<IndexFile> {
        let file = File::options()
            .write(true)
            .open(path)
            .map_err(Error::io_at("open index", path))?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            persisted: entries,
        })
    }

    /// How many entries the file holds.
    pub(crate) fn persisted(&self) -> usize {
        self.persisted
    }

    /// Writes the first `upto` entries of `all` that the file does not hold yet.
    pub(crate) fn append_new(&mut self, all: &SparseIndex, upto: usize) -> Result<()> {
        let upto = upto.min(all.len());
        if upto <= self.persisted {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity((upto - self.persisted) * INDEX_ENTRY_LEN);
        for e in all.iter().take(upto).skip(self.persisted) {
            bytes.extend_from_slice(&e.encode());
        }
        let at = INDEX_HEADER_LEN + self.persisted * INDEX_ENTRY_LEN;
        self.file
            .write_all_at(&bytes, at as u64)
            .map_err(Error::io_at("write index", &self.path))?;
        self.persisted = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: usize, t: i64) -> IndexEntry {
        IndexEntry {
            relative_offset: rel,
            position: pos as u32,
            max_arrival_ms: t,
        }
    }

    fn sample() -> SparseIndex {
        SparseIndex::from_iter([
            entry(0, SEGMENT_HEADER_LEN, 10),
            entry(40, 5000, 20),
            entry(90, 9000, 20),
            entry(130, 13000, 35),
        ])
    }

    #[test]
    fn offset_lookup_finds_the_entry_at_or_before() {
        let e = sample();
        assert_eq!(e.for_offset(0).unwrap().relative_offset, 0);
        assert_eq!(e.for_offset(39).unwrap().relative_offset, 0);
        assert_eq!(e.for_offset(40).unwrap().relative_offset, 40);
        assert_eq!(e.for_offset(1000).unwrap().relative_offset, 130);
        assert_eq!(e.for_offset(1000).unwrap().position, 13000);
        assert_eq!(SparseIndex::default().for_offset(5), None);
    }

    #[test]
    fn the_next_entry_follows_by_position() {
        let index = sample();
        let first = index.first().unwrap();
        assert_eq!(index.next_after(first), index.get(1));
        assert_eq!(index.next_after(index.last().unwrap()), None);
    }

    #[test]
    fn time_lookup_starts_before_the_first_match() {
        let e = sample();
        assert_eq!(
            e.for_time(5),
            None,
            "before everything: scan from the start"
        );
        assert_eq!(e.for_time(10), None);
        assert_eq!(e.for_time(11).unwrap().relative_offset, 0);
        // Two entries share time 20: the first record at 20 may be before entry 40.
        assert_eq!(e.for_time(20).unwrap().relative_offset, 0);
        assert_eq!(e.for_time(21).unwrap().relative_offset, 90);
        assert_eq!(e.for_time(99).unwrap().relative_offset, 130);
    }

    #[test]
    fn file_round_trips_and_damage_truncates_to_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.idx");
        let base = Offset::new(1000);
        let entries = sample();
        let first_two: SparseIndex = entries.iter().take(2).collect();
        let mut f = IndexFile::rewrite(&path, base, &first_two).unwrap();
        f.append_new(&entries, entries.len()).unwrap();
        assert_eq!(f.persisted(), 4);
        assert_eq!(load(&path, base), Some(entries.clone()));
        assert_eq!(load(&path, Offset::new(999)), None, "foreign base");

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[INDEX_HEADER_LEN + 2 * INDEX_ENTRY_LEN + 3] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(&path, base).unwrap(), first_two);

        bytes.truncate(INDEX_HEADER_LEN + INDEX_ENTRY_LEN + 5);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(&path, base).unwrap().len(), 1);
        assert_eq!(load(&dir.path().join("missing.idx"), base), None);
    }

    #[test]
    fn non_monotonic_entries_are_rejected() {
        let e: Vec<IndexEntry> = sample().iter().collect();
        assert!(follows(None, &e[0]));
        assert!(!follows(None, &e[1]));
        assert!(follows(Some(&e[0]), &e[1]));
        assert!(!follows(Some(&e[1]), &e[0]));
        assert!(
            !follows(Some(&e[3]), &entry(131, 14000, 34)),
            "time went back"
        );
    }
}
