//! `topology.log`: a stream's shard changes appended one record a line beside `stream.json`,
//! so a split or merge writes what it changes, not every shard the stream has had.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::ShardEntry;

/// One record of `topology.log`: its number, the shards a change added or altered (whole
/// entries) and removed, and the next shard index.
///
/// Records are numbered 1, 2, ... on from the manifest's `topology_changes`, which counts the
/// records folded into it: a log that a fold could not remove (a crash between writing the
/// manifest and removing the log) holds only records at or below it, and they are skipped, not
/// replayed over the newer manifest (which would undo later changes). Records without a number
/// (version 2) apply only to a manifest that has folded none.
///
/// Format: one line per record, `CRC32-HEX JSON\n`, the CRC32 (8 lowercase hex digits) over the
/// JSON bytes. A last line that is incomplete or fails its CRC is the torn end of a crash (the
/// change it held was not acknowledged) and is ignored; one before it is damage (`Corrupt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyChange {
    /// Its number (see above); `None` in a version-2 log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The manifest's `next_shard_index` after the change.
    pub next_shard_index: u32,
    /// Shards added or changed, whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<ShardEntry>,
    /// Indexes of shards removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<u32>,
}

/// Reads the records of a topology log (none if there is no log).
pub(super) fn read_log(path: &Path) -> Result<Vec<TopologyChange>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut changes = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            break; // the last record, torn by a crash: its change was never acknowledged
        };
        match parse_record(&rest[..end]) {
            Some(change) => changes.push(change),
            None if pos + end + 1 == bytes.len() => break, // torn too
            None => {
                return Err(Error::corrupt(
                    path,
                    pos as u64,
                    "a damaged topology record before the last one",
                ))
            }
        }
        pos += end + 1;
    }
    Ok(changes)
}

/// One line of the log: `CRC32-HEX JSON`, checked.
pub(super) fn parse_record(line: &[u8]) -> Option<TopologyChange> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Appends a record to a topology log and makes it durable.
pub(super) fn append_log(path: &Path, change: &TopologyChange) -> Result<()> {
    let json = serde_json::to_vec(change)
        .map_err(|e| Error::io("encode topology change", path, std::io::Error::other(e)))?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    crate::io::append_line_durably(path, &line, |record| parse_record(record).is_some())
}
