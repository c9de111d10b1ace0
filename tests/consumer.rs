//! Consumer groups: workers share shards through leases, checkpoint, resume after restarts and
//! dead workers, and follow resharding parents first so per-key order holds.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use shardlog::consumer::{ConsumerGroup, GroupConfig, InitialPosition, ProcessOptions, Worker};
use shardlog::{
    Clock, Error, ManualClock, PutRecord, SequenceNumber, ShardId, ShardOptions, Store,
    StoreOptions, StreamConfig, StreamRecord,
};

const T0: i64 = 1_700_000_000_000;

fn options(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        shard: ShardOptions {
            clock: Arc::clone(clock) as Arc<dyn Clock>,
            ..ShardOptions::default()
        },
        retention_interval: None,
        ..StoreOptions::default()
    }
}

/// A store in `dir` on `clock` with the stream `s` of `shards` shards.
fn store_with_stream(dir: &std::path::Path, clock: &Arc<ManualClock>, shards: u32) -> Arc<Store> {
    let store = Arc::new(Store::open(dir, options(clock)).unwrap());
    store
        .create_stream("s", StreamConfig::provisioned(shards))
        .unwrap();
    store
}

fn put(store: &Store, from: usize, to: usize) {
    let stream = store.stream("s").unwrap();
    for chunk in (from..to).collect::<Vec<_>>().chunks(100) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("k{}", i % 17)).collect();
        let datas: Vec<String> = chunk.iter().map(|i| format!("k{}:{i}", i % 17)).collect();
        let records: Vec<PutRecord<'_>> = keys
            .iter()
            .zip(&datas)
            .map(|(k, d)| PutRecord::new(k, d.as_bytes()))
            .collect();
        for r in stream.put_records(&records).unwrap() {
            r.unwrap();
        }
    }
}

/// Every record a closure saw, as `(key, n)` in processing order.
type Seen = Vec<(String, usize)>;

fn record(seen: &mut Seen, records: &[StreamRecord]) {
    for r in records {
        let text = String::from_utf8(r.data.to_vec()).unwrap();
        let (k, n) = text.split_once(':').unwrap();
        seen.push((k.to_string(), n.parse().unwrap()));
    }
}

fn round(worker: &Worker, seen: &mut Seen) -> shardlog::consumer::RoundReport {
    worker
        .process_round(
            &ProcessOptions::default(),
            &mut |_: ShardId, records: &[StreamRecord]| {
                record(seen, records);
                Ok::<(), ()>(())
            },
        )
        .unwrap()
}

fn held(group: &ConsumerGroup, worker: &str) -> usize {
    group
        .describe()
        .unwrap()
        .shards
        .iter()
        .filter(|s| s.owner.as_deref() == Some(worker))
        .count()
}

#[test]
fn two_then_three_workers_share_shards_evenly_and_process_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 6);
    put(&store, 0, 3000);
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let workers: Vec<Worker> = ["w1", "w2", "w3"].iter().map(|w| group.worker(w)).collect();
    let mut seen = Seen::new();
    // Two workers: three shards each once both have joined (a lease changes hands between
    // the owner's batches, one per round).
    for _ in 0..6 {
        round(&workers[0], &mut seen);
        round(&workers[1], &mut seen);
    }
    assert_eq!((held(&group, "w1"), held(&group, "w2")), (3, 3));
    // A third joins: it asks for leases until each holds two.
    for _ in 0..6 {
        for w in &workers {
            round(w, &mut seen);
        }
        clock.advance(100);
    }
    assert_eq!(
        (held(&group, "w1"), held(&group, "w2"), held(&group, "w3")),
        (2, 2, 2)
    );
    for _ in 0..10 {
        for w in &workers {
            round(w, &mut seen);
        }
    }
    let mut ns: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..3000).collect::<Vec<_>>(),
        "every record exactly once"
    );
    let d = group.describe().unwrap();
    assert_eq!(d.workers.len(), 3);
    assert!(
        d.shards.iter().all(|s| s.lag_records == 0 && s.lag_ms == 0),
        "{d:?}"
    );
}

