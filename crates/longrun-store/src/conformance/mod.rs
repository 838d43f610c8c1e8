//! The behaviour every [`Store`] backend must show. A backend's tests call
//! [`run_tests`] with a [`Harness`] around a fresh database; each case works
//! under its own parent so cases cannot see each other.

mod feed;
mod filters;
mod nodes;
mod random;
mod waiters;
mod work;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use longrun_types::filter::Filter;
use longrun_types::{Code, OperationName, Outcome, Parent, Payload, State, Status};

use crate::{ClaimRequest, Completion, Error, ListQuery, NewOperation, Store, SweepPolicy, Update};

/// A backend under test: its store, and what only the backend can do.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The store the cases run against.
    fn store(&self) -> Arc<dyn Store>;
    /// The same database opened again: a restarted node, or for a backend
    /// that serves several nodes ([`Harness::multi_node`]), a second one
    /// running beside the first.
    async fn reopen(&self) -> Arc<dyn Store>;
    /// Whether [`Harness::reopen`] gives a node that works beside the first:
    /// changes committed on one are announced on the other, and both claim
    /// from the same queues.
    fn multi_node(&self) -> bool;
    /// Stores `new` as a longrun from before custom-field indexing would
    /// have: without its field rows, and marked for reindexing.
    async fn store_unindexed(&self, new: NewOperation);
}

/// Runs every conformance case, panicking on the first failure.
pub async fn run_tests(harness: &dyn Harness) {
    let owned = harness.store();
    let store = owned.as_ref();
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
    repeating_a_completion_returns_the_operation(store).await;
    queued_operation_needs_a_lease_to_complete(store).await;
    delete_then_not_found_everywhere(store).await;
    update_reports_progress(store).await;
    changes_are_announced_after_commit(store).await;
    feed::changes_replay_after_any_position(store).await;
    work::claim_takes_the_oldest_queued_operation_under_the_parent(store).await;
    work::a_claim_takes_several_each_with_its_own_lease(store).await;
    work::completions_in_a_batch_land_each_on_its_own(store).await;
    work::one_operation_twice_in_a_batch(store).await;
    work::heartbeat_extends_the_lease(store).await;
    work::lease_expiry_requeues_and_fences_the_stale_worker(store).await;
    work::last_attempt_expiry_ends_with_unavailable(store).await;
    work::retryable_error_requeues_after_backoff(store).await;
    work::cancel_during_claim_leaves_nothing_to_claim(store).await;
    work::cancel_grace_forces_cancellation_and_fences_the_worker(store).await;
    work::complete_after_delete_is_not_found(store).await;
    work::timeout_ends_with_deadline_exceeded(store).await;
    work::retention_purges_old_done_operations(store).await;
    work::queue_stats_count_queued_and_leased(store).await;
    work::release_hands_back_without_using_an_attempt(store).await;
    store_reports_ready(store).await;
    lists_and_claims_stay_within_prefixes(store).await;
    filters::filters_match_what_was_written_by_hand(store).await;
    random::filters_agree_with_the_reference_on_random_data(store).await;
    nodes::concurrent_creates_each_land_once(store).await;
    nodes::concurrent_claims_each_get_their_own_leases(store).await;
    nodes::concurrent_claimers_each_take_a_different_operation(harness).await;
    nodes::concurrent_sweeps_apply_each_expiry_once(harness).await;
    nodes::reports_race_a_completion(harness).await;
    nodes::page_token_key_is_kept_and_shared(harness).await;
    nodes::older_operations_are_reindexed(harness).await;
    nodes::changes_reach_every_node(harness).await;
    nodes::request_ids_hold_across_nodes(harness).await;
    waiters::each_queued_operation_wakes_one_waiter_that_can_claim_it(harness).await;
    waiters::a_backoff_ending_wakes_whoever_waits_then(harness).await;
    // Last: its sweep runs far in the future.
    feed::the_feed_forgets_after_its_retention(store).await;
    feed::the_feed_keeps_what_is_inside_its_window(store).await;
}

pub(super) const LEASE: Duration = Duration::from_secs(30);

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
        within: None,
        limit: 1,
    }
}

/// A claim of one operation, as most workers make it.
trait ClaimOne {
    async fn claim_one(&self, request: ClaimRequest) -> crate::Result<Option<longrun_types::Operation>>;
}

