//! The embedded SQLite backend.
//!
//! Durability: WAL with `synchronous = FULL`, so a commit returns only after
//! the WAL is fsync'd. All writes go through one writer thread that drains
//! whatever requests are waiting and commits them as one transaction (group
//! commit): concurrent writers share one fsync, and each request runs in its
//! own savepoint so one failure does not undo the others. Reads use a small
//! pool of separate connections, which WAL lets run beside the writer.

mod fields;
mod schema;
mod work;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, Row, params_from_iter};
use tokio::sync::{broadcast, oneshot};

use crate::filter_sql::{Param, SqlBuilder};
use crate::micros::{from_micros, micros, micros_of};
use crate::{
    Cancelled, Change, ClaimRequest, Completion, Created, Cursor, Error, ListQuery, Listed, NewOperation, QueueStats,
    Result, Store, SweepEvent, SweepPolicy, Unindexed, Update,
};
use longrun_types::filter::Indexed;
use longrun_types::{Code, Lease, Operation, OperationName, Outcome, Parent, Payload, State, Status};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 512;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// Runs after the batch's commit with its result, to answer the caller.
type Finish = Box<dyn FnOnce(Result<()>) + Send>;
/// A write, run on the writer thread inside the batch's transaction.
type Job = Box<dyn FnOnce(&Connection) -> Finish + Send>;

/// A store in one SQLite file. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    changes: broadcast::Sender<Change>,
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
        // Deleting an operation deletes its `operation_fields` rows.
        conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        schema::migrate(&mut conn)?;
        let key = schema::page_token_key(&conn)?;
        let (writer, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("longrun-sqlite-writer".into())
            .spawn(move || run_writer(&conn, &jobs))
            .map_err(|err| Error::Unavailable(format!("cannot start the writer thread: {err}")))?;
        let (changes, _) = broadcast::channel(4096);
        let readers = Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
        });
        Ok(Self {
            writer,
            readers,
            changes,
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
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, work);
            Box::new(move |committed: Result<()>| {
                let result = committed.and(result).map(|(value, announced)| {
                    for change in announced {
                        // No receivers is fine: nobody is waiting.
                        let _ = changes.send(change);
                    }
                    value
                });
                // The caller may have gone away; the write stands regardless.
                let _ = reply.send(result);
            })
        });
        let stopped = || Error::Unavailable("the SQLite writer has stopped".into());
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
        .map_err(|err| Error::Unavailable(format!("read task failed: {err}")))?
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
        // Without an open transaction each job's savepoint commits on its
        // own: slower, but still correct.
        let in_transaction = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        let finishers: Vec<Finish> = batch.into_iter().map(|job| job(conn)).collect();
        let committed = if in_transaction {
            conn.execute_batch("COMMIT").map_err(|err| {
                tracing::error!(error = %err, "SQLite commit failed; rolling back the batch");
                let _ = conn.execute_batch("ROLLBACK");
                db(err)
            })
        } else {
            Ok(())
        };
        for finish in finishers {
            finish(committed.clone());
        }
    }
}

fn in_savepoint<T>(conn: &Connection, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job").map_err(db)?;
    match work(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE job").map_err(db)?;
            Ok(value)
        }
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(err)
        }
    }
}

pub(crate) fn db(err: rusqlite::Error) -> Error {
    Error::Unavailable(err.to_string())
}

/// The error of an operation cancelled while it was queued.
const CANCELLED_QUEUED: &str = "Operation was cancelled before it started.";

/// The lease fence in every worker statement: external operations have no
/// lease; claimed ones need the current, unexpired token (`?2`, now `?3`).
const LEASE_HELD: &str = "(queue IS NULL OR (lease_token = ?2 AND lease_expire_time > ?3))";

const COLUMNS: &str = "seq, name, state, queue, input_type, input, metadata_type, metadata, response_type, \
    response, error, verb, target, api_version, status_detail, progress_percent, cancel_requested, attempt, \
    max_attempts, request_id, create_time, update_time, end_time, deadline, lease_token, lease_worker, \
    lease_expire_time";

