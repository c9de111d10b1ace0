//! Firehose delivery: records buffered by size or time, optionally transformed, compressed and
//! written as objects with Firehose's names, exactly once.
//!
//! Built so far: the codecs ([`codec`]) and object naming ([`naming`]). The delivery engine
//! (buffer, checkpoint, destinations, workers) builds on them.

pub mod codec;
pub mod naming;

pub use codec::{Compression, ObjectEncoder};
