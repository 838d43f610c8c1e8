//! Operations as PostgreSQL rows: reading them, inserting them, writing a
//! decided change fenced by what was read, and logging changes to the feed.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::db;
use crate::fields::METADATA;
use longrun_store::{Change, Cursor, Error, Fence, Listed, NewOperation, Result};
use longrun_types::filter::Indexed;
use longrun_types::lifecycle::{self, Step};
use longrun_types::{Lease, Operation, OperationName, Outcome, Payload, State};

pub(crate) const COLUMNS: &str = "seq, name, state, queue, input_type, input, metadata_type, metadata, \
    response_type, response, error, verb, target, api_version, status_detail, progress_percent, cancel_requested, \
    attempt, max_attempts, request_id, create_time, update_time, end_time, deadline, lease_token, lease_worker, \
    lease_expire_time, lease_duration, cancel_time";

/// Owned parameters of a statement built at run time.
pub(crate) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

pub(crate) fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// One row of [`COLUMNS`]; a row that breaks an invariant is
/// [`Error::Corrupt`], never an operation.
pub(crate) fn listed(row: &Row) -> Result<Listed> {
    let seq: i64 = row.try_get(0).map_err(db)?;
    let name: String = row.try_get(1).map_err(db)?;
    let parsed = OperationName::parse(&name).map_err(|_| Error::Corrupt(format!("stored name {name:?} is invalid")))?;
    let state =
        State::from_i32(row.try_get(2).map_err(db)?).ok_or_else(|| Error::Corrupt(format!("{name}: unknown state")))?;
    let payload = |at: usize| -> Result<Option<Payload>> {
        let type_url: Option<String> = row.try_get(at).map_err(db)?;
        let value: Option<Vec<u8>> = row.try_get(at + 1).map_err(db)?;
        Ok(type_url.map(|type_url| Payload {
            type_url,
            value: value.unwrap_or_default().into(),
        }))
    };
    let error: Option<Vec<u8>> = row.try_get(10).map_err(db)?;
    let outcome = match (payload(8)?, error) {
        (Some(response), None) => Some(Outcome::Response(response)),
        (None, Some(bytes)) => {
            Some(Outcome::Error(longrun_proto::decode_status(&bytes).map_err(|err| {
                Error::Corrupt(format!("{name}: stored error does not decode: {err}"))
            })?))
        }
        (None, None) => None,
        (Some(_), Some(_)) => return Err(Error::Corrupt(format!("{name}: both response and error"))),
    };
    // A done operation keeps the token of the lease that finished it.
    let lease_token: Option<String> = row.try_get(24).map_err(db)?;
    let (lease, finished_by) = match lease_token {
        Some(token) if state.is_done() => (None, Some(token)),
        Some(token) => {
            let expire_time: Option<SystemTime> = row.try_get(26).map_err(db)?;
            let duration: Option<i64> = row.try_get(27).map_err(db)?;
            let lease = Lease {
                token,
                worker: row.try_get::<_, Option<String>>(25).map_err(db)?.unwrap_or_default(),
                expire_time: expire_time.unwrap_or(SystemTime::UNIX_EPOCH),
                duration: Duration::from_micros(duration.unwrap_or(0).try_into().unwrap_or(0)),
            };
            (Some(lease), None)
        }
        None => (None, None),
    };
    let create_time: SystemTime = row.try_get(20).map_err(db)?;
    let operation = Operation {
        name: parsed,
        state,
        outcome,
        input: payload(4)?,
        metadata: payload(6)?,
        queue: row.try_get(3).map_err(db)?,
        verb: row.try_get(11).map_err(db)?,
        target: row.try_get(12).map_err(db)?,
        api_version: row.try_get(13).map_err(db)?,
        status_detail: row.try_get(14).map_err(db)?,
        progress_percent: row.try_get(15).map_err(db)?,
        cancel_requested: row.try_get(16).map_err(db)?,
        cancel_time: row.try_get(28).map_err(db)?,
        attempt: row.try_get(17).map_err(db)?,
        max_attempts: row.try_get(18).map_err(db)?,
        request_id: row.try_get(19).map_err(db)?,
        create_time,
        update_time: row.try_get(21).map_err(db)?,
        end_time: row.try_get(22).map_err(db)?,
        deadline: row.try_get(23).map_err(db)?,
        lease,
        finished_by,
    };
    if operation.done() != operation.outcome.is_some() {
        return Err(Error::Corrupt(format!("{name}: done does not match its outcome")));
    }
    Ok(Listed {
        operation,
        cursor: Cursor {
            create_time: longrun_store::micros::micros(create_time),
            seq,
        },
    })
}

