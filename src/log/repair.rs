//! Offline repair of a shard directory: what `shardlog repair` shows and, with `--apply`, does.
//!
//! Repairs keep every record whose frame still verifies and never invent one:
//! - a torn tail of the newest segment (bytes after its last good frame) is cut off;
//! - a missing, damaged or short index file is rebuilt from its segment;
//! - a segment with damaged frames, a damaged header or a missing seal is rewritten as one sealed
//!   segment per run of good frames (frames after the damage are found again by their CRC and
//!   offset), and the seal before each gap records how many offsets were lost (footer
//!   `lost_after`), so readers and `verify` treat the gap as accounted for;
//! - a segment with no good frame at all (a half-written segment left by a crash during a roll)
//!   is removed;
//! - a gap left by a missing segment file is recorded in the seal of the segment before it;
//! - index files without a segment and leftovers of an interrupted repair are removed.
//!
//! Every rewritten file is written beside its target, fsynced and renamed over it, and the
//! directory fsynced, so a crash during a repair leaves old and new files that are each whole; a
//! second run finishes the job. Repair needs the directory's writer lock (the caller holds it).

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{sync_dir, write_atomically};
use crate::log::format::{
    parse_file_name, peek_batch, Layout, SegmentFooter, SegmentHeader, FOOTER_LEN, FORMAT_VERSION,
    INDEX_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN,
};
use crate::log::index::{IndexFile, SparseIndex};
use crate::log::segment::{
    good_batch_at, index_path, index_problem, offset_limit, scan, segment_path,
};
use crate::types::Offset;

/// Whether a file name is a temporary file left by an interrupted atomic write
/// (`io::write_atomically` names them `.<name>.<random>.tmp`).
fn is_leftover_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// One run of consecutive good batches (frames, in format versions 1 and 2) found in a segment
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Format version of its records (the file's, or for a file whose header is damaged, the
    /// version whose layout finds the most records in it).
    pub version: u16,
    /// Offset of its first record.
    pub first: Offset,
    /// Records in it.
    pub records: u64,
    /// Byte range of its frames in the old file.
    pub start: usize,
    /// See `start`.
    pub end: usize,
}

impl Piece {
    /// One past its last offset.
    pub fn end_offset(&self) -> Offset {
        Offset::new(self.first.get() + self.records)
    }
}

/// One step of a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Remove a file that does not belong (an index without a segment, a repair's leftover).
    RemoveStray {
        /// The file.
        path: PathBuf,
        /// Why it goes.
        why: &'static str,
    },
    /// Rewrite a segment's index file from its frames.
    RebuildIndex {
        /// The segment file.
        segment: PathBuf,
    },
    /// Cut the newest segment after its last good frame.
    CutTail {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the cut (end of the last good frame).
        at: u64,
        /// Bytes discarded.
        discarded: u64,
    },
    /// Rewrite a damaged segment as one sealed segment per run of good frames.
    Rewrite {
        /// The segment file.
        segment: PathBuf,
        /// What was wrong.
        why: String,
        /// The runs kept, oldest first, each with the offsets lost after it.
        pieces: Vec<(Piece, u64)>,
    },
    /// Remove a segment holding no good frame.
    RemoveSegment {
        /// The segment file.
        segment: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// Record that the shard's log now starts at `at` (records before it are gone).
    RecordLogStart {
        /// The first offset the shard holds.
        at: Offset,
    },
    /// Record in a segment's seal that offsets after it are lost (a missing segment, or records
    /// cut out of the next one).
    RecordGap {
        /// The segment file.
        segment: PathBuf,
        /// The offsets lost after it.
        lost: u64,
    },
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::RemoveStray { path, why } => write!(f, "remove {} ({why})", path.display()),
            Repair::RebuildIndex { segment } => {
                write!(f, "rebuild the index of {}", segment.display())
            }
            Repair::CutTail {
                segment,
                at,
                discarded,
            } => write!(
                f,
                "cut {} at byte {at}, after its last good frame ({discarded} bytes of torn tail)",
                segment.display()
            ),
            Repair::Rewrite {
                segment,
                why,
                pieces,
            } => {
                write!(f, "rewrite {} ({why}) keeping ", segment.display())?;
                for (i, (piece, lost)) in pieces.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(
                        f,
                        "{sep}offsets {}..{} ({} records)",
                        piece.first,
                        piece.end_offset(),
                        piece.records
                    )?;
                    if *lost > 0 {
                        write!(f, " then {lost} lost")?;
                    }
                }
                Ok(())
            }
            Repair::RemoveSegment { segment, why } => {
                write!(
                    f,
                    "remove {} ({why}; no record in it verifies)",
                    segment.display()
                )
            }
            Repair::RecordLogStart { at } => {
                write!(f, "record that the shard's log now starts at offset {at}")
            }
            Repair::RecordGap { segment, lost } => write!(
                f,
                "record in the seal of {} that the {lost} offsets after it are lost",
                segment.display()
            ),
        }
    }
}

