//! Command-line shape (SPEC §6). Every flag also reads `LONGRUN_<FLAG>` and
//! the config file's key of the same name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "longrun",
    version,
    about = "Long-running operations, wire-compatible with google.longrunning"
)]
pub struct Cli {
    /// A TOML file whose keys are flag names, e.g. `max-wait = "30s"`.
    #[arg(long, global = true, env = "LONGRUN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: REST and gRPC on one address.
    Serve(ServeArgs),
    /// Get, list, create, cancel, delete and wait for operations.
    #[command(alias = "ops")]
    Operations(OperationsArgs),
    /// Claim operations from a queue and run COMMAND for each, with the
    /// operation's input JSON on its stdin.
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The server's base URL.
    #[arg(long, env = "LONGRUN_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    /// Bearer token for servers started with --tokens.
    #[arg(long, env = "LONGRUN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The queue to claim from.
    #[arg(long, env = "LONGRUN_QUEUE")]
    pub queue: String,
    /// Only operations under this parent (and below it); all by default.
    #[arg(long, env = "LONGRUN_PARENT", default_value = "")]
    pub parent: String,
    /// Operations run at once.
    #[arg(long, env = "LONGRUN_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// How long each lease lasts; heartbeats renew it every third of this.
    #[arg(long, env = "LONGRUN_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// After SIGTERM to a cancelled command, how long before SIGKILL.
    #[arg(long, env = "LONGRUN_KILL_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub kill_grace: Duration,
    /// This worker's name in leases and logs (default: host and pid).
    #[arg(long = "name", env = "LONGRUN_WORKER_NAME")]
    pub name: Option<String>,
    /// The command and its arguments, after `--`. It is run as given; nothing
    /// from an operation's input is ever executed.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve REST (HTTP/1.1, h2c) and gRPC on.
    #[arg(long, env = "LONGRUN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// `sqlite:PATH` (or a plain path). PostgreSQL arrives in a later release.
    #[arg(long, env = "LONGRUN_STORE", default_value = "sqlite:longrun.db")]
    pub store: String,
    /// A FileDescriptorSet (`protoc --include_imports --descriptor_set_out`)
    /// whose types may be used as payloads. Repeatable.
    #[arg(
        long = "descriptors",
        env = "LONGRUN_DESCRIPTORS",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub descriptors: Vec<PathBuf>,
    /// Longest a Wait call may block.
    #[arg(long, env = "LONGRUN_MAX_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
    /// After a cancel, how long a running operation's worker has to stop
    /// before the server ends it as CANCELLED and fences the worker off.
    #[arg(long, env = "LONGRUN_CANCEL_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub cancel_grace: Duration,
    /// Done operations older than this are deleted in the background.
    #[arg(long, env = "LONGRUN_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Serve on a non-loopback address without authentication.
    #[arg(long, env = "LONGRUN_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    #[arg(long, env = "LONGRUN_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct OperationsArgs {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "LONGRUN_ENDPOINT",
        default_value = "http://127.0.0.1:8080"
    )]
    pub endpoint: String,
    /// Bearer token for servers started with --tokens.
    #[arg(long, global = true, env = "LONGRUN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: OperationsCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum OperationsCommand {
    /// List operations under PARENT (omit it for top-level operations), newest first.
    List {
        #[arg(default_value = "")]
        parent: String,
        /// AIP-160 filter, e.g. `done = false`.
        #[arg(long, default_value = "")]
        filter: String,
        /// Operations per request; pages are fetched transparently.
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Stop after this many operations.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Print one operation as JSON.
    Describe { name: String },
    /// Create an operation under PARENT.
    Create {
        #[arg(default_value = "")]
        parent: String,
        /// Queue for workers; omit for an external operation.
        #[arg(long)]
        queue: Option<String>,
        /// Input as JSON (objects without "@type" become google.protobuf.Struct).
        #[arg(long)]
        input: Option<String>,
        /// Producer metadata as JSON with "@type".
        #[arg(long)]
        metadata: Option<String>,
        #[arg(long)]
        operation_id: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        verb: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        api_version: Option<String>,
        #[arg(long)]
        max_attempts: Option<i32>,
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Ask for cancellation.
    Cancel { name: String },
    /// Delete the record (does not cancel).
    Delete { name: String },
    /// Wait for completion with a progress bar; exits 1 if it failed or was cancelled.
    Wait {
        name: String,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}
