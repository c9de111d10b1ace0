//! Finding what a damaged segment file still holds: runs of good batches (pieces), checked by
//! CRC, offsets and arrival times, and what else is wrong with the file.

use std::path::Path;

use crate::error::{Error, Result};
use crate::log::format::{
    peek_batch, Layout, SegmentFooter, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN,
};
use crate::log::index::SparseIndex;
use crate::log::segment::{
    good_batch_at, index_path, index_problem, offset_limit, scan, segment_path,
};
use crate::types::Offset;

use super::Piece;

/// A segment file as found, with the good frames in it.
pub(super) struct Found {
    pub(super) base: Offset,
    pub(super) footer: Option<SegmentFooter>,
    pub(super) pieces: Vec<Piece>,
    /// Why the file cannot stay as it is, if so.
    pub(super) damage: Option<String>,
    /// Bytes after the last good frame of an unsealed segment that are not zero.
    pub(super) torn_tail: Option<(usize, usize)>,
    /// Whether its index file is missing or disagrees with its frames (checked only for a
    /// segment that stays as it is).
    pub(super) index_bad: bool,
}

/// Finds the runs of good batches in `bytes`, laid out as format `version` says: batches whose
/// CRC and records verify, whose offsets count up from `base` (resuming at any higher offset after
/// damage) and stay below `limit`, and whose arrival times never go backwards.
pub(super) fn salvage(
    bytes: &[u8],
    base: Offset,
    version: u16,
    limit: Option<Offset>,
) -> Vec<Piece> {
    let layout = Layout::of_version(version);
    let mut pieces = Vec::new();
    let (mut pos, mut expected, mut last_arrival) = (SEGMENT_HEADER_LEN, base, i64::MIN);
    // No segment can hold more offsets than it has room for records.
    let limit = limit.unwrap_or_else(|| offset_limit(base, bytes.len(), layout));
    let acceptable = |pos: usize, expected: Offset, last_arrival: i64| {
        good_batch_at(bytes, pos, layout, expected, limit, last_arrival)
    };
    while pos < bytes.len() {
        let start = pos;
        let first = expected;
        while acceptable(pos, expected, last_arrival) {
            let Ok(head) = peek_batch(bytes, pos, layout) else {
                break; // `acceptable` decoded it
            };
            if head.base_offset != expected {
                break;
            }
            last_arrival = head.last_arrival_ms;
            pos += head.len;
            expected = head.end_offset();
        }
        if pos > start {
            pieces.push(Piece {
                version,
                first,
                records: expected.get() - first.get(),
                start,
                end: pos,
            });
        }
        // Look for the next good batch after the damage (or after zeros: a zeroed page). The
        // search starts at the batch that stopped the run: it may be good, only out of sequence.
        // It cannot be found again as it is: a batch `acceptable` takes extends the next run.
        match (pos..bytes.len()).find(|&p| acceptable(p, expected, last_arrival)) {
            Some(p) => {
                pos = p;
                // `acceptable` decoded it.
                expected = peek_batch(bytes, p, layout).map_or(expected, |h| h.base_offset);
            }
            None => break,
        }
    }
    pieces
}

/// The version whose layout salvages the most records from `bytes`, and its pieces: for a file
/// whose header is damaged (and with it the version it names).
pub(super) fn salvage_unknown_version(
    bytes: &[u8],
    base: Offset,
    limit: Option<Offset>,
) -> Vec<Piece> {
    let count = |pieces: &[Piece]| pieces.iter().map(|p| p.records).sum::<u64>();
    let batches = salvage(bytes, base, FORMAT_VERSION, limit);
    let frames = salvage(bytes, base, 2, limit);
    if count(&frames) > count(&batches) {
        frames
    } else {
        batches
    }
}

