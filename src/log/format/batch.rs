//! Record batches (format version 3 on): one header and CRC per append (or per chunk of one),
//! records inside as varint deltas and lengths.

use crate::types::{NewRecord, Offset};

use super::frame::{decode_frame, peek_frame, prefixed_len, FrameError, MAX_FRAME_LEN};
use super::{read_i64, read_u16, read_u32, read_u64, Layout, MAX_PARTITION_KEY_LEN};

/// Fixed bytes of every batch: length, CRC and the fixed part of the body.
pub const BATCH_OVERHEAD: usize = 40;

pub(super) const B_LEN: usize = 0;

pub(super) const B_CRC: usize = B_LEN + 4;

pub(super) const B_BASE: usize = B_CRC + 4;

pub(super) const B_FIRST_ARRIVAL: usize = B_BASE + 8;

pub(super) const B_LAST_ARRIVAL: usize = B_FIRST_ARRIVAL + 8;

pub(super) const B_COUNT: usize = B_LAST_ARRIVAL + 8;

pub(super) const B_FLAGS: usize = B_COUNT + 4;

pub(super) const B_RECORDS: usize = B_FLAGS + 4;

const _: () = assert!(B_RECORDS == BATCH_OVERHEAD);

/// The largest batch any configuration can produce; a larger length field is corruption. (A
/// batch holds many small records or one large one: see `ShardOptions::batch_bytes`.)
pub const MAX_BATCH_LEN: usize = 2 * MAX_FRAME_LEN;

