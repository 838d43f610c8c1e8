//! Storage for operations: the API every backend implements.
//!
//! [`Store`] is what the server and the runtime code against; the backends
//! live in their own crates (`longrun-store-sqlite`, the embedded default,
//! and `longrun-store-postgres`, for several nodes on one database), and
//! every one of them passes [`conformance::run_tests`]. This crate also
//! holds what backends share: the filter-to-SQL compiler ([`sql`], one
//! compiler, one dialect per backend), the claim long-poll
//! ([`claim_or_wait`]) and the clocks ([`Clock`], [`StoreClock`]).
//!
//! The lifecycle rules are not here: a backend reads an operation, asks
//! [`longrun_types::lifecycle`] what may happen to it, and writes the
//! answer. Contract every backend keeps:
//! - An acknowledged write is durable: the call returns only after the data
//!   is on stable storage.
//! - Each state change is one statement fenced by what was read (state,
//!   attempt, lease, cancellation: [`Fence`]); when nothing matches, the
//!   call reports *why* ([`Error::NotFound`], [`Error::FailedPrecondition`],
//!   [`Error::Aborted`]) and changes nothing.
//! - A done operation has exactly one outcome (enforced by the schema too).
//! - [`Store::changes`] announces each committed change, after the commit,
//!   on every node that shares the store, so a waiter that re-reads sees it.
//! - Errors say whose fault they are: [`Error::Unavailable`] only for a
//!   lost connection or a timeout (callers may retry), [`Error::Internal`]
//!   for everything else that went wrong inside; both keep their source.

mod claim;
mod clock;
#[cfg(any(test, feature = "conformance"))]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.
pub mod conformance;
pub mod micros;
pub mod sql;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::broadcast;

use longrun_types::filter::{Filter, Indexed};
use longrun_types::lifecycle::{Refusal, Step};
use longrun_types::{Operation, OperationName, Outcome, Parent, Payload, State};

pub use claim::{ClaimWaiters, claim_or_wait};
pub use clock::{Clock, StoreClock, SystemClock};
pub use longrun_types::lifecycle::{Backoff, Swept};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The underlying error of a fault, kept for the log.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// An error and every error under it, `a: b: c`: drivers often say little
/// at the top ("db error") and the rest in their sources.
fn chain(error: &Source) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// Why a store call did not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("operation {0:?} not found")]
    NotFound(String),
    #[error("operation {0:?} already exists")]
    AlreadyExists(String),
    /// The operation is not in a state that allows the call.
    #[error("{reason}")]
    FailedPrecondition { name: String, reason: String },
    /// The caller's lease is stale or wrong; nothing changed.
    #[error("{reason}")]
    Aborted { name: String, reason: String },
    /// The database could not be reached in time: a lost connection, a
    /// timeout, no free connection. Retrying may succeed.
    #[error("the store is unavailable: {}", chain(cause))]
    Unavailable { cause: Source },
    /// A fault inside the store: a constraint violation, an SQL bug, an I/O
    /// error. Never the caller's to fix, and never shown to them.
    #[error("store fault: {}", chain(cause))]
    Internal { cause: Source },
    /// Data in the store that should be impossible.
    #[error("store data is inconsistent: {0}")]
    Corrupt(String),
}

impl Error {
    /// An outage: `cause` is a driver error or a message.
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable {
            cause: Arc::from(cause.into()),
        }
    }

    /// A fault: `cause` is a driver error or a message.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal {
            cause: Arc::from(cause.into()),
        }
    }

    /// The error for a lifecycle refusal of the operation `name`.
    pub fn refused(name: &str, refusal: &Refusal) -> Self {
        let (name, reason) = (name.to_owned(), refusal.message(name));
        match refusal {
            Refusal::LeaseRequired { .. } | Refusal::LeaseLost | Refusal::External => Self::Aborted { name, reason },
            Refusal::Done(_) | Refusal::NotClaimed | Refusal::Transition { .. } => {
                Self::FailedPrecondition { name, reason }
            }
        }
    }
}

/// A new operation, fully decided by the caller (name, clock reading).
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub name: OperationName,
    pub request_id: Option<String>,
    pub queue: Option<String>,
    pub input: Option<Payload>,
    pub metadata: Option<Payload>,
    /// The metadata's filterable values (`metadata.<path>`), as the
    /// server's type registry reads them.
    pub indexed: Vec<Indexed>,
    pub verb: String,
    pub target: String,
    pub api_version: String,
    pub max_attempts: i32,
    pub timeout: Option<Duration>,
    pub now: SystemTime,
}

impl NewOperation {
    /// An external operation named `name`, created at `now`, with nothing
    /// else set and 3 attempts; set the public fields for the rest.
    pub fn new(name: OperationName, now: SystemTime) -> Self {
        Self {
            name,
            request_id: None,
            queue: None,
            input: None,
            metadata: None,
            indexed: Vec::new(),
            verb: String::new(),
            target: String::new(),
            api_version: String::new(),
            max_attempts: 3,
            timeout: None,
            now,
        }
    }

