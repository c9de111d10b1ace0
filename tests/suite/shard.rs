//! Behaviour of a shard through its public API.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use shardlog::{
    Error, FlushPolicy, ManualClock, NewRecord, Offset, ReadLimits, RecordError, Shard,
    ShardOptions,
};

fn record<'a>(key: &'a [u8], data: &'a [u8]) -> NewRecord<'a> {
    NewRecord {
        partition_key: key,
        explicit_hash_key: Some(7),
        data,
    }
}

#[test]
fn appends_get_consecutive_offsets_and_read_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
    assert_eq!(shard.next_offset(), Offset::new(0));
    append_range(&shard, 0, 1000, 37, 300);
    assert_eq!(shard.next_offset(), Offset::new(1000));
    let all = read_all(&shard, 0);
    check_records(&all, 0, 1000, 300);
    // Explicit hash keys are stored; the others are the MD5 of the partition key.
    assert_eq!(all[6].hash_key(), 6);
    assert_eq!(all[6].explicit_hash_key, Some(6));
    assert_eq!(all[5].explicit_hash_key, None);
    assert_eq!(
        all[5].hash_key(),
        shardlog::hash_key::hash_key_of_bytes(&all[5].partition_key)
    );
    check_records(&read_all(&shard, 990), 990, 1000, 300);
}

#[test]
fn rolls_into_many_segments_and_everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    {
        let shard = Shard::open(dir.path(), small_options(&clock, 8192)).unwrap();
        append_range(&shard, 0, 3000, 10, 200);
        assert!(
            shard.segment_count() > 10,
            "{} segments",
            shard.segment_count()
        );
        check_records(&read_all(&shard, 0), 0, 3000, 200);
    }
    let shard = Shard::open(dir.path(), small_options(&clock, 8192)).unwrap();
    assert_eq!(shard.next_offset(), Offset::new(3000));
    check_records(&read_all(&shard, 0), 0, 3000, 200);
    check_records(&read_all(&shard, 1234), 1234, 3000, 200);
    append_range(&shard, 3000, 3500, 50, 200);
    check_records(&read_all(&shard, 2900), 2900, 3500, 200);
}

#[test]
fn segment_files_are_named_by_their_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let shard = Shard::open(dir.path(), small_options(&clock, 8192)).unwrap();
    append_range(&shard, 0, 500, 1, 100);
    let files = segment_files(dir.path());
    assert!(files.len() > 2);
    for file in &files {
        let name = file.file_stem().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 20, "{name}");
        let base: u64 = name.parse().unwrap();
        let first = shard
            .read(Offset::new(base), ReadLimits::default())
            .unwrap();
        assert_eq!(first.records[0].offset, Offset::new(base));
    }
}

#[test]
fn read_limits_bound_records_and_bytes_but_always_make_progress() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
    let big = vec![1u8; 5000];
    for _ in 0..10 {
        shard.append(&[record(b"k", &big)]).unwrap();
    }
    let limits = ReadLimits {
        max_records: 3,
        max_bytes: usize::MAX,
    };
    let b = shard.read(Offset::new(0), limits).unwrap();
    assert_eq!(b.records.len(), 3);
    assert_eq!(b.next_offset, Offset::new(3));

    let limits = ReadLimits {
        max_records: 100,
        max_bytes: 12_000,
    };
    let b = shard.read(Offset::new(0), limits).unwrap();
    assert_eq!(
        b.records.len(),
        2,
        "5001 + 5001 fit in 12000, a third does not"
    );

    let limits = ReadLimits {
        max_records: 100,
        max_bytes: 10,
    };
    let b = shard.read(Offset::new(4), limits).unwrap();
    assert_eq!(
        b.records.len(),
        1,
        "an oversized first record is still returned"
    );
    assert_eq!(b.next_offset, Offset::new(5));
}

