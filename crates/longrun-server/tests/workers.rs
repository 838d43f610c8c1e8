//! The producer/worker API over REST and gRPC (SPEC §3, §4): claims, leases,
//! heartbeats, fencing, retries, cancellation, timeouts. Leases, grace and
//! sweeps are shortened so that each race plays out in about a second.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::TestServer;
use longrun_proto::longrun::v1::{ClaimOperationRequest, CompleteOperationRequest, complete_operation_request};

const Q: &str = "projects/w/locations/l/operations";

async fn create_queued(server: &TestServer, id: &str, extra: Value) -> Value {
    let mut body = json!({"operationId": id, "queue": "imports", "input": {"path": "data.csv"}});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let (status, op) = server.post(Q, body).await;
    assert_eq!(status, 200, "{op}");
    op
}

async fn claim(server: &TestServer, body: Value) -> Value {
    let mut request = json!({"queue": "imports", "worker": "test-worker", "leaseDuration": "1s"});
    request
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    let (status, claimed) = server.post(&format!("{Q}:claim"), request).await;
    assert_eq!(status, 200, "{claimed}");
    claimed
}

async fn state(server: &TestServer, id: &str) -> Value {
    let (status, op) = server.get(&format!("{Q}/{id}")).await;
    assert_eq!(status, 200, "{op}");
    op
}

#[tokio::test]
async fn claim_returns_the_input_and_a_lease() {
    let server = TestServer::start().await;
    create_queued(&server, "a", json!({})).await;
    let claimed = claim(&server, json!({})).await;
    assert_eq!(claimed["operation"]["name"], format!("{Q}/a"));
    assert_eq!(claimed["operation"]["metadata"]["state"], "RUNNING");
    assert_eq!(claimed["input"]["value"]["path"], "data.csv");
    assert_eq!(claimed["attempt"], 1);
    assert!(claimed["leaseToken"].as_str().unwrap().len() >= 16);
    assert!(claimed["leaseExpireTime"].is_string());
    assert_eq!(claim(&server, json!({})).await, json!({}), "nothing left to claim");
}

#[tokio::test]
async fn a_worker_may_claim_several_at_once_each_with_its_own_lease() {
    let server = TestServer::start().await;
    for id in ["m1", "m2", "m3"] {
        create_queued(&server, id, json!({})).await;
    }
    let claimed = claim(&server, json!({"maxOperations": 2, "leaseDuration": "30s"})).await;
    assert!(
        claimed.get("operation").is_none(),
        "a batch answers in claims: {claimed}"
    );
    let claims = claimed["claims"].as_array().unwrap();
    let names: Vec<&str> = claims
        .iter()
        .map(|c| c["operation"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [format!("{Q}/m1"), format!("{Q}/m2")], "oldest first");
    assert!(
        claims
            .iter()
            .all(|c| c["input"]["value"]["path"] == "data.csv" && c["attempt"] == 1)
    );
    assert_ne!(claims[0]["leaseToken"], claims[1]["leaseToken"]);
    // Each lease fences its own operation only.
    let crossed = server
        .post(
            &format!("{Q}/m1:complete"),
            json!({"leaseToken": claims[1]["leaseToken"], "response": {}}),
        )
        .await;
    assert_eq!(crossed.0, 409, "{}", crossed.1);
    for claim in claims {
        let name = claim["operation"]["name"].as_str().unwrap();
        let (status, done) = server
            .post(
                &format!("{name}:complete"),
                json!({"leaseToken": claim["leaseToken"], "response": {}}),
            )
            .await;
        assert_eq!((status, done["done"].clone()), (200, json!(true)), "{done}");
    }
    // Fewer left than asked for: what there is, at once.
    let rest = claim(&server, json!({"maxOperations": 10, "wait": "5s"})).await;
    assert_eq!(rest["claims"].as_array().unwrap().len(), 1, "{rest}");
    let started = Instant::now();
    assert_eq!(
        claim(&server, json!({"maxOperations": 10, "wait": "0.2s"})).await,
        json!({})
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "an empty batch long-polls too"
    );
    for bad in [json!(-1), json!(101)] {
        let (status, refused) = server
            .post(&format!("{Q}:claim"), json!({"queue": "imports", "maxOperations": bad}))
            .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["details"][0]["reason"], "INVALID_MAX_OPERATIONS");
    }
}

