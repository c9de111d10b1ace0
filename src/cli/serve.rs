//! `shardlog serve`: opens a data directory and serves the Kinesis API until SIGTERM or ctrl-c.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::CliError;
use crate::firehose::Buckets;
use crate::firehose::{Firehose, FirehoseOptions};
use crate::server::{Credentials, Server, ServerLimits, ServerOptions, TransientStates};
use crate::{FlushPolicy, ShardOptions, Store, StoreOptions};

/// Arguments of `shardlog serve`.
#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    /// The data directory (created if needed).
    #[arg(long, default_value = "./shardlog-data")]
    data_dir: PathBuf,
    /// Address to listen on; loopback only unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:4567")]
    listen: SocketAddr,
    /// When a put is acknowledged: after fdatasync (`always`), after a shared sync at most every
    /// 2 ms (`group`), or once in the page cache (`never`: survives a crash of the server, not
    /// of the machine).
    #[arg(long, value_enum, default_value = "always")]
    flush: Flush,
    /// Region in ARNs.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Enforce Kinesis's per-shard write and read limits.
    #[arg(long)]
    throughput_limits: bool,
    /// Where Firehose destinations' S3 buckets are: one subdirectory per bucket (default
    /// DATA_DIR/objects).
    #[arg(long, conflicts_with = "s3_endpoint")]
    objects_dir: Option<PathBuf>,
    /// Deliver Firehose objects to this S3 API endpoint instead (credentials from AWS_*
    /// variables; needs the `s3` feature).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Check SigV4 signatures against the keys of this AWS credentials file (every profile's
    /// aws_access_key_id / aws_secret_access_key); without it any signature is accepted.
    #[arg(long, value_name = "CREDENTIALS_FILE")]
    auth: Option<PathBuf>,
    /// Serve GET /metrics (Prometheus) on this address, unauthenticated, instead of on the API
    /// address. With --auth and without this, /metrics is refused: it names every stream.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Most connections open at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = ServerLimits::default().max_connections)]
    max_connections: usize,
    /// Seconds a keep-alive connection may stay idle before it is closed.
    #[arg(long, default_value_t = ServerLimits::default().idle_timeout.as_secs())]
    idle_timeout_secs: u64,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = ServerLimits::default().header_read_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Seconds a client may take to send a request's body.
    #[arg(long, default_value_t = ServerLimits::default().body_read_timeout.as_secs())]
    body_timeout_secs: u64,
    /// MiB of request bodies held at once over all requests; past it, requests wait up to a
    /// second, then get 503 LimitExceededException (SDKs retry).
    #[arg(long, default_value_t = ServerLimits::default().max_bytes_in_flight / (1024 * 1024))]
    max_mib_in_flight: usize,
    /// Most SubscribeToShard calls streaming at once.
    #[arg(long, default_value_t = ServerLimits::default().max_subscriptions)]
    max_subscriptions: usize,
    /// Milliseconds a new stream (and a new registered consumer) reports CREATING, as AWS's
    /// do for a while; 0: ACTIVE at once.
    #[arg(long, default_value_t = 0)]
    create_delay_ms: u64,
    /// Milliseconds a stream reports UPDATING after a reshard or a settings change.
    #[arg(long, default_value_t = 0)]
    update_delay_ms: u64,
    /// Milliseconds a stream reports DELETING before DeleteStream takes effect.
    #[arg(long, default_value_t = 0)]
    delete_delay_ms: u64,
    #[command(flatten)]
    tier: TierArgs,
    /// Serve as a read replica of the store that tiers into this bucket: `s3://BUCKET/PREFIX`
    /// (with --tier-s3-endpoint for S3-compatible servers) or a --tier-dir directory. Streams,
    /// shards and records follow the primary's uploads; every write is refused, naming the
    /// bucket. DATA_DIR holds only copies (manifests, remote.log, the download cache).
    #[arg(long, conflicts_with_all = ["tier_bucket", "tier_dir"])]
    replica_of: Option<String>,
    /// How often a replica looks for the primary's new uploads, in milliseconds.
    #[arg(long, default_value_t = 1000, requires = "replica_of")]
    replica_poll_ms: u64,
}

