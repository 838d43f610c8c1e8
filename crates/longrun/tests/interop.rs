//! Google's real clients against the real server: google-api-core (REST and
//! gRPC), google-api-python-client from the discovery document, and raw
//! gRPC. The Python suite lives in `tests/interop/`; this test prepares a
//! venv from PyPI (cached in `target/interop-venv`, keyed by the
//! requirements), generates Python modules from `proto/`, starts the server
//! binary and runs pytest against it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Server, workspace_root};

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A venv with `tests/interop/requirements.txt` installed.
fn venv(root: &Path) -> PathBuf {
    let requirements = root.join("tests/interop/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let venv = root.join("target/interop-venv");
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return venv;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements));
    std::fs::write(&stamp, wanted).unwrap();
    venv
}

#[test]
fn google_clients_drive_the_real_server() {
    let root = workspace_root();
    let venv = venv(&root);
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
    let server = Server::start(&["--max-wait", "30s", "--descriptors", types.to_str().unwrap()]);
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
