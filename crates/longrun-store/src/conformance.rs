//! The behaviour every [`Store`] backend must show. A backend's tests call
//! [`run_tests`] with a fresh store; each case works under its own parent so
//! cases cannot see each other.

use std::time::{Duration, SystemTime};

use longrun_types::filter::Filter;
use longrun_types::{Code, OperationName, Outcome, Parent, Payload, State, Status};

use crate::{Completion, Error, ListQuery, NewOperation, Store, Update};

/// Runs every conformance case against `store`, panicking on the first failure.
pub async fn run_tests(store: &dyn Store) {
    create_then_get(store).await;
    request_id_returns_the_first_operation(store).await;
    taken_id_is_already_exists(store).await;
    list_is_newest_first_and_pages_without_repeats(store).await;
    list_filters_by_done_and_state(store).await;
    list_matches_wildcard_parents(store).await;
    cancel_while_queued_ends_with_code_1(store).await;
    cancel_running_requests_cancellation(store).await;
    cancel_done_changes_nothing(store).await;
    completing_twice_is_failed_precondition(store).await;
    queued_operation_needs_a_lease_to_complete(store).await;
    delete_then_not_found_everywhere(store).await;
    update_reports_progress(store).await;
    changes_are_announced_after_commit(store).await;
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn parent(case: &str) -> Parent {
    Parent::parse(&format!("projects/{case}/locations/l")).unwrap()
}

fn name(case: &str, id: &str) -> OperationName {
    OperationName::new(parent(case), id).unwrap()
}

fn new_op(name: OperationName) -> NewOperation {
    NewOperation {
        name,
        request_id: None,
        queue: None,
        input: None,
        metadata: None,
        verb: "create".into(),
        target: "projects/p/datasets/d".into(),
        api_version: "v1".into(),
        max_attempts: 3,
        timeout: None,
        now: t0(),
    }
}

fn struct_payload() -> Payload {
    Payload {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: Vec::new().into(),
    }
}

fn success() -> Completion {
    Completion {
        lease_token: None,
        outcome: Outcome::Response(struct_payload()),
    }
}

async fn names(store: &dyn Store, parent: Parent, filter: &str) -> Vec<String> {
    let query = ListQuery {
        parent,
        filter: Filter::parse(filter).unwrap(),
        after: None,
        limit: 1000,
    };
    store
        .list(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|listed| listed.operation.name.id().to_owned())
        .collect()
}

async fn create_then_get(store: &dyn Store) {
    let created = store.create(new_op(name("get", "a"))).await.unwrap();
    assert!(!created.existed);
    assert_eq!(
        created.operation.state,
        State::Running,
        "external operations start RUNNING"
    );
    assert_eq!(created.operation.attempt, 1);
    let got = store.get(&name("get", "a")).await.unwrap();
    assert_eq!(got, created.operation);
    assert_eq!(got.verb, "create");
    assert_eq!(got.create_time, t0());
    assert!(matches!(
        store.get(&name("get", "missing")).await,
        Err(Error::NotFound(_))
    ));
}

async fn request_id_returns_the_first_operation(store: &dyn Store) {
    let mut first = new_op(name("idem", "a"));
    first.request_id = Some("req-1".into());
    let mut second = new_op(name("idem", "b"));
    second.request_id = Some("req-1".into());
    assert!(!store.create(first).await.unwrap().existed);
    let again = store.create(second).await.unwrap();
    assert!(again.existed);
    assert_eq!(again.operation.name.id(), "a");
    assert_eq!(names(store, parent("idem"), "").await, ["a"]);
    // The key is scoped to the parent.
    let mut elsewhere = new_op(name("idem2", "c"));
    elsewhere.request_id = Some("req-1".into());
    assert!(!store.create(elsewhere).await.unwrap().existed);
}

async fn taken_id_is_already_exists(store: &dyn Store) {
    store.create(new_op(name("taken", "a"))).await.unwrap();
    assert!(matches!(
        store.create(new_op(name("taken", "a"))).await,
        Err(Error::AlreadyExists(_))
    ));
}

async fn list_is_newest_first_and_pages_without_repeats(store: &dyn Store) {
    for id in ["1", "2", "3", "4", "5", "6", "7"] {
        store.create(new_op(name("paging", id))).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let query = ListQuery {
            parent: parent("paging"),
            filter: Filter::default(),
            after,
            limit: 3,
        };
        let page = store.list(&query).await.unwrap();
        seen.extend(
            page.iter()
                .map(|listed| listed.operation.name.id().to_owned()),
        );
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|listed| listed.cursor);
        // A write between pages must not shift what later pages hold.
        store
            .create(new_op(name("paging", &format!("new{}", seen.len()))))
            .await
            .unwrap();
    }
    assert_eq!(seen, ["7", "6", "5", "4", "3", "2", "1"]);
}