/// What a repair of one shard directory would do (and, once applied, did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// The steps, in the order they are applied.
    pub repairs: Vec<Repair>,
    /// Records that are lost for good: in damaged frames or missing segments, between the
    /// records kept (a lower bound where damage hides how many there were).
    pub records_lost: u64,
}

/// A segment file as found, with the good frames in it.
struct Found {
    base: Offset,
    footer: Option<SegmentFooter>,
    pieces: Vec<Piece>,
    /// Why the file cannot stay as it is, if so.
    damage: Option<String>,
    /// Bytes after the last good frame of an unsealed segment that are not zero.
    torn_tail: Option<(usize, usize)>,
    /// Whether its index file is missing or disagrees with its frames (checked only for a
    /// segment that stays as it is).
    index_bad: bool,
}

/// Finds the runs of good batches in `bytes`, laid out as format `version` says: batches whose
/// CRC and records verify, whose offsets count up from `base` (resuming at any higher offset after
/// damage) and stay below `limit`, and whose arrival times never go backwards.
fn salvage(bytes: &[u8], base: Offset, version: u16, limit: Option<Offset>) -> Vec<Piece> {
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
fn salvage_unknown_version(bytes: &[u8], base: Offset, limit: Option<Offset>) -> Vec<Piece> {
    let count = |pieces: &[Piece]| pieces.iter().map(|p| p.records).sum::<u64>();
    let batches = salvage(bytes, base, FORMAT_VERSION, limit);
    let frames = salvage(bytes, base, 2, limit);
    if count(&frames) > count(&batches) {
        frames
    } else {
        batches
    }
}

fn examine(dir: &Path, base: Offset, limit: Option<Offset>) -> Result<Found> {
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

/// Works out the repairs a shard directory needs, changing nothing. `closed_at` is, for a shard
/// its stream has closed, the offset the stream's manifest closed it at: records missing before
/// it are recorded as lost too, so the shard ends where the manifest says.
pub fn plan_repair(dir: &Path, closed_at: Option<Offset>) -> Result<RepairPlan> {
    let mut plan = RepairPlan::default();
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io_at("list", dir))? {
        let entry = entry.map_err(Error::io_at("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_leftover_temp(&name) {
            plan.repairs.push(Repair::RemoveStray {
                path: entry.path(),
                why: "left by an interrupted repair",
            });
            continue;
        }
        match parse_file_name(&name) {
            Some((base, SEGMENT_EXT)) => bases.push(base),
            Some((base, INDEX_EXT)) => indexes.push(base),
            _ => {}
        }
    }
    bases.sort_unstable();
    for base in indexes {
        if bases.binary_search(&base).is_err() {
            plan.repairs.push(Repair::RemoveStray {
                path: index_path(dir, base),
                why: "an index whose segment is gone",
            });
        }
    }

    let mut found = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        found.push(examine(dir, base, bases.get(i + 1).copied())?);
    }
    // The runs that survive, in order, to work out the gaps between them.
    let kept: Vec<Piece> = found
        .iter()
        .flat_map(|f| f.pieces.iter().copied())
        .collect();
    // Where the files that remain after the repair begin: a segment kept as it is (even one
    // without records) at its base, a rewritten one at each of its pieces.
    let starts: Vec<Offset> = found
        .iter()
        .flat_map(|f| match (&f.damage, f.pieces.is_empty()) {
            (None, _) if f.torn_tail.is_none() || !f.pieces.is_empty() => vec![f.base],
            (Some(_), false) => f.pieces.iter().map(|p| p.first).collect(),
            _ => Vec::new(),
        })
        .collect();
    let lost_after = |piece: &Piece| -> u64 {
        let next = starts
            .iter()
            .copied()
            .find(|&s| s > piece.first)
            .or(closed_at);
        next.map_or(0, |n| n.get().saturating_sub(piece.end_offset().get()))
    };
    for f in &found {
        let path = segment_path(dir, f.base);
        if f.pieces.is_empty() && (f.damage.is_some() || f.torn_tail.is_some()) {
            plan.repairs.push(Repair::RemoveSegment {
                segment: path,
                why: f
                    .damage
                    .clone()
                    .unwrap_or_else(|| "garbage after the header".into()),
            });
            continue;
        }
        if let Some(why) = &f.damage {
            let pieces: Vec<(Piece, u64)> = f.pieces.iter().map(|p| (*p, lost_after(p))).collect();
            plan.repairs.push(Repair::Rewrite {
                segment: path,
                why: why.clone(),
                pieces,
            });
            continue;
        }
        let lost = f.pieces.first().map_or(0, lost_after);
        if f.footer.is_none() && lost > 0 {
            // The newest segment of a closed shard, ending before the manifest's end: seal it
            // with the gap recorded.
            plan.repairs.push(Repair::Rewrite {
                segment: path,
                why: "ends before the offset its stream closed the shard at".into(),
                pieces: f.pieces.iter().map(|p| (*p, lost)).collect(),
            });
            continue;
        }
        if let Some((at, len)) = f.torn_tail {
            plan.repairs.push(Repair::CutTail {
                segment: path.clone(),
                at: at as u64,
                discarded: len as u64,
            });
        } else if f.index_bad {
            plan.repairs.push(Repair::RebuildIndex {
                segment: path.clone(),
            });
        }
        let recorded = f.footer.map(|footer| footer.lost_after);
        if !f.pieces.is_empty() && recorded.is_some_and(|r| r != lost) {
            plan.repairs.push(Repair::RecordGap {
                segment: path,
                lost,
            });
        }
    }
    // Records lost for good: before the first run kept, and in every gap between runs that no
    // earlier repair already accounted for.
    let accounted: u64 = found
        .iter()
        .filter(|f| f.damage.is_none())
        .filter_map(|f| f.footer.map(|footer| footer.lost_after))
        .sum();
    let gaps: u64 = kept.iter().map(lost_after).sum();
    // Where the log starts: as recorded (a damaged record is rewritten), raised to the first
    // file the repair leaves when records before it are gone.
    let recorded_start = crate::log::log_start::read_log_start(dir).ok();
    let first_left = starts.iter().copied().min();
    let leading = match (recorded_start.or(bases.first().copied()), kept.first()) {
        (Some(start), Some(p)) => p.first.get().saturating_sub(start.get()),
        _ => 0,
    };
    if let Some(first) = first_left {
        if recorded_start.is_none_or(|start| first > start) {
            plan.repairs.push(Repair::RecordLogStart { at: first });
        }
    }
    plan.records_lost = leading + gaps.saturating_sub(accounted);
    Ok(plan)
}

/// Works out and carries out the repairs of a shard directory. The caller must hold the
/// directory's writer lock (the shard's, or its store's).
pub fn apply_repair(dir: &Path, closed_at: Option<Offset>, now_ms: i64) -> Result<RepairPlan> {
    let plan = plan_repair(dir, closed_at)?;
    for repair in &plan.repairs {
        match repair {
            Repair::RemoveStray { path, .. } => remove(path)?,
            Repair::RebuildIndex { segment } => {
                let bytes =
                    std::fs::read(segment).map_err(Error::io_at("read segment", segment))?;
                let base = base_of(segment)?;
                let frames_end = SegmentFooter::decode_at_end(&bytes)
                    .map_or(bytes.len(), |f| f.data_end as usize);
                write_index(dir, base, &bytes[..frames_end])?;
            }
            Repair::CutTail { segment, at, .. } => {
                let file = File::options()
                    .write(true)
                    .open(segment)
                    .map_err(Error::io_at("open segment", segment))?;
                file.set_len(*at)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::io_at("cut torn tail", segment))?;
                let bytes =
                    std::fs::read(segment).map_err(Error::io_at("read segment", segment))?;
                write_index(dir, base_of(segment)?, &bytes)?;
            }
            Repair::Rewrite {
                segment, pieces, ..
            } => rewrite(dir, segment, pieces, now_ms)?,
            Repair::RemoveSegment { segment, .. } => {
                remove(&index_path(dir, base_of(segment)?))?;
                remove(segment)?;
            }
            Repair::RecordLogStart { at } => {
                crate::log::log_start::write_log_start(dir, *at, true)?
            }
            Repair::RecordGap { segment, lost } => {
                let bytes =
                    std::fs::read(segment).map_err(Error::io_at("read segment", segment))?;
                let base = base_of(segment)?;
                let footer = SegmentFooter::decode_at_end(&bytes)
                    .map_err(|e| Error::corrupt(segment, 0, format!("seal: {e}")))?;
                let frames = &bytes[..footer.data_end as usize];
                let sealed = SegmentFooter {
                    lost_after: *lost,
                    ..footer
                };
                let header = SegmentHeader::decode(frames)
                    .map_err(|e| Error::corrupt(segment, 0, format!("header: {e}")))?;
                write_segment(dir, base, header, &frames[SEGMENT_HEADER_LEN..], sealed)?;
            }
        }
    }
    sync_dir(dir)?;
    Ok(plan)
}

fn base_of(segment: &Path) -> Result<Offset> {
    segment
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_file_name)
        .map(|(base, _)| base)
        .ok_or_else(|| Error::corrupt(segment, 0, "not a segment file name"))
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Rewrites a damaged segment as one sealed segment per piece: later pieces first, so that until
/// the old file is replaced (or removed, when its first records are lost) it still holds
/// everything, and a second run of the repair finds the same pieces.
fn rewrite(dir: &Path, segment: &Path, pieces: &[(Piece, u64)], now_ms: i64) -> Result<()> {
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
fn arrivals(frames: &[u8], first: Offset, layout: Layout) -> (i64, i64) {
    let mut entries = SparseIndex::default();
    let scanned = scan(frames, first, layout, (0, first), &mut entries);
    let first_arrival = entries.first().map_or(i64::MIN, |e| e.max_arrival_ms);
    (first_arrival, scanned.last_arrival_ms.unwrap_or(i64::MIN))
}

/// Writes a sealed segment (and its index) through a temporary file renamed into place.
fn write_segment(
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
fn write_index(dir: &Path, base: Offset, bytes: &[u8]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{encode_frame, frame_len, FrameFields};

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
