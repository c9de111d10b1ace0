//! Shard iterator tokens: opaque strings that carry a read position. A token names the stream
//! (and its creation time, so a token outlives neither a deletion nor a re-creation under the same
//! name), the shard, the offset to read next and when the token was issued (tokens expire).
//!
//! Format: URL-safe base64 (no padding) of
//! `{ version u8 = 2 | shard_index u32 | offset u64 | issued_ms i64 | stream_created_ms i64
//!    | stream_name[..] | tag [u8; 16] }`, all little-endian, where `tag` is the first 16 bytes of
//! the HMAC-SHA256 of everything before it under the store's iterator key (`DATA_DIR/iterator.key`,
//! 32 random bytes made when the store is first opened): only this store can issue a token, so
//! none can be forged (one "issued" in the future, say, that never expires). At most 231
//! characters for a 128-character stream name (Kinesis allows 512). Version 1 tokens (a CRC in
//! place of the tag) are refused: a token lives 5 minutes, so refusing them costs a client one
//! new GetShardIterator after an upgrade.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::Offset;

const VERSION: u8 = 2;
const FIXED: usize = 1 + 4 + 8 + 8 + 8;
const TAG_LEN: usize = 16;
/// The store's iterator key, in its data directory.
pub const ITERATOR_KEY_FILE: &str = "iterator.key";
const KEY_LEN: usize = 32;

/// The secret that signs a store's shard iterators.
#[derive(Clone)]
pub(crate) struct IteratorKey([u8; KEY_LEN]);

impl std::fmt::Debug for IteratorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IteratorKey(..)")
    }
}

/// What is wrong with the key file of `data_dir`, if anything: `None` when it holds a key or is
/// missing (the next open makes one). A damaged file is replaced at open, invalidating
/// iterators issued before; `shardlog verify` reports it.
#[cfg(any(feature = "cli", test))]
pub(crate) fn damaged_key_file(data_dir: &Path) -> Option<String> {
    match std::fs::read(data_dir.join(ITERATOR_KEY_FILE)) {
        Ok(bytes) if bytes.len() == KEY_LEN => None,
        Ok(bytes) => Some(format!(
            "{} bytes, not a {KEY_LEN}-byte key: the next open replaces it (older iterators become invalid)",
            bytes.len()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("does not read: {e}")),
    }
}

impl IteratorKey {
    /// Reads `DATA_DIR/iterator.key`, or makes it (random, written atomically) if it is missing
    /// or not a key: a new key only makes tokens issued before it invalid, which live 5 minutes.
    pub(crate) fn load_or_create(data_dir: &Path) -> Result<IteratorKey> {
        let path = data_dir.join(ITERATOR_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                if let Ok(key) = <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
                    return Ok(IteratorKey(key));
                }
                tracing::warn!(file = %path.display(), "iterator key damaged: making a new one (older iterators become invalid)");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", &path, e)),
        }
        let mut key = [0u8; KEY_LEN];
        rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Error::io("make a random key for", &path, e.into()))?;
        crate::io::write_atomically(data_dir, ITERATOR_KEY_FILE, &key)?;
        Ok(IteratorKey(key))
    }

    #[cfg(test)]
    pub(crate) fn fixed(byte: u8) -> IteratorKey {
        IteratorKey([byte; KEY_LEN])
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
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
    pub(crate) fn encode(&self, key: &IteratorKey) -> String {
        let mut b = Vec::with_capacity(FIXED + self.stream.len() + 4);
        b.push(VERSION);
        b.extend_from_slice(&self.shard_index.to_le_bytes());
        b.extend_from_slice(&self.offset.get().to_le_bytes());
        b.extend_from_slice(&self.issued_ms.to_le_bytes());
        b.extend_from_slice(&self.stream_created_ms.to_le_bytes());
        b.extend_from_slice(self.stream.as_bytes());
        let tag = key.tag(&b);
        b.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes a token; `None` if it is not one this store made (or was altered).
    pub(crate) fn decode(text: &str, key: &IteratorKey) -> Option<IteratorToken> {
        if text.len() > 512 {
            return None;
        }
        let b = URL_SAFE_NO_PAD.decode(text).ok()?;
        let body_len = b.len().checked_sub(TAG_LEN).filter(|&n| n > FIXED)?;
        let (body, tag) = b.split_at(body_len);
        let expected = key.tag(body);
        // Constant time: a mismatch does not tell how much of the tag was right.
        let differs = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 || body[0] != VERSION {
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
        let key = IteratorKey::fixed(7);
        let text = t.encode(&key);
        assert!(text.len() <= 512, "{}", text.len());
        assert_eq!(IteratorToken::decode(&text, &key), Some(t.clone()));
        let mut bytes = text.clone().into_bytes();
        bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            IteratorToken::decode(&String::from_utf8(bytes).unwrap(), &key),
            None
        );
        assert_eq!(IteratorToken::decode("", &key), None);
        assert_eq!(IteratorToken::decode("not base64!", &key), None);
        assert_eq!(IteratorToken::decode("AAAA", &key), None);
        // Another store's key: the token is not this store's.
        assert_eq!(IteratorToken::decode(&text, &IteratorKey::fixed(8)), None);
    }

    #[test]
    fn a_token_forged_with_a_checksum_is_refused() {
        // What a version-1 token was: the body and its CRC, which anyone can compute.
        let key = IteratorKey::fixed(1);
        let mut b = vec![VERSION];
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&i64::MAX.to_le_bytes()); // issued in the far future
        b.extend_from_slice(&0i64.to_le_bytes());
        b.extend_from_slice(b"prod");
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&[0u8; 12]);
        assert_eq!(
            IteratorToken::decode(&URL_SAFE_NO_PAD.encode(&b), &key),
            None
        );
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = IteratorKey::load_or_create(dir.path()).unwrap();
        let again = IteratorKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.0, again.0);
        assert_ne!(first.0, [0u8; KEY_LEN]);
        assert_eq!(damaged_key_file(dir.path()), None);
        std::fs::write(dir.path().join(ITERATOR_KEY_FILE), b"short").unwrap();
        assert!(damaged_key_file(dir.path()).is_some_and(|what| what.starts_with("5 bytes")));
        let remade = IteratorKey::load_or_create(dir.path()).unwrap();
        assert_ne!(remade.0, first.0);
        assert_eq!(damaged_key_file(dir.path()), None);
    }
}
