//! Range reads of remote segments: a read that starts inside a remote segment (a consumer
//! resuming from a checkpoint, an `AT_SEQUENCE_NUMBER` or `AT_TIMESTAMP` iterator) fetches only
//! the bytes it needs, found through the segment's index object, instead of the whole segment.
//!
//! A segment's *map* (its header's layout and its index, two small objects) is fetched once and
//! kept. A read from offset `o` finds the index entry at or before `o` and fetches a *window*:
//! the bytes from that entry's batch on, about as many as the read may return (at least
//! `TierOptions::range_read_bytes`). Whole batches of the window are served like a sealed segment (every batch's
//! CRC checked as it is read); a read that reaches the end of a window that ends before its
//! segment stops there. A reader going on fetches the next window from where the last ended, each
//! twice the size of the one before (up to 16 times the smallest), as a kernel's readahead grows.
//! Windows are kept in memory, least recently used out first, within a quarter of the cache's
//! budget.
//!
//! Reads from a segment's start, of small segments, and of segments without an index download
//! the segment whole (see `cache.rs`): a reader that starts at the beginning usually reads on to
//! the end, and read-ahead has the next segment ready for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{RemoteSegment, SegmentCache, ShardTier};
use crate::error::{Error, Result};
use crate::log::format::{SegmentHeader, FOOTER_LEN, SEGMENT_HEADER_LEN};
use crate::log::index::{self, SparseIndex};
use crate::log::segment::{remote_window, Budget, SegmentData, Window, WindowFit};
use crate::types::Offset;

/// The largest window fetched, in smallest windows.
const MAX_WINDOW_GROWTH: u64 = 16;

/// Segments no larger than this many smallest windows are downloaded whole: a few windows would
/// fetch as much.
const WHOLE_UP_TO: u64 = 4;

/// Most segment maps kept (an index is about 24 bytes per 64 KiB of segment: 48 KiB for a
/// 128 MiB segment).
const MAX_MAPS: usize = 256;

/// What is known of a remote segment's bytes without downloading it: its layout and index.
struct SegmentMap {
    layout: crate::log::format::Layout,
    index: SparseIndex,
}

/// Maps and windows of remote segments, by object key.
#[derive(Default)]
pub(super) struct Windows {
    maps: HashMap<String, (Option<Arc<SegmentMap>>, u64)>,
    windows: Vec<CachedWindow>,
    bytes: u64,
    tick: u64,
}

struct CachedWindow {
    key: String,
    /// Where its first batch starts in the object.
    start: u64,
    data: Arc<SegmentData>,
    last_used: u64,
}

impl CachedWindow {
    fn len(&self) -> u64 {
        self.data.end_position().saturating_sub(self.start)
    }
}

/// Where a window should start: at the batch holding an offset, or at the first record that
/// arrived at or after a time.
#[derive(Debug, Clone, Copy)]
enum Target {
    Offset(Offset),
    Time(i64),
}

impl SegmentCache {
    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether reads of `info` fetch windows rather than the whole segment.
    fn reads_windows(&self, info: &RemoteSegment) -> bool {
        info.has_index && info.bytes > self.range_read_bytes.saturating_mul(WHOLE_UP_TO)
    }

    /// The size of a window: `wanted` within the smallest and largest.
    fn window_size(&self, wanted: u64) -> u64 {
        let min = self.range_read_bytes;
        wanted.clamp(min, min.saturating_mul(MAX_WINDOW_GROWTH))
    }

    /// What a read of the remote segment `info` from `from` on, within `budget`, reads: the
    /// whole segment if it is cached, small, without an index or read from its start;
    /// otherwise a window holding `from`, cached or fetched.
    pub(crate) fn read_from(
        &self,
        shard: &ShardTier,
        info: &RemoteSegment,
        from: Offset,
        budget: &Budget,
    ) -> Result<Arc<SegmentData>> {
        let key = shard.segment_key(Offset::new(info.base));
        if let Some(data) = self.cached(&key) {
            return Ok(data);
        }
        if from.get() <= info.base || !self.reads_windows(info) {
            return self.load(shard, info);
        }
        if let Some(data) = self.cached_window(&key, from) {
            return Ok(data);
        }
        // As many bytes as the read may take (a little more: keys and batch overhead), or as
        // its records take at the segment's average record size, whichever is less.
        let bytes = budget.bytes_left() as u64;
        let per_record = info.bytes / info.end.saturating_sub(info.base).max(1) + 1;
        let wanted =
            (bytes + bytes / 8).min(per_record.saturating_mul(budget.records_left() as u64));
        let size = self.window_size(wanted);
        self.window_or_whole(shard, info, &key, Target::Offset(from), size)
    }

