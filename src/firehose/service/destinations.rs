//! Where a delivery stream's objects go, as `delivery.json` stores it, and the destination it
//! opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::firehose::destination::{Destination, LocalDirectory, S3Config};

/// Where a delivery stream's objects go, as stored in `delivery.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DestinationConfig {
    /// Files under a local directory.
    LocalDirectory {
        /// The root directory.
        path: PathBuf,
    },
    /// An S3 bucket (needs the `s3` feature to deliver).
    S3(S3Config),
    /// A bucket of the object store the delivery service runs with
    /// ([`FirehoseOptions::buckets`](super::FirehoseOptions::buckets)), resolved each time the delivery stream opens: a data
    /// directory that is moved, or a server started with another object store, delivers where
    /// it is configured now. What `shardlog serve` creates.
    Bucket {
        /// The bucket's name (an S3 bucket name: no `/`, never `.` or `..`).
        bucket: String,
    },
}

/// Where the buckets that [`DestinationConfig::Bucket`] names live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Buckets {
    /// `DATA_DIR/objects/BUCKET/` of the store's data directory (the default).
    #[default]
    InDataDir,
    /// `ROOT/BUCKET/`.
    Directory(PathBuf),
    /// An S3 API (AWS, or an S3-compatible server at `endpoint`); credentials come from the
    /// usual `AWS_*` environment variables. Needs the `s3` feature.
    S3 {
        /// An endpoint other than AWS's.
        endpoint: Option<String>,
        /// The buckets' region.
        region: String,
    },
}

/// Directory of [`Buckets::InDataDir`] in a data directory.
pub const OBJECTS_DIR: &str = "objects";

/// Checks a bucket name: 1 to 255 of `[a-zA-Z0-9_.-]` (what a BucketARN's pattern allows),
/// never `.` or `..`, so that it is one plain path component under a directory of buckets.
pub fn check_bucket_name(bucket: &str) -> Result<()> {
    if crate::names::is_resource_name(bucket, 255) && !matches!(bucket, "." | "..") {
        Ok(())
    } else {
        Err(Error::invalid(
            "BucketARN",
            format!("{bucket:?} is not a bucket name: 1 to 255 of [a-zA-Z0-9_.-], not . or .."),
        ))
    }
}

impl DestinationConfig {
    /// The destination, with buckets resolved by `buckets` (`data_dir` for
    /// [`Buckets::InDataDir`]).
    pub(super) fn open(&self, buckets: &Buckets, data_dir: &Path) -> Result<Arc<dyn Destination>> {
        match self {
            DestinationConfig::LocalDirectory { path } => Ok(Arc::new(LocalDirectory::new(path))),
            DestinationConfig::Bucket { bucket } => {
                check_bucket_name(bucket)?;
                match buckets {
                    Buckets::InDataDir => Ok(Arc::new(LocalDirectory::new(
                        data_dir.join(OBJECTS_DIR).join(bucket),
                    ))),
                    Buckets::Directory(root) => {
                        Ok(Arc::new(LocalDirectory::new(root.join(bucket))))
                    }
                    Buckets::S3 { endpoint, region } => DestinationConfig::S3(S3Config {
                        bucket: bucket.clone(),
                        region: region.clone(),
                        endpoint: endpoint.clone(),
                        access_key_id: None,
                        secret_access_key: None,
                    })
                    .open(buckets, data_dir),
                }
            }
            #[cfg(feature = "s3")]
            DestinationConfig::S3(config) => {
                Ok(Arc::new(crate::firehose::destination::S3::new(config)?))
            }
            #[cfg(not(feature = "s3"))]
            DestinationConfig::S3(_) => Err(Error::invalid(
                "S3DestinationConfiguration",
                "this build of shardlog has no S3 support (feature `s3`)",
            )),
        }
    }

    /// Where it points, for people: a directory or `s3://bucket`.
    pub fn describe(&self) -> String {
        match self {
            DestinationConfig::LocalDirectory { path } => path.display().to_string(),
            DestinationConfig::S3(c) => format!("s3://{}", c.bucket),
            DestinationConfig::Bucket { bucket } => format!("bucket {bucket}"),
        }
    }
}
