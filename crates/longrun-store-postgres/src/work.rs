//! The worker side of the PostgreSQL store: claims, the sweep, queue
//! statistics and reindexing. Rows another node holds are skipped, never
//! waited for: each claim and each expiry is settled by exactly one node.

use std::time::SystemTime;

use crate::rows::{COLUMNS, Fields, listed, log, write_step};
use crate::{PostgresStore, db, feed, fields, query_cached};
use longrun_store::micros::micros_of;
use longrun_store::sql::{Dialect, Param, SqlBuilder};
use longrun_store::{
    Change, ClaimRequest, Error, Listed, QueueStats, Result, SweepEvent, SweepPolicy, Swept, Unindexed,
};
use longrun_types::filter::Indexed;
use longrun_types::lifecycle;
use longrun_types::{Operation, OperationName, Parent, Payload, State};

/// Most overdue operations one sweep settles, so one sweep stays short; the
/// next sweep carries on.
const SWEEP_BATCH: i64 = 1000;
/// Most feed rows one sweep prunes.
const PRUNE_BATCH: i64 = 10_000;

impl PostgresStore {
    /// Leases the oldest claimable operations in one statement: QUEUED to
    /// RUNNING, the lifecycle's only edge out of the queue. Rows that other
    /// claims are taking are skipped. Each lease token is the database's
    /// strong random (`gen_random_uuid`, as 32 hex digits like
    /// [`longrun_store::lease_token`]'s), so each operation of a batch is fenced alone.
    pub(crate) async fn claim_next(&self, request: ClaimRequest) -> Result<Vec<Operation>> {
        let mut sql = SqlBuilder::new(Dialect::Postgres);
        let worker = sql.bind(Param::Text(request.worker.clone()));
        let duration = sql.bind(Param::Int(micros_of(request.lease_duration)));
        let expiry = sql.bind(Param::Time(request.now + request.lease_duration));
        let now = sql.bind(Param::Time(request.now));
        let running = sql.bind(Param::Int(State::Running.as_i32().into()));
        let limit = sql.bind(Param::Int(i64::try_from(request.limit.max(1)).unwrap_or(i64::MAX)));
        sql.queued_under(&request.queue, &request.parent);
        sql.push(format!("available_time <= {now}"));
        if let Some(prefixes) = &request.within {
            sql.within(prefixes);
        }
        let text = format!(
            "WITH claimed AS ( \
                 UPDATE operations SET state = {running}, \
                     lease_token = replace(gen_random_uuid()::text, '-', ''), lease_worker = {worker}, \
                     lease_duration = {duration}, lease_expire_time = {expiry}, update_time = {now} \
                 WHERE seq IN (SELECT seq FROM operations WHERE {} ORDER BY seq LIMIT {limit} FOR UPDATE SKIP LOCKED) \
                 RETURNING {COLUMNS}), \
             logged AS (INSERT INTO changes (name, done, deleted) SELECT name, false, false FROM claimed ORDER BY seq) \
             SELECT {COLUMNS} FROM claimed ORDER BY seq",
            sql.where_clause()
        );
        let client = self.client().await?;
        let rows = query_cached(&client, &text, sql.params()).await?;
        let claimed = rows
            .iter()
            .map(|row| Ok(listed(row)?.operation))
            .collect::<Result<Vec<_>>>()?;
        if !claimed.is_empty() {
            self.notifier.committed();
        }
        Ok(claimed)
    }