    /// The first record of the remote segment `info` that arrived at or after `t` (see
    /// `SegmentData::seek_time`), found through windows starting at the index entry for `t`.
    pub(crate) fn seek_time(
        &self,
        shard: &ShardTier,
        info: &RemoteSegment,
        t: i64,
    ) -> Result<std::result::Result<Offset, Offset>> {
        let key = shard.segment_key(Offset::new(info.base));
        if let Some(data) = self.cached(&key) {
            return data.seek_time(t);
        }
        if !self.reads_windows(info) {
            return self.load(shard, info)?.seek_time(t);
        }
        let mut window =
            self.window_or_whole(shard, info, &key, Target::Time(t), self.range_read_bytes)?;
        loop {
            match window.seek_time(t)? {
                Err(after) if window.is_partial() => {
                    window = self.window_or_whole(
                        shard,
                        info,
                        &key,
                        Target::Offset(after),
                        self.range_read_bytes,
                    )?
                }
                found => return Ok(found),
            }
        }
    }

    /// A window for `target` (see [`SegmentCache::fetch_window`]); the whole segment when it
    /// has no usable map, or when the window's bytes are damaged (the whole download checks
    /// every byte and names the damage, or finds the object sound and the index wrong).
    fn window_or_whole(
        &self,
        shard: &ShardTier,
        info: &RemoteSegment,
        key: &str,
        target: Target,
        size: u64,
    ) -> Result<Arc<SegmentData>> {
        let map = match self.segment_map(shard, info, key)? {
            Some(map) => map,
            None => return self.load(shard, info),
        };
        match self.fetch_window(shard, info, key, &map, target, size) {
            Ok(window) => Ok(window),
            Err(Error::Corrupt { .. }) => self.load(shard, info),
            Err(e) => Err(e),
        }
    }

