//! The worker side of the SQLite store: claims, the background sweep and
//! queue statistics. Each transition is one statement fenced by the state it
//! leaves, so concurrent sweeps (several nodes) and late workers cannot
//! double-apply anything.

use std::time::SystemTime;

use rusqlite::{Connection, params_from_iter};

use super::{SqliteStore, db, fetch, from_micros, micros, micros_of};
use crate::filter_sql::{Param, SqlBuilder};
use crate::{Change, ClaimRequest, QueueStats, Result, SweepEvent, SweepPolicy, Swept};
use longrun_types::{Code, Operation, Parent, State, Status};

/// Adds "the operation's parent is `parent` or lies below it".
fn under(sql: &mut SqlBuilder, parent: &Parent) {
    if parent.is_root() {
        return;
    }
    let exact = sql.bind(Param::Text(parent.as_str().to_owned()));
    let prefix = format!("{}/", parent.as_str());
    let length = sql.bind(Param::Int(i64::try_from(prefix.len()).unwrap_or(i64::MAX)));
    let below = sql.bind(Param::Text(prefix));
    sql.push(format!("(parent = {exact} OR substr(parent, 1, {length}) = {below})"));
}

fn values(params: &[Param]) -> Vec<rusqlite::types::Value> {
    super::to_params(params)
}