/// Reads `name` as it is now.
pub(crate) async fn read(client: &impl GenericClient, name: &str) -> Result<Listed> {
    let statement = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM operations WHERE name = $1"))
        .await
        .map_err(db)?;
    match client.query_opt(&statement, &[&name]).await.map_err(db)? {
        Some(row) => listed(&row),
        None => Err(Error::NotFound(name.to_owned())),
    }
}

/// Reads every one of `names` as it is now, in one statement; each is the
/// operation or [`Error::NotFound`], in the order of `names`.
pub(crate) async fn read_many(client: &impl GenericClient, names: &[String]) -> Result<Vec<Result<Listed>>> {
    let statement = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM operations WHERE name = ANY($1)"))
        .await
        .map_err(db)?;
    let mut found = std::collections::HashMap::with_capacity(names.len());
    for row in client.query(&statement, &[&names]).await.map_err(db)? {
        let listed = listed(&row)?;
        found.insert(listed.operation.name.to_string(), listed);
    }
    Ok(names
        .iter()
        .map(|name| match found.get(name) {
            Some(listed) => Ok(listed.clone()),
            None => Err(Error::NotFound(name.clone())),
        })
        .collect())
}

/// What a write does to an operation's custom fields (`operation_fields`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fields<'a> {
    Keep,
    /// Rows under a prefix that has none yet (a new operation's metadata,
    /// a first response).
    Add(&'a str, &'a [Indexed]),
    /// New rows under a prefix, replacing the old ones (new metadata).
    Replace(&'a str, &'a [Indexed]),
}

/// The `WITH` parts that write `fields` for the row `source` wrote, and
/// their parameters (numbered after `values`).
fn fields_ctes(fields: Fields<'_>, source: &str, values: &mut Params) -> String {
    let (prefix, indexed, replace) = match fields {
        Fields::Keep => return String::new(),
        Fields::Add(prefix, indexed) => (prefix, indexed, false),
        Fields::Replace(prefix, indexed) => (prefix, indexed, true),
    };
    // Callers index metadata with `metadata.` paths and responses with
    // `response.` ones; anything else has no place here.
    debug_assert!(indexed.iter().all(|entry| entry.path.starts_with(prefix)));
    let mut ctes = String::new();
    if replace {
        values.push(Box::new(prefix.to_owned()));
        ctes.push_str(&format!(
            ", cleared AS (DELETE FROM operation_fields WHERE seq IN (SELECT seq FROM {source}) \
               AND starts_with(path, ${}))",
            values.len()
        ));
    }
    let rows = crate::fields::rows(prefix, indexed);
    if rows.is_empty() {
        return ctes;
    }
    let at = values.len();
    values.push(Box::new(rows.paths));
    values.push(Box::new(rows.ns));
    values.push(Box::new(rows.ints));
    values.push(Box::new(rows.reals));
    values.push(Box::new(rows.texts));
    ctes.push_str(&format!(
        ", indexed AS (INSERT INTO operation_fields (seq, path, n, int_value, real_value, text_value) \
           SELECT {source}.seq, f.* FROM {source}, \
               unnest(${}::text[], ${}::int4[], ${}::int8[], ${}::float8[], ${}::text[]) AS f)",
        at + 1,
        at + 2,
        at + 3,
        at + 4,
        at + 5
    ));
    ctes
}

