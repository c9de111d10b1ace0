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
//!
//! This file holds the group and its file (open, load, save, commit, checkpoint, describe);
//! `lease` decides who holds which shard, `worker` runs in-process workers, `subscription`
//! pushes a shard to a registered consumer, and `file` reads group files offline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash_key::{shard_id, ShardId};
use crate::io::{self, sync_dir};
use crate::names;
use crate::stream::{check_resource_name, ShardDescription};
use crate::{Offset, ReadLimits, SequenceNumber, Store};

mod file;
mod lease;
mod subscription;
mod worker;
pub use file::{group_file_paths, read_group_file, read_group_files, GroupFiles, GroupShardFiles};
pub use lease::LeasedShard;
pub use subscription::{ShardSubscription, SubscribeOptions, SubscriptionEvent};
pub use worker::{ProcessOptions, RoundReport, Worker};

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
    pub shard_id: ShardId,
    /// The worker holding its lease, if the lease is live.
    pub owner: Option<String>,
    /// When the lease expires (ms since the Unix epoch).
    pub lease_expires_ms: i64,
    /// The sequence number of the last record checkpointed, if any.
    pub checkpoint: Option<SequenceNumber>,
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
    let present: BTreeSet<u32> = shards.iter().map(|s| s.shard_id.index()).collect();
    file.shards.retain(|index, _| present.contains(index));
    for index in present {
        file.shards.entry(index).or_default();
    }
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
    pub fn checkpoint(&self, worker: &str, sequence_number: SequenceNumber) -> Result<()> {
        let seq = sequence_number;
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
                shard_id: ShardId(*index),
                owner: lease.owner.clone().filter(|_| live),
                lease_expires_ms: lease.expires_ms,
                checkpoint: lease
                    .checkpoint
                    .filter(|&c| c > 0)
                    .map(|c| SequenceNumber::new(*index, Offset::new(c - 1))),
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
}
