//! Range reads of remote segments: a read that starts inside a large remote-only segment fetches
//! a window of it found through its index, never the whole segment; windows grow as a reader
//! goes on; time seeks fetch windows too; a lying index or damaged bytes are caught.

use crate::common;

use std::path::{Path, PathBuf};

use std::sync::Arc;

use common::*;
use shardlog::log::remote::CacheStats;
use shardlog::{
    DirBucket, Error, ManualClock, Offset, ReadLimits, Shard, ShardTier, Tier, TierOptions,
};

const SHARD_KEY: &str = "streams/s/1/shardId-000000000000";

/// Records appended by [`remote_shard`]: 512 KiB segments of records up to 300 bytes.
const RECORDS: u64 = 12_000;
const MAX_LEN: usize = 300;

/// A shard in `root/shard` whose sealed segments (512 KiB, so index entries every 64 KiB) are
/// only in `root/bucket`, read through windows of at least 16 KiB; `clock_step_ms` apart per
/// batch of 25 records.
fn remote_shard(root: &Path, clock_step_ms: i64) -> (Arc<ManualClock>, Arc<Tier>, Shard) {
    let clock = Arc::new(ManualClock::new(1_000));
    let bucket = Arc::new(DirBucket::new(root.join("bucket")).unwrap());
    let options = TierOptions {
        local_retention_bytes: Some(0),
        local_retention: None,
        range_read_bytes: 16 * 1024,
        cache_bytes: 8 * 1024 * 1024,
        ..TierOptions::default()
    };
    let tier = Arc::new(Tier::new(bucket, options, root.join("cache")).unwrap());
    let shard = Shard::open(
        root.join("shard"),
        shardlog::ShardOptions {
            tier: Some(ShardTier::new(Arc::clone(&tier), SHARD_KEY)),
            ..small_options(&clock, 512 * 1024)
        },
    )
    .unwrap();
    let mut o = 0;
    while o < RECORDS {
        clock.advance(clock_step_ms);
        append_range(&shard, o, o + 25, 25, MAX_LEN);
        o += 25;
    }
    shard.tier_step().unwrap();
    let status = shard.tier_status();
    assert!(status.remote_only >= 2, "{status:?}");
    (clock, tier, shard)
}

/// Base offsets and sizes of the shard's segment objects.
fn segment_objects(tier: &Tier) -> Vec<(u64, u64, PathBuf)> {
    let prefix = format!("{SHARD_KEY}/");
    tier.bucket()
        .list(&prefix)
        .unwrap()
        .into_iter()
        .filter_map(|(key, size)| {
            let base = key
                .strip_prefix(&prefix)?
                .strip_suffix(".seg")?
                .parse()
                .ok()?;
            Some((base, size, PathBuf::from(key)))
        })
        .collect()
}

fn stats(tier: &Tier) -> CacheStats {
    tier.cache().stats()
}

/// Checks a read from `from`: consecutive records from it, the right ones, at least one.
fn check_read(shard: &Shard, from: u64, limits: ReadLimits) -> u64 {
    let batch = shard.read(Offset::new(from), limits).unwrap();
    let n = batch.records.len() as u64;
    assert!(
        n >= 1 && n <= limits.max_records as u64,
        "{n} records from {from}"
    );
    check_records(&batch.records, from, from + n, MAX_LEN);
    assert_eq!(batch.next_offset, Offset::new(from + n));
    n
}

#[test]
fn a_read_inside_a_remote_segment_fetches_a_window_not_the_segment() {
    let root = tempfile::tempdir().unwrap();
    let (_, tier, shard) = remote_shard(root.path(), 1);
    let objects = segment_objects(&tier);
    let (base, size, _) = objects[1];
    let next_base = objects[2].0;
    let from = base + (next_base - base) * 3 / 4;
    check_read(&shard, from, ReadLimits::records(10));
    let after = stats(&tier);
    assert_eq!(after.downloads, 0, "{after:?}");
    assert!(after.range_reads >= 1, "{after:?}");
    // The segment's header, its index and one small window: far less than the segment.
    assert!(after.downloaded_bytes < size / 4, "{after:?} of {size}");
    // The same window serves the next read.
    check_read(&shard, from + 10, ReadLimits::records(10));
    assert_eq!(stats(&tier).range_reads, after.range_reads);
    assert!(stats(&tier).hits > after.hits);
}

#[test]
fn a_reader_going_on_fetches_ever_larger_windows_and_reads_everything() {
    let root = tempfile::tempdir().unwrap();
    let (_, tier, shard) = remote_shard(root.path(), 1);
    let objects = segment_objects(&tier);
    let (base, _, _) = objects[0];
    let from = base + (objects[1].0 - base) / 3;
    let mut cursor = from;
    let mut reads = 0;
    while cursor < objects[1].0 {
        cursor += check_read(&shard, cursor, ReadLimits::records(50));
        reads += 1;
    }
    let windows = stats(&tier).range_reads;
    // Windows double from 16 KiB: a handful for the two thirds of a 512 KiB segment.
    assert!(
        windows >= 3 && windows * 4 <= reads,
        "{windows} windows for {reads} reads"
    );
    // Everything from there on reads back, across segments and into the local active one.
    check_records(&read_all(&shard, from), from, RECORDS, MAX_LEN);
}

