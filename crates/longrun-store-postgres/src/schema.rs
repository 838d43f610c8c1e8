//! The PostgreSQL schema and its migrations.
//!
//! Everything lives in the schema `longrun` (connections set their
//! `search_path` to it), so longrun can share a database with other
//! applications. Versions are recorded in `longrun.schema_migrations`; a
//! node applies the missing ones at start, all in one transaction under an
//! advisory lock, so nodes starting together apply each exactly once and
//! none serves a half-migrated schema.

use tokio_postgres::Client;

use crate::db;
use longrun_store::{Error, Result};

/// The advisory lock key that serialises migrations (`hashtext` of a name,
/// so it is unlikely to collide with an application's own keys).
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('longrun.schema_migrations'))";

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a
/// shipped entry; append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
-- Text compares bytewise (COLLATE "C"), as in SQLite and in the filter
-- reference, whatever the database's default collation.
CREATE TABLE operations (
    -- Insertion order: the tie-break of newest-first listing, and claim order.
    seq               bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text    COLLATE "C" NOT NULL UNIQUE,
    parent            text    COLLATE "C" NOT NULL,
    state             integer NOT NULL CHECK (state BETWEEN 1 AND 5),
    done              boolean NOT NULL CHECK (done = (state >= 3)),
    queue             text    COLLATE "C",
    input_type        text,
    input             bytea,
    metadata_type     text    COLLATE "C",
    metadata          bytea,
    response_type     text    COLLATE "C",
    response          bytea,
    error_code        integer,
    -- google.rpc.Status, encoded; its message again for filters.
    error             bytea,
    error_message     text    COLLATE "C",
    verb              text    COLLATE "C" NOT NULL DEFAULT '',
    target            text    COLLATE "C" NOT NULL DEFAULT '',
    api_version       text    COLLATE "C" NOT NULL DEFAULT '',
    status_detail     text    COLLATE "C" NOT NULL DEFAULT '',
    progress_percent  integer NOT NULL DEFAULT 0,
    cancel_requested  boolean NOT NULL DEFAULT false,
    cancel_time       timestamptz,
    attempt           integer NOT NULL,
    max_attempts      integer NOT NULL,
    request_id        text    COLLATE "C",
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL,
    end_time          timestamptz,
    deadline          timestamptz,
    -- When a queued operation may be claimed (retry backoff).
    available_time    timestamptz NOT NULL,
    -- The current lease of a running claimed operation; on a done one,
    -- the token of the lease that finished it.
    lease_token       text,
    lease_worker      text,
    lease_expire_time timestamptz,
    -- Microseconds; each heartbeat extends the lease by this much.
    lease_duration    bigint,
    -- Custom fields not indexed yet (`Store::unindexed`).
    fields_pending    boolean NOT NULL DEFAULT false,
    -- done <=> exactly one of response and error.
    CONSTRAINT done_has_one_outcome CHECK (num_nonnulls(response_type, error) = CASE WHEN done THEN 1 ELSE 0 END)
);
CREATE UNIQUE INDEX operations_by_request_id ON operations (parent, request_id) WHERE request_id IS NOT NULL;
-- Lists are newest first by (create_time, seq); each index a filter can
-- use ends in that keyset, so a page reads it in order from the token.
CREATE INDEX operations_by_parent ON operations (parent, create_time, seq);
CREATE INDEX operations_by_done ON operations (parent, done, create_time, seq);
CREATE INDEX operations_by_state ON operations (parent, state, create_time, seq);
CREATE INDEX operations_by_error_code ON operations (parent, error_code, create_time, seq) WHERE error_code IS NOT NULL;
CREATE INDEX operations_by_verb ON operations (verb, create_time, seq);
CREATE INDEX operations_by_target ON operations (target, create_time, seq);
CREATE INDEX operations_by_create_time ON operations (create_time, seq);
-- Claims walk a queue in order; the sweep finds what is overdue.
CREATE INDEX operations_claimable ON operations (queue, seq) WHERE state = 1;
CREATE INDEX operations_by_lease_expiry ON operations (lease_expire_time) WHERE state = 2 AND lease_token IS NOT NULL;
CREATE INDEX operations_by_deadline ON operations (deadline) WHERE NOT done AND deadline IS NOT NULL;
CREATE INDEX operations_by_cancel_time ON operations (cancel_time) WHERE state = 2 AND cancel_requested;
CREATE INDEX operations_by_end_time ON operations (end_time) WHERE done;
CREATE INDEX operations_fields_pending ON operations (seq) WHERE fields_pending;

