//! Recovery of a damaged active segment: cut the file, or flip a bit, at every byte of its last
//! batches, and check what reopening keeps. A cut (a torn tail) or damage to the last batch
//! leaves exactly the batches before it; damage followed by intact batches is not a torn tail:
//! the intact batches are kept and the damaged records' offsets are never handed out again.
//! Either way the shard takes new appends after them.

use crate::common;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use common::*;
use shardlog::{ManualClock, Shard};

const RECORDS: u64 = 40;
const MAX_LEN: usize = 60;
/// How many of the newest batches (of 3 records: one per append) get damaged at each byte.
const DAMAGED_BATCHES: usize = 3;

/// Writes the template shard; returns its batches (byte range, offsets).
fn write_template(dir: &Path, clock: &Arc<ManualClock>) -> Vec<(Range<usize>, Range<u64>)> {
    let shard = Shard::open(dir, small_options(clock, 1 << 20)).unwrap();
    append_range(&shard, 0, RECORDS, 3, MAX_LEN);
    drop(shard);
    let found = batches(&segment_files(dir)[0]);
    assert_eq!(found.last().unwrap().1.end, RECORDS);
    found
}

/// Reopens the damaged copy and checks it holds exactly records `0..survivors`, then that it
/// appends after them and keeps those appends over another reopen.
fn check_recovery(dir: &Path, clock: &Arc<ManualClock>, survivors: u64, what: &str) {
    let shard = Shard::open(dir, small_options(clock, 1 << 20))
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    assert_eq!(shard.next_offset().get(), survivors, "{what}");
    check_records(&read_all(&shard, 0), 0, survivors, MAX_LEN);
    append_range(&shard, survivors, survivors + 3, 3, MAX_LEN);
    drop(shard);
    let shard = Shard::open(dir, small_options(clock, 1 << 20)).unwrap();
    check_records(&read_all(&shard, 0), 0, survivors + 3, MAX_LEN);
}

/// Reopens a copy whose batch holding `lost` is damaged while intact batches follow it: every
/// other record is still there, the next offset is past all of them (none is reused), and the
/// shard appends after them and keeps those appends over another reopen.
fn check_salvage(dir: &Path, clock: &Arc<ManualClock>, lost: Range<u64>, what: &str) {
    let check = |shard: &Shard, to: u64| {
        let records = read_all(shard, 0);
        let offsets: Vec<u64> = records.iter().map(|r| r.offset.get()).collect();
        let expected: Vec<u64> = (0..to).filter(|o| !lost.contains(o)).collect();
        assert_eq!(offsets, expected, "{what}");
        for r in &records {
            let o = r.offset.get();
            assert_eq!(&r.data[..], &payload(o, MAX_LEN)[..], "{what}: data of {o}");
        }
    };
    let shard = Shard::open(dir, small_options(clock, 1 << 20))
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    assert_eq!(shard.next_offset().get(), RECORDS, "{what}");
    check(&shard, RECORDS);
    append_range(&shard, RECORDS, RECORDS + 3, 3, MAX_LEN);
    drop(shard);
    let shard = Shard::open(dir, small_options(clock, 1 << 20)).unwrap();
    check(&shard, RECORDS + 3);
    let problems = shardlog::log::shard::verify(dir).unwrap();
    assert!(
        problems.is_empty(),
        "{what}: verify after the repair: {problems:?}"
    );
}

#[test]
fn cut_or_flip_at_every_byte_of_the_last_batches_recovers_the_exact_prefix() {
    let template = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let batches = write_template(template.path(), &clock);
    let seg_name = segment_files(template.path())[0]
        .file_name()
        .unwrap()
        .to_owned();
    let first_damaged = batches[batches.len() - DAMAGED_BATCHES].0.start;
    let end = batches.last().unwrap().0.end;
    // The records of the batch a byte belongs to: every batch before it survives.
    let records_at = |pos: usize| {
        batches
            .iter()
            .find(|(bytes, _)| bytes.contains(&pos))
            .map(|(_, offsets)| offsets.clone())
            .unwrap()
    };

    let mut checked = 0;
    for pos in first_damaged..end {
        let damaged = records_at(pos);
        let survivors = damaged.start;
        for flip in [None, Some(0x01u8), Some(0x80u8)] {
            let work = tempfile::tempdir().unwrap();
            copy_dir(template.path(), work.path());
            let seg = work.path().join(&seg_name);
            let mut bytes = std::fs::read(&seg).unwrap();
            let what = match flip {
                None => {
                    bytes.truncate(pos);
                    format!("cut at byte {pos}")
                }
                Some(mask) => {
                    bytes[pos] ^= mask;
                    format!("flip {mask:#04x} at byte {pos}")
                }
            };
            std::fs::write(&seg, &bytes).unwrap();
            if flip.is_some() && damaged.end < RECORDS {
                check_salvage(work.path(), &clock, damaged.clone(), &what);
            } else {
                check_recovery(work.path(), &clock, survivors, &what);
            }
            checked += 1;
        }
    }
    // A cut exactly at the end of the frames loses nothing.
    let work = tempfile::tempdir().unwrap();
    copy_dir(template.path(), work.path());
    let seg = work.path().join(&seg_name);
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..end]).unwrap();
    check_recovery(work.path(), &clock, RECORDS, "cut at the end");
    assert!(checked > 3 * 3 * 100, "{checked} damaged copies checked");
}

#[test]
fn garbage_after_the_last_frame_is_cut_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let batches = write_template(dir.path(), &clock);
    let seg = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let end = batches.last().unwrap().0.end;
    // A valid-looking copy of an earlier batch lands after the end, as a torn, reordered write
    // could leave: its offsets do not follow, so it must not be accepted.
    let copy = bytes[batches[1].0.clone()].to_vec();
    // A clean close cut the file at its last batch; a crash leaves the preallocated space.
    bytes.resize(end + 4096 + copy.len(), 0);
    bytes[end + 100..end + 100 + copy.len()].copy_from_slice(&copy);
    bytes[end..end + copy.len()].copy_from_slice(&copy);
    std::fs::write(seg, &bytes).unwrap();
    let shard = Shard::open(dir.path(), small_options(&clock, 1 << 20)).unwrap();
    assert_eq!(shard.next_offset().get(), RECORDS);
    append_range(&shard, RECORDS, RECORDS + 5, 5, MAX_LEN);
    drop(shard);
    let shard = Shard::open(dir.path(), small_options(&clock, 1 << 20)).unwrap();
    check_records(&read_all(&shard, 0), 0, RECORDS + 5, MAX_LEN);
}
