//! Tiered storage of a shard: sealed segments uploaded to a bucket, local copies dropped past the
//! local retention, reads of remote-only segments, retention of remote segments, damage.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use shardlog::{
    Bucket, DirBucket, Error, ManualClock, Offset, Shard, ShardOptions, ShardTier, Tier,
    TierOptions,
};

fn tier(root: &Path, options: TierOptions) -> Arc<Tier> {
    let bucket = Arc::new(DirBucket::new(root.join("bucket")).unwrap());
    Arc::new(Tier::new(bucket, options, root.join("cache")).unwrap())
}

fn tiered_options(clock: &Arc<ManualClock>, tier: &Arc<Tier>) -> ShardOptions {
    ShardOptions {
        tier: Some(ShardTier::new(
            Arc::clone(tier),
            "streams/s/1/shardId-000000000000",
        )),
        ..small_options(clock, 16 * 1024)
    }
}

/// A shard in `root/shard` tiered into `root/bucket` with `options`, on a manual clock.
fn tiered_shard(
    root: &Path,
    options: TierOptions,
) -> (PathBuf, Arc<ManualClock>, Arc<Tier>, Shard) {
    let dir = root.join("shard");
    let clock = Arc::new(ManualClock::new(1_000));
    let tier = tier(root, options);
    let shard = Shard::open(&dir, tiered_options(&clock, &tier)).unwrap();
    (dir, clock, tier, shard)
}

/// A tiered shard whose sealed segments keep no local copy once uploaded.
fn remote_only_shard(root: &Path) -> (PathBuf, Arc<ManualClock>, Arc<Tier>, Shard) {
    tiered_shard(
        root,
        TierOptions {
            local_retention_bytes: Some(0),
            local_retention: None,
            ..TierOptions::default()
        },
    )
}

fn local_segments(dir: &Path) -> usize {
    segment_files(dir).len()
}

#[test]
fn sealed_segments_go_remote_and_read_back_after_their_local_copy_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let (dir, clock, tier, shard) = tiered_shard(
        root.path(),
        TierOptions {
            local_retention_bytes: Some(64 * 1024),
            local_retention: None,
            cache_bytes: 48 * 1024,
            ..TierOptions::default()
        },
    );
    append_range(&shard, 0, 3000, 25, 300);
    let before = local_segments(&dir);
    assert!(before > 10, "{before} segments");
    let report = shard.tier_step().unwrap();
    assert_eq!(
        report.uploaded,
        before - 1,
        "every sealed segment: {report:?}"
    );
    assert!(report.dropped_local > 0, "{report:?}");
    let status = shard.tier_status();
    assert_eq!(status.local_only, 0, "{status:?}");
    assert_eq!(status.remote_only, report.dropped_local);
    // The local disk keeps about the local retention: whole segments of 16 KiB.
    let local_bytes: u64 = segment_files(&dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(local_bytes <= 64 * 1024 + 80 * 1024, "{local_bytes}");
    let objects = tier
        .bucket()
        .list("streams/s/1/shardId-000000000000/")
        .unwrap();
    assert_eq!(
        objects.len(),
        2 * report.uploaded + 1,
        "segments, indexes and remote.log"
    );
    // Everything reads back, through a cache smaller than what is remote.
    check_records(&read_all(&shard, 0), 0, 3000, 300);
    check_records(&read_all(&shard, 17), 17, 3000, 300);
    let cache = tier.cache().stats();
    assert!(cache.downloads >= report.dropped_local as u64, "{cache:?}");
    assert!(cache.resident_bytes <= 48 * 1024 + 20 * 1024, "{cache:?}");
    // A second step has nothing to do.
    assert_eq!(shard.tier_step().unwrap().uploaded, 0);
    // Reopened, the shard knows its remote segments from remote.log.
    drop(shard);
    let shard = Shard::open(&dir, tiered_options(&clock, &tier)).unwrap();
    assert_eq!(shard.next_offset(), Offset::new(3000));
    check_records(&read_all(&shard, 0), 0, 3000, 300);
    append_range(&shard, 3000, 3100, 25, 300);
    check_records(&read_all(&shard, 2950), 2950, 3100, 300);
}

