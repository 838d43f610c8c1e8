//! Claims, leases, retries, the sweep and queue statistics.

use std::time::Duration;

use super::{ClaimOne, LEASE, claim_request, name, new_op, parent, policy, queued, struct_payload, success, t0, token};
use crate::{Completion, Error, Store, Swept, Update};
use longrun_types::{Code, OperationName, Outcome, Parent, State, Status};

pub(super) async fn claim_takes_the_oldest_queued_operation_under_the_parent(store: &dyn Store) {
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
    while let Some(op) = store.claim_one(claim_request("claim", "q", t0())).await.unwrap() {
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

/// A worker asking for several gets the oldest ones, each fenced by a
/// lease token of its own.
pub(super) async fn a_claim_takes_several_each_with_its_own_lease(store: &dyn Store) {
    for id in ["b1", "b2", "b3", "b4", "b5"] {
        store.create(queued("batch", id, "q")).await.unwrap();
    }
    let request = |limit| crate::ClaimRequest {
        limit,
        ..claim_request("batch", "q", t0())
    };
    let first = store.claim(request(3)).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|op| op.name.id()).collect();
    assert_eq!(ids, ["b1", "b2", "b3"], "the limit's worth, oldest first");
    let tokens: std::collections::HashSet<_> = first.iter().map(token).collect();
    assert_eq!(tokens.len(), 3, "one lease token each");
    assert!(
        tokens
            .iter()
            .flatten()
            .all(|token| token.len() == 32 && token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
        "128 random bits in lowercase hex: {tokens:?}"
    );
    assert!(first.iter().all(|op| op.state == State::Running && op.attempt == 1));
    let rest = store.claim(request(10)).await.unwrap();
    let ids: Vec<&str> = rest.iter().map(|op| op.name.id()).collect();
    assert_eq!(ids, ["b4", "b5"], "what is left, without waiting to fill the limit");
    assert!(store.claim(request(10)).await.unwrap().is_empty());
    // One operation's token does not open another's.
    let crossed = Completion {
        lease_token: token(&first[1]),
        ..success()
    };
    assert!(matches!(
        store.complete(&first[0].name, crossed, t0()).await,
        Err(Error::Aborted { .. })
    ));
    let own = Completion {
        lease_token: token(&first[0]),
        ..success()
    };
    assert!(store.complete(&first[0].name, own, t0()).await.unwrap().done());
}

/// Completions of a batch land or fail each on its own, answered in order.
pub(super) async fn completions_in_a_batch_land_each_on_its_own(store: &dyn Store) {
    for id in ["m1", "m2", "m3", "m4"] {
        store.create(queued("many", id, "q")).await.unwrap();
    }
    let claimed = store
        .claim(crate::ClaimRequest {
            limit: 4,
            ..claim_request("many", "q", t0())
        })
        .await
        .unwrap();
    let with = |op: &longrun_types::Operation, token: Option<String>| {
        (
            op.name.clone(),
            Completion {
                lease_token: token,
                ..success()
            },
        )
    };
    let mut feed = store.changes();
    let results = store
        .complete_many(
            vec![
                with(&claimed[0], token(&claimed[0])),
                with(&claimed[1], Some("stale".into())),
                (name("many", "absent"), success()),
                (
                    claimed[2].name.clone(),
                    Completion {
                        lease_token: token(&claimed[2]),
                        outcome: Outcome::Error(Status::new(Code::DataLoss, "lost")),
                        ..success()
                    },
                ),
                with(&claimed[3], token(&claimed[3])),
            ],
            t0(),
        )
        .await;
    assert_eq!(results.len(), 5);
    assert!(results[0].as_ref().unwrap().done());
    assert!(matches!(results[1], Err(Error::Aborted { .. })), "{:?}", results[1]);
    assert!(matches!(results[2], Err(Error::NotFound(_))), "{:?}", results[2]);
    assert_eq!(store.get(&claimed[1].name).await.unwrap().state, State::Running);
    // Each stored with its own outcome, as a Get reads it back.
    let failed = store.get(&claimed[2].name).await.unwrap();
    assert_eq!(failed.state, State::Failed);
    match &failed.outcome {
        Some(Outcome::Error(status)) => assert_eq!((status.code(), status.message.as_str()), (Code::DataLoss, "lost")),
        other => panic!("{other:?}"),
    }
    assert_eq!(results[3].as_ref().unwrap().state, State::Failed);
    let succeeded = store.get(&claimed[3].name).await.unwrap();
    assert_eq!(succeeded.state, State::Succeeded);
    assert_eq!(succeeded.outcome, Some(Outcome::Response(struct_payload())));
    assert_eq!(succeeded.end_time, Some(t0()));
    // Announced like any completion (after the claims, which a feed read
    // after its commit may still be announcing).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = feed.recv().await.unwrap();
            if change.done {
                return change.name;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, claimed[0].name.to_string());
}

/// One operation completed twice in one batch: the first completion lands;
/// the second is answered as it would be after it (the same completion
/// again: the operation; another one: refused), never as if it had landed.
pub(super) async fn one_operation_twice_in_a_batch(store: &dyn Store) {
    for id in ["same", "other"] {
        store.create(queued("twice", id, "q")).await.unwrap();
    }
    let claimed = store
        .claim(crate::ClaimRequest {
            limit: 2,
            ..claim_request("twice", "q", t0())
        })
        .await
        .unwrap();
    let ok = |op: &longrun_types::Operation| Completion {
        lease_token: token(op),
        ..success()
    };
    let failed = |op: &longrun_types::Operation| Completion {
        lease_token: token(op),
        outcome: Outcome::Error(Status::new(Code::DataLoss, "lost")),
        ..success()
    };
    let results = store
        .complete_many(
            vec![
                (claimed[0].name.clone(), ok(&claimed[0])),
                (claimed[0].name.clone(), ok(&claimed[0])),
                (claimed[1].name.clone(), ok(&claimed[1])),
                (claimed[1].name.clone(), failed(&claimed[1])),
            ],
            t0(),
        )
        .await;
    let states: Vec<_> = results
        .iter()
        .map(|result| result.as_ref().map(|op| op.state))
        .collect();
    assert!(matches!(states[0], Ok(State::Succeeded)), "{results:?}");
    assert!(
        matches!(states[1], Ok(State::Succeeded)),
        "the same completion again: {results:?}"
    );
    assert!(matches!(states[2], Ok(State::Succeeded)), "{results:?}");
    assert!(
        matches!(results[3], Err(Error::FailedPrecondition { .. })),
        "another completion after the first is refused: {results:?}"
    );
    assert_eq!(store.get(&claimed[1].name).await.unwrap().state, State::Succeeded);
}

pub(super) async fn heartbeat_extends_the_lease(store: &dyn Store) {
    store.create(queued("heartbeat", "a", "q")).await.unwrap();
    let op = store
        .claim_one(claim_request("heartbeat", "q", t0()))
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

pub(super) async fn lease_expiry_requeues_and_fences_the_stale_worker(store: &dyn Store) {
    store.create(queued("expiry", "a", "q")).await.unwrap();
    let first = store
        .claim_one(claim_request("expiry", "q", t0()))
        .await
        .unwrap()
        .unwrap();
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
        .claim_one(claim_request("expiry", "q", expired))
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

pub(super) async fn last_attempt_expiry_ends_with_unavailable(store: &dyn Store) {
    let mut once = queued("lastattempt", "a", "q");
    once.max_attempts = 1;
    store.create(once).await.unwrap();
    store
        .claim_one(claim_request("lastattempt", "q", t0()))
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

pub(super) async fn retryable_error_requeues_after_backoff(store: &dyn Store) {
    let mut twice = queued("retry", "a", "q");
    twice.max_attempts = 2;
    store.create(twice).await.unwrap();
    let backoff = crate::Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(60),
    };
    let op = store
        .claim_one(claim_request("retry", "q", t0()))
        .await
        .unwrap()
        .unwrap();
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
            .claim_one(claim_request("retry", "q", t0() + Duration::from_secs(5)))
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
    let op = store
        .claim_one(claim_request("retry", "q", later))
        .await
        .unwrap()
        .unwrap();
    let last = store.complete(&name("retry", "a"), failing(&op), later).await.unwrap();
    assert_eq!(last.state, State::Failed, "no attempts left");
}

pub(super) async fn cancel_during_claim_leaves_nothing_to_claim(store: &dyn Store) {
    store.create(queued("cancelclaim", "a", "q")).await.unwrap();
    store.cancel(&name("cancelclaim", "a"), t0()).await.unwrap();
    assert!(
        store
            .claim_one(claim_request("cancelclaim", "q", t0()))
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

pub(super) async fn cancel_grace_forces_cancellation_and_fences_the_worker(store: &dyn Store) {
    store.create(queued("grace", "a", "q")).await.unwrap();
    let op = store
        .claim_one(claim_request("grace", "q", t0()))
        .await
        .unwrap()
        .unwrap();
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

pub(super) async fn complete_after_delete_is_not_found(store: &dyn Store) {
    store.create(queued("deleted", "a", "q")).await.unwrap();
    let op = store
        .claim_one(claim_request("deleted", "q", t0()))
        .await
        .unwrap()
        .unwrap();
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

pub(super) async fn timeout_ends_with_deadline_exceeded(store: &dyn Store) {
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

pub(super) async fn retention_purges_old_done_operations(store: &dyn Store) {
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

pub(super) async fn queue_stats_count_queued_and_leased(store: &dyn Store) {
    for id in ["a", "b", "c"] {
        store.create(queued("stats", id, "stats-q")).await.unwrap();
    }
    store
        .claim_one(claim_request("stats", "stats-q", t0() + Duration::from_secs(3000)))
        .await
        .unwrap()
        .unwrap();
    let stats = store.queue_stats().await.unwrap();
    let entry = stats.iter().find(|s| s.queue == "stats-q").unwrap();
    assert_eq!((entry.queued, entry.leased), (2, 1));
}

pub(super) async fn release_hands_back_without_using_an_attempt(store: &dyn Store) {
    store.create(queued("release", "a", "q")).await.unwrap();
    let op = store
        .claim_one(claim_request("release", "q", t0()))
        .await
        .unwrap()
        .unwrap();
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
    let again = store
        .claim_one(claim_request("release", "q", t0()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 1);
    store.create(new_op(name("release", "external"))).await.unwrap();
    assert!(
        matches!(
            store.release(&name("release", "external"), "any", t0()).await,
            Err(Error::FailedPrecondition { .. })
        ),
        "an external operation has no lease to hand back"
    );
    assert_eq!(
        store.get(&name("release", "external")).await.unwrap().state,
        State::Running
    );
}