    /// The same, waiting in `queue` for a worker.
    pub fn queued(name: OperationName, queue: impl Into<String>, now: SystemTime) -> Self {
        Self {
            queue: Some(queue.into()),
            ..Self::new(name, now)
        }
    }

    /// The state it starts in.
    pub fn state(&self) -> State {
        longrun_types::lifecycle::initial_state(self.queue.is_some())
    }

    /// When it ends with DEADLINE_EXCEEDED if still not done.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.timeout.map(|timeout| self.now + timeout)
    }
}

/// What [`Store::create`] did.
#[derive(Debug, Clone)]
pub struct Created {
    pub operation: Operation,
    /// True when a previous request with the same request id created it.
    pub existed: bool,
}

/// What [`Store::cancel`] did.
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub operation: Operation,
    /// This call ended the operation (it was queued), rather than only
    /// asking its worker to stop or finding it done.
    pub ended: bool,
}

/// A page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// The parent; ids of `-` match any value.
    pub parent: Parent,
    pub filter: Filter,
    /// Resume strictly after this position (from [`Listed::cursor`]).
    pub after: Option<Cursor>,
    pub limit: usize,
    /// Only operations whose name is one of these prefixes or lies below
    /// one (whole segments); `None` for all. What the caller may see.
    pub within: Option<Vec<String>>,
}

/// A keyset position in the newest-first order: creation time (µs since
/// the epoch), then the store's sequence number. Opaque outside stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub create_time: i64,
    pub seq: i64,
}

#[derive(Debug, Clone)]
pub struct Listed {
    pub operation: Operation,
    pub cursor: Cursor,
}

/// A progress report (SPEC §3 Update).
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub lease_token: Option<String>,
    pub metadata: Option<Payload>,
    /// With `metadata`: its filterable values, replacing the previous ones.
    pub indexed: Vec<Indexed>,
    pub progress_percent: Option<i32>,
    pub status_detail: Option<String>,
}

/// A request to finish an operation (SPEC §3 Complete).
#[derive(Debug, Clone)]
pub struct Completion {
    pub lease_token: Option<String>,
    pub outcome: Outcome,
    /// With a response: its filterable values (`response.<path>`).
    pub indexed: Vec<Indexed>,
    /// For a retryable error: re-queue with this backoff while attempts
    /// remain (queued operations only, and not once cancellation was asked).
    pub retry: Option<Backoff>,
}

impl Completion {
    /// Finishes with `outcome`: no lease, no retry, nothing indexed.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            lease_token: None,
            outcome,
            indexed: Vec::new(),
            retry: None,
        }
    }
}

/// An operation stored before its custom fields were indexed (an older
/// schema), with the payloads to index them from.
#[derive(Debug, Clone)]
pub struct Unindexed {
    pub name: OperationName,
    pub metadata: Option<Payload>,
    pub response: Option<Payload>,
}

/// A worker asking for the next queued operation (SPEC §3 Claim).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Operations whose parent is this one or lies below it.
    pub parent: Parent,
    pub queue: String,
    pub worker: String,
    pub lease_duration: Duration,
    pub now: SystemTime,
    /// Only operations whose name is one of these prefixes or lies below
    /// one; `None` for all. What the worker may claim.
    pub within: Option<Vec<String>>,
    /// Most operations to lease at once, oldest first (at least one).
    pub limit: usize,
}

/// What the background sweep enforces (SPEC §3, §4).
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// A running operation whose cancellation was asked this long ago ends
    /// as CANCELLED, and its worker is fenced off.
    pub cancel_grace: Duration,
    /// Done operations older than this are deleted.
    pub retention: Duration,
    /// Most operations deleted per sweep, so one sweep stays short.
    pub purge_batch: usize,
}

/// One thing a sweep did to one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepEvent {
    pub name: String,
    pub queue: Option<String>,
    pub kind: Swept,
}

/// What a fenced statement checks is unchanged since the operation was
/// read: everything a lifecycle decision depends on. A backend writes it as
/// `WHERE name = ? AND state = ? AND attempt = ? AND lease_token IS ? AND
/// cancel_requested = ?`, so a decision made on a stale read changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub state: State,
    pub attempt: i32,
    pub lease_token: Option<String>,
    pub cancel_requested: bool,
}

impl Fence {
    /// The fence of a live operation as read.
    pub fn of(op: &Operation) -> Self {
        Self {
            state: op.state,
            attempt: op.attempt,
            lease_token: op.lease.as_ref().map(|lease| lease.token.clone()),
            cancel_requested: op.cancel_requested,
        }
    }
}

/// A new lease token: 128 random bits, in hex.
pub fn lease_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// How much work waits in, and is held from, one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    pub queued: u64,
    pub leased: u64,
}