-- Filterable values of custom metadata and responses (`filter::Indexed`),
-- written with the operation. A repeated field has one row per element
-- (`n`, its position); a set message field has a row with no value. By
-- kind: integers, booleans (0, 1), times (µs) and durations (ns) in
-- int_value; doubles in real_value; strings and enum names in text_value.
-- No unique key: a write replaces an operation's rows in one statement
-- (its DELETE and INSERT see the same snapshot, in no set order).
CREATE TABLE operation_fields (
    seq        bigint  NOT NULL REFERENCES operations (seq) ON DELETE CASCADE,
    path       text    COLLATE "C" NOT NULL,
    n          integer NOT NULL,
    int_value  bigint,
    real_value double precision,
    text_value text    COLLATE "C"
);
CREATE INDEX operation_fields_by_path ON operation_fields (seq, path);

CREATE TABLE settings (
    key   text  PRIMARY KEY,
    value bytea NOT NULL
);

-- The change feed: one row per committed change, in the order ids were
-- taken (commits may land out of that order; readers fill the gaps).
-- Every writing transaction also sends NOTIFY longrun_changes; nodes read
-- new rows on the notification, and poll as a safety net. Pruned after a
-- window by the sweep.
CREATE TABLE changes (
    id      bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name    text    COLLATE "C" NOT NULL,
    done    boolean NOT NULL,
    deleted boolean NOT NULL,
    -- The queue, when the change made the operation claimable.
    queued  text    COLLATE "C",
    time    timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Ids and times rise together: a block range index is enough to prune by.
CREATE INDEX changes_by_time ON changes USING brin (time);
"#,
    r#"
-- The sweep prunes the feed from its oldest id (work.rs), so no query
-- reads the feed by time: the index only cost every change's insert.
DROP INDEX changes_by_time;
"#,
];

/// Brings the database to the latest schema version: creates the schema
/// `longrun` if needed, then applies the missing migrations, in one
/// transaction under an advisory lock.
pub(crate) async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await.map_err(db)?;
    tx.batch_execute(LOCK).await.map_err(db)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS longrun;
         CREATE TABLE IF NOT EXISTS longrun.schema_migrations (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(db)?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM longrun.schema_migrations", &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(Error::internal(format!(
            "the database has schema version {version}, newer than this longrun ({}); upgrade longrun",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await.map_err(db)?;
        let applied = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO longrun.schema_migrations (version) VALUES ($1)",
            &[&applied],
        )
        .await
        .map_err(db)?;
        tracing::info!(version = applied, "migrated the PostgreSQL schema");
    }
    tx.commit().await.map_err(db)
}

/// The page-token signing key, created at random by the first node and
/// read by every other.
pub(crate) async fn page_token_key(client: &Client) -> Result<[u8; 32]> {
    let fresh: [u8; 32] = rand::random();
    client
        .execute(
            "INSERT INTO settings (key, value) VALUES ('page_token_key', $1) ON CONFLICT (key) DO NOTHING",
            &[&fresh.as_slice()],
        )
        .await
        .map_err(db)?;
    let stored: Vec<u8> = client
        .query_one("SELECT value FROM settings WHERE key = 'page_token_key'", &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    stored
        .try_into()
        .map_err(|_| Error::Corrupt("page_token_key is not 32 bytes".into()))
}
