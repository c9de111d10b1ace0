//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod http;
pub mod moto;
#[cfg(feature = "server")]
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashMap;

use shardlog::{
    ManualClock, NewRecord, Offset, ReadLimits, Record, Shard, ShardId, ShardOptions, Start, Store,
    Stream, StreamRecord,
};

/// Deterministic payload for an offset, of varying length (0..max_len), so any record can be
/// checked without keeping a copy.
pub fn payload(offset: u64, max_len: usize) -> Vec<u8> {
    let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    let len = (x % (max_len as u64 + 1)) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Deterministic partition key for an offset.
pub fn key(offset: u64) -> Vec<u8> {
    format!("key-{}", offset % 97).into_bytes()
}

/// Store options for crash tests: every acknowledged append fsynced, no background retention.
pub fn durable_store_options() -> shardlog::StoreOptions {
    shardlog::StoreOptions {
        shard: ShardOptions {
            flush: shardlog::FlushPolicy::Always,
            ..ShardOptions::default()
        },
        retention_interval: None,
        ..shardlog::StoreOptions::default()
    }
}

/// Options with a manual clock and small segments, so tests roll often.
pub fn small_options(clock: &Arc<ManualClock>, segment_bytes: u64) -> ShardOptions {
    ShardOptions {
        segment_bytes,
        clock: Arc::clone(clock) as Arc<dyn shardlog::Clock>,
        ..ShardOptions::default()
    }
}

/// Appends the deterministic records for offsets `from..to` in batches of `batch`.
pub fn append_range(shard: &Shard, from: u64, to: u64, batch: u64, max_len: usize) {
    let mut o = from;
    while o < to {
        let end = (o + batch).min(to);
        let keys: Vec<Vec<u8>> = (o..end).map(key).collect();
        let datas: Vec<Vec<u8>> = (o..end).map(|i| payload(i, max_len)).collect();
        let records: Vec<NewRecord<'_>> = (0..(end - o) as usize)
            .map(|i| NewRecord {
                partition_key: &keys[i],
                explicit_hash_key: ((o + i as u64) % 3 == 0).then(|| u128::from(o) + i as u128),
                data: &datas[i],
            })
            .collect();
        let appended = shard.append(&records).expect("append");
        assert_eq!(appended.first, Offset::new(o));
        assert_eq!(appended.last, Offset::new(end - 1));
        o = end;
    }
}

/// Reads every record from `from` to the end.
pub fn read_all(shard: &Shard, from: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut cursor = Offset::new(from);
    loop {
        let batch = shard.read(cursor, ReadLimits::default()).expect("read");
        if batch.records.is_empty() {
            return out;
        }
        cursor = batch.next_offset;
        out.extend(batch.records);
    }
}

/// Checks that `records` are exactly the deterministic records `from..to`.
pub fn check_records(records: &[Record], from: u64, to: u64, max_len: usize) {
    assert_eq!(records.len() as u64, to - from, "record count");
    for (i, r) in records.iter().enumerate() {
        let o = from + i as u64;
        assert_eq!(r.offset, Offset::new(o));
        assert_eq!(&r.partition_key[..], &key(o)[..], "key of {o}");
        assert_eq!(&r.data[..], &payload(o, max_len)[..], "data of {o}");
    }
}

/// Segment files in a shard directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// A shard directory holding the deterministic records `0..count`, written in batches of `batch`
/// with a manual clock at `now_ms` and `segment_bytes` segments, then closed.
pub fn written(
    now_ms: i64,
    segment_bytes: u64,
    count: u64,
    batch: u64,
    max_len: usize,
) -> (tempfile::TempDir, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(now_ms));
    let shard = Shard::open(dir.path(), small_options(&clock, segment_bytes)).unwrap();
    append_range(&shard, 0, count, batch, max_len);
    drop(shard);
    (dir, clock)
}

