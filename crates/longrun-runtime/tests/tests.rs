//! The runtime against a real SQLite store: typed handlers, progress,
//! cancellation, retries, bounded concurrency, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use prost::Message as _;
use prost_types::value::Kind;
use tokio::sync::{Notify, oneshot};

use longrun_runtime::{Context, Error, Handler, Runtime, Struct, async_trait};
use longrun_store::{Backoff, NewOperation, Store};
use longrun_store_sqlite::SqliteStore;
use longrun_types::{Code, Operation, OperationName, Outcome, Parent, Payload, State};

struct Fixture {
    store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("longrun.db")).unwrap());
        Self {
            store,
            stop: None,
            runtime: None,
            _dir: dir,
        }
    }

    fn start(&mut self, configure: impl FnOnce(Runtime) -> Runtime) {
        let runtime = configure(Runtime::new(self.store.clone()).lease(Duration::from_secs(1)));
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.runtime = Some(tokio::spawn(runtime.run(async {
            let _ = stopped.await;
        })));
    }

    async fn shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.runtime.take().unwrap().await.unwrap();
    }

    async fn create(&self, id: &str, queue: &str, input: Option<Struct>) -> OperationName {
        let name = OperationName::new(Parent::parse("projects/rt").unwrap(), id).unwrap();
        let input = input.map(|input| Payload {
            type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            value: input.encode_to_vec().into(),
        });
        let new = NewOperation {
            input,
            ..NewOperation::queued(name.clone(), queue, SystemTime::now())
        };
        self.store.create(new).await.unwrap();
        name
    }

    async fn wait_for(&self, name: &OperationName, until: impl Fn(&Operation) -> bool) -> Operation {
        let started = Instant::now();
        loop {
            let op = self.store.get(name).await.unwrap();
            if until(&op) {
                return op;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "gave up on {name}: {op:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn number(value: f64) -> Kind {
    Kind::NumberValue(value)
}

/// Doubles `n`.
struct Double;

#[async_trait]
impl Handler for Double {
    type Input = Struct;
    type Output = Struct;
    type Metadata = Struct;

    async fn run(&self, ctx: Context<Struct>, input: Struct) -> Result<Struct, Error> {
        let Some(Kind::NumberValue(n)) = input.get("n") else {
            return Err(Error::fatal(Code::InvalidArgument, "input needs a number n"));
        };
        let mut metadata = Struct::default();
        metadata.insert("seen", number(*n));
        ctx.set_metadata(&metadata).await?;
        ctx.progress(100, "doubled").await?;
        let mut output = Struct::default();
        output.insert("doubled", number(n * 2.0));
        Ok(output)
    }
}

#[tokio::test]
async fn typed_handler_turns_input_into_a_typed_response() {
    let mut fixture = Fixture::new();
    let mut input = Struct::default();
    input.insert("n", number(21.0));
    let name = fixture.create("double", "math", Some(input)).await;
    let bad = fixture.create("bad", "math", None).await;
    fixture.start(|runtime| runtime.handle("math", Double));
    let op = fixture.wait_for(&name, Operation::done).await;
    let Some(Outcome::Response(response)) = op.outcome else {
        panic!("{op:?}")
    };
    assert_eq!(response.type_url, "type.googleapis.com/google.protobuf.Struct");
    assert_eq!(
        Struct::decode(response.value).unwrap().get("doubled"),
        Some(&number(42.0))
    );
    assert_eq!((op.progress_percent, op.status_detail.as_str()), (100, "doubled"));
    let metadata = Struct::decode(op.metadata.unwrap().value).unwrap();
    assert_eq!(metadata.get("seen"), Some(&number(21.0)));
    let failed = fixture.wait_for(&bad, Operation::done).await;
    assert!(matches!(failed.outcome, Some(Outcome::Error(ref status)) if status.code() == Code::InvalidArgument));
    fixture.shutdown().await;
}

/// Waits for cancellation, then reports it.
struct UntilCancelled(Arc<Notify>);

#[async_trait]
impl Handler for UntilCancelled {
    type Input = Struct;
    type Output = Struct;
    type Metadata = Struct;

    async fn run(&self, ctx: Context<Struct>, _input: Struct) -> Result<Struct, Error> {
        ctx.progress(10, "started").await?;
        self.0.notify_one();
        ctx.cancelled().await;
        Err(Error::cancelled())
    }
}

#[tokio::test]
async fn cancel_reaches_the_handler_through_its_token() {
    let mut fixture = Fixture::new();
    let started = Arc::new(Notify::new());
    let name = fixture.create("c", "slow", None).await;
    fixture.start(|runtime| runtime.handle("slow", UntilCancelled(started.clone())));
    started.notified().await;
    let asked = Instant::now();
    fixture.store.cancel(&name, SystemTime::now()).await.unwrap();
    let op = fixture.wait_for(&name, Operation::done).await;
    assert_eq!(op.state, State::Cancelled);
    // Woken by the change itself, not by the next periodic heartbeat.
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "took {:?}",
        asked.elapsed()
    );
    fixture.shutdown().await;
}

#[tokio::test]
async fn shutdown_hands_back_unfinished_operations() {
    let mut fixture = Fixture::new();
    let started = Arc::new(Notify::new());
    let name = fixture.create("s", "slow", None).await;
    fixture.start(|runtime| runtime.handle("slow", UntilCancelled(started.clone())));
    started.notified().await;
    fixture.shutdown().await;
    let op = fixture.store.get(&name).await.unwrap();
    assert_eq!(
        (op.state, op.attempt, op.lease.is_none()),
        (State::Queued, 1, true),
        "released, attempt not spent"
    );
}

/// Fails with a retryable error on the first attempt.
struct FlakyOnce;

#[async_trait]
impl Handler for FlakyOnce {
    type Input = Struct;
    type Output = Struct;
    type Metadata = Struct;

    async fn run(&self, ctx: Context<Struct>, input: Struct) -> Result<Struct, Error> {
        if ctx.attempt() == 1 {
            return Err(Error::retryable(Code::Unavailable, "database busy"));
        }
        Ok(input)
    }
}

#[tokio::test]
async fn retryable_error_runs_the_operation_again() {
    let mut fixture = Fixture::new();
    let name = fixture.create("r", "flaky", None).await;
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(50),
    };
    fixture.start(|runtime| runtime.handle("flaky", FlakyOnce).retry_backoff(backoff));
    let op = fixture.wait_for(&name, Operation::done).await;
    assert_eq!((op.state, op.attempt), (State::Succeeded, 2));
    fixture.shutdown().await;
}

