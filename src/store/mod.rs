//! The store: a data directory holding streams, owned by one process, with a background thread
//! that enforces retention.
//!
//! ```text
//! DATA_DIR/
//!   LOCK                                   the writer lock (flock), held while the store is open
//!   streams/NAME/stream.json               the stream's manifest
//!   streams/NAME/shards/shardId-000000000000/   that shard's segments (created on first write)
//! ```
//! A stream's directory is its name as [`crate::names::disk_name`] writes it (a leading `.`
//! escaped), so no stream name can collide with the store's own entries. A stream is created in
//! `streams/.creating-NAME` and renamed into place once its manifest is durable; it is deleted
//! by renaming it to `streams/.deleting-NAME-*` first. Either rename is atomic, so a crash
//! leaves the stream fully there or fully gone, and opening removes leftovers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result, Unreadable, UnreadableSet};
use crate::hash_key::HashKeyRange;
use crate::io::{self, sync_dir};
use crate::iterator::{IteratorKey, IteratorToken};
use crate::log::lock::DirLock;
use crate::log::remote::{Tier, TierConfig};
use crate::log::shard::ShardOptions;
use crate::manifest::{
    ShardEntry, StreamManifest, StreamMode, StreamTiering, MANIFEST_FILE, MANIFEST_VERSION,
};
use crate::names::{self, Listed};
use crate::shutdown::Shutdown;
use crate::stream::{
    check_retention, check_stream_name, GetRecordsOutput, OpenShards, Stream, StreamContext,
};

/// How a store runs. `StoreOptions::default()` suits most uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How shards store records (segment size, flush policy, clock). `max_record_bytes` is set per
    /// stream.
    pub shard: ShardOptions,
    /// How often the background thread runs: it deletes expired data, splits the hot shards of
    /// on-demand streams and closes idle shards. `None`: there is no background thread, and
    /// none of the three happens by itself (call [`Store::enforce_retention`],
    /// [`Store::autoscale`] and [`Store::close_idle_shards`]). Default: every minute.
    pub retention_interval: Option<Duration>,
    /// How long a shard iterator stays valid (Kinesis: 5 minutes).
    pub iterator_ttl: Duration,
    /// Most open shards one stream may have (Kinesis's default account quota is lower; an
    /// embedded store can afford more).
    pub max_open_shards_per_stream: u32,
    /// Whether streams enforce Kinesis's per-shard throughput limits (writes 1 MiB/s or 1,000
    /// records/s, reads 2 MiB/s and 5 calls/s) unless a stream says otherwise. Off by default:
    /// an embedded store has no reason to slow itself down.
    pub throughput_limits: bool,
    /// The window over which an on-demand stream measures each shard's write rate; a shard that
    /// wrote faster than a shard's limit over it is split by the background thread.
    pub on_demand_window: Duration,
    /// Shards unused this long are closed by the background thread (their maps and file
    /// descriptors released), so a store of many idle shards holds few resources.
    pub idle_shard_timeout: Duration,
    /// Most shards open at once over all streams (each holds a few file descriptors and
    /// maps); past it the least recently used idle ones are closed, to reopen on their next
    /// use. `None` (the default): a quarter of the open-files limit (`RLIMIT_NOFILE`) at open.
    pub max_open_shard_handles: Option<usize>,
    /// Tiered storage: sealed segments copied to an object store by a background thread, and
    /// read from it once their local copies are past the local retention (see
    /// [`crate::log::remote`]). `None` (the default): everything stays local.
    pub tier: Option<TierConfig>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            shard: ShardOptions::default(),
            retention_interval: Some(Duration::from_secs(60)),
            iterator_ttl: Duration::from_secs(300),
            max_open_shards_per_stream: 20_000,
            throughput_limits: false,
            on_demand_window: Duration::from_secs(60),
            idle_shard_timeout: Duration::from_secs(300),
            max_open_shard_handles: None,
            tier: None,
        }
    }
}

/// How to create a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Provisioned (a fixed number of shards, changed by resharding) or on-demand (shards split
    /// as the write rate demands).
    pub mode: StreamMode,
    /// Shards the stream starts with (for an on-demand stream, [`ON_DEMAND_INITIAL_SHARDS`]
    /// unless set otherwise).
    pub shard_count: u32,
    /// Retention in hours, 24 to 8,760 (default 24).
    pub retention_hours: u32,
    /// Largest record, data + partition key: 1 MiB to 10 MiB (default 1 MiB).
    pub max_record_bytes: usize,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Its own tiering in a tiered store (`None`: the store's, [`StoreOptions::tier`]).
    pub tiering: Option<StreamTiering>,
}

