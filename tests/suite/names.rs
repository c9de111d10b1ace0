//! Names users choose are data, never paths or the store's own names: every valid but odd
//! name (`.`, `..`, `.creating-a`, `.deleting-a`, leading dots, 128 characters) is created,
//! written, listed, reopened and deleted like any other, and none of them touches another.
#![cfg(feature = "firehose")]

use crate::common;

use std::path::Path;
use std::sync::Arc;

use shardlog::consumer::{ConsumerGroup, GroupConfig};
use shardlog::firehose::{
    DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose, FirehoseOptions, SourceStart,
};
use shardlog::{PutRecord, Start, Store, StreamConfig};

/// Valid names that look like paths or like the store's own staging names.
fn odd_names() -> Vec<String> {
    let mut names: Vec<String> = [
        ".",
        "..",
        "...",
        ".creating-a",
        ".deleting-a",
        ".deleting-a-1",
        ".hidden",
        "a",
        "creating-a",
        "%2E",
    ]
    .iter()
    .filter(|n| !n.contains('%')) // '%' is not a name character: refused, as it should be
    .map(|n| n.to_string())
    .collect();
    names.push("x".repeat(128));
    names.push(format!(".{}", "y".repeat(127)));
    names
}

fn open_store(dir: &Path) -> Arc<Store> {
    Arc::new(Store::open(dir, common::durable_store_options()).unwrap())
}

fn records_of(store: &Store, name: &str) -> Vec<Vec<u8>> {
    let stream = store.stream(name).unwrap();
    let mut out = Vec::new();
    for shard in stream.describe().shards {
        let mut iterator = Some(
            stream
                .shard_iterator(shard.shard_id, Start::TrimHorizon)
                .unwrap(),
        );
        while let Some(it) = iterator {
            let page = store.get_records(&it, 10_000).unwrap();
            if page.records.is_empty() {
                break;
            }
            out.extend(page.records.iter().map(|r| r.data.to_vec()));
            iterator = page.next_shard_iterator;
        }
    }
    out.sort();
    out
}

#[test]
fn odd_stream_names_survive_restart_list_and_delete_without_touching_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let names = odd_names();
    assert!(Store::open(dir.path(), common::durable_store_options())
        .unwrap()
        .create_stream("%2E", StreamConfig::provisioned(1))
        .is_err());
    {
        let store = open_store(dir.path());
        for name in &names {
            let stream = store
                .create_stream(name, StreamConfig::provisioned(2))
                .unwrap_or_else(|e| panic!("create {name:?}: {e}"));
            stream
                .put_record(&PutRecord::new("k", name.as_bytes()))
                .unwrap();
        }
        // Creating a name while its look-alike exists (`a` beside `.creating-a`) touches
        // neither: each still has its one record.
        for name in &names {
            assert_eq!(
                records_of(&store, name),
                vec![name.as_bytes().to_vec()],
                "{name}"
            );
        }
        let mut listed = store.list_streams();
        listed.sort();
        let mut expected = names.clone();
        expected.sort();
        assert_eq!(listed, expected);
    }
    // Restart: nothing is taken for a leftover of a crashed create or delete.
    let store = open_store(dir.path());
    let mut listed = store.list_streams();
    listed.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(listed, expected);
    for name in &names {
        assert_eq!(
            records_of(&store, name),
            vec![name.as_bytes().to_vec()],
            "{name}"
        );
    }
    // Deleting one deletes only it.
    store.delete_stream("a").unwrap();
    store.delete_stream(".").unwrap();
    assert!(store.stream(".creating-a").is_ok());
    assert!(store.stream("..").is_ok());
    drop(store);
    let store = open_store(dir.path());
    assert!(store.stream("a").is_err());
    assert!(store.stream(".").is_err());
    for name in names.iter().filter(|n| !matches!(n.as_str(), "a" | ".")) {
        assert_eq!(
            records_of(&store, name),
            vec![name.as_bytes().to_vec()],
            "{name}"
        );
    }
    // And the name can be created again.
    store
        .create_stream("a", StreamConfig::provisioned(1))
        .unwrap();
    assert!(records_of(&store, "a").is_empty());
}

#[test]
fn a_dotted_stream_of_an_older_store_is_kept_and_leftovers_still_go() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_store(dir.path());
        for name in ["hidden-source", "staging-source"] {
            store
                .create_stream(name, StreamConfig::provisioned(1))
                .unwrap()
                .put_record(&PutRecord::new("k", name.as_bytes()))
                .unwrap();
        }
    }
    // What an older build left: a user stream `.hidden` stored unescaped (its manifest names
    // it), and the staging directory of a crashed create of `x` (its manifest names `x`).
    let streams = dir.path().join("streams");
    let retitle = |from: &str, to_dir: &str, to_name: &str| {
        std::fs::rename(streams.join(from), streams.join(to_dir)).unwrap();
        let manifest = streams.join(to_dir).join("stream.json");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let text = text.replace(
            &format!("\"name\": \"{from}\""),
            &format!("\"name\": \"{to_name}\""),
        );
        std::fs::write(&manifest, text).unwrap();
    };
    retitle("hidden-source", ".hidden", ".hidden");
    retitle("staging-source", ".creating-x", "x");
    let store = open_store(dir.path());
    assert_eq!(store.list_streams(), vec![".hidden".to_string()]);
    assert_eq!(
        records_of(&store, ".hidden"),
        vec![b"hidden-source".to_vec()]
    );
    assert!(
        !streams.join(".creating-x").exists(),
        "a staging leftover is removed"
    );
    assert!(
        streams.join("%2Ehidden").is_dir(),
        "the old entry moved to its escaped name"
    );
}

fn delivery_config(out: &Path) -> DeliveryStreamConfig {
    DeliveryStreamConfig {
        delivery: DeliveryConfig::default(),
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

#[test]
fn odd_delivery_stream_names_keep_their_records_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let names: Vec<String> = odd_names().into_iter().filter(|n| n.len() <= 64).collect();
    let options = || FirehoseOptions {
        delivery_interval: None,
        ..FirehoseOptions::default()
    };
    {
        let store = open_store(&dir.path().join("data"));
        let firehose = Firehose::open(store, options()).unwrap();
        for name in &names {
            firehose
                .create_delivery_stream(name, delivery_config(&out))
                .unwrap_or_else(|e| panic!("create {name:?}: {e}"));
            firehose
                .delivery_stream(name)
                .unwrap()
                .put_record(name.as_bytes())
                .unwrap();
        }
    }
    let store = open_store(&dir.path().join("data"));
    let firehose = Firehose::open(store, options()).unwrap();
    let mut listed = firehose.list_delivery_streams();
    listed.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(listed, expected);
    for name in &names {
        assert_eq!(
            firehose.delivery_stream(name).unwrap().backlog(),
            1,
            "{name}"
        );
    }
    firehose.delete_delivery_stream("a").unwrap();
    assert_eq!(
        firehose.delivery_stream(".creating-a").unwrap().backlog(),
        1
    );
}

#[test]
fn odd_group_names_are_listed_and_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    let names = [".", "..", ".x", "x"];
    for name in names {
        let group = ConsumerGroup::open(Arc::clone(&store), name, GroupConfig::new("s")).unwrap();
        drop(group);
    }
    let mut listed: Vec<String> = ConsumerGroup::list(&store)
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    listed.sort();
    assert_eq!(listed, names.map(String::from).to_vec());
    ConsumerGroup::delete(&store, ".").unwrap();
    let listed: Vec<String> = ConsumerGroup::list(&store)
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(!listed.contains(&".".to_string()));
}
