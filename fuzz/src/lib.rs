//! The fuzz targets' bodies. They live in `bodies.rs` and `operations.rs`, which the main crate's
//! `tests/suite/fuzz_corpus.rs` and `tests/suite/fuzz_operations.rs` also compile, so `cargo test` runs them
//! over the committed seeds.

include!("bodies.rs");

mod operations;
pub use operations::operations;

mod remote;
pub use remote::remote;

mod store;
pub use store::store;
