//! MD5 of many short messages at once, for routing partition keys.
//!
//! Routing a `PutRecords` call hashes up to 500 partition keys, almost always short ones (one MD5
//! block: at most [`MAX_ONE_BLOCK`] bytes). One MD5 is a chain of 64 dependent steps, so a
//! single hash leaves most of a core idle however well it is written (the `md-5` crate's
//! assembly takes ~185 ns a key on the project's VM). This module runs [`LANES`] independent
//! hashes side by side, one SIMD lane per message, with `wide`'s `u32x8` (safe wrappers over the
//! target's vector instructions: two SSE2 registers on baseline x86-64, one AVX2 register when
//! built with `-C target-cpu` that has it, plain arrays elsewhere): ~42 ns a key. The compiler
//! does not vectorize the same code written over `[u32; 8]` (it was tried: scalar `rol`s).
//! Longer keys go to the `md-5` crate; a test checks both agree on every length.

/// Messages hashed together: one `u32x8`. Sixteen (two `u32x8` interleaved) was measured no
/// faster per key: the steps are bound by instruction throughput, not latency.
pub(crate) const LANES: usize = 8;

/// The longest message that fits in one MD5 block (64 bytes minus the 0x80 marker and the
/// 8-byte length).
pub(crate) const MAX_ONE_BLOCK: usize = 55;

/// One 32-bit word of every lane's state or block.
type Lanes = wide::u32x8;

/// Per-step additive constants, floor(abs(sin(i + 1)) * 2^32) (RFC 1321).
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

const INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/// The MD5 digests of up to [`LANES`] messages of at most [`MAX_ONE_BLOCK`] bytes each, read as
/// big-endian numbers (the hash-key order), into `out[..messages.len()]`.
///
/// The caller keeps to both bounds; a message that breaks them is hashed by `md-5` instead, so
/// the result is right either way.
pub(crate) fn digests(messages: &[&[u8]], out: &mut [u128]) {
    debug_assert!(messages.len() <= LANES && out.len() >= messages.len());
    // Each lane's padded block as little-endian words, then transposed: one vector per word.
    let mut blocks = [[0u32; 16]; LANES];
    for (block, message) in blocks.iter_mut().zip(messages) {
        if message.len() > MAX_ONE_BLOCK {
            continue;
        }
        let mut bytes = [0u8; 64];
        bytes[..message.len()].copy_from_slice(message);
        bytes[message.len()] = 0x80;
        bytes[56..].copy_from_slice(&((message.len() as u64) * 8).to_le_bytes());
        for (word, chunk) in block.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    let words = std::array::from_fn(|w| Lanes::new(std::array::from_fn(|lane| blocks[lane][w])));
    let [a, b, c, d] = compress(&words).map(|word| word.to_array());
    for (lane, message) in messages.iter().enumerate().take(LANES) {
        out[lane] = if message.len() > MAX_ONE_BLOCK {
            use md5::Digest as _;
            u128::from_be_bytes(md5::Md5::digest(message).into())
        } else {
            // The digest is a, b, c, d in little-endian byte order, read as one big-endian number.
            [a[lane], b[lane], c[lane], d[lane]]
                .iter()
                .fold(0u128, |acc, word| acc << 32 | u128::from(word.swap_bytes()))
        };
    }
}

/// One MD5 compression of one block per lane, from the initial state (RFC 1321, section 3.4),
/// its 64 steps written out so every word index and rotation is a constant.
fn compress(m: &[Lanes; 16]) -> [Lanes; 4] {
    let [mut a, mut b, mut c, mut d] = INIT.map(Lanes::splat);
    // The four rounds' functions; `!x & y` is one "and-not" instruction.
    let f = |b: Lanes, c: Lanes, d: Lanes| (b & c) | (!b & d);
    let g = |b: Lanes, c: Lanes, d: Lanes| (d & b) | (!d & c);
    let h = |b: Lanes, c: Lanes, d: Lanes| b ^ c ^ d;
    let i = |b: Lanes, c: Lanes, d: Lanes| c ^ (b | !d);
    // a = b + ((a + fun(b, c, d) + K[step] + m[word]) <<< rotation)
    macro_rules! step {
        ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $step:literal, $word:literal, $rotation:literal) => {
            let sum = $a + $fun($b, $c, $d) + Lanes::splat(K[$step]) + m[$word];
            $a = $b + ((sum << $rotation) | (sum >> (32 - $rotation)));
        };
    }
    step!(f, a, b, c, d, 0, 0, 7);
    step!(f, d, a, b, c, 1, 1, 12);
    step!(f, c, d, a, b, 2, 2, 17);
    step!(f, b, c, d, a, 3, 3, 22);
    step!(f, a, b, c, d, 4, 4, 7);
    step!(f, d, a, b, c, 5, 5, 12);
    step!(f, c, d, a, b, 6, 6, 17);
    step!(f, b, c, d, a, 7, 7, 22);
    step!(f, a, b, c, d, 8, 8, 7);
    step!(f, d, a, b, c, 9, 9, 12);
    step!(f, c, d, a, b, 10, 10, 17);
    step!(f, b, c, d, a, 11, 11, 22);
    step!(f, a, b, c, d, 12, 12, 7);
    step!(f, d, a, b, c, 13, 13, 12);
    step!(f, c, d, a, b, 14, 14, 17);
    step!(f, b, c, d, a, 15, 15, 22);
    step!(g, a, b, c, d, 16, 1, 5);
    step!(g, d, a, b, c, 17, 6, 9);
    step!(g, c, d, a, b, 18, 11, 14);
    step!(g, b, c, d, a, 19, 0, 20);
    step!(g, a, b, c, d, 20, 5, 5);
    step!(g, d, a, b, c, 21, 10, 9);
    step!(g, c, d, a, b, 22, 15, 14);
    step!(g, b, c, d, a, 23, 4, 20);
    step!(g, a, b, c, d, 24, 9, 5);
    step!(g, d, a, b, c, 25, 14, 9);
    step!(g, c, d, a, b, 26, 3, 14);
    step!(g, b, c, d, a, 27, 8, 20);
    step!(g, a, b, c, d, 28, 13, 5);
    step!(g, d, a, b, c, 29, 2, 9);
    step!(g, c, d, a, b, 30, 7, 14);
    step!(g, b, c, d, a, 31, 12, 20);
    step!(h, a, b, c, d, 32, 5, 4);
    step!(h, d, a, b, c, 33, 8, 11);
    step!(h, c, d, a, b, 34, 11, 16);
    step!(h, b, c, d, a, 35, 14, 23);
    step!(h, a, b, c, d, 36, 1, 4);
    step!(h, d, a, b, c, 37, 4, 11);
    step!(h, c, d, a, b, 38, 7, 16);
    step!(h, b, c, d, a, 39, 10, 23);
    step!(h, a, b, c, d, 40, 13, 4);
    step!(h, d, a, b, c, 41, 0, 11);
    step!(h, c, d, a, b, 42, 3, 16);
    step!(h, b, c, d, a, 43, 6, 23);
    step!(h, a, b, c, d, 44, 9, 4);
    step!(h, d, a, b, c, 45, 12, 11);
    step!(h, c, d, a, b, 46, 15, 16);
    step!(h, b, c, d, a, 47, 2, 23);
    step!(i, a, b, c, d, 48, 0, 6);
    step!(i, d, a, b, c, 49, 7, 10);
    step!(i, c, d, a, b, 50, 14, 15);
    step!(i, b, c, d, a, 51, 5, 21);
    step!(i, a, b, c, d, 52, 12, 6);
    step!(i, d, a, b, c, 53, 3, 10);
    step!(i, c, d, a, b, 54, 10, 15);
    step!(i, b, c, d, a, 55, 1, 21);
    step!(i, a, b, c, d, 56, 8, 6);
    step!(i, d, a, b, c, 57, 15, 10);
    step!(i, c, d, a, b, 58, 6, 15);
    step!(i, b, c, d, a, 59, 13, 21);
    step!(i, a, b, c, d, 60, 4, 6);
    step!(i, d, a, b, c, 61, 11, 10);
    step!(i, c, d, a, b, 62, 2, 15);
    step!(i, b, c, d, a, 63, 9, 21);
    let [a0, b0, c0, d0] = INIT.map(Lanes::splat);
    [a + a0, b + b0, c + c0, d + d0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_key::hash_key_of_bytes;

    #[test]
    fn agrees_with_md5_on_every_length_and_lane_count() {
        let text: Vec<u8> = (0..80u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        for count in 1..=LANES {
            for len in 0..=70 {
                let messages: Vec<&[u8]> = (0..count)
                    .map(|lane| &text[lane % 7..lane % 7 + len.min(73)])
                    .collect();
                let mut out = [0u128; LANES];
                digests(&messages, &mut out);
                for (lane, message) in messages.iter().enumerate() {
                    assert_eq!(
                        out[lane],
                        hash_key_of_bytes(message),
                        "len {len} lane {lane}"
                    );
                }
            }
        }
    }

    #[test]
    fn rfc_1321_test_suite() {
        let cases: [(&str, u128); 4] = [
            ("", 0xd41d8cd98f00b204e9800998ecf8427e),
            ("a", 0x0cc175b9c0f1b6a831c399e269772661),
            ("abc", 0x900150983cd24fb0d6963f7d28e17f72),
            ("message digest", 0xf96b697d7cb7938d525a2f31aaf161d0),
        ];
        let messages: Vec<&[u8]> = cases.iter().map(|(m, _)| m.as_bytes()).collect();
        let mut out = [0u128; LANES];
        digests(&messages, &mut out);
        for (i, (_, expected)) in cases.iter().enumerate() {
            assert_eq!(out[i], *expected);
        }
    }
}
