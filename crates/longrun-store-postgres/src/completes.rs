//! Completions: written one at a time, or many in one transaction.
//!
//! [`Writer::complete_many`] writes a batch a caller hands over (a batched
//! Complete, the in-process runtime's reporter). Single completions on a
//! node go through [`Completes`]: one alone is written at once; while
//! others are being written, completions wait in a queue and the next batch
//! takes every one waiting (`crate::batches`). Each completion keeps its
//! own answer, as if made alone.

use std::time::SystemTime;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use crate::feed::Notifier;
use crate::rows::{Fields, end_many, read, read_many, write_step};
use crate::{ATTEMPTS, batches, client, contended, db, fields, refused};
use longrun_store::{Completion, Error, Listed, Result};
use longrun_types::lifecycle;
use longrun_types::{Operation, OperationName, Outcome};

/// A completion waiting to be written, and who waits for its answer.
type Pending = (
    OperationName,
    Completion,
    SystemTime,
    oneshot::Sender<Result<Operation>>,
);

/// What writing completions needs: connections, and the feed to tell.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pool: Pool,
    notifier: Notifier,
}

/// The node's completion queue, and its writer.
#[derive(Debug, Clone)]
pub(crate) struct Completes {
    queue: mpsc::Sender<Pending>,
    writer: Writer,
}