#[test]
fn reading_past_the_end_returns_nothing_and_waits_there() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
    let empty = shard.read(Offset::new(0), ReadLimits::default()).unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.next_offset, Offset::new(0));
    append_range(&shard, 0, 10, 10, 10);
    let past = shard.read(Offset::new(50), ReadLimits::default()).unwrap();
    assert!(past.records.is_empty());
    assert_eq!(past.next_offset, Offset::new(50));
    let at_end = shard.read(Offset::new(10), ReadLimits::default()).unwrap();
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.next_offset, Offset::new(10));
}

#[test]
fn seek_by_time_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000));
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    // Offsets 0..400 arrive at 10_000 + 10 * (offset / 4): groups of four share a millisecond.
    for o in (0..400u64).step_by(4) {
        clock.set(10_000 + 10 * (o as i64 / 4));
        append_range(&shard, o, o + 4, 4, 120);
    }
    assert!(shard.segment_count() > 5);
    assert_eq!(shard.seek_time(0).unwrap(), Offset::new(0));
    assert_eq!(shard.seek_time(10_000).unwrap(), Offset::new(0));
    assert_eq!(shard.seek_time(10_001).unwrap(), Offset::new(4));
    assert_eq!(shard.seek_time(10_010).unwrap(), Offset::new(4));
    assert_eq!(shard.seek_time(10_500).unwrap(), Offset::new(200));
    assert_eq!(shard.seek_time(10_990).unwrap(), Offset::new(396));
    assert_eq!(
        shard.seek_time(10_991).unwrap(),
        Offset::new(400),
        "none yet"
    );
    let b = shard.read_from_time(10_255, ReadLimits::default()).unwrap();
    assert_eq!(b.records[0].offset, Offset::new(104));
    assert_eq!(b.records[0].arrival_ms, 10_260);
    // The same answers after a reopen, when sealed segments are loaded lazily.
    drop(shard);
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    assert_eq!(shard.seek_time(10_500).unwrap(), Offset::new(200));
    assert_eq!(shard.seek_time(10_001).unwrap(), Offset::new(4));
}

#[test]
fn arrival_times_never_go_backwards_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(50_000));
    {
        let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
        append_range(&shard, 0, 10, 1, 10);
        clock.set(40_000); // the wall clock jumps back
        append_range(&shard, 10, 20, 1, 10);
    }
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    clock.set(30_000);
    append_range(&shard, 20, 30, 1, 10);
    let all = read_all(&shard, 0);
    assert!(all.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
    assert_eq!(all.last().unwrap().arrival_ms, 50_000);
}