/// The base offset a segment file is named after.
pub fn base_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads a shard from the trim horizon to its current end (or, if closed, to its end).
pub fn drain(store: &Store, stream: &Stream, shard: ShardId) -> (Vec<StreamRecord>, Vec<ShardId>) {
    let mut it = Some(stream.shard_iterator(shard, Start::TrimHorizon).unwrap());
    let mut out = Vec::new();
    while let Some(token) = it {
        let got = store.get_records(&token, 10_000).unwrap();
        let done = got.records.is_empty();
        out.extend(got.records);
        if !got.child_shards.is_empty() {
            return (
                out,
                got.child_shards.into_iter().map(|c| c.shard_id).collect(),
            );
        }
        it = if done { None } else { got.next_shard_iterator };
    }
    (out, Vec::new())
}

/// Reads a whole stream the way a consumer that respects resharding does: a shard only after all
/// its parents are read to their end. Returns each partition key's data in the order read.
pub fn consume_all(store: &Store, stream: &Stream) -> HashMap<String, Vec<Vec<u8>>> {
    let d = stream.describe();
    let mut done: Vec<ShardId> = Vec::new();
    let mut by_key: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut pending: Vec<_> = d.shards.clone();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|s| {
                [&s.parent_shard_id, &s.adjacent_parent_shard_id]
                    .into_iter()
                    .flatten()
                    .all(|p| done.contains(p) || !d.shards.iter().any(|x| &x.shard_id == p))
            })
            .expect("some shard has all its parents read");
        let shard = pending.remove(ready);
        let (records, _) = drain(store, stream, shard.shard_id);
        for r in records {
            by_key
                .entry(r.partition_key)
                .or_default()
                .push(r.data.to_vec());
        }
        done.push(shard.shard_id);
    }
    by_key
}

/// Runs the ignored test `name` of this test binary as a child process with `envs`, its stdout
/// read by a thread that returns the largest `ack N` it printed. libtest prints
/// "test NAME ... " without a newline before the test runs, so an acknowledgement may share a line.
pub fn spawn_acking_child(
    name: &str,
    envs: &[(&str, String)],
) -> (std::process::Child, std::thread::JoinHandle<Option<u64>>) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child test process");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((_, n)) = line.rsplit_once("ack ") {
                last = Some(n.trim().parse::<u64>().unwrap());
            }
        }
        last
    });
    (child, reader)
}

/// Every file under `dir` with its bytes, by path relative to `dir`, sorted.
pub fn snapshot_dir(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The random source of a crash test: seeded from `SHARDLOG_CRASH_SEED` when set (to replay a
/// failure), else at random; the seed is printed either way.
pub fn crash_rng(test: &str) -> rand::rngs::StdRng {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("SHARDLOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("{test} seed {seed}: rerun with SHARDLOG_CRASH_SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Runs the `shardlog` binary this package built.
pub fn shardlog(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .expect("run shardlog")
}

/// Bytes as text, for assertion messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The batches of a (version 3) segment file, as far as they verify: each one's byte range and
/// the offsets of its records.
pub fn batches(segment: &Path) -> Vec<(std::ops::Range<usize>, std::ops::Range<u64>)> {
    use shardlog::log::format::{decode_batch, Layout, SEGMENT_HEADER_LEN};
    let bytes = std::fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(batch) = decode_batch(&bytes, pos, Layout::CURRENT) {
        let head = batch.head;
        out.push((
            pos..pos + head.len,
            head.base_offset.get()..head.end_offset().get(),
        ));
        pos += head.len;
    }
    out
}

/// Copies a directory tree (files and subdirectories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// Store options tiering into the directory `bucket` with `tier` (rounds only when asked: no
/// tiering thread), `segment_bytes` segments and no retention thread.
pub fn tiered_store_options(
    bucket: &Path,
    segment_bytes: u64,
    tier: shardlog::TierOptions,
) -> shardlog::StoreOptions {
    shardlog::StoreOptions {
        shard: ShardOptions {
            segment_bytes,
            ..ShardOptions::default()
        },
        retention_interval: None,
        tier: Some(shardlog::TierConfig {
            bucket: Arc::new(shardlog::DirBucket::new(bucket).unwrap()),
            options: shardlog::TierOptions {
                interval: None,
                ..tier
            },
        }),
        ..shardlog::StoreOptions::default()
    }
}
