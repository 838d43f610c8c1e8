//! longrun's embedded store: one SQLite file.
//!
//! Durability: WAL with `synchronous = FULL`, so a commit returns only after
//! the WAL is fsync'd. All writes go through one writer thread that drains
//! whatever requests are waiting and commits them as one transaction (group
//! commit): concurrent writers share one fsync. A request refused (not
//! found, already exists, a lifecycle refusal) is refused before it writes
//! anything, so the others commit without it; a request that fails after
//! writing (a database fault) fails the whole batch, which is rolled back.
//! Reads use a small pool of separate connections, which WAL lets run
//! beside the writer.

mod feed;
mod fields;
mod rows;
mod schema;
mod work;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, params_from_iter};
use tokio::sync::{broadcast, oneshot};

use crate::rows::{
    COLUMNS, changed_meanwhile, fetch, listed_from_row, query_listed, to_values, update_fenced, write_step,
};
use longrun_store::micros::micros;
use longrun_store::sql::{Dialect, SqlBuilder};
use longrun_store::{
    Cancelled, Change, ClaimRequest, Completion, Created, Error, ListQuery, Listed, NewOperation, QueueStats, Result,
    Store, SweepEvent, SweepPolicy, Unindexed, Update,
};
use longrun_types::filter::Indexed;
use longrun_types::lifecycle::{self, Cancel};
use longrun_types::{Operation, OperationName, Outcome, Parent};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 512;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// Runs after the batch's commit with its result, to answer the caller.
type Finish = Box<dyn FnOnce(Result<()>) + Send>;
/// A write, run on the writer thread inside the batch's transaction.
type Job = Box<dyn FnOnce(&Connection, Undo) -> Ran + Send>;

/// How a job's writes can be undone if it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// Only with the whole batch: the job runs in the batch's transaction
    /// as it is.
    WithBatch,
    /// On its own: no batch transaction is open, so the job runs in a
    /// savepoint that commits or undoes it alone.
    Alone,
}

/// A job that ran: how to answer it, and the fault that undoes the whole
/// batch when it failed after writing.
struct Ran {
    finish: Finish,
    fault: Option<Error>,
}

/// A store in one SQLite file. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    changes: broadcast::Sender<Change>,
    /// The position of the last change announced.
    position: Arc<AtomicU64>,
    key: [u8; 32],
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path)
            .finish_non_exhaustive()
    }
}

struct Readers {
    path: PathBuf,
    /// A std mutex: held only to push or pop, never across I/O or `.await`.
    idle: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let mut conn = Connection::open(&path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        // Each job of a batch runs in a savepoint, whose undo copies of
        // pages would otherwise spill to a temporary file past 64 KiB.
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(db)?;
        // Deleting an operation deletes its `operation_fields` rows.
        conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        schema::migrate(&mut conn)?;
        let key = schema::page_token_key(&conn)?;
        let position = Arc::new(AtomicU64::new(feed::last_position(&conn)?));
        let (writer, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("longrun-sqlite-writer".into())
            .spawn(move || run_writer(&conn, &jobs))
            .map_err(Error::internal)?;
        let (changes, _) = broadcast::channel(4096);
        let readers = Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
        });
        Ok(Self {
            writer,
            readers,
            changes,
            position,
            key,
        })
    }

    /// Runs `work` on the writer thread; answers after the batch commits and
    /// then announces the changes `work` reported.
    async fn write<T: Send + 'static, C: IntoIterator<Item = Change> + Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<(T, C)> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let changes = self.changes.clone();
        let position = self.position.clone();
        let job: Job = Box::new(move |conn, undo| {
            let run = |conn: &Connection| {
                let (value, announced) = work(conn)?;
                Ok((value, feed::log(conn, announced)?))
            };
            let written_before = conn.total_changes();
            let result = match undo {
                Undo::WithBatch => run(conn),
                Undo::Alone => in_savepoint(conn, run),
            };
            let fault = match &result {
                Err(err) if undo == Undo::WithBatch && conn.total_changes() != written_before => Some(err.clone()),
                _ => None,
            };
            let finish: Finish = Box::new(move |committed: Result<()>| {
                let result = committed.and(result).map(|(value, announced)| {
                    for change in announced {
                        // Batches commit and finish in order, so positions
                        // only rise.
                        position.store(change.position, Ordering::Release);
                        // No receivers is fine: nobody is waiting.
                        let _ = changes.send(change);
                    }
                    value
                });
                // The caller may have gone away; the write stands regardless.
                let _ = reply.send(result);
            });
            Ran { finish, fault }
        });
        let stopped = || Error::internal("the SQLite writer thread has stopped");
        self.writer.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn read<T: Send + 'static>(&self, work: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = work(&conn);
            readers.give(conn);
            result
        })
        .await
        .map_err(Error::internal)?
    }
}

