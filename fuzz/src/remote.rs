// Body of the `remote` fuzz target: the objects of a tiered shard's bucket are data from outside
// (another machine, another process, a disk elsewhere). A valid shard whose sealed segments are
// only in a directory bucket is copied, one of its objects is damaged as the input says (bytes
// flipped, cut short, or replaced by the input), and the shard is read through the tier: from
// offsets inside segments (range reads of windows found through the index), from each
// segment's start (whole downloads) and by time. Nothing may panic; served records come in
// offset order; every record whose batch the damage left alone that is served is the right one;
// and with only an index object damaged (it is a cache) every record still reads back.
//
// Shared by the cargo-fuzz target and by `cargo test` (tests/suite/fuzz_remote.rs), which runs it
// over the committed seeds. `unwrap` here is on the harness's own work.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use shardlog::log::format::{decode_batch, Layout, SEGMENT_HEADER_LEN};
use shardlog::{
    Clock, DirBucket, ManualClock, NewRecord, Offset, ReadLimits, Record, Shard, ShardOptions,
    ShardTier, Tier, TierOptions,
};

/// Records in the template shard.
const RECORDS: u64 = 4000;
/// Arrival time of the first record; record `i` arrives at `T0 + i`.
const T0: i64 = 1_700_000_000_000;
/// The shard's key in the bucket.
const KEY: &str = "s";

fn record(i: u64) -> (Vec<u8>, Vec<u8>) {
    let key = format!("k{}", i % 5).into_bytes();
    let data = vec![i as u8; 40 + ((i * 53) % 200) as usize];
    (key, data)
}

/// A file of the template: its path relative to the shard's directory or the bucket's root.
type Files = Vec<(String, Vec<u8>)>;

/// The template, made once: (the shard directory's files, the bucket's objects).
fn template() -> &'static (Files, Files) {
    static TEMPLATE: OnceLock<(Files, Files)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let tier = tier(root.path());
        let shard = Shard::open(root.path().join("shard"), options(&clock, &tier)).unwrap();
        for i in 0..RECORDS {
            let (key, data) = record(i);
            clock.set(T0 + i as i64);
            shard.append(&[NewRecord::new(&key, &data)]).unwrap();
        }
        shard.tier_step().unwrap();
        assert!(
            shard.tier_status().remote_only >= 3,
            "a template of remote segments"
        );
        drop(shard);
        (
            files_under(&root.path().join("shard"), ""),
            files_under(&root.path().join("bucket"), ""),
        )
    })
}

fn files_under(dir: &Path, prefix: &str) -> Files {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path(), &format!("{name}/")));
        } else if name != "LOCK" {
            out.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// A tier over `root/bucket` whose reads inside segments of more than 4 KiB fetch windows of
/// 1 KiB and more.
fn tier(root: &Path) -> Arc<Tier> {
    let bucket = Arc::new(DirBucket::new(root.join("bucket")).unwrap());
    let options = TierOptions {
        local_retention_bytes: Some(0),
        local_retention: None,
        range_read_bytes: 1024,
        cache_bytes: 64 * 1024,
        interval: None,
        ..TierOptions::default()
    };
    Arc::new(Tier::new(bucket, options, root.join("cache")).unwrap())
}

fn options(clock: &Arc<ManualClock>, tier: &Arc<Tier>) -> ShardOptions {
    ShardOptions {
        segment_bytes: 128 * 1024,
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        tier: Some(ShardTier::new(Arc::clone(tier), KEY)),
        ..ShardOptions::default()
    }
}

/// The offsets whose batches hold a byte of `damaged` in a segment object's `bytes`.
fn offsets_touched(bytes: &[u8], damaged: &BTreeSet<usize>) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(batch) = decode_batch(bytes, pos, Layout::CURRENT) {
        let range = pos..pos + batch.head.len;
        if damaged.range(range).next().is_some() {
            let first = batch.head.base_offset.get();
            out.extend(first..first + u64::from(batch.head.count));
        }
        pos += batch.head.len;
    }
    out
}

