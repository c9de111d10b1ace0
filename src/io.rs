//! The store's small durable files: replacing a file atomically (temporary file, fsync, rename,
//! directory fsync), appending durably to a log, syncing a directory, and the JSON read/write
//! pair behind every versioned JSON file the store keeps (stream manifests, `settings.json`,
//! consumer-group files, delivery configs and checkpoints, `log-start.json`). Every write,
//! sync and rename here goes through `faults`, so the fault plan can cut them. Segment and
//! index files have their own byte layouts (`format`) and write path (`faults`, `mmap`).
//!
//! A replaced file holds either its old or its new bytes after a power cut, never a mix and never
//! nothing: its bytes are fsynced before the rename, since a rename may reach the disk before the
//! data it names (a LazyFS power cut found `log-start.json` empty when that was skipped).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::faults;

/// Makes a directory's entries (new, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    faults::sync_dir(dir).map_err(Error::io_at("sync directory", dir))
}

/// Creates `dir` and any missing parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    faults::create_dir_all(dir).map_err(Error::io_at("create directory", dir))
}

/// Renames the file or directory `from` to `to` (replacing a file, or an empty directory, there);
/// `op` says what for, in the error. Not durable until the directory is synced.
pub(crate) fn rename(op: &'static str, from: &Path, to: &Path) -> Result<()> {
    faults::rename(from, to).map_err(Error::io_at(op, from))
}

/// Removes the file at `path`; `Ok(false)` if there was none.
pub(crate) fn remove_file(op: &'static str, path: &Path) -> Result<bool> {
    match faults::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(op, path, e)),
    }
}

/// Removes `dir` and everything under it (nothing to do if it is gone); `op` says what for, in
/// the error. A crash partway leaves some of it: callers remove only directories that are
/// already out of sight (renamed to a trash name, or no longer listed in a manifest).
pub(crate) fn remove_dir_all(op: &'static str, dir: &Path) -> Result<()> {
    match faults::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(op, dir, e)),
    }
}

/// How far [`replace_file`] makes a replacement durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Bytes and name: after a power cut the file holds the new bytes.
    Durable,
    /// Bytes only: a power cut may bring back the old file (or none), never an empty one. For
    /// files under `FlushPolicy::Never`, which syncs nothing else either.
    BytesOnly,
    /// As `Durable`, then the file's pages are dropped from the page cache (write-once output).
    DurableUncached,
}

/// Replaces `dir/name` with `bytes`: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace_file(dir, name, bytes, Replace::Durable)
}

/// Replaces `dir/name` with `bytes` without syncing the directory: a power cut keeps the old file
/// or the new one whole.
pub(crate) fn write_atomically_unsynced_dir(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace_file(dir, name, bytes, Replace::BytesOnly)
}

/// [`write_atomically`] for write-once output nobody here reads back (delivered objects): once
/// durable, its pages are dropped from the page cache, so output does not crowd out the segments
/// readers need and the next object reuses warm pages.
#[cfg(feature = "firehose")]
pub(crate) fn write_atomically_uncached(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace_file(dir, name, bytes, Replace::DurableUncached)
}