/// Tiered storage: where sealed segments are copied, and how much stays local.
#[derive(Debug, clap::Args)]
pub(super) struct TierArgs {
    /// Tier sealed segments to this S3 bucket (credentials from AWS_* variables, as for the
    /// Firehose S3 destination; needs the `s3` feature).
    #[arg(long, conflicts_with = "tier_dir")]
    tier_bucket: Option<String>,
    /// The tier (or --replica-of) bucket's S3 API endpoint, for S3-compatible servers (MinIO,
    /// Ceph, …).
    #[arg(long)]
    tier_s3_endpoint: Option<String>,
    /// The tier (or --replica-of) bucket's region (default: --region).
    #[arg(long)]
    tier_region: Option<String>,
    /// Tier sealed segments into this directory instead (a mounted shared file system).
    #[arg(long)]
    tier_dir: Option<PathBuf>,
    /// Every object key starts with this (e.g. `prod/shardlog/`).
    #[arg(long, default_value = "")]
    tier_prefix: String,
    /// A shard keeps about this many MiB of sealed segments locally; older ones are read from
    /// the tier.
    #[arg(long)]
    tier_local_retention_mib: Option<u64>,
    /// A shard keeps segments younger than this many hours locally (default 24, unless
    /// --tier-local-retention-mib is given alone).
    #[arg(long)]
    tier_local_retention_hours: Option<u64>,
    /// Seconds after which the active segment is sealed so it can be uploaded.
    #[arg(long, default_value_t = 600)]
    tier_max_segment_age_secs: u64,
    /// MiB of downloaded remote segments cached locally.
    #[arg(long, default_value_t = 1024)]
    tier_cache_mib: u64,
    /// KiB of the smallest range read: a read that starts inside a remote segment larger than
    /// four times this fetches a window of it (at least this large) instead of all of it.
    #[arg(long, default_value_t = 1024)]
    tier_range_read_kib: u64,
}

