//! `shardlog verify` and `shardlog repair`, run for real on copies of a store damaged by truncation,
//! bit flips, zeroed pages, a deleted index and a deleted middle segment: verify reports each
//! problem at its file and byte, repair without `--apply` changes nothing, and `repair --apply`
//! leaves a store that opens, verifies clean and holds exactly the records whose frames were not
//! damaged.

use crate::common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use common::*;
use shardlog::log::format::{decode_batch, Layout, SEGMENT_HEADER_LEN};
use shardlog::{PutRecord, ShardId, ShardOptions, Store, StoreOptions, StreamConfig};

const SHARD: &str = "shardId-000000000001";

fn options() -> StoreOptions {
    StoreOptions {
        retention_interval: None,
        shard: ShardOptions {
            segment_bytes: 16 * 1024,
            ..ShardOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// Every record of every shard: (shard id, offset) → data.
type Contents = BTreeMap<(String, u64), Vec<u8>>;

fn contents(dir: &Path) -> Contents {
    let store = Store::open(dir, options()).expect("the store opens");
    let stream = store.stream("orders").unwrap();
    let mut out = Contents::new();
    for shard in stream.describe().shards {
        let (records, _) = drain(&store, &stream, shard.shard_id);
        for r in records {
            let offset = r.sequence_number.offset().get();
            out.insert((shard.shard_id.to_string(), offset), r.data.to_vec());
        }
    }
    out
}

/// A store with two shards of several 16 KiB segments each.
fn pristine() -> (tempfile::TempDir, Contents) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        let stream = store
            .create_stream("orders", StreamConfig::provisioned(2))
            .unwrap();
        for i in 0..3000u64 {
            let mut data = format!("{i}:").into_bytes();
            data.extend(payload(i, 120));
            stream
                .put_record(&PutRecord::new(&format!("k{i}"), &data))
                .unwrap();
        }
    }
    let all = contents(dir.path());
    assert_eq!(all.len(), 3000);
    (dir, all)
}

/// The records of a segment file: (offset, byte range of its batch). (`put_record` appends one
/// record at a time: each batch holds one.)
fn frames(segment: &Path) -> Vec<(u64, Range<usize>)> {
    let bytes = std::fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(batch) = decode_batch(&bytes, pos, Layout::CURRENT) {
        let first = batch.head.base_offset.get();
        let range = pos..pos + batch.head.len;
        out.extend((first..batch.head.end_offset().get()).map(|o| (o, range.clone())));
        pos += batch.head.len;
    }
    out
}

/// Damage to one segment of shard 1, and the verify message it must cause.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut a sealed segment short, in the middle of a frame.
    Truncate,
    /// Flip a bit inside one frame.
    FlipBit,
    /// Overwrite a 4 KiB page with zeros.
    ZeroPage,
    /// Delete an index file.
    DeleteIndex,
    /// Delete a whole segment that has segments on both sides.
    DeleteSegment,
    /// Cut the newest (active) segment in the middle of a frame, as a torn write would.
    TornTail,
}

/// Applies `damage` to segment `which` of shard 1 of the store in `dir`; returns the offsets of
/// shard 1 whose records are destroyed and what verify must print about it.
fn inflict(dir: &Path, damage: Damage, which: usize) -> (Vec<u64>, String) {
    let shard = dir.join("streams/orders/shards").join(SHARD);
    let segments = segment_files(&shard);
    let seg: &PathBuf = match damage {
        Damage::TornTail => segments.last().unwrap(),
        _ => &segments[which],
    };
    let f = frames(seg);
    let mut bytes = std::fs::read(seg).unwrap();
    let overlapping = |r: Range<usize>| -> Vec<(u64, Range<usize>)> {
        f.iter()
            .filter(|(_, fr)| fr.start < r.end && r.start < fr.end)
            .cloned()
            .collect()
    };
    match damage {
        Damage::Truncate | Damage::TornTail => {
            let (_, cut) = f[f.len() * 2 / 3].clone();
            let at = cut.start + 17;
            bytes.truncate(at);
            std::fs::write(seg, &bytes).unwrap();
            let lost: Vec<u64> = f
                .iter()
                .filter(|(_, r)| r.end > at)
                .map(|(o, _)| *o)
                .collect();
            let expect = format!("{} at byte {}: batch", seg.display(), cut.start);
            (lost, expect)
        }
        Damage::FlipBit => {
            let (offset, frame) = f[f.len() / 2].clone();
            bytes[frame.start + 30] ^= 0x08;
            std::fs::write(seg, &bytes).unwrap();
            let expect = format!("{} at byte {}: CRC mismatch", seg.display(), frame.start);
            (vec![offset], expect)
        }
        Damage::ZeroPage => {
            let page = 8192..12288;
            bytes[page.clone()].fill(0);
            std::fs::write(seg, &bytes).unwrap();
            let hit = overlapping(page);
            let expect = format!("{} at byte {}:", seg.display(), hit[0].1.start);
            (hit.iter().map(|(o, _)| *o).collect(), expect)
        }
        Damage::DeleteIndex => {
            let idx = seg.with_extension("idx");
            std::fs::remove_file(&idx).unwrap();
            (Vec::new(), format!("{}: index file missing", idx.display()))
        }
        Damage::DeleteSegment => {
            std::fs::remove_file(seg).unwrap();
            let before = &segments[which - 1];
            let expect = format!(
                "{}: holds offsets up to {}, but the next segment starts at {}",
                before.display(),
                base_of(seg),
                base_of(&segments[which + 1])
            );
            (f.iter().map(|(o, _)| *o).collect(), expect)
        }
    }
}