/// Served records come in offset order, and those outside `untrusted` are the right ones.
fn check(records: &[Record], untrusted: &BTreeSet<u64>) {
    for w in records.windows(2) {
        assert!(w[0].offset < w[1].offset, "offsets out of order");
    }
    for r in records
        .iter()
        .filter(|r| !untrusted.contains(&r.offset.get()))
    {
        let (key, data) = record(r.offset.get());
        assert_eq!(&r.partition_key[..], &key[..], "key of {}", r.offset);
        assert_eq!(&r.data[..], &data[..], "data of {}", r.offset);
    }
}

/// Reads from `from` on until the end or the first error; returns what was served.
fn read_on(shard: &Shard, from: u64, limits: ReadLimits) -> Vec<Record> {
    let mut out = Vec::new();
    let mut cursor = Offset::new(from);
    while let Ok(batch) = shard.read(cursor, limits) {
        if batch.records.is_empty() || batch.next_offset <= cursor {
            break;
        }
        cursor = batch.next_offset;
        out.extend(batch.records);
    }
    out
}

pub fn remote(data: &[u8]) {
    let (shard_files, objects) = template();
    let root = tempfile::tempdir().unwrap();
    for (dir, files) in [("shard", shard_files), ("bucket", objects)] {
        for (name, bytes) in files {
            let path = root.path().join(dir).join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
    // Which object, and how: flipped bytes (position, mask triples), cut short, or replaced.
    let segments: Vec<&(String, Vec<u8>)> = objects
        .iter()
        .filter(|(n, _)| n.ends_with(".seg"))
        .collect();
    let indexes: Vec<&(String, Vec<u8>)> = objects
        .iter()
        .filter(|(n, _)| n.ends_with(".idx"))
        .collect();
    let pick = usize::from(data.get(1).copied().unwrap_or(0));
    let rest = data.get(2..).unwrap_or(&[]);
    let mode = data.first().copied().unwrap_or(0) % 6;
    let (name, original) = match mode {
        0..=2 => segments[pick % segments.len()],
        _ => indexes[pick % indexes.len()],
    };
    let mut damaged_bytes = original.clone();
    let mut damaged = BTreeSet::new();
    match mode % 3 {
        0 => {
            for triple in rest.chunks_exact(3) {
                // Positions spread over the whole object (segments are up to 128 KiB).
                let at = usize::from(u16::from_le_bytes([triple[0], triple[1]])) * 3;
                if let Some(byte) = damaged_bytes.get_mut(at % original.len()) {
                    *byte ^= triple[2];
                    damaged.insert(at % original.len());
                }
            }
        }
        1 => {
            let at = [rest.first(), rest.get(1), rest.get(2)].map(|b| b.copied().unwrap_or(0));
            let cut = (usize::from(at[0]) | usize::from(at[1]) << 8 | usize::from(at[2]) << 16)
                % original.len();
            damaged_bytes.truncate(cut);
            damaged.extend(cut..original.len());
        }
        _ => {
            damaged_bytes = rest.to_vec();
            damaged.extend(0..original.len().max(rest.len()));
        }
    }
    std::fs::write(root.path().join("bucket").join(name), &damaged_bytes).unwrap();
    let untrusted = if name.ends_with(".seg") {
        offsets_touched(original, &damaged)
    } else {
        BTreeSet::new()
    };

    let clock = Arc::new(ManualClock::new(T0 + 10 * RECORDS as i64));
    let tier = tier(root.path());
    let Ok(shard) = Shard::open(root.path().join("shard"), options(&clock, &tier)) else {
        return;
    };
    // Inside segments first (windows), then from the start (whole downloads), then by time.
    for chunk in rest.chunks(2).take(4) {
        let from = u64::from(chunk[0]) * RECORDS / 256;
        let max_records = 1 + usize::from(chunk.get(1).copied().unwrap_or(0)) % 64;
        let served = read_on(&shard, from, ReadLimits::records(max_records));
        check(&served, &untrusted);
    }
    let all = read_on(&shard, 0, ReadLimits::default());
    check(&all, &untrusted);
    if name.ends_with(".idx") {
        // The index is a cache: every record still reads back.
        assert_eq!(all.len() as u64, RECORDS, "records behind a damaged index");
    }
    for t in [T0 + 37, T0 + RECORDS as i64 / 2, T0 + RECORDS as i64 - 3] {
        if let (Ok(offset), false) = (shard.seek_time(t), name.ends_with(".seg")) {
            assert_eq!(offset, Offset::new((t - T0) as u64), "seek to {t}");
        }
    }
}
