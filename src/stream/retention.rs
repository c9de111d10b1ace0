//! What the store's background thread does to a stream: enforce retention (delete expired
//! segments, forget emptied closed shards) and close idle shards.

use std::path::Path;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use super::{shards_dir, Stream};
use crate::error::{Error, Result};
use crate::hash_key::{parse_shard_id, shard_id};
use crate::manifest::StreamManifest;

impl Stream {
    /// Closes shards not used for `idle`: their maps are unmapped and files closed (the next use
    /// reopens them, which verifies only the tail after the last index entry). A shard some
    /// reader or writer still holds stays open. Returns how many were closed.
    pub fn close_idle_shards(&self, idle: Duration) -> usize {
        let topology = self.read_topology();
        let cutoff = self
            .context
            .clock
            .now_ms()
            .saturating_sub(idle.as_millis() as i64);
        let mut closed = 0;
        for slot in topology.shards.values() {
            if slot.last_used_ms.load(AtomicOrdering::Relaxed) > cutoff {
                continue;
            }
            let mut shard = slot.shard.lock().unwrap_or_else(|e| e.into_inner());
            if shard.as_ref().is_some_and(|s| Arc::strong_count(s) == 1) {
                *shard = None;
                closed += 1;
            }
        }
        closed
    }

    /// Deletes what retention no longer keeps: whole segments older than the retention period in
    /// every shard, and closed shards that no longer hold any record (they leave describe and
    /// list, as in Kinesis). Returns the number of records deleted.
    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<u64> {
        // Deleting segments needs only the shared lock (each shard serializes itself), so puts
        // go on meanwhile; the exclusive lock is taken only to drop emptied closed shards.
        let (deleted, emptied) = {
            let topology = self.read_topology();
            let cutoff = now_ms - i64::from(topology.manifest.retention_hours) * 3_600_000;
            let options = self.shard_options(&topology.manifest);
            let mut deleted = 0;
            let mut emptied = Vec::new();
            for entry in &topology.manifest.shards {
                let slot = &topology.shards[&entry.index];
                let remaining = match slot.open_if_exists(&options)? {
                    Some(shard) => {
                        deleted += shard.delete_before(cutoff)?.records;
                        shard.next_offset().get() - shard.first_offset().get()
                    }
                    None => 0,
                };
                if let Some(c) = entry.closed {
                    if remaining == 0 && c.closed_ms < cutoff {
                        emptied.push(entry.index);
                    }
                }
            }
            (deleted, emptied)
        };
        if !emptied.is_empty() {
            // Closed shards take no more records, so what was empty stays empty.
            let mut topology = self.write_topology();
            self.update_manifest(&mut topology, |m| {
                m.shards.retain(|s| !emptied.contains(&s.index));
                Ok(())
            })?;
            for index in emptied {
                let dir = shards_dir(&self.dir).join(shard_id(index));
                crate::io::remove_dir_all("remove expired shard", &dir)?;
            }
        }
        // What an earlier run forgot but failed to remove (the read lock keeps a reshard from
        // committing meanwhile).
        remove_forgotten_shards(&self.dir, &self.read_topology().manifest)?;
        Ok(deleted)
    }
}

/// Removes the directories of shards the manifest no longer lists: closed shards retention
/// forgot, which a crash or a failed removal left on disk. Only indexes below the manifest's
/// `next_shard_index` are touched, so the directories of a reshard's children, made before the
/// reshard commits, never are. Returns how many were removed.
pub(super) fn remove_forgotten_shards(
    stream_dir: &Path,
    manifest: &StreamManifest,
) -> Result<usize> {
    let dir = shards_dir(stream_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let name = entry.map_err(Error::io_at("list", &dir))?.file_name();
        let Some(index) = parse_shard_id(&name.to_string_lossy()) else {
            continue;
        };
        let listed = manifest
            .shards
            .binary_search_by_key(&index, |s| s.index)
            .is_ok();
        if !listed && index < manifest.next_shard_index {
            crate::io::remove_dir_all("remove expired shard", &dir.join(&name))?;
            removed += 1;
        }
    }
    Ok(removed)
}
