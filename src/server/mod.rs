//! `shardlog serve`: the Kinesis Data Streams wire API over HTTP/1.1 and HTTP/2 (h2c), so that
//! AWS SDKs and the aws CLI work against a store unchanged (feature `server`).
//!
//! Requests are `POST /` with `X-Amz-Target: Kinesis_20131202.<Operation>` and an
//! `application/x-amz-json-1.1` body; responses and errors follow the botocore service model.
//! Operations run on tokio's blocking pool (they touch files and may fsync). `GET /health`
//! answers `ok`; `GET /metrics` gives per-operation request, error and latency counters in the
//! Prometheus text format.
//!
//! This file starts and stops the server and accepts connections; `http` handles one request.

mod auth;
mod b64;
mod cbor;
mod context;
mod error;
mod firehose;
mod groups;
mod http;
mod kinesis;
mod lifecycle;
mod limits;
mod metrics;
mod model;
mod protocol;
mod records;
mod replica;
mod subscribe;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::error::{Error, Result};
use crate::Store;
pub use auth::Credentials;
use context::Context;
pub use context::ServerOptions;
use http::handle;
pub use kinesis::get_records_json;
pub use lifecycle::TransientStates;
pub(crate) use limits::raise_open_files_limit;
pub use limits::ServerLimits;

