//! Delivery streams kept in a store: create, describe, list, update (with its version check),
//! delete, background delivery, restart with buffered records, and transforms by name.
#![cfg(feature = "firehose")]

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardlog::firehose::{
    BufferingHints, Compression, DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose,
    FirehoseOptions, SourceStart, Transform, Transformed,
};
use shardlog::ShardId;
use shardlog::{Error, Store, StoreOptions};

fn store(dir: &Path) -> Arc<Store> {
    Arc::new(
        Store::open(
            dir,
            StoreOptions {
                retention_interval: None,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    )
}

fn manual() -> FirehoseOptions {
    FirehoseOptions {
        delivery_interval: None,
        ..FirehoseOptions::default()
    }
}

fn config(out: &Path, interval_secs: u32) -> DeliveryStreamConfig {
    DeliveryStreamConfig {
        delivery: DeliveryConfig {
            buffering: BufferingHints {
                size_mib: 5,
                interval_secs,
            },
            compression: Compression::Uncompressed,
            record_delimiter: Some(b"\n".to_vec()),
            ..DeliveryConfig::default()
        },
        destination: DestinationConfig::LocalDirectory {
            path: out.to_path_buf(),
        },
        transform: None,
        source_stream: None,
        source_start: SourceStart::TrimHorizon,
        tags: Default::default(),
        settings: Default::default(),
    }
}

/// Every object's key (relative to `out`) and bytes; none before anything was delivered.
fn objects(out: &Path) -> Vec<(String, Vec<u8>)> {
    if out.exists() {
        common::snapshot_dir(out)
    } else {
        Vec::new()
    }
}

fn all_lines(out: &Path) -> Vec<String> {
    let mut lines: Vec<String> = objects(out)
        .iter()
        .flat_map(|(_, b)| {
            String::from_utf8(b.clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

/// A store in `dir/data` holding the stream `orders` of `shards` shards, and a Firehose over it
/// with a delivery stream `archive` reading `orders` into `dir/out` (no size cut below 5 MiB,
/// due at once).
fn archive_of_orders(dir: &Path, shards: u32) -> (Arc<Store>, Arc<shardlog::Stream>, Firehose) {
    let store = store(&dir.join("data"));
    let orders = store
        .create_stream("orders", shardlog::StreamConfig::provisioned(shards))
        .unwrap();
    let firehose = Firehose::open(Arc::clone(&store), manual()).unwrap();
    let mut from_stream = config(&dir.join("out"), 0);
    from_stream.source_stream = Some("orders".into());
    firehose
        .create_delivery_stream("archive", from_stream)
        .unwrap();
    (store, orders, firehose)
}

/// Puts records `r{i:03}` (keys `k{i}`) for `i` in `from..to`.
fn put_orders(orders: &shardlog::Stream, from: usize, to: usize) {
    for i in from..to {
        orders
            .put_record(&shardlog::PutRecord::new(
                &format!("k{i}"),
                format!("r{i:03}").as_bytes(),
            ))
            .unwrap();
    }
}

#[test]
fn the_background_worker_delivers_due_batches() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let firehose = Firehose::open(
        store(&dir.path().join("data")),
        FirehoseOptions {
            delivery_interval: Some(Duration::from_millis(20)),
            ..FirehoseOptions::default()
        },
    )
    .unwrap();
    // Interval 0: every record is due at once.
    let stream = firehose
        .create_delivery_stream("clicks", config(&out, 0))
        .unwrap();
    for i in 0..100 {
        stream
            .put_record(format!("click {i:03}").as_bytes())
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while firehose.describe_delivery_stream("clicks").unwrap().backlog > 0 {
        assert!(Instant::now() < deadline, "the worker never delivered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let expected: Vec<String> = (0..100).map(|i| format!("click {i:03}")).collect();
    assert_eq!(all_lines(&out), expected);
    let d = firehose.describe_delivery_stream("clicks").unwrap();
    assert_eq!(d.stats.records_delivered, 100);
    assert_eq!(d.delivered, 100);
}

#[test]
fn config_and_buffered_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    {
        let firehose = Firehose::open(store(&data), manual()).unwrap();
        let stream = firehose
            .create_delivery_stream("orders", config(&out, 600))
            .unwrap();
        let batch: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("order {i:02}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        assert!(stream
            .put_record_batch(&refs)
            .unwrap()
            .iter()
            .all(Result::is_ok));
        // Closing delivers what the hints allow: nothing (600 s not passed).
    }
    assert!(objects(&out).is_empty());
    let firehose = Firehose::open(store(&data), manual()).unwrap();
    assert_eq!(firehose.list_delivery_streams(), ["orders"]);
    let d = firehose.describe_delivery_stream("orders").unwrap();
    assert_eq!((d.version, d.backlog, d.delivered), (1, 50, 0));
    assert_eq!(d.config.buffering.interval_secs, 600);
    assert_eq!(firehose.flush().unwrap(), 1);
    let expected: Vec<String> = (0..50).map(|i| format!("order {i:02}")).collect();
    assert_eq!(all_lines(&out), expected);
}

#[test]
fn tags_and_settings_persist_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    {
        let firehose = Firehose::open(store(&data), manual()).unwrap();
        let mut c = config(&out, 60);
        c.tags.insert("team".into(), "data".into());
        c.settings.insert(
            "RoleARN".into(),
            serde_json::json!("arn:aws:iam::000000000000:role/r"),
        );
        firehose
            .create_delivery_stream("orders", c.clone())
            .unwrap();
        let more = [("env".to_string(), "test".to_string())]
            .into_iter()
            .collect();
        firehose.tag_delivery_stream("orders", &more).unwrap();
        firehose
            .untag_delivery_stream("orders", &["team".to_string(), "absent".to_string()])
            .unwrap();
        firehose
            .modify_settings("orders", |s| {
                s.insert(
                    "Encryption".into(),
                    serde_json::json!({"Status": "ENABLED"}),
                );
            })
            .unwrap();
        let too_many = (0..50).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(
            firehose.tag_delivery_stream("orders", &too_many),
            Err(Error::LimitExceeded { .. })
        ));
        let version = firehose
            .update_delivery_stream_settings("orders", 1, c.delivery, c.destination, None)
            .unwrap();
        assert_eq!(version, 2);
    }
    let firehose = Firehose::open(store(&data), manual()).unwrap();
    let d = firehose.describe_delivery_stream("orders").unwrap();
    assert_eq!(d.version, 2);
    assert_eq!(
        d.tags.into_iter().collect::<Vec<_>>(),
        [("env".to_string(), "test".to_string())]
    );
    assert_eq!(
        d.settings.len(),
        2,
        "the update kept the settings: {:?}",
        d.settings
    );
    assert_eq!(d.settings["Encryption"]["Status"], "ENABLED");
    assert!(d.updated_ms.is_some());
}

#[test]
fn updates_check_the_version_and_apply_to_new_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let firehose = Firehose::open(store(&data), manual()).unwrap();
    let stream = firehose
        .create_delivery_stream("logs", config(&out, 0))
        .unwrap();
    stream.put_record(b"before").unwrap();
    firehose.flush().unwrap();
    let mut gz = config(&out, 0);
    gz.delivery.compression = Compression::Gzip;
    match firehose.update_delivery_stream("logs", 7, gz.delivery.clone(), gz.destination.clone()) {
        Err(Error::ConcurrentModification { given, current, .. }) => {
            assert_eq!((given, current), (7, 1))
        }
        other => panic!("expected ConcurrentModification, got {other:?}"),
    }
    let version = firehose
        .update_delivery_stream("logs", 1, gz.delivery, gz.destination)
        .unwrap();
    assert_eq!(version, 2);
    stream.put_record(b"after").unwrap();
    firehose.flush().unwrap();
    let keys: Vec<String> = objects(&out).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .any(|k| k.contains("/logs-1-") && !k.ends_with(".gz")));
    assert!(keys
        .iter()
        .any(|k| k.contains("/logs-2-") && k.ends_with(".gz")));
    drop(stream);
    drop(firehose);
    let firehose = Firehose::open(store(&data), manual()).unwrap();
    let d = firehose.describe_delivery_stream("logs").unwrap();
    assert_eq!((d.version, d.config.compression), (2, Compression::Gzip));
}

#[test]
fn create_and_delete_follow_firehose_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let firehose = Firehose::open(store(&data), manual()).unwrap();
    firehose
        .create_delivery_stream("a", config(&out, 0))
        .unwrap();
    assert!(matches!(
        firehose.create_delivery_stream("a", config(&out, 0)),
        Err(Error::ResourceInUse { .. })
    ));
    assert!(matches!(
        firehose.create_delivery_stream("bad name", config(&out, 0)),
        Err(Error::InvalidArgument { .. })
    ));
    let mut bad = config(&out, 0);
    bad.delivery.buffering.size_mib = 200;
    assert!(matches!(
        firehose.create_delivery_stream("b", bad),
        Err(Error::InvalidArgument { .. })
    ));
    firehose.delete_delivery_stream("a").unwrap();
    assert!(firehose.list_delivery_streams().is_empty());
    assert!(matches!(
        firehose.describe_delivery_stream("a"),
        Err(Error::ResourceNotFound { .. })
    ));
    assert!(matches!(
        firehose.delete_delivery_stream("a"),
        Err(Error::ResourceNotFound { .. })
    ));
    let leftovers: Vec<_> = std::fs::read_dir(data.join("firehose")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_stream_whose_transform_is_not_registered_holds_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let mut with_transform = config(&out, 0);
    with_transform.transform = Some("shout".into());
    {
        let firehose = Firehose::open(store(&data), manual()).unwrap();
        let stream = firehose
            .create_delivery_stream("t", with_transform)
            .unwrap();
        stream.put_record(b"hello").unwrap();
        assert!(firehose.flush().is_err(), "no transform registered");
        let d = firehose.describe_delivery_stream("t").unwrap();
        assert_eq!(d.backlog, 1);
        assert!(d.stats.last_error.unwrap().contains("not registered"));
    }
    assert!(objects(&out).is_empty());
    let shout: Arc<dyn Transform> = Arc::new(|batch: &[(String, &[u8])]| {
        batch
            .iter()
            .map(|(_, d)| Transformed::Ok(d.to_ascii_uppercase()))
            .collect()
    });
    let firehose = Firehose::open(
        store(&data),
        FirehoseOptions {
            transforms: HashMap::from([("shout".to_string(), shout)]),
            ..manual()
        },
    )
    .unwrap();
    firehose.flush().unwrap();
    assert_eq!(all_lines(&out), ["HELLO"]);
}

#[test]
fn inspect_shows_delivery_streams_with_their_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let firehose = Firehose::open(store(&data), manual()).unwrap();
    let stream = firehose
        .create_delivery_stream("audit", config(&out, 600))
        .unwrap();
    for i in 0..30 {
        stream.put_record(format!("a{i}").as_bytes()).unwrap();
    }
    // The store is open: inspect takes no lock.
    let result = common::shardlog(&["inspect", "--json", data.to_str().unwrap()]);
    assert!(result.status.success(), "{}", common::text(&result.stderr));
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let d = &v["delivery_streams"][0];
    assert_eq!(d["name"], "audit");
    assert_eq!(d["version"], 1);
    assert_eq!(d["backlog"], 30);
    assert_eq!(d["config"]["buffering"]["interval_secs"], 600);
    firehose.flush().unwrap();
    let human = common::shardlog(&["inspect", data.to_str().unwrap()]);
    let text = common::text(&human.stdout);
    assert!(
        text.contains("delivery stream audit  version 1, UNCOMPRESSED"),
        "{text}"
    );
    assert!(text.contains("backlog 0 records"), "{text}");
    // verify checks delivery buffers too.
    let verified = common::shardlog(&["verify", data.to_str().unwrap()]);
    let report = common::text(&verified.stdout);
    assert!(verified.status.success(), "{report}");
    assert!(report.contains("in 1 shard directories"), "{report}");
}

#[test]
fn a_stream_source_is_delivered_parents_first_across_a_split_exactly_once() {
    use shardlog::{PutRecord, StreamConfig};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let store = store(&data);
    let orders = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    let put = |from: usize, to: usize| {
        for i in from..to {
            let key = format!("k{}", i % 5);
            orders
                .put_record(&PutRecord::new(&key, format!("{key}:{i:04}").as_bytes()))
                .unwrap();
        }
    };
    put(0, 100);
    // The parent closes before anything is delivered; its children take the next records.
    orders.split_shard(ShardId(0), u128::MAX / 2).unwrap();
    put(100, 200);
    let firehose = Firehose::open(Arc::clone(&store), manual()).unwrap();
    let mut from_stream = config(&out, 0);
    from_stream.source_stream = Some("orders".into());
    let delivery = firehose
        .create_delivery_stream("orders-archive", from_stream)
        .unwrap();
    assert!(matches!(
        delivery.put_record(b"x"),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(
        delivery.backlog(),
        200,
        "the parent's records and the children's"
    );
    let mut order: Vec<String> = delivery.flush().unwrap().keys;
    assert_eq!(delivery.backlog(), 0);
    // Children split again; more records.
    orders.split_shard(ShardId(1), u128::MAX / 4).unwrap();
    put(200, 300);
    assert_eq!(delivery.backlog(), 100);
    order.extend(delivery.flush().unwrap().keys);
    assert!(
        order.len() >= 3,
        "the parent's object, then each child's: {order:?}"
    );
    // Every record exactly once, and per key in order across the objects as delivered.
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    let mut all = Vec::new();
    for key in &order {
        let bytes = std::fs::read(out.join(key)).unwrap();
        for line in String::from_utf8(bytes).unwrap().lines() {
            let (k, n) = line.split_once(':').unwrap();
            per_key
                .entry(k.into())
                .or_default()
                .push(n.parse().unwrap());
            all.push(line.to_string());
        }
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 300, "every record exactly once");
    for (k, ns) in &per_key {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{k} out of order: {ns:?}"
        );
    }
    // After a restart nothing is delivered again.
    drop(delivery);
    drop(firehose);
    let firehose = Firehose::open(store, manual()).unwrap();
    assert_eq!(firehose.flush().unwrap(), 0);
    let d = firehose.describe_delivery_stream("orders-archive").unwrap();
    assert_eq!(d.source_stream.as_deref(), Some("orders"));
}

#[test]
fn a_child_shard_waits_until_its_parent_is_delivered_to_its_end() {
    use shardlog::{ManualClock, PutRecord, ShardOptions, StreamConfig};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Arc::new(
        Store::open(
            dir.path().join("data"),
            StoreOptions {
                retention_interval: None,
                shard: ShardOptions {
                    clock: clock.clone(),
                    ..ShardOptions::default()
                },
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    let orders = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    // A small tail in the parent: not due for 60 s.
    orders.put_record(&PutRecord::new("k", b"parent")).unwrap();
    orders.split_shard(ShardId(0), u128::MAX / 2).unwrap();
    // Over 1 MiB in the children: due by size at once.
    let big = vec![b'c'; 100 * 1024];
    for i in 0..30 {
        orders
            .put_record(&PutRecord::new(&format!("k{i}"), &big))
            .unwrap();
    }
    let firehose = Firehose::open(Arc::clone(&store), manual()).unwrap();
    let mut from_stream = config(&out, 60);
    from_stream.delivery.buffering.size_mib = 1;
    from_stream.source_stream = Some("orders".into());
    firehose
        .create_delivery_stream("archive", from_stream)
        .unwrap();
    assert_eq!(
        firehose.deliver_due().unwrap(),
        0,
        "children wait for the parent"
    );
    assert!(objects(&out).is_empty());
    clock.advance(60_000);
    assert!(firehose.deliver_due().unwrap() >= 2);
    let found = objects(&out);
    assert!(
        found.iter().any(|(_, bytes)| bytes == b"parent\n"),
        "the parent's record is delivered in its own batch"
    );
    let children: usize = found
        .iter()
        .filter(|(_, bytes)| bytes != b"parent\n")
        .map(|(_, bytes)| bytes.len())
        .sum();
    assert_eq!(
        children,
        30 * (100 * 1024 + 1),
        "and then every child record"
    );
}

#[test]
fn a_stream_source_keeps_its_positions_as_a_consumer_group_and_adopts_older_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let (store, orders, firehose) = archive_of_orders(dir.path(), 2);
    put_orders(&orders, 0, 50);
    let delivery = firehose.delivery_stream("archive").unwrap();
    delivery.flush().unwrap();
    assert_eq!(all_lines(&out).len(), 50);
    // Positions live in the delivery stream's consumer group, which inspect shows.
    let stream_dir = data.join("firehose").join("archive");
    let group_file = stream_dir.join("source-group.json");
    let group: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&group_file).unwrap()).unwrap();
    let ends = orders.shard_ends().unwrap();
    for (index, end) in &ends {
        assert_eq!(
            group["shards"][index.to_string()]["checkpoint"],
            serde_json::json!(end),
            "{group}"
        );
    }
    let inspected = common::shardlog(&["inspect", data.to_str().unwrap()]);
    let report = common::text(&inspected.stdout);
    assert!(inspected.status.success(), "{report}");
    assert!(report.contains("reads stream orders"), "{report}");
    assert_eq!(report.matches("owner firehose").count(), 2, "{report}");

    // A checkpoint file of the version before groups kept the positions itself: a delivery
    // stream opened over one adopts them instead of delivering everything again.
    drop(delivery);
    drop(firehose);
    std::fs::remove_file(&group_file).unwrap();
    let legacy = serde_json::json!({
        "delivered": 0,
        "pending": null,
        "shards": ends,
        "finished": [],
    });
    std::fs::write(
        stream_dir.join("checkpoint.json"),
        serde_json::to_vec(&legacy).unwrap(),
    )
    .unwrap();
    let firehose = Firehose::open(Arc::clone(&store), manual()).unwrap();
    assert_eq!(
        firehose
            .describe_delivery_stream("archive")
            .unwrap()
            .backlog,
        0
    );
    put_orders(&orders, 50, 60);
    firehose.flush().unwrap();
    let lines = all_lines(&out);
    let expected: Vec<String> = (0..60).map(|i| format!("r{i:03}")).collect();
    assert_eq!(lines, expected, "each record once, the old ones not again");
    // The checkpoint file no longer carries the positions; the group does.
    let rewritten: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stream_dir.join("checkpoint.json")).unwrap())
            .unwrap();
    assert!(rewritten.get("shards").is_none(), "{rewritten}");
    assert!(group_file.exists());
}

#[test]
fn a_pending_batch_the_source_group_records_as_delivered_is_not_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let (store, orders, firehose) = archive_of_orders(dir.path(), 1);
    put_orders(&orders, 0, 10);
    let keys = firehose
        .delivery_stream("archive")
        .unwrap()
        .flush()
        .unwrap()
        .keys;
    assert_eq!(keys.len(), 1);
    drop(firehose);
    // A crash between the group's write and the checkpoint file's leaves the batch pending in
    // the file although the group has it delivered. (The object is removed here to see
    // whether it is written again.)
    let pending = serde_json::json!({
        "delivered": 0,
        "pending": { "shard": 0, "from": 0, "to": 10, "key": keys[0], "error_key": "e" },
    });
    std::fs::write(
        data.join("firehose/archive/checkpoint.json"),
        serde_json::to_vec(&pending).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(out.join(&keys[0])).unwrap();
    put_orders(&orders, 10, 15);
    let firehose = Firehose::open(Arc::clone(&store), manual()).unwrap();
    let again = firehose
        .delivery_stream("archive")
        .unwrap()
        .flush()
        .unwrap()
        .keys;
    assert_eq!(again.len(), 1, "only the new records: {again:?}");
    let expected: Vec<String> = (10..15).map(|i| format!("r{i:03}")).collect();
    assert_eq!(all_lines(&out), expected);
}

#[test]
fn a_stream_source_starts_at_latest_by_default_as_firehose_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir.path().join("data"));
    let orders = store
        .create_stream("orders", shardlog::StreamConfig::provisioned(2))
        .unwrap();
    put_orders(&orders, 0, 20);
    let firehose = Firehose::open(Arc::clone(&store), manual()).unwrap();
    let out = dir.path().join("out");
    let mut from_stream = config(&out, 0);
    from_stream.source_stream = Some("orders".into());
    from_stream.source_start = SourceStart::default();
    let delivery = firehose
        .create_delivery_stream("archive", from_stream)
        .unwrap();
    assert_eq!(delivery.backlog(), 0, "what was put before is not waiting");
    put_orders(&orders, 20, 30);
    assert_eq!(delivery.backlog(), 10);
    // A split after creation: the children are read from their beginning.
    orders.split_shard(ShardId(0), u128::MAX / 4).unwrap();
    put_orders(&orders, 30, 40);
    delivery.flush().unwrap();
    let expected: Vec<String> = (20..40).map(|i| format!("r{i:03}")).collect();
    assert_eq!(all_lines(&out), expected);
}

