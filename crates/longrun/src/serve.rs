//! `longrun serve`.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, ServeArgs};
use longrun_proto::Registry;
use longrun_server::Access;
use longrun_store::{Clock, Store, StoreClock, SystemClock};
use longrun_store_postgres::PostgresStore;
use longrun_store_sqlite::SqliteStore;

/// After SIGTERM, in-flight requests get this long before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _log = init_logging(args.log_format);
    let access = match &args.tokens {
        Some(path) => {
            let access = Access::from_file(path).map_err(|err| anyhow::anyhow!("--tokens: {err}"))?;
            tracing::info!(path = %path.display(), "callers need a bearer token (reloaded on SIGHUP)");
            Arc::new(access)
        }
        None => Arc::new(Access::open()),
    };
    if access.is_open() && !args.listen.ip().is_loopback() && !args.allow_unauthenticated {
        bail!(
            "refusing to serve without authentication on non-loopback address {}; \
             give --tokens FILE, or pass --allow-unauthenticated to do so anyway",
            args.listen
        );
    }
    if args.tokens.is_some() {
        tokio::spawn(reload_on_hangup(access.clone()));
    }
    // Listen first: a taken port fails before the store is opened (and
    // perhaps migrated).
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (store, clock) = open_store(&args).await?;
    let mut registry = Registry::new();
    for path in &args.descriptors {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read descriptor set {}", path.display()))?;
        registry
            .load_descriptor_set(&bytes)
            .with_context(|| format!("descriptor set {}", path.display()))?;
        tracing::info!(path = %path.display(), "loaded payload types");
    }
    let mut config = longrun_server::Config::new(store);
    config.limits = longrun_server::Limits {
        max_connections: connection_budget(args.max_connections),
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        idle_timeout: args.idle_timeout,
        max_waiters: args.max_waiters,
        max_waiters_per_principal: args.max_waiters_per_principal,
        ..longrun_server::Limits::default()
    };
    config.access = access;
    config.exposure = longrun_server::Exposure {
        hosts: if args.listen.ip().is_loopback() {
            longrun_server::Hosts::Loopback(args.allowed_hosts.clone())
        } else if args.allowed_hosts.is_empty() {
            longrun_server::Hosts::Any
        } else {
            longrun_server::Hosts::Only(args.allowed_hosts.clone())
        },
        allowed_origins: args.allowed_origins.clone(),
        trust_forwarded: args.trust_forwarded_headers,
        tls: args.tls_cert.is_some(),
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls =
            Some(longrun_server::tls_config(cert, key).map_err(|err| anyhow::anyhow!("--tls-cert/--tls-key: {err}"))?);
        tracing::info!(cert = %cert.display(), "serving TLS (h2 and http/1.1)");
    }
    config.clock = clock;
    config.registry = registry;
    config.max_wait = args.max_wait;
    config.cancel_grace = args.cancel_grace;
    config.retention = args.retention;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    };
    let server = longrun_server::run(listener, config, shutdown);
    let deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.context("server failed")?,
        () = deadline => tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; exiting anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// File descriptors kept for the store, logs and the rest.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the process's open-file limit as far as it may go, and returns
/// `wanted` connections, or fewer when the limit cannot hold them beside
/// what the process needs otherwise: past the limit, `accept` fails and
/// every client is refused.
fn connection_budget(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            wanted,
            open_files = limit,
            max_connections = room,
            "the open-file limit holds fewer connections than --max-connections; raise it (ulimit -n) to serve more"
        );
        return room;
    }
    wanted
}

/// Reads the tokens file again on every SIGHUP; connections and requests in
/// flight are untouched. A file that does not parse keeps the old tokens.
async fn reload_on_hangup(access: Arc<Access>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGHUP; tokens will not be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match access.reload() {
            Ok(count) => tracing::info!(tokens = count, "reloaded the tokens file"),
            Err(err) => tracing::error!(error = %err, "the tokens file did not reload; keeping the previous tokens"),
        }
    }
}

/// Opens `--store` and the clock that goes with it: the system clock for
/// the one node on an SQLite file; the database's clock for the nodes that
/// share a PostgreSQL database, so that they measure leases alike.
async fn open_store(args: &ServeArgs) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Clock>)> {
    let url = args.store.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = longrun_store_postgres::Options {
            pool_size: args.store_pool_size,
        };
        let store: Arc<dyn Store> = Arc::new(
            PostgresStore::connect_with(url, options)
                .await
                .with_context(|| format!("cannot open the PostgreSQL store at {}", redacted(url)))?,
        );
        tracing::info!(
            url = %redacted(url),
            pool_size = args.store_pool_size,
            "opened PostgreSQL store (schema longrun)"
        );
        let clock = StoreClock::start(store.clone(), StoreClock::REFRESH)
            .await
            .context("cannot read the database's clock")?;
        return Ok((store, clock));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        bail!("--store {url:?} names no file; use sqlite:PATH");
    }
    let store = SqliteStore::open(path).with_context(|| format!("cannot open SQLite store {path}"))?;
    tracing::info!(
        path,
        durability = "WAL, synchronous=FULL, group commit",
        "opened SQLite store"
    );
    Ok((Arc::new(store), Arc::new(SystemClock)))
}

/// `url` without its password (in the authority or the query), for logs
/// and errors.
fn redacted(url: &str) -> String {
    let (address, query) = url
        .split_once('?')
        .map_or((url, None), |(address, query)| (address, Some(query)));
    let address = match address.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
                format!("{scheme}://{user}@{host}")
            }
            None => address.to_owned(),
        },
        None => address.to_owned(),
    };
    let Some(query) = query else { return address };
    let query: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.to_ascii_lowercase().starts_with("password="))
        .collect();
    if query.is_empty() {
        address
    } else {
        format!("{address}?{}", query.join("&"))
    }
}

/// Lines the log thread may fall behind before loggers wait for it (the
/// queue is allocated whole: 16k lines take 0.5 MB).
const LOG_LINES_QUEUED: usize = 16 * 1024;

/// Logs to stderr through a thread of its own: a request's lines are
/// formatted where they happen, then written by that thread, which drains
/// every line waiting into one buffer and writes it at once. Under load,
/// formatting and writing the log lines took a quarter of the request
/// threads' CPU, half of it a write to stderr (and a wake-up of its reader)
/// per line (BENCHMARKS.md, durable creates). Nothing is dropped: when the
/// thread falls behind, loggers wait for it. Lines still queued are written
/// when the returned guard drops, so the caller holds it until it returns.
#[must_use = "lines still queued are written when the guard drops"]
pub fn init_logging(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_QUEUED)
        .thread_name("longrun-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    // Colours only for a person at a terminal, not in a file or a journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        // The request's span once, as `span`: the list of enclosing spans
        // would repeat it on every line.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/ops"),
            "postgres://app@db:5432/ops"
        );
        assert_eq!(
            redacted("postgres://app@db/ops?password=s3cret&sslmode=disable"),
            "postgres://app@db/ops?sslmode=disable"
        );
        assert_eq!(redacted("postgresql://db/ops"), "postgresql://db/ops");
    }
}
