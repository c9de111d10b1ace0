//! A Kinesis stream as the source: its consumer group (one worker holding every lease), where
//! reading starts, and reading a shard's range for a batch.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::consumer::{ConsumerGroup, GroupConfig, InitialPosition};
use crate::error::Result;
use crate::{Offset, ReadLimits, Record};

use super::checkpoint::{read_checkpoint, Checkpoint};
use super::{DeliveryStream, SOURCE_GROUP_FILE};

/// The one worker of a stream source's group.
pub(super) const SOURCE_WORKER: &str = "firehose";

/// The source group's lease: the delivery stream is its only worker (the store's lock admits
/// one process), so the lease only has to outlast any delivery pass.
pub(super) const SOURCE_LEASE: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

/// Where a delivery stream reading a Kinesis stream starts, when it is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceStart {
    /// Records put after the delivery stream is created, as Firehose does.
    #[default]
    Latest,
    /// Every record still in the stream.
    TrimHorizon,
}

/// The consumer-group configuration of a stream source.
pub(super) fn source_group_config(stream: &str) -> GroupConfig {
    GroupConfig {
        stream: stream.to_string(),
        initial_position: InitialPosition::TrimHorizon,
        lease_duration: SOURCE_LEASE,
    }
}

/// Creates the source group of a delivery stream being created in `dir`, positioned at every
/// shard's end (`SourceStart::Latest`): records put from now on are delivered.
pub(crate) fn pin_source_at_latest(
    store: &Arc<crate::Store>,
    dir: &Path,
    name: &str,
    stream: &str,
) -> Result<()> {
    let group = ConsumerGroup::open_at(
        Arc::clone(store),
        dir.join(SOURCE_GROUP_FILE),
        name,
        source_group_config(stream),
    )?;
    let ends = store.stream(stream)?.shard_ends()?;
    group.adopt(&ends, &BTreeSet::new())
}

/// Where a delivery stream's records come from.
#[derive(Clone, Default)]
pub enum Source {
    /// Put by the caller (`put_record`, `put_record_batch`) into the stream's own buffer.
    #[default]
    DirectPut,
    /// Read from every shard of a stream of `store`, parents before children.
    KinesisStream {
        /// The store holding the stream.
        store: Arc<crate::Store>,
        /// The stream's name.
        stream: String,
    },
}

impl DeliveryStream {
    /// A stream source's consumer group, opened (and created) on first use; `None` for direct
    /// put. Positions of a checkpoint file written before the group existed are adopted.
    pub(super) fn source_group(&self) -> Result<Option<Arc<ConsumerGroup>>> {
        let Source::KinesisStream { store, stream } = &self.source else {
            return Ok(None);
        };
        let mut slot = self.source_group.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = slot.as_ref() {
            return Ok(Some(Arc::clone(group)));
        }
        let group = ConsumerGroup::open_at(
            Arc::clone(store),
            self.dir.join(SOURCE_GROUP_FILE),
            &self.name,
            source_group_config(stream),
        )?;
        let legacy = read_checkpoint(&self.dir)?;
        if !legacy.shards.is_empty() || !legacy.finished.is_empty() {
            // Idempotent (checkpoints only move forward), so a crash before the checkpoint file
            // is rewritten without these fields just adopts them again.
            group.adopt(&legacy.shards, &legacy.finished)?;
        }
        *slot = Some(Arc::clone(&group));
        Ok(Some(group))
    }

    /// For a stream source: renews the source group's leases, loads its positions into
    /// `position`, and forgets a pending batch the group already records as delivered (a crash
    /// between the group's write and the checkpoint's). Returns the shards that may be read
    /// now: those whose parents are delivered to their end, in index order.
    pub(super) fn sync_source(&self, position: &mut Checkpoint) -> Result<Vec<u32>> {
        let Some(group) = self.source_group()? else {
            return Ok(Vec::new());
        };
        let readable = group.acquire(SOURCE_WORKER)?;
        position.shards.clear();
        position.finished.clear();
        for (index, (next, finished)) in group.positions() {
            if let Some(next) = next {
                position.shards.insert(index, next);
            }
            if finished {
                position.finished.insert(index);
            }
        }
        let delivered = position.pending.as_ref().is_some_and(|p| {
            p.shard
                .and_then(|shard| position.shards.get(&shard))
                .is_some_and(|&next| next >= p.to)
        });
        if delivered {
            position.pending = None;
        }
        Ok(readable)
    }
}

/// Reads shard `index` of a stream from offset `from`: up to `max_bytes` of data (at least one
/// record), or exactly the records below `to` when given. Also says whether the shard is closed
/// and read to its end. Through the stream's typed read core: no iterator tokens, no GetRecords
/// throttling, explicit hash keys kept.
pub(super) fn read_stream(
    store: &crate::Store,
    stream_name: &str,
    index: u32,
    from: u64,
    to: Option<u64>,
    max_bytes: usize,
) -> Result<(Vec<Record>, bool)> {
    let stream = store.stream(stream_name)?;
    let shard = crate::hash_key::ShardId(index);
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    let mut next = Offset::new(from);
    loop {
        let limits = ReadLimits {
            max_records: 10_000,
            max_bytes: crate::stream::MAX_GET_RECORDS_BYTES,
        };
        let read = stream.read(shard, next, limits)?;
        if read.records.is_empty() {
            return Ok((out, read.end.finished.is_some()));
        }
        for r in read.records {
            let offset = r.sequence_number.offset();
            if to.is_some_and(|t| offset.get() >= t) {
                return Ok((out, false));
            }
            bytes += r.data.len();
            out.push(Record {
                offset,
                arrival_ms: r.approximate_arrival_ms,
                explicit_hash_key: r.explicit_hash_key,
                partition_key: bytes::Bytes::from(r.partition_key.into_bytes()),
                data: r.data,
            });
            if to.is_none() && bytes >= max_bytes {
                return Ok((out, false));
            }
        }
        if read.end.finished.is_some() {
            return Ok((out, true));
        }
        next = read.end.next;
    }
}
