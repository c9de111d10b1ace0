//! The main job on a local data directory: open a store, create (or reuse) a stream of 4 shards,
//! put a million 100-byte records with put_records (500 per call, routed by the MD5 of their
//! partition keys), read them back through shard iterators, and print throughput.
//!
//! ```text
//! cargo run --release --example quickstart [DATA_DIR] [RECORDS]
//! ```
//! DATA_DIR defaults to `./shardlog-data`; running again adds another million and reads those.

use std::time::Instant;

use shardlog::{PutRecord, ShardFilter, Start, Store, StoreOptions, StreamConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "shardlog-data".into());
    let count: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };

    let t = Instant::now();
    let store = Store::open(&dir, StoreOptions::default())?;
    let stream = match store.stream("quickstart") {
        Ok(stream) => stream,
        Err(_) => store.create_stream("quickstart", StreamConfig::provisioned(4))?,
    };
    println!(
        "opened {dir} in {:.2?}: stream {:?} with {} open shards",
        t.elapsed(),
        stream.name(),
        stream.describe().open_shard_count
    );

    // Iterators at the tip of every shard: they will read exactly what this run puts.
    let shards = stream.list_shards(&ShardFilter::AtLatest)?;
    let mut iterators = Vec::new();
    for shard in &shards {
        iterators.push(stream.shard_iterator(shard.shard_id, Start::Latest)?);
    }

    let payload = [b'x'; 100];
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    let batch: Vec<PutRecord<'_>> = keys.iter().map(|k| PutRecord::new(k, &payload)).collect();
    let t = Instant::now();
    let mut put = 0;
    while put < count {
        let n = (count - put).min(batch.len());
        for result in stream.put_records(&batch[..n])? {
            result.map_err(|f| format!("{:?}: {}", f.reason, f.message))?;
        }
        put += n;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "put {put} records of {} B in {secs:.3}s: {:.2} M records/s ({:.0} MB/s of payload)",
        payload.len(),
        put as f64 / secs / 1e6,
        (put * payload.len()) as f64 / secs / 1e6
    );

    let t = Instant::now();
    let mut read = 0;
    let mut bytes = 0;
    for iterator in iterators {
        let mut next = Some(iterator);
        while let Some(it) = next {
            let got = store.get_records(&it, 10_000)?;
            if got.records.is_empty() {
                break;
            }
            read += got.records.len();
            bytes += got.records.iter().map(|r| r.data.len()).sum::<usize>();
            next = got.next_shard_iterator;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "read back {read} records with get_records in {secs:.3}s: {:.2} M records/s ({:.0} MB/s of payload)",
        read as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
    if read != put {
        return Err(format!("read {read} records, put {put}").into());
    }
    for shard in stream.describe().shards {
        println!(
            "  {}  hash keys {}..={}",
            shard.shard_id, shard.hash_key_range.start, shard.hash_key_range.end
        );
    }
    Ok(())
}
