//! The web console (`GET /`, SPEC §8). Its HTTP surface is checked here
//! directly; the page itself is driven in headless Chromium by the
//! Playwright suite in `tests/console/` against two real servers, one open
//! and one with `--tokens`. The suite is installed from npm (`npm ci`,
//! redone only when the lockfile changes); Chromium is Debian's, installed
//! here with apt-get when missing and running as root. Screenshots of every
//! scenario land in `target/console-screenshots/`.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Server, binary, call, npm_suite, workspace_root};

const SEEDED: &str = "/v1/projects/demo/locations/us/operations";

#[test]
fn the_console_works_in_headless_chromium() {
    let chromium = chromium();
    let suite = npm_suite("tests/console");
    // Long enough that the seeded operation asked to cancel stays
    // "cancelling…" while the suite runs.
    let open = Server::start(&["--cancel-grace", "10m"]);
    seed(&open.endpoint);

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let (admin, admin_entry) = new_token("console-admin", "*=admin");
    let (viewer, viewer_entry) = new_token("console-viewer", "projects/demo=viewer");
    std::fs::write(&tokens, format!("{admin_entry}\n{viewer_entry}\n")).unwrap();
    let secured = Server::start(&["--tokens", tokens.to_str().unwrap()]);

    let screenshots = workspace_root().join("target/console-screenshots");
    let status = Command::new("node")
        .arg("--test")
        .current_dir(&suite)
        .env("CHROMIUM", &chromium)
        .env("LONGRUN_ENDPOINT", &open.endpoint)
        .env("LONGRUN_SECURED_ENDPOINT", &secured.endpoint)
        .env("LONGRUN_ADMIN_TOKEN", &admin)
        .env("LONGRUN_VIEWER_TOKEN", &viewer)
        .env("LONGRUN_CONSOLE_SCREENSHOTS", &screenshots)
        .status()
        .unwrap_or_else(|err| panic!("cannot run node (Node.js 20 or later is needed): {err}"));
    assert!(
        status.success(),
        "the console suite failed against {} and {}; screenshots in {}",
        open.endpoint,
        secured.endpoint,
        screenshots.display()
    );
}

#[test]
fn the_console_is_served_with_a_strict_policy_and_other_paths_stay_json() {
    let server = Server::start(&[]);
    let (head, body) = get(&server.endpoint, "GET", "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(header(&head, "content-type").starts_with("text/html"), "{head}");
    let policy = header(&head, "content-security-policy");
    for directive in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert_eq!(header(&head, "x-content-type-options"), "nosniff");
    assert_eq!(header(&head, "cache-control"), "no-cache");
    assert!(body.contains("/console/console.js"), "{body}");

    let (head, _) = get(&server.endpoint, "GET", "/console/console.js");
    assert!(header(&head, "content-type").starts_with("text/javascript"), "{head}");
    let (head, _) = get(&server.endpoint, "GET", "/console/console.css");
    assert!(header(&head, "content-type").starts_with("text/css"), "{head}");
    let (head, body) = get(&server.endpoint, "HEAD", "/");
    assert!(head.starts_with("HTTP/1.1 200") && body.is_empty(), "{head}");

    // Only those three: everything else is the API's JSON NOT_FOUND.
    for (method, path) in [("GET", "/nope"), ("GET", "/console/other.js"), ("POST", "/")] {
        let (status, body) = call(&server.endpoint, method, path, None);
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["status"], "NOT_FOUND", "{method} {path}: {body}");
    }
}

/// Operations in every state under `projects/demo/locations/us`, and one
/// in another location.
fn seed(endpoint: &str) {
    let post = |path: &str, body: Value| {
        let (status, body) = call(endpoint, "POST", path, Some(&body));
        assert_eq!(status, 200, "{path}: {body}");
    };
    let create = |id: &str, extra: Value| {
        let mut body = json!({"operationId": id});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post(SEEDED, body);
    };
    let at = |id: &str, verb: &str| format!("{SEEDED}/{id}:{verb}");
    create("build-index", json!({"verb": "index", "target": "tables/events"}));
    post(&at("build-index", "update"), json!({"progressPercent": 20}));
    post(&at("build-index", "cancel"), json!({}));
    create(
        "purge-cache",
        json!({"queue": "q", "verb": "purge", "target": "caches/edge"}),
    );
    post(&at("purge-cache", "cancel"), json!({}));
    create("resize-cluster", json!({"verb": "resize", "target": "clusters/main"}));
    post(
        &at("resize-cluster", "complete"),
        json!({"error": {"code": 9, "message": "the cluster is locked"}}),
    );
    create("train-model", json!({"verb": "train", "target": "models/churn"}));
    post(&at("train-model", "complete"), json!({"response": {"accuracy": 0.93}}));
    create(
        "export-model",
        json!({"queue": "q", "verb": "export", "target": "models/churn"}),
    );
    create(
        "import-orders",
        json!({"verb": "import", "target": "datasets/orders", "metadata": {"source": "gs://bucket/orders.csv"}}),
    );
    post(
        &at("import-orders", "update"),
        json!({"progressPercent": 65, "statusDetail": "reading"}),
    );
    let (status, body) = call(
        endpoint,
        "POST",
        "/v1/projects/demo/locations/eu/operations",
        Some(&json!({"operationId": "sync-eu", "verb": "sync"})),
    );
    assert_eq!(status, 200, "{body}");
}

/// `longrun token new`: the secret and the `[[token]]` entry.
fn new_token(name: &str, grant: &str) -> (String, String) {
    let output = Command::new(binary())
        .args(["token", "new", "--name", name, "--grant", grant])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let secret = String::from_utf8(output.stderr).unwrap().trim().to_owned();
    (secret, String::from_utf8(output.stdout).unwrap())
}

/// A request without a body; the response's head and body as text.
fn get(endpoint: &str, method: &str, path: &str) -> (String, String) {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
        .unwrap_or_else(|| panic!("no {name} header in\n{head}"))
}

/// Chromium for the suite: `$CHROMIUM`, or Debian's, which is installed
/// when missing if the test runs as root (as CI does).
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.exists() {
        return path;
    }
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "the console tests drive Chromium, which is not at {}: run `apt-get install chromium` as root, \
         or set CHROMIUM to a Chromium binary",
        path.display()
    );
    // One install at a time, should several runs get here together.
    let lock = std::fs::File::create(workspace_root().join("target/console-chromium.lock")).unwrap();
    lock.lock().unwrap();
    if !path.exists() {
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .unwrap()
                .success()
        };
        // The package lists may be missing or stale on a fresh machine.
        if !apt(&["install", "-y", "-qq", "chromium"]) {
            assert!(apt(&["update", "-qq"]), "apt-get update failed");
            assert!(
                apt(&["install", "-y", "-qq", "chromium"]),
                "apt-get install chromium failed"
            );
        }
    }
    assert!(
        path.exists(),
        "apt-get installed chromium, but not at {}",
        path.display()
    );
    path
}
