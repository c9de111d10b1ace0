//! Several producers, a resharder and several consumers on one stream at the same time. Consumers
//! follow child shards as the parents finish, like a KCL worker, while puts and resharding go on.
//! At the end every record put was consumed exactly once, and in order per partition key.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardlog::{PutRecord, ShardFilter, Start, Store, StoreOptions, StreamConfig};

const PRODUCERS: u64 = 3;
/// Each producer puts at least this many, and keeps going until the resharding is over.
const MIN_PER_PRODUCER: u64 = 2_000;
const RESHARDS: u32 = 12;

#[test]
fn producers_resharding_and_consumers_together_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let stream = store
        .create_stream("s", StreamConfig::provisioned(2))
        .unwrap();
    let producing = AtomicBool::new(true);
    let resharding = AtomicBool::new(true);
    // Shards whose consumer reached their end, and shards some consumer has claimed.
    let finished: Mutex<HashSet<shardlog::ShardId>> = Mutex::new(HashSet::new());
    let claimed: Mutex<HashSet<shardlog::ShardId>> = Mutex::new(HashSet::new());
    let consumed: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let mut expected: HashSet<u64> = HashSet::new();

    std::thread::scope(|s| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let stream = Arc::clone(&stream);
                let resharding = &resharding;
                s.spawn(move || {
                    let mut i = 0;
                    while i < MIN_PER_PRODUCER || resharding.load(Ordering::Acquire) {
                        let id = p * 1_000_000 + i;
                        let key = format!("p{p}-k{}", i % 17);
                        stream
                            .put_record(&PutRecord::new(&key, &id.to_le_bytes()))
                            .unwrap();
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        let resharder = s.spawn(|| {
            for step in 0..RESHARDS {
                let open = stream.describe().open_shard_count as u32;
                let target = if step % 2 == 0 {
                    (open + 1).min(6)
                } else {
                    open.div_ceil(2).max(2)
                };
                stream.update_shard_count(target).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            resharding.store(false, Ordering::Release);
        });
        for _ in 0..3 {
            s.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(Instant::now() < deadline, "consumers did not finish");
                    // Claim a shard whose parents are all finished.
                    // Read the flag before the list: a list fetched after production (and so
                    // resharding) ended is final.
                    let production_over = !producing.load(Ordering::Acquire);
                    let shards = stream.list_shards(&ShardFilter::All).unwrap();
                    let next = {
                        let finished = finished.lock().unwrap();
                        let mut claimed = claimed.lock().unwrap();
                        let pick = shards.iter().find(|sh| {
                            !claimed.contains(&sh.shard_id)
                                && [&sh.parent_shard_id, &sh.adjacent_parent_shard_id]
                                    .into_iter()
                                    .flatten()
                                    .all(|p| finished.contains(p))
                        });
                        pick.map(|sh| {
                            claimed.insert(sh.shard_id);
                            sh.shard_id
                        })
                    };
                    let Some(shard) = next else {
                        let all_done = production_over
                            && shards
                                .iter()
                                .all(|sh| claimed.lock().unwrap().contains(&sh.shard_id));
                        if all_done {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    };
                    let mut it = stream.shard_iterator(shard, Start::TrimHorizon).unwrap();
                    loop {
                        // Likewise before the read: an empty read after production ended is the end.
                        let ended_before_read = !producing.load(Ordering::Acquire);
                        let got = store.get_records(&it, 1000).unwrap();
                        let mut mine = Vec::with_capacity(got.records.len());
                        for r in &got.records {
                            mine.push((
                                r.partition_key.clone(),
                                u64::from_le_bytes(r.data[..].try_into().unwrap()),
                            ));
                        }
                        consumed.lock().unwrap().extend(mine);
                        match got.next_shard_iterator {
                            Some(next) => {
                                // An open shard: keep polling until it closes, or until all
                                // production is over and it is drained.
                                if got.records.is_empty() && ended_before_read {
                                    let open_still = stream
                                        .list_shards(&ShardFilter::AtLatest)
                                        .unwrap()
                                        .iter()
                                        .any(|x| x.shard_id == shard);
                                    if open_still {
                                        break;
                                    }
                                }
                                it = next;
                            }
                            None => break,
                        }
                    }
                    finished.lock().unwrap().insert(shard);
                }
            });
        }
        resharder.join().unwrap();
        for (p, handle) in producers.into_iter().enumerate() {
            let count = handle.join().unwrap();
            expected.extend((0..count).map(|i| p as u64 * 1_000_000 + i));
        }
        producing.store(false, Ordering::Release);
    });

    let consumed = consumed.into_inner().unwrap();
    let mut seen = HashSet::new();
    for (_, id) in &consumed {
        assert!(seen.insert(*id), "record {id} consumed twice");
    }
    let mut missing: Vec<u64> = expected.difference(&seen).copied().collect();
    let mut extra: Vec<u64> = seen.difference(&expected).copied().collect();
    missing.sort_unstable();
    extra.sort_unstable();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} records never consumed (first {:?}), {} consumed but never put (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)],
        extra.len(),
        &extra[..extra.len().min(10)]
    );
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (key, id) in &consumed {
        if let Some(prev) = last.insert(key, *id) {
            assert!(*id > prev, "order broken for {key}: {id} after {prev}");
        }
    }
}