impl Completes {
    /// Starts the queue's writer; at most `in_flight` batches are written
    /// at once.
    pub fn start(writer: Writer, in_flight: usize) -> Self {
        let batches = writer.clone();
        let queue = batches::start(in_flight, move |batch| {
            let writer = batches.clone();
            async move { writer.write(batch).await }
        });
        Self { queue, writer }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Completes `name`, with whatever other completions are waiting.
    pub async fn complete(&self, name: OperationName, completion: Completion, now: SystemTime) -> Result<Operation> {
        let stopped = || Error::internal("the node's completion writer has stopped");
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((name, completion, now, answer))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl Writer {
    pub fn new(pool: Pool, notifier: Notifier) -> Self {
        Self { pool, notifier }
    }

    /// Writes one batch from the queue and answers each completion. A
    /// batch is decided at its latest completion's time, the closest to
    /// its commit: each operation's end then comes after everything that
    /// happened to it before its completion was asked for (an earlier
    /// time could put an end before the operation's own creation, had it
    /// been created while the batch waited).
    async fn write(&self, mut batch: Vec<Pending>) {
        if batch.len() == 1 {
            if let Some((name, completion, now, answer)) = batch.pop() {
                let _ = answer.send(self.complete_alone(&name, completion, now).await);
            }
            return;
        }
        let now = batch
            .iter()
            .map(|(_, _, now, _)| *now)
            .max()
            .unwrap_or_else(SystemTime::now);
        let (completions, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|(name, completion, _, answer)| ((name, completion), answer))
            .unzip();
        for (result, answer) in self.complete_many(completions, now).await.into_iter().zip(answers) {
            // The caller may have gone; the write stands regardless.
            let _ = answer.send(result);
        }
    }

    /// One completion in its own statement: read, decide, write fenced.
    async fn complete_alone(&self, name: &OperationName, completion: Completion, now: SystemTime) -> Result<Operation> {
        let name = name.to_string();
        let client = client(&self.pool).await?;
        let token = completion.lease_token.as_deref();
        for _ in 0..ATTEMPTS {
            let Listed { operation: op, cursor } = read(&client, &name).await?;
            let step = lifecycle::complete(&op, token, completion.outcome.clone(), completion.retry, now)
                .map_err(refused(&name))?;
            // The same completion again: answered, nothing written.
            let Some(step) = step else { return Ok(op) };
            let fields = match (&completion.outcome, step.to().is_done()) {
                (Outcome::Response(_), true) => Fields::Add(fields::RESPONSE, &completion.indexed),
                _ => Fields::Keep,
            };
            if let Some(written) = write_step(&client, cursor.seq, &op, &step, now, fields).await? {
                self.notifier.committed();
                return Ok(written.operation);
            }
        }
        Err(contended(&name))
    }

    /// In one transaction on one connection, its statements pipelined: one
    /// commit for the batch. A completion whose operation changed under it
    /// is made again on its own, as [`Writer::complete_alone`] would, and so
    /// is a second completion of one operation in the batch (decided after
    /// the first is written); if the
    /// transaction itself fails, nothing of it was written and every
    /// completion is made on its own.
    pub async fn complete_many(
        &self,
        completions: Vec<(OperationName, Completion)>,
        now: SystemTime,
    ) -> Vec<Result<Operation>> {
        let together = match self.complete_together(&completions, now).await {
            Ok(together) => together,
            Err(err) => {
                tracing::debug!(error = %err, "a batch of completions failed as one; completing each alone");
                vec![None; completions.len()]
            }
        };
        let alone = completions
            .iter()
            .zip(&together)
            .filter(|(_, result)| result.is_none())
            .map(|((name, completion), _)| self.complete_alone(name, completion.clone(), now));
        let mut alone = futures::future::join_all(alone).await.into_iter();
        together
            .into_iter()
            .map(|result| match result {
                Some(result) => result,
                None => alone
                    .next()
                    .unwrap_or_else(|| Err(Error::internal("a completion went unanswered"))),
            })
            .collect()
    }

    /// The completions in one transaction: each answered, or `None` where
    /// the operation changed between read and write (to be made again).
    async fn complete_together(
        &self,
        completions: &[(OperationName, Completion)],
        now: SystemTime,
    ) -> Result<Vec<Option<Result<Operation>>>> {
        /// What the lifecycle decided for one completion.
        enum Plan<'a> {
            Answered(Result<Operation>),
            /// Another completion of an operation earlier in the batch:
            /// made on its own once the batch is written.
            Later,
            Write {
                seq: i64,
                op: Operation,
                step: lifecycle::Step,
                fields: Fields<'a>,
            },
        }
        let mut client = client(&self.pool).await?;
        let tx = client.transaction().await.map_err(db)?;
        let names: Vec<String> = completions.iter().map(|(name, _)| name.to_string()).collect();
        let reads = read_many(&tx, &names).await?;
        let mut plans = Vec::with_capacity(completions.len());
        for (i, (((_, completion), found), name)) in completions.iter().zip(reads).zip(&names).enumerate() {
            if names[..i].contains(name) {
                plans.push(Plan::Later);
                continue;
            }
            let Listed { operation: op, cursor } = match found {
                Ok(found) => found,
                Err(Error::NotFound(missing)) => {
                    plans.push(Plan::Answered(Err(Error::NotFound(missing))));
                    continue;
                }
                // The transaction is unusable now.
                Err(err) => return Err(err),
            };
            let token = completion.lease_token.as_deref();
            let step = match lifecycle::complete(&op, token, completion.outcome.clone(), completion.retry, now) {
                Err(refusal) => {
                    plans.push(Plan::Answered(Err(refused(name)(refusal))));
                    continue;
                }
                // The same completion again: answered, nothing written.
                Ok(None) => {
                    plans.push(Plan::Answered(Ok(op)));
                    continue;
                }
                Ok(Some(step)) => step,
            };
            let fields = match (&completion.outcome, step.to().is_done()) {
                (Outcome::Response(_), true) => Fields::Add(fields::RESPONSE, &completion.indexed),
                _ => Fields::Keep,
            };
            plans.push(Plan::Write {
                seq: cursor.seq,
                op,
                step,
                fields,
            });
        }
        // Plain ends (the common completion) go in one statement; the rest
        // (a cancel's end, a retry's requeue, custom response fields) one
        // statement each, pipelined.
        let plain = |plan: &Plan<'_>| match plan {
            Plan::Write { step, fields, .. } => {
                matches!(step, lifecycle::Step::End { cancels: false, .. })
                    && match fields {
                        Fields::Keep => true,
                        Fields::Add(_, indexed) => indexed.is_empty(),
                        Fields::Replace(..) => false,
                    }
            }
            Plan::Answered(_) | Plan::Later => false,
        };
        let ends: Vec<(i64, &Operation, &lifecycle::Step)> = plans
            .iter()
            .filter_map(|plan| match plan {
                Plan::Write { seq, op, step, .. } if plain(plan) => Some((*seq, op, step)),
                _ => None,
            })
            .collect();
        let ended = async {
            if ends.is_empty() {
                Ok(Vec::new())
            } else {
                end_many(&tx, &ends, now).await
            }
        };
        let others = futures::future::join_all(plans.iter().map(|plan| async {
            match plan {
                Plan::Write { seq, op, step, fields } if !plain(plan) => {
                    Some(write_step(&tx, *seq, op, step, now, *fields).await)
                }
                _ => None,
            }
        }));
        let (ended, others) = futures::join!(ended, others);
        let mut ended = ended?.into_iter();
        let writes: Vec<Option<Result<Option<Listed>>>> = plans
            .iter()
            .zip(others)
            .map(|(plan, other)| {
                if plain(plan) {
                    Some(Ok(ended.next().flatten()))
                } else {
                    other
                }
            })
            .collect();
        let mut results = Vec::with_capacity(plans.len());
        let mut wrote = false;
        for (plan, written) in plans.into_iter().zip(writes) {
            results.push(match (plan, written) {
                (Plan::Answered(answer), _) => Some(answer),
                (Plan::Later, _) => None,
                (Plan::Write { .. }, Some(Ok(Some(written)))) => {
                    wrote = true;
                    Some(Ok(written.operation))
                }
                (Plan::Write { .. }, Some(Err(err))) => return Err(err),
                // Changed since it was read: made again on its own.
                (Plan::Write { .. }, Some(Ok(None)) | None) => None,
            });
        }
        tx.commit().await.map_err(db)?;
        if wrote {
            self.notifier.committed();
        }
        Ok(results)
    }
}
