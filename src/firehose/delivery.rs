//! A direct-put delivery stream: records are buffered in the stream's own shard log (so they
//! survive a crash), cut into batches by the buffering hints, optionally transformed, compressed
//! and written as objects, exactly once.
//!
//! Exactly once: before a batch's objects are written, the batch (its offsets and object keys) is
//! recorded in the checkpoint file as pending; after the destination reports them durable, the
//! checkpoint moves past the batch. After a crash a pending batch is delivered again as recorded,
//! under the same keys and (the codecs being deterministic) with the same bytes, so objects are
//! replaced, never duplicated, and no record is skipped.
//!
//! A delivery stream reading a Kinesis stream keeps its per-shard positions as a consumer group
//! (`source-group.json`, one worker holding every lease): the group decides which shards may
//! be read (parents before children) and records how far each is delivered; the checkpoint file
//! keeps only the pending batch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::codec::ObjectEncoder;
use super::config::{
    check_name, DeliveryConfig, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_RECORD_BYTES,
};
use super::destination::Destination;
use super::naming::{error_object_key, object_key, NameParts};
use crate::consumer::{ConsumerGroup, GroupConfig, InitialPosition, ShardCommit};
use crate::error::{Error, Result};
use crate::io;
use crate::sequence::SequenceNumber;
use crate::{NewRecord, Offset, ReadLimits, Record, Shard, ShardOptions};

/// File of the delivery checkpoint in a delivery stream's directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// File of a stream source's consumer group (its per-shard delivery positions).
pub const SOURCE_GROUP_FILE: &str = "source-group.json";
/// The one worker of a stream source's group.
const SOURCE_WORKER: &str = "firehose";
/// The source group's lease: the delivery stream is its only worker (the store's lock admits
/// one process), so the lease only has to outlast any delivery pass.
const SOURCE_LEASE: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
/// Subdirectory holding the buffer's shard log.
pub const BUFFER_DIR: &str = "buffer";
/// The partition key every buffered record carries (the buffer is one shard; keys do not route).
const BUFFER_KEY: &[u8] = b"f";
/// Firehose's error output type for records a transform failed.
pub const PROCESSING_FAILED: &str = "processing-failed";

/// What a transform did with one record (Firehose's Lambda contract: `Ok`, `Dropped`,
/// `ProcessingFailed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// Deliver these bytes instead.
    Ok(Vec<u8>),
    /// Deliver nothing for this record (on purpose).
    Dropped,
    /// The record could not be processed: it goes to the error output, with this reason.
    ProcessingFailed(String),
}

/// A record transformation hook. It gets a batch of (record id, data) and returns one result per
/// record, in order. It should be deterministic: a batch delivered again after a crash is
/// transformed again.
pub trait Transform: Send + Sync {
    /// Transforms a batch.
    fn transform(&self, records: &[(String, &[u8])]) -> Vec<Transformed>;
}

impl<F> Transform for F
where
    F: Fn(&[(String, &[u8])]) -> Vec<Transformed> + Send + Sync,
{
    fn transform(&self, records: &[(String, &[u8])]) -> Vec<Transformed> {
        self(records)
    }
}

/// A batch whose objects may be (partly) written but whose delivery is not yet recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// For a Kinesis-stream source: the index of the shard the batch comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    pub from: u64,
    pub to: u64,
    pub key: String,
    pub error_key: String,
}

/// Version of `checkpoint.json`. Files without a `format_version` (written before it was
/// added) are version 1, which they match.
const CHECKPOINT_VERSION: u16 = 1;

/// The durable delivery position (`checkpoint.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    #[serde(default = "first_checkpoint_version")]
    pub format_version: u16,
    /// Every buffered record below this offset is delivered.
    pub delivered: u64,
    pub pending: Option<Pending>,
    /// For a Kinesis-stream source: per shard index, the offset below which it is delivered.
    /// Kept in the source group (saved there first); read from checkpoint files written before
    /// the group existed, which the group then adopts.
    #[serde(default, skip_serializing)]
    pub shards: BTreeMap<u32, u64>,
    /// For a Kinesis-stream source: closed shards delivered to their end. Like `shards`.
    #[serde(default, skip_serializing)]
    pub finished: BTreeSet<u32>,
}

/// Nothing delivered yet.
impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            format_version: CHECKPOINT_VERSION,
            delivered: 0,
            pending: None,
            shards: BTreeMap::new(),
            finished: BTreeSet::new(),
        }
    }
}

fn first_checkpoint_version() -> u16 {
    1
}

