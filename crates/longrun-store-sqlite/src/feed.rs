//! The change feed in SQLite: every write logs its changes in the
//! `changes` table inside its own savepoint, so a change is in the log
//! exactly when its write committed. One writer commits in id order, so a
//! row's id is its position. The sweep prunes rows past
//! [`CHANGE_RETENTION`] and records the highest id it pruned, below which
//! [`after`] cannot answer.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _};

use crate::db;
use longrun_store::micros::micros;
use longrun_store::{CHANGE_RETENTION, Change, Result};

const PRUNED_THROUGH: &str = "changes_pruned_through";

/// Logs `changes` and returns them with their positions.
pub(crate) fn log(conn: &Connection, changes: impl IntoIterator<Item = Change>) -> Result<Vec<Change>> {
    // One row: `OR FAIL` needs no statement journal (see `rows`).
    let mut insert = conn
        .prepare_cached(
            "INSERT OR FAIL INTO changes (name, done, deleted, queued) VALUES (?1, ?2, ?3, ?4) RETURNING id",
        )
        .map_err(db)?;
    changes
        .into_iter()
        .map(|mut change| {
            let id: i64 = insert
                .query_row(
                    rusqlite::params![change.name, change.done, change.deleted, change.queued],
                    |row| row.get(0),
                )
                .map_err(db)?;
            change.position = u64::try_from(id).unwrap_or_default();
            Ok(change)
        })
        .collect()
}

/// The position of the last change logged, pruned or not.
pub(crate) fn last_position(conn: &Connection) -> Result<u64> {
    let id: Option<i64> = conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'changes'", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(db)?;
    Ok(id.map_or(0, |id| u64::try_from(id).unwrap_or_default()))
}

/// Up to `limit` changes after `position`, or `None` when the log no longer
/// (or never) reached it. `announced` is the position last announced: rows
/// past it are not read, so a reader never gets ahead of the broadcast.
pub(crate) fn after(conn: &Connection, position: u64, announced: u64, limit: usize) -> Result<Option<Vec<Change>>> {
    if position > announced || position < pruned_through(conn)? {
        return Ok(None);
    }
    let (Ok(position), Ok(announced), Ok(limit)) =
        (i64::try_from(position), i64::try_from(announced), i64::try_from(limit))
    else {
        return Ok(None);
    };
    let changes = conn
        .prepare_cached(
            "SELECT id, name, done, deleted, queued FROM changes WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        )
        .map_err(db)?
        .query_map(rusqlite::params![position, announced, limit], |row| {
            Ok(Change {
                position: u64::try_from(row.get::<_, i64>(0)?).unwrap_or_default(),
                name: row.get(1)?,
                done: row.get(2)?,
                deleted: row.get(3)?,
                queued: row.get(4)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db)?;
    Ok(Some(changes))
}

/// Deletes rows older than the retention window at `now`, at most `batch`:
/// the oldest ones up to the first still inside the window, looking at no
/// more than the `batch` ids from the oldest. (`time` has no index; `WHERE
/// time < ?1 ORDER BY id` walked the whole window on every sweep, on the
/// writer thread: 36 ms at a million rows.)
pub(crate) fn prune(conn: &Connection, now: SystemTime, batch: usize) -> Result<()> {
    let cutoff = micros(now.checked_sub(CHANGE_RETENTION).unwrap_or(SystemTime::UNIX_EPOCH));
    let pruned: Option<i64> = conn
        .prepare_cached(
            "DELETE FROM changes WHERE id IN (SELECT id FROM changes \
                 WHERE id < coalesce((SELECT id FROM changes \
                     WHERE id < (SELECT min(id) FROM changes) + ?2 AND time >= ?1 ORDER BY id LIMIT 1), \
                     (SELECT min(id) FROM changes) + ?2) \
                 ORDER BY id LIMIT ?2) \
             RETURNING id",
        )
        .map_err(db)?
        .query_map(
            rusqlite::params![cutoff, i64::try_from(batch).unwrap_or(i64::MAX)],
            |row| row.get::<_, i64>(0),
        )
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?
        .into_iter()
        .max();
    if let Some(through) = pruned {
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![PRUNED_THROUGH, through.to_be_bytes().as_slice()],
        )
        .map_err(db)?;
    }
    Ok(())
}

fn pruned_through(conn: &Connection) -> Result<u64> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [PRUNED_THROUGH], |row| {
            row.get(0)
        })
        .optional()
        .map_err(db)?;
    Ok(stored
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, |bytes| u64::try_from(i64::from_be_bytes(bytes)).unwrap_or_default()))
}
