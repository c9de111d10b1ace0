//! Rebuilding a data directory from the bucket a store tiers into (`shardlog restore`): every
//! stream whose manifest is in the bucket, its topology history, and every uploaded segment of
//! every shard, so a store lost with its machine comes back elsewhere up to its last upload.
//!
//! The bucket's layout (see [`crate::log::remote`]): `PREFIX streams/NAME/CREATED_MS/` holds a
//! stream's `stream.json` and `topology.log`, and one folder per shard with its segments,
//! indexes and `remote.log`. Of a name created more than once, the newest incarnation is
//! restored. A shard's segments are those its `remote.log` copy lists, and any uploaded after
//! that copy was made; objects below the oldest listed segment are leftovers of retention and
//! are skipped. Downloads are checked against the length and CRC32 `remote.log` recorded.
//! The restored store does not claim its segments are remote (it has no `remote.log`): tiered
//! again, it uploads them again, to whatever bucket it is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::log::format::{parse_file_name, INDEX_EXT, SEGMENT_EXT};
use crate::log::lock::DirLock;
use crate::log::remote::{
    check_copy, fold_remote_records, Bucket, RemoteRecord, RemoteSegment, REMOTE_LOG_FILE,
};
use crate::manifest::{MANIFEST_FILE, TOPOLOGY_LOG_FILE};
use crate::types::Offset;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The prefix the store tiered under (`TierOptions::prefix`).
    pub prefix: String,
    /// Objects downloaded at once.
    pub parallel_downloads: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            prefix: String::new(),
            parallel_downloads: 8,
        }
    }
}

/// What a restore brought back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Streams restored.
    pub streams: usize,
    /// Shard directories restored.
    pub shards: usize,
    /// Segments downloaded.
    pub segments: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// One object to fetch into the data directory.
struct Download {
    key: String,
    path: PathBuf,
    /// What `remote.log` recorded of it (segments only).
    expected: Option<RemoteSegment>,
}

/// Restores the store tiered into `bucket` (under `options.prefix`) into `data_dir`, which
/// must not hold a store already.
pub fn restore(
    bucket: &dyn Bucket,
    data_dir: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let streams_dir = data_dir.join("streams");
    if std::fs::read_dir(&streams_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::invalid(
            "data directory",
            format!(
                "{} already holds streams; restore into a new directory",
                data_dir.display()
            ),
        ));
    }
    crate::io::create_dir_all(&streams_dir)?;
    let _lock = DirLock::acquire(data_dir)?;
    let root = format!("{}streams/", options.prefix);
    let mut report = RestoreReport::default();
    let mut downloads = Vec::new();
    for (name, (base_key, files)) in live_streams(bucket, &options.prefix)? {
        let stream_dir = streams_dir.join(&name);
        crate::io::create_dir_all(&stream_dir.join("shards"))?;
        for file in [MANIFEST_FILE, TOPOLOGY_LOG_FILE] {
            if files.iter().any(|f| f == file) {
                downloads.push(Download {
                    key: format!("{base_key}{file}"),
                    path: stream_dir.join(file),
                    expected: None,
                });
            }
        }
        for (shard, objects) in shard_objects(&files) {
            let shard_dir = stream_dir.join("shards").join(shard);
            crate::io::create_dir_all(&shard_dir)?;
            let shard_key = format!("{base_key}{shard}/");
            let recorded =
                read_remote_log_object(bucket, &format!("{shard_key}{REMOTE_LOG_FILE}"))?;
            let oldest = recorded.keys().next().copied().unwrap_or(Offset::new(0));
            for object in objects {
                let Some((base, ext)) = parse_file_name(object) else {
                    continue;
                };
                if base < oldest || (ext != SEGMENT_EXT && ext != INDEX_EXT) {
                    continue; // left behind by retention, or not a segment file
                }
                downloads.push(Download {
                    key: format!("{shard_key}{object}"),
                    path: shard_dir.join(object),
                    expected: (ext == SEGMENT_EXT)
                        .then(|| recorded.get(&base).copied())
                        .flatten(),
                });
                report.segments += usize::from(ext == SEGMENT_EXT);
            }
            report.shards += 1;
        }
        report.streams += 1;
    }
    if report.streams == 0 {
        // Most likely a wrong bucket or prefix: say so rather than make an empty store.
        return Err(Error::ResourceNotFound {
            kind: "tiered stream",
            name: bucket.url(&root),
        });
    }
    report.bytes = download_all(bucket, downloads, options.parallel_downloads.max(1))?;
    crate::io::sync_dir(&streams_dir)?;
    Ok(report)
}

