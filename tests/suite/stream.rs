//! Streams with Kinesis Data Streams semantics, through the public API of `Store` and `Stream`.

use crate::common;

use shardlog::ShardId;
use std::collections::{BTreeMap, HashMap};

use common::{consume_all, drain};
use std::sync::Arc;
use std::time::Duration;

use shardlog::hash_key::{hash_key_of, shard_id};
use shardlog::{
    Clock, Error, HashKeyRange, ManualClock, PutRecord, SequenceNumber, ShardFilter, ShardOptions,
    Start, Store, StoreOptions, Stream, StreamConfig, StreamRecord,
};

const HOUR: i64 = 3_600_000;

fn options(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        shard: ShardOptions {
            segment_bytes: 16 * 1024,
            clock: Arc::clone(clock) as Arc<dyn Clock>,
            ..ShardOptions::default()
        },
        retention_interval: None,
        ..StoreOptions::default()
    }
}

fn store() -> (tempfile::TempDir, Arc<ManualClock>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::open(dir.path(), options(&clock)).unwrap();
    (dir, clock, store)
}

#[test]
fn create_describe_list_and_delete_streams() {
    let (dir, clock, store) = store();
    let s = store
        .create_stream("orders", StreamConfig::provisioned(4))
        .unwrap();
    store
        .create_stream("clicks", StreamConfig::provisioned(1))
        .unwrap();
    assert_eq!(store.list_streams(), ["clicks", "orders"]);

    let d = s.describe();
    assert_eq!(
        (d.name.as_str(), d.status, d.retention_hours),
        ("orders", "ACTIVE", 24)
    );
    assert_eq!(d.open_shard_count, 4);
    let ids: Vec<String> = d.shards.iter().map(|s| s.shard_id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002",
            "shardId-000000000003"
        ]
    );
    let ranges: Vec<HashKeyRange> = d.shards.iter().map(|s| s.hash_key_range).collect();
    assert_eq!(ranges, HashKeyRange::uniform(4));
    assert!(d
        .shards
        .iter()
        .all(|s| s.parent_shard_id.is_none() && s.ending_sequence_number.is_none()));

    assert!(matches!(
        store.create_stream("orders", StreamConfig::provisioned(1)),
        Err(Error::ResourceInUse { .. })
    ));
    for bad in ["", "has space", "slash/", &"x".repeat(129)] {
        assert!(
            matches!(
                store.create_stream(bad, StreamConfig::provisioned(1)),
                Err(Error::InvalidArgument { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store.create_stream("z", StreamConfig::provisioned(0)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.create_stream("z", StreamConfig::provisioned(30_000)),
        Err(Error::LimitExceeded { .. })
    ));
    let mut short = StreamConfig::provisioned(1);
    short.retention_hours = 23;
    assert!(matches!(
        store.create_stream("z", short),
        Err(Error::InvalidArgument { .. })
    ));

    s.put_record(&PutRecord::new("k", b"v")).unwrap();
    drop(s);
    drop(store);
    let store = Store::open(dir.path(), options(&clock)).unwrap();
    assert_eq!(store.list_streams(), ["clicks", "orders"]);
    assert_eq!(
        store.stream("orders").unwrap().describe().open_shard_count,
        4
    );
    store.delete_stream("orders").unwrap();
    assert_eq!(store.list_streams(), ["clicks"]);
    assert!(matches!(
        store.stream("orders"),
        Err(Error::ResourceNotFound { kind: "stream", .. })
    ));
    assert!(matches!(
        store.delete_stream("orders"),
        Err(Error::ResourceNotFound { .. })
    ));
    assert!(!dir.path().join("streams/orders").exists());
}

#[test]
fn records_route_by_md5_or_explicit_hash_key() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(4))
        .unwrap();
    let ranges = HashKeyRange::uniform(4);
    for i in 0..200 {
        let key = format!("user-{i}");
        let put = s.put_record(&PutRecord::new(&key, b"x")).unwrap();
        let expected = ranges
            .iter()
            .position(|r| r.contains(hash_key_of(&key)))
            .unwrap();
        assert_eq!(put.shard_id.to_string(), shard_id(expected as u32), "{key}");
        assert_eq!(put.sequence_number.shard_index(), expected as u32);
    }
    let explicit = ranges[2].start;
    let put = s
        .put_record(&PutRecord {
            explicit_hash_key: Some(explicit),
            ..PutRecord::new("any", b"x")
        })
        .unwrap();
    assert_eq!(put.shard_id, "shardId-000000000002");
}

/// `put_records` hashes its partition keys several at a time (one MD5 block per key, longer keys
/// one by one); every record must still land where its own MD5 or explicit hash key says, in
/// request order within each shard.
#[test]
fn put_records_routes_every_record_like_put_record() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(4))
        .unwrap();
    let ranges = HashKeyRange::uniform(4);
    // Lengths across the one-block limit (55 bytes), multibyte characters, and a count that is
    // not a multiple of the lanes.
    let keys: Vec<String> = (0..37)
        .map(|i| match i % 4 {
            0 => format!("user-{i}"),
            1 => "k".repeat(50 + i),
            2 => "é".repeat(20 + i),
            _ => format!("{i}"),
        })
        .collect();
    let explicit: Vec<u128> = (0..37).map(|i| ranges[i % 4].end).collect();
    let records: Vec<PutRecord<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| PutRecord {
            explicit_hash_key: (i % 5 == 3).then_some(explicit[i]),
            ..PutRecord::new(key, key.as_bytes())
        })
        .collect();
    let puts = s.put_records(&records).unwrap();
    let mut last_in_shard = HashMap::new();
    for (i, put) in puts.into_iter().enumerate() {
        let put = put.unwrap();
        let hash_key = match records[i].explicit_hash_key {
            Some(key) => key,
            None => hash_key_of(&keys[i]),
        };
        let expected = ranges.iter().position(|r| r.contains(hash_key)).unwrap();
        assert_eq!(put.shard_id.index(), expected as u32, "record {i}");
        let previous = last_in_shard.insert(expected, put.sequence_number);
        assert!(
            previous < Some(put.sequence_number),
            "record {i} out of order"
        );
    }
    assert!(matches!(
        s.put_records(&[PutRecord::new(&"é".repeat(257), b"x")]),
        Err(Error::InvalidArgument {
            name: "PartitionKey",
            ..
        })
    ));
}

