//! Naming an object store on the command line: `s3://BUCKET/PREFIX` (with `--s3-endpoint` for
//! S3-compatible servers; needs the `s3` feature) or a directory used as a bucket.

use std::path::PathBuf;
use std::sync::Arc;

use super::CliResult;
use crate::log::remote::{Bucket, DirBucket};

/// The bucket and key prefix `location` names.
pub(super) fn open(
    location: &str,
    s3_endpoint: Option<&str>,
    region: &str,
) -> CliResult<(Arc<dyn Bucket>, String)> {
    match location.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = match prefix {
                "" => String::new(),
                p if p.ends_with('/') => p.to_string(),
                p => format!("{p}/"),
            };
            Ok((s3_bucket(bucket, s3_endpoint, region)?, prefix))
        }
        None => Ok((
            Arc::new(DirBucket::new(PathBuf::from(location))?),
            String::new(),
        )),
    }
}

/// An S3 bucket (credentials from the AWS_* variables, as for the Firehose S3 destination).
#[cfg(feature = "s3")]
pub(super) fn s3_bucket(
    bucket: &str,
    endpoint: Option<&str>,
    region: &str,
) -> CliResult<Arc<dyn Bucket>> {
    Ok(Arc::new(crate::log::remote::S3Bucket::new(
        &crate::log::remote::S3BucketConfig {
            bucket: bucket.to_string(),
            region: Some(region.to_string()),
            endpoint: endpoint.map(str::to_string),
            ..Default::default()
        },
    )?))
}

#[cfg(not(feature = "s3"))]
pub(super) fn s3_bucket(
    _bucket: &str,
    _endpoint: Option<&str>,
    _region: &str,
) -> CliResult<Arc<dyn Bucket>> {
    Err(crate::Error::invalid(
        "bucket",
        "this build of shardlog has no S3 support (feature `s3`); name a directory instead",
    )
    .into())
}

/// A tiered store's bucket, for the offline tools (`verify --remote`, `repair --remote`).
#[derive(Debug, clap::Args)]
pub(super) struct RemoteArgs {
    /// The bucket a tiered store's segments went to: `s3://BUCKET/PREFIX` (as given to
    /// --tier-bucket and --tier-prefix) or the --tier-dir directory.
    #[arg(long)]
    remote: Option<String>,
    /// An S3-compatible endpoint for an `s3://` --remote.
    #[arg(long, requires = "remote")]
    s3_endpoint: Option<String>,
    /// The --remote bucket's region.
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

impl RemoteArgs {
    /// The bucket and key prefix, if --remote was given.
    pub(super) fn open(&self) -> CliResult<Option<(Arc<dyn Bucket>, String)>> {
        self.remote
            .as_deref()
            .map(|location| open(location, self.s3_endpoint.as_deref(), &self.region))
            .transpose()
    }
}
