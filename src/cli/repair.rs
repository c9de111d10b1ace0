//! `shardlog repair`: shows, and with `--apply` makes, the safe repairs of damaged shards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::target::{self, Target};
use super::{CliError, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::hash_key::parse_shard_id;
use crate::log::lock::{DirLock, LOCK_FILE_NAME};
use crate::log::remote::{Bucket, REMOTE_LOG_FILE};
use crate::log::repair::{apply_repair, plan_repair, RepairInput};
use crate::manifest::StreamManifest;
use crate::Offset;

/// How far up from the given path a store's or shard's lock file is looked for
/// (shard → shards → stream → streams → data directory).
const LOCK_SEARCH_DEPTH: usize = 5;

/// Takes the writer lock of every directory from `path` up that has a lock file: the shard's
/// own, or its store's. Fails if a writer holds any of them.
fn lock_writers_out(path: &Path) -> CliResult<Vec<DirLock>> {
    let mut locks = Vec::new();
    let mut dir = Some(path);
    for _ in 0..LOCK_SEARCH_DEPTH {
        let Some(d) = dir else { break };
        if d.join(LOCK_FILE_NAME).is_file() {
            locks.push(DirLock::acquire(d).map_err(|e| match e {
                crate::Error::Locked { path } => CliError::Path {
                    path,
                    reason: "a writer holds this directory's lock; stop it before repairing".into(),
                },
                other => other.into(),
            })?);
        }
        dir = d.parent().filter(|p| !p.as_os_str().is_empty());
    }
    Ok(locks)
}

/// Where the stream's manifest closed shard `index`, if it did (and the manifest reads).
fn closed_at(stream_dir: &Path, index: u32) -> Option<Offset> {
    let manifest = StreamManifest::read(stream_dir).ok()?;
    let entry = manifest.shards.iter().find(|s| s.index == index)?;
    entry.closed.map(|c| Offset::new(c.end_offset))
}

/// A shard directory to repair.
struct ShardToRepair {
    dir: PathBuf,
    /// Where the stream's manifest closed it.
    closed: Option<Offset>,
    /// Its stream's directory (none for a Firehose buffer).
    stream_dir: Option<PathBuf>,
}

/// The shard directories of a stream, each with where the manifest closed it.
fn shards_of_stream(stream_dir: &Path) -> CliResult<Vec<ShardToRepair>> {
    Ok(target::shard_dirs_on_disk(stream_dir)?
        .into_iter()
        .map(|dir| {
            let index = dir
                .file_name()
                .and_then(|n| parse_shard_id(&n.to_string_lossy()));
            let closed = index.and_then(|i| closed_at(stream_dir, i));
            ShardToRepair {
                dir,
                closed,
                stream_dir: Some(stream_dir.to_path_buf()),
            }
        })
        .collect())
}

/// The bucket's copy of the shard's `remote.log`, fetched only when the local one is damaged.
fn remote_log_copy(
    remote: Option<&(Arc<dyn Bucket>, String)>,
    shard: &ShardToRepair,
) -> CliResult<Option<Vec<u8>>> {
    let (Some((bucket, prefix)), Some(stream_dir)) = (remote, &shard.stream_dir) else {
        return Ok(None);
    };
    if crate::log::remote::read_remote_log(&shard.dir).is_ok() {
        return Ok(None);
    }
    let created = target::manifest(stream_dir)?.created_ms;
    let (Some(stream_key), Some(name)) = (
        crate::stream::stream_tier_key(stream_dir, created),
        shard.dir.file_name().and_then(|n| n.to_str()),
    ) else {
        return Ok(None);
    };
    let key = format!("{prefix}{stream_key}/{name}/{REMOTE_LOG_FILE}");
    Ok(bucket.get_bytes(&key)?)
}

pub(super) fn run(
    path: &Path,
    apply: bool,
    remote: Option<(Arc<dyn Bucket>, String)>,
    out: &mut impl Write,
) -> CliResult<ExitCode> {
    let shards: Vec<ShardToRepair> = match target::resolve(path)? {
        Target::Data(dir) => {
            let mut all = Vec::new();
            for stream in target::stream_dirs(&dir)? {
                all.extend(shards_of_stream(&stream)?);
            }
            for buffer in target::delivery_buffer_dirs(&dir)? {
                all.push(ShardToRepair {
                    dir: buffer,
                    closed: None,
                    stream_dir: None,
                });
            }
            all
        }
        Target::Stream(dir) => shards_of_stream(&dir)?,
        Target::Shard { dir, stream } => {
            let closed = stream
                .as_ref()
                .and_then(|s| closed_at(&s.stream_dir, s.index));
            vec![ShardToRepair {
                dir,
                closed,
                stream_dir: stream.map(|s| s.stream_dir),
            }]
        }
        Target::Segment { dir, .. } => {
            return Err(CliError::Usage(format!(
                "repair works on whole shards: give the shard directory {}",
                dir.display()
            )))
        }
    };
    let _locks = lock_writers_out(path)?;
    let (mut repairs, mut lost) = (0, 0);
    for shard in &shards {
        let input = RepairInput {
            closed_at: shard.closed,
            remote_log_copy: remote_log_copy(remote.as_ref(), shard)?,
        };
        let plan = if apply {
            apply_repair(&shard.dir, &input, SystemClock.now_ms())?
        } else {
            plan_repair(&shard.dir, &input)?
        };
        for repair in &plan.repairs {
            writeln!(out, "{}{repair}", if apply { "repaired: " } else { "" })?;
        }
        repairs += plan.repairs.len();
        lost += plan.records_lost;
    }
    let lost_note = if lost > 0 {
        format!("; {lost} records are lost for good (damaged or missing)")
    } else {
        String::new()
    };
    match (repairs, apply) {
        (0, _) => {
            writeln!(
                out,
                "nothing to repair in {} shard directories",
                shards.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        (n, true) => {
            writeln!(out, "made {n} repairs{lost_note}")?;
            Ok(ExitCode::SUCCESS)
        }
        (n, false) => {
            writeln!(
                out,
                "{n} repairs needed{lost_note}; run again with --apply to make them"
            )?;
            Ok(ExitCode::from(1))
        }
    }
}
