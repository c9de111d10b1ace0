//! The shard log: the storage engine under the Kinesis layer. A [`Shard`](shard::Shard) is a
//! directory of memory-mapped, append-only segment files with sparse offset and time indexes.
//!
//! Layers, bottom up (a module only uses the ones above it): `format` (the bytes on disk, no
//! I/O), `mmap` (the crate's only `unsafe`), `index` (sparse index search and its sidecar file),
//! `segment` (one segment file: reading, scanning, verifying, writing), `log_start` (where a
//! shard's log starts), `repair` (salvaging a damaged shard directory), `shard` (a directory of
//! segments: append, read, retention, verify), and `lock` (a directory's writer lock). Nothing
//! here knows about streams, sequence numbers or the wire API.

#[doc(hidden)]
pub mod format;
mod index;
pub mod lock;
mod log_start;
mod mmap;
pub mod remote;
pub mod repair;
mod segment;
pub mod shard;