/// Reads a delivery stream's checkpoint (none yet: nothing delivered).
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let Some(checkpoint) = io::read_json::<Checkpoint>(&path)? else {
        return Ok(Checkpoint::default());
    };
    io::check_version(&path, checkpoint.format_version, 1, CHECKPOINT_VERSION)?;
    Ok(checkpoint)
}

/// Delivery statistics, for describe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStats {
    /// Records written into objects.
    pub records_delivered: u64,
    /// Bytes of records (after transformation, before compression) written into objects.
    pub bytes_delivered: u64,
    /// Objects written (error objects included).
    pub objects_written: u64,
    /// Records a transform dropped.
    pub records_dropped: u64,
    /// Records sent to the error output.
    pub records_failed: u64,
    /// When the last batch was delivered, ms since the Unix epoch.
    pub last_delivery_ms: Option<i64>,
    /// The last delivery error, until a delivery succeeds.
    pub last_error: Option<String>,
}

/// Why one record of a put_record_batch was refused: it is larger than Firehose takes (1,000
/// KiB). The server reports it as `InvalidArgumentException`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutFailure {
    /// What was wrong.
    pub message: String,
}

/// The delivery position, held for a whole delivery pass.
struct State {
    checkpoint: Checkpoint,
}

/// What describe reads, updated after each batch so that it never waits for a delivery pass.
#[derive(Default)]
struct Progress {
    stats: DeliveryStats,
    /// The last saved checkpoint.
    checkpoint: Checkpoint,
}

impl Progress {
    fn record(&mut self, batch: &Batch, checkpoint: &Checkpoint, now_ms: i64) {
        let stats = &mut self.stats;
        stats.records_delivered += batch.counts.delivered;
        stats.bytes_delivered += batch.counts.bytes;
        stats.records_dropped += batch.counts.dropped;
        stats.records_failed += batch.counts.failed;
        stats.objects_written += batch.objects.len() as u64;
        stats.last_delivery_ms = Some(now_ms);
        stats.last_error = None;
        self.checkpoint.clone_from(checkpoint);
    }
}

/// A batch cut and encoded: its pending record and its objects, ready to write.
struct Batch {
    pending: Pending,
    /// (key, bytes): the error output first, then the records.
    objects: Vec<(String, Vec<u8>)>,
    counts: BatchCounts,
}

#[derive(Debug, Clone, Copy, Default)]
struct BatchCounts {
    delivered: u64,
    bytes: u64,
    dropped: u64,
    failed: u64,
}

impl Batch {
    /// Puts the batch's objects; returns once all are durable.
    fn write(&self, destination: &dyn Destination) -> Result<()> {
        for (key, bytes) in &self.objects {
            destination.put(key, bytes)?;
        }
        Ok(())
    }
}

/// What can change by an update: applies to batches cut after it.
#[derive(Clone)]
struct Setup {
    version: u64,
    config: DeliveryConfig,
    destination: Arc<dyn Destination>,
    transform: Option<Arc<dyn Transform>>,
    paused: Option<String>,
}

/// A direct-put delivery stream. `Send + Sync`.
pub struct DeliveryStream {
    name: String,
    dir: PathBuf,
    source: Source,
    setup: std::sync::RwLock<Setup>,
    buffer: Shard,
    state: Mutex<State>,
    progress: Mutex<Progress>,
    /// A stream source's consumer group, once opened (it cannot be while the stream is gone).
    source_group: Mutex<Option<Arc<ConsumerGroup>>>,
}

impl std::fmt::Debug for DeliveryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryStream")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("version", &self.setup().version)
            .finish()
    }
}

/// What a delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Batches delivered.
    pub batches: u64,
    /// Keys of the objects written.
    pub keys: Vec<String>,
}

/// Where a delivery stream reading a Kinesis stream starts, when it is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceStart {
    /// Records put after the delivery stream is created, as Firehose does.
    #[default]
    Latest,
    /// Every record still in the stream.
    TrimHorizon,
}

/// The consumer-group configuration of a stream source.
fn source_group_config(stream: &str) -> GroupConfig {
    GroupConfig {
        stream: stream.to_string(),
        initial_position: InitialPosition::TrimHorizon,
        lease_duration: SOURCE_LEASE,
    }
}

/// Creates the source group of a delivery stream being created in `dir`, positioned at every
/// shard's end (`SourceStart::Latest`): records put from now on are delivered.
pub(crate) fn pin_source_at_latest(
    store: &Arc<crate::Store>,
    dir: &Path,
    name: &str,
    stream: &str,
) -> Result<()> {
    let group = ConsumerGroup::open_at(
        Arc::clone(store),
        dir.join(SOURCE_GROUP_FILE),
        name,
        source_group_config(stream),
    )?;
    let ends = store.stream(stream)?.shard_ends()?;
    group.adopt(&ends, &BTreeSet::new())
}

