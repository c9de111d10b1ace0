//! The 128-bit hash-key space that routes partition keys to shards, exactly as Kinesis does: the
//! MD5 of the partition key read as a big-endian number, or an explicit hash key given in decimal.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// The hash key of a partition key: its MD5 digest as a big-endian 128-bit number.
pub fn hash_key_of(partition_key: &str) -> u128 {
    hash_key_of_bytes(partition_key.as_bytes())
}

/// [`hash_key_of`] for a partition key as stored (bytes). A leaf function the storage layers use
/// to derive the hash keys they do not store.
pub fn hash_key_of_bytes(partition_key: &[u8]) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key).into())
}

/// [`hash_key_of_bytes`] of every partition key in `keys`, in order, into `out` (cleared first).
/// Short keys (up to 55 bytes) are hashed 8 at a time with SIMD, ~2.5x faster per key than one
/// by one (see `lane_md5`).
pub fn hash_keys_of<'k>(keys: impl IntoIterator<Item = &'k [u8]>, out: &mut Vec<u128>) {
    use crate::lane_md5::{digests, LANES};
    out.clear();
    let mut pending: [&[u8]; LANES] = [&[]; LANES];
    let mut filled = 0;
    let mut digested = [0u128; LANES];
    for key in keys {
        pending[filled] = key;
        filled += 1;
        if filled == LANES {
            digests(&pending, &mut digested);
            out.extend_from_slice(&digested);
            filled = 0;
        }
    }
    if filled > 0 {
        digests(&pending[..filled], &mut digested);
        out.extend_from_slice(&digested[..filled]);
    }
}

/// Parses an explicit hash key: a decimal number from 0 to 2^128 - 1 with no sign, no leading
/// zeros and nothing else (Kinesis's pattern `0|([1-9]\d{0,38})`).
pub fn parse_hash_key(text: &str) -> Option<u128> {
    let digits_ok = !text.is_empty()
        && text.len() <= 39
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if digits_ok {
        text.parse().ok()
    } else {
        None
    }
}

/// An inclusive range of hash keys owned by one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HashKeyRange {
    /// First hash key in the range.
    #[serde(with = "u128_string")]
    pub start: u128,
    /// Last hash key in the range (inclusive).
    #[serde(with = "u128_string")]
    pub end: u128,
}

impl HashKeyRange {
    /// The whole space, 0 to 2^128 - 1.
    pub const ALL: HashKeyRange = HashKeyRange {
        start: 0,
        end: u128::MAX,
    };

    /// Whether `key` falls in the range.
    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }

    /// `n` ranges of (almost) equal size covering the whole space, as Kinesis lays out the shards
    /// of a new stream: each is 2^128 / n keys, and the last one takes the remainder.
    pub fn uniform(n: u32) -> Vec<HashKeyRange> {
        assert!(n > 0, "at least one range");
        let step = if n == 1 {
            0
        } else {
            // 2^128 / n, computed without overflowing: (2^128 - 1) / n, plus one if n divides 2^128.
            let q = u128::MAX / u128::from(n);
            let r = u128::MAX % u128::from(n);
            if r + 1 == u128::from(n) {
                q + 1
            } else {
                q
            }
        };
        (0..n)
            .map(|i| {
                let start = step * u128::from(i);
                let end = if i + 1 == n {
                    u128::MAX
                } else {
                    step * u128::from(i + 1) - 1
                };
                HashKeyRange { start, end }
            })
            .collect()
    }
}

/// Serde for u128 as a decimal string (JSON numbers cannot hold 128 bits).
pub(crate) mod u128_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_hash_key(&text).ok_or_else(|| D::Error::custom("not a 128-bit number"))
    }
}

