//! `verify` and `inspect` of one segment: every batch, the seal and the index, reported as
//! problems instead of repaired.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::format::{SegmentFooter, INDEX_ENTRY_LEN, INDEX_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::log::index::{self, SparseIndex};
use crate::types::Offset;

use super::scan::{check_header, read_footer, scan};
use super::{index_path, segment_path};

/// A problem `verify` found in a shard directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Byte position in the file, where one applies.
    pub position: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} at byte {p}: {}", self.path.display(), self.what),
            None => write!(f, "{}: {}", self.path.display(), self.what),
        }
    }
}

/// What a look at one segment file found: its shape, and (for a full verification) every problem.
/// `inspect`, `verify` and `repair` are built on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// Its base offset (from the file name).
    pub base: Offset,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Format version in its header (0 if the header is unreadable).
    pub version: u16,
    /// Whether it carries a valid footer (takes no more records).
    pub sealed: bool,
    /// Records in it: those that verified, or (summary of a sealed segment) the seal's count.
    pub records: u64,
    /// Arrival time of its first and last record, ms since the Unix epoch.
    pub first_arrival_ms: Option<i64>,
    /// See `first_arrival_ms`.
    pub last_arrival_ms: Option<i64>,
    /// Offsets the seal records as lost after this segment (set by `repair`).
    pub lost_after: u64,
    /// Entries in its index file (0 if the file is missing or its header is bad).
    pub index_entries: u64,
    /// Everything found wrong; empty when clean.
    pub problems: Vec<Problem>,
}

impl SegmentReport {
    /// The report of a segment file of `file_bytes` bytes before its frames are looked at.
    fn unread(dir: &Path, base: Offset, file_bytes: u64) -> SegmentReport {
        SegmentReport {
            path: segment_path(dir, base),
            base,
            file_bytes,
            version: 0,
            sealed: false,
            records: 0,
            first_arrival_ms: None,
            last_arrival_ms: None,
            lost_after: 0,
            index_entries: index_entries_in(&index_path(dir, base)),
            problems: Vec::new(),
        }
    }

    /// One past the offset of its last record.
    pub fn end_offset(&self) -> Offset {
        Offset::new(self.base.get().saturating_add(self.records))
    }
}

/// Entries an index file of `len` bytes holds (whole entries after the header).
pub(super) fn index_entries_in(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| {
        m.len().saturating_sub(INDEX_HEADER_LEN as u64) / INDEX_ENTRY_LEN as u64
    })
}

/// The shape of a segment from its header, footer and index file size alone, without reading its
/// frames, except for an unsealed segment, whose frames are scanned to count them. Problems found
/// on the way (a bad header) are reported; the frames are not verified.
pub(crate) fn summarize_segment(dir: &Path, base: Offset) -> Result<SegmentReport> {
    let path = segment_path(dir, base);
    let file = File::open(&path).map_err(Error::io_at("open segment", &path))?;
    let file_bytes = file
        .metadata()
        .map_err(Error::io_at("stat segment", &path))?
        .len();
    let mut report = SegmentReport::unread(dir, base, file_bytes);
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let header = file
        .read_exact_at(&mut head, 0)
        .map_err(|_| Error::corrupt(&path, file_bytes, "shorter than a header"))
        .and_then(|()| check_header(&path, &head, base));
    let header = match header {
        Ok(header) => header,
        Err(e) => {
            report.problems.push(Problem {
                path,
                position: Some(0),
                what: e.to_string(),
            });
            return Ok(report);
        }
    };
    report.version = header.version;
    if let Some(f) = read_footer(&file, file_bytes) {
        let known = |t: i64| Some(t).filter(|_| f.record_count > 0);
        return Ok(SegmentReport {
            sealed: true,
            records: f.record_count,
            first_arrival_ms: known(f.first_arrival_ms),
            last_arrival_ms: known(f.last_arrival_ms),
            lost_after: f.lost_after,
            ..report
        });
    }
    drop(file);
    let bytes = std::fs::read(&path).map_err(Error::io_at("read segment", &path))?;
    let mut entries = SparseIndex::default();
    let scanned = scan(
        &bytes,
        base,
        header.layout(),
        (SEGMENT_HEADER_LEN, base),
        &mut entries,
    );
    Ok(SegmentReport {
        records: scanned.next_offset.get() - base.get(),
        first_arrival_ms: entries.first().map(|e| e.max_arrival_ms),
        last_arrival_ms: scanned.last_arrival_ms,
        ..report
    })
}

