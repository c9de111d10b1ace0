//! Where a shard's log starts: `log-start.json` in its directory records the lowest offset the
//! shard may hold. Retention raises it before deleting segments, and repair when it accepts
//! lost leading records; a shard whose oldest segment begins above it lost records that
//! nothing deleted on purpose (`verify` reports it).
//!
//! Format: `{"format_version": 1, "log_start": N}`, replaced atomically.

use std::path::Path;

use crate::error::Result;
use crate::io;
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
    let Some(start) = io::read_json::<LogStart>(&path)? else {
        return Ok(Offset::new(0));
    };
    io::check_version(
        &path,
        start.format_version,
        LOG_START_VERSION,
        LOG_START_VERSION,
    )?;
    Ok(Offset::new(start.log_start))
}

/// Records `start`. With `sync`, durably ([`io::write_atomically`]); without (a shard under
/// `FlushPolicy::Never`, which syncs nothing else either), the directory is not synced: a power
/// cut may lose the new name, and the next open records the start again. The file's bytes are
/// synced before the rename either way: a cut leaves the old file or the new one, never an
/// empty one (which an open cannot read: found by the LazyFS power-cut test under `Never`).
pub(crate) fn write_log_start(dir: &Path, start: Offset, sync: bool) -> Result<()> {
    let record = LogStart {
        format_version: LOG_START_VERSION,
        log_start: start.get(),
    };
    let bytes = io::encode_json(dir, LOG_START_FILE, &record)?;
    if sync {
        io::write_atomically(dir, LOG_START_FILE, &bytes)
    } else {
        io::write_atomically_unsynced_dir(dir, LOG_START_FILE, &bytes)
    }
}