fn lease_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl SqliteStore {
    pub(super) async fn claim_next(&self, request: ClaimRequest) -> Result<Option<Operation>> {
        self.write(move |conn| {
            let now = micros(request.now);
            let mut sql = SqlBuilder::new(|n| format!("?{n}"));
            let token = sql.bind(Param::Text(lease_token()));
            let worker = sql.bind(Param::Text(request.worker.clone()));
            let duration = sql.bind(Param::Int(micros_of(request.lease_duration)));
            let now_param = sql.bind(Param::Int(now));
            let running = sql.bind(Param::Int(State::Running.as_i32().into()));
            let queued = sql.bind(Param::Int(State::Queued.as_i32().into()));
            let queue = sql.bind(Param::Text(request.queue.clone()));
            sql.push(format!("state = {queued} AND queue = {queue} AND available_time <= {now_param}"));
            under(&mut sql, &request.parent);
            let text = format!(
                "UPDATE operations SET state = {running}, lease_token = {token}, lease_worker = {worker}, \
                     lease_duration = {duration}, lease_expire_time = {now_param} + {duration}, update_time = {now_param} \
                 WHERE seq = (SELECT seq FROM operations WHERE {} ORDER BY seq LIMIT 1) AND state = {queued} \
                 RETURNING name",
                sql.where_clause()
            );
            let mut statement = conn.prepare_cached(&text).map_err(db)?;
            let mut rows = statement.query(params_from_iter(values(&sql.params))).map_err(db)?;
            let Some(row) = rows.next().map_err(db)? else { return Ok((None, None)) };
            let name: String = row.get(0).map_err(db)?;
            drop(rows);
            let operation = fetch(conn, &name)?;
            Ok((Some(operation), Some(Change { name, done: false, deleted: false, queued: None })))
        })
        .await
    }

    pub(super) async fn next_claimable_time(&self, parent: &Parent, queue: &str) -> Result<Option<SystemTime>> {
        let mut sql = SqlBuilder::new(|n| format!("?{n}"));
        let queued = sql.bind(Param::Int(State::Queued.as_i32().into()));
        let queue = sql.bind(Param::Text(queue.to_owned()));
        sql.push(format!("state = {queued} AND queue = {queue}"));
        under(&mut sql, parent);
        let text = format!(
            "SELECT min(available_time) FROM operations WHERE {}",
            sql.where_clause()
        );
        let params = values(&sql.params);
        self.read(move |conn| {
            let earliest: Option<i64> = conn
                .query_row(&text, params_from_iter(params), |row| row.get(0))
                .map_err(db)?;
            Ok(earliest.map(from_micros))
        })
        .await
    }

    pub(super) async fn sweep_now(&self, now: SystemTime, policy: SweepPolicy) -> Result<Vec<SweepEvent>> {
        self.write(move |conn| {
            let now_us = micros(now);
            let mut events = Vec::new();
            let status = |code: Code, message: &str| longrun_proto::encode_status(&Status::new(code, message));
            // Ends an operation with an error: `?1` now, `?2` the encoded
            // status, `?3` its message (what `error.message` filters see).
            let end = |state: State, code: Code| {
                format!(
                    "state = {}, done = 1, end_time = ?1, update_time = ?1, lease_token = NULL, lease_expire_time = NULL, \
                     error_code = {}, error = ?2, error_message = ?3",
                    state.as_i32(),
                    code.as_i32()
                )
            };
            const TIMED_OUT: &str = "the operation's timeout passed before it finished";
            const GRACE_PASSED: &str = "cancelled: the worker did not stop within the cancel grace";
            const CANCEL_EXPIRED: &str = "cancelled: the worker stopped before acknowledging";
            const LAST_ATTEMPT: &str = "the worker stopped reporting on the last attempt (lease expired)";
            // Timeouts first: they end the operation whatever else is pending.
            events.extend(transition(
                conn,
                &end(State::Failed, Code::DeadlineExceeded),
                "done = 0 AND deadline IS NOT NULL AND deadline <= ?1",
                rusqlite::params![now_us, status(Code::DeadlineExceeded, TIMED_OUT), TIMED_OUT],
                Swept::TimedOut,
            )?);
            // Cancellation that the worker did not honour within the grace.
            let grace_start = now_us.saturating_sub(micros_of(policy.cancel_grace));
            events.extend(transition(
                conn,
                &end(State::Cancelled, Code::Cancelled),
                &format!("state = {} AND cancel_requested = 1 AND cancel_time <= ?4", State::Running.as_i32()),
                rusqlite::params![now_us, status(Code::Cancelled, GRACE_PASSED), GRACE_PASSED, grace_start],
                Swept::CancelForced,
            )?);
            // Expired leases: a cancelled operation ends, others go back to
            // their queue while attempts remain, else fail.
            let expired = format!("state = {} AND lease_token IS NOT NULL AND lease_expire_time <= ?1", State::Running.as_i32());
            events.extend(transition(
                conn,
                &end(State::Cancelled, Code::Cancelled),
                &format!("{expired} AND cancel_requested = 1"),
                rusqlite::params![now_us, status(Code::Cancelled, CANCEL_EXPIRED), CANCEL_EXPIRED],
                Swept::CancelForced,
            )?);
            events.extend(transition(
                conn,
                &format!(
                    "state = {}, attempt = attempt + 1, available_time = ?1, update_time = ?1, lease_token = NULL, \
                     lease_worker = NULL, lease_expire_time = NULL, status_detail = ?2",
                    State::Queued.as_i32()
                ),
                &format!("{expired} AND attempt < max_attempts"),
                rusqlite::params![now_us, "re-queued: the previous worker's lease expired"],
                Swept::Requeued,
            )?);
            events.extend(transition(
                conn,
                &end(State::Failed, Code::Unavailable),
                &format!("{expired} AND attempt >= max_attempts"),
                rusqlite::params![now_us, status(Code::Unavailable, LAST_ATTEMPT), LAST_ATTEMPT],
                Swept::LeaseExpired,
            )?);
            // Retention: bounded batches of old done operations.
            let cutoff = now_us.saturating_sub(micros_of(policy.retention));
            let mut purge = conn
                .prepare_cached(
                    "DELETE FROM operations WHERE seq IN \
                         (SELECT seq FROM operations WHERE done = 1 AND end_time < ?1 ORDER BY end_time LIMIT ?2) \
                     RETURNING name, queue",
                )
                .map_err(db)?;
            let purged = purge
                .query_map(rusqlite::params![cutoff, i64::try_from(policy.purge_batch).unwrap_or(i64::MAX)], |row| {
                    Ok(SweepEvent { name: row.get(0)?, queue: row.get(1)?, kind: Swept::Purged })
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            events.extend(purged);
            let changes: Vec<Change> = events.iter().map(change_for).collect();
            Ok((events, changes))
        })
        .await
    }

    pub(super) async fn stats(&self) -> Result<Vec<QueueStats>> {
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT queue, sum(state = ?1), sum(state = ?2 AND lease_token IS NOT NULL) FROM operations \
                     WHERE queue IS NOT NULL AND state IN (?1, ?2) GROUP BY queue ORDER BY queue",
                )
                .map_err(db)?;
            let rows = statement
                .query_map([State::Queued.as_i32(), State::Running.as_i32()], |row| {
                    Ok(QueueStats {
                        queue: row.get(0)?,
                        queued: row.get::<_, i64>(1)?.try_into().unwrap_or(0),
                        leased: row.get::<_, i64>(2)?.try_into().unwrap_or(0),
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }
}

/// Applies one fenced transition to every operation matching `condition`.
fn transition(
    conn: &Connection,
    set: &str,
    condition: &str,
    params: impl rusqlite::Params,
    kind: Swept,
) -> Result<Vec<SweepEvent>> {
    let sql = format!("UPDATE operations SET {set} WHERE {condition} RETURNING name, queue");
    let mut statement = conn.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(params, |row| {
            Ok(SweepEvent {
                name: row.get(0)?,
                queue: row.get(1)?,
                kind,
            })
        })
        .map_err(db)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
}

fn change_for(event: &SweepEvent) -> Change {
    Change {
        name: event.name.clone(),
        done: matches!(event.kind, Swept::LeaseExpired | Swept::TimedOut | Swept::CancelForced),
        deleted: event.kind == Swept::Purged,
        queued: (event.kind == Swept::Requeued).then(|| event.queue.clone()).flatten(),
    }
}
