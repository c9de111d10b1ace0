//! What every request handler sees: the store, the server's options, its metrics and the
//! shared limits, in one [`Context`]. Handlers (`kinesis`, `firehose`, `groups`, `subscribe`)
//! import it from here rather than from `server/mod.rs`, which imports them: no cycle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::Credentials;
use super::lifecycle::{Lifecycle, TransientStates};
use super::limits::{BodyBudget, ServerLimits, SubscriptionLimits};
use super::metrics::Metrics;
use crate::consumer::ConsumerGroup;
use crate::Store;

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
    /// With credentials, every API request must carry a valid SigV4 signature by one of their
    /// keys; without (the default), requests are accepted with any or no signature.
    pub auth: Option<Credentials>,
    /// How long a SubscribeToShard call streams before it ends (Kinesis: 5 minutes).
    pub subscription_lifetime: Duration,
    /// What one client can take: connections, timeouts, bytes in flight, subscriptions.
    pub limits: ServerLimits,
    /// Serve `GET /metrics` (and `/health`) on this address too, unauthenticated, and no
    /// longer on `listen`. Without it, `/metrics` is served on `listen` when there is no
    /// `auth`, and refused (403) when there is: metrics name every stream.
    pub metrics_listen: Option<SocketAddr>,
    /// How long streams and consumers stay CREATING, UPDATING and DELETING (default: not at
    /// all, every change is ACTIVE at once).
    pub transient_states: TransientStates,
    /// Set on a read replica (`serve --replica-of`): where its primary tiers to. Every
    /// operation that would change something is refused, naming it.
    pub replica_of: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 4567)),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            max_body_bytes: 16 * 1024 * 1024,
            auth: None,
            subscription_lifetime: Duration::from_secs(300),
            limits: ServerLimits::default(),
            metrics_listen: None,
            transient_states: TransientStates::default(),
            replica_of: None,
        }
    }
}

/// What every request handler sees.
pub(crate) struct Context {
    pub store: Arc<Store>,
    pub firehose: Option<Arc<crate::firehose::Firehose>>,
    pub options: ServerOptions,
    pub metrics: Metrics,
    pub subscriptions: SubscriptionLimits,
    pub body_budget: BodyBudget,
    /// Becomes `true` when the server stops: request bodies still arriving are given up.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub groups: OpenGroups,
    pub requests: AtomicU64,
    pub started: Instant,
    /// Streams and consumers in a transient state (see `lifecycle.rs`).
    pub lifecycle: Lifecycle,
}

impl Context {
    pub fn new(
        store: Arc<Store>,
        firehose: Option<Arc<crate::firehose::Firehose>>,
        options: ServerOptions,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Context {
        Context {
            store,
            firehose,
            metrics: Metrics::default(),
            subscriptions: Default::default(),
            body_budget: BodyBudget::new(options.limits.max_bytes_in_flight),
            stopping,
            groups: Default::default(),
            requests: AtomicU64::new(0),
            started: Instant::now(),
            lifecycle: Lifecycle::new(options.transient_states),
            options,
        }
    }
}

/// Groups the server has open, by name: kept open between requests so that a group's state is
/// read from its file once, not per request.
#[derive(Default)]
pub(crate) struct OpenGroups(Mutex<HashMap<String, Arc<ConsumerGroup>>>);

impl OpenGroups {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ConsumerGroup>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