    pub(crate) async fn next_claimable_time(&self, parent: &Parent, queue: &str) -> Result<Option<SystemTime>> {
        let mut sql = SqlBuilder::new(Dialect::Postgres);
        sql.queued_under(queue, parent);
        let text = format!(
            "SELECT min(available_time) FROM operations WHERE {}",
            sql.where_clause()
        );
        let client = self.client().await?;
        let rows = query_cached(&client, &text, sql.params()).await?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(db),
            None => Ok(None),
        }
    }

    pub(crate) async fn sweep_now(&self, now: SystemTime, policy: SweepPolicy) -> Result<Vec<SweepEvent>> {
        let grace_start = now.checked_sub(policy.cancel_grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Each branch reads one partial index (see the schema).
        let overdue = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM operations WHERE seq IN ( \
                     SELECT seq FROM operations WHERE NOT done AND deadline IS NOT NULL AND deadline <= $1 \
                     UNION SELECT seq FROM operations WHERE state = 2 AND cancel_requested AND cancel_time <= $2 \
                     UNION SELECT seq FROM operations \
                         WHERE state = 2 AND lease_token IS NOT NULL AND lease_expire_time <= $1) \
                 ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED"
            ))
            .await
            .map_err(db)?;
        let candidates = tx
            .query(&overdue, &[&now, &grace_start, &SWEEP_BATCH])
            .await
            .map_err(db)?;
        let mut events = Vec::new();
        let mut swept = false;
        let mut changes = Vec::new();
        for row in &candidates {
            let Listed { operation: op, cursor } = listed(row)?;
            let Some((kind, step)) = lifecycle::sweep(&op, now, policy.cancel_grace) else {
                continue;
            };
            if write_step(&tx, cursor.seq, &op, &step, now, Fields::Keep)
                .await?
                .is_some()
            {
                swept = true;
                events.push(SweepEvent {
                    name: op.name.to_string(),
                    queue: op.queue.clone(),
                    kind,
                });
            }
        }
        // Retention: bounded batches of old done operations.
        let purge = tx
            .prepare_cached(
                "DELETE FROM operations WHERE seq IN (SELECT seq FROM operations WHERE done AND end_time < $1 \
                     ORDER BY end_time LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING name, queue",
            )
            .await
            .map_err(db)?;
        let cutoff = lifecycle::purge_before(now, policy.retention);
        let batch = i64::try_from(policy.purge_batch).unwrap_or(i64::MAX);
        for row in tx.query(&purge, &[&cutoff, &batch]).await.map_err(db)? {
            let name: String = row.try_get(0).map_err(db)?;
            changes.push(Change {
                name: name.clone(),
                done: false,
                deleted: true,
                queued: None,
                position: 0,
            });
            events.push(SweepEvent {
                name,
                queue: row.try_get(1).map_err(db)?,
                kind: Swept::Purged,
            });
        }
        // The change feed keeps a window (by the sweep's clock, the
        // database's own in a server): it prunes the oldest rows up to the
        // first one still inside the window, looking at no more than a
        // batch (`time < $1 ORDER BY id` walked the whole window on every
        // sweep, 56 ms at 240,000 rows; BENCHMARKS.md).
        // How far it pruned is kept (as int8send's big-endian bytes, whose
        // byte order is their numeric order), so that a watch resuming from
        // a pruned position is told rather than missing changes.
        let prune = tx
            .prepare_cached(
                "WITH pruned AS (DELETE FROM changes WHERE id IN (SELECT id FROM changes \
                     WHERE id < coalesce((SELECT id FROM (SELECT id, time FROM changes ORDER BY id LIMIT $2) AS head \
                         WHERE time >= $1 ORDER BY id LIMIT 1), 9223372036854775807) \
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id) \
                 INSERT INTO settings (key, value) SELECT $3, int8send(max(id)) FROM pruned HAVING count(*) > 0 \
                 ON CONFLICT (key) DO UPDATE SET value = greatest(settings.value, excluded.value)",
            )
            .await
            .map_err(db)?;
        let cutoff = now.checked_sub(feed::RETENTION).unwrap_or(SystemTime::UNIX_EPOCH);
        tx.execute(&prune, &[&cutoff, &PRUNE_BATCH, &feed::PRUNED_THROUGH])
            .await
            .map_err(db)?;
        log(&tx, &changes).await?;
        tx.commit().await.map_err(db)?;
        if swept || !changes.is_empty() {
            self.notifier.committed();
        }
        Ok(events)
    }

    pub(crate) async fn stats(&self) -> Result<Vec<QueueStats>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT queue, count(*) FILTER (WHERE state = 1), \
                     count(*) FILTER (WHERE state = 2 AND lease_token IS NOT NULL) \
                 FROM operations WHERE queue IS NOT NULL AND state IN (1, 2) GROUP BY queue ORDER BY queue",
            )
            .await
            .map_err(db)?;
        let rows = client.query(&statement, &[]).await.map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(QueueStats {
                    queue: row.try_get(0).map_err(db)?,
                    queued: row.try_get::<_, i64>(1).map_err(db)?.try_into().unwrap_or(0),
                    leased: row.try_get::<_, i64>(2).map_err(db)?.try_into().unwrap_or(0),
                })
            })
            .collect()
    }

    pub(crate) async fn pending_fields(&self, limit: usize) -> Result<Vec<Unindexed>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT name, metadata_type, metadata, response_type, response FROM operations \
                 WHERE fields_pending ORDER BY seq LIMIT $1",
            )
            .await
            .map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client.query(&statement, &[&limit]).await.map_err(db)?;
        rows.iter()
            .map(|row| {
                let payload = |at: usize| -> Result<Option<Payload>> {
                    let type_url: Option<String> = row.try_get(at).map_err(db)?;
                    let value: Option<Vec<u8>> = row.try_get(at + 1).map_err(db)?;
                    Ok(type_url.map(|type_url| Payload {
                        type_url,
                        value: value.unwrap_or_default().into(),
                    }))
                };
                let name: String = row.try_get(0).map_err(db)?;
                let name = OperationName::parse(&name)
                    .map_err(|err| Error::Corrupt(format!("stored name {name:?} does not parse: {err}")))?;
                Ok(Unindexed {
                    name,
                    metadata: payload(1)?,
                    response: payload(3)?,
                })
            })
            .collect()
    }

    pub(crate) async fn reindex_fields(&self, name: &OperationName, indexed: Vec<Indexed>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let statement = tx
            .prepare_cached("SELECT seq FROM operations WHERE name = $1 FOR UPDATE")
            .await
            .map_err(db)?;
        // Deleted meanwhile: nothing to index.
        let Some(row) = tx.query_opt(&statement, &[&name.to_string()]).await.map_err(db)? else {
            return Ok(());
        };
        let seq: i64 = row.try_get(0).map_err(db)?;
        let clear = tx
            .prepare_cached("DELETE FROM operation_fields WHERE seq = $1")
            .await
            .map_err(db)?;
        tx.execute(&clear, &[&seq]).await.map_err(db)?;
        let rows = fields::rows("", &indexed);
        let insert = tx
            .prepare_cached(
                "INSERT INTO operation_fields (seq, path, n, int_value, real_value, text_value) \
                 SELECT $1, * FROM unnest($2::text[], $3::int4[], $4::int8[], $5::float8[], $6::text[])",
            )
            .await
            .map_err(db)?;
        tx.execute(
            &insert,
            &[&seq, &rows.paths, &rows.ns, &rows.ints, &rows.reals, &rows.texts],
        )
        .await
        .map_err(db)?;
        let done = tx
            .prepare_cached("UPDATE operations SET fields_pending = false WHERE seq = $1")
            .await
            .map_err(db)?;
        tx.execute(&done, &[&seq]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }
}
