//! Checking a shard directory without opening it for writing: what `shardlog verify` and
//! `inspect` call.

use std::path::{Path, PathBuf};

use crate::error::Result;
pub use crate::log::log_start::{read_log_start, LOG_START_FILE};
use crate::log::remote::{check_copy, read_remote_log, ShardTier};
use crate::log::segment::{self, segment_path};
pub use crate::log::segment::{Problem, SegmentReport};
use crate::types::Offset;

use super::list_segments;

/// Checks the oldest segment of the shard in `dir` against the recorded log start: a segment
/// base above it means records were lost that retention did not delete.
pub fn verify_log_start(dir: &Path) -> Result<Option<Problem>> {
    let start = match read_log_start(dir) {
        Ok(start) => start,
        Err(e) => {
            return Ok(Some(Problem {
                path: dir.join(LOG_START_FILE),
                position: None,
                what: e.to_string(),
            }))
        }
    };
    // Older segments only in the object store (tiered storage) account for the offsets before
    // the local ones.
    let start = match crate::log::remote::remote_end(dir)? {
        Some(end) if end > start => end,
        _ => start,
    };
    let bases = segment_bases(dir)?;
    Ok(match bases.first() {
        Some(&oldest) if oldest > start => Some(Problem {
            path: segment_file(dir, oldest),
            position: None,
            what: format!(
                "the oldest segment starts at offset {oldest}, but the log starts at {start}: offsets {start}..{oldest} are missing (not deleted by retention)"
            ),
        }),
        _ => None,
    })
}

/// Checks a shard directory without changing it: every frame's CRC and offset in every segment,
/// each seal against its frames, each index against its segment, and that segments follow each
/// other without missing offsets. Returns every problem found, with file and byte position; an
/// empty list means the shard is clean. Safe to run while a writer has the directory open (it sees
/// the newest segment as it is at that moment).
pub fn verify(dir: impl AsRef<Path>) -> Result<Vec<Problem>> {
    let dir = dir.as_ref();
    let bases = segment_bases(dir)?;
    let mut problems: Vec<Problem> = verify_log_start(dir)?.into_iter().collect();
    for (i, &base) in bases.iter().enumerate() {
        problems.extend(verify_segment(dir, base, bases.get(i + 1).copied())?.problems);
    }
    Ok(problems)
}

/// The base offsets of the segment files in a shard directory, oldest first. Changes nothing.
pub fn segment_bases(dir: impl AsRef<Path>) -> Result<Vec<Offset>> {
    list_segments(dir.as_ref(), false)
}

/// Verifies one segment of a shard directory as [`verify`] does (`next_base`: the base offset
/// of the segment after it, `None` for the newest), reporting its shape and every problem.
pub fn verify_segment(
    dir: &Path,
    base: Offset,
    next_base: Option<Offset>,
) -> Result<SegmentReport> {
    segment::verify_segment(dir, base, next_base)
}

/// The shape of one segment (records, arrival times, seal, index size) from its header, footer
/// and index file size; only an unsealed segment's frames are read. Verifies nothing else.
pub fn summarize_segment(dir: &Path, base: Offset) -> Result<SegmentReport> {
    segment::summarize_segment(dir, base)
}

/// The path of the segment file of `base` in a shard directory (for tools and tests).
pub fn segment_file(dir: &Path, base: Offset) -> PathBuf {
    segment_path(dir, base)
}

/// Checks the remote copies of a tiered shard's segments (those its `remote.log` lists): each is
/// downloaded into `scratch`, checked against the length and CRC32 recorded at upload, and
/// verified like a local segment (every batch's CRC, the seal, the index). Problems name the
/// object. Changes nothing in the shard or the bucket.
pub fn verify_remote(dir: &Path, tier: &ShardTier, scratch: &Path) -> Result<Vec<Problem>> {
    let bucket = tier.tier().bucket();
    let mut problems = Vec::new();
    for (base, info) in read_remote_log(dir)? {
        let key = tier.segment_key(base);
        let url = PathBuf::from(bucket.url(&key));
        let problem = |position: Option<u64>, what: String| Problem {
            path: url.clone(),
            position,
            what,
        };
        let copy = segment_path(scratch, base);
        match bucket.get_to_file(&key, &copy) {
            Err(e) => {
                problems.push(problem(None, format!("cannot be downloaded: {e}")));
                continue;
            }
            Ok(got) => {
                if let Err(e) = check_copy(got, &url, &info) {
                    problems.push(problem(Some(0), e.to_string()));
                }
            }
        }
        if info.has_index {
            let _ = bucket.get_to_file(&tier.index_key(base), &segment::index_path(scratch, base));
        }
        for mut p in verify_segment(scratch, base, None)?.problems {
            p.path = url.clone();
            problems.push(p);
        }
        let _ = std::fs::remove_file(&copy);
        let _ = std::fs::remove_file(segment::index_path(scratch, base));
    }
    Ok(problems)
}