fn replace_file(dir: &Path, name: &str, bytes: &[u8], how: Replace) -> Result<()> {
    let path = dir.join(name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(Error::io_at("create temporary file", dir))?;
    faults::write_all_at(tmp.as_file(), tmp.path(), bytes, 0)
        .and_then(|()| faults::sync_data(tmp.as_file(), tmp.path()))
        .map_err(Error::io_at("write temporary file", tmp.path()))?;
    if how == Replace::DurableUncached {
        // Advice only: a failure changes nothing stored.
        let _ = rustix::fs::fadvise(tmp.as_file(), 0, None, rustix::fs::Advice::DontNeed);
    }
    // Renamed by hand rather than `persist`, so the rename is a fault-injection seam too; the
    // temporary file's handle is closed first and its name given up, so nothing deletes it later.
    let tmp_path = tmp.into_temp_path();
    faults::rename(&tmp_path, &path).map_err(Error::io_at("replace", &path))?;
    // The name is gone (renamed): nothing for the handle to delete.
    let _ = tmp_path.keep();
    if how != Replace::BytesOnly {
        sync_dir(dir)?;
        faults::replaced_durably(&path);
    }
    Ok(())
}

/// Appends `line` (one record ending in `\n`) to the line log at `path` (created if missing) and
/// makes it durable: fdatasync of the file, and of its directory when the file is new. For
/// append-only logs of whole, individually checksummed lines (the topology log), whose reader
/// drops a torn last line. A last line that has no `\n` or that `is_valid` refuses is such a torn
/// end (of an append that failed, or that a crash cut; never acknowledged) and is cut first:
/// written after it, the new line would read as part of the torn record and be dropped with it.
pub(crate) fn append_line_durably(
    path: &Path,
    line: &[u8],
    is_valid: impl Fn(&[u8]) -> bool,
) -> Result<()> {
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(Error::io_at("open", path))?;
    let len = file
        .metadata()
        .map_err(Error::io_at("read the length of", path))?
        .len();
    let end = end_of_valid_lines(&file, len, &is_valid).map_err(Error::io_at("read", path))?;
    if end < len {
        faults::set_len(&file, path, end).map_err(Error::io_at("cut the torn end of", path))?;
    }
    faults::write_all_at(&file, path, line, end)
        .and_then(|()| faults::sync_data(&file, path))
        .map_err(Error::io_at("append to", path))?;
    match path.parent() {
        Some(dir) if !existed => sync_dir(dir),
        _ => Ok(()),
    }
}

/// The length of a `len`-byte line log without a torn last line: `len` if its last line ends in
/// `\n` and `is_valid` takes it (without the `\n`), else where that line starts. Reads the file
/// backwards from its end only as far as the start of its last line.
fn end_of_valid_lines(
    file: &std::fs::File,
    len: u64,
    is_valid: &dyn Fn(&[u8]) -> bool,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let judge = |last: &[u8], line_start: u64| match last.split_last() {
        Some((b'\n', record)) if is_valid(record) => len,
        _ => line_start,
    };
    // `tail` holds the bytes from `start` to the end.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let before_last_byte = &tail[..tail.len().saturating_sub(1)];
        if let Some(p) = before_last_byte.iter().rposition(|&b| b == b'\n') {
            return Ok(judge(&tail[p + 1..], start + p as u64 + 1));
        }
        if start == 0 {
            return Ok(judge(&tail, 0));
        }
        // Doubling reads: a long last line costs linear time.
        let step = (tail.len() as u64).max(64 * 1024);
        let from = start.saturating_sub(step);
        let mut chunk = vec![0; (start - from) as usize];
        file.read_exact_at(&mut chunk, from)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        start = from;
    }
}

/// Parses `bytes`, the contents of the JSON file at `path`; malformed JSON is
/// [`Error::Corrupt`] at the byte where it went wrong.
pub(crate) fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let position = byte_position(bytes, e.line(), e.column());
        Error::corrupt(
            path,
            position,
            format!("line {} column {}: {e}", e.line(), e.column()),
        )
    })
}

/// Reads and parses the JSON file at `path`; `Ok(None)` if there is none.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => parse_json(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// `Ok` if the file at `path` has a version this build reads (`oldest..=current`), else
/// [`Error::UnsupportedVersion`].
pub(crate) fn check_version(path: &Path, found: u16, oldest: u16, current: u16) -> Result<()> {
    if (oldest..=current).contains(&found) {
        return Ok(());
    }
    Err(Error::UnsupportedVersion {
        path: path.to_path_buf(),
        found,
        supported: current,
    })
}

/// Writes `value` as pretty-printed JSON to `dir/name`, atomically and durably
/// ([`write_atomically`]).
pub(crate) fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    write_atomically(dir, name, &encode_json(dir, name, value)?)
}

/// `value` as pretty-printed JSON, or an error naming the file it was meant for.
pub(crate) fn encode_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| Error::io("encode", &dir.join(name), std::io::Error::other(e)))
}

/// The byte offset of 1-based `line` and `column` (serde_json's error position; its column
/// counts bytes) in `bytes`, clamped to the end.
fn byte_position(bytes: &[u8], line: usize, column: usize) -> u64 {
    let line_start = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(<[u8]>::len)
        .sum::<usize>();
    (line_start + column.saturating_sub(1)).min(bytes.len()) as u64
}

