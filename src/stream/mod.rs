//! A stream: shards that together own the 128-bit hash-key space, with Kinesis Data Streams
//! semantics for putting records, iterating over shards, resharding and retention.
//!
//! The stream's topology (its manifest and shard handles) sits behind one `RwLock`. Puts and reads
//! take it shared, so they run in parallel (each shard serializes its own appends); resharding and
//! retention take it exclusively, so no put is in flight while a parent shard closes and its end
//! offset is recorded. Shards are opened on first use: a store with many idle shards holds no file
//! descriptor or mapping for them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::hash_key::{
    hash_key_of, hash_keys_of, parse_hash_key, parse_shard_id, shard_id, HashKeyRange, ShardId,
};
use crate::iterator::IteratorKey;
use crate::manifest::{Closed, ConsumerEntry, ShardEntry, StreamManifest, StreamMode};
use crate::sequence::SequenceNumber;
use crate::shard::{Problem, Shard, ShardOptions};
use crate::throttle::ShardThrottle;
use crate::types::{NewRecord, Offset};

mod read;
pub use read::{
    ChildShard, GetRecordsOutput, IteratorStart, PageEnd, ReadEnd, ShardRead, Start, StreamRecord,
    StreamRecordRef, MAX_GET_RECORDS, MAX_GET_RECORDS_BYTES,
};

/// Most records one put_records call takes.
pub const MAX_PUT_RECORDS: usize = 500;
/// Most bytes (data + partition keys) one put_records call takes.
pub const MAX_PUT_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// Longest partition key, in characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// Shortest retention, in hours.
pub const MIN_RETENTION_HOURS: u32 = 24;
/// Longest retention, in hours (365 days).
pub const MAX_RETENTION_HOURS: u32 = 8_760;

/// Store-wide settings a stream works with.
#[derive(Debug, Clone)]
pub(crate) struct StreamContext {
    pub shard_options: ShardOptions,
    pub clock: Arc<dyn Clock>,
    pub iterator_ttl: Duration,
    pub max_open_shards: u32,
    /// Whether streams enforce the per-shard throughput limits unless they say otherwise.
    pub throughput_limits: bool,
    /// The window over which an on-demand stream measures each shard's write rate.
    pub on_demand_window: Duration,
    /// Signs the store's shard iterators.
    pub iterator_key: Arc<IteratorKey>,
    /// The store's budget of open shard handles.
    pub open_shards: Arc<OpenShards>,
}

/// One record to put.
#[derive(Debug, Clone, Copy)]
pub struct PutRecord<'a> {
    /// Partition key: 1 to 256 characters. Its MD5 picks the shard.
    pub partition_key: &'a str,
    /// The payload.
    pub data: &'a [u8],
    /// A decimal hash key that picks the shard instead of the partition key's MD5.
    pub explicit_hash_key: Option<&'a str>,
    /// A sequence number the new record's must be greater than (Kinesis
    /// SequenceNumberForOrdering).
    pub sequence_number_for_ordering: Option<&'a str>,
}

impl<'a> PutRecord<'a> {
    /// A record routed by its partition key.
    pub fn new(partition_key: &'a str, data: &'a [u8]) -> PutRecord<'a> {
        PutRecord {
            partition_key,
            data,
            explicit_hash_key: None,
            sequence_number_for_ordering: None,
        }
    }
}

/// Where a put record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The shard the record went to.
    pub shard_id: ShardId,
    /// The record's sequence number.
    pub sequence_number: SequenceNumber,
}

/// Why one entry of a put_records call failed while others may have succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutFailure {
    /// What kind of failure (the server reports it as Kinesis's error code).
    pub reason: PutFailureReason,
    /// What happened.
    pub message: String,
}

/// The kinds of [`PutFailure`]. The record was not stored either way; both are worth a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFailureReason {
    /// The shard's write throughput limit (1 MiB or 1,000 records a second) was reached.
    Throttled,
    /// Anything else, e.g. an I/O error writing the shard.
    Internal,
}

/// A shard as describe and list_shards show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDescription {
    /// Its id.
    pub shard_id: String,
    /// The shard it was split from, or the first it was merged from.
    pub parent_shard_id: Option<String>,
    /// The second shard it was merged from.
    pub adjacent_parent_shard_id: Option<String>,
    /// The hash keys it owns.
    pub hash_key_range: HashKeyRange,
    /// The sequence number of its first record, ever.
    pub starting_sequence_number: SequenceNumber,
    /// Once closed: the largest sequence number it can hold.
    pub ending_sequence_number: Option<SequenceNumber>,
}

/// What describe_stream returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// The stream's name.
    pub name: String,
    /// Always "ACTIVE": shardlog's operations complete before they return.
    pub status: &'static str,
    /// Provisioned or on-demand.
    pub mode: StreamMode,
    /// Whether the per-shard throughput limits are enforced.
    pub throughput_limits: bool,
    /// Retention in hours.
    pub retention_hours: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Largest record, in bytes.
    pub max_record_bytes: usize,
    /// Open shards.
    pub open_shard_count: usize,
    /// Every shard not yet removed by retention, in index order.
    pub shards: Vec<ShardDescription>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Settings kept for the wire API (see [`Stream::modify_settings`]).
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Registered consumers, in registration order.
    pub consumers: Vec<ConsumerEntry>,
}

/// Which shards list_shards returns (Kinesis ShardFilter).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ShardFilter {
    /// All shards.
    #[default]
    All,
    /// Shards after this shard id (index order).
    AfterShardId(String),
    /// Open shards at the trim horizon: those holding the oldest records still stored.
    AtTrimHorizon,
    /// All shards from the trim horizon on (every shard still listed).
    FromTrimHorizon,
    /// Open shards only.
    AtLatest,
    /// Shards open at this time (ms since the Unix epoch).
    AtTimestamp(i64),
    /// Shards open at or after this time.
    FromTimestamp(i64),
}

/// One page of a paged list_shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPage {
    /// Shards of this page, in index order.
    pub shards: Vec<ShardDescription>,
    /// Pass to [`Stream::list_shards_page`] for the next page; `None` on the last page. Valid for
    /// 5 minutes, like Kinesis's.
    pub next_token: Option<String>,
}

/// What a paged list_shards asks for (Kinesis ListShards: a filter, or a NextToken, and
/// MaxResults from 1 to 10,000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListShards<'a> {
    /// The first page of shards matching a filter.
    First(ShardFilter),
    /// The page after the one that returned this token.
    Next(&'a str),
}

/// Most tags a stream (or a registered consumer) may have (Kinesis: 50).
pub const MAX_TAGS: usize = 50;

/// Tag keys take 1 to 128 characters, values up to 256.
pub(crate) fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in tags {
        if !(1..=128).contains(&k.chars().count()) || v.chars().count() > 256 {
            return Err(Error::invalid(
                "Tags",
                format!("tag {k:?}: keys take 1 to 128 characters, values up to 256"),
            ));
        }
    }
    Ok(())
}

/// Most registered consumers a stream may have (Kinesis: 20).
pub const MAX_CONSUMERS: usize = 20;

/// Longest a list_shards page may be.
pub const MAX_LIST_SHARDS: usize = 10_000;
const NEXT_TOKEN_TTL_MS: i64 = 300_000;

