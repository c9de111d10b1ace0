//! Tiering a shard: sealing an old active segment, uploading sealed segments, and dropping local
//! copies past the local retention. Run by the store's tiering thread (or a caller), never by
//! an append: appends wait for none of it but the short writer-lock holds that record a change.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::Result;
use crate::log::remote::{
    append_remote_log, read_remote_log, RemoteRecord, RemoteSegment, ShardTier, TierPolicy,
    REMOTE_LOG_FILE,
};
use crate::log::segment::{RemoteCopy, Segment};
use crate::types::Offset;

use super::Shard;

/// What one [`Shard::tier_step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierReport {
    /// Segments uploaded (and recorded as remote).
    pub uploaded: usize,
    /// Their bytes (segments and indexes).
    pub uploaded_bytes: u64,
    /// Segments whose local copy was deleted (now only remote).
    pub dropped_local: usize,
    /// Bytes of disk that freed.
    pub dropped_bytes: u64,
}

/// Where a shard's segments are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStatus {
    /// Sealed segments only on the local disk: the upload backlog.
    pub local_only: usize,
    /// Their bytes.
    pub local_only_bytes: u64,
    /// Segments both local and remote.
    pub both: usize,
    /// Segments only in the object store.
    pub remote_only: usize,
    /// Bytes of segments in the object store.
    pub remote_bytes: u64,
}

impl std::ops::AddAssign for TierReport {
    fn add_assign(&mut self, other: TierReport) {
        self.uploaded += other.uploaded;
        self.uploaded_bytes += other.uploaded_bytes;
        self.dropped_local += other.dropped_local;
        self.dropped_bytes += other.dropped_bytes;
    }
}

impl std::ops::AddAssign for TierStatus {
    fn add_assign(&mut self, other: TierStatus) {
        self.local_only += other.local_only;
        self.local_only_bytes += other.local_only_bytes;
        self.both += other.both;
        self.remote_only += other.remote_only;
        self.remote_bytes += other.remote_bytes;
    }
}

impl Shard {
    /// One round of tiering: seals the active segment if it is older than the tier's
    /// `max_segment_age`, uploads every sealed segment not yet remote (oldest first; a segment
    /// counts as remote once both its objects were acknowledged and `remote.log` records it),
    /// then deletes local copies of remote segments past the local retention (never the newest
    /// segment). The first failure (the object store unreachable) ends the round with the
    /// error; what was done before it stays done, and the next round goes on from there.
    /// Does nothing for a shard without a tier or opened read-only.
    pub fn tier_step(&self) -> Result<TierReport> {
        match &self.options.tier {
            Some(tier) => self.tier_step_with(&tier.tier().options().policy()),
            None => Ok(TierReport::default()),
        }
    }

    /// [`Shard::tier_step`] under `policy` (a stream's own tiering setting) instead of the
    /// tier's options.
    pub fn tier_step_with(&self, policy: &TierPolicy) -> Result<TierReport> {
        let mut report = TierReport::default();
        let Some(tier) = self.options.tier.clone() else {
            return Ok(report);
        };
        if self.writer.is_none() {
            return Ok(report);
        }
        // One round at a time (the tiering thread and a caller's `tier_now` may meet): a round
        // must not upload a segment another round has meanwhile dropped locally.
        let _round = self.tier_round.lock().unwrap_or_else(|e| e.into_inner());
        if !policy.upload {
            // Nothing goes up, but retention may have deleted remote segments: the bucket's
            // copy of `remote.log` must not list them (restore and replicas read it).
            self.upload_remote_log(&tier)?;
            return Ok(report);
        }
        self.seal_if_old(policy)?;
        let segments = self.snapshot();
        for segment in segments.iter() {
            if segment.remote().is_some() || !segment.is_local() {
                continue;
            }
            let data = segment.data()?;
            let Some(seal) = data.seal_info() else {
                break; // the active segment: everything before it was looked at
            };
            if let Some(damage) = data.damage() {
                // Uploaded once repaired; a damaged copy would outlive its repair.
                tracing::warn!(segment = %segment.path().display(), position = damage.position, reason = %damage.reason, "not tiering a damaged segment");
                continue;
            }
            let base = segment.base();
            let bucket = tier.tier().bucket();
            let sent = bucket.put_file(&tier.segment_key(base), &segment.path())?;
            let index = segment.index_path();
            let has_index = index.exists();
            let index_bytes = if has_index {
                bucket.put_file(&tier.index_key(base), &index)?.len
            } else {
                0
            };
            let info = RemoteSegment {
                base: base.get(),
                end: seal.end_offset.get(),
                lost_after: seal.lost_after,
                last_arrival_ms: seal.last_arrival_ms,
                bytes: sent.len,
                crc32: sent.crc32,
                has_index,
            };
            if self.record_upload(&tier, segment, info)? {
                report.uploaded += 1;
                report.uploaded_bytes += sent.len + index_bytes;
                // After every upload, not once at the end: while a long backlog goes up the
                // local disk shrinks segment by segment.
                let (dropped, bytes) = self.drop_local_copies(policy)?;
                report.dropped_local += dropped;
                report.dropped_bytes += bytes;
            }
        }
        let (dropped, bytes) = self.drop_local_copies(policy)?;
        report.dropped_local += dropped;
        report.dropped_bytes += bytes;
        self.upload_remote_log(&tier)?;
        Ok(report)
    }

