//! What one client can take from `shardlog serve`, bounded: connections (a cap, header and body
//! read timeouts, an idle keep-alive timeout), request bytes in flight (a server-wide budget),
//! and subscriptions (a cap, and Kinesis's one call per consumer and shard every 5 seconds).
//!
//! A connection is watched by its own task: it is closed when it has been idle (no byte read or
//! written, no request running) for the idle timeout, and at once on shutdown unless a request
//! is running, so a client holding half a request neither keeps a descriptor forever nor delays
//! a stop.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::error::ApiError;

/// The bounds `shardlog serve` keeps. `ServerLimits::default()` suits a shared server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections open at once (default 4,096); one more is answered 503 and closed.
    pub max_connections: usize,
    /// Longest time a client may take to send a request's headers (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest time a client may take to send a request's body (default 30 s).
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// Request body bytes held at once, over all requests (default 128 MiB). A request whose
    /// body does not fit within a second is answered 503 `LimitExceededException` (the SDKs
    /// retry it).
    pub max_bytes_in_flight: usize,
    /// Most SubscribeToShard calls streaming at once (default 10,000).
    pub max_subscriptions: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_bytes_in_flight: 128 * 1024 * 1024,
            max_subscriptions: 10_000,
        }
    }
}

/// How long a request waits for room in the bytes-in-flight budget before it is refused.
const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// Kinesis: a SubscribeToShard call within 5 seconds of a successful one for the same consumer
/// and shard gets a ResourceInUseException (one call a second is the documented rate).
const SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(5);

/// The server-wide budget of request body bytes.
pub(crate) struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl BodyBudget {
    pub(crate) fn new(max: usize) -> BodyBudget {
        let max = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// Room for a body of `len` bytes, held until the permit is dropped (after the request is
    /// answered: the decoded request lives that long).
    pub(crate) async fn reserve(
        &self,
        len: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let wanted = u32::try_from(len.clamp(1, self.max)).unwrap_or(u32::MAX);
        // The common case, room at once, arms no timer.
        if let Ok(permit) = Arc::clone(&self.bytes).try_acquire_many_owned(wanted) {
            return Ok(permit);
        }
        let acquire = Arc::clone(&self.bytes).acquire_many_owned(wanted);
        match tokio::time::timeout(BUDGET_WAIT, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::new(
                503,
                "LimitExceededException",
                format!(
                    "the server holds {} bytes of requests already; try again",
                    self.max
                ),
            )),
        }
    }
}

/// Blocking reads subscriptions may run at once: their waits are awaits, and their reads
/// queue here instead of growing the blocking pool (which every API call needs) in a burst.
const SUBSCRIPTION_READS: usize = 8;

/// Subscriptions streaming now, and when each (consumer, shard) last subscribed.
pub(crate) struct SubscriptionLimits {
    state: Mutex<SubscriptionState>,
    reads: tokio::sync::Semaphore,
}

impl Default for SubscriptionLimits {
    fn default() -> Self {
        SubscriptionLimits {
            state: Mutex::default(),
            reads: tokio::sync::Semaphore::new(SUBSCRIPTION_READS),
        }
    }
}

#[derive(Default)]
struct SubscriptionState {
    open: std::collections::HashSet<(String, String)>,
    last_call: HashMap<(String, String), Instant>,
}

impl SubscriptionLimits {
    /// Admits a subscription of `key` (consumer ARN, shard), or says why not.
    pub(crate) fn admit(&self, key: &(String, String), max: usize) -> Result<(), ApiError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state.last_call.len() > 2 * max.max(1024) {
            // Old calls no longer limit anything.
            state
                .last_call
                .retain(|_, at| now.duration_since(*at) < SUBSCRIBE_INTERVAL);
        }
        if state.open.contains(key) {
            return Err(ApiError::new(
                400,
                "ResourceInUseException",
                format!("{} already has a subscription to {}", key.0, key.1),
            ));
        }
        if let Some(at) = state.last_call.get(key) {
            if now.duration_since(*at) < SUBSCRIBE_INTERVAL {
                return Err(ApiError::new(
                    400,
                    "ResourceInUseException",
                    format!(
                        "{} subscribed to {} less than {SUBSCRIBE_INTERVAL:?} ago",
                        key.0, key.1
                    ),
                ));
            }
        }
        if state.open.len() >= max {
            return Err(ApiError::new(
                400,
                "LimitExceededException",
                format!("the server streams {max} subscriptions already (its limit)"),
            ));
        }
        state.last_call.insert(key.clone(), now);
        state.open.insert(key.clone());
        Ok(())
    }

    /// A turn to run one blocking read for a subscription.
    pub(crate) async fn read_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.reads.acquire().await.ok()
    }

    /// A subscription of `key` ended.
    pub(crate) fn release(&self, key: &(String, String)) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .remove(key);
    }
}