    /// A cached window of `key` holding `from`.
    fn cached_window(&self, key: &str, from: Offset) -> Option<Arc<SegmentData>> {
        let mut windows = self.windows();
        windows.tick += 1;
        let tick = windows.tick;
        let window = windows
            .windows
            .iter_mut()
            .find(|w| w.key == key && w.data.holds(from))?;
        window.last_used = tick;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&window.data))
    }

    /// The segment's layout and index: fetched once (the header's first bytes and the index
    /// object), then kept. `None` when the index object is missing or not this segment's.
    fn segment_map(
        &self,
        shard: &ShardTier,
        info: &RemoteSegment,
        key: &str,
    ) -> Result<Option<Arc<SegmentMap>>> {
        {
            let mut windows = self.windows();
            windows.tick += 1;
            let tick = windows.tick;
            if let Some((map, used)) = windows.maps.get_mut(key) {
                *used = tick;
                return Ok(map.clone());
            }
        }
        let base = Offset::new(info.base);
        let bucket = shard.tier().bucket();
        let name = PathBuf::from(bucket.url(key));
        let head = bucket.get_range(key, 0..SEGMENT_HEADER_LEN as u64)?;
        let header = SegmentHeader::decode(&head)
            .map_err(|e| Error::corrupt(&name, 0, format!("segment header: {e}")))?;
        if header.base_offset != base {
            return Err(Error::corrupt(
                &name,
                0,
                format!(
                    "header says base offset {}, remote.log says {base}",
                    header.base_offset
                ),
            ));
        }
        let index = match bucket.get_bytes(&shard.index_key(base)) {
            Ok(bytes) => bytes.and_then(|b| index::parse(&b, base)),
            Err(e) => {
                tracing::warn!(object = %name.display(), error = %e, "index object unavailable: the segment is downloaded whole");
                None
            }
        };
        let map = index.map(|index| {
            Arc::new(SegmentMap {
                layout: header.layout(),
                index,
            })
        });
        let mut windows = self.windows();
        if windows.maps.len() >= MAX_MAPS {
            if let Some(oldest) = windows
                .maps
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                windows.maps.remove(&oldest);
            }
        }
        let tick = windows.tick;
        windows.maps.insert(key.to_string(), (map.clone(), tick));
        Ok(map)
    }

    /// Fetches (and caches) a window of the segment starting at the batch `target` calls for,
    /// of at least `size` bytes: more when a batch does not fit, or when it continues a window
    /// that ended before `target` (twice that one's size).
    fn fetch_window(
        &self,
        shard: &ShardTier,
        info: &RemoteSegment,
        key: &str,
        map: &SegmentMap,
        target: Target,
        mut size: u64,
    ) -> Result<Arc<SegmentData>> {
        let base = Offset::new(info.base);
        let entry = match target {
            Target::Offset(o) => u32::try_from(o.get().saturating_sub(info.base))
                .ok()
                .and_then(|rel| map.index.for_offset(rel))
                .or_else(|| map.index.last()),
            Target::Time(t) => map.index.for_time(t),
        };
        let (mut pos, mut first) = entry.map_or((SEGMENT_HEADER_LEN as u64, base), |e| {
            (
                u64::from(e.position),
                Offset::new(info.base + u64::from(e.relative_offset)),
            )
        });
        // The first fetch reaches the next index entry (the batch wanted ends there at the
        // latest) and `size` past where the target probably is.
        let mut reach = entry
            .and_then(|e| Some((e, map.index.next_after(e)?)))
            .map_or(pos.saturating_add(size), |(e, next)| {
                let next_pos = u64::from(next.position);
                let estimate = match target {
                    // Offsets between two entries are about evenly spread over their bytes.
                    Target::Offset(o) => {
                        let rel = o.get().saturating_sub(first.get());
                        let span =
                            u64::from(next.relative_offset.saturating_sub(e.relative_offset));
                        pos + (next_pos - pos).saturating_mul(rel) / span.max(1)
                    }
                    Target::Time(_) => next_pos,
                };
                estimate.min(next_pos).saturating_add(size).max(next_pos)
            });
        if let Target::Offset(o) = target {
            // A reader going on from a window: start where it ended (nearer than the index
            // entry), and fetch more at once.
            let windows = self.windows();
            let before = windows.windows.iter().filter(|w| {
                let end = w.data.seal_info().map_or(base, |s| s.end_offset);
                w.key == key && end <= o && w.data.end_position() >= pos
            });
            if let Some(prev) = before.max_by_key(|w| w.data.end_position()) {
                pos = prev.data.end_position();
                first = prev.data.seal_info().map_or(first, |s| s.end_offset);
                size = self.window_size(size.max(prev.len().saturating_mul(2)));
                reach = pos.saturating_add(size);
            }
        }
        let bucket = shard.tier().bucket();
        let name = PathBuf::from(bucket.url(key));
        let data_end = info.bytes.saturating_sub(FOOTER_LEN as u64);
        loop {
            if pos >= data_end || pos < SEGMENT_HEADER_LEN as u64 {
                return Err(Error::corrupt(
                    &name,
                    pos,
                    format!("the index points outside the records (which end at byte {data_end})"),
                ));
            }
            let origin = pos - SEGMENT_HEADER_LEN as u64;
            let end = reach.max(pos.saturating_add(size)).min(data_end);
            let bytes = bucket.get_range(key, origin..end)?;
            self.range_reads.fetch_add(1, Ordering::Relaxed);
            self.downloaded_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if (bytes.len() as u64) < end - origin {
                // Asking again would get no more (found by the `remote` fuzz target).
                return Err(Error::corrupt(
                    &name,
                    origin + bytes.len() as u64,
                    format!("the object ends here; {} bytes were uploaded", info.bytes),
                ));
            }
            let reaches_end = origin + bytes.len() as u64 >= data_end;
            let window = Window {
                name: &name,
                layout: map.layout,
                origin,
                first,
                ends_segment: reaches_end.then_some(info.lost_after),
            };
            match remote_window(window, bytes)? {
                WindowFit::Fits(data) => {
                    let wanted = match target {
                        Target::Offset(o) => data.holds(o),
                        Target::Time(_) => true,
                    };
                    if wanted || !data.is_partial() {
                        return Ok(self.keep_window(key, pos, *data));
                    }
                    // Only batches before the one wanted: read on from the last of them.
                    first = data.seal_info().map_or(first, |s| s.end_offset);
                    pos = data.end_position();
                    size = self.window_size(size.saturating_mul(2));
                    reach = pos;
                }
                WindowFit::Needs(_) if reaches_end => {
                    return Err(Error::corrupt(
                        &name,
                        pos,
                        "a batch is cut off by the end of the records",
                    ));
                }
                WindowFit::Needs(len) => {
                    size = size.saturating_mul(2).max(len as u64);
                    reach = pos;
                }
            }
        }
    }

    /// Caches a fetched window (least recently used ones out, past a quarter of the cache's
    /// budget) and returns it.
    fn keep_window(&self, key: &str, start: u64, data: SegmentData) -> Arc<SegmentData> {
        let data = Arc::new(data);
        let budget = self.max_bytes / 4;
        let mut windows = self.windows();
        windows.tick += 1;
        let window = CachedWindow {
            key: key.to_string(),
            start,
            data: Arc::clone(&data),
            last_used: windows.tick,
        };
        windows.bytes += window.len();
        windows.windows.push(window);
        while windows.bytes > budget && windows.windows.len() > 1 {
            let last = windows.windows.len() - 1;
            // The new window (last) stays: its reader is about to use it.
            let Some(oldest) = windows.windows[..last]
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let evicted = windows.windows.remove(oldest);
            windows.bytes -= evicted.len();
        }
        data
    }
}