/// Where a delivery stream's records come from.
#[derive(Clone, Default)]
pub enum Source {
    /// Put by the caller (`put_record`, `put_record_batch`) into the stream's own buffer.
    #[default]
    DirectPut,
    /// Read from every shard of a stream of `store`, parents before children.
    KinesisStream {
        /// The store holding the stream.
        store: Arc<crate::Store>,
        /// The stream's name.
        stream: String,
    },
}

/// How to open a delivery stream.
pub struct DeliveryStreamSpec {
    /// Its name.
    pub name: String,
    /// Its configuration version (1, then one more per update): part of object names.
    pub version: u64,
    /// How it delivers.
    pub config: DeliveryConfig,
    /// Where objects go.
    pub destination: Arc<dyn Destination>,
    /// An optional transformation.
    pub transform: Option<Arc<dyn Transform>>,
    /// Options of the buffer's shard log (flush policy, clock, segment size). Its largest
    /// record is raised to Firehose's 1,000 KiB.
    pub buffer: ShardOptions,
    /// If set, delivery is refused with this reason (records stay buffered): for example a
    /// configured transform that is not registered.
    pub paused: Option<String>,
    /// Where records come from.
    pub source: Source,
}

impl DeliveryStream {
    /// Opens (creating if needed) the delivery stream in `dir`, recovering its buffer and
    /// checkpoint. A batch left pending by a crash is delivered by the next delivery pass.
    pub fn open(dir: impl AsRef<Path>, spec: DeliveryStreamSpec) -> Result<DeliveryStream> {
        let dir = dir.as_ref().to_path_buf();
        io::create_dir_all(&dir)?;
        let buffer = Shard::open(dir.join(BUFFER_DIR), Self::buffer_options(&spec))?;
        Self::with_buffer(dir, spec, buffer)
    }

    /// Opens a delivery stream inside a directory whose writer lock the caller holds (a store's).
    pub(crate) fn open_in_locked_dir(
        dir: PathBuf,
        spec: DeliveryStreamSpec,
    ) -> Result<DeliveryStream> {
        let buffer = Shard::open_in_locked_dir(dir.join(BUFFER_DIR), Self::buffer_options(&spec))?;
        Self::with_buffer(dir, spec, buffer)
    }

    fn buffer_options(spec: &DeliveryStreamSpec) -> ShardOptions {
        ShardOptions {
            max_record_bytes: MAX_RECORD_BYTES + BUFFER_KEY.len(),
            ..spec.buffer.clone()
        }
    }

    fn with_buffer(
        dir: PathBuf,
        spec: DeliveryStreamSpec,
        buffer: Shard,
    ) -> Result<DeliveryStream> {
        check_name(&spec.name)?;
        spec.config.validate()?;
        let checkpoint = read_checkpoint(&dir)?;
        if let Some(pending) = &checkpoint.pending {
            // A crash while writing the batch's objects may have left temporary files beside
            // them; the batch itself is written again by the next pass.
            for key in [&pending.key, &pending.error_key] {
                if key.is_empty() {
                    continue;
                }
                if let Err(e) = spec.destination.remove_leftovers(key) {
                    tracing::warn!(delivery_stream = %spec.name, key = %key, error = %e, "could not remove a leftover of an interrupted delivery");
                }
            }
        }
        let stream = DeliveryStream {
            name: spec.name,
            dir,
            source: spec.source,
            setup: std::sync::RwLock::new(Setup {
                version: spec.version,
                config: spec.config,
                destination: spec.destination,
                transform: spec.transform,
                paused: spec.paused,
            }),
            buffer,
            progress: Mutex::new(Progress {
                stats: DeliveryStats::default(),
                checkpoint: checkpoint.clone(),
            }),
            state: Mutex::new(State { checkpoint }),
            source_group: Mutex::new(None),
        };
        // A source stream that is gone (or unreadable) is reported by delivery, not here: the
        // delivery stream still opens, describes and can be deleted.
        let _ = stream.source_group();
        Ok(stream)
    }