impl ClaimOne for dyn Store + '_ {
    async fn claim_one(&self, request: ClaimRequest) -> crate::Result<Option<longrun_types::Operation>> {
        let mut claimed = self.claim(ClaimRequest { limit: 1, ..request }).await?;
        assert!(claimed.len() <= 1, "a claim of one took {}", claimed.len());
        Ok(claimed.pop())
    }
}

fn token(op: &longrun_types::Operation) -> Option<String> {
    op.lease.as_ref().map(|lease| lease.token.clone())
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
        within: None,
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
            within: None,
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
            within: None,
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
        within: None,
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

async fn repeating_a_completion_returns_the_operation(store: &dyn Store) {
    store.create(queued("repeat", "a", "q")).await.unwrap();
    let op = store
        .claim_one(claim_request("repeat", "q", t0()))
        .await
        .unwrap()
        .unwrap();
    let done = |outcome| Completion {
        lease_token: token(&op),
        ..Completion::new(outcome)
    };
    let first = store
        .complete(&name("repeat", "a"), done(Outcome::Response(struct_payload())), t0())
        .await
        .unwrap();
    let later = t0() + Duration::from_secs(5);
    let again = store
        .complete(&name("repeat", "a"), done(Outcome::Response(struct_payload())), later)
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "the same worker repeating the same completion gets the operation"
    );
    let different = done(Outcome::Error(Status::new(Code::Internal, "late")));
    assert!(matches!(
        store.complete(&name("repeat", "a"), different, later).await,
        Err(Error::FailedPrecondition { .. })
    ));
    let stranger = Completion {
        lease_token: Some("another".into()),
        ..Completion::new(Outcome::Response(struct_payload()))
    };
    assert!(matches!(
        store.complete(&name("repeat", "a"), stranger, later).await,
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
    // A store may also announce what committed just before the subscription.
    let change = loop {
        let change = changes.recv().await.unwrap();
        if change.done {
            break change;
        }
    };
    assert_eq!(change.name, name("changes", "a").to_string());
    assert!(
        store.get(&name("changes", "a")).await.unwrap().done(),
        "visible once announced"
    );
}

/// What a caller may see bounds what it lists and claims: whole segments
/// (`projects/scope-a` reaches neither `projects/scope-ab` nor above).
async fn lists_and_claims_stay_within_prefixes(store: &dyn Store) {
    let at = |project: &str, id: &str| {
        let parent = Parent::parse(&format!("projects/{project}/locations/l")).unwrap();
        NewOperation::queued(OperationName::new(parent, id).unwrap(), "scoped", t0())
    };
    for (project, id) in [
        ("scope-a", "a1"),
        ("scope-a", "a2"),
        ("scope-ab", "ab1"),
        ("scope-b", "b1"),
    ] {
        store.create(at(project, id)).await.unwrap();
    }
    let granted = || {
        Some(vec![
            "projects/scope-a".to_owned(),
            "projects/scope-b/locations/l/operations/b1".to_owned(),
        ])
    };
    let query = ListQuery {
        parent: Parent::parse_pattern("projects/-/locations/l").unwrap(),
        filter: Filter::parse("metadata.state = QUEUED").unwrap(),
        after: None,
        limit: 100,
        within: granted(),
    };
    let mut listed: Vec<String> = store
        .list(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|listed| listed.operation.name.id().to_owned())
        .filter(|id| ["a1", "a2", "ab1", "b1"].contains(&id.as_str()))
        .collect();
    listed.sort();
    assert_eq!(listed, ["a1", "a2", "b1"]);
    let nothing = ListQuery {
        within: Some(Vec::new()),
        ..query.clone()
    };
    assert!(store.list(&nothing).await.unwrap().is_empty());
    let mut claimed = Vec::new();
    loop {
        let request = ClaimRequest {
            parent: Parent::root(),
            queue: "scoped".into(),
            worker: "w".into(),
            lease_duration: LEASE,
            now: t0(),
            within: granted(),
            limit: 1,
        };
        let Some(op) = store.claim_one(request).await.unwrap() else {
            break;
        };
        claimed.push(op.name.id().to_owned());
    }
    claimed.sort();
    assert_eq!(claimed, ["a1", "a2", "b1"], "a worker claims only what it may see");
}

async fn store_reports_ready(store: &dyn Store) {
    store.check_ready().await.unwrap();
    let time = store.time().await.unwrap();
    let skew = time
        .duration_since(SystemTime::now())
        .unwrap_or_else(|behind| behind.duration());
    assert!(
        skew < Duration::from_secs(60),
        "the store's clock is {skew:?} from this machine's"
    );
}
