//! What a single request may store is bounded, and checked when it is made rather than when
//! it is used: worker ids, tags at stream creation, and Firehose prefixes (which would
//! otherwise wedge delivery at the first batch).
#![cfg(feature = "firehose")]

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use shardlog::consumer::{ConsumerGroup, GroupConfig};
use shardlog::firehose::{
    DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose, FirehoseOptions, SourceStart,
};
use shardlog::{Error, Store, StreamConfig};

#[test]
fn worker_ids_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), common::durable_store_options()).unwrap());
    store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    for bad in [String::new(), "w".repeat(1024 * 1024), "a\0b".to_string()] {
        assert!(
            matches!(group.lease_shards(&bad), Err(Error::InvalidArgument { .. })),
            "{} bytes",
            bad.len()
        );
    }
    group.lease_shards(&"w".repeat(256)).unwrap();
    let file = std::fs::metadata(dir.path().join("groups").join("g.json")).unwrap();
    assert!(file.len() < 4096, "{} bytes", file.len());
}

#[test]
fn create_stream_checks_tags_as_add_tags_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), common::durable_store_options()).unwrap();
    let many: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    let long_key = BTreeMap::from([("k".repeat(129), "v".to_string())]);
    for tags in [many, long_key] {
        let config = StreamConfig {
            tags,
            ..StreamConfig::provisioned(1)
        };
        assert!(matches!(
            store.create_stream("s", config),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(store.list_streams().is_empty(), "nothing was created");
}

#[test]
fn prefixes_that_would_make_bad_keys_are_refused_at_create_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(dir.path().join("data"), common::durable_store_options()).unwrap());
    let firehose = Firehose::open(
        store,
        FirehoseOptions {
            delivery_interval: None,
            ..FirehoseOptions::default()
        },
    )
    .unwrap();
    let config = |prefix: Option<String>| DeliveryStreamConfig {
        delivery: DeliveryConfig {
            prefix,
            ..DeliveryConfig::default()
        },
        destination: DestinationConfig::LocalDirectory {
            path: dir.path().join("out"),
        },
        transform: None,
        source_stream: None,
        source_start: SourceStart::TrimHorizon,
        tags: Default::default(),
        settings: Default::default(),
    };
    let bad = [
        "../x/".to_string(),
        "/tmp/x/".to_string(),
        "a/../../x/".to_string(),
        "a//b/".to_string(),
        "nul\0/".to_string(),
        "y".repeat(300),
    ];
    for prefix in &bad {
        assert!(
            matches!(
                firehose.create_delivery_stream("d", config(Some(prefix.clone()))),
                Err(Error::InvalidArgument { .. })
            ),
            "{prefix:?} accepted"
        );
    }
    assert!(firehose.list_delivery_streams().is_empty());
    firehose
        .create_delivery_stream("d", config(Some("fine/prefix-".into())))
        .unwrap();
    for prefix in &bad {
        let update = firehose.update_delivery_stream(
            "d",
            1,
            config(Some(prefix.clone())).delivery,
            config(None).destination,
        );
        assert!(
            matches!(update, Err(Error::InvalidArgument { .. })),
            "{prefix:?}"
        );
    }
    let stream = firehose.delivery_stream("d").unwrap();
    stream.put_record(b"one").unwrap();
    firehose.flush().unwrap();
    assert_eq!(stream.backlog(), 0, "delivery is not wedged");
}
