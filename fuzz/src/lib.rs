//! The fuzz targets' bodies. They live in `bodies.rs`, which the main crate's
//! `tests/fuzz_corpus.rs` also compiles, so `cargo test` runs them over the committed seeds.

include!("bodies.rs");
