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
//!
//! This file holds the delivery stream and its delivery loop; `checkpoint` the checkpoint file,
//! `batch` cutting and encoding batches, `source` a stream as the source, `transform` the hook.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::config::{
    check_name, DeliveryConfig, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_RECORD_BYTES,
};
use super::destination::Destination;
use crate::consumer::{ConsumerGroup, ShardCommit};
use crate::error::{Error, Result};
use crate::io;
use crate::sequence::SequenceNumber;
use crate::{NewRecord, Offset, Shard, ShardOptions};

mod batch;
mod checkpoint;
mod source;
mod transform;

use batch::Batch;
pub(crate) use checkpoint::read_checkpoint;
use checkpoint::Checkpoint;
pub(crate) use source::pin_source_at_latest;
use source::SOURCE_WORKER;
pub use source::{Source, SourceStart};
pub use transform::{Transform, Transformed};

/// File of the delivery checkpoint in a delivery stream's directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// File of a stream source's consumer group (its per-shard delivery positions).
pub const SOURCE_GROUP_FILE: &str = "source-group.json";

/// Subdirectory holding the buffer's shard log.
pub const BUFFER_DIR: &str = "buffer";

/// The partition key every buffered record carries (the buffer is one shard; keys do not route).
const BUFFER_KEY: &[u8] = b"f";

/// Firehose's error output type for records a transform failed.
pub const PROCESSING_FAILED: &str = "processing-failed";

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
            // The buffer's delivered segments are no longer needed. Deleting them may seal the
            // active segment, and a failed seal poisons the buffer (puts are refused until the
            // delivery stream is reopened), so a failure is reported, not swallowed (found by
            // the `store` fuzz target), once the batch is recorded as delivered.
            let cleanup_failed = match batch.pending.shard {
                None => self
                    .buffer
                    .delete_below(Offset::new(batch.pending.to))
                    .err(),
                Some(_) => None,
            };
            report.batches += 1;
            report
                .keys
                .extend(batch.objects.into_iter().map(|(key, _)| key));
            if let Some(e) = cut_failed.or(cleanup_failed) {
                self.progress().stats.last_error = Some(e.to_string());
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