#[test]
fn bad_records_are_refused_and_nothing_is_stored() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    let too_long = "k".repeat(257);
    assert!(matches!(
        s.put_record(&PutRecord::new("", b"x")),
        Err(Error::InvalidArgument {
            name: "PartitionKey",
            ..
        })
    ));
    assert!(matches!(
        s.put_record(&PutRecord::new(&too_long, b"x")),
        Err(Error::InvalidArgument { .. })
    ));
    // 256 characters is fine even when they take 1,024 bytes.
    s.put_record(&PutRecord::new(&"𝄞".repeat(256), b"x"))
        .unwrap();
    let big = vec![0u8; 1024 * 1024];
    assert!(matches!(
        s.put_record(&PutRecord::new("k", &big)),
        Err(Error::InvalidArgument { name: "Data", .. })
    ));
    s.put_record(&PutRecord::new("k", &big[..1024 * 1024 - 1]))
        .unwrap();
    let (records, _) = drain(&store, &s, ShardId(0));
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].partition_key, "𝄞".repeat(256));
    // A larger limit lets larger records in.
    s.set_max_record_bytes(2 * 1024 * 1024).unwrap();
    s.put_record(&PutRecord::new("k", &big)).unwrap();
    assert!(s.set_max_record_bytes(11 * 1024 * 1024).is_err());
}

#[test]
fn sequence_numbers_increase_within_a_shard_and_respect_ordering_bounds() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(2))
        .unwrap();
    let mut last: HashMap<String, SequenceNumber> = HashMap::new();
    for i in 0..100 {
        let put = s
            .put_record(&PutRecord::new(&format!("k{}", i % 7), b"x"))
            .unwrap();
        if let Some(prev) = last.insert(put.shard_id.to_string(), put.sequence_number) {
            assert!(put.sequence_number > prev);
            assert!(
                put.sequence_number.to_string() > prev.to_string(),
                "string order too"
            );
        }
    }
    let first = s.put_record(&PutRecord::new("same", b"1")).unwrap();
    let second = s
        .put_record(&PutRecord {
            sequence_number_for_ordering: Some(first.sequence_number),
            ..PutRecord::new("same", b"2")
        })
        .unwrap();
    assert!(second.sequence_number > first.sequence_number);
    // A bound at or past the number the record would get is refused (text that is no sequence
    // number at all is the server's to refuse: tests/suite/server_semantics.rs).
    let beyond = SequenceNumber::new(
        second.sequence_number.shard_index(),
        shardlog::Offset::new(second.sequence_number.offset().get() + 1),
    );
    let bad = s.put_record(&PutRecord {
        sequence_number_for_ordering: Some(beyond),
        ..PutRecord::new("same", b"3")
    });
    assert!(matches!(
        bad,
        Err(Error::InvalidArgument {
            name: "SequenceNumberForOrdering",
            ..
        })
    ));
    // A bound of another shard orders nothing in this one, and is accepted (as Kinesis does).
    let elsewhere = SequenceNumber::new(
        second.sequence_number.shard_index() + 1,
        shardlog::Offset::new(1_000_000),
    );
    let third = s
        .put_record(&PutRecord {
            sequence_number_for_ordering: Some(elsewhere),
            ..PutRecord::new("same", b"3")
        })
        .unwrap();
    assert!(third.sequence_number > second.sequence_number);
}

