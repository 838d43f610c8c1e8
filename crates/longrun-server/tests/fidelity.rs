//! What Google's clients and a careful reader of the docs expect, held to
//! (issue 10's API items).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestServer;

async fn metrics(server: &TestServer) -> String {
    server
        .http
        .get(format!("{}/metrics", server.endpoint))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A worker whose acknowledgement was lost completes again: it gets the
/// operation; a different outcome is still refused.
#[tokio::test]
async fn a_repeated_completion_is_answered_with_the_operation() {
    let server = TestServer::start().await;
    server
        .post("projects/p/operations", json!({"operationId": "r", "queue": "q"}))
        .await;
    let (_, claimed) = server
        .post("projects/p/operations:claim", json!({"queue": "q", "worker": "w"}))
        .await;
    let done = json!({"leaseToken": claimed["leaseToken"], "response": {"rows": 3}});
    let (status, first) = server.post("projects/p/operations/r:complete", done.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = server.post("projects/p/operations/r:complete", done).await;
    assert_eq!((status, &again), (200, &first));
    let other = json!({"leaseToken": claimed["leaseToken"], "error": {"code": 13, "message": "late"}});
    let (status, refused) = server.post("projects/p/operations/r:complete", other).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["status"], "FAILED_PRECONDITION");
}

/// An operation may be called `operations`, and is then reachable.
#[tokio::test]
async fn an_operation_called_operations_is_reachable() {
    let server = TestServer::start().await;
    let (status, created) = server
        .post("projects/p/operations", json!({"operationId": "operations"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, got) = server.get("projects/p/operations/operations").await;
    assert_eq!(
        (status, &got["name"]),
        (200, &json!("projects/p/operations/operations")),
        "{got}"
    );
    let (status, _) = server.post("projects/p/operations/operations:cancel", json!({})).await;
    assert_eq!(status, 200);
}

/// A heartbeat's answer always carries `cancelRequested`; a succeeded
/// operation reads 100 %, a failed one keeps how far it got.
#[tokio::test]
async fn updates_answer_in_full_and_success_means_complete() {
    let server = TestServer::start().await;
    for id in ["ok", "ko"] {
        server.post("projects/p/operations", json!({"operationId": id})).await;
        let (status, answer) = server
            .post(
                &format!("projects/p/operations/{id}:update"),
                json!({"progressPercent": 60}),
            )
            .await;
        assert_eq!((status, &answer["cancelRequested"]), (200, &json!(false)), "{answer}");
    }
    server
        .post("projects/p/operations/ok:complete", json!({"response": {}}))
        .await;
    server
        .post(
            "projects/p/operations/ko:complete",
            json!({"error": {"code": 2, "message": "no"}}),
        )
        .await;
    assert_eq!(
        server.get("projects/p/operations/ok").await.1["metadata"]["progressPercent"],
        100
    );
    assert_eq!(
        server.get("projects/p/operations/ko").await.1["metadata"]["progressPercent"],
        60
    );
}

/// Integers in untyped JSON come back as integers.
#[tokio::test]
async fn untyped_numbers_keep_their_shape() {
    let server = TestServer::start().await;
    server.post("projects/p/operations", json!({"operationId": "n"})).await;
    server
        .post(
            "projects/p/operations/n:complete",
            json!({"response": {"total": 6, "mean": 2.5, "big": 12_345_678_901_i64}}),
        )
        .await;
    let (_, op) = server.get("projects/p/operations/n").await;
    assert_eq!(
        op["response"]["value"],
        json!({"total": 6, "mean": 2.5, "big": 12345678901_i64}),
        "{op}"
    );
    let text = serde_json::to_string(&op["response"]["value"]).unwrap();
    assert!(text.contains("\"total\":6,") || text.contains("\"total\":6}"), "{text}");
}

/// Latency histograms reach past the longest Wait, and a blocked Claim
/// counts as a waiter.
#[tokio::test]
async fn long_calls_are_measured_and_claims_count_as_waiters() {
    let server = TestServer::start().await;
    let claim = {
        let (http, url) = (
            server.http.clone(),
            format!("{}/v1/projects/p/operations:claim", server.endpoint),
        );
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"queue": "idle", "worker": "w", "wait": "5s"}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = metrics(&server).await;
    assert!(during.contains("longrun_waiters 1"), "{during}");
    server
        .post("projects/p/operations", json!({"operationId": "w", "queue": "idle"}))
        .await;
    claim.await.unwrap();
    let after = metrics(&server).await;
    assert!(after.contains("longrun_waiters 0"), "{after}");
    assert!(
        after.contains("le=\"104.8576\""),
        "buckets reach past a 60 s Wait:\n{after}"
    );
}

/// A gRPC Wait answers within the call's deadline, with the latest state,
/// rather than let the client's deadline expire.
#[tokio::test]
async fn a_grpc_wait_answers_before_the_deadline() {
    let server = TestServer::start().await;
    server
        .post("projects/p/operations", json!({"operationId": "slow"}))
        .await;
    let mut ops = server.grpc().await;
    let mut request = tonic::Request::new(longrun_proto::google::longrunning::WaitOperationRequest {
        name: "projects/p/operations/slow".into(),
        timeout: Some(prost_types::Duration { seconds: 20, nanos: 0 }),
    });
    request.set_timeout(Duration::from_millis(800));
    let started = std::time::Instant::now();
    let op = ops
        .wait_operation(request)
        .await
        .expect("answered, not DEADLINE_EXCEEDED")
        .into_inner();
    assert!(!op.done);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(800),
        "{took:?}"
    );
}

/// Google's generated clients send `$alt=json;enum-encoding=int` (or the
/// same as `alt`): enums then arrive as numbers; other encodings are
/// refused by name.
#[tokio::test]
async fn json_with_enum_numbers_is_served_when_asked() {
    let server = TestServer::start().await;
    server
        .post("projects/p/operations", json!({"operationId": "e", "queue": "q"}))
        .await;
    let (status, named) = server.get("projects/p/operations/e?alt=json").await;
    assert_eq!(
        (status, &named["metadata"]["state"]),
        (200, &json!("QUEUED")),
        "{named}"
    );
    for query in ["%24alt=json;enum-encoding=int", "alt=json%3Benum-encoding%3Dint"] {
        let (status, numbered) = server.get(&format!("projects/p/operations/e?{query}")).await;
        assert_eq!(
            (status, &numbered["metadata"]["state"]),
            (200, &json!(1)),
            "{query}: {numbered}"
        );
    }
    let (status, listed) = server.get("projects/p/operations?%24alt=json;enum-encoding=int").await;
    assert_eq!(
        listed["operations"][0]["metadata"]["state"],
        json!(1),
        "{status} {listed}"
    );
    let (status, refused) = server.get("projects/p/operations/e?%24alt=proto").await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("alt=proto"),
        "{refused}"
    );
}
