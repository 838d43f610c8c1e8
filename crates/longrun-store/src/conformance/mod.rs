//! The behaviour every [`Store`] backend must show. A backend's tests call
//! [`run_tests`] with a fresh store; each case works under its own parent so
//! cases cannot see each other.

mod filters;

use std::time::{Duration, SystemTime};

use longrun_types::filter::Filter;
use longrun_types::{Code, OperationName, Outcome, Parent, Payload, State, Status};

use crate::{ClaimRequest, Completion, Error, ListQuery, NewOperation, Store, SweepPolicy, Swept, Update};

/// Runs every conformance case against `store`, panicking on the first failure.
pub async fn run_tests(store: &dyn Store) {
    create_then_get(store).await;
    request_id_returns_the_first_operation(store).await;
    taken_id_is_already_exists(store).await;
    list_is_newest_first_and_pages_without_repeats(store).await;
    list_orders_by_creation_time(store).await;
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
    claim_takes_the_oldest_queued_operation_under_the_parent(store).await;
    heartbeat_extends_the_lease(store).await;
    lease_expiry_requeues_and_fences_the_stale_worker(store).await;
    last_attempt_expiry_ends_with_unavailable(store).await;
    retryable_error_requeues_after_backoff(store).await;
    cancel_during_claim_leaves_nothing_to_claim(store).await;
    cancel_grace_forces_cancellation_and_fences_the_worker(store).await;
    complete_after_delete_is_not_found(store).await;
    timeout_ends_with_deadline_exceeded(store).await;
    retention_purges_old_done_operations(store).await;
    queue_stats_count_queued_and_leased(store).await;
    release_hands_back_without_using_an_attempt(store).await;
    filters::filters_match_what_was_written_by_hand(store).await;
}

const LEASE: Duration = Duration::from_secs(30);

fn policy() -> SweepPolicy {
    SweepPolicy {
        cancel_grace: Duration::from_secs(30),
        retention: Duration::from_secs(30 * 86_400),
        purge_batch: 100,
    }
}

fn queued(case: &str, id: &str, queue: &str) -> NewOperation {
    let mut new = new_op(name(case, id));
    new.queue = Some(queue.into());
    new
}

fn claim_request(case: &str, queue: &str, at: SystemTime) -> ClaimRequest {
    ClaimRequest {
        parent: parent(case),
        queue: queue.into(),
        worker: "w1".into(),
        lease_duration: LEASE,
        now: at,
    }
}

fn token(op: &longrun_types::Operation) -> Option<String> {
    op.lease.as_ref().map(|lease| lease.token.clone())
}

async fn claim_takes_the_oldest_queued_operation_under_the_parent(store: &dyn Store) {
    store.create(queued("claim", "first", "q")).await.unwrap();
    store.create(queued("claim", "second", "q")).await.unwrap();
    store.create(queued("claim", "other-queue", "r")).await.unwrap();
    let nested = OperationName::new(
        Parent::parse("projects/claim/locations/l/datasets/d").unwrap(),
        "nested",
    )
    .unwrap();
    let mut below = new_op(nested);
    below.queue = Some("q".into());
    store.create(below).await.unwrap();
    let mut outside = queued("claim-elsewhere", "x", "q");
    outside.now = t0() - Duration::from_secs(60);
    store.create(outside).await.unwrap();
    let mut claimed = Vec::new();
    while let Some(op) = store.claim(claim_request("claim", "q", t0())).await.unwrap() {
        assert_eq!(op.state, State::Running);
        let lease = op.lease.clone().unwrap();
        assert_eq!((lease.worker.as_str(), lease.expire_time), ("w1", t0() + LEASE));
        claimed.push(op.name.id().to_owned());
    }
    assert_eq!(
        claimed,
        ["first", "second", "nested"],
        "oldest first, parent prefix, one queue"
    );
}

async fn heartbeat_extends_the_lease(store: &dyn Store) {
    store.create(queued("heartbeat", "a", "q")).await.unwrap();
    let op = store
        .claim(claim_request("heartbeat", "q", t0()))
        .await
        .unwrap()
        .unwrap();
    let later = t0() + Duration::from_secs(20);
    let beat = Update {
        lease_token: token(&op),
        progress_percent: Some(10),
        ..Update::default()
    };
    let op = store.update(&name("heartbeat", "a"), beat, later).await.unwrap();
    assert_eq!(op.lease.unwrap().expire_time, later + LEASE);
    let stale = Update {
        lease_token: Some("wrong".into()),
        ..Update::default()
    };
    assert!(matches!(
        store.update(&name("heartbeat", "a"), stale, later).await,
        Err(Error::Aborted { .. })
    ));
}