#[derive(serde::Serialize, serde::Deserialize)]
struct NextToken {
    /// The stream's name: a ListShards call may give only the token.
    #[serde(default)]
    stream: String,
    /// The stream's creation time: a token does not page through a re-created stream.
    created_ms: i64,
    issued_ms: i64,
    after_index: u32,
    filter: ShardFilter,
}

/// The stream a list_shards NextToken pages through (`None` if it is not such a token).
pub fn stream_of_next_token(token: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let token: NextToken = serde_json::from_slice(&bytes).ok()?;
    (!token.stream.is_empty()).then_some(token.stream)
}

/// A stream of shards. Obtain one from a [`crate::Store`].
pub struct Stream {
    name: String,
    dir: PathBuf,
    context: StreamContext,
    topology: RwLock<Topology>,
    changes: ChangeSignal,
    /// When UpdateShardCount last rescaled the stream (store clock, ms), newest last, within
    /// the last day: Kinesis's scaling limits count them (kept in memory only).
    scalings: Mutex<std::collections::VecDeque<i64>>,
}

/// Kinesis: at most 10 UpdateShardCount scalings per stream in a rolling 24 hours...
pub const MAX_SCALINGS_PER_DAY: usize = 10;
/// ... and 2 in a rolling hour (applied when throughput limits are on).
pub const MAX_SCALINGS_PER_HOUR: usize = 2;

/// Wakes readers waiting for a stream to change (records appended, shards split, merged or
/// closed): subscriptions and consumer workers wait on it instead of polling. Writers pay an
/// atomic increment, and a wake-up only while someone waits.
#[derive(Default)]
struct ChangeSignal {
    generation: AtomicU64,
    /// Threads waiting plus listeners registered: zero means a change wakes nobody.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
    /// Called on every change while alive (async readers, which must not block a thread).
    listeners: Mutex<Vec<Weak<ChangeListener>>>,
}

/// What [`Stream::on_change`] calls: short and non-blocking (it runs on the writer's thread).
pub type ChangeListener = dyn Fn() + Send + Sync;

impl ChangeSignal {
    fn notify(&self) {
        // SeqCst pairs with `wait_past`: either the waiter sees the new generation before it
        // sleeps, or this sees the waiter and wakes it under the lock.
        self.generation.fetch_add(1, AtomicOrdering::SeqCst);
        if self.waiters.load(AtomicOrdering::SeqCst) > 0 {
            {
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.changed.notify_all();
            }
            let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            let before = listeners.len();
            listeners.retain(|l| match l.upgrade() {
                Some(listener) => {
                    listener();
                    true
                }
                None => false,
            });
            self.waiters
                .fetch_sub(before - listeners.len(), AtomicOrdering::SeqCst);
        }
    }

    fn listen(&self, listener: &Arc<ChangeListener>) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.push(Arc::downgrade(listener));
        self.waiters.fetch_add(1, AtomicOrdering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.generation.load(AtomicOrdering::SeqCst)
    }

    fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        self.waiters.fetch_add(1, AtomicOrdering::SeqCst);
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(guard, timeout, |_| self.generation() == seen)
            .unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, AtomicOrdering::SeqCst);
        self.generation()
    }
}

struct Topology {
    manifest: StreamManifest,
    shards: BTreeMap<u32, Arc<ShardSlot>>,
    /// Open shards' ranges, sorted by start: routing is a binary search.
    routes: Vec<(HashKeyRange, u32)>,
}

/// A shard of a stream, opened on first use.
struct ShardSlot {
    dir: PathBuf,
    shard: Mutex<Option<Arc<Shard>>>,
    throttle: Mutex<ShardThrottle>,
    /// When the shard was last used (store clock), so idle shards can be closed.
    last_used_ms: AtomicI64,
    /// The store's budget of open shards, which this slot's opening counts against.
    budget: Arc<OpenShards>,
}

/// The store's budget of open shard handles: each open shard holds file descriptors and maps,
/// so past `max` the least recently used shards that nobody is using are closed (they reopen on
/// their next use). Any number of shards can then be written with a bounded number of
/// descriptors. Costs a lock only when a shard opens.
#[derive(Debug)]
pub(crate) struct OpenShards {
    max: usize,
    /// Slots that opened a shard (some may have closed it since).
    open: Mutex<Vec<Weak<ShardSlot>>>,
}

impl OpenShards {
    pub(crate) fn new(max: usize) -> OpenShards {
        OpenShards {
            max: max.max(1),
            open: Mutex::new(Vec::new()),
        }
    }

    /// `slot` opened its shard: over the budget, close the least recently used idle ones.
    fn opened(&self, slot: &Arc<ShardSlot>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.push(Arc::downgrade(slot));
        if open.len() <= self.max {
            return;
        }
        let mut live: Vec<Arc<ShardSlot>> = open
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.shard.lock().unwrap_or_else(|e| e.into_inner()).is_some())
            .collect();
        // Close down to 90% of the budget, so that this does not run on every open.
        let target = self.max - self.max / 10;
        if live.len() > target {
            live.sort_by_key(|s| s.last_used_ms.load(AtomicOrdering::Relaxed));
            let mut excess = live.len() - target;
            for candidate in &live {
                if excess == 0 {
                    break;
                }
                if Arc::ptr_eq(candidate, slot) {
                    continue;
                }
                let mut shard = candidate.shard.lock().unwrap_or_else(|e| e.into_inner());
                // One in use (an append or read holds it) stays; its turn comes later.
                if shard.as_ref().is_some_and(|s| Arc::strong_count(s) == 1) {
                    *shard = None;
                    excess -= 1;
                }
            }
        }
        *open = live
            .iter()
            .filter(|s| s.shard.lock().unwrap_or_else(|e| e.into_inner()).is_some())
            .map(Arc::downgrade)
            .collect();
    }
}

impl ShardSlot {
    fn throttle(&self) -> std::sync::MutexGuard<'_, ShardThrottle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(self: &Arc<Self>, options: &ShardOptions) -> Result<Arc<Shard>> {
        self.last_used_ms
            .store(options.clock.now_ms(), AtomicOrdering::Relaxed);
        let shard = {
            let mut slot = self.shard.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(shard) = slot.as_ref() {
                return Ok(Arc::clone(shard));
            }
            let shard = Arc::new(Shard::open_in_locked_dir(
                self.dir.clone(),
                options.clone(),
            )?);
            *slot = Some(Arc::clone(&shard));
            shard
        };
        // Outside the slot's lock: the budget takes other slots' locks.
        self.budget.opened(self);
        Ok(shard)
    }

    /// The shard if it was ever written (its directory exists), without creating anything.
    fn open_if_exists(self: &Arc<Self>, options: &ShardOptions) -> Result<Option<Arc<Shard>>> {
        if self
            .shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
            && !self.dir.exists()
        {
            return Ok(None);
        }
        self.open(options).map(Some)
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish()
    }
}

pub(crate) use crate::names::check_resource_name;
pub use crate::names::check_stream_name;

/// Checks a retention period against Kinesis's range.
pub fn check_retention(hours: u32) -> Result<()> {
    if (MIN_RETENTION_HOURS..=MAX_RETENTION_HOURS).contains(&hours) {
        Ok(())
    } else {
        Err(Error::invalid(
            "RetentionPeriodHours",
            format!("{hours} is outside {MIN_RETENTION_HOURS}..={MAX_RETENTION_HOURS}"),
        ))
    }
}

