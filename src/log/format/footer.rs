//! The segment footer (the seal): the last 64 bytes of a sealed segment.

use super::header::{DecodeError, SEGMENT_HEADER_LEN};
use super::{read_i64, read_u32, read_u64};

/// Magic bytes of a segment footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"SHRDSEAL";

/// Size of the footer that seals a segment.
pub const FOOTER_LEN: usize = 64;

pub(super) const FT_ZERO: usize = 0;

pub(super) const FT_CRC: usize = FT_ZERO + 4;

pub(super) const FT_MAGIC: usize = FT_CRC + 4;

pub(super) const FT_COUNT: usize = FT_MAGIC + 8;

pub(super) const FT_DATA_END: usize = FT_COUNT + 8;

pub(super) const FT_FIRST: usize = FT_DATA_END + 8;

pub(super) const FT_LAST: usize = FT_FIRST + 8;

pub(super) const FT_SEALED: usize = FT_LAST + 8;

pub(super) const FT_LOST: usize = FT_SEALED + 8;

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
