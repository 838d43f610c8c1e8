//! The CLI as a user runs it, against a real server.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Server, call};

fn json(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn create_list_describe_and_delete() {
    let server = Server::start(&[]);
    let created = json(&server.cli(&[
        "create",
        "projects/p/locations/l",
        "--queue",
        "imports",
        "--input",
        r#"{"path": "a.csv"}"#,
        "--verb",
        "import",
        "--operation-id",
        "op-1",
    ]));
    assert_eq!(created["name"], "projects/p/locations/l/operations/op-1");
    assert_eq!(created["metadata"]["state"], "QUEUED");
    let table = server.cli(&["list", "projects/p/locations/l"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("projects/p/locations/l/operations/op-1") && text.contains("QUEUED"),
        "{text}"
    );
    let listed = json(&server.cli(&[
        "list",
        "projects/p/locations/l",
        "--format",
        "json",
        "--filter",
        "done = false",
    ]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let described = json(&server.cli(&["describe", "projects/p/locations/l/operations/op-1"]));
    assert_eq!(described["metadata"]["verb"], "import");
    assert!(
        server
            .cli(&["delete", "projects/p/locations/l/operations/op-1"])
            .status
            .success()
    );
    let missing = server.cli(&["describe", "projects/p/locations/l/operations/op-1"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NOT_FOUND"));
}

#[test]
fn list_pages_transparently_up_to_the_limit() {
    let server = Server::start(&[]);
    for i in 0..7 {
        json(&server.cli(&["create", "projects/paging", "--operation-id", &format!("op{i}")]));
    }
    let all = json(&server.cli(&["list", "projects/paging", "--format", "json", "--page-size", "2"]));
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 7);
    assert_eq!(names[0], "projects/paging/operations/op6", "newest first");
    let limited = json(&server.cli(&[
        "list",
        "projects/paging",
        "--format",
        "json",
        "--page-size",
        "2",
        "--limit",
        "3",
    ]));
    assert_eq!(limited.as_array().unwrap().len(), 3);
}

#[test]
fn wait_exits_0_on_success_and_1_on_failure() {
    let server = Server::start(&[]);
    json(&server.cli(&["create", "projects/w", "--operation-id", "good"]));
    json(&server.cli(&["create", "projects/w", "--operation-id", "bad"]));
    let endpoint = server.endpoint.clone();
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        call(
            &endpoint,
            "POST",
            "/v1/projects/w/operations/good:complete",
            Some(&serde_json::json!({"response": {"rows": 3}})),
        );
        call(
            &endpoint,
            "POST",
            "/v1/projects/w/operations/bad:complete",
            Some(&serde_json::json!({"error": {"code": 9, "message": "disk full"}})),
        );
    });
    let good = server.cli(&["wait", "projects/w/operations/good", "--timeout", "20s"]);
    finisher.join().unwrap();
    assert_eq!(json(&good)["response"]["value"]["rows"], 3.0);
    let bad = server.cli(&["wait", "projects/w/operations/bad", "--timeout", "20s"]);
    assert_eq!(bad.status.code(), Some(1), "a failed operation exits 1");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("disk full"));
    json(&server.cli(&["create", "projects/w", "--operation-id", "slow"]));
    let timed_out = server.cli(&["wait", "projects/w/operations/slow", "--timeout", "1s"]);
    assert_eq!(timed_out.status.code(), Some(2), "still running at the timeout");
}

#[test]
fn cancel_of_a_queued_operation_ends_it() {
    let server = Server::start(&[]);
    json(&server.cli(&["create", "projects/c", "--queue", "q", "--operation-id", "x"]));
    assert!(server.cli(&["cancel", "projects/c/operations/x"]).status.success());
    let op = json(&server.cli(&["describe", "projects/c/operations/x"]));
    assert_eq!(op["done"], true);
    assert_eq!(op["error"]["code"], 1);
    assert_eq!(op["metadata"]["state"], "CANCELLED");
}

#[test]
fn bad_usage_exits_2() {
    let server = Server::start(&[]);
    let output = server.cli(&["describe", "not a name"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an operation name"));
    // Shaped like a name, refused by the server.
    let output = server.cli(&["describe", "projects/p/operations/not a name"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("INVALID_ARGUMENT"));
    let unknown = std::process::Command::new(crate::support::binary())
        .args(["operations", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn sigterm_stops_the_server_promptly() {
    let server = Server::start(&[]);
    json(&server.cli(&["create", "projects/s", "--operation-id", "pending"]));
    // A waiter blocked on the server must not hold up shutdown.
    let endpoint = server.endpoint.clone();
    let waiter = std::thread::spawn(move || {
        call(
            &endpoint,
            "POST",
            "/v1/projects/s/operations/pending:wait?timeout=50s",
            Some(&serde_json::json!({})),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let (elapsed, status) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let (status, answer) = waiter.join().unwrap();
    assert_eq!(
        (status, answer["name"].as_str()),
        (200, Some("projects/s/operations/pending")),
        "the waiter got the latest state"
    );
}

#[test]
fn refuses_non_loopback_without_auth() {
    let output = std::process::Command::new(crate::support::binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--store", "sqlite::memory:"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-unauthenticated"));
}

/// Runs `longrun --config FILE args...` with `LONGRUN_ENDPOINT` set or removed.
fn with_config(config: &std::path::Path, endpoint_env: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(crate::support::binary());
    command.arg("--config").arg(config).args(args);
    match endpoint_env {
        Some(endpoint) => command.env("LONGRUN_ENDPOINT", endpoint),
        None => command.env_remove("LONGRUN_ENDPOINT"),
    };
    command.output().unwrap()
}

#[test]
fn config_file_and_env_set_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("longrun.toml");
    std::fs::write(&config, "endpoint = \"http://127.0.0.1:1\"\n").unwrap();
    let describe = ["operations", "describe", "operations/x"];
    let stderr = |output: std::process::Output| String::from_utf8_lossy(&output.stderr).into_owned();
    // The config file's endpoint is used...
    let from_file = stderr(with_config(&config, None, &describe));
    assert!(from_file.contains("127.0.0.1:1"), "{from_file}");
    // ...unless the environment says otherwise.
    let from_env = stderr(with_config(&config, Some("http://127.0.0.1:2"), &describe));
    assert!(from_env.contains("127.0.0.1:2"), "{from_env}");
    std::fs::write(&config, "no-such-flag = 1\n").unwrap();
    let output = with_config(&config, None, &["operations", "list"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown key"));
}

/// A server with `--tls-cert`: the CLI reaches it over `https://`, trusting
/// the certificate through `SSL_CERT_FILE`, and refuses it otherwise.
#[test]
fn the_cli_speaks_https_to_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let endpoint = server.endpoint.replace("http://", "https://");
    let cli = |trust: Option<&std::path::Path>, args: &[&str]| {
        let mut command = std::process::Command::new(crate::support::binary());
        command.args(["operations", "--endpoint", &endpoint]).args(args);
        command.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        if let Some(trust) = trust {
            command.env("SSL_CERT_FILE", trust);
        }
        command.output().unwrap()
    };
    let created = json(&cli(Some(&cert), &["create", "projects/p", "--operation-id", "tls-1"]));
    assert_eq!(created["name"], "projects/p/operations/tls-1");

    let refused = cli(None, &["describe", "projects/p/operations/tls-1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

/// An operation whose producer supplies its own metadata type still shows
/// its standard state, progress and verb in `list`, `describe --format
/// table` and `wait`, while JSON output stays exactly Google's Operation.
#[test]
fn custom_metadata_operations_show_their_standard_state() {
    let server = Server::start(&[]);
    let name = "projects/custom/operations/c-1";
    json(&server.cli(&[
        "create",
        "projects/custom",
        "--queue",
        "q",
        "--operation-id",
        "c-1",
        "--verb",
        "import",
        "--metadata",
        r#"{"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"rows": 3}}"#,
    ]));
    let (status, claimed) = call(
        &server.endpoint,
        "POST",
        "/v1/projects/custom/operations:claim",
        Some(&serde_json::json!({"queue": "q"})),
    );
    assert_eq!(status, 200, "{claimed}");
    let lease = claimed["leaseToken"].as_str().unwrap().to_owned();
    let updated = json(&server.cli(&[
        "update",
        name,
        "--progress",
        "40",
        "--detail",
        "reading rows",
        "--lease-token",
        &lease,
    ]));
    assert_eq!(updated["cancelRequested"], false);

    let table = server.cli(&["list", "projects/custom"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("RUNNING") && text.contains("40%") && text.contains("import"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no colours when stdout is not a terminal: {text:?}"
    );
    let details = server.cli(&["get", name, "--format", "table"]);
    let text = String::from_utf8_lossy(&details.stdout);
    assert!(text.contains("reading rows") && text.contains("40%"), "{text}");
    let described = json(&server.cli(&["get", name]));
    assert_eq!(
        described["metadata"]["@type"], "type.googleapis.com/google.protobuf.Struct",
        "JSON is the producer's Operation, untouched"
    );
    assert!(described.get("standard").is_none(), "{described}");

    // `wait` says what it waits for and, off a terminal, prints progress
    // lines; completing through the CLI ends it.
    let endpoint = server.endpoint.clone();
    let waiter = std::thread::spawn(move || {
        std::process::Command::new(crate::support::binary())
            .args(["operations", "--endpoint", &endpoint, "wait", name, "--timeout", "30s"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    json(&server.cli(&[
        "complete",
        name,
        "--response",
        r#"{"rows": 3}"#,
        "--lease-token",
        &lease,
    ]));
    let waited = waiter.join().unwrap();
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("waiting for {name} (import)")), "{stderr}");
    assert!(
        stderr.contains(&format!("{name}: RUNNING 40% reading rows")),
        "{stderr}"
    );
    let done: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(done["response"]["value"]["rows"], 3, "{done}");
}

#[test]
fn yaml_completions_and_producer_errors() {
    let server = Server::start(&[]);
    let created = server.cli(&["create", "projects/y", "--operation-id", "y-1", "--format", "yaml"]);
    let text = String::from_utf8_lossy(&created.stdout);
    assert!(text.contains("name: projects/y/operations/y-1"), "{text}");
    let failed = json(&server.cli(&[
        "complete",
        "projects/y/operations/y-1",
        "--error-code",
        "not_found",
        "--error-message",
        "no such file",
    ]));
    assert_eq!(failed["error"]["code"], 5);
    let waited = server.cli(&["wait", "projects/y/operations/y-1"]);
    assert_eq!(waited.status.code(), Some(1), "a failed operation exits 1");
    assert!(String::from_utf8_lossy(&waited.stderr).contains("no such file"));

    let completions = std::process::Command::new(crate::support::binary())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(completions.status.success());
    assert!(String::from_utf8_lossy(&completions.stdout).contains("operations"));
}

/// Names that are not operations are usage errors, not empty answers.
#[test]
fn describing_a_collection_is_a_usage_error() {
    let server = Server::start(&[]);
    for args in [
        ["describe", "projects/demo/operations"],
        ["get", "projects/demo"],
        ["cancel", "operations"],
    ] {
        let output = server.cli(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("not an operation") || stderr.contains("collection"),
            "{stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let stderr = String::from_utf8_lossy(&server.cli(&["describe", "projects/demo/operations"]).stderr).into_owned();
    assert!(stderr.contains("longrun operations list projects/demo"), "{stderr}");
}

/// `watch` off a terminal prints the snapshot, then each change, as it
/// happens; with --format json one event per line.
#[test]
fn watch_follows_changes() {
    use std::io::BufRead as _;
    let server = Server::start(&[]);
    json(&server.cli(&["create", "projects/w", "--operation-id", "old", "--queue", "q"]));
    for (format, expect_new) in [("table", "projects/w/operations/new-table QUEUED 0%"), ("json", "")] {
        let mut child = std::process::Command::new(crate::support::binary())
            .args([
                "operations",
                "--endpoint",
                &server.endpoint,
                "watch",
                "projects/w",
                "--format",
                format,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || lines.next().unwrap().unwrap();
        // The snapshot (newest first), then the line that says it is complete.
        let mut snapshot = Vec::new();
        let synced = loop {
            let line = next();
            if line.contains("following changes") || line.contains(r#""event":"synced""#) {
                break line;
            }
            snapshot.push(line);
        };
        assert!(
            snapshot.last().unwrap().contains("projects/w/operations/old"),
            "{snapshot:?}"
        );
        let id = format!("new-{format}");
        json(&server.cli(&["create", "projects/w", "--operation-id", &id, "--queue", "q"]));
        let change = next();
        if format == "table" {
            assert!(synced.contains("following changes"), "{synced}");
            assert_eq!(change, expect_new);
        } else {
            assert_eq!(serde_json::from_str::<Value>(&synced).unwrap()["event"], "synced");
            let event: Value = serde_json::from_str(&change).unwrap();
            assert_eq!(event["operation"]["name"], format!("projects/w/operations/{id}"));
            assert_eq!(event["standard"]["state"], "QUEUED");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
