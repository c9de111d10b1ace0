//! `shardlog serve`: the Kinesis Data Streams wire API over HTTP/1.1 and HTTP/2 (h2c), so that
//! AWS SDKs and the aws CLI work against a store unchanged (feature `server`).
//!
//! Requests are `POST /` with `X-Amz-Target: Kinesis_20131202.<Operation>` and an
//! `application/x-amz-json-1.1` body; responses and errors follow the botocore service model.
//! Operations run on tokio's blocking pool (they touch files and may fsync). `GET /health`
//! answers `ok`; `GET /metrics` gives per-operation request, error and latency counters in the
//! Prometheus text format.

mod auth;
mod cbor;
mod firehose;
mod groups;
mod kinesis;
mod metrics;
mod protocol;
mod subscribe;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::Store;
pub use auth::Credentials;
use metrics::Metrics;
use protocol::{parse_target, Api, ApiError, Output};

/// How the server listens and names things.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where to listen (default `127.0.0.1:4567`: loopback only).
    pub listen: SocketAddr,
    /// The region in ARNs (default `us-east-1`).
    pub region: String,
    /// The account id in ARNs (default `000000000000`).
    pub account_id: String,
    /// Largest request body accepted (default 16 MiB: a full PutRecords in base64 fits).
    pub max_body_bytes: usize,
    /// Where Firehose delivery streams' S3 buckets are (default: `./shardlog-objects/BUCKET/`).
    pub objects: ObjectStore,
    /// With credentials, every API request must carry a valid SigV4 signature by one of their
    /// keys; without (the default), requests are accepted with any or no signature.
    pub auth: Option<Credentials>,
    /// How long a SubscribeToShard call streams before it ends (Kinesis: 5 minutes).
    pub subscription_lifetime: Duration,
}

/// Where the S3 buckets named by Firehose destinations (`arn:aws:s3:::BUCKET`) live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStore {
    /// A local directory holding one subdirectory per bucket.
    Directory(std::path::PathBuf),
    /// An S3 API (AWS, or an S3-compatible server at `endpoint`); credentials come from the
    /// usual `AWS_*` environment variables. Needs the `s3` feature.
    S3 {
        /// An endpoint other than AWS's.
        endpoint: Option<String>,
        /// The buckets' region.
        region: String,
    },
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 4567)),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            max_body_bytes: 16 * 1024 * 1024,
            objects: ObjectStore::Directory("shardlog-objects".into()),
            auth: None,
            subscription_lifetime: Duration::from_secs(300),
        }
    }
}

/// What every request handler sees.
pub(crate) struct Context {
    pub store: Arc<Store>,
    pub firehose: Option<Arc<crate::firehose::Firehose>>,
    pub options: ServerOptions,
    pub metrics: Metrics,
    subscriptions: subscribe::ActiveSubscriptions,
    groups: groups::OpenGroups,
    requests: AtomicU64,
    started: Instant,
}

/// A running server. Dropping it (or [`Server::stop`]) stops accepting, lets in-flight
/// requests finish and flushes the store.
pub struct Server {
    local_addr: SocketAddr,
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
        let listener = std::net::TcpListener::bind(options.listen).map_err(|e| {
            Error::io(
                "listen on",
                std::path::Path::new(&options.listen.to_string()),
                e,
            )
        })?;
        let local_addr = listener.local_addr().map_err(|e| {
            Error::io(
                "listen on",
                std::path::Path::new(&options.listen.to_string()),
                e,
            )
        })?;
        listener.set_nonblocking(true).map_err(|e| {
            Error::io(
                "listen on",
                std::path::Path::new(&local_addr.to_string()),
                e,
            )
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("shardlog-server")
            .build()
            .map_err(|e| Error::io("start runtime", std::path::Path::new("tokio"), e))?;
        let ctx = Arc::new(Context {
            store: Arc::clone(&store),
            firehose: firehose.clone(),
            options,
            metrics: Metrics::default(),
            subscriptions: Default::default(),
            groups: Default::default(),
            requests: AtomicU64::new(0),
            started: Instant::now(),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("shardlog-server".into())
            .spawn(move || runtime.block_on(accept_loop(listener, ctx, stopped)))
            .map_err(|e| Error::io("spawn server thread", std::path::Path::new("server"), e))?;
        tracing::info!(%local_addr, "shardlog serving the Kinesis API");
        Ok(Server {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
            store,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

async fn accept_loop(
    listener: std::net::TcpListener,
    ctx: Arc<Context>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen");
            return;
        }
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
                let _ = stream.set_nodelay(true);
                let ctx = Arc::clone(&ctx);
                let service = hyper::service::service_fn(move |req| {
                    let ctx = Arc::clone(&ctx);
                    async move { Ok::<_, Infallible>(handle(ctx, req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    // In-flight requests finish; idle keep-alive connections close.
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 30 s; closing them");
    }
}

type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

async fn handle(ctx: Arc<Context>, req: Request<Incoming>) -> HttpResponse {
    let request_id = request_id(&ctx);
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => text(StatusCode::OK, &ctx.metrics.render()),
        (&Method::POST, "/") => api_call(&ctx, req).await,
        _ => error_response(&ApiError::new(
            404,
            "UnknownOperationException",
            "shardlog serves the AWS JSON API at POST /, and GET /health and /metrics",
        )),
    };
    with_request_id(response, &request_id)
}

async fn api_call(ctx: &Arc<Context>, req: Request<Incoming>) -> HttpResponse {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some((api, operation)) = target.as_deref().and_then(parse_target) else {
        return error_response(&ApiError::new(
            400,
            "UnknownOperationException",
            format!(
                "X-Amz-Target {:?} names no Kinesis_20131202, Firehose_20150804 or ShardlogConsumerGroups_20261126 operation",
                target.unwrap_or_default()
            ),
        ));
    };
    let operation = operation.to_string();
    let codec = match req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(t) if t.contains("cbor") => Codec::Cbor,
        _ => Codec::Json,
    };
    let started = Instant::now();
    let result = read_and_run(ctx, api, &operation, codec, req).await;
    ctx.metrics
        .observe(&operation, result.is_err(), started.elapsed());
    match result {
        Ok(Output::Value(value)) => codec.response(StatusCode::OK, &value),
        Ok(Output::Encoded(body)) => match codec {
            Codec::Json => body_response(StatusCode::OK, body, Codec::Json.content_type()),
            Codec::Cbor => match serde_json::from_slice::<Value>(&body) {
                Ok(value) => codec.response(StatusCode::OK, &value),
                Err(e) => codec.error(&ApiError::new(
                    500,
                    "InternalFailureException",
                    e.to_string(),
                )),
            },
        },
        Ok(Output::Subscription(mut subscription)) => {
            subscription.cbor = codec == Codec::Cbor;
            match subscribe::start(ctx, subscription) {
                Ok(body) => Response::builder()
                    .status(StatusCode::OK)
                    .header(
                        hyper::header::CONTENT_TYPE,
                        "application/vnd.amazon.eventstream",
                    )
                    .body(body.boxed())
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())),
                Err(e) => codec.error(&e),
            }
        }
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%operation, error = %e.message, "request failed");
            } else {
                tracing::debug!(%operation, kind = e.kind, error = %e.message, "request refused");
            }
            codec.error(&e)
        }
    }
}

/// The protocol of a request, which its answer uses too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// `application/x-amz-json-1.1` (and plain JSON).
    Json,
    /// `application/x-amz-cbor-1.1`.
    Cbor,
}

impl Codec {
    fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/x-amz-json-1.1",
            Codec::Cbor => cbor::CONTENT_TYPE,
        }
    }

