//! Claim loops, job supervision and completion.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::Job;
use crate::{Context, Error, Handler};
use longrun_proto::Registry;
use longrun_store::{Backoff, ClaimRequest, Clock, Completion, Store, SystemClock, Update};
use longrun_types::{Code, Operation, OperationName, Outcome, Parent, Payload};
use tracing::Instrument as _;

/// How long one claim long-polls before asking again.
const CLAIM_WAIT: Duration = Duration::from_secs(30);
/// Most operations one claim takes (bounded by free concurrency slots).
const CLAIM_BATCH: usize = 32;

/// Runs typed handlers for queues. Build it with [`Runtime::new`] and
/// [`Runtime::handle`], then [`Runtime::run`] it until shutdown.
pub struct Runtime {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: Registry,
    parent: Parent,
    worker: String,
    lease: Duration,
    concurrency: usize,
    retry: Backoff,
    handlers: Vec<(String, Arc<dyn Erased>)>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queues: Vec<&str> = self.handlers.iter().map(|(queue, _)| queue.as_str()).collect();
        f.debug_struct("Runtime")
            .field("worker", &self.worker)
            .field("queues", &queues)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Defaults: every parent, a 30 s lease, 4 operations at a time, retries
    /// backing off from 1 s to 5 min.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            registry: Registry::new(),
            parent: Parent::root(),
            worker: format!("longrun-runtime-{}", std::process::id()),
            lease: Duration::from_secs(30),
            concurrency: 4,
            retry: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            handlers: Vec::new(),
        }
    }

    /// Runs `handler` for operations of `queue`.
    pub fn handle<H: Handler>(mut self, queue: impl Into<String>, handler: H) -> Self {
        self.handlers.push((queue.into(), Arc::new(Typed(handler))));
        self
    }

    /// Only operations under this parent (and below it).
    pub fn parent(mut self, parent: Parent) -> Self {
        self.parent = parent;
        self
    }

    /// The worker name recorded in leases.
    pub fn worker(mut self, name: impl Into<String>) -> Self {
        self.worker = name.into();
        self
    }

    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Most operations run at once, across all queues.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// The type registry the server uses (with its `--descriptors`), so
    /// that the custom fields of metadata and responses written here are
    /// filterable. Without it, only longrun's built-in types are indexed.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// The clock leases are measured by: the server's, so that both agree
    /// (a [`longrun_store::StoreClock`] when several nodes share the store).
    /// The system clock by default.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry = backoff;
        self
    }

    /// Claims and runs operations until `shutdown` resolves; then asks the
    /// running handlers to stop, waits for them, and hands back what they
    /// did not finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let stop = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let (completions, pending) = mpsc::unbounded_channel();
        // Ends when the last job has reported, with the claim loops.
        let reporter = tokio::spawn(report_completions(self.store.clone(), self.clock.clone(), pending));
        let shared = Arc::new(Shared {
            store: self.store,
            clock: self.clock,
            registry: self.registry,
            parent: self.parent,
            worker: self.worker,
            lease: self.lease,
            retry: self.retry,
            completions,
            reporting: Arc::new(Semaphore::new(self.concurrency)),
        });
        let mut loops = JoinSet::new();
        for (queue, handler) in self.handlers {
            loops.spawn(claim_loop(
                shared.clone(),
                queue,
                handler,
                permits.clone(),
                stop.clone(),
            ));
        }
        shutdown.await;
        tracing::info!("runtime stopping: handing back unfinished operations");
        stop.cancel();
        while loops.join_next().await.is_some() {}
        drop(shared);
        let _ = reporter.await;
    }
}

struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: Registry,
    parent: Parent,
    worker: String,
    lease: Duration,
    retry: Backoff,
    /// Finished jobs' outcomes, for [`report_completions`].
    completions: mpsc::UnboundedSender<PendingCompletion>,
    /// Finished jobs whose outcomes are being written: as many as there
    /// are slots. A job hands its slot on when its handler returns, so the
    /// next claim overlaps the write of the last outcomes; this bounds
    /// how many outcomes wait to be written.
    reporting: Arc<Semaphore>,
}

/// A job's outcome waiting to be written, and who waits for the answer.
type PendingCompletion = (
    OperationName,
    Completion,
    oneshot::Sender<longrun_store::Result<Operation>>,
);

/// Most completions written together.
const COMPLETION_BATCH: usize = 64;