#[test]
fn put_records_reports_each_entry_and_keeps_order_per_shard() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(4))
        .unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("key-{}", i % 37)).collect();
    let datas: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let batch: Vec<PutRecord<'_>> = keys
        .iter()
        .zip(&datas)
        .map(|(k, d)| PutRecord::new(k, d))
        .collect();
    let results = s.put_records(&batch).unwrap();
    assert_eq!(results.len(), 500);
    let mut per_shard: BTreeMap<ShardId, Vec<(SequenceNumber, u32)>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        let put = r.as_ref().unwrap();
        per_shard
            .entry(put.shard_id)
            .or_default()
            .push((put.sequence_number, i as u32));
    }
    assert_eq!(per_shard.len(), 4);
    for (shard, entries) in &per_shard {
        assert!(
            entries.windows(2).all(|w| w[0].0 < w[1].0),
            "numbers follow request order in {shard}"
        );
        let (records, _) = drain(&store, &s, *shard);
        let stored: Vec<u32> = records
            .iter()
            .map(|r| u32::from_le_bytes(r.data[..].try_into().unwrap()))
            .collect();
        let sent: Vec<u32> = entries.iter().map(|e| e.1).collect();
        assert_eq!(stored, sent);
    }
    let too_many: Vec<PutRecord<'_>> = (0..501).map(|_| PutRecord::new("k", b"x")).collect();
    assert!(matches!(
        s.put_records(&too_many),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        s.put_records(&[]),
        Err(Error::InvalidArgument { .. })
    ));
    let mb = vec![0u8; 1024 * 1000];
    let too_big: Vec<PutRecord<'_>> = (0..11).map(|_| PutRecord::new("k", &mb)).collect();
    assert!(matches!(
        s.put_records(&too_big),
        Err(Error::InvalidArgument { .. })
    ));
    let one_bad = [PutRecord::new("k", b"x"), PutRecord::new("", b"x")];
    assert!(matches!(
        s.put_records(&one_bad),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn iterators_start_where_asked() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    let shard = ShardId(0);
    let latest_before = s.shard_iterator(shard, Start::Latest).unwrap();
    let mut puts = Vec::new();
    for i in 0..50u32 {
        clock.advance(10);
        puts.push(
            s.put_record(&PutRecord::new("k", &i.to_le_bytes()))
                .unwrap(),
        );
    }
    let first_data = |it: String| {
        let got = store.get_records(&it, 1).unwrap();
        got.records
            .first()
            .map(|r| u32::from_le_bytes(r.data[..].try_into().unwrap()))
    };
    assert_eq!(
        first_data(latest_before),
        Some(0),
        "LATEST taken before the puts sees them"
    );
    assert_eq!(
        first_data(s.shard_iterator(shard, Start::TrimHorizon).unwrap()),
        Some(0)
    );
    assert_eq!(
        first_data(s.shard_iterator(shard, Start::Latest).unwrap()),
        None
    );
    let seq = puts[20].sequence_number;
    assert_eq!(
        first_data(s.shard_iterator(shard, Start::At(seq)).unwrap()),
        Some(20)
    );
    assert_eq!(
        first_data(s.shard_iterator(shard, Start::After(seq)).unwrap()),
        Some(21)
    );
    let t = 1_700_000_000_000 + 10 * 30;
    assert_eq!(
        first_data(s.shard_iterator(shard, Start::AtTimestamp(t)).unwrap()),
        Some(29)
    );
    assert_eq!(
        first_data(
            s.shard_iterator(shard, Start::AtTimestamp(i64::MAX))
                .unwrap()
        ),
        None
    );

    // Bad requests.
    assert!(matches!(
        s.shard_iterator(ShardId(9), Start::Latest),
        Err(Error::ResourceNotFound { .. })
    ));
    assert!(matches!(
        s.shard_by_id("nonsense"),
        Err(Error::ResourceNotFound { .. })
    ));
    let other = s2_sequence_number();
    assert!(matches!(
        s.shard_iterator(shard, Start::At(other)),
        Err(Error::InvalidArgument { .. })
    ));
    let it = s.shard_iterator(shard, Start::TrimHorizon).unwrap();
    assert!(matches!(
        store.get_records(&it, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.get_records(&it, 10_001),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.get_records("garbage", 1),
        Err(Error::InvalidArgument { .. })
    ));
    clock.advance(5 * 60 * 1000 + 1);
    assert!(matches!(
        store.get_records(&it, 1),
        Err(Error::ExpiredIterator { .. })
    ));
}

/// A sequence number of shard 1, which shard 0 must refuse.
fn s2_sequence_number() -> SequenceNumber {
    SequenceNumber::new(1, shardlog::Offset::new(0))
}

#[test]
fn get_records_pages_and_reports_how_far_behind() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    for i in 0..30u32 {
        s.put_record(&PutRecord::new("k", &i.to_le_bytes()))
            .unwrap();
    }
    clock.advance(1_000);
    let it = s.shard_iterator(ShardId(0), Start::TrimHorizon).unwrap();
    let page = store.get_records(&it, 10).unwrap();
    assert_eq!(page.records.len(), 10);
    assert_eq!(page.millis_behind_latest, 1_000);
    let rest = store
        .get_records(page.next_shard_iterator.as_ref().unwrap(), 100)
        .unwrap();
    assert_eq!(rest.records.len(), 20);
    assert_eq!(rest.millis_behind_latest, 0);
    let empty = store
        .get_records(rest.next_shard_iterator.as_ref().unwrap(), 100)
        .unwrap();
    assert!(
        empty.records.is_empty()
            && empty.next_shard_iterator.is_some()
            && empty.child_shards.is_empty()
    );
}

#[test]
fn an_iterator_does_not_survive_its_stream_being_recreated() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    let it = s.shard_iterator(ShardId(0), Start::TrimHorizon).unwrap();
    store.delete_stream("s").unwrap();
    assert!(matches!(
        store.get_records(&it, 1),
        Err(Error::ResourceNotFound { .. })
    ));
    clock.advance(1);
    store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    assert!(matches!(
        store.get_records(&it, 1),
        Err(Error::ExpiredIterator { .. })
    ));
}