    fn response(self, status: StatusCode, value: &Value) -> HttpResponse {
        let body = match self {
            Codec::Json => serde_json::to_vec(value).unwrap_or_default(),
            Codec::Cbor => cbor::encode(value),
        };
        body_response(status, body, self.content_type())
    }

    fn error(self, e: &ApiError) -> HttpResponse {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = self.response(status, &e.body());
        if let Ok(kind) = hyper::header::HeaderValue::from_str(e.kind) {
            response.headers_mut().insert("x-amzn-errortype", kind);
        }
        response
    }
}

async fn read_and_run(
    ctx: &Arc<Context>,
    api: Api,
    operation: &str,
    codec: Codec,
    req: Request<Incoming>,
) -> std::result::Result<Output, ApiError> {
    let limit = ctx.options.max_body_bytes;
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    if !headers.iter().any(|(n, _)| n == "host") {
        // HTTP/2 carries the host in :authority.
        if let Some(authority) = req.uri().authority() {
            headers.push(("host".into(), authority.to_string()));
        }
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    413,
                    "SerializationException",
                    format!("the request body is over {limit} bytes"),
                )
            } else {
                ApiError::serialization(format!("cannot read the request body: {e}"))
            })
        }
    };
    if let Some(credentials) = &ctx.options.auth {
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        auth::SignedRequest {
            method: &method,
            path: &path,
            query: &query,
            headers: &headers,
            body: &body,
            now_secs,
        }
        .verify(credentials)?;
    }
    let value: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else if codec == Codec::Cbor {
        cbor::decode(&body)?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::serialization(format!("the body is not valid JSON: {e}")))?
    };
    let ctx = Arc::clone(ctx);
    let operation = operation.to_string();
    tokio::task::spawn_blocking(move || match api {
        Api::Kinesis => kinesis::call(&ctx, &operation, &value),
        Api::Firehose => firehose::call(&ctx, &operation, &value),
        Api::ConsumerGroups => groups::call(&ctx, &operation, &value),
    })
    .await
    .unwrap_or_else(|e| {
        Err(ApiError::new(
            500,
            "InternalFailureException",
            format!("the operation failed unexpectedly: {e}"),
        ))
    })
}

/// A request id in the UUID format the SDKs log.
fn request_id(ctx: &Context) -> String {
    use md5::{Digest, Md5};
    let n = ctx.requests.fetch_add(1, Ordering::Relaxed);
    let mut hasher = Md5::new();
    hasher.update(n.to_le_bytes());
    hasher.update(ctx.started.elapsed().as_nanos().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    let h = hasher.finalize();
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn with_request_id(mut response: HttpResponse, id: &str) -> HttpResponse {
    if let Ok(value) = hyper::header::HeaderValue::from_str(id) {
        response
            .headers_mut()
            .insert("x-amzn-requestid", value.clone());
        response.headers_mut().insert("x-amz-id-2", value);
    }
    response
}

fn body_response(status: StatusCode, body: Vec<u8>, content_type: &str) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn error_response(e: &ApiError) -> HttpResponse {
    Codec::Json.error(e)
}

fn text(status: StatusCode, body: &str) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            let ctx = Context {
                store,
                firehose: Some(firehose),
                options: ServerOptions {
                    objects: ObjectStore::Directory(dir.path().join("objects")),
                    ..ServerOptions::default()
                },
                metrics: Metrics::default(),
                subscriptions: Default::default(),
                groups: Default::default(),
                requests: AtomicU64::new(0),
                started: Instant::now(),
            };
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
