//! `shardlog repair`: shows, and with `--apply` makes, the safe repairs of damaged shards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::target::{self, Target};
use super::{CliError, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::lock::{DirLock, LOCK_FILE_NAME};
use crate::repair::{apply_repair, plan_repair};

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

pub(super) fn run(path: &Path, apply: bool, out: &mut impl Write) -> CliResult<ExitCode> {
    let shards: Vec<PathBuf> = match target::resolve(path)? {
        Target::Data(dir) => {
            let mut all = Vec::new();
            for stream in target::stream_dirs(&dir)? {
                all.extend(target::shard_dirs_on_disk(&stream)?);
            }
            all
        }
        Target::Stream(dir) => target::shard_dirs_on_disk(&dir)?,
        Target::Shard { dir, .. } => vec![dir],
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
        let plan = if apply {
            apply_repair(shard, SystemClock.now_ms())?
        } else {
            plan_repair(shard)?
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
