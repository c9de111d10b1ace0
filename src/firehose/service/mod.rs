//! Delivery streams kept in a store's data directory, delivered by a background worker: what
//! Firehose's CreateDeliveryStream, DescribeDeliveryStream, ListDeliveryStreams,
//! UpdateDestination and DeleteDeliveryStream do.
//!
//! ```text
//! DATA_DIR/firehose/NAME/delivery.json    name, version, creation time, config, destination
//! DATA_DIR/firehose/NAME/checkpoint.json  the delivery checkpoint (see `delivery`)
//! DATA_DIR/firehose/NAME/buffer/          the buffer's shard log
//! ```
//! `NAME` is written as [`crate::names::disk_name`] writes it (a leading `.` escaped). Creation
//! and deletion go through `.creating-` / `.deleting-` staging directories renamed atomically,
//! as streams do, so a crash leaves a delivery stream whole or gone.
//!
//! `files` reads and writes `delivery.json` (and all of a delivery stream's files, offline);
//! `destinations` says where objects go.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{check_name, DeliveryConfig};
use super::delivery::{
    pin_source_at_latest, DeliveryStats, DeliveryStream, DeliveryStreamSpec, Source, SourceStart,
    Transform,
};
use super::destination::Destination;
use crate::error::{Error, Result, Unreadable, UnreadableSet};
use crate::io::{self, sync_dir};
use crate::names::{self, disk_name, Listed};
use crate::shutdown::Shutdown;
use crate::{FlushPolicy, ShardOptions, Store};

mod destinations;
mod files;

pub use destinations::{check_bucket_name, Buckets, DestinationConfig, OBJECTS_DIR};
pub use files::{
    read_delivery_stream, DeliveryStreamFiles, DELIVERY_FILE, DELIVERY_FORMAT_VERSION,
};
use files::{read_record, write_record, DeliveryRecord};

/// Directory of delivery streams in a data directory.
pub const FIREHOSE_DIR: &str = "firehose";

/// Longest wait between delivery attempts of a stream whose destination keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Most tags a delivery stream may have (Firehose: 50).
const MAX_TAGS: usize = 50;

/// How to create a delivery stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStreamConfig {
    /// Buffering, compression, prefixes, delimiter.
    pub delivery: DeliveryConfig,
    /// Where objects go.
    pub destination: DestinationConfig,
    /// Name of a registered transform, if records are to be transformed.
    pub transform: Option<String>,
    /// A stream of the store to read instead of taking puts (Firehose's
    /// `KinesisStreamAsSource`): every shard, parents before children.
    pub source_stream: Option<String>,
    /// Where reading `source_stream` starts: by default, like Firehose, at the records put after
    /// the delivery stream is created.
    pub source_start: SourceStart,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Settings shardlog keeps and describes but does not act on, by their Firehose API names
    /// (`RoleARN`, `BucketARN`, `CloudWatchLoggingOptions`, encryption, ...): what the wire API
    /// was given, so that describe returns it.
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// How the delivery service runs.
#[derive(Clone)]
pub struct FirehoseOptions {
    /// Transforms delivery streams may name. A stream naming one that is not here holds its
    /// records (its delivery reports the error) until it is registered.
    pub transforms: HashMap<String, Arc<dyn Transform>>,
    /// How often the background worker looks for due batches (`None`: never by itself; call
    /// [`Firehose::deliver_due`]). Default: every second.
    pub delivery_interval: Option<Duration>,
    /// Flush policy of the buffers: a put returns once its record is stored this way.
    /// Default `Always`, so an acknowledged put survives a machine crash.
    pub buffer_flush: FlushPolicy,
    /// Where [`DestinationConfig::Bucket`] destinations deliver (default: `DATA_DIR/objects/`).
    pub buckets: Buckets,
}

impl Default for FirehoseOptions {
    fn default() -> Self {
        FirehoseOptions {
            transforms: HashMap::new(),
            delivery_interval: Some(Duration::from_secs(1)),
            buffer_flush: FlushPolicy::Always,
            buckets: Buckets::default(),
        }
    }
}

