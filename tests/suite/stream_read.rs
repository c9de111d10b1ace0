//! The typed read core of a stream (`Stream::resolve`, `Stream::read`, `Stream::visit`,
//! `Stream::iterator`): shards by `ShardId`, positions as offsets and `Start`s, no tokens.

use std::sync::Arc;

use shardlog::stream::{ReadEnd, Start};
use shardlog::{
    Clock, Error, ManualClock, Offset, PutRecord, ReadLimits, SequenceNumber, ShardId,
    ShardOptions, Store, StoreOptions, StreamConfig,
};

fn store() -> (tempfile::TempDir, Arc<ManualClock>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let options = StoreOptions {
        shard: ShardOptions {
            segment_bytes: 16 * 1024,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            ..ShardOptions::default()
        },
        retention_interval: None,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    (dir, clock, store)
}

#[test]
fn reads_resolve_every_start_and_report_where_they_end() {
    let (_dir, clock, store) = store();
    let s = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    let shard = ShardId(0);
    let mut seqs = Vec::new();
    for i in 0..10u8 {
        let put = s.put_record(&PutRecord::new("k", &[i])).unwrap();
        seqs.push(put.sequence_number);
        clock.advance(10);
    }
    let t5 = 1_700_000_000_000 + 50;
    assert_eq!(
        s.resolve(shard, Start::TrimHorizon).unwrap(),
        Offset::new(0)
    );
    assert_eq!(s.resolve(shard, Start::Latest).unwrap(), Offset::new(10));
    assert_eq!(
        s.resolve(shard, Start::At(seqs[3])).unwrap(),
        Offset::new(3)
    );
    assert_eq!(
        s.resolve(shard, Start::After(seqs[3])).unwrap(),
        Offset::new(4)
    );
    assert_eq!(
        s.resolve(shard, Start::AtTimestamp(t5)).unwrap(),
        Offset::new(5)
    );

    let read = s
        .read(shard, Offset::new(4), ReadLimits::records(3))
        .unwrap();
    let data: Vec<u8> = read.records.iter().map(|r| r.data[0]).collect();
    assert_eq!(data, [4, 5, 6]);
    assert_eq!(read.records[0].sequence_number, seqs[4]);
    assert_eq!(read.end.next, Offset::new(7));
    assert_eq!((read.end.records, &read.end.finished), (3, &None));
    assert!(
        read.end.millis_behind_latest > 0,
        "records are left after 6"
    );

    // `visit` lends the same records and ends in the same place.
    let mut lent = Vec::new();
    let end: ReadEnd = s
        .visit(shard, Offset::new(4), ReadLimits::records(3), |r| {
            lent.push((
                r.sequence_number,
                r.partition_key.to_string(),
                r.data.to_vec(),
            ))
        })
        .unwrap();
    assert_eq!(end, read.end);
    let owned: Vec<_> = read
        .records
        .iter()
        .map(|r| (r.sequence_number, r.partition_key.clone(), r.data.to_vec()))
        .collect();
    assert_eq!(lent, owned);

    // Caught up: nothing, not finished (the shard is open), nothing behind.
    let tail = s
        .read(shard, Offset::new(10), ReadLimits::default())
        .unwrap();
    assert!(tail.records.is_empty());
    assert_eq!(
        (
            tail.end.next,
            &tail.end.finished,
            tail.end.millis_behind_latest
        ),
        (Offset::new(10), &None, 0)
    );
}

#[test]
fn a_closed_shard_read_to_its_end_names_its_children() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    for i in 0..3u8 {
        s.put_record(&PutRecord::new("k", &[i])).unwrap();
    }
    s.update_shard_count(2).unwrap();
    let read = s
        .read(ShardId(0), Offset::new(0), ReadLimits::default())
        .unwrap();
    assert_eq!(read.records.len(), 3);
    let children = read.end.finished.expect("a closed shard read to its end");
    let ids: Vec<ShardId> = children.iter().map(|c| c.shard_id).collect();
    assert_eq!(ids, [ShardId(1), ShardId(2)]);
    assert_eq!(read.end.next, Offset::new(3));
    // Read part way, it is not finished yet.
    let part = s
        .read(ShardId(0), Offset::new(0), ReadLimits::records(2))
        .unwrap();
    assert_eq!(part.end.finished, None);
}

#[test]
fn explicit_hash_keys_come_back_with_their_records() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    s.put_record(&PutRecord {
        explicit_hash_key: Some(12345),
        ..PutRecord::new("k", b"x")
    })
    .unwrap();
    s.put_record(&PutRecord::new("k", b"y")).unwrap();
    let read = s
        .read(ShardId(0), Offset::new(0), ReadLimits::default())
        .unwrap();
    let keys: Vec<Option<u128>> = read.records.iter().map(|r| r.explicit_hash_key).collect();
    assert_eq!(keys, [Some(12345), None]);
}

#[test]
fn bad_positions_are_typed_errors() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("orders", StreamConfig::provisioned(2))
        .unwrap();
    let other = SequenceNumber::new(1, Offset::new(0));
    assert!(matches!(
        s.resolve(ShardId(0), Start::At(other)),
        Err(Error::InvalidArgument { .. })
    ));
    let past = SequenceNumber::new(0, Offset::new(5));
    assert!(matches!(
        s.resolve(ShardId(0), Start::At(past)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        s.resolve(ShardId(7), Start::TrimHorizon),
        Err(Error::ResourceNotFound { .. })
    ));
    assert!(matches!(
        s.read(ShardId(7), Offset::new(0), ReadLimits::default()),
        Err(Error::ResourceNotFound { .. })
    ));
}

#[test]
fn the_typed_core_is_not_throttled_but_get_records_is() {
    let (_dir, _clock, store) = store();
    let s = store
        .create_stream("orders", StreamConfig::provisioned(1))
        .unwrap();
    s.set_throughput_limits(Some(true)).unwrap();
    s.put_record(&PutRecord::new("k", b"x")).unwrap();
    // Kinesis allows 5 GetRecords calls a second per shard; the core is the library's own.
    for _ in 0..20 {
        let read = s
            .read(ShardId(0), Offset::new(0), ReadLimits::default())
            .unwrap();
        assert_eq!(read.records.len(), 1);
    }
    let iterator = s.shard_iterator(ShardId(0), Start::TrimHorizon).unwrap();
    let throttled = (0..20)
        .map(|_| store.get_records(&iterator, 10))
        .filter(|r| matches!(r, Err(Error::ProvisionedThroughputExceeded { .. })))
        .count();
    assert!(throttled > 0, "GetRecords keeps Kinesis's limits");
}
