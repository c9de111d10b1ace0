//! Recovery of a damaged active segment: cut the file, or flip a bit, at every byte of its last
//! frames, and check what reopening keeps. A cut (a torn tail) or damage to the last frame
//! leaves exactly the frames before it; damage followed by intact frames is not a torn tail: the
//! intact frames are kept and the damaged record's offset is never handed out again. Either
//! way the shard takes new appends after them.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use shardlog::format::{frame_len, SEGMENT_HEADER_LEN};
use shardlog::{ManualClock, Shard};

const RECORDS: u64 = 40;
const MAX_LEN: usize = 60;
/// How many of the newest frames get damaged at each of their bytes.
const DAMAGED_FRAMES: u64 = 4;

fn write_template(dir: &Path, clock: &Arc<ManualClock>) -> Vec<usize> {
    let shard = Shard::open(dir, small_options(clock, 1 << 20)).unwrap();
    append_range(&shard, 0, RECORDS, 3, MAX_LEN);
    drop(shard);
    // Byte position where each frame starts, plus the end of the last one.
    let mut starts = vec![SEGMENT_HEADER_LEN];
    for o in 0..RECORDS {
        let len = frame_len(key(o).len(), payload(o, MAX_LEN).len());
        starts.push(starts.last().unwrap() + len);
    }
    starts
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
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

/// Reopens a copy whose frame `lost` is damaged while intact frames follow it: every other
/// record is still there, the next offset is past all of them (none is reused), and the shard
/// appends after them and keeps those appends over another reopen.
fn check_salvage(dir: &Path, clock: &Arc<ManualClock>, lost: u64, what: &str) {
    let check = |shard: &Shard, to: u64| {
        let records = read_all(shard, 0);
        let offsets: Vec<u64> = records.iter().map(|r| r.offset.get()).collect();
        let expected: Vec<u64> = (0..to).filter(|&o| o != lost).collect();
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
    let problems = shardlog::shard::verify(dir).unwrap();
    assert!(
        problems.is_empty(),
        "{what}: verify after the repair: {problems:?}"
    );
}

#[test]
fn cut_or_flip_at_every_byte_of_the_last_frames_recovers_the_exact_prefix() {
    let template = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let starts = write_template(template.path(), &clock);
    let seg_name = segment_files(template.path())[0]
        .file_name()
        .unwrap()
        .to_owned();
    let first_damaged = starts[(RECORDS - DAMAGED_FRAMES) as usize];
    let end = *starts.last().unwrap();
    // The frame a byte belongs to: every frame before it survives.
    let frame_of = |pos: usize| starts.partition_point(|&s| s <= pos) as u64 - 1;

    let mut checked = 0;
    for pos in first_damaged..end {
        let survivors = frame_of(pos);
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
            if flip.is_some() && survivors < RECORDS - 1 {
                check_salvage(work.path(), &clock, survivors, &what);
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
    assert!(checked > 3 * 4 * 44, "{checked} damaged copies checked");
}

#[test]
fn garbage_after_the_last_frame_is_cut_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let starts = write_template(dir.path(), &clock);
    let seg = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let end = *starts.last().unwrap();
    // A valid-looking copy of an earlier frame lands after the end, as a torn, reordered write
    // could leave: its offset does not follow, so it must not be accepted.
    let (a, b) = (starts[1], starts[2]);
    let copy = bytes[a..b].to_vec();
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