/// A committed change, announced on [`Store::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub done: bool,
    /// Set when the operation was deleted.
    pub deleted: bool,
    /// The queue, when the change made the operation claimable.
    pub queued: Option<String>,
    /// Where the change feed stood once this change was announced: every
    /// change at or before this position has been announced by then. A
    /// reader that resumes from here ([`Store::changes_after`]) may see
    /// some changes again, never miss one. Set by the store when it logs
    /// the change.
    pub position: u64,
}

impl Change {
    /// What writing `step` on `op` announces.
    pub fn of_step(op: &Operation, step: &Step) -> Self {
        Self {
            name: op.name.to_string(),
            done: step.to().is_done(),
            deleted: false,
            queued: matches!(step, Step::Requeue { .. }).then(|| op.queue.clone()).flatten(),
            position: 0,
        }
    }
}

/// How long the change feed keeps a change for [`Store::changes_after`].
pub const CHANGE_RETENTION: std::time::Duration = std::time::Duration::from_secs(600);

/// The storage API. Times come from the caller so that stores never read a
/// clock and tests control time.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// Creates an operation, or returns the one an earlier request with the
    /// same `request_id` under the same parent created.
    async fn create(&self, new: NewOperation) -> Result<Created>;
    async fn get(&self, name: &OperationName) -> Result<Operation>;
    /// Up to `limit` operations after the cursor, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Listed>>;
    /// Queued → CANCELLED at once; running → `cancel_requested`; done → unchanged.
    async fn cancel(&self, name: &OperationName, now: SystemTime) -> Result<Cancelled>;
    async fn delete(&self, name: &OperationName) -> Result<()>;
    async fn update(&self, name: &OperationName, update: Update, now: SystemTime) -> Result<Operation>;
    async fn complete(&self, name: &OperationName, completion: Completion, now: SystemTime) -> Result<Operation>;
    /// Several completions, each on its own as [`Store::complete`] makes it
    /// (one refused or failing does not undo the others); results in the
    /// same order. Backends commit them together where they can.
    async fn complete_many(
        &self,
        completions: Vec<(OperationName, Completion)>,
        now: SystemTime,
    ) -> Vec<Result<Operation>> {
        let mut results = Vec::with_capacity(completions.len());
        for (name, completion) in completions {
            results.push(self.complete(&name, completion, now).await);
        }
        results
    }
    /// Committed changes, for waiters: each announced after its commit, on
    /// every node sharing the store (a new receiver may also see what
    /// committed just before it subscribed). A lagging receiver must
    /// re-read.
    fn changes(&self) -> broadcast::Receiver<Change>;
    /// The change feed's position now: every change at or before it has
    /// been announced on [`Store::changes`].
    async fn position(&self) -> Result<u64>;
    /// Up to `limit` changes after `position`, in feed order, each with the
    /// position to resume from after it; `None` when the feed no longer
    /// reaches back to `position` (kept for [`CHANGE_RETENTION`]) or never
    /// had it (another store's).
    async fn changes_after(&self, position: u64, limit: usize) -> Result<Option<Vec<Change>>>;
    /// Leases the oldest claimable operations of `queue` under the parent,
    /// up to `request.limit`, each with a lease token of its own; oldest
    /// first, none when nothing is claimable.
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Operation>>;
    /// Hands a leased operation back to its queue without using up an
    /// attempt: the worker is shutting down, not failing.
    async fn release(&self, name: &OperationName, lease_token: &str, now: SystemTime) -> Result<Operation>;
    /// When the next queued operation of `queue` under `parent` becomes
    /// claimable (its retry backoff ends), if any is waiting.
    async fn next_claimable(&self, parent: &Parent, queue: &str) -> Result<Option<SystemTime>>;
    /// Ends or re-queues operations whose lease, timeout or cancel grace ran
    /// out, and purges old done ones. Safe to run on every node at once.
    async fn sweep(&self, now: SystemTime, policy: SweepPolicy) -> Result<Vec<SweepEvent>>;
    /// Queued and leased operations per queue.
    async fn queue_stats(&self) -> Result<Vec<QueueStats>>;
    /// Up to `limit` operations whose custom fields are not indexed yet
    /// (written by an older version).
    async fn unindexed(&self, limit: usize) -> Result<Vec<Unindexed>>;
    /// Replaces the indexed custom fields of an operation from
    /// [`Store::unindexed`] and marks it indexed.
    async fn reindex(&self, name: &OperationName, indexed: Vec<Indexed>) -> Result<()>;
    /// A secret shared by every node on this store, for signing page tokens.
    fn page_token_key(&self) -> [u8; 32];
    /// Succeeds when the store can serve reads.
    async fn check_ready(&self) -> Result<()>;
    /// The time by the store's clock. Every node sharing the store reads
    /// the same clock here, so leases and deadlines mean the same on each
    /// ([`StoreClock`]); an embedded store answers with the system clock.
    async fn time(&self) -> Result<SystemTime>;
}
