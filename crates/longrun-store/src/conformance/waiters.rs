//! Claim long-polls parked together ([`ClaimWaiters`]): each operation
//! queued wakes one waiter that can claim it, promptly, whatever its place
//! among the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ClaimOne, Harness, claim_request, parent, queued, t0};
use crate::{ClaimRequest, ClaimWaiters, Store, claim_or_wait};
use longrun_types::Operation;

/// A waiter claiming with `request` for up to 20 s.
fn wait(
    store: &Arc<dyn Store>,
    waiters: &Arc<ClaimWaiters>,
    request: ClaimRequest,
) -> JoinHandle<(Option<Operation>, Duration)> {
    let (store, waiters) = (store.clone(), waiters.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let claimed = claim_or_wait(
            store.as_ref(),
            &waiters,
            |now| ClaimRequest { now, ..request.clone() },
            t0,
            started + Duration::from_secs(20),
            std::future::pending(),
        )
        .await
        .unwrap()
        .into_iter()
        .next();
        (claimed, started.elapsed())
    })
}

/// Lets spawned waiters reach their parking place.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

pub(super) async fn each_queued_operation_wakes_one_waiter_that_can_claim_it(harness: &dyn Harness) {
    let store = harness.store();
    let waiters = Arc::new(ClaimWaiters::new());
    let prompt = Duration::from_secs(5);

    // Twenty waiters on one queue; five operations: five claims, each of a
    // different operation, and fifteen waiters still waiting.
    let mut parked: Vec<_> = (0..20)
        .map(|_| wait(&store, &waiters, claim_request("herd", "hq", t0())))
        .collect();
    settle().await;
    for i in 0..5 {
        store.create(queued("herd", &format!("op-{i}"), "hq")).await.unwrap();
    }
    let deadline = Instant::now() + prompt;
    let mut claimed = Vec::new();
    while claimed.len() < 5 && Instant::now() < deadline {
        let mut still = Vec::new();
        for waiter in parked {
            if waiter.is_finished() {
                let (operation, waited) = waiter.await.unwrap();
                let operation = operation.expect("a woken waiter claims");
                assert!(waited < prompt, "{waited:?}");
                claimed.push(operation.name.to_string());
            } else {
                still.push(waiter);
            }
        }
        parked = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 5, "each operation claimed once: {claimed:?}");
    assert_eq!(parked.len(), 15, "the others wait on");
    parked.iter().for_each(JoinHandle::abort);

    // The waiter parked first is under another parent: the wake goes to
    // the one that can take the operation.
    let elsewhere = wait(&store, &waiters, claim_request("herd-elsewhere", "pq", t0()));
    settle().await;
    let here = wait(&store, &waiters, claim_request("herd-here", "pq", t0()));
    settle().await;
    store.create(queued("herd-here", "mine", "pq")).await.unwrap();
    let (operation, waited) = here.await.unwrap();
    assert_eq!(
        operation.map(|operation| operation.name.to_string()),
        Some(format!("{}/operations/mine", parent("herd-here").as_str()))
    );
    assert!(waited < prompt + Duration::from_millis(500), "{waited:?}");
    assert!(!elsewhere.is_finished());
    elsewhere.abort();

    // The waiter parked first may not claim there (its grants): it passes
    // the wake on.
    let mut narrow = claim_request("herd-grants", "gq", t0());
    narrow.within = Some(vec!["projects/nowhere".into()]);
    let refused = wait(&store, &waiters, narrow);
    settle().await;
    let allowed = wait(&store, &waiters, claim_request("herd-grants", "gq", t0()));
    settle().await;
    store.create(queued("herd-grants", "granted", "gq")).await.unwrap();
    let (operation, waited) = allowed.await.unwrap();
    assert!(operation.is_some(), "the capable waiter claims it");
    assert!(waited < prompt + Duration::from_millis(500), "{waited:?}");
    assert!(!refused.is_finished());
    refused.abort();
}

pub(super) async fn a_backoff_ending_wakes_whoever_waits_then(harness: &dyn Harness) {
    let store = harness.store();
    let waiters = Arc::new(ClaimWaiters::new());
    let clock = Arc::new(std::sync::Mutex::new(t0()));
    let mut flaky = queued("herd-backoff", "flaky", "bq");
    flaky.max_attempts = 2;
    store.create(flaky).await.unwrap();
    let running = store
        .claim_one(claim_request("herd-backoff", "bq", t0()))
        .await
        .unwrap()
        .unwrap();

    // Two waiters, before the operation is re-queued: the first is woken
    // by the re-queue, finds it backing off, and leaves before it ends.
    let spawn = |deadline: Duration| {
        let (store, waiters, clock) = (store.clone(), waiters.clone(), clock.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let claimed = claim_or_wait(
                store.as_ref(),
                &waiters,
                |now| ClaimRequest {
                    now,
                    ..claim_request("herd-backoff", "bq", now)
                },
                || *clock.lock().unwrap(),
                started + deadline,
                std::future::pending(),
            )
            .await
            .unwrap()
            .into_iter()
            .next();
            (claimed, started.elapsed())
        })
    };
    let leaving = spawn(Duration::from_millis(600));
    settle().await;
    let staying = spawn(Duration::from_secs(20));
    settle().await;
    let retry = crate::Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
    };
    let failing = crate::Completion {
        lease_token: running.lease.as_ref().map(|lease| lease.token.clone()),
        outcome: longrun_types::Outcome::Error(longrun_types::Status::new(longrun_types::Code::Unavailable, "flaky")),
        indexed: Vec::new(),
        retry: Some(retry),
    };
    store.complete(&running.name, failing, t0()).await.unwrap();
    let (left_with, _) = leaving.await.unwrap();
    assert!(left_with.is_none(), "backing off: nothing to claim yet");
    // The backoff ends (on the store's clock and in real time alike).
    *clock.lock().unwrap() = t0() + Duration::from_secs(1);
    let (claimed, waited) = staying.await.unwrap();
    assert_eq!(claimed.map(|operation| operation.attempt), Some(2));
    assert!(
        waited < Duration::from_secs(5),
        "woken when the backoff ended, not at its deadline: {waited:?}"
    );
}
