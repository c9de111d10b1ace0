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

impl SequenceNumber {
    /// Its 39 decimal digits (the marker bit makes every number at least 2^127, 39 digits).
    /// Two 128-bit divisions and then 64-bit arithmetic: GetRecords and PutRecords answers
    /// write one per record.
    pub fn decimal(self) -> [u8; 39] {
        const TEN19: u128 = 10_000_000_000_000_000_000;
        let mut out = [b'0'; 39];
        let low = (self.0 % TEN19) as u64;
        let rest = self.0 / TEN19;
        let middle = (rest % TEN19) as u64;
        // Below 2^128 / 10^38: one digit.
        let high = (rest / TEN19) as u64;
        let mut put = |mut n: u64, end: usize, digits: usize| {
            for at in (end - digits..end).rev() {
                out[at] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(low, 39, 19);
        put(middle, 20, 19);
        put(high, 1, 1);
        out
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.decimal();
        // Only ASCII digits were written.
        f.pad(std::str::from_utf8(&digits).unwrap_or_default())
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
    fn digits_are_the_numbers_decimal_form() {
        let extremes = [
            SequenceNumber::new(0, Offset::new(0)),
            SequenceNumber::new(u32::MAX, Offset::new(u64::MAX)),
            SequenceNumber(u128::MAX),
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let random = (0..1000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            SequenceNumber::new(x as u32, Offset::new(x.rotate_left(17)))
        });
        for s in extremes.into_iter().chain(random) {
            assert_eq!(s.to_string(), format!("{}", s.0));
        }
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
