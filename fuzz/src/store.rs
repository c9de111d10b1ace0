// Body of the `store` fuzz target: power cuts under a whole store. Arbitrary sequences of stream
// creates and deletes, PutRecords, resharding (UpdateShardCount), retention-period changes,
// retention runs after the clock jumps, consumer-group checkpoints, and a Firehose delivery stream
// (create, PutRecordBatch, delivery into a local directory under the data directory), with an I/O
// fault armed at any file operation under the data directory (a write, sync, rename, directory
// creation or removal; a write may be torn). The
// first error ends the process's life: everything is dropped and, under `Always` and
// `GroupCommit`, the power is cut (`faults::power_cut` over every file of the store; directory
// changes are kept in order, as ext4's journal keeps them). Under `Never` the process is only
// killed (the page cache survives). Then the store is reopened and checked against a model:
//
// - every acknowledged record is there exactly once, in its shard, with per-key order kept; a
//   record of the failed call may be there (once) or not; nothing else is;
// - an acknowledged stream exists and opens (a stream is never half made or half deleted), an
//   acknowledged delete is gone; the failed create or delete left the stream whole or absent;
// - an acknowledged reshard or retention change is there; a failed one is all or nothing;
// - an acknowledged checkpoint is there (never behind); none points past the records stored;
// - records are only ever lost to retention, and only once older than the shortest period;
// - the delivery stream exists once acknowledged; every delivered Firehose record was put (the
//   failed call's may be), none is delivered twice, ever; at the end, after a flush, every
//   acknowledged Firehose record is delivered exactly once.
//
// Shared by the cargo-fuzz target and by `cargo test --features failpoints`
// (tests/suite/fuzz_store.rs), which runs it over the committed seeds. `unwrap`/`expect` here are on
// the harness's own work, or state what the store must do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shardlog::consumer::{ConsumerGroup, GroupConfig, InitialPosition};
use shardlog::faults;
use shardlog::firehose::{
    DeliveryConfig, DeliveryStreamConfig, DestinationConfig, Firehose, FirehoseOptions, SourceStart,
};
use shardlog::stream::{PutRecord, Start};
use shardlog::{Clock, FlushPolicy, ManualClock, ShardOptions, Store, StoreOptions, StreamConfig};

#[path = "input.rs"]
#[macro_use]
mod input;
use input::Input;

const T0: i64 = 1_700_000_000_000;
const STREAMS: [&str; 3] = ["orders", "clicks", ".hidden"];
const GROUP: &str = "billing";
const WORKER: &str = "w";
const DELIVERY: &str = "archive";
/// Where the delivery stream's objects go: under the data directory, so faults and power cuts
/// reach them too.
const DELIVERED: &str = "delivered";
/// The shortest retention period the target sets: a record younger than this is never lost.
const MIN_RETENTION_MS: i64 = 24 * 3_600_000;

/// What the model knows of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelStream {
    /// Its creation time: a stream deleted and created again is another stream.
    created_ms: i64,
    /// Ids of the acknowledged records (each record's data starts with its id).
    records: BTreeSet<u64>,
    /// Open shards.
    open_shards: usize,
    retention_hours: u32,
}

/// The one call that failed before a crash: what it may have left behind.
#[derive(Debug, Clone, Default)]
struct Uncertain {
    /// Streams that may or may not exist, and how each would be if it does.
    streams: BTreeMap<String, ModelStream>,
    /// Records that may be there.
    records: BTreeSet<u64>,
    /// Open shard counts or retention periods a failed change may have left.
    open_shards: Option<(String, usize)>,
    retention_hours: Option<(String, u32)>,
    /// A checkpoint (shard index, next offset) that may have been written.
    checkpoint: Option<(u32, u64)>,
    /// The delivery stream may have been created.
    delivery_stream: bool,
}

struct Harness {
    dir: tempfile::TempDir,
    options: StoreOptions,
    clock: Arc<ManualClock>,
    durable_policy: bool,
    store: Option<Arc<Store>>,
    group: Option<Arc<ConsumerGroup>>,
    streams: BTreeMap<String, ModelStream>,
    /// The group reads `STREAMS[0]` as created at this time; its acknowledged checkpoints (shard
    /// index to the next offset to read).
    group_stream: Option<i64>,
    checkpoints: BTreeMap<u32, u64>,
    next_id: u64,
    /// When each record was put (the clock only moves forward).
    put_at: BTreeMap<u64, i64>,
    firehose: Option<Firehose>,
    /// The delivery stream was acknowledged created.
    delivery_stream: bool,
    /// Firehose records acknowledged, and records of failed puts (they may be buffered, so they
    /// may be delivered, once).
    delivery_acked: BTreeSet<u64>,
    delivery_maybe: BTreeSet<u64>,
}