#[test]
fn seeking_by_time_downloads_only_the_segment_that_holds_the_time() {
    let root = tempfile::tempdir().unwrap();
    let (_, clock, tier, shard) = remote_only_shard(root.path());
    for i in 0..30u64 {
        clock.set(1_000 + i as i64 * 1_000);
        append_range(&shard, i * 100, (i + 1) * 100, 25, 300);
    }
    shard.tier_step().unwrap();
    assert!(shard.tier_status().remote_only > 10);
    let downloads = tier.cache().stats().downloads;
    let offset = shard.seek_time(15_000).unwrap();
    assert_eq!(offset, Offset::new(1400));
    assert!(
        tier.cache().stats().downloads - downloads <= 2,
        "{:?}",
        tier.cache().stats()
    );
}

#[test]
fn retention_deletes_remote_segments_and_their_objects() {
    let root = tempfile::tempdir().unwrap();
    let (dir, clock, tier, shard) = remote_only_shard(root.path());
    append_range(&shard, 0, 1000, 25, 300);
    clock.set(100_000);
    append_range(&shard, 1000, 2000, 25, 300);
    shard.tier_step().unwrap();
    let prefix = "streams/s/1/shardId-000000000000/";
    let before = tier.bucket().list(prefix).unwrap().len();
    let deleted = shard.delete_before(50_000).unwrap();
    assert_eq!(deleted.records, 1000, "{deleted:?}");
    let after = tier.bucket().list(prefix).unwrap();
    assert!(after.len() < before);
    assert!(after
        .iter()
        .filter(|(key, _)| !key.ends_with("remote.log"))
        .all(|(key, _)| {
            let base: u64 = key[prefix.len()..prefix.len() + 20].parse().unwrap();
            base >= 1000
        }));
    check_records(&read_all(&shard, 0), 1000, 2000, 300);
    drop(shard);
    let shard = Shard::open(&dir, tiered_options(&clock, &tier)).unwrap();
    check_records(&read_all(&shard, 0), 1000, 2000, 300);
}

#[test]
fn a_damaged_remote_object_is_a_corrupt_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let (_, _, _, shard) = remote_only_shard(root.path());
    append_range(&shard, 0, 1000, 25, 300);
    shard.tier_step().unwrap();
    let key = "streams/s/1/shardId-000000000000/00000000000000000000.seg";
    let object = root.path().join("bucket").join(key);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[200] ^= 0x40;
    std::fs::write(&object, &bytes).unwrap();
    match shard.read(Offset::new(0), shardlog::ReadLimits::default()) {
        Err(Error::Corrupt { path, .. }) => {
            assert!(path.ends_with(key), "{}", path.display());
        }
        other => panic!("{other:?}"),
    }
    // The records of other segments still read.
    assert!(!read_all(&shard, 900).is_empty());
}

#[test]
fn an_unreachable_bucket_stops_uploads_not_appends() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shard");
    let clock = Arc::new(ManualClock::new(1_000));
    // The bucket's root becomes a file: every put fails, as against a server that is down.
    let bucket = Arc::new(DirBucket::new(root.path().join("other")).unwrap());
    std::fs::remove_dir_all(root.path().join("other")).unwrap();
    std::fs::write(root.path().join("other"), b"now a file").unwrap();
    let tier = Arc::new(
        Tier::new(
            bucket,
            TierOptions {
                local_retention_bytes: Some(0),
                local_retention: None,
                ..TierOptions::default()
            },
            root.path().join("cache"),
        )
        .unwrap(),
    );
    let shard = Shard::open(&dir, tiered_options(&clock, &tier)).unwrap();
    append_range(&shard, 0, 1000, 25, 300);
    assert!(shard.tier_step().is_err());
    append_range(&shard, 1000, 2000, 25, 300);
    let status = shard.tier_status();
    assert_eq!(status.remote_only + status.both, 0);
    assert!(status.local_only > 5, "{status:?}");
    // The bucket comes back: the backlog goes up and nothing was lost.
    std::fs::remove_file(root.path().join("other")).unwrap();
    std::fs::create_dir(root.path().join("other")).unwrap();
    let report = shard.tier_step().unwrap();
    assert_eq!(report.uploaded, status.local_only);
    assert_eq!(shard.tier_status().local_only, 0);
    check_records(&read_all(&shard, 0), 0, 2000, 300);
}