#[test]
fn checkpoints_survive_a_restart_and_lag_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut seen = Seen::new();
    {
        let store = Arc::new(Store::open(dir.path(), options(&clock)).unwrap());
        store
            .create_stream("s", StreamConfig::provisioned(2))
            .unwrap();
        put(&store, 0, 500);
        let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
        let w = group.worker("w1");
        let options = ProcessOptions {
            max_records: 100,
            ..ProcessOptions::default()
        };
        w.process_round(&options, &mut |_: ShardId, r: &[StreamRecord]| {
            record(&mut seen, r);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(seen.len(), 200, "one batch of 100 per shard");
        clock.advance(5_000);
        let d = group.describe().unwrap();
        let lag: u64 = d.shards.iter().map(|s| s.lag_records).sum();
        assert_eq!(lag, 300);
        assert!(d.shards.iter().all(|s| s.lag_ms == 5_000), "{d:?}");
        assert!(d.shards.iter().all(|s| s.checkpoint.is_some()));
        w.release().unwrap();
    }
    let store = Arc::new(Store::open(dir.path(), options(&clock)).unwrap());
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let w = group.worker("w2");
    for _ in 0..5 {
        round(&w, &mut seen);
    }
    let mut ns: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..500).collect::<Vec<_>>(),
        "resumed exactly after the checkpoints"
    );
    // A group reading another stream under the same name is refused.
    store
        .create_stream("t", StreamConfig::provisioned(1))
        .unwrap();
    assert!(matches!(
        ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("t")),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_failed_batch_is_retried_and_checkpoints_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 1);
    put(&store, 0, 10);
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let w = group.worker("w1");
    let mut attempts = 0;
    let mut seen = Seen::new();
    for _ in 0..3 {
        w.process_round(
            &ProcessOptions::default(),
            &mut |_: ShardId, r: &[StreamRecord]| {
                attempts += 1;
                if attempts == 1 {
                    return Err("downstream is down");
                }
                record(&mut seen, r);
                Ok(())
            },
        )
        .unwrap();
    }
    assert_eq!(seen.len(), 10, "the failed batch came again, whole");
    assert_eq!(seen[0].1, 0);
    let stream = store.stream("s").unwrap();
    let first = |offset: u64| shardlog::SequenceNumber::new(0, shardlog::Offset::new(offset));
    assert!(
        matches!(
            group.checkpoint("w1", first(3)),
            Err(Error::InvalidArgument { .. })
        ),
        "behind"
    );
    assert!(
        matches!(
            group.checkpoint("w1", first(10)),
            Err(Error::InvalidArgument { .. })
        ),
        "beyond the end"
    );
    assert!(
        matches!(
            group.checkpoint(
                "w1",
                shardlog::SequenceNumber::new(99, shardlog::Offset::new(0))
            ),
            Err(Error::InvalidArgument { .. })
        ),
        "not of a shard of the group's stream"
    );
    assert!(
        matches!(
            group.checkpoint("w2", first(9)),
            Err(Error::LeaseLost { .. })
        ),
        "not its lease"
    );
    group.checkpoint("w1", first(9)).unwrap();
    drop(stream);
}

#[test]
fn a_dead_workers_leases_are_taken_after_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 2);
    put(&store, 0, 100);
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let (dead, alive) = (group.worker("dead"), group.worker("alive"));
    let mut seen = Seen::new();
    round(&dead, &mut seen);
    assert_eq!(held(&group, "dead"), 2);
    put(&store, 100, 200);
    // The dead worker stops renewing; until its leases expire the other gets nothing.
    assert!(round(&alive, &mut seen).shards.is_empty() || held(&group, "alive") <= 1);
    clock.advance(10_001);
    for _ in 0..3 {
        round(&alive, &mut seen);
    }
    assert_eq!(held(&group, "alive"), 2);
    let mut ns: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    ns.sort();
    ns.dedup();
    assert_eq!(ns, (0..200).collect::<Vec<_>>());
}