impl TierArgs {
    /// The store's tiering, if any was asked for.
    fn config(&self, region: &str) -> Result<Option<crate::TierConfig>, CliError> {
        let bucket: Arc<dyn crate::Bucket> = match (&self.tier_bucket, &self.tier_dir) {
            (Some(bucket), _) => super::bucket::s3_bucket(
                bucket,
                self.tier_s3_endpoint.as_deref(),
                self.tier_region.as_deref().unwrap_or(region),
            )?,
            (None, Some(dir)) => Arc::new(crate::DirBucket::new(dir)?),
            (None, None) => return Ok(None),
        };
        let hours = match (
            self.tier_local_retention_hours,
            self.tier_local_retention_mib,
        ) {
            (Some(hours), _) => Some(hours),
            (None, Some(_)) => None,
            (None, None) => Some(24),
        };
        Ok(Some(crate::TierConfig {
            bucket,
            options: crate::TierOptions {
                prefix: self.tier_prefix.clone(),
                local_retention_bytes: self.tier_local_retention_mib.map(|m| m * 1024 * 1024),
                local_retention: hours.map(|h| Duration::from_secs(h * 3600)),
                max_segment_age: Duration::from_secs(self.tier_max_segment_age_secs.max(1)),
                cache_bytes: self.tier_cache_mib * 1024 * 1024,
                range_read_bytes: self.tier_range_read_kib.saturating_mul(1024),
                ..crate::TierOptions::default()
            },
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Flush {
    Always,
    Group,
    Never,
}

pub(super) fn run(args: &ServeArgs) -> Result<ExitCode, CliError> {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SHARDLOG_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let flush = match args.flush {
        Flush::Always => FlushPolicy::Always,
        Flush::Group => FlushPolicy::GroupCommit {
            interval: Duration::from_millis(2),
        },
        Flush::Never => FlushPolicy::Never,
    };
    let replica = match &args.replica_of {
        Some(location) => Some(super::bucket::open(
            location,
            args.tier.tier_s3_endpoint.as_deref(),
            args.tier.tier_region.as_deref().unwrap_or(&args.region),
        )?),
        None => None,
    };
    let mut options = StoreOptions {
        shard: ShardOptions {
            flush,
            ..ShardOptions::default()
        },
        throughput_limits: args.throughput_limits,
        tier: args.tier.config(&args.region)?,
        ..StoreOptions::default()
    };
    if let Some((bucket, prefix)) = &replica {
        // Copies only: no retention (the primary's deletions arrive in remote.log), no
        // uploads; every segment is read from the bucket through the cache.
        crate::replica::sync_from_bucket(bucket.as_ref(), prefix, &args.data_dir)?;
        options.retention_interval = None;
        options.tier = Some(crate::TierConfig {
            bucket: Arc::clone(bucket),
            options: crate::TierOptions {
                prefix: prefix.clone(),
                interval: None,
                local_retention_bytes: Some(0),
                cache_bytes: args.tier.tier_cache_mib * 1024 * 1024,
                range_read_bytes: args.tier.tier_range_read_kib.saturating_mul(1024),
                ..crate::TierOptions::default()
            },
        });
    }
    let auth = match &args.auth {
        Some(path) => Some(Credentials::from_file(path)?),
        None => None,
    };
    // Before the store sizes its budget of open shards from the limit.
    crate::server::raise_open_files_limit();
    let store = Arc::new(Store::open(&args.data_dir, options)?);
    let following = replica.map(|(bucket, prefix)| {
        follow_primary(
            Arc::clone(&store),
            bucket,
            prefix,
            args.data_dir.clone(),
            Duration::from_millis(args.replica_poll_ms.max(10)),
        )
    });
    let buckets = match (&args.s3_endpoint, &args.objects_dir) {
        (Some(endpoint), _) => Buckets::S3 {
            endpoint: Some(endpoint.clone()),
            region: args.region.clone(),
        },
        (None, Some(dir)) => Buckets::Directory(dir.clone()),
        (None, None) => Buckets::InDataDir,
    };
    let firehose = Arc::new(Firehose::open(
        Arc::clone(&store),
        FirehoseOptions {
            buckets,
            ..FirehoseOptions::default()
        },
    )?);
    let server = Server::start(
        Arc::clone(&store),
        Some(Arc::clone(&firehose)),
        ServerOptions {
            listen: args.listen,
            region: args.region.clone(),
            auth,
            metrics_listen: args.metrics_listen,
            limits: ServerLimits {
                max_connections: args.max_connections.max(1),
                idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
                header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
                body_read_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
                max_bytes_in_flight: args.max_mib_in_flight.max(1) * 1024 * 1024,
                max_subscriptions: args.max_subscriptions,
            },
            transient_states: TransientStates {
                create: Duration::from_millis(args.create_delay_ms),
                update: Duration::from_millis(args.update_delay_ms),
                delete: Duration::from_millis(args.delete_delay_ms),
            },
            replica_of: args.replica_of.clone(),
            ..ServerOptions::default()
        },
    )?;
    // Scripts wait for this line to know the port is open.
    println!(
        "shardlog serving {} on http://{}",
        args.data_dir.display(),
        server.local_addr()
    );
    if let Some(addr) = server.metrics_addr() {
        // A script may have stopped reading after the first line: not an error.
        let _ = writeln!(
            std::io::stdout(),
            "shardlog metrics on http://{addr}/metrics"
        );
    }
    wait_for_signal()
        .map_err(|e| crate::Error::io("wait for SIGTERM", std::path::Path::new("signal"), e))?;
    tracing::info!("stopping: finishing in-flight requests");
    server.stop()?;
    if let Some((stop, handle)) = following {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = handle.join();
    }
    // Stops the delivery worker, delivering what the buffering hints allow.
    drop(firehose);
    drop(store);
    Ok(ExitCode::SUCCESS)
}

/// A replica's follower: every `poll`, copies the primary's changed stream files from the
/// bucket and lets the store take them up. Failures (the bucket unreachable) are logged and
/// retried at the next poll; the replica serves what it has meanwhile.
fn follow_primary(
    store: Arc<Store>,
    bucket: Arc<dyn crate::Bucket>,
    prefix: String,
    data_dir: PathBuf,
    poll: Duration,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let mut failing = false;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let result = crate::replica::sync_from_bucket(bucket.as_ref(), &prefix, &data_dir)
                .and_then(|_| store.follow());
            match result {
                Ok(_) if failing => {
                    tracing::info!("following the primary again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot follow the primary; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
            std::thread::sleep(poll);
        }
    });
    (stop, handle)
}

/// Blocks until SIGTERM or SIGINT (an error if signals cannot be watched: the server then stops
/// at once rather than run unstoppable but by SIGKILL).
fn wait_for_signal() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            interrupted = tokio::signal::ctrl_c() => interrupted,
        }
    })
}
