//! Object names as Firehose writes them: `<evaluated prefix><stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<id><extension>`.
//!
//! The prefix is `YYYY/MM/dd/HH/` (UTC) unless a custom one is configured; custom prefixes may
//! hold `!{timestamp:<pattern>}` (a Java `DateTimeFormatter` pattern: `yyyy`, `yy`, `MM`, `M`,
//! `dd`, `d`, `HH`, `H`, `mm`, `m`, `ss`, `s`, `SSS`, quoted literals and punctuation),
//! `!{firehose:random-string}` and, in an error output prefix only,
//! `!{firehose:error-output-type}`. Every time in a name is the arrival time of the oldest record
//! in the object, and the "random" parts derive from the batch itself, so a batch written again
//! after a crash gets the same name.

use md5::{Digest, Md5};

use super::codec::Compression;
use crate::utc::civil_utc;

/// Characters `!{firehose:random-string}` evaluates to (Firehose: 11).
const RANDOM_STRING_LEN: usize = 11;

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// `!{` without a closing `}`.
    #[error("unclosed expression at character {0}")]
    Unclosed(usize),
    /// An expression shardlog does not know (or does not support, like dynamic partitioning).
    #[error("unsupported expression !{{{0}}}")]
    Unsupported(String),
    /// `!{firehose:error-output-type}` outside an error output prefix.
    #[error("!{{firehose:error-output-type}} is only allowed in an error output prefix")]
    ErrorTypeOutsideErrorPrefix,
    /// A timestamp pattern letter shardlog does not support.
    #[error("unsupported timestamp pattern {0:?}")]
    Pattern(String),
    /// Keys made with it would not be plain object keys (see [`check_key`]).
    #[error("object keys it makes would be refused: {0}")]
    Key(String),
}

/// Longest name component of an object key (a file name on a local destination).
const MAX_KEY_COMPONENT: usize = 255;

/// Checks that `key` is a plain object key every destination stores as is: not empty, no
/// leading `/`, no empty, `.` or `..` component (so a local destination keeps it under its
/// root), no control character (NUL included), and no component over 255 bytes.
pub fn check_key(key: &str) -> Result<(), PrefixError> {
    let fail = |why: String| Err(PrefixError::Key(why));
    if key.is_empty() {
        return fail("an empty key".into());
    }
    if key.starts_with('/') {
        return fail(format!("{key:?} starts with '/'"));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return fail(format!("{key:?} holds the control character {c:?}"));
    }
    for component in key.split('/') {
        if matches!(component, "" | "." | "..") {
            return fail(format!("{key:?} has a {component:?} path component"));
        }
        if component.len() > MAX_KEY_COMPONENT {
            return fail(format!(
                "{key:?} has a component of {} bytes (at most {MAX_KEY_COMPONENT})",
                component.len()
            ));
        }
    }
    Ok(())
}

/// What an object's name is made from.
#[derive(Debug, Clone, Copy)]
pub struct NameParts<'a> {
    /// The delivery stream's name.
    pub stream: &'a str,
    /// The delivery stream's configuration version (1, then one more per update).
    pub version: u64,
    /// Arrival time of the oldest record in the object, ms since the Unix epoch.
    pub time_ms: i64,
    /// Bytes that identify the batch (its source positions): the `<id>` and any random string
    /// derive from them.
    pub batch_id: &'a [u8],
    /// The object's compression (its extension).
    pub compression: Compression,
}

/// Checks a custom prefix (or, with `error_prefix`, an error output prefix) without evaluating it.
/// The keys it makes are checked with [`check_key`], for the longest name a delivery stream
/// can have: a prefix refused at delivery would hold its batch forever.
pub fn check_prefix(prefix: &str, error_prefix: bool) -> Result<(), PrefixError> {
    let evaluated = evaluate(prefix, 0, &[], error_prefix.then_some("processing-failed"))?;
    let longest = "x".repeat(64);
    let parts = NameParts {
        stream: &longest,
        version: u64::MAX,
        time_ms: 0,
        batch_id: &[],
        compression: Compression::HadoopSnappy,
    };
    check_key(&(evaluated + &suffix(&parts)))
}