fn listed_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Listed>> {
    let corrupt = |what: String| Err(Error::Corrupt(what));
    let name: String = row.get(1)?;
    let Ok(parsed) = OperationName::parse(&name) else {
        return Ok(corrupt(format!("stored name {name:?} is invalid")));
    };
    let Some(state) = State::from_i32(row.get(2)?) else {
        return Ok(corrupt(format!("{name}: unknown state")));
    };
    let payload = |type_index: usize| -> rusqlite::Result<Option<Payload>> {
        let type_url: Option<String> = row.get(type_index)?;
        let value: Option<Vec<u8>> = row.get(type_index + 1)?;
        Ok(type_url.map(|type_url| Payload {
            type_url,
            value: value.unwrap_or_default().into(),
        }))
    };
    let response = payload(8)?;
    let error: Option<Vec<u8>> = row.get(10)?;
    let outcome = match (response, error) {
        (Some(response), None) => Some(Outcome::Response(response)),
        (None, Some(bytes)) => match longrun_proto::decode_status(&bytes) {
            Ok(status) => Some(Outcome::Error(status)),
            Err(err) => {
                return Ok(corrupt(format!("{name}: stored error does not decode: {err}")));
            }
        },
        (None, None) => None,
        (Some(_), Some(_)) => return Ok(corrupt(format!("{name}: both response and error"))),
    };
    let lease_token: Option<String> = row.get(24)?;
    let lease = match lease_token {
        Some(token) => Some(Lease {
            token,
            worker: row.get::<_, Option<String>>(25)?.unwrap_or_default(),
            expire_time: from_micros(row.get::<_, Option<i64>>(26)?.unwrap_or_default()),
        }),
        None => None,
    };
    let operation = Operation {
        name: parsed,
        state,
        outcome,
        input: payload(4)?,
        metadata: payload(6)?,
        queue: row.get(3)?,
        verb: row.get(11)?,
        target: row.get(12)?,
        api_version: row.get(13)?,
        status_detail: row.get(14)?,
        progress_percent: row.get(15)?,
        cancel_requested: row.get(16)?,
        attempt: row.get(17)?,
        max_attempts: row.get(18)?,
        request_id: row.get(19)?,
        create_time: from_micros(row.get(20)?),
        update_time: from_micros(row.get(21)?),
        end_time: row.get::<_, Option<i64>>(22)?.map(from_micros),
        deadline: row.get::<_, Option<i64>>(23)?.map(from_micros),
        lease,
    };
    if operation.done() != operation.outcome.is_some() {
        return Ok(corrupt(format!("{name}: done does not match its outcome")));
    }
    Ok(Ok(Listed {
        operation,
        cursor: Cursor {
            create_time: row.get(20)?,
            seq: row.get(0)?,
        },
    }))
}

fn find(conn: &Connection, name: &str) -> Result<Option<Operation>> {
    let sql = format!("SELECT {COLUMNS} FROM operations WHERE name = ?1");
    let found = conn.query_row(&sql, [name], listed_from_row).optional().map_err(db)?;
    found.transpose().map(|listed| listed.map(|listed| listed.operation))
}

fn fetch(conn: &Connection, name: &str) -> Result<Operation> {
    find(conn, name)?.ok_or_else(|| Error::NotFound(name.to_owned()))
}

/// Explains why a fenced statement on a live operation matched nothing.
fn refusal(conn: &Connection, name: &str, lease_token: Option<&str>) -> Error {
    match find(conn, name) {
        Err(err) => err,
        Ok(None) => Error::NotFound(name.to_owned()),
        Ok(Some(op)) if op.done() => Error::FailedPrecondition {
            name: name.to_owned(),
            reason: format!("operation {name:?} is already done ({})", op.state),
        },
        Ok(Some(op)) => Error::Aborted {
            name: name.to_owned(),
            reason: match (lease_token, &op.lease) {
                (None, _) => format!(
                    "operation {name:?} is claimed through queue {:?}; pass the lease token from Claim",
                    op.queue.unwrap_or_default()
                ),
                (Some(_), _) => {
                    format!("the lease token is not the current lease of {name:?}; it expired or was taken over")
                }
            },
        },
    }
}

