//! The server under test: a `longrun serve` child process, and what it
//! costs (CPU time and peak memory, from `/proc`).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

pub(crate) struct Server {
    child: Child,
    pub endpoint: String,
}

/// The server's resource use so far.
pub(crate) struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_kb: u64,
}

impl Server {
    pub fn start(longrun: &Path, store: &str, extra: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(longrun)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                store,
                "--log-format",
                "json",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", longrun.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        // Reads the log for the bound address, then drains it so the server
        // never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sent {
                    continue;
                }
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) {
                    if entry["message"] == "serving REST and gRPC" {
                        let _ = address_tx.send(Ok(entry["address"].as_str().unwrap_or_default().to_owned()));
                        sent = true;
                    } else if entry["level"] == "ERROR" {
                        let _ = address_tx.send(Err(line));
                        sent = true;
                    }
                }
            }
        });
        match address_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(address)) => Ok(Self {
                child,
                endpoint: format!("http://{address}"),
            }),
            Ok(Err(line)) => bail!("the server failed to start: {line}"),
            Err(_) => {
                let _ = child.kill();
                bail!("the server did not start within 60 s")
            }
        }
    }

    pub fn usage(&self) -> anyhow::Result<Usage> {
        usage_of(&self.child.id().to_string())
    }
}

/// CPU seconds this bench process has used so far.
pub(crate) fn own_cpu_seconds() -> anyhow::Result<f64> {
    Ok(usage_of("self")?.cpu_seconds)
}

/// CPU time and peak memory of `/proc/<pid>`.
fn usage_of(pid: &str) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces): utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_rss_kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(Usage {
        cpu_seconds: (ticks(11) + ticks(12)) / TICKS_PER_SECOND,
        peak_rss_kb,
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `url` without a password, for the report.
pub(crate) fn redacted(url: &str) -> String {
    match url.split_once("://").zip(url.rfind('@')) {
        Some(((scheme, rest), _)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
