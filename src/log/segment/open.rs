//! Opening a segment that is not being written: map (or copy) it and verify it against its
//! footer and index.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::log::format::{
    peek_batch, FrameError, Layout, SegmentFooter, FRAME_PREFIX_LEN, MAX_BATCH_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::log::index::{self, IndexFile};
use crate::log::mmap::SharedMap;
use crate::types::Offset;

use super::scan::{check_header, read_footer, scan, trust_index};
use super::{index_path, segment_path, Damage, SealInfo, SegmentData, Storage};

/// Verifies a segment that takes no more records: checks header and seal, loads the index, scans
/// what the index does not cover. A missing or wrong seal is recorded as damage (the readable part
/// is the verified prefix), except for `snapshot`s of a segment still being written elsewhere.
pub(super) fn verify_final(
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
pub(super) fn load_sealed(dir: &Path, base: Offset, read_only: bool) -> Result<SegmentData> {
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

pub(super) fn file_len(file: &File, path: &Path) -> Result<usize> {
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

/// Maps and verifies a copy of a sealed segment downloaded from an object store into `dir`
/// (its index beside it, if there is one); errors and damage name the object, `name`.
pub(crate) fn load_remote_copy(dir: &Path, base: Offset, name: &Path) -> Result<SegmentData> {
    let data = load_sealed(dir, base, true).map_err(|e| match e {
        Error::Corrupt {
            position, reason, ..
        } => Error::Corrupt {
            path: name.to_path_buf(),
            position,
            reason,
        },
        e => e,
    })?;
    Ok(SegmentData {
        path: name.to_path_buf(),
        ..data
    })
}

/// Where a window of a remote segment's object lies (see [`remote_window`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    /// The object, for messages.
    pub name: &'a Path,
    /// The segment's layout (from its header).
    pub layout: Layout,
    /// Where the fetched bytes begin in the object: [`SEGMENT_HEADER_LEN`] bytes before the
    /// batch that starts the window (those bytes are never read).
    pub origin: u64,
    /// The offset of that batch's first record.
    pub first: Offset,
    /// `Some(lost_after)` (the seal's) when the fetched bytes reach the end of the segment's
    /// records.
    pub ends_segment: Option<u64>,
}

/// What [`remote_window`] made of the fetched bytes.
pub(crate) enum WindowFit {
    /// A readable view of the whole batches in them (at least one).
    Fits(Box<SegmentData>),
    /// Not even the first batch is whole: it needs this many bytes past the skipped header room
    /// (0 if not even its length prefix arrived).
    Needs(usize),
}

/// A readable view of a range of a remote segment's object (`bytes`, fetched from
/// `window.origin` on), served like a sealed segment whose first batch is `window.first`'s:
/// every batch's CRC is checked as it is read, errors name the object and the position in it.
/// A batch cut off at the end of the range is left out; unless the range reaches the segment's
/// end the view is partial ([`SegmentData::is_partial`]).
pub(crate) fn remote_window(window: Window<'_>, bytes: Bytes) -> Result<WindowFit> {
    let corrupt = |pos: usize, reason: String| {
        Error::corrupt(window.name, window.origin + pos as u64, reason)
    };
    let mut pos = SEGMENT_HEADER_LEN;
    let mut next = window.first;
    let mut last_arrival_ms = None;
    // Whole batches only: each starts with its length (as frames of versions 1 and 2 do).
    while let Some(prefix) = bytes.get(pos..pos + 4) {
        let body_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if body_len == 0 {
            return Err(corrupt(pos, "records end before the seal says".into()));
        }
        let len = FRAME_PREFIX_LEN + body_len;
        if len > MAX_BATCH_LEN {
            return Err(corrupt(pos, format!("impossible batch length {len}")));
        }
        if len > bytes.len() - pos {
            if last_arrival_ms.is_none() {
                return Ok(WindowFit::Needs(len));
            }
            break;
        }
        let head = peek_batch(&bytes, pos, window.layout).map_err(|e| match e {
            FrameError::Corrupt(reason) => corrupt(pos, reason.into()),
            FrameError::End => corrupt(pos, "records end before the seal says".into()),
        })?;
        if head.base_offset != next {
            return Err(corrupt(
                pos,
                format!(
                    "batch starts at offset {}, expected {next}",
                    head.base_offset
                ),
            ));
        }
        pos += head.len;
        next = head.end_offset();
        last_arrival_ms = Some(head.last_arrival_ms);
    }
    if last_arrival_ms.is_none() {
        return Ok(WindowFit::Needs(0));
    }
    let whole_to_end = window.ends_segment.filter(|_| pos == bytes.len());
    let data = SegmentData {
        origin: window.origin,
        partial: whole_to_end.is_none(),
        ..SegmentData::new(
            window.first,
            window.layout,
            window.name.to_path_buf(),
            Storage::Owned(bytes),
            crate::log::index::SparseIndex::default(),
        )
    };
    let _ = data.sealed.set(SealInfo {
        end_offset: next,
        data_end: pos,
        last_arrival_ms,
        lost_after: whole_to_end.unwrap_or(0),
    });
    Ok(WindowFit::Fits(Box::new(data)))
}
