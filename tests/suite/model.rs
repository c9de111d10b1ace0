//! The shard against a plain in-memory model: random appends of random sizes, reads by offset
//! and by time with random limits, clock moves, rolls (small segments), reopens and deletions.

use std::sync::Arc;

use proptest::prelude::*;
use shardlog::log::shard::{DEFAULT_BATCH_BYTES, MIN_BATCH_BYTES};
use shardlog::{
    Clock, FlushPolicy, ManualClock, NewRecord, Offset, ReadLimits, Shard, ShardOptions,
};

#[derive(Debug, Clone)]
enum Op {
    /// Append records with these (key length, data length) pairs.
    Append(Vec<(usize, usize)>),
    /// Read from a point between the oldest and a bit past the newest offset.
    Read {
        at: f64,
        max_records: usize,
        max_bytes: usize,
    },
    /// Seek to a time between the oldest and a bit past the newest arrival time.
    SeekTime(f64),
    /// Move the clock (backwards too: arrival times must still not decrease).
    Clock(i64),
    Reopen,
    /// Delete segments older than a time between the oldest and newest arrival.
    DeleteBefore(f64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((1usize..=40, prop_oneof![0usize..200, 0usize..3000]), 1..30)
            .prop_map(Op::Append),
        4 => (0.0f64..1.2, 1usize..60, prop_oneof![1usize..500, Just(usize::MAX)])
            .prop_map(|(at, max_records, max_bytes)| Op::Read { at, max_records, max_bytes }),
        2 => (0.0f64..1.2).prop_map(Op::SeekTime),
        2 => (-50i64..500).prop_map(Op::Clock),
        1 => Just(Op::Reopen),
        1 => (0.0f64..1.0).prop_map(Op::DeleteBefore),
    ]
}

#[derive(Debug, Clone)]
struct ModelRecord {
    offset: u64,
    arrival_ms: i64,
    key: Vec<u8>,
    data: Vec<u8>,
}

struct Model {
    records: Vec<ModelRecord>,
    next: u64,
    last_arrival: Option<i64>,
}

impl Model {
    fn first(&self) -> u64 {
        self.records.first().map_or(self.next, |r| r.offset)
    }

    fn at_fraction(&self, f: f64) -> u64 {
        let first = self.first();
        first + ((self.next - first + 4) as f64 * f) as u64
    }

