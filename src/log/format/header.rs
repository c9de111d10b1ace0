//! The segment header: the first 64 bytes of every segment file.

use crate::types::Offset;

use super::{
    read_i64, read_u16, read_u32, read_u64, readable, Layout, FORMAT_VERSION,
    OLDEST_READABLE_VERSION,
};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHRDLSEG";

/// Size of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;

pub(super) const SH_MAGIC: usize = 0;

pub(super) const SH_VERSION: usize = SH_MAGIC + 8;

pub(super) const SH_HEADER_LEN: usize = SH_VERSION + 2;

pub(super) const SH_FLAGS: usize = SH_HEADER_LEN + 2;

pub(super) const SH_BASE: usize = SH_FLAGS + 4;

pub(super) const SH_CREATED: usize = SH_BASE + 8;

pub(super) const SH_FLOOR: usize = SH_CREATED + 8;

pub(super) const SH_CRC: usize = SEGMENT_HEADER_LEN - 4;

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
