//! The end-to-end drain through in-process handlers: a service that embeds
//! `longrun-runtime` claims and completes straight on the store, with no
//! HTTP between its workers and the database (the shape graphile-worker and
//! procrastinate have).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use longrun_runtime::{Context, Error, Handler, Runtime, Struct};
use longrun_store::Store;
use longrun_types::Parent;

/// No operation handled for this long: something is wrong, stop.
const STALLED: Duration = Duration::from_secs(30);

/// Counts the operations it was handed; the work itself is nothing.
struct Trivial {
    handled: Arc<AtomicUsize>,
}

#[longrun_runtime::async_trait]
impl Handler for Trivial {
    type Input = Struct;
    type Output = Struct;
    type Metadata = Struct;

    async fn run(&self, _ctx: Context<Struct>, _input: Struct) -> Result<Struct, Error> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(Struct::default())
    }
}

/// The store the server runs on, opened again by this process.
pub(crate) async fn open_store(store: &str) -> anyhow::Result<Arc<dyn Store>> {
    if store.starts_with("postgres") {
        let opened = longrun_store_postgres::PostgresStore::connect(store)
            .await
            .context("cannot open the PostgreSQL store")?;
        return Ok(Arc::new(opened));
    }
    let path = store.strip_prefix("sqlite:").unwrap_or(store);
    Ok(Arc::new(
        longrun_store_sqlite::SqliteStore::open(path).context("cannot open the SQLite store")?,
    ))
}

/// Runs `workers` in-process handler slots on `queue` under `parent` until
/// `count` operations are handled and nothing of the queue is queued or
/// leased any more (every completion committed). Returns the time taken.
pub(crate) async fn drain(
    store: Arc<dyn Store>,
    parent: &str,
    queue: &str,
    count: usize,
    workers: usize,
) -> anyhow::Result<Duration> {
    let handled = Arc::new(AtomicUsize::new(0));
    let runtime = Runtime::new(store.clone())
        .parent(Parent::parse(parent)?)
        .worker("bench-in-process")
        .concurrency(workers)
        .handle(
            queue,
            Trivial {
                handled: handled.clone(),
            },
        );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(runtime.run(async move {
        let _ = stopped.await;
    }));
    let mut progress = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now_handled = handled.load(Ordering::Relaxed);
        if now_handled != progress.0 {
            progress = (now_handled, Instant::now());
        } else if progress.1.elapsed() > STALLED {
            anyhow::bail!("the in-process drain stalled at {now_handled} of {count} operations");
        }
        if now_handled < count {
            continue;
        }
        let stats = store.queue_stats().await?;
        let left = stats
            .iter()
            .find(|stats| stats.queue == queue)
            .map_or(0, |stats| stats.queued + stats.leased);
        if left == 0 {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    running.await?;
    Ok(elapsed)
}