/// The `WITH` part that logs `change` for the row `source` wrote.
fn log_cte(change: &Change, source: &str, values: &mut Params) -> String {
    values.push(Box::new(change.done));
    values.push(Box::new(change.deleted));
    values.push(Box::new(change.queued.clone()));
    let at = values.len();
    format!(
        ", logged AS (INSERT INTO changes (name, done, deleted, queued) \
           SELECT name, ${}::bool, ${}::bool, ${}::text FROM {source})",
        at - 2,
        at - 1,
        at
    )
}

/// Inserts a new operation with its fields and its change, in one
/// statement; `None` when its name or its request id is taken (by a
/// committed row, or one committing meanwhile).
pub(crate) async fn insert(client: &impl GenericClient, new: &NewOperation) -> Result<Option<Listed>> {
    Ok(insert_many(client, &[new]).await?.pop().flatten())
}

/// Inserts several new operations with their fields and their changes, in
/// one statement (`crate::creates` gathers them): each row as written, in
/// order, or `None` where its name or request id is taken, like [`insert`]
/// one at a time in that order.
pub(crate) async fn insert_many(client: &impl GenericClient, news: &[&NewOperation]) -> Result<Vec<Option<Listed>>> {
    let mut names = Vec::with_capacity(news.len());
    let mut parents = Vec::with_capacity(news.len());
    let mut states = Vec::with_capacity(news.len());
    let mut queues = Vec::with_capacity(news.len());
    let mut input_types = Vec::with_capacity(news.len());
    let mut inputs = Vec::with_capacity(news.len());
    let mut metadata_types = Vec::with_capacity(news.len());
    let mut metadatas = Vec::with_capacity(news.len());
    let mut verbs = Vec::with_capacity(news.len());
    let mut targets = Vec::with_capacity(news.len());
    let mut api_versions = Vec::with_capacity(news.len());
    let mut max_attempts = Vec::with_capacity(news.len());
    let mut request_ids = Vec::with_capacity(news.len());
    let mut nows = Vec::with_capacity(news.len());
    let mut deadlines = Vec::with_capacity(news.len());
    let mut fields = crate::fields::Rows::default();
    let mut field_names = Vec::new();
    for new in news {
        let name = new.name.to_string();
        // A name twice: the later one conflicts, as it would one at a time
        // (and must not lend its fields to the earlier one's row).
        if names.contains(&name) {
            continue;
        }
        let rows = crate::fields::rows(METADATA, &new.indexed);
        field_names.extend(std::iter::repeat_n(name.clone(), rows.paths.len()));
        fields.paths.extend(rows.paths);
        fields.ns.extend(rows.ns);
        fields.ints.extend(rows.ints);
        fields.reals.extend(rows.reals);
        fields.texts.extend(rows.texts);
        names.push(name);
        parents.push(new.name.parent().as_str().to_owned());
        states.push(new.state().as_i32());
        queues.push(new.queue.as_deref());
        input_types.push(new.input.as_ref().map(|p| p.type_url.as_str()));
        inputs.push(new.input.as_ref().map(|p| p.value.as_ref()));
        metadata_types.push(new.metadata.as_ref().map(|p| p.type_url.as_str()));
        metadatas.push(new.metadata.as_ref().map(|p| p.value.as_ref()));
        verbs.push(new.verb.as_str());
        targets.push(new.target.as_str());
        api_versions.push(new.api_version.as_str());
        max_attempts.push(new.max_attempts);
        request_ids.push(new.request_id.as_deref());
        nows.push(new.now);
        deadlines.push(new.deadline());
    }
    let sql = format!(
        "WITH inserted AS ( \
             INSERT INTO operations (name, parent, state, done, queue, input_type, input, metadata_type, metadata, \
                 verb, target, api_version, attempt, max_attempts, request_id, create_time, update_time, deadline, \
                 available_time) \
             SELECT n, p, s, false, q, it, i, mt, m, v, t, av, 1, ma, r, now_, now_, d, now_ \
             FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::bytea[], $7::text[], \
                 $8::bytea[], $9::text[], $10::text[], $11::text[], $12::int4[], $13::text[], $14::timestamptz[], \
                 $15::timestamptz[]) WITH ORDINALITY AS x(n, p, s, q, it, i, mt, m, v, t, av, ma, r, now_, d, ord) \
             ORDER BY ord \
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}), \
         logged AS (INSERT INTO changes (name, done, deleted, queued) \
             SELECT name, false, false, queue FROM inserted ORDER BY seq), \
         indexed AS (INSERT INTO operation_fields (seq, path, n, int_value, real_value, text_value) \
             SELECT inserted.seq, f.path, f.n, f.int_value, f.real_value, f.text_value \
             FROM inserted JOIN unnest($16::text[], $17::text[], $18::int4[], $19::int8[], $20::float8[], \
                 $21::text[]) AS f(name, path, n, int_value, real_value, text_value) ON f.name = inserted.name) \
         SELECT {COLUMNS} FROM inserted"
    );
    let statement = client.prepare_cached(&sql).await.map_err(db)?;
    let rows = client
        .query(
            &statement,
            &[
                &names,
                &parents,
                &states,
                &queues,
                &input_types,
                &inputs,
                &metadata_types,
                &metadatas,
                &verbs,
                &targets,
                &api_versions,
                &max_attempts,
                &request_ids,
                &nows,
                &deadlines,
                &field_names,
                &fields.paths,
                &fields.ns,
                &fields.ints,
                &fields.reals,
                &fields.texts,
            ],
        )
        .await
        .map_err(db)?;
    let mut written: HashMap<String, Listed> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let listed = listed(row)?;
        written.insert(listed.operation.name.to_string(), listed);
    }
    Ok(news.iter().map(|new| written.remove(&new.name.to_string())).collect())
}