/// A record read back: its id, partition key and shard.
#[derive(Debug)]
struct Found {
    id: u64,
    key: String,
    shard: shardlog::ShardId,
}

fn read_stream(store: &Store, name: &str) -> Vec<Found> {
    let stream = store.stream(name).expect("a stream that exists opens");
    let mut out = Vec::new();
    for shard in stream.describe().shards {
        let mut iterator = Some(
            stream
                .shard_iterator(shard.shard_id, Start::TrimHorizon)
                .expect("every listed shard has an iterator"),
        );
        while let Some(it) = iterator.take() {
            let page = store
                .get_records(&it, 10_000)
                .expect("an undamaged shard reads");
            let empty = page.records.is_empty();
            for r in page.records {
                let id = u64::from_le_bytes(r.data[..8].try_into().expect("ids are 8 bytes"));
                out.push(Found {
                    id,
                    key: r.partition_key,
                    shard: shard.shard_id,
                });
            }
            if !empty {
                iterator = page.next_shard_iterator;
            }
        }
    }
    out
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Harness {
        let clock = Arc::new(ManualClock::new(T0));
        let flush = match input.byte() % 3 {
            0 => FlushPolicy::Always,
            1 => FlushPolicy::GroupCommit {
                interval: Duration::ZERO,
            },
            _ => FlushPolicy::Never,
        };
        let options = StoreOptions {
            shard: ShardOptions {
                segment_bytes: 4096 + u64::from(input.byte()) * 64,
                flush,
                clock: Arc::clone(&clock) as Arc<dyn Clock>,
                ..ShardOptions::default()
            },
            retention_interval: None,
            ..StoreOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        faults::reset(dir.path());
        let store = Arc::new(Store::open(dir.path(), options.clone()).expect("a new store opens"));
        let firehose = open_firehose(&store, flush);
        faults::mark_durable(dir.path()).unwrap();
        Harness {
            dir,
            options,
            clock,
            durable_policy: flush != FlushPolicy::Never,
            store: Some(store),
            group: None,
            streams: BTreeMap::new(),
            group_stream: None,
            checkpoints: BTreeMap::new(),
            next_id: 0,
            put_at: BTreeMap::new(),
            firehose: Some(firehose),
            delivery_stream: false,
            delivery_acked: BTreeSet::new(),
            delivery_maybe: BTreeSet::new(),
        }
    }

    fn firehose(&self) -> &Firehose {
        self.firehose
            .as_ref()
            .expect("the delivery service is open between operations")
    }

    fn store(&self) -> &Arc<Store> {
        self.store
            .as_ref()
            .expect("the store is open between operations")
    }

    /// An error from the store: an injected fault must explain it. Then the crash.
    fn failed(&mut self, input: &mut Input<'_>, what: &str, e: shardlog::Error, u: Uncertain) {
        trace!("{what} failed: {e}");
        assert!(
            faults::fired(self.dir.path()),
            "{what} failed without an injected fault: {e}"
        );
        self.crash(input, u);
    }

    fn create(&mut self, input: &mut Input<'_>) {
        let name = STREAMS[usize::from(input.byte()) % STREAMS.len()];
        let shards = 1 + u32::from(input.byte() % 4);
        self.clock.advance(1);
        let now = self.clock.now_ms();
        trace!("create {name} with {shards} shards");
        let made = ModelStream {
            created_ms: now,
            records: BTreeSet::new(),
            open_shards: shards as usize,
            retention_hours: 24,
        };
        match self
            .store()
            .create_stream(name, StreamConfig::provisioned(shards))
        {
            Ok(_) => {
                assert!(!self.streams.contains_key(name), "created {name} twice");
                self.streams.insert(name.to_string(), made);
            }
            Err(shardlog::Error::ResourceInUse { .. }) if self.streams.contains_key(name) => {}
            Err(e) => {
                assert!(!self.streams.contains_key(name), "create of {name}: {e}");
                let u = Uncertain {
                    streams: BTreeMap::from([(name.to_string(), made)]),
                    ..Uncertain::default()
                };
                self.failed(input, "create", e, u)
            }
        }
    }

    fn delete(&mut self, input: &mut Input<'_>) {
        let name = STREAMS[usize::from(input.byte()) % STREAMS.len()];
        trace!("delete {name}");
        match self.store().delete_stream(name) {
            Ok(()) => {
                assert!(
                    self.streams.remove(name).is_some(),
                    "deleted a stream never made"
                );
            }
            Err(shardlog::Error::ResourceNotFound { .. }) if !self.streams.contains_key(name) => {}
            Err(e) => {
                let existing = self
                    .streams
                    .remove(name)
                    .expect("delete of a stream that exists");
                let u = Uncertain {
                    streams: BTreeMap::from([(name.to_string(), existing)]),
                    ..Uncertain::default()
                };
                self.failed(input, "delete", e, u)
            }
        }
    }

    fn put(&mut self, input: &mut Input<'_>) {
        let name = STREAMS[usize::from(input.byte()) % STREAMS.len()];
        let count = 1 + usize::from(input.byte() % 12);
        let batch: Vec<(String, Vec<u8>, u64)> = (0..count)
            .map(|_| {
                let id = self.next_id;
                self.next_id += 1;
                self.put_at.insert(id, self.clock.now_ms());
                let key = format!("k{}", input.byte() % 8);
                let mut data = id.to_le_bytes().to_vec();
                data.resize(8 + usize::from(input.byte()) * 4, 0xA5);
                (key, data, id)
            })
            .collect();
        let records: Vec<PutRecord<'_>> = batch
            .iter()
            .map(|(key, data, _)| PutRecord::new(key, data))
            .collect();
        trace!("put {count} into {name} (ids from {})", batch[0].2);
        let stream = match self.store().stream(name) {
            Ok(stream) => stream,
            Err(shardlog::Error::ResourceNotFound { .. }) if !self.streams.contains_key(name) => {
                return
            }
            Err(e) => panic!("stream {name}: {e}"),
        };
        let result = stream.put_records(&records);
        drop(stream);
        let ids = batch.iter().map(|(_, _, id)| *id);
        match result {
            Ok(results) if results.iter().all(Result::is_ok) => {
                let model = self
                    .streams
                    .get_mut(name)
                    .expect("puts go to streams that exist");
                model.records.extend(ids);
            }
            Ok(results) => {
                let model = self
                    .streams
                    .get_mut(name)
                    .expect("puts go to streams that exist");
                let mut u = Uncertain::default();
                for (result, id) in results.iter().zip(ids) {
                    match result {
                        Ok(_) => {
                            model.records.insert(id);
                        }
                        Err(_) => {
                            u.records.insert(id);
                        }
                    }
                }
                let e = results
                    .into_iter()
                    .find_map(Result::err)
                    .expect("some entry failed");
                let e = shardlog::Error::InvalidArgument {
                    name: "records",
                    reason: e.message,
                };
                self.failed(input, "put (some entries)", e, u)
            }
            Err(e) => {
                let u = Uncertain {
                    records: ids.collect(),
                    ..Uncertain::default()
                };
                self.failed(input, "put", e, u)
            }
        }
    }

    fn reshard(&mut self, input: &mut Input<'_>) {
        let name = STREAMS[usize::from(input.byte()) % STREAMS.len()];
        let Some(model) = self.streams.get(name) else {
            return;
        };
        let from = model.open_shards;
        // Half to double the current count, as Kinesis allows, and at most 8 (a fuzz run's
        // time goes to crashes, not to hundreds of shards).
        let target = (from.div_ceil(2) + usize::from(input.byte()) % (2 * from)).clamp(1, 8);
        self.clock.advance(1);
        trace!("reshard {name} from {from} to {target}");
        let stream = self
            .store()
            .stream(name)
            .expect("a stream in the model opens");
        match stream.update_shard_count(target as u32) {
            Ok(()) => {
                let model = self.streams.get_mut(name).expect("checked above");
                model.open_shards = target;
            }
            Err(e @ shardlog::Error::InvalidArgument { .. }) => {
                trace!("reshard refused: {e}");
            }
            Err(e) => {
                drop(stream);
                let u = Uncertain {
                    open_shards: Some((name.to_string(), target)),
                    ..Uncertain::default()
                };
                self.failed(input, "reshard", e, u)
            }
        }
    }

    fn set_retention(&mut self, input: &mut Input<'_>) {
        let name = STREAMS[usize::from(input.byte()) % STREAMS.len()];
        let Some(model) = self.streams.get(name) else {
            return;
        };
        let hours = 24 + u32::from(input.byte() % 4);
        let increase = hours >= model.retention_hours;
        trace!("retention of {name} to {hours} h");
        let stream = self
            .store()
            .stream(name)
            .expect("a stream in the model opens");
        match stream.set_retention_hours(hours, increase) {
            Ok(()) => {
                let model = self.streams.get_mut(name).expect("checked above");
                model.retention_hours = hours;
            }
            Err(e) => {
                drop(stream);
                let u = Uncertain {
                    retention_hours: Some((name.to_string(), hours)),
                    ..Uncertain::default()
                };
                self.failed(input, "set retention", e, u)
            }
        }
    }

    /// Leases the group's shards and checkpoints one acknowledged record of one of them.
    fn checkpoint(&mut self, input: &mut Input<'_>) {
        let name = STREAMS[0];
        let Some(model) = self.streams.get(name) else {
            return;
        };
        if self.group_stream != Some(model.created_ms) {
            // A group for the stream as it is now (a group of a deleted one is deleted too).
            self.group = None;
            trace!("group: recreated");
            match ConsumerGroup::delete(self.store(), GROUP) {
                Ok(()) | Err(shardlog::Error::ResourceNotFound { .. }) => {}
                Err(e) => return self.failed(input, "group delete", e, Uncertain::default()),
            }
            self.group_stream = None;
            self.checkpoints.clear();
            let mut config = GroupConfig::new(name);
            config.initial_position = InitialPosition::TrimHorizon;
            config.lease_duration = Duration::from_secs(3600);
            match ConsumerGroup::open(Arc::clone(self.store()), GROUP, config) {
                Ok(group) => {
                    self.group = Some(group);
                    self.group_stream = Some(model.created_ms);
                }
                Err(e) => return self.failed(input, "group open", e, Uncertain::default()),
            }
        }
        if self.group.is_none() {
            match ConsumerGroup::open_existing(Arc::clone(self.store()), GROUP) {
                Ok(group) => self.group = Some(group),
                Err(e) => return self.failed(input, "group open", e, Uncertain::default()),
            }
        }
        let group = self.group.as_ref().expect("opened above");
        let leased = match group.lease_shards(WORKER) {
            Ok(leased) => leased,
            Err(e) => return self.failed(input, "lease", e, Uncertain::default()),
        };
        let Some(shard) = leased.get(usize::from(input.byte()) % leased.len().max(1)) else {
            return;
        };
        let page = self
            .store()
            .get_records(&shard.iterator, 1 + usize::from(input.byte() % 8))
            .expect("a leased shard reads");
        let Some(last) = page.records.last() else {
            return;
        };
        let seq = last.sequence_number;
        let index = seq.shard_index();
        let next = last.sequence_number.offset().get() + 1;
        trace!("checkpoint {} at {next}", shard.shard_id);
        let result = group.checkpoint(WORKER, seq);
        match result {
            Ok(()) => {
                let c = self.checkpoints.entry(index).or_insert(next);
                *c = (*c).max(next);
            }
            Err(e) => {
                let u = Uncertain {
                    checkpoint: Some((index, next)),
                    ..Uncertain::default()
                };
                self.failed(input, "checkpoint", e, u)
            }
        }
    }

    /// Moves the clock forward by up to 40 hours and runs retention: records older than a
    /// stream's period may go (whole segments), nothing younger may.
    fn expire(&mut self, input: &mut Input<'_>) {
        let hours = 1 + i64::from(input.byte() % 40);
        self.clock.advance(hours * 3_600_000);
        trace!("retention run {hours} h later");
        if let Err(e) = self.store().enforce_retention() {
            self.failed(input, "retention", e, Uncertain::default());
        }
    }

    fn create_delivery_stream(&mut self, input: &mut Input<'_>) {
        trace!("create delivery stream");
        let config = DeliveryStreamConfig {
            delivery: DeliveryConfig {
                record_delimiter: Some(b"\n".to_vec()),
                ..DeliveryConfig::default()
            },
            destination: DestinationConfig::LocalDirectory {
                path: self.dir.path().join(DELIVERED),
            },
            transform: None,
            source_stream: None,
            source_start: SourceStart::TrimHorizon,
            tags: Default::default(),
            settings: Default::default(),
        };
        match self.firehose().create_delivery_stream(DELIVERY, config) {
            Ok(_) => {
                assert!(!self.delivery_stream, "created the delivery stream twice");
                self.delivery_stream = true;
            }
            Err(shardlog::Error::ResourceInUse { .. }) if self.delivery_stream => {}
            Err(e) => {
                assert!(!self.delivery_stream, "create of an existing one: {e}");
                let u = Uncertain {
                    delivery_stream: true,
                    ..Uncertain::default()
                };
                self.failed(input, "create delivery stream", e, u)
            }
        }
    }

    fn delivery_put(&mut self, input: &mut Input<'_>) {
        if !self.delivery_stream {
            return;
        }
        let count = 1 + u64::from(input.byte() % 8);
        let ids: Vec<u64> = (self.next_id..self.next_id + count).collect();
        self.next_id += count;
        trace!("delivery put {count} (ids from {})", ids[0]);
        let datas: Vec<Vec<u8>> = ids.iter().map(|id| id.to_string().into_bytes()).collect();
        let records: Vec<&[u8]> = datas.iter().map(Vec::as_slice).collect();
        let stream = self
            .firehose()
            .delivery_stream(DELIVERY)
            .expect("an acknowledged delivery stream opens");
        match stream.put_record_batch(&records) {
            Ok(results) => {
                assert!(results.iter().all(Result::is_ok), "valid records refused");
                self.delivery_acked.extend(ids);
            }
            Err(e) => {
                drop(stream);
                self.delivery_maybe.extend(ids);
                self.failed(input, "delivery put", e, Uncertain::default())
            }
        }
    }

    /// Delivers everything buffered (a failure acknowledges nothing new).
    fn deliver(&mut self, input: &mut Input<'_>) {
        if !self.delivery_stream {
            return;
        }
        trace!("deliver");
        let stream = self
            .firehose()
            .delivery_stream(DELIVERY)
            .expect("an acknowledged delivery stream opens");
        if let Err(e) = stream.flush() {
            drop(stream);
            self.failed(input, "deliver", e, Uncertain::default())
        }
    }

    /// Checks what has been delivered so far: only records that were put, none twice. Returns
    /// the delivered ids.
    fn check_delivered(&self) -> BTreeSet<u64> {
        let mut delivered = BTreeSet::new();
        for line in delivered_lines(&self.dir.path().join(DELIVERED)) {
            let id: u64 = line.parse().expect("every delivered line is a record id");
            assert!(
                self.delivery_acked.contains(&id) || self.delivery_maybe.contains(&id),
                "delivered record {id} was never put"
            );
            assert!(delivered.insert(id), "record {id} delivered twice");
        }
        delivered
    }

    /// Drops everything, applies the crash model, reopens, and checks the store against the
    /// model with what `u` may have left; what it holds becomes the model.
    fn crash(&mut self, input: &mut Input<'_>, u: Uncertain) {
        self.group = None;
        self.firehose = None;
        if let Some(store) = self.store.take() {
            assert_eq!(
                Arc::strong_count(&store),
                1,
                "the harness still holds the store"
            );
        }
        faults::disarm(self.dir.path());
        if self.durable_policy {
            faults::power_cut(self.dir.path(), &mut || input.coin()).unwrap();
        }
        let store = Arc::new(
            Store::open(self.dir.path(), self.options.clone())
                .expect("a store opens after any crash"),
        );
        let listed: BTreeSet<String> = store.list_streams().into_iter().collect();
        trace!("crash: streams {listed:?}, uncertain {u:?}");
        let mut next = BTreeMap::new();
        for name in STREAMS {
            let known = self.streams.get(name);
            let maybe = u.streams.get(name);
            let there = listed.contains(name);
            match (known, maybe, there) {
                (Some(_), _, false) => panic!("acknowledged stream {name} is gone"),
                (None, None, true) => panic!("stream {name} exists but was never acknowledged"),
                (None, Some(_), false) | (None, None, false) => continue,
                (Some(model), _, true) | (None, Some(model), true) => {
                    let stream = store.stream(name).expect("a stream that exists opens");
                    let described = stream.describe();
                    assert_eq!(
                        described.created_ms, model.created_ms,
                        "{name} is another stream"
                    );
                    let mut model = model.clone();
                    let allowed = |(n, v): &(String, usize)| (n == name).then_some(*v);
                    if described.open_shard_count != model.open_shards {
                        assert_eq!(
                            u.open_shards.as_ref().and_then(allowed),
                            Some(described.open_shard_count),
                            "{name}: {} open shards, acknowledged {}",
                            described.open_shard_count,
                            model.open_shards
                        );
                        model.open_shards = described.open_shard_count;
                    }
                    if described.retention_hours != model.retention_hours {
                        let hours = u
                            .retention_hours
                            .as_ref()
                            .filter(|(n, _)| n == name)
                            .map(|(_, h)| *h);
                        assert_eq!(hours, Some(described.retention_hours), "{name}: retention");
                        model.retention_hours = described.retention_hours;
                    }
                    self.check_records(&store, name, &mut model, &u.records);
                    next.insert(name.to_string(), model);
                }
            }
        }
        self.streams = next;
        self.check_checkpoints(&store, &u);
        let firehose = open_firehose(&store, self.options.shard.flush);
        let listed = firehose
            .list_delivery_streams()
            .contains(&DELIVERY.to_string());
        assert!(
            listed == self.delivery_stream || (listed && u.delivery_stream),
            "delivery stream there: {listed}, acknowledged: {}",
            self.delivery_stream
        );
        self.delivery_stream = listed;
        self.check_delivered();
        self.firehose = Some(firehose);
        faults::mark_durable(self.dir.path()).unwrap();
        self.store = Some(store);
    }

    fn check_records(
        &self,
        store: &Store,
        name: &str,
        model: &mut ModelStream,
        maybe: &BTreeSet<u64>,
    ) {
        let found = read_stream(store, name);
        let mut seen = BTreeSet::new();
        let mut last_of_key: BTreeMap<(&str, shardlog::ShardId), u64> = BTreeMap::new();
        for f in &found {
            assert!(seen.insert(f.id), "{name}: record {} twice", f.id);
            assert!(
                model.records.contains(&f.id) || maybe.contains(&f.id),
                "{name}: record {} was never put here",
                f.id
            );
            if let Some(before) = last_of_key.insert((f.key.as_str(), f.shard), f.id) {
                assert!(
                    before < f.id,
                    "{name}: key {} out of order in {}",
                    f.key,
                    f.shard
                );
            }
        }
        // Retention may have removed records older than the shortest period, nothing younger.
        let cutoff = self.clock.now_ms() - MIN_RETENTION_MS;
        let lost: Vec<&u64> = model
            .records
            .difference(&seen)
            .filter(|id| self.put_at[id] >= cutoff)
            .collect();
        assert!(
            lost.is_empty(),
            "{name}: acknowledged records lost: {lost:?}"
        );
        model.records = seen;
    }

    fn check_checkpoints(&mut self, store: &Arc<Store>, u: &Uncertain) {
        let Some(created) = self.group_stream else {
            return;
        };
        if self.streams.get(STREAMS[0]).map(|s| s.created_ms) != Some(created) {
            self.group_stream = None;
            self.checkpoints.clear();
            return;
        }
        let group = ConsumerGroup::open_existing(Arc::clone(store), GROUP)
            .expect("an acknowledged group opens");
        let described = group.describe().expect("a group describes itself");
        let ends = store
            .stream(STREAMS[0])
            .expect("checked above")
            .shard_ends()
            .expect("shard ends");
        let mut found = BTreeMap::new();
        for shard in &described.shards {
            let index = shard.shard_id.index();
            if let Some(seq) = shard.checkpoint {
                let next = seq.offset().get() + 1;
                let end = ends.get(&index).copied().unwrap_or(0);
                assert!(
                    next <= end,
                    "checkpoint {seq} of {} past its end {end}",
                    shard.shard_id
                );
                found.insert(index, next);
            }
        }
        for (index, next) in &found {
            let acked = self.checkpoints.get(index);
            assert!(
                acked == Some(next) || u.checkpoint == Some((*index, *next)),
                "shard {index}: checkpoint {next}, acknowledged {acked:?}"
            );
        }
        for index in self.checkpoints.keys() {
            // A closed shard whose records all expired is gone from the stream, and its
            // checkpoint with it (as the KCL drops the lease of a shard that no longer exists).
            assert!(
                found.contains_key(index) || !ends.contains_key(index),
                "shard {index}: acknowledged checkpoint lost"
            );
        }
        self.checkpoints = found;
    }
}

/// Runs the operations the input describes. Panics (a finding) if the store ever disagrees with
/// the model.
pub fn store(data: &[u8]) {
    let mut input = Input(data);
    let mut h = Harness::new(&mut input);
    let mut steps = 0;
    while !input.done() && steps < 100 {
        steps += 1;
        let op = input.byte();
        match op {
            // Added after the first seeds were written, on the top bytes, so an older seed (whose
            // operation bytes stay below them) keeps its meaning.
            244.. => match op % 4 {
                0 => h.expire(&mut input),
                1 => h.create_delivery_stream(&mut input),
                2 => h.delivery_put(&mut input),
                _ => h.deliver(&mut input),
            },
            _ => match op % 10 {
                0 => h.create(&mut input),
                1 => h.delete(&mut input),
                2..=4 => h.put(&mut input),
                5 => h.reshard(&mut input),
                6 => h.set_retention(&mut input),
                7 => h.checkpoint(&mut input),
                8 => {
                    let after = u32::from(input.byte() % 32);
                    let tear = usize::from(input.byte()) * 16;
                    trace!("arm after {after} ops, tear {tear}");
                    faults::arm(h.dir.path(), after, tear);
                }
                _ => {
                    trace!("crash");
                    h.crash(&mut input, Uncertain::default())
                }
            },
        }
    }
    // Whatever happened, a crash now keeps everything acknowledged.
    h.crash(&mut input, Uncertain::default());
    // And every acknowledged Firehose record is delivered, exactly once.
    if h.delivery_stream {
        h.firehose()
            .delivery_stream(DELIVERY)
            .expect("the delivery stream opens")
            .flush()
            .expect("delivery works once no fault is armed");
        let delivered = h.check_delivered();
        let missing: Vec<&u64> = h.delivery_acked.difference(&delivered).collect();
        assert!(
            missing.is_empty(),
            "acknowledged, never delivered: {missing:?}"
        );
    }
    drop(h.firehose.take());
    drop(h.store.take());
    faults::reset(h.dir.path());
    check_shards_verify(h.dir.path());
}

/// The delivery service over `store`, delivering only when told to.
fn open_firehose(store: &Arc<Store>, flush: FlushPolicy) -> Firehose {
    let options = FirehoseOptions {
        delivery_interval: None,
        buffer_flush: flush,
        ..FirehoseOptions::default()
    };
    Firehose::open(Arc::clone(store), options).expect("the delivery service opens")
}

/// Every line of every object under `root` (temporary files of a write in progress, whose names
/// start with `.`, are not objects).
fn delivered_lines(root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return lines;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            lines.extend(delivered_lines(&path));
        } else if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            let text = std::fs::read_to_string(&path).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines
}

/// Every shard the store wrote and recovered verifies clean, apart from what a power cut may
/// leave that the engine repairs on its own (torn tails, index caches).
fn check_shards_verify(dir: &Path) {
    let streams = dir.join("streams");
    for stream in std::fs::read_dir(&streams).unwrap() {
        let stream = stream.unwrap().path();
        let problems = shardlog::stream::verify_layout(&stream).expect("verify runs");
        assert!(problems.is_empty(), "verify after recovery: {problems:?}");
        let Ok(shards) = std::fs::read_dir(stream.join("shards")) else {
            continue;
        };
        for shard in shards {
            let shard = shard.unwrap().path();
            for p in shardlog::log::shard::verify(&shard).expect("verify runs") {
                let cache = p.path.extension().is_some_and(|e| e == "idx");
                assert!(
                    cache || p.what.contains("torn"),
                    "verify after recovery: {p}"
                );
            }
        }
    }
}
