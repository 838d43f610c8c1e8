use super::*;

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("longrun.db")).unwrap();
    crate::conformance::run_tests(&store).await;
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
    };
    assert_eq!(store.list(&query).await.unwrap().len(), 200);
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
