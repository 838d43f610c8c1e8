//! Starting the real `longrun` binary for a test.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
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
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                &store,
                "--log-format",
                "json",
            ])
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
            dir: Some(dir),
        }
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(["operations", "--endpoint", &self.endpoint])
            .args(args)
            .output()
            .unwrap()
    }

    /// Stops the server at once (SIGKILL) and hands back its database.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().unwrap()
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
