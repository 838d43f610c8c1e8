//! The change feed across nodes.
//!
//! Every writing transaction appends its changes to the `changes` table.
//! After it commits, the node's [`Notifier`] pokes its own reader at once
//! and sends one `NOTIFY longrun_changes` for every commit since its last
//! one, in a transaction of its own: a NOTIFY inside the writing
//! transactions would serialise their commits (PostgreSQL holds a global
//! lock from a notifying transaction's commit until it is flushed), so
//! group commit would be lost. Each node keeps one connection listening,
//! and on every notification, every [`POLL`] as a safety net, and at once
//! after its listener reconnects, it reads the rows it has not seen and
//! announces them on its local broadcast channel, which `Store::changes`
//! subscribes to. A node's own writes come back the same way, so every
//! change reaches every node by one path, once.
//!
//! Ids are taken in insertion order but transactions commit in any order,
//! so a reader can see id 11 before id 10 commits. The [`Cursor`] delivers
//! what it sees at once, remembers the ids it skipped over (gaps), and
//! looks for them again until they appear or [`GAP_PATIENCE`] passes (an
//! id whose transaction rolled back never appears). Rows are pruned after
//! [`RETENTION`], long after any gap is given up.
//!
//! A change's position (for watch streams to resume from) is the cursor's
//! watermark once it is announced: the highest id with no gap at or below
//! it. Changes past a gap carry the position below the gap, so resuming
//! from one repeats a few changes rather than missing the late one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt as _;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken as Stop;

use crate::{client, db};
use longrun_store::{Change, Result};

/// The channel writers notify.
pub(crate) const CHANNEL: &str = "longrun_changes";
/// How often a node reads the feed without being notified.
pub(crate) const POLL: Duration = Duration::from_secs(1);
/// How long a skipped id is looked for. Longer than any transaction of
/// ours (their statements time out sooner); after that it rolled back.
pub(crate) const GAP_PATIENCE: Duration = Duration::from_secs(60);
/// How long rows stay in the feed (the sweep prunes older ones).
pub(crate) const RETENTION: Duration = longrun_store::CHANGE_RETENTION;
/// The `settings` key under which the sweep records the highest id it
/// pruned.
pub(crate) const PRUNED_THROUGH: &str = "changes_pruned_through";
/// Most rows read at once; a full read is followed by another at once.
const BATCH: i64 = 1000;
/// A jump in ids longer than this (rows pruned while a node was away) is
/// skipped rather than remembered id by id.
const MAX_GAP: i64 = 10_000;

/// One row of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: i64,
    pub change: Change,
}

/// Which ids a node has announced.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    /// The highest id announced (or skipped as too old to wait for).
    high: i64,
    /// Ids below `high` not seen yet, and since when they are missed.
    gaps: BTreeMap<i64, Instant>,
}

impl Cursor {
    pub fn starting_after(id: i64) -> Self {
        Self {
            high: id,
            gaps: BTreeMap::new(),
        }
    }

    /// The ids a read must ask for besides those above `high`.
    pub fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    pub fn high(&self) -> i64 {
        self.high
    }

    /// The highest id at or below which every id has been announced (or
    /// given up).
    pub fn watermark(&self) -> u64 {
        let watermark = self.gaps.keys().next().map_or(self.high, |first_gap| first_gap - 1);
        u64::try_from(watermark).unwrap_or_default()
    }

    /// Takes the rows of a read (in id order) and returns those to
    /// announce, each with its position: each id once, whatever order they
    /// commit in.
    pub fn accept(&mut self, entries: Vec<Entry>, now: Instant) -> Vec<Change> {
        // Gaps given up before this read do not hold positions back.
        self.gaps.retain(|_, since| now.duration_since(*since) < GAP_PATIENCE);
        let mut fresh = Vec::with_capacity(entries.len());
        for entry in entries {
            let new = if entry.id > self.high {
                if entry.id - self.high <= MAX_GAP {
                    for missing in self.high + 1..entry.id {
                        self.gaps.insert(missing, now);
                    }
                } else {
                    tracing::warn!(from = self.high, to = entry.id, "the change feed skipped ahead");
                }
                self.high = entry.id;
                true
            } else {
                self.gaps.remove(&entry.id).is_some()
            };
            if new {
                let mut change = entry.change;
                change.position = self.watermark();
                fresh.push(change);
            }
        }
        fresh
    }
}

/// Tells every node that changes were committed.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    /// This node's reader.
    local: Arc<Notify>,
    /// The task that sends NOTIFY for the other nodes.
    remote: Arc<Notify>,
}

impl Notifier {
    /// Called after each commit that logged changes. Cheap: notifications
    /// for commits in quick succession are sent as one.
    pub fn committed(&self) {
        self.local.notify_one();
        self.remote.notify_one();
    }
}