#[test]
fn split_closes_the_parent_and_children_take_over() {
    let (dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    for i in 0..20 {
        s.put_record(&PutRecord::new(&format!("k{i}"), b"before"))
            .unwrap();
    }
    let half = u128::MAX / 2 + 1;
    // Kinesis's rule: above the start plus one, below the end.
    for refused in [0, 1, u128::MAX] {
        assert!(matches!(
            s.split_shard(ShardId(0), refused),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        s.split_shard(ShardId(7), half),
        Err(Error::ResourceNotFound { .. })
    ));
    s.split_shard(ShardId(0), half).unwrap();
    assert!(matches!(
        s.split_shard(ShardId(0), half),
        Err(Error::ResourceInUse { .. })
    ));

    let d = s.describe();
    assert_eq!(d.open_shard_count, 2);
    let parent = &d.shards[0];
    let ending = parent.ending_sequence_number.unwrap();
    assert_eq!(
        ending.offset().get(),
        19,
        "the parent ends at its last record"
    );
    assert_eq!(d.shards[1].parent_shard_id, Some(ShardId(0)));
    assert_eq!(
        d.shards[1].hash_key_range.end + 1,
        d.shards[2].hash_key_range.start
    );
    assert_eq!(d.shards[2].hash_key_range.end, u128::MAX);

    for i in 0..20 {
        let put = s
            .put_record(&PutRecord::new(&format!("k{i}"), b"after"))
            .unwrap();
        assert_ne!(put.shard_id, "shardId-000000000000");
    }
    let (records, children) = drain(&store, &s, ShardId(0));
    assert_eq!(records.len(), 20);
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
    let at_end = s.shard_iterator(ShardId(0), Start::Latest).unwrap();
    let got = store.get_records(&at_end, 10).unwrap();
    assert!(got.next_shard_iterator.is_none() && got.child_shards.len() == 2);
    assert_eq!(got.child_shards[0].parent_shards, ["shardId-000000000000"]);

    // The topology survives a restart.
    drop(s);
    drop(store);
    let store = Store::open(dir.path(), options(&clock)).unwrap();
    let s = store.stream("s").unwrap();
    assert_eq!(s.describe().open_shard_count, 2);
    assert_eq!(s.list_shards(&ShardFilter::AtLatest).unwrap().len(), 2);
    assert_eq!(s.list_shards(&ShardFilter::AtTrimHorizon).unwrap().len(), 1);
    assert_eq!(
        s.list_shards(&ShardFilter::AfterShardId("shardId-000000000001".into()))
            .unwrap()[0]
            .shard_id,
        "shardId-000000000002"
    );
}

#[test]
fn merge_takes_adjacent_open_shards_only() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(3))
        .unwrap();
    assert!(matches!(
        s.merge_shards(ShardId(0), ShardId(2)),
        Err(Error::InvalidArgument { .. })
    ));
    // Kinesis refuses the pair given the other way round (the adjacent shard's keys must follow).
    assert!(matches!(
        s.merge_shards(ShardId(1), ShardId(0)),
        Err(Error::InvalidArgument { .. })
    ));
    s.merge_shards(ShardId(0), ShardId(1)).unwrap();
    let d = s.describe();
    let child = d.shards.last().unwrap();
    assert_eq!(child.shard_id, "shardId-000000000003");
    assert_eq!(child.parent_shard_id, Some(ShardId(0)));
    assert_eq!(child.adjacent_parent_shard_id, Some(ShardId(1)));
    assert_eq!(child.hash_key_range.start, 0);
    assert_eq!(
        child.hash_key_range.end + 1,
        d.shards[2].hash_key_range.start
    );
    assert!(matches!(
        s.merge_shards(ShardId(0), ShardId(2)),
        Err(Error::ResourceInUse { .. })
    ));
}

