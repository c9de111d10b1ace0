//! Stores written by an older format version keep working: `tests/fixtures/v2` was written by
//! format version 2 (one frame per record, before record batches) and `tests/fixtures/v3` by
//! version 3 (batches, an index entry every 4 KiB); both are checked in. Their records read back
//! exactly, read-only and for writing; the newest (active) old segment is sealed at open and new
//! records go to segments of the current version after it; everything verifies clean.

use crate::common;

use std::path::{Path, PathBuf};

use common::copy_dir;
use shardlog::log::format::FORMAT_VERSION;
use shardlog::log::shard::{segment_bases, summarize_segment, verify};
use shardlog::{
    NewRecord, Offset, PutRecord, ReadLimits, Shard, ShardFilter, ShardOptions, Start, Store,
    StoreOptions,
};

/// Record `i` as the fixture writer made it (see the fixture's README).
fn fixture_record(i: usize) -> (String, Vec<u8>, Option<u128>) {
    let key = format!("key-{}", i % 37);
    let data = format!("record {i};").repeat(1 + i % 5).into_bytes();
    let explicit = (i % 11 == 0).then(|| u128::MAX / 1000 * (i as u128 % 1000));
    (key, data, explicit)
}

fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    copy_dir(&src, dir.path());
    let root = dir.path().to_path_buf();
    (dir, root)
}

fn all_records(shard: &Shard) -> Vec<shardlog::Record> {
    let mut out = Vec::new();
    let mut from = Offset::new(0);
    loop {
        let batch = shard.read(from, ReadLimits::default()).unwrap();
        if batch.records.is_empty() {
            return out;
        }
        from = batch.next_offset;
        out.extend(batch.records);
    }
}

fn versions(dir: &Path) -> Vec<u16> {
    segment_bases(dir)
        .unwrap()
        .into_iter()
        .map(|b| summarize_segment(dir, b).unwrap().version)
        .collect()
}

/// An old shard fixture and what its records hold.
struct OldShard {
    /// Directory under `tests/fixtures`.
    fixture: &'static str,
    version: u16,
    records: usize,
    segments: usize,
    /// The explicit hash key record `i` was stored with.
    explicit_hash_key: fn(usize) -> Option<u128>,
}

/// Reads `old` back read-only and for writing, appends to it (which seals its newest segment and
/// starts one of the current version) and verifies it clean before and after.
fn upgrade_shard(old: OldShard) {
    let (_guard, root) = fixture(old.fixture);
    let dir = root.join("shard");
    assert!(
        versions(&dir).iter().all(|&v| v == old.version),
        "{:?}",
        versions(&dir)
    );
    assert_eq!(verify(&dir).unwrap(), vec![]);
    let check = |records: &[shardlog::Record]| {
        for (i, r) in records.iter().enumerate().take(old.records) {
            let (key, data, _) = fixture_record(i);
            assert_eq!(r.offset, Offset::new(i as u64));
            assert_eq!(&r.partition_key[..], key.as_bytes());
            assert_eq!(&r.data[..], &data[..]);
            assert_eq!(r.explicit_hash_key, (old.explicit_hash_key)(i));
        }
        for w in records.windows(2) {
            assert!(w[0].arrival_ms <= w[1].arrival_ms);
        }
    };
    let count = old.records as u64;
    {
        let shard = Shard::open_read_only(&dir, ShardOptions::default()).unwrap();
        let records = all_records(&shard);
        assert_eq!(records.len(), old.records);
        check(&records);
        for at in [0, old.records / 3, old.records / 2, old.records - 1] {
            let t = records[at].arrival_ms;
            let first_at_t = records.iter().find(|r| r.arrival_ms >= t).unwrap().offset;
            assert_eq!(shard.seek_time(t).unwrap(), first_at_t);
            let one = ReadLimits {
                max_records: 1,
                max_bytes: usize::MAX,
            };
            let got = shard.read(Offset::new(at as u64), one).unwrap();
            assert_eq!(got.records[0].offset, Offset::new(at as u64));
        }
        let mut lent = 0;
        let next = shard
            .visit(Offset::new(0), ReadLimits::default(), |r| {
                assert_eq!(r.offset.get(), lent);
                lent += 1;
            })
            .unwrap();
        assert_eq!((lent, next), (count, Offset::new(count)));
    }
    let options = || ShardOptions {
        segment_bytes: 4096,
        ..ShardOptions::default()
    };
    {
        let shard = Shard::open(&dir, options()).unwrap();
        assert_eq!(shard.next_offset(), Offset::new(count));
        check(&all_records(&shard));
        let datas: Vec<String> = (0..50).map(|i| format!("new record {i}")).collect();
        let records: Vec<NewRecord<'_>> = datas
            .iter()
            .map(|d| NewRecord::new(b"new", d.as_bytes()))
            .collect();
        let appended = shard.append(&records).unwrap();
        assert_eq!(appended.first, Offset::new(count));
    }
    let found = versions(&dir);
    let (kept, new): (Vec<u16>, Vec<u16>) = found.iter().partition(|&&v| v == old.version);
    assert_eq!(
        kept.len(),
        old.segments,
        "the version {} segments stay: {found:?}",
        old.version
    );
    assert!(
        !new.is_empty() && new.iter().all(|&v| v == FORMAT_VERSION),
        "{found:?}"
    );
    assert_eq!(verify(&dir).unwrap(), vec![]);
    let shard = Shard::open(&dir, options()).unwrap();
    let records = all_records(&shard);
    assert_eq!(records.len(), old.records + 50);
    check(&records);
    for (i, r) in records[old.records..].iter().enumerate() {
        assert_eq!(&r.data[..], format!("new record {i}").as_bytes());
        assert_eq!(r.explicit_hash_key, None);
        assert_eq!(r.hash_key(), shardlog::hash_key::hash_key_of("new"));
    }
}

