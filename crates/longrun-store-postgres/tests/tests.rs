#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

//! The PostgreSQL store against a real server: the conformance suite with a
//! second node on the same database, and what only PostgreSQL can show.
//! Each test gets a fresh database (`testing::TestDatabase`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_postgres::NoTls;

use longrun_store::conformance::{Harness, run_tests};
use longrun_store::{Clock as _, Error, NewOperation, Store, StoreClock};
use longrun_store_postgres::testing::TestDatabase;
use longrun_store_postgres::{Options, PostgresStore};
use longrun_types::OperationName;

struct Postgres {
    database: TestDatabase,
    store: Arc<dyn Store>,
}

impl Postgres {
    async fn new() -> Self {
        let database = TestDatabase::create();
        let store = Arc::new(PostgresStore::connect_with(&database.url, small()).await.unwrap());
        Self { database, store }
    }
}

/// Tests run beside each other on one server: a few connections each.
fn small() -> Options {
    Options { pool_size: 4 }
}

/// A plain connection to the test's database, in longrun's schema.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("SET search_path = longrun").await.unwrap();
    client
}

#[async_trait]
impl Harness for Postgres {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reopen(&self) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect_with(&self.database.url, small()).await.unwrap())
    }

    fn multi_node(&self) -> bool {
        true
    }

    async fn store_unindexed(&self, new: NewOperation) {
        let name = new.name.to_string();
        self.store.create(new).await.unwrap();
        let client = sql(&self.database.url).await;
        client
            .execute(
                "DELETE FROM operation_fields WHERE seq = (SELECT seq FROM operations WHERE name = $1)",
                &[&name],
            )
            .await
            .unwrap();
        client
            .execute("UPDATE operations SET fields_pending = true WHERE name = $1", &[&name])
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    run_tests(&Postgres::new().await).await;
}

/// Nodes starting together on an empty database: each migration is
/// applied once, and every node comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let database = TestDatabase::create();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = database.url.clone();
            tokio::spawn(async move { PostgresStore::connect_with(&url, small()).await })
        })
        .collect();
    let mut keys = Vec::new();
    for start in starts {
        keys.push(start.await.unwrap().unwrap().page_token_key());
    }
    assert!(keys.windows(2).all(|pair| pair[0] == pair[1]), "one key for all nodes");
    let client = sql(&database.url).await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2], "each migration applied once");
}

#[tokio::test]
async fn a_database_from_the_future_is_refused() {
    let database = TestDatabase::create();
    drop(PostgresStore::connect_with(&database.url, small()).await.unwrap());
    sql(&database.url)
        .await
        .execute("INSERT INTO schema_migrations (version) VALUES (99)", &[])
        .await
        .unwrap();
    let err = PostgresStore::connect_with(&database.url, small()).await.unwrap_err();
    assert!(err.to_string().contains("newer than this longrun"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:9/none?connect_timeout=2")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

/// A connection that the server drops is UNAVAILABLE at worst (callers may
/// retry), never INTERNAL, and the pool recovers on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_unavailable_then_recovered() {
    let harness = Postgres::new().await;
    let name = OperationName::parse("projects/p/operations/kept").unwrap();
    harness
        .store
        .create(NewOperation::new(name.clone(), SystemTime::now()))
        .await
        .unwrap();
    let admin = sql(&harness.database.url).await;
    for _ in 0..3 {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        match harness.store.get(&name).await {
            Ok(_) | Err(Error::Unavailable { .. }) => {}
            Err(other) => panic!("a dropped connection must be UNAVAILABLE, got {other:?}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match harness.store.get(&name).await {
            Ok(op) => break assert_eq!(op.name, name),
            Err(err) if tokio::time::Instant::now() > deadline => panic!("not recovered: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // The change feed's listener reconnected too.
    let mut changes = harness.store.changes();
    harness.store.delete(&name).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("announced after reconnecting")
        .unwrap();
    assert!(change.deleted);
}

/// The store's clock is the database's: a node measures leases by it
/// whatever its own wall clock says.
#[tokio::test]
async fn the_store_clock_reads_the_database_clock() {
    let harness = Postgres::new().await;
    let clock = StoreClock::start(harness.store.clone(), Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let database: SystemTime = sql(&harness.database.url)
        .await
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0);
    let ours = clock.now();
    let apart = ours.duration_since(database).unwrap_or_else(|behind| behind.duration());
    assert!(apart < Duration::from_millis(50), "{apart:?} apart");
    assert!(clock.round_trip() < Duration::from_secs(1));
}

/// The schema keeps its invariants even against statements that bypass
/// the store: a done row without an outcome is refused by PostgreSQL, and
/// a row broken anyway reads as corrupt, never as an operation.
#[tokio::test]
async fn the_schema_refuses_a_done_operation_without_an_outcome() {
    let harness = Postgres::new().await;
    let name = OperationName::parse("projects/p/operations/x").unwrap();
    harness
        .store
        .create(NewOperation::new(name.clone(), SystemTime::now()))
        .await
        .unwrap();
    let client = sql(&harness.database.url).await;
    let refused = client
        .execute(
            "UPDATE operations SET state = 3, done = true WHERE name = $1",
            &[&name.to_string()],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION));
    client
        .execute("ALTER TABLE operations DROP CONSTRAINT done_has_one_outcome", &[])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE operations SET state = 3, done = true WHERE name = $1",
            &[&name.to_string()],
        )
        .await
        .unwrap();
    assert!(matches!(harness.store.get(&name).await, Err(Error::Corrupt(_))));
}
