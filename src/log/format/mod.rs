//! On-disk byte layouts: every constant, header, frame, footer and index entry of shardlog's files,
//! with their encoders and decoders. No I/O happens here; callers hand in byte slices.
//!
//! All integers are little-endian except the 128-bit hash key, which is big-endian so that its bytes
//! read like the decimal number Kinesis prints. ARCHITECTURE.md carries the same layouts as tables;
//! change both together and bump [`FORMAT_VERSION`].
//!
//! This file holds the versions, limits and file names; each structure has its own file:
//! `header` (segment header), `frame` (records of versions 1 and 2), `batch` (versions 3 on),
//! `footer` (the seal) and `index` (the sparse index file).

use crate::types::Offset;

mod batch;
mod footer;
mod frame;
mod header;
mod index;

pub use batch::*;
pub use footer::*;
pub use frame::*;
pub use header::*;
pub use index::*;

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
    use crate::types::NewRecord;

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
