//! `shard::verify` on a directory the engine wrote is clean; on damaged copies it reports each
//! problem with its file and byte position, and changes nothing.

use crate::common;

use std::path::Path;

use common::*;
use shardlog::log::shard::{verify, Problem};

fn problems(dir: &Path) -> Vec<Problem> {
    let before = snapshot_dir(dir);
    let found = verify(dir).unwrap();
    assert_eq!(snapshot_dir(dir), before, "verify changed a file");
    found
}

/// Byte position of the batch holding offset `o` in `segment`.
fn batch_position(segment: &std::path::Path, o: u64) -> usize {
    batches(segment)
        .into_iter()
        .find(|(_, offsets)| offsets.contains(&o))
        .map(|(bytes, _)| bytes.start)
        .unwrap()
}

#[test]
fn a_directory_the_engine_wrote_is_clean() {
    let (dir, _clock) = written(1, 16 * 1024, 2000, 7, 200);
    assert!(segment_files(dir.path()).len() > 5);
    assert_eq!(problems(dir.path()), []);
}

#[test]
fn a_flipped_bit_is_reported_at_its_frame() {
    let (dir, _clock) = written(1, 16 * 1024, 2000, 7, 200);
    let seg = &segment_files(dir.path())[0];
    let batch = batch_position(seg, 10);
    let at = batch + 30;
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[at] ^= 0x04;
    std::fs::write(seg, &bytes).unwrap();
    let found = problems(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(&found[0].path, seg);
    assert_eq!(found[0].position, Some(batch as u64));
    assert!(found[0].what.contains("CRC"), "{}", found[0]);
}

#[test]
fn a_truncated_segment_and_a_zeroed_page_are_reported() {
    let (dir, _clock) = written(1, 16 * 1024, 2000, 7, 200);
    let segs = segment_files(dir.path());
    let bytes = std::fs::read(&segs[1]).unwrap();
    std::fs::write(&segs[1], &bytes[..bytes.len() - 500]).unwrap();
    let bytes_len_before = |_: &std::path::PathBuf| bytes.len();
    let mut bytes = std::fs::read(&segs[2]).unwrap();
    bytes[8192..12288].fill(0);
    std::fs::write(&segs[2], &bytes).unwrap();
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.path == segs[1] && p.what.contains("not sealed")),
        "{found:?}"
    );
    let cut = found
        .iter()
        .find(|p| p.path == segs[1] && p.position.is_some())
        .expect("the cut is reported");
    assert!(cut.what.contains("cut off"), "{cut}");
    assert!(
        cut.position.unwrap() < (bytes_len_before(&segs[1]) as u64),
        "{cut}"
    );
    let zeroed = found
        .iter()
        .find(|p| p.path == segs[2])
        .expect("the zeroed page is reported");
    assert!(zeroed.position.unwrap() <= 8192, "{zeroed}");
}

#[test]
fn a_deleted_index_and_a_deleted_middle_segment_are_reported() {
    let (dir, _clock) = written(1, 16 * 1024, 2000, 7, 200);
    let segs = segment_files(dir.path());
    std::fs::remove_file(segs[0].with_extension("idx")).unwrap();
    std::fs::remove_file(&segs[2]).unwrap();
    std::fs::remove_file(segs[2].with_extension("idx")).unwrap();
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.path == segs[0].with_extension("idx") && p.what.contains("missing")),
        "{found:?}"
    );
    let gap = found
        .iter()
        .find(|p| p.path == segs[1])
        .expect("the gap is reported");
    assert!(
        gap.what
            .contains(&format!("next segment starts at {}", base_of(&segs[3]))),
        "{gap}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn a_damaged_index_entry_and_garbage_after_the_last_frame_are_reported() {
    // Segments large enough for two index entries (one per 64 KiB of batches).
    let (dir, _clock) = written(1, 160 * 1024, 4000, 7, 200);
    let segs = segment_files(dir.path());
    let idx = segs[0].with_extension("idx");
    let mut bytes = std::fs::read(&idx).unwrap();
    bytes[32 + 24 + 4] ^= 0x01; // the second entry's position
    std::fs::write(&idx, &bytes).unwrap();
    let newest = segs.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    // A clean close cut the file at its last batch; a crash leaves preallocated space after it.
    bytes.resize(bytes.len() + 4096, 0);
    let len = bytes.len();
    bytes[len - 10] = 0x5A; // past the last batch of the active segment
    std::fs::write(newest, &bytes).unwrap();
    let found = problems(dir.path());
    let entry = found
        .iter()
        .find(|p| p.path == idx)
        .expect("the index damage is reported");
    assert_eq!(entry.position, Some(32 + 24), "{entry}");
    assert!(
        found
            .iter()
            .any(|p| &p.path == newest && p.what.contains("after the last frame")),
        "{found:?}"
    );
}

#[test]
fn a_deleted_oldest_segment_is_told_apart_from_retention() {
    use shardlog::{ManualClock, Offset, Shard};
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(ManualClock::new(1_000));
    let shard = Shard::open(dir.path(), common::small_options(&clock, 4096)).unwrap();
    common::append_range(&shard, 0, 400, 10, 60);
    // Retention deletes the oldest segments: clean.
    shard.delete_below(Offset::new(100)).unwrap();
    drop(shard);
    assert!(shardlog::log::shard::verify(dir.path()).unwrap().is_empty());
    // Deleting the oldest remaining segment by hand is not retention: reported, and still
    // after a restart of the writer.
    let oldest = common::segment_files(dir.path())[0].clone();
    std::fs::remove_file(&oldest).unwrap();
    let _ = std::fs::remove_file(oldest.with_extension("idx"));
    drop(Shard::open(dir.path(), common::small_options(&clock, 4096)).unwrap());
    let problems = shardlog::log::shard::verify(dir.path()).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].what.contains("not deleted by retention"),
        "{}",
        problems[0]
    );
    // A repair accepts the loss and records the new start.
    shardlog::log::repair::apply_repair(dir.path(), &Default::default(), 2_000).unwrap();
    assert!(shardlog::log::shard::verify(dir.path()).unwrap().is_empty());
}
