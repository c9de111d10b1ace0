//! Consumer groups: what the Kinesis Client Library gives Kinesis users, inside the store.
//!
//! A named group reads one stream. Each shard not yet processed to its end has a lease, held by
//! at most one worker of the group at a time; workers take unowned or expired leases (and steal
//! from a worker holding more than its share) so shards spread evenly, renew their own, and
//! release them on shutdown. A worker checkpoints the next offset to process per shard. A child
//! shard is leased only once its parents are processed to their end, so records of one partition
//! key are processed in order across splits and merges (the KCL's rule).
//!
//! State lives in `DATA_DIR/groups/GROUP.json`, replaced atomically on every change (lease
//! taken, renewed or released; checkpoint). Times are the store clock's. Delivery to the user's
//! closure is at least once: a batch is checkpointed after it succeeds, so a crash or a lost
//! lease between the two processes it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash_key::{shard_id, ShardId};
use crate::io::{self, sync_dir};
use crate::names;
use crate::stream::{
    check_resource_name, IteratorStart, ShardDescription, Start, Stream, StreamRecord,
    MAX_GET_RECORDS,
};
use crate::{Offset, ReadLimits, SequenceNumber, Store};

/// The directory under the data directory holding one file per group.
pub const GROUPS_DIR: &str = "groups";
/// Format version of a group file.
pub const GROUP_FORMAT_VERSION: u16 = 1;

/// Where a group starts reading a shard it has no checkpoint for. Shards created by resharding
/// always start at their beginning (their parents' records come first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InitialPosition {
    /// The oldest record still stored.
    TrimHorizon,
    /// Records put after the shard is first read.
    Latest,
    /// The first record that arrived at or after this time.
    AtTimestamp {
        /// Ms since the Unix epoch.
        ms: i64,
    },
}

/// How a group reads its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The stream the group reads.
    pub stream: String,
    /// Where shards without a checkpoint start (default: the trim horizon).
    pub initial_position: InitialPosition,
    /// How long a lease lasts without renewal (default 10 s): a dead worker's shards are taken
    /// over after this.
    pub lease_duration: Duration,
}

impl GroupConfig {
    /// A group reading `stream` from its trim horizon, with 10 s leases.
    pub fn new(stream: &str) -> GroupConfig {
        GroupConfig {
            stream: stream.to_string(),
            initial_position: InitialPosition::TrimHorizon,
            lease_duration: Duration::from_secs(10),
        }
    }
}

/// One shard's lease and checkpoint, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    owner: Option<String>,
    expires_ms: i64,
    /// The next offset to process; `None`: start at the initial position.
    checkpoint: Option<u64>,
    /// Processed to its end (a closed shard).
    finished: bool,
    /// A worker below its share asked for this lease: the owner hands it over at the start of
    /// its next round, between batches, so nothing is processed twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handoff: Option<String>,
}

/// Everything a group file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GroupFile {
    format_version: u16,
    name: String,
    stream: String,
    /// The stream's creation time: a group does not follow a re-created stream.
    stream_created_ms: i64,
    initial_position: InitialPosition,
    lease_ms: i64,
    /// Per shard index.
    shards: BTreeMap<u32, Lease>,
    /// Workers seen, with when they last renewed.
    workers: BTreeMap<String, i64>,
}

/// One shard's progress to record (see [`ConsumerGroup::commit_all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardCommit {
    pub shard: u32,
    /// The next offset to process.
    pub next_offset: u64,
    /// Processed to its end (a closed shard).
    pub finished: bool,
}

/// A shard as [`ConsumerGroup::describe`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProgress {
    /// Its id.
    pub shard_id: String,
    /// The worker holding its lease, if the lease is live.
    pub owner: Option<String>,
    /// When the lease expires (ms since the Unix epoch).
    pub lease_expires_ms: i64,
    /// The sequence number of the last record checkpointed, if any.
    pub checkpoint: Option<String>,
    /// Processed to its end.
    pub finished: bool,
    /// Records after the checkpoint.
    pub lag_records: u64,
    /// How long the oldest unprocessed record has waited, ms (0 when caught up).
    pub lag_ms: i64,
}

/// What describe shows of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's name.
    pub name: String,
    /// The stream it reads.
    pub stream: String,
    /// Live workers and when each last renewed.
    pub workers: BTreeMap<String, i64>,
    /// Every shard still tracked, in index order.
    pub shards: Vec<ShardProgress>,
}

/// The longest lease a group may have: a year.
const MAX_LEASE_MS: i64 = 365 * 24 * 3600 * 1000;

/// A lease duration in ms, from 1 ms to a year.
fn check_lease(duration: Duration) -> Result<i64> {
    i64::try_from(duration.as_millis())
        .ok()
        .filter(|ms| (1..=MAX_LEASE_MS).contains(ms))
        .ok_or_else(|| {
            Error::invalid(
                "lease_duration",
                format!("{duration:?} is outside 1 ms..=365 days"),
            )
        })
}

/// A group reads the stream it was created for, not one deleted and created again since under
/// the same name (its checkpoints would point into unrelated records).
fn check_same_stream(file: &GroupFile, stream: &crate::Stream) -> Result<()> {
    if file.stream_created_ms == stream.created_ms() {
        Ok(())
    } else {
        Err(Error::invalid(
            "stream",
            format!(
                "group {} read an earlier stream {} (deleted since); delete the group to start over",
                file.name, file.stream
            ),
        ))
    }
}