    /// A stream source's consumer group, opened (and created) on first use; `None` for direct
    /// put. Positions of a checkpoint file written before the group existed are adopted.
    fn source_group(&self) -> Result<Option<Arc<ConsumerGroup>>> {
        let Source::KinesisStream { store, stream } = &self.source else {
            return Ok(None);
        };
        let mut slot = self.source_group.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = slot.as_ref() {
            return Ok(Some(Arc::clone(group)));
        }
        let group = ConsumerGroup::open_at(
            Arc::clone(store),
            self.dir.join(SOURCE_GROUP_FILE),
            &self.name,
            source_group_config(stream),
        )?;
        let legacy = read_checkpoint(&self.dir)?;
        if !legacy.shards.is_empty() || !legacy.finished.is_empty() {
            // Idempotent (checkpoints only move forward), so a crash before the checkpoint file
            // is rewritten without these fields just adopts them again.
            group.adopt(&legacy.shards, &legacy.finished)?;
        }
        *slot = Some(Arc::clone(&group));
        Ok(Some(group))
    }

    fn setup(&self) -> Setup {
        self.setup.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies a new configuration (and version) to batches cut from now on. A batch already
    /// pending is delivered first, as it was cut; then `persist` records the new configuration
    /// durably; if either fails, nothing changes.
    pub(crate) fn update(
        &self,
        version: u64,
        config: DeliveryConfig,
        destination: Arc<dyn Destination>,
        persist: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        config.validate()?;
        let mut state = self.lock();
        self.run(&mut state, &self.setup(), None)?;
        persist()?;
        let mut setup = self.setup.write().unwrap_or_else(|e| e.into_inner());
        setup.version = version;
        setup.config = config;
        setup.destination = destination;
        Ok(())
    }

    /// The configuration version.
    pub fn version(&self) -> u64 {
        self.setup().version
    }

    /// Where objects go, as the destination describes itself.
    pub fn destination(&self) -> String {
        self.setup().destination.describe()
    }

    /// Every buffered record below this offset is delivered.
    pub fn delivered(&self) -> u64 {
        self.progress().checkpoint.delivered
    }

    /// The delivery stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> DeliveryConfig {
        self.setup().config
    }

    /// Records waiting for delivery: buffered and not yet delivered, or for a stream source,
    /// in the stream's shards past the delivery checkpoint (0 if the stream is gone).
    pub fn backlog(&self) -> u64 {
        match &self.source {
            Source::DirectPut => self
                .buffer
                .next_offset()
                .get()
                .saturating_sub(self.progress().checkpoint.delivered),
            Source::KinesisStream { store, stream } => {
                let Ok(Some(group)) = self.source_group() else {
                    return 0;
                };
                let positions = group.positions();
                store
                    .stream(stream)
                    .and_then(|s| s.shard_ends())
                    .map_or(0, |ends| {
                        ends.iter()
                            .map(|(index, end)| match positions.get(index) {
                                Some((_, true)) => 0,
                                Some((next, false)) => end.saturating_sub(next.unwrap_or(0)),
                                None => *end,
                            })
                            .sum()
                    })
            }
        }
    }

    /// Delivery statistics since the stream was opened.
    pub fn stats(&self) -> DeliveryStats {
        self.progress().stats.clone()
    }

    fn check_direct(&self) -> Result<()> {
        match &self.source {
            Source::DirectPut => Ok(()),
            Source::KinesisStream { stream, .. } => Err(Error::invalid(
                "DeliveryStreamName",
                format!(
                    "{} reads the stream {stream} (KinesisStreamAsSource): records cannot be put into it",
                    self.name
                ),
            )),
        }
    }

    /// The delivery lock, held for a whole delivery pass.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Buffers one record (up to 1,000 KiB); returns its record id once it is stored as the
    /// buffer's flush policy promises.
    pub fn put_record(&self, data: &[u8]) -> Result<String> {
        self.check_direct()?;
        check_record(data).map_err(|reason| Error::invalid("Record.Data", reason))?;
        let appended = self.buffer.append(&[NewRecord {
            partition_key: BUFFER_KEY,
            explicit_hash_key: None,
            data,
        }])?;
        Ok(record_id(appended.first))
    }