/// A running server. Dropping it (or [`Server::stop`]) stops accepting, lets in-flight
/// requests finish and flushes the store.
pub struct Server {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: Arc<Store>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Server {
    /// Binds `options.listen` and serves `store` (and the delivery streams of `firehose`, if
    /// given) on a runtime of its own (a background thread).
    pub fn start(
        store: Arc<Store>,
        firehose: Option<Arc<crate::firehose::Firehose>>,
        options: ServerOptions,
    ) -> Result<Server> {
        let (listener, local_addr) = bind(options.listen)?;
        let metrics_listener = options.metrics_listen.map(bind).transpose()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("shardlog-server")
            .build()
            .map_err(|e| Error::io("start runtime", std::path::Path::new("tokio"), e))?;
        let open_files = limits::raise_open_files_limit();
        if (options.limits.max_connections as u64).saturating_add(256) > open_files {
            tracing::warn!(
                open_files,
                max_connections = options.limits.max_connections,
                "the open-files limit is below the connection cap: connections past it fail to be accepted"
            );
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(Context::new(
            store.clone(),
            firehose,
            options,
            stopped.clone(),
        ));
        let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
        let thread = std::thread::Builder::new()
            .name("shardlog-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let metrics = metrics_listener.map(|(listener, _)| {
                        let (ctx, stopped) = (Arc::clone(&ctx), stopped.clone());
                        tokio::spawn(accept_loop(listener, ctx, stopped, Role::Metrics))
                    });
                    accept_loop(listener, ctx, stopped, Role::Api).await;
                    if let Some(metrics) = metrics {
                        let _ = metrics.await;
                    }
                })
            })
            .map_err(|e| Error::io("spawn server thread", std::path::Path::new("server"), e))?;
        tracing::info!(%local_addr, "shardlog serving the Kinesis API");
        if let Some(addr) = metrics_addr {
            tracing::info!(%addr, "serving /metrics");
        }
        Ok(Server {
            local_addr,
            metrics_addr,
            stop: Some(stop),
            thread: Some(thread),
            store,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on apart from the API, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, waits for in-flight requests, then flushes the store.
    pub fn stop(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.store.flush()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// Binds a listening socket for the runtime.
fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr)> {
    let failed = |e| Error::io("listen on", std::path::Path::new(&addr.to_string()), e);
    let listener = std::net::TcpListener::bind(addr).map_err(failed)?;
    let local_addr = listener.local_addr().map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    Ok((listener, local_addr))
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The API (and `/health`, and `/metrics` unless it has its own listener).
    Api,
    /// Only `/metrics` and `/health`.
    Metrics,
}

async fn accept_loop(
    listener: std::net::TcpListener,
    ctx: Arc<Context>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    role: Role,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen");
            return;
        }
    };
    let max_connections = ctx.options.limits.max_connections.max(1);
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                    tokio::spawn(refuse_connection(stream, max_connections));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = Arc::clone(&ctx);
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    serve_connection(ctx, stream, peer, stopped, role).await;
                    drop(permit);
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    // Idle and half-sent connections close at once; running requests get up to 30 s.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(30), connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("requests still running 30 s after the stop; closing their connections");
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse_connection(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let answer = limits::over_capacity_response(max);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
    let _ = stream.shutdown().await;
}

/// Serves one connection until the client closes it, it idles past the idle timeout, or the
/// server stops (at once if no request is running, else once it is answered).
async fn serve_connection(
    ctx: Arc<Context>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    role: Role,
) {
    let limits = &ctx.options.limits;
    let activity = limits::ConnectionActivity::new();
    let io = TokioIo::new(limits::TrackedStream::new(stream, Arc::clone(&activity)));
    let service = {
        let ctx = Arc::clone(&ctx);
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req| {
            let ctx = Arc::clone(&ctx);
            let running = activity.request();
            async move {
                let response = handle(ctx, req, role).await;
                drop(running);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut stopping = *stopped.borrow();
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                if !activity.busy() && (stopping || activity.idle_for() >= limits.idle_timeout) {
                    return; // Dropping the connection closes it.
                }
            }
            changed = stopped.changed(), if !stopping => {
                stopping = changed.is_err() || *stopped.borrow();
                if stopping {
                    connection.as_mut().graceful_shutdown();
                    if !activity.busy() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const OPERATIONS: [&str; 20] = [
        "CreateStream",
        "DeleteStream",
        "DescribeStream",
        "ListShards",
        "PutRecord",
        "PutRecords",
        "GetShardIterator",
        "GetRecords",
        "SplitShard",
        "MergeShards",
        "UpdateShardCount",
        "ListStreamConsumers",
        "RegisterStreamConsumer",
        "TagResource",
        "PutResourcePolicy",
        "EnableEnhancedMonitoring",
        "UpdateAccountSettings",
        "CreateDeliveryStream",
        "PutRecordBatch",
        "UpdateDestination",
    ];
    const MEMBERS: [&str; 24] = [
        "StreamName",
        "StreamARN",
        "ShardCount",
        "Data",
        "PartitionKey",
        "Records",
        "ShardId",
        "ShardIteratorType",
        "StartingSequenceNumber",
        "ShardIterator",
        "Limit",
        "ShardToSplit",
        "NewStartingHashKey",
        "TargetShardCount",
        "ScalingType",
        "ResourceARN",
        "Tags",
        "Policy",
        "ShardLevelMetrics",
        "DeliveryStreamName",
        "ExtendedS3DestinationConfiguration",
        "BucketARN",
        "BufferingHints",
        "StreamModeDetails",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e20f64..1e20).prop_map(|f| serde_json::json!(f)),
            prop::sample::select(vec![
                "s",
                "shardId-000000000000",
                "shardId-999999999999",
                "arn:aws:kinesis:us-east-1:000000000000:stream/s",
                "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:1",
                "arn:aws:s3:::bucket",
                "aGk=",
                "!!",
                "TRIM_HORIZON",
                "AT_SEQUENCE_NUMBER",
                "UNIFORM_SCALING",
                "170141183460469231731687303715884105727",
                "",
            ])
            .prop_map(|s| Value::String(s.to_string())),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(MEMBERS.to_vec()), inner), 0..6)
                    .prop_map(|members| {
                        Value::Object(
                            members
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect(),
                        )
                    }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any request body, to any operation, gets an answer or a typed error: never a panic.
        #[test]
        fn operations_never_panic_on_input(
            requests in prop::collection::vec((prop::sample::select(OPERATIONS.to_vec()), value()), 1..8)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path(), crate::StoreOptions {
                retention_interval: None,
                ..crate::StoreOptions::default()
            }).unwrap());
            let firehose = Arc::new(crate::firehose::Firehose::open(
                Arc::clone(&store),
                crate::firehose::FirehoseOptions { delivery_interval: None, ..Default::default() },
            ).unwrap());
            let ctx = Context::new(
                store,
                Some(firehose),
                ServerOptions::default(),
                tokio::sync::watch::channel(false).1,
            );
            // A stream to hit, so requests get past the lookup.
            let _ = kinesis::call(&ctx, "CreateStream", &serde_json::json!({"StreamName": "s", "ShardCount": 2}));
            for (operation, body) in requests {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = kinesis::call(&ctx, operation, &body);
                    let _ = firehose::call(&ctx, operation, &body);
                }));
                prop_assert!(outcome.is_ok(), "{operation} panicked on {body}");
            }
        }
    }
}