/// Tracks the stream's shards: new ones get a lease entry; ones retention removed from the
/// stream are forgotten.
fn sync_shards(file: &mut GroupFile, shards: &[ShardDescription]) {
    let present: BTreeSet<u32> = shards
        .iter()
        .filter_map(|s| ShardId::parse(&s.shard_id).map(ShardId::index))
        .collect();
    file.shards.retain(|index, _| present.contains(index));
    for index in present {
        file.shards.entry(index).or_default();
    }
}

/// A group's file as offline tools show it (`shardlog inspect`), read without opening the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupFiles {
    /// The group's name.
    pub name: String,
    /// The stream it reads.
    pub stream: String,
    /// Lease length, ms.
    pub lease_ms: i64,
    /// Workers recorded, with when each last renewed (ms since the Unix epoch).
    pub workers: BTreeMap<String, i64>,
    /// Per shard, in index order.
    pub shards: Vec<GroupShardFiles>,
}

/// One shard of a [`GroupFiles`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupShardFiles {
    /// Its id.
    pub shard_id: String,
    /// The worker recorded as holding the lease (it may have expired).
    pub owner: Option<String>,
    /// When the lease expires, ms since the Unix epoch.
    pub lease_expires_ms: i64,
    /// The last processed sequence number, if any.
    pub checkpoint: Option<String>,
    /// Processed to its end.
    pub finished: bool,
}

/// The consumer groups of a data directory, by name (none if it has no `groups/`).
pub fn read_group_files(data_dir: &Path) -> Result<Vec<GroupFiles>> {
    let mut groups = Vec::new();
    for path in group_file_paths(data_dir)? {
        // A group deleted since the listing is skipped.
        groups.extend(read_group_file(&path)?);
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(groups)
}

/// The group files under `groups/` of a data directory, sorted (temporary files left by an
/// interrupted write are not group files).
pub fn group_file_paths(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = data_dir.join(GROUPS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(Error::io_at("list", &dir))?.path();
        // Temporary files end in `.tmp`; a group of an older store may start with `.`.
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Longest worker id, in bytes: a worker's id is kept in the group file with each lease.
pub const MAX_WORKER_ID_BYTES: usize = 256;
/// Most workers a group records at once: leasing refuses new ones past it.
pub const MAX_WORKERS: usize = 1_000;

/// Checks a worker id: 1 to [`MAX_WORKER_ID_BYTES`] bytes, no control characters.
fn check_worker_id(worker: &str) -> Result<()> {
    if (1..=MAX_WORKER_ID_BYTES).contains(&worker.len()) && !worker.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::invalid(
            "WorkerId",
            format!(
                "a worker id takes 1 to {MAX_WORKER_ID_BYTES} bytes without control characters ({} given)",
                worker.len()
            ),
        ))
    }
}

/// The file of group `name` in `dir` (`groups/`): its name as [`names::disk_name`] writes it,
/// `.json`. A group of an older store whose name starts with `.` was kept unescaped; it is
/// moved to its escaped name first.
fn group_path(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{}.json", names::disk_name(name)));
    let legacy = dir.join(format!("{name}.json"));
    if legacy != path && legacy.is_file() && !path.exists() {
        io::rename("rename", &legacy, &path)?;
        sync_dir(dir)?;
    }
    Ok(path)
}

/// A group file's contents, checked: its version, and a lease from 1 ms to a year (lease
/// arithmetic stays in range).
fn parse_group_file(path: &Path, bytes: &[u8]) -> Result<GroupFile> {
    let file: GroupFile = io::parse_json(path, bytes)?;
    io::check_version(
        path,
        file.format_version,
        GROUP_FORMAT_VERSION,
        GROUP_FORMAT_VERSION,
    )?;
    if !(1..=MAX_LEASE_MS).contains(&file.lease_ms) {
        return Err(Error::corrupt(
            path,
            0,
            format!("lease_ms {} is outside 1..={MAX_LEASE_MS}", file.lease_ms),
        ));
    }
    Ok(file)
}

/// One group file, read and checked without opening the store: `None` if it does not exist.
pub fn read_group_file(path: &Path) -> Result<Option<GroupFiles>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let file = parse_group_file(path, &bytes)?;
    Ok(Some(GroupFiles {
        shards: file
            .shards
            .iter()
            .map(|(index, l)| GroupShardFiles {
                shard_id: shard_id(*index),
                owner: l.owner.clone(),
                lease_expires_ms: l.expires_ms,
                checkpoint: l
                    .checkpoint
                    .filter(|&c| c > 0)
                    .map(|c| SequenceNumber::new(*index, Offset::new(c - 1)).to_string()),
                finished: l.finished,
            })
            .collect(),
        name: file.name,
        stream: file.stream,
        lease_ms: file.lease_ms,
        workers: file.workers,
    }))
}

/// Groups open in this process, by file. Opening a group that is open already returns the same
/// object, so all its workers share one state: two copies would each write the file from
/// their own and undo the other's leases. (A data directory is open in one store at a time, so
/// a file names one group.)
fn open_groups() -> MutexGuard<'static, HashMap<PathBuf, Weak<ConsumerGroup>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<ConsumerGroup>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The group open in this process for the file `path`, if any. A file removed under an open
/// group (its delivery stream deleted) does not count: opening it starts a new group.
fn live_group(
    open: &HashMap<PathBuf, Weak<ConsumerGroup>>,
    path: &Path,
) -> Option<Arc<ConsumerGroup>> {
    open.get(path)
        .and_then(Weak::upgrade)
        .filter(|_| path.exists())
}

/// A consumer group of a store. `Send + Sync`; share it with `Arc` among its workers (opening
/// it again in the same process also returns the same group).
pub struct ConsumerGroup {
    store: Arc<Store>,
    path: PathBuf,
    state: Mutex<GroupFile>,
}