impl std::fmt::Debug for FirehoseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirehoseOptions")
            .field("transforms", &self.transforms.keys().collect::<Vec<_>>())
            .field("delivery_interval", &self.delivery_interval)
            .field("buffer_flush", &self.buffer_flush)
            .field("buckets", &self.buckets)
            .finish()
    }
}

/// A delivery stream as describe shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryStreamDescription {
    /// Its name.
    pub name: String,
    /// Always `ACTIVE` (creation and deletion are immediate).
    pub status: &'static str,
    /// Configuration version: 1, then one more per update (Firehose's VersionId).
    pub version: u64,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
    /// Its delivery configuration.
    pub config: DeliveryConfig,
    /// Where objects go.
    pub destination: DestinationConfig,
    /// The registered transform it uses.
    pub transform: Option<String>,
    /// The stream it reads, if it is not direct put.
    pub source_stream: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Stored settings (see [`DeliveryStreamConfig::settings`]).
    pub settings: BTreeMap<String, serde_json::Value>,
    /// When the configuration, tags or settings last changed, ms since the Unix epoch.
    pub updated_ms: Option<i64>,
    /// Records waiting for delivery (see [`DeliveryStream::backlog`]).
    pub backlog: u64,
    /// The delivery checkpoint: every buffered record below this offset is delivered.
    pub delivered: u64,
    /// Delivery statistics since the store opened.
    pub stats: DeliveryStats,
}

struct Entry {
    record: DeliveryRecord,
    stream: Arc<DeliveryStream>,
    /// When the worker may try again after a failed delivery, and the last wait.
    backoff: Mutex<Option<(Instant, Duration)>>,
}

struct Inner {
    dir: PathBuf,
    store: Arc<Store>,
    options: FirehoseOptions,
    streams: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// Delivery streams whose files could not be read at open: listed, refused with the damage
    /// on every call, deletable.
    damaged: UnreadableSet,
    admin: Mutex<()>,
    shutdown: Shutdown,
}

