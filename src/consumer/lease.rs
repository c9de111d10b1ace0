//! Leases: which shards a worker may take (parents processed first), taking its fair share
//! (free leases first, else one from the busiest worker), and the positions and iterators of
//! the shards it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{
    check_same_stream, check_worker_id, sync_shards, ConsumerGroup, GroupFile, InitialPosition,
    Lease, MAX_WORKERS,
};
use crate::error::{Error, Result};
use crate::hash_key::ShardId;
use crate::stream::{ShardDescription, Start, Stream};
use crate::{Offset, ReadLimits, SequenceNumber};

impl ConsumerGroup {
    /// Shards whose parents (those still in the stream) are processed to their end.
    pub(super) fn leasable(file: &GroupFile, shards: &[ShardDescription]) -> Vec<u32> {
        let mut out = Vec::new();
        for s in shards {
            let index = s.shard_id.index();
            let Some(lease) = file.shards.get(&index) else {
                continue;
            };
            if lease.finished {
                continue;
            }
            let parents_done = [&s.parent_shard_id, &s.adjacent_parent_shard_id]
                .into_iter()
                .flatten()
                .map(|p| p.index())
                .all(|p| file.shards.get(&p).is_none_or(|l| l.finished));
            if parents_done {
                out.push(index);
            }
        }
        out
    }

    /// Renews `worker`'s leases and takes more up to its fair share: free ones first (unowned
    /// or expired), else one from the worker holding the most. Returns the shards it holds.
    #[cfg(feature = "firehose")]
    pub(crate) fn acquire(&self, worker: &str) -> Result<Vec<u32>> {
        Ok(self.acquire_described(worker)?.0)
    }

    /// [`Self::acquire`], also returning the stream's shards as described for it.
    pub(super) fn acquire_described(
        &self,
        worker: &str,
    ) -> Result<(Vec<u32>, Vec<ShardDescription>)> {
        check_worker_id(worker)?;
        let mut state = self.lock();
        let mut next = state.clone();
        let now = self.now();
        let stream = self.store.stream(&next.stream)?;
        // An open group must not carry its checkpoints over to a stream created again under
        // the same name.
        check_same_stream(&next, &stream)?;
        let shards = stream.describe().shards;
        sync_shards(&mut next, &shards);
        let lease_ms = next.lease_ms;
        // Renewals are written only once a quarter of the lease has passed, so a busy worker
        // does not rewrite the group file every round.
        let stale = |at: i64| now.saturating_sub(at) >= lease_ms / 4;
        if next.workers.get(worker).is_none_or(|&seen| stale(seen)) {
            next.workers.insert(worker.to_string(), now);
        }
        next.workers
            .retain(|_, seen| seen.saturating_add(lease_ms) > now);
        if next.workers.len() > MAX_WORKERS {
            return Err(Error::LimitExceeded {
                reason: format!(
                    "group {} has {MAX_WORKERS} live workers already (its limit)",
                    next.name
                ),
            });
        }
        for lease in next.shards.values_mut() {
            if lease.owner.as_deref() == Some(worker)
                && stale(lease.expires_ms.saturating_sub(lease_ms))
            {
                lease.expires_ms = now.saturating_add(lease_ms);
            }
        }
        let leasable = Self::leasable(&next, &shards);
        let live = |l: &Lease| l.owner.is_some() && l.expires_ms > now;
        let held = |file: &GroupFile, w: &str| {
            leasable
                .iter()
                .filter(|i| {
                    file.shards
                        .get(i)
                        .is_some_and(|l| live(l) && l.owner.as_deref() == Some(w))
                })
                .count()
        };
        // Leases another worker asked for: handed over now, between this worker's batches
        // (rounds checkpoint each batch before the next round starts).
        let live_workers: BTreeSet<String> = next.workers.keys().cloned().collect();
        for lease in next.shards.values_mut() {
            if lease.owner.as_deref() == Some(worker) {
                if let Some(to) = lease.handoff.take() {
                    if live_workers.contains(&to) {
                        lease.owner = Some(to);
                        lease.expires_ms = now.saturating_add(lease_ms);
                    }
                }
            }
        }
        let workers = next.workers.len().max(1);
        let target = leasable.len().div_ceil(workers);
        let asked = next
            .shards
            .values()
            .any(|l| l.handoff.as_deref() == Some(worker) && live(l));
        while held(&next, worker) < target {
            let free = leasable
                .iter()
                .copied()
                .find(|i| next.shards.get(i).is_some_and(|l| !live(l)));
            let taken = match free {
                Some(i) => Some(i),
                None if asked => None,
                None => {
                    // Ask the busiest worker for one lease, if it holds more than its share.
                    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                    for i in &leasable {
                        if let Some(owner) = next
                            .shards
                            .get(i)
                            .filter(|l| live(l))
                            .and_then(|l| l.owner.clone())
                        {
                            *counts.entry(owner).or_default() += 1;
                        }
                    }
                    let busiest = counts
                        .iter()
                        .filter(|(w, _)| w.as_str() != worker)
                        .max_by_key(|(_, n)| **n)
                        .filter(|(_, n)| **n > target)
                        .map(|(w, _)| w.clone());
                    let wanted = busiest.and_then(|victim| {
                        leasable.iter().rev().copied().find(|i| {
                            next.shards.get(i).is_some_and(|l| {
                                live(l)
                                    && l.owner.as_deref() == Some(&victim)
                                    && l.handoff.is_none()
                            })
                        })
                    });
                    if let Some(lease) = wanted.and_then(|i| next.shards.get_mut(&i)) {
                        lease.handoff = Some(worker.to_string());
                    }
                    // The owner hands it over at its next round (or it expires).
                    break;
                }
            };
            let Some(index) = taken else { break };
            if let Some(lease) = next.shards.get_mut(&index) {
                lease.owner = Some(worker.to_string());
                lease.expires_ms = now.saturating_add(lease_ms);
                lease.handoff = None;
            }
        }
        let mine: Vec<u32> = leasable
            .iter()
            .copied()
            .filter(|i| {
                next.shards
                    .get(i)
                    .is_some_and(|l| live(l) && l.owner.as_deref() == Some(worker))
            })
            .collect();
        self.save(&mut state, next)?;
        Ok((mine, shards))
    }

