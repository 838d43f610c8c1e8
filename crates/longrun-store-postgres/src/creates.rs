//! Group creates: the creates a node receives while others are being
//! written share one `INSERT` and one commit.
//!
//! One create alone is written at once, by itself. While as many batches
//! as the writer may have in flight are being written, new creates wait in
//! a queue; the next batch takes every create waiting (up to [`BATCH`]). So a busy node commits many
//! creates at a time and an idle one makes none wait. Each create still
//! gets its own answer: its row, or `None` when its name or request id is
//! taken. A batch whose statement fails is written again one create at a
//! time, so that one bad create fails alone.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::client;
use crate::rows::{insert, insert_many};
use longrun_store::{Error, Listed, NewOperation, Result};

/// Most creates written in one statement.
const BATCH: usize = 64;
/// Most creates waiting in the queue; more wait to join it (and are
/// dropped if their caller goes), so a stalled database holds a bounded
/// number of payloads.
const QUEUE: usize = 16 * BATCH;

/// A create waiting to be written, and who waits for its row.
type Pending = (Arc<NewOperation>, oneshot::Sender<Result<Option<Listed>>>);

/// The node's create queue.
#[derive(Debug, Clone)]
pub(crate) struct Creates {
    queue: mpsc::Sender<Pending>,
}

impl Creates {
    /// Starts the writer. At most `in_flight` batches are written at once,
    /// each on a connection of `pool`. Runs until every clone is dropped.
    pub fn start(pool: Pool, in_flight: usize) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(pool, pending, Arc::new(Semaphore::new(in_flight.max(1)))));
        Self { queue }
    }

    /// Inserts `new` with whatever other creates are waiting: its row as
    /// written, or `None` when its name or request id is taken.
    pub async fn insert(&self, new: Arc<NewOperation>) -> Result<Option<Listed>> {
        let stopped = || Error::internal("the node's create writer has stopped");
        let (answer, answered) = oneshot::channel();
        self.queue.send((new, answer)).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn write_batches(pool: Pool, mut pending: mpsc::Receiver<Pending>, slots: Arc<Semaphore>) {
    while let Some(first) = pending.recv().await {
        // Wait for a slot before gathering, so that creates arriving
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
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Writes one batch and answers each of its creates.
async fn write(pool: &Pool, batch: Vec<Pending>) {
    let client = match client(pool).await {
        Ok(client) => client,
        Err(err) => {
            for (_, answer) in batch {
                let _ = answer.send(Err(err.clone()));
            }
            return;
        }
    };
    if batch.len() > 1 {
        let news: Vec<&NewOperation> = batch.iter().map(|(new, _)| new.as_ref()).collect();
        match insert_many(&client, &news).await {
            Ok(written) => {
                for ((_, answer), row) in batch.into_iter().zip(written) {
                    // The caller may have gone; the row stands regardless.
                    let _ = answer.send(Ok(row));
                }
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, creates = batch.len(), "a batch of creates failed; writing each alone")
            }
        }
    }
    for (new, answer) in batch {
        let _ = answer.send(insert(&client, &new).await);
    }
}
