//! Shard iterator tokens: opaque strings that carry a read position. A token names the stream
//! (and its creation time, so a token outlives neither a deletion nor a re-creation under the same
//! name), the shard, the offset to read next and when the token was issued (tokens expire).
//!
//! Format: URL-safe base64 (no padding) of
//! `{ version u8 = 1 | shard_index u32 | offset u64 | issued_ms i64 | stream_created_ms i64
//!    | stream_name[..] | crc32 u32 (over everything before) }`, all little-endian: at most 215
//! characters for a 128-character stream name (Kinesis allows 512).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::Offset;

const VERSION: u8 = 1;
const FIXED: usize = 1 + 4 + 8 + 8 + 8;

/// The stream a shard iterator reads (`None` if it is not a valid iterator).
pub(crate) fn stream_of(text: &str) -> Option<String> {
    IteratorToken::decode(text).map(|t| t.stream)
}

/// The (shard index, offset) a shard iterator reads next (`None` if it is not valid).
pub(crate) fn position_of(text: &str) -> Option<(u32, u64)> {
    IteratorToken::decode(text).map(|t| (t.shard_index, t.offset.get()))
}

/// A decoded shard iterator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IteratorToken {
    pub stream: String,
    pub stream_created_ms: i64,
    pub shard_index: u32,
    pub offset: Offset,
    pub issued_ms: i64,
}

impl IteratorToken {
    pub(crate) fn encode(&self) -> String {
        let mut b = Vec::with_capacity(FIXED + self.stream.len() + 4);
        b.push(VERSION);
        b.extend_from_slice(&self.shard_index.to_le_bytes());
        b.extend_from_slice(&self.offset.get().to_le_bytes());
        b.extend_from_slice(&self.issued_ms.to_le_bytes());
        b.extend_from_slice(&self.stream_created_ms.to_le_bytes());
        b.extend_from_slice(self.stream.as_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes a token; `None` if it is not one this store made (or was altered).
    pub(crate) fn decode(text: &str) -> Option<IteratorToken> {
        if text.len() > 512 {
            return None;
        }
        let b = URL_SAFE_NO_PAD.decode(text).ok()?;
        let body_len = b.len().checked_sub(4).filter(|&n| n > FIXED)?;
        let (body, crc) = b.split_at(body_len);
        if crc32fast::hash(body).to_le_bytes() != crc || body[0] != VERSION {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        Some(IteratorToken {
            shard_index: u32::from_le_bytes(body[1..5].try_into().expect("4 bytes")),
            offset: Offset::new(u64_at(5)),
            issued_ms: u64_at(13) as i64,
            stream_created_ms: u64_at(21) as i64,
            stream: String::from_utf8(body[FIXED..].to_vec()).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_tampering() {
        let t = IteratorToken {
            stream: "a".repeat(128),
            stream_created_ms: 1_700_000_000_000,
            shard_index: 42,
            offset: Offset::new(123_456_789),
            issued_ms: 1_700_000_000_999,
        };
        let text = t.encode();
        assert!(text.len() <= 512, "{}", text.len());
        assert_eq!(IteratorToken::decode(&text), Some(t));
        let mut bytes = text.into_bytes();
        bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            IteratorToken::decode(&String::from_utf8(bytes).unwrap()),
            None
        );
        assert_eq!(IteratorToken::decode(""), None);
        assert_eq!(IteratorToken::decode("not base64!"), None);
        assert_eq!(IteratorToken::decode("AAAA"), None);
    }
}