#[test]
fn splits_and_merges_during_consumption_keep_per_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 2);
    let stream = store.stream("s").unwrap();
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let workers = [group.worker("w1"), group.worker("w2")];
    let mut seen = Seen::new();
    let small = ProcessOptions {
        max_records: 37,
        ..ProcessOptions::default()
    };
    let step = |seen: &mut Seen| {
        for w in &workers {
            w.process_round(&small, &mut |_: ShardId, r: &[StreamRecord]| {
                record(seen, r);
                Ok::<(), ()>(())
            })
            .unwrap();
        }
    };
    let mut next = 0;
    for phase in 0..6 {
        put(&store, next, next + 300);
        next += 300;
        step(&mut seen);
        match phase {
            0 => stream.split_shard(ShardId(0), u128::MAX / 4).unwrap(),
            1 => stream.update_shard_count(5).unwrap(),
            2 => {
                let mut open = stream
                    .list_shards(&shardlog::ShardFilter::AtLatest)
                    .unwrap();
                open.sort_by_key(|s| s.hash_key_range.start);
                stream
                    .merge_shards(open[0].shard_id, open[1].shard_id)
                    .unwrap();
            }
            3 => stream.update_shard_count(2).unwrap(),
            _ => {}
        }
        step(&mut seen);
    }
    for _ in 0..200 {
        step(&mut seen);
    }
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, n) in &seen {
        per_key.entry(k.clone()).or_default().push(*n);
    }
    for (k, ns) in &per_key {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{k} out of order: {ns:?}"
        );
    }
    let mut all: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    all.sort();
    assert_eq!(all, (0..next).collect::<Vec<_>>(), "every record once");
    let d = group.describe().unwrap();
    assert!(d.shards.iter().filter(|s| s.finished).count() >= 4, "{d:?}");
}

const DIR_ENV: &str = "SHARDLOG_CONSUMER_CRASH_DIR";

fn short_leases() -> GroupConfig {
    GroupConfig {
        lease_duration: Duration::from_millis(500),
        initial_position: InitialPosition::TrimHorizon,
        ..GroupConfig::new("s")
    }
}

/// The child: a worker that processes slowly, printing `ack N` after each checkpointed batch
/// (N = records processed so far), until killed.
#[test]
#[ignore = "run by the consumer crash test as its child process"]
fn child_worker() {
    let dir = std::env::var(DIR_ENV).expect("the parent sets the directory");
    let store = Arc::new(Store::open(&dir, common::durable_store_options()).unwrap());
    let group = ConsumerGroup::open(Arc::clone(&store), "g", short_leases()).unwrap();
    let worker = group.worker("child");
    let mut done = 0u64;
    let mut out = std::io::stdout();
    let options = ProcessOptions {
        max_records: 25,
        ..ProcessOptions::default()
    };
    loop {
        let report = worker
            .process_round(&options, &mut |_: ShardId, r: &[StreamRecord]| {
                done += r.len() as u64;
                Ok::<(), ()>(())
            })
            .unwrap();
        // Checkpointed by now: the round commits after each successful batch.
        writeln!(out, "ack {done}").unwrap();
        out.flush().unwrap();
        if report.records == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_killed_worker_is_replaced_after_its_leases_expire_without_skipping() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), common::durable_store_options()).unwrap();
        store
            .create_stream("s", StreamConfig::provisioned(3))
            .unwrap();
        put(&store, 0, 3000);
    }
    let (mut child, acks) = common::spawn_acking_child(
        "child_worker",
        &[(DIR_ENV, dir.path().display().to_string())],
    );
    // Let it process part of the stream, then SIGKILL it.
    let mut rng = common::crash_rng("consumer sigkill");
    use rand::Rng;
    std::thread::sleep(Duration::from_millis(rng.gen_range(150..500)));
    child.kill().unwrap();
    child.wait().unwrap();
    let acked = acks.join().unwrap().unwrap_or(0);
    assert!(
        acked < 3000,
        "the child was meant to die midway (acked {acked})"
    );

    let store = Arc::new(Store::open(dir.path(), common::durable_store_options()).unwrap());
    let group = ConsumerGroup::open(Arc::clone(&store), "g", short_leases()).unwrap();
    let before = group.describe().unwrap();
    let checkpoints: BTreeMap<ShardId, Option<SequenceNumber>> = before
        .shards
        .iter()
        .map(|s| (s.shard_id, s.checkpoint))
        .collect();
    let child_done: u64 = before
        .shards
        .iter()
        .map(|s| processed(&store, s.shard_id, s.lag_records))
        .sum();
    let worker = group.worker("parent");
    let mut first_seen: BTreeMap<ShardId, SequenceNumber> = BTreeMap::new();
    let mut seen = Seen::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // The child's leases block the parent until they expire (500 ms).
    while seen.len() as u64 + child_done < 3000 && std::time::Instant::now() < deadline {
        worker
            .process_round(
                &ProcessOptions::default(),
                &mut |shard: ShardId, r: &[StreamRecord]| {
                    first_seen
                        .entry(shard)
                        .or_insert_with(|| r[0].sequence_number);
                    record(&mut seen, r);
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // The parent resumed each shard exactly after the child's last checkpoint.
    for (shard, first) in &first_seen {
        let index = shard.index();
        let expected = match checkpoints.get(shard).copied().flatten() {
            Some(cp) => cp.offset().get() + 1,
            None => 0,
        };
        assert_eq!(
            *first,
            SequenceNumber::new(index, shardlog::Offset::new(expected)),
            "{shard} did not resume right after its checkpoint"
        );
    }
    // Nothing skipped, nothing processed twice by the parent: what the child checkpointed plus
    // what the parent processed is every record.
    let mut all: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), seen.len(), "the parent processed a record twice");
    assert_eq!(
        child_done + seen.len() as u64,
        3000,
        "acked {acked}, child checkpointed {child_done}"
    );
    println!(
        "child acked {acked}, checkpointed {child_done}; parent processed {}",
        seen.len()
    );
    assert!(
        child_done >= acked,
        "an acknowledged checkpoint was lost: acked {acked}, kept {child_done}"
    );
}

