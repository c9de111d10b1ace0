//! Record frames, one per record: how segments of format versions 1 and 2 store records (read,
//! never written by this version).

use crate::types::Offset;

use super::{
    read_i64, read_u16, read_u32, read_u64, MAX_PARTITION_KEY_LEN, MAX_RECORD_BYTES_LIMIT,
};

/// Bytes before a frame's body: length and CRC.
pub const FRAME_PREFIX_LEN: usize = 8;

/// Fixed part of a frame body, before the partition key.
pub const FRAME_BODY_FIXED_LEN: usize = 36;

/// Fixed bytes of every frame: prefix plus the fixed part of the body.
pub const FRAME_OVERHEAD: usize = FRAME_PREFIX_LEN + FRAME_BODY_FIXED_LEN;

/// The largest frame any configuration can produce; a larger length field is corruption.
pub const MAX_FRAME_LEN: usize = FRAME_OVERHEAD + MAX_RECORD_BYTES_LIMIT;

pub(super) const F_LEN: usize = 0;

pub(super) const F_CRC: usize = F_LEN + 4;

pub(super) const F_OFFSET: usize = F_CRC + 4;

pub(super) const F_ARRIVAL: usize = F_OFFSET + 8;

pub(super) const F_HASH: usize = F_ARRIVAL + 8;

pub(super) const F_KEY_LEN: usize = F_HASH + 16;

pub(super) const F_FLAGS: usize = F_KEY_LEN + 2;

pub(super) const F_KEY: usize = F_FLAGS + 2;

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
pub(super) fn prefixed_len(
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