#[test]
fn invalid_records_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let options = ShardOptions {
        max_record_bytes: 2000,
        ..ShardOptions::default()
    };
    let shard = Shard::open(dir.path(), options).unwrap();
    let ok = [1u8; 10];
    let long_key = [b'k'; 1025];
    let big = [0u8; 1999];
    let cases: Vec<(Vec<NewRecord<'_>>, usize, RecordError)> = vec![
        (
            vec![record(b"a", &ok), record(b"", &ok)],
            1,
            RecordError::EmptyPartitionKey,
        ),
        (
            vec![record(&long_key, &ok)],
            0,
            RecordError::PartitionKeyTooLong {
                len: 1025,
                limit: 1024,
            },
        ),
        (
            vec![record(b"a", &ok), record(b"a", &ok), record(b"kk", &big)],
            2,
            RecordError::TooLarge {
                size: 2001,
                limit: 2000,
            },
        ),
    ];
    for (records, bad_index, expected) in cases {
        match shard.append(&records) {
            Err(Error::InvalidRecord { index, error }) => {
                assert_eq!(index, bad_index);
                assert_eq!(error, expected);
            }
            other => panic!("expected InvalidRecord, got {other:?}"),
        }
    }
    assert!(matches!(
        shard.append(&[]),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(shard.next_offset(), Offset::new(0));
    assert!(read_all(&shard, 0).is_empty());
    // A record of exactly the limit is fine, and a 1024-byte key too.
    shard.append(&[record(b"k", &big)]).unwrap();
    shard.append(&[record(&long_key[..1024], &ok)]).unwrap();
    assert_eq!(read_all(&shard, 0).len(), 2);
}

#[test]
fn options_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for options in [
        ShardOptions {
            segment_bytes: 100,
            ..ShardOptions::default()
        },
        ShardOptions {
            segment_bytes: 1 << 40,
            ..ShardOptions::default()
        },
        ShardOptions {
            max_record_bytes: 0,
            ..ShardOptions::default()
        },
        ShardOptions {
            max_record_bytes: 10 * 1024 * 1024 + 1,
            ..ShardOptions::default()
        },
        ShardOptions {
            batch_bytes: shardlog::log::shard::MIN_BATCH_BYTES - 1,
            ..ShardOptions::default()
        },
        ShardOptions {
            batch_bytes: shardlog::log::shard::MAX_BATCH_BYTES + 1,
            ..ShardOptions::default()
        },
    ] {
        let name = match Shard::open(dir.path(), options) {
            Err(Error::InvalidArgument { name, .. }) => name,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert!(
            ["segment_bytes", "max_record_bytes", "batch_bytes"].contains(&name),
            "{name}"
        );
    }
}

/// A shard written with one batch size reads back, and takes appends, with another: the size is
/// the writer's choice, not part of the format.
#[test]
fn batch_size_can_change_between_opens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let open = |batch_bytes| {
        Shard::open(
            dir.path(),
            ShardOptions {
                batch_bytes,
                ..small_options(&clock, 1024 * 1024)
            },
        )
        .unwrap()
    };
    let shard = open(64 * 1024);
    append_range(&shard, 0, 2000, 500, 120);
    drop(shard);
    let shard = open(shardlog::log::shard::MIN_BATCH_BYTES);
    append_range(&shard, 2000, 4000, 500, 120);
    check_records(&read_all(&shard, 0), 0, 4000, 120);
    drop(shard);
    let segment = &segment_files(dir.path())[0];
    let counts: Vec<u64> = common::batches(segment)
        .into_iter()
        .map(|(_, offsets)| offsets.end - offsets.start)
        .collect();
    assert_eq!(counts[..4], [500, 500, 500, 500], "{counts:?}");
    assert!(counts[4..].iter().all(|&n| n < 10), "{counts:?}");
    assert_eq!(shardlog::log::shard::verify(dir.path()).unwrap(), vec![]);
}

#[test]
fn ten_mib_records_are_accepted_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let options = ShardOptions {
        max_record_bytes: 10 * 1024 * 1024,
        segment_bytes: 1 << 20,
        ..ShardOptions::default()
    };
    let shard = Shard::open(dir.path(), options).unwrap();
    let data = vec![0xAB; 10 * 1024 * 1024 - 1];
    shard.append(&[record(b"k", &data)]).unwrap();
    shard.append(&[record(b"k", b"small")]).unwrap();
    let all = read_all(&shard, 0);
    assert_eq!(all[0].data.len(), data.len());
    assert_eq!(&all[1].data[..], b"small");
}

#[test]
fn a_second_writer_is_locked_out_but_readers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
    append_range(&shard, 0, 100, 10, 50);
    match Shard::open(dir.path(), ShardOptions::default()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    let reader = Shard::open_read_only(dir.path(), ShardOptions::default()).unwrap();
    check_records(&read_all(&reader, 0), 0, 100, 50);
    assert!(matches!(
        reader.append(&[record(b"k", b"x")]),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        reader.delete_before(i64::MAX),
        Err(Error::ReadOnly { .. })
    ));
    drop(shard);
    Shard::open(dir.path(), ShardOptions::default()).unwrap();
}