/// Records of `shard` below its checkpoint, from its end and its lag.
fn processed(store: &Store, shard: ShardId, lag: u64) -> u64 {
    let index = shard.index();
    let end = store.stream("s").unwrap().shard_ends().unwrap()[&index];
    end - lag
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Join(u8),
    Round { worker: u8, fail: bool },
    Crash(u8),
    Leave(u8),
    Split,
    Merge,
    Advance(i64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        2 => (1usize..60).prop_map(Op::Put),
        1 => (0u8..4).prop_map(Op::Join),
        4 => (0u8..4, proptest::bool::weighted(0.15))
            .prop_map(|(worker, fail)| Op::Round { worker, fail }),
        1 => (0u8..4).prop_map(Op::Crash),
        1 => (0u8..4).prop_map(Op::Leave),
        1 => Just(Op::Split),
        1 => Just(Op::Merge),
        1 => (1i64..12_000).prop_map(Op::Advance),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Random joins, leaves, crashes, failed batches, reshards and time against the model of
    /// what must be processed: in the end every record put is processed (at least once), and
    /// per partition key records are first processed in the order they were put.
    #[test]
    fn every_record_is_eventually_processed_in_key_order(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = Arc::new(Store::open(dir.path(), options(&clock)).unwrap());
        let stream = store.create_stream("s", StreamConfig::provisioned(2)).unwrap();
        let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
        let mut workers: BTreeMap<u8, Worker> = BTreeMap::new();
        let mut seen = Seen::new();
        let mut next = 0usize;
        let small = ProcessOptions { max_records: 7, ..ProcessOptions::default() };
        let run = |worker: &Worker, fail: bool, seen: &mut Seen| {
            worker
                .process_round(&small, &mut |_: ShardId, r: &[StreamRecord]| {
                    if fail {
                        return Err(());
                    }
                    record(seen, r);
                    Ok(())
                })
                .unwrap();
        };
        for op in ops {
            match op {
                Op::Put(n) => {
                    put(&store, next, next + n);
                    next += n;
                }
                Op::Join(w) => {
                    workers.entry(w).or_insert_with(|| group.worker(&format!("w{w}")));
                }
                Op::Round { worker, fail } => {
                    if let Some(w) = workers.get(&worker) {
                        run(w, fail, &mut seen);
                    }
                }
                Op::Crash(w) => {
                    workers.remove(&w);
                }
                Op::Leave(w) => {
                    if let Some(worker) = workers.remove(&w) {
                        worker.release().unwrap();
                    }
                }
                Op::Split => {
                    let open = stream.list_shards(&shardlog::ShardFilter::AtLatest).unwrap();
                    if open.len() < 5 {
                        let s = &open[0];
                        let r = s.hash_key_range;
                        let mid = r.start + (r.end - r.start) / 2;
                        stream.split_shard(s.shard_id, mid).unwrap();
                    }
                }
                Op::Merge => {
                    let mut open = stream.list_shards(&shardlog::ShardFilter::AtLatest).unwrap();
                    open.sort_by_key(|s| s.hash_key_range.start);
                    if open.len() > 1 {
                        stream.merge_shards(open[0].shard_id, open[1].shard_id).unwrap();
                    }
                }
                Op::Advance(ms) => clock.advance(ms),
            }
        }
        // Drain: crashed workers' leases expire; a fresh worker finishes everything.
        clock.advance(20_000);
        let last = group.worker("drain");
        for _ in 0..500 {
            run(&last, false, &mut seen);
            for w in workers.values() {
                run(w, false, &mut seen);
            }
            if group.describe().unwrap().shards.iter().all(|s| s.lag_records == 0) {
                break;
            }
        }
        let mut first: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut done = std::collections::BTreeSet::new();
        for (k, n) in &seen {
            if done.insert(*n) {
                first.entry(k.clone()).or_default().push(*n);
            }
        }
        proptest::prop_assert_eq!(done.into_iter().collect::<Vec<_>>(), (0..next).collect::<Vec<_>>());
        for (k, ns) in first {
            proptest::prop_assert!(ns.windows(2).all(|w| w[0] < w[1]), "{} out of order: {:?}", k, ns);
        }
    }
}

#[test]
fn a_subscription_pushes_records_within_its_byte_budget_and_ends_at_a_closed_shards_end() {
    use shardlog::consumer::{ShardSubscription, SubscribeOptions};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 1);
    let stream = store.stream("s").unwrap();
    stream
        .register_consumer("fanout", &BTreeMap::new())
        .unwrap();
    let open = |start: shardlog::Start, rate: Option<u64>| {
        ShardSubscription::open(
            Arc::clone(&store),
            "s",
            "fanout",
            ShardId(0),
            SubscribeOptions {
                max_bytes_per_sec: rate,
                poll: Duration::from_millis(1),
                ..SubscribeOptions::new(start)
            },
        )
    };
    assert!(matches!(
        ShardSubscription::open(
            Arc::clone(&store),
            "s",
            "nobody",
            ShardId(0),
            SubscribeOptions::new(shardlog::Start::Latest)
        ),
        Err(Error::ResourceNotFound { .. })
    ));
    let mut sub = open(shardlog::Start::Latest, Some(3000)).unwrap();
    let quiet = sub.next_event(Duration::ZERO).unwrap().unwrap();
    assert!(quiet.records.is_empty(), "a heartbeat when nothing arrived");
    let payload = vec![b'x'; 1000];
    for i in 0..10 {
        stream
            .put_record(&PutRecord::new(&format!("k{i}"), &payload))
            .unwrap();
    }
    // 3,000 bytes a second: three records now, none more until the clock moves.
    let first = sub.next_event(Duration::ZERO).unwrap().unwrap();
    assert_eq!(first.records.len(), 3);
    assert_eq!(
        first.continuation_sequence_number,
        first.records[2].sequence_number
    );
    assert!(sub
        .next_event(Duration::ZERO)
        .unwrap()
        .unwrap()
        .records
        .is_empty());
    clock.advance(1000);
    let second = sub.next_event(Duration::ZERO).unwrap().unwrap();
    assert_eq!(second.records.len(), 3);
    assert_eq!(
        second.records[0].sequence_number.offset().get(),
        3,
        "continues right after the budget's cut"
    );
    clock.advance(10_000);
    let third = sub.next_event(Duration::ZERO).unwrap().unwrap();
    assert_eq!(
        third.records.len(),
        3,
        "an idle budget refills to one second's worth, no more"
    );
    clock.advance(1000);
    let last = sub.next_event(Duration::ZERO).unwrap().unwrap();
    assert_eq!(last.records.len(), 1);
    assert_eq!(last.records[0].sequence_number.offset().get(), 9);
    // A closed shard: delivered to its end, its children named, then the subscription ends.
    stream.update_shard_count(2).unwrap();
    let mut all = open(shardlog::Start::TrimHorizon, None).unwrap();
    let (mut records, mut children) = (0, Vec::new());
    while let Some(e) = all.next_event(Duration::from_millis(10)).unwrap() {
        records += e.records.len();
        if !e.child_shards.is_empty() {
            children = e.child_shards.iter().map(|c| c.shard_id).collect();
        }
    }
    assert_eq!(records, 10);
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
}

