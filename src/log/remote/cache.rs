//! The cache of remote segments: whole segments downloaded into a local directory, checked,
//! mapped and kept while they fit in a byte budget (least recently used out first); windows of
//! segments fetched by range reads are kept in memory beside them (see `window.rs`).
//!
//! A reader holding a segment keeps its map after eviction (the file is unlinked, not cut), so
//! the budget bounds what the cache keeps, plus what reads in flight hold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{RemoteSegment, ShardTier, Transfer};
use crate::error::{Error, Result};
use crate::log::format::{file_name, INDEX_EXT, SEGMENT_EXT};
use crate::log::segment::{load_remote_copy, SegmentData};
use crate::types::Offset;

/// Downloaded segments, by object key.
pub struct SegmentCache {
    dir: PathBuf,
    pub(super) max_bytes: u64,
    /// The smallest window a range read fetches.
    pub(super) range_read_bytes: u64,
    state: Mutex<CacheState>,
    /// Segment maps and windows fetched by range reads.
    pub(super) windows: Mutex<super::window::Windows>,
    /// One lock per key being downloaded, so concurrent readers of one segment download it once.
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    next_dir: AtomicU64,
    downloads: AtomicU64,
    pub(super) downloaded_bytes: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) range_reads: AtomicU64,
    /// Read-ahead downloads running now (at most [`MAX_READ_AHEAD`]).
    reading_ahead: std::sync::atomic::AtomicUsize,
}

/// Most read-ahead downloads at once over the whole cache.
const MAX_READ_AHEAD: usize = 2;

#[derive(Default)]
struct CacheState {
    entries: HashMap<String, Entry>,
    bytes: u64,
    tick: u64,
}

struct Entry {
    data: Arc<SegmentData>,
    dir: PathBuf,
    bytes: u64,
    last_used: u64,
}

