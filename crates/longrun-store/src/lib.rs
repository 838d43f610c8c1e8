//! Storage for operations.
//!
//! [`Store`] is the API the server codes against; [`SqliteStore`] is the
//! embedded default. Every backend must pass [`conformance::run_tests`].
//!
//! Contract every backend keeps:
//! - An acknowledged write is durable: the call returns only after the data
//!   is on stable storage.
//! - Each state change is one statement fenced by the current state (and
//!   lease) in its `WHERE`; when nothing matches, the call reports *why*
//!   ([`Error::NotFound`], [`Error::FailedPrecondition`], [`Error::Aborted`])
//!   and changes nothing.
//! - A done operation has exactly one outcome (enforced by the schema too).
//! - [`Store::changes`] announces each committed change, after the commit, so
//!   a waiter that re-reads sees it.

mod claim;
#[cfg(any(test, feature = "conformance"))]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.
pub mod conformance;
mod filter_sql;
mod micros;
mod sqlite;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::broadcast;

use longrun_types::filter::{Filter, Indexed};
use longrun_types::{Operation, OperationName, Outcome, Parent, Payload};

pub use claim::claim_or_wait;
pub use sqlite::SqliteStore;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The database cannot be reached or refused the write.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Data in the store that should be impossible.
    #[error("store data is inconsistent: {0}")]
    Corrupt(String),
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

/// Exponential backoff between attempts: `initial`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `finished + 1`, after attempt `finished` failed.
    pub fn delay(&self, finished: i32) -> Duration {
        let doublings = u32::try_from(finished.saturating_sub(1)).unwrap_or(0).min(30);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swept {
    /// The lease expired with attempts left: back to the queue, attempt + 1.
    Requeued,
    /// The lease expired on the last attempt: FAILED with UNAVAILABLE.
    LeaseExpired,
    /// The operation's `timeout` passed: FAILED with DEADLINE_EXCEEDED.
    TimedOut,
    /// `cancel_grace` passed after a cancel: CANCELLED.
    CancelForced,
    /// Deleted after `retention`.
    Purged,
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
}

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
    /// Committed changes, for waiters. A lagging receiver must re-read.
    fn changes(&self) -> broadcast::Receiver<Change>;
    /// Leases the oldest claimable operation of `queue` under the parent.
    async fn claim(&self, request: ClaimRequest) -> Result<Option<Operation>>;
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
}
