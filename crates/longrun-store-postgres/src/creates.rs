//! Creates a node receives while others are being written share one
//! `INSERT` and one commit (see `crate::batches`). Each create still gets
//! its own answer: its row, or `None` when its name or request id is
//! taken. A batch whose statement fails is written again one create at a
//! time, so that one bad create fails alone.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use crate::rows::{insert, insert_many};
use crate::{batches, client};
use longrun_store::{Error, Listed, NewOperation, Result};

/// A create waiting to be written, and who waits for its row.
type Pending = (Arc<NewOperation>, oneshot::Sender<Result<Option<Listed>>>);

/// The node's create queue.
#[derive(Debug, Clone)]
pub(crate) struct Creates {
    queue: mpsc::Sender<Pending>,
}

impl Creates {
    /// Starts the writer. At most `in_flight` batches are written at once,
    /// each on a connection of `pool`.
    pub fn start(pool: Pool, in_flight: usize) -> Self {
        let queue = batches::start(in_flight, move |batch| {
            let pool = pool.clone();
            async move { write(&pool, batch).await }
        });
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