/// The delivery streams of a store, with their background delivery. Holds the store open.
pub struct Firehose {
    inner: Arc<Inner>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Firehose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firehose")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

fn not_found(name: &str) -> Error {
    Error::ResourceNotFound {
        kind: "delivery stream",
        name: name.to_string(),
    }
}

impl Firehose {
    /// Opens the delivery streams of `store` (creating `firehose/` if needed) and starts the
    /// background worker.
    pub fn open(store: Arc<Store>, options: FirehoseOptions) -> Result<Firehose> {
        let dir = store.dir().join(FIREHOSE_DIR);
        io::create_dir_all(&dir)?;
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            store,
            options,
            streams: RwLock::new(BTreeMap::new()),
            damaged: UnreadableSet::default(),
            admin: Mutex::new(()),
            shutdown: Shutdown::default(),
        });
        let mut streams = BTreeMap::new();
        for listed in names::list_dir(&dir, check_name, names::recorded_name(DELIVERY_FILE))? {
            match listed {
                Listed::User(name, path) => {
                    match read_record(&path).and_then(|record| inner.open_entry(&path, record)) {
                        Ok(entry) => {
                            streams.insert(name, Arc::new(entry));
                        }
                        // One damaged delivery stream costs itself, not the service.
                        Err(e) => {
                            tracing::error!(delivery_stream = %name, error = %e, "delivery stream unavailable: its files do not read");
                            let damage = Unreadable::new(&path.join(DELIVERY_FILE), &e);
                            inner.damaged.insert(name, damage);
                        }
                    }
                }
                Listed::Leftover(path) => io::remove_dir_all("remove leftover", &path)?,
            }
        }
        *inner.streams.write().unwrap_or_else(|e| e.into_inner()) = streams;
        let worker = match inner.options.delivery_interval {
            Some(interval) => {
                let weak = Arc::downgrade(&inner);
                let spawned = std::thread::Builder::new()
                    .name("shardlog-firehose".into())
                    .spawn(move || worker_loop(weak, interval));
                Some(spawned.map_err(Error::io_at("start delivery thread", &dir))?)
            }
            None => None,
        };
        Ok(Firehose { inner, worker })
    }

    /// Creates a delivery stream ([`Error::ResourceInUse`] if the name is taken).
    pub fn create_delivery_stream(
        &self,
        name: &str,
        config: DeliveryStreamConfig,
    ) -> Result<Arc<DeliveryStream>> {
        check_name(name)?;
        config.delivery.validate()?;
        self.inner.open_destination(&config.destination)?;
        if let Some(stream) = &config.source_stream {
            self.inner.store.stream(stream)?;
        }
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        if self.streams().contains_key(name) || self.damaged(name).is_some() {
            return Err(Error::ResourceInUse {
                kind: "delivery stream",
                name: name.to_string(),
                reason: "a delivery stream of that name exists".into(),
            });
        }
        let record = DeliveryRecord {
            format_version: DELIVERY_FORMAT_VERSION,
            name: name.to_string(),
            created_ms: self.inner.store.options().shard.clock.now_ms(),
            version: 1,
            config: config.delivery,
            destination: config.destination,
            transform: config.transform,
            source_stream: config.source_stream,
            tags: config.tags,
            settings: config.settings,
            updated_ms: None,
        };
        let staging = names::staging_path(&self.inner.dir, name);
        // A leftover of a crashed create of the same name (open removes them too).
        io::remove_dir_all("remove leftover", &staging)?;
        io::create_dir_all(&staging)?;
        let staged = write_record(&staging, &record).and_then(|()| {
            match (&record.source_stream, config.source_start) {
                // Inside the staging directory, so the delivery stream appears positioned.
                (Some(stream), SourceStart::Latest) => {
                    pin_source_at_latest(&self.inner.store, &staging, name, stream)
                }
                _ => Ok(()),
            }
        });
        if let Err(e) = staged {
            // Best effort: a leftover staging directory is also removed on the next open.
            let _ = io::remove_dir_all("remove staging directory", &staging);
            return Err(e);
        }
        let path = self.inner.dir.join(disk_name(name));
        io::rename("create delivery stream", &staging, &path)?;
        sync_dir(&self.inner.dir)?;
        let entry = Arc::new(self.inner.open_entry(&path, record)?);
        let stream = Arc::clone(&entry.stream);
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), entry);
        Ok(stream)
    }

    /// The delivery stream `name`.
    pub fn delivery_stream(&self, name: &str) -> Result<Arc<DeliveryStream>> {
        self.entry(name).map(|e| Arc::clone(&e.stream))
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>> {
        if let Some(entry) = self.streams().get(name) {
            return Ok(Arc::clone(entry));
        }
        Err(match self.damaged(name) {
            Some(damage) => damage.error(),
            None => not_found(name),
        })
    }

    fn damaged(&self, name: &str) -> Option<Unreadable> {
        self.inner.damaged.get(name)
    }

    fn streams(&self) -> BTreeMap<String, Arc<Entry>> {
        self.inner
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Names of the delivery streams, sorted (damaged ones included: they can be deleted).
    pub fn list_delivery_streams(&self) -> Vec<String> {
        let names: Vec<String> = self.streams().keys().cloned().collect();
        self.inner.damaged.listed_with(names)
    }

    /// Describes a delivery stream: configuration, version, backlog, checkpoint, statistics.
    pub fn describe_delivery_stream(&self, name: &str) -> Result<DeliveryStreamDescription> {
        let entry = self.entry(name)?;
        let record = &entry.record;
        Ok(DeliveryStreamDescription {
            name: record.name.clone(),
            status: "ACTIVE",
            version: entry.stream.version(),
            created_ms: record.created_ms,
            config: entry.stream.config(),
            destination: record.destination.clone(),
            transform: record.transform.clone(),
            source_stream: record.source_stream.clone(),
            tags: record.tags.clone(),
            settings: record.settings.clone(),
            updated_ms: record.updated_ms,
            backlog: entry.stream.backlog(),
            delivered: entry.stream.delivered(),
            stats: entry.stream.stats(),
        })
    }

    /// Changes how a delivery stream delivers (Firehose UpdateDestination): `current_version`
    /// must be its version ([`Error::ConcurrentModification`] otherwise); the version goes up by
    /// one. Batches cut from now on use the new configuration.
    pub fn update_delivery_stream(
        &self,
        name: &str,
        current_version: u64,
        delivery: DeliveryConfig,
        destination: DestinationConfig,
    ) -> Result<u64> {
        self.update_delivery_stream_settings(name, current_version, delivery, destination, None)
    }

    /// [`Firehose::update_delivery_stream`] that also replaces the stored settings (when
    /// `settings` is given), in the same write.
    pub fn update_delivery_stream_settings(
        &self,
        name: &str,
        current_version: u64,
        delivery: DeliveryConfig,
        destination: DestinationConfig,
        settings: Option<BTreeMap<String, serde_json::Value>>,
    ) -> Result<u64> {
        delivery.validate()?;
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let entry = self.entry(name)?;
        let version = entry.stream.version();
        if version != current_version {
            return Err(Error::ConcurrentModification {
                kind: "delivery stream",
                name: name.to_string(),
                given: current_version,
                current: version,
            });
        }
        let record = DeliveryRecord {
            version: version + 1,
            config: delivery.clone(),
            destination: destination.clone(),
            settings: settings.unwrap_or_else(|| entry.record.settings.clone()),
            updated_ms: Some(self.inner.store.options().shard.clock.now_ms()),
            ..entry.record.clone()
        };
        let dir = self.inner.dir.join(disk_name(name));
        entry.stream.update(
            record.version,
            delivery,
            self.inner.open_destination(&destination)?,
            || write_record(&dir, &record),
        )?;
        self.inner.replace_record(name, &entry, record);
        Ok(version + 1)
    }

    /// Adds or replaces tags (at most 50 in all, as Firehose).
    pub fn tag_delivery_stream(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        self.modify_record(name, |record| {
            let mut all = record.tags.clone();
            all.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            if all.len() > MAX_TAGS {
                return Err(Error::LimitExceeded {
                    reason: format!(
                        "delivery stream {name} would have {} tags; the limit is {MAX_TAGS}",
                        all.len()
                    ),
                });
            }
            record.tags = all;
            Ok(())
        })
    }

    /// Removes tags (missing keys are ignored).
    pub fn untag_delivery_stream(&self, name: &str, keys: &[String]) -> Result<()> {
        self.modify_record(name, |record| {
            for key in keys {
                record.tags.remove(key);
            }
            Ok(())
        })
    }

    /// Changes the stored settings (see [`DeliveryStreamConfig::settings`]).
    pub fn modify_settings(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, serde_json::Value>),
    ) -> Result<()> {
        self.modify_record(name, |record| {
            change(&mut record.settings);
            Ok(())
        })
    }

    /// Applies `change` to a delivery stream's record and writes it durably.
    fn modify_record(
        &self,
        name: &str,
        change: impl FnOnce(&mut DeliveryRecord) -> Result<()>,
    ) -> Result<()> {
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let entry = self.entry(name)?;
        let mut record = entry.record.clone();
        change(&mut record)?;
        record.updated_ms = Some(self.inner.store.options().shard.clock.now_ms());
        write_record(&self.inner.dir.join(disk_name(name)), &record)?;
        self.inner.replace_record(name, &entry, record);
        Ok(())
    }

    /// Deletes a delivery stream and its undelivered records.
    pub fn delete_delivery_stream(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        if self.damaged(name).is_some() {
            let path = self.inner.dir.join(disk_name(name));
            let doomed = names::trash_path(&self.inner.dir, name, 0);
            io::rename("delete delivery stream", &path, &doomed)?;
            self.inner.damaged.remove(name);
            sync_dir(&self.inner.dir)?;
            return io::remove_dir_all("remove", &doomed);
        }
        let entry = self.entry(name)?;
        let path = self.inner.dir.join(disk_name(name));
        let doomed = names::trash_path(&self.inner.dir, name, entry.record.created_ms);
        // Out of the way on disk first: if that fails, the stream stays as it was.
        io::rename("delete delivery stream", &path, &doomed)?;
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        drop(entry);
        sync_dir(&self.inner.dir)?;
        io::remove_dir_all("remove", &doomed)
    }

    /// Delivers every batch that is due, in every delivery stream (what the worker does each
    /// interval). Returns the first error, after trying every stream.
    pub fn deliver_due(&self) -> Result<u64> {
        self.inner.deliver_all(false)
    }

    /// Delivers everything buffered in every delivery stream, whatever the hints.
    pub fn flush(&self) -> Result<u64> {
        self.inner.deliver_all(true)
    }
}