#[tokio::test]
async fn a_batch_of_completions_lands_each_on_its_own() {
    let server = TestServer::start().await;
    for id in ["c1", "c2", "c3"] {
        create_queued(&server, id, json!({})).await;
    }
    let claimed = claim(&server, json!({"maxOperations": 3, "leaseDuration": "30s"})).await;
    let claims = claimed["claims"].as_array().unwrap().clone();
    let token = |i: usize| claims[i]["leaseToken"].clone();
    let batch = json!({"requests": [
        {"name": format!("{Q}/c1"), "leaseToken": token(0), "response": {"rows": 1}},
        {"name": format!("{Q}/c2"), "leaseToken": "stale", "response": {}},
        {"name": format!("{Q}/c3"), "leaseToken": token(2), "error": {"code": 3, "message": "bad row"}},
        {"name": "projects/elsewhere/operations/x", "response": {}},
        {"name": format!("{Q}/c2"), "leaseToken": token(1)},
    ]});
    let (status, answer) = server.post(&format!("{Q}:batchComplete"), batch).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "one result per request, in order: {answer}");
    assert_eq!(results[0]["operation"]["response"]["value"]["rows"], 1, "{answer}");
    assert_eq!(results[0]["operation"]["done"], true);
    assert_eq!(
        results[1]["error"]["code"], 10,
        "a stale lease is ABORTED: {}",
        results[1]
    );
    assert_eq!(results[1]["error"]["details"][0]["reason"], "LEASE_MISMATCH");
    assert_eq!(results[2]["operation"]["error"]["message"], "bad row");
    assert_eq!(results[3]["error"]["code"], 3, "{}", results[3]);
    assert_eq!(results[3]["error"]["details"][0]["reason"], "NAME_OUTSIDE_PARENT");
    assert_eq!(results[4]["error"]["details"][0]["reason"], "MISSING_RESULT");
    // What was refused changed nothing; the rest landed.
    assert_eq!(state(&server, "c1").await["done"], true);
    assert_eq!(state(&server, "c2").await["metadata"]["state"], "RUNNING");
    assert_eq!(state(&server, "c3").await["error"]["code"], 3);
    let too_many = vec![json!({"name": format!("{Q}/c1"), "response": {}}); 101];
    for bad in [json!({"requests": []}), json!({"requests": too_many})] {
        let (status, refused) = server.post(&format!("{Q}:batchComplete"), bad).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["details"][0]["reason"], "INVALID_BATCH_SIZE");
    }
    let (status, refused) = server.post(&format!("{Q}:batchComplete"), json!({"requests": 5})).await;
    assert_eq!(status, 400, "not a list of requests: {refused}");
}

