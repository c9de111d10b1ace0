//! On-disk byte layouts: every constant, header, frame, footer and index entry of shardlog's files,
//! with their encoders and decoders. No I/O happens here; callers hand in byte slices.
//!
//! All integers are little-endian except the 128-bit hash key, which is big-endian so that its bytes
//! read like the decimal number Kinesis prints. ARCHITECTURE.md carries the same layouts as tables;
//! change both together and bump [`FORMAT_VERSION`].

use crate::types::{NewRecord, Offset};

/// Version written into every new segment and index header. Version 3 stores records in
/// batches (one header and CRC per append, or per chunk of one); versions 1 and 2 stored one frame
/// per record and are still read (see [`Layout`]). Version 4 lays out records as version 3 does
/// and spaces index entries 64 KiB apart instead of 4 KiB, so small batches (a cheap read of one
/// record) do not make the index large.
pub const FORMAT_VERSION: u16 = 4;
/// Oldest version this build still reads. Version 1 differs from version 2 only in the footer's
/// last 8 bytes, which it always wrote as zeros: they read as "no offsets lost after this segment".
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// First version that stores records in batches.
pub const FIRST_BATCH_VERSION: u16 = 3;

/// First version whose index entries are [`INDEX_INTERVAL`] bytes apart (before it:
/// [`INDEX_INTERVAL_BEFORE_V4`]).
pub const FIRST_SPARSE_INDEX_VERSION: u16 = 4;

/// How a segment lays out its records and how far apart its index entries are, decided by the
/// version in its header. (The index file is derived from the segment, so a reader rebuilding or
/// checking it must space entries as the segment's writer did.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Versions 1 and 2: one frame per record (44 fixed bytes each); read as batches of one.
    Frames,
    /// Version 3 on: batches of records with varint-encoded lengths.
    Batches {
        /// Bytes of batches between index entries: 4 KiB in version 3, 64 KiB from version 4.
        index_interval: usize,
    },
}

impl Layout {
    /// The layout new segments are written in.
    pub const CURRENT: Layout = Layout::of_version(FORMAT_VERSION);

    /// The layout of segments of format `version`.
    pub const fn of_version(version: u16) -> Layout {
        if version >= FIRST_SPARSE_INDEX_VERSION {
            Layout::Batches {
                index_interval: INDEX_INTERVAL,
            }
        } else if version >= FIRST_BATCH_VERSION {
            Layout::Batches {
                index_interval: INDEX_INTERVAL_BEFORE_V4,
            }
        } else {
            Layout::Frames
        }
    }

    /// Bytes of records between index entries: an entry goes to the first batch (or frame) at
    /// least this far past the previous entry.
    pub fn index_interval(self) -> usize {
        match self {
            Layout::Frames => INDEX_INTERVAL_BEFORE_V4,
            Layout::Batches { index_interval } => index_interval,
        }
    }

    /// The fewest bytes one record can take: bounds how many offsets `n` bytes can hold.
    pub fn min_record_len(self) -> usize {
        match self {
            Layout::Frames => FRAME_OVERHEAD + 1,
            // Three one-byte varints and a one-byte key.
            Layout::Batches { .. } => 4,
        }
    }
}

fn readable(version: u16) -> bool {
    (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version)
}

/// Largest partition key, in bytes: Kinesis allows 256 characters, which take up to 1,024 bytes
/// of UTF-8. (Streams check the 256 characters; the shard log checks the bytes.)
pub const MAX_PARTITION_KEY_LEN: usize = 1024;

/// The largest record (data + partition key) any stream may be configured for (Kinesis: 10 MiB).
pub const MAX_RECORD_BYTES_LIMIT: usize = 10 * 1024 * 1024;

/// Segment files are `{base offset, zero padded to this width}.seg`, so `ls` sorts them.
pub const FILE_NAME_WIDTH: usize = 20;
/// Extension of segment files.
pub const SEGMENT_EXT: &str = "seg";
/// Extension of sparse index files.
pub const INDEX_EXT: &str = "idx";

