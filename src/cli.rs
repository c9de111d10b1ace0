//! The `shardlog` command-line tool: offline looks at a data directory, a stream's shards or one
//! shard, built on the library's read-only functions. It never takes the writer lock and never
//! changes a byte, so it can run beside a writer (it sees a consistent prefix).
//!
//! Exit codes: 0 clean / done, 1 problems found, 2 the command could not run (bad path, I/O).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::shard::{verify, Problem, Shard, ShardOptions};
use crate::{Error, Offset, ReadLimits};

/// Look inside shardlog data directories without a running process.
#[derive(Debug, Parser)]
#[command(name = "shardlog", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check every frame's CRC, every seal and index, and segment continuity, in a data
    /// directory, a stream directory or a shard directory. Exits 1 if anything is wrong.
    Verify {
        /// The directory to check.
        path: PathBuf,
    },
    /// Print a shard's records, one per line: offset, arrival time (UTC), partition key, size,
    /// and a preview of the data.
    Dump {
        /// A shard directory.
        path: PathBuf,
        /// First offset to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most records to print.
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// Runs the tool with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = io::stdout().lock();
    let result = match cli.command {
        Command::Verify { path } => run_verify(&path, &mut out),
        Command::Dump { path, from, limit } => run_dump(&path, from, limit, &mut out),
    };
    match result {
        Ok(code) => code,
        // `shardlog dump ... | head` closes the pipe early: that is not an error.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardlog: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Engine(#[from] Error),
    #[error("{}: {reason}", path.display())]
    Path { path: PathBuf, reason: String },
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// The shard directories under `path`: itself if it holds segments, else every
/// `shards/shardId-*` below it (a stream directory, or a data directory's `streams/*`).
fn shard_dirs(path: &Path) -> Result<Vec<PathBuf>, CliError> {
    let not_ours = |reason: &str| CliError::Path {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| not_ours(&e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if entries
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "seg"))
    {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut dirs = Vec::new();
    let streams = if path.join("streams").is_dir() {
        list(&path.join("streams"))?
    } else {
        vec![path.to_path_buf()]
    };
    for stream in streams.iter().filter(|s| s.join("stream.json").is_file()) {
        for shard in list(&stream.join("shards"))? {
            dirs.push(shard);
        }
    }
    if dirs.is_empty() && !path.join("streams").is_dir() && !path.join("stream.json").is_file() {
        return Err(not_ours("not a shardlog data, stream or shard directory"));
    }
    dirs.sort();
    Ok(dirs)
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError::Path {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn run_verify(path: &Path, out: &mut impl Write) -> Result<ExitCode, CliError> {
    let mut problems: Vec<Problem> = Vec::new();
    let stream_dirs: Vec<PathBuf> = if path.join("streams").is_dir() {
        list(&path.join("streams"))?
    } else if path.join("stream.json").is_file() {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    };
    for stream in &stream_dirs {
        if let Err(e) = crate::manifest::StreamManifest::read(stream) {
            problems.push(Problem {
                path: stream.join(crate::manifest::MANIFEST_FILE),
                position: None,
                what: e.to_string(),
            });
        }
    }
    let shards = shard_dirs(path)?;
    for shard in &shards {
        problems.extend(verify(shard)?);
    }
    for p in &problems {
        writeln!(out, "{p}")?;
    }
    if problems.is_empty() {
        writeln!(out, "clean: {} shard directories checked", shards.len())?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{} problems in {} shard directories",
            problems.len(),
            shards.len()
        )?;
        Ok(ExitCode::from(1))
    }
}

fn run_dump(
    path: &Path,
    from: u64,
    limit: Option<u64>,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    let shard = Shard::open_read_only(path, ShardOptions::default())?;
    let mut cursor = Offset::new(from);
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let limits = ReadLimits {
            max_records: left.min(10_000) as usize,
            ..ReadLimits::default()
        };
        let batch = shard.read(cursor, limits)?;
        if batch.records.is_empty() {
            break;
        }
        for r in &batch.records {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                r.offset,
                rfc3339_utc(r.arrival_ms),
                String::from_utf8_lossy(&r.partition_key),
                r.data.len(),
                preview(&r.data)
            )?;
        }
        left -= batch.records.len() as u64;
        cursor = batch.next_offset;
    }
    Ok(ExitCode::SUCCESS)
}

/// Up to 40 characters of the data: as text if it is UTF-8, else hex.
fn preview(data: &[u8]) -> String {
    let head = &data[..data.len().min(40)];
    match std::str::from_utf8(head) {
        Ok(text) => text.escape_debug().to_string(),
        Err(_) => head.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn previews_show_text_or_hex() {
        assert_eq!(preview(b"hello\n"), "hello\\n");
        assert_eq!(preview(&[0xff, 0x00]), "ff00");
    }
}