/// Runs verify, repair, repair --apply and verify again on a damaged copy, and checks the
/// records left are exactly the undamaged ones.
fn damage_then_repair(pristine: &Path, all: &Contents, damages: &[(Damage, usize)]) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(pristine, copy.path());
    let path = copy.path().to_str().unwrap();
    let mut lost = Vec::new();
    let mut expected_reports = Vec::new();
    for &(damage, which) in damages {
        let (l, e) = inflict(copy.path(), damage, which);
        lost.extend(l);
        expected_reports.push(e);
    }

    let out = shardlog(&["verify", path]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{damages:?}: {report}");
    for e in &expected_reports {
        assert!(
            report.contains(e),
            "{damages:?}: expected {e:?} in\n{report}"
        );
    }

    let before = snapshot_dir(copy.path());
    let out = shardlog(&["repair", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("--apply"));
    assert_eq!(
        snapshot_dir(copy.path()),
        before,
        "repair without --apply changed files"
    );

    let out = shardlog(&["repair", "--apply", path]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = shardlog(&["verify", path]);
    assert!(
        out.status.success(),
        "{damages:?}: not clean after repair:\n{}",
        text(&out.stdout)
    );

    let mut expected = all.clone();
    for o in &lost {
        assert!(expected.remove(&(SHARD.to_string(), *o)).is_some());
    }
    let after = contents(copy.path());
    let missing: Vec<_> = expected.keys().filter(|k| !after.contains_key(k)).collect();
    let extra: Vec<_> = after.keys().filter(|k| !expected.contains_key(k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{damages:?}: undamaged records missing {missing:?}, records that should be gone {extra:?}"
    );
    assert_eq!(after, expected, "{damages:?}: a record changed");

    // The repaired store takes new records after the ones it kept.
    let store = Store::open(copy.path(), options()).unwrap();
    let stream = store.stream("orders").unwrap();
    stream
        .put_record(&PutRecord::new("after repair", b"new"))
        .unwrap();
    drop(store);
    assert!(shardlog(&["verify", path]).status.success());
}

#[test]
fn each_kind_of_damage_is_reported_and_repaired_keeping_every_undamaged_record() {
    let (dir, all) = pristine();
    let shard = dir.path().join("streams/orders/shards").join(SHARD);
    assert!(segment_files(&shard).len() >= 5, "the test needs segments");
    for damage in [
        Damage::Truncate,
        Damage::FlipBit,
        Damage::ZeroPage,
        Damage::DeleteIndex,
        Damage::DeleteSegment,
        Damage::TornTail,
    ] {
        damage_then_repair(dir.path(), &all, &[(damage, 2)]);
    }
}

#[test]
fn many_kinds_of_damage_at_once_are_repaired_together() {
    let (dir, all) = pristine();
    damage_then_repair(
        dir.path(),
        &all,
        // Highest segment first: deleting one renumbers those after it.
        &[
            (Damage::TornTail, 0),
            (Damage::DeleteIndex, 6),
            (Damage::Truncate, 5),
            (Damage::ZeroPage, 4),
            (Damage::DeleteSegment, 2),
            (Damage::FlipBit, 0),
        ],
    );
}

#[test]
fn repair_refuses_while_a_writer_holds_the_lock() {
    let (dir, _) = pristine();
    let store = Store::open(dir.path(), options()).unwrap();
    let before = snapshot_dir(dir.path());
    for args in [
        vec!["repair", dir.path().to_str().unwrap()],
        vec!["repair", "--apply", dir.path().to_str().unwrap()],
    ] {
        let out = shardlog(&args);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("a writer holds"), "{stderr}");
    }
    assert_eq!(snapshot_dir(dir.path()), before);
    drop(store);
    assert!(shardlog(&["repair", dir.path().to_str().unwrap()])
        .status
        .success());
}

#[test]
fn a_half_written_segment_from_a_crash_during_a_roll_is_removed() {
    let (dir, all) = pristine();
    let shard = dir.path().join("streams/orders/shards").join(SHARD);
    let newest = segment_files(&shard).pop().unwrap();
    // A roll that died after creating the file and writing part of the header.
    let next = shard.join(format!("{:020}.seg", base_of(&newest) + 1_000_000));
    std::fs::write(&next, b"SHRDLSEG\x02\x00garbage").unwrap();
    let path = dir.path().to_str().unwrap();
    assert_eq!(shardlog(&["verify", path]).status.code(), Some(1));
    let out = shardlog(&["repair", "--apply", path]);
    assert!(
        text(&out.stdout).contains("remove"),
        "{}",
        text(&out.stdout)
    );
    assert!(!next.exists());
    assert!(shardlog(&["verify", path]).status.success());
    assert_eq!(contents(dir.path()), all);
}

#[test]
fn a_closed_shard_that_lost_its_last_records_still_ends_where_its_manifest_closed_it() {
    let (dir, all) = pristine();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        let stream = store.stream("orders").unwrap();
        let start = u128::MAX / 4 * 3;
        stream.split_shard(ShardId(1), start).unwrap();
    }
    let shard = dir.path().join("streams/orders/shards").join(SHARD);
    let newest = segment_files(&shard).pop().unwrap();
    let f = frames(&newest);
    let (last_offset, last) = f.last().cloned().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[last.start + 30] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();

    let path = dir.path().to_str().unwrap();
    let out = shardlog(&["verify", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!("at byte {}: CRC mismatch", last.start)),
        "{}",
        text(&out.stdout)
    );
    let out = shardlog(&["repair", "--apply", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 records are lost"),
        "{}",
        text(&out.stdout)
    );
    let out = shardlog(&["verify", path]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let mut expected = all;
    expected.remove(&(SHARD.to_string(), last_offset));
    let after = contents(dir.path());
    assert_eq!(after, expected);
}
