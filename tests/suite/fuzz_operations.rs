//! The `operations` fuzz target's body (fuzz/src/operations.rs) over its committed seeds in
//! fuzz/seeds/operations: appends, reads, seeks, rolls, reopens, retention deletes, injected I/O
//! faults and crashes (power cuts under the durable policies) against an in-memory model. Needs
//! the `failpoints` feature (`cargo test --release --features failpoints`). `SHARDLOG_SEEDS=DIR`
//! runs the seeds of another directory (one failing input, with `SHARDLOG_FUZZ_TRACE=1`).

#[path = "../../fuzz/src/operations.rs"]
mod operations;

#[test]
fn operations_seeds() {
    let dir = std::env::var_os("SHARDLOG_SEEDS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/operations"),
        std::path::PathBuf::from,
    );
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        eprintln!("operations: {}", path.display());
        operations::operations(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}
