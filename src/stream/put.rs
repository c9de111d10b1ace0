//! Putting records: [`PutRecord`] and its checks, `put_record`, and `put_records` (bulk MD5
//! routing, one append per shard, per-entry results), with the write-side throughput limits.

use std::sync::Arc;

use super::{ShardSlot, Stream};
use crate::error::{Error, Result};
use crate::hash_key::{hash_key_of, hash_keys_of, shard_id, ShardId};
use crate::log::shard::Shard;
use crate::manifest::{StreamManifest, StreamMode};
use crate::sequence::SequenceNumber;
use crate::types::{Appended, NewRecord, Offset};

/// Most records one put_records call takes.
pub const MAX_PUT_RECORDS: usize = 500;
/// Most bytes (data + partition keys) one put_records call takes.
pub const MAX_PUT_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// Longest partition key, in characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// One record to put.
#[derive(Debug, Clone, Copy)]
pub struct PutRecord<'a> {
    /// Partition key: 1 to 256 characters. Its MD5 picks the shard.
    pub partition_key: &'a str,
    /// The payload.
    pub data: &'a [u8],
    /// A hash key that picks the shard instead of the partition key's MD5.
    pub explicit_hash_key: Option<u128>,
    /// A sequence number the new record's must be greater than (Kinesis
    /// SequenceNumberForOrdering).
    pub sequence_number_for_ordering: Option<SequenceNumber>,
}

impl<'a> PutRecord<'a> {
    /// A record routed by its partition key.
    pub fn new(partition_key: &'a str, data: &'a [u8]) -> PutRecord<'a> {
        PutRecord {
            partition_key,
            data,
            explicit_hash_key: None,
            sequence_number_for_ordering: None,
        }
    }
}

/// Where a put record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The shard the record went to.
    pub shard_id: ShardId,
    /// The record's sequence number.
    pub sequence_number: SequenceNumber,
}

/// Why one entry of a put_records call failed while others may have succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutFailure {
    /// What kind of failure (the server reports it as Kinesis's error code).
    pub reason: PutFailureReason,
    /// What happened.
    pub message: String,
}

/// The kinds of [`PutFailure`]. The record was not stored either way; both are worth a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFailureReason {
    /// The shard's write throughput limit (1 MiB or 1,000 records a second) was reached.
    Throttled,
    /// Anything else, e.g. an I/O error writing the shard.
    Internal,
}

impl Stream {
    /// Whether puts must pass [`Stream::admit_writes`]: throughput limits apply, or the stream is
    /// on-demand and counts its shards' write rates.
    fn watches_writes(&self, manifest: &StreamManifest) -> bool {
        self.limits_apply(manifest) || manifest.mode == StreamMode::OnDemand
    }

    /// Admits writes of these sizes to a shard under its limits (if they apply) and counts the
    /// admitted ones for on-demand scaling; returns which were admitted.
    fn admit_writes(
        &self,
        manifest: &StreamManifest,
        slot: &ShardSlot,
        sizes: &[usize],
    ) -> Vec<bool> {
        let limits = self.limits_apply(manifest);
        let now = self.context.clock.now_ms();
        let mut throttle = slot.throttle();
        let admitted: Vec<bool> = sizes
            .iter()
            .map(|&size| !limits || throttle.try_write(now, size))
            .collect();
        if manifest.mode == StreamMode::OnDemand {
            let (records, bytes) = sizes
                .iter()
                .zip(&admitted)
                .filter(|(_, &a)| a)
                .fold((0u64, 0u64), |(n, b), (&size, _)| (n + 1, b + size as u64));
            throttle.note_written(now, records, bytes);
        }
        admitted
    }

    fn check_record(&self, manifest: &StreamManifest, record: &PutRecord<'_>) -> Result<u128> {
        Ok(match self.check_record_shape(manifest, record)? {
            Some(explicit) => explicit,
            None => hash_key_of(record.partition_key),
        })
    }

    /// Checks a record's partition key, size and explicit hash key; returns the explicit hash
    /// key, if any (the caller derives the others from the partition keys).
    fn check_record_shape(
        &self,
        manifest: &StreamManifest,
        record: &PutRecord<'_>,
    ) -> Result<Option<u128>> {
        let key = record.partition_key;
        // A key has at most as many characters as bytes: only a long one needs counting.
        let chars = if key.len() <= MAX_PARTITION_KEY_CHARS {
            key.len()
        } else {
            key.chars().count()
        };
        if key.is_empty() || chars > MAX_PARTITION_KEY_CHARS {
            return Err(Error::invalid(
                "PartitionKey",
                format!("{chars} characters; it must have 1 to {MAX_PARTITION_KEY_CHARS}"),
            ));
        }
        let size = record.partition_key.len() + record.data.len();
        if size > manifest.max_record_bytes {
            return Err(Error::invalid(
                "Data",
                format!(
                    "record of {size} bytes (data + partition key) exceeds the stream's limit of {} bytes",
                    manifest.max_record_bytes
                ),
            ));
        }
        Ok(record.explicit_hash_key)
    }