// ---------------------------------------------------------------------------------------------
// Segment header
// Format: { magic[8] | version u16 | header_len u16 | flags u32 | base_offset u64 | created_ms i64
//           | arrival_floor_ms i64 | reserved[20] | crc32 u32 (over bytes 0..60) }    = 64 bytes
// ---------------------------------------------------------------------------------------------

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHRDLSEG";
/// Size of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = SH_MAGIC + 8;
const SH_HEADER_LEN: usize = SH_VERSION + 2;
const SH_FLAGS: usize = SH_HEADER_LEN + 2;
const SH_BASE: usize = SH_FLAGS + 4;
const SH_CREATED: usize = SH_BASE + 8;
const SH_FLOOR: usize = SH_CREATED + 8;
const SH_CRC: usize = SEGMENT_HEADER_LEN - 4;

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version the segment is written in ([`FORMAT_VERSION`] for new segments; a repair
    /// keeps the version of the file it rewrites).
    pub version: u16,
    /// Offset of the first record the segment holds (also its file name).
    pub base_offset: Offset,
    /// Wall-clock time the segment was created, in ms since the Unix epoch.
    pub created_ms: i64,
    /// The newest arrival time of any record before this segment (`i64::MIN` if none): records
    /// here arrive no earlier, even after the older segments are deleted and the clock stepped
    /// back across a restart.
    pub arrival_floor_ms: i64,
}