#[test]
fn a_read_only_open_changes_no_byte() {
    let (dir, clock) = written(1, 4096, 300, 7, 100);
    // Damage the newest segment's tail and drop an index: a writer would repair both.
    let files = segment_files(dir.path());
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let len = bytes.len();
    bytes[len - 10] ^= 0xFF;
    std::fs::write(newest, &bytes).unwrap();
    std::fs::remove_file(files[0].with_extension("idx")).unwrap();
    let before = snapshot_dir(dir.path());
    let reader = Shard::open_read_only(dir.path(), small_options(&clock, 4096)).unwrap();
    let all = read_all(&reader, 0);
    assert!(!all.is_empty());
    check_records(&all, 0, all.len() as u64, 100);
    assert_eq!(snapshot_dir(dir.path()), before);
}

#[test]
fn retention_deletes_whole_expired_segments_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    for o in (0..600u64).step_by(20) {
        clock.set(o as i64); // arrival time == first offset of the batch
        append_range(&shard, o, o + 20, 20, 100);
    }
    let segments_before = shard.segment_count();
    let reader_batch = shard.read(Offset::new(0), ReadLimits::default()).unwrap();

    let deleted = shard.delete_before(300).unwrap();
    assert!(deleted.segments > 0 && deleted.segments < segments_before);
    assert!(deleted.bytes > 0);
    let first = shard.first_offset();
    assert_eq!(deleted.records, first.get());
    assert!(
        first.get() <= 300,
        "records at or after the cut-off are kept"
    );
    let kept = read_all(&shard, 0);
    assert_eq!(
        kept[0].offset, first,
        "a read from a deleted offset starts at the oldest"
    );
    check_records(&kept, first.get(), 600, 100);
    // Records a reader already holds stay valid after their segment is unlinked.
    check_records(
        &reader_batch.records,
        0,
        reader_batch.records.len() as u64,
        100,
    );

    assert_eq!(
        shard.delete_before(0).unwrap(),
        shardlog::Deleted::default()
    );
    drop(shard);
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    assert_eq!(shard.first_offset(), first);
    assert_eq!(shard.next_offset(), Offset::new(600));
}

#[test]
fn retention_can_empty_a_shard_without_losing_its_next_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(100));
    let shard = Shard::open(dir.path(), small_options(&clock, 1 << 20)).unwrap();
    append_range(&shard, 0, 50, 10, 100);
    assert_eq!(
        shard.segment_count(),
        1,
        "everything is in the active segment"
    );
    clock.set(10_000);
    let deleted = shard.delete_before(5_000).unwrap();
    assert_eq!(deleted.segments, 1);
    assert_eq!(deleted.records, 50);
    assert!(read_all(&shard, 0).is_empty());
    assert_eq!(shard.first_offset(), Offset::new(50));
    drop(shard);
    let shard = Shard::open(dir.path(), small_options(&clock, 1 << 20)).unwrap();
    assert_eq!(shard.next_offset(), Offset::new(50));
    append_range(&shard, 50, 60, 10, 100);
    check_records(&read_all(&shard, 0), 50, 60, 100);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let options = ShardOptions {
        max_segment_age: Some(Duration::from_secs(60)),
        ..small_options(&clock, 1 << 20)
    };
    let shard = Shard::open(dir.path(), options).unwrap();
    append_range(&shard, 0, 10, 10, 10);
    clock.advance(59_999);
    append_range(&shard, 10, 20, 10, 10);
    assert_eq!(shard.segment_count(), 1);
    clock.advance(1);
    append_range(&shard, 20, 30, 10, 10);
    assert_eq!(shard.segment_count(), 2);
    check_records(&read_all(&shard, 0), 0, 30, 10);
}

#[test]
fn an_empty_shard_costs_no_segment_file() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
    assert_eq!(shard.segment_count(), 0);
    assert!(segment_files(dir.path()).is_empty());
    shard.append(&[record(b"k", b"v")]).unwrap();
    // One small record costs the first allocation chunk, not a whole 128 MiB segment.
    let seg = &segment_files(dir.path())[0];
    use std::os::unix::fs::MetadataExt;
    let on_disk = std::fs::metadata(seg).unwrap().blocks() * 512;
    assert!(on_disk <= 64 * 1024, "{on_disk} bytes on disk");
}

