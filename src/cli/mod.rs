//! The `shardlog` command-line tool: looks inside data directories, streams, shards and segment
//! files without a running process, and repairs damaged shards.
//!
//! `inspect`, `dump` and `verify` open everything read-only: they take no writer lock and never
//! change a byte, so they can run beside a writer (they see a consistent prefix). `repair` takes
//! the writer lock and changes files only with `--apply`.
//!
//! Exit codes: 0 clean / done, 1 problems found (or repairs needed), 2 the command could not run
//! (bad path, unknown stream, I/O error, locked).

mod bucket;
mod dump;
mod inspect;
mod repair;
mod restore;
#[cfg(feature = "server")]
mod serve;
mod target;
mod verify;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::Error;
use bucket::RemoteArgs;

/// Look inside shardlog data directories without a running process.
#[derive(Debug, Parser)]
#[command(name = "shardlog", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Summarize a data directory, stream, shard or segment file: streams, shards (hash-key
    /// range, open or closed, parents), segments (sequence numbers, arrival times, records,
    /// bytes, sealed or active, index entries), totals, and what retention deletes next.
    Inspect {
        /// A data directory, stream directory, shard directory or segment file.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print records, one per line: sequence number (offset for a shard outside a stream),
    /// arrival time (UTC), partition key, hash key, size, and the data.
    Dump {
        /// A data directory, stream directory, shard directory or segment file.
        path: PathBuf,
        /// Start at this sequence number (or, for a shard outside a stream, this offset).
        #[arg(long, conflicts_with = "at_time")]
        from: Option<String>,
        /// Start at the first record that arrived at or after this time: RFC 3339
        /// (2026-11-25T10:00:00Z) or milliseconds since the Unix epoch.
        #[arg(long)]
        at_time: Option<String>,
        /// Most records to print (per shard).
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Print whole payloads in this encoding instead of a preview.
        #[arg(long, value_enum)]
        data: Option<DataEncoding>,
    },
    /// Check every frame's CRC, every seal and index, segment continuity, and each stream's
    /// manifest against its shard directories. Exits 1 if anything is wrong.
    Verify {
        /// A data directory, stream directory, shard directory or segment file.
        path: PathBuf,
        /// Also download and check every remote segment of a tiered store's streams from the
        /// --remote bucket.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show the safe repairs a damaged shard needs (cut torn tails, rebuild indexes, rewrite
    /// damaged segments keeping every good record, drop half-written segments); make them with
    /// `--apply`. Refuses to run while a writer holds the directory's lock.
    Repair {
        /// A data directory, stream directory or shard directory.
        path: PathBuf,
        /// Make the repairs (without it nothing is changed).
        #[arg(long)]
        apply: bool,
        /// With --remote, a damaged `remote.log` takes its damaged lines from the bucket's
        /// copy (the bucket is only read).
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Rebuild a data directory from the bucket a store tiered its segments into: streams,
    /// topology history, and every uploaded segment (what was only local is not there).
    Restore {
        /// `s3://BUCKET/PREFIX` (the prefix given to --tier-prefix), or a directory used as
        /// the bucket (--tier-dir).
        #[arg(long)]
        from: String,
        /// An S3-compatible endpoint for an `s3://` location (MinIO, Ceph, …).
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// The bucket's region.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The data directory to create (it must not hold streams).
        data_dir: PathBuf,
    },
    /// Serve the Kinesis API (AWS JSON 1.1 over HTTP/1.1 and h2c) on a data directory, for AWS
    /// SDKs and the aws CLI. Stops cleanly on SIGTERM or ctrl-c.
    #[cfg(feature = "server")]
    Serve(Box<serve::ServeArgs>),
}

/// How `dump` prints whole payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DataEncoding {
    /// The bytes as they are.
    Raw,
    /// Standard base64.
    Base64,
    /// Lower-case hex.
    Hex,
}

/// Runs the tool with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = io::stdout().lock();
    let result = match cli.command {
        Command::Inspect { path, json } => inspect::run(&path, json, &mut out),
        Command::Dump {
            path,
            from,
            at_time,
            limit,
            json,
            data,
        } => {
            let options = dump::DumpOptions {
                from,
                at_time,
                limit,
                json,
                data,
            };
            dump::run(&path, &options, &mut out)
        }
        Command::Verify { path, remote } => remote
            .open()
            .and_then(|remote| verify::run(&path, remote, &mut out)),
        Command::Repair {
            path,
            apply,
            remote,
        } => remote
            .open()
            .and_then(|remote| repair::run(&path, apply, remote, &mut out)),
        Command::Restore {
            from,
            s3_endpoint,
            region,
            data_dir,
        } => restore::run(&from, &data_dir, s3_endpoint.as_deref(), &region, &mut out),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(&args),
    };
    let result = result.and_then(|code| out.flush().map(|()| code).map_err(CliError::Output));
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

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Engine(#[from] Error),
    #[error("{}: {reason}", path.display())]
    Path { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

type CliResult<T> = std::result::Result<T, CliError>;

/// Bytes as a short human size: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
