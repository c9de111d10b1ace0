//! Fan-out subscriptions (Kinesis SubscribeToShard) of a registered consumer to one shard.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hash_key::ShardId;
use crate::stream::{Start, StreamRecord};
use crate::{Offset, ReadLimits, SequenceNumber, Store};

/// How a registered consumer's subscription to a shard reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Where to start.
    pub start: Start,
    /// Data bytes a second the subscription may deliver (Kinesis enhanced fan-out: 2 MiB/s per
    /// consumer and shard); `None` for no limit. Measured on the store's clock.
    pub max_bytes_per_sec: Option<u64>,
    /// How often a subscription whose byte budget is spent looks again (default 100 ms). A
    /// caught-up subscription does not poll: an append to the stream wakes it.
    pub poll: Duration,
}

impl SubscribeOptions {
    /// From `start`, with Kinesis's 2 MiB/s.
    pub fn new(start: Start) -> SubscribeOptions {
        SubscribeOptions {
            start,
            max_bytes_per_sec: Some(2 * 1024 * 1024),
            poll: Duration::from_millis(100),
        }
    }
}

/// What a subscription delivers (Kinesis SubscribeToShardEvent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    /// Records, in order (none for a heartbeat).
    pub records: Vec<StreamRecord>,
    /// Resume after this sequence number (AFTER_SEQUENCE_NUMBER) to continue where this event
    /// ends: the last record delivered, or before any, the position before the start.
    pub continuation_sequence_number: SequenceNumber,
    /// How far behind the newest record of the shard the subscription is, ms.
    pub millis_behind_latest: i64,
    /// At a closed shard's end: the shards to continue with. The subscription ends after.
    pub child_shards: Vec<crate::ChildShard>,
}

/// A registered consumer's push-style subscription to one shard (Kinesis SubscribeToShard):
/// records as they are appended, from any iterator position, within a throughput budget. Reads
/// through the stream's typed core (its own budget stands in for GetRecords' limits).
pub struct ShardSubscription {
    store: Arc<Store>,
    stream: String,
    shard: ShardId,
    /// Where the next read starts; `None` once a closed shard was delivered to its end.
    next: Option<Offset>,
    continuation: SequenceNumber,
    options: SubscribeOptions,
    /// Bytes the budget still allows, and when it was last refilled (store clock, ms).
    budget: (f64, i64),
}

impl std::fmt::Debug for ShardSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSubscription")
            .field("shard", &self.shard)
            .field("continuation", &self.continuation)
            .finish()
    }
}

impl ShardSubscription {
    /// Subscribes `consumer` (registered on `stream`) to `shard`.
    pub fn open(
        store: Arc<Store>,
        stream: &str,
        consumer: &str,
        shard: ShardId,
        options: SubscribeOptions,
    ) -> Result<ShardSubscription> {
        let s = store.stream(stream)?;
        if !s.describe().consumers.iter().any(|c| c.name == consumer) {
            return Err(Error::ResourceNotFound {
                kind: "consumer",
                name: consumer.to_string(),
            });
        }
        let from = s.resolve(shard, options.start)?;
        let now = store.options().shard.clock.now_ms();
        let capacity = options
            .max_bytes_per_sec
            .map_or(f64::INFINITY, |b| b as f64);
        Ok(ShardSubscription {
            store,
            stream: stream.to_string(),
            shard,
            next: Some(from),
            continuation: SequenceNumber::new(
                shard.index(),
                Offset::new(from.get().saturating_sub(1)),
            ),
            options,
            budget: (capacity, now),
        })
    }

    /// Whether the byte budget is spent, so that records waiting are held back until it refills:
    /// such a subscription looks again after [`SubscribeOptions::poll`], as no append will
    /// wake it.
    pub fn throttled(&self) -> bool {
        self.options.max_bytes_per_sec.is_some() && self.budget.0 <= 0.0
    }

    /// The poll interval of a throttled subscription.
    pub fn poll(&self) -> Duration {
        self.options.poll
    }

    /// The next event: records that arrived (as many as the budget allows), or after `wait`
    /// without any, an empty heartbeat. `None` once a closed shard was delivered to its end
    /// (the event before carried its child shards).
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<SubscriptionEvent>> {
        let Some(from) = self.next else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let stream = self.store.stream(&self.stream)?;
        loop {
            // Taken before the read, so an append after it ends the wait below at once.
            let seen = stream.change_generation();
            let clock_now = self.store.options().shard.clock.now_ms();
            if let Some(rate) = self.options.max_bytes_per_sec {
                let (left, at) = self.budget;
                let refill = (clock_now - at).max(0) as f64 / 1000.0 * rate as f64;
                self.budget = ((left + refill).min(rate as f64), clock_now);
            }
            if self.budget.0 > 0.0 {
                let mut read = stream.read(self.shard, from, ReadLimits::default())?;
                // Within the budget: cut the batch, and continue after its last record.
                let mut bytes = 0.0;
                let keep = read
                    .records
                    .iter()
                    .take_while(|r| {
                        let fits = bytes < self.budget.0;
                        bytes += r.data.len() as f64;
                        fits
                    })
                    .count();
                let cut = keep < read.records.len();
                read.records.truncate(keep);
                self.budget.0 -= read
                    .records
                    .iter()
                    .map(|r| r.data.len() as f64)
                    .sum::<f64>();
                if let Some(last) = read.records.last() {
                    self.continuation = last.sequence_number;
                }
                let children = if cut { None } else { read.end.finished };
                let ended = children.is_some();
                self.next = if cut {
                    self.continuation.offset().checked_next()
                } else if ended {
                    None
                } else {
                    Some(read.end.next)
                };
                if !read.records.is_empty() || ended || started.elapsed() >= wait {
                    return Ok(Some(SubscriptionEvent {
                        records: read.records,
                        continuation_sequence_number: self.continuation,
                        millis_behind_latest: read.end.millis_behind_latest,
                        child_shards: children.unwrap_or_default(),
                    }));
                }
                // Caught up: sleep until the stream changes (or the wait is over).
                stream.wait_for_change(seen, wait.saturating_sub(started.elapsed()));
                continue;
            } else if started.elapsed() >= wait {
                return Ok(Some(SubscriptionEvent {
                    records: Vec::new(),
                    continuation_sequence_number: self.continuation,
                    millis_behind_latest: 0,
                    child_shards: Vec::new(),
                }));
            }
            // The budget is spent: it refills with the clock, which wakes nobody.
            std::thread::sleep(
                self.options
                    .poll
                    .min(wait.saturating_sub(started.elapsed())),
            );
        }
    }
}
