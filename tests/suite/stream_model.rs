//! A stream against a plain in-memory model: random puts (single and batched), reads with every
//! iterator type, splits, merges, rescaling, clock moves and reopens. The model keeps its own
//! shards and hash-key ranges, so it predicts where every record goes and what every read returns.

use shardlog::ShardId;
use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use shardlog::hash_key::hash_key_of;
use shardlog::{
    Clock, HashKeyRange, ManualClock, Put, PutRecord, ShardFilter, ShardOptions, Store,
    StoreOptions, StreamConfig,
};

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        len: usize,
    },
    PutRecords(Vec<(u8, usize)>),
    Read {
        shard: usize,
        start: Start,
        limit: usize,
    },
    Split {
        shard: usize,
        at: f64,
    },
    Merge {
        shard: usize,
    },
    Rescale {
        up: bool,
    },
    Clock(i64),
    Reopen,
}

#[derive(Debug, Clone, Copy)]
enum Start {
    TrimHorizon,
    Latest,
    At(f64),
    After(f64),
    Timestamp(f64),
}

fn op() -> impl Strategy<Value = Op> {
    let start = prop_oneof![
        Just(Start::TrimHorizon),
        Just(Start::Latest),
        (0.0..1.0f64).prop_map(Start::At),
        (0.0..1.0f64).prop_map(Start::After),
        (0.0..1.1f64).prop_map(Start::Timestamp),
    ];
    prop_oneof![
        6 => (any::<u8>(), 0usize..300).prop_map(|(key, len)| Op::Put { key, len }),
        3 => prop::collection::vec((any::<u8>(), 0usize..300), 1..40).prop_map(Op::PutRecords),
        5 => (any::<usize>(), start, 1usize..50).prop_map(|(shard, start, limit)| Op::Read { shard, start, limit }),
        1 => (any::<usize>(), 0.01..0.99f64).prop_map(|(shard, at)| Op::Split { shard, at }),
        1 => any::<usize>().prop_map(|shard| Op::Merge { shard }),
        1 => any::<bool>().prop_map(|up| Op::Rescale { up }),
        2 => (0i64..5_000).prop_map(Op::Clock),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct ModelShard {
    range: HashKeyRange,
    open: bool,
    /// (arrival ms, partition key, data)
    records: Vec<(i64, String, Vec<u8>)>,
}

struct Model {
    shards: BTreeMap<u32, ModelShard>,
    last_arrival: BTreeMap<u32, i64>,
}

impl Model {
    fn route(&self, key: &str) -> u32 {
        let h = hash_key_of(key);
        *self
            .shards
            .iter()
            .find(|(_, s)| s.open && s.range.contains(h))
            .expect("open shards cover the key space")
            .0
    }

    /// Checks where a put went against the model's routing and records it.
    fn record_put(
        &mut self,
        put: &Put,
        key: String,
        data: Vec<u8>,
        now: i64,
    ) -> Result<(), TestCaseError> {
        let expected = self.route(&key);
        prop_assert_eq!(put.shard_id.index(), expected, "routing of {}", key);
        let shard = self.shards.get_mut(&expected).unwrap();
        prop_assert_eq!(
            put.sequence_number.offset().get(),
            shard.records.len() as u64
        );
        let arrival = now.max(*self.last_arrival.get(&expected).unwrap_or(&i64::MIN));
        self.last_arrival.insert(expected, arrival);
        shard.records.push((arrival, key, data));
        Ok(())
    }

    fn open_sorted(&self) -> Vec<(u32, HashKeyRange)> {
        let mut v: Vec<_> = self
            .shards
            .iter()
            .filter(|(_, s)| s.open)
            .map(|(&i, s)| (i, s.range))
            .collect();
        v.sort_by_key(|(_, r)| r.start);
        v
    }
}

fn key_name(k: u8) -> String {
    format!("pk-{k}")
}

fn options(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        shard: ShardOptions {
            segment_bytes: 8 * 1024,
            clock: Arc::clone(clock) as Arc<dyn Clock>,
            ..ShardOptions::default()
        },
        retention_interval: None,
        ..StoreOptions::default()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut store = Store::open(dir.path(), options(&clock)).unwrap();
    let mut stream = store
        .create_stream("m", StreamConfig::provisioned(3))
        .unwrap();
    let mut model = Model {
        shards: HashKeyRange::uniform(3)
            .into_iter()
            .zip(0..)
            .map(|(range, i)| {
                (
                    i,
                    ModelShard {
                        range,
                        open: true,
                        records: Vec::new(),
                    },
                )
            })
            .collect(),
        last_arrival: BTreeMap::new(),
    };
    let mut counter = 0u64;
    let mut data_for = |len: usize| {
        counter += 1;
        let mut d = counter.to_le_bytes().to_vec();
        d.resize(len.max(8), (counter % 251) as u8);
        d
    };
    for op in ops {
        match op {
            Op::Put { key, len } => {
                let k = key_name(key);
                let d = data_for(len);
                let put = stream.put_record(&PutRecord::new(&k, &d)).unwrap();
                let expected = model.route(&k);
                prop_assert_eq!(put.shard_id.index(), expected, "routing of {}", k);
                let shard = model.shards.get_mut(&expected).unwrap();
                prop_assert_eq!(
                    put.sequence_number.offset().get(),
                    shard.records.len() as u64
                );
                let t = clock
                    .now_ms()
                    .max(*model.last_arrival.get(&expected).unwrap_or(&i64::MIN));
                model.last_arrival.insert(expected, t);
                shard.records.push((t, k, d));
            }
            Op::PutRecords(entries) => {
                let owned: Vec<(String, Vec<u8>)> = entries
                    .iter()
                    .map(|&(k, len)| (key_name(k), data_for(len)))
                    .collect();
                let batch: Vec<PutRecord<'_>> =
                    owned.iter().map(|(k, d)| PutRecord::new(k, d)).collect();
                let results = stream.put_records(&batch).unwrap();
                for ((k, d), r) in owned.into_iter().zip(results) {
                    model.record_put(&r.unwrap(), k, d, clock.now_ms())?;
                }
            }
            Op::Read {
                shard,
                start,
                limit,
            } => {
                let indexes: Vec<u32> = model.shards.keys().copied().collect();
                let index = indexes[shard % indexes.len()];
                let records = &model.shards[&index].records;
                let pick = |f: f64| (f * records.len() as f64) as usize;
                let (iterator_start, from) = match start {
                    Start::TrimHorizon => (shardlog::Start::TrimHorizon, 0),
                    Start::Latest => (shardlog::Start::Latest, records.len()),
                    Start::At(f) | Start::After(f) if records.is_empty() => {
                        let _ = f;
                        (shardlog::Start::TrimHorizon, 0)
                    }
                    Start::At(f) => {
                        let i = pick(f);
                        let seq =
                            shardlog::SequenceNumber::new(index, shardlog::Offset::new(i as u64));
                        (shardlog::Start::At(seq), i)
                    }
                    Start::After(f) => {
                        let i = pick(f);
                        let seq =
                            shardlog::SequenceNumber::new(index, shardlog::Offset::new(i as u64));
                        (shardlog::Start::After(seq), i + 1)
                    }
                    Start::Timestamp(f) => {
                        let (lo, hi) = records
                            .first()
                            .zip(records.last())
                            .map_or((0, 0), |(a, b)| (a.0, b.0));
                        let t = lo + ((hi - lo + 2) as f64 * f) as i64 - 1;
                        (
                            shardlog::Start::AtTimestamp(t),
                            records
                                .iter()
                                .position(|r| r.0 >= t)
                                .unwrap_or(records.len()),
                        )
                    }
                };
                let it = stream
                    .shard_iterator(ShardId(index), iterator_start)
                    .unwrap();
                let got = store.get_records(&it, limit).unwrap();
                let want: Vec<_> = records.iter().skip(from).take(limit).collect();
                prop_assert_eq!(
                    got.records.len(),
                    want.len(),
                    "read of {} from {}",
                    index,
                    from
                );
                for (g, w) in got.records.iter().zip(&want) {
                    prop_assert_eq!(g.approximate_arrival_ms, w.0);
                    prop_assert_eq!(&g.partition_key, &w.1);
                    prop_assert_eq!(&g.data[..], &w.2[..]);
                }
                let closed_and_done =
                    !model.shards[&index].open && from + got.records.len() >= records.len();
                prop_assert_eq!(got.next_shard_iterator.is_none(), closed_and_done);
                if closed_and_done {
                    let children: Vec<u32> = got
                        .child_shards
                        .iter()
                        .map(|c| c.shard_id.index())
                        .collect();
                    prop_assert!(!children.is_empty());
                }
            }
            Op::Split { shard, at } => {
                let open = model.open_sorted();
                let (index, range) = open[shard % open.len()];
                if range.end - range.start < 4 {
                    continue;
                }
                // Kinesis takes a key above the start plus one and below the end.
                let key = range.start + 2 + ((range.end - range.start - 3) as f64 * at) as u128;
                stream.split_shard(ShardId(index), key).unwrap();
                model.shards.get_mut(&index).unwrap().open = false;
                let next = *model.shards.keys().last().unwrap() + 1;
                model.shards.insert(
                    next,
                    ModelShard {
                        range: HashKeyRange {
                            start: range.start,
                            end: key - 1,
                        },
                        open: true,
                        records: Vec::new(),
                    },
                );
                model.shards.insert(
                    next + 1,
                    ModelShard {
                        range: HashKeyRange {
                            start: key,
                            end: range.end,
                        },
                        open: true,
                        records: Vec::new(),
                    },
                );
            }
            Op::Merge { shard } => {
                let open = model.open_sorted();
                if open.len() < 2 {
                    continue;
                }
                let i = shard % (open.len() - 1);
                let ((a, ra), (b, rb)) = (open[i], open[i + 1]);
                stream.merge_shards(ShardId(a), ShardId(b)).unwrap();
                model.shards.get_mut(&a).unwrap().open = false;
                model.shards.get_mut(&b).unwrap().open = false;
                let next = *model.shards.keys().last().unwrap() + 1;
                model.shards.insert(
                    next,
                    ModelShard {
                        range: HashKeyRange {
                            start: ra.start,
                            end: rb.end,
                        },
                        open: true,
                        records: Vec::new(),
                    },
                );
            }
            Op::Rescale { up } => {
                let open = model.open_sorted().len() as u32;
                let target = if up {
                    (open + 1).min(open * 2).min(8)
                } else {
                    open.div_ceil(2).max(1).max(open - 1)
                };
                if target == open {
                    continue;
                }
                stream.update_shard_count(target).unwrap();
                // Adopt the stream's new topology after checking it.
                let listed = stream.list_shards(&ShardFilter::All).unwrap();
                let mut open_ranges: Vec<HashKeyRange> = listed
                    .iter()
                    .filter(|s| s.ending_sequence_number.is_none())
                    .map(|s| s.hash_key_range)
                    .collect();
                open_ranges.sort();
                prop_assert_eq!(open_ranges, HashKeyRange::uniform(target));
                for s in &listed {
                    let index = s.shard_id.index();
                    let open = s.ending_sequence_number.is_none();
                    let entry = model.shards.entry(index).or_insert(ModelShard {
                        range: s.hash_key_range,
                        open,
                        records: Vec::new(),
                    });
                    prop_assert_eq!(entry.range, s.hash_key_range);
                    entry.open = open;
                }
            }
            Op::Clock(ms) => clock.advance(ms),
            Op::Reopen => {
                drop(stream);
                drop(store);
                store = Store::open(dir.path(), options(&clock)).unwrap();
                stream = store.stream("m").unwrap();
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn stream_matches_the_model(ops in prop::collection::vec(op(), 1..50)) {
        run(ops)?;
    }
}