impl StreamConfig {
    /// A provisioned stream with `shard_count` shards and default settings.
    pub fn provisioned(shard_count: u32) -> StreamConfig {
        StreamConfig {
            mode: StreamMode::Provisioned,
            shard_count,
            retention_hours: 24,
            max_record_bytes: 1024 * 1024,
            tags: BTreeMap::new(),
            tiering: None,
        }
    }

    /// An on-demand stream with default settings ([`ON_DEMAND_INITIAL_SHARDS`] shards to start).
    pub fn on_demand() -> StreamConfig {
        StreamConfig {
            mode: StreamMode::OnDemand,
            ..StreamConfig::provisioned(ON_DEMAND_INITIAL_SHARDS)
        }
    }
}

/// Shards an on-demand stream starts with.
pub const ON_DEMAND_INITIAL_SHARDS: u32 = 4;
const STREAMS_DIR: &str = "streams";

mod tier;
use tier::{tiering_loop, TieringState};
pub use tier::{StoreTierStatus, DELETED_MARKER, TIER_CACHE_DIR, TIER_DELETIONS_FILE};
/// Store-wide settings kept for the wire API (account settings), by their API names.
pub const SETTINGS_FILE: &str = "settings.json";

/// Reads `settings.json` of a data directory (empty if there is none).
pub(crate) fn read_settings(dir: &Path) -> Result<BTreeMap<String, serde_json::Value>> {
    Ok(io::read_json(&dir.join(SETTINGS_FILE))?.unwrap_or_default())
}

struct Inner {
    dir: PathBuf,
    options: StoreOptions,
    context: StreamContext,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Streams whose manifest could not be read at open: listed, refused with the damage on
    /// every call, deletable.
    damaged: UnreadableSet,
    /// Serializes create and delete, which work on the directory as well as the map.
    admin: Mutex<()>,
    shutdown: Shutdown,
    /// `settings.json`: store-wide settings kept for the wire API (unavailable if damaged).
    settings: Mutex<std::result::Result<BTreeMap<String, serde_json::Value>, Unreadable>>,
    /// What the tiering thread last saw.
    tiering: Mutex<TieringState>,
    _lock: DirLock,
}

/// A data directory of streams. `Send + Sync`: share it across threads by reference or `Arc`.
pub struct Store {
    inner: Arc<Inner>,
    compactor: Option<JoinHandle<()>>,
    tierer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// A quarter of the soft open-files limit (at least 64): room for the shards' descriptors
/// beside everything else a process opens.
fn default_open_shard_handles() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let files = limit.current.unwrap_or(1 << 20).min(1 << 22) as usize;
    (files / 4).max(64)
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Records deleted.
    pub records: u64,
}

