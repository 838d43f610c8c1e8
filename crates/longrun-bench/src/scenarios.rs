//! The scenarios: closed-loop clients over HTTP/1.1 keep-alive
//! connections, each recording every call's latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::Scenario;

const PARENT: &str = "projects/bench/locations/us";

/// What one scenario measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub scenario: &'static str,
    pub store: String,
    pub durability: String,
    pub operations: u64,
    pub concurrency: usize,
    pub seconds: f64,
    /// Operations per second.
    pub rate: f64,
    /// Latency of one operation (one call; claim then complete for drain).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub cpu_seconds_per_1k: f64,
    pub peak_rss_mb: f64,
    /// For drain: the rate at which its operations were queued.
    pub enqueue_rate: Option<f64>,
    /// CPU seconds this process spent on the scenario's work itself (the
    /// in-process drain), added to the server's.
    pub own_cpu_seconds: f64,
}

impl Outcome {
    fn new(scenario: &'static str, concurrency: usize, histogram: &Histogram<u64>, elapsed: Duration) -> Self {
        let ms = |micros: u64| micros as f64 / 1e3;
        let operations = histogram.len();
        Self {
            scenario,
            operations,
            concurrency,
            seconds: elapsed.as_secs_f64(),
            rate: operations as f64 / elapsed.as_secs_f64(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
            ..Self::default()
        }
    }

    pub fn header() -> String {
        format!(
            "{:<16} {:<8} {:>8} {:>5} {:>10} {:>8} {:>8} {:>8} {:>10} {:>8} {:>10}",
            "scenario",
            "store",
            "ops",
            "conc",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "cpu s/1k",
            "rss MB",
            "enqueue/s"
        )
    }

    pub fn row(&self) -> String {
        format!(
            "{:<16} {:<8} {:>8} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.1} {:>10.3} {:>8.1} {:>10}",
            self.scenario,
            self.store,
            self.operations,
            self.concurrency,
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.cpu_seconds_per_1k,
            self.peak_rss_mb,
            self.enqueue_rate.map_or_else(String::new, |rate| format!("{rate:.0}")),
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "store": self.store,
            "durability": self.durability,
            "operations": self.operations,
            "concurrency": self.concurrency,
            "seconds": self.seconds,
            "ops_per_s": self.rate.round(),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "cpu_s_per_1k": self.cpu_seconds_per_1k,
            "peak_rss_mb": self.peak_rss_mb,
            "enqueue_per_s": self.enqueue_rate.map(f64::round),
        })
    }
}

pub(crate) struct Bench {
    pub client: reqwest::Client,
    pub endpoint: String,
    pub operations: usize,
    pub connections: usize,
    pub workers: usize,
    pub claim_batch: u32,
    /// `--store`, for scenarios that open it themselves.
    pub store: String,
    /// A second node on the same PostgreSQL database, for
    /// `wait-wakeup-nodes`.
    pub other_endpoint: Option<String>,
    pub pollers: usize,
    pub waiters: usize,
    pub http2: bool,
    pub duration: Duration,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to two minutes, 3 significant digits: bounds the
    // library accepts, so this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn record(histogram: &mut Histogram<u64>, since: Instant) {
    let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(micros);
}

impl Bench {
    pub async fn run(&self, scenario: Scenario) -> anyhow::Result<Outcome> {
        match scenario {
            Scenario::Health => self.saturate("health", "/healthz".into()).await,
            Scenario::Get => {
                static GETS: AtomicUsize = AtomicUsize::new(0);
                let id = format!("get-{}-{}", std::process::id(), GETS.fetch_add(1, Ordering::Relaxed));
                self.create(&id, json!({"verb": "bench"})).await?;
                self.saturate("get", format!("/v1/{PARENT}/operations/{id}")).await
            }
            Scenario::Create => self.creates("create", self.connections, self.operations, None).await,
            Scenario::Create1 => self.creates("create1", 1, (self.operations / 10).max(100), None).await,
            Scenario::Drain => self.drain("drain", 1).await,
            Scenario::DrainBatch => self.drain("drain-batch", self.claim_batch).await,
            Scenario::DrainInProcess => self.drain_in_process().await,
            Scenario::DrainGrpc => self.drain_grpc("drain-grpc", 1).await,
            Scenario::DrainGrpcBatch => self.drain_grpc("drain-grpc-batch", self.claim_batch).await,
            Scenario::IdlePollers => self.idle_pollers().await,
            Scenario::WaitWakeup => self.wait_wakeup("wakeup", &self.endpoint).await,
            Scenario::WaitWakeupNodes => {
                let other = self
                    .other_endpoint
                    .as_deref()
                    .context("wait-wakeup-nodes needs a second node (a postgres:// store)")?;
                self.wait_wakeup("wakeup-nodes", other).await
            }
            Scenario::Waits => self.waits().await,
        }
    }