/// `UPDATE operations SET {sets}` on the row `seq` read as `op`, only if
/// what the lifecycle decided on is as it was read ([`Fence`]); in the same
/// statement, logs `change` and writes `fields`. `values` are the
/// parameters of `sets`, numbered from `$1`. Returns the row as written, or
/// `None` when the fence held it back (the caller reads again and decides
/// again).
pub(crate) async fn update_fenced(
    client: &impl GenericClient,
    seq: i64,
    op: &Operation,
    sets: &str,
    mut values: Params,
    change: &Change,
    fields: Fields<'_>,
) -> Result<Option<Listed>> {
    let fence = Fence::of(op);
    let at = values.len();
    values.push(Box::new(seq));
    values.push(Box::new(fence.state.as_i32()));
    values.push(Box::new(fence.attempt));
    values.push(Box::new(fence.lease_token));
    values.push(Box::new(fence.cancel_requested));
    let logged = log_cte(change, "written", &mut values);
    let written_fields = fields_ctes(fields, "written", &mut values);
    let sql = format!(
        "WITH written AS ( \
             UPDATE operations SET {sets} WHERE seq = ${} AND state = ${} AND attempt = ${} \
                 AND lease_token IS NOT DISTINCT FROM ${} AND cancel_requested = ${} \
             RETURNING {COLUMNS}){logged}{written_fields} \
         SELECT {COLUMNS} FROM written",
        at + 1,
        at + 2,
        at + 3,
        at + 4,
        at + 5
    );
    let statement = client.prepare_cached(&sql).await.map_err(db)?;
    let row = client.query_opt(&statement, &refs(&values)).await.map_err(db)?;
    row.as_ref().map(listed).transpose()
}