    fn time_at_fraction(&self, f: f64) -> i64 {
        match (self.records.first(), self.records.last()) {
            (Some(a), Some(b)) => {
                a.arrival_ms + ((b.arrival_ms - a.arrival_ms + 3) as f64 * f) as i64 - 1
            }
            _ => 0,
        }
    }
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn options(clock: &Arc<ManualClock>, flush: FlushPolicy, batch_bytes: usize) -> ShardOptions {
    ShardOptions {
        segment_bytes: 4096,
        max_record_bytes: 4096,
        batch_bytes,
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        flush,
        ..ShardOptions::default()
    }
}

/// `durable` picks `Always`, whose appends go through pwrite instead of the map; `batch_bytes`
/// how appends are cut into batches (small ones make an append span several).
fn run(ops: Vec<Op>, durable: bool, batch_bytes: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let flush = if durable {
        FlushPolicy::Always
    } else {
        FlushPolicy::Never
    };
    let options = |clock: &Arc<ManualClock>| options(clock, flush, batch_bytes);
    let mut shard = Shard::open(dir.path(), options(&clock)).unwrap();
    let mut model = Model {
        records: Vec::new(),
        next: 0,
        last_arrival: None,
    };
    for op in ops {
        match op {
            Op::Append(sizes) => {
                let owned: Vec<(Vec<u8>, Vec<u8>)> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &(k, d))| {
                        let seed = model.next + i as u64;
                        (content(seed ^ 0xAA, k), content(seed, d))
                    })
                    .collect();
                let records: Vec<NewRecord<'_>> = owned
                    .iter()
                    .map(|(k, d)| NewRecord {
                        partition_key: k,
                        explicit_hash_key: (k[0] % 2 == 0).then(|| u128::from(k[0])),
                        data: d,
                    })
                    .collect();
                let appended = shard.append(&records).unwrap();
                prop_assert_eq!(appended.first, Offset::new(model.next));
                let arrival = model
                    .last_arrival
                    .map_or(clock.now_ms(), |t| t.max(clock.now_ms()));
                for (k, d) in owned {
                    model.records.push(ModelRecord {
                        offset: model.next,
                        arrival_ms: arrival,
                        key: k,
                        data: d,
                    });
                    model.next += 1;
                }
                model.last_arrival = Some(arrival);
                prop_assert_eq!(appended.last, Offset::new(model.next - 1));
            }
            Op::Read {
                at,
                max_records,
                max_bytes,
            } => {
                let from = model.at_fraction(at);
                let limits = ReadLimits {
                    max_records,
                    max_bytes,
                };
                let batch = shard.read(Offset::new(from), limits).unwrap();
                let start = from.max(model.first());
                let mut expected = Vec::new();
                let mut budget = max_bytes;
                for r in model.records.iter().filter(|r| r.offset >= start) {
                    let size = r.key.len() + r.data.len();
                    if expected.len() == max_records || (size > budget && !expected.is_empty()) {
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    expected.push(r);
                }
                prop_assert_eq!(batch.records.len(), expected.len(), "read from {}", from);
                for (got, want) in batch.records.iter().zip(&expected) {
                    prop_assert_eq!(got.offset, Offset::new(want.offset));
                    prop_assert_eq!(got.arrival_ms, want.arrival_ms);
                    prop_assert_eq!(&got.partition_key[..], &want.key[..]);
                    prop_assert_eq!(&got.data[..], &want.data[..]);
                    let explicit = (want.key[0] % 2 == 0).then(|| u128::from(want.key[0]));
                    prop_assert_eq!(got.explicit_hash_key, explicit);
                }
                let next = expected.last().map_or(start.max(from), |r| r.offset + 1);
                prop_assert_eq!(batch.next_offset, Offset::new(next));
                // The borrowing path lends exactly what the owning path returns.
                let mut lent = Vec::new();
                let visited_next = shard
                    .visit(Offset::new(from), limits, |r| {
                        lent.push((
                            r.offset,
                            r.arrival_ms,
                            r.explicit_hash_key,
                            r.partition_key.to_vec(),
                            r.data.to_vec(),
                        ))
                    })
                    .unwrap();
                prop_assert_eq!(visited_next, batch.next_offset);
                let owned: Vec<_> = batch
                    .records
                    .iter()
                    .map(|r| {
                        (
                            r.offset,
                            r.arrival_ms,
                            r.explicit_hash_key,
                            r.partition_key.to_vec(),
                            r.data.to_vec(),
                        )
                    })
                    .collect();
                prop_assert_eq!(lent, owned);
            }
            Op::SeekTime(f) => {
                let t = model.time_at_fraction(f);
                let expected = model
                    .records
                    .iter()
                    .find(|r| r.arrival_ms >= t)
                    .map_or(model.next, |r| r.offset);
                prop_assert_eq!(
                    shard.seek_time(t).unwrap(),
                    Offset::new(expected),
                    "t={}",
                    t
                );
            }
            Op::Clock(delta) => clock.advance(delta),
            Op::Reopen => {
                drop(shard);
                shard = Shard::open(dir.path(), options(&clock)).unwrap();
                prop_assert_eq!(shard.next_offset(), Offset::new(model.next));
                prop_assert_eq!(shard.first_offset(), Offset::new(model.first()));
            }
            Op::DeleteBefore(f) => {
                let cutoff = model.time_at_fraction(f);
                let deleted = shard.delete_before(cutoff).unwrap();
                let new_first = shard.first_offset().get();
                prop_assert_eq!(deleted.records, new_first - model.first());
                // Only whole segments whose records are all older than the cut-off go.
                for r in &model.records {
                    if r.offset < new_first {
                        prop_assert!(r.arrival_ms < cutoff, "deleted a record at or after it");
                    }
                }
                model.records.retain(|r| r.offset >= new_first);
            }
        }
    }
    drop(shard);
    let shard = Shard::open(dir.path(), options(&clock)).unwrap();
    let mut cursor = Offset::new(0);
    let mut all = Vec::new();
    loop {
        let batch = shard.read(cursor, ReadLimits::default()).unwrap();
        if batch.records.is_empty() {
            break;
        }
        cursor = batch.next_offset;
        all.extend(batch.records);
    }
    prop_assert_eq!(all.len(), model.records.len());
    for (got, want) in all.iter().zip(&model.records) {
        prop_assert_eq!(got.offset, Offset::new(want.offset));
        prop_assert_eq!(&got.data[..], &want.data[..]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn shard_matches_the_model(
        ops in prop::collection::vec(op(), 1..60),
        durable: bool,
        batch_bytes in prop::sample::select(vec![MIN_BATCH_BYTES, 1024, DEFAULT_BATCH_BYTES]),
    ) {
        run(ops, durable, batch_bytes)?;
    }
}
