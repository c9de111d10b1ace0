//! Reading a stream: the typed core ([`Stream::resolve`], [`Stream::read`], [`Stream::visit`]:
//! a shard by its [`ShardId`], a position as an [`Offset`]) and, over it, the Kinesis façade of
//! shard iterator tokens ([`Stream::shard_iterator`], `get_records`): tokens, their time to live,
//! the GetRecords limits and the per-shard read throughput limits live only in the façade. The
//! library's own readers (consumer groups, Firehose stream sources) use the core.

use bytes::Bytes;

use super::{not_found_shard, Stream, Topology};
use crate::error::{Error, Result};
use crate::hash_key::{shard_id, HashKeyRange, ShardId};
use crate::iterator::IteratorToken;
use crate::log::shard::Shard;
use crate::manifest::ShardEntry;
use crate::sequence::SequenceNumber;
use crate::types::{Offset, ReadLimits};

/// Most records one GetRecords call returns.
pub const MAX_GET_RECORDS: usize = 10_000;
/// Most bytes one GetRecords call returns.
pub const MAX_GET_RECORDS_BYTES: usize = 10 * 1024 * 1024;

/// Where a read of a shard starts: the typed form of a Kinesis `ShardIteratorType` and its
/// argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record still stored.
    TrimHorizon,
    /// Just after the newest record: only records put from now on.
    Latest,
    /// The record with this sequence number (of the shard read).
    At(SequenceNumber),
    /// The record after the one with this sequence number (of the shard read).
    After(SequenceNumber),
    /// The first record that arrived at or after this time (ms since the Unix epoch).
    AtTimestamp(i64),
}

/// What a read of a shard says besides its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEnd {
    /// Where the next read of the shard starts.
    pub next: Offset,
    /// Records read (or lent).
    pub records: usize,
    /// Their bytes (data + partition keys).
    pub bytes: usize,
    /// How far behind the newest record of the shard the reader is, in ms (0 when caught up).
    pub millis_behind_latest: i64,
    /// `Some` once a closed shard has been read to its end: the shards to continue with.
    pub finished: Option<Vec<ChildShard>>,
}

/// Records read by [`Stream::read`], and where the read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRead {
    /// The records, in order.
    pub records: Vec<StreamRecord>,
    /// Where the next read starts, and whether the shard is finished.
    pub end: ReadEnd,
}

/// A record as get_records returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its sequence number.
    pub sequence_number: SequenceNumber,
    /// When the shard accepted it, ms since the Unix epoch.
    pub approximate_arrival_ms: i64,
    /// Partition key.
    pub partition_key: String,
    /// The hash key it was put with instead of its partition key's MD5, if any (not part of a
    /// Kinesis GetRecords answer; kept for readers that copy records on).
    pub explicit_hash_key: Option<u128>,
    /// Payload: a zero-copy view into the shard's memory map.
    pub data: Bytes,
}

/// A shard that follows a closed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    /// Its id.
    pub shard_id: ShardId,
    /// The shards it came from (one for a split, two for a merge).
    pub parent_shards: Vec<ShardId>,
    /// The hash keys it owns.
    pub hash_key_range: HashKeyRange,
}

/// What get_records returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRecordsOutput {
    /// The records, in order.
    pub records: Vec<StreamRecord>,
    /// The iterator to continue with; `None` once a closed shard has been read to its end.
    pub next_shard_iterator: Option<String>,
    /// How far behind the newest record of the shard the reader is, in ms (0 when caught up).
    pub millis_behind_latest: i64,
    /// Once a closed shard is read to its end: the shards to continue with.
    pub child_shards: Vec<ChildShard>,
}

/// A record lent by [`Store::visit_records`](crate::Store::visit_records): borrowed from the
/// shard's memory map for the duration of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRecordRef<'a> {
    /// Its sequence number.
    pub sequence_number: SequenceNumber,
    /// When the shard accepted it, ms since the Unix epoch.
    pub approximate_arrival_ms: i64,
    /// Partition key.
    pub partition_key: &'a str,
    /// The hash key it was put with instead of its partition key's MD5, if any.
    pub explicit_hash_key: Option<u128>,
    /// Payload.
    pub data: &'a [u8],
}