/// The streams a bucket holds under `prefix`, by name as on disk: the newest incarnation of
/// each name that has a `stream.json` and no `DELETED` marker, as the key its objects start
/// with (`PREFIX streams/NAME/CREATED_MS/`) and their keys relative to it (`stream.json`,
/// `shardId-…/…`).
pub(crate) fn live_streams(
    bucket: &dyn Bucket,
    prefix: &str,
) -> Result<BTreeMap<String, (String, Vec<String>)>> {
    let root = format!("{prefix}streams/");
    let mut incarnations: BTreeMap<String, BTreeMap<i64, Vec<String>>> = BTreeMap::new();
    for (key, _) in bucket.list(&root)? {
        let Some(rest) = key.strip_prefix(&root) else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(name), Some(created), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(created) = created.parse::<i64>() else {
            continue;
        };
        incarnations
            .entry(name.to_string())
            .or_default()
            .entry(created)
            .or_default()
            .push(file.to_string());
    }
    Ok(incarnations
        .into_iter()
        .filter_map(|(name, by_created)| {
            let (created, files) = by_created.into_iter().rev().find(|(_, files)| {
                files.iter().any(|f| f == MANIFEST_FILE)
                    && !files.iter().any(|f| f == crate::store::DELETED_MARKER)
            })?;
            let key = format!("{root}{name}/{created}/");
            Some((name, (key, files)))
        })
        .collect())
}

/// A stream incarnation's objects by shard (`shardId-…` → the files in it).
pub(crate) fn shard_objects(files: &[String]) -> BTreeMap<&str, Vec<&str>> {
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for file in files {
        if let Some((shard, object)) = file.split_once('/') {
            shards.entry(shard).or_default().push(object);
        }
    }
    shards
}

/// A shard's `remote.log` object, folded into its live segments by base (none if missing).
fn read_remote_log_object(
    bucket: &dyn Bucket,
    key: &str,
) -> Result<BTreeMap<Offset, RemoteSegment>> {
    let Some(bytes) = bucket.get_bytes(key)? else {
        return Ok(BTreeMap::new());
    };
    // A torn or damaged line only costs the check of one download.
    Ok(fold_remote_records(
        bytes
            .split(|&b| b == b'\n')
            .filter_map(crate::io::parse_checked_line::<RemoteRecord>),
    ))
}

/// Downloads every object, `parallel` at a time, each into a temporary file renamed into place
/// once whole and checked; returns the bytes downloaded.
fn download_all(bucket: &dyn Bucket, downloads: Vec<Download>, parallel: usize) -> Result<u64> {
    let queue = Mutex::new(downloads);
    let total = Mutex::new(Ok(0u64));
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let Some(job) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    return;
                };
                let result = download(bucket, &job);
                let mut total = total.lock().unwrap_or_else(|e| e.into_inner());
                match (result, total.as_mut()) {
                    (Ok(n), Ok(sum)) => *sum += n,
                    (Err(e), Ok(_)) => {
                        *total = Err(e);
                        // The first failure ends the restore: the others stop taking jobs.
                        queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    }
                    (_, Err(_)) => {}
                }
            });
        }
    });
    total.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn download(bucket: &dyn Bucket, job: &Download) -> Result<u64> {
    let dir = job.path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".restore.")
        .tempfile_in(dir)
        .map_err(Error::io_at("create", dir))?;
    let got = bucket.get_to_file(&job.key, tmp.path())?;
    if let Some(expected) = &job.expected {
        check_copy(got, Path::new(&bucket.url(&job.key)), expected)?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(Error::io_at("sync", tmp.path()))?;
    tmp.persist(&job.path)
        .map_err(|e| Error::io("rename into place", &job.path, e.error))?;
    Ok(got.len)
}