/// Counts how many run at once.
struct Counting {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Counting {
    type Input = Struct;
    type Output = Struct;
    type Metadata = Struct;

    async fn run(&self, _ctx: Context<Struct>, input: Struct) -> Result<Struct, Error> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(input)
    }
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let mut fixture = Fixture::new();
    let mut names = Vec::new();
    for i in 0..6 {
        names.push(fixture.create(&format!("n{i}"), "count", None).await);
    }
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler = Counting {
        running: running.clone(),
        most: most.clone(),
    };
    fixture.start(|runtime| runtime.handle("count", handler).concurrency(2));
    for name in &names {
        assert_eq!(fixture.wait_for(name, Operation::done).await.state, State::Succeeded);
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
    fixture.shutdown().await;
}

/// Reports progress until told to stop.
struct Reporting(Arc<AtomicBool>);

#[async_trait]
impl Handler for Reporting {
    type Input = Struct;
    type Output = Struct;
    type Metadata = Struct;

    async fn run(&self, ctx: Context<Struct>, input: Struct) -> Result<Struct, Error> {
        let mut percent = 0;
        while !ctx.is_cancelled() {
            percent = (percent + 1) % 100;
            if let Err(err) = ctx.progress(percent, "working").await {
                self.0.store(true, Ordering::SeqCst);
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.0.store(true, Ordering::SeqCst);
        Ok(input)
    }
}

#[tokio::test]
async fn delete_stops_the_handler() {
    let mut fixture = Fixture::new();
    let stopped = Arc::new(AtomicBool::new(false));
    let name = fixture.create("d", "busy", None).await;
    fixture.start(|runtime| runtime.handle("busy", Reporting(stopped.clone())));
    fixture.wait_for(&name, |op| op.progress_percent > 0).await;
    fixture.store.delete(&name).await.unwrap();
    let started = Instant::now();
    while !stopped.load(Ordering::SeqCst) {
        assert!(started.elapsed() < Duration::from_secs(5), "the handler did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fixture.shutdown().await;
    assert!(fixture.store.get(&name).await.is_err(), "nothing was written back");
}

/// An idle queue holds no concurrency slot while it waits: with one slot,
/// another queue's work starts at once.
#[tokio::test]
async fn an_idle_queue_does_not_hold_a_slot() {
    let mut fixture = Fixture::new();
    // The idle queue's loop starts first; before, it took the only slot for
    // its 30 s long-poll.
    fixture.start(|runtime| runtime.concurrency(1).handle("idle", Double).handle("busy", Double));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut input = Struct::default();
    input.insert("n", number(4.0));
    let name = fixture.create("work", "busy", Some(input)).await;
    let started = Instant::now();
    let op = fixture.wait_for(&name, Operation::done).await;
    assert_eq!(op.state, State::Succeeded);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    fixture.shutdown().await;
}