#[test]
fn random_reads_of_remote_segments_return_the_right_records() {
    let root = tempfile::tempdir().unwrap();
    let (_, tier, shard) = remote_shard(root.path(), 1);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from = x % RECORDS;
        let limits = ReadLimits {
            max_records: 1 + (x >> 20) as usize % 400,
            max_bytes: 1 + (x >> 40) as usize % (64 * 1024),
        };
        check_read(&shard, from, limits);
    }
    let after = stats(&tier);
    assert!(after.range_reads > 0, "{after:?}");
}

#[test]
fn a_time_seek_inside_remote_segments_fetches_windows() {
    let root = tempfile::tempdir().unwrap();
    // Batch i (records 25i..25i+25) arrives at 1_000 + 10 (i + 1) ms.
    let (_, tier, shard) = remote_shard(root.path(), 10);
    let objects = segment_objects(&tier);
    let target_batch = (objects[1].0 + (objects[2].0 - objects[1].0) / 2) / 25;
    let t = 1_000 + 10 * (target_batch as i64 + 1);
    assert_eq!(shard.seek_time(t).unwrap(), Offset::new(target_batch * 25));
    // Between two batches: the later one.
    assert_eq!(
        shard.seek_time(t - 5).unwrap(),
        Offset::new(target_batch * 25)
    );
    let after = stats(&tier);
    assert_eq!(after.downloads, 0, "{after:?}");
    assert!(after.range_reads >= 1, "{after:?}");
    check_records(
        &shard
            .read_from_time(t, ReadLimits::records(100))
            .unwrap()
            .records,
        target_batch * 25,
        target_batch * 25 + 100,
        MAX_LEN,
    );
}

#[test]
fn a_lying_index_object_costs_a_whole_download_not_wrong_records() {
    let root = tempfile::tempdir().unwrap();
    let (_, tier, shard) = remote_shard(root.path(), 1);
    let objects = segment_objects(&tier);
    let (base, _, ref key) = objects[1];
    // Every entry after the first points 8 bytes past its batch (still a valid-looking index).
    let index = root.path().join("bucket").join(key.with_extension("idx"));
    let mut bytes = std::fs::read(&index).unwrap();
    let (header, entry) = (32, 24);
    assert!(
        bytes.len() > header + 2 * entry,
        "{} index bytes",
        bytes.len()
    );
    for at in (header + entry..bytes.len()).step_by(entry) {
        // Entries are (relative offset u32, position u32, time i64, …): bump the position.
        let position = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) + 8;
        bytes[at + 4..at + 8].copy_from_slice(&position.to_le_bytes());
    }
    std::fs::write(&index, &bytes).unwrap();
    let from = base + (objects[2].0 - base) / 2;
    check_records(&read_all(&shard, from), from, RECORDS, MAX_LEN);
    assert!(stats(&tier).downloads >= 1, "{:?}", stats(&tier));
}

#[test]
fn damage_inside_a_window_is_a_corrupt_error_naming_the_object() {
    let root = tempfile::tempdir().unwrap();
    let (_, tier, shard) = remote_shard(root.path(), 1);
    let objects = segment_objects(&tier);
    let (base, size, ref key) = objects[1];
    let object = root.path().join("bucket").join(key);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[size as usize / 2] ^= 0x40;
    std::fs::write(&object, &bytes).unwrap();
    // Reading on from inside the segment meets the damage (in a window, or in the whole
    // download a damaged window falls back to).
    let mut cursor = Offset::new(base + 1);
    let error = loop {
        match shard.read(cursor, ReadLimits::records(100)) {
            Ok(batch) => {
                assert!(cursor.get() < objects[2].0, "read past the damage");
                cursor = batch.next_offset;
            }
            Err(e) => break e,
        }
    };
    match error {
        Error::Corrupt { path, .. } => assert!(path.ends_with(key), "{}", path.display()),
        other => panic!("{other:?}"),
    }
    // The segments after it still read.
    check_records(
        &read_all(&shard, objects[2].0),
        objects[2].0,
        RECORDS,
        MAX_LEN,
    );
}

#[test]
fn an_object_shorter_than_uploaded_is_a_corrupt_error_not_a_hang() {
    let root = tempfile::tempdir().unwrap();
    let (_, tier, shard) = remote_shard(root.path(), 1);
    let objects = segment_objects(&tier);
    let (base, _, ref key) = objects[1];
    let object = root.path().join("bucket").join(key);
    let bytes = std::fs::read(&object).unwrap();
    std::fs::write(&object, &bytes[..100]).unwrap();
    let from = base + (objects[2].0 - base) / 2;
    match shard.read(Offset::new(from), ReadLimits::records(10)) {
        Err(Error::Corrupt { path, .. }) => assert!(path.ends_with(key), "{}", path.display()),
        other => panic!("{other:?}"),
    }
}
