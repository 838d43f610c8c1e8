//! Starting the real `longrun` binary for a test.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `longrun serve` process on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub endpoint: String,
    /// Every log line the server has written so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Holds the database until the server is gone.
    dir: Option<tempfile::TempDir>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_longrun")
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// Starts a server on the database in `dir`, e.g. one a previous server used.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let store = format!("sqlite:{}", dir.path().join("longrun.db").display());
        let mut server = Self::spawn(Command::new(binary()), &store, extra);
        server.dir = Some(dir);
        server
    }

    /// Starts a node on the store at `url` (a PostgreSQL database that
    /// other nodes may share).
    pub fn start_on(url: &str, extra: &[&str]) -> Self {
        Self::spawn(Command::new(binary()), url, extra)
    }

    /// Starts `longrun serve` through `command` (the binary itself, or a
    /// wrapper such as `faketime` whose last argument is the binary).
    pub fn spawn(mut command: Command, store: &str, extra: &[&str]) -> Self {
        command.arg("serve");
        if !extra.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        // A group of its own, killed whole: a wrapper such as `faketime`
        // runs the server as its child, which killing the wrapper alone
        // would leave running.
        let mut child = command
            .process_group(0)
            .args(["--store", store])
            .args(["--store-pool-size", "4", "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        // Reads the log for the bound address, then keeps draining it so the
        // server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent
                    && let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                    && entry["message"] == "serving REST and gRPC"
                {
                    let _ = address_tx.send(entry["address"].as_str().unwrap_or_default().to_owned());
                    sent = true;
                }
                if std::env::var_os("LONGRUN_TEST_SERVER_LOG").is_some() {
                    eprintln!("server: {line}");
                }
                lines.lock().unwrap().push(line);
            }
        });
        let address = address_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start within 30s");
        Self {
            child,
            endpoint: format!("http://{address}"),
            log,
            dir: None,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(["operations", "--endpoint", &self.endpoint])
            .args(args)
            .output()
            .unwrap()
    }

    /// Stops the server at once (SIGKILL) and hands back its database
    /// directory (SQLite only).
    pub fn kill(mut self) -> Option<tempfile::TempDir> {
        self.kill_group();
        self.dir.take()
    }

    /// SIGKILL to the server's process group (the server, and a wrapper
    /// around it), then reaps it.
    fn kill_group(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns how long the process took to exit.
    pub fn terminate(mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        (started.elapsed(), status)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// The npm packages of the suite in `dir` (relative to the workspace),
/// installed with `npm ci` again only when its lockfile changed, one test
/// at a time; returns the suite's directory.
pub fn npm_suite(dir: &str) -> PathBuf {
    let suite = workspace_root().join(dir);
    let lock_name = format!("target/{}.lock", dir.replace('/', "-"));
    let lock_file = std::fs::File::create(workspace_root().join(lock_name)).unwrap();
    lock_file.lock().unwrap();
    let lock = std::fs::read_to_string(suite.join("package-lock.json")).unwrap();
    let stamp = suite.join("node_modules/.installed-lock");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"])
            .current_dir(&suite));
        std::fs::write(&stamp, &lock).unwrap();
    }
    suite
}

/// Runs `command`, panicking unless it succeeds.
pub fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A Python venv at `dir` (under the workspace) with `requirements`
/// installed from PyPI; made once and reused while the requirements stay
/// the same.
pub fn venv(root: &Path, requirements: &str, dir: &str) -> PathBuf {
    let requirements = root.join(requirements);
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let venv = root.join(dir);
    // Tests running at once share the venv: one makes it, the others wait.
    let lock = std::fs::File::create(root.join(format!("{dir}.lock"))).unwrap();
    lock.lock().unwrap();
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

/// Minimal HTTP/1.1 call; returns the status code and JSON body.
pub fn call(endpoint: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, payload) = response.split_once("\r\n\r\n").unwrap();
    // Responses here are small and sent with Content-Length, not chunked.
    (status, serde_json::from_str(payload).unwrap_or(Value::Null))
}

/// A watch stream read as Server-Sent Events over plain HTTP/1.1.
pub struct Watch {
    reader: BufReader<std::net::TcpStream>,
    /// Decoded body text not yet split into events.
    pending: String,
    /// The id of the last event that had one.
    pub last_id: Option<String>,
}

/// One event of a [`Watch`]: its kind (`heartbeat` for a comment) and data.
#[derive(Debug)]
pub struct WatchEvent {
    pub kind: String,
    pub data: Value,
}

impl Watch {
    /// Opens `path` (e.g. `/v1/projects/p/operations:watch`), resuming
    /// after `last_id` when given.
    pub fn open(endpoint: &str, path: &str, last_id: Option<&str>) -> Self {
        let address = endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let resume = last_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\n{resume}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{path}: {status}");
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header == "\r\n" {
                break;
            }
        }
        Self {
            reader,
            pending: String::new(),
            last_id: None,
        }
    }

    /// The next event (within 10 s); `None` once the stream ends.
    pub fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut event = WatchEvent {
                    kind: "heartbeat".into(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(kind) = line.strip_prefix("event: ") {
                        event.kind = kind.to_owned();
                    } else if let Some(id) = line.strip_prefix("id: ") {
                        self.last_id = Some(id.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(data).unwrap();
                    }
                }
                return Some(event);
            }
            // One chunk of the chunked body.
            let mut size = String::new();
            if self.reader.read_line(&mut size).unwrap() == 0 {
                return None;
            }
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }

    /// The next event that is not a heartbeat.
    pub fn next_change(&mut self) -> WatchEvent {
        loop {
            let event = self.next().expect("the stream went on");
            if event.kind != "heartbeat" {
                return event;
            }
        }
    }
}
