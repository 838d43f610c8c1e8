//! Watch streams: the operations under a parent that match a filter, then
//! every change to them as it commits, for any number of clients.
//!
//! ```text
//!   Store::changes ──▶ Hub (one per server, started by the first watch:
//!                       reads each changed operation once)
//!                        │ broadcast of Update
//!                        ▼
//!                      Watcher (one task per stream: its parent, filter
//!                       and grants) ──▶ Outbox (bounded) ──▶ REST SSE / gRPC
//! ```
//!
//! Every event carries a position in the store's change feed: a client
//! that reconnects with it gets every change after it (replayed from the
//! feed, [`Store::changes_after`]); one whose position the feed no longer
//! reaches gets a `reset` and a fresh snapshot. An event may arrive twice
//! (each carries the operation as it is, so applying it again is harmless);
//! none is lost. A client that reads too slowly fills its outbox: the
//! stream then ends with a final error event instead of growing, and the
//! client resumes from its last position.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::Stream;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::waiters::{Waiters, Waiting};
use super::{Caller, METADATA, RESPONSE, Service};
use crate::Error;
use crate::auth::{Action, Scope, scope};
use longrun_proto::longrun::v1::WatchOperationsRequest;
use longrun_store::{Change, ListQuery, Store};
use longrun_types::filter::Filter;
use longrun_types::{Code, Operation, OperationName, Outcome, Parent};

/// Updates the hub holds for watchers that fall behind; a watcher further
/// behind replays from the feed.
const HUB_BUFFER: usize = 1024;
/// Changes read from the feed at once when replaying.
const REPLAY_BATCH: usize = 500;
/// How long a client that overflowed its outbox has to read the final
/// event before its connection is closed.
const LAST_WORDS: Duration = Duration::from_secs(10);
/// How long a snapshot or replay waits for a client to make room before
/// giving up on it as one that read too slowly.
const STALL: Duration = Duration::from_secs(30);

/// What a watch stream says.
#[derive(Debug)]
pub enum Event {
    /// An operation as it is now: in the snapshot, created, or changed.
    Operation(Box<Operation>),
    /// An operation left the view: deleted, or no longer matching.
    Removed { name: String, deleted: bool },
    /// The snapshot (or replay) is complete; changes follow as they commit.
    Synced { next_page_token: String },
    /// The client's position cannot be resumed from: forget what was shown;
    /// a snapshot follows.
    Reset,
    /// Nothing to say for a while; the position moved on.
    Heartbeat,
    /// The last event: why the stream ends (the server is shutting down,
    /// the client read too slowly).
    End(Error),
}

/// An event and the position to resume from after it. Events of a
/// snapshot (and resets) have none: a client cut off in the middle of one
/// must start over, not resume.
#[derive(Debug)]
pub struct Sent {
    pub event: Event,
    pub position: Option<u64>,
}

/// The stream a watch call answers with.
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Sent> + Send>>;

/// One change as every watcher sees it: read once by the hub.
#[derive(Debug)]
enum Update {
    Changed {
        position: u64,
        name: String,
        /// `None`: the operation no longer exists.
        operation: Option<Box<Operation>>,
    },
    /// The hub lost track of the feed: every watcher starts over.
    Reset { position: u64 },
}

/// Follows the store's changes for every watcher of this server.
#[derive(Debug)]
pub(super) struct Hub {
    updates: broadcast::Sender<Arc<Update>>,
    /// The position of the last change published.
    position: AtomicU64,
}

impl Hub {
    fn start(store: Arc<dyn Store>, stop: CancellationToken) -> Arc<Self> {
        let (updates, _) = broadcast::channel(HUB_BUFFER);
        let hub = Arc::new(Self {
            updates,
            position: AtomicU64::new(0),
        });
        // Subscribed before the task runs, so nothing committed after the
        // first watch subscribed is missed.
        let changes = store.changes();
        tokio::spawn(hub.clone().follow(store, changes, stop));
        hub
    }

