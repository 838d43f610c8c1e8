//! The README's snippets, run as written (only the address changed) against
//! a real server, in the order a reader meets them: the tour with curl and
//! with the CLI, a worker, Google's Python clients with `pip install
//! ./python`, and tokens. So the README cannot rot. (The PostgreSQL
//! snippet is `tests/nodes.rs`'s business, the example's `examples/datasets`';
//! the Rust and Node recipes run in `interop_rust.rs` and `interop_node.rs`.)

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{Server, binary, venv, workspace_root};

/// The fenced blocks of `lang` directly under the heading `heading` (up to
/// the next heading).
fn blocks(readme: &str, heading: &str, lang: &str) -> Vec<String> {
    let mut lines = readme.lines().skip_while(|line| line.trim() != heading).skip(1);
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in lines.by_ref() {
        let trimmed = line.trim_start();
        if current.is_none() {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            if hashes > 0 && line.chars().nth(hashes) == Some(' ') {
                break;
            }
            if trimmed == format!("```{lang}") {
                current = Some(String::new());
            }
        } else if trimmed == "```" {
            found.push(current.take().unwrap_or_default());
        } else if let Some(block) = current.as_mut() {
            block.push_str(line.trim_start_matches("   "));
            block.push('\n');
        }
    }
    found
}

struct Shell {
    path: String,
    endpoint: String,
    host: String,
    dir: tempfile::TempDir,
}

impl Shell {
    fn new(server: &Server, extra_path: &[&Path]) -> Self {
        let mut path: Vec<String> = extra_path.iter().map(|dir| dir.display().to_string()).collect();
        path.push(Path::new(binary()).parent().unwrap().display().to_string());
        path.push(std::env::var("PATH").unwrap_or_default());
        Self {
            path: path.join(":"),
            endpoint: server.endpoint.clone(),
            host: server.endpoint.trim_start_matches("http://").to_owned(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn adapt(&self, text: &str) -> String {
        text.replace("localhost:8080", &self.host)
            .replace("127.0.0.1:8080", &self.host)
    }

    fn command(&self, program: &str, script: &str) -> Command {
        let mut command = Command::new(program);
        command
            .arg("-c")
            .arg(self.adapt(script))
            .current_dir(workspace_root())
            .env("PATH", &self.path)
            .env("LONGRUN_ENDPOINT", &self.endpoint)
            .env("HOME", self.dir.path());
        command
    }

    fn run(&self, program: &str, script: &str) -> Output {
        let output = self.command(program, script).output().unwrap();
        eprintln!(
            "$ {script}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

fn succeeds(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn readme_snippets_run_as_written() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let server = Server::start(&[]);
    // A venv of its own: `pip install ./python` below puts a `longrun`
    // package in it, which the interop suite's generated `longrun.v1`
    // modules must not meet.
    let venv = venv(&root, "tests/interop/requirements.txt", "target/readme-venv");
    let shell = Shell::new(&server, &[&venv.join("bin")]);

    // The tour, with curl: the waiter returns when the producer completes.
    let tour = blocks(&readme, "## A 60-second tour", "sh");
    assert_eq!(tour.len(), 2, "{tour:?}");
    let curl = succeeds(&shell.run("bash", &format!("set -e\n{}\nwait", tour[0])));
    assert!(curl.contains(r#""done":true"#), "{curl}");

    // The same with the CLI, line after line in one terminal.
    let lines: Vec<&str> = tour[1]
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .collect();
    let exits: Vec<Option<i32>> = lines.iter().map(|line| shell.run("bash", line).status.code()).collect();
    assert_eq!(
        exits,
        [Some(0), Some(0), Some(0), Some(1), Some(0), Some(0)],
        "{lines:?}: wait exits 1 for the cancelled operation, everything else 0"
    );

    // Producer commands, formats, and a watch (stopped after a moment, as
    // a reader would with Ctrl-C).
    let shell_blocks = blocks(&readme, "### From the shell: producers, formats, watching", "sh");
    assert_eq!(shell_blocks.len(), 2, "{shell_blocks:?}");
    let produced = succeeds(&shell.run("bash", &format!("set -e\n{}", shell_blocks[0])));
    assert!(
        produced.contains("page 2 of 5") && produced.contains("40%"),
        "{produced}"
    );
    assert!(produced.contains("pages: 5"), "YAML of the finished report: {produced}");
    shell.run(
        "bash",
        "longrun operations create projects/demo --operation-id report-2",
    );
    let watched = shell.run("bash", &format!("timeout 3 {}", shell_blocks[1]));
    let text = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(124), "runs until stopped: {text}");
    assert!(
        text.contains("projects/demo/operations/report-2 RUNNING 0%") && text.contains("following changes"),
        "{text}"
    );

    // A worker (terminal 1, in the background) and its work (terminal 2).
    let workers = blocks(&readme, "### Workers", "sh");
    let (first, second) = workers[0].split_once("# Terminal 2").unwrap();
    let mut worker = shell
        .command("bash", first)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let waited = shell.run("bash", second);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(i32::try_from(worker.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = worker.wait();
    let waited = succeeds(&waited);
    assert!(waited.contains(r#""total": 6"#), "integers stay integers: {waited}");

    // Google's Python clients: gRPC as it is; REST with `pip install ./python`.
    let section = "## Using Google's Python clients";
    let python = blocks(&readme, section, "python");
    let sh = blocks(&readme, section, "sh");
    assert_eq!((python.len(), sh.len()), (3, 1), "{python:?} {sh:?}");
    let grpc = succeeds(&shell.run("python", &python[0]));
    assert_eq!(grpc.trim(), "True type.googleapis.com/google.protobuf.Struct");
    succeeds(&shell.run("bash", &sh[0]));
    let rest = succeeds(&shell.run("python", &python[1]));
    assert_eq!(rest.trim(), "SUCCEEDED True");
    succeeds(&shell.run("python", &python[2]));

    // Tokens: a server of their own on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tokens = blocks(&readme, "### Tokens", "sh").remove(0).replace(
        "longrun serve --tokens tokens.toml",
        &format!("longrun serve --tokens tokens.toml --listen 127.0.0.1:{port}"),
    );
    let script = format!(
        "cd {}\n{}\nstatus=$?\nkill %1\nexit $status",
        shell.dir.path().display(),
        tokens.replace("localhost:8080", &format!("127.0.0.1:{port}"))
    );
    let mut command = shell.command("bash", &script);
    command.env("LONGRUN_ENDPOINT", format!("http://127.0.0.1:{port}"));
    let output = command.output().unwrap();
    let listed = succeeds(&output);
    assert!(listed.contains("NAME") && listed.contains("{}"), "{listed}");
}
