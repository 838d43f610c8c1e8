//! Access control (SPEC §5) over both protocols: who may do what where,
//! and that a refusal never says whether something exists.

use serde_json::{Value, json};
use tonic::metadata::MetadataValue;

use crate::support::TestServer;
use longrun_proto::google::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest, WaitOperationRequest,
};
use longrun_proto::longrun::v1::{
    ClaimOperationRequest, CompleteOperationRequest, CreateOperationRequest, UpdateOperationRequest,
    complete_operation_request,
};
use longrun_server::{Access, Tokens};

const TOKENS: &str = r#"
[[token]]
name = "root"
secret = "root-secret"
grants = ["*=admin"]

[[token]]
name = "viewer"
secret = "viewer-secret"
grants = ["projects/a=viewer"]

[[token]]
name = "editor"
secret = "editor-secret"
grants = ["projects/a=editor"]

[[token]]
name = "producer"
secret = "producer-secret"
grants = ["projects/a=producer"]

[[token]]
name = "worker"
secret = "worker-secret"
grants = ["projects/a=worker"]

[[token]]
name = "admin-a"
secret = "admin-a-secret"
grants = ["projects/a=admin"]

[[token]]
name = "one-op"
secret = "one-op-secret"
grants = ["projects/b/operations/shared=viewer"]
"#;

async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.access = std::sync::Arc::new(Access::with_tokens(Tokens::parse(TOKENS).unwrap()));
    })
    .await
}