    /// Renews `worker`'s leases and takes more up to its fair share, as each round of a
    /// [`Worker`](super::Worker) does, and returns the shards it holds, each with a shard iterator after its
    /// checkpoint (without one: at the group's initial position, or for a shard created by
    /// resharding, at its beginning). For workers that read by themselves, such as workers in
    /// other processes reading through the server: they read from the iterator, checkpoint
    /// with [`ConsumerGroup::checkpoint`], and at a closed shard's end call
    /// [`ConsumerGroup::finish_shard`], which lets its children be leased.
    pub fn lease_shards(&self, worker: &str) -> Result<Vec<LeasedShard>> {
        let (stream, held) = self.lease_positions(worker)?;
        held.into_iter()
            .map(|(shard, from)| {
                Ok(LeasedShard {
                    iterator: stream.shard_iterator(
                        shard,
                        Start::At(SequenceNumber::new(shard.index(), from)),
                    )?,
                    shard_id: shard,
                    index: shard.index(),
                })
            })
            .collect()
    }

    /// Renews `worker`'s leases and takes more up to its fair share; the stream, and the shards
    /// the worker holds with the offset to read each from (see [`ConsumerGroup::lease_shards`]).
    pub(super) fn lease_positions(
        &self,
        worker: &str,
    ) -> Result<(Arc<Stream>, Vec<LeasedPosition>)> {
        let (held, described) = self.acquire_described(worker)?;
        let (stream_name, initial) = {
            let state = self.lock();
            (state.stream.clone(), state.initial_position)
        };
        let stream = self.store.stream(&stream_name)?;
        let mut leased = Vec::with_capacity(held.len());
        for index in held {
            let id = ShardId(index);
            let mut checkpoint = self.lock().shards.get(&index).and_then(|l| l.checkpoint);
            let has_parents = described
                .iter()
                .find(|s| s.shard_id == id)
                .is_some_and(|s| s.parent_shard_id.is_some());
            if checkpoint.is_none() && !has_parents && initial == InitialPosition::Latest {
                // Pin LATEST where the shard is first leased, so later reads do not skip.
                let end = stream.shard_ends()?.get(&index).copied().unwrap_or(0);
                match self.commit(worker, index, end, false) {
                    Ok(()) => checkpoint = Some(end),
                    Err(Error::LeaseLost { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let start = start_after(index, checkpoint, has_parents, initial);
            leased.push((ShardId(index), stream.resolve(ShardId(index), start)?));
        }
        Ok((stream, leased))
    }

    /// Marks `shard_id` processed to its end by `worker`, which holds its lease, so that its
    /// children can be leased. The shard must be closed, with nothing left to read after the
    /// checkpoint.
    pub fn finish_shard(&self, worker: &str, shard: ShardId) -> Result<()> {
        let index = shard.index();
        let (stream_name, initial, checkpoint) = {
            let state = self.lock();
            let checkpoint = state.shards.get(&index).and_then(|l| l.checkpoint);
            (state.stream.clone(), state.initial_position, checkpoint)
        };
        let stream = self.store.stream(&stream_name)?;
        let has_parents = stream
            .describe()
            .shards
            .iter()
            .find(|s| s.shard_id == shard)
            .is_some_and(|s| s.parent_shard_id.is_some());
        let start = start_after(index, checkpoint, has_parents, initial);
        let next = stream.read(shard, stream.resolve(shard, start)?, ReadLimits::records(1))?;
        if !next.records.is_empty() {
            return Err(Error::invalid(
                "ShardId",
                format!("{shard} has records after the checkpoint; process them first"),
            ));
        }
        if next.end.finished.is_none() {
            return Err(Error::invalid(
                "ShardId",
                format!("{shard} is open; only a closed shard ends"),
            ));
        }
        let end = stream.shard_ends()?.get(&index).copied().unwrap_or(0);
        self.commit(worker, index, end, true)
    }
}

/// A shard a worker holds, with an iterator to read it from (see
/// [`ConsumerGroup::lease_shards`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedShard {
    /// Its id.
    pub shard_id: ShardId,
    /// A shard iterator after the group's checkpoint (for `get_records`).
    pub iterator: String,
    index: u32,
}

/// A shard a worker holds, and the offset to read it from.
pub(super) type LeasedPosition = (ShardId, Offset);

/// Where a group reads shard `index` from: after its checkpoint (the next offset), or without
/// one at the group's initial position; a shard with parents always from its beginning.
pub(super) fn start_after(
    index: u32,
    checkpoint: Option<u64>,
    has_parents: bool,
    initial: InitialPosition,
) -> Start {
    match checkpoint {
        // The checkpoint is the next offset to read: the record there, whenever it comes.
        Some(n) => Start::At(SequenceNumber::new(index, Offset::new(n))),
        None if has_parents => Start::TrimHorizon,
        None => match initial {
            InitialPosition::TrimHorizon => Start::TrimHorizon,
            InitialPosition::Latest => Start::Latest,
            InitialPosition::AtTimestamp { ms } => Start::AtTimestamp(ms),
        },
    }
}
