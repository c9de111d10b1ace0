//! A tiered store: its tiering thread (rounds over every stream, backing off while the bucket
//! fails), the deletion of a deleted stream's objects, what `tier_status` reports, and a read
//! replica's following of its primary's bucket.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{all_streams, each_stream, Inner, Store};
use crate::error::Result;
use crate::io;
use crate::log::remote::{CacheStats, TierWork};
use crate::log::shard::{TierReport, TierStatus};
use crate::manifest::MANIFEST_FILE;
use crate::names::{self, Listed};
use crate::stream::{check_stream_name, Stream};

/// Where downloaded remote segments are cached (emptied at open).
pub const TIER_CACHE_DIR: &str = "tier-cache";
/// Deleted streams whose objects the tiering thread has still to delete from the bucket.
pub const TIER_DELETIONS_FILE: &str = "tier-deletions.log";

/// A line of [`TIER_DELETIONS_FILE`]: every incarnation of the stream (its name as on disk)
/// created before `before_ms` is to go from the bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct TierDeletion {
    stream: String,
    before_ms: i64,
}
/// The tiering thread's record of its passes.
#[derive(Debug, Default)]
pub(super) struct TieringState {
    /// Totals over every pass.
    uploaded: u64,
    uploaded_bytes: u64,
    dropped_local: u64,
    /// The last pass's error, if it failed (the object store unreachable, say).
    last_error: Option<String>,
    /// Passes failed in a row (the back-off grows with them).
    failures: u32,
}

/// Where a store's data is, for metrics and `inspect` ([`Store::tier_status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreTierStatus {
    /// Where the segments of the shards open now are; `local_only` is the upload backlog.
    pub segments: TierStatus,
    /// Segments uploaded since the store opened.
    pub uploaded: u64,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Local copies deleted since the store opened.
    pub dropped_local: u64,
    /// The last pass's error, while the object store fails.
    pub last_error: Option<String>,
    /// The download cache.
    pub cache: CacheStats,
}

impl Store {
    /// Runs one tiering pass now (the tiering thread does this every `TierOptions::interval`):
    /// uploads sealed segments and drops local copies past the local retention, in every
    /// stream. Does nothing without [`crate::StoreOptions::tier`].
    pub fn tier_now(&self) -> Result<TierReport> {
        tier_pass(&self.inner, &TierWork::everything())
    }

    /// For a read replica, whose data directory is kept in step with a primary's bucket
    /// (the `replica` module's `sync_from_bucket`): opens the streams whose directories appeared, forgets those whose
    /// directories went, and lets every stream take up its changed manifest and new remote
    /// segments. Returns the segments adopted.
    pub fn follow(&self) -> Result<usize> {
        let listed = names::list_dir(
            &self.streams_dir(),
            check_stream_name,
            names::recorded_name(MANIFEST_FILE),
        )?;
        let mut present = std::collections::BTreeSet::new();
        for entry in listed {
            let Listed::User(name, path) = entry else {
                continue;
            };
            present.insert(name.clone());
            if self.stream(&name).is_err() {
                match Stream::open(path, self.inner.context.clone()) {
                    Ok(stream) => {
                        self.inner
                            .streams
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name, Arc::new(stream));
                    }
                    Err(e) => {
                        tracing::warn!(stream = %name, error = %e, "a replicated stream does not open yet")
                    }
                }
            }
        }
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| present.contains(name));
        let mut adopted = 0;
        each_stream(&self.inner, "following the primary", |stream| {
            adopted += stream.follow()?;
            Ok(())
        })?;
        Ok(adopted)
    }

    /// Whether the store tiers sealed segments to an object store.
    pub fn is_tiered(&self) -> bool {
        self.inner.context.tier.is_some()
    }

    /// Where the store's data is: the upload backlog, what is remote, the cache, the last
    /// error of the tiering thread.
    pub fn tier_status(&self) -> StoreTierStatus {
        let mut status = StoreTierStatus::default();
        for stream in all_streams(&self.inner) {
            status.segments += stream.tier_status();
        }
        let state = self.inner.tiering.lock().unwrap_or_else(|e| e.into_inner());
        status.uploaded = state.uploaded;
        status.uploaded_bytes = state.uploaded_bytes;
        status.dropped_local = state.dropped_local;
        status.last_error = state.last_error.clone();
        status.cache = self
            .inner
            .context
            .tier
            .as_ref()
            .map(|t| t.cache().stats())
            .unwrap_or_default();
        status
    }
}