    /// Copies `remote.log` beside the shard's objects when it changed since the last copy
    /// (uploads, and deletions by retention, append to it): `restore` and read replicas learn
    /// from it what each segment holds without downloading it. The object may lag the local
    /// log by a round; every segment it lists is in the bucket.
    fn upload_remote_log(&self, tier: &ShardTier) -> Result<()> {
        let path = self.dir.join(REMOTE_LOG_FILE);
        let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) else {
            return Ok(()); // nothing uploaded yet
        };
        let mut uploaded = self
            .remote_log_uploaded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // (Called inside a round, so one upload of the log at a time.)
        if *uploaded == Some(len) {
            return Ok(());
        }
        let bytes = std::fs::read(&path).map_err(crate::error::Error::io_at("read", &path))?;
        tier.tier()
            .bucket()
            .put_bytes(&tier.object_key_of(REMOTE_LOG_FILE), &bytes)?;
        *uploaded = Some(bytes.len() as u64);
        Ok(())
    }

    /// For a read replica's shard, whose `remote.log` is replaced with the primary's copy as it
    /// changes: adopts the segments recorded since (past the shard's end, as remote-only
    /// segments) and forgets remote-only segments retention deleted. Returns how many segments
    /// were adopted. A replica never appends, so the shard's end only moves here.
    pub fn follow_remote(&self) -> Result<usize> {
        let remote = read_remote_log(&self.dir)?;
        let mut w = self.lock_writer()?;
        if w.active.as_ref().is_some_and(|a| !a.is_empty()) {
            // Records were appended here: this is no replica's shard.
            return Ok(0);
        }
        let end = w.next_offset;
        let adopted: Vec<Arc<Segment>> = remote
            .values()
            .filter(|info| info.base >= end.get())
            .map(|&info| {
                Arc::new(Segment::remote_only(
                    &self.dir,
                    RemoteCopy {
                        tier: self.options.tier.clone(),
                        info,
                    },
                    false,
                ))
            })
            .collect();
        let new_end = remote
            .values()
            .next_back()
            .map(|info| Offset::new(info.end.saturating_add(info.lost_after)))
            .filter(|&e| e > end);
        self.replace_segments(|list| {
            list.retain(|s| s.is_local() || remote.contains_key(&s.base()));
            list.extend(adopted.iter().cloned());
        });
        if let Some(new_end) = new_end {
            w.next_offset = new_end;
            if let Some(t) = remote.values().next_back().and_then(|i| i.last_arrival_ms) {
                w.last_arrival_ms = Some(t);
            }
            self.next_offset.store(new_end.get(), Ordering::Release);
            let mut sync = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
            sync.durable = sync.durable.max(new_end);
        }
        Ok(adopted.len())
    }

    /// Where the shard's segments are now.
    pub fn tier_status(&self) -> TierStatus {
        let mut status = TierStatus::default();
        let segments = self.snapshot();
        let newest = segments.len().saturating_sub(1);
        for (i, segment) in segments.iter().enumerate() {
            match (segment.is_local(), segment.remote()) {
                (true, Some(copy)) => {
                    status.both += 1;
                    status.remote_bytes += copy.info.bytes;
                }
                (false, Some(copy)) => {
                    status.remote_only += 1;
                    status.remote_bytes += copy.info.bytes;
                }
                // The newest segment is the active one unless the process died between
                // sealing it and starting the next.
                (true, None) if i < newest || !self.newest_is_active() => {
                    status.local_only += 1;
                    status.local_only_bytes +=
                        std::fs::metadata(segment.path()).map_or(0, |m| m.len());
                }
                _ => {}
            }
        }
        status
    }

    fn newest_is_active(&self) -> bool {
        self.writer
            .as_ref()
            .is_some_and(|w| w.lock().unwrap_or_else(|e| e.into_inner()).active.is_some())
    }

    /// Seals the active segment once it is older than the tier's `max_segment_age` and holds a
    /// record, so little data is ever only local.
    fn seal_if_old(&self, policy: &TierPolicy) -> Result<()> {
        let max_age = policy.max_segment_age.as_millis() as i64;
        let now = self.options.clock.now_ms();
        let mut w = self.lock_writer()?;
        let old = w
            .active
            .as_ref()
            .is_some_and(|a| !a.is_empty() && now.saturating_sub(a.created_ms()) >= max_age);
        if old {
            self.roll(&mut w, now)?;
        }
        Ok(())
    }

    /// Records an acknowledged upload in `remote.log` and the segment list, if the segment is
    /// still there (retention may have deleted it meanwhile: then its objects go again).
    fn record_upload(
        &self,
        tier: &ShardTier,
        segment: &Arc<Segment>,
        info: RemoteSegment,
    ) -> Result<bool> {
        let base = segment.base();
        let w = self.lock_writer()?;
        let still_there = self
            .snapshot()
            .iter()
            .any(|s| s.base() == base && s.is_local());
        if !still_there {
            drop(w);
            for key in [tier.segment_key(base), tier.index_key(base)] {
                let _ = tier.tier().bucket().delete(&key);
            }
            return Ok(false);
        }
        append_remote_log(&self.dir, &RemoteRecord::Uploaded(info))?;
        let copy = RemoteCopy {
            tier: Some(tier.clone()),
            info,
        };
        self.replace_segments(|list| {
            for s in list.iter_mut().filter(|s| s.base() == base) {
                *s = Arc::new(s.with_remote(copy.clone()));
            }
        });
        drop(w);
        Ok(true)
    }

    /// Deletes the local copies of remote segments past the local retention: from the newest
    /// down, a segment stays local while the local segments from it on fit in
    /// `local_retention_bytes` and its newest record is younger than `local_retention`. The
    /// newest segment always stays. Returns the segments and bytes freed.
    fn drop_local_copies(&self, options: &TierPolicy) -> Result<(usize, u64)> {
        if options.local_retention_bytes.is_none() && options.local_retention.is_none() {
            return Ok((0, 0));
        }
        let now = self.options.clock.now_ms();
        // Decided on a snapshot, with the files' sizes read outside the writer's lock (appends
        // go on); only the list change takes it.
        let segments = self.snapshot();
        let mut local_bytes = 0u64;
        let mut doomed: Vec<(Offset, RemoteCopy, u64)> = Vec::new();
        for (i, segment) in segments.iter().enumerate().rev() {
            if !segment.is_local() {
                continue;
            }
            let len = std::fs::metadata(segment.path()).map_or(0, |m| m.len());
            local_bytes += len;
            let Some(copy) = segment.remote() else {
                continue;
            };
            if i + 1 == segments.len() {
                continue;
            }
            let over_size = options
                .local_retention_bytes
                .is_some_and(|max| local_bytes > max);
            let too_old = options.local_retention.is_some_and(|age| {
                let cutoff = now.saturating_sub(age.as_millis() as i64);
                copy.info.last_arrival_ms.is_none_or(|t| t < cutoff)
            });
            if over_size || too_old {
                doomed.push((segment.base(), copy.clone(), len));
            }
        }
        if doomed.is_empty() {
            return Ok((0, 0));
        }
        let w = self.lock_writer()?;
        // Retention may have deleted some meanwhile: only those still local are dropped.
        let dir = self.dir.clone();
        self.replace_segments(|list| {
            let mut dropped = Vec::with_capacity(doomed.len());
            for s in list.iter_mut().filter(|s| s.is_local()) {
                if let Some(d) = doomed.iter().find(|(b, _, _)| *b == s.base()) {
                    *s = Arc::new(Segment::remote_only(&dir, d.1.clone(), false));
                    dropped.push(d.clone());
                }
            }
            doomed = dropped;
        });
        drop(w);
        // Outside the lock: readers that hold a dropped segment keep its map (or read its
        // remote copy); a crash before the files go leaves them local and remote, dropped
        // again next round.
        let mut freed = 0;
        for (base, _, len) in &doomed {
            crate::io::remove_file(
                "drop local copy",
                &crate::log::segment::segment_path(&self.dir, *base),
            )?;
            crate::io::remove_file(
                "drop local index",
                &crate::log::segment::index_path(&self.dir, *base),
            )?;
            freed += len;
        }
        Ok((doomed.len(), freed))
    }
}
