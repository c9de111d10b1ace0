//! `topology.log`: a stream's shard changes appended one record a line beside `stream.json`,
//! so a split or merge writes what it changes, not every shard the stream has had.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;

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
    crate::io::read_checked_lines(path, "topology record")
}

/// Appends a record to a topology log and makes it durable.
pub(super) fn append_log(path: &Path, change: &TopologyChange) -> Result<()> {
    crate::io::append_checked_line(path, change)
}
