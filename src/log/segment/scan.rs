//! The scan that checks batches one after another (CRC, fields, offset sequence, arrival order)
//! and finds where a segment's good data ends: what recovery, verification and repair build on.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log::format::{
    decode_batch, peek_batch, DecodeError, FrameError, IndexEntry, Layout, SegmentFooter,
    SegmentHeader, FOOTER_LEN, SEGMENT_HEADER_LEN,
};
use crate::log::index::{self, SparseIndex};
use crate::types::Offset;

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
pub(super) fn index_entry(base: Offset, offset: Offset, pos: usize, arrival_ms: i64) -> IndexEntry {
    IndexEntry {
        relative_offset: (offset.get() - base.get()) as u32,
        position: pos as u32,
        max_arrival_ms: arrival_ms,
    }
}

/// Drops index entries that do not point at a valid batch of `bytes`, from the end back, and
/// returns where a scan should resume: the batch of the last good entry (which the scan
/// re-verifies and indexes again), or the first batch.
pub(super) fn trust_index(
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
pub(super) fn data_end(file: &File, from: usize, len: usize) -> usize {
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

pub(super) fn header_error(path: &Path, e: DecodeError) -> Error {
    match e {
        DecodeError::Version(found) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: crate::log::format::FORMAT_VERSION,
        },
        other => Error::corrupt(path, 0, format!("segment header: {other}")),
    }
}

pub(super) fn check_header(path: &Path, bytes: &[u8], base: Offset) -> Result<SegmentHeader> {
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

/// Reads and checks the footer of a file of `len` bytes.
pub(super) fn read_footer(file: &File, len: u64) -> Option<SegmentFooter> {
    let at = len.checked_sub(FOOTER_LEN as u64)?;
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut footer, at).ok()?;
    SegmentFooter::decode(&footer, at).ok()
}

pub(super) fn is_all_zero(file: &File, len: u64) -> std::io::Result<bool> {
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
