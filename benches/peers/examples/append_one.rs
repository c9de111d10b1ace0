//! Appends N 100-byte records one call each to a fresh shard in DIR (policy `Never`) and prints
//! the rate: a probe for the per-call cost of `Shard::append`.
//! `cargo run --release --example append_one -- DIR [N]`
fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("a directory");
    let n: u64 = args
        .next()
        .map_or(2_000_000, |s| s.parse().expect("a count"));
    let _ = std::fs::remove_dir_all(&dir);
    let options = shardlog::ShardOptions {
        flush: shardlog::FlushPolicy::Never,
        ..Default::default()
    };
    let shard = shardlog::Shard::open(&dir, options).expect("open");
    let key = *b"0123456789abcdef";
    let mut data = [7u8; 100];
    let t = std::time::Instant::now();
    for i in 0..n {
        data[..8].copy_from_slice(&i.to_le_bytes());
        shard
            .append(&[shardlog::NewRecord::new(&key, &data)])
            .expect("append");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} appends: {:.1} ns each, {:.0} MB/s payload",
        secs * 1e9 / n as f64,
        n as f64 * 100.0 / secs / 1e6
    );
}