    /// One Wait at a time on a fresh operation; the operation is completed
    /// once the Wait is blocked (the waiters gauge says so). Records the
    /// time from sending the completion to the Wait's answer: the commit,
    /// the wake-up and both answers, an upper bound on commit → answer.
    async fn wait_wakeup(&self, scenario: &'static str, wait_at: &str) -> anyhow::Result<Outcome> {
        let rounds = (self.operations / 20).max(50);
        let run = format!("{scenario}-{}", std::process::id());
        let started = Instant::now();
        let mut latencies = histogram();
        for i in 0..rounds {
            let id = format!("{run}-{i}");
            self.create(&id, json!({})).await?;
            let name = format!("{PARENT}/operations/{id}");
            let waiter = {
                let (client, url) = (self.client.clone(), format!("{wait_at}/v1/{name}:wait"));
                tokio::spawn(async move {
                    let response = client.post(&url).json(&json!({"timeout": "30s"})).send().await?;
                    let body: Value = response.json().await?;
                    Ok::<_, anyhow::Error>((Instant::now(), body))
                })
            };
            self.until_waiting_at(wait_at, 1).await?;
            // From sending the completion: an upper bound on commit → answer.
            let committed = Instant::now();
            self.post(&format!("/v1/{name}:complete"), &json!({"response": {}}))
                .await?;
            let (answered, body) = waiter.await??;
            if body["done"] != json!(true) {
                bail!("the Wait answered before completion: {body}");
            }
            let micros = u64::try_from(answered.saturating_duration_since(committed).as_micros()).unwrap_or(u64::MAX);
            latencies.saturating_record(micros.max(1));
        }
        Ok(Outcome::new(scenario, 1, &latencies, started.elapsed()))
    }

    /// Waits until the server counts at least `count` blocked calls.
    async fn until_waiting(&self, count: usize) -> anyhow::Result<()> {
        self.until_waiting_at(&self.endpoint, count).await
    }

