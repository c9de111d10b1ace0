//! Times a cold open of the shard in DIR (drops the page cache first): a probe for what a
//! reopen reads. `cargo run --release --example reopen -- DIR`
fn main() {
    let dir = std::env::args().nth(1).expect("a shard directory");
    let _ = std::process::Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let t = std::time::Instant::now();
    let shard = shardlog::Shard::open(&dir, shardlog::ShardOptions::default()).expect("open");
    println!(
        "open {:.2} ms, next offset {}",
        t.elapsed().as_secs_f64() * 1e3,
        shard.next_offset()
    );
}
