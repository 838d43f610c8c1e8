//! The SQLite schema and its migrations, applied in order and tracked by
//! `PRAGMA user_version`.

use rusqlite::{Connection, OptionalExtension as _};

use longrun_store::{Error, Result};

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a
/// shipped entry; append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE operations (
    -- Insertion order: the keyset for newest-first listing.
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL UNIQUE,
    parent            TEXT    NOT NULL,
    state             INTEGER NOT NULL CHECK (state BETWEEN 1 AND 5),
    done              INTEGER NOT NULL CHECK (done = (state >= 3)),
    queue             TEXT,
    input_type        TEXT,
    input             BLOB,
    metadata_type     TEXT,
    metadata          BLOB,
    response_type     TEXT,
    response          BLOB,
    error_code        INTEGER,
    -- google.rpc.Status, encoded.
    error             BLOB,
    verb              TEXT    NOT NULL DEFAULT '',
    target            TEXT    NOT NULL DEFAULT '',
    api_version       TEXT    NOT NULL DEFAULT '',
    status_detail     TEXT    NOT NULL DEFAULT '',
    progress_percent  INTEGER NOT NULL DEFAULT 0,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    cancel_time       INTEGER,
    attempt           INTEGER NOT NULL,
    max_attempts      INTEGER NOT NULL,
    request_id        TEXT,
    -- Microseconds since the Unix epoch.
    create_time       INTEGER NOT NULL,
    update_time       INTEGER NOT NULL,
    end_time          INTEGER,
    deadline          INTEGER,
    lease_token       TEXT,
    lease_worker      TEXT,
    lease_expire_time INTEGER,
    -- done <=> exactly one of response and error.
    CHECK (done = ((response_type IS NOT NULL) + (error IS NOT NULL)))
);
CREATE UNIQUE INDEX operations_by_request_id ON operations (parent, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX operations_by_parent ON operations (parent, seq);
CREATE INDEX operations_by_done ON operations (parent, done, seq);
CREATE INDEX operations_by_state ON operations (parent, state, seq);
CREATE INDEX operations_by_error_code ON operations (error_code) WHERE error_code IS NOT NULL;
CREATE INDEX operations_by_verb ON operations (verb, seq);
CREATE INDEX operations_by_target ON operations (target, seq);
CREATE INDEX operations_by_create_time ON operations (create_time);
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"#,
    r#"
-- Workers: when a queued operation may be claimed (retry backoff), and how
-- long each heartbeat extends a lease.
ALTER TABLE operations ADD COLUMN available_time INTEGER NOT NULL DEFAULT 0;
ALTER TABLE operations ADD COLUMN lease_duration INTEGER;
UPDATE operations SET available_time = create_time;
CREATE INDEX operations_claimable ON operations (queue, available_time, seq) WHERE state = 1;
CREATE INDEX operations_by_lease_expiry ON operations (lease_expire_time) WHERE state = 2 AND lease_token IS NOT NULL;
CREATE INDEX operations_by_deadline ON operations (deadline) WHERE done = 0 AND deadline IS NOT NULL;
CREATE INDEX operations_by_cancel_time ON operations (cancel_time) WHERE state = 2 AND cancel_requested = 1;
CREATE INDEX operations_by_end_time ON operations (end_time) WHERE done = 1;
"#,
    r#"
-- Filters on error.message; filled from the stored status by `backfill`.
ALTER TABLE operations ADD COLUMN error_message TEXT;
"#,
    r#"
-- Filterable values of custom metadata and responses (`filter::Indexed`),
-- written with the operation from the server's type registry. A repeated
-- field has one row per element (`n`); a set message field has a row with
-- no value. By kind: integers, booleans, times (µs) and durations (ns) in
-- int_value; doubles in real_value; strings and enum names in text_value.
CREATE TABLE operation_fields (
    seq        INTEGER NOT NULL REFERENCES operations (seq) ON DELETE CASCADE,
    path       TEXT    NOT NULL,
    n          INTEGER NOT NULL,
    int_value  INTEGER,
    real_value REAL,
    text_value TEXT,
    PRIMARY KEY (seq, path, n)
) WITHOUT ROWID;
-- Filters read these rows per operation, by the primary key, while the
-- list walks an operations index in keyset order.
-- Operations written before this version: the server indexes them at start
-- (`Store::unindexed`, `Store::reindex`).
ALTER TABLE operations ADD COLUMN fields_pending INTEGER NOT NULL DEFAULT 0;
UPDATE operations SET fields_pending = 1 WHERE metadata IS NOT NULL OR response IS NOT NULL;
CREATE INDEX operations_fields_pending ON operations (seq) WHERE fields_pending = 1;
"#,
    r#"
-- Lists are ordered newest first by (create_time, seq), so that a
-- createTime range is one index range in list order. Each index a filter
-- can use ends in that keyset, so a page reads it in order from the token.
DROP INDEX operations_by_parent;
DROP INDEX operations_by_done;
DROP INDEX operations_by_state;
DROP INDEX operations_by_error_code;
DROP INDEX operations_by_verb;
DROP INDEX operations_by_target;
DROP INDEX operations_by_create_time;
CREATE INDEX operations_by_parent ON operations (parent, create_time, seq);
CREATE INDEX operations_by_done ON operations (parent, done, create_time, seq);
CREATE INDEX operations_by_state ON operations (parent, state, create_time, seq);
CREATE INDEX operations_by_error_code ON operations (parent, error_code, create_time, seq) WHERE error_code IS NOT NULL;
CREATE INDEX operations_by_verb ON operations (verb, create_time, seq);
CREATE INDEX operations_by_target ON operations (target, create_time, seq);
-- Lists across parents (`-` wildcards) read this one in order.
CREATE INDEX operations_by_create_time ON operations (create_time, seq);
"#,
    r#"
-- Claims take the oldest queued operation of a queue (by seq): walk the
-- queue in that order and skip the few still backing off, rather than
-- sort every queued operation by seq on each claim (which made a drain of
-- 20,000 queued operations quadratic).
DROP INDEX operations_claimable;
CREATE INDEX operations_claimable ON operations (queue, seq) WHERE state = 1;
"#,
    r#"
-- The change feed: one row per committed change, in commit order (one
-- writer). Watch streams resume from a row's id; the sweep prunes rows
-- older than the retention window and records how far it pruned.
CREATE TABLE changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT    NOT NULL,
    done    INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    queued  TEXT,
    -- Microseconds since the epoch, by SQLite's clock.
    time    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
);
"#,
];

