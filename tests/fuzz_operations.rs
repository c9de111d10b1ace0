//! The `operations` fuzz target's body (fuzz/src/operations.rs) over its committed seeds in
//! fuzz/seeds/operations: appends, reads, seeks, rolls, reopens, retention deletes, injected I/O
//! faults and crashes (power cuts under the durable policies) against an in-memory model. Needs
//! the `failpoints` feature (`cargo test --release --features failpoints`).

#[path = "../fuzz/src/operations.rs"]
mod operations;

#[test]
fn operations_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/operations");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        eprintln!("operations: {}", path.display());
        operations::operations(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}
