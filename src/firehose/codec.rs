//! The compression of delivered objects: Firehose's `CompressionFormat` values, plus ZSTD.
//!
//! Every encoder streams: records are written into it as they come, and the compressed object is
//! taken out at the end. Output is deterministic for the same input (no clock in any header: a
//! gzip header carries no time, a ZIP entry the batch's own time), so a batch delivered again
//! after a crash produces the same bytes under the same name.

use std::io::{self, Cursor, Write};

use serde::{Deserialize, Serialize};

/// Uncompressed bytes a Hadoop-snappy block holds (Hadoop's default
/// `io.compression.codec.snappy.buffersize`).
const HADOOP_SNAPPY_BLOCK: usize = 256 * 1024;

/// How delivered objects are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Compression {
    /// The records as they are.
    #[default]
    #[serde(rename = "UNCOMPRESSED")]
    Uncompressed,
    /// gzip (RFC 1952), one member: `gzip -d` opens it.
    #[serde(rename = "GZIP")]
    Gzip,
    /// A ZIP archive holding one entry, deflated: `unzip` opens it.
    #[serde(rename = "ZIP")]
    Zip,
    /// Snappy's framing format (`sNaPpY` stream identifier, CRC-checked chunks).
    #[serde(rename = "Snappy")]
    Snappy,
    /// Hadoop's block format for snappy (`BlockCompressorStream`): each block is the big-endian
    /// uncompressed length, then the big-endian compressed length and the raw snappy bytes.
    #[serde(rename = "HADOOP_SNAPPY")]
    HadoopSnappy,
    /// Zstandard (not a Firehose format; shardlog's own extension): `zstd -d` opens it.
    #[serde(rename = "ZSTD")]
    Zstd,
}

impl Compression {
    /// Every format, for tests and benchmarks.
    pub const ALL: [Compression; 6] = [
        Compression::Uncompressed,
        Compression::Gzip,
        Compression::Zip,
        Compression::Snappy,
        Compression::HadoopSnappy,
        Compression::Zstd,
    ];

    /// The name the Firehose API uses (`GZIP`, `Snappy`, ...; `ZSTD` for the extension).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Uncompressed => "UNCOMPRESSED",
            Compression::Gzip => "GZIP",
            Compression::Zip => "ZIP",
            Compression::Snappy => "Snappy",
            Compression::HadoopSnappy => "HADOOP_SNAPPY",
            Compression::Zstd => "ZSTD",
        }
    }

    /// Parses a name as the Firehose API spells it.
    pub fn parse(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The file extension Firehose gives such objects (empty for uncompressed ones).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Uncompressed => "",
            Compression::Gzip => ".gz",
            Compression::Zip => ".zip",
            Compression::Snappy => ".snappy",
            Compression::HadoopSnappy => ".hsnappy",
            Compression::Zstd => ".zst",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds one compressed object from the records written into it.
pub struct ObjectEncoder {
    inner: Inner,
}

enum Inner {
    Plain(Vec<u8>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zip(Box<zip::ZipWriter<Cursor<Vec<u8>>>>),
    Snappy(Box<snap::write::FrameEncoder<Vec<u8>>>),
    HadoopSnappy(HadoopSnappyWriter),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// Level of the zstd encoder: its default, fast and still compact.
const ZSTD_LEVEL: i32 = 3;

impl ObjectEncoder {
    /// Starts an object. `entry_name` names the single entry of a ZIP archive, and `time_ms` (ms
    /// since the Unix epoch) is that entry's modification time; other formats ignore both.
    pub fn new(compression: Compression, entry_name: &str, time_ms: i64) -> io::Result<Self> {
        let inner = match compression {
            Compression::Uncompressed => Inner::Plain(Vec::new()),
            Compression::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            )),
            Compression::Zip => {
                let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .last_modified_time(zip_time(time_ms))
                    .large_file(true);
                writer
                    .start_file(entry_name, options)
                    .map_err(io::Error::other)?;
                Inner::Zip(Box::new(writer))
            }
            Compression::Snappy => {
                Inner::Snappy(Box::new(snap::write::FrameEncoder::new(Vec::new())))
            }
            Compression::HadoopSnappy => Inner::HadoopSnappy(HadoopSnappyWriter::default()),
            Compression::Zstd => {
                Inner::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        };
        Ok(ObjectEncoder { inner })
    }

    /// Adds bytes to the object.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(out) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
            Inner::Gzip(w) => w.write_all(bytes),
            Inner::Zip(w) => w.write_all(bytes),
            Inner::Snappy(w) => w.write_all(bytes),
            Inner::HadoopSnappy(w) => w.write(bytes),
            Inner::Zstd(w) => w.write_all(bytes),
        }
    }

    /// Completes the object and returns its bytes.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self.inner {
            Inner::Plain(out) => Ok(out),
            Inner::Gzip(w) => w.finish(),
            Inner::Zip(w) => Ok(w.finish().map_err(io::Error::other)?.into_inner()),
            Inner::Snappy(w) => w.into_inner().map_err(|e| e.into_error()),
            Inner::HadoopSnappy(w) => w.finish(),
            Inner::Zstd(w) => w.finish(),
        }
    }
}