/// The key of a delivered object: the evaluated `prefix` (default `YYYY/MM/dd/HH/`) and the
/// Firehose suffix.
pub fn object_key(prefix: Option<&str>, parts: &NameParts<'_>) -> Result<String, PrefixError> {
    let prefix = match prefix {
        Some(p) => evaluate(p, parts.time_ms, parts.batch_id, None)?,
        None => default_prefix(parts.time_ms),
    };
    Ok(prefix + &suffix(parts))
}

/// The key of an object of records that failed with `error_type` (`processing-failed`, ...):
/// under the error output prefix, or by default under `<error_type>/YYYY/MM/dd/HH/`.
pub fn error_object_key(
    error_prefix: Option<&str>,
    error_type: &str,
    parts: &NameParts<'_>,
) -> Result<String, PrefixError> {
    let prefix = match error_prefix {
        Some(p) => evaluate(p, parts.time_ms, parts.batch_id, Some(error_type))?,
        None => format!("{error_type}/{}", default_prefix(parts.time_ms)),
    };
    Ok(prefix + &suffix(parts))
}

fn default_prefix(time_ms: i64) -> String {
    let ((year, month, day), (hour, _, _)) = civil_utc(time_ms);
    format!("{year:04}/{month:02}/{day:02}/{hour:02}/")
}

fn suffix(parts: &NameParts<'_>) -> String {
    let ((year, month, day), (hour, minute, second)) = civil_utc(parts.time_ms);
    let id = hex(&digest(b"id", parts.batch_id));
    format!(
        "{}-{}-{year:04}-{month:02}-{day:02}-{hour:02}-{minute:02}-{second:02}-{}-{}-{}-{}-{}{}",
        parts.stream,
        parts.version,
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32],
        parts.compression.extension()
    )
}