/// Why a header, footer or index could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    Short,
    /// The magic bytes are wrong: not a shardlog file of that kind.
    BadMagic,
    /// Written by a format version this build does not read.
    Version(u16),
    /// The checksum does not match.
    Checksum,
    /// A field holds a value that cannot be right.
    Invalid(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short => write!(f, "truncated"),
            DecodeError::BadMagic => write!(f, "bad magic bytes"),
            DecodeError::Version(v) => {
                write!(
                    f,
                    "format version {v}, this build reads {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}"
                )
            }
            DecodeError::Checksum => write!(f, "checksum mismatch"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

impl SegmentHeader {
    /// How the segment's records are laid out.
    pub fn layout(&self) -> Layout {
        Layout::of_version(self.version)
    }

    /// Encodes the header into its 64-byte form.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[SH_MAGIC..SH_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[SH_VERSION..SH_HEADER_LEN].copy_from_slice(&self.version.to_le_bytes());
        b[SH_HEADER_LEN..SH_FLAGS].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        b[SH_FLAGS..SH_BASE].copy_from_slice(&0u32.to_le_bytes());
        b[SH_BASE..SH_CREATED].copy_from_slice(&self.base_offset.get().to_le_bytes());
        b[SH_CREATED..SH_FLOOR].copy_from_slice(&self.created_ms.to_le_bytes());
        b[SH_FLOOR..SH_FLOOR + 8].copy_from_slice(&self.arrival_floor_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[..SH_CRC]);
        b[SH_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
        let b = bytes.get(..SEGMENT_HEADER_LEN).ok_or(DecodeError::Short)?;
        if b[SH_MAGIC..SH_VERSION] != SEGMENT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = read_u16(b, SH_VERSION);
        if !readable(version) {
            return Err(DecodeError::Version(version));
        }
        if read_u32(b, SH_CRC) != crc32fast::hash(&b[..SH_CRC]) {
            return Err(DecodeError::Checksum);
        }
        if usize::from(read_u16(b, SH_HEADER_LEN)) != SEGMENT_HEADER_LEN {
            return Err(DecodeError::Invalid("header length"));
        }
        Ok(SegmentHeader {
            version,
            base_offset: Offset::new(read_u64(b, SH_BASE)),
            created_ms: read_i64(b, SH_CREATED),
            arrival_floor_ms: read_i64(b, SH_FLOOR),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Record frame
// Format: { body_len u32 | crc32 u32 (over body) | body }
//   body: { offset u64 | arrival_ms i64 | hash_key u128 (big-endian) | key_len u16 (1..=1024) | flags u16
//           | partition_key[key_len] | data[body_len - 36 - key_len] }
// A body_len of zero marks the end of the frames (preallocated space is zero-filled).
// ---------------------------------------------------------------------------------------------

/// Bytes before a frame's body: length and CRC.
pub const FRAME_PREFIX_LEN: usize = 8;
/// Fixed part of a frame body, before the partition key.
pub const FRAME_BODY_FIXED_LEN: usize = 36;
/// Fixed bytes of every frame: prefix plus the fixed part of the body.
pub const FRAME_OVERHEAD: usize = FRAME_PREFIX_LEN + FRAME_BODY_FIXED_LEN;
/// The largest frame any configuration can produce; a larger length field is corruption.
pub const MAX_FRAME_LEN: usize = FRAME_OVERHEAD + MAX_RECORD_BYTES_LIMIT;
const F_LEN: usize = 0;
const F_CRC: usize = F_LEN + 4;
const F_OFFSET: usize = F_CRC + 4;
const F_ARRIVAL: usize = F_OFFSET + 8;
const F_HASH: usize = F_ARRIVAL + 8;
const F_KEY_LEN: usize = F_HASH + 16;
const F_FLAGS: usize = F_KEY_LEN + 2;
const F_KEY: usize = F_FLAGS + 2;
const _: () = assert!(F_KEY == FRAME_OVERHEAD);

/// Length on disk of a frame holding this partition key and data.
pub fn frame_len(partition_key_len: usize, data_len: usize) -> usize {
    FRAME_OVERHEAD + partition_key_len + data_len
}

/// The fields of one record as they go into a frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameFields<'a> {
    /// Shard-local offset of the record.
    pub offset: Offset,
    /// Arrival time, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// The 128-bit hash key that routed the record to its shard.
    pub hash_key: u128,
    /// Partition key bytes (1..=1024).
    pub partition_key: &'a [u8],
    /// Record payload.
    pub data: &'a [u8],
}

/// Encodes a frame into `dst`, which must be exactly `frame_len(key, data)` bytes long.
///
/// # Panics
/// If `dst` has the wrong length or the key is longer than `u16::MAX`: both are caller bugs that
/// the shard's validation rules out before any byte is written.
pub fn encode_frame(fields: &FrameFields<'_>, dst: &mut [u8]) {
    let total = frame_len(fields.partition_key.len(), fields.data.len());
    assert_eq!(dst.len(), total, "frame buffer must match the frame length");
    let (head, data) = dst.split_at_mut(FRAME_OVERHEAD + fields.partition_key.len());
    data.copy_from_slice(fields.data);
    encode_frame_head(fields, head);
}

/// Encodes everything of a frame but its data (`FRAME_OVERHEAD + key` bytes) into `dst`, with the
/// CRC computed over the data too: the data can then be written from where it lies.
///
/// # Panics
/// As [`encode_frame`], if `dst` is not exactly the head's length.
pub fn encode_frame_head(fields: &FrameFields<'_>, dst: &mut [u8]) {
    let head_len = FRAME_OVERHEAD + fields.partition_key.len();
    assert_eq!(
        dst.len(),
        head_len,
        "head buffer must match the head length"
    );
    let total = head_len + fields.data.len();
    let body_len = u32::try_from(total - FRAME_PREFIX_LEN).expect("frame length fits u32");
    let key_len = u16::try_from(fields.partition_key.len()).expect("partition key fits u16");
    dst[F_LEN..F_CRC].copy_from_slice(&body_len.to_le_bytes());
    dst[F_OFFSET..F_ARRIVAL].copy_from_slice(&fields.offset.get().to_le_bytes());
    dst[F_ARRIVAL..F_HASH].copy_from_slice(&fields.arrival_ms.to_le_bytes());
    dst[F_HASH..F_KEY_LEN].copy_from_slice(&fields.hash_key.to_be_bytes());
    dst[F_KEY_LEN..F_FLAGS].copy_from_slice(&key_len.to_le_bytes());
    dst[F_FLAGS..F_KEY].copy_from_slice(&0u16.to_le_bytes());
    dst[F_KEY..].copy_from_slice(fields.partition_key);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&dst[F_OFFSET..]);
    crc.update(fields.data);
    let crc = crc.finalize();
    dst[F_CRC..F_OFFSET].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded frame, borrowing from the segment bytes.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// Shard-local offset of the record.
    pub offset: Offset,
    /// Arrival time, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// The 128-bit hash key.
    pub hash_key: u128,
    /// Byte range of the partition key within the slice that was decoded.
    pub key_range: std::ops::Range<usize>,
    /// Byte range of the data within the slice that was decoded.
    pub data_range: std::ops::Range<usize>,
    /// Total length of the frame on disk.
    pub len: usize,
    /// The partition key bytes.
    pub partition_key: &'a [u8],
    /// The record payload.
    pub data: &'a [u8],
}

/// What lies at a position where a frame was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A zero length (or not even room for one): the clean end of the frames.
    End,
    /// A frame that is cut off, fails its CRC or holds impossible fields.
    Corrupt(&'static str),
}

/// The fixed fields a seek needs, read without checking the CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Total length of the frame on disk.
    pub len: usize,
    /// Shard-local offset of the record.
    pub offset: Offset,
    /// Arrival time, ms since the Unix epoch.
    pub arrival_ms: i64,
}

/// Reads the head of the frame at `pos` without checking its CRC: the cheap step a seek uses to
/// skip frames. `Err(End)` at a zero length or past the slice.
pub fn peek_frame(bytes: &[u8], pos: usize) -> Result<FrameHead, FrameError> {
    const WHY: [&str; 3] = [
        "frame header cut off",
        "impossible frame length",
        "frame cut off",
    ];
    let len = prefixed_len(bytes, pos, F_HASH, FRAME_OVERHEAD..=MAX_FRAME_LEN, WHY)?;
    Ok(FrameHead {
        len,
        offset: Offset::new(read_u64(bytes, pos + F_OFFSET)),
        arrival_ms: read_i64(bytes, pos + F_ARRIVAL),
    })
}

/// The total length of the frame or batch at `pos` (both start `{ body_len u32 | crc32 u32 }`),
/// with at least `header` bytes of it readable and the length within `lens` and the slice.
/// `Err(End)` at a zero length or where not even a length fits; otherwise `why` says what is
/// wrong: the header cut off, an impossible length, the unit cut off.
#[inline]
fn prefixed_len(
    bytes: &[u8],
    pos: usize,
    header: usize,
    lens: std::ops::RangeInclusive<usize>,
    why: [&'static str; 3],
) -> Result<usize, FrameError> {
    let available = bytes.len().saturating_sub(pos);
    if available < 4 {
        return Err(FrameError::End);
    }
    let body_len = read_u32(bytes, pos) as usize;
    if body_len == 0 {
        return Err(FrameError::End);
    }
    if available < header {
        return Err(FrameError::Corrupt(why[0]));
    }
    let len = FRAME_PREFIX_LEN + body_len;
    if !lens.contains(&len) {
        return Err(FrameError::Corrupt(why[1]));
    }
    if available < len {
        return Err(FrameError::Corrupt(why[2]));
    }
    Ok(len)
}

/// Decodes and CRC-checks the frame at `pos`.
pub fn decode_frame(bytes: &[u8], pos: usize) -> Result<Frame<'_>, FrameError> {
    let FrameHead {
        len,
        offset,
        arrival_ms,
    } = peek_frame(bytes, pos)?;
    let frame = &bytes[pos..pos + len];
    if read_u32(frame, F_CRC) != crc32fast::hash(&frame[F_OFFSET..]) {
        return Err(FrameError::Corrupt("CRC mismatch"));
    }
    let key_len = usize::from(read_u16(frame, F_KEY_LEN));
    if key_len == 0 || key_len > MAX_PARTITION_KEY_LEN || F_KEY + key_len > len {
        return Err(FrameError::Corrupt("impossible partition key length"));
    }
    if read_u16(frame, F_FLAGS) != 0 {
        return Err(FrameError::Corrupt("unknown frame flags"));
    }
    let key_range = pos + F_KEY..pos + F_KEY + key_len;
    let data_range = key_range.end..pos + len;
    Ok(Frame {
        offset,
        arrival_ms,
        hash_key: u128::from_be_bytes(frame[F_HASH..F_KEY_LEN].try_into().expect("16 bytes")),
        partition_key: &bytes[key_range.clone()],
        data: &bytes[data_range.clone()],
        key_range,
        data_range,
        len,
    })
}

// ---------------------------------------------------------------------------------------------
// Record batch (format version 3)
// Format: { body_len u32 | crc32 u32 (over body) | body }
//   body: { base_offset u64 | first_arrival_ms i64 | last_arrival_ms i64 | count u32 | flags u16
//           | reserved u16 | records[count] }
//   record: { varint(key_len << 1 | explicit) | varint(arrival_ms - first_arrival_ms)
//             | varint(data_len) | hash_key u128 (big-endian, only if explicit)
//             | partition_key[key_len] | data[data_len] }
// Offsets inside a batch count up from base_offset. A record's hash key is stored only when it
// was explicit; otherwise it is the MD5 of its partition key. A body_len of zero marks the end of
// the batches (preallocated space is zero-filled).
// ---------------------------------------------------------------------------------------------

/// Fixed bytes of every batch: length, CRC and the fixed part of the body.
pub const BATCH_OVERHEAD: usize = 40;
const B_LEN: usize = 0;
const B_CRC: usize = B_LEN + 4;
const B_BASE: usize = B_CRC + 4;
const B_FIRST_ARRIVAL: usize = B_BASE + 8;
const B_LAST_ARRIVAL: usize = B_FIRST_ARRIVAL + 8;
const B_COUNT: usize = B_LAST_ARRIVAL + 8;
const B_FLAGS: usize = B_COUNT + 4;
const B_RECORDS: usize = B_FLAGS + 4;
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

fn put_varint(dst: &mut [u8], mut at: usize, mut value: u64) -> usize {
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
fn get_varint(src: &[u8], at: &mut usize) -> Option<u64> {
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
enum BatchBody<'a> {
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

/// Magic bytes of a segment footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"SHRDSEAL";
/// Size of the footer that seals a segment.
pub const FOOTER_LEN: usize = 64;
const FT_ZERO: usize = 0;
const FT_CRC: usize = FT_ZERO + 4;
const FT_MAGIC: usize = FT_CRC + 4;
const FT_COUNT: usize = FT_MAGIC + 8;
const FT_DATA_END: usize = FT_COUNT + 8;
const FT_FIRST: usize = FT_DATA_END + 8;
const FT_LAST: usize = FT_FIRST + 8;
const FT_SEALED: usize = FT_LAST + 8;
const FT_LOST: usize = FT_SEALED + 8;

/// What a sealed segment's footer records about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFooter {
    /// Number of records in the segment.
    pub record_count: u64,
    /// Byte position where the frames end and this footer begins.
    pub data_end: u64,
    /// Arrival time of the first record (`i64::MIN` if the segment is empty).
    pub first_arrival_ms: i64,
    /// Arrival time of the last (and, arrival times being non-decreasing, newest) record.
    pub last_arrival_ms: i64,
    /// When the segment was sealed.
    pub sealed_ms: i64,
    /// Offsets known to be lost between this segment's last record and the next segment's first:
    /// `repair` sets it when it cuts out damaged records, so the gap reads as accounted for.
    /// Zero for every segment the engine itself seals.
    pub lost_after: u64,
}

impl SegmentFooter {
    /// Encodes the footer into its 64-byte form.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[FT_MAGIC..FT_COUNT].copy_from_slice(&FOOTER_MAGIC);
        b[FT_COUNT..FT_DATA_END].copy_from_slice(&self.record_count.to_le_bytes());
        b[FT_DATA_END..FT_FIRST].copy_from_slice(&self.data_end.to_le_bytes());
        b[FT_FIRST..FT_LAST].copy_from_slice(&self.first_arrival_ms.to_le_bytes());
        b[FT_LAST..FT_SEALED].copy_from_slice(&self.last_arrival_ms.to_le_bytes());
        b[FT_SEALED..FT_LOST].copy_from_slice(&self.sealed_ms.to_le_bytes());
        b[FT_LOST..FT_LOST + 8].copy_from_slice(&self.lost_after.to_le_bytes());
        let crc = crc32fast::hash(&b[FT_MAGIC..]);
        b[FT_CRC..FT_MAGIC].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the footer from the last [`FOOTER_LEN`] bytes of a whole segment file.
    pub fn decode_at_end(bytes: &[u8]) -> Result<SegmentFooter, DecodeError> {
        let start = bytes
            .len()
            .checked_sub(FOOTER_LEN)
            .filter(|&s| s >= SEGMENT_HEADER_LEN)
            .ok_or(DecodeError::Short)?;
        SegmentFooter::decode(&bytes[start..], start as u64)
    }

    /// Decodes a footer read from byte `position` of a segment file and checks that it says so.
    pub fn decode(bytes: &[u8], position: u64) -> Result<SegmentFooter, DecodeError> {
        let b = bytes.get(..FOOTER_LEN).ok_or(DecodeError::Short)?;
        if read_u32(b, FT_ZERO) != 0 || b[FT_MAGIC..FT_COUNT] != FOOTER_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if read_u32(b, FT_CRC) != crc32fast::hash(&b[FT_MAGIC..]) {
            return Err(DecodeError::Checksum);
        }
        let footer = SegmentFooter {
            record_count: read_u64(b, FT_COUNT),
            data_end: read_u64(b, FT_DATA_END),
            first_arrival_ms: read_i64(b, FT_FIRST),
            last_arrival_ms: read_i64(b, FT_LAST),
            sealed_ms: read_i64(b, FT_SEALED),
            lost_after: read_u64(b, FT_LOST),
        };
        if footer.data_end != position || position < SEGMENT_HEADER_LEN as u64 {
            return Err(DecodeError::Invalid("footer position"));
        }
        Ok(footer)
    }
}

// ---------------------------------------------------------------------------------------------
// Sparse index file: a header, then fixed-size entries, one per ~INDEX_INTERVAL bytes of batches
// (Layout::index_interval: 4 KiB before version 4).
// Header: { magic[8] | version u16 | entry_len u16 | reserved u32 | base_offset u64 | reserved u32
//           | crc32 u32 (over bytes 0..28) }                   = 32 bytes
// Entry:  { relative_offset u32 | position u32 | max_arrival_ms i64 | crc32 u32 (over 0..16)
//           | reserved u32 }                                    = 24 bytes
// ---------------------------------------------------------------------------------------------

/// Magic bytes of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"SHRDLIDX";
/// Size of the index file header.
pub const INDEX_HEADER_LEN: usize = 32;
/// Size of one index entry.
pub const INDEX_ENTRY_LEN: usize = 24;
/// Bytes of batches between index entries, from version 4 on.
pub const INDEX_INTERVAL: usize = 64 * 1024;
/// Bytes of frames or batches between index entries in versions 1 to 3.
pub const INDEX_INTERVAL_BEFORE_V4: usize = 4096;
const IH_VERSION: usize = 8;
const IH_ENTRY_LEN: usize = IH_VERSION + 2;
const IH_BASE: usize = IH_ENTRY_LEN + 2 + 4;
const IH_CRC: usize = INDEX_HEADER_LEN - 4;
const IE_POSITION: usize = 4;
const IE_TIME: usize = IE_POSITION + 4;
const IE_CRC: usize = IE_TIME + 8;

/// One sparse index entry: where a record starts and the newest arrival time up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Record offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of that record's frame in the segment file.
    pub position: u32,
    /// Largest arrival time of any record up to and including this one.
    pub max_arrival_ms: i64,
}

/// Encodes the header of the index file of the segment based at `base`.
pub fn encode_index_header(base: Offset) -> [u8; INDEX_HEADER_LEN] {
    let mut b = [0u8; INDEX_HEADER_LEN];
    b[..IH_VERSION].copy_from_slice(&INDEX_MAGIC);
    b[IH_VERSION..IH_ENTRY_LEN].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[IH_ENTRY_LEN..IH_ENTRY_LEN + 2].copy_from_slice(&(INDEX_ENTRY_LEN as u16).to_le_bytes());
    b[IH_BASE..IH_BASE + 8].copy_from_slice(&base.get().to_le_bytes());
    let crc = crc32fast::hash(&b[..IH_CRC]);
    b[IH_CRC..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Checks an index file header and returns the base offset it names.
pub fn decode_index_header(bytes: &[u8]) -> Result<Offset, DecodeError> {
    let b = bytes.get(..INDEX_HEADER_LEN).ok_or(DecodeError::Short)?;
    if b[..IH_VERSION] != INDEX_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = read_u16(b, IH_VERSION);
    if !readable(version) {
        return Err(DecodeError::Version(version));
    }
    if read_u32(b, IH_CRC) != crc32fast::hash(&b[..IH_CRC]) {
        return Err(DecodeError::Checksum);
    }
    if usize::from(read_u16(b, IH_ENTRY_LEN)) != INDEX_ENTRY_LEN {
        return Err(DecodeError::Invalid("index entry length"));
    }
    Ok(Offset::new(read_u64(b, IH_BASE)))
}

impl IndexEntry {
    /// Encodes the entry into its 24-byte form.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[..IE_POSITION].copy_from_slice(&self.relative_offset.to_le_bytes());
        b[IE_POSITION..IE_TIME].copy_from_slice(&self.position.to_le_bytes());
        b[IE_TIME..IE_CRC].copy_from_slice(&self.max_arrival_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[..IE_CRC]);
        b[IE_CRC..IE_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one entry; `None` if its CRC does not match (a torn or damaged entry).
    pub fn decode(b: &[u8]) -> Option<IndexEntry> {
        let b = b.get(..INDEX_ENTRY_LEN)?;
        (read_u32(b, IE_CRC) == crc32fast::hash(&b[..IE_CRC])).then(|| IndexEntry {
            relative_offset: read_u32(b, 0),
            position: read_u32(b, IE_POSITION),
            max_arrival_ms: read_i64(b, IE_TIME),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// File names
// ---------------------------------------------------------------------------------------------

/// The file name of the segment (`ext` = [`SEGMENT_EXT`]) or index ([`INDEX_EXT`]) based at `base`.
pub fn file_name(base: Offset, ext: &str) -> String {
    format!("{:0width$}.{ext}", base.get(), width = FILE_NAME_WIDTH)
}

/// Parses a file name made by [`file_name`]; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != FILE_NAME_WIDTH || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((Offset::new(stem.parse().ok()?), ext))
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_frame(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; frame_len(key.len(), data.len())];
        let fields = FrameFields {
            offset: Offset::new(42),
            arrival_ms: 1_700_000_000_123,
            hash_key: u128::MAX - 7,
            partition_key: key,
            data,
        };
        encode_frame(&fields, &mut buf);
        buf
    }

    #[test]
    fn frame_round_trips() {
        let buf = sample_frame(b"user-1", b"hello world");
        let f = decode_frame(&buf, 0).unwrap();
        assert_eq!(f.offset, Offset::new(42));
        assert_eq!(f.arrival_ms, 1_700_000_000_123);
        assert_eq!(f.hash_key, u128::MAX - 7);
        assert_eq!(f.partition_key, b"user-1");
        assert_eq!(f.data, b"hello world");
        assert_eq!(f.len, buf.len());
        let head = peek_frame(&buf, 0).unwrap();
        assert_eq!((head.len, head.offset), (buf.len(), Offset::new(42)));
        assert_eq!(head.arrival_ms, 1_700_000_000_123);
    }

    #[test]
    fn a_head_plus_its_data_is_the_whole_frame() {
        let key = b"key";
        let data = vec![9u8; 5000];
        let whole = sample_frame(key, &data);
        let fields = FrameFields {
            offset: Offset::new(42),
            arrival_ms: 1_700_000_000_123,
            hash_key: u128::MAX - 7,
            partition_key: key,
            data: &data,
        };
        let mut head = vec![0u8; FRAME_OVERHEAD + key.len()];
        encode_frame_head(&fields, &mut head);
        head.extend_from_slice(&data);
        assert_eq!(head, whole);
    }

    #[test]
    fn empty_data_frame_round_trips() {
        let buf = sample_frame(b"k", b"");
        let f = decode_frame(&buf, 0).unwrap();
        assert_eq!(f.data, b"");
        assert_eq!(f.partition_key, b"k");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let buf = sample_frame(b"key", b"some payload bytes");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode_frame(&bad, 0) {
                    Err(_) => {}
                    Ok(f) => panic!("flip of bit {bit} in byte {byte} went unnoticed: {f:?}"),
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let buf = sample_frame(b"key", b"payload");
        for cut in 0..buf.len() {
            assert!(decode_frame(&buf[..cut], 0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn zero_length_is_the_end() {
        assert_eq!(decode_frame(&[0u8; 64], 0).unwrap_err(), FrameError::End);
        assert_eq!(decode_frame(&[0u8; 2], 0).unwrap_err(), FrameError::End);
        assert_eq!(peek_frame(&[0u8; 64], 8).unwrap_err(), FrameError::End);
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            version: FORMAT_VERSION,
            base_offset: Offset::new(1234),
            created_ms: 99,
            arrival_floor_ms: -7,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(DecodeError::Checksum));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(DecodeError::BadMagic));
        let mut other_version = b;
        other_version[SH_VERSION] = 9;
        assert_eq!(
            SegmentHeader::decode(&other_version),
            Err(DecodeError::Version(9))
        );
        // Version 1 files (footers without `lost_after`) are still read.
        let mut v1 = b;
        v1[SH_VERSION] = 1;
        let crc = crc32fast::hash(&v1[..SH_CRC]);
        v1[SH_CRC..].copy_from_slice(&crc.to_le_bytes());
        let v1_header = SegmentHeader::decode(&v1).unwrap();
        assert_eq!(v1_header, SegmentHeader { version: 1, ..h });
        assert_eq!(v1_header.layout(), Layout::Frames);
        assert_eq!(h.layout(), Layout::CURRENT);
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(DecodeError::Short));
    }

    #[test]
    fn footer_round_trips_and_must_end_the_file() {
        let footer = SegmentFooter {
            record_count: 3,
            data_end: 100,
            first_arrival_ms: 5,
            last_arrival_ms: 9,
            sealed_ms: 11,
            lost_after: 13,
        };
        let mut file = vec![7u8; 100];
        file.extend_from_slice(&footer.encode());
        assert_eq!(SegmentFooter::decode_at_end(&file).unwrap(), footer);
        file.push(0);
        assert!(SegmentFooter::decode_at_end(&file).is_err());
    }

    #[test]
    fn index_entries_round_trip_and_detect_damage() {
        let e = IndexEntry {
            relative_offset: 7,
            position: 4096,
            max_arrival_ms: -3,
        };
        let b = e.encode();
        assert_eq!(IndexEntry::decode(&b), Some(e));
        let mut bad = b;
        bad[5] ^= 0x10;
        assert_eq!(IndexEntry::decode(&bad), None);
        let h = encode_index_header(Offset::new(77));
        assert_eq!(decode_index_header(&h), Ok(Offset::new(77)));
    }

    #[test]
    fn file_names_sort_and_parse() {
        let a = file_name(Offset::new(9), SEGMENT_EXT);
        let b = file_name(Offset::new(10), SEGMENT_EXT);
        assert_eq!(a, "00000000000000000009.seg");
        assert!(a < b);
        assert_eq!(parse_file_name(&b), Some((Offset::new(10), "seg")));
        assert_eq!(parse_file_name("LOCK"), None);
        assert_eq!(parse_file_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_file_name("123.seg"), None);
    }

    fn sample_batch(records: &[NewRecord<'_>]) -> Vec<u8> {
        let len = BATCH_OVERHEAD + records.iter().map(batch_record_len).sum::<usize>();
        let mut buf = vec![0u8; len];
        encode_batch(
            Offset::new(500),
            1_700_000_000_000,
            records,
            &mut buf,
            false,
        );
        buf
    }

    #[test]
    fn batch_round_trips_with_and_without_explicit_hash_keys() {
        let big = vec![7u8; 300];
        let records = [
            NewRecord::new(b"user-1", b"hello"),
            NewRecord {
                partition_key: b"k",
                explicit_hash_key: Some(u128::MAX - 1),
                data: &big,
            },
            NewRecord::new(&[b'x'; MAX_PARTITION_KEY_LEN], b""),
        ];
        let buf = sample_batch(&records);
        let batch = decode_batch(&buf, 0, Layout::CURRENT).unwrap();
        batch.check().unwrap();
        assert_eq!(batch.head.count, 3);
        assert_eq!(batch.head.end_offset(), Offset::new(503));
        let got: Vec<RecordRef<'_>> = batch.records().map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 3);
        for (i, (g, w)) in got.iter().zip(&records).enumerate() {
            assert_eq!(g.offset, Offset::new(500 + i as u64));
            assert_eq!(g.arrival_ms, 1_700_000_000_000);
            assert_eq!(g.partition_key, w.partition_key);
            assert_eq!(g.data, w.data);
            assert_eq!(g.explicit_hash_key, w.explicit_hash_key);
        }
        assert_eq!(got[1].hash_key(), u128::MAX - 1);
        assert_eq!(
            got[0].hash_key(),
            crate::hash_key::hash_key_of("user-1"),
            "a derived hash key is the MD5 of the partition key"
        );
        let head = peek_batch(&buf, 0, Layout::CURRENT).unwrap();
        assert_eq!(head, batch.head);
        // 100-byte records with 16-byte keys cost 3 bytes each beyond key and data.
        let data = [1u8; 100];
        let small = [NewRecord::new(b"0123456789abcdef", &data)];
        assert_eq!(batch_record_len(&small[0]), 119);
    }

    #[test]
    fn every_single_bit_flip_of_a_batch_is_detected() {
        let records = [
            NewRecord::new(b"key", b"some payload"),
            NewRecord::new(b"k2", b""),
        ];
        let buf = sample_batch(&records);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                if let Ok(b) = decode_batch(&bad, 0, Layout::CURRENT) {
                    panic!(
                        "flip of bit {bit} in byte {byte} went unnoticed: {:?}",
                        b.head
                    );
                }
            }
        }
        for cut in 0..buf.len() {
            assert!(
                decode_batch(&buf[..cut], 0, Layout::CURRENT).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(
            decode_batch(&[0u8; 64], 0, Layout::CURRENT).unwrap_err(),
            FrameError::End
        );
    }

    #[test]
    fn a_forged_batch_with_a_good_crc_is_an_error_not_a_panic() {
        // Claims three records but holds one: the CRC matches, the records do not.
        let records = [NewRecord::new(b"key", b"payload")];
        let mut buf = sample_batch(&records);
        buf[B_COUNT..B_COUNT + 4].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&buf[B_BASE..]);
        buf[B_CRC..B_BASE].copy_from_slice(&crc.to_le_bytes());
        let batch = decode_batch(&buf, 0, Layout::CURRENT).unwrap();
        assert!(batch.check().is_err());
        let results: Vec<_> = batch.records().collect();
        assert!(results[0].is_ok() && results[1].is_err() && results.len() == 2);
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = [0u8; 10];
            let end = put_varint(&mut buf, 0, v);
            assert_eq!(end, varint_len(v));
            let mut at = 0;
            assert_eq!(get_varint(&buf, &mut at), Some(v));
            assert_eq!(at, end);
            assert_eq!(get_varint(&buf[..end - 1], &mut 0), None);
        }
        assert_eq!(get_varint(&[0xff; 11], &mut 0), None);
    }
}