/// Brings the database to the latest schema version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(crate::db)?;
    if version > MIGRATIONS.len() {
        return Err(Error::internal(format!(
            "the database has schema version {version}, newer than this longrun ({}); upgrade longrun",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(crate::db)?;
        tx.execute_batch(sql).map_err(crate::db)?;
        backfill(&tx, index + 1)?;
        tx.pragma_update(None, "user_version", index + 1).map_err(crate::db)?;
        tx.commit().map_err(crate::db)?;
        tracing::info!(version = index + 1, "migrated the SQLite schema");
    }
    Ok(())
}

/// Data migrations that SQL alone cannot do, run inside the migration's
/// transaction.
fn backfill(conn: &Connection, version: usize) -> Result<()> {
    if version != 3 {
        return Ok(());
    }
    let mut select = conn
        .prepare("SELECT seq, error FROM operations WHERE error IS NOT NULL")
        .map_err(crate::db)?;
    let rows: Vec<(i64, Vec<u8>)> = select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(crate::db)?
        .collect::<rusqlite::Result<_>>()
        .map_err(crate::db)?;
    for (seq, error) in rows {
        let status = longrun_proto::decode_status(&error)
            .map_err(|err| Error::Corrupt(format!("operation #{seq}: stored error does not decode: {err}")))?;
        conn.execute(
            "UPDATE operations SET error_message = ?2 WHERE seq = ?1",
            rusqlite::params![seq, status.message],
        )
        .map_err(crate::db)?;
    }
    Ok(())
}

/// The page-token signing key, created at random on first use.
pub(crate) fn page_token_key(conn: &Connection) -> Result<[u8; 32]> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM settings WHERE key = 'page_token_key'", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(crate::db)?;
    if let Some(key) = stored {
        return key
            .try_into()
            .map_err(|_| Error::Corrupt("page_token_key is not 32 bytes".into()));
    }
    let key: [u8; 32] = rand::random();
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('page_token_key', ?1)",
        [key.as_slice()],
    )
    .map_err(crate::db)?;
    Ok(key)
}
