//! Tiering a stream (what the store's tiering thread does to it): each shard's
//! [`Shard::tier_step`](crate::log::shard::Shard::tier_step), and the stream's manifest and
//! topology log copied beside its shards' objects, so a bucket holds what `restore` needs.

use std::sync::Arc;

use super::Stream;
use crate::error::Result;
use crate::log::remote::{ShardTier, TierPolicy, TierWork};
use crate::log::shard::{TierReport, TierStatus};
use crate::manifest::{StreamTiering, MANIFEST_FILE, TOPOLOGY_LOG_FILE};

impl Stream {
    /// The stream's place in the store's tier: `streams/NAME/CREATED_MS` (the name as on disk),
    /// so a stream deleted and created again never shares objects with its predecessor.
    pub(crate) fn tier_key(&self, created_ms: i64) -> Option<ShardTier> {
        let tier = self.context.tier.as_ref()?;
        Some(ShardTier::new(
            Arc::clone(tier),
            stream_tier_key(&self.dir, created_ms)?,
        ))
    }

    /// One round of tiering over the shards `work` names (that were ever written), and the
    /// manifest files copied when they changed. Stops at the first failure (the caller backs
    /// off).
    pub(crate) fn tier_step(&self, work: &TierWork) -> Result<TierReport> {
        let mut total = TierReport::default();
        // The topology's lock is not held while uploading: resharding goes on meanwhile.
        let (stream_tier, options, slots, policy) = {
            let topology = self.read_topology();
            let Some(stream_tier) = self.tier_key(topology.manifest.created_ms) else {
                return Ok(total);
            };
            let policy = tier_policy(
                stream_tier.tier().options().policy(),
                topology.manifest.tiering,
            );
            if !work.covers_any_under(&format!("{}/", stream_tier.key())) {
                return Ok(total);
            }
            let slots: Vec<_> = topology.shards.values().cloned().collect();
            (
                stream_tier,
                self.shard_options(&topology.manifest),
                slots,
                policy,
            )
        };
        self.upload_manifest_files(&stream_tier)?;
        for slot in &slots {
            let named = shard_dir_name(&slot.dir).map(|name| stream_tier.child(name));
            if !named.is_some_and(|tier| work.covers(tier.key())) {
                continue;
            }
            let Some(shard) = slot.open_if_exists(&options)? else {
                continue;
            };
            total += shard.tier_step_with(&policy)?;
        }
        Ok(total)
    }

    /// For a read replica (whose stream files are replaced with the primary's copies as they
    /// change): takes up the manifest on disk if it changed (reshards, settings, consumers),
    /// and lets every shard adopt the segments its `remote.log` now lists. Returns the
    /// segments adopted.
    pub(crate) fn follow(&self) -> Result<usize> {
        let manifest = crate::manifest::StreamManifest::read(&self.dir)?;
        // The write lock (which holds up puts and reads) only when the manifest changed.
        let changed = self.read_topology().manifest != manifest;
        if changed {
            let mut topology = self.topology.write().unwrap_or_else(|e| e.into_inner());
            topology.manifest = manifest;
            topology.sync_with_manifest(&self.dir, &self.context.open_shards);
        }
        let slots: Vec<_> = self.read_topology().shards.values().cloned().collect();
        let options = self.shard_options(&self.read_topology().manifest);
        let mut adopted = 0;
        for slot in slots {
            if let Some(shard) = slot.open_if_exists(&options)? {
                adopted += shard.follow_remote()?;
            }
        }
        if changed || adopted > 0 {
            self.changes.notify();
        }
        Ok(adopted)
    }

    /// Where the stream's segments are (shards open now).
    pub fn tier_status(&self) -> TierStatus {
        let topology = self.read_topology();
        let mut total = TierStatus::default();
        for slot in topology.shards.values() {
            let shard = slot.shard.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(shard) = shard {
                total += shard.tier_status();
            }
        }
        total
    }

    /// Copies `stream.json` and `topology.log` to the bucket when their bytes differ from the
    /// last copy this process made.
    fn upload_manifest_files(&self, stream_tier: &ShardTier) -> Result<()> {
        let mut uploaded = self
            .manifest_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for name in [MANIFEST_FILE, TOPOLOGY_LOG_FILE] {
            let bytes = match std::fs::read(self.dir.join(name)) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // `topology.log` is removed once folded into `stream.json`: its copy goes
                    // too (once this process copied it; a leftover from an earlier process is
                    // harmless, its numbered lines are skipped).
                    if uploaded.contains_key(name) {
                        let bucket = stream_tier.tier().bucket();
                        bucket.delete(&stream_tier.object_key_of(name))?;
                        uploaded.remove(name);
                    }
                    continue;
                }
                Err(e) => return Err(crate::error::Error::io("read", &self.dir.join(name), e)),
            };
            let crc = crc32fast::hash(&bytes);
            if uploaded.get(name) == Some(&crc) {
                continue;
            }
            stream_tier
                .tier()
                .bucket()
                .put_bytes(&stream_tier.object_key_of(name), &bytes)?;
            uploaded.insert(name, crc);
        }
        Ok(())
    }
}

/// The store's tiering `policy` with a stream's own `tiering` over it.
fn tier_policy(policy: TierPolicy, tiering: Option<StreamTiering>) -> TierPolicy {
    let Some(tiering) = tiering else {
        return policy;
    };
    TierPolicy {
        upload: tiering.enabled,
        local_retention_bytes: tiering
            .local_retention_bytes
            .or(policy.local_retention_bytes),
        local_retention: tiering
            .local_retention_hours
            .map(|h| std::time::Duration::from_secs(u64::from(h) * 3600))
            .or(policy.local_retention),
        ..policy
    }
}

/// The tier key of the stream in `stream_dir` created at `created_ms`:
/// `streams/NAME/CREATED_MS`, the name as on disk (a shard's key adds its directory's name).
pub fn stream_tier_key(stream_dir: &std::path::Path, created_ms: i64) -> Option<String> {
    let disk_name = stream_dir.file_name()?.to_str()?;
    Some(format!("streams/{disk_name}/{created_ms}"))
}

/// A shard's part of its tier key: its directory's name (`shardId-…`).
pub(super) fn shard_dir_name(dir: &std::path::Path) -> Option<&str> {
    dir.file_name()?.to_str()
}