#[test]
fn every_flush_policy_stores_the_same_records() {
    for flush in [
        FlushPolicy::Always,
        FlushPolicy::GroupCommit {
            interval: Duration::from_millis(2),
        },
        FlushPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = ShardOptions {
            flush,
            segment_bytes: 64 * 1024,
            ..ShardOptions::default()
        };
        let shard = Shard::open(dir.path(), options.clone()).unwrap();
        append_range(&shard, 0, 400, 20, 500);
        shard.flush().unwrap();
        drop(shard);
        let shard = Shard::open(dir.path(), options).unwrap();
        check_records(&read_all(&shard, 0), 0, 400, 500);
    }
}

#[test]
fn concurrent_appenders_share_group_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = ShardOptions {
        flush: FlushPolicy::GroupCommit {
            interval: Duration::from_millis(1),
        },
        segment_bytes: 256 * 1024,
        ..ShardOptions::default()
    };
    let shard = Arc::new(Shard::open(dir.path(), options).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let shard = Arc::clone(&shard);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..50u32 {
                    let data = [&[t][..], &i.to_le_bytes()].concat();
                    let a = shard
                        .append(&[NewRecord {
                            partition_key: &[b'p', t],
                            explicit_hash_key: None,
                            data: &data,
                        }])
                        .unwrap();
                    mine.push((a.first, data));
                }
                mine
            })
        })
        .collect();
    let mut expected: Vec<(Offset, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    expected.sort();
    let all = read_all(&shard, 0);
    assert_eq!(all.len(), 200);
    for ((offset, data), record) in expected.iter().zip(&all) {
        assert_eq!(record.offset, *offset);
        assert_eq!(&record.data[..], &data[..]);
    }
}

#[test]
fn readers_never_see_a_partial_append_while_the_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(5));
    let shard = Arc::new(Shard::open(dir.path(), small_options(&clock, 16 * 1024)).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let shard = Arc::clone(&shard);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut cursor = 0u64;
                let mut seen = 0u64;
                while !done.load(Ordering::Acquire) || cursor < shard.next_offset().get() {
                    let b = shard
                        .read(Offset::new(cursor), ReadLimits::default())
                        .unwrap();
                    // Appends are batches of 25: a reader sees whole batches only.
                    assert_eq!(b.next_offset.get() % 25, 0, "partial batch visible");
                    check_records(&b.records, cursor, b.next_offset.get(), 200);
                    seen += b.records.len() as u64;
                    cursor = b.next_offset.get();
                }
                seen
            })
        })
        .collect();
    append_range(&shard, 0, 5000, 25, 200);
    done.store(true, Ordering::Release);
    for r in readers {
        assert_eq!(r.join().unwrap(), 5000);
    }
}

#[test]
fn a_lost_index_is_rebuilt_and_reads_stay_correct() {
    let (dir, clock) = written(1, 64 * 1024, 2000, 10, 300);
    let files = segment_files(dir.path());
    // Remove one index, garble another, truncate a third.
    std::fs::remove_file(files[0].with_extension("idx")).unwrap();
    let idx1 = files[1].with_extension("idx");
    let mut garbled = std::fs::read(&idx1).unwrap();
    for b in garbled.iter_mut().skip(40) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&idx1, garbled).unwrap();
    let idx_last = files.last().unwrap().with_extension("idx");
    std::fs::write(&idx_last, &std::fs::read(&idx_last).unwrap()[..50]).unwrap();

    let shard = Shard::open(dir.path(), small_options(&clock, 64 * 1024)).unwrap();
    check_records(&read_all(&shard, 0), 0, 2000, 300);
    for o in [0u64, 1, 333, 1000, 1999] {
        let b = shard.read(Offset::new(o), ReadLimits::default()).unwrap();
        assert_eq!(b.records[0].offset, Offset::new(o));
    }
    assert!(
        files[0].with_extension("idx").exists(),
        "the index was rewritten"
    );
}