/// A shard's id: its index in the stream, shown the Kinesis way, `shardId-000000000007`.
/// Formatting happens only when it is shown, so hot paths carry a `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl ShardId {
    /// The shard's index.
    pub fn index(self) -> u32 {
        self.0
    }

    /// Parses `shardId-` and 12 digits.
    pub fn parse(text: &str) -> Option<ShardId> {
        parse_shard_id(text).map(ShardId)
    }

    /// Parses a shard id as Kinesis reads one a caller gives: the digits after the last `-`, or
    /// the whole text if it has none, so `shardId-000000000002`, `shardId-2`, `shard-2`,
    /// `anything-2` and `2` all name `shardId-000000000002`.
    pub fn parse_loose(text: &str) -> Option<ShardId> {
        let digits = text.rsplit('-').next().unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Leading zeros of any number; the value must fit an index.
        let significant = digits.trim_start_matches('0');
        if significant.len() > 10 {
            return None;
        }
        let value: u64 = if significant.is_empty() {
            0
        } else {
            significant.parse().ok()?
        };
        u32::try_from(value).ok().map(ShardId)
    }
}

/// Serialized as its wire form, `shardId-000000000007`.
impl serde::Serialize for ShardId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shardId-{:012}", self.0)
    }
}

impl PartialEq<str> for ShardId {
    fn eq(&self, other: &str) -> bool {
        ShardId::parse(other) == Some(*self)
    }
}

impl PartialEq<&str> for ShardId {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

/// The Kinesis name of the shard with this index: `shardId-000000000007`.
pub fn shard_id(index: u32) -> String {
    ShardId(index).to_string()
}

/// The index in a shard id made by [`shard_id`]; `None` for anything else.
pub fn parse_shard_id(id: &str) -> Option<u32> {
    let digits = id.strip_prefix("shardId-")?;
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_given_by_callers_are_read_as_kinesis_reads_them() {
        for (text, index) in [
            ("shardId-000000000002", Some(2)),
            ("shardId-2", Some(2)),
            ("shard-2", Some(2)),
            ("anything-at-all-2", Some(2)),
            ("2", Some(2)),
            ("0", Some(0)),
            ("shardId-0000000000000000000007", Some(7)),
            ("2147483647", Some(2_147_483_647)),
            ("4294967295", Some(u32::MAX)),
            ("4294967296", None),
            ("99999999999999999999", None),
            ("shardId-", None),
            ("shardId-x1", None),
            ("", None),
            ("-", None),
            ("+1", None),
        ] {
            assert_eq!(
                ShardId::parse_loose(text).map(ShardId::index),
                index,
                "{text:?}"
            );
        }
        // Ids this crate writes stay strict.
        assert_eq!(ShardId::parse("shardId-2"), None);
    }

    #[test]
    fn md5_routing_matches_kinesis() {
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key_of("a"), 0x0cc175b9c0f1b6a831c399e269772661u128);
    }

    #[test]
    fn uniform_ranges_match_kinesis_layout() {
        let four = HashKeyRange::uniform(4);
        assert_eq!(four[0].end, 85070591730234615865843651857942052863);
        assert_eq!(four[1].start, 85070591730234615865843651857942052864);
        assert_eq!(four[3].end, u128::MAX);
        let three = HashKeyRange::uniform(3);
        assert_eq!(three[0].end, 113427455640312821154458202477256070484);
        assert_eq!(three[1].start, 113427455640312821154458202477256070485);
        for n in [1u32, 2, 3, 5, 7, 64, 1000] {
            let r = HashKeyRange::uniform(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].start, 0);
            assert_eq!(r.last().unwrap().end, u128::MAX);
            assert!(r.windows(2).all(|w| w[0].end + 1 == w[1].start));
        }
    }

    #[test]
    fn explicit_hash_keys_are_parsed_strictly() {
        assert_eq!(parse_hash_key("0"), Some(0));
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211455"),
            Some(u128::MAX)
        );
        for bad in [
            "",
            "00",
            "01",
            "-1",
            "+1",
            " 1",
            "1.0",
            "340282366920938463463374607431768211456",
            "1a",
        ] {
            assert_eq!(parse_hash_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn shard_ids_round_trip() {
        assert_eq!(shard_id(7), "shardId-000000000007");
        assert_eq!(parse_shard_id("shardId-000000000007"), Some(7));
        assert_eq!(parse_shard_id("shardId-7"), None);
        assert_eq!(parse_shard_id("shard-000000000007"), None);
        assert_eq!(ShardId(7).to_string(), "shardId-000000000007");
        assert_eq!(ShardId(7), "shardId-000000000007");
    }
}
