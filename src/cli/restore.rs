//! `shardlog restore`: a data directory rebuilt from the bucket a store tiered into.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::{bucket, human_bytes, CliResult};
use crate::restore::{restore, RestoreOptions};

/// Restores from `from` (`s3://BUCKET/PREFIX` or a directory) into `data_dir`.
pub(super) fn run(
    from: &str,
    data_dir: &Path,
    s3_endpoint: Option<&str>,
    region: &str,
    out: &mut impl Write,
) -> CliResult<ExitCode> {
    let (bucket, prefix) = bucket::open(from, s3_endpoint, region)?;
    let started = std::time::Instant::now();
    let report = restore(
        bucket.as_ref(),
        data_dir,
        &RestoreOptions {
            prefix,
            ..RestoreOptions::default()
        },
    )?;
    writeln!(
        out,
        "restored {} streams, {} shards, {} segments ({}) into {} in {:.1} s",
        report.streams,
        report.shards,
        report.segments,
        human_bytes(report.bytes),
        data_dir.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(ExitCode::SUCCESS)
}
