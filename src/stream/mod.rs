//! A stream: shards that together own the 128-bit hash-key space, with Kinesis Data Streams
//! semantics for putting records, iterating over shards, resharding and retention.
//!
//! The stream's topology (its manifest and shard handles) sits behind one `RwLock`. Puts and reads
//! take it shared, so they run in parallel (each shard serializes its own appends); resharding and
//! retention take it exclusively, so no put is in flight while a parent shard closes and its end
//! offset is recorded. Shards are opened on first use: a store with many idle shards holds no file
//! descriptor or mapping for them.
//!
//! This file holds the stream itself (topology, shard handles, change signal, manifest updates,
//! layout verification); each job on it has a file of its own: `put`, `read` (the typed read core
//! and the shard-iterator façade), `list` (describe, list_shards), `reshard`, `settings`
//! (retention period, limits, tags, consumers) and `retention` (the background thread's work).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::hash_key::{parse_shard_id, shard_id, HashKeyRange, ShardId};
use crate::iterator::IteratorKey;
use crate::log::shard::{Problem, Shard, ShardOptions};
use crate::manifest::{ShardEntry, StreamManifest};
use crate::throttle::ShardThrottle;

mod list;
mod put;
mod read;
mod reshard;
mod retention;
mod settings;
mod tier;
pub use list::{
    stream_of_next_token, ListShards, ShardDescription, ShardFilter, ShardPage, StreamDescription,
    MAX_LIST_SHARDS,
};
pub use put::{
    Put, PutFailure, PutFailureReason, PutRecord, MAX_PARTITION_KEY_CHARS, MAX_PUT_RECORDS,
    MAX_PUT_RECORDS_BYTES,
};
pub use read::{
    ChildShard, GetRecordsOutput, PageEnd, ReadEnd, ShardRead, Start, StreamRecord,
    StreamRecordRef, MAX_GET_RECORDS, MAX_GET_RECORDS_BYTES,
};
pub use reshard::{MAX_SCALINGS_PER_DAY, MAX_SCALINGS_PER_HOUR};
pub(crate) use settings::check_tags;
pub use settings::{MAX_CONSUMERS, MAX_TAGS};
pub use tier::stream_tier_key;

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
    /// Where sealed segments are tiered to, if anywhere.
    pub tier: Option<Arc<crate::log::remote::Tier>>,
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
    /// CRC32 of the manifest files as last copied to the tier, by file name.
    manifest_uploads: Mutex<BTreeMap<&'static str, u32>>,
}

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
            // A shard's tier key is its stream's plus its directory's name.
            let options = ShardOptions {
                tier: options
                    .tier
                    .as_ref()
                    .and_then(|t| Some(t.child(tier::shard_dir_name(&self.dir)?))),
                ..options.clone()
            };
            let shard = Arc::new(Shard::open_in_locked_dir(self.dir.clone(), options)?);
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

    /// The shard a caller names, read as Kinesis reads shard ids ([`ShardId::parse_loose`]).
    fn entry_by_id(&self, id: &str) -> Result<&ShardEntry> {
        match ShardId::parse_loose(id) {
            Some(shard) => self
                .entry(shard.index())
                .ok_or_else(|| not_found_shard(&shard.to_string())),
            None => Err(not_found_shard(id)),
        }
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
                shard_id: ShardId(s.index),
                parent_shards: s
                    .parent
                    .iter()
                    .chain(&s.adjacent_parent)
                    .map(|&p| ShardId(p))
                    .collect(),
                hash_key_range: s.hash_range,
            })
            .collect()
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
        // A crash's leftover, harmless where it is: a failure to remove it is only reported.
        if let Err(e) = retention::remove_forgotten_shards(&dir, &manifest) {
            tracing::warn!(stream = %manifest.name, error = %e, "forgotten shard directories stay");
        }
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
            manifest_uploads: Mutex::default(),
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
            tier: self.tier_key(manifest.created_ms),
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
}

/// Checks a stream directory's manifest and shard directories against each other, changing
/// nothing: the manifest reads and is consistent, every shard directory belongs to a shard of the
/// manifest, and every closed shard ends exactly at the offset the manifest closed it at. (Each
/// shard's own files are checked by [`crate::log::shard::verify`].)
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
        let bases = match crate::log::shard::segment_bases(&shard_dir) {
            Ok(bases) => bases,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let Some(&newest) = bases.last() else {
            continue;
        };
        let report = crate::log::shard::summarize_segment(&shard_dir, newest)?;
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
