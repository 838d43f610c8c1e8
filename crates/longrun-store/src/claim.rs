//! Claiming with a long-poll, shared by the server's Claim call and the
//! conformance suite.
//!
//! Thousands of workers may wait on one node. They do not each follow the
//! store's change feed: one dispatcher per [`ClaimWaiters`] does, and each
//! change that makes an operation claimable wakes one waiter of that queue
//! whose parent covers it, so a creation costs one claim attempt, however
//! many workers wait, and idle workers of other queues cost nothing.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use crate::{Change, ClaimRequest, Error, Result, Store};
use longrun_types::{Operation, OperationName, Parent};

/// The claim long-polls waiting on one node, and the one task that wakes
/// them. Cheap to create; the task starts with the first waiter and ends
/// with the store (or with this).
#[derive(Debug, Default)]
pub struct ClaimWaiters {
    shared: Arc<Shared>,
    dispatcher: OnceLock<()>,
}

#[derive(Debug, Default)]
struct Shared {
    /// By queue, oldest first.
    parked: Mutex<HashMap<String, Vec<Slot>>>,
    next_id: AtomicU64,
    /// The store's change feed ended: waiting would be forever.
    closed: AtomicBool,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    parent: Parent,
    ticket: Arc<Ticket>,
}

/// How a parked waiter learns it was woken, and what for.
#[derive(Debug, Default)]
struct Ticket {
    notify: Notify,
    wake: Mutex<Option<Wake>>,
}

/// Why a waiter was woken: an operation became claimable (or, with no
/// name, the dispatcher lost track and wakes everyone).
#[derive(Debug, Clone, Default)]
struct Wake {
    name: Option<String>,
    /// Waiters this wake was handed to already and who could not claim.
    tried: HashSet<u64>,
}

/// A waiter's place among the parked. Dropping it unparks; a wake it got
/// and did not use goes to another waiter.
struct Parked<'a> {
    waiters: &'a ClaimWaiters,
    id: u64,
    queue: String,
    ticket: Arc<Ticket>,
}

impl ClaimWaiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parks a waiter for `queue` under `parent`, before it looks for work,
    /// so that nothing queued meanwhile goes unnoticed.
    fn park(&self, store: &dyn Store, queue: &str, parent: &Parent) -> Result<Parked<'_>> {
        self.dispatcher.get_or_init(|| {
            tokio::spawn(dispatch(Arc::downgrade(&self.shared), store.changes()));
        });
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::internal("the store's change feed closed"));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let ticket = Arc::new(Ticket::default());
        lock(&self.shared.parked)
            .entry(queue.to_owned())
            .or_default()
            .push(Slot {
                id,
                parent: parent.clone(),
                ticket: ticket.clone(),
            });
        Ok(Parked {
            waiters: self,
            id,
            queue: queue.to_owned(),
            ticket,
        })
    }
}

impl Shared {
    /// Hands `wake` to the oldest parked waiter of `queue` that could
    /// claim what it names and has not tried it yet.
    fn wake_one(&self, queue: &str, wake: Wake) {
        let operation_parent = wake
            .name
            .as_deref()
            .and_then(|name| OperationName::parse(name).ok())
            .map(|name| name.parent().clone());
        let mut parked = lock(&self.parked);
        let Some(slots) = parked.get_mut(queue) else {
            return;
        };
        let chosen = slots.iter().position(|slot| {
            !wake.tried.contains(&slot.id)
                && operation_parent
                    .as_ref()
                    .is_none_or(|operation_parent| slot.parent.covers(operation_parent))
        });
        if let Some(index) = chosen {
            let slot = slots.remove(index);
            if slots.is_empty() {
                parked.remove(queue);
            }
            // Under the lock: a waiter unparking now either is still in the
            // list (and not chosen) or finds this wake in its ticket.
            *lock(&slot.ticket.wake) = Some(wake);
            drop(parked);
            slot.ticket.notify.notify_one();
        }
    }

