//! Reads: by offset (owned records or lent to a visitor), and by arrival time.

use crate::error::{Error, Result};
use crate::log::format::RecordRef;
use crate::log::segment::{Budget, SegmentData};
use crate::types::{Offset, ReadBatch, ReadLimits};

use super::Shard;

impl Shard {
    /// Reads records from `from` on (the first record at or after it; from the oldest record if
    /// `from` was deleted), within `limits`. Every record's CRC is checked; damage is an
    /// [`Error::Corrupt`] naming file and position, after the good records before it were returned.
    pub fn read(&self, from: Offset, limits: ReadLimits) -> Result<ReadBatch> {
        let mut out = Vec::with_capacity(limits.max_records.min(1024));
        let next_offset = self.read_segments(from, limits, |data, cursor, budget| {
            data.read(cursor, budget, &mut out)
        })?;
        Ok(ReadBatch {
            records: out,
            next_offset,
        })
    }

    /// Lends the records from `from` on, within `limits`, to `visit`, as [`Shard::read`] reads
    /// them but without handing out owned views: no reference count, no allocation per record,
    /// one CRC check per batch. For consumers that use each record and let it go (encoders,
    /// serializers, counters). Returns the offset to read from next.
    pub fn visit(
        &self,
        from: Offset,
        limits: ReadLimits,
        mut visit: impl FnMut(RecordRef<'_>),
    ) -> Result<Offset> {
        self.read_segments(from, limits, |data, cursor, budget| {
            data.visit(cursor, budget, &mut visit)
        })
    }

    /// Walks the segments holding `from` and after, handing each to `read_segment` with the
    /// offset to read from and the budget left; returns the offset to read from next.
    pub(super) fn read_segments(
        &self,
        from: Offset,
        limits: ReadLimits,
        mut read_segment: impl FnMut(&SegmentData, Offset, &mut Budget) -> Result<Option<Offset>>,
    ) -> Result<Offset> {
        // Loaded before the snapshot: records below it were in segments listed before it was
        // published, so if the snapshot lists none, they are all gone (expired). Loaded after,
        // it could count records appended (to a segment created) since the snapshot, and the
        // read would skip them.
        let next_offset = self.next_offset();
        let segments = self.snapshot();
        let Some(first) = segments.first() else {
            return Ok(from.max(next_offset));
        };
        let mut cursor = from.max(first.base());
        // cursor >= the first segment's base, so at least one segment starts at or before it.
        let start = segments.partition_point(|s| s.base() <= cursor) - 1;
        let mut budget = Budget::new(limits);
        for (i, segment) in segments.iter().enumerate().skip(start) {
            if budget.exhausted() {
                break;
            }
            let data = segment.data_from(cursor, &budget)?;
            if let Some(next) = read_segment(&data, cursor, &mut budget)? {
                cursor = next;
            }
            if let (false, false, Some(newer)) =
                (segment.is_local(), data.is_window(), segments.get(i + 1))
            {
                // A reader past the middle of a remote segment it read from the start is most
                // likely reading on: have the next one downloaded meanwhile. (One reading a
                // window started inside the segment may well be reading at random.)
                let base = segment.base().get();
                let midpoint = segment.seal_info()?.map_or(u64::MAX, |s| {
                    base + s.end_offset.get().saturating_sub(base) / 2
                });
                if cursor.get() >= midpoint {
                    newer.read_ahead();
                }
            }
            // A window of a remote segment that ends before the segment: the records after it
            // are the next read's.
            if budget.exhausted() || data.is_partial() {
                break;
            }
            let Some(newer) = segments.get(i + 1) else {
                break;
            };
            let seal = data.seal_info();
            let lost = seal.map_or(0, |s| s.lost_after);
            // A read that starts inside the gap a repair recorded after this segment's records
            // reads on from the next segment.
            let in_recorded_gap = seal.is_some_and(|s| {
                cursor >= s.end_offset
                    && s.end_offset.get().saturating_add(s.lost_after) == newer.base().get()
            });
            if cursor < newer.base()
                && cursor.get().saturating_add(lost) != newer.base().get()
                && !in_recorded_gap
            {
                // This segment ended before the next one begins, and no repair accounted for the
                // gap: records are missing.
                if budget.started() {
                    break;
                }
                let (position, reason) = match data.damage() {
                    Some(d) => (d.position, d.reason.clone()),
                    None => (0, format!("offsets {cursor}..{} are missing", newer.base())),
                };
                return Err(Error::corrupt(data.path(), position, reason));
            }
            cursor = cursor.max(newer.base());
        }
        Ok(cursor)
    }

    /// The offset of the first record that arrived at or after `t_ms` (ms since the Unix epoch),
    /// or [`Shard::next_offset`] if none did.
    pub fn seek_time(&self, t_ms: i64) -> Result<Offset> {
        // Before the snapshot, for the reason `read` gives (used only if there are no segments).
        let next_offset = self.next_offset();
        let segments = self.snapshot();
        // Arrival times never decrease, so the segments whose newest record is older than t come
        // first: binary search for the first one that is not.
        let (mut lo, mut hi) = (0, segments.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let newest = match segments[mid].seal_info()? {
                Some(seal) => seal.last_arrival_ms.unwrap_or(i64::MIN),
                None => i64::MAX, // the active segment: search it
            };
            if newest < t_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // No record at or after t: the end of what was looked at, all of it older than t (not
        // the shard's end now, which may have moved past records that are not).
        let mut end = match segments.last() {
            Some(last) => last
                .seal_info()?
                .map_or(next_offset, |seal| seal.end_offset),
            None => next_offset,
        };
        for segment in &segments[lo..] {
            match segment.seek_time(t_ms)? {
                Ok(offset) => return Ok(offset),
                Err(after) => end = after,
            }
        }
        Ok(end)
    }

    /// Reads records from the first that arrived at or after `t_ms` on.
    pub fn read_from_time(&self, t_ms: i64, limits: ReadLimits) -> Result<ReadBatch> {
        let from = self.seek_time(t_ms)?;
        self.read(from, limits)
    }
}