impl Store {
    /// Opens (creating if needed) the data directory `dir`. Fails with [`Error::Locked`] if
    /// another store has it open. Streams' shards are opened only when first used, so opening
    /// costs one manifest read per stream.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        let streams_dir = dir.join(STREAMS_DIR);
        io::create_dir_all(&streams_dir)?;
        let lock = DirLock::acquire(&dir)?;
        let tier = match &options.tier {
            Some(config) => Some(Arc::new(Tier::new(
                Arc::clone(&config.bucket),
                config.options.clone(),
                dir.join(TIER_CACHE_DIR),
            )?)),
            None => None,
        };
        let context = StreamContext {
            tier,
            clock: Arc::clone(&options.shard.clock),
            shard_options: options.shard.clone(),
            iterator_ttl: options.iterator_ttl,
            max_open_shards: options.max_open_shards_per_stream,
            throughput_limits: options.throughput_limits,
            on_demand_window: options.on_demand_window,
            iterator_key: Arc::new(IteratorKey::load_or_create(&dir)?),
            open_shards: Arc::new(OpenShards::new(
                options
                    .max_open_shard_handles
                    .unwrap_or_else(default_open_shard_handles),
            )),
        };
        let mut streams = BTreeMap::new();
        let damaged = UnreadableSet::default();
        let listed = names::list_dir(
            &streams_dir,
            check_stream_name,
            names::recorded_name(MANIFEST_FILE),
        )?;
        for entry in listed {
            match entry {
                Listed::User(name, path) => match Stream::open(path.clone(), context.clone()) {
                    Ok(stream) => {
                        streams.insert(name, Arc::new(stream));
                    }
                    // One damaged manifest costs its stream, not the store.
                    Err(e) => {
                        tracing::error!(stream = %name, error = %e, "stream unavailable: its manifest does not read");
                        damaged.insert(name, Unreadable::new(&path.join(MANIFEST_FILE), &e));
                    }
                },
                // Left by a crash in the middle of a create or delete.
                Listed::Leftover(path) => io::remove_dir_all("remove leftover", &path)?,
            }
        }
        let settings = read_settings(&dir).map_err(|e| {
            tracing::error!(error = %e, "store settings unavailable: settings.json does not read");
            Unreadable::new(&dir.join(SETTINGS_FILE), &e)
        });
        let inner = Arc::new(Inner {
            dir,
            context,
            streams: RwLock::new(streams),
            damaged,
            admin: Mutex::new(()),
            shutdown: Shutdown::default(),
            settings: Mutex::new(settings),
            tiering: Mutex::default(),
            _lock: lock,
            options,
        });
        let compactor = match inner.options.retention_interval {
            Some(interval) => {
                let weak = Arc::downgrade(&inner);
                let spawned = std::thread::Builder::new()
                    .name("shardlog-retention".into())
                    .spawn(move || compactor_loop(weak, interval));
                Some(spawned.map_err(Error::io_at("start background thread", &inner.dir))?)
            }
            None => None,
        };
        let tierer = match inner
            .context
            .tier
            .as_ref()
            .and_then(|t| t.options().interval)
        {
            Some(interval) => {
                let weak = Arc::downgrade(&inner);
                let spawned = std::thread::Builder::new()
                    .name("shardlog-tiering".into())
                    .spawn(move || tiering_loop(weak, interval));
                Some(spawned.map_err(Error::io_at("start tiering thread", &inner.dir))?)
            }
            None => None,
        };
        Ok(Store {
            inner,
            compactor,
            tierer,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    fn streams_dir(&self) -> PathBuf {
        self.inner.dir.join(STREAMS_DIR)
    }

    /// Creates a stream. [`Error::ResourceInUse`] if one of that name exists.
    pub fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<Stream>> {
        check_stream_name(name)?;
        check_retention(config.retention_hours)?;
        // The same rules as AddTagsToStream.
        crate::stream::check_tags(&config.tags)?;
        if config.tags.len() > crate::stream::MAX_TAGS {
            return Err(Error::invalid(
                "Tags",
                format!(
                    "{} tags; a stream has at most {}",
                    config.tags.len(),
                    crate::stream::MAX_TAGS
                ),
            ));
        }
        if !(1024 * 1024..=10 * 1024 * 1024).contains(&config.max_record_bytes) {
            return Err(Error::invalid(
                "MaxRecordSizeInKiB",
                format!("{} bytes is not 1024 to 10240 KiB", config.max_record_bytes),
            ));
        }
        let (mode, shard_count) = (config.mode, config.shard_count);
        if shard_count == 0 {
            return Err(Error::invalid(
                "ShardCount",
                "a stream needs at least one shard",
            ));
        }
        if shard_count > self.inner.options.max_open_shards_per_stream {
            return Err(Error::LimitExceeded {
                reason: format!(
                    "{shard_count} shards; a stream may have at most {}",
                    self.inner.options.max_open_shards_per_stream
                ),
            });
        }
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .inner
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
            || self.damaged(name).is_some()
        {
            return Err(Error::ResourceInUse {
                kind: "stream",
                name: name.into(),
                reason: "a stream of that name exists".into(),
            });
        }
        let now = self.inner.context.clock.now_ms();
        let manifest = StreamManifest {
            format_version: MANIFEST_VERSION,
            name: name.into(),
            created_ms: now,
            mode,
            retention_hours: config.retention_hours,
            max_record_bytes: config.max_record_bytes,
            throughput_limits: None,
            tiering: config.tiering,
            tags: config.tags,
            settings: BTreeMap::new(),
            consumers: Vec::new(),
            next_shard_index: shard_count,
            shards: HashKeyRange::uniform(shard_count)
                .into_iter()
                .zip(0..)
                .map(|(hash_range, index)| ShardEntry {
                    index,
                    hash_range,
                    parent: None,
                    adjacent_parent: None,
                    created_ms: now,
                    closed: None,
                })
                .collect(),
            topology_changes: 0,
        };
        let streams_dir = self.streams_dir();
        let staging = names::staging_path(&streams_dir, name);
        io::remove_dir_all("remove leftover", &staging)?;
        Stream::create(staging.clone(), manifest, self.inner.context.clone())?;
        let final_dir = streams_dir.join(names::disk_name(name));
        io::rename("create stream", &staging, &final_dir)?;
        sync_dir(&streams_dir)?;
        let stream = Arc::new(Stream::open(final_dir, self.inner.context.clone())?);
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), Arc::clone(&stream));
        Ok(stream)
    }

