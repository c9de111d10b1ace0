//! The `remote` fuzz target's body (fuzz/src/remote.rs) over its committed seeds in
//! fuzz/seeds/remote: a tiered shard's bucket objects damaged (flipped, cut, replaced) and read
//! through range reads, whole downloads and time seeks.

#[path = "../../fuzz/src/remote.rs"]
mod remote;

#[test]
fn remote_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/remote");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        eprintln!("remote: {}", path.display());
        remote::remote(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}