#[test]
fn update_shard_count_scales_uniformly_and_readers_lose_nothing() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(5))
        .unwrap();
    let mut sent: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut n = 0u32;
    let mut put_some = |s: &Stream| {
        for _ in 0..300 {
            let key = format!("key-{}", n % 41);
            let data = n.to_le_bytes().to_vec();
            s.put_record(&PutRecord::new(&key, &data)).unwrap();
            sent.entry(key).or_default().push(data);
            n += 1;
        }
    };
    put_some(&s);
    for target in [3u32, 6, 4, 8, 7, 5] {
        s.update_shard_count(target).unwrap();
        let d = s.describe();
        assert_eq!(d.open_shard_count, target as usize);
        let mut open: Vec<HashKeyRange> = s
            .list_shards(&ShardFilter::AtLatest)
            .unwrap()
            .iter()
            .map(|x| x.hash_key_range)
            .collect();
        open.sort();
        assert_eq!(
            open,
            HashKeyRange::uniform(target),
            "uniform after scaling to {target}"
        );
        for sh in d.shards.iter().filter(|x| x.parent_shard_id.is_some()) {
            assert!(sh.adjacent_parent_shard_id.is_none() || sh.parent_shard_id.is_some());
        }
        put_some(&s);
    }
    assert!(matches!(
        s.update_shard_count(11),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        s.update_shard_count(2),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(
        consume_all(&store, &s),
        sent,
        "every record once, in order per partition key"
    );
}

#[test]
fn retention_deletes_old_records_and_expired_closed_shards_disappear() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    for i in 0..200u32 {
        s.put_record(&PutRecord::new("k", &[i as u8; 100])).unwrap();
    }
    let old_iterator = s.shard_iterator(ShardId(0), Start::TrimHorizon).unwrap();
    s.split_shard(ShardId(0), u128::MAX / 2).unwrap();
    clock.advance(12 * HOUR);
    s.put_record(&PutRecord::new("k", b"newer")).unwrap();
    assert_eq!(
        store.enforce_retention().unwrap().records,
        0,
        "nothing is 24 hours old yet"
    );
    clock.advance(13 * HOUR);
    let report = store.enforce_retention().unwrap();
    assert_eq!(report.records, 200);
    let d = s.describe();
    assert_eq!(d.shards.len(), 2, "the closed parent, now empty, is gone");
    assert!(d
        .shards
        .iter()
        .all(|x| x.parent_shard_id == Some(ShardId(0))));
    let newer: Vec<StreamRecord> = d
        .shards
        .iter()
        .flat_map(|x| drain(&store, &s, x.shard_id).0)
        .collect();
    assert_eq!(newer.len(), 1);
    // An iterator into the removed shard now names a shard that is gone.
    let _ = old_iterator;
    clock.advance(HOUR);
    assert_eq!(store.enforce_retention().unwrap().records, 0);

    assert!(
        s.set_retention_hours(48, false).is_err(),
        "a decrease cannot raise"
    );
    s.set_retention_hours(48, true).unwrap();
    assert!(
        s.set_retention_hours(24, true).is_err(),
        "an increase cannot lower"
    );
    s.set_retention_hours(24, false).unwrap();
    assert!(s.set_retention_hours(8_761, true).is_err());
    assert_eq!(s.describe().retention_hours, 24);
}

/// A closed shard retention removed from the manifest but not from the disk (a crash or a
/// failed removal between the two) is removed by the next retention run and by the next open;
/// a directory of an index the stream never gave out (a reshard's child being made) stays.
#[test]
fn shard_directories_retention_forgot_are_removed_later() {
    let (dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    s.put_record(&PutRecord::new("k", b"old")).unwrap();
    s.split_shard(ShardId(0), u128::MAX / 2).unwrap();
    clock.advance(25 * HOUR);
    store.enforce_retention().unwrap();
    assert_eq!(
        s.describe().shards.len(),
        2,
        "shard 0 expired and is forgotten"
    );
    let shards = dir.path().join("streams/s/shards");
    let forgotten = shards.join("shardId-000000000000");
    let unborn = shards.join("shardId-000000000099");
    let leave = |path: &std::path::Path| {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("00000000000000000000.seg"), b"left behind").unwrap();
    };
    leave(&forgotten);
    leave(&unborn);
    let problems = shardlog::stream::verify_layout(&dir.path().join("streams/s")).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");

    store.enforce_retention().unwrap();
    assert!(!forgotten.exists(), "the next retention run removes it");
    assert!(unborn.exists(), "not an index the stream gave out");

    leave(&forgotten);
    drop(s);
    drop(store);
    let store = Store::open(dir.path(), options(&clock)).unwrap();
    assert_eq!(store.stream("s").unwrap().describe().shards.len(), 2);
    assert!(!forgotten.exists(), "opening the stream removes it");
    assert!(unborn.exists());
}

#[test]
fn a_reader_inside_expired_data_continues_at_the_oldest_record() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    let mut first = None;
    for i in 0..300u32 {
        let put = s.put_record(&PutRecord::new("k", &[0u8; 200])).unwrap();
        first.get_or_insert(put.sequence_number);
        if i == 149 {
            clock.advance(20 * HOUR);
        }
    }
    clock.advance(5 * HOUR);
    assert!(store.enforce_retention().unwrap().records > 0);
    // Positioned on a record that retention deleted.
    let at_deleted = Start::At(first.unwrap());
    let it = s.shard_iterator(ShardId(0), at_deleted).unwrap();
    let got = store.get_records(&it, 10_000).unwrap();
    assert!(
        got.records.len() >= 150 && got.records.len() < 300,
        "{}",
        got.records.len()
    );
    assert_eq!(
        got.records.last().unwrap().sequence_number.offset().get(),
        299
    );
}