    /// Waits until the server at `endpoint` has `count` calls blocked.
    async fn until_waiting_at(&self, endpoint: &str, count: usize) -> anyhow::Result<()> {
        let since = Instant::now();
        loop {
            let metrics = self
                .client
                .get(format!("{endpoint}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let waiting = metrics
                .lines()
                .find(|line| line.starts_with("longrun_waiters "))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(0.0);
            if waiting >= count as f64 {
                return Ok(());
            }
            if since.elapsed() > Duration::from_secs(120) {
                bail!("only {waiting} of {count} calls are blocked after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(if count > 1 { 200 } else { 1 })).await;
        }
    }

    /// `waiters` Waits at once on 100 operations, then every operation
    /// completed: each Wait's latency is from the completions' start.
    async fn waits(&self) -> anyhow::Result<Outcome> {
        let run = format!("waits-{}", std::process::id());
        let operations = 100;
        for i in 0..operations {
            self.create(&format!("{run}-{i}"), json!({})).await?;
        }
        // HTTP/1.1: one connection per Wait. HTTP/2: a client (and so a
        // connection) per 200 Waits, below the server's stream limit.
        let per_client = if self.http2 { 200 } else { self.waiters.max(1) };
        let clients = (0..self.waiters.div_ceil(per_client))
            .map(|_| {
                let builder = reqwest::Client::builder()
                    .pool_max_idle_per_host(self.waiters)
                    .timeout(Duration::from_secs(300));
                if self.http2 {
                    builder.http2_prior_knowledge()
                } else {
                    builder
                }
                .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut waiters = JoinSet::new();
        for w in 0..self.waiters {
            let url = format!("{}/v1/{PARENT}/operations/{run}-{}:wait", self.endpoint, w % operations);
            let client = clients[w / per_client].clone();
            waiters.spawn(async move {
                let response = client.post(&url).json(&json!({"timeout": "120s"})).send().await?;
                let body: Value = response.json().await?;
                if body["done"] != json!(true) {
                    bail!("a Wait answered before completion: {body}");
                }
                Ok::<_, anyhow::Error>(Instant::now())
            });
        }
        self.until_waiting(self.waiters).await?;
        let started = Instant::now();
        for i in 0..operations {
            self.post(
                &format!("/v1/{PARENT}/operations/{run}-{i}:complete"),
                &json!({"response": {}}),
            )
            .await?;
        }
        let mut latencies = histogram();
        while let Some(done) = waiters.join_next().await {
            let answered = done??;
            let micros = u64::try_from(answered.saturating_duration_since(started).as_micros()).unwrap_or(u64::MAX);
            latencies.saturating_record(micros.max(1));
        }
        let scenario = if self.http2 { "waits-h2" } else { "waits" };
        Ok(Outcome::new(scenario, self.waiters, &latencies, started.elapsed()))
    }

    /// `create1` with `pollers` claim long-polls parked on an empty queue,
    /// each on its own connection; the pollers are dropped afterwards.
    async fn idle_pollers(&self) -> anyhow::Result<Outcome> {
        let queue = format!("idle-{}", std::process::id());
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.pollers)
            .timeout(Duration::from_secs(300))
            .build()?;
        let url = format!("{}/v1/{PARENT}/operations:claim", self.endpoint);
        let mut pollers = JoinSet::new();
        for i in 0..self.pollers {
            let (client, url) = (client.clone(), url.clone());
            let claim = json!({"queue": queue, "worker": format!("idle-{i}"), "wait": "60s"});
            pollers.spawn(async move {
                loop {
                    let response = client.post(&url).json(&claim).send().await?;
                    if !response.status().is_success() {
                        bail!(
                            "claim: {} {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        );
                    }
                    response.bytes().await?;
                }
                #[allow(unreachable_code)]
                Ok::<(), anyhow::Error>(())
            });
        }
        // Until every poller is parked on the server (the waiters gauge).
        tokio::select! {
            parked = self.until_waiting(self.pollers) => parked?,
            Some(Ok(Err(err))) = pollers.join_next() => return Err(err),
        }
        let mut outcome = self
            .creates("idle-pollers", 1, (self.operations / 10).max(100), None)
            .await?;
        outcome.scenario = "pollers";
        pollers.abort_all();
        Ok(outcome)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(post(&self.client, &self.endpoint, path, body).await?.json().await?)
    }

    async fn create(&self, id: &str, mut body: Value) -> anyhow::Result<Value> {
        body["operationId"] = json!(id);
        self.post(&format!("/v1/{PARENT}/operations"), &body).await
    }

    /// `connections` clients calling GET `path` back to back for the duration.
    async fn saturate(&self, scenario: &'static str, path: String) -> anyhow::Result<Outcome> {
        let url = format!("{}{path}", self.endpoint);
        let started = Instant::now();
        let until = started + self.duration;
        let mut clients = JoinSet::new();
        for _ in 0..self.connections {
            let (client, url) = (self.client.clone(), url.clone());
            clients.spawn(async move {
                let mut latencies = histogram();
                while Instant::now() < until {
                    let sent = Instant::now();
                    let response = client.get(&url).send().await?;
                    if !response.status().is_success() {
                        bail!("GET {url}: {}", response.status());
                    }
                    response.bytes().await?;
                    record(&mut latencies, sent);
                }
                Ok(latencies)
            });
        }
        let mut all = histogram();
        while let Some(done) = clients.join_next().await {
            all.add(done??)?;
        }
        Ok(Outcome::new(scenario, self.connections, &all, started.elapsed()))
    }

    /// `count` creates over `connections` clients; queued in `queue` if set.
    async fn creates(
        &self,
        scenario: &'static str,
        connections: usize,
        count: usize,
        queue: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let next = Arc::new(AtomicUsize::new(0));
        // Unique per call: a repeated id would be a 409, counted as done.
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = format!(
            "{scenario}-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let url = format!("{}/v1/{PARENT}/operations", self.endpoint);
        let started = Instant::now();
        let mut clients = JoinSet::new();
        for _ in 0..connections {
            let (client, url, next, run) = (self.client.clone(), url.clone(), next.clone(), run.clone());
            let queue = queue.map(str::to_owned);
            clients.spawn(async move {
                let mut latencies = histogram();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let mut body = json!({"operationId": format!("{run}-{i}"), "verb": "bench"});
                    if let Some(queue) = &queue {
                        body["queue"] = json!(queue);
                        body["input"] = json!({"i": i});
                    }
                    let sent = Instant::now();
                    let response = match client.post(&url).json(&body).send().await {
                        Ok(response) => response,
                        // A pooled connection the server closed as this
                        // request left (docs/operations.md, keep-alive):
                        // once more on a fresh one. The create names its
                        // id, so a repeat that did land is a 409.
                        Err(err) if err.is_request() => client.post(&url).json(&body).send().await?,
                        Err(err) => return Err(err.into()),
                    };
                    if response.status() == reqwest::StatusCode::CONFLICT {
                        response.bytes().await?;
                        record(&mut latencies, sent);
                        continue;
                    }
                    if !response.status().is_success() {
                        bail!(
                            "create: {} {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        );
                    }
                    response.bytes().await?;
                    record(&mut latencies, sent);
                }
            });
        }
        let mut all = histogram();
        while let Some(done) = clients.join_next().await {
            all.add(done??)?;
        }
        Ok(Outcome::new(scenario, connections, &all, started.elapsed()))
    }

    /// Queues `operations`, then `workers` gRPC workers drain them.
    async fn drain_grpc(&self, scenario: &'static str, batch: u32) -> anyhow::Result<Outcome> {
        self.drain_with(scenario, |w, queue, remaining| {
            crate::grpc::worker(self.endpoint.clone(), PARENT, queue, w, batch, remaining, histogram())
        })
        .await
    }

    /// Queues `operations` on a queue of its own, then runs `workers`
    /// workers made by `worker` (its number, the queue, how many are left
    /// to drain) until they are none, and measures them.
    async fn drain_with<W, F>(&self, scenario: &'static str, worker: W) -> anyhow::Result<Outcome>
    where
        W: Fn(usize, String, Arc<AtomicUsize>) -> F,
        F: std::future::Future<Output = anyhow::Result<Histogram<u64>>> + Send + 'static,
    {
        let queue = format!("{scenario}-{}", std::process::id());
        let queued = self
            .creates("enqueue", self.connections, self.operations, Some(&queue))
            .await?;
        let remaining = Arc::new(AtomicUsize::new(self.operations));
        let started = Instant::now();
        let mut workers = JoinSet::new();
        for w in 0..self.workers {
            workers.spawn(worker(w, queue.clone(), remaining.clone()));
        }
        let mut all = histogram();
        while let Some(done) = workers.join_next().await {
            all.add(done??)?;
        }
        let mut outcome = Outcome::new(scenario, self.workers, &all, started.elapsed());
        outcome.enqueue_rate = Some(queued.rate);
        Ok(outcome)
    }

    /// Queues `operations` through the server, then drains them with
    /// in-process handlers on the same store.
    async fn drain_in_process(&self) -> anyhow::Result<Outcome> {
        let queue = format!("inproc-{}", std::process::id());
        let queued = self
            .creates("enqueue", self.connections, self.operations, Some(&queue))
            .await?;
        let store = crate::inprocess::open_store(&self.store).await?;
        let cpu = crate::server::own_cpu_seconds()?;
        let elapsed = crate::inprocess::drain(store, PARENT, &queue, self.operations, self.workers).await?;
        let operations = self.operations as u64;
        Ok(Outcome {
            scenario: "drain-in-process",
            operations,
            concurrency: self.workers,
            seconds: elapsed.as_secs_f64(),
            rate: operations as f64 / elapsed.as_secs_f64(),
            enqueue_rate: Some(queued.rate),
            own_cpu_seconds: crate::server::own_cpu_seconds()? - cpu,
            ..Outcome::default()
        })
    }

    /// Queues `operations`, then `workers` clients claim and complete them
    /// (REST worker protocol, trivial work) until none is left. With a
    /// `batch` above 1 each claim asks for that many and the worker
    /// completes them in one `:batchComplete`.
    async fn drain(&self, scenario: &'static str, batch: u32) -> anyhow::Result<Outcome> {
        self.drain_with(scenario, |w, queue, remaining| {
            rest_worker(self.client.clone(), self.endpoint.clone(), queue, w, batch, remaining)
        })
        .await
    }
}

/// One REST worker of the drain: claims (one, or `batch` at a time) and
/// completes with a trivial response until `remaining` reaches zero; the
/// latency of each operation runs from its claim's sending to its
/// completion's answer.
async fn rest_worker(
    client: reqwest::Client,
    endpoint: String,
    queue: String,
    worker: usize,
    batch: u32,
    remaining: Arc<AtomicUsize>,
) -> anyhow::Result<Histogram<u64>> {
    let mut claim = json!({"queue": queue, "worker": format!("bench-{worker}"), "wait": "1s"});
    if batch > 1 {
        claim["maxOperations"] = batch.into();
    }
    let mut latencies = histogram();
    let claim_url = format!("{endpoint}/v1/{PARENT}/operations:claim");
    while remaining.load(Ordering::Relaxed) > 0 {
        let sent = Instant::now();
        let answer: ClaimAnswer = client.post(&claim_url).json(&claim).send().await?.json().await?;
        let claims = match answer {
            ClaimAnswer {
                operation: Some(operation),
                lease_token,
                ..
            } => vec![Claim { operation, lease_token }],
            ClaimAnswer { claims, .. } if !claims.is_empty() => claims,
            _ => continue,
        };
        if batch > 1 {
            complete_batch(&client, &endpoint, &claims).await?;
        } else {
            for claimed in &claims {
                complete_trivially(&client, &endpoint, claimed).await?;
            }
        }
        for _ in &claims {
            record(&mut latencies, sent);
        }
        remaining.fetch_sub(claims.len(), Ordering::Relaxed);
    }
    Ok(latencies)
}

/// What a worker reads of a claim's answer (one operation in its fields,
/// or several in `claims`): each operation's name and lease token. The
/// rest is skipped unread, as a worker written for speed would.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimAnswer {
    operation: Option<Named>,
    #[serde(default)]
    lease_token: String,
    #[serde(default)]
    claims: Vec<Claim>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claim {
    operation: Named,
    lease_token: String,
}

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

/// What a worker reads of a batch completion's answer: which failed.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    results: Vec<BatchResult>,
}

#[derive(serde::Deserialize)]
struct BatchResult {
    error: Option<Value>,
}

/// POSTs `body` as JSON to `path` under `endpoint`; a refusal is an error
/// that carries the server's answer.
async fn post(client: &reqwest::Client, endpoint: &str, path: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
    let response = client
        .post(format!("{endpoint}{path}"))
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("POST {path}: {status} {}", response.text().await.unwrap_or_default());
    }
    Ok(response)
}

/// Completes one claimed operation with a trivial response.
async fn complete_trivially(client: &reqwest::Client, endpoint: &str, claimed: &Claim) -> anyhow::Result<()> {
    let done = json!({"leaseToken": claimed.lease_token, "response": {"ok": true}});
    post(
        client,
        endpoint,
        &format!("/v1/{}:complete", claimed.operation.name),
        &done,
    )
    .await?
    .bytes()
    .await?;
    Ok(())
}

/// Completes a batch of claimed operations in one `:batchComplete`.
async fn complete_batch(client: &reqwest::Client, endpoint: &str, claims: &[Claim]) -> anyhow::Result<()> {
    let requests: Vec<Value> = claims
        .iter()
        .map(|claimed| {
            json!({
                "name": claimed.operation.name,
                "leaseToken": claimed.lease_token,
                "response": {"ok": true},
            })
        })
        .collect();
    let path = format!("/v1/{PARENT}/operations:batchComplete");
    let answer: BatchAnswer = post(client, endpoint, &path, &json!({ "requests": requests }))
        .await?
        .json()
        .await?;
    if let Some(failed) = answer.results.into_iter().find_map(|result| result.error) {
        bail!("batch complete: {failed}");
    }
    Ok(())
}
