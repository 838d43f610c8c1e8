//! What a handler sees of its operation.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Error;
use longrun_store::{Clock, Store, Update};
use longrun_types::{Code, Operation, OperationName, Payload};

/// One claimed operation, shared by its handler and its heartbeat task.
#[derive(Debug)]
pub(crate) struct Job {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub registry: longrun_proto::Registry,
    pub name: OperationName,
    pub lease_token: String,
    pub attempt: i32,
    /// Fires when the handler should stop: cancellation was requested, the
    /// operation was lost, or the runtime is shutting down (its parent token).
    pub stop: CancellationToken,
    pub cancel_requested: AtomicBool,
    /// Deleted, or the lease was lost: nothing may be reported any more.
    pub lost: AtomicBool,
}

impl Job {
    /// Sends an update under the lease (the heartbeat when `update` is
    /// empty) and acts on the answer.
    pub async fn report(&self, mut update: Update) -> Result<(), Error> {
        update.lease_token = Some(self.lease_token.clone());
        match self.store.update(&self.name, update, self.clock.now()).await {
            Ok(operation) => {
                self.notice_cancel(&operation);
                Ok(())
            }
            Err(
                err @ (longrun_store::Error::NotFound(_)
                | longrun_store::Error::Aborted { .. }
                | longrun_store::Error::FailedPrecondition { .. }),
            ) => Err(self.lose(err.to_string())),
            Err(err) => Err(Error::retryable(
                Code::Unavailable,
                format!("cannot report progress: {err}"),
            )),
        }
    }

    /// Reads the operation after a change to it and acts as [`Job::report`]
    /// would on the answer, without writing: most changes a job sees are
    /// its own claim's, and a write (a commit) per operation for those
    /// would double a fast handler's cost.
    pub async fn check(&self) -> Result<(), Error> {
        match self.store.get(&self.name).await {
            Ok(operation) => {
                let leased = operation
                    .lease
                    .as_ref()
                    .is_some_and(|lease| lease.token == self.lease_token);
                if operation.done() || !leased {
                    return Err(self.lose("the operation ended or its lease passed to another worker".into()));
                }
                self.notice_cancel(&operation);
                Ok(())
            }
            Err(err @ longrun_store::Error::NotFound(_)) => Err(self.lose(err.to_string())),
            // An outage: the next heartbeat finds out more.
            Err(err) => Err(Error::retryable(
                Code::Unavailable,
                format!("cannot read the operation: {err}"),
            )),
        }
    }

    /// Stops the handler when `operation` asks for cancellation (once).
    fn notice_cancel(&self, operation: &Operation) {
        if operation.cancel_requested && !self.cancel_requested.swap(true, Ordering::SeqCst) {
            tracing::info!(op.name = %self.name, "cancellation requested");
            self.stop.cancel();
        }
    }

    /// Marks the operation lost (nothing more is reported) and stops the
    /// handler.
    fn lose(&self, why: String) -> Error {
        tracing::warn!(op.name = %self.name, error = %why, "lost the operation; stopping its handler");
        self.lost.store(true, Ordering::SeqCst);
        self.stop.cancel();
        Error::Lost(why)
    }
}

/// The handler's view of its operation, typed by the metadata it publishes.
#[derive(Debug)]
pub struct Context<M> {
    job: Arc<Job>,
    _metadata: PhantomData<fn(M)>,
}

impl<M: prost::Message + prost::Name> Context<M> {
    pub(crate) fn new(job: Arc<Job>) -> Self {
        Self {
            job,
            _metadata: PhantomData,
        }
    }

    pub fn name(&self) -> &OperationName {
        &self.job.name
    }

    /// 1 on the first run; higher after retries and lease expiries.
    pub fn attempt(&self) -> i32 {
        self.job.attempt
    }

    /// Publishes progress (0–100) and a human-readable detail; also a heartbeat.
    pub async fn progress(&self, percent: i32, detail: impl Into<String>) -> Result<(), Error> {
        let update = Update {
            progress_percent: Some(percent.clamp(0, 100)),
            status_detail: Some(detail.into()),
            ..Update::default()
        };
        self.job.report(update).await
    }

    /// Replaces the operation's metadata with `metadata`. Its type must be
    /// known to the server that serves the operation (`--descriptors`).
    pub async fn set_metadata(&self, metadata: &M) -> Result<(), Error> {
        let payload = Payload {
            type_url: crate::type_url::<M>(),
            value: metadata.encode_to_vec().into(),
        };
        self.job
            .report(Update {
                indexed: self.job.registry.indexed("metadata", &payload),
                metadata: Some(payload),
                ..Update::default()
            })
            .await
    }

    /// Resolves when the handler should stop: cancellation was requested, the
    /// operation was deleted or lost, or the runtime is shutting down.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.job.stop.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.job.stop.is_cancelled()
    }
}