fn shards_dir(stream_dir: &Path) -> PathBuf {
    stream_dir.join("shards")
}

fn not_found_shard(id: &str) -> Error {
    Error::ResourceNotFound {
        kind: "shard",
        name: id.to_string(),
    }
}

impl Topology {
    fn new(manifest: StreamManifest, stream_dir: &Path, budget: &Arc<OpenShards>) -> Topology {
        let mut t = Topology {
            manifest,
            shards: BTreeMap::new(),
            routes: Vec::new(),
        };
        t.sync_with_manifest(stream_dir, budget);
        t
    }

    /// Rebuilds the routes and adds slots for new shards (keeping open handles of old ones).
    fn sync_with_manifest(&mut self, stream_dir: &Path, budget: &Arc<OpenShards>) {
        let dir = shards_dir(stream_dir);
        let mut shards = BTreeMap::new();
        for entry in &self.manifest.shards {
            let slot = self.shards.remove(&entry.index).unwrap_or_else(|| {
                Arc::new(ShardSlot {
                    dir: dir.join(shard_id(entry.index)),
                    shard: Mutex::new(None),
                    throttle: Mutex::new(ShardThrottle::default()),
                    last_used_ms: AtomicI64::new(i64::MIN),
                    budget: Arc::clone(budget),
                })
            });
            shards.insert(entry.index, slot);
        }
        self.shards = shards;
        self.routes = self
            .manifest
            .shards
            .iter()
            .filter(|s| s.closed.is_none())
            .map(|s| (s.hash_range, s.index))
            .collect();
        self.routes.sort_unstable();
    }

    fn entry(&self, index: u32) -> Option<&ShardEntry> {
        self.manifest
            .shards
            .binary_search_by_key(&index, |s| s.index)
            .ok()
            .map(|i| &self.manifest.shards[i])
    }

    fn entry_by_id(&self, id: &str) -> Result<&ShardEntry> {
        parse_shard_id(id)
            .and_then(|i| self.entry(i))
            .ok_or_else(|| not_found_shard(id))
    }

    fn route(&self, hash_key: u128) -> u32 {
        self.routes[self.route_position(hash_key)].1
    }

    /// The position in `routes` of the open shard that owns `hash_key`.
    fn route_position(&self, hash_key: u128) -> usize {
        // The open shards' ranges cover the whole key space, so some range starts at or before
        // any key: the subtraction cannot underflow.
        self.routes.partition_point(|(r, _)| r.start <= hash_key) - 1
    }

    fn children_of(&self, index: u32) -> Vec<ChildShard> {
        self.manifest
            .shards
            .iter()
            .filter(|s| s.parent == Some(index) || s.adjacent_parent == Some(index))
            .map(|s| ChildShard {
                shard_id: shard_id(s.index),
                parent_shards: s
                    .parent
                    .iter()
                    .chain(&s.adjacent_parent)
                    .map(|&p| shard_id(p))
                    .collect(),
                hash_key_range: s.hash_range,
            })
            .collect()
    }
}

fn describe_shard(entry: &ShardEntry) -> ShardDescription {
    ShardDescription {
        shard_id: shard_id(entry.index),
        parent_shard_id: entry.parent.map(shard_id),
        adjacent_parent_shard_id: entry.adjacent_parent.map(shard_id),
        hash_key_range: entry.hash_range,
        starting_sequence_number: SequenceNumber::new(entry.index, Offset::new(0)),
        ending_sequence_number: entry
            .closed
            .map(|c| SequenceNumber::new(entry.index, Offset::new(c.end_offset.saturating_sub(1)))),
    }
}

impl Stream {
    /// Creates the stream's directory and manifest. `dir` must not exist.
    pub(crate) fn create(
        dir: PathBuf,
        manifest: StreamManifest,
        context: StreamContext,
    ) -> Result<Stream> {
        crate::io::create_dir_all(&shards_dir(&dir))?;
        manifest.write(&dir)?;
        Ok(Stream::with_manifest(dir, manifest, context))
    }

    /// Opens an existing stream's directory.
    pub(crate) fn open(dir: PathBuf, context: StreamContext) -> Result<Stream> {
        let manifest = StreamManifest::read(&dir)?;
        Ok(Stream::with_manifest(dir, manifest, context))
    }

    fn with_manifest(dir: PathBuf, manifest: StreamManifest, context: StreamContext) -> Stream {
        Stream {
            name: manifest.name.clone(),
            topology: RwLock::new(Topology::new(manifest, &dir, &context.open_shards)),
            dir,
            context,
            changes: ChangeSignal::default(),
            scalings: Mutex::default(),
        }
    }

    /// A number that grows whenever records are appended to the stream or its shards change;
    /// pass it to [`Stream::wait_for_change`].
    pub fn change_generation(&self) -> u64 {
        self.changes.generation()
    }

