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
        assert_eq!(op["response"]["value"]["got"]["n"], n, "{op}: integers stay integers");
        assert_eq!(
            op["metadata"]["progressPercent"], 100,
            "a succeeded operation is 100% done"
        );
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

/// Processes running exactly `command` (its arguments joined by spaces).
fn running(command: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            String::from_utf8_lossy(cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ")
                == command
        })
        .count()
}

/// A shell pipeline's children stop with it: the whole process group gets
/// the signals, and the operation ends as soon as it is gone.
#[test]
fn cancelling_a_pipeline_stops_its_children() {
    let server = Server::start(&[]);
    create(&server, "pipeline", json!({"queue": "pipes"}));
    let marker = format!("60.{}", std::process::id());
    let _worker = Worker::start(
        &server,
        "pipes",
        &format!("echo 'progress: 10 started'; sleep {marker}; echo '{{}}'"),
    );
    await_op(&server, "pipeline", |op| op["metadata"]["progressPercent"] == 10);
    assert_eq!(running(&format!("sleep {marker}")), 1);
    let started = Instant::now();
    call(
        &server.endpoint,
        "POST",
        "/v1/projects/wk/operations/pipeline:cancel",
        None,
    );
    let op = await_op(&server, "pipeline", done);
    assert_eq!(op["error"]["code"], 1, "{op}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        running(&format!("sleep {marker}")),
        0,
        "the pipeline's child outlived the cancel"
    );
}

/// SIGTERM to the worker hands its operations back without spending an
/// attempt.
#[test]
fn a_stopping_worker_releases_its_operations() {
    let server = Server::start(&[]);
    create(&server, "held", json!({"queue": "stop", "maxAttempts": 1}));
    let worker = Worker::start(&server, "stop", "echo 'progress: 5 started'; exec sleep 60");
    await_op(&server, "held", |op| op["metadata"]["progressPercent"] == 5);
    Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .unwrap();
    let op = await_op(&server, "held", |op| op["metadata"]["state"] == "QUEUED");
    assert_eq!(op["metadata"]["attempt"], 1, "no attempt spent: {op}");
    assert_ne!(op["done"], true);
}

/// The command reads the JSON that was submitted, integers as integers and
/// arrays as arrays.
#[test]
fn the_command_reads_the_input_as_submitted() {
    let server = Server::start(&[]);
    create(
        &server,
        "object",
        json!({"queue": "echo", "input": {"a": 1, "b": [1, 2.5]}}),
    );
    create(&server, "array", json!({"queue": "echo", "input": [1, 2, 3]}));
    let _worker = Worker::start(
        &server,
        "echo",
        r#"read input; echo "{\"raw\": \"$(echo "$input" | sed 's/"/\\"/g')\"}""#,
    );
    let raw = |id: &str| {
        await_op(&server, id, done)["response"]["value"]["raw"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(raw("object"), r#"{"a":1,"b":[1,2.5]}"#);
    assert_eq!(raw("array"), "[1,2,3]");
}
