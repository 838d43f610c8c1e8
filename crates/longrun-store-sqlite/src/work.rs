//! The worker side of the SQLite store: claims, the background sweep and
//! queue statistics. The sweep asks the lifecycle what each overdue
//! operation comes to and writes it fenced, so a late worker or a second
//! process on the same file cannot double-apply anything.

use std::time::SystemTime;

use rusqlite::params_from_iter;

use crate::rows::{COLUMNS, listed_from_row, to_values, write_step};
use crate::{SqliteStore, db};
use longrun_store::micros::{from_micros, micros, micros_of};
use longrun_store::sql::{Dialect, Param, SqlBuilder};
use longrun_store::{Change, ClaimRequest, QueueStats, Result, SweepEvent, SweepPolicy, Swept};
use longrun_types::lifecycle;
use longrun_types::{Operation, Parent, State};

/// Most overdue operations one sweep settles, so one sweep stays short; the
/// next sweep carries on.
const SWEEP_BATCH: i64 = 1000;

impl SqliteStore {
    /// Leases the oldest claimable operations in one statement: QUEUED to
    /// RUNNING, the lifecycle's only edge out of the queue.
    pub(crate) async fn claim_next(&self, request: ClaimRequest) -> Result<Vec<Operation>> {
        self.write(move |conn| {
            let (text, params) = claim_statement(&request);
            let mut statement = conn.prepare_cached(&text).map_err(db)?;
            let mut claimed = statement
                .query_map(params_from_iter(params), listed_from_row)
                .map_err(db)?
                .map(|row| row.map_err(db)?)
                .collect::<Result<Vec<_>>>()?;
            // RETURNING follows no order; a claim hands out oldest first.
            claimed.sort_unstable_by_key(|listed| listed.cursor.seq);
            let changes = claimed
                .iter()
                .map(|listed| Change {
                    name: listed.operation.name.to_string(),
                    done: false,
                    deleted: false,
                    queued: None,
                    position: 0,
                })
                .collect::<Vec<_>>();
            Ok((claimed.into_iter().map(|listed| listed.operation).collect(), changes))
        })
        .await
    }

    pub(crate) async fn next_claimable_time(&self, parent: &Parent, queue: &str) -> Result<Option<SystemTime>> {
        let mut sql = SqlBuilder::new(Dialect::Sqlite);
        sql.queued_under(queue, parent);
        let text = format!(
            "SELECT min(available_time) FROM operations WHERE {}",
            sql.where_clause()
        );
        let params = to_values(sql.params());
        self.read(move |conn| {
            let earliest: Option<i64> = conn
                .prepare_cached(&text)
                .map_err(db)?
                .query_row(params_from_iter(params), |row| row.get(0))
                .map_err(db)?;
            Ok(earliest.map(from_micros))
        })
        .await
    }

    pub(crate) async fn sweep_now(&self, now: SystemTime, policy: SweepPolicy) -> Result<Vec<SweepEvent>> {
        self.write(move |conn| {
            let now_us = micros(now);
            let grace_start = now.checked_sub(policy.cancel_grace).map_or(i64::MIN, micros);
            // Each branch reads one partial index (see the schema).
            let overdue = format!(
                "SELECT {COLUMNS} FROM operations WHERE seq IN ( \
                     SELECT seq FROM operations WHERE done = 0 AND deadline IS NOT NULL AND deadline <= ?1 \
                     UNION SELECT seq FROM operations WHERE state = ?3 AND cancel_requested = 1 AND cancel_time <= ?2 \
                     UNION SELECT seq FROM operations \
                         WHERE state = ?3 AND lease_token IS NOT NULL AND lease_expire_time <= ?1) \
                 ORDER BY seq LIMIT ?4"
            );
            let candidates: Vec<Operation> = conn
                .prepare_cached(&overdue)
                .map_err(db)?
                .query_map(
                    rusqlite::params![now_us, grace_start, State::Running.as_i32(), SWEEP_BATCH],
                    listed_from_row,
                )
                .map_err(db)?
                .map(|row| row.map_err(db)?.map(|listed| listed.operation))
                .collect::<Result<_>>()?;
            let mut events = Vec::new();
            let mut changes = Vec::new();
            for op in candidates {
                let Some((kind, step)) = lifecycle::sweep(&op, now, policy.cancel_grace) else {
                    continue;
                };
                if write_step(conn, &op, &step, now)?.is_some() {
                    changes.push(Change::of_step(&op, &step));
                    events.push(SweepEvent {
                        name: op.name.to_string(),
                        queue: op.queue.clone(),
                        kind,
                    });
                }
            }
            // Retention: bounded batches of old done operations.
            let cutoff = micros(lifecycle::purge_before(now, policy.retention));
            let purged = conn
                .prepare_cached(
                    "DELETE FROM operations WHERE seq IN \
                         (SELECT seq FROM operations WHERE done = 1 AND end_time < ?1 ORDER BY end_time LIMIT ?2) \
                     RETURNING name, queue",
                )
                .map_err(db)?
                .query_map(
                    rusqlite::params![cutoff, i64::try_from(policy.purge_batch).unwrap_or(i64::MAX)],
                    |row| {
                        Ok(SweepEvent {
                            name: row.get(0)?,
                            queue: row.get(1)?,
                            kind: Swept::Purged,
                        })
                    },
                )
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            changes.extend(purged.iter().map(|event| Change {
                name: event.name.clone(),
                done: false,
                deleted: true,
                queued: None,
                position: 0,
            }));
            events.extend(purged);
            crate::feed::prune(conn, now, policy.purge_batch)?;
            Ok((events, changes))
        })
        .await
    }

    pub(crate) async fn stats(&self) -> Result<Vec<QueueStats>> {
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

/// The claim's one statement (an `UPDATE … RETURNING` the claimed rows)
/// and its parameters. Each row gets its own lease token, 128 bits of
/// SQLite's randomness (ChaCha20 seeded from the operating system's) in
/// hex as [`longrun_store::lease_token`] writes them, so each operation
/// is fenced alone.
/// `OR FAIL` needs no statement journal (see `rows`): a row that fails
/// leaves the rows before it written, and the writer rolls back the batch.
pub(crate) fn claim_statement(request: &ClaimRequest) -> (String, Vec<rusqlite::types::Value>) {
    let now = micros(request.now);
    let mut sql = SqlBuilder::new(Dialect::Sqlite);
    let worker = sql.bind(Param::Text(request.worker.clone()));
    let duration = sql.bind(Param::Int(micros_of(request.lease_duration)));
    let now_param = sql.bind(Param::Int(now));
    let running = sql.bind(Param::Int(State::Running.as_i32().into()));
    let queued = sql.queued_under(&request.queue, &request.parent);
    sql.push(format!("available_time <= {now_param}"));
    if let Some(prefixes) = &request.within {
        sql.within(prefixes);
    }
    // Bound, not written into the text: one cached statement serves every
    // claim size (the runtime asks for as many as it has free slots).
    let limit = sql.bind(Param::Int(i64::try_from(request.limit.max(1)).unwrap_or(i64::MAX)));
    let text = format!(
        "UPDATE OR FAIL operations SET state = {running}, lease_token = lower(hex(randomblob(16))), \
             lease_worker = {worker}, lease_duration = {duration}, lease_expire_time = {now_param} + {duration}, \
             update_time = {now_param} \
         WHERE seq IN (SELECT seq FROM operations WHERE {} ORDER BY seq LIMIT {limit}) AND state = {queued} \
         RETURNING {COLUMNS}",
        sql.where_clause()
    );
    (text, to_values(sql.params()))
}