#[test]
fn the_background_compactor_enforces_retention_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: Some(Duration::from_millis(20)),
            ..options(&clock)
        },
    )
    .unwrap();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    s.put_record(&PutRecord::new("k", b"old")).unwrap();
    clock.advance(25 * HOUR);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (records, _) = drain(&store, &s, ShardId(0));
        if records.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the compactor never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn tags_are_stored_and_validated() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    s.add_tags(&BTreeMap::from([("team".into(), "data".into())]))
        .unwrap();
    assert_eq!(
        s.describe().tags.get("team").map(String::as_str),
        Some("data")
    );
    let many: BTreeMap<String, String> =
        (0..51).map(|i| (format!("t{i}"), String::new())).collect();
    assert!(matches!(
        s.add_tags(&many),
        Err(Error::LimitExceeded { .. })
    ));
    s.remove_tags(&["team".into()]).unwrap();
    assert!(s.describe().tags.is_empty());
}

#[test]
fn throughput_limits_throttle_writes_and_reads_per_shard_when_on() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    assert!(!s.describe().throughput_limits, "off by default");
    for _ in 0..1500 {
        s.put_record(&PutRecord::new("k", b"x")).unwrap();
    }
    s.set_throughput_limits(Some(true)).unwrap();
    let mut accepted = 0;
    let throttled = loop {
        match s.put_record(&PutRecord::new("k", b"x")) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(accepted, 1000, "1,000 records a second");
    assert!(
        matches!(throttled, Error::ProvisionedThroughputExceeded { .. }),
        "{throttled}"
    );
    // put_records: the entries over the limit fail alone.
    clock.advance(1000);
    let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    let batch: Vec<PutRecord<'_>> = keys.iter().map(|k| PutRecord::new(k, b"x")).collect();
    let first = s.put_records(&batch).unwrap();
    assert!(first.iter().all(|r| r.is_ok()));
    let second = s.put_records(&batch).unwrap();
    assert!(second.iter().all(|r| r.is_ok()));
    let third = s.put_records(&batch).unwrap();
    let failed: Vec<_> = third.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 500);
    assert_eq!(failed[0].reason, shardlog::PutFailureReason::Throttled);
    // Reads: five calls a second.
    let it = s.shard_iterator(ShardId(0), Start::TrimHorizon).unwrap();
    for _ in 0..5 {
        store.get_records(&it, 1).unwrap();
    }
    assert!(matches!(
        store.get_records(&it, 1),
        Err(Error::ProvisionedThroughputExceeded { .. })
    ));
    clock.advance(1000);
    store.get_records(&it, 1).unwrap();
    s.set_throughput_limits(Some(false)).unwrap();
    for _ in 0..20 {
        store.get_records(&it, 1).unwrap();
    }
}

#[test]
fn an_on_demand_stream_splits_shards_that_stay_hot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::open(
        dir.path(),
        StoreOptions {
            on_demand_window: Duration::from_secs(10),
            ..options(&clock)
        },
    )
    .unwrap();
    let s = store
        .create_stream("od", StreamConfig::on_demand())
        .unwrap();
    let d = s.describe();
    assert_eq!(
        (d.mode, d.open_shard_count),
        (shardlog::StreamMode::OnDemand, 4)
    );
    // One hot key: ~2,000 records/s for the whole window into one shard; the others stay cool.
    let hot = s.put_record(&PutRecord::new("hot", b"x")).unwrap().shard_id;
    for _ in 0..10 {
        for _ in 0..2_000 {
            s.put_record(&PutRecord::new("hot", b"x")).unwrap();
        }
        s.put_record(&PutRecord::new("cool-1", b"x")).unwrap();
        clock.advance(1_000);
    }
    assert_eq!(store.autoscale().unwrap(), 1);
    let d = s.describe();
    assert_eq!(d.open_shard_count, 5);
    let children: Vec<_> = d
        .shards
        .iter()
        .filter(|x| x.parent_shard_id == Some(hot))
        .collect();
    assert_eq!(children.len(), 2, "the hot shard was split");
    // A quiet window splits nothing; a provisioned stream never autoscales.
    clock.advance(10_000);
    s.put_record(&PutRecord::new("hot", b"x")).unwrap();
    clock.advance(10_000);
    assert_eq!(store.autoscale().unwrap(), 0);
    s.set_mode(shardlog::StreamMode::Provisioned).unwrap();
    assert_eq!(s.describe().mode, shardlog::StreamMode::Provisioned);
}