/// Records, before `name` (created as the stream of that name is now) goes, that its objects
/// are to go from the bucket too; the tiering thread deletes them and `restore` never brings it
/// back.
pub(super) fn record_deletion(inner: &Inner, name: &str, now_ms: i64) -> Result<()> {
    io::append_checked_line(
        &inner.dir.join(TIER_DELETIONS_FILE),
        &TierDeletion {
            stream: names::disk_name(name),
            before_ms: now_ms.saturating_add(1),
        },
    )
}

/// One tiering pass over the shards `work` names; the totals are kept for
/// [`Store::tier_status`].
fn tier_pass(inner: &Inner, work: &TierWork) -> Result<TierReport> {
    let mut report = TierReport::default();
    let result = delete_tiered_streams(inner).and_then(|()| {
        each_stream(inner, "tiering", |stream| {
            report += stream.tier_step(work)?;
            Ok(())
        })
    });
    let mut state = inner.tiering.lock().unwrap_or_else(|e| e.into_inner());
    state.uploaded += report.uploaded as u64;
    state.uploaded_bytes += report.uploaded_bytes;
    state.dropped_local += report.dropped_local as u64;
    match &result {
        Ok(()) => {
            state.last_error = None;
            state.failures = 0;
        }
        Err(e) => {
            state.last_error = Some(e.to_string());
            state.failures = state.failures.saturating_add(1);
        }
    }
    result.map(|()| report)
}

/// Deletes from the bucket the objects of the streams [`TIER_DELETIONS_FILE`] lists, and
/// forgets each once done. An incarnation's `DELETED` marker goes up first and its manifest
/// next, so a `restore` that meets a half-deleted stream skips it.
fn delete_tiered_streams(inner: &Inner) -> Result<()> {
    let Some(tier) = &inner.context.tier else {
        return Ok(());
    };
    let path = inner.dir.join(TIER_DELETIONS_FILE);
    let pending: Vec<TierDeletion> = io::read_checked_lines(&path, "tier deletion")?;
    if pending.is_empty() {
        return Ok(());
    }
    let bucket = tier.bucket();
    for deletion in &pending {
        let root = format!("{}streams/{}/", tier.options().prefix, deletion.stream);
        let objects = bucket.list(&root)?;
        let mut incarnations: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (key, _) in objects {
            let created = key
                .strip_prefix(&root)
                .and_then(|rest| rest.split('/').next())
                .and_then(|c| c.parse::<i64>().ok());
            if let Some(created) = created.filter(|&c| c < deletion.before_ms) {
                incarnations.entry(created).or_default().push(key);
            }
        }
        for (created, mut keys) in incarnations {
            let marker = format!("{root}{created}/{DELETED_MARKER}");
            bucket.put_bytes(&marker, b"")?;
            // The manifest first: without it, nothing restores the stream.
            keys.sort_by_key(|k| !k.ends_with(&format!("/{}", crate::manifest::MANIFEST_FILE)));
            for key in keys.iter().filter(|k| **k != marker) {
                bucket.delete(key)?;
            }
            bucket.delete(&marker)?;
        }
    }
    // Every listed deletion is done: forget them (lines appended meanwhile stay).
    let _admin = inner.admin.lock().unwrap_or_else(|e| e.into_inner());
    let now: Vec<TierDeletion> = io::read_checked_lines(&path, "tier deletion")?;
    let left: Vec<u8> = now
        .iter()
        .filter(|d| !pending.contains(d))
        .map(|d| io::encode_checked_line(&path, d))
        .collect::<Result<Vec<_>>>()?
        .concat();
    if left.is_empty() {
        io::remove_file("forget tier deletions", &path)?;
        Ok(())
    } else {
        io::write_atomically(&inner.dir, TIER_DELETIONS_FILE, &left)
    }
}

/// The object that marks a stream incarnation in the bucket as deleted (restore skips it).
pub const DELETED_MARKER: &str = "DELETED";

