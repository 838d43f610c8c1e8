//! `longrun worker -- COMMAND`: a real worker process running shell commands
//! against a real server.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, binary, call};

/// A `longrun worker` process, killed on drop.
struct Worker(Child);

impl Worker {
    fn start(server: &Server, queue: &str, script: &str) -> Self {
        let child = Command::new(binary())
            .args([
                "worker",
                "--endpoint",
                &server.endpoint,
                "--queue",
                queue,
                "--lease",
                "3s",
                "--kill-grace",
                "2s",
            ])
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("LONGRUN_TEST_SERVER_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn create(server: &Server, id: &str, body: Value) {
    let mut request = json!({"operationId": id});
    request
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    let (status, created) = call(&server.endpoint, "POST", "/v1/projects/wk/operations", Some(&request));
    assert_eq!(status, 200, "{created}");
}

/// Polls until the operation satisfies `until`, for at most 15 s.
fn await_op(server: &Server, id: &str, until: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, op) = call(
            &server.endpoint,
            "GET",
            &format!("/v1/projects/wk/operations/{id}"),
            None,
        );
        if until(&op) {
            return op;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "gave up waiting on {id}: {op}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn done(op: &Value) -> bool {
    op["done"] == true
}

#[test]
fn runs_a_shell_command_per_operation() {
    let server = Server::start(&[]);
    create(&server, "two", json!({"queue": "sh", "input": {"n": 2}}));
    create(&server, "five", json!({"queue": "sh", "input": {"n": 5}}));
    let _worker = Worker::start(
        &server,
        "sh",
        r#"read input; echo "progress: 50 halfway"; echo "op=$LONGRUN_OPERATION"; echo "{\"got\": $input}""#,
    );
    for (id, n) in [("two", 2), ("five", 5)] {
        let op = await_op(&server, id, done);
        assert_eq!(op["response"]["value"]["got"]["n"], f64::from(n), "{op}");
        assert_eq!(op["metadata"]["progressPercent"], 50);
        assert_eq!(op["metadata"]["statusDetail"], "halfway");
    }
}

#[test]
fn a_failing_command_fails_the_operation_with_its_stderr() {
    let server = Server::start(&[]);
    create(&server, "bad", json!({"queue": "fail"}));
    let _worker = Worker::start(&server, "fail", "echo 'disk on fire' >&2; exit 3");
    let op = await_op(&server, "bad", done);
    assert_eq!(op["error"]["code"], 2);
    assert!(
        op["error"]["message"].as_str().unwrap().contains("disk on fire"),
        "{op}"
    );
}

#[test]
fn exit_75_is_retried_until_attempts_run_out() {
    let server = Server::start(&[]);
    create(&server, "flaky", json!({"queue": "tempfail", "maxAttempts": 2}));
    let _worker = Worker::start(&server, "tempfail", "echo 'try later' >&2; exit 75");
    let op = await_op(&server, "flaky", done);
    assert_eq!(
        op["metadata"]["attempt"], 2,
        "re-queued once, then out of attempts: {op}"
    );
    assert_eq!(op["metadata"]["state"], "FAILED");
}

#[test]
fn cancellation_stops_the_command() {
    let server = Server::start(&[]);
    create(&server, "long", json!({"queue": "slow"}));
    let _worker = Worker::start(&server, "slow", "exec sleep 60");
    await_op(&server, "long", |op| op["metadata"]["state"] == "RUNNING");
    let (status, _) = call(&server.endpoint, "POST", "/v1/projects/wk/operations/long:cancel", None);
    assert_eq!(status, 200);
    let started = Instant::now();
    let op = await_op(&server, "long", done);
    assert_eq!(
        (op["error"]["code"].as_i64(), op["metadata"]["state"].as_str()),
        (Some(1), Some("CANCELLED"))
    );
    // Heartbeats come every lease/3 = 1 s; SIGTERM ends `sleep` at once.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