/// What a cache has done (for metrics and `inspect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Segments downloaded.
    pub downloads: u64,
    /// Windows of segments fetched by range reads.
    pub range_reads: u64,
    /// Bytes downloaded (segments, indexes and windows).
    pub downloaded_bytes: u64,
    /// Reads served by a segment already cached.
    pub hits: u64,
    /// Bytes of segments cached now.
    pub resident_bytes: u64,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SegmentCache {
    /// A cache in `dir` (emptied: what an earlier process left is only copies) of at most
    /// `max_bytes`, fetching windows of at least `range_read_bytes` (see
    /// [`super::TierOptions::range_read_bytes`]).
    pub fn new(dir: PathBuf, max_bytes: u64, range_read_bytes: u64) -> Result<SegmentCache> {
        if dir.exists() {
            crate::io::remove_dir_all("empty the segment cache", &dir)?;
        }
        crate::io::create_dir_all(&dir)?;
        Ok(SegmentCache {
            dir,
            max_bytes,
            range_read_bytes: range_read_bytes.max(1),
            state: Mutex::default(),
            windows: Mutex::default(),
            loading: Mutex::default(),
            next_dir: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
            downloaded_bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            range_reads: AtomicU64::new(0),
            reading_ahead: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// What the cache has done.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            downloads: self.downloads.load(Ordering::Relaxed),
            range_reads: self.range_reads.load(Ordering::Relaxed),
            downloaded_bytes: self.downloaded_bytes.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            resident_bytes: self.lock().bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn cached(&self, key: &str) -> Option<Arc<SegmentData>> {
        let mut state = self.lock();
        state.tick += 1;
        let tick = state.tick;
        let entry = state.entries.get_mut(key)?;
        entry.last_used = tick;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&entry.data))
    }

    /// Starts downloading the remote segment `info` of `shard` in the background unless it is
    /// cached, being downloaded, or [`MAX_READ_AHEAD`] read-aheads are running: a sequential
    /// reader then finds the next segment ready. A failure is only logged (the read that needs
    /// the segment downloads it again, and reports its error).
    pub(crate) fn read_ahead(&self, shard: &ShardTier, info: &RemoteSegment) {
        let key = shard.segment_key(Offset::new(info.base));
        let busy = self.lock().entries.contains_key(&key)
            || self
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&key);
        if busy {
            return;
        }
        if self.reading_ahead.fetch_add(1, Ordering::AcqRel) >= MAX_READ_AHEAD {
            self.reading_ahead.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let (shard, info) = (shard.clone(), *info);
        let spawned = std::thread::Builder::new()
            .name("shardlog-read-ahead".into())
            .spawn(move || {
                let cache = shard.tier().cache();
                if let Err(e) = cache.load(&shard, &info) {
                    tracing::debug!(error = %e, "read-ahead of a remote segment failed");
                }
                cache.reading_ahead.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.reading_ahead.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The remote segment `info` of `shard`, downloaded (and checked) unless cached.
    pub(crate) fn load(&self, shard: &ShardTier, info: &RemoteSegment) -> Result<Arc<SegmentData>> {
        let base = Offset::new(info.base);
        let key = shard.segment_key(base);
        if let Some(data) = self.cached(&key) {
            return Ok(data);
        }
        let gate = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(loading.entry(key.clone()).or_default())
        };
        let _downloading = gate.lock().unwrap_or_else(|e| e.into_inner());
        let result = match self.cached(&key) {
            Some(data) => Ok(data),
            None => self.download(shard, info, &key),
        };
        self.loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result
    }

    fn download(
        &self,
        shard: &ShardTier,
        info: &RemoteSegment,
        key: &str,
    ) -> Result<Arc<SegmentData>> {
        let base = Offset::new(info.base);
        let bucket = shard.tier().bucket();
        let dir = self
            .dir
            .join(self.next_dir.fetch_add(1, Ordering::Relaxed).to_string());
        crate::io::create_dir_all(&dir)?;
        let cleanup = |e: Error| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let segment_file = dir.join(file_name(base, SEGMENT_EXT));
        let name = PathBuf::from(bucket.url(key));
        let got = bucket.get_to_file(key, &segment_file).map_err(cleanup)?;
        let mut downloaded = got.len;
        check_copy(got, &name, info).map_err(cleanup)?;
        if info.has_index {
            // The index is a cache: a missing or bad one costs a scan, not the read.
            let index_file = dir.join(file_name(base, INDEX_EXT));
            match bucket.get_to_file(&shard.index_key(base), &index_file) {
                Ok(index) => downloaded += index.len,
                Err(e) => {
                    tracing::warn!(object = %name.display(), error = %e, "index object unavailable: scanning the segment instead");
                    let _ = std::fs::remove_file(&index_file);
                }
            }
        }
        let data = Arc::new(load_remote_copy(&dir, base, &name).map_err(cleanup)?);
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.downloaded_bytes
            .fetch_add(downloaded, Ordering::Relaxed);
        let mut evicted = Vec::new();
        {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            state.bytes += downloaded;
            state.entries.insert(
                key.to_string(),
                Entry {
                    data: Arc::clone(&data),
                    dir,
                    bytes: downloaded,
                    last_used: tick,
                },
            );
            while state.bytes > self.max_bytes && state.entries.len() > 1 {
                let Some(oldest) = state
                    .entries
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(entry) = state.entries.remove(&oldest) {
                    state.bytes -= entry.bytes;
                    evicted.push(entry.dir);
                }
            }
        }
        // Outside the lock: readers holding an evicted segment keep its map.
        for dir in evicted {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(data)
    }
}

/// Checks a downloaded segment against what was recorded at upload: its length and CRC32.
pub(crate) fn check_copy(got: Transfer, name: &Path, info: &RemoteSegment) -> Result<()> {
    if got.len != info.bytes || got.crc32 != info.crc32 {
        return Err(Error::corrupt(
            name,
            0,
            format!(
                "the object holds {} bytes with CRC32 {:08x}; {} bytes with CRC32 {:08x} were uploaded",
                got.len, got.crc32, info.bytes, info.crc32
            ),
        ));
    }
    Ok(())
}