impl std::fmt::Debug for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerGroup")
            .field("path", &self.path)
            .finish()
    }
}

impl ConsumerGroup {
    /// Opens the group `name` of `store`, creating it with `config` if it does not exist. An
    /// existing group keeps its checkpoints; its stream must be `config.stream`.
    pub fn open(store: Arc<Store>, name: &str, config: GroupConfig) -> Result<Arc<ConsumerGroup>> {
        check_resource_name("GroupName", name, 128)?;
        let dir = store.dir().join(GROUPS_DIR);
        io::create_dir_all(&dir)?;
        let path = group_path(&dir, name)?;
        Self::open_at(store, path, name, config)
    }

    /// Opens the existing group `name` of `store` with the configuration it was created with.
    pub fn open_existing(store: Arc<Store>, name: &str) -> Result<Arc<ConsumerGroup>> {
        check_resource_name("GroupName", name, 128)?;
        let path = group_path(&store.dir().join(GROUPS_DIR), name)?;
        if let Some(group) = live_group(&open_groups(), &path) {
            return Ok(group);
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ResourceNotFound {
                    kind: "consumer group",
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let file = parse_group_file(&path, &bytes)?;
        let config = GroupConfig {
            stream: file.stream,
            initial_position: file.initial_position,
            lease_duration: Duration::from_millis(u64::try_from(file.lease_ms).unwrap_or(0)),
        };
        Self::open(store, name, config)
    }

    /// The groups of `store`, as their files hold them, by name. A group whose file does not
    /// read is left out (and logged): it costs only itself, whose own calls report the damage.
    pub fn list(store: &Store) -> Result<Vec<GroupFiles>> {
        let mut groups = Vec::new();
        for path in group_file_paths(store.dir())? {
            match read_group_file(&path) {
                Ok(group) => groups.extend(group),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "consumer group file does not read; not listed")
                }
            }
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    /// Deletes the group `name` of `store`: its leases and checkpoints are gone, and opening it
    /// again starts over at its initial position. Refused while the group is open in this
    /// process (drop its workers and group handles first).
    pub fn delete(store: &Store, name: &str) -> Result<()> {
        check_resource_name("GroupName", name, 128)?;
        let dir = store.dir().join(GROUPS_DIR);
        let path = group_path(&dir, name)?;
        let open = open_groups();
        if open.get(&path).is_some_and(|g| g.strong_count() > 0) {
            return Err(Error::ResourceInUse {
                kind: "consumer group",
                name: name.to_string(),
                reason: "it is open in this process".into(),
            });
        }
        if !io::remove_file("delete", &path)? {
            return Err(Error::ResourceNotFound {
                kind: "consumer group",
                name: name.to_string(),
            });
        }
        sync_dir(&dir)
    }

    /// Opens (creating) a group kept in the file `path` rather than under `groups/`: a
    /// delivery stream reading a stream keeps its position this way, in its own directory.
    pub(crate) fn open_at(
        store: Arc<Store>,
        path: PathBuf,
        name: &str,
        config: GroupConfig,
    ) -> Result<Arc<ConsumerGroup>> {
        let mut open = open_groups();
        if let Some(group) = live_group(&open, &path) {
            let stream = group.lock().stream.clone();
            if stream != config.stream {
                return Err(Error::invalid(
                    "stream",
                    format!("group {name} reads stream {stream}, not {}", config.stream),
                ));
            }
            return Ok(group);
        }
        let group = Self::load(store, path.clone(), name, config)?;
        open.retain(|_, g| g.strong_count() > 0);
        open.insert(path, Arc::downgrade(&group));
        Ok(group)
    }

    fn load(
        store: Arc<Store>,
        path: PathBuf,
        name: &str,
        config: GroupConfig,
    ) -> Result<Arc<ConsumerGroup>> {
        let stream = store.stream(&config.stream)?;
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let file = parse_group_file(&path, &bytes)?;
                if file.stream != config.stream {
                    return Err(Error::invalid(
                        "stream",
                        format!(
                            "group {name} reads stream {}, not {}",
                            file.stream, config.stream
                        ),
                    ));
                }
                check_same_stream(&file, &stream)?;
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => GroupFile {
                format_version: GROUP_FORMAT_VERSION,
                name: name.to_string(),
                stream: config.stream.clone(),
                stream_created_ms: stream.created_ms(),
                initial_position: config.initial_position,
                lease_ms: check_lease(config.lease_duration)?,
                shards: BTreeMap::new(),
                workers: BTreeMap::new(),
            },
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let created = !path.exists();
        let mut synced = file.clone();
        sync_shards(&mut synced, &stream.describe().shards);
        let group = ConsumerGroup {
            store,
            path,
            state: Mutex::new(file),
        };
        if created {
            group.write(&synced)?;
        }
        group.save(&mut group.lock(), synced)?;
        Ok(Arc::new(group))
    }

    /// The group's name.
    pub fn name(&self) -> String {
        self.lock().name.clone()
    }

    /// The stream it reads.
    pub fn stream(&self) -> String {
        self.lock().stream.clone()
    }

    fn lock(&self) -> MutexGuard<'_, GroupFile> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> i64 {
        self.store.options().shard.clock.now_ms()
    }

    /// Writes `next` durably if it differs, then makes it the state (if the write fails
    /// nothing changes).
    fn save(&self, state: &mut GroupFile, next: GroupFile) -> Result<()> {
        if *state != next {
            self.write(&next)?;
            *state = next;
        }
        Ok(())
    }

    fn write(&self, file: &GroupFile) -> Result<()> {
        let dir = self.path.parent().unwrap_or(&self.path);
        let name = self
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        io::write_json(dir, &name, file)
    }

    /// Shards whose parents (those still in the stream) are processed to their end.
    fn leasable(file: &GroupFile, shards: &[ShardDescription]) -> Vec<u32> {
        let mut out = Vec::new();
        for s in shards {
            let Some(index) = ShardId::parse(&s.shard_id).map(ShardId::index) else {
                continue;
            };
            let Some(lease) = file.shards.get(&index) else {
                continue;
            };
            if lease.finished {
                continue;
            }
            let parents_done = [&s.parent_shard_id, &s.adjacent_parent_shard_id]
                .into_iter()
                .flatten()
                .filter_map(|p| ShardId::parse(p).map(ShardId::index))
                .all(|p| file.shards.get(&p).is_none_or(|l| l.finished));
            if parents_done {
                out.push(index);
            }
        }
        out
    }

    /// Renews `worker`'s leases and takes more up to its fair share: free ones first (unowned
    /// or expired), else one from the worker holding the most. Returns the shards it holds.
    #[cfg(feature = "firehose")]
    pub(crate) fn acquire(&self, worker: &str) -> Result<Vec<u32>> {
        Ok(self.acquire_described(worker)?.0)
    }

    /// [`Self::acquire`], also returning the stream's shards as described for it.
    fn acquire_described(&self, worker: &str) -> Result<(Vec<u32>, Vec<ShardDescription>)> {
        check_worker_id(worker)?;
        let mut state = self.lock();
        let mut next = state.clone();
        let now = self.now();
        let stream = self.store.stream(&next.stream)?;
        // An open group must not carry its checkpoints over to a stream created again under
        // the same name.
        check_same_stream(&next, &stream)?;
        let shards = stream.describe().shards;
        sync_shards(&mut next, &shards);
        let lease_ms = next.lease_ms;
        // Renewals are written only once a quarter of the lease has passed, so a busy worker
        // does not rewrite the group file every round.
        let stale = |at: i64| now.saturating_sub(at) >= lease_ms / 4;
        if next.workers.get(worker).is_none_or(|&seen| stale(seen)) {
            next.workers.insert(worker.to_string(), now);
        }
        next.workers
            .retain(|_, seen| seen.saturating_add(lease_ms) > now);
        if next.workers.len() > MAX_WORKERS {
            return Err(Error::LimitExceeded {
                reason: format!(
                    "group {} has {MAX_WORKERS} live workers already (its limit)",
                    next.name
                ),
            });
        }
        for lease in next.shards.values_mut() {
            if lease.owner.as_deref() == Some(worker)
                && stale(lease.expires_ms.saturating_sub(lease_ms))
            {
                lease.expires_ms = now.saturating_add(lease_ms);
            }
        }
        let leasable = Self::leasable(&next, &shards);
        let live = |l: &Lease| l.owner.is_some() && l.expires_ms > now;
        let held = |file: &GroupFile, w: &str| {
            leasable
                .iter()
                .filter(|i| {
                    file.shards
                        .get(i)
                        .is_some_and(|l| live(l) && l.owner.as_deref() == Some(w))
                })
                .count()
        };
        // Leases another worker asked for: handed over now, between this worker's batches
        // (rounds checkpoint each batch before the next round starts).
        let live_workers: BTreeSet<String> = next.workers.keys().cloned().collect();
        for lease in next.shards.values_mut() {
            if lease.owner.as_deref() == Some(worker) {
                if let Some(to) = lease.handoff.take() {
                    if live_workers.contains(&to) {
                        lease.owner = Some(to);
                        lease.expires_ms = now.saturating_add(lease_ms);
                    }
                }
            }
        }
        let workers = next.workers.len().max(1);
        let target = leasable.len().div_ceil(workers);
        let asked = next
            .shards
            .values()
            .any(|l| l.handoff.as_deref() == Some(worker) && live(l));
        while held(&next, worker) < target {
            let free = leasable
                .iter()
                .copied()
                .find(|i| next.shards.get(i).is_some_and(|l| !live(l)));
            let taken = match free {
                Some(i) => Some(i),
                None if asked => None,
                None => {
                    // Ask the busiest worker for one lease, if it holds more than its share.
                    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                    for i in &leasable {
                        if let Some(owner) = next
                            .shards
                            .get(i)
                            .filter(|l| live(l))
                            .and_then(|l| l.owner.clone())
                        {
                            *counts.entry(owner).or_default() += 1;
                        }
                    }
                    let busiest = counts
                        .iter()
                        .filter(|(w, _)| w.as_str() != worker)
                        .max_by_key(|(_, n)| **n)
                        .filter(|(_, n)| **n > target)
                        .map(|(w, _)| w.clone());
                    let wanted = busiest.and_then(|victim| {
                        leasable.iter().rev().copied().find(|i| {
                            next.shards.get(i).is_some_and(|l| {
                                live(l)
                                    && l.owner.as_deref() == Some(&victim)
                                    && l.handoff.is_none()
                            })
                        })
                    });
                    if let Some(lease) = wanted.and_then(|i| next.shards.get_mut(&i)) {
                        lease.handoff = Some(worker.to_string());
                    }
                    // The owner hands it over at its next round (or it expires).
                    break;
                }
            };
            let Some(index) = taken else { break };
            if let Some(lease) = next.shards.get_mut(&index) {
                lease.owner = Some(worker.to_string());
                lease.expires_ms = now.saturating_add(lease_ms);
                lease.handoff = None;
            }
        }
        let mine: Vec<u32> = leasable
            .iter()
            .copied()
            .filter(|i| {
                next.shards
                    .get(i)
                    .is_some_and(|l| live(l) && l.owner.as_deref() == Some(worker))
            })
            .collect();
        self.save(&mut state, next)?;
        Ok((mine, shards))
    }

    /// Records that `worker` processed `shard` below `next_offset` (and, with `finished`, to its
    /// end). The worker must hold the shard's lease; the checkpoint must not go backwards.
    fn commit(&self, worker: &str, shard: u32, next_offset: u64, finished: bool) -> Result<()> {
        self.commit_all(
            worker,
            &[ShardCommit {
                shard,
                next_offset,
                finished,
            }],
        )
    }

    /// Records several shards' progress by `worker` in one durable write: all or none. Each
    /// shard's lease must be held by `worker` and no checkpoint may go backwards.
    pub(crate) fn commit_all(&self, worker: &str, commits: &[ShardCommit]) -> Result<()> {
        let mut state = self.lock();
        let mut next = state.clone();
        let now = self.now();
        let group = next.name.clone();
        for c in commits {
            let shard = c.shard;
            let lease = next
                .shards
                .get_mut(&shard)
                .ok_or_else(|| Error::ResourceNotFound {
                    kind: "shard",
                    name: shard_id(shard),
                })?;
            if lease.owner.as_deref() != Some(worker) || lease.expires_ms <= now {
                return Err(Error::LeaseLost {
                    group,
                    worker: worker.to_string(),
                    shard: shard_id(shard),
                });
            }
            if lease
                .checkpoint
                .is_some_and(|current| c.next_offset < current)
            {
                return Err(Error::invalid(
                    "SequenceNumber",
                    format!(
                        "checkpoint {} of {} is behind the current one, {}",
                        c.next_offset,
                        shard_id(shard),
                        lease.checkpoint.unwrap_or(0)
                    ),
                ));
            }
            lease.checkpoint = Some(c.next_offset);
            if c.finished {
                lease.finished = true;
                lease.owner = None;
            }
        }
        self.save(&mut state, next)
    }

    /// Per tracked shard: the next offset to process (`None`: not started) and whether it is
    /// finished.
    #[cfg(feature = "firehose")]
    pub(crate) fn positions(&self) -> BTreeMap<u32, (Option<u64>, bool)> {
        self.lock()
            .shards
            .iter()
            .map(|(index, l)| (*index, (l.checkpoint, l.finished)))
            .collect()
    }

    /// Takes over positions kept elsewhere before (a delivery stream's checkpoint file of an
    /// earlier version). Checkpoints only move forward, so adopting again is harmless.
    #[cfg(feature = "firehose")]
    pub(crate) fn adopt(
        &self,
        checkpoints: &BTreeMap<u32, u64>,
        finished: &BTreeSet<u32>,
    ) -> Result<()> {
        let mut state = self.lock();
        let mut next = state.clone();
        for (index, lease) in next.shards.iter_mut() {
            if let Some(&c) = checkpoints.get(index) {
                lease.checkpoint = Some(lease.checkpoint.map_or(c, |old| old.max(c)));
            }
            if finished.contains(index) {
                lease.finished = true;
                lease.owner = None;
            }
        }
        self.save(&mut state, next)
    }

    /// Checkpoints `sequence_number` (the last record `worker` processed) for its shard: the
    /// number must belong to the group's stream, not lie beyond the shard's end, and not be
    /// behind the current checkpoint.
    pub fn checkpoint(&self, worker: &str, sequence_number: &str) -> Result<()> {
        let seq = SequenceNumber::parse(sequence_number).ok_or_else(|| {
            Error::invalid(
                "SequenceNumber",
                format!("{sequence_number:?} is not a sequence number"),
            )
        })?;
        let shard = seq.shard_index();
        let stream = self.store.stream(&self.lock().stream)?;
        let end = stream.shard_ends()?.get(&shard).copied().ok_or_else(|| {
            Error::invalid(
                "SequenceNumber",
                format!("{sequence_number} is not of a shard of the group's stream"),
            )
        })?;
        let next = seq.offset().get().saturating_add(1);
        if next > end {
            return Err(Error::invalid(
                "SequenceNumber",
                format!("{sequence_number} is beyond the end of {}", shard_id(shard)),
            ));
        }
        self.commit(worker, shard, next, false)
    }

    /// Renews `worker`'s leases and takes more up to its fair share, as each round of a
    /// [`Worker`] does, and returns the shards it holds, each with a shard iterator after its
    /// checkpoint (without one: at the group's initial position, or for a shard created by
    /// resharding, at its beginning). For workers that read by themselves, such as workers in
    /// other processes reading through the server: they read from the iterator, checkpoint
    /// with [`ConsumerGroup::checkpoint`], and at a closed shard's end call
    /// [`ConsumerGroup::finish_shard`], which lets its children be leased.
    pub fn lease_shards(&self, worker: &str) -> Result<Vec<LeasedShard>> {
        let (stream, held) = self.lease_positions(worker)?;
        held.into_iter()
            .map(|(shard, from)| {
                Ok(LeasedShard {
                    iterator: stream
                        .iterator(shard, Start::At(SequenceNumber::new(shard.index(), from)))?,
                    shard_id: shard.to_string(),
                    index: shard.index(),
                })
            })
            .collect()
    }

    /// Renews `worker`'s leases and takes more up to its fair share; the stream, and the shards
    /// the worker holds with the offset to read each from (see [`ConsumerGroup::lease_shards`]).
    fn lease_positions(&self, worker: &str) -> Result<(Arc<Stream>, Vec<LeasedPosition>)> {
        let (held, described) = self.acquire_described(worker)?;
        let (stream_name, initial) = {
            let state = self.lock();
            (state.stream.clone(), state.initial_position)
        };
        let stream = self.store.stream(&stream_name)?;
        let mut leased = Vec::with_capacity(held.len());
        for index in held {
            let id = shard_id(index);
            let mut checkpoint = self.lock().shards.get(&index).and_then(|l| l.checkpoint);
            let has_parents = described
                .iter()
                .find(|s| s.shard_id == id)
                .is_some_and(|s| s.parent_shard_id.is_some());
            if checkpoint.is_none() && !has_parents && initial == InitialPosition::Latest {
                // Pin LATEST where the shard is first leased, so later reads do not skip.
                let end = stream.shard_ends()?.get(&index).copied().unwrap_or(0);
                match self.commit(worker, index, end, false) {
                    Ok(()) => checkpoint = Some(end),
                    Err(Error::LeaseLost { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let start = start_after(index, checkpoint, has_parents, initial);
            leased.push((ShardId(index), stream.resolve(ShardId(index), start)?));
        }
        Ok((stream, leased))
    }

    /// Marks `shard_id` processed to its end by `worker`, which holds its lease, so that its
    /// children can be leased. The shard must be closed, with nothing left to read after the
    /// checkpoint.
    pub fn finish_shard(&self, worker: &str, shard_id_text: &str) -> Result<()> {
        let index = ShardId::parse(shard_id_text)
            .map(ShardId::index)
            .ok_or_else(|| {
                Error::invalid("ShardId", format!("{shard_id_text:?} is not a shard id"))
            })?;
        let (stream_name, initial, checkpoint) = {
            let state = self.lock();
            let checkpoint = state.shards.get(&index).and_then(|l| l.checkpoint);
            (state.stream.clone(), state.initial_position, checkpoint)
        };
        let stream = self.store.stream(&stream_name)?;
        let has_parents = stream
            .describe()
            .shards
            .iter()
            .find(|s| s.shard_id == shard_id_text)
            .is_some_and(|s| s.parent_shard_id.is_some());
        let start = start_after(index, checkpoint, has_parents, initial);
        let shard = ShardId(index);
        let next = stream.read(shard, stream.resolve(shard, start)?, ReadLimits::records(1))?;
        if !next.records.is_empty() {
            return Err(Error::invalid(
                "ShardId",
                format!("{shard_id_text} has records after the checkpoint; process them first"),
            ));
        }
        if next.end.finished.is_none() {
            return Err(Error::invalid(
                "ShardId",
                format!("{shard_id_text} is open; only a closed shard ends"),
            ));
        }
        let end = stream.shard_ends()?.get(&index).copied().unwrap_or(0);
        self.commit(worker, index, end, true)
    }

    /// Gives up `worker`'s leases now (on shutdown) so that other workers take them at once.
    pub fn release(&self, worker: &str) -> Result<()> {
        let mut state = self.lock();
        let mut next = state.clone();
        for lease in next.shards.values_mut() {
            if lease.owner.as_deref() == Some(worker) {
                lease.owner = None;
                lease.expires_ms = 0;
                lease.handoff = None;
            }
        }
        next.workers.remove(worker);
        self.save(&mut state, next)
    }

    /// Workers, leases, checkpoints and lag per shard.
    pub fn describe(&self) -> Result<GroupDescription> {
        let file = self.lock().clone();
        let now = self.now();
        let stream = self.store.stream(&file.stream)?;
        let ends = stream.shard_ends()?;
        let mut shards = Vec::new();
        for (index, lease) in &file.shards {
            let end = ends.get(index).copied().unwrap_or(0);
            let position = lease.checkpoint.unwrap_or(0);
            let lag_records = if lease.finished {
                0
            } else {
                end.saturating_sub(position)
            };
            let lag_ms = if lag_records == 0 {
                0
            } else {
                let from = Offset::new(position);
                stream
                    .read(ShardId(*index), from, ReadLimits::records(1))?
                    .records
                    .first()
                    .map_or(0, |r| (now - r.approximate_arrival_ms).max(0))
            };
            let live = lease.owner.is_some() && lease.expires_ms > now;
            shards.push(ShardProgress {
                shard_id: shard_id(*index),
                owner: lease.owner.clone().filter(|_| live),
                lease_expires_ms: lease.expires_ms,
                checkpoint: lease
                    .checkpoint
                    .filter(|&c| c > 0)
                    .map(|c| SequenceNumber::new(*index, Offset::new(c - 1)).to_string()),
                finished: lease.finished,
                lag_records,
                lag_ms,
            });
        }
        Ok(GroupDescription {
            name: file.name,
            stream: file.stream,
            workers: file
                .workers
                .into_iter()
                .filter(|(_, seen)| seen.saturating_add(file.lease_ms) > now)
                .collect(),
            shards,
        })
    }

    /// A worker of this group called `id` (unique among the group's live workers).
    pub fn worker(self: &Arc<Self>, id: &str) -> Worker {
        Worker {
            group: Arc::clone(self),
            id: id.to_string(),
        }
    }
}

/// A shard a worker holds, with an iterator to read it from (see
/// [`ConsumerGroup::lease_shards`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedShard {
    /// Its id.
    pub shard_id: String,
    /// A shard iterator after the group's checkpoint (for `get_records`).
    pub iterator: String,
    index: u32,
}

/// A shard a worker holds, and the offset to read it from.
type LeasedPosition = (ShardId, Offset);

/// Where a group reads shard `index` from: after its checkpoint (the next offset), or without
/// one at the group's initial position; a shard with parents always from its beginning.
fn start_after(
    index: u32,
    checkpoint: Option<u64>,
    has_parents: bool,
    initial: InitialPosition,
) -> Start {
    match checkpoint {
        // The checkpoint is the next offset to read: the record there, whenever it comes.
        Some(n) => Start::At(SequenceNumber::new(index, Offset::new(n))),
        None if has_parents => Start::TrimHorizon,
        None => match initial {
            InitialPosition::TrimHorizon => Start::TrimHorizon,
            InitialPosition::Latest => Start::Latest,
            InitialPosition::AtTimestamp { ms } => Start::AtTimestamp(ms),
        },
    }
}

/// What one processing round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Shards the worker held this round.
    pub shards: Vec<String>,
    /// Records handed to the closure and checkpointed.
    pub records: u64,
    /// Batches the closure failed (they are retried next round).
    pub failed_batches: u64,
}

/// A worker of a consumer group: holds leases, reads its shards, runs the user's closure per
/// batch and checkpoints after each success.
#[derive(Debug)]
pub struct Worker {
    group: Arc<ConsumerGroup>,
    id: String,
}

/// How a worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessOptions {
    /// Records per batch (1 to 10,000; default 1,000).
    pub max_records: usize,
    /// Longest wait between rounds that found nothing to do (default 100 ms); while the worker
    /// holds leases, an append to the stream ends the wait at once.
    pub idle_wait: Duration,
}

impl Default for ProcessOptions {
    fn default() -> ProcessOptions {
        ProcessOptions {
            max_records: 1000,
            idle_wait: Duration::from_millis(100),
        }
    }
}

impl Worker {
    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// One round: renew and take leases, then for each held shard read one batch after its
    /// checkpoint, run `process` on it, and checkpoint after it succeeds. A shard closed and
    /// read to its end is marked finished, which lets its children be leased.
    pub fn process_round<F, E>(
        &self,
        options: &ProcessOptions,
        process: &mut F,
    ) -> Result<RoundReport>
    where
        F: FnMut(&str, &[StreamRecord]) -> std::result::Result<(), E>,
    {
        let (stream, leased) = self.group.lease_positions(&self.id)?;
        let mut report = RoundReport::default();
        let limits = ReadLimits::records(options.max_records.clamp(1, MAX_GET_RECORDS));
        for (shard, from) in leased {
            let index = shard.index();
            let shard_id = shard.to_string();
            report.shards.push(shard_id.clone());
            let out = stream.read(shard, from, limits)?;
            let outcome = match out.records.last() {
                Some(last) => {
                    if process(&shard_id, &out.records).is_err() {
                        report.failed_batches += 1;
                        continue;
                    }
                    report.records += out.records.len() as u64;
                    // A record read has an offset below the shard's end, so this cannot overflow.
                    let next = last.sequence_number.offset().get().saturating_add(1);
                    // A closed shard is finished only once a read past this batch is empty.
                    self.group.commit(&self.id, index, next, false)
                }
                None if out.end.finished.is_some() => {
                    self.group.commit(&self.id, index, out.end.next.get(), true)
                }
                None => Ok(()),
            };
            match outcome {
                Ok(()) => {}
                // Another worker has the shard now; it resumes after the last checkpoint.
                Err(Error::LeaseLost { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Runs rounds until `stop` is set, then lets the current batch finish and releases the
    /// worker's leases. Errors of a round (a storage error, say) end the run.
    pub fn run<F, E>(
        &self,
        options: &ProcessOptions,
        stop: &AtomicBool,
        mut process: F,
    ) -> Result<()>
    where
        F: FnMut(&str, &[StreamRecord]) -> std::result::Result<(), E>,
    {
        let stream_name = self.group.lock().stream.clone();
        let result = (|| {
            while !stop.load(Ordering::Acquire) {
                let stream = self.group.store.stream(&stream_name)?;
                let seen = stream.change_generation();
                let report = self.process_round(options, &mut process)?;
                if report.records == 0 {
                    if report.shards.is_empty() {
                        // Nothing leased: appends are other workers' business.
                        std::thread::sleep(options.idle_wait);
                    } else {
                        // Caught up: the next append (or the idle wait, for lease renewal and
                        // rebalancing) starts the next round.
                        stream.wait_for_change(seen, options.idle_wait);
                    }
                }
            }
            Ok(())
        })();
        let released = self.group.release(&self.id);
        result.and(released)
    }

    /// Gives up this worker's leases now (what `run` does when stopped).
    pub fn release(&self) -> Result<()> {
        self.group.release(&self.id)
    }
}

/// How a registered consumer's subscription to a shard reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Where to start.
    pub start: IteratorStart,
    /// Data bytes a second the subscription may deliver (Kinesis enhanced fan-out: 2 MiB/s per
    /// consumer and shard); `None` for no limit. Measured on the store's clock.
    pub max_bytes_per_sec: Option<u64>,
    /// How often a subscription whose byte budget is spent looks again (default 100 ms). A
    /// caught-up subscription does not poll: an append to the stream wakes it.
    pub poll: Duration,
}

impl SubscribeOptions {
    /// From `start`, with Kinesis's 2 MiB/s.
    pub fn new(start: IteratorStart) -> SubscribeOptions {
        SubscribeOptions {
            start,
            max_bytes_per_sec: Some(2 * 1024 * 1024),
            poll: Duration::from_millis(100),
        }
    }
}

/// What a subscription delivers (Kinesis SubscribeToShardEvent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    /// Records, in order (none for a heartbeat).
    pub records: Vec<StreamRecord>,
    /// Resume after this sequence number (AFTER_SEQUENCE_NUMBER) to continue where this event
    /// ends: the last record delivered, or before any, the position before the start.
    pub continuation_sequence_number: String,
    /// How far behind the newest record of the shard the subscription is, ms.
    pub millis_behind_latest: i64,
    /// At a closed shard's end: the shards to continue with. The subscription ends after.
    pub child_shards: Vec<crate::ChildShard>,
}

/// A registered consumer's push-style subscription to one shard (Kinesis SubscribeToShard):
/// records as they are appended, from any iterator position, within a throughput budget. Reads
/// through the stream's typed core (its own budget stands in for GetRecords' limits).
pub struct ShardSubscription {
    store: Arc<Store>,
    stream: String,
    shard: ShardId,
    /// Where the next read starts; `None` once a closed shard was delivered to its end.
    next: Option<Offset>,
    continuation: SequenceNumber,
    options: SubscribeOptions,
    /// Bytes the budget still allows, and when it was last refilled (store clock, ms).
    budget: (f64, i64),
}

impl std::fmt::Debug for ShardSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSubscription")
            .field("shard", &self.shard)
            .field("continuation", &self.continuation)
            .finish()
    }
}

impl ShardSubscription {
    /// Subscribes `consumer` (registered on `stream`) to `shard_id`.
    pub fn open(
        store: Arc<Store>,
        stream: &str,
        consumer: &str,
        shard_id_text: &str,
        options: SubscribeOptions,
    ) -> Result<ShardSubscription> {
        let s = store.stream(stream)?;
        if !s.describe().consumers.iter().any(|c| c.name == consumer) {
            return Err(Error::ResourceNotFound {
                kind: "consumer",
                name: consumer.to_string(),
            });
        }
        let shard = s.shard_by_id(shard_id_text)?;
        let from = s.resolve(shard, s.typed_start(shard_id_text, &options.start)?)?;
        let now = store.options().shard.clock.now_ms();
        let capacity = options
            .max_bytes_per_sec
            .map_or(f64::INFINITY, |b| b as f64);
        Ok(ShardSubscription {
            store,
            stream: stream.to_string(),
            shard,
            next: Some(from),
            continuation: SequenceNumber::new(
                shard.index(),
                Offset::new(from.get().saturating_sub(1)),
            ),
            options,
            budget: (capacity, now),
        })
    }

    /// Whether the byte budget is spent, so that records waiting are held back until it refills:
    /// such a subscription looks again after [`SubscribeOptions::poll`], as no append will
    /// wake it.
    pub fn throttled(&self) -> bool {
        self.options.max_bytes_per_sec.is_some() && self.budget.0 <= 0.0
    }

    /// The poll interval of a throttled subscription.
    pub fn poll(&self) -> Duration {
        self.options.poll
    }

    /// The next event: records that arrived (as many as the budget allows), or after `wait`
    /// without any, an empty heartbeat. `None` once a closed shard was delivered to its end
    /// (the event before carried its child shards).
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<SubscriptionEvent>> {
        let Some(from) = self.next else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let stream = self.store.stream(&self.stream)?;
        loop {
            // Taken before the read, so an append after it ends the wait below at once.
            let seen = stream.change_generation();
            let clock_now = self.store.options().shard.clock.now_ms();
            if let Some(rate) = self.options.max_bytes_per_sec {
                let (left, at) = self.budget;
                let refill = (clock_now - at).max(0) as f64 / 1000.0 * rate as f64;
                self.budget = ((left + refill).min(rate as f64), clock_now);
            }
            if self.budget.0 > 0.0 {
                let mut read = stream.read(self.shard, from, ReadLimits::default())?;
                // Within the budget: cut the batch, and continue after its last record.
                let mut bytes = 0.0;
                let keep = read
                    .records
                    .iter()
                    .take_while(|r| {
                        let fits = bytes < self.budget.0;
                        bytes += r.data.len() as f64;
                        fits
                    })
                    .count();
                let cut = keep < read.records.len();
                read.records.truncate(keep);
                self.budget.0 -= read
                    .records
                    .iter()
                    .map(|r| r.data.len() as f64)
                    .sum::<f64>();
                if let Some(last) = read.records.last() {
                    self.continuation = last.sequence_number;
                }
                let children = if cut { None } else { read.end.finished };
                let ended = children.is_some();
                self.next = if cut {
                    self.continuation.offset().checked_next()
                } else if ended {
                    None
                } else {
                    Some(read.end.next)
                };
                if !read.records.is_empty() || ended || started.elapsed() >= wait {
                    return Ok(Some(SubscriptionEvent {
                        records: read.records,
                        continuation_sequence_number: self.continuation.to_string(),
                        millis_behind_latest: read.end.millis_behind_latest,
                        child_shards: children.unwrap_or_default(),
                    }));
                }
                // Caught up: sleep until the stream changes (or the wait is over).
                stream.wait_for_change(seen, wait.saturating_sub(started.elapsed()));
                continue;
            } else if started.elapsed() >= wait {
                return Ok(Some(SubscriptionEvent {
                    records: Vec::new(),
                    continuation_sequence_number: self.continuation.to_string(),
                    millis_behind_latest: 0,
                    child_shards: Vec::new(),
                }));
            }
            // The budget is spent: it refills with the clock, which wakes nobody.
            std::thread::sleep(
                self.options
                    .poll
                    .min(wait.saturating_sub(started.elapsed())),
            );
        }
    }
}
