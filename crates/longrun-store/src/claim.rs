//! Claiming with a long-poll, shared by the server's Claim call and the
//! in-process runtime.

use std::future::Future;
use std::time::SystemTime;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::{ClaimRequest, Error, Result, Store};
use longrun_types::Operation;

/// Claims the next operation for `request`, waiting until `deadline` for one
/// to become claimable. Woken by the write that queues one (creation or
/// re-queue) or when a retry backoff ends; never by polling. Returns `None`
/// at the deadline or as soon as `stop` resolves. `now` reads the clock the
/// leases are measured by.
pub async fn claim_or_wait(
    store: &dyn Store,
    request: impl Fn(SystemTime) -> ClaimRequest,
    now: impl Fn() -> SystemTime,
    deadline: Instant,
    stop: impl Future<Output = ()>,
) -> Result<Option<Operation>> {
    tokio::pin!(stop);
    // Subscribe before the first attempt so no arrival slips between.
    let mut changes = store.changes();
    loop {
        let attempt = request(now());
        let (parent, queue) = (attempt.parent.clone(), attempt.queue.clone());
        if let Some(operation) = store.claim(attempt).await? {
            return Ok(Some(operation));
        }
        let instant = Instant::now();
        if instant >= deadline {
            return Ok(None);
        }
        let wake = match store.next_claimable(&parent, &queue).await? {
            Some(at) => deadline.min(instant + at.duration_since(now()).unwrap_or_default()),
            None => deadline,
        };
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) if change.queued.as_deref() == Some(queue.as_str()) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Err(Error::internal("the store's change feed closed")),
                },
                () = tokio::time::sleep_until(wake) => break,
                () = &mut stop => return Ok(None),
            }
        }
    }
}