impl Readers {
    fn take(&self) -> Result<Connection> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|poison| poison.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open(&self.path).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "query_only", true).map_err(db)?;
        Ok(conn)
    }

    fn give(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|poison| poison.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

fn run_writer(conn: &Connection, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Without an open transaction each job runs in a savepoint that
        // commits on its own: slower, but still correct.
        let in_transaction = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        let undo = if in_transaction { Undo::WithBatch } else { Undo::Alone };
        let ran: Vec<Ran> = batch.into_iter().map(|job| job(conn, undo)).collect();
        let fault = ran.iter().find_map(|ran| ran.fault.clone());
        let committed = match fault {
            _ if !in_transaction => Ok(()),
            Some(fault) => {
                tracing::error!(error = %fault, "a write failed after writing; rolling back its batch");
                let _ = conn.execute_batch("ROLLBACK");
                Err(fault)
            }
            None => conn.execute_batch("COMMIT").map_err(|err| {
                tracing::error!(error = %err, "SQLite commit failed; rolling back the batch");
                let _ = conn.execute_batch("ROLLBACK");
                db(err)
            }),
        };
        for ran in ran {
            (ran.finish)(committed.clone());
        }
    }
}

/// A completion, decided by the lifecycle and written fenced; `None` for
/// the change when it repeats the completion that already ended it.
fn complete_in(
    conn: &Connection,
    name: &str,
    completion: Completion,
    now: SystemTime,
) -> Result<(Operation, Option<Change>)> {
    let op = fetch(conn, name)?;
    let is_response = matches!(completion.outcome, Outcome::Response(_));
    let token = completion.lease_token.as_deref();
    let step = lifecycle::complete(&op, token, completion.outcome, completion.retry, now)
        .map_err(|refusal| Error::refused(name, &refusal))?;
    // The same completion again: answered, nothing written.
    let Some(step) = step else { return Ok((op, None)) };
    let Some(written) = write_step(conn, &op, &step, now)? else {
        return Err(changed_meanwhile(name));
    };
    // An operation that was not done has no response fields yet: only
    // values to add are written.
    if is_response && step.to().is_done() && !completion.indexed.is_empty() {
        fields::write(conn, name, fields::RESPONSE, &completion.indexed)?;
    }
    let change = Change::of_step(&op, &step);
    Ok((written, Some(change)))
}

/// Runs `work` so that its failure undoes its own writes and nothing else:
/// a job when no batch transaction is open. The two statements are
/// prepared once.
fn in_savepoint<T>(conn: &Connection, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut statement| statement.execute([]));
    run("SAVEPOINT job").map_err(db)?;
    match work(conn) {
        Ok(value) => {
            run("RELEASE job").map_err(db)?;
            Ok(value)
        }
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(err)
        }
    }
}

/// A lock held past the busy timeout is a timeout (`UNAVAILABLE`, worth a
/// retry); every other SQLite error is a fault of ours (`INTERNAL`).
pub(crate) fn db(err: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match &err {
        rusqlite::Error::SqliteFailure(failure, _) if matches!(failure.code, DatabaseBusy | DatabaseLocked) => {
            Error::unavailable(err)
        }
        _ => Error::internal(err),
    }
}

/// The SELECT for one page of a listing, and its parameters.
fn list_statement(query: &ListQuery) -> (String, Vec<Sql>) {
    let mut sql = SqlBuilder::list(Dialect::Sqlite, query);
    let limit = sql.bind(longrun_store::sql::Param::Int(
        i64::try_from(query.limit).unwrap_or(i64::MAX),
    ));
    let text = format!(
        "SELECT {COLUMNS} FROM operations WHERE {} ORDER BY create_time DESC, seq DESC LIMIT {limit}",
        sql.where_clause()
    );
    (text, to_values(sql.params()))
}

