//! Bad input, as an attacker or a buggy client sends it: every request is
//! refused with a 4xx and an AIP-193 body (a gRPC client error code), and
//! nothing stored changes.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::TestServer;
use longrun_proto::google::longrunning::{GetOperationRequest, ListOperationsRequest};
use longrun_proto::longrun::v1::{
    ClaimOperationRequest, CompleteOperationRequest, CreateOperationRequest, UpdateOperationRequest,
    complete_operation_request,
};

/// Sends `request` as written (no URL normalisation) and reads the answer.
async fn raw(server: &TestServer, request: Vec<u8>) -> (u16, Value) {
    let address = server.endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        head.push_str("Host: 127.0.0.1\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn json_post(target: &str, body: &str) -> Vec<u8> {
    request("POST", target, &[("Content-Type", "application/json")], body.as_bytes())
}

fn get(target: &str) -> Vec<u8> {
    request("GET", target, &[], b"")
}

/// Everything stored, as a client sees it.
async fn snapshot(server: &TestServer) -> Value {
    server.get("projects/-/operations?pageSize=1000").await.1
}

#[tokio::test]
async fn bad_rest_requests_are_refused_cleanly_and_change_nothing() {
    let server = TestServer::start().await;
    server.post("projects/p/operations", json!({"operationId": "x"})).await;
    server
        .post("projects/p/operations", json!({"operationId": "q", "queue": "jobs"}))
        .await;
    let before = snapshot(&server).await;
    let long_name = format!("/v1/{}operations/x", "projects/p/".repeat(100));
    let long_filter = format!("/v1/projects/p/operations?filter={}", "a".repeat(5000));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let big = format!(
        "{{\"operationId\": \"big\", \"verb\": \"{}\"}}",
        "v".repeat(3 * 1024 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("encoded slash in a name", get("/v1/projects/p/operations/a%2Fx"), 400),
        (
            "encoded slashes as separators",
            json_post("/v1/projects%2Fp%2Foperations%2Fx:cancel", ""),
            400,
        ),
        ("a .. segment", get("/v1/projects/p/operations/.."), 400),
        ("a . segment", get("/v1/projects/p/./operations/x"), 400),
        ("an encoded .. segment", get("/v1/projects/p/operations/%2E%2E"), 400),
        ("an empty id", get("/v1/projects/p/operations/"), 400),
        ("an empty segment", get("/v1/projects//operations/x"), 400),
        ("a space in an id", get("/v1/projects/p/operations/a%20b"), 400),
        ("the wildcard as an id", get("/v1/projects/p/operations/-"), 400),
        ("a name over 1024 bytes", get(&long_name), 400),
        (
            "a negative page size",
            get("/v1/projects/p/operations?pageSize=-1"),
            400,
        ),
        (
            "a page size that is not a number",
            get("/v1/projects/p/operations?pageSize=ten"),
            400,
        ),
        (
            "a forged page token",
            get("/v1/projects/p/operations?pageToken=Zm9yZ2Vk"),
            400,
        ),
        (
            "a filter that does not parse",
            get("/v1/projects/p/operations?filter=done%3D"),
            400,
        ),
        (
            "a NUL in a filter",
            get("/v1/projects/p/operations?filter=metadata.verb%3D%22a%00%22"),
            400,
        ),
        ("a filter over 4096 bytes", get(&long_filter), 400),
        (
            "returnPartialSuccess=maybe",
            get("/v1/projects/p/operations?returnPartialSuccess=maybe"),
            400,
        ),
        ("alt=proto", get("/v1/projects/p/operations?alt=proto"), 400),
        ("$.xgafv=3", get("/v1/projects/p/operations?%24.xgafv=3"), 400),
        (
            "a body that is not JSON",
            json_post("/v1/projects/p/operations", "{nope"),
            400,
        ),
        (
            "a JSON array body",
            json_post("/v1/projects/p/operations", "[1, 2]"),
            400,
        ),
        (
            "JSON nested 10,000 deep",
            json_post("/v1/projects/p/operations", &deep),
            400,
        ),
        (
            "a body that is not UTF-8",
            request(
                "POST",
                "/v1/projects/p/operations",
                &[("Content-Type", "application/json")],
                b"{\"verb\": \"\xff\xfe\"}",
            ),
            400,
        ),
        (
            "a parent of the wrong type",
            json_post("/v1/projects/p/operations", r#"{"parent": 5}"#),
            400,
        ),
        (
            "another parent in the body",
            json_post("/v1/projects/p/operations", r#"{"parent": "projects/q"}"#),
            400,
        ),
        (
            "operation id .",
            json_post("/v1/projects/p/operations", r#"{"operationId": "."}"#),
            400,
        ),
        (
            "operation id ..",
            json_post("/v1/projects/p/operations", r#"{"operationId": ".."}"#),
            400,
        ),
        (
            "operation id of 64 characters",
            json_post(
                "/v1/projects/p/operations",
                &format!(r#"{{"operationId": "{}"}}"#, "a".repeat(64)),
            ),
            400,
        ),
        (
            "a NUL in a request id",
            json_post(
                "/v1/projects/p/operations",
                r#"{"operationId": "n", "requestId": "a\u0000b"}"#,
            ),
            400,
        ),
        (
            "a verb over 1024 bytes",
            json_post(
                "/v1/projects/p/operations",
                &format!(r#"{{"verb": "{}"}}"#, "v".repeat(2000)),
            ),
            400,
        ),
        (
            "1000 attempts",
            json_post("/v1/projects/p/operations", r#"{"maxAttempts": 1000}"#),
            400,
        ),
        (
            "attempts as a huge number",
            json_post("/v1/projects/p/operations", r#"{"maxAttempts": 1e400}"#),
            400,
        ),
        (
            "a negative timeout",
            json_post("/v1/projects/p/operations", r#"{"timeout": "-5s"}"#),
            400,
        ),
        (
            "metadata of an unknown type",
            json_post(
                "/v1/projects/p/operations",
                r#"{"metadata": {"@type": "type.googleapis.com/acme.Nope"}}"#,
            ),
            400,
        ),
        (
            "input that is not its type",
            json_post(
                "/v1/projects/p/operations",
                r#"{"input": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "soon"}}"#,
            ),
            400,
        ),
        (
            "an unknown field",
            json_post("/v1/projects/p/operations", r#"{"bogus": 1}"#),
            400,
        ),
        (
            "a queue with a space",
            json_post("/v1/projects/p/operations", r#"{"queue": "bad queue"}"#),
            400,
        ),
        ("a body over 2 MiB", json_post("/v1/projects/p/operations", &big), 413),
        (
            "a text/plain body",
            request(
                "POST",
                "/v1/projects/p/operations",
                &[("Content-Type", "text/plain")],
                br#"{"operationId": "t"}"#,
            ),
            415,
        ),
        (
            "progress over 100",
            json_post("/v1/projects/p/operations/x:update", r#"{"progressPercent": 101}"#),
            400,
        ),
        (
            "a name of the wrong type",
            json_post("/v1/projects/p/operations/x:update", r#"{"name": []}"#),
            400,
        ),
        (
            "a completion without a result",
            json_post("/v1/projects/p/operations/x:complete", "{}"),
            400,
        ),
        (
            "error code 0",
            json_post("/v1/projects/p/operations/x:complete", r#"{"error": {"code": 0}}"#),
            400,
        ),
        (
            "error code 99",
            json_post("/v1/projects/p/operations/x:complete", r#"{"error": {"code": 99}}"#),
            400,
        ),
        (
            "a NUL in an error message",
            json_post(
                "/v1/projects/p/operations/x:complete",
                r#"{"error": {"code": 2, "message": "a\u0000"}}"#,
            ),
            400,
        ),
        (
            "a lease token for an external operation",
            json_post(
                "/v1/projects/p/operations/x:complete",
                r#"{"leaseToken": "garbage", "response": {}}"#,
            ),
            409,
        ),
        (
            "a claimed operation without its lease",
            json_post("/v1/projects/p/operations/q:complete", r#"{"response": {}}"#),
            409,
        ),
        (
            "a claim without a queue",
            json_post("/v1/projects/p/operations:claim", "{}"),
            400,
        ),
        (
            "a zero lease",
            json_post(
                "/v1/projects/p/operations:claim",
                r#"{"queue": "jobs", "leaseDuration": "0s"}"#,
            ),
            400,
        ),
        (
            "a NUL in a worker name",
            json_post(
                "/v1/projects/p/operations:claim",
                r#"{"queue": "jobs", "worker": "w\u0000"}"#,
            ),
            400,
        ),
        (
            "a wait timeout that is not a duration",
            json_post("/v1/projects/p/operations/x:wait", r#"{"timeout": "soon"}"#),
            400,
        ),
        (
            "an unknown verb",
            json_post("/v1/projects/p/operations/x:frobnicate", "{}"),
            404,
        ),
        (
            "PUT on an operation",
            request("PUT", "/v1/projects/p/operations/x", &[], b""),
            404,
        ),
        ("a path outside the API", get("/nope"), 404),
        ("POST to a health check", request("POST", "/healthz", &[], b""), 404),
        (
            "a host name the server does not answer",
            request("GET", "/v1/projects/p/operations/x", &[("Host", "evil.example")], b""),
            403,
        ),
        (
            "deleting what does not exist",
            request("DELETE", "/v1/projects/p/operations/missing", &[], b""),
            404,
        ),
        (
            "an operation id that is taken",
            json_post("/v1/projects/p/operations", r#"{"operationId": "x"}"#),
            409,
        ),
        (
            "a cross-site cancel",
            request(
                "POST",
                "/v1/projects/p/operations/x:cancel",
                &[("Origin", "https://evil.example")],
                b"",
            ),
            403,
        ),
    ];
    assert!(cases.len() >= 40);
    for (what, bytes, expected) in cases {
        let (status, body) = raw(&server, bytes).await;
        assert_eq!(status, expected, "{what}: {body}");
        let error = &body["error"];
        assert_eq!(error["code"], json!(status), "{what}: AIP-193 code: {body}");
        assert!(
            error["status"]
                .as_str()
                .is_some_and(|s| s.chars().all(|c| c.is_ascii_uppercase() || c == '_')),
            "{what}: {body}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(
            error["details"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo",
            "{what}: {body}"
        );
        assert!(
            error["details"][0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: {body}"
        );
    }
    assert_eq!(snapshot(&server).await, before, "a refused request changed something");
}

#[tokio::test]
async fn bad_grpc_requests_are_refused_cleanly_and_change_nothing() {
    let server = TestServer::start().await;
    server.post("projects/p/operations", json!({"operationId": "x"})).await;
    let before = snapshot(&server).await;
    let (mut ops, mut control) = (server.grpc().await, server.control().await);
    let any = |type_url: &str, value: Vec<u8>| prost_types::Any {
        type_url: type_url.into(),
        value,
    };
    let create = |f: &dyn Fn(&mut CreateOperationRequest)| {
        let mut request = CreateOperationRequest {
            parent: "projects/p".into(),
            ..Default::default()
        };
        f(&mut request);
        request
    };
    let mut codes = Vec::new();
    let name = |name: &str| GetOperationRequest { name: name.into() };
    for request in [
        name(""),
        name("projects/p/operations/.."),
        name(&format!("{}operations/x", "projects/p/".repeat(500))),
    ] {
        codes.push(("get", ops.get_operation(request).await.unwrap_err()));
    }
    for request in [
        ListOperationsRequest {
            name: "projects/p".into(),
            page_size: -1,
            ..Default::default()
        },
        ListOperationsRequest {
            name: "projects/p".into(),
            filter: "done =".into(),
            ..Default::default()
        },
        ListOperationsRequest {
            name: "projects/p".into(),
            page_token: "forged".into(),
            ..Default::default()
        },
        ListOperationsRequest {
            name: "projects/p".into(),
            filter: "metadata.verb = \"a\0\"".into(),
            ..Default::default()
        },
    ] {
        codes.push(("list", ops.list_operations(request).await.unwrap_err()));
    }
    for request in [
        create(&|r| r.parent = "projects/p\0".into()),
        create(&|r| r.operation_id = ".".into()),
        create(&|r| r.request_id = "a\0b".into()),
        create(&|r| r.metadata = Some(any("type.googleapis.com/acme.Nope", Vec::new()))),
        create(&|r| r.input = Some(any("type.googleapis.com/google.protobuf.Duration", vec![0xff, 0xff]))),
        create(&|r| r.max_attempts = -1),
    ] {
        codes.push(("create", control.create_operation(request).await.unwrap_err()));
    }
    let complete = |result| CompleteOperationRequest {
        name: "projects/p/operations/x".into(),
        result,
        ..Default::default()
    };
    for request in [
        complete(None),
        complete(Some(complete_operation_request::Result::Error(
            longrun_proto::google::rpc::Status {
                code: 77,
                ..Default::default()
            },
        ))),
    ] {
        codes.push(("complete", control.complete_operation(request).await.unwrap_err()));
    }
    let update = UpdateOperationRequest {
        name: "projects/p/operations/x".into(),
        progress_percent: Some(200),
        ..Default::default()
    };
    codes.push(("update", control.update_operation(update).await.unwrap_err()));
    for request in [
        ClaimOperationRequest {
            parent: "projects/p".into(),
            queue: String::new(),
            ..Default::default()
        },
        ClaimOperationRequest {
            parent: "projects/p".into(),
            queue: "jobs".into(),
            lease_duration: Some(prost_types::Duration::default()),
            ..Default::default()
        },
    ] {
        codes.push(("claim", control.claim_operation(request).await.unwrap_err()));
    }
    assert!(codes.len() >= 15);
    for (what, status) in &codes {
        assert!(
            matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::Aborted),
            "{what}: {status:?}"
        );
        assert!(
            !status.details().is_empty(),
            "{what}: the google.rpc.Status with ErrorInfo is attached"
        );
        assert!(
            status.message().len() < 600,
            "{what}: the message does not echo huge input"
        );
    }
    // Bytes that do not decode are the caller's fault, not the server's.
    let frame = |payload: &[u8]| {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (payload, expected) in [
        (frame(&[0xff, 0xff, 0xff]), tonic::Code::InvalidArgument),
        (frame(&vec![0x0a; 3 * 1024 * 1024]), tonic::Code::OutOfRange),
    ] {
        let response = http2
            .post(format!(
                "{}/google.longrunning.Operations/GetOperation",
                server.endpoint
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(payload)
            .send()
            .await
            .unwrap();
        let code: i32 = response.headers()["grpc-status"].to_str().unwrap().parse().unwrap();
        assert_eq!(tonic::Code::from_i32(code), expected, "{:?}", response.headers());
    }
    assert_eq!(snapshot(&server).await, before, "a refused request changed something");
}
