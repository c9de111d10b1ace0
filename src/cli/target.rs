//! What a path given to the tool is: a data directory, a stream, a shard or a segment file.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult};
use crate::hash_key::parse_shard_id;
use crate::log::format::{parse_file_name, INDEX_EXT, SEGMENT_EXT};
use crate::log::lock::LOCK_FILE_NAME;
use crate::manifest::{StreamManifest, MANIFEST_FILE};
use crate::Offset;

/// A shard directory that belongs to a stream.
#[derive(Debug, Clone)]
pub(super) struct StreamShard {
    /// The stream's directory.
    pub stream_dir: PathBuf,
    /// The shard's index (the high part of its sequence numbers).
    pub index: u32,
}

/// The thing a path names.
#[derive(Debug)]
pub(super) enum Target {
    /// A store's data directory (`streams/` inside).
    Data(PathBuf),
    /// A stream directory (`stream.json` inside).
    Stream(PathBuf),
    /// A shard directory, on its own or inside a stream.
    Shard {
        dir: PathBuf,
        stream: Option<StreamShard>,
    },
    /// One segment file of a shard directory.
    Segment {
        dir: PathBuf,
        base: Offset,
        stream: Option<StreamShard>,
    },
}

fn not_ours(path: &Path, reason: impl Into<String>) -> CliError {
    CliError::Path {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Works out what `path` is, or says clearly why it is not a shardlog path.
pub(super) fn resolve(path: &Path) -> CliResult<Target> {
    let meta = std::fs::metadata(path).map_err(|e| not_ours(path, e.to_string()))?;
    if meta.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        return match name.as_deref().and_then(parse_file_name) {
            Some((base, SEGMENT_EXT)) => {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                let stream = stream_of_shard(&dir);
                Ok(Target::Segment { dir, base, stream })
            }
            _ => Err(not_ours(
                path,
                "not a segment file (segment files are named like 00000000000000000000.seg)",
            )),
        };
    }
    if path.join("streams").is_dir() {
        return Ok(Target::Data(path.to_path_buf()));
    }
    if path.join(MANIFEST_FILE).is_file() {
        return Ok(Target::Stream(path.to_path_buf()));
    }
    let entries: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| not_ours(path, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let stream = stream_of_shard(path);
    let shard_files = entries.iter().any(|n| {
        n == LOCK_FILE_NAME || matches!(parse_file_name(n), Some((_, SEGMENT_EXT | INDEX_EXT)))
    });
    if shard_files || stream.is_some() {
        return Ok(Target::Shard {
            dir: path.to_path_buf(),
            stream,
        });
    }
    Err(not_ours(
        path,
        "not a shardlog data, stream or shard directory",
    ))
}

/// The stream a shard directory belongs to, if it sits at `<stream>/shards/shardId-…`.
fn stream_of_shard(dir: &Path) -> Option<StreamShard> {
    let index = parse_shard_id(&dir.file_name()?.to_string_lossy())?;
    let shards = dir.parent()?;
    if shards.file_name()? != "shards" {
        return None;
    }
    let stream_dir = shards.parent()?;
    stream_dir
        .join(MANIFEST_FILE)
        .is_file()
        .then(|| StreamShard {
            stream_dir: stream_dir.to_path_buf(),
            index,
        })
}

/// The subdirectories of `dir` whose names do not start with `.` (staging directories of a
/// create or delete in progress), sorted; `None` if `dir` does not exist.
fn visible_subdirs(dir: &Path) -> CliResult<Option<Vec<PathBuf>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(not_ours(dir, e.to_string())),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(Some(out))
}

/// The stream directories of a data directory, sorted.
pub(super) fn stream_dirs(data_dir: &Path) -> CliResult<Vec<PathBuf>> {
    let streams = data_dir.join("streams");
    visible_subdirs(&streams)?.ok_or_else(|| not_ours(&streams, "no streams directory"))
}

/// The shard directories present under a stream directory, sorted.
pub(super) fn shard_dirs_on_disk(stream_dir: &Path) -> CliResult<Vec<PathBuf>> {
    Ok(visible_subdirs(&stream_dir.join("shards"))?.unwrap_or_default())
}

/// A stream's manifest, or a clear error naming it.
pub(super) fn manifest(stream_dir: &Path) -> CliResult<StreamManifest> {
    Ok(StreamManifest::read(stream_dir)?)
}

/// The directory of shard `index` of a stream.
pub(super) fn shard_dir(stream_dir: &Path, index: u32) -> PathBuf {
    stream_dir
        .join("shards")
        .join(crate::hash_key::shard_id(index))
}

/// The delivery stream directories of a data directory, sorted (none if it has no `firehose/`).
#[cfg(feature = "firehose")]
pub(super) fn delivery_stream_dirs(data_dir: &Path) -> CliResult<Vec<PathBuf>> {
    Ok(visible_subdirs(&data_dir.join(crate::firehose::FIREHOSE_DIR))?.unwrap_or_default())
}

/// The consumer group files of a data directory: `groups/*.json`, then each delivery stream's
/// `source-group.json`.
pub(super) fn group_files(data_dir: &Path) -> CliResult<Vec<PathBuf>> {
    let mut paths = crate::consumer::group_file_paths(data_dir)?;
    #[cfg(feature = "firehose")]
    paths.extend(
        delivery_stream_dirs(data_dir)?
            .into_iter()
            .map(|d| d.join(crate::firehose::delivery::SOURCE_GROUP_FILE))
            .filter(|p| p.is_file()),
    );
    Ok(paths)
}

/// The buffer shard directories of a data directory's delivery streams (none without the
/// `firehose` feature, which owns their layout).
pub(super) fn delivery_buffer_dirs(data_dir: &Path) -> CliResult<Vec<PathBuf>> {
    #[cfg(feature = "firehose")]
    {
        Ok(delivery_stream_dirs(data_dir)?
            .into_iter()
            .map(|d| d.join(crate::firehose::delivery::BUFFER_DIR))
            .filter(|d| d.is_dir())
            .collect())
    }
    #[cfg(not(feature = "firehose"))]
    {
        let _ = data_dir;
        Ok(Vec::new())
    }
}