async fn lease_expiry_requeues_and_fences_the_stale_worker(store: &dyn Store) {
    store.create(queued("expiry", "a", "q")).await.unwrap();
    let first = store.claim(claim_request("expiry", "q", t0())).await.unwrap().unwrap();
    let expired = t0() + LEASE + Duration::from_secs(1);
    let events = store.sweep(expired, policy()).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.name.ends_with("expiry/locations/l/operations/a") && e.kind == Swept::Requeued),
        "{events:?}"
    );
    let requeued = store.get(&name("expiry", "a")).await.unwrap();
    assert_eq!((requeued.state, requeued.attempt), (State::Queued, 2));
    let second = store
        .claim(claim_request("expiry", "q", expired))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_ne!(token(&first), token(&second));
    let stale = Completion {
        lease_token: token(&first),
        outcome: Outcome::Response(struct_payload()),
        indexed: Vec::new(),
        retry: None,
    };
    assert!(matches!(
        store.complete(&name("expiry", "a"), stale, expired).await,
        Err(Error::Aborted { .. })
    ));
    let fresh = Completion {
        lease_token: token(&second),
        outcome: Outcome::Response(struct_payload()),
        indexed: Vec::new(),
        retry: None,
    };
    assert_eq!(
        store
            .complete(&name("expiry", "a"), fresh, expired)
            .await
            .unwrap()
            .state,
        State::Succeeded
    );
}

async fn last_attempt_expiry_ends_with_unavailable(store: &dyn Store) {
    let mut once = queued("lastattempt", "a", "q");
    once.max_attempts = 1;
    store.create(once).await.unwrap();
    store
        .claim(claim_request("lastattempt", "q", t0()))
        .await
        .unwrap()
        .unwrap();
    let events = store.sweep(t0() + LEASE * 2, policy()).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == Swept::LeaseExpired && e.name.contains("lastattempt"))
    );
    let op = store.get(&name("lastattempt", "a")).await.unwrap();
    assert_eq!(op.state, State::Failed);
    assert!(matches!(op.outcome, Some(Outcome::Error(ref status)) if status.code() == Code::Unavailable));
}

async fn retryable_error_requeues_after_backoff(store: &dyn Store) {
    let mut twice = queued("retry", "a", "q");
    twice.max_attempts = 2;
    store.create(twice).await.unwrap();
    let backoff = crate::Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(60),
    };
    let op = store.claim(claim_request("retry", "q", t0())).await.unwrap().unwrap();
    let failing = |op: &longrun_types::Operation| Completion {
        lease_token: token(op),
        outcome: Outcome::Error(Status::new(Code::Unavailable, "flaky")),
        indexed: Vec::new(),
        retry: Some(backoff),
    };
    let requeued = store.complete(&name("retry", "a"), failing(&op), t0()).await.unwrap();
    assert_eq!((requeued.state, requeued.attempt), (State::Queued, 2));
    assert!(
        store
            .claim(claim_request("retry", "q", t0() + Duration::from_secs(5)))
            .await
            .unwrap()
            .is_none(),
        "backing off"
    );
    assert_eq!(
        store.next_claimable(&parent("retry"), "q").await.unwrap(),
        Some(t0() + Duration::from_secs(10))
    );
    let later = t0() + Duration::from_secs(10);
    let op = store.claim(claim_request("retry", "q", later)).await.unwrap().unwrap();
    let last = store.complete(&name("retry", "a"), failing(&op), later).await.unwrap();
    assert_eq!(last.state, State::Failed, "no attempts left");
}

async fn cancel_during_claim_leaves_nothing_to_claim(store: &dyn Store) {
    store.create(queued("cancelclaim", "a", "q")).await.unwrap();
    store.cancel(&name("cancelclaim", "a"), t0()).await.unwrap();
    assert!(
        store
            .claim(claim_request("cancelclaim", "q", t0()))
            .await
            .unwrap()
            .is_none()
    );
    // Double cancel of the now-done operation changes nothing.
    let again = store
        .cancel(&name("cancelclaim", "a"), t0() + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!again.ended);
    assert_eq!(again.operation.end_time, Some(t0()));
}