    /// Buffers up to 500 records (4 MiB in all), all or none stored; returns a result per record.
    /// Records that break a per-record rule fail alone; the others are stored.
    pub fn put_record_batch(
        &self,
        records: &[&[u8]],
    ) -> Result<Vec<std::result::Result<String, PutFailure>>> {
        self.check_direct()?;
        if records.is_empty() || records.len() > MAX_BATCH_RECORDS {
            return Err(Error::invalid(
                "Records",
                format!(
                    "{} records; a batch holds 1 to {MAX_BATCH_RECORDS}",
                    records.len()
                ),
            ));
        }
        let total: usize = records.iter().map(|r| r.len()).sum();
        if total > MAX_BATCH_BYTES {
            return Err(Error::invalid(
                "Records",
                format!("{total} bytes; a batch holds at most {MAX_BATCH_BYTES}"),
            ));
        }
        let checks: Vec<std::result::Result<(), String>> =
            records.iter().map(|r| check_record(r)).collect();
        let good: Vec<NewRecord<'_>> = records
            .iter()
            .zip(&checks)
            .filter(|(_, c)| c.is_ok())
            .map(|(data, _)| NewRecord {
                partition_key: BUFFER_KEY,
                explicit_hash_key: None,
                data,
            })
            .collect();
        let mut next = if good.is_empty() {
            Offset::new(0)
        } else {
            self.buffer.append(&good)?.first
        };
        Ok(checks
            .into_iter()
            .map(|c| match c {
                Ok(()) => {
                    let id = record_id(next);
                    next = next.next();
                    Ok(id)
                }
                Err(reason) => Err(PutFailure { message: reason }),
            })
            .collect())
    }

    /// Delivers every batch that is due now: one whose size reached the size hint, or whose
    /// oldest record has waited the interval hint. Also finishes a batch a crash left pending.
    pub fn deliver_due(&self) -> Result<DeliveryReport> {
        self.deliver(false)
    }

    /// Delivers everything buffered now, whatever the hints (for shutdown and tests).
    pub fn flush(&self) -> Result<DeliveryReport> {
        self.deliver(true)
    }

    fn deliver(&self, force: bool) -> Result<DeliveryReport> {
        let mut state = self.lock();
        let setup = self.setup();
        if let Some(reason) = &setup.paused {
            self.progress().stats.last_error = Some(reason.clone());
            return Err(Error::invalid("ProcessingConfiguration", reason.clone()));
        }
        self.run(&mut state, &setup, Some(force))
    }

