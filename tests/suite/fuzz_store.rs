//! The `store` fuzz target's body (fuzz/src/store.rs) over its committed seeds in
//! fuzz/seeds/store: stream creates and deletes, puts, reshards, retention changes and runs,
//! consumer-group checkpoints and Firehose puts and deliveries, with an I/O fault armed anywhere
//! under the data directory, power cuts, and a model of what must survive. Needs the `failpoints` feature (`cargo test --release
//! --features failpoints`). `SHARDLOG_SEEDS=DIR` runs the seeds of another directory (one failing
//! input, with `SHARDLOG_FUZZ_TRACE=1`).

#[path = "../../fuzz/src/store.rs"]
mod store;

#[test]
fn store_seeds() {
    let dir = std::env::var_os("SHARDLOG_SEEDS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/store"),
        std::path::PathBuf::from,
    );
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        eprintln!("store: {}", path.display());
        store::store(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}