async fn cancel_grace_forces_cancellation_and_fences_the_worker(store: &dyn Store) {
    store.create(queued("grace", "a", "q")).await.unwrap();
    let op = store.claim(claim_request("grace", "q", t0())).await.unwrap().unwrap();
    store.cancel(&name("grace", "a"), t0()).await.unwrap();
    let beat = Update {
        lease_token: token(&op),
        ..Update::default()
    };
    let seen = store
        .update(&name("grace", "a"), beat.clone(), t0() + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(seen.cancel_requested, "the worker learns of it on its heartbeat");
    assert!(
        store
            .sweep(t0() + Duration::from_secs(10), policy())
            .await
            .unwrap()
            .iter()
            .all(|e| !e.name.contains("grace"))
    );
    let events = store.sweep(t0() + Duration::from_secs(31), policy()).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == Swept::CancelForced && e.name.contains("grace"))
    );
    let op = store.get(&name("grace", "a")).await.unwrap();
    assert_eq!(op.state, State::Cancelled);
    assert!(matches!(
        store
            .update(&name("grace", "a"), beat, t0() + Duration::from_secs(32))
            .await,
        Err(Error::FailedPrecondition { .. })
    ));
}

async fn complete_after_delete_is_not_found(store: &dyn Store) {
    store.create(queued("deleted", "a", "q")).await.unwrap();
    let op = store.claim(claim_request("deleted", "q", t0())).await.unwrap().unwrap();
    store.delete(&name("deleted", "a")).await.unwrap();
    let completion = Completion {
        lease_token: token(&op),
        outcome: Outcome::Response(struct_payload()),
        indexed: Vec::new(),
        retry: None,
    };
    assert!(matches!(
        store.complete(&name("deleted", "a"), completion, t0()).await,
        Err(Error::NotFound(_))
    ));
}

async fn timeout_ends_with_deadline_exceeded(store: &dyn Store) {
    let mut timed = new_op(name("timeout", "a"));
    timed.timeout = Some(Duration::from_secs(60));
    store.create(timed).await.unwrap();
    assert!(
        store
            .sweep(t0() + Duration::from_secs(59), policy())
            .await
            .unwrap()
            .iter()
            .all(|e| !e.name.contains("timeout"))
    );
    store.sweep(t0() + Duration::from_secs(60), policy()).await.unwrap();
    let op = store.get(&name("timeout", "a")).await.unwrap();
    assert_eq!(op.state, State::Failed);
    assert!(matches!(op.outcome, Some(Outcome::Error(ref status)) if status.code() == Code::DeadlineExceeded));
}

async fn retention_purges_old_done_operations(store: &dyn Store) {
    store.create(new_op(name("retention", "old"))).await.unwrap();
    store
        .complete(&name("retention", "old"), success(), t0())
        .await
        .unwrap();
    store.create(new_op(name("retention", "live"))).await.unwrap();
    let month = Duration::from_secs(31 * 86_400);
    let events = store.sweep(t0() + month, policy()).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == Swept::Purged && e.name.ends_with("retention/locations/l/operations/old"))
    );
    assert!(matches!(
        store.get(&name("retention", "old")).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store.get(&name("retention", "live")).await.is_ok(),
        "running operations are never purged"
    );
}