async fn list_filters_by_done_and_state(store: &dyn Store) {
    store
        .create(new_op(name("filter", "running")))
        .await
        .unwrap();
    store
        .create(new_op(name("filter", "finished")))
        .await
        .unwrap();
    store
        .complete(&name("filter", "finished"), success(), t0())
        .await
        .unwrap();
    let mut queued = new_op(name("filter", "queued"));
    queued.queue = Some("q".into());
    store.create(queued).await.unwrap();
    assert_eq!(
        names(store, parent("filter"), "done = true").await,
        ["finished"]
    );
    assert_eq!(
        names(store, parent("filter"), "done = false").await,
        ["queued", "running"]
    );
    assert_eq!(
        names(store, parent("filter"), "metadata.state = QUEUED").await,
        ["queued"]
    );
    assert_eq!(
        names(
            store,
            parent("filter"),
            "metadata.state != QUEUED AND done = false"
        )
        .await,
        ["running"]
    );
    let failed = Completion {
        lease_token: None,
        outcome: Outcome::Error(Status::new(Code::NotFound, "gone")),
    };
    store
        .complete(&name("filter", "running"), failed, t0())
        .await
        .unwrap();
    assert_eq!(
        names(store, parent("filter"), "error.code = 5").await,
        ["running"]
    );
    assert!(
        names(store, parent("filter"), "error.code != 5")
            .await
            .is_empty(),
        "unset error.code never matches"
    );
}

async fn list_matches_wildcard_parents(store: &dyn Store) {
    for project in ["wa", "wb"] {
        store.create(new_op(name(project, "x"))).await.unwrap();
    }
    let deeper = OperationName::new(
        Parent::parse("projects/wc/locations/l/datasets/d").unwrap(),
        "y",
    )
    .unwrap();
    store.create(new_op(deeper)).await.unwrap();
    let all = names(
        store,
        Parent::parse_pattern("projects/-/locations/l").unwrap(),
        "",
    )
    .await;
    assert!(all.iter().filter(|id| *id == "x").count() >= 2, "{all:?}");
    assert!(
        !all.contains(&"y".to_owned()),
        "a wildcard matches one segment only: {all:?}"
    );
}

async fn cancel_while_queued_ends_with_code_1(store: &dyn Store) {
    let mut queued = new_op(name("cancelq", "a"));
    queued.queue = Some("q".into());
    store.create(queued).await.unwrap();
    let later = t0() + Duration::from_secs(5);
    let op = store.cancel(&name("cancelq", "a"), later).await.unwrap();
    assert_eq!(op.state, State::Cancelled);
    assert!(op.done());
    assert!(op.cancel_requested);
    assert_eq!(op.end_time, Some(later));
    match op.outcome {
        Some(Outcome::Error(status)) => assert_eq!(status.code(), Code::Cancelled),
        other => panic!("expected a cancelled error, got {other:?}"),
    }
}