    /// Wakes every parked waiter (the dispatcher missed changes).
    fn wake_all(&self) {
        let mut parked = lock(&self.parked);
        let slots: Vec<Slot> = std::mem::take(&mut *parked).into_values().flatten().collect();
        for slot in &slots {
            *lock(&slot.ticket.wake) = Some(Wake::default());
        }
        drop(parked);
        for slot in slots {
            slot.ticket.notify.notify_one();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still
    // consistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Follows the change feed for as long as the waiters exist.
async fn dispatch(shared: Weak<Shared>, mut changes: broadcast::Receiver<Change>) {
    loop {
        let change = changes.recv().await;
        let Some(shared) = shared.upgrade() else { return };
        match change {
            Ok(Change {
                queued: Some(queue),
                name,
                ..
            }) => shared.wake_one(
                &queue,
                Wake {
                    name: Some(name),
                    tried: HashSet::new(),
                },
            ),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => shared.wake_all(),
            Err(RecvError::Closed) => {
                shared.closed.store(true, Ordering::Release);
                shared.wake_all();
                return;
            }
        }
    }
}

impl Parked<'_> {
    /// Resolves once woken; returns what for.
    async fn woken(&self) -> Wake {
        loop {
            self.ticket.notify.notified().await;
            if let Some(wake) = lock(&self.ticket.wake).take() {
                return wake;
            }
        }
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let shared = &self.waiters.shared;
        let mut parked = lock(&shared.parked);
        if let Some(slots) = parked.get_mut(&self.queue) {
            slots.retain(|slot| slot.id != self.id);
            if slots.is_empty() {
                parked.remove(&self.queue);
            }
        }
        drop(parked);
        // Woken, but gone (or claimed something else) before using it: the
        // operation it named is someone else's to claim.
        if let Some(wake) = lock(&self.ticket.wake).take() {
            shared.wake_one(&self.queue, wake);
        }
    }
}

/// How often a waiter looks again while its parent holds claimable work
/// it may not claim.
const NOT_OURS_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Claims the next operations for `request` (up to its limit), waiting
/// until `deadline` for one to become claimable; it does not wait to fill
/// the limit. Woken by the write that queues one (creation or re-queue),
/// through `waiters`, or when a retry backoff ends; never by polling.
/// Returns none at the deadline or as soon as `stop` resolves. `now` reads
/// the clock the leases are measured by.
pub async fn claim_or_wait(
    store: &dyn Store,
    waiters: &ClaimWaiters,
    request: impl Fn(SystemTime) -> ClaimRequest,
    now: impl Fn() -> SystemTime,
    deadline: Instant,
    stop: impl Future<Output = ()>,
) -> Result<Vec<Operation>> {
    tokio::pin!(stop);
    // The wake that sent this waiter to look again, if any.
    let mut woken: Option<Wake> = None;
    loop {
        let attempted_at = now();
        let attempt = request(attempted_at);
        let (parent, queue) = (attempt.parent.clone(), attempt.queue.clone());
        let parked = waiters.park(store, &queue, &parent)?;
        let claimed = store.claim(attempt).await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        if let Some(wake) = woken.take() {
            pass_on(store, waiters, &parked, &queue, wake, now()).await?;
        }
        let instant = Instant::now();
        if instant >= deadline {
            return Ok(Vec::new());
        }
        let wake = match store.next_claimable(&parent, &queue).await? {
            // A retry whose backoff ends later.
            Some(at) if at > attempted_at => deadline.min(instant + at.duration_since(now()).unwrap_or_default()),
            // Claimable already, yet not claimed: outside this worker's
            // grants. Look again now and then rather than spin.
            Some(_) => deadline.min(instant + NOT_OURS_RECHECK),
            None => deadline,
        };
        tokio::select! {
            wake = parked.woken() => woken = Some(wake),
            () = tokio::time::sleep_until(wake) => {}
            () = &mut stop => return Ok(Vec::new()),
        }
    }
}

/// A waiter woken for an operation it could not claim (its grants or a
/// narrower parent exclude it, another node took it, or its retry backoff
/// has not ended): if that operation's parent still has claimable work, the
/// wake goes to a waiter that has not tried yet; if the work becomes
/// claimable later, to whoever waits then.
async fn pass_on(
    store: &dyn Store,
    waiters: &ClaimWaiters,
    parked: &Parked<'_>,
    queue: &str,
    mut wake: Wake,
    now: SystemTime,
) -> Result<()> {
    let Some(parent) = wake
        .name
        .as_deref()
        .and_then(|name| OperationName::parse(name).ok())
        .map(|name| name.parent().clone())
    else {
        return Ok(());
    };
    match store.next_claimable(&parent, queue).await? {
        Some(at) if at <= now => {
            wake.tried.insert(parked.id);
            waiters.shared.wake_one(queue, wake);
        }
        // Re-queued with a retry backoff: whoever waits when it ends gets
        // the wake, even if this waiter has gone by then.
        Some(at) => {
            let delay = at.duration_since(now).unwrap_or_default();
            let shared = Arc::downgrade(&waiters.shared);
            let queue = queue.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Some(shared) = shared.upgrade() {
                    shared.wake_one(
                        &queue,
                        Wake {
                            name: wake.name,
                            tried: HashSet::new(),
                        },
                    );
                }
            });
        }
        None => {}
    }
    Ok(())
}