    async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut changes: broadcast::Receiver<Change>,
        stop: CancellationToken,
    ) {
        let mut position = match store.position().await {
            Ok(position) => position,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the change feed's position; watch streams start from 0");
                0
            }
        };
        self.position.store(position, Ordering::Release);
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = stop.cancelled() => return,
            };
            position = match change {
                Ok(change) => self.publish(store.as_ref(), change, position).await,
                Err(RecvError::Lagged(_)) => self.catch_up(store.as_ref(), position).await,
                Err(RecvError::Closed) => return,
            };
        }
    }

    /// Reads the changed operation (when anyone watches) and hands it to
    /// every watcher. Returns the position after it.
    async fn publish(&self, store: &dyn Store, change: Change, position: u64) -> u64 {
        let position = position.max(change.position);
        if self.updates.receiver_count() > 0 {
            let update = match read(store, &change).await {
                Ok(operation) => Update::Changed {
                    position,
                    name: change.name,
                    operation: operation.map(Box::new),
                },
                Err(err) => {
                    tracing::warn!(op.name = %change.name, error = %err, "cannot read a changed operation; watch streams start over");
                    Update::Reset { position }
                }
            };
            // No receivers left meanwhile is fine.
            let _ = self.updates.send(Arc::new(update));
        }
        self.position.store(position, Ordering::Release);
        position
    }

    /// After falling behind the store's broadcast: replays the feed.
    async fn catch_up(&self, store: &dyn Store, mut position: u64) -> u64 {
        loop {
            match store.changes_after(position, REPLAY_BATCH).await {
                Ok(Some(changes)) if changes.is_empty() => return position,
                Ok(Some(changes)) => {
                    for change in changes {
                        position = self.publish(store, change, position).await;
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(position, "the change feed cannot be replayed; watch streams start over");
                    let position = store.position().await.unwrap_or(position).max(position);
                    let _ = self.updates.send(Arc::new(Update::Reset { position }));
                    self.position.store(position, Ordering::Release);
                    return position;
                }
            }
        }
    }
}

