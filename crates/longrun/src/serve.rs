//! `longrun serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, ServeArgs};
use longrun_proto::Registry;
use longrun_store::{SqliteStore, Store};

/// After SIGTERM, in-flight requests get this long before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    if !args.listen.ip().is_loopback() && !args.allow_unauthenticated {
        bail!(
            "refusing to serve without authentication on non-loopback address {}; \
             pass --allow-unauthenticated to do so anyway",
            args.listen
        );
    }
    let store = open_store(&args.store)?;
    let mut registry = Registry::new();
    for path in &args.descriptors {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read descriptor set {}", path.display()))?;
        registry
            .load_descriptor_set(&bytes)
            .with_context(|| format!("descriptor set {}", path.display()))?;
        tracing::info!(path = %path.display(), "loaded payload types");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut config = longrun_server::Config::new(store);
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

fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!("the PostgreSQL store is not available in this release; use --store sqlite:PATH");
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
    Ok(Arc::new(store))
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
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