/// Starts the node's feed: a listener connection, a reader and a notifier,
/// until `stop` fires. Announces on `announce`.
pub(crate) async fn start(
    pool: Pool,
    config: tokio_postgres::Config,
    announce: broadcast::Sender<Change>,
    position: Arc<AtomicU64>,
    stop: Stop,
) -> Result<Notifier> {
    let high: i64 = client(&pool)
        .await?
        .query_one("SELECT coalesce(max(id), 0) FROM changes", &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    let notifier = Notifier {
        local: Arc::new(Notify::new()),
        remote: Arc::new(Notify::new()),
    };
    tokio::spawn(listen(config, notifier.local.clone(), stop.clone()));
    tokio::spawn(notify(pool.clone(), notifier.remote.clone(), stop.clone()));
    let cursor = Cursor::starting_after(high);
    position.store(cursor.watermark(), Ordering::Release);
    tokio::spawn(read(pool, cursor, notifier.local.clone(), announce, position, stop));
    Ok(notifier)
}

/// Sends one NOTIFY per wake-up, however many commits asked for it. Its
/// transaction writes nothing that must survive a crash, so it does not
/// wait for a flush.
async fn notify(pool: Pool, pending: Arc<Notify>, stop: Stop) {
    let statement = format!("BEGIN; SET LOCAL synchronous_commit TO OFF; SELECT pg_notify('{CHANNEL}', ''); COMMIT");
    loop {
        tokio::select! {
            () = pending.notified() => {}
            () = stop.cancelled() => return,
        }
        let sent = async { client(&pool).await?.batch_execute(&statement).await.map_err(db) };
        if let Err(err) = sent.await {
            // The other nodes still poll the feed.
            tracing::warn!(error = %err, "cannot notify the other nodes of a change");
        }
    }
}

/// Keeps a connection listening on [`CHANNEL`], reconnecting with backoff;
/// pokes the reader on every notification and after every (re)connection.
async fn listen(config: tokio_postgres::Config, wake: Arc<Notify>, stop: Stop) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let notified = wake.clone();
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!(error = %err, "the change feed's listener lost its connection");
                                break;
                            }
                        }
                    }
                    let _ = done_tx.send(());
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        // Whatever committed while nobody listened.
                        wake.notify_one();
                        tokio::select! {
                            _ = done_rx => {}
                            () = stop.cancelled() => {}
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot LISTEN for changes"),
                }
                drop(client);
                driver.abort();
            }
            Err(err) => tracing::warn!(error = %err, "the change feed's listener cannot connect; polling meanwhile"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Reads new rows when woken or every [`POLL`], and announces them.
async fn read(
    pool: Pool,
    mut cursor: Cursor,
    wake: Arc<Notify>,
    announce: broadcast::Sender<Change>,
    position: Arc<AtomicU64>,
    stop: Stop,
) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            () = stop.cancelled() => return,
        }
        loop {
            match fetch(&pool, &cursor).await {
                Ok(entries) => {
                    let full = i64::try_from(entries.len()).unwrap_or(i64::MAX) >= BATCH;
                    let fresh = cursor.accept(entries, Instant::now());
                    // Before announcing (and also when nothing was new: a
                    // gap given up moves it), so that whoever hears of a
                    // change finds the store at or past its position.
                    position.store(cursor.watermark(), Ordering::Release);
                    for change in fresh {
                        // No receivers is fine: nobody is waiting.
                        let _ = announce.send(change);
                    }
                    if !full {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the change feed; retrying");
                    break;
                }
            }
        }
    }
}

/// Up to `limit` changes after `position` and at most `announced` (this
/// node's watermark), or `None` when the feed no longer (or never) reached
/// `position`. A position past `announced` (from a node that is ahead)
/// reads nothing yet.
pub(crate) async fn after(pool: &Pool, position: u64, announced: u64, limit: usize) -> Result<Option<Vec<Change>>> {
    let (Ok(position), Ok(announced), Ok(limit)) =
        (i64::try_from(position), i64::try_from(announced), i64::try_from(limit))
    else {
        return Ok(None);
    };
    let client = client(pool).await?;
    let bounds = client
        .prepare_cached(
            "SELECT coalesce((SELECT max(id) FROM changes), 0), (SELECT value FROM settings WHERE key = $1)",
        )
        .await
        .map_err(db)?;
    let row = client.query_one(&bounds, &[&PRUNED_THROUGH]).await.map_err(db)?;
    let newest: i64 = row.try_get(0).map_err(db)?;
    // Written by the sweep as int8send(id): 8 bytes, big-endian.
    let pruned_through = row
        .try_get::<_, Option<Vec<u8>>>(1)
        .map_err(db)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, i64::from_be_bytes);
    if position < pruned_through || position > newest.max(pruned_through) {
        return Ok(None);
    }
    let statement = client
        .prepare_cached(
            "SELECT id, name, done, deleted, queued FROM changes WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
        )
        .await
        .map_err(db)?;
    let rows = client
        .query(&statement, &[&position, &announced, &limit])
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            let entry = entry(row)?;
            Ok(Change {
                position: u64::try_from(entry.id).unwrap_or_default(),
                ..entry.change
            })
        })
        .collect::<Result<_>>()
        .map(Some)
}