/// Writes a lifecycle step, fenced, with its change and `fields`: the same
/// statement for every caller (a completion, a cancel, a release, the
/// sweep).
pub(crate) async fn write_step(
    client: &impl GenericClient,
    seq: i64,
    op: &Operation,
    step: &Step,
    now: SystemTime,
    fields: Fields<'_>,
) -> Result<Option<Listed>> {
    let change = Change::of_step(op, step);
    match step {
        Step::Requeue {
            attempt,
            available_time,
            status_detail,
        } => {
            let sets = "state = $1, attempt = $2, available_time = $3, update_time = $4, \
                        status_detail = coalesce($5, status_detail), lease_token = NULL, lease_worker = NULL, \
                        lease_expire_time = NULL, lease_duration = NULL";
            let values: Params = vec![
                Box::new(State::Queued.as_i32()),
                Box::new(*attempt),
                Box::new(*available_time),
                Box::new(now),
                Box::new(status_detail.clone()),
            ];
            update_fenced(client, seq, op, sets, values, &change, fields).await
        }
        Step::End {
            state,
            outcome,
            end_time,
            finished_by,
            cancels,
        } => {
            let (response_type, response, error_code, error, error_message) = match outcome {
                Outcome::Response(payload) => (
                    Some(payload.type_url.clone()),
                    Some(payload.value.to_vec()),
                    None,
                    None,
                    None,
                ),
                Outcome::Error(status) => (
                    None,
                    None,
                    Some(status.code),
                    Some(longrun_proto::encode_status(status)),
                    Some(status.message.clone()),
                ),
            };
            let mut sets = "state = $1, done = true, response_type = $2, response = $3, error_code = $4, error = $5, \
                            error_message = $6, end_time = $7, update_time = $8, lease_token = $9, \
                            lease_expire_time = NULL, progress_percent = coalesce($10, progress_percent)"
                .to_owned();
            if *cancels {
                sets.push_str(", cancel_requested = true, cancel_time = coalesce(cancel_time, $7)");
            }
            let values: Params = vec![
                Box::new(state.as_i32()),
                Box::new(response_type),
                Box::new(response),
                Box::new(error_code),
                Box::new(error),
                Box::new(error_message),
                Box::new(*end_time),
                Box::new(now),
                Box::new(finished_by.clone()),
                Box::new(lifecycle::final_progress(*state)),
            ];
            update_fenced(client, seq, op, &sets, values, &change, fields).await
        }
    }
}

