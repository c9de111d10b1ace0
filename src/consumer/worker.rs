//! Workers: in-process consumers of a group that lease shards, read them through the stream's
//! typed core, run the caller's closure and checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::ConsumerGroup;
use crate::error::{Error, Result};
use crate::stream::{StreamRecord, MAX_GET_RECORDS};
use crate::{ReadLimits, ShardId};

impl ConsumerGroup {
    /// A worker of this group called `id` (unique among the group's live workers).
    pub fn worker(self: &Arc<Self>, id: &str) -> Worker {
        Worker {
            group: Arc::clone(self),
            id: id.to_string(),
        }
    }
}

/// What one processing round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Shards the worker held this round.
    pub shards: Vec<ShardId>,
    /// Records handed to the closure and checkpointed.
    pub records: u64,
    /// Batches the closure failed (they are retried next round).
    pub failed_batches: u64,
}

/// A worker of a consumer group: holds leases, reads its shards, runs the user's closure per
/// batch and checkpoints after each success.
#[derive(Debug)]
pub struct Worker {
    group: Arc<ConsumerGroup>,
    id: String,
}

/// How a worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessOptions {
    /// Records per batch (1 to 10,000; default 1,000).
    pub max_records: usize,
    /// Longest wait between rounds that found nothing to do (default 100 ms); while the worker
    /// holds leases, an append to the stream ends the wait at once.
    pub idle_wait: Duration,
}

impl Default for ProcessOptions {
    fn default() -> ProcessOptions {
        ProcessOptions {
            max_records: 1000,
            idle_wait: Duration::from_millis(100),
        }
    }
}

impl Worker {
    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// One round: renew and take leases, then for each held shard read one batch after its
    /// checkpoint, run `process` on it, and checkpoint after it succeeds. A shard closed and
    /// read to its end is marked finished, which lets its children be leased.
    pub fn process_round<F, E>(
        &self,
        options: &ProcessOptions,
        process: &mut F,
    ) -> Result<RoundReport>
    where
        F: FnMut(ShardId, &[StreamRecord]) -> std::result::Result<(), E>,
    {
        let (stream, leased) = self.group.lease_positions(&self.id)?;
        let mut report = RoundReport::default();
        let limits = ReadLimits::records(options.max_records.clamp(1, MAX_GET_RECORDS));
        for (shard, from) in leased {
            let index = shard.index();
            report.shards.push(shard);
            let out = stream.read(shard, from, limits)?;
            let outcome = match out.records.last() {
                Some(last) => {
                    if process(shard, &out.records).is_err() {
                        report.failed_batches += 1;
                        continue;
                    }
                    report.records += out.records.len() as u64;
                    // A record read has an offset below the shard's end, so this cannot overflow.
                    let next = last.sequence_number.offset().get().saturating_add(1);
                    // A closed shard is finished only once a read past this batch is empty.
                    self.group.commit(&self.id, index, next, false)
                }
                None if out.end.finished.is_some() => {
                    self.group.commit(&self.id, index, out.end.next.get(), true)
                }
                None => Ok(()),
            };
            match outcome {
                Ok(()) => {}
                // Another worker has the shard now; it resumes after the last checkpoint.
                Err(Error::LeaseLost { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Runs rounds until `stop` is set, then lets the current batch finish and releases the
    /// worker's leases. Errors of a round (a storage error, say) end the run.
    pub fn run<F, E>(
        &self,
        options: &ProcessOptions,
        stop: &AtomicBool,
        mut process: F,
    ) -> Result<()>
    where
        F: FnMut(ShardId, &[StreamRecord]) -> std::result::Result<(), E>,
    {
        let stream_name = self.group.lock().stream.clone();
        let result = (|| {
            while !stop.load(Ordering::Acquire) {
                let stream = self.group.store.stream(&stream_name)?;
                let seen = stream.change_generation();
                let report = self.process_round(options, &mut process)?;
                if report.records == 0 {
                    if report.shards.is_empty() {
                        // Nothing leased: appends are other workers' business.
                        std::thread::sleep(options.idle_wait);
                    } else {
                        // Caught up: the next append (or the idle wait, for lease renewal and
                        // rebalancing) starts the next round.
                        stream.wait_for_change(seen, options.idle_wait);
                    }
                }
            }
            Ok(())
        })();
        let released = self.group.release(&self.id);
        result.and(released)
    }

    /// Gives up this worker's leases now (what `run` does when stopped).
    pub fn release(&self) -> Result<()> {
        self.group.release(&self.id)
    }
}
