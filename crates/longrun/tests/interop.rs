//! Google's real clients against the real server: google-api-core (REST and
//! gRPC), google-api-python-client from the discovery document, and raw
//! gRPC. The Python suite lives in `tests/interop/`; this test prepares a
//! venv from PyPI (cached in `target/interop-venv`, keyed by the
//! requirements), generates Python modules from `proto/`, starts the server
//! binary and runs pytest against it.

use std::process::Command;

use crate::support::{Server, run, venv, workspace_root};

#[test]
fn google_clients_drive_the_real_server() {
    interop(Server::start);
}

/// The same suite against a node on PostgreSQL.
#[test]
fn google_clients_drive_a_postgres_node() {
    let database = longrun_store_postgres::testing::TestDatabase::create();
    interop(|extra| Server::start_on(&database.url, extra));
}

/// Runs the Python suite against the server `start` starts with the given
/// extra arguments.
fn interop(start: impl FnOnce(&[&str]) -> Server) {
    let root = workspace_root();
    let venv = venv(&root, "tests/interop/requirements.txt", "target/interop-venv");
    let python = venv.join("bin/python");
    let generated = tempfile::tempdir().unwrap();
    run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .arg(root.join("proto/longrun/v1/metadata.proto"))
        .arg(root.join("proto/longrun/v1/control.proto")));
    // A producer's own types: Python modules for the clients, a descriptor
    // set for the server.
    let types = generated.path().join("example-types.pb");
    run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("tests/interop/protos"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", types.display()))
        .arg(root.join("tests/interop/protos/example/imports/v1/imports.proto")));
    let server = start(&["--max-wait", "30s", "--descriptors", types.to_str().unwrap()]);
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/interop"])
        .current_dir(&root)
        .env("LONGRUN_ENDPOINT", &server.endpoint)
        .env("LONGRUN_PROTO_PY", generated.path())
        .env("LONGRUN_EXAMPLE_TYPES", "1")
        .status()
        .unwrap();
    assert!(status.success(), "the interop suite failed against {}", server.endpoint);
}
