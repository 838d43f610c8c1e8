//! `longrun-bench`: starts a real `longrun serve` on the store it is given,
//! drives it over REST from this process, and prints one line per scenario
//! with throughput, latency percentiles (HdrHistogram), the server's CPU
//! seconds per 1,000 operations and its peak RSS.
//!
//! ```text
//! cargo build --release -p longrun -p longrun-bench
//! target/release/longrun-bench --store sqlite:/tmp/bench.db --scenarios health,create,get,drain
//! target/release/longrun-bench --store postgres://postgres@127.0.0.1/bench_longrun
//! ```
//!
//! Every figure is taken against a trivial endpoint (`/healthz`) measured in
//! the same run, because a 2-core machine shared with the load generator is
//! noisy: compare ratios, and compare stores and peers run one after the
//! other (`bench/compare.sh`).

mod grpc;
mod inprocess;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

use crate::scenarios::Outcome;
use crate::server::Server;

#[derive(Debug, Parser)]
#[command(name = "longrun-bench", about = "Load scenarios against a real longrun server")]
struct Args {
    /// The store the server runs on: `sqlite:PATH` or `postgres://…` (a
    /// fresh database per run, as the peers get).
    #[arg(long, default_value = "sqlite:target/bench/bench.db")]
    store: String,
    /// The `longrun` binary (default: the one next to this binary).
    #[arg(long)]
    longrun: Option<PathBuf>,
    /// Scenarios to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "health,create,create1,get,drain"
    )]
    scenarios: Vec<Scenario>,
    /// Operations created (`create`), and queued then drained (`drain`).
    #[arg(long, default_value_t = 20_000)]
    operations: usize,
    /// Concurrent connections for `health`, `create` and `get`.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Concurrent workers (claim, then complete) for `drain`.
    #[arg(long, default_value_t = 24)]
    workers: usize,
    /// Operations each `drain-batch` worker asks for per claim
    /// (`maxOperations`); it completes them in one `:batchComplete`.
    #[arg(long, default_value_t = 16)]
    claim_batch: u32,
    /// Claim long-polls left waiting during `idle-pollers`.
    #[arg(long, default_value_t = 2000)]
    pollers: usize,
    /// Waits blocked at once during `waits`.
    #[arg(long, default_value_t = 10_000)]
    waiters: usize,
    /// `waits` over HTTP/2 (200 Waits per connection, as gRPC clients
    /// multiplex calls) instead of one HTTP/1.1 connection per Wait.
    #[arg(long)]
    http2: bool,
    /// How long the saturation scenarios (`health`, `get`) run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Further `longrun serve` arguments, after `--`.
    #[arg(last = true)]
    serve_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// `GET /healthz` at saturation: the trivial baseline.
    Health,
    /// Durable creates over `connections` connections.
    Create,
    /// Durable creates one at a time (latency).
    Create1,
    /// Get of one operation at saturation.
    Get,
    /// Queue `operations`, then `workers` REST workers claim and complete
    /// them with trivial work, one claim per operation.
    Drain,
    /// `drain` with claims of `claim-batch` operations at once
    /// (`maxOperations`), each batch completed in one call.
    DrainBatch,
    /// `drain` over gRPC (`longrun.v1.Control`), one call each.
    DrainGrpc,
    /// `drain-batch` over gRPC: claims of `claim-batch`, one
    /// BatchCompleteOperations per batch.
    DrainGrpcBatch,
    /// Queue `operations`, then `workers` in-process handler slots
    /// (`longrun-runtime` in this process, on the same store) claim and
    /// complete them. CPU is this process's and the server's together;
    /// per-operation latency is not measured.
    DrainInProcess,
    /// `create1` while `pollers` claim long-polls wait on a queue that gets
    /// no work: idle workers must not slow anyone down. Compare with
    /// `create1` in the same run.
    IdlePollers,
    /// Wait wake-up: from sending a completion to the answer of a Wait
    /// blocked on that operation, one at a time (`operations / 20`).
    WaitWakeup,
    /// `wait-wakeup` across nodes: the Wait blocks on a second server on
    /// the same PostgreSQL database, the completion goes to the first.
    WaitWakeupNodes,
    /// `waiters` Waits blocked at once (one connection each), then all
    /// woken: the server's peak RSS is the figure.
    Waits,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let longrun = match &args.longrun {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .join("longrun"),
    };
    let mut serve_args = args.serve_args.clone();
    if args.scenarios.contains(&Scenario::IdlePollers) || args.scenarios.contains(&Scenario::Waits) {
        // Room for every poller and waiter: a connection each, all blocked at once.
        let room = (args.pollers.max(args.waiters) + args.connections + 100).to_string();
        serve_args.extend(
            [
                "--max-connections",
                &room,
                "--max-waiters-per-principal",
                &room,
                "--max-waiters",
                &room,
            ]
            .map(String::from),
        );
    }
    let server = Server::start(&longrun, &args.store, &serve_args)?;
    let other = if args.scenarios.contains(&Scenario::WaitWakeupNodes) {
        if store_kind(&args.store) != "postgres" {
            bail!("wait-wakeup-nodes needs --store postgres://…: nodes share a PostgreSQL database");
        }
        Some(Server::start(&longrun, &args.store, &serve_args)?)
    } else {
        None
    };
    let durability = durability(&args.store).await;
    eprintln!(
        "longrun-bench: {} on {} ({durability}), {} cores",
        server.endpoint,
        server::redacted(&args.store),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    // reqwest's TLS comes without a crypto provider; longrun uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.max(args.workers))
        .timeout(Duration::from_secs(120))
        .build()?;
    let bench = scenarios::Bench {
        client,
        endpoint: server.endpoint.clone(),
        operations: args.operations,
        connections: args.connections,
        workers: args.workers,
        claim_batch: args.claim_batch,
        store: args.store.clone(),
        other_endpoint: other.as_ref().map(|other| other.endpoint.clone()),
        pollers: args.pollers,
        waiters: args.waiters,
        http2: args.http2,
        duration: args.duration,
    };
    if !args.json {
        println!("{}", Outcome::header());
    }
    for scenario in &args.scenarios {
        let before = server.usage()?;
        let mut outcome = bench.run(*scenario).await?;
        let after = server.usage()?;
        outcome.store = store_kind(&args.store).to_owned();
        outcome.durability = durability.clone();
        let cpu_seconds = after.cpu_seconds - before.cpu_seconds + outcome.own_cpu_seconds;
        outcome.cpu_seconds_per_1k = cpu_seconds / outcome.operations.max(1) as f64 * 1e3;
        outcome.peak_rss_mb = after.peak_rss_kb as f64 / 1024.0;
        if args.json {
            println!("{}", outcome.json());
        } else {
            println!("{}", outcome.row());
        }
    }
    Ok(())
}

fn store_kind(store: &str) -> &'static str {
    if store.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

/// What "acknowledged" means for the store: asked of PostgreSQL itself;
/// fixed for SQLite (the server opens it with WAL and synchronous=FULL).
async fn durability(store: &str) -> String {
    if store_kind(store) == "sqlite" {
        return "WAL, synchronous=FULL".into();
    }
    let settings = async {
        let (client, connection) = tokio_postgres::connect(store, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT current_setting('synchronous_commit'), current_setting('fsync'), version()",
                &[],
            )
            .await?;
        let version: String = row.get(2);
        let version = version.split(' ').take(2).collect::<Vec<_>>().join(" ");
        Ok::<_, tokio_postgres::Error>(format!(
            "{version}, synchronous_commit={}, fsync={}",
            row.get::<_, String>(0),
            row.get::<_, String>(1)
        ))
    };
    settings.await.unwrap_or_else(|err| format!("unknown ({err})"))
}