/// Longest wait between tiering passes while the object store fails.
const MAX_TIER_BACKOFF: Duration = Duration::from_secs(60);

/// The nice value of the tiering thread (0 normal, 19 lowest).
const TIERING_NICE: i32 = 10;

pub(super) fn tiering_loop(inner: Weak<Inner>, interval: Duration) {
    // Uploads are background work: under CPU contention appends come first (as RocksDB
    // lowers its compaction threads' priority). On Linux the nice value is the calling
    // thread's. A failure (a sandbox forbidding it) only leaves the priority as it was.
    let _ = rustix::process::setpriority_process(None, TIERING_NICE);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        // Failing passes back off (doubling up to a minute): appends go on meanwhile, the local
        // disk holding what waits to go.
        let failures = strong
            .tiering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures;
        let work = if failures == 0 {
            // Until a segment is sealed (then that shard's round), or the interval passes (a
            // round over all: old active segments, local retention by age).
            let work = match &strong.context.tier {
                Some(tier) => tier.wait_for_work(interval),
                None => TierWork::everything(),
            };
            if strong.shutdown.wait(Duration::ZERO) {
                return;
            }
            work
        } else {
            let wait = interval
                .saturating_mul(1 << failures.min(16))
                .min(MAX_TIER_BACKOFF)
                .max(interval);
            if strong.shutdown.wait(wait) {
                return;
            }
            // What failed may be anywhere: every shard.
            TierWork::everything()
        };
        let _ = tier_pass(&strong, &work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::PutRecord;
    use crate::{StoreOptions, StreamConfig, TierConfig, TierOptions};

    /// A round after a seal tiers the shard that sealed, not every shard of every stream.
    #[test]
    fn a_round_after_a_seal_tiers_only_the_shard_that_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Arc::new(crate::DirBucket::new(dir.path().join("bucket")).unwrap());
        let options = StoreOptions {
            shard: crate::ShardOptions {
                segment_bytes: 16 * 1024,
                ..crate::ShardOptions::default()
            },
            retention_interval: None,
            tier: Some(TierConfig {
                bucket,
                options: TierOptions {
                    interval: None,
                    ..TierOptions::default()
                },
            }),
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path().join("data"), options).unwrap();
        let tier = Arc::clone(store.inner.context.tier.as_ref().unwrap());
        assert!(
            tier.wait_for_work(Duration::ZERO).everything,
            "a first round over all"
        );
        let streams = ["a", "b"].map(|name| {
            let stream = store
                .create_stream(name, StreamConfig::provisioned(1))
                .unwrap();
            for i in 0..200 {
                stream
                    .put_record(&PutRecord::new("k", &[i as u8; 300]))
                    .unwrap();
            }
            stream
        });
        let work = tier.wait_for_work(Duration::ZERO);
        assert!(!work.everything);
        assert_eq!(work.shards.len(), 2, "{work:?}");
        let a = work
            .shards
            .iter()
            .find(|k| k.contains("/a/"))
            .unwrap()
            .clone();
        let only_a = TierWork {
            everything: false,
            shards: [a].into(),
        };
        let report = tier_pass(&store.inner, &only_a).unwrap();
        assert!(report.uploaded > 0, "{report:?}");
        let [a, b] = [&streams[0], &streams[1]].map(|s| s.tier_status());
        assert_eq!(a.local_only, 0, "{a:?}");
        assert!(b.local_only > 0 && b.both == 0, "{b:?}");
        tier_pass(&store.inner, &TierWork::everything()).unwrap();
        assert_eq!(streams[1].tier_status().local_only, 0);
    }

    #[test]
    fn work_covers_shards_by_key_and_streams_by_prefix() {
        let work = TierWork {
            everything: false,
            shards: ["streams/a/1/shardId-000000000001".to_string()].into(),
        };
        assert!(work.covers("streams/a/1/shardId-000000000001"));
        assert!(!work.covers("streams/a/1/shardId-000000000000"));
        assert!(work.covers_any_under("streams/a/1/"));
        assert!(!work.covers_any_under("streams/a/10/"));
        assert!(!work.covers_any_under("streams/b/1/"));
        assert!(TierWork::everything().covers_any_under("streams/b/1/"));
    }
}