/// Where a GetRecords page taken through [`Store::visit_records`](crate::Store::visit_records)
/// ends: what [`GetRecordsOutput`] says besides the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageEnd {
    /// Records lent.
    pub records: usize,
    /// Their bytes (data + partition keys).
    pub bytes: usize,
    /// The iterator to continue with; `None` once a closed shard has been read to its end.
    pub next_shard_iterator: Option<String>,
    /// How far behind the newest record of the shard the reader is, in ms (0 when caught up).
    pub millis_behind_latest: i64,
    /// Once a closed shard is read to its end: the shards to continue with.
    pub child_shards: Vec<ChildShard>,
}

/// What one page's read from a shard took.
#[derive(Debug, Default)]
pub(super) struct PageRead {
    next: Offset,
    records: usize,
    bytes: usize,
    last_arrival_ms: Option<i64>,
}

impl PageRead {
    fn take(&mut self, bytes: usize, arrival_ms: i64) {
        self.records += 1;
        self.bytes += bytes;
        self.last_arrival_ms = Some(arrival_ms);
    }
}

fn not_utf8(shard: &Shard, offset: Offset) -> Error {
    Error::corrupt(shard.dir(), offset.get(), "partition key is not UTF-8")
}

impl Stream {
    /// Where a read of `shard` from `start` begins. [`Error::ResourceNotFound`] for a shard the
    /// stream does not have (or no longer has); [`Error::InvalidArgument`] for a sequence number
    /// of another shard, or past the shard's end.
    pub fn resolve(&self, shard: ShardId, start: Start) -> Result<Offset> {
        let topology = self.read_topology();
        let entry = topology
            .entry(shard.index())
            .ok_or_else(|| not_found_shard(&shard.to_string()))?;
        self.resolve_entry(&topology, entry, start)
    }

    fn resolve_entry(
        &self,
        topology: &Topology,
        entry: &ShardEntry,
        start: Start,
    ) -> Result<Offset> {
        let id = ShardId(entry.index);
        let closed_end = entry.closed.map(|c| Offset::new(c.end_offset));
        let slot = &topology.shards[&entry.index];
        let options = self.shard_options(&topology.manifest);
        let shard_end = || -> Result<Offset> {
            match closed_end {
                Some(end) => Ok(end),
                None => Ok(slot
                    .open_if_exists(&options)?
                    .map_or(Offset::new(0), |s| s.next_offset())),
            }
        };
        let own = |seq: SequenceNumber| -> Result<Offset> {
            if seq.shard_index() == entry.index {
                return Ok(seq.offset());
            }
            Err(Error::invalid(
                "StartingSequenceNumber",
                format!(
                    "\"{seq}\" is not a sequence number of {id} in stream {}",
                    self.name
                ),
            ))
        };
        let offset = match start {
            Start::TrimHorizon => Offset::new(0),
            Start::Latest => shard_end()?,
            Start::At(seq) => own(seq)?,
            Start::After(seq) => own(seq)?.checked_next().ok_or_else(|| {
                Error::invalid(
                    "StartingSequenceNumber",
                    format!(
                        "{seq} is the last sequence number {id} can have: nothing comes after it"
                    ),
                )
            })?,
            Start::AtTimestamp(t) => match slot.open_if_exists(&options)? {
                Some(shard) => shard.seek_time(t)?.min(shard_end()?),
                None => Offset::new(0),
            },
        };
        let end = shard_end()?;
        if offset > end {
            return Err(Error::invalid(
                "StartingSequenceNumber",
                format!("offset {offset} is past the end ({end}) of {id}"),
            ));
        }
        Ok(offset)
    }

    /// Reads `shard` from `from`: records up to `limits`, zero-copy views into the shard's
    /// memory map. Not throttled and not limited to GetRecords' page sizes: those are the
    /// Kinesis façade's ([`Store::get_records`](crate::Store::get_records)).
    pub fn read(&self, shard: ShardId, from: Offset, limits: ReadLimits) -> Result<ShardRead> {
        let (records, end) = self.read_owned(shard.index(), from, limits, false)?;
        Ok(ShardRead { records, end })
    }

