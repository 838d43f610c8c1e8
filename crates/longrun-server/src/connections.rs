//! Connections: how many the server holds, how long each may dawdle or
//! idle, and how they end.
//!
//! - At most [`Limits::max_connections`] at once. When a new one arrives at
//!   the limit, the connection that has been idle longest (no request in
//!   flight: a keep-alive waiting for its next request, or a client still
//!   trickling in its first headers) is closed to make room; only if every
//!   connection is busy is the newcomer turned away. So idle and slow
//!   connections cannot lock out a client with a real request.
//! - A request's headers must arrive within [`Limits::header_timeout`] (for
//!   HTTP/1 this also bounds how long a keep-alive connection may wait for
//!   its next request), its body within [`Limits::body_timeout`].
//! - A connection with nothing in flight for [`Limits::idle_timeout`] is
//!   closed (HTTP/2 included).
//! - With TLS (`Config::tls`), each connection first completes a handshake
//!   within the header timeout; ALPN offers h2 and http/1.1.
//! - On shutdown every connection finishes what it is serving, then closes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::preface::{Protocol, sniff};

/// What one server allows, with defaults safe for a machine shared with
/// other programs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at once (see the module docs for what happens at
    /// the limit).
    pub max_connections: usize,
    /// How long a request's headers may take to arrive.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, after its headers.
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Wait and Claim calls blocked at once, in all.
    pub max_waiters: usize,
    /// Wait and Claim calls blocked at once for one principal (all
    /// anonymous callers of an open server count as one).
    pub max_waiters_per_principal: usize,
    /// Events a watch stream holds for a client that reads slowly; past
    /// that the stream ends (the client resumes where it left off).
    pub watch_buffer: usize,
    /// How often a quiet watch stream says it is alive.
    pub watch_heartbeat: Duration,
}

impl Default for Limits {
    /// 1,000 connections, 10 s for headers, 30 s for a body, 120 s idle;
    /// 10,000 blocked calls (and watch streams) in all and 2,000 per
    /// principal; 1,024 events held per watch stream, a heartbeat every 15 s.
    fn default() -> Self {
        Self {
            max_connections: 1000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_waiters: 10_000,
            max_waiters_per_principal: 2_000,
            watch_buffer: 1024,
            watch_heartbeat: Duration::from_secs(15),
        }
    }
}

/// How long a connection being closed has to finish its responses.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Closes the connection a request came on; in every request's
/// extensions, for a response that must give up on its client.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionClose(pub CancellationToken);

/// One open connection, as the accept loop and the idle reaper see it.
#[derive(Debug)]
struct Connection {
    /// Requests being served (a response counts until its body is sent).
    in_flight: AtomicUsize,
    /// Milliseconds since the registry's epoch of the last request's end
    /// (or of the connection's start).
    last_active: AtomicU64,
    close: CancellationToken,
}

#[derive(Debug)]
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    /// A std mutex: held to insert, remove or scan, never across `.await`.
    open: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Registry {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Registers a new connection if there is room, closing the longest
    /// idle one to make it; `None` when every connection is busy.
    fn admit(&self, limit: usize) -> Option<(u64, Arc<Connection>)> {
        let mut open = self.lock();
        if open.len() >= limit {
            let idlest = open
                .iter()
                .filter(|(_, conn)| conn.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, conn)| conn.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            if let Some(evicted) = open.remove(&idlest) {
                evicted.close.cancel();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now()),
            close: CancellationToken::new(),
        });
        open.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes connections idle for longer than `idle`.
    fn reap(&self, idle: Duration) {
        let now = self.now();
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let mut open = self.lock();
        open.retain(|_, conn| {
            let quiet = conn.in_flight.load(Ordering::Acquire) == 0
                && now.saturating_sub(conn.last_active.load(Ordering::Relaxed)) > idle;
            if quiet {
                conn.close.cancel();
            }
            !quiet
        });
    }

    fn close_all(&self) {
        for conn in self.lock().values() {
            conn.close.cancel();
        }
    }
}

