//! Races and what holds across nodes (or across restarts, for a backend
//! that serves one node): concurrent claims and sweeps, idempotent creates,
//! the shared page-token key, the change feed, and reindexing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{ClaimOne, Harness, LEASE, claim_request, name, parent, policy, queued, t0};
use crate::{NewOperation, Store, Swept, claim_or_wait};
use longrun_types::filter::arbitrary::{FIXTURE_METADATA_TYPE, FixtureSchema};
use longrun_types::filter::{Filter, Indexed, Value};
use longrun_types::{Operation, Payload};

/// The store, and a second node on the same database where the backend
/// serves several (else the store again).
async fn two_nodes(harness: &dyn Harness) -> [Arc<dyn Store>; 2] {
    let a = harness.store();
    let b = if harness.multi_node() {
        harness.reopen().await
    } else {
        a.clone()
    };
    [a, b]
}

/// Creates arriving together (which a backend may write in one statement)
/// land as they would one at a time: each name once, the later of two
/// with one name refused, creates sharing a request id answered with the
/// first one's operation, and each operation's custom fields its own.
pub(super) async fn concurrent_creates_each_land_once(store: &dyn Store) {
    let case = "concurrent-creates";
    let with_rank = |id: &str, rank: i64| NewOperation {
        metadata: Some(Payload {
            type_url: FIXTURE_METADATA_TYPE.into(),
            value: Vec::new().into(),
        }),
        indexed: vec![Indexed {
            path: "metadata.rowsImported".into(),
            value: Value::Int(rank),
        }],
        ..NewOperation::new(name(case, id), t0())
    };
    let mut creates = Vec::new();
    for i in 0..30 {
        creates.push(with_rank(&format!("op{i}"), i));
    }
    // The same names again, with other fields: refused.
    for i in 0..5 {
        creates.push(with_rank(&format!("op{i}"), 1000 + i));
    }
    // Five names, one request: one operation.
    for i in 0..5 {
        creates.push(NewOperation {
            request_id: Some("one-request".into()),
            ..NewOperation::new(name(case, &format!("retry{i}")), t0())
        });
    }
    // A create that one backend may refuse (PostgreSQL text holds no NUL)
    // fails alone, whichever creates it came with.
    creates.insert(
        15,
        NewOperation {
            verb: "odd\0verb".into(),
            ..NewOperation::new(name(case, "odd"), t0())
        },
    );
    let answers = futures::future::join_all(creates.into_iter().map(|new| store.create(new))).await;
    let mut created = HashSet::new();
    let mut refused = 0;
    let mut by_request = Vec::new();
    let mut odd = None;
    for answer in answers {
        match answer {
            Ok(done) if done.operation.name.id() == "odd" => odd = Some(Ok(())),
            Err(err) if odd.is_none() && !matches!(err, crate::Error::AlreadyExists(_)) => odd = Some(Err(err)),
            Ok(done) if done.operation.name.id().starts_with("retry") => {
                by_request.push((done.existed, done.operation.name.id().to_owned()));
            }
            Ok(done) => {
                assert!(!done.existed, "{done:?}");
                assert!(
                    created.insert(done.operation.name.id().to_owned()),
                    "created twice: {done:?}"
                );
            }
            Err(crate::Error::AlreadyExists(_)) => refused += 1,
            Err(err) => panic!("create failed: {err}"),
        }
    }
    assert_eq!(created.len(), 30);
    assert_eq!(refused, 5, "the second create of a name is refused");
    let first: Vec<_> = by_request.iter().filter(|(existed, _)| !existed).collect();
    assert_eq!(first.len(), 1, "one create of the request made it: {by_request:?}");
    assert!(
        by_request.iter().all(|(_, id)| *id == first[0].1),
        "every retry answers with the first one's operation: {by_request:?}"
    );
    // Each row got its own fields, and the refused creates none.
    let ids = |text: &str| {
        let query = crate::ListQuery {
            parent: parent(case),
            filter: Filter::parse_with(text, &FixtureSchema).unwrap(),
            after: None,
            limit: 100,
            within: None,
        };
        async move {
            let mut ids: Vec<String> = store
                .list(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|listed| listed.operation.name.id().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        ids("metadata.rowsImported >= 25").await,
        ["op25", "op26", "op27", "op28", "op29"]
    );
    assert!(ids("metadata.rowsImported >= 1000").await.is_empty());
    let all = ids("").await;
    let odd_landed = matches!(odd, Some(Ok(())));
    assert_eq!(
        all.len(),
        31 + usize::from(odd_landed),
        "30 names and one request: {all:?} ({odd:?})"
    );
}

/// Claims arriving together each get their own operations, at most as many as they asked for, each
/// leased to their own worker for their own duration; between them they
/// take the oldest first.
pub(super) async fn concurrent_claims_each_get_their_own_leases(store: &dyn Store) {
    let case = "claims-together";
    for i in 0..30 {
        store.create(queued(case, &format!("op{i:02}"), "q")).await.unwrap();
    }
    let claim = |worker: usize, limit: usize| crate::ClaimRequest {
        worker: format!("w{worker}"),
        lease_duration: LEASE + Duration::from_secs(worker as u64),
        limit,
        ..claim_request(case, "q", t0())
    };
    // 8 claims asking for 1 + 2 + ... + 8 = 36: more than there is.
    let claims: Vec<_> = (1..=8).map(|worker| claim(worker, worker)).collect();
    let answers = futures::future::join_all(claims.into_iter().map(|request| store.claim(request))).await;
    let mut seen = HashSet::new();
    for (worker, answer) in (1..=8).zip(answers) {
        let claimed = answer.unwrap();
        assert!(claimed.len() <= worker, "w{worker} asked for {worker}: {claimed:?}");
        for op in claimed {
            let lease = op.lease.as_ref().expect("a claimed operation has a lease");
            assert_eq!(lease.worker, format!("w{worker}"));
            assert_eq!(lease.duration, LEASE + Duration::from_secs(worker as u64));
            assert_eq!(lease.expire_time, t0() + lease.duration);
            assert!(seen.insert(op.name.id().to_owned()), "claimed twice: {op:?}");
        }
    }
    assert_eq!(seen.len(), 30, "every queued operation is claimed once");
}

pub(super) async fn concurrent_claimers_each_take_a_different_operation(harness: &dyn Harness) {
    const OPERATIONS: usize = 60;
    const CLAIMERS: usize = 8;
    let nodes = two_nodes(harness).await;
    for i in 0..OPERATIONS {
        nodes[i % 2]
            .create(queued("concurrent", &format!("op{i}"), "cq"))
            .await
            .unwrap();
    }
    let mut claimers = JoinSet::new();
    for claimer in 0..CLAIMERS {
        let store = nodes[claimer % 2].clone();
        claimers.spawn(async move {
            let mut claimed = Vec::new();
            while let Some(op) = store.claim_one(claim_request("concurrent", "cq", t0())).await.unwrap() {
                claimed.push(op.name.to_string());
                tokio::task::yield_now().await;
            }
            claimed
        });
    }
    let mut all = Vec::new();
    while let Some(claimed) = claimers.join_next().await {
        all.extend(claimed.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an operation was claimed twice: {all:?}");
    assert_eq!(all.len(), OPERATIONS, "every operation is claimed");
}

pub(super) async fn concurrent_sweeps_apply_each_expiry_once(harness: &dyn Harness) {
    let nodes = two_nodes(harness).await;
    for i in 0..20 {
        nodes[0]
            .create(queued("sweeprace", &format!("op{i}"), "sq"))
            .await
            .unwrap();
        nodes[0]
            .claim_one(claim_request("sweeprace", "sq", t0()))
            .await
            .unwrap()
            .unwrap();
    }
    let expired = t0() + LEASE + Duration::from_secs(1);
    let sweeps: Vec<_> = (0..4)
        .map(|i| {
            let store = nodes[i % 2].clone();
            tokio::spawn(async move { store.sweep(expired, policy()).await.unwrap() })
        })
        .collect();
    let mut requeued = Vec::new();
    for sweep in sweeps {
        let events = sweep.await.unwrap();
        let mut seen = HashSet::new();
        for event in events {
            assert!(
                seen.insert(event.name.clone()),
                "one sweep reported {} twice",
                event.name
            );
            if event.name.contains("/sweeprace/") {
                assert_eq!(event.kind, Swept::Requeued);
                requeued.push(event.name);
            }
        }
    }
    let distinct: HashSet<&String> = requeued.iter().collect();
    assert_eq!(
        distinct.len(),
        requeued.len(),
        "an expiry was applied twice: {requeued:?}"
    );
    assert_eq!(requeued.len(), 20);
    for i in 0..20 {
        let op = nodes[1].get(&name("sweeprace", &format!("op{i}"))).await.unwrap();
        assert_eq!(op.attempt, 2, "one expiry, one attempt used");
    }
}

/// Progress reports racing a completion and a cancel on one operation:
/// every call either lands or is refused as too late, and the operation
/// ends exactly once.
pub(super) async fn reports_race_a_completion(harness: &dyn Harness) {
    let nodes = two_nodes(harness).await;
    nodes[0]
        .create(NewOperation::new(name("race", "a"), t0()))
        .await
        .unwrap();
    let mut calls = JoinSet::new();
    for i in 0..12 {
        let store = nodes[i % 2].clone();
        calls.spawn(async move {
            let name = name("race", "a");
            match i {
                5 => store.complete(&name, super::success(), t0()).await.map(|_| "completed"),
                7 => store.cancel(&name, t0()).await.map(|_| "cancelled"),
                _ => {
                    let update = crate::Update {
                        progress_percent: Some(i32::try_from(i).unwrap()),
                        ..crate::Update::default()
                    };
                    store.update(&name, update, t0()).await.map(|_| "reported")
                }
            }
        });
    }
    while let Some(call) = calls.join_next().await {
        match call.unwrap() {
            Ok(_) | Err(crate::Error::FailedPrecondition { .. }) => {}
            Err(other) => panic!("a race must be decided, not fail: {other:?}"),
        }
    }
    let op = nodes[1].get(&name("race", "a")).await.unwrap();
    assert!(op.done(), "the completion landed: {op:?}");
    assert_eq!(op.state, longrun_types::State::Succeeded);
}

pub(super) async fn page_token_key_is_kept_and_shared(harness: &dyn Harness) {
    let key = harness.store().page_token_key();
    assert_eq!(harness.reopen().await.page_token_key(), key);
    assert_ne!(key, [0; 32]);
}

pub(super) async fn older_operations_are_reindexed(harness: &dyn Harness) {
    let store = harness.store();
    let old = NewOperation {
        metadata: Some(Payload {
            type_url: FIXTURE_METADATA_TYPE.into(),
            value: vec![0x08, 0x28].into(),
        }),
        ..NewOperation::new(name("reindex", "old"), t0())
    };
    harness.store_unindexed(old).await;
    let filter = |text: &str| crate::ListQuery {
        parent: parent("reindex"),
        filter: Filter::parse_with(text, &FixtureSchema).unwrap(),
        after: None,
        limit: 10,
        within: None,
    };
    let rows_40 = filter("metadata.rowsImported = 40");
    assert!(store.list(&rows_40).await.unwrap().is_empty(), "not indexed yet");
    let pending = store.unindexed(1000).await.unwrap();
    let entry = pending
        .iter()
        .find(|entry| entry.name == name("reindex", "old"))
        .expect("listed as unindexed");
    assert_eq!(entry.metadata.as_ref().unwrap().value.as_ref(), [0x08, 0x28]);
    assert!(entry.response.is_none());
    let fields = vec![Indexed {
        path: "metadata.rowsImported".into(),
        value: Value::Int(40),
    }];
    store.reindex(&entry.name, fields).await.unwrap();
    let listed = store.list(&rows_40).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        !store
            .unindexed(1000)
            .await
            .unwrap()
            .iter()
            .any(|entry| entry.name == name("reindex", "old"))
    );
    // Reindexing something deleted meanwhile is not an error.
    store.delete(&name("reindex", "old")).await.unwrap();
    store.reindex(&name("reindex", "old"), Vec::new()).await.unwrap();
}

pub(super) async fn changes_reach_every_node(harness: &dyn Harness) {
    if !harness.multi_node() {
        return;
    }
    let [a, b] = two_nodes(harness).await;
    let mut changes = b.changes();
    let from = b.position().await.unwrap();
    a.create(NewOperation::new(name("feed", "a"), t0())).await.unwrap();
    a.complete(&name("feed", "a"), super::success(), t0()).await.unwrap();
    let wanted = name("feed", "a").to_string();
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.name == wanted && change.done {
                return change;
            }
        }
    })
    .await
    .expect("the other node announces the completion");
    assert!(
        b.get(&name("feed", "a")).await.unwrap().done(),
        "visible once announced"
    );
    assert!(!done.deleted);
    // The other node replays them too, from where it stood (a watch
    // stream resuming there).
    let replayed = b
        .changes_after(from, 1000)
        .await
        .unwrap()
        .expect("the feed reaches back");
    let ours: Vec<bool> = replayed
        .iter()
        .filter(|change| change.name == wanted)
        .map(|change| change.done)
        .collect();
    assert_eq!(ours, [false, true], "the creation, then the completion");
    // A claim long-poll on one node wakes for a creation on the other.
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let waiters = crate::ClaimWaiters::new();
            let claimed: Option<Operation> = claim_or_wait(
                b.as_ref(),
                &waiters,
                |now| crate::ClaimRequest {
                    now,
                    ..claim_request("feed", "fq", now)
                },
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
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.create(queued("feed", "work", "fq")).await.unwrap();
    let (claimed, waited) = waiting.await.unwrap();
    assert_eq!(claimed.unwrap().name, name("feed", "work"));
    assert!(
        waited < Duration::from_secs(5),
        "woken by the creation, not a timeout: {waited:?}"
    );
}

pub(super) async fn request_ids_hold_across_nodes(harness: &dyn Harness) {
    let nodes = two_nodes(harness).await;
    for round in 0..10 {
        let creates: Vec<_> = (0..4)
            .map(|i| {
                let store = nodes[i % 2].clone();
                let new = NewOperation {
                    request_id: Some(format!("request-{round}")),
                    ..NewOperation::new(name("idemrace", &format!("r{round}-op{i}")), t0())
                };
                tokio::spawn(async move { store.create(new).await.unwrap() })
            })
            .collect();
        let mut created = Vec::new();
        for create in creates {
            created.push(create.await.unwrap());
        }
        let first: Vec<_> = created.iter().filter(|c| !c.existed).collect();
        assert_eq!(first.len(), 1, "exactly one request created it");
        for c in &created {
            assert_eq!(
                c.operation.name, first[0].operation.name,
                "the same request id, the same operation"
            );
        }
    }
}