    /// Deletes a stream and all its records (a damaged one too: that is how it is cleared).
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let streams_dir = self.streams_dir();
        let dir = match self.damaged(name) {
            Some(_) => streams_dir.join(names::disk_name(name)),
            None => self.stream(name)?.dir().to_path_buf(),
        };
        let now_ms = self.inner.context.clock.now_ms();
        if self.inner.context.tier.is_some() {
            // Recorded before the stream goes, so its objects go too (the tiering thread deletes
            // them, retrying while the bucket fails).
            tier::record_deletion(&self.inner, name, now_ms)?;
        }
        let trash = names::trash_path(&streams_dir, name, now_ms);
        io::rename("delete stream", &dir, &trash)?;
        self.inner.damaged.remove(name);
        sync_dir(&streams_dir)?;
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        io::remove_dir_all("delete stream", &trash)
    }

    /// The stream called `name`: [`Error::ResourceNotFound`] if there is none,
    /// [`Error::Corrupt`] naming its manifest if it could not be opened.
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        if let Some(stream) = self
            .inner
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(Arc::clone(stream));
        }
        Err(match self.damaged(name) {
            Some(damage) => damage.error(),
            None => Error::ResourceNotFound {
                kind: "stream",
                name: name.into(),
            },
        })
    }

    fn damaged(&self, name: &str) -> Option<Unreadable> {
        self.inner.damaged.get(name)
    }

    /// Names of all streams, sorted (damaged ones included: they exist, and can be deleted).
    pub fn list_streams(&self) -> Vec<String> {
        let names: Vec<String> = self
            .inner
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        self.inner.damaged.listed_with(names)
    }

    /// Reads records at a shard iterator (Kinesis GetRecords): up to `limit` records (1 to
    /// 10,000) and 10 MiB.
    pub fn get_records(&self, shard_iterator: &str, limit: usize) -> Result<GetRecordsOutput> {
        let (stream, token) = self.iterator_stream(shard_iterator)?;
        stream.get_records(&token, limit)
    }

    /// [`Store::get_records`] lending each record to `visit` (borrowed from the shard's memory map,
    /// no copy, no allocation per record) instead of returning owned records: for a caller that
    /// encodes them and lets them go. On an error no page was read (records already lent are to
    /// be discarded).
    pub fn visit_records(
        &self,
        shard_iterator: &str,
        limit: usize,
        visit: impl FnMut(crate::stream::StreamRecordRef<'_>),
    ) -> Result<crate::stream::PageEnd> {
        let (stream, token) = self.iterator_stream(shard_iterator)?;
        stream.visit_records(&token, limit, visit)
    }

    /// The stream a shard iterator reads, checked to be the one it was issued for.
    fn iterator_stream(&self, shard_iterator: &str) -> Result<(Arc<Stream>, IteratorToken)> {
        let token = self
            .decode_iterator(shard_iterator)
            .ok_or_else(|| Error::invalid("ShardIterator", "not a shard iterator of this store"))?;
        let stream = self.stream(&token.stream)?;
        if stream.created_ms() != token.stream_created_ms {
            return Err(Error::ExpiredIterator {
                reason: format!("stream {} was deleted and created again", token.stream),
            });
        }
        Ok((stream, token))
    }

    /// A shard iterator this store issued, decoded (`None` for anything else, or one altered).
    pub(crate) fn decode_iterator(&self, shard_iterator: &str) -> Option<IteratorToken> {
        IteratorToken::decode(shard_iterator, &self.inner.context.iterator_key)
    }

    /// Store-wide settings kept for the wire API but not acted on (Kinesis account settings);
    /// [`Error::Corrupt`] if `settings.json` did not read at open.
    pub fn settings(&self) -> Result<BTreeMap<String, serde_json::Value>> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map_err(|damage| damage.error())
    }

    /// Changes the store-wide settings and writes them durably (`settings.json`); if the
    /// write fails nothing changes.
    pub fn modify_settings(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, serde_json::Value>),
    ) -> Result<()> {
        let mut settings = self
            .inner
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A damaged file is not overwritten from nothing: it is repaired or removed by hand.
        let mut next = settings.clone().map_err(|damage| damage.error())?;
        change(&mut next);
        io::write_json(&self.inner.dir, SETTINGS_FILE, &next)?;
        *settings = Ok(next);
        Ok(())
    }

    /// Makes every record put so far durable, in every stream (for shutdown).
    pub fn flush(&self) -> Result<()> {
        let streams: Vec<Arc<Stream>> = self
            .inner
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        streams.iter().try_for_each(|s| s.flush())
    }

    /// Deletes expired data in every stream now (the compactor does this every
    /// `retention_interval`). A stream that fails (a full disk, say) does not keep the others
    /// from it; the first error is returned.
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        enforce_retention(&self.inner)
    }

    /// Closes shards unused for `idle_shard_timeout` now (the background thread does this every
    /// `retention_interval`). Returns how many were closed.
    pub fn close_idle_shards(&self) -> usize {
        close_idle_shards(&self.inner)
    }

    /// Lets every on-demand stream split its hot shards now (the background thread does this
    /// every `retention_interval`). Returns how many shards were split.
    pub fn autoscale(&self) -> Result<usize> {
        autoscale(&self.inner)
    }
}

