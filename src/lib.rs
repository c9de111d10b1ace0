//! shardlog: a persistent, embeddable log storage engine with the semantics of Amazon Kinesis
//! Data Streams and Kinesis Data Firehose.
//!
//! The foundation is the [`Shard`]: a directory of memory-mapped, append-only segment files with
//! sparse offset and time indexes, crash recovery, and per-shard flush policies.
//!
//! ```
//! use shardlog::{NewRecord, Offset, ReadLimits, Shard, ShardOptions};
//!
//! # fn main() -> shardlog::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let shard = Shard::open(dir.path(), ShardOptions::default())?;
//! let appended = shard.append(&[NewRecord::new(b"user-1", b"hello")])?;
//! assert_eq!(appended.first, Offset::new(0));
//! // Owned, zero-copy views of the mapped segment...
//! let batch = shard.read(Offset::new(0), ReadLimits::default())?;
//! assert_eq!(&batch.records[0].data[..], b"hello");
//! // ...or records lent one at a time, for a consumer that does not keep them.
//! let mut bytes = 0;
//! let next = shard.visit(Offset::new(0), ReadLimits::default(), |r| bytes += r.data.len())?;
//! assert_eq!((bytes, next), (5, Offset::new(1)));
//! # Ok(())
//! # }
//! ```
//!
//! On top of shards, a [`Store`] holds [`Stream`]s with the semantics of Kinesis Data Streams:
//! MD5 hash-key routing, sequence numbers, shard iterators, resharding and retention.
//!
//! Layers, bottom up (a module only uses the ones above it in this list): the shard log in
//! [`log`] (bytes on disk, the memory maps, segments, shards, repair), then `hash_key`,
//! `sequence`, `iterator`, `manifest`, `stream`, `store`, and over them `consumer`, `firehose`,
//! `server` and `cli`. ARCHITECTURE.md describes them.
#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod consumer;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod faults;
#[cfg(not(feature = "failpoints"))]
mod faults;
#[cfg(feature = "firehose")]
pub mod firehose;
pub mod hash_key;
mod io;
mod iterator;
mod lane_md5;
pub mod log;
pub mod manifest;
pub mod names;
pub mod replica;
pub mod restore;
pub mod sequence;
#[cfg(feature = "server")]
pub mod server;
mod shutdown;
pub mod store;
pub mod stream;
pub mod throttle;
mod types;
#[cfg(any(feature = "cli", feature = "firehose"))]
mod utc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, RecordError, Result};
pub use hash_key::{HashKeyRange, ShardId};
pub use log::format::RecordRef;
pub use log::remote::{
    Bucket, DirBucket, ShardTier, Tier, TierConfig, TierOptions, TierPolicy, TierWork,
};
pub use log::shard::{Deleted, FlushPolicy, Shard, ShardOptions, TierReport, TierStatus};
pub use manifest::{ConsumerEntry, StreamMode, StreamTiering};
pub use sequence::SequenceNumber;
pub use store::{RetentionReport, Store, StoreOptions, StoreTierStatus, StreamConfig};
pub use stream::{
    ChildShard, GetRecordsOutput, ListShards, PageEnd, Put, PutFailure, PutFailureReason,
    PutRecord, ReadEnd, ShardDescription, ShardFilter, ShardPage, ShardRead, Start, Stream,
    StreamDescription, StreamRecord, StreamRecordRef,
};
pub use types::{Appended, NewRecord, Offset, ReadBatch, ReadLimits, Record};

/// The README's code blocks, compiled as doctests so they cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

// The handles documented as `Send + Sync` are: a change that broke it would not compile.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Store>();
    shared::<Stream>();
    shared::<Shard>();
    shared::<consumer::ConsumerGroup>();
    #[cfg(feature = "firehose")]
    shared::<firehose::DeliveryStream>();
    #[cfg(feature = "firehose")]
    shared::<firehose::Firehose>();
};
