//! Typed errors. Each variant names what a user needs to act: the file, the byte position, the
//! limit that was exceeded.

use std::io;
use std::path::{Path, PathBuf};

/// The result type of every fallible shardlog operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in shardlog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while working on a file or directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "sync", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The disk (or quota) is full; nothing of the failed operation became visible.
    #[error("disk full: {op} {}: {source}", path.display())]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file that could not grow.
        path: PathBuf,
        /// The cause (ENOSPC or EDQUOT).
        #[source]
        source: io::Error,
    },
    /// Another process (or another handle in this one) owns the directory for writing.
    #[error("{} is locked by another writer; only one process may open it for writing", path.display())]
    Locked {
        /// The locked directory.
        path: PathBuf,
    },
    /// Stored bytes fail their checks. Never returned as data.
    #[error("corrupt {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage within the file.
        position: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The file was written by a format version this build does not read.
    #[error("{} has format version {found}; this build reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// One record of an append is invalid; nothing of that append was written.
    #[error("record {index} of the append: {error}")]
    InvalidRecord {
        /// Position of the record in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        error: RecordError,
    },
    /// An argument or option is out of its allowed range or malformed (Kinesis
    /// InvalidArgumentException).
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The argument's or option's name.
        name: &'static str,
        /// The allowed range or the problem.
        reason: String,
    },
    /// A write was attempted on a read-only open.
    #[error("{} is open read-only", path.display())]
    ReadOnly {
        /// The shard directory.
        path: PathBuf,
    },
    /// The named stream or shard does not exist (Kinesis ResourceNotFoundException).
    #[error("{kind} {name} not found")]
    ResourceNotFound {
        /// "stream" or "shard".
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// An update named a version that is no longer current (Firehose
    /// ConcurrentModificationException).
    #[error("{kind} {name} is at version {current}, not {given}")]
    ConcurrentModification {
        /// "delivery stream".
        kind: &'static str,
        /// Its name.
        name: String,
        /// The version the caller named.
        given: u64,
        /// The current version.
        current: u64,
    },
    /// The resource exists already, or is in a state that forbids the operation (Kinesis
    /// ResourceInUseException).
    #[error("{kind} {name} is in use: {reason}")]
    ResourceInUse {
        /// "stream" or "shard".
        kind: &'static str,
        /// Its name or id.
        name: String,
        /// Why the operation cannot proceed.
        reason: String,
    },
    /// A limit of the store was reached (Kinesis LimitExceededException).
    #[error("limit exceeded: {reason}")]
    LimitExceeded {
        /// Which limit, and its value.
        reason: String,
    },
    /// A shard's optional throughput limit was reached (Kinesis
    /// ProvisionedThroughputExceededException). Retry later.
    #[error("rate exceeded for {shard} of stream {stream}: {limit}")]
    ProvisionedThroughputExceeded {
        /// The stream.
        stream: String,
        /// The shard id.
        shard: String,
        /// The limit that was reached.
        limit: String,
    },
    /// A shard iterator is too old, or its stream was deleted and created anew (Kinesis
    /// ExpiredIteratorException). Get a new iterator.
    #[error("shard iterator expired: {reason}")]
    ExpiredIterator {
        /// Why it is no longer valid.
        reason: String,
    },
    /// A list_shards paging token is too old (Kinesis ExpiredNextTokenException).
    #[error("next token expired: {reason}")]
    ExpiredNextToken {
        /// Why it is no longer valid.
        reason: String,
    },
    /// A consumer-group worker no longer holds the lease it acted under (it expired and another
    /// worker took the shard). Stop processing that shard; its new owner resumes after the last
    /// checkpoint.
    #[error("worker {worker} of group {group} no longer holds the lease of {shard}")]
    LeaseLost {
        /// The group.
        group: String,
        /// The worker.
        worker: String,
        /// The shard id.
        shard: String,
    },
    /// An earlier fsync failed; the shard refuses writes because the kernel may have dropped the
    /// unsynced data. Reopen it (recovery keeps exactly what reached the disk).
    #[error("{} refuses writes after a failed sync: {reason}", path.display())]
    Poisoned {
        /// The shard directory.
        path: PathBuf,
        /// The failure that poisoned it.
        reason: String,
    },
}

/// Why a single record cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The partition key is empty.
    #[error("partition key is empty")]
    EmptyPartitionKey,
    /// The partition key is longer than allowed.
    #[error("partition key is {len} bytes; the limit is {limit}")]
    PartitionKeyTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Data plus partition key exceed the configured maximum record size.
    #[error("record is {size} bytes (data + partition key); the limit is {limit}")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path, telling a full disk apart.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Error::DiskFull { op, path, source }
            }
            _ => Error::Io { op, path, source },
        }
    }

    /// A closure for `map_err` that wraps an I/O error with the operation and path.
    pub(crate) fn io_at<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::io(op, path, source)
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            position,
            reason: reason.into(),
        }
    }
}

/// A file found unreadable when its owner opened it (a stream's manifest, a delivery stream's
/// files, the store's settings): only what depends on it is unavailable, and every call that
/// needs it gets this, as [`Error::Corrupt`] naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    path: PathBuf,
    position: u64,
    reason: String,
}

impl Unreadable {
    /// From the error that opening `path` gave.
    pub(crate) fn new(path: &Path, error: &Error) -> Unreadable {
        match error {
            Error::Corrupt {
                path,
                position,
                reason,
            } => Unreadable {
                path: path.clone(),
                position: *position,
                reason: reason.clone(),
            },
            other => Unreadable {
                path: path.to_path_buf(),
                position: 0,
                reason: other.to_string(),
            },
        }
    }

    /// The error every call that needs the file answers.
    pub(crate) fn error(&self) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            position: self.position,
            reason: format!("{} (unavailable until repaired or deleted)", self.reason),
        }
    }
}

/// Resources (streams, delivery streams) found unreadable at open, by name: listed beside the
/// healthy ones, refused with their damage, removable.
#[derive(Debug, Default)]
pub(crate) struct UnreadableSet(std::sync::RwLock<std::collections::BTreeMap<String, Unreadable>>);

impl UnreadableSet {
    fn map(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<String, Unreadable>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `name` as unreadable.
    pub(crate) fn insert(&self, name: String, damage: Unreadable) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, damage);
    }

    /// The damage of `name`, if it is unreadable.
    pub(crate) fn get(&self, name: &str) -> Option<Unreadable> {
        self.map().get(name).cloned()
    }

    /// `name` is gone (deleted).
    pub(crate) fn remove(&self, name: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// `names` (the healthy ones) with the unreadable ones added, sorted.
    pub(crate) fn listed_with(&self, mut names: Vec<String>) -> Vec<String> {
        names.extend(self.map().keys().cloned());
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_its_own_variant_and_keeps_the_cause() {
        let e = Error::io(
            "grow",
            Path::new("/d/x.seg"),
            io::Error::from_raw_os_error(28),
        );
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("/d/x.seg"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn messages_name_file_position_and_limit() {
        let e = Error::corrupt(Path::new("/d/1.seg"), 4096, "CRC mismatch");
        assert_eq!(e.to_string(), "corrupt /d/1.seg at byte 4096: CRC mismatch");
        let e = Error::InvalidRecord {
            index: 3,
            error: RecordError::TooLarge {
                size: 2_000_000,
                limit: 1_048_576,
            },
        };
        assert!(e.to_string().contains("record 3"), "{e}");
        assert!(e.to_string().contains("1048576"), "{e}");
    }
}