#[test]
fn inspect_shows_groups_with_owners_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    {
        let store = Arc::new(Store::open(dir.path(), options(&clock)).unwrap());
        store
            .create_stream("s", StreamConfig::provisioned(1))
            .unwrap();
        put(&store, 0, 20);
        let group =
            ConsumerGroup::open(Arc::clone(&store), "billing", GroupConfig::new("s")).unwrap();
        let mut seen = Seen::new();
        round(&group.worker("w1"), &mut seen);
        assert_eq!(seen.len(), 20);
    }
    let path = dir.path().to_str().unwrap();
    let out = common::shardlog(&["inspect", path]);
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{text}");
    let last = shardlog::SequenceNumber::new(0, shardlog::Offset::new(19)).to_string();
    assert!(text.contains("consumer group billing  reads s"), "{text}");
    assert!(text.contains("owner w1"), "{text}");
    assert!(text.contains(&format!("checkpoint {last}")), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&common::shardlog(&["inspect", "--json", path]).stdout).unwrap();
    assert_eq!(json["consumer_groups"][0]["name"], "billing");
    assert_eq!(json["consumer_groups"][0]["shards"][0]["checkpoint"], last);
    // verify reads group files too: clean, then a damaged one is reported by name.
    let verified = common::shardlog(&["verify", path]);
    let report = common::text(&verified.stdout);
    assert!(verified.status.success(), "{report}");
    assert!(report.contains("1 consumer group files"), "{report}");
    let file = dir.path().join("groups/billing.json");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let verified = common::shardlog(&["verify", path]);
    let report = common::text(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{report}");
    assert!(
        report.contains("billing.json: consumer group file does not parse"),
        "{report}"
    );
}

