//! Writes that arrive together share a statement and a commit.
//!
//! Callers put their writes in a bounded queue. A writer task takes the
//! first one waiting, waits for one of `in_flight` slots, then takes every
//! write that arrived meanwhile (up to `BATCH`) and writes them together on
//! a task of their own. So a write alone goes at once, and the busier the
//! node, the larger its batches. `crate::creates` and `crate::completes`
//! are the two queues.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// Most writes in one batch.
const BATCH: usize = 64;
/// Most writes waiting in a queue; more wait to join it (and are dropped
/// if their caller goes), so a stalled database holds a bounded number of
/// payloads.
const QUEUE: usize = 16 * BATCH;

/// Starts a writer that hands batches of what is sent on the returned
/// queue to `write`, at most `in_flight` at once. It stops when every
/// clone of the queue is dropped.
pub(crate) fn start<T, W, F>(in_flight: usize, write: W) -> mpsc::Sender<T>
where
    T: Send + 'static,
    W: Fn(Vec<T>) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (queue, pending) = mpsc::channel(QUEUE);
    tokio::spawn(gather(pending, Arc::new(Semaphore::new(in_flight.max(1))), write));
    queue
}

async fn gather<T, W, F>(mut pending: mpsc::Receiver<T>, slots: Arc<Semaphore>, write: W)
where
    T: Send + 'static,
    W: Fn(Vec<T>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    while let Some(first) = pending.recv().await {
        // Wait for a slot before gathering, so that writes arriving
        // meanwhile join this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let written = write(batch);
        tokio::spawn(async move {
            written.await;
            drop(slot);
        });
    }
}