    /// [`Stream::read`] lending each record to `visit` (borrowed from the shard's memory map, no
    /// copy, no allocation per record) instead of returning owned records. On an error, records
    /// already lent are to be discarded.
    pub fn visit(
        &self,
        shard: ShardId,
        from: Offset,
        limits: ReadLimits,
        visit: impl FnMut(StreamRecordRef<'_>),
    ) -> Result<ReadEnd> {
        self.visit_lent(shard.index(), from, limits, false, visit)
    }

    fn read_owned(
        &self,
        index: u32,
        from: Offset,
        limits: ReadLimits,
        metered: bool,
    ) -> Result<(Vec<StreamRecord>, ReadEnd)> {
        let mut records = Vec::new();
        let end = self.read_shard(index, from, limits, metered, |shard, from, limits| {
            let batch = shard.read(from, limits)?;
            records.reserve(batch.records.len());
            let mut page = PageRead::default();
            for r in batch.records {
                let partition_key = String::from_utf8(r.partition_key.to_vec())
                    .map_err(|_| not_utf8(shard, r.offset))?;
                page.take(partition_key.len() + r.data.len(), r.arrival_ms);
                records.push(StreamRecord {
                    sequence_number: SequenceNumber::new(index, r.offset),
                    approximate_arrival_ms: r.arrival_ms,
                    partition_key,
                    explicit_hash_key: r.explicit_hash_key,
                    data: r.data,
                });
            }
            page.next = batch.next_offset;
            Ok(page)
        })?;
        Ok((records, end))
    }

    fn visit_lent(
        &self,
        index: u32,
        from: Offset,
        limits: ReadLimits,
        metered: bool,
        mut visit: impl FnMut(StreamRecordRef<'_>),
    ) -> Result<ReadEnd> {
        self.read_shard(index, from, limits, metered, |shard, from, limits| {
            let mut page = PageRead::default();
            let mut bad_key = None;
            page.next = shard.visit(from, limits, |r| {
                if bad_key.is_some() {
                    return;
                }
                let Ok(partition_key) = std::str::from_utf8(r.partition_key) else {
                    bad_key = Some(r.offset);
                    return;
                };
                page.take(partition_key.len() + r.data.len(), r.arrival_ms);
                visit(StreamRecordRef {
                    sequence_number: SequenceNumber::new(index, r.offset),
                    approximate_arrival_ms: r.arrival_ms,
                    partition_key,
                    explicit_hash_key: r.explicit_hash_key,
                    data: r.data,
                });
            })?;
            match bad_key {
                Some(offset) => Err(not_utf8(shard, offset)),
                None => Ok(page),
            }
        })
    }

    /// One read of shard `index`: lets `read` take the records, and works out where the next
    /// read starts. `metered`: the shard's read throughput limits apply (the Kinesis façade).
    fn read_shard(
        &self,
        index: u32,
        from: Offset,
        limits: ReadLimits,
        metered: bool,
        read: impl FnOnce(&Shard, Offset, ReadLimits) -> Result<PageRead>,
    ) -> Result<ReadEnd> {
        let now = self.context.clock.now_ms();
        let topology = self.read_topology();
        let entry = topology
            .entry(index)
            .ok_or_else(|| not_found_shard(&shard_id(index)))?;
        let closed_end = entry.closed.map(|c| Offset::new(c.end_offset));
        let slot = &topology.shards[&index];
        let metered = metered && self.limits_apply(&topology.manifest);
        if metered && !slot.throttle().try_read_call(now) {
            return Err(self.throttled(index, "5 GetRecords calls or 2 MiB per second"));
        }
        let shard = slot.open_if_exists(&self.shard_options(&topology.manifest))?;
        let (page, latest) = match &shard {
            Some(shard) => {
                let page = read(shard, from, limits)?;
                (page, closed_end.unwrap_or_else(|| shard.next_offset()))
            }
            None => (
                PageRead {
                    next: from,
                    ..PageRead::default()
                },
                closed_end.unwrap_or(Offset::new(0)),
            ),
        };
        if metered {
            slot.throttle().charge_read(page.bytes);
        }
        let next = page.next;
        let millis_behind_latest = match page.last_arrival_ms {
            Some(last) if next < latest => now.saturating_sub(last).max(0),
            _ => 0,
        };
        let finished = closed_end.is_some_and(|end| next >= end);
        Ok(ReadEnd {
            next,
            records: page.records,
            bytes: page.bytes,
            millis_behind_latest,
            finished: finished.then(|| topology.children_of(index)),
        })
    }

    // The Kinesis façade: shard iterator tokens over the core.

    /// The shard called `shard_id_text`, read as Kinesis reads shard ids (`shardId-0`, `7`, ...;
    /// see [`ShardId::parse_loose`]); [`Error::ResourceNotFound`] if the stream has none.
    pub fn shard_by_id(&self, shard_id_text: &str) -> Result<ShardId> {
        Ok(ShardId(
            self.read_topology().entry_by_id(shard_id_text)?.index,
        ))
    }

    /// A shard iterator for reading `shard` from `start` (Kinesis GetShardIterator): a token for
    /// [`Store::get_records`](crate::Store::get_records).
    pub fn shard_iterator(&self, shard: ShardId, start: Start) -> Result<String> {
        let topology = self.read_topology();
        let entry = topology
            .entry(shard.index())
            .ok_or_else(|| not_found_shard(&shard.to_string()))?;
        let offset = self.resolve_entry(&topology, entry, start)?;
        Ok(self.token(&topology, entry.index, offset))
    }

    fn token(&self, topology: &Topology, shard_index: u32, offset: Offset) -> String {
        IteratorToken {
            stream: self.name.clone(),
            stream_created_ms: topology.manifest.created_ms,
            shard_index,
            offset,
            issued_ms: self.context.clock.now_ms(),
        }
        .encode(&self.context.iterator_key)
    }

    /// Reads from the position an iterator token names (already decoded and checked against this
    /// stream by the store): Kinesis GetRecords.
    pub(crate) fn get_records(
        &self,
        token: &IteratorToken,
        limit: usize,
    ) -> Result<GetRecordsOutput> {
        let limits = self.check_page(token, limit)?;
        let (records, end) = self.read_owned(token.shard_index, token.offset, limits, true)?;
        let page = self.page_end(token, end);
        Ok(GetRecordsOutput {
            records,
            next_shard_iterator: page.next_shard_iterator,
            millis_behind_latest: page.millis_behind_latest,
            child_shards: page.child_shards,
        })
    }

    /// [`Stream::get_records`] lending each record to `visit` instead of collecting owned
    /// copies: for callers that encode records and let them go (a wire serializer).
    pub(crate) fn visit_records(
        &self,
        token: &IteratorToken,
        limit: usize,
        visit: impl FnMut(StreamRecordRef<'_>),
    ) -> Result<PageEnd> {
        let limits = self.check_page(token, limit)?;
        let end = self.visit_lent(token.shard_index, token.offset, limits, true, visit)?;
        Ok(self.page_end(token, end))
    }

    /// Checks a GetRecords call's limit and its iterator's age; the limits of its page.
    fn check_page(&self, token: &IteratorToken, limit: usize) -> Result<ReadLimits> {
        if !(1..=MAX_GET_RECORDS).contains(&limit) {
            return Err(Error::invalid(
                "Limit",
                format!("{limit} is outside 1..={MAX_GET_RECORDS}"),
            ));
        }
        let now = self.context.clock.now_ms();
        if now.saturating_sub(token.issued_ms) > self.context.iterator_ttl.as_millis() as i64 {
            return Err(Error::ExpiredIterator {
                reason: format!(
                    "issued {} ms ago; iterators last {} s",
                    now - token.issued_ms,
                    self.context.iterator_ttl.as_secs()
                ),
            });
        }
        Ok(ReadLimits {
            max_records: limit,
            max_bytes: MAX_GET_RECORDS_BYTES,
        })
    }

    /// A GetRecords page's end: the core's, with the next iterator token.
    fn page_end(&self, token: &IteratorToken, end: ReadEnd) -> PageEnd {
        let (next_shard_iterator, child_shards) = match end.finished {
            Some(children) => (None, children),
            None => (
                Some(
                    IteratorToken {
                        offset: end.next,
                        issued_ms: self.context.clock.now_ms(),
                        ..token.clone()
                    }
                    .encode(&self.context.iterator_key),
                ),
                Vec::new(),
            ),
        };
        PageEnd {
            records: end.records,
            bytes: end.bytes,
            next_shard_iterator,
            millis_behind_latest: end.millis_behind_latest,
            child_shards,
        }
    }
}
