//! On-disk byte layouts: every constant, header, frame, footer and index entry of shardlog's files,
//! with their encoders and decoders. No I/O happens here; callers hand in byte slices.
//!
//! All integers are little-endian except the 128-bit hash key, which is big-endian so that its bytes
//! read like the decimal number Kinesis prints. ARCHITECTURE.md carries the same layouts as tables;
//! change both together and bump [`FORMAT_VERSION`].

use crate::Offset;

/// Version written into every segment and index header.
pub const FORMAT_VERSION: u16 = 2;
/// Oldest version this build still reads. Version 1 differs only in the footer's last 8 bytes,
/// which it always wrote as zeros: they read as "no offsets lost after this segment".
pub const OLDEST_READABLE_VERSION: u16 = 1;

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
    /// Encodes the header into its 64-byte form.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[SH_MAGIC..SH_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[SH_VERSION..SH_HEADER_LEN].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
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
    let available = bytes.len().saturating_sub(pos);
    if available < 4 {
        return Err(FrameError::End);
    }
    let body_len = read_u32(bytes, pos + F_LEN) as usize;
    if body_len == 0 {
        return Err(FrameError::End);
    }
    if available < F_HASH {
        return Err(FrameError::Corrupt("frame header cut off"));
    }
    let len = FRAME_PREFIX_LEN + body_len;
    if !(FRAME_OVERHEAD..=MAX_FRAME_LEN).contains(&len) {
        return Err(FrameError::Corrupt("impossible frame length"));
    }
    if available < len {
        return Err(FrameError::Corrupt("frame cut off"));
    }
    Ok(FrameHead {
        len,
        offset: Offset::new(read_u64(bytes, pos + F_OFFSET)),
        arrival_ms: read_i64(bytes, pos + F_ARRIVAL),
    })
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
// Sparse index file: a header, then fixed-size entries, one per ~INDEX_INTERVAL bytes of frames.
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
/// Bytes of frames between index entries.
pub const INDEX_INTERVAL: usize = 4096;
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
        assert_eq!(SegmentHeader::decode(&v1).unwrap(), h);
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
}