/// Bytes of `value` as a LEB128 varint.
#[inline]
pub fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn put_varint(dst: &mut [u8], mut at: usize, mut value: u64) -> usize {
    while value >= 0x80 {
        dst[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    dst[at] = value as u8;
    at + 1
}

/// Reads a varint at `*at`, advancing it; `None` if it runs off the slice or past 64 bits.
#[inline(always)]
pub(super) fn get_varint(src: &[u8], at: &mut usize) -> Option<u64> {
    let first = *src.get(*at)?;
    *at += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    let mut value = u64::from(first & 0x7f);
    let mut shift = 7;
    loop {
        let byte = *src.get(*at)?;
        *at += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Bytes of `record` inside a batch whose records share one arrival time, its data excluded.
#[inline]
pub fn batch_record_head_len(record: &NewRecord<'_>) -> usize {
    let key_len = record.partition_key.len();
    varint_len((key_len as u64) << 1)
        + 1
        + varint_len(record.data.len() as u64)
        + if record.explicit_hash_key.is_some() {
            16
        } else {
            0
        }
        + key_len
}

/// Bytes of `record` inside a batch whose records share one arrival time.
#[inline]
pub fn batch_record_len(record: &NewRecord<'_>) -> usize {
    batch_record_head_len(record) + record.data.len()
}

/// Encodes a batch of `records`, all with arrival time `arrival_ms`, into `dst`, which must be
/// exactly `BATCH_OVERHEAD` plus the records' lengths long. With `last_data_outside`, `dst` ends
/// before the last record's data, which the caller writes right after it (a large payload goes
/// from where it lies); the CRC covers it all the same.
///
/// # Panics
/// If `dst` has the wrong length or `records` is empty: caller bugs the shard's validation and
/// batching rule out before any byte is written.
pub fn encode_batch(
    base_offset: Offset,
    arrival_ms: i64,
    records: &[NewRecord<'_>],
    dst: &mut [u8],
    last_data_outside: bool,
) {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let outside = match (last_data_outside, records.last()) {
        (true, Some(last)) => last.data,
        _ => &[],
    };
    let body_len = dst.len() + outside.len() - B_BASE;
    dst[B_LEN..B_CRC].copy_from_slice(
        &u32::try_from(body_len)
            .expect("a batch is at most MAX_BATCH_LEN long")
            .to_le_bytes(),
    );
    dst[B_BASE..B_FIRST_ARRIVAL].copy_from_slice(&base_offset.get().to_le_bytes());
    dst[B_FIRST_ARRIVAL..B_LAST_ARRIVAL].copy_from_slice(&arrival_ms.to_le_bytes());
    dst[B_LAST_ARRIVAL..B_COUNT].copy_from_slice(&arrival_ms.to_le_bytes());
    let count = u32::try_from(records.len()).expect("a batch holds fewer than 2^32 records");
    dst[B_COUNT..B_FLAGS].copy_from_slice(&count.to_le_bytes());
    dst[B_FLAGS..B_RECORDS].fill(0);
    let mut at = B_RECORDS;
    for (i, r) in records.iter().enumerate() {
        let tag = (r.partition_key.len() as u64) << 1 | u64::from(r.explicit_hash_key.is_some());
        at = put_varint(dst, at, tag);
        dst[at] = 0; // arrival delta: every record of an engine batch shares one arrival time
        at = put_varint(dst, at + 1, r.data.len() as u64);
        if let Some(h) = r.explicit_hash_key {
            dst[at..at + 16].copy_from_slice(&h.to_be_bytes());
            at += 16;
        }
        dst[at..at + r.partition_key.len()].copy_from_slice(r.partition_key);
        at += r.partition_key.len();
        if !(last_data_outside && i + 1 == records.len()) {
            dst[at..at + r.data.len()].copy_from_slice(r.data);
            at += r.data.len();
        }
    }
    assert_eq!(at, dst.len(), "batch buffer must match the batch length");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&dst[B_BASE..]);
    crc.update(outside);
    dst[B_CRC..B_BASE].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// The fixed fields of a batch (or of a version 1/2 frame, read as a batch of one), read
/// without checking the CRC: what a seek needs to skip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHead {
    /// Total length on disk.
    pub len: usize,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Records in it (at least one).
    pub count: u32,
    /// Arrival time of its first record.
    pub first_arrival_ms: i64,
    /// Arrival time of its last record (the newest: arrival times never decrease).
    pub last_arrival_ms: i64,
}

impl BatchHead {
    /// One past the offset of its last record.
    pub fn end_offset(&self) -> Offset {
        Offset::new(self.base_offset.get().saturating_add(u64::from(self.count)))
    }
}

/// One record of a batch, borrowing from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Shard-local offset of the record.
    pub offset: Offset,
    /// Arrival time, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// The hash key, when it was explicit or (format versions 1 and 2) stored with every record.
    pub explicit_hash_key: Option<u128>,
    /// The partition key bytes.
    pub partition_key: &'a [u8],
    /// The record payload.
    pub data: &'a [u8],
}

impl RecordRef<'_> {
    /// The 128-bit hash key that routed the record: explicit, or the MD5 of its partition key.
    pub fn hash_key(&self) -> u128 {
        self.explicit_hash_key
            .unwrap_or_else(|| crate::hash_key::hash_key_of_bytes(self.partition_key))
    }
}

/// Reads the head of the batch at `pos` without checking its CRC. `Err(End)` at a zero length
/// or past the slice.
#[inline]
pub fn peek_batch(bytes: &[u8], pos: usize, layout: Layout) -> Result<BatchHead, FrameError> {
    if layout == Layout::Frames {
        return peek_frame(bytes, pos).map(|h| BatchHead {
            len: h.len,
            base_offset: h.offset,
            count: 1,
            first_arrival_ms: h.arrival_ms,
            last_arrival_ms: h.arrival_ms,
        });
    }
    const WHY: [&str; 3] = [
        "batch header cut off",
        "impossible batch length",
        "batch cut off",
    ];
    // The smallest batch holds one record of three one-byte varints and a one-byte key.
    let len = prefixed_len(
        bytes,
        pos,
        BATCH_OVERHEAD,
        BATCH_OVERHEAD + 4..=MAX_BATCH_LEN,
        WHY,
    )?;
    let count = read_u32(bytes, pos + B_COUNT);
    let first_arrival_ms = read_i64(bytes, pos + B_FIRST_ARRIVAL);
    let last_arrival_ms = read_i64(bytes, pos + B_LAST_ARRIVAL);
    if count == 0 || count as usize > (len - BATCH_OVERHEAD) / 4 {
        return Err(FrameError::Corrupt("impossible record count"));
    }
    if last_arrival_ms < first_arrival_ms {
        return Err(FrameError::Corrupt("batch arrival times go backwards"));
    }
    Ok(BatchHead {
        len,
        base_offset: Offset::new(read_u64(bytes, pos + B_BASE)),
        count,
        first_arrival_ms,
        last_arrival_ms,
    })
}

/// A batch whose CRC verified: its head, and its records to iterate.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The fixed fields.
    pub head: BatchHead,
    /// The records' bytes (a version 1/2 frame: the one record, decoded).
    body: BatchBody<'a>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum BatchBody<'a> {
    Records(&'a [u8]),
    Single(RecordRef<'a>),
}

/// Decodes and CRC-checks the batch at `pos`. Its records are checked as they are iterated
/// ([`Batch::records`]) or all at once ([`Batch::check`]).
#[inline]
pub fn decode_batch(bytes: &[u8], pos: usize, layout: Layout) -> Result<Batch<'_>, FrameError> {
    if layout == Layout::Frames {
        let f = decode_frame(bytes, pos)?;
        return Ok(Batch {
            head: BatchHead {
                len: f.len,
                base_offset: f.offset,
                count: 1,
                first_arrival_ms: f.arrival_ms,
                last_arrival_ms: f.arrival_ms,
            },
            body: BatchBody::Single(RecordRef {
                offset: f.offset,
                arrival_ms: f.arrival_ms,
                explicit_hash_key: Some(f.hash_key),
                partition_key: f.partition_key,
                data: f.data,
            }),
        });
    }
    let head = peek_batch(bytes, pos, layout)?;
    let batch = &bytes[pos..pos + head.len];
    if read_u32(batch, B_CRC) != crc32fast::hash(&batch[B_BASE..]) {
        return Err(FrameError::Corrupt("CRC mismatch"));
    }
    if read_u16(batch, B_FLAGS) != 0 || read_u16(batch, B_FLAGS + 2) != 0 {
        return Err(FrameError::Corrupt("unknown batch flags"));
    }
    Ok(Batch {
        head,
        body: BatchBody::Records(&batch[B_RECORDS..]),
    })
}

impl<'a> Batch<'a> {
    /// The records, oldest first; an `Err` for a record whose fields cannot be right (which a
    /// verified CRC makes a bug or a forgery, never a torn write), after which iteration stops.
    pub fn records(&self) -> BatchRecords<'a> {
        match self.body {
            BatchBody::Records(rest) => BatchRecords {
                rest,
                at: 0,
                next: self.head.base_offset,
                remaining: self.head.count,
                first_arrival_ms: self.head.first_arrival_ms,
                last_arrival_ms: self.head.last_arrival_ms,
                previous_arrival_ms: self.head.first_arrival_ms,
                single: None,
            },
            BatchBody::Single(record) => BatchRecords {
                rest: &[],
                at: 0,
                next: self.head.base_offset,
                remaining: 0,
                first_arrival_ms: record.arrival_ms,
                last_arrival_ms: record.arrival_ms,
                previous_arrival_ms: record.arrival_ms,
                single: Some(record),
            },
        }
    }

    /// Walks every record, checking what the CRC cannot: that the records fill the batch
    /// exactly, with possible lengths and arrival times from the first to the last.
    pub fn check(&self) -> Result<(), FrameError> {
        let mut records = self.records();
        let mut last = None;
        for r in records.by_ref() {
            last = Some(r?.arrival_ms);
        }
        if !records.rest_is_consumed() {
            return Err(FrameError::Corrupt("bytes after the batch's last record"));
        }
        if last != Some(self.head.last_arrival_ms) {
            return Err(FrameError::Corrupt("last arrival time does not match"));
        }
        Ok(())
    }
}

/// Iterator over the records of a [`Batch`].
#[derive(Debug, Clone)]
pub struct BatchRecords<'a> {
    rest: &'a [u8],
    at: usize,
    next: Offset,
    remaining: u32,
    first_arrival_ms: i64,
    last_arrival_ms: i64,
    previous_arrival_ms: i64,
    single: Option<RecordRef<'a>>,
}

impl BatchRecords<'_> {
    fn rest_is_consumed(&self) -> bool {
        self.at == self.rest.len()
    }

    fn fail(&mut self, why: &'static str) -> Option<Result<RecordRef<'static>, FrameError>> {
        self.remaining = 0;
        Some(Err(FrameError::Corrupt(why)))
    }
}

impl<'a> Iterator for BatchRecords<'a> {
    type Item = Result<RecordRef<'a>, FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(single) = self.single.take() {
            return Some(Ok(single));
        }
        if self.remaining == 0 {
            return None;
        }
        let rest = self.rest;
        let mut at = self.at;
        let (Some(tag), Some(delta), Some(data_len)) = (
            get_varint(rest, &mut at),
            get_varint(rest, &mut at),
            get_varint(rest, &mut at),
        ) else {
            return self.fail("record header cut off");
        };
        let key_len = (tag >> 1) as usize;
        if key_len == 0 || key_len > MAX_PARTITION_KEY_LEN {
            return self.fail("impossible partition key length");
        }
        let explicit_hash_key = if tag & 1 == 1 {
            let Some(b) = rest.get(at..at + 16) else {
                return self.fail("hash key cut off");
            };
            at += 16;
            Some(u128::from_be_bytes(b.try_into().expect("16 bytes")))
        } else {
            None
        };
        let Some(arrival_ms) = i64::try_from(delta)
            .ok()
            .and_then(|d| self.first_arrival_ms.checked_add(d))
            .filter(|&t| t >= self.previous_arrival_ms && t <= self.last_arrival_ms)
        else {
            return self.fail("record arrival time out of order");
        };
        let key_end = at + key_len;
        let Some(data_end) = usize::try_from(data_len)
            .ok()
            .and_then(|n| key_end.checked_add(n))
            .filter(|&end| end <= rest.len())
        else {
            return self.fail("record cut off");
        };
        let record = RecordRef {
            offset: self.next,
            arrival_ms,
            explicit_hash_key,
            partition_key: &rest[at..key_end],
            data: &rest[key_end..data_end],
        };
        self.at = data_end;
        self.next = self.next.next();
        self.remaining -= 1;
        self.previous_arrival_ms = arrival_ms;
        Some(Ok(record))
    }
}

// ---------------------------------------------------------------------------------------------
// Segment footer (the seal), the last 64 bytes of a sealed segment, starting at `data_end`.
// Format: { zero u32 (ends the frames) | crc32 u32 (over bytes 8..64) | magic[8] | record_count u64
//           | data_end u64 | first_arrival_ms i64 | last_arrival_ms i64 | sealed_ms i64
//           | lost_after u64 (version 2; version 1 wrote zeros) }
// ---------------------------------------------------------------------------------------------