/// Reads a log of checked JSON lines (`CRC32-HEX JSON\n`, the CRC32 in 8 lowercase hex digits
/// over the JSON bytes); none if there is no file. A last line that is incomplete or fails its
/// CRC is the torn end of a crash (its change was never acknowledged) and is ignored; one before
/// it is damage (`Corrupt`, naming `what`).
pub(crate) fn read_checked_lines<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Vec<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            break; // the last record, torn by a crash: never acknowledged
        };
        match parse_checked_line(&rest[..end]) {
            Some(record) => records.push(record),
            None if pos + end + 1 == bytes.len() => break, // torn too
            None => {
                return Err(Error::corrupt(
                    path,
                    pos as u64,
                    format!("a damaged {what} before the last one"),
                ))
            }
        }
        pos += end + 1;
    }
    Ok(records)
}

/// One line of a checked log: `CRC32-HEX JSON`, checked and parsed.
pub(crate) fn parse_checked_line<T: DeserializeOwned>(line: &[u8]) -> Option<T> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Appends `record` to a log of checked JSON lines (see [`read_checked_lines`]) and makes it
/// durable.
pub(crate) fn append_checked_line<T: Serialize + DeserializeOwned>(
    path: &Path,
    record: &T,
) -> Result<()> {
    let line = encode_checked_line(path, record)?;
    append_line_durably(path, &line, |line| parse_checked_line::<T>(line).is_some())
}

/// `record` as one line of a checked log, `\n` included.
pub(crate) fn encode_checked_line<T: Serialize>(path: &Path, record: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(record)
        .map_err(|e| Error::io("encode a record of", path, std::io::Error::other(e)))?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_found_however_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let valid = |line: &[u8]| line.first() == Some(&b'+');
        let long = |n: usize| {
            let mut line = vec![b'+'; n];
            line.push(b'\n');
            line
        };
        for body in [0, 10, 200_000] {
            // Whole lines stay; a torn or refused last line of any length goes.
            let head = [long(body), long(5)].concat();
            for torn in [
                &b""[..],
                b"+no newline",
                b"-refused\n",
                &long(300_000)[..300_000],
            ] {
                std::fs::write(&path, [&head[..], torn].concat()).unwrap();
                let file = std::fs::File::open(&path).unwrap();
                let len = file.metadata().unwrap().len();
                let end = end_of_valid_lines(&file, len, &valid).unwrap();
                assert_eq!(end, head.len() as u64, "body {body}, torn {}", torn.len());
            }
        }
        std::fs::write(&path, b"-only a bad line\n").unwrap();
        append_line_durably(&path, b"+new\n", valid).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"+new\n");
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
    struct Sample {
        format_version: u16,
        name: String,
    }

    #[test]
    fn json_round_trips_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert_eq!(read_json::<Sample>(&path).unwrap(), None);
        let sample = Sample {
            format_version: 1,
            name: "x".into(),
        };
        write_json(dir.path(), "s.json", &sample).unwrap();
        assert_eq!(read_json::<Sample>(&path).unwrap(), Some(sample));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["s.json"], "no temporary file is left behind");
    }

    #[test]
    fn a_json_error_names_the_byte_where_it_went_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        // Line 3, column 13: the unquoted value.
        let bytes = b"{\n  \"format_version\": 1,\n  \"name\": oops\n}\n";
        std::fs::write(&path, bytes).unwrap();
        match read_json::<Sample>(&path) {
            Err(Error::Corrupt {
                position, reason, ..
            }) => {
                let at = bytes.windows(4).position(|w| w == b"oops").unwrap() as u64;
                assert_eq!(position, at, "{reason}");
                assert!(reason.contains("line 3"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn versions_outside_the_readable_range_are_refused() {
        let path = Path::new("x.json");
        assert!(check_version(path, 2, 1, 2).is_ok());
        assert!(matches!(
            check_version(path, 3, 1, 2),
            Err(Error::UnsupportedVersion {
                found: 3,
                supported: 2,
                ..
            })
        ));
        assert!(check_version(path, 0, 1, 2).is_err());
    }
}