/// A ZIP entry's time (DOS time, 1980..=2107, two-second steps) from ms since the Unix epoch,
/// clamped into the range ZIP can hold.
fn zip_time(time_ms: i64) -> zip::DateTime {
    let (date, clock) = crate::utc::civil_utc(time_ms);
    let (year, month, day) = date;
    let (hour, minute, second) = clock;
    let year = year.clamp(1980, 2107);
    // In range by construction; the default (1980-01-01) is the fallback ZIP itself uses.
    zip::DateTime::from_date_and_time(
        year as u16,
        month as u8,
        day as u8,
        hour as u8,
        minute as u8,
        second as u8,
    )
    .unwrap_or_default()
}

/// Hadoop's `BlockCompressorStream` framing of snappy.
#[derive(Default)]
struct HadoopSnappyWriter {
    out: Vec<u8>,
    block: Vec<u8>,
}

impl HadoopSnappyWriter {
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = HADOOP_SNAPPY_BLOCK - self.block.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.block.extend_from_slice(now);
            bytes = later;
            if self.block.len() == HADOOP_SNAPPY_BLOCK {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let compressed = snap::raw::Encoder::new()
            .compress_vec(&self.block)
            .map_err(io::Error::other)?;
        // Both lengths fit: a block is at most 256 KiB, and snappy's worst case is bounded.
        self.out
            .extend_from_slice(&(self.block.len() as u32).to_be_bytes());
        self.out
            .extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        self.out.extend_from_slice(&compressed);
        self.block.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<Vec<u8>> {
        self.flush_block()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn encode(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = ObjectEncoder::new(c, "entry", 1_700_000_000_000).unwrap();
        for chunk in data.chunks(7_777) {
            e.write(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    fn sample() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| format!("{{\"n\":{i},\"k\":\"{}\"}}\n", i % 13).into_bytes())
            .take(600_000)
            .collect()
    }

    #[test]
    fn names_and_extensions_follow_firehose() {
        for c in Compression::ALL {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert_eq!(Compression::parse("gzip"), None);
        assert_eq!(Compression::Gzip.extension(), ".gz");
        assert_eq!(Compression::HadoopSnappy.extension(), ".hsnappy");
    }

    #[test]
    fn every_format_round_trips_and_is_deterministic() {
        let data = sample();
        for c in Compression::ALL {
            let a = encode(c, &data);
            assert_eq!(a, encode(c, &data), "{c} output differs between runs");
            let decoded = match c {
                Compression::Uncompressed => a.clone(),
                Compression::Gzip => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&a[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                Compression::Zip => {
                    let mut archive = zip::ZipArchive::new(Cursor::new(&a)).unwrap();
                    assert_eq!(archive.len(), 1);
                    let mut out = Vec::new();
                    archive.by_index(0).unwrap().read_to_end(&mut out).unwrap();
                    out
                }
                Compression::Snappy => {
                    let mut out = Vec::new();
                    snap::read::FrameDecoder::new(&a[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                Compression::HadoopSnappy => decode_hadoop_snappy(&a),
                Compression::Zstd => zstd::stream::decode_all(&a[..]).unwrap(),
            };
            assert_eq!(decoded, data, "{c}");
            if c != Compression::Uncompressed {
                assert!(a.len() < data.len() / 2, "{c} hardly compressed");
            }
        }
    }

    fn decode_hadoop_snappy(mut bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        while !bytes.is_empty() {
            let raw_len = be(bytes);
            let compressed_len = be(&bytes[4..]);
            let block = snap::raw::Decoder::new()
                .decompress_vec(&bytes[8..8 + compressed_len])
                .unwrap();
            assert_eq!(block.len(), raw_len);
            out.extend(block);
            bytes = &bytes[8 + compressed_len..];
        }
        out
    }
}
