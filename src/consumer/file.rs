//! Group files read offline (`shardlog inspect`, `verify`): without opening the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{parse_group_file, GROUPS_DIR};
use crate::error::{Error, Result};
use crate::hash_key::shard_id;
use crate::{Offset, SequenceNumber};

/// A group's file as offline tools show it (`shardlog inspect`), read without opening the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupFiles {
    /// The group's name.
    pub name: String,
    /// The stream it reads.
    pub stream: String,
    /// Lease length, ms.
    pub lease_ms: i64,
    /// Workers recorded, with when each last renewed (ms since the Unix epoch).
    pub workers: BTreeMap<String, i64>,
    /// Per shard, in index order.
    pub shards: Vec<GroupShardFiles>,
}

/// One shard of a [`GroupFiles`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupShardFiles {
    /// Its id.
    pub shard_id: String,
    /// The worker recorded as holding the lease (it may have expired).
    pub owner: Option<String>,
    /// When the lease expires, ms since the Unix epoch.
    pub lease_expires_ms: i64,
    /// The last processed sequence number, if any.
    pub checkpoint: Option<String>,
    /// Processed to its end.
    pub finished: bool,
}

/// The consumer groups of a data directory, by name (none if it has no `groups/`).
pub fn read_group_files(data_dir: &Path) -> Result<Vec<GroupFiles>> {
    let mut groups = Vec::new();
    for path in group_file_paths(data_dir)? {
        // A group deleted since the listing is skipped.
        groups.extend(read_group_file(&path)?);
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(groups)
}

/// The group files under `groups/` of a data directory, sorted (temporary files left by an
/// interrupted write are not group files).
pub fn group_file_paths(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = data_dir.join(GROUPS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(Error::io_at("list", &dir))?.path();
        // Temporary files end in `.tmp`; a group of an older store may start with `.`.
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// One group file, read and checked without opening the store: `None` if it does not exist.
pub fn read_group_file(path: &Path) -> Result<Option<GroupFiles>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let file = parse_group_file(path, &bytes)?;
    Ok(Some(GroupFiles {
        shards: file
            .shards
            .iter()
            .map(|(index, l)| GroupShardFiles {
                shard_id: shard_id(*index),
                owner: l.owner.clone(),
                lease_expires_ms: l.expires_ms,
                checkpoint: l
                    .checkpoint
                    .filter(|&c| c > 0)
                    .map(|c| SequenceNumber::new(*index, Offset::new(c - 1)).to_string()),
                finished: l.finished,
            })
            .collect(),
        name: file.name,
        stream: file.stream,
        lease_ms: file.lease_ms,
        workers: file.workers,
    }))
}