#[test]
fn a_stream_source_delivers_records_that_are_only_in_the_object_store() {
    use shardlog::{PutRecord, StreamConfig, TierOptions};
    let dir = tempfile::tempdir().unwrap();
    let tier = TierOptions {
        local_retention_bytes: Some(0),
        local_retention: None,
        cache_bytes: 32 * 1024,
        ..TierOptions::default()
    };
    let options = common::tiered_store_options(&dir.path().join("bucket"), 16 * 1024, tier);
    let store = Arc::new(Store::open(dir.path().join("data"), options).unwrap());
    let orders = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    let line = |i: usize| format!("r{i:04}-{}", "x".repeat(200));
    for i in 0..400 {
        orders
            .put_record(&PutRecord::new(&format!("k{i}"), line(i).as_bytes()))
            .unwrap();
    }
    store.tier_now().unwrap();
    let before = store.tier_status();
    assert!(before.segments.remote_only >= 3, "{before:?}");
    let firehose = Firehose::open(Arc::clone(&store), manual()).unwrap();
    let out = dir.path().join("out");
    let mut from_stream = config(&out, 0);
    from_stream.source_stream = Some("orders".into());
    let delivery = firehose
        .create_delivery_stream("archive", from_stream)
        .unwrap();
    assert_eq!(delivery.backlog(), 400);
    delivery.flush().unwrap();
    let expected: Vec<String> = (0..400).map(line).collect();
    assert_eq!(all_lines(&out), expected);
    let after = store.tier_status().cache;
    assert!(
        after.downloads >= before.segments.remote_only as u64,
        "read from the bucket: {after:?}"
    );
}
