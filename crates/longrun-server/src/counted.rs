//! The store as the server uses it: every write through it that creates,
//! finishes or re-queues an operation is counted in the server's metrics,
//! whoever makes it — the API, an in-process runtime, an embedding
//! service's own routes (`Config::counted_store`).

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use longrun_store::micros::micros;
use longrun_store::{
    Cancelled, Change, ClaimRequest, Completion, Created, ListQuery, Listed, NewOperation, QueueStats, Result, Store,
    SweepEvent, SweepPolicy, Unindexed, Update,
};
use longrun_types::filter::Indexed;
use longrun_types::{Operation, OperationName, Parent, State};

#[derive(Debug)]
pub(crate) struct Counted {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl Store for Counted {
    async fn create(&self, new: NewOperation) -> Result<Created> {
        let created = self.store.create(new).await?;
        if !created.existed {
            self.metrics.created(created.operation.queue.as_deref());
        }
        Ok(created)
    }

    async fn get(&self, name: &OperationName) -> Result<Operation> {
        self.store.get(name).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Listed>> {
        self.store.list(query).await
    }

    async fn cancel(&self, name: &OperationName, now: SystemTime) -> Result<Cancelled> {
        let cancelled = self.store.cancel(name, now).await?;
        if cancelled.ended {
            let op = &cancelled.operation;
            self.metrics.finished(op.queue.as_deref(), op.state);
        }
        Ok(cancelled)
    }

    async fn delete(&self, name: &OperationName) -> Result<()> {
        self.store.delete(name).await
    }

    async fn update(&self, name: &OperationName, update: Update, now: SystemTime) -> Result<Operation> {
        self.store.update(name, update, now).await
    }

    async fn complete(&self, name: &OperationName, completion: Completion, now: SystemTime) -> Result<Operation> {
        let operation = self.store.complete(name, completion, now).await?;
        self.count_completion(&operation, now);
        Ok(operation)
    }

    async fn complete_many(
        &self,
        completions: Vec<(OperationName, Completion)>,
        now: SystemTime,
    ) -> Vec<Result<Operation>> {
        let results = self.store.complete_many(completions, now).await;
        for operation in results.iter().flatten() {
            self.count_completion(operation, now);
        }
        results
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.store.changes()
    }

    async fn position(&self) -> Result<u64> {
        self.store.position().await
    }

    async fn changes_after(&self, position: u64, limit: usize) -> Result<Option<Vec<Change>>> {
        self.store.changes_after(position, limit).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Operation>> {
        self.store.claim(request).await
    }

    async fn release(&self, name: &OperationName, lease_token: &str, now: SystemTime) -> Result<Operation> {
        self.store.release(name, lease_token, now).await
    }

    async fn next_claimable(&self, parent: &Parent, queue: &str) -> Result<Option<SystemTime>> {
        self.store.next_claimable(parent, queue).await
    }

    async fn sweep(&self, now: SystemTime, policy: SweepPolicy) -> Result<Vec<SweepEvent>> {
        let events = self.store.sweep(now, policy).await?;
        for event in &events {
            self.metrics.swept(event);
        }
        Ok(events)
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        self.store.queue_stats().await
    }

    async fn unindexed(&self, limit: usize) -> Result<Vec<Unindexed>> {
        self.store.unindexed(limit).await
    }

    async fn reindex(&self, name: &OperationName, indexed: Vec<Indexed>) -> Result<()> {
        self.store.reindex(name, indexed).await
    }

    fn page_token_key(&self) -> [u8; 32] {
        self.store.page_token_key()
    }

    async fn check_ready(&self) -> Result<()> {
        self.store.check_ready().await
    }

    async fn time(&self) -> Result<SystemTime> {
        self.store.time().await
    }
}

impl Counted {
    /// Counts a completion that ended or re-queued an operation.
    fn count_completion(&self, operation: &Operation, now: SystemTime) {
        if operation.done() {
            // A repeated completion answers with the operation as it ended
            // before: counted once, when it ended now (stores keep times
            // to the microsecond).
            if operation.end_time.map(micros) == Some(micros(now)) {
                self.metrics.finished(operation.queue.as_deref(), operation.state);
            }
        } else if operation.state == State::Queued {
            self.metrics.retried(operation.queue.as_deref());
        }
    }
}