pub(super) fn examine(dir: &Path, base: Offset, limit: Option<Offset>) -> Result<Found> {
    let path = segment_path(dir, base);
    let bytes = std::fs::read(&path).map_err(Error::io_at("read segment", &path))?;
    let header = SegmentHeader::decode(&bytes)
        .ok()
        .filter(|h| h.base_offset == base);
    let footer = SegmentFooter::decode_at_end(&bytes).ok();
    let frames_end = footer.map_or(bytes.len(), |f| f.data_end as usize);
    let pieces = match header {
        _ if bytes.len() < SEGMENT_HEADER_LEN => Vec::new(),
        Some(h) => salvage(&bytes[..frames_end], base, h.version, limit),
        None => salvage_unknown_version(&bytes[..frames_end], base, limit),
    };
    let layout = match (header, pieces.first()) {
        (Some(h), _) => h.layout(),
        (None, Some(p)) => Layout::of_version(p.version),
        (None, None) => Layout::CURRENT,
    };
    let whole = match pieces.as_slice() {
        [p] => p.first == base && p.start == SEGMENT_HEADER_LEN,
        [] => true,
        _ => false,
    };
    let good_end = pieces.last().map_or(SEGMENT_HEADER_LEN, |p| p.end);
    let records = pieces.iter().map(|p| p.records).sum::<u64>();
    let damage = if header.is_none() {
        Some(if bytes.len() < SEGMENT_HEADER_LEN {
            "shorter than a header".to_string()
        } else {
            "damaged header".to_string()
        })
    } else if !whole {
        Some("damaged frames".to_string())
    } else {
        match (footer, limit) {
            (Some(f), _) if good_end != frames_end || f.record_count != records => {
                Some("frames end before the seal".to_string())
            }
            (None, Some(_)) => Some("not sealed, though a newer segment follows".to_string()),
            _ => None,
        }
    };
    let torn_tail = (footer.is_none() && good_end < bytes.len())
        .then(|| bytes[good_end..].iter().any(|&b| b != 0))
        .filter(|&torn| torn)
        .map(|_| (good_end, bytes.len() - good_end));
    let index_bad = damage.is_none() && {
        let mut rebuilt = SparseIndex::default();
        scan(
            &bytes[..frames_end],
            base,
            layout,
            (SEGMENT_HEADER_LEN, base),
            &mut rebuilt,
        );
        index_problem(
            &index_path(dir, base),
            base,
            &rebuilt,
            good_end,
            footer.is_some(),
        )
        .is_some()
    };
    Ok(Found {
        base,
        footer,
        pieces,
        damage,
        torn_tail,
        index_bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{encode_frame, frame_len, FrameFields};
    use crate::log::repair::Piece;

    fn frames(offsets: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = vec![0u8; SEGMENT_HEADER_LEN];
        for o in offsets {
            let data = format!("record {o}");
            let fields = FrameFields {
                offset: Offset::new(o),
                arrival_ms: 1_000 + o as i64,
                hash_key: u128::from(o),
                partition_key: b"k",
                data: data.as_bytes(),
            };
            let at = out.len();
            out.resize(at + frame_len(1, data.len()), 0);
            encode_frame(&fields, &mut out[at..]);
        }
        out
    }

    #[test]
    fn salvage_finds_the_frames_after_a_flipped_bit_and_after_zeros() {
        let clean = frames(10..20);
        assert_eq!(
            salvage(&clean, Offset::new(10), 2, None),
            vec![Piece {
                version: 2,
                first: Offset::new(10),
                records: 10,
                start: SEGMENT_HEADER_LEN,
                end: clean.len()
            }]
        );
        let frame_len = (clean.len() - SEGMENT_HEADER_LEN) / 10;
        let mut flipped = clean.clone();
        flipped[SEGMENT_HEADER_LEN + 3 * frame_len + 20] ^= 0x10;
        let pieces = salvage(&flipped, Offset::new(10), 2, None);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert_eq!((pieces[0].first.get(), pieces[0].records), (10, 3));
        assert_eq!((pieces[1].first.get(), pieces[1].records), (14, 6));

        let mut zeroed = clean.clone();
        let at = SEGMENT_HEADER_LEN + 2 * frame_len + 5;
        zeroed[at..at + 2 * frame_len].fill(0);
        let pieces = salvage(&zeroed, Offset::new(10), 2, None);
        let kept: Vec<(u64, u64)> = pieces.iter().map(|p| (p.first.get(), p.records)).collect();
        assert_eq!(kept, vec![(10, 2), (15, 5)]);
    }

    /// A version 3 segment of batches of `per_batch` records from offset `first` on.
    fn batches(first: u64, batches: u64, per_batch: u64) -> Vec<u8> {
        use crate::log::format::{batch_record_len, encode_batch, BATCH_OVERHEAD};
        use crate::types::NewRecord;
        let mut out = vec![0u8; SEGMENT_HEADER_LEN];
        for b in 0..batches {
            let base = first + b * per_batch;
            let datas: Vec<String> = (base..base + per_batch)
                .map(|o| format!("record {o}"))
                .collect();
            let records: Vec<NewRecord<'_>> = datas
                .iter()
                .map(|d| NewRecord::new(b"k", d.as_bytes()))
                .collect();
            let len = BATCH_OVERHEAD + records.iter().map(batch_record_len).sum::<usize>();
            let at = out.len();
            out.resize(at + len, 0);
            encode_batch(
                Offset::new(base),
                1_000 + b as i64,
                &records,
                &mut out[at..],
                false,
            );
        }
        out
    }

    #[test]
    fn salvage_cuts_a_damaged_batch_whole_and_keeps_the_batches_after_it() {
        let clean = batches(100, 5, 4);
        let pieces = salvage(&clean, Offset::new(100), FORMAT_VERSION, None);
        assert_eq!(pieces.len(), 1);
        assert_eq!((pieces[0].first.get(), pieces[0].records), (100, 20));
        let batch_len = (clean.len() - SEGMENT_HEADER_LEN) / 5;
        let mut flipped = clean.clone();
        flipped[SEGMENT_HEADER_LEN + 2 * batch_len + 50] ^= 0x01;
        let pieces = salvage(&flipped, Offset::new(100), FORMAT_VERSION, None);
        let kept: Vec<(u64, u64)> = pieces.iter().map(|p| (p.first.get(), p.records)).collect();
        assert_eq!(kept, vec![(100, 8), (112, 8)]);
        // A file whose header is gone: the layout that finds the most records wins.
        let mut headless = clean.clone();
        headless[..SEGMENT_HEADER_LEN].fill(0);
        let pieces = salvage_unknown_version(&headless, Offset::new(100), None);
        assert_eq!(pieces[0].version, FORMAT_VERSION);
        assert_eq!(pieces[0].records, 20);
        let v2 = frames(10..20);
        assert_eq!(
            salvage_unknown_version(&v2, Offset::new(10), None)[0].version,
            2
        );
    }

    #[test]
    fn salvage_stops_at_the_next_segment_and_ignores_garbage() {
        let clean = frames(0..10);
        let pieces = salvage(&clean, Offset::new(0), 2, Some(Offset::new(6)));
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].records, 6);
        let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(salvage(&garbage, Offset::new(0), 2, None).is_empty());
    }
}