fn to_params(params: &[Param]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|param| match param {
            Param::Int(value) => rusqlite::types::Value::Integer(*value),
            Param::Real(value) => rusqlite::types::Value::Real(*value),
            Param::Text(value) => rusqlite::types::Value::Text(value.clone()),
        })
        .collect()
}

fn insert(conn: &Connection, new: &NewOperation) -> Result<Operation> {
    let name = new.name.to_string();
    let state = if new.queue.is_some() {
        State::Queued
    } else {
        State::Running
    };
    let now = micros(new.now);
    let deadline = new.timeout.map(|timeout| micros(new.now + timeout));
    let result = conn.execute(
        "INSERT INTO operations (name, parent, state, done, queue, input_type, input, metadata_type, metadata, \
             verb, target, api_version, attempt, max_attempts, request_id, create_time, update_time, deadline, \
             available_time) \
         VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?13, ?14, ?14, ?15, ?14)",
        rusqlite::params![
            name,
            new.name.parent().as_str(),
            state.as_i32(),
            new.queue,
            new.input.as_ref().map(|p| &p.type_url),
            new.input.as_ref().map(|p| p.value.as_ref()),
            new.metadata.as_ref().map(|p| &p.type_url),
            new.metadata.as_ref().map(|p| p.value.as_ref()),
            new.verb,
            new.target,
            new.api_version,
            new.max_attempts,
            new.request_id,
            now,
            deadline,
        ],
    );
    match result {
        Ok(_) => {
            fields::write(conn, &name, fields::METADATA, &new.indexed)?;
            fetch(conn, &name)
        }
        Err(rusqlite::Error::SqliteFailure(err, _)) if err.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(Error::AlreadyExists(name))
        }
        Err(err) => Err(db(err)),
    }
}

