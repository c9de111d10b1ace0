//! The sparse index file's header and entries.

use crate::types::Offset;

use super::header::DecodeError;
use super::{read_i64, read_u16, read_u32, read_u64, readable, FORMAT_VERSION};

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

pub(super) const IH_VERSION: usize = 8;

pub(super) const IH_ENTRY_LEN: usize = IH_VERSION + 2;

pub(super) const IH_BASE: usize = IH_ENTRY_LEN + 2 + 4;

pub(super) const IH_CRC: usize = INDEX_HEADER_LEN - 4;

pub(super) const IE_POSITION: usize = 4;

pub(super) const IE_TIME: usize = IE_POSITION + 4;

pub(super) const IE_CRC: usize = IE_TIME + 8;

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