fn close_idle_shards(inner: &Inner) -> usize {
    let streams = all_streams(inner);
    streams
        .iter()
        .map(|s| s.close_idle_shards(inner.options.idle_shard_timeout))
        .sum()
}

fn autoscale(inner: &Inner) -> Result<usize> {
    let mut split = 0;
    each_stream(inner, "autoscale", |stream| {
        split += stream.autoscale()?;
        Ok(())
    })?;
    Ok(split)
}

/// Runs `work` on every open stream; one stream's error does not keep the others from it. Each
/// error is logged; the first is returned.
fn each_stream(
    inner: &Inner,
    what: &str,
    mut work: impl FnMut(&Stream) -> Result<()>,
) -> Result<()> {
    let mut first_error = None;
    for stream in all_streams(inner) {
        if let Err(e) = work(&stream) {
            tracing::warn!(stream = %stream.name(), error = %e, "{what} failed; retried at the next pass");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The streams open now, so background work can go through them without holding the map.
fn all_streams(inner: &Inner) -> Vec<Arc<Stream>> {
    inner
        .streams
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

fn enforce_retention(inner: &Inner) -> Result<RetentionReport> {
    let now = inner.context.clock.now_ms();
    let mut report = RetentionReport::default();
    each_stream(inner, "retention", |stream| {
        report.records += stream.enforce_retention(now)?;
        Ok(())
    })?;
    Ok(report)
}

fn compactor_loop(inner: Weak<Inner>, interval: Duration) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.shutdown.wait(interval) {
            return;
        }
        // A failed pass (a full disk, say) was logged per stream, and is retried at the next
        // interval: there is no caller to return the error to.
        let _ = enforce_retention(&strong);
        let _ = autoscale(&strong);
        close_idle_shards(&strong);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.inner.shutdown.signal();
        if let Some(tier) = &self.inner.context.tier {
            tier.notify(); // wakes the tiering thread to see the signal
        }
        if let Some(handle) = self.compactor.take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.tierer.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One stream failing does not stop retention for the others.
    #[cfg(feature = "failpoints")]
    #[test]
    fn retention_goes_on_past_a_failing_stream() {
        use crate::clock::{Clock, ManualClock};
        use crate::stream::PutRecord;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let options = StoreOptions {
            shard: crate::ShardOptions {
                max_segment_age: Some(Duration::from_secs(3600)),
                clock: Arc::clone(&clock) as Arc<dyn Clock>,
                ..crate::ShardOptions::default()
            },
            retention_interval: None,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let streams = ["a", "b"].map(|name| {
            let s = store
                .create_stream(name, StreamConfig::provisioned(1))
                .unwrap();
            s.put_record(&PutRecord::new("k", b"old")).unwrap();
            s
        });
        clock.advance(25 * 3_600_000);
        for s in &streams {
            // Rolls the expired segment: it can be deleted now.
            s.put_record(&PutRecord::new("k", b"new")).unwrap();
        }
        let a_dir = streams[0].dir().to_path_buf();
        crate::faults::arm(&a_dir, 0, 0);
        assert!(store.enforce_retention().is_err(), "stream a failed");
        crate::faults::reset(&a_dir);
        let b = &streams[1];
        let read = b
            .read(
                crate::ShardId(0),
                crate::Offset::new(0),
                crate::ReadLimits::default(),
            )
            .unwrap();
        let data: Vec<&[u8]> = read.records.iter().map(|r| &r.data[..]).collect();
        assert_eq!(data, [&b"new"[..]], "stream b's expired record is gone");
        // Stream a kept its data, and the next pass deletes it.
        assert_eq!(store.enforce_retention().unwrap().records, 1);
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert!(matches!(
            Store::open(dir.path(), StoreOptions::default()),
            Err(Error::Locked { .. })
        ));
    }
}
