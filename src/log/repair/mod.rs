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
//! - index files without a segment and leftovers of an interrupted repair are removed;
//! - a damaged `remote.log` (tiered storage) is rewritten with its good lines, damaged ones taken
//!   from the bucket's copy of it when the caller has one (the damaged file is kept beside it as
//!   `remote.log.damaged`); the bucket itself is never touched.
//!
//! Every rewritten file is written beside its target, fsynced and renamed over it, and the
//! directory fsynced, so a crash during a repair leaves old and new files that are each whole; a
//! second run finishes the job. Repair needs the directory's writer lock (the caller holds it).

mod rewrite;
mod salvage;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use rewrite::{base_of, remove, rewrite, write_index, write_segment};
use salvage::examine;

use crate::error::{Error, Result};
use crate::io::sync_dir;
use crate::log::format::{
    parse_file_name, SegmentFooter, SegmentHeader, INDEX_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN,
};
use crate::log::remote::{fold_remote_records, remote_end_of, salvage_remote_log, REMOTE_LOG_FILE};
use crate::log::segment::{index_path, segment_path};
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
    /// Rewrite a damaged `remote.log` with its good lines (see
    /// [`crate::log::remote::salvage_remote_log`]).
    SalvageRemoteLog {
        /// The file.
        path: PathBuf,
        /// Its new bytes.
        bytes: Vec<u8>,
        /// Lines kept.
        kept: usize,
        /// Damaged lines taken from the bucket's copy.
        from_copy: usize,
        /// Damaged lines left out.
        lost: usize,
    },
}

/// Where a salvaged `remote.log`'s damaged original is kept.
pub const DAMAGED_REMOTE_LOG_FILE: &str = "remote.log.damaged";

/// What a repair knows beyond the shard's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairInput {
    /// For a shard its stream has closed, the offset the stream's manifest closed it at:
    /// records missing before it are recorded as lost too, so the shard ends where the
    /// manifest says.
    pub closed_at: Option<Offset>,
    /// The bucket's copy of the shard's `remote.log` (a tiered store's), to take damaged lines
    /// of the local one from.
    pub remote_log_copy: Option<Vec<u8>>,
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
            Repair::SalvageRemoteLog {
                path,
                kept,
                from_copy,
                lost,
                ..
            } => {
                write!(
                    f,
                    "rewrite {} with its {kept} good lines ({from_copy} of them from the bucket's copy)",
                    path.display()
                )?;
                if *lost > 0 {
                    write!(
                        f,
                        "; {lost} damaged lines are left out: the segments they recorded are \
                         forgotten (give --remote to take them from the bucket's copy)"
                    )?;
                }
                Ok(())
            }
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

/// Works out the repairs a shard directory needs, changing nothing.
pub fn plan_repair(dir: &Path, input: &RepairInput) -> Result<RepairPlan> {
    let closed_at = input.closed_at;
    let mut plan = RepairPlan::default();
    // Segments only in the object store (tiered storage) come before the local ones: the local
    // files start where they end, and nothing there is lost (repair never touches them).
    let remote_end = match salvage_remote_log(dir, input.remote_log_copy.as_deref())? {
        None => crate::log::remote::remote_end(dir)?,
        Some(salvaged) => {
            plan.repairs.push(Repair::SalvageRemoteLog {
                path: dir.join(REMOTE_LOG_FILE),
                kept: salvaged.records.len(),
                from_copy: salvaged.from_copy,
                lost: salvaged.lost,
                bytes: salvaged.bytes,
            });
            remote_end_of(&fold_remote_records(salvaged.records))
        }
    };
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
    // file the repair leaves when records before it are gone, and to where remote segments end.
    let recorded_start = crate::log::log_start::read_log_start(dir)
        .ok()
        .map(|start| remote_end.map_or(start, |end| start.max(end)));
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
pub fn apply_repair(dir: &Path, input: &RepairInput, now_ms: i64) -> Result<RepairPlan> {
    let plan = plan_repair(dir, input)?;
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
            Repair::SalvageRemoteLog { path, bytes, .. } => {
                // The damaged file stays beside the new one (its damaged lines may still be
                // read by hand).
                let old = std::fs::read(path).map_err(Error::io_at("read", path))?;
                crate::io::write_atomically(dir, DAMAGED_REMOTE_LOG_FILE, &old)?;
                crate::io::write_atomically(dir, REMOTE_LOG_FILE, bytes)?;
            }
        }
    }
    sync_dir(dir)?;
    Ok(plan)
}