    /// Delivers a batch a crash or failed write left pending, then (with `cut: Some(force)`)
    /// every batch due. While one batch's objects are written and synced, the next is cut and
    /// encoded (a pipeline of two). The checkpoint records a batch as pending before any of its
    /// objects is written and as delivered only after they are durable; one write records both
    /// a batch's delivery and the next batch's cut.
    fn run(&self, state: &mut State, setup: &Setup, cut: Option<bool>) -> Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        // A pass that delivers a closed shard to its end lets the next one read its children.
        while self.run_pass(state, setup, cut, &mut report)? {}
        Ok(report)
    }

    /// One delivery pass (see [`Self::run`]); says whether it finished shards of a stream
    /// source, whose children another pass may now read.
    fn run_pass(
        &self,
        state: &mut State,
        setup: &Setup,
        cut: Option<bool>,
        report: &mut DeliveryReport,
    ) -> Result<bool> {
        let mut position = state.checkpoint.clone();
        let readable = self.sync_source(&mut position)?;
        let finished_before = position.finished.len();
        let mut current = match position.pending.clone() {
            Some(p) => {
                let records = self.read_pending(&p)?;
                Some(self.encode(p, &records, setup)?)
            }
            None => match cut {
                Some(force) => self.cut_next(&mut position, &readable, force, setup)?,
                None => None,
            },
        };
        while let Some(batch) = current.take() {
            if position.pending.as_ref() != Some(&batch.pending) {
                position.pending = Some(batch.pending.clone());
                self.save(&position)?;
                state.checkpoint = position.clone();
            }
            let mut after = position.clone();
            after.pending = None;
            match batch.pending.shard {
                Some(shard) => {
                    after.shards.insert(shard, batch.pending.to);
                }
                None => after.delivered = batch.pending.to,
            }
            let (written, next) = std::thread::scope(|scope| {
                let writer = scope.spawn(|| batch.write(&*setup.destination));
                let next = match cut {
                    Some(force) => self.cut_next(&mut after, &readable, force, setup),
                    None => Ok(None),
                };
                let written = writer
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (written, next)
            });
            if let Err(e) = written {
                self.progress().stats.last_error = Some(e.to_string());
                return Err(e);
            }
            // The next batch, if cut, is recorded as pending with this one's delivery.
            let (next, cut_failed) = match next {
                Ok(next) => (next, None),
                Err(e) => (None, Some(e)),
            };
            after.pending = next.as_ref().map(|b| b.pending.clone());
            self.save(&after)?;
            state.checkpoint = after.clone();
            position = after;
            self.progress()
                .record(&batch, &position, self.buffer.options().clock.now_ms());
            // The buffer's delivered segments are no longer needed. A failure here only keeps
            // them longer.
            if batch.pending.shard.is_none() {
                let _ = self.buffer.delete_below(Offset::new(batch.pending.to));
            }
            report.batches += 1;
            report
                .keys
                .extend(batch.objects.into_iter().map(|(key, _)| key));
            if let Some(e) = cut_failed {
                return Err(e);
            }
            current = next;
        }
        // Closed shards a cut found delivered to their end.
        let finished_more = position.finished.len() > finished_before;
        if position != state.checkpoint {
            self.save(&position)?;
            state.checkpoint = position;
        }
        Ok(cut.is_some() && finished_more)
    }

    /// For a stream source: renews the source group's leases, loads its positions into
    /// `position`, and forgets a pending batch the group already records as delivered (a crash
    /// between the group's write and the checkpoint's). Returns the shards that may be read
    /// now: those whose parents are delivered to their end, in index order.
    fn sync_source(&self, position: &mut Checkpoint) -> Result<Vec<u32>> {
        let Some(group) = self.source_group()? else {
            return Ok(Vec::new());
        };
        let readable = group.acquire(SOURCE_WORKER)?;
        position.shards.clear();
        position.finished.clear();
        for (index, (next, finished)) in group.positions() {
            if let Some(next) = next {
                position.shards.insert(index, next);
            }
            if finished {
                position.finished.insert(index);
            }
        }
        let delivered = position.pending.as_ref().is_some_and(|p| {
            p.shard
                .and_then(|shard| position.shards.get(&shard))
                .is_some_and(|&next| next >= p.to)
        });
        if delivered {
            position.pending = None;
        }
        Ok(readable)
    }

    /// The next due batch of a Kinesis-stream source: from the first of the `readable` shards
    /// (see [`Self::sync_source`]) with a due batch. Closed shards read to their end are marked
    /// finished in `position` on the way (saved with it).
    fn cut_stream(
        &self,
        store: &crate::Store,
        stream_name: &str,
        readable: &[u32],
        position: &mut Checkpoint,
        force: bool,
        setup: &Setup,
    ) -> Result<Option<Batch>> {
        let hints = setup.config.buffering;
        let now = self.buffer.options().clock.now_ms();
        for &index in readable {
            if position.finished.contains(&index) {
                continue;
            }
            let from = position.shards.get(&index).copied().unwrap_or(0);
            let (records, at_end) =
                read_stream(store, stream_name, index, from, None, hints.size_bytes())?;
            let Some(first) = records.first() else {
                if at_end {
                    position.finished.insert(index);
                    position.shards.entry(index).or_insert(from);
                }
                continue;
            };
            let bytes: usize = records.iter().map(|r| r.data.len()).sum();
            let due = force
                || bytes >= hints.size_bytes()
                || now.saturating_sub(first.arrival_ms) >= hints.interval_ms();
            if !due {
                continue;
            }
            let to = records.last().map_or(from, |r| r.offset.get() + 1);
            let batch_id = format!("{}:{stream_name}:{index}:{from}-{to}", self.name);
            let pending =
                self.pending(Some(index), from, to, first.arrival_ms, &batch_id, setup)?;
            return self.encode(pending, &records, setup).map(Some);
        }
        Ok(None)
    }

    /// The next due batch of the source after `position`, encoded.
    fn cut_next(
        &self,
        position: &mut Checkpoint,
        readable: &[u32],
        force: bool,
        setup: &Setup,
    ) -> Result<Option<Batch>> {
        match &self.source {
            Source::DirectPut => self.cut(position.delivered, force, setup),
            Source::KinesisStream { store, stream } => {
                self.cut_stream(store, stream, readable, position, force, setup)
            }
        }
    }

    /// The next batch from `from`, if one is due: records up to the size hint, cut when the
    /// size is reached, the oldest record has waited the interval, or `force`.
    fn cut(&self, from: u64, force: bool, setup: &Setup) -> Result<Option<Batch>> {
        let end = self.buffer.next_offset().get();
        if from >= end {
            return Ok(None);
        }
        let hints = setup.config.buffering;
        let limit = hints.size_bytes();
        let (mut to, mut bytes, mut records) = (from, 0usize, Vec::new());
        while to < end && bytes < limit {
            let batch = self.buffer.read(
                Offset::new(to),
                ReadLimits {
                    max_records: 10_000,
                    max_bytes: limit - bytes,
                },
            )?;
            if batch.records.is_empty() {
                break;
            }
            for r in batch.records {
                bytes += r.data.len();
                to = r.offset.get() + 1;
                records.push(r);
                if bytes >= limit {
                    break;
                }
            }
        }
        let Some(first_arrival) = records.first().map(|r| r.arrival_ms) else {
            return Ok(None);
        };
        let now = self.buffer.options().clock.now_ms();
        let due =
            force || bytes >= limit || now.saturating_sub(first_arrival) >= hints.interval_ms();
        if !due {
            return Ok(None);
        }
        let batch_id = format!("{}:{from}-{to}", self.name);
        let pending = self.pending(None, from, to, first_arrival, &batch_id, setup)?;
        self.encode(pending, &records, setup).map(Some)
    }

    /// A batch of offsets `from..to` (of `shard`, for a stream source) with its object keys,
    /// which derive from `batch_id` and the first record's arrival time only.
    fn pending(
        &self,
        shard: Option<u32>,
        from: u64,
        to: u64,
        first_arrival: i64,
        batch_id: &str,
        setup: &Setup,
    ) -> Result<Pending> {
        let parts = NameParts {
            stream: &self.name,
            version: setup.version,
            time_ms: first_arrival,
            batch_id: batch_id.as_bytes(),
            compression: setup.config.compression,
        };
        let invalid = |e: super::naming::PrefixError| Error::invalid("Prefix", e.to_string());
        Ok(Pending {
            shard,
            from,
            to,
            key: object_key(setup.config.prefix.as_deref(), &parts).map_err(invalid)?,
            error_key: error_object_key(
                setup.config.error_output_prefix.as_deref(),
                PROCESSING_FAILED,
                &parts,
            )
            .map_err(invalid)?,
        })
    }

    /// Transforms and encodes a batch's records into its objects (error output first).
    fn encode(&self, p: Pending, records: &[Record], setup: &Setup) -> Result<Batch> {
        let first_arrival = records.first().map_or(0, |r| r.arrival_ms);
        // Without a transform every record is delivered as it is: no ids, no copies.
        let ids: Vec<(String, &[u8])> = match &setup.transform {
            None => Vec::new(),
            Some(_) => records
                .iter()
                .map(|r| (record_id(r.offset), &r.data[..]))
                .collect(),
        };
        let results: Vec<Transformed> = match &setup.transform {
            None => Vec::new(),
            Some(t) => {
                let out = t.transform(&ids);
                if out.len() == ids.len() {
                    out
                } else {
                    let reason = format!(
                        "the transform returned {} results for {} records",
                        out.len(),
                        ids.len()
                    );
                    vec![Transformed::ProcessingFailed(reason); ids.len()]
                }
            }
        };
        let entry_name = p.key.rsplit('/').next().unwrap_or(&p.key);
        let entry_name = entry_name
            .strip_suffix(setup.config.compression.extension())
            .unwrap_or(entry_name);
        let io = |e: std::io::Error| Error::io("encode object", &self.dir, e);
        let mut main =
            ObjectEncoder::new(setup.config.compression, entry_name, first_arrival).map_err(io)?;
        let mut errors =
            ObjectEncoder::new(setup.config.compression, entry_name, first_arrival).map_err(io)?;
        let (mut delivered, mut bytes, mut dropped, mut failed) = (0u64, 0u64, 0u64, 0u64);
        let now = self.buffer.options().clock.now_ms();
        let delimiter = setup.config.record_delimiter.as_deref();
        let mut deliver = |data: &[u8]| -> Result<()> {
            main.write(data).map_err(io)?;
            if let Some(d) = delimiter {
                main.write(d).map_err(io)?;
            }
            delivered += 1;
            bytes += data.len() as u64;
            Ok(())
        };
        if setup.transform.is_none() {
            for record in records {
                deliver(&record.data)?;
            }
        }
        for (((id, raw), record), result) in ids.iter().zip(records).zip(&results) {
            match result {
                Transformed::Ok(data) => deliver(&data[..])?,
                Transformed::Dropped => dropped += 1,
                Transformed::ProcessingFailed(reason) => {
                    let line = serde_json::json!({
                        "attemptsMade": 1,
                        "arrivalTimestamp": record.arrival_ms,
                        "errorCode": "Lambda.ProcessingFailed",
                        "errorMessage": reason,
                        "attemptEndingTimestamp": now,
                        "rawData": base64::engine::general_purpose::STANDARD.encode(raw),
                        "recordId": id,
                    });
                    errors.write(line.to_string().as_bytes()).map_err(io)?;
                    errors.write(b"\n").map_err(io)?;
                    failed += 1;
                }
            }
        }
        let mut objects = Vec::new();
        if failed > 0 {
            objects.push((p.error_key.clone(), errors.finish().map_err(io)?));
        }
        if delivered > 0 {
            objects.push((p.key.clone(), main.finish().map_err(io)?));
        }
        Ok(Batch {
            pending: p,
            objects,
            counts: BatchCounts {
                delivered,
                bytes,
                dropped,
                failed,
            },
        })
    }

    /// The records of a pending batch, read back from its source.
    fn read_pending(&self, p: &Pending) -> Result<Vec<Record>> {
        match (&self.source, p.shard) {
            (Source::KinesisStream { store, stream }, Some(shard)) => {
                Ok(read_stream(store, stream, shard, p.from, Some(p.to), usize::MAX)?.0)
            }
            _ => self.read_range(p.from, p.to),
        }
    }

    fn read_range(&self, from: u64, to: u64) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut cursor = Offset::new(from);
        while cursor.get() < to {
            let batch = self.buffer.read(
                cursor,
                ReadLimits {
                    max_records: (to - cursor.get()).min(10_000) as usize,
                    ..ReadLimits::default()
                },
            )?;
            if batch.records.is_empty() {
                return Err(Error::corrupt(
                    &self.dir.join(BUFFER_DIR),
                    0,
                    format!("buffered records {cursor}..{to} of a pending batch are missing"),
                ));
            }
            cursor = batch.next_offset;
            out.extend(batch.records.into_iter().filter(|r| r.offset.get() < to));
        }
        Ok(out)
    }

    /// Saves `checkpoint`: for a stream source, the shards' positions into the source group
    /// first (so a pending batch the group records as delivered is known to be), then the
    /// checkpoint file.
    fn save(&self, checkpoint: &Checkpoint) -> Result<()> {
        if let Some(group) = self.source_group()? {
            let saved = group.positions();
            let commits: Vec<ShardCommit> = checkpoint
                .shards
                .iter()
                .map(|(&shard, &next_offset)| ShardCommit {
                    shard,
                    next_offset,
                    finished: checkpoint.finished.contains(&shard),
                })
                .filter(|c| saved.get(&c.shard) != Some(&(Some(c.next_offset), c.finished)))
                .collect();
            if !commits.is_empty() {
                group.commit_all(SOURCE_WORKER, &commits)?;
            }
        }
        io::write_json(&self.dir, CHECKPOINT_FILE, checkpoint)
    }
}

