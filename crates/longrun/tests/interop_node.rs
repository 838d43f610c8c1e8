//! Google's Node client against the real server: google-gax's Operations
//! client over gRPC and over REST (its "fallback" transport, with longrun's
//! types from `node/` added to its proto root), and gax's own LRO poller.
//! The suite lives in `tests/interop-node/`; this test installs it from npm
//! (`npm ci`, redone only when the lockfile changes), starts the server
//! binary and runs `node --test` against it.

use std::process::Command;

use serde_json::json;

use crate::support::{Server, call, npm_suite, workspace_root};

#[test]
fn google_gax_drives_the_real_server() {
    let suite = npm_suite("tests/interop-node");
    let server = Server::start(&[]);
    let status = Command::new("node")
        .arg("--test")
        .current_dir(&suite)
        .env("LONGRUN_ENDPOINT", &server.endpoint)
        .status()
        .unwrap_or_else(|err| panic!("cannot run node (Node.js 20 or later is needed): {err}"));
    assert!(
        status.success(),
        "the Node interop suite failed against {}",
        server.endpoint
    );
}

/// The README's Node recipes, as written but for the port, on the tour's
/// first operation.
#[test]
fn the_readme_recipes_run_as_written() {
    let suite = npm_suite("tests/interop-node");
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split_once("## Using Google's Node client")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .map(|(section, _)| section)
        .expect("the README has a Node section");
    let recipes: Vec<&str> = section
        .split("```js\n")
        .skip(1)
        .map(|block| block.split_once("```").unwrap().0)
        .collect();
    assert_eq!(recipes.len(), 2, "{recipes:?}");

    let server = Server::start(&[]);
    let parent = "/v1/projects/demo/locations/us/operations";
    let (status, body) = call(
        &server.endpoint,
        "POST",
        parent,
        Some(&json!({"operationId": "import-1"})),
    );
    assert_eq!(status, 200, "{body}");
    let done = json!({"response": {"rows": 3}});
    let (status, body) = call(
        &server.endpoint,
        "POST",
        &format!("{parent}/import-1:complete"),
        Some(&done),
    );
    assert_eq!(status, 200, "{body}");
    let port = server.endpoint.rsplit_once(':').unwrap().1;
    let printed: Vec<String> = recipes
        .iter()
        .map(|recipe| {
            let output = Command::new("node")
                .args(["-e", &recipe.replace("port: 8080", &format!("port: {port}"))])
                .current_dir(&suite)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            assert!(
                output.status.success(),
                "{recipe}\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        })
        .collect();
    assert_eq!(printed, ["true type.googleapis.com/google.protobuf.Struct", "true 3"]);
}