/// Reads a whole segment and its index file, checking every frame's CRC and offset, the seal
/// against the frames, and every index entry against the frame it points to. `next_base` is the
/// base offset of the next segment (`None` for the newest). Changes nothing.
pub(crate) fn verify_segment(
    dir: &Path,
    base: Offset,
    next_base: Option<Offset>,
) -> Result<SegmentReport> {
    let path = segment_path(dir, base);
    let problem = |position: Option<u64>, what: String| Problem {
        path: path.clone(),
        position,
        what,
    };
    let idx_path = index_path(dir, base);
    let bytes = std::fs::read(&path).map_err(Error::io_at("read segment", &path))?;
    let mut report = SegmentReport::unread(dir, base, bytes.len() as u64);
    let header = match check_header(&path, &bytes, base) {
        Ok(header) => header,
        Err(e) => {
            report.problems.push(problem(Some(0), e.to_string()));
            return Ok(report);
        }
    };
    report.version = header.version;
    let mut problems = Vec::new();
    let footer = SegmentFooter::decode_at_end(&bytes).ok();
    if footer.is_none() && next_base.is_some() {
        problems.push(problem(
            None,
            "not sealed, though a newer segment follows".into(),
        ));
    }
    let frames_end = footer.map_or(bytes.len(), |f| f.data_end as usize);
    let mut rebuilt = SparseIndex::default();
    let scanned = scan(
        &bytes[..frames_end],
        base,
        header.layout(),
        (SEGMENT_HEADER_LEN, base),
        &mut rebuilt,
    );
    let (pos, offset) = (scanned.end, scanned.next_offset);
    let stop = scanned.corrupt;
    let damaged = stop.is_some();
    match (stop, footer) {
        (Some(reason), _) => problems.push(problem(
            Some(pos as u64),
            format!(
                "{reason}; {} bytes of frames after it are unreadable",
                frames_end - pos
            ),
        )),
        (None, Some(f)) if pos != frames_end || offset.get() - base.get() != f.record_count => {
            problems.push(problem(
                Some(pos as u64),
                format!(
                    "frames end early: the seal promises {} records ending at byte {}",
                    f.record_count, f.data_end
                ),
            ))
        }
        (None, None) if bytes[pos..].iter().any(|&b| b != 0) => problems.push(problem(
            Some(pos as u64),
            "bytes after the last frame (a torn write?)".into(),
        )),
        _ => {}
    }
    let lost_after = footer.map_or(0, |f| f.lost_after);
    // Offsets lost to damage reported above are not reported again.
    if let Some(next) = next_base.filter(|_| !damaged) {
        if offset.get().saturating_add(lost_after) != next.get() {
            let accounted = if lost_after > 0 {
                format!(" (the seal accounts for {lost_after} lost offsets)")
            } else {
                String::new()
            };
            problems.push(problem(
                None,
                format!(
                    "holds offsets up to {offset}{accounted}, but the next segment starts at {next}"
                ),
            ));
        }
    }
    problems.extend(index_problem(
        &idx_path,
        base,
        &rebuilt,
        pos,
        footer.is_some(),
    ));
    Ok(SegmentReport {
        sealed: footer.is_some(),
        records: offset.get() - base.get(),
        first_arrival_ms: rebuilt.first().map(|e| e.max_arrival_ms),
        last_arrival_ms: scanned.last_arrival_ms,
        lost_after,
        problems,
        ..report
    })
}

/// What is wrong with the index file of the segment based at `base`, if anything: `rebuilt` is
/// the index its frames call for, up to `frames_end` where its good frames end (entries past
/// that are not blamed). A sealed segment's index must hold every entry; an active one's may
/// lag behind its frames.
pub(crate) fn index_problem(
    idx_path: &Path,
    base: Offset,
    rebuilt: &SparseIndex,
    frames_end: usize,
    sealed: bool,
) -> Option<Problem> {
    match (std::fs::metadata(idx_path), index::load(idx_path, base)) {
        (Err(_), _) => Some(Problem {
            path: idx_path.to_path_buf(),
            position: None,
            what: "index file missing (it will be rebuilt)".into(),
        }),
        (Ok(_), None) => Some(Problem {
            path: idx_path.to_path_buf(),
            position: Some(0),
            what: "index header is damaged or names another segment".into(),
        }),
        (Ok(meta), Some(entries)) => {
            // An index is determined by its frames, so every stored entry must equal the one the
            // scan rebuilt. Entries past damage reported above cannot be checked, and are not
            // blamed.
            let wrong = entries
                .iter()
                .take_while(|e| (e.position as usize) < frames_end)
                .enumerate()
                .position(|(i, e)| rebuilt.get(i) != Some(e));
            let expected_len = (INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN) as u64;
            if let Some(i) = wrong {
                Some(Problem {
                    path: idx_path.to_path_buf(),
                    position: Some((INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN) as u64),
                    what: format!("entry {i} does not point at the frame it names"),
                })
            } else if meta.len() != expected_len {
                Some(Problem {
                    path: idx_path.to_path_buf(),
                    position: Some(expected_len),
                    what: format!(
                        "{} bytes of damaged entries after entry {}",
                        meta.len() - expected_len,
                        entries.len()
                    ),
                })
            } else if entries.len() < rebuilt.len() && sealed {
                Some(Problem {
                    path: idx_path.to_path_buf(),
                    position: Some(expected_len),
                    what: format!(
                        "holds {} of the segment's {} entries",
                        entries.len(),
                        rebuilt.len()
                    ),
                })
            } else {
                None
            }
        }
    }
}
