//! Appends a million 100-byte records to a shard in a local directory, reads them back, and
//! prints throughput.
//!
//! ```text
//! cargo run --release --example quickstart [DATA_DIR] [RECORDS]
//! ```
//! DATA_DIR defaults to `./shardlog-data`; running again appends another batch after the first.

use std::time::Instant;

use shardlog::{NewRecord, Offset, ReadLimits, Shard, ShardOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "shardlog-data".into());
    let count: u64 = match args.next() {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let shard_dir = std::path::Path::new(&dir).join("quickstart-shard");

    let opened = Instant::now();
    let shard = Shard::open(&shard_dir, ShardOptions::default())?;
    println!(
        "opened {} in {:.2?}: {} records already stored",
        shard_dir.display(),
        opened.elapsed(),
        shard.next_offset().get() - shard.first_offset().get()
    );

    // Append in batches of 500, as a Kinesis PutRecords call would.
    let start_offset = shard.next_offset();
    let payload = [b'x'; 100];
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    let batch: Vec<NewRecord<'_>> = keys
        .iter()
        .map(|k| NewRecord {
            partition_key: k.as_bytes(),
            hash_key: 0,
            data: &payload,
        })
        .collect();
    let t = Instant::now();
    let mut appended = 0u64;
    while appended < count {
        let n = (count - appended).min(batch.len() as u64) as usize;
        shard.append(&batch[..n])?;
        appended += n as u64;
    }
    let append_secs = t.elapsed().as_secs_f64();
    println!(
        "appended {appended} records of {} B in {:.3}s: {:.2} M records/s, {:.0} MB/s of payload",
        payload.len(),
        append_secs,
        appended as f64 / append_secs / 1e6,
        (appended * payload.len() as u64) as f64 / append_secs / 1e6
    );

    // Read everything back, every CRC checked, no copies of the data.
    let t = Instant::now();
    let mut cursor = start_offset;
    let mut read = 0u64;
    let mut bytes = 0u64;
    loop {
        let batch = shard.read(cursor, ReadLimits::default())?;
        if batch.records.is_empty() {
            break;
        }
        read += batch.records.len() as u64;
        bytes += batch
            .records
            .iter()
            .map(|r| r.data.len() as u64)
            .sum::<u64>();
        cursor = batch.next_offset;
    }
    let read_secs = t.elapsed().as_secs_f64();
    println!(
        "read back {read} records in {read_secs:.3}s: {:.2} M records/s, {:.0} MB/s of payload",
        read as f64 / read_secs / 1e6,
        bytes as f64 / read_secs / 1e6
    );
    assert_eq!(read, appended, "every appended record reads back");

    let t = Instant::now();
    let middle = Offset::new(start_offset.get() + appended / 2);
    let one = shard.read(
        middle,
        ReadLimits {
            max_records: 1,
            ..ReadLimits::default()
        },
    )?;
    println!(
        "read one record at offset {middle} in {:.2?} (arrived at {} ms)",
        t.elapsed(),
        one.records[0].arrival_ms
    );
    println!(
        "{} segment files under {}",
        shard.segment_count(),
        shard_dir.display()
    );
    Ok(())
}