/// File descriptors this process holds on files under `dir`.
fn open_files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn idle_shards_hold_no_file_and_never_written_shards_cost_no_disk() {
    let (dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(100))
        .unwrap();
    // Listing, describing and iterating over never-written shards creates nothing.
    for shard in s.list_shards(&ShardFilter::All).unwrap() {
        let it = s.shard_iterator(shard.shard_id, Start::Latest).unwrap();
        assert!(store.get_records(&it, 10).unwrap().records.is_empty());
    }
    let shard_dirs = std::fs::read_dir(dir.path().join("streams/s/shards"))
        .unwrap()
        .count();
    assert_eq!(shard_dirs, 0, "no directory for a shard never written");
    assert_eq!(
        open_files_under(dir.path()),
        1,
        "only the LOCK file is open"
    );

    for i in 0..50 {
        s.put_record(&PutRecord::new(&format!("k{i}"), b"x"))
            .unwrap();
    }
    let busy = open_files_under(dir.path());
    assert!(busy > 10, "{busy} files open while shards are in use");
    assert_eq!(store.close_idle_shards(), 0, "nothing is idle yet");
    clock.advance(301_000);
    assert!(store.close_idle_shards() > 10);
    assert_eq!(open_files_under(dir.path()), 1, "idle shards were closed");
    // A closed shard reopens on use, with everything in it.
    let (records, _) = drain(
        &store,
        &s,
        s.put_record(&PutRecord::new("k1", b"y")).unwrap().shard_id,
    );
    assert!(records.iter().any(|r| &r.data[..] == b"y"));
}

#[test]
fn list_shards_pages_with_tokens_that_expire() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(25))
        .unwrap();
    s.split_shard(ShardId(3), HashKeyRange::uniform(25)[3].start + 1000)
        .unwrap();
    let mut ids = Vec::new();
    let mut page = s
        .list_shards_page(shardlog::ListShards::First(ShardFilter::AtLatest), 10)
        .unwrap();
    let mut pages = 1;
    loop {
        ids.extend(page.shards.iter().map(|x| x.shard_id));
        let Some(token) = page.next_token else { break };
        page = s
            .list_shards_page(shardlog::ListShards::Next(&token), 10)
            .unwrap();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 26, "25 shards, one split into two");
    assert!(!ids.contains(&ShardId(3)), "the filter carries over pages");
    assert_eq!(ids, {
        let mut sorted = ids.clone();
        sorted.sort();
        sorted
    });
    let first = s
        .list_shards_page(shardlog::ListShards::First(ShardFilter::All), 5)
        .unwrap();
    let token = first.next_token.unwrap();
    assert!(matches!(
        s.list_shards_page(shardlog::ListShards::Next("bogus"), 5),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        s.list_shards_page(shardlog::ListShards::First(ShardFilter::All), 0),
        Err(Error::InvalidArgument { .. })
    ));
    clock.advance(300_001);
    assert!(matches!(
        s.list_shards_page(shardlog::ListShards::Next(&token), 5),
        Err(Error::ExpiredNextToken { .. })
    ));
}