/// Marks a connection busy while a request is served.
struct Busy {
    conn: Arc<Connection>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(conn: Arc<Connection>, registry: Arc<Registry>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { conn, registry }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.last_active.store(self.registry.now(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` within `limits` until `stop` fires; then lets
/// every connection finish what it serves.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let registry = Arc::new(Registry::new());
    let reaper = {
        let (registry, idle, stop) = (registry.clone(), limits.idle_timeout, stop.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1).min(idle));
            loop {
                tokio::select! {
                    _ = ticks.tick() => registry.reap(idle),
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    let mut connections = JoinSet::new();
    let mut refused = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, conn)) = registry.admit(limits.max_connections) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    limit = limits.max_connections,
                    refused,
                    "every connection is busy; turning new ones away"
                );
            }
            continue;
        };
        let (app, registry, limits, acceptor) = (app.clone(), registry.clone(), limits.clone(), acceptor.clone());
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            match acceptor {
                None => serve_connection(stream, app, conn, registry.clone(), &limits).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app, conn, registry.clone(), &limits).await,
                    Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            registry.remove(id);
        });
    }
    reaper.abort();
    registry.close_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection<S>(
    stream: S,
    app: axum::Router,
    conn: Arc<Connection>,
    registry: Arc<Registry>,
    limits: &Limits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_timeout;
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = Busy::new(conn.clone(), registry.clone());
            let mut request = request.map(|body| Body::new(Timed::new(body, body_timeout)));
            request.extensions_mut().insert(ConnectionClose(conn.close.clone()));
            let app = app.clone();
            async move {
                let response = match app.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| Body::new(Holding { body, _busy: busy })))
            }
        })
    };
    // The protocol first. A connection that sends nothing is idle, as a
    // keep-alive connection between requests is: clients open connections
    // ahead of use, so it is left to the idle reaper (and to eviction when
    // the server is full), not to the header timeout.
    let sniffed = tokio::select! {
        sniffed = sniff(stream) => sniffed,
        () = conn.close.cancelled() => return,
    };
    let (protocol, stream) = match sniffed {
        Ok(sniffed) => sniffed,
        Err(err) => return tracing::debug!(error = %err, "connection failed before its first request"),
    };
    let io = TokioIo::new(stream);
    match protocol {
        Protocol::Http1 => {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(io, service);
            tokio::pin!(connection);
            drive(connection, &conn.close).await;
        }
        Protocol::Http2 => {
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(256)
                .keep_alive_interval(Some(Duration::from_secs(60)))
                .keep_alive_timeout(Duration::from_secs(20))
                .serve_connection(io, service);
            // Boxed: HTTP/1.1 connections, the many, need not carry room
            // for an HTTP/2 connection's larger state.
            drive(Box::pin(connection).as_mut(), &conn.close).await;
        }
    }
}

/// Runs a connection until it ends or `close` fires; then lets it finish
/// its requests in flight.
async fn drive<C>(mut connection: Pin<&mut C>, close: &CancellationToken)
where
    C: GracefulConnection<Error = hyper::Error>,
{
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
        () = close.cancelled() => {
            // Requests in flight get a little while to finish; a client
            // that does not read its response does not hold the
            // connection (or a shutdown) beyond that.
            connection.as_mut().graceful_shutdown();
            if tokio::time::timeout(CLOSE_GRACE, connection).await.is_err() {
                tracing::debug!("closed a connection whose responses did not finish in time");
            }
        }
    }
}

/// A TLS setup for serving: the certificate chain and private key in the
/// PEM files given, TLS 1.2 and 1.3, ALPN offering h2 (gRPC needs it) and
/// http/1.1.
pub fn tls_config(certificates: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(certificates)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("cannot read certificates from {}: {err}", certificates.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", certificates.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| format!("cannot read a private key from {}: {err}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| format!("the certificate and key do not go together: {err}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The request body did not arrive within the body timeout.
#[derive(Debug)]
pub(crate) struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {:?}", self.0)
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that must arrive in full before its deadline.
struct Timed {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Timed {
    fn new(body: Incoming, limit: Duration) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its connection marked busy until it is sent.
struct Holding {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