#[test]
fn an_old_active_segment_is_sealed_for_upload() {
    let root = tempfile::tempdir().unwrap();
    let (dir, clock, _, shard) = tiered_shard(
        root.path(),
        TierOptions {
            max_segment_age: Duration::from_secs(600),
            ..TierOptions::default()
        },
    );
    append_range(&shard, 0, 10, 10, 100);
    assert_eq!(shard.tier_step().unwrap().uploaded, 0);
    clock.set(1_000 + 600_000);
    assert_eq!(shard.tier_step().unwrap().uploaded, 1);
    assert_eq!(shard.tier_status().both, 1);
    // Local retention of a day: nothing dropped yet.
    assert_eq!(local_segments(&dir), 2);
}

/// A store tiered into a directory: `inspect` shows where each segment is and the backlog,
/// `verify` finds nothing wrong with segments that are only remote, and `repair` changes
/// nothing.
#[test]
fn offline_tools_know_remote_segments() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    {
        let store = tiered_store(
            &data,
            &root.path().join("bucket"),
            None,
            TierOptions {
                local_retention_bytes: Some(32 * 1024),
                local_retention: None,
                ..TierOptions::default()
            },
        );
        let stream = store
            .create_stream("orders", shardlog::StreamConfig::provisioned(1))
            .unwrap();
        let payload = vec![7u8; 400];
        for _ in 0..40 {
            let records: Vec<_> = (0..10)
                .map(|_| shardlog::PutRecord::new("k", &payload))
                .collect();
            stream.put_records(&records).unwrap();
        }
        let report = store.tier_now().unwrap();
        assert!(report.dropped_local > 3, "{report:?}");
        // More sealed segments than were uploaded: a backlog.
        for _ in 0..20 {
            let records: Vec<_> = (0..10)
                .map(|_| shardlog::PutRecord::new("k", &payload))
                .collect();
            stream.put_records(&records).unwrap();
        }
    }
    let path = data.to_str().unwrap();
    let out = shardlog(&["inspect", "--json", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shard = &json["streams"][0]["shards"][0];
    let locations: Vec<&str> = shard["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["location"].as_str().unwrap())
        .collect();
    assert!(locations.contains(&"remote"), "{locations:?}");
    assert!(locations.contains(&"local"), "{locations:?}");
    assert!(
        shard["tier"]["backlog_segments"].as_u64().unwrap() > 0,
        "{shard}"
    );
    assert_eq!(
        shard["totals"]["records"].as_u64().unwrap(),
        600,
        "remote records count: {shard}"
    );
    let table = shardlog(&["inspect", path]);
    assert!(text(&table.stdout).contains("upload backlog"));
    // `dump` has no bucket: it starts at the oldest local segment.
    let stream_dir = data.join("streams/orders");
    let dump = shardlog(&["dump", stream_dir.to_str().unwrap(), "--limit", "3"]);
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    assert_eq!(
        text(&dump.stdout).lines().count(),
        3,
        "{}",
        text(&dump.stdout)
    );
    let verify = shardlog(&["verify", path]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let repair = shardlog(&["repair", path]);
    assert!(
        text(&repair.stdout).contains("nothing to repair"),
        "{}",
        text(&repair.stdout)
    );
    // `verify --remote` downloads and checks every remote segment.
    let bucket = root.path().join("bucket");
    let remote = bucket.to_str().unwrap();
    let verify = shardlog(&["verify", "--remote", remote, path]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    assert!(
        text(&verify.stdout).contains("remote segments"),
        "{}",
        text(&verify.stdout)
    );
    let object = std::fs::read_dir(bucket.join("streams/orders"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("shardId-000000000000/00000000000000000000.seg");
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[300] ^= 1;
    std::fs::write(&object, &bytes).unwrap();
    let verify = shardlog(&["verify", "--remote", remote, path]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify.stdout));
    assert!(
        text(&verify.stdout).contains("00000000000000000000.seg")
            && text(&verify.stdout).contains("CRC32"),
        "{}",
        text(&verify.stdout)
    );
    // Without --remote the local store is clean: the damage is only in the bucket.
    assert!(shardlog(&["verify", path]).status.success());
}

#[test]
fn repair_salvages_a_damaged_remote_log_from_the_buckets_copy() {
    let root = tempfile::tempdir().unwrap();
    let (data, bucket) = (root.path().join("data"), root.path().join("bucket"));
    let options = TierOptions {
        local_retention_bytes: Some(0),
        local_retention: None,
        ..TierOptions::default()
    };
    let payload = |i: usize| vec![(i % 251) as u8; 400];
    {
        let store = tiered_store(&data, &bucket, None, options.clone());
        let stream = store
            .create_stream("orders", shardlog::StreamConfig::provisioned(1))
            .unwrap();
        for i in 0..400 {
            stream
                .put_record(&shardlog::PutRecord::new("k", &payload(i)))
                .unwrap();
        }
        assert!(store.tier_now().unwrap().dropped_local > 3);
    }
    let shard_dir = std::fs::read_dir(data.join("streams/orders/shards"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // The second line of remote.log is damaged: the shard no longer opens.
    let log = shard_dir.join("remote.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[second_line + 20] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let read_all_records = |store: &shardlog::Store| {
        let stream = store.stream("orders").unwrap();
        let mut from = Offset::new(0);
        let mut out = Vec::new();
        loop {
            let read = stream.read(shardlog::ShardId(0), from, shardlog::ReadLimits::default())?;
            if read.records.is_empty() {
                return Ok::<_, Error>(out);
            }
            from = read.end.next;
            out.extend(read.records.into_iter().map(|r| r.data.to_vec()));
        }
    };
    {
        let store = tiered_store(&data, &bucket, None, options.clone());
        match read_all_records(&store) {
            Err(Error::Corrupt { path, .. }) => assert!(path.ends_with("remote.log")),
            other => panic!("{other:?}"),
        }
    }
    let path = data.to_str().unwrap();
    // Without the bucket the damaged line would be left out.
    let plan = shardlog(&["repair", path]);
    assert_eq!(plan.status.code(), Some(1));
    assert!(
        text(&plan.stdout).contains("1 damaged lines are left out"),
        "{}",
        text(&plan.stdout)
    );
    // (Applied without the bucket, on a copy of the data: the segment the damaged line
    // recorded is forgotten, and a read meets the gap it leaves as a clean error.)
    let copy = root.path().join("copy");
    copy_dir(&data, &copy);
    let blind = shardlog(&["repair", "--apply", copy.to_str().unwrap()]);
    assert!(blind.status.success(), "{}", text(&blind.stderr));
    {
        let store = tiered_store(&copy, &bucket, None, options.clone());
        match read_all_records(&store) {
            Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    // With it, the line comes from the bucket's copy.
    let remote = bucket.to_str().unwrap();
    let fixed = shardlog(&["repair", "--apply", "--remote", remote, path]);
    assert!(fixed.status.success(), "{}", text(&fixed.stderr));
    assert!(
        text(&fixed.stdout).contains("(1 of them from the bucket's copy)"),
        "{}",
        text(&fixed.stdout)
    );
    assert!(shard_dir.join("remote.log.damaged").exists());
    let verify = shardlog(&["verify", "--remote", remote, path]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    let store = tiered_store(&data, &bucket, None, options);
    let expected: Vec<Vec<u8>> = (0..400).map(payload).collect();
    assert_eq!(read_all_records(&store).unwrap(), expected);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A store in `data` with 16 KiB segments, tiered into the directory `bucket` with `options`
/// (rounds only when asked), on `clock` if given.
fn tiered_store(
    data: &Path,
    bucket: &Path,
    clock: Option<&Arc<ManualClock>>,
    options: TierOptions,
) -> shardlog::Store {
    let mut shard = ShardOptions {
        segment_bytes: 16 * 1024,
        ..ShardOptions::default()
    };
    if let Some(clock) = clock {
        shard.clock = Arc::clone(clock) as Arc<dyn shardlog::Clock>;
    }
    shardlog::Store::open(
        data,
        shardlog::StoreOptions {
            shard,
            retention_interval: None,
            tier: Some(shardlog::TierConfig {
                bucket: Arc::new(DirBucket::new(bucket).unwrap()),
                options: TierOptions {
                    interval: None,
                    ..options
                },
            }),
            ..shardlog::StoreOptions::default()
        },
    )
    .unwrap()
}

/// Every record of every shard of `stream`, by shard index.
fn all_records(stream: &shardlog::Stream) -> std::collections::BTreeMap<u32, Vec<Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    for index in stream.shard_ends().unwrap().keys() {
        let mut from = Offset::new(0);
        let mut records = Vec::new();
        loop {
            let read = stream
                .read(
                    shardlog::ShardId(*index),
                    from,
                    shardlog::ReadLimits::default(),
                )
                .unwrap();
            if read.records.is_empty() {
                break;
            }
            from = read.end.next;
            records.extend(read.records.into_iter().map(|r| r.data.to_vec()));
        }
        out.insert(*index, records);
    }
    out
}

/// A store tiered into a directory, resharded on the way, comes back whole from the bucket
/// alone: streams, topology (parent and children), every record.
#[test]
fn restore_rebuilds_a_resharded_store_from_the_bucket() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let bucket_dir = root.path().join("bucket");
    let store = tiered_store(
        &data,
        &bucket_dir,
        None,
        TierOptions {
            prefix: "prod/".into(),
            local_retention_bytes: Some(0),
            local_retention: None,
            max_segment_age: Duration::ZERO,
            ..TierOptions::default()
        },
    );
    let stream = store
        .create_stream("orders", shardlog::StreamConfig::provisioned(1))
        .unwrap();
    let put = |from: u32| {
        for i in from..from + 300 {
            let data = format!("record {i} {}", "x".repeat(200)).into_bytes();
            stream
                .put_record(&shardlog::PutRecord::new(&format!("key {i}"), &data))
                .unwrap();
        }
    };
    put(0);
    stream
        .split_shard(shardlog::ShardId(0), 1u128 << 127)
        .unwrap();
    put(300);
    store.tier_now().unwrap();
    let before = all_records(&stream);
    assert_eq!(before.len(), 3, "parent and two children");
    assert_eq!(before.values().map(Vec::len).sum::<usize>(), 600);
    drop(stream);
    drop(store);

    let restored = root.path().join("restored");
    let out = shardlog(&[
        "restore",
        "--from",
        bucket_dir.to_str().unwrap(),
        restored.to_str().unwrap(),
    ]);
    // A directory bucket's keys start with the prefix: without it there is nothing to restore,
    // which is an error, not an empty store.
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&restored).unwrap();
    let out = shardlog(&[
        "restore",
        "--from",
        bucket_dir.join("prod").to_str().unwrap(),
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.status.success() && text(&out.stdout).contains("restored 1 streams, 3 shards"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let verify = shardlog(&["verify", restored.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    let store = shardlog::Store::open(&restored, shardlog::StoreOptions::default()).unwrap();
    let stream = store.stream("orders").unwrap();
    assert_eq!(all_records(&stream), before);
    let shards = stream
        .list_shards(&shardlog::stream::ShardFilter::default())
        .unwrap();
    assert_eq!(shards.len(), 3);
    assert_eq!(
        shards
            .iter()
            .filter(|s| s.parent_shard_id.is_some())
            .count(),
        2
    );
    // A directory that holds streams is not restored over.
    drop(stream);
    drop(store);
    let again = shardlog(&[
        "restore",
        "--from",
        bucket_dir.join("prod").to_str().unwrap(),
        restored.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already holds streams"));
}

/// Deleting a stream deletes its objects (at the next tiering pass), but not those of a stream
/// of the same name created since; restore brings back only what was not deleted.
#[test]
fn a_deleted_stream_leaves_the_bucket_and_is_not_restored() {
    let root = tempfile::tempdir().unwrap();
    let bucket_dir = root.path().join("bucket");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = tiered_store(
        &root.path().join("data"),
        &bucket_dir,
        Some(&clock),
        TierOptions {
            max_segment_age: Duration::ZERO,
            ..TierOptions::default()
        },
    );
    let fill = |name: &str| {
        let stream = store
            .create_stream(name, shardlog::StreamConfig::provisioned(1))
            .unwrap();
        for i in 0..100 {
            let data = format!("{name} {i} {}", "y".repeat(300)).into_bytes();
            stream
                .put_record(&shardlog::PutRecord::new("k", &data))
                .unwrap();
        }
    };
    fill("gone");
    fill("kept");
    store.tier_now().unwrap();
    let objects = |stream: &str| {
        DirBucket::new(&bucket_dir)
            .unwrap()
            .list(&format!("streams/{stream}/"))
            .unwrap()
    };
    assert!(!objects("gone").is_empty());
    store.delete_stream("gone").unwrap();
    clock.set(2_000_000);
    fill("gone"); // a new stream of that name, before the bucket is cleaned
    store.tier_now().unwrap();
    let left = objects("gone");
    assert!(
        left.iter()
            .all(|(k, _)| k.starts_with("streams/gone/2000000/")),
        "{left:?}"
    );
    assert!(!left.is_empty());
    store.delete_stream("gone").unwrap();
    store.tier_now().unwrap();
    assert_eq!(objects("gone"), vec![]);
    assert!(!root.path().join("data").join("tier-deletions.log").exists());
    let out = shardlog(&[
        "restore",
        "--from",
        bucket_dir.to_str().unwrap(),
        root.path().join("restored").to_str().unwrap(),
    ]);
    assert!(
        text(&out.stdout).contains("restored 1 streams"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Readers going through the shard while rounds upload and drop local copies (and another
/// round runs at once) never fail: a dropped local copy is read from the bucket.
#[test]
fn reads_and_concurrent_rounds_race_without_errors() {
    let root = tempfile::tempdir().unwrap();
    let (_, _, _, shard) = remote_only_shard(root.path());
    let shard = Arc::new(shard);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (shard, stop) = (Arc::clone(&shard), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if i == 0 {
                        shard.tier_step().unwrap();
                    } else {
                        let records = read_all(&shard, 0);
                        let end = records.len() as u64;
                        check_records(&records, 0, end, 300);
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    for i in 0..40 {
        append_range(&shard, i * 100, (i + 1) * 100, 25, 300);
        shard.tier_step().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        assert!(worker.join().unwrap() > 0);
    }
    check_records(&read_all(&shard, 0), 0, 4000, 300);
    assert!(shard.tier_status().remote_only > 20);
}

/// A reader past the middle of a remote segment has the next one downloaded in the background:
/// reading on finds it cached.
#[test]
fn sequential_reads_of_remote_segments_read_ahead() {
    let root = tempfile::tempdir().unwrap();
    let (_, _, tier, shard) = remote_only_shard(root.path());
    append_range(&shard, 0, 3000, 25, 300);
    shard.tier_step().unwrap();
    assert!(shard.tier_status().remote_only > 5);
    let prefix = "streams/s/1/shardId-000000000000/";
    let bases: Vec<u64> = tier
        .bucket()
        .list(prefix)
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(".seg")?[prefix.len()..].parse().ok())
        .collect();
    // Record by record through the first segment only: no read touches the second.
    for offset in 0..bases[1] {
        let one = shard
            .read(Offset::new(offset), shardlog::ReadLimits::records(1))
            .unwrap();
        assert_eq!(one.records.len(), 1);
    }
    // The second segment arrives anyway: read ahead.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tier.cache().stats().downloads < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no read-ahead: {:?}",
            tier.cache().stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    check_records(&read_all(&shard, 0), 0, 3000, 300);
    let after = tier.cache().stats();
    assert!(after.hits > 0, "{after:?}");
}

/// A consumer group reads a stream whose segments are only remote, as it reads local ones.
#[test]
fn a_consumer_group_reads_remote_only_segments() {
    use shardlog::consumer::{ConsumerGroup, GroupConfig, ProcessOptions};
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(tiered_store(
        &root.path().join("data"),
        &root.path().join("bucket"),
        None,
        TierOptions {
            local_retention_bytes: Some(0),
            local_retention: None,
            max_segment_age: Duration::ZERO,
            ..TierOptions::default()
        },
    ));
    let stream = store
        .create_stream("orders", shardlog::StreamConfig::provisioned(2))
        .unwrap();
    for i in 0..600 {
        let data = format!("{i} {}", "q".repeat(250));
        stream
            .put_record(&shardlog::PutRecord::new(
                &format!("key {i}"),
                data.as_bytes(),
            ))
            .unwrap();
    }
    store.tier_now().unwrap();
    assert!(store.tier_status().segments.remote_only >= 4);
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("orders")).unwrap();
    let worker = group.worker("w");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        worker
            .process_round(
                &ProcessOptions::default(),
                &mut |_: shardlog::ShardId, records: &[shardlog::StreamRecord]| {
                    for r in records {
                        let text = String::from_utf8(r.data.to_vec()).unwrap();
                        seen.insert(text.split(' ').next().unwrap().parse::<u32>().unwrap());
                    }
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
    }
    assert_eq!(seen, (0..600).collect());
    assert!(store.tier_status().cache.downloads > 0);
}

/// A subscription on a replica's store (a data directory kept in step with the primary's
/// bucket, in this process) delivers what the primary uploaded, and is woken when the replica
/// takes up new uploads.
#[test]
fn a_subscription_on_a_replica_is_woken_by_new_uploads() {
    use shardlog::consumer::{ShardSubscription, SubscribeOptions};
    let root = tempfile::tempdir().unwrap();
    let bucket_dir = root.path().join("bucket");
    let primary = tiered_store(
        &root.path().join("primary"),
        &bucket_dir,
        None,
        TierOptions {
            max_segment_age: Duration::ZERO,
            ..TierOptions::default()
        },
    );
    let stream = primary
        .create_stream("orders", shardlog::StreamConfig::provisioned(1))
        .unwrap();
    stream
        .register_consumer("fan-out", &Default::default())
        .unwrap();
    let put = |from: u32, to: u32| {
        for i in from..to {
            stream
                .put_record(&shardlog::PutRecord::new("k", format!("{i}").as_bytes()))
                .unwrap();
        }
    };
    put(0, 100);
    primary.tier_now().unwrap();

    let replica_dir = root.path().join("replica");
    let bucket = DirBucket::new(&bucket_dir).unwrap();
    shardlog::replica::sync_from_bucket(&bucket, "", &replica_dir).unwrap();
    let replica = Arc::new(tiered_store(
        &replica_dir,
        &bucket_dir,
        None,
        TierOptions {
            local_retention_bytes: Some(0),
            ..TierOptions::default()
        },
    ));
    let mut subscription = ShardSubscription::open(
        Arc::clone(&replica),
        "orders",
        "fan-out",
        shardlog::ShardId(0),
        SubscribeOptions {
            max_bytes_per_sec: None,
            ..SubscribeOptions::new(shardlog::Start::TrimHorizon)
        },
    )
    .unwrap();
    let first = subscription
        .next_event(Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_eq!(first.records.len(), 100);
    // The primary uploads more; the replica takes it up while the subscription waits.
    put(100, 150);
    primary.tier_now().unwrap();
    let follower = {
        let replica = Arc::clone(&replica);
        let replica_dir = replica_dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            shardlog::replica::sync_from_bucket(&bucket, "", &replica_dir).unwrap();
            replica.follow().unwrap()
        })
    };
    let started = std::time::Instant::now();
    let next = subscription
        .next_event(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(next.records.len(), 50, "{next:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "not woken");
    assert_eq!(follower.join().unwrap(), 1);
}