/// Appends wake a caught-up subscription and a caught-up worker instead of leaving them asleep
/// until their wait ends. (The waits here are a minute; a wake-up that did not happen would
/// show as a return after it.)
#[test]
fn an_append_wakes_a_waiting_subscription_and_a_waiting_worker() {
    use shardlog::consumer::{ShardSubscription, SubscribeOptions};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 1);
    let stream = store.stream("s").unwrap();
    stream
        .register_consumer("fanout", &BTreeMap::new())
        .unwrap();
    let minute = Duration::from_secs(60);
    let mut sub = ShardSubscription::open(
        Arc::clone(&store),
        "s",
        "fanout",
        ShardId(0),
        SubscribeOptions {
            poll: minute,
            ..SubscribeOptions::new(shardlog::Start::Latest)
        },
    )
    .unwrap();
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let worker = group.worker("w");
    let processed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let started = Instant::now();
            let event = sub.next_event(minute).unwrap().unwrap();
            (event.records.len(), started.elapsed())
        });
        let running = scope.spawn(|| {
            worker
                .run(
                    &ProcessOptions {
                        idle_wait: minute,
                        ..ProcessOptions::default()
                    },
                    &stop,
                    |_, records| {
                        processed.fetch_add(records.len(), Ordering::SeqCst);
                        Ok::<(), String>(())
                    },
                )
                .unwrap();
        });
        // Both are asleep by now (and would stay so for a minute).
        std::thread::sleep(Duration::from_millis(300));
        let put_at = Instant::now();
        stream.put_record(&PutRecord::new("k", b"hello")).unwrap();
        let (records, waited) = waiting.join().unwrap();
        assert_eq!(records, 1);
        assert!(
            waited < Duration::from_secs(30),
            "woken only after {waited:?}"
        );
        while processed.load(Ordering::SeqCst) == 0 {
            assert!(
                put_at.elapsed() < Duration::from_secs(30),
                "the worker was not woken"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
        // One more append ends the worker's wait, so it sees `stop`.
        stream.put_record(&PutRecord::new("k", b"bye")).unwrap();
        running.join().unwrap();
    });
}

