//! Deleting whole segments from the front of the log: by age (retention) or below an offset.

use std::sync::Arc;

use crate::error::Result;
use crate::io::sync_dir;
use crate::log::log_start::write_log_start;
use crate::log::remote::{append_remote_log, RemoteRecord};
use crate::log::segment::{ActiveSegment, Segment};
use crate::types::Offset;

use super::{Deleted, Shard};

impl Shard {
    /// Deletes, oldest first, whole segments whose newest record arrived before `cutoff_ms`. The
    /// active segment counts too once everything before it is deleted: it is sealed and a new,
    /// empty one takes over, so the shard keeps its next offset. Readers holding records of a
    /// deleted segment keep them; later reads start at the oldest remaining record.
    pub fn delete_before(&self, cutoff_ms: i64) -> Result<Deleted> {
        self.delete_where(
            |seal| seal.last_arrival_ms.is_none_or(|t| t < cutoff_ms),
            |active| active.last_arrival_ms().is_some_and(|t| t < cutoff_ms),
        )
    }

    /// Deletes, oldest first, whole segments holding only offsets below `offset` (records
    /// already consumed, like a delivery stream's delivered buffer), the active segment included
    /// as in [`Shard::delete_before`].
    pub fn delete_below(&self, offset: Offset) -> Result<Deleted> {
        self.delete_where(
            |seal| seal.end_offset <= offset,
            |active| active.next_offset() <= offset,
        )
    }

    /// Deletes the leading segments `sealed_expired` accepts (and the active segment, sealing it
    /// first, when all before it went and `active_expired` accepts it).
    pub(super) fn delete_where(
        &self,
        sealed_expired: impl Fn(&crate::log::segment::SealInfo) -> bool,
        active_expired: impl Fn(&ActiveSegment) -> bool,
    ) -> Result<Deleted> {
        let mut w = self.lock_writer()?;
        let segments = self.snapshot();
        let mut expired = 0;
        for segment in segments.iter() {
            match segment.seal_info()? {
                Some(seal) if sealed_expired(&seal) => expired += 1,
                _ => break,
            }
        }
        let now = self.options.clock.now_ms();
        if expired == segments.len() && expired > 0 {
            // Every segment is sealed and expired (no active one: the process died between
            // sealing the newest and creating the next). An empty segment must hold the next
            // offset before they go, or a restart would begin again at 0.
            self.start_segment(&mut w, now)?;
        } else if expired + 1 == segments.len()
            && w.active
                .as_ref()
                .is_some_and(|a| !a.is_empty() && active_expired(a))
        {
            self.roll(&mut w, now)?;
            expired += 1;
        }
        if expired == 0 {
            return Ok(Deleted::default());
        }
        let doomed: Vec<Arc<Segment>> = segments[..expired].to_vec();
        // Where the log starts now, recorded before the files go: a missing oldest segment is
        // then told apart from one retention deleted.
        let start = segments.get(expired).map_or(w.next_offset, |s| s.base());
        write_log_start(&self.dir, start, true)?;
        // Remote copies are forgotten before local files go, so a crash in between leaves a
        // local segment below the log start (deleted again) rather than a remote one.
        for segment in doomed.iter().filter(|s| s.remote().is_some()) {
            append_remote_log(
                &self.dir,
                &RemoteRecord::Deleted {
                    base: segment.base().get(),
                },
            )?;
        }
        self.replace_segments(|list| {
            list.drain(..expired);
        });
        let mut deleted = Deleted::default();
        let mut remote_objects = Vec::new();
        for (i, segment) in doomed.iter().enumerate() {
            let end = doomed
                .get(i + 1)
                .map(|s| s.base())
                .or_else(|| self.snapshot().first().map(|s| s.base()))
                .unwrap_or(w.next_offset);
            deleted.records += end.get() - segment.base().get();
            if segment.is_local() {
                let path = segment.path();
                deleted.bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
                crate::io::remove_file("delete segment", &path)?;
                crate::io::remove_file("delete index", &segment.index_path())?;
            }
            if let Some(copy) = segment.remote() {
                if !segment.is_local() {
                    deleted.bytes += copy.info.bytes;
                }
                if let Some(tier) = &copy.tier {
                    remote_objects.push((tier.clone(), segment.base()));
                }
            }
            deleted.segments += 1;
        }
        if self.limits.sync {
            sync_dir(&self.dir)?;
        }
        drop(w);
        // Outside the writer's lock (appends go on): the objects of forgotten segments. One that
        // fails to go is only an orphan in the bucket; nothing refers to it any more.
        for (tier, base) in remote_objects {
            for key in [tier.segment_key(base), tier.index_key(base)] {
                if let Err(e) = tier.tier().bucket().delete(&key) {
                    tracing::warn!(object = %tier.tier().bucket().url(&key), error = %e, "could not delete an expired remote segment");
                }
            }
        }
        Ok(deleted)
    }
}
