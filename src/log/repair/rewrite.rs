//! Writing repaired files: a damaged segment rewritten as sealed segments of its good pieces,
//! each through a temporary file renamed into place, with its index.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::write_atomically;
use crate::log::format::{
    parse_file_name, Layout, SegmentFooter, SegmentHeader, FOOTER_LEN, SEGMENT_HEADER_LEN,
};
use crate::log::index::{IndexFile, SparseIndex};
use crate::log::segment::{index_path, scan, segment_path};
use crate::types::Offset;

use super::Piece;

pub(super) fn base_of(segment: &Path) -> Result<Offset> {
    segment
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_file_name)
        .map(|(base, _)| base)
        .ok_or_else(|| Error::corrupt(segment, 0, "not a segment file name"))
}

pub(super) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Rewrites a damaged segment as one sealed segment per piece: later pieces first, so that until
/// the old file is replaced (or removed, when its first records are lost) it still holds
/// everything, and a second run of the repair finds the same pieces.
pub(super) fn rewrite(
    dir: &Path,
    segment: &Path,
    pieces: &[(Piece, u64)],
    now_ms: i64,
) -> Result<()> {
    let bytes = std::fs::read(segment).map_err(Error::io_at("read segment", segment))?;
    let base = base_of(segment)?;
    let old_header = SegmentHeader::decode(&bytes).ok();
    let mut floor = old_header.map_or(i64::MIN, |h| h.arrival_floor_ms);
    let mut planned = Vec::with_capacity(pieces.len());
    for &(piece, lost_after) in pieces {
        let frames = bytes
            .get(piece.start..piece.end)
            .ok_or_else(|| Error::corrupt(segment, piece.end as u64, "changed during repair"))?;
        let (first_arrival, last_arrival) =
            arrivals(frames, piece.first, Layout::of_version(piece.version));
        let header = SegmentHeader {
            version: piece.version,
            base_offset: piece.first,
            created_ms: old_header.map_or(first_arrival, |h| h.created_ms),
            arrival_floor_ms: floor,
        };
        let footer = SegmentFooter {
            record_count: piece.records,
            data_end: (SEGMENT_HEADER_LEN + frames.len()) as u64,
            first_arrival_ms: first_arrival,
            last_arrival_ms: last_arrival,
            sealed_ms: now_ms,
            lost_after,
        };
        floor = last_arrival;
        planned.push((header, frames, footer));
    }
    for (header, frames, footer) in planned.into_iter().rev() {
        write_segment(dir, header.base_offset, header, frames, footer)?;
    }
    if pieces.first().is_none_or(|(p, _)| p.first != base) {
        remove(&index_path(dir, base))?;
        remove(segment)?;
    }
    Ok(())
}

/// Arrival times of the first and last record of a run of good batches.
pub(super) fn arrivals(frames: &[u8], first: Offset, layout: Layout) -> (i64, i64) {
    let mut entries = SparseIndex::default();
    let scanned = scan(frames, first, layout, (0, first), &mut entries);
    let first_arrival = entries.first().map_or(i64::MIN, |e| e.max_arrival_ms);
    (first_arrival, scanned.last_arrival_ms.unwrap_or(i64::MIN))
}

/// Writes a sealed segment (and its index) through a temporary file renamed into place.
pub(super) fn write_segment(
    dir: &Path,
    base: Offset,
    header: SegmentHeader,
    frames: &[u8],
    footer: SegmentFooter,
) -> Result<()> {
    let target = segment_path(dir, base);
    let name = target
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let mut bytes = Vec::with_capacity(SEGMENT_HEADER_LEN + frames.len() + FOOTER_LEN);
    bytes.extend_from_slice(&header.encode());
    bytes.extend_from_slice(frames);
    bytes.extend_from_slice(&footer.encode());
    write_atomically(dir, &name, &bytes)?;
    write_index(dir, base, &bytes[..bytes.len() - FOOTER_LEN])
}

/// Rewrites the index of the segment whose bytes up to the end of its frames are `bytes` (its
/// header included, which names its layout).
pub(super) fn write_index(dir: &Path, base: Offset, bytes: &[u8]) -> Result<()> {
    let layout = SegmentHeader::decode(bytes).map_or(Layout::CURRENT, |h| h.layout());
    let mut entries = SparseIndex::default();
    scan(
        bytes,
        base,
        layout,
        (SEGMENT_HEADER_LEN, base),
        &mut entries,
    );
    IndexFile::rewrite(&index_path(dir, base), base, &entries).map(drop)
}
