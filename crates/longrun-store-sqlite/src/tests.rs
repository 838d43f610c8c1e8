use std::sync::Arc;

use rusqlite::Connection;

use super::*;
use longrun_store::conformance::{Harness, run_tests};
use longrun_store::{Cursor, NewOperation, Store};
use longrun_types::{OperationName, Parent, State};

/// A store in a temporary directory.
struct Sqlite {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
}

impl Sqlite {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("longrun.db")
    }
}

#[async_trait]
impl Harness for Sqlite {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reopen(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.path()).unwrap())
    }

    fn multi_node(&self) -> bool {
        false
    }

    async fn store_unindexed(&self, new: NewOperation) {
        let name = new.name.clone();
        self.store.create(new).await.unwrap();
        let conn = Connection::open(self.path()).unwrap();
        conn.execute(
            "DELETE FROM operation_fields WHERE seq = (SELECT seq FROM operations WHERE name = ?1)",
            [name.to_string()],
        )
        .unwrap();
        conn.execute(
            "UPDATE operations SET fields_pending = 1 WHERE name = ?1",
            [name.to_string()],
        )
        .unwrap();
    }
}

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("longrun.db")).unwrap());
    run_tests(&Sqlite { dir, store }).await;
}

#[tokio::test]
async fn acknowledged_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    let name = OperationName::parse("operations/kept").unwrap();
    let key = {
        let store = SqliteStore::open(&path).unwrap();
        store
            .create(NewOperation::queued(name.clone(), "q", SystemTime::now()))
            .await
            .unwrap();
        store.page_token_key()
    };
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.get(&name).await.unwrap().state, State::Queued);
    assert_eq!(reopened.page_token_key(), key, "page tokens stay valid across restarts");
}