/// Ends several operations in one statement, each fenced on its own: what
/// [`write_step`] does for a `Step::End` that neither cancels nor writes
/// custom fields, with one statement's overhead (opening the table's
/// indexes, its checks) for the batch instead of one per row. `ends` are
/// (seq, operation as read, step); returns each row as written, in order,
/// or `None` where the fence held it back. Other steps are not for here.
pub(crate) async fn end_many(
    client: &impl GenericClient,
    ends: &[(i64, &Operation, &Step)],
    now: SystemTime,
) -> Result<Vec<Option<Listed>>> {
    let mut seqs = Vec::with_capacity(ends.len());
    let mut states = Vec::with_capacity(ends.len());
    let mut response_types: Vec<Option<&str>> = Vec::with_capacity(ends.len());
    let mut responses: Vec<Option<&[u8]>> = Vec::with_capacity(ends.len());
    let mut error_codes = Vec::with_capacity(ends.len());
    let mut errors = Vec::with_capacity(ends.len());
    let mut error_messages: Vec<Option<&str>> = Vec::with_capacity(ends.len());
    let mut end_times = Vec::with_capacity(ends.len());
    let mut finished_by: Vec<Option<&str>> = Vec::with_capacity(ends.len());
    let mut progress = Vec::with_capacity(ends.len());
    let mut fence_states = Vec::with_capacity(ends.len());
    let mut fence_attempts = Vec::with_capacity(ends.len());
    let mut fence_tokens = Vec::with_capacity(ends.len());
    let mut fence_cancels = Vec::with_capacity(ends.len());
    for (seq, op, step) in ends {
        let Step::End {
            state,
            outcome,
            end_time,
            finished_by: by,
            cancels: false,
        } = step
        else {
            return Err(Error::internal(format!("end_many was given {step:?}")));
        };
        seqs.push(*seq);
        states.push(state.as_i32());
        match outcome {
            Outcome::Response(payload) => {
                response_types.push(Some(&payload.type_url));
                responses.push(Some(&payload.value));
                error_codes.push(None);
                errors.push(None);
                error_messages.push(None);
            }
            Outcome::Error(status) => {
                response_types.push(None);
                responses.push(None);
                error_codes.push(Some(status.code));
                errors.push(Some(longrun_proto::encode_status(status)));
                error_messages.push(Some(&status.message));
            }
        }
        end_times.push(*end_time);
        finished_by.push(by.as_deref());
        progress.push(lifecycle::final_progress(*state));
        let fence = Fence::of(op);
        fence_states.push(fence.state.as_i32());
        fence_attempts.push(fence.attempt);
        fence_tokens.push(fence.lease_token);
        fence_cancels.push(fence.cancel_requested);
    }
    // The input's columns are named apart from the table's, so RETURNING
    // reads the table's unqualified.
    let sql = format!(
        "WITH ends AS ( \
             SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::bytea[], $5::int4[], $6::bytea[], \
                 $7::text[], $8::timestamptz[], $9::text[], $10::int4[], $11::int4[], $12::int4[], $13::text[], \
                 $14::bool[]) \
             AS e(end_seq, new_state, new_response_type, new_response, new_error_code, new_error, \
                 new_error_message, new_end_time, new_lease_token, new_progress, fence_state, fence_attempt, \
                 fence_token, fence_cancel)), \
         written AS ( \
             UPDATE operations SET state = new_state, done = true, response_type = new_response_type, \
                 response = new_response, error_code = new_error_code, error = new_error, \
                 error_message = new_error_message, end_time = new_end_time, update_time = $15, \
                 lease_token = new_lease_token, lease_expire_time = NULL, \
                 progress_percent = coalesce(new_progress, progress_percent) \
             FROM ends \
             WHERE seq = end_seq AND state = fence_state AND attempt = fence_attempt \
                 AND lease_token IS NOT DISTINCT FROM fence_token AND cancel_requested = fence_cancel \
             RETURNING {COLUMNS}), \
         logged AS (INSERT INTO changes (name, done, deleted) SELECT name, true, false FROM written ORDER BY seq) \
         SELECT {COLUMNS} FROM written"
    );
    let statement = client.prepare_cached(&sql).await.map_err(db)?;
    let rows = client
        .query(
            &statement,
            &[
                &seqs,
                &states,
                &response_types,
                &responses,
                &error_codes,
                &errors,
                &error_messages,
                &end_times,
                &finished_by,
                &progress,
                &fence_states,
                &fence_attempts,
                &fence_tokens,
                &fence_cancels,
                &now,
            ],
        )
        .await
        .map_err(db)?;
    let mut written: HashMap<i64, Listed> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let listed = listed(row)?;
        written.insert(listed.cursor.seq, listed);
    }
    Ok(seqs.iter().map(|seq| written.remove(seq)).collect())
}

/// Appends `changes` to the feed, for writes that log several at once
/// (call [`crate::feed::Notifier::committed`] after the commit).
pub(crate) async fn log(client: &impl GenericClient, changes: &[Change]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = changes.iter().map(|change| change.name.as_str()).collect();
    let done: Vec<bool> = changes.iter().map(|change| change.done).collect();
    let deleted: Vec<bool> = changes.iter().map(|change| change.deleted).collect();
    let queued: Vec<Option<&str>> = changes.iter().map(|change| change.queued.as_deref()).collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO changes (name, done, deleted, queued) \
             SELECT * FROM unnest($1::text[], $2::bool[], $3::bool[], $4::text[])",
        )
        .await
        .map_err(db)?;
    client
        .execute(&statement, &[&names, &done, &deleted, &queued])
        .await
        .map_err(db)?;
    Ok(())
}