    /// Waits until the stream changed since `seen` (a [`Stream::change_generation`]) or
    /// `timeout` passed; returns the generation now. Take the generation before reading, so
    /// that a change between the read and the wait is not missed.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        self.changes.wait_past(seen, timeout)
    }

    /// Calls `listener` after every change of the stream (as [`Stream::wait_for_change`] would
    /// wake), on the changing thread, for as long as `listener` is alive: dropping it
    /// unregisters it. For readers that must not block a thread while they wait (an async
    /// server's subscriptions); keep it short and non-blocking.
    pub fn on_change(&self, listener: &Arc<ChangeListener>) {
        self.changes.listen(listener);
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_topology(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The topology for a change. Waiters are woken now; they read once the guard is gone.
    fn write_topology(&self) -> RwLockWriteGuard<'_, Topology> {
        let guard = self.topology.write().unwrap_or_else(|e| e.into_inner());
        self.changes.notify();
        guard
    }

    pub(crate) fn created_ms(&self) -> i64 {
        self.read_topology().manifest.created_ms
    }

    fn shard_options(&self, manifest: &StreamManifest) -> ShardOptions {
        ShardOptions {
            max_record_bytes: manifest.max_record_bytes,
            ..self.context.shard_options.clone()
        }
    }

    /// Changes the manifest: `change` edits a copy, which is written durably and only then
    /// becomes the stream's topology. On any error nothing changes.
    fn update_manifest(
        &self,
        topology: &mut Topology,
        change: impl FnOnce(&mut StreamManifest) -> Result<()>,
    ) -> Result<()> {
        let mut next = topology.manifest.clone();
        change(&mut next)?;
        next.format_version = crate::manifest::MANIFEST_VERSION;
        next.persist_change(&self.dir, &topology.manifest)?;
        topology.manifest = next;
        topology.sync_with_manifest(&self.dir, &self.context.open_shards);
        Ok(())
    }

    fn limits_apply(&self, manifest: &StreamManifest) -> bool {
        manifest
            .throughput_limits
            .unwrap_or(self.context.throughput_limits)
    }

    fn throttled(&self, index: u32, limit: &str) -> Error {
        Error::ProvisionedThroughputExceeded {
            stream: self.name.clone(),
            shard: shard_id(index),
            limit: limit.into(),
        }
    }

    /// Whether puts must pass [`Stream::admit_writes`]: throughput limits apply, or the stream is
    /// on-demand and counts its shards' write rates.
    fn watches_writes(&self, manifest: &StreamManifest) -> bool {
        self.limits_apply(manifest) || manifest.mode == StreamMode::OnDemand
    }

    /// Admits writes of these sizes to a shard under its limits (if they apply) and counts the
    /// admitted ones for on-demand scaling; returns which were admitted.
    fn admit_writes(
        &self,
        manifest: &StreamManifest,
        slot: &ShardSlot,
        sizes: &[usize],
    ) -> Vec<bool> {
        let limits = self.limits_apply(manifest);
        let now = self.context.clock.now_ms();
        let mut throttle = slot.throttle();
        let admitted: Vec<bool> = sizes
            .iter()
            .map(|&size| !limits || throttle.try_write(now, size))
            .collect();
        if manifest.mode == StreamMode::OnDemand {
            let (records, bytes) = sizes
                .iter()
                .zip(&admitted)
                .filter(|(_, &a)| a)
                .fold((0u64, 0u64), |(n, b), (&size, _)| (n + 1, b + size as u64));
            throttle.note_written(now, records, bytes);
        }
        admitted
    }

    fn check_record(&self, manifest: &StreamManifest, record: &PutRecord<'_>) -> Result<u128> {
        Ok(match self.check_record_shape(manifest, record)? {
            Some(explicit) => explicit,
            None => hash_key_of(record.partition_key),
        })
    }

    /// Checks a record's partition key, size and explicit hash key; returns the explicit hash
    /// key, if any (the caller derives the others from the partition keys).
    fn check_record_shape(
        &self,
        manifest: &StreamManifest,
        record: &PutRecord<'_>,
    ) -> Result<Option<u128>> {
        let key = record.partition_key;
        // A key has at most as many characters as bytes: only a long one needs counting.
        let chars = if key.len() <= MAX_PARTITION_KEY_CHARS {
            key.len()
        } else {
            key.chars().count()
        };
        if key.is_empty() || chars > MAX_PARTITION_KEY_CHARS {
            return Err(Error::invalid(
                "PartitionKey",
                format!("{chars} characters; it must have 1 to {MAX_PARTITION_KEY_CHARS}"),
            ));
        }
        let size = record.partition_key.len() + record.data.len();
        if size > manifest.max_record_bytes {
            return Err(Error::invalid(
                "Data",
                format!(
                    "record of {size} bytes (data + partition key) exceeds the stream's limit of {} bytes",
                    manifest.max_record_bytes
                ),
            ));
        }
        record
            .explicit_hash_key
            .map(|text| {
                parse_hash_key(text).ok_or_else(|| {
                    Error::invalid(
                        "ExplicitHashKey",
                        format!("{text:?} is not a decimal number from 0 to 2^128 - 1"),
                    )
                })
            })
            .transpose()
    }

    /// Puts one record: routes it to the open shard that owns its hash key and appends it.
    pub fn put_record(&self, record: &PutRecord<'_>) -> Result<Put> {
        let topology = self.read_topology();
        let hash_key = self.check_record(&topology.manifest, record)?;
        let index = topology.route(hash_key);
        let ordering = record
            .sequence_number_for_ordering
            .map(|text| {
                SequenceNumber::parse(text).ok_or_else(|| {
                    Error::invalid(
                        "SequenceNumberForOrdering",
                        format!("{text:?} is not a sequence number of this store"),
                    )
                })
            })
            .transpose()?;
        let slot = &topology.shards[&index];
        let shard = slot.open(&self.shard_options(&topology.manifest))?;
        if self.watches_writes(&topology.manifest) {
            let size = record.partition_key.len() + record.data.len();
            if !self.admit_writes(&topology.manifest, slot, &[size])[0] {
                return Err(self.throttled(index, "1 MiB or 1,000 records per second"));
            }
        }
        if let Some(bound) = ordering {
            let next = SequenceNumber::new(index, shard.next_offset());
            if bound >= next {
                return Err(Error::invalid(
                    "SequenceNumberForOrdering",
                    format!(
                        "{bound} is not below the number the record would get ({next}) in {}",
                        shard_id(index)
                    ),
                ));
            }
        }
        let appended = shard.append(&[NewRecord {
            partition_key: record.partition_key.as_bytes(),
            explicit_hash_key: record.explicit_hash_key.map(|_| hash_key),
            data: record.data,
        }])?;
        self.changes.notify();
        Ok(Put {
            shard_id: ShardId(index),
            sequence_number: SequenceNumber::new(index, appended.first),
        })
    }

    /// Puts up to 500 records (10 MiB in all). A malformed request fails as a whole; otherwise
    /// each entry succeeds or fails on its own, and entries for the same shard keep their order.
    pub fn put_records(&self, records: &[PutRecord<'_>]) -> Result<Vec<Result<Put, PutFailure>>> {
        if !(1..=MAX_PUT_RECORDS).contains(&records.len()) {
            return Err(Error::invalid(
                "Records",
                format!(
                    "{} records; a call takes 1 to {MAX_PUT_RECORDS}",
                    records.len()
                ),
            ));
        }
        let total: usize = records
            .iter()
            .map(|r| r.partition_key.len() + r.data.len())
            .sum();
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(Error::invalid(
                "Records",
                format!("{total} bytes; a call takes at most {MAX_PUT_RECORDS_BYTES}"),
            ));
        }
        let topology = self.read_topology();
        let mut explicit = Vec::with_capacity(records.len());
        for record in records {
            if record.sequence_number_for_ordering.is_some() {
                return Err(Error::invalid(
                    "Records",
                    "put_records takes no SequenceNumberForOrdering",
                ));
            }
            explicit.push(self.check_record_shape(&topology.manifest, record)?);
        }
        // The MD5s of the partition keys, several at a time; explicit keys take their place.
        let mut derived = Vec::with_capacity(records.len());
        hash_keys_of(
            records
                .iter()
                .zip(&explicit)
                .filter(|(_, explicit)| explicit.is_none())
                .map(|(r, _)| r.partition_key.as_bytes()),
            &mut derived,
        );
        let mut derived = derived.into_iter();
        let hash_keys: Vec<u128> = explicit
            .into_iter()
            // `derived` holds one hash key per record without an explicit one.
            .map(|explicit| explicit.or_else(|| derived.next()).unwrap_or_default())
            .collect();
        let routes: Vec<usize> = hash_keys
            .iter()
            .map(|&k| topology.route_position(k))
            .collect();
        // Grouped by shard, each shard's entries in request order.
        let routed: Vec<(u32, usize, u128)> = group_by_route(&routes, topology.routes.len())
            .into_iter()
            .map(|i| (topology.routes[routes[i]].1, i, hash_keys[i]))
            .collect();
        let options = self.shard_options(&topology.manifest);
        let watch = self.watches_writes(&topology.manifest);
        let mut results: Vec<Option<Result<Put, PutFailure>>> = vec![None; records.len()];
        let mut batch = Vec::new();
        let mut sizes = Vec::new();
        let mut kept: Vec<(u32, usize, u128)> = Vec::new();
        let mut any_appended = false;
        for group in routed.chunk_by(|a, b| a.0 == b.0) {
            let index = group[0].0;
            let slot = &topology.shards[&index];
            // Entries over the shard's throughput limit fail alone; the rest go in one append.
            kept.clear();
            kept.extend_from_slice(group);
            let group = &mut kept;
            if watch {
                sizes.clear();
                sizes.extend(
                    group
                        .iter()
                        .map(|&(_, i, _)| records[i].partition_key.len() + records[i].data.len()),
                );
                let admitted = self.admit_writes(&topology.manifest, slot, &sizes);
                let mut k = 0;
                group.retain(|&(_, i, _)| {
                    let keep = admitted[k];
                    k += 1;
                    if !keep {
                        results[i] = Some(Err(PutFailure {
                            reason: PutFailureReason::Throttled,
                            message: self
                                .throttled(index, "1 MiB or 1,000 records per second")
                                .to_string(),
                        }));
                    }
                    keep
                });
                if group.is_empty() {
                    continue;
                }
            }
            batch.clear();
            batch.extend(group.iter().map(|&(_, i, hash_key)| NewRecord {
                partition_key: records[i].partition_key.as_bytes(),
                explicit_hash_key: records[i].explicit_hash_key.map(|_| hash_key),
                data: records[i].data,
            }));
            let appended = slot.open(&options).and_then(|shard| shard.append(&batch));
            any_appended |= appended.is_ok();
            for (k, &(_, i, _)) in group.iter().enumerate() {
                results[i] = Some(match &appended {
                    Ok(a) => Ok(Put {
                        shard_id: ShardId(index),
                        sequence_number: SequenceNumber::new(
                            index,
                            Offset::new(a.first.get() + k as u64),
                        ),
                    }),
                    Err(e) => Err(PutFailure {
                        reason: match e {
                            Error::ProvisionedThroughputExceeded { .. } => {
                                PutFailureReason::Throttled
                            }
                            _ => PutFailureReason::Internal,
                        },
                        message: e.to_string(),
                    }),
                });
            }
        }
        if any_appended {
            // Once per call, not per shard: waiters re-read every shard they follow anyway.
            self.changes.notify();
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every entry was routed to exactly one group"))
            .collect())
    }

    /// The stream's settings and shards.
    pub fn describe(&self) -> StreamDescription {
        let topology = self.read_topology();
        let m = &topology.manifest;
        StreamDescription {
            name: m.name.clone(),
            status: "ACTIVE",
            mode: m.mode,
            throughput_limits: self.limits_apply(m),
            retention_hours: m.retention_hours,
            created_ms: m.created_ms,
            max_record_bytes: m.max_record_bytes,
            open_shard_count: topology.routes.len(),
            shards: m.shards.iter().map(describe_shard).collect(),
            tags: m.tags.clone(),
            settings: m.settings.clone(),
            consumers: m.consumers.clone(),
        }
    }

    /// Makes every record put so far durable (for shutdown under a `Never` or group-commit
    /// flush policy): flushes each shard open in this process.
    pub fn flush(&self) -> Result<()> {
        let topology = self.read_topology();
        for slot in topology.shards.values() {
            let open = slot.shard.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(shard) = open {
                shard.flush()?;
            }
        }
        Ok(())
    }

    /// Per shard index, the offset its next record gets (a closed shard: the offset it closed
    /// at): with a consumer's position, how many records are still to read.
    pub fn shard_ends(&self) -> Result<BTreeMap<u32, u64>> {
        let topology = self.read_topology();
        let options = self.shard_options(&topology.manifest);
        let mut ends = BTreeMap::new();
        for entry in &topology.manifest.shards {
            let end = match entry.closed {
                Some(c) => c.end_offset,
                None => topology.shards[&entry.index]
                    .open_if_exists(&options)?
                    .map_or(0, |shard| shard.next_offset().get()),
            };
            ends.insert(entry.index, end);
        }
        Ok(ends)
    }

    /// Shards matching `filter`, in index order.
    pub fn list_shards(&self, filter: &ShardFilter) -> Result<Vec<ShardDescription>> {
        let topology = self.read_topology();
        let shards = &topology.manifest.shards;
        let after = match filter {
            ShardFilter::AfterShardId(id) => Some(parse_shard_id(id).ok_or_else(|| {
                Error::invalid("ShardFilter.ShardId", format!("{id:?} is not a shard id"))
            })?),
            _ => None,
        };
        // The shards holding the trim horizon: those with no parent still listed.
        let is_root = |s: &ShardEntry| {
            s.parent.and_then(|p| topology.entry(p)).is_none()
                && s.adjacent_parent.and_then(|p| topology.entry(p)).is_none()
        };
        let open_at =
            |s: &ShardEntry, t: i64| s.created_ms <= t && s.closed.is_none_or(|c| c.closed_ms > t);
        Ok(shards
            .iter()
            .filter(|s| match filter {
                ShardFilter::All | ShardFilter::FromTrimHorizon => true,
                ShardFilter::AfterShardId(_) => Some(s.index) > after,
                ShardFilter::AtTrimHorizon => is_root(s),
                ShardFilter::AtLatest => s.closed.is_none(),
                ShardFilter::AtTimestamp(t) => open_at(s, *t) || (is_root(s) && s.created_ms > *t),
                ShardFilter::FromTimestamp(t) => s.closed.is_none_or(|c| c.closed_ms > *t),
            })
            .map(describe_shard)
            .collect())
    }

    /// Shards page by page: at most `max_results` (1 to 10,000) at a time, with a token for the
    /// next page.
    pub fn list_shards_page(
        &self,
        request: ListShards<'_>,
        max_results: usize,
    ) -> Result<ShardPage> {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if !(1..=MAX_LIST_SHARDS).contains(&max_results) {
            return Err(Error::invalid(
                "MaxResults",
                format!("{max_results} is outside 1..={MAX_LIST_SHARDS}"),
            ));
        }
        let now = self.context.clock.now_ms();
        let created_ms = self.created_ms();
        let (filter, after) = match request {
            ListShards::First(filter) => (filter, None),
            ListShards::Next(text) => {
                let token: NextToken = engine
                    .decode(text)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .filter(|t: &NextToken| t.created_ms == created_ms)
                    .ok_or_else(|| {
                        Error::invalid("NextToken", "not a list_shards token of this stream")
                    })?;
                if now.saturating_sub(token.issued_ms) > NEXT_TOKEN_TTL_MS {
                    return Err(Error::ExpiredNextToken {
                        reason: format!(
                            "issued {} ms ago; tokens last 300 s",
                            now - token.issued_ms
                        ),
                    });
                }
                (token.filter, Some(token.after_index))
            }
        };
        let all = self.list_shards(&filter)?;
        let mut rest = all
            .into_iter()
            .filter(|s| {
                after.is_none_or(|a| ShardId::parse(&s.shard_id).is_some_and(|id| id.index() > a))
            })
            .peekable();
        let shards: Vec<ShardDescription> = rest.by_ref().take(max_results).collect();
        let next_token = match (rest.peek(), shards.last()) {
            (Some(_), Some(last)) => {
                let token = NextToken {
                    stream: self.name.clone(),
                    created_ms,
                    issued_ms: now,
                    after_index: ShardId::parse(&last.shard_id).map_or(0, ShardId::index),
                    filter,
                };
                let json = serde_json::to_vec(&token).expect("a token always serializes");
                Some(engine.encode(json))
            }
            _ => None,
        };
        Ok(ShardPage { shards, next_token })
    }

    /// Splits an open shard in two at `new_starting_hash_key` (decimal): the parent closes, and
    /// two children own its keys below and from the new key.
    pub fn split_shard(&self, shard_to_split: &str, new_starting_hash_key: &str) -> Result<()> {
        let key = parse_hash_key(new_starting_hash_key).ok_or_else(|| {
            Error::invalid(
                "NewStartingHashKey",
                format!("{new_starting_hash_key:?} is not a decimal 128-bit number"),
            )
        })?;
        let mut topology = self.write_topology();
        let parent = self.open_entry(&topology, shard_to_split)?;
        let range = parent.hash_range;
        if key <= range.start || key > range.end {
            return Err(Error::invalid(
                "NewStartingHashKey",
                format!(
                    "{key} must be above {} and at most {} to split {shard_to_split}",
                    range.start, range.end
                ),
            ));
        }
        self.check_open_shard_limit(&topology, 1)?;
        self.split_at(&mut topology, parent.index, key)
    }

    /// Closes open shard `index` and adds two children owning its keys below `key` and from it.
    /// Called under the exclusive topology lock; `key` lies inside the shard's range, above its
    /// start.
    fn split_at(&self, topology: &mut Topology, index: u32, key: u128) -> Result<()> {
        let range = topology
            .entry(index)
            .map(|e| e.hash_range)
            .ok_or_else(|| not_found_shard(&shard_id(index)))?;
        let now = self.context.clock.now_ms();
        let end = self.close_point(topology, index)?;
        self.update_manifest(topology, |m| {
            close(m, index, end, now);
            let low = HashKeyRange {
                start: range.start,
                end: key - 1,
            };
            add_shard(m, low, Some(index), None, now);
            add_shard(
                m,
                HashKeyRange {
                    start: key,
                    end: range.end,
                },
                Some(index),
                None,
                now,
            );
            Ok(())
        })
    }

    /// Merges two open shards with adjacent hash-key ranges into one: both close, and a child owns
    /// their keys. `shard_to_merge` becomes its parent, `adjacent_shard_to_merge` its adjacent parent.
    pub fn merge_shards(&self, shard_to_merge: &str, adjacent_shard_to_merge: &str) -> Result<()> {
        let mut topology = self.write_topology();
        let a = self.open_entry(&topology, shard_to_merge)?;
        let b = self.open_entry(&topology, adjacent_shard_to_merge)?;
        let (low, high) = if a.hash_range.start < b.hash_range.start {
            (&a, &b)
        } else {
            (&b, &a)
        };
        if low.hash_range.end.checked_add(1) != Some(high.hash_range.start) {
            return Err(Error::invalid(
                "AdjacentShardToMerge",
                format!("{shard_to_merge} and {adjacent_shard_to_merge} do not own adjacent hash-key ranges"),
            ));
        }
        let merged = HashKeyRange {
            start: low.hash_range.start,
            end: high.hash_range.end,
        };
        let now = self.context.clock.now_ms();
        let end_a = self.close_point(&topology, a.index)?;
        let end_b = self.close_point(&topology, b.index)?;
        let (ia, ib) = (a.index, b.index);
        self.update_manifest(&mut topology, |m| {
            close(m, ia, end_a, now);
            close(m, ib, end_b, now);
            add_shard(m, merged, Some(ia), Some(ib), now);
            Ok(())
        })
    }

    /// Reshards to `target` open shards of equal hash-key ranges (Kinesis UNIFORM_SCALING), from
    /// half to double the current count. Like Kinesis, it splits shards at the new boundaries and
    /// merges the pieces, so every new shard has at most two parents; pieces merged again right
    /// away are short-lived shards that close with no records.
    pub fn update_shard_count(&self, target: u32) -> Result<()> {
        let mut topology = self.write_topology();
        let open = topology.routes.len() as u32;
        if target == 0 || target > open * 2 || target * 2 < open {
            return Err(Error::invalid(
                "TargetShardCount",
                format!(
                    "{target} must be from half ({}) to double ({}) the {open} open shards",
                    open.div_ceil(2),
                    open * 2
                ),
            ));
        }
        let targets = HashKeyRange::uniform(target);
        let current: Vec<(HashKeyRange, u32)> = topology.routes.clone();
        if current.iter().map(|(r, _)| *r).eq(targets.iter().copied()) {
            return Ok(());
        }
        let now = self.context.clock.now_ms();
        let limited = self.limits_apply(&topology.manifest);
        let mut scalings = self.scalings.lock().unwrap_or_else(|e| e.into_inner());
        const DAY_MS: i64 = 24 * 3600 * 1000;
        while scalings
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= DAY_MS)
        {
            scalings.pop_front();
        }
        if limited {
            let last_hour = scalings
                .iter()
                .filter(|&&t| now.saturating_sub(t) < DAY_MS / 24)
                .count();
            if scalings.len() >= MAX_SCALINGS_PER_DAY || last_hour >= MAX_SCALINGS_PER_HOUR {
                return Err(Error::LimitExceeded {
                    reason: format!(
                        "stream {} was rescaled {} times in the last 24 hours and {last_hour} in the last hour (at most {MAX_SCALINGS_PER_DAY} and {MAX_SCALINGS_PER_HOUR})",
                        self.name,
                        scalings.len()
                    ),
                });
            }
        }
        let mut ends = Vec::with_capacity(current.len());
        for &(_, index) in &current {
            ends.push((index, self.close_point(&topology, index)?));
        }
        self.check_open_shard_limit(&topology, target.saturating_sub(open))?;
        self.update_manifest(&mut topology, |m| {
            // Pieces: each open shard cut at the target boundaries inside it. A shard that needs
            // no cut and is exactly a target range stays as it is.
            let mut pieces: Vec<(HashKeyRange, u32)> = Vec::new();
            for (&(range, index), &(_, end)) in current.iter().zip(&ends) {
                let cuts: Vec<u128> = targets
                    .iter()
                    .map(|t| t.start)
                    .filter(|&s| s > range.start && s <= range.end)
                    .collect();
                if cuts.is_empty() {
                    pieces.push((range, index));
                    continue;
                }
                close(m, index, end, now);
                let mut rest = (range, index);
                for cut in cuts {
                    let low = add_shard(
                        m,
                        HashKeyRange {
                            start: rest.0.start,
                            end: cut - 1,
                        },
                        Some(rest.1),
                        None,
                        now,
                    );
                    let high = add_shard(
                        m,
                        HashKeyRange {
                            start: cut,
                            end: rest.0.end,
                        },
                        Some(rest.1),
                        None,
                        now,
                    );
                    if rest.1 != index {
                        close(m, rest.1, 0, now); // a piece cut again at once: it never takes records
                    }
                    pieces.push((
                        HashKeyRange {
                            start: rest.0.start,
                            end: cut - 1,
                        },
                        low,
                    ));
                    rest = (
                        HashKeyRange {
                            start: cut,
                            end: rest.0.end,
                        },
                        high,
                    );
                }
                pieces.push(rest);
            }
            // Merge the pieces of each target range, pairwise from the lowest. An old shard closes
            // at its end offset; a piece made in this update never took records. Pieces and
            // targets are both in key order, so one pass pairs them.
            let ends: HashMap<u32, u64> = ends.iter().copied().collect();
            let end_of = |index: u32| ends.get(&index).copied().unwrap_or(0);
            let mut next_piece = 0;
            for t in &targets {
                while next_piece < pieces.len() && pieces[next_piece].0.start < t.start {
                    next_piece += 1;
                }
                let first = next_piece;
                while next_piece < pieces.len() && pieces[next_piece].0.end <= t.end {
                    next_piece += 1;
                }
                let mut inside = pieces[first..next_piece].iter().copied();
                let Some(mut acc) = inside.next() else {
                    continue;
                };
                for next in inside {
                    close(m, acc.1, end_of(acc.1), now);
                    close(m, next.1, end_of(next.1), now);
                    let merged = HashKeyRange {
                        start: acc.0.start,
                        end: next.0.end,
                    };
                    acc = (merged, add_shard(m, merged, Some(acc.1), Some(next.1), now));
                }
            }
            Ok(())
        })?;
        scalings.push_back(now);
        Ok(())
    }

    fn open_entry(&self, topology: &Topology, id: &str) -> Result<ShardEntry> {
        let entry = topology.entry_by_id(id)?;
        if entry.closed.is_some() {
            return Err(Error::ResourceInUse {
                kind: "shard",
                name: id.to_string(),
                reason: "it is closed".into(),
            });
        }
        Ok(entry.clone())
    }

    fn check_open_shard_limit(&self, topology: &Topology, more: u32) -> Result<()> {
        let open = topology.routes.len() as u32;
        if open + more > self.context.max_open_shards {
            return Err(Error::LimitExceeded {
                reason: format!(
                    "stream {} would have {} open shards; the limit is {}",
                    self.name,
                    open + more,
                    self.context.max_open_shards
                ),
            });
        }
        Ok(())
    }

    /// The end offset an open shard closes at: everything appended so far, made durable first.
    /// Called under the exclusive topology lock, so no put is in flight.
    fn close_point(&self, topology: &Topology, index: u32) -> Result<u64> {
        match topology.shards[&index].open_if_exists(&self.shard_options(&topology.manifest))? {
            Some(shard) => {
                shard.flush()?;
                Ok(shard.next_offset().get())
            }
            None => Ok(0),
        }
    }

    /// Switches between provisioned and on-demand capacity (Kinesis UpdateStreamMode).
    pub fn set_mode(&self, mode: StreamMode) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.mode = mode;
            Ok(())
        })
    }

    /// Turns the per-shard throughput limits on or off for this stream (`None`: the store's
    /// default).
    pub fn set_throughput_limits(&self, enforce: Option<bool>) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.throughput_limits = enforce;
            Ok(())
        })
    }

    /// For an on-demand stream: splits, at the middle of its hash-key range, every open shard
    /// whose write rate stayed above a shard's limit over the last window. Returns how many were
    /// split. The store's background thread calls this; it can be called any time.
    pub fn autoscale(&self) -> Result<usize> {
        let mut topology = self.write_topology();
        if topology.manifest.mode != StreamMode::OnDemand {
            return Ok(0);
        }
        let now = self.context.clock.now_ms();
        let window = self.context.on_demand_window.as_millis() as i64;
        let hot: Vec<u32> = topology
            .routes
            .iter()
            .filter(|(range, index)| {
                range.end > range.start
                    && topology.shards[index].throttle().close_window(now, window) == Some(true)
            })
            .map(|&(_, index)| index)
            .collect();
        let room = self
            .context
            .max_open_shards
            .saturating_sub(topology.routes.len() as u32) as usize;
        let mut split = 0;
        for index in hot.into_iter().take(room) {
            let Some(range) = topology.entry(index).map(|e| e.hash_range) else {
                continue;
            };
            let middle = range.start + (range.end - range.start) / 2 + 1;
            self.split_at(&mut topology, index, middle)?;
            split += 1;
        }
        Ok(split)
    }

    /// Closes shards not used for `idle`: their maps are unmapped and files closed (the next use
    /// reopens them, which verifies only the tail after the last index entry). A shard some
    /// reader or writer still holds stays open. Returns how many were closed.
    pub fn close_idle_shards(&self, idle: Duration) -> usize {
        let topology = self.read_topology();
        let cutoff = self
            .context
            .clock
            .now_ms()
            .saturating_sub(idle.as_millis() as i64);
        let mut closed = 0;
        for slot in topology.shards.values() {
            if slot.last_used_ms.load(AtomicOrdering::Relaxed) > cutoff {
                continue;
            }
            let mut shard = slot.shard.lock().unwrap_or_else(|e| e.into_inner());
            if shard.as_ref().is_some_and(|s| Arc::strong_count(s) == 1) {
                *shard = None;
                closed += 1;
            }
        }
        closed
    }

    /// Sets the retention period (24 to 8,760 hours); `increase` says which way it may move, as
    /// Kinesis's IncreaseStreamRetentionPeriod and DecreaseStreamRetentionPeriod require.
    pub fn set_retention_hours(&self, hours: u32, increase: bool) -> Result<()> {
        check_retention(hours)?;
        let mut topology = self.write_topology();
        let current = topology.manifest.retention_hours;
        if (increase && hours < current) || (!increase && hours > current) {
            return Err(Error::invalid(
                "RetentionPeriodHours",
                format!(
                    "{hours} would {} the current {current}",
                    if increase { "decrease" } else { "increase" }
                ),
            ));
        }
        self.update_manifest(&mut topology, |m| {
            m.retention_hours = hours;
            Ok(())
        })
    }

    /// Sets the largest record (data + partition key): 1 MiB to 10 MiB, in whole KiB.
    pub fn set_max_record_bytes(&self, bytes: usize) -> Result<()> {
        if !(1024 * 1024..=10 * 1024 * 1024).contains(&bytes) || bytes % 1024 != 0 {
            return Err(Error::invalid(
                "MaxRecordSizeInKiB",
                format!("{bytes} bytes is not 1024 to 10240 KiB"),
            ));
        }
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.max_record_bytes = bytes;
            Ok(())
        })?;
        // Open shards keep their old limit until reopened; drop them so the next use reopens.
        for slot in topology.shards.values() {
            *slot.shard.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        Ok(())
    }

    /// Adds or replaces tags (at most 50 per stream).
    pub fn add_tags(&self, tags: &BTreeMap<String, String>) -> Result<()> {
        check_tags(tags)?;
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.tags
                .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            if m.tags.len() > 50 {
                return Err(Error::LimitExceeded {
                    reason: format!("{} tags; a stream has at most 50", m.tags.len()),
                });
            }
            Ok(())
        })
    }

    /// Changes the settings the stream keeps for the wire API but does not act on (encryption,
    /// enhanced monitoring, resource policy, warm throughput), persisted in its manifest.
    pub fn modify_settings(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, serde_json::Value>) -> Result<()>,
    ) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| change(&mut m.settings))
    }

    /// Registers a consumer (Kinesis RegisterStreamConsumer): at most 20 per stream, names
    /// unique. Active at once.
    pub fn register_consumer(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<ConsumerEntry> {
        check_resource_name("ConsumerName", name, 128)?;
        check_tags(tags)?;
        let entry = ConsumerEntry {
            name: name.to_string(),
            created_ms: self.context.clock.now_ms(),
            tags: tags.clone(),
        };
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            if m.consumers.iter().any(|c| c.name == name) {
                return Err(Error::ResourceInUse {
                    kind: "consumer",
                    name: name.to_string(),
                    reason: format!("stream {} has a consumer of that name", m.name),
                });
            }
            if m.consumers.len() >= MAX_CONSUMERS {
                return Err(Error::LimitExceeded {
                    reason: format!(
                        "stream {} has {MAX_CONSUMERS} registered consumers, the most it may have",
                        m.name
                    ),
                });
            }
            m.consumers.push(entry.clone());
            Ok(())
        })?;
        Ok(entry)
    }

    /// Adds tags to and removes tags from a registered consumer (at most 50 tags).
    pub fn tag_consumer(
        &self,
        name: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<()> {
        check_tags(add)?;
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            let consumer = m
                .consumers
                .iter_mut()
                .find(|c| c.name == name)
                .ok_or_else(|| Error::ResourceNotFound {
                    kind: "consumer",
                    name: name.to_string(),
                })?;
            consumer
                .tags
                .extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
            for key in remove {
                consumer.tags.remove(key);
            }
            if consumer.tags.len() > 50 {
                return Err(Error::LimitExceeded {
                    reason: format!("{} tags; a consumer has at most 50", consumer.tags.len()),
                });
            }
            Ok(())
        })
    }

    /// Deregisters a consumer ([`Error::ResourceNotFound`] if it is not registered).
    pub fn deregister_consumer(&self, name: &str) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            let before = m.consumers.len();
            m.consumers.retain(|c| c.name != name);
            if m.consumers.len() == before {
                return Err(Error::ResourceNotFound {
                    kind: "consumer",
                    name: name.to_string(),
                });
            }
            Ok(())
        })
    }

    /// Removes tags.
    pub fn remove_tags(&self, keys: &[String]) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            for k in keys {
                m.tags.remove(k);
            }
            Ok(())
        })
    }

    /// Deletes what retention no longer keeps: whole segments older than the retention period in
    /// every shard, and closed shards that no longer hold any record (they leave describe and
    /// list, as in Kinesis). Returns the number of records deleted.
    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<u64> {
        // Deleting segments needs only the shared lock (each shard serializes itself), so puts
        // go on meanwhile; the exclusive lock is taken only to drop emptied closed shards.
        let (deleted, emptied) = {
            let topology = self.read_topology();
            let cutoff = now_ms - i64::from(topology.manifest.retention_hours) * 3_600_000;
            let options = self.shard_options(&topology.manifest);
            let mut deleted = 0;
            let mut emptied = Vec::new();
            for entry in &topology.manifest.shards {
                let slot = &topology.shards[&entry.index];
                let remaining = match slot.open_if_exists(&options)? {
                    Some(shard) => {
                        deleted += shard.delete_before(cutoff)?.records;
                        shard.next_offset().get() - shard.first_offset().get()
                    }
                    None => 0,
                };
                if let Some(c) = entry.closed {
                    if remaining == 0 && c.closed_ms < cutoff {
                        emptied.push(entry.index);
                    }
                }
            }
            (deleted, emptied)
        };
        if !emptied.is_empty() {
            // Closed shards take no more records, so what was empty stays empty.
            let mut topology = self.write_topology();
            self.update_manifest(&mut topology, |m| {
                m.shards.retain(|s| !emptied.contains(&s.index));
                Ok(())
            })?;
            for index in emptied {
                let dir = shards_dir(&self.dir).join(shard_id(index));
                crate::io::remove_dir_all("remove expired shard", &dir)?;
            }
        }
        Ok(deleted)
    }
}