impl Inner {
    fn open_destination(&self, destination: &DestinationConfig) -> Result<Arc<dyn Destination>> {
        destination.open(&self.options.buckets, self.store.dir())
    }

    /// Puts `record` in place of `entry`'s (same delivery stream, its backoff reset).
    fn replace_record(&self, name: &str, entry: &Entry, record: DeliveryRecord) {
        let updated = Arc::new(Entry {
            record,
            stream: Arc::clone(&entry.stream),
            backoff: Mutex::new(None),
        });
        self.streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), updated);
    }

    fn open_entry(&self, path: &Path, record: DeliveryRecord) -> Result<Entry> {
        let (transform, paused) = match &record.transform {
            None => (None, None),
            Some(name) => match self.options.transforms.get(name) {
                Some(t) => (Some(Arc::clone(t)), None),
                None => (
                    None,
                    Some(format!(
                        "transform {name:?} is not registered in this process"
                    )),
                ),
            },
        };
        let store_shard = &self.store.options().shard;
        let spec = DeliveryStreamSpec {
            name: record.name.clone(),
            version: record.version,
            config: record.config.clone(),
            destination: self.open_destination(&record.destination)?,
            transform,
            buffer: ShardOptions {
                flush: self.options.buffer_flush,
                clock: Arc::clone(&store_shard.clock),
                segment_bytes: store_shard.segment_bytes,
                ..ShardOptions::default()
            },
            paused,
            source: match &record.source_stream {
                None => Source::DirectPut,
                Some(stream) => Source::KinesisStream {
                    store: Arc::clone(&self.store),
                    stream: stream.clone(),
                },
            },
        };
        let stream = DeliveryStream::open_in_locked_dir(path.to_path_buf(), spec)?;
        Ok(Entry {
            record,
            stream: Arc::new(stream),
            backoff: Mutex::new(None),
        })
    }

    /// The delivery streams open now, so deliveries run without holding the map.
    fn entries(&self) -> Vec<Arc<Entry>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn deliver_all(&self, force: bool) -> Result<u64> {
        let entries = self.entries();
        let mut batches = 0;
        let mut first_error = None;
        for entry in entries {
            let result = if force {
                entry.stream.flush()
            } else {
                entry.stream.deliver_due()
            };
            match result {
                Ok(report) => batches += report.batches,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(batches),
        }
    }
}

/// Delivers due batches every `interval`; a stream whose delivery fails waits, doubling, up to
/// [`MAX_BACKOFF`], then tries again (its records stay buffered: nothing is skipped).
fn worker_loop(inner: Weak<Inner>, interval: Duration) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.shutdown.wait(interval) {
            return;
        }
        for entry in strong.entries() {
            let mut backoff = entry.backoff.lock().unwrap_or_else(|e| e.into_inner());
            if backoff.is_some_and(|(until, _)| Instant::now() < until) {
                continue;
            }
            *backoff = match entry.stream.deliver_due() {
                Ok(_) => None,
                Err(_) => {
                    let wait = backoff.map_or(interval, |(_, last)| (last * 2).min(MAX_BACKOFF));
                    Some((Instant::now() + wait, wait))
                }
            };
        }
    }
}

impl Drop for Firehose {
    fn drop(&mut self) {
        self.inner.shutdown.signal();
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
        // Deliver what the hints allow now; the rest stays buffered for the next open.
        let _ = self.inner.deliver_all(false);
    }
}
