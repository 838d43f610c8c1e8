//! The real server in-process: `run(listener, config, shutdown)` on port 0,
//! driven over REST (reqwest) and gRPC (tonic).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use longrun_proto::google::longrunning::{GetOperationRequest, WaitOperationRequest, operation};
use support::TestServer;

mod access;
mod browsers;
mod fidelity;
mod hostile;
mod support;
mod tls;
mod watch;
mod workers;

#[tokio::test]
async fn wait_returns_within_milliseconds_of_completion() {
    let server = TestServer::start().await;
    server.post("projects/p/operations", json!({"operationId": "w"})).await;
    let waiter = {
        let (http, url) = (
            server.http.clone(),
            format!("{}/v1/projects/p/operations/w:wait", server.endpoint),
        );
        tokio::spawn(async move {
            let response = http.post(url).json(&json!({"timeout": "20s"})).send().await.unwrap();
            let body: Value = response.json().await.unwrap();
            (Instant::now(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = server
        .post("projects/p/operations/w:complete", json!({"response": {"ok": true}}))
        .await;
    let completed = Instant::now();
    assert_eq!(status, 200);
    let (returned, body) = waiter.await.unwrap();
    assert_eq!(body["done"], true);
    let lag = returned.saturating_duration_since(completed);
    eprintln!("wait returned {lag:?} after the completing write was acknowledged");
    // Woken by the write itself: anything near a polling interval would be a regression.
    assert!(lag < Duration::from_millis(100), "wait lagged completion by {lag:?}");
}

#[tokio::test]
async fn grpc_wait_and_get_see_what_rest_wrote() {
    let server = TestServer::start().await;
    server
        .post(
            "projects/p/locations/l/operations",
            json!({"operationId": "g", "verb": "export"}),
        )
        .await;
    let mut grpc = server.grpc().await;
    let name = "projects/p/locations/l/operations/g".to_owned();
    let pending = grpc
        .wait_operation(WaitOperationRequest {
            name: name.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!pending.done, "returns the latest state at the timeout");
    server
        .post(
            &format!("{name}:complete"),
            json!({"error": {"code": 9, "message": "precondition"}}),
        )
        .await;
    let op = grpc
        .get_operation(GetOperationRequest { name })
        .await
        .unwrap()
        .into_inner();
    assert!(op.done);
    match op.result {
        Some(operation::Result::Error(status)) => {
            assert_eq!((status.code, status.message.as_str()), (9, "precondition"))
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn grpc_errors_carry_code_and_error_info() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc().await;
    let err = grpc
        .get_operation(GetOperationRequest {
            name: "projects/p/operations/missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let details = <longrun_proto::google::rpc::Status as prost::Message>::decode(err.details()).unwrap();
    assert_eq!(details.code, 5);
    assert!(details.details[0].type_url.ends_with("google.rpc.ErrorInfo"));
    let err = grpc
        .get_operation(GetOperationRequest {
            name: "nonsense".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("nonsense"), "{}", err.message());
}

#[tokio::test]
async fn shutdown_releases_waiters_and_stops() {
    let mut server = TestServer::start().await;
    server.post("operations", json!({"operationId": "s"})).await;
    let waiter = {
        let (http, url) = (server.http.clone(), format!("{}/v1/operations/s:wait", server.endpoint));
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"timeout": "25s"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(waiter.await.unwrap(), 200, "the waiter gets the latest state");
    server.task.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn paging_never_repeats_while_writers_insert() {
    let server = TestServer::start().await;
    for i in 0..9 {
        server
            .post("projects/page/operations", json!({"operationId": format!("op{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let url = format!(
            "{}/v1/projects/page/operations?pageSize=4&pageToken={token}",
            server.endpoint
        );
        let page: Value = server.http.get(url).send().await.unwrap().json().await.unwrap();
        for op in page["operations"].as_array().unwrap() {
            seen.push(op["name"].as_str().unwrap().to_owned());
        }
        server
            .post(
                "projects/page/operations",
                json!({"operationId": format!("late{}", seen.len())}),
            )
            .await;
        token = page["nextPageToken"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = (0..9)
        .rev()
        .map(|i| format!("projects/page/operations/op{i}"))
        .collect();
    assert_eq!(seen, expected);
    let edited = format!(
        "{}/v1/projects/page/operations?pageToken=AAAA{}",
        server.endpoint,
        "x".repeat(40)
    );
    let response = server.http.get(edited).send().await.unwrap();
    assert_eq!(response.status(), 400);
}
