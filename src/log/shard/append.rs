//! The write path: appends (batched, rolled into new segments when full), and the syncs each
//! flush policy promises (one leader syncs for every waiting appender).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::sync_dir;
use crate::log::format::SEGMENT_HEADER_LEN;
use crate::log::segment::{batched_len, count_fitting, ActiveSegment, Segment};
use crate::types::{Appended, NewRecord, Offset};

use super::{FlushPolicy, Shard, Writer};

impl Shard {
    /// Appends `records` in order and returns the offsets they got. Every record is checked first;
    /// an invalid one fails the whole append with nothing written. Returns once the records are as
    /// durable as the [`FlushPolicy`] promises.
    ///
    /// An append that fits in one segment becomes visible to readers all at once. One larger than
    /// a segment is split across segments, and an error (a full disk) partway leaves the records of
    /// the segments already filled stored.
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<Appended> {
        let appended = self.append_unsynced(records)?;
        self.make_durable(appended)?;
        Ok(appended)
    }

    /// [`Shard::append`] without the wait for the flush policy's sync: the records are stored
    /// and visible, but acknowledged only once [`Shard::make_durable`] has returned for them. For
    /// callers that append to several shards and then wait for all their syncs together.
    pub fn append_unsynced(&self, records: &[NewRecord<'_>]) -> Result<Appended> {
        if records.is_empty() {
            return Err(Error::InvalidArgument {
                name: "records",
                reason: "an append needs at least one record".into(),
            });
        }
        for (index, record) in records.iter().enumerate() {
            self.options
                .check_record(record)
                .map_err(|error| Error::InvalidRecord { index, error })?;
        }
        let mut w = self.lock_writer()?;
        let now = self.options.clock.now_ms();
        let arrival_ms = w.last_arrival_ms.map_or(now, |last| now.max(last));
        let first = w.next_offset;
        let mut rest = records;
        while !rest.is_empty() {
            let (fitting, len) = self.prepare_active(&mut w, rest, now)?;
            let active = w
                .active
                .as_mut()
                .expect("prepare_active leaves an active segment");
            active.append(&rest[..fitting], len, arrival_ms)?;
            w.next_offset = active.next_offset();
            w.last_arrival_ms = Some(arrival_ms);
            self.next_offset
                .store(w.next_offset.get(), Ordering::Release);
            rest = &rest[fitting..];
        }
        let end = w.next_offset;
        drop(w);
        Ok(Appended {
            first,
            last: Offset::new(end.get() - 1),
        })
    }

    /// Returns once `appended` is as durable as the [`FlushPolicy`] promises (at once under
    /// `Never`), leading a sync if none is running.
    pub fn make_durable(&self, appended: Appended) -> Result<()> {
        if self.options.flush == FlushPolicy::Never {
            return Ok(());
        }
        self.wait_durable(appended.last.next())
    }

    /// Makes sure an active segment exists that can take a first part of `records`, rolling when
    /// the current one is full or too old; returns how many records go into it and the bytes
    /// their batches take.
    pub(super) fn prepare_active(
        &self,
        w: &mut Writer,
        records: &[NewRecord<'_>],
        now: i64,
    ) -> Result<(usize, usize)> {
        let fresh_room = self.options.segment_bytes as usize - SEGMENT_HEADER_LEN;
        // Computed once: most appends fit, and then no record-by-record count is needed.
        let batch_bytes = self.options.batch_bytes;
        let total = batched_len(records, batch_bytes);
        // The batches of a prefix are the batches of the whole up to its end (`plan_batches`).
        let sized = |fitting: usize| {
            let len = if fitting == records.len() {
                total
            } else {
                batched_len(&records[..fitting], batch_bytes)
            };
            (fitting, len)
        };
        loop {
            let Some(active) = w.active.as_ref() else {
                self.start_segment(w, now)?;
                continue;
            };
            if active.is_empty() {
                // A fresh segment takes as much as fits, and always at least one record.
                if total <= fresh_room {
                    return Ok(sized(records.len()));
                }
                return Ok(sized(
                    count_fitting(records, fresh_room, batch_bytes).max(1),
                ));
            }
            let too_old = self.options.max_segment_age.is_some_and(|age| {
                now.saturating_sub(active.created_ms()) >= age.as_millis() as i64
            });
            let room = fresh_room.saturating_sub(active.end() - SEGMENT_HEADER_LEN);
            let fitting = if total <= room {
                records.len()
            } else {
                count_fitting(records, room, batch_bytes)
            };
            let all_fit_fresh = total <= fresh_room;
            // Roll rather than split an append that a fresh segment would hold whole.
            if too_old || fitting == 0 || (fitting < records.len() && all_fit_fresh) {
                self.roll(w, now)?;
                continue;
            }
            return Ok(sized(fitting));
        }
    }

    pub(super) fn start_segment(&self, w: &mut Writer, now: i64) -> Result<()> {
        let floor = w.last_arrival_ms.unwrap_or(i64::MIN);
        let active = ActiveSegment::create(&self.dir, w.next_offset, now, floor, self.limits)?;
        let segment = Arc::new(Segment::loaded(&self.dir, Arc::clone(active.data()), false));
        self.replace_segments(|list| list.push(segment));
        w.active = Some(active);
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    pub(super) fn roll(&self, w: &mut Writer, now: i64) -> Result<()> {
        if let Some(active) = w.active.take() {
            let file = Arc::clone(active.file());
            match active.seal(now, self.limits.sync) {
                Ok(data) if !self.limits.sync => w.unsynced.push((file, data.path().to_path_buf())),
                Ok(_) => {}
                Err(e) => {
                    w.poisoned = Some(format!("sealing a segment failed: {e}"));
                    return Err(e);
                }
            }
            if let Some(tier) = &self.options.tier {
                // A sealed segment is work for the tiering thread: upload it now, not at the
                // next interval (the local disk holds less).
                tier.tier().notify_sealed(tier);
            }
        }
        self.start_segment(w, now)
    }

    /// Blocks until every record below `end` is durable, leading a sync if none is running.
    pub(super) fn wait_durable(&self, end: Offset) -> Result<()> {
        let mut state = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.durable >= end {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .sync_done
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.syncing = true;
            let wait = match (self.options.flush, state.last_sync_start) {
                (FlushPolicy::GroupCommit { interval }, Some(last)) => {
                    interval.saturating_sub(last.elapsed())
                }
                _ => Duration::ZERO,
            };
            drop(state);
            if !wait.is_zero() {
                // Let more appenders join this sync.
                std::thread::sleep(wait);
            }
            let started = Instant::now();
            let synced = self.sync_active();
            state = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
            state.syncing = false;
            state.last_sync_start = Some(started);
            self.sync_done.notify_all();
            match synced {
                Ok(upto) => state.durable = state.durable.max(upto),
                Err(e) => return Err(e),
            }
        }
    }

    /// fdatasyncs the active segment (and any segment sealed without a sync, and then the
    /// directory); returns the offset below which everything is durable.
    pub(super) fn sync_active(&self) -> Result<Offset> {
        let (upto, active, unsynced) = {
            let mut w = self.lock_writer()?;
            let active = w
                .active
                .as_ref()
                .map(|a| (Arc::clone(a.file()), a.data().path().to_path_buf(), a.end()));
            (w.next_offset, active, std::mem::take(&mut w.unsynced))
        };
        let poison = |e: Error| {
            if let Some(writer) = &self.writer {
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                w.poisoned = Some(e.to_string());
            }
            e
        };
        for (file, path) in &unsynced {
            crate::faults::sync_data(file, path).map_err(|e| poison(Error::io("sync", path, e)))?;
        }
        if !unsynced.is_empty() {
            sync_dir(&self.dir).map_err(poison)?;
        }
        if let Some((file, path, end)) = active {
            crate::faults::sync_data(&file, &path)
                .map_err(|e| poison(Error::io("sync", &path, e)))?;
            let mut w = self.lock_writer()?;
            if let Some(a) = w.active.as_mut().filter(|a| a.data().path() == path) {
                a.mark_durable(end);
            }
        }
        Ok(upto)
    }

    /// Makes every record appended so far durable, whatever the flush policy.
    pub fn flush(&self) -> Result<()> {
        let upto = self.sync_active()?;
        if !self.limits.sync {
            // Segments created without a sync of the directory that names them.
            sync_dir(&self.dir)?;
        }
        let mut state = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
        state.durable = state.durable.max(upto);
        Ok(())
    }
}