/// A REST call with a token (`None`: without one).
async fn rest(server: &TestServer, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = server
        .http
        .request(method.parse().unwrap(), format!("{}/v1/{path}", server.endpoint));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn grpc<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Creates `projects/<project>/operations/<id>` as root.
async fn make(server: &TestServer, project: &str, id: &str, queue: Option<&str>) {
    let mut body = json!({"operationId": id});
    if let Some(queue) = queue {
        body["queue"] = json!(queue);
    }
    let (status, created) = rest(
        server,
        Some("root-secret"),
        "POST",
        &format!("projects/{project}/operations"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{created}");
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    Get,
    List,
    Wait,
    Cancel,
    Delete,
    Create,
    Update,
    Complete,
    Claim,
}

const CALLS: [Call; 9] = [
    Call::Get,
    Call::List,
    Call::Wait,
    Call::Cancel,
    Call::Delete,
    Call::Create,
    Call::Update,
    Call::Complete,
    Call::Claim,
];

/// Makes `call` on a fresh operation of `project` over REST; the HTTP status.
async fn rest_call(server: &TestServer, token: &str, call: Call, project: &str, id: &str) -> u16 {
    make(server, project, id, None).await;
    let name = format!("projects/{project}/operations/{id}");
    let (method, path, body) = match call {
        Call::Get => ("GET", name.clone(), None),
        Call::List => ("GET", format!("projects/{project}/operations"), None),
        Call::Wait => ("POST", format!("{name}:wait"), Some(json!({"timeout": "0s"}))),
        Call::Cancel => ("POST", format!("{name}:cancel"), None),
        Call::Delete => ("DELETE", name.clone(), None),
        Call::Create => (
            "POST",
            format!("projects/{project}/operations"),
            Some(json!({"operationId": format!("{id}-new")})),
        ),
        Call::Update => ("POST", format!("{name}:update"), Some(json!({"progressPercent": 5}))),
        Call::Complete => ("POST", format!("{name}:complete"), Some(json!({"response": {}}))),
        Call::Claim => (
            "POST",
            format!("projects/{project}/operations:claim"),
            Some(json!({"queue": "q", "worker": "w"})),
        ),
    };
    rest(server, Some(token), method, &path, body).await.0
}

/// The same over gRPC; the canonical code.
async fn grpc_call(server: &TestServer, token: &str, call: Call, project: &str, id: &str) -> tonic::Code {
    make(server, project, id, None).await;
    let name = format!("projects/{project}/operations/{id}");
    let parent = format!("projects/{project}");
    let (mut ops, mut control) = (server.grpc().await, server.control().await);
    let t = Some(token);
    let code = |result: Result<(), tonic::Status>| result.err().map_or(tonic::Code::Ok, |status| status.code());
    match call {
        Call::Get => code(ops.get_operation(grpc(t, GetOperationRequest { name })).await.map(drop)),
        Call::List => code(
            ops.list_operations(grpc(
                t,
                ListOperationsRequest {
                    name: parent,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ),
        Call::Wait => code(
            ops.wait_operation(grpc(
                t,
                WaitOperationRequest {
                    name,
                    timeout: Some(prost_types::Duration::default()),
                },
            ))
            .await
            .map(drop),
        ),
        Call::Cancel => code(
            ops.cancel_operation(grpc(t, CancelOperationRequest { name }))
                .await
                .map(drop),
        ),
        Call::Delete => code(
            ops.delete_operation(grpc(t, DeleteOperationRequest { name }))
                .await
                .map(drop),
        ),
        Call::Create => code(
            control
                .create_operation(grpc(
                    t,
                    CreateOperationRequest {
                        parent,
                        operation_id: format!("{id}-new"),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
        ),
        Call::Update => code(
            control
                .update_operation(grpc(
                    t,
                    UpdateOperationRequest {
                        name,
                        progress_percent: Some(5),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
        ),
        Call::Complete => code(
            control
                .complete_operation(grpc(
                    t,
                    CompleteOperationRequest {
                        name,
                        result: Some(complete_operation_request::Result::Response(prost_types::Any {
                            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                            value: Vec::new(),
                        })),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
        ),
        Call::Claim => code(
            control
                .claim_operation(grpc(
                    t,
                    ClaimOperationRequest {
                        parent,
                        queue: "q".into(),
                        worker: "w".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
        ),
    }
}

fn allowed(role: &str, call: Call) -> bool {
    use Call::*;
    match role {
        "admin-a" => true,
        _ if matches!(call, Get | List | Wait) => true,
        "viewer" => false,
        "editor" => matches!(call, Cancel | Delete),
        "producer" => matches!(call, Create | Update | Complete),
        "worker" => matches!(call, Claim | Update | Complete),
        other => panic!("no role {other}"),
    }
}

#[tokio::test]
async fn every_role_may_make_exactly_its_calls_over_both_protocols() {
    let server = server().await;
    let mut n = 0;
    for role in ["viewer", "editor", "producer", "worker", "admin-a"] {
        let token = format!("{role}-secret");
        for call in CALLS {
            n += 1;
            let status = rest_call(&server, &token, call, "a", &format!("r{n}")).await;
            assert_eq!(
                status != 403,
                allowed(role, call),
                "REST: {role} {call:?} answered {status}"
            );
            assert!(status < 500 && status != 401, "REST: {role} {call:?} answered {status}");
            let code = grpc_call(&server, &token, call, "a", &format!("g{n}")).await;
            assert_eq!(
                code != tonic::Code::PermissionDenied,
                allowed(role, call),
                "gRPC: {role} {call:?} answered {code:?}"
            );
        }
    }
}

/// A caller granted everything on `projects/a` is refused everything on
/// `projects/b`, whether or not the operation exists: 403, never 404.
#[tokio::test]
async fn nothing_crosses_projects_and_refusals_do_not_reveal_existence() {
    let server = server().await;
    let mut n = 0;
    for call in CALLS {
        n += 1;
        let status = rest_call(&server, "admin-a-secret", call, "b", &format!("x{n}")).await;
        assert_eq!(status, 403, "REST {call:?} on another project");
        let code = grpc_call(&server, "admin-a-secret", call, "b", &format!("y{n}")).await;
        assert_eq!(code, tonic::Code::PermissionDenied, "gRPC {call:?} on another project");
    }
    let (exists, _) = rest(&server, Some("admin-a-secret"), "GET", "projects/b/operations/x1", None).await;
    let (missing, body) = rest(
        &server,
        Some("admin-a-secret"),
        "GET",
        "projects/b/operations/nope",
        None,
    )
    .await;
    assert_eq!((exists, missing), (403, 403));
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED", "{body}");
}

#[tokio::test]
async fn lists_and_wildcards_show_only_what_the_caller_may_see() {
    let server = server().await;
    make(&server, "a", "mine", None).await;
    make(&server, "b", "theirs", None).await;
    make(&server, "b", "shared", None).await;
    let names = |body: &Value| -> Vec<String> {
        body["operations"]
            .as_array()
            .map(|ops| ops.iter().map(|op| op["name"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let (status, all) = rest(&server, Some("viewer-secret"), "GET", "projects/-/operations", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(names(&all), ["projects/a/operations/mine"]);
    let (_, one) = rest(&server, Some("one-op-secret"), "GET", "projects/b/operations", None).await;
    assert_eq!(
        names(&one),
        ["projects/b/operations/shared"],
        "a grant on one operation lists it alone"
    );
    let (_, root) = rest(&server, Some("root-secret"), "GET", "projects/-/operations", None).await;
    assert_eq!(names(&root).len(), 3);
    let mut ops = server.grpc().await;
    let listed = ops
        .list_operations(grpc(
            Some("viewer-secret"),
            ListOperationsRequest {
                name: "projects/-".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<&str> = listed.operations.iter().map(|op| op.name.as_str()).collect();
    assert_eq!(listed, ["projects/a/operations/mine"]);
    let (status, _) = rest(&server, Some("viewer-secret"), "GET", "operations", None).await;
    assert_eq!(status, 403, "top-level operations are under none of its grants");
}

#[tokio::test]
async fn a_worker_claims_only_what_it_may_see() {
    let server = server().await;
    make(&server, "b", "not-yours", Some("jobs")).await;
    make(&server, "a", "yours", Some("jobs")).await;
    let (status, claimed) = rest(
        &server,
        Some("worker-secret"),
        "POST",
        "operations:claim",
        Some(json!({"queue": "jobs", "worker": "w"})),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["operation"]["name"], "projects/a/operations/yours");
    let (_, again) = rest(
        &server,
        Some("worker-secret"),
        "POST",
        "operations:claim",
        Some(json!({"queue": "jobs", "worker": "w"})),
    )
    .await;
    assert_eq!(
        again,
        json!({}),
        "projects/b's operation stays queued for its own workers"
    );
}

#[tokio::test]
async fn batch_completions_are_authorized_per_operation() {
    let server = server().await;
    make(&server, "a", "mine", Some("jobs")).await;
    let (_, claimed) = rest(
        &server,
        Some("worker-secret"),
        "POST",
        "projects/a/operations:claim",
        Some(json!({"queue": "jobs", "worker": "w", "maxOperations": 5})),
    )
    .await;
    let token = claimed["claims"][0]["leaseToken"].clone();
    // Nothing under the parent is the viewer's to complete: the call is refused.
    let (status, refused) = rest(
        &server,
        Some("viewer-secret"),
        "POST",
        "projects/a/operations:batchComplete",
        Some(json!({"requests": [{"name": "projects/a/operations/mine", "leaseToken": token, "response": {}}]})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    // The root's grants reach the parent, but the worker's reach only
    // projects/a: an item elsewhere is refused, its own lands.
    let (status, answer) = rest(
        &server,
        Some("worker-secret"),
        "POST",
        "operations:batchComplete",
        Some(json!({"requests": [
            {"name": "projects/b/operations/elsewhere", "response": {}},
            {"name": "projects/a/operations/mine", "leaseToken": token, "response": {}},
        ]})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["error"]["code"], 7, "{answer}");
    assert_eq!(answer["results"][1]["operation"]["done"], true, "{answer}");
}

#[tokio::test]
async fn missing_and_bad_tokens_are_unauthenticated_on_both_protocols() {
    let server = server().await;
    for token in [None, Some("wrong")] {
        let (status, body) = rest(&server, token, "GET", "projects/a/operations", None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        let mut ops = server.grpc().await;
        let refused = ops
            .get_operation(grpc(
                token,
                GetOperationRequest {
                    name: "projects/a/operations/x".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
    let response = server
        .http
        .get(format!("{}/v1/projects/a/operations", server.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"longrun\"",
        "REST says how to authenticate"
    );
    let metrics = server
        .http
        .get(format!("{}/metrics", server.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 401, "metrics need a token");
    let health = server
        .http
        .get(format!("{}/healthz", server.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "health checks do not");
}

/// A watch stream shows only what its caller may list, in the snapshot and
/// in every change after it.
#[tokio::test]
async fn watches_show_only_what_the_caller_may_see() {
    let server = server().await;
    make(&server, "a", "mine", None).await;
    make(&server, "b", "theirs", None).await;
    let open = |token: &'static str, path: &'static str| {
        let request = server
            .http
            .get(format!("{}/v1/{path}", server.endpoint))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let mut response = open("viewer-secret", "projects/-/operations:watch").await;
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    let mut take_until = async |response: &mut reqwest::Response, marker: &str| {
        while !seen.contains(marker) {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), response.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    take_until(&mut response, "event: synced").await;
    make(&server, "b", "theirs-later", None).await;
    make(&server, "a", "mine-later", None).await;
    take_until(&mut response, "mine-later").await;
    assert!(seen.contains("projects/a/operations/mine\""), "{seen}");
    assert!(!seen.contains("projects/b/"), "nothing of project b: {seen}");

    assert_eq!(open("viewer-secret", "projects/b/operations:watch").await.status(), 403);
    assert_eq!(open("wrong-secret", "projects/a/operations:watch").await.status(), 401);
}