#[test]
fn a_version_2_shard_reads_back_read_only_and_for_writing() {
    upgrade_shard(OldShard {
        fixture: "v2",
        version: 2,
        records: 300,
        segments: 7,
        // Version 2 stored every record's hash key; the fixture's shard used i * 7.
        explicit_hash_key: |i| Some(i as u128 * 7),
    });
}

/// Version 3 wrote the same batches as today with an index entry every 4 KiB (today: 64 KiB); its
/// indexes must still verify clean and serve seeks.
#[test]
fn a_version_3_shard_reads_back_read_only_and_for_writing() {
    upgrade_shard(OldShard {
        fixture: "v3",
        version: 3,
        records: 3000,
        segments: 2,
        explicit_hash_key: |i| (i % 11 == 0).then(|| u128::MAX / 1000 * (i as u128 % 1000)),
    });
}

#[test]
fn a_version_2_store_reads_back_and_takes_new_records() {
    let (_guard, root) = fixture("v2");
    let read_stream = |store: &Store| {
        let stream = store.stream("fixture").unwrap();
        let mut seen = Vec::new();
        for shard in stream.list_shards(&ShardFilter::default()).unwrap() {
            let mut it = Some(
                stream
                    .shard_iterator(shard.shard_id, Start::TrimHorizon)
                    .unwrap(),
            );
            while let Some(iterator) = it {
                let got = store.get_records(&iterator, 10_000).unwrap();
                if got.records.is_empty() {
                    break;
                }
                seen.extend(
                    got.records
                        .into_iter()
                        .map(|r| (r.partition_key, r.data.to_vec())),
                );
                it = got.next_shard_iterator;
            }
        }
        seen.sort();
        seen
    };
    let mut expected: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            let (k, d, _) = fixture_record(i);
            (k, d)
        })
        .collect();
    expected.sort();
    {
        let store = Store::open(root.join("store"), StoreOptions::default()).unwrap();
        assert_eq!(read_stream(&store), expected);
        let stream = store.stream("fixture").unwrap();
        for r in stream
            .put_records(&[PutRecord::new("later", b"after the upgrade")])
            .unwrap()
        {
            r.unwrap();
        }
    }
    let store = Store::open(root.join("store"), StoreOptions::default()).unwrap();
    expected.push(("later".into(), b"after the upgrade".to_vec()));
    expected.sort();
    assert_eq!(read_stream(&store), expected);
    drop(store);
    let shards = root.join("store/streams/fixture/shards");
    for entry in std::fs::read_dir(&shards).unwrap() {
        let dir = entry.unwrap().path();
        assert_eq!(verify(&dir).unwrap(), vec![], "{}", dir.display());
        assert!(versions(&dir).contains(&2));
    }
}
