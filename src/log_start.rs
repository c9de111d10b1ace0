//! Where a shard's log starts: `log-start.json` in its directory records the lowest offset the
//! shard may hold. Retention raises it before deleting segments, and repair when it accepts
//! lost leading records; a shard whose oldest segment begins above it lost records that
//! nothing deleted on purpose (`verify` reports it).
//!
//! Format: `{"format_version": 1, "log_start": N}`, replaced atomically.

use std::path::Path;

use crate::error::{Error, Result};
use crate::types::Offset;

/// A shard directory's record of where its log starts: the lowest offset it may hold, raised
/// by retention before it deletes segments (absent: 0).
pub const LOG_START_FILE: &str = "log-start.json";
const LOG_START_VERSION: u16 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct LogStart {
    format_version: u16,
    log_start: u64,
}

/// Where the log of the shard in `dir` starts, as recorded (0 if nothing was ever deleted).
pub fn read_log_start(dir: &Path) -> Result<Offset> {
    let path = dir.join(LOG_START_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Offset::new(0)),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let start: LogStart =
        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, 0, e.to_string()))?;
    if start.format_version != LOG_START_VERSION {
        return Err(Error::UnsupportedVersion {
            path,
            found: start.format_version,
            supported: LOG_START_VERSION,
        });
    }
    Ok(Offset::new(start.log_start))
}

/// Records `start`. With `sync`, durably (temporary file, fsync, rename, directory fsync);
/// without (a shard under `FlushPolicy::Never`, which syncs nothing else either), the directory
/// is not synced: a power cut may lose the new name, and the next open records the start again.
/// The file's bytes are synced before the rename either way: a rename can reach the disk before
/// the data it names, and a power cut then leaves an empty `log-start.json` that no open reads
/// (found by the LazyFS power-cut test under `Never`).
pub(crate) fn write_log_start(dir: &Path, start: Offset, sync: bool) -> Result<()> {
    let record = LogStart {
        format_version: LOG_START_VERSION,
        log_start: start.get(),
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| {
        Error::io(
            "encode",
            &dir.join(LOG_START_FILE),
            std::io::Error::other(e),
        )
    })?;
    if sync {
        return crate::segment::write_atomically(dir, LOG_START_FILE, &bytes);
    }
    let tmp = dir.join(format!(".{LOG_START_FILE}.tmp"));
    let path = dir.join(LOG_START_FILE);
    let written = write_synced(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(Error::io_at("replace", &path)));
    if written.is_err() {
        // Leave no half-written temporary file behind (repair would remove it too).
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates (or truncates) `path` with `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(Error::io_at("create", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(Error::io_at("write", path))
}