#[tokio::test]
async fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("longrun.db")).unwrap();
    let parent = longrun_types::Parent::parse("projects/p").unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let name = OperationName::new(parent.clone(), &format!("op{i}")).unwrap();
            tokio::spawn(async move { store.create(NewOperation::new(name, SystemTime::now())).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let query = ListQuery {
        parent,
        filter: Default::default(),
        after: None,
        limit: 1000,
        within: None,
    };
    assert_eq!(store.list(&query).await.unwrap().len(), 200);
}

/// Holds the writer thread until the returned sender fires (or drops), so
/// the writes sent meanwhile are committed as one batch.
fn hold_the_writer(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let store = store.clone();
    tokio::spawn(async move {
        store
            .write(move |_| {
                let _ = held.recv();
                Ok(((), None))
            })
            .await
    });
    release
}

/// A write refused before it writes (here: a name that exists) fails
/// alone; the others in its batch commit.
#[tokio::test]
async fn a_refused_write_leaves_its_batch_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("longrun.db")).unwrap();
    let taken = OperationName::parse("operations/taken").unwrap();
    store
        .create(NewOperation::new(taken.clone(), SystemTime::now()))
        .await
        .unwrap();
    let release = hold_the_writer(&store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = tokio::spawn({
        let store = store.clone();
        async move { store.create(NewOperation::new(taken, SystemTime::now())).await }
    });
    let fresh = OperationName::parse("operations/fresh").unwrap();
    let other = tokio::spawn({
        let (store, fresh) = (store.clone(), fresh.clone());
        async move { store.create(NewOperation::new(fresh, SystemTime::now())).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(release);
    assert!(matches!(again.await.unwrap(), Err(Error::AlreadyExists(_))));
    other.await.unwrap().unwrap();
    assert_eq!(store.get(&fresh).await.unwrap().state, State::Running);
}

/// A write that fails after writing (a database fault) fails its whole
/// batch, and nothing of the batch is stored.
#[tokio::test]
async fn a_write_failing_after_writing_undoes_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("longrun.db")).unwrap();
    let release = hold_the_writer(&store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let half = OperationName::parse("operations/half").unwrap();
    let faulty = tokio::spawn({
        let (store, half) = (store.clone(), half.clone());
        async move {
            store
                .write(move |conn| {
                    rows::insert(conn, &NewOperation::new(half, SystemTime::now()))?;
                    Err::<((), Option<Change>), _>(Error::internal("disk I/O error"))
                })
                .await
        }
    });
    let bystander = OperationName::parse("operations/bystander").unwrap();
    let other = tokio::spawn({
        let (store, bystander) = (store.clone(), bystander.clone());
        async move { store.create(NewOperation::new(bystander, SystemTime::now())).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(release);
    assert!(faulty.await.unwrap().is_err());
    assert!(other.await.unwrap().is_err(), "the batch failed with it");
    for name in [half, bystander] {
        assert!(
            matches!(store.get(&name).await, Err(Error::NotFound(_))),
            "{name} was stored"
        );
    }
    // The writer goes on: the next batch commits.
    let after = OperationName::parse("operations/after").unwrap();
    store
        .create(NewOperation::new(after.clone(), SystemTime::now()))
        .await
        .unwrap();
    store.get(&after).await.unwrap();
}

/// Operations stored before custom fields were indexed (schema v3) are
/// listed by `unindexed` until the server reindexes them, and then filter.
#[tokio::test]
async fn operations_from_before_custom_fields_are_indexed_after_upgrade() {
    use longrun_types::filter::arbitrary::FixtureSchema;
    use longrun_types::filter::{Filter, Indexed, Value};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO operations (name, parent, state, done, metadata_type, metadata, attempt, max_attempts, \
                 create_time, update_time) \
             VALUES ('projects/p/operations/old', 'projects/p', 2, 0, 'type.googleapis.com/example.ImportMetadata', \
                 x'0828', 1, 3, 0, 0), \
                    ('projects/p/operations/plain', 'projects/p', 2, 0, NULL, NULL, 1, 3, 0, 0)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let query = ListQuery {
        parent: Parent::parse("projects/p").unwrap(),
        filter: Filter::parse_with("metadata.rowsImported = 40", &FixtureSchema).unwrap(),
        after: None,
        limit: 10,
        within: None,
    };
    assert!(store.list(&query).await.unwrap().is_empty());
    let pending = store.unindexed(10).await.unwrap();
    assert_eq!(pending.len(), 1, "only the operation with a payload waits: {pending:?}");
    assert_eq!(pending[0].name.to_string(), "projects/p/operations/old");
    assert_eq!(pending[0].metadata.as_ref().unwrap().value.as_ref(), [0x08, 0x28]);
    let fields = vec![Indexed {
        path: "metadata.rowsImported".into(),
        value: Value::Int(40),
    }];
    store.reindex(&pending[0].name, fields).await.unwrap();
    let listed = store.list(&query).await.unwrap();
    assert_eq!(listed[0].operation.name.to_string(), "projects/p/operations/old");
    assert!(store.unindexed(10).await.unwrap().is_empty());
    // Deleting the operation deletes its fields with it.
    store.delete(&pending[0].name).await.unwrap();
    let left: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM operation_fields", [], |row| row.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn refuses_a_database_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer than this longrun"), "{err}");
}

/// The filters docs/api.md calls index-backed are answered from an index,
/// in keyset order (no sort of every match), whatever the page depth.
#[test]
fn indexed_filters_read_an_index_in_keyset_order() {
    use longrun_types::filter::Filter;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    // Statistics as a large table would have them, so the planner chooses
    // as it would in production.
    conn.execute_batch("ANALYZE").unwrap();
    for case in [
        "",
        "done = true",
        "metadata.state = SUCCEEDED",
        "error.code = 5",
        "metadata.verb = import",
        "metadata.target = \"datasets/a\"",
        "metadata.createTime >= \"2025-01-01T00:00:00Z\"",
        "metadata.createTime < \"2025-01-01T00:00:00Z\"",
        "done = false AND metadata.createTime >= \"2025-01-01T00:00:00Z\"",
        "metadata.rowsImported > 5",
    ]
    .into_iter()
    .map(|filter| ("projects/p/locations/l", filter))
    .chain([
        ("projects/-/locations/-", ""),
        ("projects/-/locations/l", "done = true"),
    ])
    .flat_map(|case: (&str, &str)| {
        // As an open server lists, and as a caller granted two projects does.
        let granted = Some(vec![
            "projects/p".to_owned(),
            "projects/q/locations/l/operations/x".to_owned(),
        ]);
        [(case, None), (case, granted)]
    }) {
        let ((parent, filter), within): ((&str, &str), Option<Vec<String>>) = case;
        let query = ListQuery {
            parent: Parent::parse_pattern(parent).unwrap(),
            filter: Filter::parse_with(filter, &longrun_types::filter::arbitrary::FixtureSchema).unwrap(),
            after: Some(Cursor {
                create_time: 1_750_000_000_000_000,
                seq: 1_000_000,
            }),
            limit: 100,
            within: within.clone(),
        };
        let (text, params) = list_statement(&query);
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {text}")).unwrap();
        let plan: Vec<String> = statement
            .query_map(params_from_iter(params), |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        println!("{filter:?}: {plan}");
        assert!(
            plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
            "{filter:?}: {plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts every match: {plan}");
    }
}

/// A claim walks its queue's index in claim order: finding the oldest
/// queued operation does not sort the queue.
#[test]
fn claims_walk_the_queue_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("ANALYZE").unwrap();
    for parent in ["", "projects/p/locations/l"] {
        let request = longrun_store::ClaimRequest {
            parent: Parent::parse(parent).unwrap(),
            queue: "q".into(),
            worker: "w".into(),
            lease_duration: std::time::Duration::from_secs(30),
            now: SystemTime::now(),
            within: None,
            limit: 1,
        };
        let (text, params) = work::claim_statement(&request);
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {text}")).unwrap();
        let plan: Vec<String> = statement
            .query_map(params_from_iter(params), |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("operations_claimable"), "{parent:?}: {plan}");
        assert!(
            !plan.contains("TEMP B-TREE"),
            "{parent:?}: a claim sorts the queue: {plan}"
        );
    }
}