fn close(m: &mut StreamManifest, index: u32, end_offset: u64, now: i64) {
    // Shards are kept in strictly increasing index order (`StreamManifest::check`).
    if let Ok(at) = m.shards.binary_search_by_key(&index, |s| s.index) {
        let s = &mut m.shards[at];
        s.closed.get_or_insert(Closed {
            end_offset,
            closed_ms: now,
        });
    }
}

fn add_shard(
    m: &mut StreamManifest,
    range: HashKeyRange,
    parent: Option<u32>,
    adjacent: Option<u32>,
    now: i64,
) -> u32 {
    let index = m.next_shard_index;
    m.next_shard_index += 1;
    m.shards.push(ShardEntry {
        index,
        hash_range: range,
        parent,
        adjacent_parent: adjacent,
        created_ms: now,
        closed: None,
    });
    index
}

/// Checks a stream directory's manifest and shard directories against each other, changing
/// nothing: the manifest reads and is consistent, every shard directory belongs to a shard of the
/// manifest, and every closed shard ends exactly at the offset the manifest closed it at. (Each
/// shard's own files are checked by [`crate::shard::verify`].)
pub fn verify_layout(stream_dir: &Path) -> Result<Vec<Problem>> {
    let manifest_path = stream_dir.join(crate::manifest::MANIFEST_FILE);
    let manifest = match StreamManifest::read(stream_dir) {
        Ok(m) => m,
        Err(e) => {
            return Ok(vec![Problem {
                path: manifest_path,
                position: None,
                what: e.to_string(),
            }])
        }
    };
    let mut problems = Vec::new();
    let dir = shards_dir(stream_dir);
    let listed = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Error::io_at("list", &dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    for name in listed {
        let text = name.to_string_lossy();
        let known = parse_shard_id(&text).is_some_and(|i| {
            manifest
                .shards
                .binary_search_by_key(&i, |s| s.index)
                .is_ok()
        });
        if !known && !text.starts_with('.') {
            problems.push(Problem {
                path: dir.join(&name),
                position: None,
                what: format!(
                    "not a shard of the manifest {} (left by a crash while removing an expired \
                     shard?)",
                    manifest_path.display()
                ),
            });
        }
    }
    for entry in &manifest.shards {
        let Some(closed) = entry.closed else {
            continue;
        };
        let shard_dir = dir.join(shard_id(entry.index));
        let bases = match crate::shard::segment_bases(&shard_dir) {
            Ok(bases) => bases,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let Some(&newest) = bases.last() else {
            continue;
        };
        let report = crate::shard::summarize_segment(&shard_dir, newest)?;
        let end = report.end_offset().get().saturating_add(report.lost_after);
        if report.problems.is_empty() && end != closed.end_offset {
            problems.push(Problem {
                path: report.path,
                position: None,
                what: format!(
                    "shard {} was closed at offset {} but its segments end at {end}",
                    shard_id(entry.index),
                    closed.end_offset
                ),
            });
        }
    }
    Ok(problems)
}

/// The indexes of `routes` (each below `route_count`) ordered by route, equal routes in index
/// order: a counting sort when there are not many more routes than entries (the usual
/// `PutRecords` over a few shards), else a sort.
fn group_by_route(routes: &[usize], route_count: usize) -> Vec<usize> {
    if route_count > 4 * routes.len() {
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_unstable_by_key(|&i| (routes[i], i));
        return order;
    }
    // starts[r] = first output slot of route r, once the counts are summed.
    let mut starts = vec![0usize; route_count + 1];
    for &r in routes {
        starts[r + 1] += 1;
    }
    for r in 1..starts.len() {
        starts[r] += starts[r - 1];
    }
    let mut order = vec![0; routes.len()];
    for (i, &r) in routes.iter().enumerate() {
        order[starts[r]] = i;
        starts[r] += 1;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn grouping_by_route_is_a_stable_sort(
            routes in proptest::collection::vec(0usize..40, 0..60),
            extra in 0usize..300,
        ) {
            let route_count = routes.iter().max().map_or(0, |m| m + 1) + extra;
            let mut expected: Vec<usize> = (0..routes.len()).collect();
            expected.sort_by_key(|&i| routes[i]);
            prop_assert_eq!(group_by_route(&routes, route_count), expected);
        }
    }
}
