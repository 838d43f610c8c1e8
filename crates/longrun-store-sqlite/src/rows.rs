//! Operations as SQLite rows: reading them, inserting them, and writing a
//! decided change fenced by what was read.
//!
//! The writes of the hot paths (this insert and fenced update, the claim,
//! the change-log row) say `OR FAIL`. Under SQLite's default (`ABORT`) a
//! statement that could fail after changing something keeps a statement
//! journal inside the batch's transaction, copying every page it touches
//! first; a one-row statement checks its constraints before it writes, so
//! failing leaves nothing to undo and `FAIL` undoes the same nothing
//! without that copy (journal work in the writer thread of the batched
//! drain: 9.6 % → 3.9 % of its samples, BENCHMARKS.md). The claim writes
//! several rows in one statement: a row failing there leaves the rows
//! before it written, the job's change count shows it, and the writer
//! rolls back the whole batch (`run_writer`).

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension as _, Row, params_from_iter};

use crate::{db, fields};
use longrun_store::micros::{from_micros, micros};
use longrun_store::sql::Param;
use longrun_store::{Cursor, Error, Fence, Listed, NewOperation, Result};
use longrun_types::lifecycle::{self, Step};
use longrun_types::{Lease, Operation, OperationName, Outcome, Payload, State};

pub(crate) const COLUMNS: &str = "seq, name, state, queue, input_type, input, metadata_type, metadata, \
    response_type, response, error, verb, target, api_version, status_detail, progress_percent, cancel_requested, \
    attempt, max_attempts, request_id, create_time, update_time, end_time, deadline, lease_token, lease_worker, \
    lease_expire_time, lease_duration, cancel_time";

