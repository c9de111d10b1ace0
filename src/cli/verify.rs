//! `shardlog verify`: every frame, seal and index, and each manifest against its shards.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use super::target::{self, Target};
use super::CliResult;
use crate::log::remote::{Bucket, ShardTier, Tier, TierOptions};
use crate::log::shard::{segment_bases, verify_remote, verify_segment, Problem};
use crate::Offset;

/// Directories smaller than this verify too fast to need a progress bar.
const PROGRESS_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// One segment to check: its shard directory, base offset and the next segment's base.
struct Job {
    dir: PathBuf,
    base: Offset,
    next: Option<Offset>,
    bytes: u64,
}

fn jobs_for_shard(dir: &Path, only: Option<Offset>) -> CliResult<Vec<Job>> {
    let bases = match segment_bases(dir) {
        Ok(bases) => bases,
        Err(crate::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && only.is_none() =>
        {
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    Ok(bases
        .iter()
        .enumerate()
        .filter(|(_, &b)| only.is_none_or(|o| o == b))
        .map(|(i, &base)| Job {
            dir: dir.to_path_buf(),
            base,
            next: bases.get(i + 1).copied(),
            bytes: std::fs::metadata(crate::log::shard::segment_file(dir, base))
                .map_or(0, |m| m.len()),
        })
        .collect())
}

/// Verifies `path`; with `remote` (a bucket and key prefix), also the remote copies of the
/// segments of its streams' tiered shards.
pub(super) fn run(
    path: &Path,
    remote: Option<(Arc<dyn Bucket>, String)>,
    out: &mut impl Write,
) -> CliResult<ExitCode> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut jobs = Vec::new();
    let mut shards = 0;
    let mut stream_dirs = Vec::new();
    let mut group_files = Vec::new();
    match target::resolve(path)? {
        Target::Data(dir) => {
            stream_dirs = target::stream_dirs(&dir)?;
            group_files = target::group_files(&dir)?;
            problems.extend(check_side_files(&dir)?);
            for buffer in target::delivery_buffer_dirs(&dir)? {
                shards += 1;
                problems.extend(crate::log::shard::verify_log_start(&buffer)?);
                jobs.extend(jobs_for_shard(&buffer, None)?);
            }
        }
        Target::Stream(dir) => stream_dirs.push(dir),
        Target::Shard { dir, .. } => {
            shards += 1;
            problems.extend(crate::log::shard::verify_log_start(&dir)?);
            jobs.extend(jobs_for_shard(&dir, None)?);
        }
        Target::Segment { dir, base, .. } => jobs.extend(jobs_for_shard(&dir, Some(base))?),
    }
    for stream in &stream_dirs {
        problems.extend(crate::stream::verify_layout(stream)?);
        for shard in target::shard_dirs_on_disk(stream)? {
            shards += 1;
            problems.extend(crate::log::shard::verify_log_start(&shard)?);
            jobs.extend(jobs_for_shard(&shard, None)?);
        }
    }

    for file in &group_files {
        problems.extend(check_group_file(file));
    }
    let mut remote_checked = 0;
    if let Some((bucket, prefix)) = remote {
        let scratch = tempfile::tempdir().map_err(crate::Error::io_at(
            "create",
            Path::new("temporary directory"),
        ))?;
        let tier = Arc::new(Tier::new(
            bucket,
            TierOptions {
                prefix,
                ..TierOptions::default()
            },
            scratch.path().join("cache"),
        )?);
        for stream in &stream_dirs {
            let created = target::manifest(stream)?.created_ms;
            let Some(key) = crate::stream::stream_tier_key(stream, created) else {
                continue;
            };
            for shard in target::shard_dirs_on_disk(stream)? {
                let Some(name) = shard.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let shard_tier = ShardTier::new(Arc::clone(&tier), format!("{key}/{name}"));
                remote_checked += crate::log::remote::read_remote_log(&shard)?.len();
                problems.extend(verify_remote(&shard, &shard_tier, scratch.path())?);
            }
        }
    }

    let total: u64 = jobs.iter().map(|j| j.bytes).sum();
    let progress = (std::io::stderr().is_terminal() && total >= PROGRESS_MIN_BYTES).then(|| {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "verifying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        ) {
            bar.set_style(style);
        }
        bar
    });
    for job in &jobs {
        problems.extend(verify_segment(&job.dir, job.base, job.next)?.problems);
        if let Some(bar) = &progress {
            bar.inc(job.bytes);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    for p in &problems {
        writeln!(out, "{p}")?;
    }
    let mut checked = format!(
        "{} segments ({}) in {shards} shard directories",
        jobs.len(),
        super::human_bytes(total)
    );
    if !group_files.is_empty() {
        checked.push_str(&format!(", {} consumer group files", group_files.len()));
    }
    if remote_checked > 0 {
        checked.push_str(&format!(", {remote_checked} remote segments"));
    }
    if problems.is_empty() {
        writeln!(out, "clean: {checked} checked")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "{} problems in {checked}", problems.len())?;
        Ok(ExitCode::from(1))
    }
}

/// The data directory's own files besides streams and groups: `settings.json`, `iterator.key`,
/// and each delivery stream's `delivery.json` and `checkpoint.json`. One that does not read is
/// a problem (the store keeps serving everything else, but not what depends on it).
fn check_side_files(data_dir: &Path) -> CliResult<Vec<Problem>> {
    let mut problems = Vec::new();
    if let Some(what) = crate::iterator::damaged_key_file(data_dir) {
        problems.push(Problem {
            path: data_dir.join(crate::iterator::ITERATOR_KEY_FILE),
            position: None,
            what,
        });
    }
    if let Err(e) = crate::store::read_settings(data_dir) {
        problems.push(problem_of(&data_dir.join(crate::store::SETTINGS_FILE), e));
    }
    #[cfg(feature = "firehose")]
    for dir in target::delivery_stream_dirs(data_dir)? {
        if let Err(e) = crate::firehose::read_delivery_stream(&dir) {
            problems.push(problem_of(
                &dir.join(crate::firehose::service::DELIVERY_FILE),
                e,
            ));
        }
    }
    Ok(problems)
}

/// A problem from the error reading a file (`fallback` names it unless the error does).
fn problem_of(fallback: &Path, e: crate::Error) -> Problem {
    match e {
        crate::Error::Corrupt {
            path,
            position,
            reason,
        } => Problem {
            path,
            position: Some(position),
            what: format!("does not parse: {reason}"),
        },
        other => Problem {
            path: fallback.to_path_buf(),
            position: None,
            what: other.to_string(),
        },
    }
}

/// A consumer group file that does not read (bad JSON, unknown version) is a problem; one
/// removed since it was listed is not.
fn check_group_file(path: &Path) -> Option<Problem> {
    match crate::consumer::read_group_file(path) {
        Ok(_) => None,
        // The reason names the line and column (JSON has no byte positions to speak of).
        Err(crate::Error::Corrupt { path, reason, .. }) => Some(Problem {
            path,
            position: None,
            what: format!("consumer group file does not parse: {reason}"),
        }),
        Err(e) => Some(Problem {
            path: path.to_path_buf(),
            position: None,
            what: e.to_string(),
        }),
    }
}
