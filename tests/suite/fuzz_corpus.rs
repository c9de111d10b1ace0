//! The fuzz targets' bodies (fuzz/src/bodies.rs), run by `cargo test` over the committed seeds in
//! fuzz/seeds: CI exercises the same code on every run without the fuzzer, and every input a
//! fuzzer ever found a problem with stays a regression test.

#[path = "../../fuzz/src/bodies.rs"]
mod bodies;

fn run_seeds(target: &str, body: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        eprintln!("{target}: {}", path.display());
        body(&bytes);
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn segment_seeds() {
    run_seeds("segment", bodies::segment);
}

#[test]
fn index_seeds() {
    run_seeds("index", bodies::index);
}

#[test]
fn manifest_seeds() {
    run_seeds("manifest", bodies::manifest);
}

#[test]
fn frame_seeds() {
    run_seeds("frame", bodies::frame);
}

#[test]
fn repair_seeds() {
    run_seeds("repair", bodies::repair);
}