    /// Puts one record: routes it to the open shard that owns its hash key and appends it.
    pub fn put_record(&self, record: &PutRecord<'_>) -> Result<Put> {
        let topology = self.read_topology();
        let hash_key = self.check_record(&topology.manifest, record)?;
        let index = topology.route(hash_key);
        let ordering = record.sequence_number_for_ordering;
        let slot = &topology.shards[&index];
        let shard = slot.open(&self.shard_options(&topology.manifest))?;
        if self.watches_writes(&topology.manifest) {
            let size = record.partition_key.len() + record.data.len();
            if !self.admit_writes(&topology.manifest, slot, &[size])[0] {
                return Err(self.throttled(index, "1 MiB or 1,000 records per second"));
            }
        }
        // A bound from another shard orders nothing here (every number this shard hands out
        // is above all it handed out before), and Kinesis accepts it: only one of this shard at
        // or past the number the record would get is refused.
        if let Some(bound) = ordering.filter(|b| b.shard_index() == index) {
            let next = SequenceNumber::new(index, shard.next_offset());
            if bound >= next {
                return Err(Error::invalid(
                    "SequenceNumberForOrdering",
                    format!(
                        "{bound} is not below the number the record would get ({next}) in {}",
                        shard_id(index)
                    ),
                ));
            }
        }
        let appended = shard.append(&[NewRecord {
            partition_key: record.partition_key.as_bytes(),
            explicit_hash_key: record.explicit_hash_key.map(|_| hash_key),
            data: record.data,
        }])?;
        self.changes.notify();
        Ok(Put {
            shard_id: ShardId(index),
            sequence_number: SequenceNumber::new(index, appended.first),
        })
    }