/// What a connection's watcher knows of it: requests running, and the last byte moved.
pub(crate) struct ConnectionActivity {
    running: AtomicUsize,
    /// Milliseconds since `epoch` of the last read or write.
    last_active_ms: AtomicU64,
    epoch: Instant,
}

impl ConnectionActivity {
    pub(crate) fn new() -> Arc<ConnectionActivity> {
        Arc::new(ConnectionActivity {
            running: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_active_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// How long since a byte moved.
    pub(crate) fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.elapsed_ms()
                .saturating_sub(self.last_active_ms.load(Ordering::Relaxed)),
        )
    }

    /// Whether a request is being handled.
    pub(crate) fn busy(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// Marks a request as running until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> RunningRequest {
        self.running.fetch_add(1, Ordering::AcqRel);
        RunningRequest(Arc::clone(self))
    }
}

/// A request being handled (see [`ConnectionActivity::request`]).
pub(crate) struct RunningRequest(Arc<ConnectionActivity>);

impl Drop for RunningRequest {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A TCP stream that records when bytes last moved.
pub(crate) struct TrackedStream {
    inner: TcpStream,
    activity: Arc<ConnectionActivity>,
}

impl TrackedStream {
    pub(crate) fn new(inner: TcpStream, activity: Arc<ConnectionActivity>) -> TrackedStream {
        activity.touch();
        TrackedStream { inner, activity }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft limit of open files to the hard limit (connections and shards both need
/// descriptors) and returns the soft limit now in force.
pub(crate) fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current != limit.maximum && setrlimit(Resource::Nofile, raised).is_ok() {
        return limit.maximum.unwrap_or(u64::MAX);
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The answer to a connection over the cap: a complete HTTP/1.1 response, then close.
pub(crate) fn over_capacity_response(max: usize) -> Vec<u8> {
    let body = format!(
        "{{\"__type\":\"LimitExceededException\",\"message\":\"the server has {max} connections open (its limit); try again\"}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: LimitExceededException\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_limited_per_key_rate_and_in_total() {
        let limits = SubscriptionLimits::default();
        let key = |s: &str| ("arn:c".to_string(), s.to_string());
        limits.admit(&key("a"), 2).unwrap();
        assert_eq!(
            limits.admit(&key("a"), 2).unwrap_err().kind,
            "ResourceInUseException",
            "a second call while the first streams"
        );
        limits.release(&key("a"));
        assert_eq!(
            limits.admit(&key("a"), 2).unwrap_err().kind,
            "ResourceInUseException",
            "a call within 5 seconds of the last"
        );
        limits.admit(&key("b"), 2).unwrap();
        limits.admit(&key("c"), 2).unwrap();
        assert_eq!(
            limits.admit(&key("d"), 2).unwrap_err().kind,
            "LimitExceededException",
            "over the total"
        );
        limits.release(&key("b"));
        limits.admit(&key("d"), 2).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_body_budget_refuses_what_does_not_fit() {
        let budget = BodyBudget::new(100);
        let held = budget.reserve(80).await.unwrap();
        assert_eq!(budget.reserve(30).await.unwrap_err().status, 503);
        drop(held);
        let _ok = budget.reserve(30).await.unwrap();
        // A body larger than the whole budget waits for all of it, not for more than exists.
        drop(_ok);
        let _all = budget.reserve(1_000).await.unwrap();
    }
}
