//! longrun's server: the standard `google.longrunning.Operations` API and
//! longrun's producer/worker API, over REST (axum) and gRPC (tonic) on one
//! listen address.
//!
//! ```text
//!   HTTP/1.1, h2c ──▶ request id, tracing ──▶ rest::  ─┐
//!                                         └─▶ grpc::  ─┴─▶ core::Service ──▶ auth ──▶ Store
//! ```
//!
//! [`run`] takes the listener and a shutdown future so tests can bind port 0
//! and drive the real server:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let store = Arc::new(longrun_store_sqlite::SqliteStore::open("longrun.db")?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = longrun_server::Config::new(store);
//! longrun_server::run(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod auth;
mod connections;
mod console;
mod core;
mod counted;
mod error;
mod grpc;
mod metrics;
mod page_token;
mod preface;
mod rest;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use crate::auth::{Access, Action, Grant, Principal, Role, Tokens};
pub use crate::connections::{Limits, tls_config};
pub use crate::core::{
    Caller, Claimed, DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS, DEFAULT_PAGE_SIZE, MAX_CLAIM_BATCH, MAX_PAGE_SIZE, Page,
    Service, WatchEvent, WatchSent, WatchStream, claim_response,
};
pub use crate::error::Error;
pub use crate::page_token::{LIFETIME as PAGE_TOKEN_LIFETIME, PageTokens};
pub use crate::rest::guard::{Exposure, Hosts};
use longrun_proto::Registry;
use longrun_store::Store;
pub use longrun_store::{Clock, StoreClock, SystemClock};

/// Everything the server needs besides its listener.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: Arc<dyn Store>,
    /// Who may call: open, or by the tokens of `--tokens` (SPEC §5).
    pub access: Arc<Access>,
    /// Payload types the server can read and serve.
    pub registry: Registry,
    pub clock: Arc<dyn Clock>,
    /// Longest a Wait (or Claim long-poll) blocks (`--max-wait`).
    pub max_wait: Duration,
    /// After a cancel, how long a running operation's worker has to stop
    /// before the server ends it as CANCELLED (`--cancel-grace`).
    pub cancel_grace: Duration,
    /// How long done operations are kept (`--retention`).
    pub retention: Duration,
    /// Backoff between attempts after a retryable error.
    pub retry_backoff: longrun_store::Backoff,
    /// How often leases, timeouts, cancel grace and retention are enforced.
    pub sweep_interval: Duration,
    /// Connections, timeouts and blocked calls.
    pub limits: Limits,
    /// Which hosts, origins and proxies the server believes.
    pub exposure: Exposure,
    /// Serve TLS with this configuration ([`tls_config`]); plain text
    /// (HTTP/1.1 and h2c) when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The server's metrics; writes through [`Config::counted_store`] count
    /// in them.
    pub(crate) metrics: Arc<metrics::Metrics>,
}

impl Config {
    /// SPEC defaults: built-in types only, system clock (use a
    /// [`StoreClock`] when several nodes share the store), 60 s max wait,
    /// 30 s cancel grace, 30 days retention; retries back off from 1 s to
    /// 5 min; sweeps every 500 ms.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            access: Arc::new(Access::open()),
            registry: Registry::new(),
            clock: Arc::new(SystemClock),
            max_wait: Duration::from_secs(60),
            cancel_grace: Duration::from_secs(30),
            retention: Duration::from_secs(30 * 24 * 60 * 60),
            retry_backoff: longrun_store::Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            sweep_interval: Duration::from_millis(500),
            limits: Limits::default(),
            exposure: Exposure::default(),
            tls: None,
            metrics: metrics::Metrics::new(),
        }
    }

    /// The store as the server uses it: operations created, finished and
    /// re-queued through it are counted in the server's metrics. Give this
    /// one (not `store`) to a `longrun_runtime::Runtime` and to your own
    /// routes, so their work is counted too.
    pub fn counted_store(&self) -> Arc<dyn Store> {
        Arc::new(counted::Counted {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// The id of the request being served, in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// Serves REST and gRPC on `listener` until `shutdown` resolves, then stops
/// accepting, wakes blocked waiters and finishes in-flight requests.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, config, axum::Router::new(), shutdown).await
}

/// Like [`run`], also serving an embedding service's own `routes` (its API
/// methods that start operations) on the same address, behind the same
/// request ids and logs. Its paths must not collide with longrun's
/// (`/v1/{…}/operations…`, `/healthz`, `/readyz`, `/metrics`, the gRPC services).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    routes: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = CancellationToken::new();
    let service = Arc::new(Service::new(&config, stopping.clone()));
    let sweeper = tokio::spawn(service.clone().sweep_until_shutdown());
    tokio::spawn(service.clone().index_older_operations());
    let rest = routes.merge(rest::router(service.clone()));
    let grpc = grpc::router(service.clone());
    let app = axum::Router::new()
        .fallback(move |request: Request| by_protocol(rest.clone(), grpc.clone(), request))
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            rest::guard::check_host,
        ))
        .layer(axum::middleware::from_fn(request_context));
    let address = listener.local_addr()?;
    tracing::info!(%address, max_connections = config.limits.max_connections, "serving REST and gRPC");
    let signal = stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        signal.cancel();
    });
    let served = connections::serve(listener, app, config.limits.clone(), config.tls.clone(), stopping).await;
    // The sweeper stops on the same signal; a panic in it is a bug to report.
    if let Err(err) = sweeper.await {
        tracing::error!(error = %err, "the sweeper task failed");
    }
    served
}

/// gRPC calls (`content-type: application/grpc…`) go to the gRPC services,
/// everything else to REST: each protocol answers its own unknown paths in
/// its own terms (gRPC `UNIMPLEMENTED`, REST a JSON `NOT_FOUND`).
async fn by_protocol(rest: axum::Router, grpc: axum::Router, request: Request) -> Response {
    use tower::ServiceExt as _;
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    let router = if is_grpc { grpc } else { rest };
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Gives each request an id (the caller's `x-request-id` if sane), a tracing
/// span carrying it, a log line when it finishes, and the id in the response.
async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!("request", request_id = %request_id, method = %request.method(), path = %request.uri().path());
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "served"
        );
    });
    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