#[test]
fn damage_in_a_sealed_segment_is_a_typed_error_naming_file_and_position() {
    let (dir, clock) = written(1, 8192, 500, 5, 200);
    let files = segment_files(dir.path());
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(victim, &bytes).unwrap();

    let shard = Shard::open(dir.path(), small_options(&clock, 8192)).unwrap();
    let mut cursor = Offset::new(0);
    let mut good = Vec::new();
    let error = loop {
        match shard.read(cursor, ReadLimits::default()) {
            Ok(b) if b.records.is_empty() => panic!("damage went unnoticed"),
            Ok(b) => {
                cursor = b.next_offset;
                good.extend(b.records);
            }
            Err(e) => break e,
        }
    };
    match &error {
        Error::Corrupt { path, position, .. } => {
            assert_eq!(path, victim);
            assert!(*position <= at as u64 + 1, "{position} vs damage at {at}");
            assert!(*position > 0);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // What was returned before the damage is intact.
    check_records(&good, 0, good.len() as u64, 200);
    // Reads past the damaged segment still work.
    let after = base_of(&files[2]);
    check_records(&read_all(&shard, after), after, 500, 200);
}

#[test]
fn a_segment_from_a_newer_format_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
        append_range(&shard, 0, 10, 10, 10);
    }
    let seg = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[8] = 99; // version field
    std::fs::write(seg, &bytes).unwrap();
    match Shard::open(dir.path(), ShardOptions::default()) {
        Err(Error::UnsupportedVersion { path, found, .. }) => {
            assert_eq!(&path, seg);
            assert_eq!(found, 99);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn a_segment_left_half_created_by_a_crash_is_reinitialised() {
    let (dir, clock) = written(1, 4096, 100, 10, 100);
    // A crash right after creating the next segment file, before its header reached the disk.
    let files = segment_files(dir.path());
    let last = files.last().unwrap();
    let last_base: u64 = base_of(last);
    std::fs::remove_file(last).unwrap();
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    let next = shard.next_offset().get();
    assert_eq!(next, last_base, "ends where the sealed segments end");
    drop(shard);
    let zeroed = dir.path().join(format!("{:020}.seg", next));
    std::fs::write(&zeroed, vec![0u8; 8192]).unwrap();
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    assert_eq!(shard.next_offset().get(), next);
    append_range(&shard, next, next + 20, 10, 100);
    check_records(&read_all(&shard, 0), 0, next + 20, 100);
}

#[test]
fn a_garbage_header_with_content_is_not_silently_discarded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = Shard::open(dir.path(), ShardOptions::default()).unwrap();
        append_range(&shard, 0, 10, 10, 10);
    }
    let seg = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[20] ^= 0xFF; // inside the header
    std::fs::write(seg, &bytes).unwrap();
    match Shard::open(dir.path(), ShardOptions::default()) {
        Err(Error::Corrupt { path, position, .. }) => {
            assert_eq!(&path, seg);
            assert_eq!(position, 0);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(seg).unwrap(),
        bytes,
        "the file is left for repair"
    );
}

#[test]
fn a_newest_segment_without_its_index_file_reopens() {
    // A crash between creating a segment file and its index file leaves exactly this.
    let (dir, clock) = written(1, 4096, 200, 10, 100);
    let newest = segment_files(dir.path()).pop().unwrap();
    std::fs::remove_file(newest.with_extension("idx")).unwrap();
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    check_records(&read_all(&shard, 0), 0, 200, 100);
    append_range(&shard, 200, 210, 10, 100);
    drop(shard);
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    check_records(&read_all(&shard, 0), 0, 210, 100);
}

#[test]
fn arrival_times_stay_monotonic_after_retention_empties_the_shard_and_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    {
        let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
        append_range(&shard, 0, 5, 5, 10);
        assert_eq!(shard.delete_before(1_000_001).unwrap().records, 5);
    }
    clock.set(999_000); // the wall clock steps back while the shard is down
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    append_range(&shard, 5, 6, 1, 10);
    let all = read_all(&shard, 0);
    assert_eq!(all[0].offset, Offset::new(5));
    assert_eq!(
        all[0].arrival_ms, 1_000_000,
        "no earlier than the deleted records"
    );
}

#[test]
fn retention_never_deletes_the_segment_that_holds_the_next_offset() {
    // The newest segment is sealed (a crash came between sealing it and creating the next one),
    // and everything has expired: deleting it all must not lose where the offsets continue.
    let (dir, clock) = written(1_000, 4096, 100, 10, 100);
    let newest = segment_files(dir.path()).pop().unwrap();
    let newest_base = base_of(&newest);
    std::fs::remove_file(&newest).unwrap();
    std::fs::remove_file(newest.with_extension("idx")).unwrap();
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    assert_eq!(shard.next_offset().get(), newest_base);
    clock.set(10_000);
    let deleted = shard.delete_before(5_000).unwrap();
    assert_eq!(deleted.records, newest_base);
    drop(shard);
    let shard = Shard::open(dir.path(), small_options(&clock, 4096)).unwrap();
    assert_eq!(
        shard.next_offset().get(),
        newest_base,
        "offsets must never be reused"
    );
    append_range(&shard, newest_base, newest_base + 5, 5, 100);
    check_records(&read_all(&shard, 0), newest_base, newest_base + 5, 100);
}

/// A reader polling an empty shard while its first records are appended (and its first segment
/// created) must never be moved past records it did not get. (A read once took the segment list
/// and then the next offset: an append between the two made it skip the shard's first batch.)
#[test]
fn a_reader_of_an_empty_shard_never_skips_the_first_append() {
    let clock = Arc::new(ManualClock::new(5));
    for _ in 0..300 {
        let dir = tempfile::tempdir().unwrap();
        let shard = Arc::new(Shard::open(dir.path(), small_options(&clock, 16 * 1024)).unwrap());
        let started = Arc::new(AtomicBool::new(false));
        let reader = {
            let (shard, started) = (Arc::clone(&shard), Arc::clone(&started));
            std::thread::spawn(move || loop {
                started.store(true, Ordering::Release);
                let b = shard.read(Offset::new(0), ReadLimits::default()).unwrap();
                if b.next_offset.get() > 0 {
                    return (b.records.len() as u64, b.next_offset.get());
                }
            })
        };
        while !started.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        append_range(&shard, 0, 100, 25, 200);
        let (got, next) = reader.join().unwrap();
        assert_eq!(
            got, next,
            "the read moved to {next} but returned {got} records"
        );
    }
}

/// `seek_time` past the newest record, racing with an append of records that arrive at or after
/// `t`: it answers where those records start, never past them.
#[test]
fn seeking_a_time_while_records_of_that_time_arrive_never_skips_them() {
    for _ in 0..300 {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(5));
        let shard = Arc::new(Shard::open(dir.path(), small_options(&clock, 16 * 1024)).unwrap());
        append_range(&shard, 0, 100, 25, 200);
        clock.set(10);
        let started = Arc::new(AtomicBool::new(false));
        let seeker = {
            let (shard, started) = (Arc::clone(&shard), Arc::clone(&started));
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                loop {
                    started.store(true, Ordering::Release);
                    let at = shard.seek_time(10).unwrap().get();
                    answers.push(at);
                    if shard.next_offset().get() == 125 && at == 100 {
                        return answers;
                    }
                    if at > 100 {
                        return answers;
                    }
                }
            })
        };
        while !started.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        append_range(&shard, 100, 125, 25, 200);
        let answers = seeker.join().unwrap();
        assert!(
            answers.iter().all(|&a| a == 100),
            "the first record at t=10 is 100: {answers:?}"
        );
    }
}
