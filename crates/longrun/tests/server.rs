//! The server binary's own behaviour: payload types from `--descriptors`,
//! durability across restarts, and how faults are reported.

use prost::Message as _;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, field_descriptor_proto,
};
use serde_json::json;

use crate::support::{Server, call};

/// A descriptor set defining `acme.v1.ImportMetadata { string source = 1; int64 rows = 2; }`.
fn acme_descriptors(dir: &std::path::Path) -> std::path::PathBuf {
    let field = |name: &str, number: i32, kind: field_descriptor_proto::Type| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        r#type: Some(kind as i32),
        label: Some(field_descriptor_proto::Label::Optional as i32),
        json_name: Some(name.into()),
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("acme/v1/import.proto".into()),
            package: Some("acme.v1".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("ImportMetadata".into()),
                field: vec![
                    field("source", 1, field_descriptor_proto::Type::String),
                    field("rows", 2, field_descriptor_proto::Type::Int64),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let path = dir.join("acme.binpb");
    std::fs::write(&path, set.encode_to_vec()).unwrap();
    path
}

#[test]
fn descriptor_payloads_serve_and_faults_are_logged_with_a_request_id() {
    let scratch = tempfile::tempdir().unwrap();
    let descriptors = acme_descriptors(scratch.path());
    let server = Server::start(&["--descriptors", descriptors.to_str().unwrap()]);
    let metadata = json!({"@type": "type.googleapis.com/acme.v1.ImportMetadata", "source": "a.csv", "rows": "12"});
    let (status, created) = call(
        &server.endpoint,
        "POST",
        "/v1/projects/acme/operations",
        Some(&json!({"operationId": "i", "metadata": metadata})),
    );
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        created["metadata"], metadata,
        "custom metadata round-trips through proto3 JSON"
    );
    // Restart without the descriptors: the stored payload can no longer be
    // served, which must be a clean INTERNAL error, never corrupted JSON.
    let dir = server.kill().unwrap();
    let server = Server::start_in(dir, &[]);
    let (status, body) = call(&server.endpoint, "GET", "/v1/projects/acme/operations/i", None);
    assert_eq!(status, 500);
    assert_eq!(body["error"]["status"], "INTERNAL");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("acme"),
        "internals stay out of the response: {message}"
    );
    let request_id = body["error"]["details"][0]["metadata"]["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains(&request_id));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = server.log.lock().unwrap().join("\n");
    let logged = log
        .lines()
        .any(|line| line.contains(&request_id) && line.contains("acme.v1.ImportMetadata"));
    assert!(logged, "the fault is logged under its request id:\n{log}");
    // A List serves the rest of the page and names what it could not render.
    call(
        &server.endpoint,
        "POST",
        "/v1/projects/acme/operations",
        Some(&json!({"operationId": "plain"})),
    );
    let (status, page) = call(&server.endpoint, "GET", "/v1/projects/acme/operations", None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["operations"][0]["name"], "projects/acme/operations/plain",
        "{page}"
    );
    assert_eq!(page["unreachable"], json!(["projects/acme/operations/i"]), "{page}");
}

#[test]
fn acknowledged_operations_survive_kill_9() {
    let server = Server::start(&[]);
    for i in 0..20 {
        let (status, _) = call(
            &server.endpoint,
            "POST",
            "/v1/projects/k/operations",
            Some(&json!({"operationId": format!("op{i}"), "queue": "q"})),
        );
        assert_eq!(status, 200);
    }
    let dir = server.kill().unwrap();
    let server = Server::start_in(dir, &[]);
    let (status, page) = call(&server.endpoint, "GET", "/v1/projects/k/operations?pageSize=100", None);
    assert_eq!(status, 200);
    assert_eq!(page["operations"].as_array().unwrap().len(), 20);
}

#[test]
fn leases_resume_after_kill_9() {
    let server = Server::start(&[]);
    let parent = "/v1/projects/k9/operations";
    call(
        &server.endpoint,
        "POST",
        parent,
        Some(&json!({"operationId": "held", "queue": "q"})),
    );
    let (status, claimed) = call(
        &server.endpoint,
        "POST",
        &format!("{parent}:claim"),
        Some(&json!({"queue": "q", "leaseDuration": "1s"})),
    );
    assert_eq!(status, 200, "{claimed}");
    let dir = server.kill().unwrap();
    let server = Server::start_in(dir, &[]);
    // The lease survived the crash; once it lapses the operation is re-queued
    // for a new worker, and the old worker is fenced off.
    std::thread::sleep(std::time::Duration::from_millis(1800));
    let (_, op) = call(&server.endpoint, "GET", &format!("{parent}/held"), None);
    assert_eq!(
        (op["metadata"]["state"].as_str(), op["metadata"]["attempt"].as_i64()),
        (Some("QUEUED"), Some(2)),
        "{op}"
    );
    let (_, reclaimed) = call(
        &server.endpoint,
        "POST",
        &format!("{parent}:claim"),
        Some(&json!({"queue": "q"})),
    );
    assert_eq!(reclaimed["attempt"], 2);
    let stale = json!({"leaseToken": claimed["leaseToken"], "response": {}});
    let (status, _) = call(
        &server.endpoint,
        "POST",
        &format!("{parent}/held:complete"),
        Some(&stale),
    );
    assert_eq!(status, 409);
}