/// One row of [`COLUMNS`]; a row that breaks an invariant is
/// [`Error::Corrupt`], never an operation.
pub(crate) fn listed_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Listed>> {
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
            Err(err) => return Ok(corrupt(format!("{name}: stored error does not decode: {err}"))),
        },
        (None, None) => None,
        (Some(_), Some(_)) => return Ok(corrupt(format!("{name}: both response and error"))),
    };
    // A done operation keeps the token of the lease that finished it.
    let lease_token: Option<String> = row.get(24)?;
    let (lease, finished_by) = match lease_token {
        Some(token) if state.is_done() => (None, Some(token)),
        Some(token) => (
            Some(Lease {
                token,
                worker: row.get::<_, Option<String>>(25)?.unwrap_or_default(),
                expire_time: from_micros(row.get::<_, Option<i64>>(26)?.unwrap_or_default()),
                duration: std::time::Duration::from_micros(
                    row.get::<_, Option<i64>>(27)?
                        .unwrap_or_default()
                        .try_into()
                        .unwrap_or(0),
                ),
            }),
            None,
        ),
        None => (None, None),
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
        cancel_time: row.get::<_, Option<i64>>(28)?.map(from_micros),
        attempt: row.get(17)?,
        max_attempts: row.get(18)?,
        request_id: row.get(19)?,
        create_time: from_micros(row.get(20)?),
        update_time: from_micros(row.get(21)?),
        end_time: row.get::<_, Option<i64>>(22)?.map(from_micros),
        deadline: row.get::<_, Option<i64>>(23)?.map(from_micros),
        lease,
        finished_by,
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

/// The row of [`COLUMNS`] that `sql` (a cached statement) answers, if any.
pub(crate) fn query_listed(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Option<Listed>> {
    conn.prepare_cached(sql)
        .map_err(db)?
        .query_row(params, listed_from_row)
        .optional()
        .map_err(db)?
        .transpose()
}

pub(crate) fn find(conn: &Connection, name: &str) -> Result<Option<Operation>> {
    let sql = format!("SELECT {COLUMNS} FROM operations WHERE name = ?1");
    Ok(query_listed(conn, &sql, [name])?.map(|listed| listed.operation))
}

pub(crate) fn fetch(conn: &Connection, name: &str) -> Result<Operation> {
    find(conn, name)?.ok_or_else(|| Error::NotFound(name.to_owned()))
}

pub(crate) fn to_values(params: &[Param]) -> Vec<Sql> {
    params
        .iter()
        .map(|param| match param {
            Param::Int(value) => Sql::Integer(*value),
            Param::Real(value) => Sql::Real(*value),
            Param::Text(value) => Sql::Text(value.clone()),
            Param::Bool(flag) => Sql::Integer(i64::from(*flag)),
            Param::Time(time) => Sql::Integer(micros(*time)),
        })
        .collect()
}

/// Inserts a new operation; a taken name is [`Error::AlreadyExists`].
pub(crate) fn insert(conn: &Connection, new: &NewOperation) -> Result<Operation> {
    let name = new.name.to_string();
    let now = micros(new.now);
    let sql = format!(
        "INSERT OR FAIL INTO operations (name, parent, state, done, queue, input_type, input, metadata_type, metadata, \
             verb, target, api_version, attempt, max_attempts, request_id, create_time, update_time, deadline, \
             available_time) \
         VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?13, ?14, ?14, ?15, ?14) \
         RETURNING {COLUMNS}"
    );
    let result = conn.prepare_cached(&sql).map_err(db)?.query_row(
        rusqlite::params![
            name,
            new.name.parent().as_str(),
            new.state().as_i32(),
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
            new.deadline().map(micros),
        ],
        listed_from_row,
    );
    match result {
        Ok(listed) => {
            let listed = listed?;
            fields::add(conn, listed.cursor.seq, fields::METADATA, &new.indexed)?;
            Ok(listed.operation)
        }
        Err(rusqlite::Error::SqliteFailure(err, _)) if err.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(Error::AlreadyExists(name))
        }
        Err(err) => Err(db(err)),
    }
}

/// `UPDATE operations SET {sets}` on `op`, only if what the lifecycle
/// decided on is as it was read ([`Fence`]). `values` are the parameters of
/// `sets`, numbered from `?1`. Returns the operation as written, or `None`
/// when the fence found it changed.
pub(crate) fn update_fenced(
    conn: &Connection,
    op: &Operation,
    sets: &str,
    mut values: Vec<Sql>,
) -> Result<Option<Operation>> {
    let fence = Fence::of(op);
    let at = values.len();
    values.extend([
        Sql::Text(op.name.to_string()),
        Sql::Integer(fence.attempt.into()),
        fence.lease_token.map_or(Sql::Null, Sql::Text),
        Sql::Integer(fence.cancel_requested.into()),
    ]);
    // The state is a literal (one cached statement per state): a bound one
    // beside the partial indexes on `state` makes SQLite prepare the
    // statement again on every run.
    let sql = format!(
        "UPDATE OR FAIL operations SET {sets} WHERE name = ?{} AND state = {} AND attempt = ?{} AND lease_token IS ?{} \
         AND cancel_requested = ?{} RETURNING {COLUMNS}",
        at + 1,
        fence.state.as_i32(),
        at + 2,
        at + 3,
        at + 4
    );
    Ok(query_listed(conn, &sql, params_from_iter(values))?.map(|listed| listed.operation))
}

/// Writes a lifecycle step, fenced; the same step for every caller (a
/// completion, a cancel, a release, the sweep). The operation as written,
/// or `None` when it changed since it was read.
pub(crate) fn write_step(
    conn: &Connection,
    op: &Operation,
    step: &Step,
    now: std::time::SystemTime,
) -> Result<Option<Operation>> {
    let now = micros(now);
    match step {
        Step::Requeue {
            attempt,
            available_time,
            status_detail,
        } => update_fenced(
            conn,
            op,
            "state = ?1, attempt = ?2, available_time = ?3, update_time = ?4, \
             status_detail = coalesce(?5, status_detail), lease_token = NULL, lease_worker = NULL, \
             lease_expire_time = NULL, lease_duration = NULL",
            vec![
                Sql::Integer(State::Queued.as_i32().into()),
                Sql::Integer((*attempt).into()),
                Sql::Integer(micros(*available_time)),
                Sql::Integer(now),
                status_detail.clone().map_or(Sql::Null, Sql::Text),
            ],
        ),
        Step::End {
            state,
            outcome,
            end_time,
            finished_by,
            cancels,
        } => {
            let (response_type, response, error_code, error, error_message) = match outcome {
                Outcome::Response(payload) => (
                    Sql::Text(payload.type_url.clone()),
                    Sql::Blob(payload.value.to_vec()),
                    Sql::Null,
                    Sql::Null,
                    Sql::Null,
                ),
                Outcome::Error(status) => (
                    Sql::Null,
                    Sql::Null,
                    Sql::Integer(status.code.into()),
                    Sql::Blob(longrun_proto::encode_status(status)),
                    Sql::Text(status.message.clone()),
                ),
            };
            let sets = if *cancels {
                "state = ?1, done = 1, response_type = ?2, response = ?3, error_code = ?4, error = ?5, \
                 error_message = ?6, end_time = ?7, update_time = ?8, lease_token = ?9, lease_expire_time = NULL, \
                 progress_percent = coalesce(?10, progress_percent), \
                 cancel_requested = 1, cancel_time = coalesce(cancel_time, ?7)"
            } else {
                "state = ?1, done = 1, response_type = ?2, response = ?3, error_code = ?4, error = ?5, \
                 error_message = ?6, end_time = ?7, update_time = ?8, lease_token = ?9, lease_expire_time = NULL, \
                 progress_percent = coalesce(?10, progress_percent)"
            };
            update_fenced(
                conn,
                op,
                sets,
                vec![
                    Sql::Integer(state.as_i32().into()),
                    response_type,
                    response,
                    error_code,
                    error,
                    error_message,
                    Sql::Integer(micros(*end_time)),
                    Sql::Integer(now),
                    finished_by.clone().map_or(Sql::Null, Sql::Text),
                    lifecycle::final_progress(*state).map_or(Sql::Null, |percent| Sql::Integer(percent.into())),
                ],
            )
        }
    }
}

/// The error for a fenced write that found the operation changed since it
/// was read: only another process writing the same file can do that.
pub(crate) fn changed_meanwhile(name: &str) -> Error {
    Error::Aborted {
        name: name.to_owned(),
        reason: format!("operation {name:?} changed while this call was deciding; retry"),
    }
}
