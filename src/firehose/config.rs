//! A delivery stream's configuration, with Firehose's names, ranges and defaults
//! (`firehose/2015-08-04`: `BufferingHints`, `CompressionFormat`, `Prefix`, `ErrorOutputPrefix`).

use serde::{Deserialize, Serialize};

use super::codec::Compression;
use super::naming::check_prefix;
use crate::error::{Error, Result};

/// Firehose's limits on a delivery stream name: 1 to 64 of `[a-zA-Z0-9_.-]`.
pub const MAX_NAME_LEN: usize = 64;
/// Largest record a delivery stream takes (Firehose: 1,000 KiB).
pub const MAX_RECORD_BYTES: usize = 1_024_000;
/// Most records in one put_record_batch.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Most bytes in one put_record_batch.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Longest prefix (and error output prefix).
pub const MAX_PREFIX_LEN: usize = 1024;

/// When a batch is cut: at `size_mib` of buffered data or after `interval_secs`, whichever comes
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferingHints {
    /// 1 to 128 MiB; default 5.
    pub size_mib: u32,
    /// 0 to 900 seconds; default 60.
    pub interval_secs: u32,
}

impl Default for BufferingHints {
    fn default() -> Self {
        BufferingHints {
            size_mib: 5,
            interval_secs: 60,
        }
    }
}

impl BufferingHints {
    /// The size hint in bytes.
    pub fn size_bytes(&self) -> usize {
        self.size_mib as usize * 1024 * 1024
    }

    /// The interval hint in milliseconds.
    pub fn interval_ms(&self) -> i64 {
        i64::from(self.interval_secs) * 1000
    }
}

/// How a delivery stream delivers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeliveryConfig {
    /// When batches are cut.
    pub buffering: BufferingHints,
    /// How objects are compressed.
    pub compression: Compression,
    /// Custom prefix of object keys (default `YYYY/MM/dd/HH/`).
    pub prefix: Option<String>,
    /// Prefix of objects holding records that failed (default `<error type>/YYYY/MM/dd/HH/`).
    pub error_output_prefix: Option<String>,
    /// Bytes written after every record in an object (e.g. a newline); none by default.
    pub record_delimiter: Option<Vec<u8>>,
}

impl DeliveryConfig {
    /// Checks every field against Firehose's rules.
    pub fn validate(&self) -> Result<()> {
        let b = self.buffering;
        if !(1..=128).contains(&b.size_mib) {
            return Err(Error::invalid(
                "SizeInMBs",
                format!("{} is outside 1..=128", b.size_mib),
            ));
        }
        if b.interval_secs > 900 {
            return Err(Error::invalid(
                "IntervalInSeconds",
                format!("{} is outside 0..=900", b.interval_secs),
            ));
        }
        for (name, prefix, error) in [
            ("Prefix", &self.prefix, false),
            ("ErrorOutputPrefix", &self.error_output_prefix, true),
        ] {
            let Some(p) = prefix else { continue };
            if p.len() > MAX_PREFIX_LEN {
                return Err(Error::invalid(
                    name,
                    format!("{} bytes is longer than {MAX_PREFIX_LEN}", p.len()),
                ));
            }
            check_prefix(p, error).map_err(|e| Error::invalid(name, e.to_string()))?;
        }
        // Firehose: a prefix with expressions needs an error output prefix.
        if self.prefix.as_ref().is_some_and(|p| p.contains("!{"))
            && self.error_output_prefix.is_none()
        {
            return Err(Error::invalid(
                "ErrorOutputPrefix",
                "a Prefix with expressions needs an ErrorOutputPrefix",
            ));
        }
        Ok(())
    }
}

/// Checks a delivery stream name.
pub fn check_name(name: &str) -> Result<()> {
    crate::stream::check_resource_name("DeliveryStreamName", name, MAX_NAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges_follow_firehose() {
        let c = DeliveryConfig::default();
        assert_eq!(c.buffering.size_mib, 5);
        assert_eq!(c.buffering.interval_secs, 60);
        assert_eq!(c.compression, Compression::Uncompressed);
        c.validate().unwrap();
        for (size, interval, ok) in [
            (1, 0, true),
            (128, 900, true),
            (0, 60, false),
            (129, 60, false),
            (5, 901, false),
        ] {
            let c = DeliveryConfig {
                buffering: BufferingHints {
                    size_mib: size,
                    interval_secs: interval,
                },
                ..DeliveryConfig::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{size} MiB, {interval} s");
        }
        let custom = DeliveryConfig {
            prefix: Some("dt=!{timestamp:yyyy-MM-dd}/".into()),
            ..DeliveryConfig::default()
        };
        assert!(
            custom.validate().is_err(),
            "expressions need an error prefix"
        );
        let custom = DeliveryConfig {
            error_output_prefix: Some("errors/!{firehose:error-output-type}/".into()),
            ..custom
        };
        custom.validate().unwrap();
        let bad = DeliveryConfig {
            prefix: Some("!{firehose:error-output-type}/".into()),
            ..custom
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn names_follow_firehose() {
        check_name("orders-to-s3.v2_x").unwrap();
        for bad in ["", "has space", "slash/", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
