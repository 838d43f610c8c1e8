//! schemathesis (from PyPI) against `/openapi.json`: thousands of requests
//! generated from the document, valid and not, and not one server error.
//! A fixed seed keeps CI repeatable; `tests/schemathesis/run.sh` explores
//! with fresh seeds and more examples.

use std::process::Command;

use crate::support::{Server, venv, workspace_root};

#[test]
fn generated_requests_never_cause_a_server_error() {
    let root = workspace_root();
    let venv = venv(&root, "tests/schemathesis/requirements.txt", "target/schemathesis-venv");
    // Long-polls end at once, so generated Waits and Claims do not stall it.
    let server = Server::start(&["--max-wait", "0s"]);
    let output = Command::new(venv.join("bin/schemathesis"))
        .args(["run", &format!("{}/openapi.json", server.endpoint)])
        .args([
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "20261124",
        ])
        .args(["--no-color", "--workers", "1"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "schemathesis found server errors:\n{report}");
    assert!(report.contains("passed"), "{report}");
}
