//! A stream's own tiering setting in a tiered store: off (its segments stay local), or its own
//! local retention; changed while the store runs, and kept across a reopen.

use crate::common::tiered_store_options;

use std::path::Path;
use std::sync::Arc;

use shardlog::{PutRecord, Store, StreamConfig, StreamTiering, TierOptions};

/// A store tiering into `root/bucket` that keeps a day locally (rounds when asked).
fn store(root: &Path) -> Store {
    let options = tiered_store_options(&root.join("bucket"), 16 * 1024, TierOptions::default());
    Store::open(root.join("data"), options).unwrap()
}

fn fill(stream: &shardlog::Stream) {
    for i in 0..300u32 {
        stream
            .put_record(&PutRecord::new("k", &[i as u8; 300]))
            .unwrap();
    }
}

#[test]
fn each_stream_tiers_as_its_own_setting_says() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let with = |tiering| StreamConfig {
        tiering,
        ..StreamConfig::provisioned(1)
    };
    let plain = store.create_stream("plain", with(None)).unwrap();
    let local = store
        .create_stream("local", with(Some(StreamTiering::off())))
        .unwrap();
    let archive = store
        .create_stream(
            "archive",
            with(Some(StreamTiering {
                local_retention_bytes: Some(0),
                ..StreamTiering::on()
            })),
        )
        .unwrap();
    for stream in [&plain, &local, &archive] {
        fill(stream);
    }
    store.tier_now().unwrap();
    // The store's setting: uploaded, kept locally (a day).
    let s = plain.tier_status();
    assert!(
        s.both > 3 && s.local_only == 0 && s.remote_only == 0,
        "{s:?}"
    );
    // Off: nothing uploaded, the backlog stays.
    let s = local.tier_status();
    assert!(
        s.local_only > 3 && s.both == 0 && s.remote_only == 0,
        "{s:?}"
    );
    // Its own local retention: only remote.
    let s = archive.tier_status();
    assert!(s.remote_only > 3 && s.local_only == 0, "{s:?}");
    // Turned on while the store runs; kept across a reopen.
    local.set_tiering(None).unwrap();
    archive.set_tiering(Some(StreamTiering::off())).unwrap();
    store.tier_now().unwrap();
    let s = local.tier_status();
    assert!(s.both > 3 && s.local_only == 0, "{s:?}");
    drop((plain, local, archive));
    drop(store);
    let data = root.path().join("data");
    let inspected = crate::common::shardlog(&["inspect", "--json", data.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    let archive_json = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "archive")
        .unwrap();
    assert_eq!(archive_json["tiering"]["enabled"], false, "{archive_json}");
    let human = crate::common::shardlog(&["inspect", data.to_str().unwrap()]);
    assert!(
        crate::common::text(&human.stdout).contains("tiering off"),
        "{}",
        crate::common::text(&human.stdout)
    );
    let store = self::store(root.path());
    let archive = store.stream("archive").unwrap();
    assert_eq!(archive.describe().tiering, Some(StreamTiering::off()));
    fill(&archive);
    store.tier_now().unwrap();
    let s = archive.tier_status();
    assert!(s.local_only > 0 && s.remote_only > 3, "{s:?}");
    // Its remote segments still read.
    let read = archive
        .read(
            shardlog::ShardId(0),
            shardlog::Offset::new(0),
            shardlog::ReadLimits::records(10),
        )
        .unwrap();
    assert_eq!(read.records.len(), 10);
}

#[test]
fn a_folded_topology_log_leaves_the_bucket_too() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    stream
        .split_shard(shardlog::ShardId(0), u128::MAX / 2)
        .unwrap();
    assert!(root
        .path()
        .join("data/streams/orders/topology.log")
        .exists());
    store.tier_now().unwrap();
    let objects = |suffix: &str| {
        store
            .options()
            .tier
            .as_ref()
            .unwrap()
            .bucket
            .list("streams/orders/")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .count()
    };
    assert_eq!(objects("/topology.log"), 1);
    // A change other than the shards' writes stream.json whole and folds the log away.
    stream.set_tiering(Some(StreamTiering::on())).unwrap();
    assert!(!root
        .path()
        .join("data/streams/orders/topology.log")
        .exists());
    store.tier_now().unwrap();
    assert_eq!(objects("/topology.log"), 0);
    assert_eq!(objects("/stream.json"), 1);
}

#[test]
fn a_stream_taken_out_of_tiering_still_tells_the_bucket_what_retention_deleted() {
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(shardlog::ManualClock::new(1_700_000_000_000));
    let tier = TierOptions {
        local_retention_bytes: Some(0),
        local_retention: None,
        ..TierOptions::default()
    };
    let mut options = tiered_store_options(&root.path().join("bucket"), 16 * 1024, tier);
    options.shard.clock = Arc::clone(&clock) as Arc<dyn shardlog::Clock>;
    let store = Store::open(root.path().join("data"), options).unwrap();
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    fill(&stream);
    store.tier_now().unwrap();
    assert!(stream.tier_status().remote_only > 3);
    stream.set_tiering(Some(StreamTiering::off())).unwrap();
    // A day later retention deletes the remote segments (and their objects).
    clock.advance(25 * 3_600_000);
    stream.put_record(&PutRecord::new("k", b"new")).unwrap();
    store.enforce_retention().unwrap();
    assert_eq!(stream.tier_status().remote_only, 0);
    store.tier_now().unwrap();
    // The bucket's copy of remote.log lists no segment whose object is gone.
    let bucket = &store.options().tier.as_ref().unwrap().bucket;
    let logs: Vec<String> = bucket
        .list("streams/orders/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.ends_with("/remote.log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let copy = tempfile::tempdir().unwrap();
    let bytes = bucket.get_bytes(&logs[0]).unwrap().unwrap();
    std::fs::write(copy.path().join("remote.log"), bytes).unwrap();
    let listed = shardlog::log::remote::read_remote_log(copy.path()).unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