#[tokio::test]
async fn claim_long_poll_wakes_within_milliseconds_of_a_create() {
    let server = TestServer::start().await;
    let poller = {
        let (http, url) = (server.http.clone(), format!("{}/v1/{Q}:claim", server.endpoint));
        tokio::spawn(async move {
            let body = json!({"queue": "imports", "wait": "20s"});
            let claimed: Value = http.post(url).json(&body).send().await.unwrap().json().await.unwrap();
            (Instant::now(), claimed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    create_queued(&server, "late", json!({})).await;
    let created = Instant::now();
    let (woke, claimed) = poller.await.unwrap();
    assert_eq!(claimed["operation"]["name"], format!("{Q}/late"));
    let lag = woke.saturating_duration_since(created);
    eprintln!("claim returned {lag:?} after the create was acknowledged");
    assert!(lag < Duration::from_millis(100), "claim lagged the create by {lag:?}");
}

#[tokio::test]
async fn progress_is_visible_to_readers() {
    let server = TestServer::start().await;
    create_queued(&server, "p", json!({})).await;
    let token = claim(&server, json!({"leaseDuration": "30s"})).await["leaseToken"].clone();
    let (status, beat) = server
        .post(
            &format!("{Q}/p:update"),
            json!({"leaseToken": token, "progressPercent": 40, "statusDetail": "rows 400/1000"}),
        )
        .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(
        beat["cancelRequested"], false,
        "a heartbeat always says whether to stop"
    );
    assert!(beat["leaseExpireTime"].is_string(), "a heartbeat extends the lease");
    let op = state(&server, "p").await;
    assert_eq!(
        (
            op["metadata"]["progressPercent"].clone(),
            op["metadata"]["statusDetail"].clone()
        ),
        (json!(40), json!("rows 400/1000"))
    );
}

#[tokio::test]
async fn lease_expiry_requeues_with_attempt_2_and_fences_attempt_1() {
    let server = TestServer::start().await;
    create_queued(&server, "e", json!({})).await;
    let first = claim(&server, json!({})).await;
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let op = state(&server, "e").await;
    assert_eq!(
        (op["metadata"]["state"].clone(), op["metadata"]["attempt"].clone()),
        (json!("QUEUED"), json!(2))
    );
    let second = claim(&server, json!({"leaseDuration": "30s"})).await;
    assert_eq!(second["attempt"], 2);
    let (status, body) = server
        .post(
            &format!("{Q}/e:complete"),
            json!({"leaseToken": first["leaseToken"], "response": {"by": "stale"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (409, Some("ABORTED")),
        "{body}"
    );
    let (status, body) = server
        .post(&format!("{Q}/e:update"), json!({"leaseToken": first["leaseToken"]}))
        .await;
    assert_eq!(status, 409, "a stale heartbeat is refused too: {body}");
    let (status, done) = server
        .post(
            &format!("{Q}/e:complete"),
            json!({"leaseToken": second["leaseToken"], "response": {"by": "fresh"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(done["response"]["value"]["by"], "fresh");
}

#[tokio::test]
async fn last_attempt_expiry_ends_the_operation_with_an_error() {
    let server = TestServer::start().await;
    create_queued(&server, "l", json!({"maxAttempts": 1})).await;
    claim(&server, json!({})).await;
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let op = state(&server, "l").await;
    assert_eq!(op["done"], true);
    assert_eq!(op["error"]["code"], 14, "UNAVAILABLE: the worker stopped reporting");
    assert_eq!(op["metadata"]["state"], "FAILED");
}

#[tokio::test]
async fn cancel_reaches_the_running_worker() {
    let server = TestServer::start().await;
    create_queued(&server, "c", json!({})).await;
    let token = claim(&server, json!({"leaseDuration": "30s"})).await["leaseToken"].clone();
    let (status, _) = server.post(&format!("{Q}/c:cancel"), json!({})).await;
    assert_eq!(status, 200);
    let (_, beat) = server
        .post(&format!("{Q}/c:update"), json!({"leaseToken": token}))
        .await;
    assert_eq!(beat["cancelRequested"], true);
    let (status, op) = server
        .post(
            &format!("{Q}/c:complete"),
            json!({"leaseToken": token, "error": {"code": 1, "message": "stopped"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(op["metadata"]["state"], "CANCELLED");
}

#[tokio::test]
async fn cancel_grace_forces_cancellation_and_fences_the_worker() {
    let server = TestServer::start_with(|config| config.cancel_grace = Duration::from_millis(300)).await;
    create_queued(&server, "g", json!({})).await;
    let token = claim(&server, json!({"leaseDuration": "30s"})).await["leaseToken"].clone();
    server.post(&format!("{Q}/g:cancel"), json!({})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let op = state(&server, "g").await;
    assert_eq!(
        (op["done"].clone(), op["error"]["code"].clone()),
        (json!(true), json!(1))
    );
    let (status, body) = server
        .post(&format!("{Q}/g:update"), json!({"leaseToken": token}))
        .await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (400, Some("FAILED_PRECONDITION"))
    );
}

#[tokio::test]
async fn retryable_error_requeues_after_backoff() {
    let server = TestServer::start_with(|config| {
        config.retry_backoff = longrun_store::Backoff {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(1),
        };
    })
    .await;
    create_queued(&server, "r", json!({})).await;
    let token = claim(&server, json!({})).await["leaseToken"].clone();
    let (status, op) = server
        .post(
            &format!("{Q}/r:complete"),
            json!({"leaseToken": token, "retryable": true, "error": {"code": 14, "message": "flaky"}}),
        )
        .await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(
        (op["done"].clone(), op["metadata"]["state"].clone()),
        (Value::Null, json!("QUEUED"))
    );
    assert_eq!(
        claim(&server, json!({})).await,
        json!({}),
        "not claimable during the backoff"
    );
    let started = Instant::now();
    let again = claim(&server, json!({"wait": "5s"})).await;
    assert_eq!(again["attempt"], 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woken when the backoff ended"
    );
}

#[tokio::test]
async fn delete_stops_the_worker() {
    let server = TestServer::start().await;
    create_queued(&server, "d", json!({})).await;
    let token = claim(&server, json!({"leaseDuration": "30s"})).await["leaseToken"].clone();
    let response = server
        .http
        .delete(format!("{}/v1/{Q}/d", server.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = server
        .post(&format!("{Q}/d:update"), json!({"leaseToken": token}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .post(&format!("{Q}/d:complete"), json!({"leaseToken": token, "response": {}}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn external_timeout_ends_with_deadline_exceeded() {
    let server = TestServer::start().await;
    let (status, _) = server.post(Q, json!({"operationId": "t", "timeout": "0.5s"})).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let op = state(&server, "t").await;
    assert_eq!(
        (op["done"].clone(), op["error"]["code"].clone()),
        (json!(true), json!(4))
    );
}

#[tokio::test]
async fn grpc_workers_claim_and_are_fenced_the_same_way() {
    let server = TestServer::start().await;
    create_queued(&server, "grpc", json!({})).await;
    let mut control = server.control().await;
    let claimed = control
        .claim_operation(ClaimOperationRequest {
            parent: "projects/w/locations/l".into(),
            queue: "imports".into(),
            worker: "grpc-worker".into(),
            lease_duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
            wait: None,
            max_operations: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claimed.operation.unwrap().name, format!("{Q}/grpc"));
    assert_eq!(
        claimed.input.unwrap().type_url,
        "type.googleapis.com/google.protobuf.Struct"
    );
    let complete = |token: &str| CompleteOperationRequest {
        name: format!("{Q}/grpc"),
        lease_token: token.into(),
        retryable: false,
        result: Some(complete_operation_request::Result::Response(prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: Vec::new(),
        })),
    };
    let stale = control.complete_operation(complete("not-the-lease")).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted);
    let done = control
        .complete_operation(complete(&claimed.lease_token))
        .await
        .unwrap()
        .into_inner();
    assert!(done.done);
}

#[tokio::test]
async fn queue_metrics_are_exported() {
    let server = TestServer::start().await;
    create_queued(&server, "m1", json!({})).await;
    create_queued(&server, "m2", json!({})).await;
    claim(&server, json!({"leaseDuration": "30s"})).await;
    let text = server
        .http
        .get(format!("{}/metrics", server.endpoint))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#"longrun_queue_depth{queue="imports"} 1"#), "{text}");
    assert!(text.contains(r#"longrun_active_leases{queue="imports"} 1"#), "{text}");
    assert!(
        text.contains(r#"longrun_operations_created_total{queue="imports"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn grpc_workers_claim_and_complete_in_batches() {
    use longrun_proto::longrun::v1::{BatchCompleteOperationsRequest, complete_operation_result};
    let server = TestServer::start().await;
    for id in ["g1", "g2"] {
        create_queued(&server, id, json!({})).await;
    }
    let mut control = server.control().await;
    let claimed = control
        .claim_operation(ClaimOperationRequest {
            parent: "projects/w/locations/l".into(),
            queue: "imports".into(),
            worker: "grpc-worker".into(),
            lease_duration: None,
            wait: None,
            max_operations: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(claimed.operation.is_none());
    let names: Vec<String> = claimed
        .claims
        .iter()
        .map(|claim| claim.operation.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(names, [format!("{Q}/g1"), format!("{Q}/g2")]);
    let requests = claimed
        .claims
        .iter()
        .map(|claim| CompleteOperationRequest {
            name: claim.operation.as_ref().unwrap().name.clone(),
            lease_token: claim.lease_token.clone(),
            retryable: false,
            result: Some(complete_operation_request::Result::Response(prost_types::Any {
                type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                value: Vec::new(),
            })),
        })
        .chain([CompleteOperationRequest {
            name: format!("{Q}/g1"),
            lease_token: "stale".into(),
            retryable: false,
            result: None,
        }])
        .collect();
    let done = control
        .batch_complete_operations(BatchCompleteOperationsRequest {
            parent: "projects/w/locations/l".into(),
            requests,
        })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<String> = done
        .results
        .iter()
        .map(|result| match result.result.as_ref().unwrap() {
            complete_operation_result::Result::Operation(op) => format!("done={}", op.done),
            complete_operation_result::Result::Error(status) => format!("error={}", status.code),
        })
        .collect();
    assert_eq!(outcomes, ["done=true", "done=true", "error=3"]);
    let empty = control
        .batch_complete_operations(BatchCompleteOperationsRequest {
            parent: "projects/w/locations/l".into(),
            requests: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}