/// The operation a change left behind, `None` when it is gone.
async fn read(store: &dyn Store, change: &Change) -> Result<Option<Operation>, longrun_store::Error> {
    if change.deleted {
        return Ok(None);
    }
    let Ok(name) = OperationName::parse(&change.name) else {
        return Ok(None);
    };
    match store.get(&name).await {
        Ok(operation) => Ok(Some(operation)),
        Err(longrun_store::Error::NotFound(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The hub, started with the first watch.
#[derive(Debug, Default)]
pub(super) struct HubCell(OnceLock<Arc<Hub>>);

impl Service {
    fn hub(&self) -> &Arc<Hub> {
        self.hub
            .0
            .get_or_init(|| Hub::start(self.store.clone(), self.shutdown.clone()))
    }

    /// Starts a watch stream. Errors in the request (a bad parent or
    /// filter, no permission, too many streams) are returned here, before
    /// any event. `connection` closes the client's connection: used when
    /// the client stops reading altogether, so that it cannot hold it.
    pub async fn watch(
        self: &Arc<Self>,
        caller: &Caller,
        request: WatchOperationsRequest,
        connection: Option<CancellationToken>,
    ) -> Result<WatchStream, Error> {
        let target = request.name.clone();
        self.observe(caller, "WatchOperations", (Action::List, &target), async {
            let parent = Parent::parse_pattern(&request.name)?;
            let within = match scope(caller, Action::List, &parent, false)? {
                Scope::All => None,
                Scope::Within(prefixes) => Some(prefixes),
            };
            let page_size = match usize::try_from(request.page_size) {
                Err(_) => {
                    return Err(Error::invalid(
                        "INVALID_PAGE_SIZE",
                        format!("page_size must not be negative, got {}", request.page_size),
                    ));
                }
                Ok(0) => super::DEFAULT_PAGE_SIZE,
                Ok(size) => size.min(super::MAX_PAGE_SIZE),
            };
            let filter = Filter::parse_with(&request.filter, &self.registry)?;
            let waiting = Waiters::enter(&self.waiters, caller.who())?;
            // An unreadable token is one this feed never issued: the
            // stream starts over, as for one it no longer reaches.
            let resume = match request.resume_token.as_str() {
                "" => Resume::Snapshot,
                token => token.parse().map_or(Resume::Unknown, Resume::After),
            };
            let outbox = Arc::new(Outbox::new(self.watch_buffer, connection));
            // Subscribed before any read, so no change slips between.
            let updates = self.hub().updates.subscribe();
            let watcher = Watcher {
                service: self.clone(),
                parent,
                filter,
                filter_text: request.filter,
                within,
                page_size,
                outbox: outbox.clone(),
                position: 0,
                synced: false,
                _waiting: waiting,
            };
            tokio::spawn(watcher.run(resume, updates));
            Ok(Box::pin(outbox.stream()) as WatchStream)
        })
        .await
    }
}

/// Where a stream starts.
enum Resume {
    Snapshot,
    After(u64),
    /// A token this server cannot read.
    Unknown,
}

/// Why a watcher stops: its client is gone or was told why.
struct Stop;

/// One stream's task.
struct Watcher {
    service: Arc<Service>,
    parent: Parent,
    filter: Filter,
    filter_text: String,
    within: Option<Vec<String>>,
    page_size: usize,
    outbox: Arc<Outbox>,
    /// The position of the last event sent.
    position: u64,
    /// Whether the client holds a complete view (a snapshot or replay
    /// finished), so that positions can be resumed from.
    synced: bool,
    /// Counted among blocked calls while the stream lasts.
    _waiting: Waiting,
}

impl Watcher {
    async fn run(mut self, mut resume: Resume, mut updates: broadcast::Receiver<Arc<Update>>) {
        let _gauge = self.service.metrics.waiter();
        let shutdown = self.service.shutdown.clone();
        let mut heartbeat = tokio::time::interval(self.service.watch_heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let ended: Result<(), Stop> = async {
            loop {
                // Catch up: a snapshot, or a replay from the client's position.
                match std::mem::replace(&mut resume, Resume::Snapshot) {
                    Resume::Snapshot => self.snapshot().await?,
                    Resume::After(position) => {
                        if !self.replay(position).await? {
                            self.synced = false;
                            self.send(Event::Reset)?;
                            self.snapshot().await?;
                        }
                    }
                    Resume::Unknown => {
                        self.send(Event::Reset)?;
                        self.snapshot().await?;
                    }
                }
                // Then live, until something makes it start over.
                loop {
                    tokio::select! {
                        update = updates.recv() => match update {
                            Ok(update) => match update.as_ref() {
                                Update::Changed { position, name, operation } => {
                                    self.changed(name, operation.as_deref(), *position)?;
                                }
                                Update::Reset { position } => {
                                    self.position = self.position.max(*position);
                                    self.synced = false;
                                    self.send(Event::Reset)?;
                                    break;
                                }
                            },
                            // Behind the hub: replay from where this stream is.
                            Err(RecvError::Lagged(_)) => {
                                resume = Resume::After(self.position);
                                break;
                            }
                            Err(RecvError::Closed) => {
                                return self.end(Error::new(Code::Unavailable, "WATCH_ENDED", "the server stopped following changes; reconnect"));
                            }
                        },
                        _ = heartbeat.tick() => self.send(Event::Heartbeat)?,
                        () = shutdown.cancelled() => {
                            return self.end(Error::new(
                                Code::Unavailable,
                                "SHUTTING_DOWN",
                                "the server is shutting down; reconnect with the last position",
                            ));
                        }
                    }
                }
            }
        }
        .await;
        drop(ended);
    }

    /// The first page of what the stream shows, then `synced`.
    async fn snapshot(&mut self) -> Result<(), Stop> {
        // Read before the list: what the list shows is at least this recent.
        self.position = self.position.max(self.service.hub().position.load(Ordering::Acquire));
        let query = ListQuery {
            parent: self.parent.clone(),
            filter: self.filter.clone(),
            after: None,
            limit: self.page_size + 1,
            within: self.within.clone(),
        };
        let mut listed = match self.service.store.list(&query).await {
            Ok(listed) => listed,
            Err(err) => return self.end(err.into()),
        };
        let next_page_token = if listed.len() > self.page_size {
            listed.truncate(self.page_size);
            listed.last().map_or_else(String::new, |last| {
                self.service.tokens.issue(
                    last.cursor,
                    self.parent.as_str(),
                    &self.filter_text,
                    self.service.clock.now(),
                )
            })
        } else {
            String::new()
        };
        for listed in listed {
            self.catch_up(Event::Operation(Box::new(listed.operation))).await?;
        }
        self.synced = true;
        self.catch_up(Event::Synced { next_page_token }).await
    }

    /// Replays the feed after `position`, then `synced`; `false` when the
    /// feed does not reach back that far.
    async fn replay(&mut self, position: u64) -> Result<bool, Stop> {
        let mut after = position;
        loop {
            let changes = match self.service.store.changes_after(after, REPLAY_BATCH).await {
                Ok(Some(changes)) => changes,
                // Gone (or pruned while replaying): start over.
                Ok(None) => return Ok(false),
                Err(err) => return self.end(err.into()).map(|()| false),
            };
            // The feed reaches back to it: every change up to it was sent.
            self.position = self.position.max(position);
            self.synced = true;
            let Some(last) = changes.last() else { break };
            if last.position <= after {
                break;
            }
            after = last.position;
            for change in changes {
                if !self.concerns(&change.name) {
                    self.position = self.position.max(change.position);
                    continue;
                }
                match read(self.service.store.as_ref(), &change).await {
                    Ok(operation) => {
                        if let Some(event) = self.judge(&change.name, operation.as_ref(), change.position) {
                            self.catch_up(event).await?;
                        }
                    }
                    Err(err) => return self.end(err.into()).map(|()| false),
                }
            }
        }
        self.catch_up(Event::Synced {
            next_page_token: String::new(),
        })
        .await?;
        Ok(true)
    }

    /// Whether `name` lies under the watched parent and within the
    /// caller's grants.
    fn concerns(&self, name: &str) -> bool {
        let Ok(name) = OperationName::parse(name) else {
            return false;
        };
        if !self.parent.matches(name.parent()) {
            return false;
        }
        let name = name.to_string();
        self.within.as_ref().is_none_or(|prefixes| {
            prefixes.iter().any(|prefix| {
                name == *prefix
                    || name
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
    }

    fn changed(&mut self, name: &str, operation: Option<&Operation>, position: u64) -> Result<(), Stop> {
        // Already shown: the snapshot was read after the hub published it,
        // or the replay read it from the feed. Sent again it would be news
        // twice.
        if position <= self.position {
            return Ok(());
        }
        match self.judge(name, operation, position) {
            Some(event) => self.send(event),
            None => Ok(()),
        }
    }

    /// What this stream says of a change, if anything; moves the position.
    fn judge(&mut self, name: &str, operation: Option<&Operation>, position: u64) -> Option<Event> {
        self.position = self.position.max(position);
        if !self.concerns(name) {
            return None;
        }
        let event = match operation {
            None => Event::Removed {
                name: name.to_owned(),
                deleted: true,
            },
            Some(operation) => {
                let mut indexed = self.service.indexed(METADATA, operation.metadata.as_ref());
                if let Some(Outcome::Response(response)) = &operation.outcome {
                    indexed.extend(self.service.indexed(RESPONSE, Some(response)));
                }
                if self.filter.matches_with(operation, &indexed) {
                    Event::Operation(Box::new(operation.clone()))
                } else {
                    Event::Removed {
                        name: name.to_owned(),
                        deleted: false,
                    }
                }
            }
        };
        Some(event)
    }

    /// Sends a live event; a client too far behind is cut off.
    fn send(&self, event: Event) -> Result<(), Stop> {
        self.outbox.push(Sent {
            position: self.resumable(&event),
            event,
        })
    }

    /// Where a client that got `event` resumes from: nowhere before the
    /// view is complete, nor after a reset.
    fn resumable(&self, event: &Event) -> Option<u64> {
        (self.synced && !matches!(event, Event::Reset)).then_some(self.position)
    }

    /// Sends an event of a snapshot or replay, which may hold more events
    /// than the outbox: waits for the client to make room (live changes
    /// meanwhile wait in the hub, or are replayed from the feed).
    async fn catch_up(&self, event: Event) -> Result<(), Stop> {
        self.outbox
            .push_when_room(
                Sent {
                    position: self.resumable(&event),
                    event,
                },
                STALL,
            )
            .await
    }

    /// Says why the stream ends, and ends it.
    fn end(&self, error: Error) -> Result<(), Stop> {
        let event = Event::End(error);
        self.outbox.finish(Sent {
            position: self.resumable(&event),
            event,
        });
        Err(Stop)
    }
}

/// A stream's events on their way to its client, bounded: a client that
/// does not keep up gets a last event saying so, then nothing.
#[derive(Debug)]
struct Outbox {
    capacity: usize,
    /// A std mutex: held to push or pop, never across an await.
    state: Mutex<OutboxState>,
    /// An event was queued (or the stream finished).
    ready: Notify,
    /// An event was taken.
    room: Notify,
    /// Closes the client's connection.
    connection: Option<CancellationToken>,
}

#[derive(Debug, Default)]
struct OutboxState {
    queue: VecDeque<Sent>,
    /// No more events after those queued.
    finished: bool,
    /// The client took the last event, or went away.
    gone: bool,
    /// The position of the last event taken that had one.
    taken: Option<u64>,
}

impl Outbox {
    fn new(capacity: usize, connection: Option<CancellationToken>) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(OutboxState::default()),
            ready: Notify::new(),
            room: Notify::new(),
            connection,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Queues an event; `Stop` once the stream is over for its client.
    fn push(self: &Arc<Self>, sent: Sent) -> Result<(), Stop> {
        let mut state = self.lock();
        if state.gone || state.finished {
            return Err(Stop);
        }
        if state.queue.len() >= self.capacity {
            // Resume from the last event the client got, not from any it
            // will not get now.
            let position = state.taken;
            state.queue.clear();
            state.queue.push_back(Sent {
                event: Event::End(Error::new(
                    Code::ResourceExhausted,
                    "WATCH_TOO_SLOW",
                    format!(
                        "the client read too slowly: more than {} events were waiting; resume from the last position",
                        self.capacity
                    ),
                )),
                position,
            });
            state.finished = true;
            drop(state);
            self.ready.notify_one();
            // A client that does not take even that is not reading at all:
            // its connection is closed rather than held.
            if let Some(connection) = self.connection.clone() {
                let outbox = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(LAST_WORDS).await;
                    if outbox.upgrade().is_some_and(|outbox| !outbox.lock().gone) {
                        tracing::info!("closing the connection of a watch client that stopped reading");
                        connection.cancel();
                    }
                });
            }
            return Err(Stop);
        }
        state.queue.push_back(sent);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues an event once there is room, waiting up to `patience` for
    /// the client to take some; past that it is cut off as by [`push`].
    ///
    /// [`push`]: Outbox::push
    async fn push_when_room(self: &Arc<Self>, sent: Sent, patience: Duration) -> Result<(), Stop> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let room = self.room.notified();
            {
                let state = self.lock();
                if state.gone || state.finished {
                    return Err(Stop);
                }
                if state.queue.len() < self.capacity {
                    drop(state);
                    return self.push(sent);
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return self.push(sent);
            }
        }
    }

    /// Queues the last event.
    fn finish(&self, sent: Sent) {
        let mut state = self.lock();
        if !state.finished {
            state.queue.push_back(sent);
            state.finished = true;
        }
        drop(state);
        self.ready.notify_one();
    }

    fn stream(self: Arc<Self>) -> impl Stream<Item = Sent> + Send {
        let reader = Reader(self);
        futures::stream::unfold(reader, |reader| async move {
            let next = reader.next().await?;
            Some((next, reader))
        })
    }
}

/// The outbox's consuming end; dropping it (the client went away) stops
/// the watcher at its next event.
struct Reader(Arc<Outbox>);

impl Reader {
    async fn next(&self) -> Option<Sent> {
        loop {
            let ready = self.0.ready.notified();
            {
                let mut state = self.0.lock();
                if let Some(sent) = state.queue.pop_front() {
                    if sent.position.is_some() {
                        state.taken = sent.position;
                    }
                    drop(state);
                    self.0.room.notify_one();
                    return Some(sent);
                }
                if state.finished {
                    state.gone = true;
                    return None;
                }
            }
            ready.await;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.lock().gone = true;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a panic is the failure report.
mod tests {
    use futures::StreamExt as _;

    use super::*;

    fn heartbeat(position: u64) -> Sent {
        Sent {
            event: Event::Heartbeat,
            position: Some(position),
        }
    }

    #[tokio::test]
    async fn an_outbox_hands_over_in_order_then_ends() {
        let outbox = Arc::new(Outbox::new(4, None));
        let mut stream = Box::pin(outbox.clone().stream());
        outbox.push(heartbeat(1)).ok().unwrap();
        outbox.push(heartbeat(2)).ok().unwrap();
        outbox.finish(heartbeat(3));
        let positions: Vec<Option<u64>> = (&mut stream).map(|sent| sent.position).collect().await;
        assert_eq!(positions, [Some(1), Some(2), Some(3)]);
        assert!(outbox.push(heartbeat(4)).is_err(), "nothing after the end");
    }

    /// A client that does not read gets one last event instead of an
    /// ever longer queue; one that does not take even that loses its
    /// connection.
    #[tokio::test(start_paused = true)]
    async fn a_full_outbox_ends_the_stream_with_a_final_event() {
        let outbox = Arc::new(Outbox::new(3, None));
        let mut stream = Box::pin(outbox.clone().stream());
        outbox.push(heartbeat(1)).ok().unwrap();
        assert_eq!(stream.next().await.unwrap().position, Some(1), "taken");
        for position in 2..=4 {
            outbox.push(heartbeat(position)).ok().unwrap();
        }
        assert!(outbox.push(heartbeat(5)).is_err(), "the fifth overflows");
        assert_eq!(outbox.lock().queue.len(), 1, "the queue holds only the last word");
        let last = stream.next().await.unwrap();
        assert!(
            matches!(&last.event, Event::End(err) if err.code == Code::ResourceExhausted),
            "{last:?}"
        );
        assert_eq!(
            last.position,
            Some(1),
            "resume from the last event taken, not from one dropped"
        );
        assert!(stream.next().await.is_none());

        let connection = CancellationToken::new();
        let silent = Arc::new(Outbox::new(1, Some(connection.clone())));
        let _stream = silent.clone().stream();
        silent.push(heartbeat(1)).ok().unwrap();
        let _ = silent.push(heartbeat(2));
        tokio::time::sleep(LAST_WORDS + Duration::from_secs(1)).await;
        assert!(connection.is_cancelled(), "a client that never read is cut off");

        let reading = CancellationToken::new();
        let outbox = Arc::new(Outbox::new(1, Some(reading.clone())));
        let mut stream = Box::pin(outbox.clone().stream());
        outbox.push(heartbeat(1)).ok().unwrap();
        let _ = outbox.push(heartbeat(2));
        assert!(stream.next().await.is_some());
        assert!(stream.next().await.is_none());
        tokio::time::sleep(LAST_WORDS + Duration::from_secs(1)).await;
        assert!(
            !reading.is_cancelled(),
            "a client that took its last word keeps its connection"
        );
    }

    #[tokio::test]
    async fn a_gone_client_stops_the_watcher() {
        let outbox = Arc::new(Outbox::new(4, None));
        let stream = outbox.clone().stream();
        drop(stream);
        assert!(outbox.push(heartbeat(1)).is_err());
    }
}
