//! The delivery checkpoint (`checkpoint.json`): how far the buffer is delivered, and the batch
//! being delivered (pending), so a crash redelivers it under the same keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::io;

use super::CHECKPOINT_FILE;

/// A batch whose objects may be (partly) written but whose delivery is not yet recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// For a Kinesis-stream source: the index of the shard the batch comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    pub from: u64,
    pub to: u64,
    pub key: String,
    pub error_key: String,
}

/// Version of `checkpoint.json`. Files without a `format_version` (written before it was
/// added) are version 1, which they match.
pub(super) const CHECKPOINT_VERSION: u16 = 1;

/// The durable delivery position (`checkpoint.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    #[serde(default = "first_checkpoint_version")]
    pub format_version: u16,
    /// Every buffered record below this offset is delivered.
    pub delivered: u64,
    pub pending: Option<Pending>,
    /// For a Kinesis-stream source: per shard index, the offset below which it is delivered.
    /// Kept in the source group (saved there first); read from checkpoint files written before
    /// the group existed, which the group then adopts.
    #[serde(default, skip_serializing)]
    pub shards: BTreeMap<u32, u64>,
    /// For a Kinesis-stream source: closed shards delivered to their end. Like `shards`.
    #[serde(default, skip_serializing)]
    pub finished: BTreeSet<u32>,
}

/// Nothing delivered yet.
impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            format_version: CHECKPOINT_VERSION,
            delivered: 0,
            pending: None,
            shards: BTreeMap::new(),
            finished: BTreeSet::new(),
        }
    }
}

pub(super) fn first_checkpoint_version() -> u16 {
    1
}

/// Reads a delivery stream's checkpoint (none yet: nothing delivered).
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let Some(checkpoint) = io::read_json::<Checkpoint>(&path)? else {
        return Ok(Checkpoint::default());
    };
    io::check_version(&path, checkpoint.format_version, 1, CHECKPOINT_VERSION)?;
    Ok(checkpoint)
}