    /// Puts up to 500 records (10 MiB in all). A malformed request fails as a whole; otherwise
    /// each entry succeeds or fails on its own, and entries for the same shard keep their order.
    pub fn put_records(&self, records: &[PutRecord<'_>]) -> Result<Vec<Result<Put, PutFailure>>> {
        if !(1..=MAX_PUT_RECORDS).contains(&records.len()) {
            return Err(Error::invalid(
                "Records",
                format!(
                    "{} records; a call takes 1 to {MAX_PUT_RECORDS}",
                    records.len()
                ),
            ));
        }
        let total: usize = records
            .iter()
            .map(|r| r.partition_key.len() + r.data.len())
            .sum();
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(Error::invalid(
                "Records",
                format!("{total} bytes; a call takes at most {MAX_PUT_RECORDS_BYTES}"),
            ));
        }
        let topology = self.read_topology();
        let mut explicit = Vec::with_capacity(records.len());
        for record in records {
            if record.sequence_number_for_ordering.is_some() {
                return Err(Error::invalid(
                    "Records",
                    "put_records takes no SequenceNumberForOrdering",
                ));
            }
            explicit.push(self.check_record_shape(&topology.manifest, record)?);
        }
        // The MD5s of the partition keys, several at a time; explicit keys take their place.
        let mut derived = Vec::with_capacity(records.len());
        hash_keys_of(
            records
                .iter()
                .zip(&explicit)
                .filter(|(_, explicit)| explicit.is_none())
                .map(|(r, _)| r.partition_key.as_bytes()),
            &mut derived,
        );
        let mut derived = derived.into_iter();
        let hash_keys: Vec<u128> = explicit
            .into_iter()
            // `derived` holds one hash key per record without an explicit one.
            .map(|explicit| explicit.or_else(|| derived.next()).unwrap_or_default())
            .collect();
        let routes: Vec<usize> = hash_keys
            .iter()
            .map(|&k| topology.route_position(k))
            .collect();
        // Grouped by shard, each shard's entries in request order.
        let routed: Vec<(u32, usize, u128)> = group_by_route(&routes, topology.routes.len())
            .into_iter()
            .map(|i| (topology.routes[routes[i]].1, i, hash_keys[i]))
            .collect();
        let options = self.shard_options(&topology.manifest);
        let watch = self.watches_writes(&topology.manifest);
        let mut results: Vec<Option<Result<Put, PutFailure>>> = vec![None; records.len()];
        let mut batch = Vec::new();
        let mut sizes = Vec::new();
        let mut kept: Vec<(u32, usize, u128)> = Vec::new();
        let mut any_appended = false;
        // Each shard's append, and its entries, until the flush policy's sync has covered it.
        let mut unsynced: Vec<(Arc<Shard>, Appended, Vec<usize>)> = Vec::new();
        for group in routed.chunk_by(|a, b| a.0 == b.0) {
            let index = group[0].0;
            let slot = &topology.shards[&index];
            // Entries over the shard's throughput limit fail alone; the rest go in one append.
            kept.clear();
            kept.extend_from_slice(group);
            let group = &mut kept;
            if watch {
                sizes.clear();
                sizes.extend(
                    group
                        .iter()
                        .map(|&(_, i, _)| records[i].partition_key.len() + records[i].data.len()),
                );
                let admitted = self.admit_writes(&topology.manifest, slot, &sizes);
                let mut k = 0;
                group.retain(|&(_, i, _)| {
                    let keep = admitted[k];
                    k += 1;
                    if !keep {
                        results[i] = Some(Err(PutFailure {
                            reason: PutFailureReason::Throttled,
                            message: self
                                .throttled(index, "1 MiB or 1,000 records per second")
                                .to_string(),
                        }));
                    }
                    keep
                });
                if group.is_empty() {
                    continue;
                }
            }
            batch.clear();
            batch.extend(group.iter().map(|&(_, i, hash_key)| NewRecord {
                partition_key: records[i].partition_key.as_bytes(),
                explicit_hash_key: records[i].explicit_hash_key.map(|_| hash_key),
                data: records[i].data,
            }));
            let appended = slot.open(&options).and_then(|shard| {
                let appended = shard.append_unsynced(&batch)?;
                unsynced.push((shard, appended, group.iter().map(|&(_, i, _)| i).collect()));
                Ok(appended)
            });
            any_appended |= appended.is_ok();
            for (k, &(_, i, _)) in group.iter().enumerate() {
                results[i] = Some(match &appended {
                    Ok(a) => Ok(Put {
                        shard_id: ShardId(index),
                        sequence_number: SequenceNumber::new(
                            index,
                            Offset::new(a.first.get() + k as u64),
                        ),
                    }),
                    Err(e) => Err(PutFailure {
                        reason: match e {
                            Error::ProvisionedThroughputExceeded { .. } => {
                                PutFailureReason::Throttled
                            }
                            _ => PutFailureReason::Internal,
                        },
                        message: e.to_string(),
                    }),
                });
            }
        }
        if any_appended {
            // Once per call, not per shard: waiters re-read every shard they follow anyway.
            self.changes.notify();
        }
        // Every shard appended before any sync is waited for, and the shards' syncs run
        // concurrently: a call waits about one sync, not one per shard; each shard's sync is
        // shared by every call waiting on it. An entry is acknowledged only once its shard's sync
        // has covered it.
        let pending: Vec<(Arc<Shard>, Appended)> = unsynced
            .iter()
            .map(|(shard, appended, _)| (Arc::clone(shard), *appended))
            .collect();
        let synced = Shard::make_all_durable(&pending);
        for ((_, _, entries), synced) in unsynced.into_iter().zip(synced) {
            if let Err(e) = synced {
                for i in entries {
                    results[i] = Some(Err(PutFailure {
                        reason: PutFailureReason::Internal,
                        message: e.to_string(),
                    }));
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every entry was routed to exactly one group"))
            .collect())
    }
}

/// The indexes of `routes` (each below `route_count`) ordered by route, equal routes in index
/// order: a counting sort when there are not many more routes than entries (the usual
/// `PutRecords` over a few shards), else a sort.
fn group_by_route(routes: &[usize], route_count: usize) -> Vec<usize> {
    if route_count > 4 * routes.len() {
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_unstable_by_key(|&i| (routes[i], i));
        return order;
    }
    // starts[r] = first output slot of route r, once the counts are summed.
    let mut starts = vec![0usize; route_count + 1];
    for &r in routes {
        starts[r + 1] += 1;
    }
    for r in 1..starts.len() {
        starts[r] += starts[r - 1];
    }
    let mut order = vec![0; routes.len()];
    for (i, &r) in routes.iter().enumerate() {
        order[starts[r]] = i;
        starts[r] += 1;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn grouping_by_route_is_a_stable_sort(
            routes in proptest::collection::vec(0usize..40, 0..60),
            extra in 0usize..300,
        ) {
            let route_count = routes.iter().max().map_or(0, |m| m + 1) + extra;
            let mut expected: Vec<usize> = (0..routes.len()).collect();
            expected.sort_by_key(|&i| routes[i]);
            prop_assert_eq!(group_by_route(&routes, route_count), expected);
        }
    }
}