async fn cancel_running_requests_cancellation(store: &dyn Store) {
    store.create(new_op(name("cancelr", "a"))).await.unwrap();
    let op = store.cancel(&name("cancelr", "a"), t0()).await.unwrap();
    assert_eq!(op.state, State::Running);
    assert!(op.cancel_requested && !op.done());
    // Double cancel is harmless.
    let again = store
        .cancel(&name("cancelr", "a"), t0() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(again, op);
    let seen = store
        .update(&name("cancelr", "a"), Update::default(), t0())
        .await
        .unwrap();
    assert!(seen.cancel_requested, "the producer learns of it on update");
}

async fn cancel_done_changes_nothing(store: &dyn Store) {
    store.create(new_op(name("canceld", "a"))).await.unwrap();
    let done = store
        .complete(&name("canceld", "a"), success(), t0())
        .await
        .unwrap();
    let after = store
        .cancel(&name("canceld", "a"), t0() + Duration::from_secs(9))
        .await
        .unwrap();
    assert_eq!(after, done);
    assert!(matches!(
        store.cancel(&name("canceld", "zz"), t0()).await,
        Err(Error::NotFound(_))
    ));
}

async fn completing_twice_is_failed_precondition(store: &dyn Store) {
    store.create(new_op(name("twice", "a"))).await.unwrap();
    let first = store
        .complete(&name("twice", "a"), success(), t0())
        .await
        .unwrap();
    assert_eq!(first.state, State::Succeeded);
    let failure = Completion {
        lease_token: None,
        outcome: Outcome::Error(Status::new(Code::Internal, "late")),
    };
    assert!(matches!(
        store.complete(&name("twice", "a"), failure, t0()).await,
        Err(Error::FailedPrecondition { .. })
    ));
    assert_eq!(
        store.get(&name("twice", "a")).await.unwrap(),
        first,
        "nothing changed"
    );
    assert!(matches!(
        store
            .update(&name("twice", "a"), Update::default(), t0())
            .await,
        Err(Error::FailedPrecondition { .. })
    ));
}

async fn queued_operation_needs_a_lease_to_complete(store: &dyn Store) {
    let mut queued = new_op(name("fenced", "a"));
    queued.queue = Some("q".into());
    let before = store.create(queued).await.unwrap().operation;
    let stale = Completion {
        lease_token: Some("not-a-lease".into()),
        outcome: Outcome::Response(struct_payload()),
    };
    assert!(matches!(
        store.complete(&name("fenced", "a"), stale, t0()).await,
        Err(Error::Aborted { .. })
    ));
    assert!(matches!(
        store.complete(&name("fenced", "a"), success(), t0()).await,
        Err(Error::Aborted { .. })
    ));
    assert_eq!(
        store.get(&name("fenced", "a")).await.unwrap(),
        before,
        "nothing changed"
    );
}

async fn delete_then_not_found_everywhere(store: &dyn Store) {
    store.create(new_op(name("delete", "a"))).await.unwrap();
    store.delete(&name("delete", "a")).await.unwrap();
    assert!(matches!(
        store.get(&name("delete", "a")).await,
        Err(Error::NotFound(_))
    ));
    assert!(names(store, parent("delete"), "").await.is_empty());
    assert!(matches!(
        store.delete(&name("delete", "a")).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store
            .update(&name("delete", "a"), Update::default(), t0())
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.complete(&name("delete", "a"), success(), t0()).await,
        Err(Error::NotFound(_))
    ));
}

async fn update_reports_progress(store: &dyn Store) {
    store.create(new_op(name("progress", "a"))).await.unwrap();
    let update = Update {
        progress_percent: Some(40),
        status_detail: Some("reading".into()),
        ..Update::default()
    };
    let later = t0() + Duration::from_secs(3);
    store
        .update(&name("progress", "a"), update, later)
        .await
        .unwrap();
    let op = store.get(&name("progress", "a")).await.unwrap();
    assert_eq!(
        (
            op.progress_percent,
            op.status_detail.as_str(),
            op.update_time
        ),
        (40, "reading", later)
    );
    let metadata = Update {
        metadata: Some(struct_payload()),
        ..Update::default()
    };
    store
        .update(&name("progress", "a"), metadata, later)
        .await
        .unwrap();
    let op = store.get(&name("progress", "a")).await.unwrap();
    assert_eq!(op.metadata, Some(struct_payload()));
    assert_eq!(
        op.progress_percent, 40,
        "fields not in the update keep their values"
    );
}

async fn changes_are_announced_after_commit(store: &dyn Store) {
    store.create(new_op(name("changes", "a"))).await.unwrap();
    let mut changes = store.changes();
    store
        .complete(&name("changes", "a"), success(), t0())
        .await
        .unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!(change.name, name("changes", "a").to_string());
    assert!(change.done);
    assert!(
        store.get(&name("changes", "a")).await.unwrap().done(),
        "visible once announced"
    );
}
