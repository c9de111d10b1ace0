//! Read replicas (`shardlog serve --replica-of s3://BUCKET/PREFIX`): a data directory kept in
//! step with the bucket a primary tiers into, served read-only.
//!
//! A replica downloads no segment ahead of time. [`sync_from_bucket`] copies each live
//! stream's `stream.json` and `topology.log` and each shard's `remote.log` from the bucket into
//! the replica's data directory (replacing a file only when its bytes changed) and removes the
//! streams the bucket no longer holds; the replica's store, opened with the same bucket as its
//! tier, then takes the changes up ([`crate::Store::follow`]): new streams, reshards, and each
//! shard's new segments, which are read through the download cache like any remote segment.
//! A replica sees what the primary has uploaded: records reach it when their segment is sealed
//! and uploaded (within the primary's `max_segment_age`), and a shard's end on the replica is
//! the end of its last uploaded segment.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::Result;
use crate::log::remote::{Bucket, REMOTE_LOG_FILE};
use crate::manifest::{MANIFEST_FILE, TOPOLOGY_LOG_FILE};
use crate::restore::{live_streams, shard_objects};

/// What one [`sync_from_bucket`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Files written (they were new or had changed).
    pub files_written: usize,
    /// Streams removed (the bucket no longer holds them).
    pub streams_removed: usize,
}

/// Brings the stream files of the replica's data directory `data_dir` in step with `bucket`
/// (under `prefix`): see the module docs.
pub fn sync_from_bucket(bucket: &dyn Bucket, prefix: &str, data_dir: &Path) -> Result<SyncReport> {
    let streams_dir = data_dir.join("streams");
    crate::io::create_dir_all(&streams_dir)?;
    let mut report = SyncReport::default();
    let mut live = BTreeSet::new();
    for (name, (base_key, files)) in live_streams(bucket, prefix)? {
        let stream_dir = streams_dir.join(&name);
        crate::io::create_dir_all(&stream_dir.join("shards"))?;
        // The topology log first: a manifest newer than its log would fold nothing in, one
        // older takes the new log's lines past its own count.
        for file in [TOPOLOGY_LOG_FILE, MANIFEST_FILE] {
            if let Some(bytes) = bucket.get_bytes(&format!("{base_key}{file}"))? {
                report.files_written += usize::from(replace_if_changed(&stream_dir, file, &bytes)?);
            }
        }
        for (shard, objects) in shard_objects(&files) {
            if !objects.contains(&REMOTE_LOG_FILE) {
                continue;
            }
            let shard_dir = stream_dir.join("shards").join(shard);
            crate::io::create_dir_all(&shard_dir)?;
            if let Some(bytes) =
                bucket.get_bytes(&format!("{base_key}{shard}/{REMOTE_LOG_FILE}"))?
            {
                report.files_written +=
                    usize::from(replace_if_changed(&shard_dir, REMOTE_LOG_FILE, &bytes)?);
            }
        }
        live.insert(name);
    }
    for entry in
        std::fs::read_dir(&streams_dir).map_err(crate::error::Error::io_at("list", &streams_dir))?
    {
        let entry = entry.map_err(crate::error::Error::io_at("list", &streams_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) && entry.path().join(MANIFEST_FILE).exists() {
            crate::io::remove_dir_all("remove a stream the primary deleted", &entry.path())?;
            report.streams_removed += 1;
        }
    }
    Ok(report)
}

/// Replaces `dir/name` with `bytes` unless it holds them already; returns whether it wrote.
fn replace_if_changed(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(dir.join(name)).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    // A replica's files are copies: a power cut costs a sync from the bucket, not data.
    crate::io::write_atomically_unsynced_dir(dir, name, bytes)?;
    Ok(true)
}
