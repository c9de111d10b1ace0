//! Typed ids and the record types that cross the public API.

use bytes::Bytes;

/// A record's position in its shard: 0, 1, 2, … with no gaps, stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(u64);

impl Offset {
    /// Wraps a raw offset.
    pub const fn new(raw: u64) -> Offset {
        Offset(raw)
    }

    /// The raw offset.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The offset after this one; `u64::MAX` stays `u64::MAX` (no record can have it: a shard
    /// with that many records has nothing after it either). Offsets from callers go through
    /// [`Offset::checked_next`].
    pub const fn next(self) -> Offset {
        Offset(self.0.saturating_add(1))
    }

    /// The offset after this one, or `None` past the largest.
    pub const fn checked_next(self) -> Option<Offset> {
        match self.0.checked_add(1) {
            Some(next) => Some(Offset(next)),
            None => None,
        }
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A record to append: borrowed, since the bytes are copied straight into the segment.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Partition key, 1 to 256 bytes.
    pub partition_key: &'a [u8],
    /// The explicit hash key that routed the record to this shard, if it had one (stored); `None`
    /// when it was routed by the MD5 of its partition key, which is derived again on read.
    pub explicit_hash_key: Option<u128>,
    /// The payload.
    pub data: &'a [u8],
}

impl<'a> NewRecord<'a> {
    /// A record routed by the MD5 of its partition key.
    pub fn new(partition_key: &'a [u8], data: &'a [u8]) -> NewRecord<'a> {
        NewRecord {
            partition_key,
            explicit_hash_key: None,
            data,
        }
    }
}

/// A stored record. `partition_key` and `data` are views into the segment's memory map: reading
/// copies nothing, and the views keep the mapping alive for as long as they live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the shard.
    pub offset: Offset,
    /// When the shard accepted the record, ms since the Unix epoch. Non-decreasing within a shard.
    pub arrival_ms: i64,
    /// The explicit hash key stored with the record (format versions 1 and 2 stored every
    /// record's hash key); `None` when it is the MD5 of the partition key. See [`Record::hash_key`].
    pub explicit_hash_key: Option<u128>,
    /// Partition key bytes.
    pub partition_key: Bytes,
    /// Payload bytes.
    pub data: Bytes,
}

impl Record {
    /// The 128-bit hash key that routed the record: explicit, or the MD5 of its partition key.
    pub fn hash_key(&self) -> u128 {
        self.explicit_hash_key
            .unwrap_or_else(|| crate::hash_key::hash_key_of_bytes(&self.partition_key))
    }
}

/// Bounds on one read (Kinesis GetRecords allows 10,000 records and 10 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most records to return.
    pub max_records: usize,
    /// Most bytes (data + partition keys) to return. The first record is returned even if it alone
    /// is larger, so a reader always makes progress.
    pub max_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_records: 10_000,
            max_bytes: 10 * 1024 * 1024,
        }
    }
}

impl ReadLimits {
    /// At most `max_records` records, and the default's bytes.
    pub fn records(max_records: usize) -> ReadLimits {
        ReadLimits {
            max_records,
            ..ReadLimits::default()
        }
    }
}

/// The records one read returned and where the next read should start.
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    /// The records, in offset order.
    pub records: Vec<Record>,
    /// Offset to read from next: one past the last record returned, or, when nothing was
    /// returned, where the next record will appear.
    pub next_offset: Offset,
}

/// The offsets an append assigned: `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record of the append.
    pub first: Offset,
    /// Offset of the last record of the append.
    pub last: Offset,
}

impl Appended {
    /// Number of records appended.
    pub fn count(&self) -> u64 {
        self.last.get() - self.first.get() + 1
    }
}