fn entry(row: &tokio_postgres::Row) -> Result<Entry> {
    Ok(Entry {
        id: row.try_get(0).map_err(db)?,
        change: Change {
            name: row.try_get(1).map_err(db)?,
            done: row.try_get(2).map_err(db)?,
            deleted: row.try_get(3).map_err(db)?,
            queued: row.try_get(4).map_err(db)?,
            position: 0,
        },
    })
}

/// The rows above `high` and the gaps below it. Two index reads joined,
/// not `id > $1 OR id = ANY($2)`: for that the planner's generic plan walks
/// the whole log from its start and filters each row, a cost that grew with
/// the log's window (54 ms per read at 120,000 rows; BENCHMARKS.md).
async fn fetch(pool: &Pool, cursor: &Cursor) -> Result<Vec<Entry>> {
    let client = client(pool).await?;
    let statement = client
        .prepare_cached(
            "SELECT id, name, done, deleted, queued FROM ( \
                 (SELECT id, name, done, deleted, queued FROM changes WHERE id > $1 ORDER BY id LIMIT $3) \
                 UNION ALL \
                 SELECT id, name, done, deleted, queued FROM changes WHERE id = ANY($2) AND id <= $1 \
             ) AS found ORDER BY id LIMIT $3",
        )
        .await
        .map_err(db)?;
    let rows = client
        .query(&statement, &[&cursor.high(), &cursor.gaps(), &BATCH])
        .await
        .map_err(db)?;
    rows.iter().map(entry).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a panic is the failure report.
mod tests {
    use super::*;

    fn entry(id: i64) -> Entry {
        Entry {
            id,
            change: Change {
                name: format!("operations/{id}"),
                done: false,
                deleted: false,
                queued: None,
                position: 0,
            },
        }
    }

    fn names(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|change| change.name.as_str()).collect()
    }

    #[test]
    fn each_id_is_announced_once_in_any_commit_order() {
        let mut cursor = Cursor::starting_after(10);
        let t = Instant::now();
        // 12 committed before 11.
        let first = cursor.accept(vec![entry(12)], t);
        assert_eq!(names(&first), ["operations/12"]);
        assert_eq!(cursor.gaps(), [11]);
        // The next read asks for 11 again and sees 12 no more.
        let second = cursor.accept(vec![entry(11), entry(13)], t);
        assert_eq!(names(&second), ["operations/11", "operations/13"]);
        assert!(cursor.gaps().is_empty());
        // A read that overlaps announces nothing twice.
        assert!(cursor.accept(vec![entry(11), entry(12), entry(13)], t).is_empty());
    }

    /// A change past a gap carries the position below the gap: resuming
    /// there repeats it, and cannot miss the late one.
    #[test]
    fn positions_stop_below_a_gap_until_it_fills() {
        let mut cursor = Cursor::starting_after(10);
        let t = Instant::now();
        let positions = |changes: Vec<Change>| changes.iter().map(|change| change.position).collect::<Vec<_>>();
        assert_eq!(positions(cursor.accept(vec![entry(11), entry(13)], t)), [11, 11]);
        assert_eq!(cursor.watermark(), 11);
        assert_eq!(positions(cursor.accept(vec![entry(12), entry(14)], t)), [13, 14]);
        // A gap given up no longer holds positions back.
        assert_eq!(positions(cursor.accept(vec![entry(16)], t)), [14]);
        let later = t + GAP_PATIENCE + Duration::from_secs(1);
        assert_eq!(positions(cursor.accept(vec![entry(17)], later)), [17]);
    }

    #[test]
    fn a_gap_is_given_up_after_its_patience() {
        let mut cursor = Cursor::starting_after(0);
        let t = Instant::now();
        cursor.accept(vec![entry(2)], t);
        assert_eq!(cursor.gaps(), [1]);
        cursor.accept(Vec::new(), t + GAP_PATIENCE - Duration::from_secs(1));
        assert_eq!(cursor.gaps(), [1], "still waited for");
        cursor.accept(Vec::new(), t + GAP_PATIENCE);
        assert!(cursor.gaps().is_empty(), "rolled back: never coming");
    }

    #[test]
    fn a_long_jump_is_not_remembered_id_by_id() {
        let mut cursor = Cursor::starting_after(5);
        cursor.accept(vec![entry(5 + MAX_GAP + 1)], Instant::now());
        assert!(cursor.gaps().is_empty());
        assert_eq!(cursor.high(), 5 + MAX_GAP + 1);
    }
}
