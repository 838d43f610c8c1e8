//! `longrun worker --queue Q -- COMMAND...`: a generic worker. For each
//! claimed operation it runs COMMAND with the input JSON on stdin.
//!
//! - stdout lines `progress: N [detail]` become heartbeats with progress;
//!   heartbeats also run every third of the lease.
//! - exit 0: the response is the last stdout line that is a JSON object, or
//!   `{"stdout": ...}`; non-zero: an error with the tail of stderr, retryable
//!   when the exit code is 75 (`EX_TEMPFAIL`).
//! - the command runs in a process group of its own, and every signal goes
//!   to the whole group: a shell pipeline's children stop with it, and none
//!   outlives its job.
//! - cancellation: SIGTERM, then SIGKILL after `--kill-grace`, then the
//!   operation completes with code 1 as soon as the command is gone.
//! - the operation deleted or the lease lost: the command is killed and
//!   nothing is reported.
//! - SIGTERM/Ctrl-C to the worker: stop claiming, stop commands in flight
//!   and release their operations back to the queue (no attempt spent).

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::cli::{LogFormat, WorkerArgs};
use longrun_client::{Claim, ClaimRequest, Client, CompleteRequest, Error, Status, UpdateRequest, duration_json};
use longrun_types::Code;

/// How long one claim long-polls before asking again.
const CLAIM_WAIT: Duration = Duration::from_secs(30);
/// Pause after a failed claim (server down) before trying again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long output is still read after the command exits.
const DRAIN: Duration = Duration::from_secs(2);
/// The exit code that asks for another attempt (sysexits.h `EX_TEMPFAIL`).
const EXIT_TEMPFAIL: i32 = 75;
/// Kept of a command's stdout (for the response) and stderr (for errors).
const STDOUT_LIMIT: usize = 1 << 20;
const STDERR_TAIL: usize = 4096;

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let _log = crate::serve::init_logging(LogFormat::Text);
    let client = Client::new(&args.endpoint, args.token.clone())?;
    let name = args.name.clone().unwrap_or_else(default_name);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        crate::serve::shutdown_signal().await;
        tracing::info!("stopping: no new claims; handing back operations in flight");
        let _ = stop_tx.send(true);
    });
    tracing::info!(queue = %args.queue, parent = %args.parent, worker = %name, command = ?args.command, "worker started");
    let args = std::sync::Arc::new(args);
    let slots: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| tokio::spawn(slot(client.clone(), args.clone(), name.clone(), stop.clone())))
        .collect();
    for slot in slots {
        slot.await.context("a worker slot failed")?;
    }
    Ok(())
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Claims and runs operations one at a time until stopped.
async fn slot(client: Client, args: std::sync::Arc<WorkerArgs>, name: String, mut stop: watch::Receiver<bool>) {
    let request = ClaimRequest {
        queue: args.queue.clone(),
        worker: name,
        lease_duration: Some(duration_json(args.lease)),
        wait: Some(duration_json(CLAIM_WAIT)),
    };
    while !*stop.borrow() {
        let claimed = tokio::select! {
            claimed = client.claim(&args.parent, &request) => claimed,
            _ = stop.changed() => return,
        };
        match claimed {
            Ok(Some(claim)) => {
                Job {
                    client: &client,
                    args: &args,
                    claim,
                }
                .run(&mut stop)
                .await
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "claim failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

struct Job<'a> {
    client: &'a Client,
    args: &'a WorkerArgs,
    claim: Claim,
}

/// Why a command stopped before it finished on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    Cancelled,
    /// Deleted, or the lease went to someone else: report nothing.
    Abandoned,
    Shutdown,
}

impl Job<'_> {
    async fn run(self, stop: &mut watch::Receiver<bool>) {
        let name = self.claim.operation.name.clone();
        let span = tracing::info_span!("job", op.name = %name, attempt = self.claim.attempt);
        let _entered = span.enter();
        tracing::info!("running");
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(err) => {
                let status = Status {
                    code: Code::FailedPrecondition.as_i32(),
                    message: format!("cannot start the worker's command: {err:#}"),
                    details: vec![],
                };
                self.finish(CompleteRequest {
                    error: Some(status),
                    ..self.completion()
                })
                .await;
                return;
            }
        };
        let (result, stdout, stderr) = self.supervise(&mut child, stop).await;
        let request = match result {
            Err(Interrupt::Abandoned) => return,
            Err(Interrupt::Cancelled) => CompleteRequest {
                error: Some(Status {
                    code: Code::Cancelled.as_i32(),
                    message: "cancelled at the caller's request".into(),
                    details: vec![],
                }),
                ..self.completion()
            },
            Err(Interrupt::Shutdown) => {
                match self
                    .client
                    .release(&self.claim.operation.name, &self.claim.lease_token)
                    .await
                {
                    Ok(_) => tracing::info!("handed back to the queue"),
                    Err(err) => tracing::warn!(error = %err, "cannot hand the operation back; its lease will expire"),
                }
                return;
            }
            Ok(status) if status.success() => CompleteRequest {
                response: Some(response(&stdout)),
                ..self.completion()
            },
            Ok(status) => CompleteRequest {
                error: Some(Status {
                    code: Code::Unknown.as_i32(),
                    message: format!("the command failed ({status}): {}", tail(&stderr)),
                    details: vec![],
                }),
                retryable: status.code() == Some(EXIT_TEMPFAIL),
                ..self.completion()
            },
        };
        self.finish(request).await;
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let (program, arguments) = self.args.command.split_first().context("no command given")?;
        let mut child = Command::new(program)
            .args(arguments)
            .env("LONGRUN_OPERATION", &self.claim.operation.name)
            .env("LONGRUN_ATTEMPT", self.claim.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that signals reach its children.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {program:?}"))?;
        let input = input_json(self.claim.input.as_ref());
        if let Some(mut stdin) = child.stdin.take() {
            // Written concurrently so a command that ignores stdin cannot block us.
            tokio::spawn(async move {
                let _ = stdin.write_all(input.as_bytes()).await;
                let _ = stdin.write_all(b"\n").await;
            });
        }
        Ok(child)
    }

    /// Runs the command to its end, heartbeating and relaying progress;
    /// returns how it ended with its stdout (progress lines removed) and stderr.
    async fn supervise(
        &self,
        child: &mut Child,
        stop: &mut watch::Receiver<bool>,
    ) -> (Result<ExitStatus, Interrupt>, String, String) {
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(nix::unistd::Pid::from_raw);
        let stdout = child.stdout.take().map(BufReader::new);
        let mut lines = stdout.map(|reader| reader.lines());
        let mut stderr = child.stderr.take();
        let stderr_task = tokio::spawn(async move {
            let mut text = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_end(&mut text).await;
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        let mut output = String::new();
        let mut heartbeat = tokio::time::interval(self.args.lease / 3);
        heartbeat.tick().await;
        let mut interrupt: Option<Interrupt> = None;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let status = loop {
            tokio::select! {
                line = async { match lines.as_mut() { Some(lines) => lines.next_line().await, None => std::future::pending().await } } => {
                    match line {
                        Ok(Some(line)) => self.take_line(line, &mut output, child, &mut interrupt, &mut kill_at).await,
                        _ => lines = None,
                    }
                }
                _ = heartbeat.tick() => self.beat(self.lease(), child, &mut interrupt, &mut kill_at).await,
                status = child.wait() => break status,
                () = async { match kill_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    tracing::warn!("the command ignored SIGTERM; killing it");
                    kill(child);
                    kill_at = None;
                }
                _ = stop.changed(), if interrupt.is_none() => {
                    interrupt = Some(Interrupt::Shutdown);
                    kill_at = Some(terminate(child, self.args.kill_grace));
                }
            }
        };
        // Whatever the command left behind in its group goes with it (the
        // group keeps the command's pid, which `child` forgets once reaped).
        if let Some(group) = group {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        // The command may exit before we have read all it wrote: drain the
        // pipe before judging its output, but not forever (something outside
        // the group may still hold it).
        if let Some(lines) = lines.as_mut() {
            let drain = async {
                while let Ok(Some(line)) = lines.next_line().await {
                    self.take_line(line, &mut output, child, &mut interrupt, &mut kill_at)
                        .await;
                }
            };
            let _ = tokio::time::timeout(DRAIN, drain).await;
        }
        let stderr = tokio::time::timeout(DRAIN, stderr_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        match (interrupt, status) {
            (Some(interrupt), _) => (Err(interrupt), output, stderr),
            (None, Ok(status)) => (Ok(status), output, stderr),
            (None, Err(err)) => (
                Ok(failed_wait(&err)),
                output,
                format!("{stderr}\nwaiting for the command failed: {err}"),
            ),
        }
    }

    /// A line of the command's stdout: progress is reported at once, the
    /// rest kept (up to a limit) for the response.
    async fn take_line(
        &self,
        line: String,
        output: &mut String,
        child: &mut Child,
        interrupt: &mut Option<Interrupt>,
        kill_at: &mut Option<tokio::time::Instant>,
    ) {
        match parse_progress(&line) {
            Some((percent, detail)) => {
                let request = UpdateRequest {
                    progress_percent: Some(percent),
                    status_detail: detail,
                    ..self.lease()
                };
                self.beat(request, child, interrupt, kill_at).await;
            }
            None if output.len() < STDOUT_LIMIT => {
                output.push_str(&line);
                output.push('\n');
            }
            None => {}
        }
    }

    /// Sends a heartbeat and acts on its answer.
    async fn beat(
        &self,
        request: UpdateRequest,
        child: &mut Child,
        interrupt: &mut Option<Interrupt>,
        kill_at: &mut Option<tokio::time::Instant>,
    ) {
        let name = &self.claim.operation.name;
        match self.client.update(name, &request).await {
            Ok(answer) if answer.cancel_requested && interrupt.is_none() => {
                tracing::info!("cancellation requested; stopping the command");
                *interrupt = Some(Interrupt::Cancelled);
                *kill_at = Some(terminate(child, self.args.kill_grace));
            }
            Ok(_) => {}
            Err(Error::Api {
                code: Code::NotFound | Code::Aborted | Code::FailedPrecondition,
                message,
                ..
            }) => {
                tracing::warn!(%message, "the operation is gone or no longer ours; abandoning it");
                *interrupt = Some(Interrupt::Abandoned);
                kill(child);
            }
            Err(err) => tracing::warn!(error = %err, "heartbeat failed; will retry"),
        }
    }

    fn lease(&self) -> UpdateRequest {
        UpdateRequest {
            lease_token: Some(self.claim.lease_token.clone()),
            ..UpdateRequest::default()
        }
    }

    fn completion(&self) -> CompleteRequest {
        CompleteRequest {
            lease_token: Some(self.claim.lease_token.clone()),
            ..CompleteRequest::default()
        }
    }

    async fn finish(&self, request: CompleteRequest) {
        match self.client.complete(&self.claim.operation.name, &request).await {
            Ok(operation) if operation.done => tracing::info!(failed = operation.error.is_some(), "completed"),
            Ok(_) => tracing::info!("handed back for another attempt"),
            Err(err) => tracing::warn!(error = %err, "cannot report the outcome"),
        }
    }
}

/// SIGTERM to the command's group now; returns when to SIGKILL it.
fn terminate(child: &Child, grace: Duration) -> tokio::time::Instant {
    signal_group(child, nix::sys::signal::Signal::SIGTERM);
    tokio::time::Instant::now() + grace
}

/// SIGKILL to the command and its group.
fn kill(child: &mut Child) {
    signal_group(child, nix::sys::signal::Signal::SIGKILL);
    let _ = child.start_kill();
}

/// Sends `signal` to the command's process group (its pid: it leads it).
fn signal_group(child: &Child, signal: nix::sys::signal::Signal) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

fn failed_wait(_err: &std::io::Error) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    ExitStatus::from_raw(1 << 8)
}

/// `progress: N [detail]`, N from 0 to 100.
fn parse_progress(line: &str) -> Option<(i32, Option<String>)> {
    let rest = line.strip_prefix("progress:")?.trim_start();
    let (number, detail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let percent = number.trim_end_matches('%').parse::<i32>().ok()?.clamp(0, 100);
    let detail = detail.trim();
    Some((percent, (!detail.is_empty()).then(|| detail.to_owned())))
}

/// The input as the command sees it: the JSON value that was submitted
/// (untyped JSON is stored as a `Struct`, `Value` or `ListValue`, which
/// come unwrapped), or the typed JSON with its `@type`.
fn input_json(input: Option<&Value>) -> String {
    const UNTYPED: [&str; 3] = [
        "type.googleapis.com/google.protobuf.Struct",
        "type.googleapis.com/google.protobuf.Value",
        "type.googleapis.com/google.protobuf.ListValue",
    ];
    let Some(input) = input else { return "null".into() };
    let untyped = input
        .get("@type")
        .and_then(Value::as_str)
        .is_some_and(|type_url| UNTYPED.contains(&type_url));
    match input.get("value") {
        Some(value) if untyped => value.to_string(),
        _ => input.to_string(),
    }
}

/// The last stdout line that is a JSON object, else all of stdout.
fn response(stdout: &str) -> Value {
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok().filter(Value::is_object))
        .unwrap_or_else(|| json!({ "stdout": stdout }))
}

fn tail(text: &str) -> &str {
    let text = text.trim_end();
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("progress: 40 reading rows"),
            Some((40, Some("reading rows".into())))
        );
        assert_eq!(parse_progress("progress:100%"), Some((100, None)));
        assert_eq!(parse_progress("progress: 250"), Some((100, None)));
        assert_eq!(parse_progress("progress: lots"), None);
        assert_eq!(parse_progress("no progress: 5"), None);
    }

    #[test]
    fn responses_and_inputs() {
        assert_eq!(response("log line\n{\"rows\": 3}\n"), json!({"rows": 3}));
        assert_eq!(response("plain\n"), json!({"stdout": "plain\n"}));
        let input = json!({"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"path": "a.csv", "n": 1}});
        assert_eq!(input_json(Some(&input)), r#"{"path":"a.csv","n":1}"#);
        let list = json!({"@type": "type.googleapis.com/google.protobuf.Value", "value": [1, 2, 3]});
        assert_eq!(input_json(Some(&list)), "[1,2,3]");
        assert_eq!(input_json(None), "null");
        assert_eq!(tail("  x\n"), "  x");
    }
}
