//! The integration tests that need no process of their own, as one binary (one link instead of
//! one per file): a module per subject. Tests that re-run their binary as a child to SIGKILL it
//! (crash, consumer, store_crash, stream_crash, firehose_crash, remote_workers), that change
//! process-wide limits (server_limits) or mount LazyFS (power_loss) stay binaries of their own.

// The fuzz bodies (fuzz/src) each include the fuzz input reader as a module of their own, as the
// fuzz crate's targets need; here two of them share one crate.
#![allow(clippy::duplicate_mod)]

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod damage_recovery;
mod damaged_files;
mod disk_full;
mod firehose_codecs;
mod firehose_delivery;
mod firehose_s3;
mod firehose_service;
mod format_upgrade;
mod fuzz_corpus;
#[cfg(feature = "failpoints")]
mod fuzz_operations;
mod fuzz_remote;
#[cfg(feature = "failpoints")]
mod fuzz_store;
mod layers;
mod model;
mod names;
mod repair;
#[cfg(feature = "server")]
mod replica;
mod server;
mod server_semantics;
mod server_shard_ids;
mod shard;
mod stream;
mod stream_concurrency;
mod stream_model;
mod stream_read;
mod tier_range;
mod tier_s3;
mod tier_streams;
mod tier_wire;
mod tiering;
mod torn_tail;
mod validation;
mod verify;
mod wire_model;
mod wire_protocol;