/// Reads shard `index` of a stream from offset `from`: up to `max_bytes` of data (at least one
/// record), or exactly the records below `to` when given. Also says whether the shard is closed
/// and read to its end. Through the stream's typed read core: no iterator tokens, no GetRecords
/// throttling, explicit hash keys kept.
fn read_stream(
    store: &crate::Store,
    stream_name: &str,
    index: u32,
    from: u64,
    to: Option<u64>,
    max_bytes: usize,
) -> Result<(Vec<Record>, bool)> {
    let stream = store.stream(stream_name)?;
    let shard = crate::hash_key::ShardId(index);
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    let mut next = Offset::new(from);
    loop {
        let limits = ReadLimits {
            max_records: 10_000,
            max_bytes: crate::stream::MAX_GET_RECORDS_BYTES,
        };
        let read = stream.read(shard, next, limits)?;
        if read.records.is_empty() {
            return Ok((out, read.end.finished.is_some()));
        }
        for r in read.records {
            let offset = r.sequence_number.offset();
            if to.is_some_and(|t| offset.get() >= t) {
                return Ok((out, false));
            }
            bytes += r.data.len();
            out.push(Record {
                offset,
                arrival_ms: r.approximate_arrival_ms,
                explicit_hash_key: r.explicit_hash_key,
                partition_key: bytes::Bytes::from(r.partition_key.into_bytes()),
                data: r.data,
            });
            if to.is_none() && bytes >= max_bytes {
                return Ok((out, false));
            }
        }
        if read.end.finished.is_some() {
            return Ok((out, true));
        }
        next = read.end.next;
    }
}

fn check_record(data: &[u8]) -> std::result::Result<(), String> {
    if data.len() > MAX_RECORD_BYTES {
        Err(format!(
            "{} bytes is over the record limit of {MAX_RECORD_BYTES}",
            data.len()
        ))
    } else {
        Ok(())
    }
}

/// A record's id: its position in the buffer, as a 39-digit number like a sequence number.
fn record_id(offset: Offset) -> String {
    SequenceNumber::new(0, offset).to_string()
}