impl Shared {
    /// Writes a job's outcome, together with whatever other jobs finished
    /// meanwhile.
    async fn complete(&self, name: OperationName, completion: Completion) -> longrun_store::Result<Operation> {
        let (answer, answered) = oneshot::channel();
        let stopped = || longrun_store::Error::internal("the runtime's reporter has stopped");
        self.completions
            .send((name, completion, answer))
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Writes completions as jobs finish: one at a time when they come one at
/// a time, and whatever piled up meanwhile as one batch, so that a busy
/// runtime commits many outcomes at once and an idle one waits for none.
async fn report_completions(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut pending: mpsc::UnboundedReceiver<PendingCompletion>,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < COMPLETION_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (completions, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|(name, completion, answer)| ((name, completion), answer))
            .unzip();
        let results = store.complete_many(completions, clock.now()).await;
        for (result, answer) in results.into_iter().zip(answers) {
            // The job may have gone; the write stands regardless.
            let _ = answer.send(result);
        }
    }
}

/// Claims from one queue while the runtime runs. A concurrency slot is
/// taken only once the queue has something claimable, so an idle queue
/// never holds one that another queue's work could use.
async fn claim_loop(
    shared: Arc<Shared>,
    queue: String,
    handler: Arc<dyn Erased>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let mut jobs = JoinSet::new();
    // The last claim took all it asked for: there is likely more, so claim
    // again without first asking the store whether there is.
    let mut more = false;
    loop {
        while jobs.try_join_next().is_some() {}
        if !more {
            match work_arrives(&shared, &queue, &stop).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(err) => {
                    tracing::warn!(%queue, error = %err, "cannot watch the queue; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            }
        }
        let first = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit { Ok(permit) => permit, Err(_) => break },
            () = stop.cancelled() => break,
        };
        // As many as there are free slots, in one claim. Jobs whose
        // completions were written together finish together: let the
        // others hand back their slots first.
        tokio::task::yield_now().await;
        let mut permits_held = vec![first];
        while permits_held.len() < CLAIM_BATCH {
            match permits.clone().try_acquire_owned() {
                Ok(permit) => permits_held.push(permit),
                Err(_) => break,
            }
        }
        let request = ClaimRequest {
            parent: shared.parent.clone(),
            queue: queue.clone(),
            worker: shared.worker.clone(),
            lease_duration: shared.lease,
            now: shared.clock.now(),
            within: None,
            limit: permits_held.len(),
        };
        // Another claimer may have been faster: then nothing is claimed and
        // the loop waits for the next one; unused slots go back.
        let asked = permits_held.len();
        match shared.store.claim(request).await {
            Ok(claimed) => {
                more = claimed.len() == asked;
                for (operation, permit) in claimed.into_iter().zip(permits_held) {
                    let span = tracing::info_span!("job", op.name = %operation.name, attempt = operation.attempt);
                    jobs.spawn(
                        run_job(shared.clone(), handler.clone(), operation, stop.clone(), permit).instrument(span),
                    );
                }
            }
            Err(err) => {
                more = false;
                tracing::warn!(%queue, error = %err, "claim failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    while jobs.join_next().await.is_some() {}
}

/// Waits until `queue` (under the runtime's parent) may have something to
/// claim: at once if it does now, else when an operation is queued or a
/// retry's backoff ends. `false` when the runtime stops first.
async fn work_arrives(shared: &Shared, queue: &str, stop: &CancellationToken) -> longrun_store::Result<bool> {
    // Subscribe before looking, so nothing queued in between is missed.
    let mut changes = shared.store.changes();
    let wake = match shared.store.next_claimable(&shared.parent, queue).await? {
        Some(at) => {
            let wait = at.duration_since(shared.clock.now()).unwrap_or_default();
            if wait.is_zero() {
                return Ok(true);
            }
            tokio::time::Instant::now() + wait.min(CLAIM_WAIT)
        }
        None => tokio::time::Instant::now() + CLAIM_WAIT,
    };
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.queued.as_deref() == Some(queue) => return Ok(true),
                Ok(_) => {}
                // Missed some: look again.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return Ok(true),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(false),
            },
            () = tokio::time::sleep_until(wake) => return Ok(true),
            () = stop.cancelled() => return Ok(false),
        }
    }
}

async fn run_job(
    shared: Arc<Shared>,
    handler: Arc<dyn Erased>,
    operation: Operation,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let Some(lease) = operation.lease.clone() else { return };
    let job = Arc::new(Job {
        store: shared.store.clone(),
        clock: shared.clock.clone(),
        registry: shared.registry.clone(),
        name: operation.name.clone(),
        lease_token: lease.token,
        attempt: operation.attempt,
        stop: shutdown.child_token(),
        cancel_requested: operation.cancel_requested.into(),
        lost: false.into(),
    });
    let finished = CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat(job.clone(), shared.lease / 3, finished.clone()).in_current_span());
    tracing::info!("running");
    let result = handler.run(job.clone(), operation.input).await;
    finished.cancel();
    let _ = heartbeats.await;
    if job.lost.load(Ordering::SeqCst) {
        return;
    }
    let shutting_down = shutdown.is_cancelled() && !job.cancel_requested.load(Ordering::SeqCst);
    let outcome = match result {
        Err(_) if shutting_down => {
            if let Err(err) = shared
                .store
                .release(&job.name, &job.lease_token, shared.clock.now())
                .await
            {
                tracing::warn!(op.name = %job.name, error = %err, "cannot hand the operation back");
            }
            return;
        }
        Err(Error::Lost(_)) => return,
        Ok(payload) => (Outcome::Response(payload), None),
        Err(Error::Retryable(status)) => (Outcome::Error(status), Some(shared.retry)),
        Err(Error::Fatal(status)) => (Outcome::Error(status), None),
    };
    let indexed = match &outcome.0 {
        Outcome::Response(payload) => shared.registry.indexed("response", payload),
        Outcome::Error(_) => Vec::new(),
    };
    let completion = Completion {
        lease_token: Some(job.lease_token.clone()),
        outcome: outcome.0,
        indexed,
        retry: outcome.1,
    };
    // The handler is done with its slot: hand it on while the outcome is
    // written (see `Shared::reporting`).
    let Ok(_reporting) = shared.reporting.clone().acquire_owned().await else {
        return;
    };
    drop(permit);
    match shared.complete(job.name.clone(), completion).await {
        Ok(operation) => tracing::info!(op.name = %job.name, state = %operation.state, "finished"),
        Err(err) => tracing::warn!(op.name = %job.name, error = %err, "cannot report the outcome"),
    }
}

/// Keeps the lease alive until the handler returns (a heartbeat every
/// `every`), and reads the operation at once when it changes, so a cancel
/// arrives without delay.
async fn heartbeat(job: Arc<Job>, every: Duration, finished: CancellationToken) {
    let mut changes = job.store.changes();
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticks.tick().await;
    let key = job.name.to_string();
    loop {
        let changed = tokio::select! {
            _ = ticks.tick() => false,
            change = changes.recv() => match change {
                Ok(change) if change.name == key => true,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            () = finished.cancelled() => return,
        };
        // A change is most often the claim's own: a read tells whether it
        // was a cancel (or the operation was lost) without a write.
        let checked = if changed {
            job.check().await
        } else {
            job.report(Update::default()).await
        };
        if let Err(Error::Lost(_)) = checked {
            return;
        }
    }
}

/// A handler with its types erased, so handlers of different types share a
/// runtime.
#[async_trait::async_trait]
trait Erased: Send + Sync {
    async fn run(&self, job: Arc<Job>, input: Option<Payload>) -> Result<Payload, Error>;
}

struct Typed<H>(H);

#[async_trait::async_trait]
impl<H: Handler> Erased for Typed<H> {
    async fn run(&self, job: Arc<Job>, input: Option<Payload>) -> Result<Payload, Error> {
        use prost::{Message as _, Name as _};
        let input = match input {
            None => H::Input::default(),
            Some(payload) if payload.type_name() == H::Input::full_name() => H::Input::decode(payload.value)
                .map_err(|err| Error::fatal(Code::InvalidArgument, format!("the input does not decode: {err}")))?,
            Some(payload) => {
                return Err(Error::fatal(
                    Code::InvalidArgument,
                    format!(
                        "the input is a {}, but this queue's handler takes {}",
                        payload.type_name(),
                        H::Input::full_name()
                    ),
                ));
            }
        };
        let output = self.0.run(Context::new(job), input).await?;
        Ok(Payload {
            type_url: crate::type_url::<H::Output>(),
            value: output.encode_to_vec().into(),
        })
    }
}