#[test]
fn a_group_opened_twice_in_a_process_is_one_group_and_is_deleted_only_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 4);
    put(&store, 0, 400);
    // Two parts of a program open the group on their own, each with a worker.
    let first = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let second = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    let (a, b) = (first.worker("a"), second.worker("b"));
    let mut seen = Seen::new();
    for _ in 0..6 {
        round(&a, &mut seen);
        round(&b, &mut seen);
    }
    assert_eq!((held(&first, "a"), held(&first, "b")), (2, 2));
    let mut ns: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..400).collect::<Vec<_>>(),
        "every record exactly once"
    );
    assert!(matches!(
        ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("t")),
        Err(Error::InvalidArgument { .. }) | Err(Error::ResourceNotFound { .. })
    ));

    let listed = ConsumerGroup::list(&store).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].stream.as_str()),
        ("g", "s")
    );
    assert!(matches!(
        ConsumerGroup::delete(&store, "g"),
        Err(Error::ResourceInUse { .. })
    ));
    drop((a, b, first, second));
    ConsumerGroup::delete(&store, "g").unwrap();
    assert!(ConsumerGroup::list(&store).unwrap().is_empty());
    assert!(matches!(
        ConsumerGroup::delete(&store, "g"),
        Err(Error::ResourceNotFound { .. })
    ));
    // Opened again, it starts over.
    let again = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let mut seen = Seen::new();
    round(&again.worker("c"), &mut seen);
    assert_eq!(seen.len(), 400, "from the trim horizon again");
}