// The writes' spans (the operation's name) are at debug level: at the
// default level they cost nothing, and the request's span, with its id, is
// on every line a call logs anyway. Made at info level, creating them was
// 1.8 % of all samples in a profile of durable creates.
#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %new.name))]
    async fn create(&self, new: NewOperation) -> Result<Created> {
        self.write(move |conn| {
            if let Some(request_id) = &new.request_id {
                let sql = format!("SELECT {COLUMNS} FROM operations WHERE parent = ?1 AND request_id = ?2");
                if let Some(listed) = query_listed(conn, &sql, [new.name.parent().as_str(), request_id])? {
                    let operation = listed.operation;
                    return Ok((
                        Created {
                            operation,
                            existed: true,
                        },
                        None,
                    ));
                }
            }
            let operation = rows::insert(conn, &new)?;
            let change = Change {
                name: operation.name.to_string(),
                done: false,
                deleted: false,
                queued: operation.queue.clone(),
                position: 0,
            };
            Ok((
                Created {
                    operation,
                    existed: false,
                },
                Some(change),
            ))
        })
        .await
    }

    async fn get(&self, name: &OperationName) -> Result<Operation> {
        // A lookup by primary key takes microseconds: done in place, it
        // saves the two thread switches of a trip to the blocking pool,
        // which cost more than the read (BENCHMARKS.md).
        let conn = self.readers.take()?;
        let found = fetch(&conn, &name.to_string());
        self.readers.give(conn);
        found
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Listed>> {
        let (text, params) = list_statement(query);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&text).map_err(db)?;
            let rows = statement
                .query_map(params_from_iter(params), listed_from_row)
                .map_err(db)?;
            rows.map(|row| row.map_err(db)?).collect()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn cancel(&self, name: &OperationName, now: SystemTime) -> Result<Cancelled> {
        let name = name.to_string();
        self.write(move |conn| {
            let op = fetch(conn, &name)?;
            let (written, ended) = match lifecycle::cancel(&op, now) {
                Cancel::End(step) => (write_step(conn, &op, &step, now)?.is_some(), true),
                Cancel::Request => {
                    let sets = "cancel_requested = 1, cancel_time = ?1, update_time = ?1";
                    (
                        update_fenced(conn, &op, sets, vec![Sql::Integer(micros(now))])?.is_some(),
                        false,
                    )
                }
                Cancel::Unchanged => {
                    return Ok((
                        Cancelled {
                            operation: op,
                            ended: false,
                        },
                        None,
                    ));
                }
            };
            if !written {
                return Err(changed_meanwhile(&name));
            }
            let operation = fetch(conn, &name)?;
            let change = Change {
                name,
                done: operation.done(),
                deleted: false,
                queued: None,
                position: 0,
            };
            Ok((Cancelled { operation, ended }, Some(change)))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn delete(&self, name: &OperationName) -> Result<()> {
        let name = name.to_string();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM operations WHERE name = ?1")
                .map_err(db)?
                .execute([&name])
                .map_err(db)?;
            if deleted == 0 {
                return Err(Error::NotFound(name));
            }
            Ok((
                (),
                Some(Change {
                    name,
                    done: false,
                    deleted: true,
                    queued: None,
                    position: 0,
                }),
            ))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn update(&self, name: &OperationName, update: Update, now: SystemTime) -> Result<Operation> {
        let name = name.to_string();
        self.write(move |conn| {
            let op = fetch(conn, &name)?;
            let lease_expiry = lifecycle::report(&op, update.lease_token.as_deref(), now)
                .map_err(|refusal| Error::refused(&name, &refusal))?;
            let mut sets = vec!["update_time = ?1".to_owned(), "lease_expire_time = ?2".to_owned()];
            let mut values = vec![
                Sql::Integer(micros(now)),
                lease_expiry.map_or(Sql::Null, |at| Sql::Integer(micros(at))),
            ];
            let mut set = |column: &str, value: Sql| {
                values.push(value);
                sets.push(format!("{column} = ?{}", values.len()));
            };
            if let Some(metadata) = &update.metadata {
                set("metadata_type", Sql::Text(metadata.type_url.clone()));
                set("metadata", Sql::Blob(metadata.value.to_vec()));
            }
            if let Some(percent) = update.progress_percent {
                set("progress_percent", Sql::Integer(percent.into()));
            }
            if let Some(detail) = &update.status_detail {
                set("status_detail", Sql::Text(detail.clone()));
            }
            if update_fenced(conn, &op, &sets.join(", "), values)?.is_none() {
                return Err(changed_meanwhile(&name));
            }
            if update.metadata.is_some() {
                fields::write(conn, &name, fields::METADATA, &update.indexed)?;
            }
            let operation = fetch(conn, &name)?;
            Ok((
                operation,
                Some(Change {
                    name,
                    done: false,
                    deleted: false,
                    queued: None,
                    position: 0,
                }),
            ))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn complete(&self, name: &OperationName, completion: Completion, now: SystemTime) -> Result<Operation> {
        let name = name.to_string();
        self.write(move |conn| complete_in(conn, &name, completion, now)).await
    }

    /// One write job for the batch: committed together, refused one by one.
    /// A completion is refused (or found changed meanwhile) before it writes
    /// anything, so a refusal needs nothing undone and the others go on. A
    /// completion that fails after it wrote (a database fault) fails the
    /// job, and with it the batch.
    #[tracing::instrument(level = "debug", skip_all, fields(completions = completions.len()))]
    async fn complete_many(
        &self,
        completions: Vec<(OperationName, Completion)>,
        now: SystemTime,
    ) -> Vec<Result<Operation>> {
        let count = completions.len();
        let written = self
            .write(move |conn| {
                let mut results = Vec::with_capacity(completions.len());
                let mut changes = Vec::new();
                for (name, completion) in completions {
                    let name = name.to_string();
                    let written_before = conn.total_changes();
                    match complete_in(conn, &name, completion, now) {
                        Ok((operation, change)) => {
                            changes.extend(change);
                            results.push(Ok(operation));
                        }
                        Err(err) if conn.total_changes() == written_before => results.push(Err(err)),
                        Err(err) => return Err(err),
                    }
                }
                Ok((results, changes))
            })
            .await;
        // The batch itself failed (its commit, say): every completion did.
        written.unwrap_or_else(|err| (0..count).map(|_| Err(err.clone())).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(queue = %request.queue))]
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Operation>> {
        self.claim_next(request).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn release(&self, name: &OperationName, lease_token: &str, now: SystemTime) -> Result<Operation> {
        let (name, token) = (name.to_string(), lease_token.to_owned());
        self.write(move |conn| {
            let op = fetch(conn, &name)?;
            let step = lifecycle::release(&op, &token, now).map_err(|refusal| Error::refused(&name, &refusal))?;
            let Some(written) = write_step(conn, &op, &step, now)? else {
                return Err(changed_meanwhile(&name));
            };
            let change = Change::of_step(&op, &step);
            Ok((written, Some(change)))
        })
        .await
    }

    async fn next_claimable(&self, parent: &Parent, queue: &str) -> Result<Option<SystemTime>> {
        self.next_claimable_time(parent, queue).await
    }

    async fn sweep(&self, now: SystemTime, policy: SweepPolicy) -> Result<Vec<SweepEvent>> {
        self.sweep_now(now, policy).await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        self.stats().await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn position(&self) -> Result<u64> {
        Ok(self.position.load(Ordering::Acquire))
    }

    async fn changes_after(&self, position: u64, limit: usize) -> Result<Option<Vec<Change>>> {
        let now = self.position.load(Ordering::Acquire);
        self.read(move |conn| feed::after(conn, position, now, limit)).await
    }

    async fn unindexed(&self, limit: usize) -> Result<Vec<Unindexed>> {
        self.pending_fields(limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn reindex(&self, name: &OperationName, indexed: Vec<Indexed>) -> Result<()> {
        self.reindex_fields(name, indexed).await
    }

    fn page_token_key(&self) -> [u8; 32] {
        self.key
    }

    async fn check_ready(&self) -> Result<()> {
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM settings", [], |_| Ok(()))
                .map_err(db)
        })
        .await
    }

    async fn time(&self) -> Result<SystemTime> {
        Ok(SystemTime::now())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.
mod tests;