async fn queue_stats_count_queued_and_leased(store: &dyn Store) {
    for id in ["a", "b", "c"] {
        store.create(queued("stats", id, "stats-q")).await.unwrap();
    }
    store
        .claim(claim_request("stats", "stats-q", t0() + Duration::from_secs(3000)))
        .await
        .unwrap()
        .unwrap();
    let stats = store.queue_stats().await.unwrap();
    let entry = stats.iter().find(|s| s.queue == "stats-q").unwrap();
    assert_eq!((entry.queued, entry.leased), (2, 1));
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
        verb: "create".into(),
        target: "projects/p/datasets/d".into(),
        api_version: "v1".into(),
        ..NewOperation::new(name, t0())
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
        indexed: Vec::new(),
        retry: None,
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
        seen.extend(page.iter().map(|listed| listed.operation.name.id().to_owned()));
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

/// Newest first means by creation time (the clock reading the caller
/// passed), then by arrival: an operation stamped earlier but stored later
/// (another node's clock) lists after newer ones, and pages keep that order.
async fn list_orders_by_creation_time(store: &dyn Store) {
    let at = |id: &str, seconds: u64| NewOperation::new(name("ordering", id), t0() + Duration::from_secs(seconds));
    for (id, seconds) in [("b", 20), ("a", 10), ("d", 40), ("c", 20)] {
        store.create(at(id, seconds)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let query = ListQuery {
            parent: parent("ordering"),
            filter: Filter::default(),
            after,
            limit: 1,
        };
        let page = store.list(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        seen.push(last.operation.name.id().to_owned());
        after = Some(last.cursor);
    }
    assert_eq!(seen, ["d", "c", "b", "a"]);
}

async fn list_filters_by_done_and_state(store: &dyn Store) {
    store.create(new_op(name("filter", "running"))).await.unwrap();
    store.create(new_op(name("filter", "finished"))).await.unwrap();
    store
        .complete(&name("filter", "finished"), success(), t0())
        .await
        .unwrap();
    let mut queued = new_op(name("filter", "queued"));
    queued.queue = Some("q".into());
    store.create(queued).await.unwrap();
    assert_eq!(names(store, parent("filter"), "done = true").await, ["finished"]);
    assert_eq!(
        names(store, parent("filter"), "done = false").await,
        ["queued", "running"]
    );
    assert_eq!(
        names(store, parent("filter"), "metadata.state = QUEUED").await,
        ["queued"]
    );
    assert_eq!(
        names(store, parent("filter"), "metadata.state != QUEUED AND done = false").await,
        ["running"]
    );
    let failed = Completion {
        lease_token: None,
        outcome: Outcome::Error(Status::new(Code::NotFound, "gone")),
        indexed: Vec::new(),
        retry: None,
    };
    store.complete(&name("filter", "running"), failed, t0()).await.unwrap();
    assert_eq!(names(store, parent("filter"), "error.code = 5").await, ["running"]);
    assert!(
        names(store, parent("filter"), "error.code != 5").await.is_empty(),
        "unset error.code never matches"
    );
}

async fn list_matches_wildcard_parents(store: &dyn Store) {
    for project in ["wa", "wb"] {
        store.create(new_op(name(project, "x"))).await.unwrap();
    }
    let deeper = OperationName::new(Parent::parse("projects/wc/locations/l/datasets/d").unwrap(), "y").unwrap();
    store.create(new_op(deeper)).await.unwrap();
    let all = names(store, Parent::parse_pattern("projects/-/locations/l").unwrap(), "").await;
    assert!(all.iter().filter(|id| *id == "x").count() >= 2, "{all:?}");
    assert!(
        !all.contains(&"y".to_owned()),
        "a wildcard matches one segment only: {all:?}"
    );
    // Every segment a wildcard, several levels deep; names stay canonical.
    for (project, location, dataset) in [("xa", "l1", "d1"), ("xb", "l2", "d2")] {
        let parent = Parent::parse(&format!("projects/{project}/locations/{location}/datasets/{dataset}")).unwrap();
        store
            .create(new_op(OperationName::new(parent, "z").unwrap()))
            .await
            .unwrap();
    }
    let pattern = Parent::parse_pattern("projects/-/locations/-/datasets/-").unwrap();
    let query = ListQuery {
        parent: pattern,
        filter: Filter::parse("name = \"projects/x*\"").unwrap(),
        after: None,
        limit: 10,
    };
    let listed: Vec<String> = store
        .list(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.operation.name.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "projects/xb/locations/l2/datasets/d2/operations/z",
            "projects/xa/locations/l1/datasets/d1/operations/z"
        ]
    );
}

async fn cancel_while_queued_ends_with_code_1(store: &dyn Store) {
    let mut queued = new_op(name("cancelq", "a"));
    queued.queue = Some("q".into());
    store.create(queued).await.unwrap();
    let later = t0() + Duration::from_secs(5);
    let cancelled = store.cancel(&name("cancelq", "a"), later).await.unwrap();
    assert!(cancelled.ended);
    let op = cancelled.operation;
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
    let cancelled = store.cancel(&name("cancelr", "a"), t0()).await.unwrap();
    assert!(!cancelled.ended, "a running operation only learns of it");
    let op = cancelled.operation;
    assert_eq!(op.state, State::Running);
    assert!(op.cancel_requested && !op.done());
    // Double cancel is harmless.
    let again = store
        .cancel(&name("cancelr", "a"), t0() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(again.operation, op);
    let seen = store
        .update(&name("cancelr", "a"), Update::default(), t0())
        .await
        .unwrap();
    assert!(seen.cancel_requested, "the producer learns of it on update");
}

async fn cancel_done_changes_nothing(store: &dyn Store) {
    store.create(new_op(name("canceld", "a"))).await.unwrap();
    let done = store.complete(&name("canceld", "a"), success(), t0()).await.unwrap();
    let after = store
        .cancel(&name("canceld", "a"), t0() + Duration::from_secs(9))
        .await
        .unwrap();
    assert_eq!((after.operation, after.ended), (done, false));
    assert!(matches!(
        store.cancel(&name("canceld", "zz"), t0()).await,
        Err(Error::NotFound(_))
    ));
}

async fn completing_twice_is_failed_precondition(store: &dyn Store) {
    store.create(new_op(name("twice", "a"))).await.unwrap();
    let first = store.complete(&name("twice", "a"), success(), t0()).await.unwrap();
    assert_eq!(first.state, State::Succeeded);
    let failure = Completion {
        lease_token: None,
        outcome: Outcome::Error(Status::new(Code::Internal, "late")),
        indexed: Vec::new(),
        retry: None,
    };
    assert!(matches!(
        store.complete(&name("twice", "a"), failure, t0()).await,
        Err(Error::FailedPrecondition { .. })
    ));
    assert_eq!(store.get(&name("twice", "a")).await.unwrap(), first, "nothing changed");
    assert!(matches!(
        store.update(&name("twice", "a"), Update::default(), t0()).await,
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
        indexed: Vec::new(),
        retry: None,
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
    assert!(matches!(store.get(&name("delete", "a")).await, Err(Error::NotFound(_))));
    assert!(names(store, parent("delete"), "").await.is_empty());
    assert!(matches!(
        store.delete(&name("delete", "a")).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.update(&name("delete", "a"), Update::default(), t0()).await,
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
    store.update(&name("progress", "a"), update, later).await.unwrap();
    let op = store.get(&name("progress", "a")).await.unwrap();
    assert_eq!(
        (op.progress_percent, op.status_detail.as_str(), op.update_time),
        (40, "reading", later)
    );
    let metadata = Update {
        metadata: Some(struct_payload()),
        ..Update::default()
    };
    store.update(&name("progress", "a"), metadata, later).await.unwrap();
    let op = store.get(&name("progress", "a")).await.unwrap();
    assert_eq!(op.metadata, Some(struct_payload()));
    assert_eq!(op.progress_percent, 40, "fields not in the update keep their values");
}

async fn changes_are_announced_after_commit(store: &dyn Store) {
    store.create(new_op(name("changes", "a"))).await.unwrap();
    let mut changes = store.changes();
    store.complete(&name("changes", "a"), success(), t0()).await.unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!(change.name, name("changes", "a").to_string());
    assert!(change.done);
    assert!(
        store.get(&name("changes", "a")).await.unwrap().done(),
        "visible once announced"
    );
}

async fn release_hands_back_without_using_an_attempt(store: &dyn Store) {
    store.create(queued("release", "a", "q")).await.unwrap();
    let op = store.claim(claim_request("release", "q", t0())).await.unwrap().unwrap();
    let released = store
        .release(&name("release", "a"), &token(&op).unwrap(), t0())
        .await
        .unwrap();
    assert_eq!(
        (released.state, released.attempt, released.lease.is_none()),
        (State::Queued, 1, true)
    );
    assert!(matches!(
        store.release(&name("release", "a"), &token(&op).unwrap(), t0()).await,
        Err(Error::Aborted { .. })
    ));
    let again = store.claim(claim_request("release", "q", t0())).await.unwrap().unwrap();
    assert_eq!(again.attempt, 1);
}