#[test]
fn list_shards_filters_by_time() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    let t0 = clock.now_ms();
    clock.advance(1_000);
    s.split_shard(ShardId(0), u128::MAX / 2).unwrap();
    let t1 = clock.now_ms();
    clock.advance(1_000);
    let at = |t| -> Vec<ShardId> {
        s.list_shards(&ShardFilter::AtTimestamp(t))
            .unwrap()
            .into_iter()
            .map(|x| x.shard_id)
            .collect()
    };
    assert_eq!(at(t0 + 500), [ShardId(0)], "open then: the parent");
    assert_eq!(at(t1 + 500), [ShardId(1), ShardId(2)]);
    let from = s
        .list_shards(&ShardFilter::FromTimestamp(t0 + 500))
        .unwrap();
    assert_eq!(
        from.len(),
        3,
        "the parent was still open then, the children came after"
    );
    assert_eq!(
        s.list_shards(&ShardFilter::FromTimestamp(t1 + 500))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn api_settings_of_streams_and_the_store_persist_and_verify_clean() {
    let (dir, clock, store) = store();
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    stream
        .modify_settings(|s| {
            s.insert("EncryptionType".into(), serde_json::json!("KMS"));
            Ok(())
        })
        .unwrap();
    // A failing change leaves the settings as they were.
    let refused = stream.modify_settings(|s| {
        s.insert("Policy".into(), serde_json::json!("{}"));
        Err(shardlog::Error::LimitExceeded {
            reason: "refused".into(),
        })
    });
    assert!(refused.is_err());
    store
        .modify_settings(|s| {
            s.insert("Account".into(), serde_json::json!({"Status": "ENABLED"}));
        })
        .unwrap();
    drop(stream);
    drop(store);
    let store = Store::open(dir.path(), options(&clock)).unwrap();
    let d = store.stream("orders").unwrap().describe();
    assert_eq!(
        d.settings.into_iter().collect::<Vec<_>>(),
        [("EncryptionType".to_string(), serde_json::json!("KMS"))]
    );
    assert_eq!(store.settings().unwrap()["Account"]["Status"], "ENABLED");
    drop(store);
    let out = common::shardlog(&["verify", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::text(&out.stdout));
}

#[test]
fn with_throughput_limits_rescaling_follows_kinesis_rolling_limits() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("s", StreamConfig::provisioned(2))
        .unwrap();
    // Without limits (the embedded default) any number of rescalings is fine.
    for target in [4, 2, 4, 2] {
        s.update_shard_count(target).unwrap();
    }
    s.set_throughput_limits(Some(true)).unwrap();
    // Two a rolling hour (counting those above), ten a rolling day.
    let limited = s.update_shard_count(4).unwrap_err();
    assert!(
        matches!(limited, shardlog::Error::LimitExceeded { .. }),
        "{limited}"
    );
    clock.advance(3_600_000);
    s.update_shard_count(4).unwrap();
    s.update_shard_count(2).unwrap();
    assert!(s.update_shard_count(4).is_err(), "a third within the hour");
    let mut done = 6;
    while done < 10 {
        clock.advance(3_600_000);
        s.update_shard_count(if done % 2 == 0 { 4 } else { 2 })
            .unwrap();
        done += 1;
    }
    clock.advance(3_600_000);
    assert!(
        s.update_shard_count(4).is_err(),
        "an eleventh within 24 hours"
    );
    clock.advance(24 * 3_600_000);
    s.update_shard_count(4).unwrap();
    assert_eq!(
        s.describe()
            .shards
            .iter()
            .filter(|d| d.ending_sequence_number.is_none())
            .count(),
        4
    );
}

/// File descriptors this process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn any_number_of_shards_can_be_written_within_a_budget_of_open_handles() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::open(
        dir.path(),
        StoreOptions {
            max_open_shard_handles: Some(50),
            ..options(&clock)
        },
    )
    .unwrap();
    let shards = 1_500u32;
    let s = store
        .create_stream("wide", StreamConfig::provisioned(shards))
        .unwrap();
    let before = open_descriptors();
    let mut written = Vec::new();
    for d in s.describe().shards {
        let key = d.hash_key_range.start;
        let put = s
            .put_record(&PutRecord {
                explicit_hash_key: Some(key),
                ..PutRecord::new("k", d.shard_id.to_string().as_bytes())
            })
            .unwrap();
        assert_eq!(put.shard_id, d.shard_id);
        written.push(d.shard_id);
    }
    let during = open_descriptors();
    // 50 open shards of a few descriptors each, not 1,500 of them (tests run side by side, so
    // leave room for other tests' descriptors).
    assert!(
        during < before + 400,
        "{during} descriptors open after writing {shards} shards ({before} before)"
    );
    // Every record reads back (closed shards reopen).
    for shard_id in &written {
        let it = s.shard_iterator(*shard_id, Start::TrimHorizon).unwrap();
        let page = store.get_records(&it, 10).unwrap();
        assert_eq!(page.records.len(), 1, "{shard_id}");
        assert_eq!(&page.records[0].data[..], shard_id.to_string().as_bytes());
    }
}

#[test]
fn visit_records_lends_exactly_what_get_records_returns() {
    let (_dir, clock, store) = store();
    let stream = store
        .create_stream("lend", StreamConfig::provisioned(2))
        .unwrap();
    let keys: Vec<String> = (0..700).map(|i| format!("k{i}")).collect();
    let datas: Vec<Vec<u8>> = (0..700).map(|i| vec![i as u8; i % 97]).collect();
    for chunk in (0..700).collect::<Vec<usize>>().chunks(250) {
        let puts: Vec<PutRecord<'_>> = chunk
            .iter()
            .map(|&i| PutRecord::new(&keys[i], &datas[i]))
            .collect();
        for r in stream.put_records(&puts).unwrap() {
            r.unwrap();
        }
        clock.advance(5);
    }
    for shard in stream.describe().shards {
        let mut it = stream
            .shard_iterator(shard.shard_id, Start::TrimHorizon)
            .unwrap();
        let mut pages = 0;
        loop {
            let owned = store.get_records(&it, 97).unwrap();
            let mut lent = Vec::new();
            let end = store
                .visit_records(&it, 97, |r| {
                    lent.push((
                        r.sequence_number,
                        r.approximate_arrival_ms,
                        r.partition_key.to_string(),
                        r.data.to_vec(),
                    ))
                })
                .unwrap();
            let want: Vec<_> = owned
                .records
                .iter()
                .map(|r| {
                    (
                        r.sequence_number,
                        r.approximate_arrival_ms,
                        r.partition_key.clone(),
                        r.data.to_vec(),
                    )
                })
                .collect();
            assert_eq!(lent, want);
            assert_eq!(end.records, want.len());
            assert_eq!(
                end.bytes,
                want.iter().map(|w| w.2.len() + w.3.len()).sum::<usize>()
            );
            assert_eq!(end.millis_behind_latest, owned.millis_behind_latest);
            if owned.records.is_empty() {
                break;
            }
            it = end.next_shard_iterator.unwrap();
            pages += 1;
        }
        assert!(pages >= 3, "{pages} pages");
    }
}
