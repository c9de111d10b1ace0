//! Kinesis sequence numbers: decimal strings that increase within a shard and are unique in the
//! stream. shardlog's are 128-bit numbers `2^127 | shard index << 64 | offset`, always 39 digits,
//! so comparing them as strings or as numbers gives the same order, and a child shard's numbers
//! (higher index) are above its parents'.

use crate::Offset;

const MARK: u128 = 1 << 127;

/// A record's sequence number: its shard's index and its offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber(u128);

impl SequenceNumber {
    /// The sequence number of `offset` in the shard with index `shard_index`.
    pub fn new(shard_index: u32, offset: Offset) -> SequenceNumber {
        SequenceNumber(MARK | u128::from(shard_index) << 64 | u128::from(offset.get()))
    }

    /// The index of the shard the number belongs to.
    pub fn shard_index(self) -> u32 {
        ((self.0 >> 64) & u128::from(u32::MAX)) as u32
    }

    /// The record's offset within its shard.
    pub fn offset(self) -> Offset {
        Offset::new(self.0 as u64)
    }

    /// Parses a sequence number made by this store: exactly 39 digits, with the marker bit set and
    /// no bits beyond the shard index. `None` for anything else.
    pub fn parse(text: &str) -> Option<SequenceNumber> {
        if text.len() != 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u128 = text.parse().ok()?;
        let shard_bits = (n & !MARK) >> 64;
        (n & MARK != 0 && shard_bits <= u128::from(u32::MAX)).then_some(SequenceNumber(n))
    }
}

/// Serialized as its wire form, a decimal string.
impl serde::Serialize for SequenceNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_as_strings() {
        let a = SequenceNumber::new(0, Offset::new(0));
        let b = SequenceNumber::new(0, Offset::new(u64::MAX));
        let c = SequenceNumber::new(1, Offset::new(0));
        let d = SequenceNumber::new(u32::MAX, Offset::new(5));
        for s in [a, b, c, d] {
            let text = s.to_string();
            assert_eq!(text.len(), 39, "{text}");
            assert_eq!(SequenceNumber::parse(&text), Some(s));
        }
        assert!(a < b && b < c && c < d);
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        assert_eq!(d.shard_index(), u32::MAX);
        assert_eq!(d.offset(), Offset::new(5));
    }

    #[test]
    fn parsing_is_strict() {
        let good = SequenceNumber::new(3, Offset::new(9)).to_string();
        assert!(SequenceNumber::parse(&good).is_some());
        for bad in [
            "".to_string(),
            "12".to_string(),
            format!("{good}0"),
            good.replace('1', "x"),
            format!("{:039}", 5u128), // marker bit missing
            (u128::MAX).to_string(),  // shard index beyond 32 bits
            format!(" {}", &good[1..]),
        ] {
            assert_eq!(SequenceNumber::parse(&bad), None, "{bad:?}");
        }
    }
}