fn digest(purpose: &[u8], batch_id: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(purpose);
    h.update(batch_id);
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Evaluates the expressions of a prefix.
fn evaluate(
    prefix: &str,
    time_ms: i64,
    batch_id: &[u8],
    error_type: Option<&str>,
) -> Result<String, PrefixError> {
    let mut out = String::with_capacity(prefix.len() + 16);
    let mut rest = prefix;
    while let Some(start) = rest.find("!{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or(PrefixError::Unclosed(prefix.len() - rest.len() + start))?;
        let expression = &after[..end];
        match expression.split_once(':') {
            Some(("timestamp", pattern)) => out.push_str(&format_time(pattern, time_ms)?),
            Some(("firehose", "random-string")) => {
                let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let d = digest(b"random-string", batch_id);
                out.extend(
                    d.iter()
                        .take(RANDOM_STRING_LEN)
                        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()])),
                );
            }
            Some(("firehose", "error-output-type")) => match error_type {
                Some(t) => out.push_str(t),
                None => return Err(PrefixError::ErrorTypeOutsideErrorPrefix),
            },
            _ => return Err(PrefixError::Unsupported(expression.to_string())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Formats a UTC time with the subset of Java `DateTimeFormatter` patterns prefixes use.
fn format_time(pattern: &str, time_ms: i64) -> Result<String, PrefixError> {
    let ((year, month, day), (hour, minute, second)) = civil_utc(time_ms);
    let millis = time_ms.rem_euclid(1000);
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A quoted literal; '' is a quote.
            let close = chars[i + 1..].iter().position(|&q| q == '\'');
            match close {
                Some(0) => out.push('\''),
                Some(n) => out.extend(&chars[i + 1..i + 1 + n]),
                None => return Err(PrefixError::Pattern(pattern.to_string())),
            }
            i += close.map_or(chars.len(), |n| n + 2);
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let value = match c {
            'y' | 'u' if run == 2 => format!("{:02}", year.rem_euclid(100)),
            'y' | 'u' => format!("{year:0run$}"),
            'M' => format!("{month:0run$}"),
            'd' => format!("{day:0run$}"),
            'H' => format!("{hour:0run$}"),
            'm' => format!("{minute:0run$}"),
            's' => format!("{second:0run$}"),
            'S' if run <= 3 => format!("{millis:03}")[..run].to_string(),
            _ => {
                return Err(PrefixError::Pattern(
                    chars[i..i + run].iter().collect::<String>(),
                ))
            }
        };
        out.push_str(&value);
        i += run;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20.123Z
    const T: i64 = 1_700_000_000_123;

    fn parts(batch: &[u8]) -> NameParts<'_> {
        NameParts {
            stream: "orders-to-s3",
            version: 3,
            time_ms: T,
            batch_id: batch,
            compression: Compression::Gzip,
        }
    }

    #[test]
    fn default_names_follow_firehose() {
        let key = object_key(None, &parts(b"shard-0:100-199")).unwrap();
        let (prefix, name) = key.split_at("2023/11/14/22/".len());
        assert_eq!(prefix, "2023/11/14/22/");
        assert!(
            name.starts_with("orders-to-s3-3-2023-11-14-22-13-20-"),
            "{name}"
        );
        assert!(name.ends_with(".gz"));
        let id = &name["orders-to-s3-3-2023-11-14-22-13-20-".len()..name.len() - 3];
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        // The same batch, the same name; another batch, another id.
        assert_eq!(key, object_key(None, &parts(b"shard-0:100-199")).unwrap());
        assert_ne!(key, object_key(None, &parts(b"shard-0:200-299")).unwrap());
    }

    #[test]
    fn custom_prefixes_evaluate_timestamps_and_random_strings() {
        let p = parts(b"b");
        let key = object_key(
            Some("dt=!{timestamp:yyyy'-'MM'-'dd}/h=!{timestamp:HH}/!{firehose:random-string}/"),
            &p,
        )
        .unwrap();
        let segments: Vec<&str> = key.split('/').collect();
        assert_eq!(segments[0], "dt=2023-11-14");
        assert_eq!(segments[1], "h=22");
        assert_eq!(segments[2].len(), 11);
        assert!(segments[2]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn timestamp_patterns() {
        assert_eq!(
            format_time("yyyy-MM-dd HH:mm:ss.SSS", T).unwrap(),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(format_time("yy/M/d", T).unwrap(), "23/11/14");
        assert_eq!(format_time("'year='yyyy/''", T).unwrap(), "year=2023/'");
        assert!(format_time("EEE", T).is_err());
        assert!(format_time("'open", T).is_err());
    }

    #[test]
    fn error_prefixes() {
        let p = parts(b"b");
        let key = error_object_key(
            Some("failed/!{firehose:error-output-type}/!{timestamp:yyyy}/"),
            "processing-failed",
            &p,
        )
        .unwrap();
        assert!(
            key.starts_with("failed/processing-failed/2023/orders-to-s3-3-"),
            "{key}"
        );
        let key = error_object_key(None, "processing-failed", &p).unwrap();
        assert!(key.starts_with("processing-failed/2023/11/14/22/"), "{key}");
        assert_eq!(
            check_prefix("x/!{firehose:error-output-type}/", false),
            Err(PrefixError::ErrorTypeOutsideErrorPrefix)
        );
        check_prefix("x/!{firehose:error-output-type}/", true).unwrap();
        assert_eq!(
            check_prefix("!{partitionKeyFromQuery:id}/", false),
            Err(PrefixError::Unsupported("partitionKeyFromQuery:id".into()))
        );
        assert_eq!(
            check_prefix("a/!{timestamp:yyyy", false),
            Err(PrefixError::Unclosed(2))
        );
    }
}