/// The SELECT for one page of a listing, and its parameters.
fn list_statement(query: &ListQuery) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = SqlBuilder::new(|n| format!("?{n}"));
    let parent = query.parent.as_str();
    if query.parent.has_wildcard() {
        let pattern: Vec<&str> = parent
            .split('/')
            .enumerate()
            .map(|(i, s)| if i % 2 == 1 && s == "-" { "*" } else { s })
            .collect();
        let glob = sql.bind(Param::Text(pattern.join("/")));
        let slashes = sql.bind(Param::Int(
            i64::try_from(parent.matches('/').count()).unwrap_or(i64::MAX),
        ));
        // Ids never contain '/', so with the same number of slashes each
        // '*' matches exactly one id. The unary `+` keeps the planner off
        // the parent index (a prefix range it would then have to sort):
        // the list reads `operations_by_create_time` in order instead.
        sql.push(format!(
            "+parent GLOB {glob} AND length(parent) - length(replace(parent, '/', '')) = {slashes}"
        ));
    } else {
        let placeholder = sql.bind(Param::Text(parent.to_owned()));
        sql.push(format!("parent = {placeholder}"));
    }
    // The page token's position goes before the filter: SQLite bounds an
    // index range by the first matching term, and the token's bound is the
    // tighter one (its row passed the filter's own `createTime` bounds).
    if let Some(after) = query.after {
        let time = sql.bind(Param::Int(after.create_time));
        let seq = sql.bind(Param::Int(after.seq));
        sql.push(format!("(create_time, seq) < ({time}, {seq})"));
    }
    sql.filter(&query.filter);
    let limit = sql.bind(Param::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
    let text = format!(
        "SELECT {COLUMNS} FROM operations WHERE {} ORDER BY create_time DESC, seq DESC LIMIT {limit}",
        sql.where_clause()
    );
    (text, to_params(&sql.params))
}

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(skip_all, fields(op.name = %new.name))]
    async fn create(&self, new: NewOperation) -> Result<Created> {
        self.write(move |conn| {
            if let Some(request_id) = &new.request_id {
                let sql = format!("SELECT {COLUMNS} FROM operations WHERE parent = ?1 AND request_id = ?2");
                let existing = conn
                    .query_row(&sql, [new.name.parent().as_str(), request_id], listed_from_row)
                    .optional()
                    .map_err(db)?;
                if let Some(listed) = existing {
                    return Ok((
                        Created {
                            operation: listed?.operation,
                            existed: true,
                        },
                        None,
                    ));
                }
            }
            let operation = insert(conn, &new)?;
            let change = Change {
                name: operation.name.to_string(),
                done: false,
                deleted: false,
                queued: operation.queue.clone(),
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
        let name = name.to_string();
        self.read(move |conn| fetch(conn, &name)).await
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

    #[tracing::instrument(skip_all, fields(op.name = %name))]
    async fn cancel(&self, name: &OperationName, now: SystemTime) -> Result<Cancelled> {
        let name = name.to_string();
        let status = longrun_proto::encode_status(&Status::new(Code::Cancelled, CANCELLED_QUEUED));
        self.write(move |conn| {
            let now = micros(now);
            let cancelled = conn
                .execute(
                    "UPDATE operations SET state = ?2, done = 1, error_code = 1, error = ?3, error_message = ?6, \
                         cancel_requested = 1, cancel_time = ?4, end_time = ?4, update_time = ?4 \
                     WHERE name = ?1 AND state = ?5",
                    rusqlite::params![
                        name,
                        State::Cancelled.as_i32(),
                        status,
                        now,
                        State::Queued.as_i32(),
                        CANCELLED_QUEUED
                    ],
                )
                .map_err(db)?;
            let requested = if cancelled == 0 {
                conn.execute(
                    "UPDATE operations SET cancel_requested = 1, cancel_time = ?2, update_time = ?2 \
                     WHERE name = ?1 AND state = ?3 AND cancel_requested = 0",
                    rusqlite::params![name, now, State::Running.as_i32()],
                )
                .map_err(db)?
            } else {
                0
            };
            let operation = fetch(conn, &name)?;
            let change = (cancelled + requested > 0).then(|| Change {
                name: name.clone(),
                done: operation.done(),
                deleted: false,
                queued: None,
            });
            Ok((
                Cancelled {
                    operation,
                    ended: cancelled > 0,
                },
                change,
            ))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(op.name = %name))]
    async fn delete(&self, name: &OperationName) -> Result<()> {
        let name = name.to_string();
        self.write(move |conn| {
            let deleted = conn
                .execute("DELETE FROM operations WHERE name = ?1", [&name])
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
                }),
            ))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(op.name = %name))]
    async fn update(&self, name: &OperationName, update: Update, now: SystemTime) -> Result<Operation> {
        let name = name.to_string();
        self.write(move |conn| {
            // A heartbeat extends the lease by the duration it was taken for.
            let mut sets = vec![
                "update_time = ?3".to_owned(),
                "lease_expire_time = CASE WHEN lease_token IS NULL THEN NULL ELSE ?3 + lease_duration END".to_owned(),
            ];
            let mut params: Vec<rusqlite::types::Value> = vec![
                name.clone().into(),
                update
                    .lease_token
                    .clone()
                    .map_or(rusqlite::types::Value::Null, Into::into),
                micros(now).into(),
            ];
            let mut set = |column: &str, value: rusqlite::types::Value| {
                params.push(value);
                sets.push(format!("{column} = ?{}", params.len()));
            };
            if let Some(metadata) = &update.metadata {
                set("metadata_type", metadata.type_url.clone().into());
                set("metadata", metadata.value.to_vec().into());
            }
            if let Some(percent) = update.progress_percent {
                set("progress_percent", i64::from(percent).into());
            }
            if let Some(detail) = &update.status_detail {
                set("status_detail", detail.clone().into());
            }
            let sql = format!(
                "UPDATE operations SET {} WHERE name = ?1 AND done = 0 AND {LEASE_HELD}",
                sets.join(", ")
            );
            if conn.execute(&sql, params_from_iter(params)).map_err(db)? == 0 {
                return Err(refusal(conn, &name, update.lease_token.as_deref()));
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
                }),
            ))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(op.name = %name))]
    async fn complete(&self, name: &OperationName, completion: Completion, now: SystemTime) -> Result<Operation> {
        let name = name.to_string();
        self.write(move |conn| {
            let now = micros(now);
            if let (Some(backoff), Outcome::Error(status)) = (&completion.retry, &completion.outcome)
                && let Some(current) = find(conn, &name)?
                && current.queue.is_some()
                && current.attempt < current.max_attempts
                && !current.cancel_requested
            {
                let available = now.saturating_add(micros_of(backoff.delay(current.attempt)));
                let requeued = conn
                    .execute(
                        "UPDATE operations SET state = ?3, attempt = attempt + 1, available_time = ?4, update_time = ?5, \
                             status_detail = ?6, lease_token = NULL, lease_worker = NULL, lease_expire_time = NULL \
                         WHERE name = ?1 AND state = ?7 AND lease_token = ?2 AND lease_expire_time > ?5",
                        rusqlite::params![
                            name,
                            completion.lease_token,
                            State::Queued.as_i32(),
                            available,
                            now,
                            format!("retrying after: {}", status.message),
                            State::Running.as_i32(),
                        ],
                    )
                    .map_err(db)?;
                if requeued == 0 {
                    return Err(refusal(conn, &name, completion.lease_token.as_deref()));
                }
                let operation = fetch(conn, &name)?;
                let change = Change { name, done: false, deleted: false, queued: operation.queue.clone() };
                return Ok((operation, Some(change)));
            }
            let state = State::for_outcome(&completion.outcome);
            let (response_type, response, error_code, error, error_message) = match &completion.outcome {
                Outcome::Response(payload) => {
                    (Some(payload.type_url.clone()), Some(payload.value.to_vec()), None, None, None)
                }
                Outcome::Error(status) => {
                    (None, None, Some(status.code), Some(longrun_proto::encode_status(status)), Some(status.message.clone()))
                }
            };
            let sql = format!(
                "UPDATE operations SET state = ?4, done = 1, response_type = ?5, response = ?6, error_code = ?7, \
                     error = ?8, error_message = ?10, end_time = ?3, update_time = ?3, lease_token = NULL, \
                     lease_expire_time = NULL \
                 WHERE name = ?1 AND state = ?9 AND {LEASE_HELD}"
            );
            let changed = conn
                .execute(
                    &sql,
                    rusqlite::params![
                        name,
                        completion.lease_token,
                        now,
                        state.as_i32(),
                        response_type,
                        response,
                        error_code,
                        error,
                        State::Running.as_i32(),
                        error_message,
                    ],
                )
                .map_err(db)?;
            if changed == 0 {
                return Err(refusal(conn, &name, completion.lease_token.as_deref()));
            }
            if matches!(completion.outcome, Outcome::Response(_)) {
                fields::write(conn, &name, fields::RESPONSE, &completion.indexed)?;
            }
            let operation = fetch(conn, &name)?;
            Ok((operation, Some(Change { name, done: true, deleted: false, queued: None })))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(queue = %request.queue))]
    async fn claim(&self, request: ClaimRequest) -> Result<Option<Operation>> {
        self.claim_next(request).await
    }

    #[tracing::instrument(skip_all, fields(op.name = %name))]
    async fn release(&self, name: &OperationName, lease_token: &str, now: SystemTime) -> Result<Operation> {
        let (name, token) = (name.to_string(), lease_token.to_owned());
        self.write(move |conn| {
            let sql = format!(
                "UPDATE operations SET state = ?4, available_time = ?3, update_time = ?3, lease_token = NULL, \
                     lease_worker = NULL, lease_expire_time = NULL \
                 WHERE name = ?1 AND state = ?5 AND {LEASE_HELD}"
            );
            let params = rusqlite::params![
                name,
                token,
                micros(now),
                State::Queued.as_i32(),
                State::Running.as_i32()
            ];
            if conn.execute(&sql, params).map_err(db)? == 0 {
                return Err(refusal(conn, &name, Some(&token)));
            }
            let operation = fetch(conn, &name)?;
            let change = Change {
                name,
                done: false,
                deleted: false,
                queued: operation.queue.clone(),
            };
            Ok((operation, Some(change)))
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

    async fn unindexed(&self, limit: usize) -> Result<Vec<Unindexed>> {
        self.pending_fields(limit).await
    }

    #[tracing::instrument(skip_all, fields(op.name = %name))]
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
}

#[cfg(test)]
mod tests;