/// Worker threads running concurrently with a producer, reshards and workers stopping and
/// joining (a real clock, short leases): every record is processed, and per key the records are
/// first processed in order. (Per-key order holds for first processings; a batch whose lease
/// moved may be processed again.)
#[test]
fn concurrent_workers_producer_reshards_and_churn_process_everything_in_key_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), common::durable_store_options()).unwrap());
    let stream = store
        .create_stream("s", StreamConfig::provisioned(3))
        .unwrap();
    let group = ConsumerGroup::open(
        Arc::clone(&store),
        "g",
        GroupConfig {
            lease_duration: Duration::from_millis(300),
            ..GroupConfig::new("s")
        },
    )
    .unwrap();
    let seen = Mutex::new(Seen::new());
    let options = ProcessOptions {
        max_records: 50,
        idle_wait: Duration::from_millis(5),
    };
    let total = 12_000;
    /// Stops every worker when dropped, also while a failed assertion unwinds (the scope would
    /// otherwise wait for them forever).
    struct StopAll<'a>(&'a Mutex<Vec<Arc<AtomicBool>>>);
    impl Drop for StopAll<'_> {
        fn drop(&mut self) {
            for stop in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                stop.store(true, Ordering::Release);
            }
        }
    }
    let stops = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let _stop_all = StopAll(&stops);
        let run = |id: String, stop: Arc<AtomicBool>| {
            stops.lock().unwrap().push(Arc::clone(&stop));
            let worker = group.worker(&id);
            let seen = &seen;
            s.spawn(move || {
                worker
                    .run(&options, &stop, |_, records| {
                        record(&mut seen.lock().unwrap(), records);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
            })
        };
        let mut running: Vec<(Arc<AtomicBool>, std::thread::ScopedJoinHandle<'_, ()>)> = (0..3)
            .map(|w| {
                let stop = Arc::new(AtomicBool::new(false));
                (Arc::clone(&stop), run(format!("w{w}"), stop))
            })
            .collect();
        // A worker that dies: it stops mid-stream without releasing its leases, which then
        // expire (300 ms) and go to the others.
        let dying = Arc::new(AtomicBool::new(false));
        stops.lock().unwrap().push(Arc::clone(&dying));
        let mut crasher = Some({
            let (worker, dying, seen) = (group.worker("crasher"), Arc::clone(&dying), &seen);
            s.spawn(move || {
                while !dying.load(Ordering::Acquire) {
                    worker
                        .process_round(&options, &mut |_: ShardId, r: &[StreamRecord]| {
                            record(&mut seen.lock().unwrap(), r);
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                    std::thread::sleep(options.idle_wait);
                }
            })
        });
        let mut next_id = 3;
        for phase in 0..12 {
            if phase == 6 {
                dying.store(true, Ordering::Release);
                if let Some(crasher) = crasher.take() {
                    crasher.join().unwrap();
                }
            }
            put(&store, phase * 1000, (phase + 1) * 1000);
            match phase {
                2 => stream.split_shard(ShardId(0), u128::MAX / 8).unwrap(),
                5 => stream.update_shard_count(5).unwrap(),
                8 => stream.update_shard_count(3).unwrap(),
                _ => {}
            }
            // A worker leaves cleanly, another joins.
            if phase % 3 == 1 {
                let (stop, handle) = running.remove(0);
                stop.store(true, Ordering::Release);
                handle.join().unwrap();
                let stop = Arc::new(AtomicBool::new(false));
                running.push((Arc::clone(&stop), run(format!("w{next_id}"), stop)));
                next_id += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let d = group.describe().unwrap();
            if d.shards.iter().all(|s| s.lag_records == 0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never caught up: {d:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for (stop, handle) in running {
            stop.store(true, Ordering::Release);
            handle.join().unwrap();
        }
    });
    let seen = seen.into_inner().unwrap();
    let mut first: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut done = std::collections::BTreeSet::new();
    for (k, n) in &seen {
        if done.insert(*n) {
            first.entry(k.clone()).or_default().push(*n);
        }
    }
    assert_eq!(
        done.into_iter().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>(),
        "every record processed"
    );
    for (k, ns) in &first {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{k} out of order: {ns:?}"
        );
    }
}

#[test]
fn an_open_group_does_not_follow_a_stream_deleted_and_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 1);
    put(&store, 0, 50);
    let group = ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap();
    let worker = group.worker("w");
    let mut seen = Seen::new();
    round(&worker, &mut seen);
    assert_eq!(seen.len(), 50);
    store.delete_stream("s").unwrap();
    clock.advance(1000);
    store
        .create_stream("s", StreamConfig::provisioned(1))
        .unwrap();
    put(&store, 0, 80);
    // Its checkpoint (50) means nothing in the new stream: refused, not applied.
    let refused = worker.process_round(
        &ProcessOptions::default(),
        &mut |_: ShardId, _: &[StreamRecord]| Ok::<(), ()>(()),
    );
    assert!(
        matches!(&refused, Err(Error::InvalidArgument { reason, .. }) if reason.contains("earlier stream")),
        "{refused:?}"
    );
}

#[test]
fn lease_durations_are_checked_in_configs_and_group_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_with_stream(dir.path(), &clock, 1);
    for bad in [Duration::ZERO, Duration::from_secs(400 * 24 * 3600)] {
        let config = GroupConfig {
            lease_duration: bad,
            ..GroupConfig::new("s")
        };
        assert!(matches!(
            ConsumerGroup::open(Arc::clone(&store), "g", config),
            Err(Error::InvalidArgument { .. })
        ));
    }
    drop(ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")).unwrap());
    // A damaged file whose lease would overflow the lease arithmetic is refused by name.
    let path = dir.path().join("groups/g.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["lease_ms"] = serde_json::json!(i64::MAX);
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    match ConsumerGroup::open(Arc::clone(&store), "g", GroupConfig::new("s")) {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
}
