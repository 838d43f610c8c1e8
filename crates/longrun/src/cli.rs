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
    /// Make bearer tokens for `serve --tokens FILE`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a completion script for SHELL, e.g.
    /// `longrun completions bash > /etc/bash_completion.d/longrun`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the `[[token]]` entry for a new random secret on stdout (with
    /// only its SHA-256: append it to the tokens file) and the secret itself
    /// on stderr (give it to the client; it is kept nowhere).
    New {
        /// The principal's name, as logs and audit lines show it.
        #[arg(long)]
        name: String,
        /// `prefix=role` (roles: viewer, editor, producer, worker, admin;
        /// prefix `*` for everything). Repeatable.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
    },
    /// Print the SHA-256 of a secret read from standard input.
    Hash,
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
    /// `sqlite:PATH` (or a plain path): one node, embedded. Or
    /// `postgres://user@host:port/db`: any number of nodes on one database.
    #[arg(long, env = "LONGRUN_STORE", default_value = "sqlite:longrun.db")]
    pub store: String,
    /// Most database connections this node holds (PostgreSQL only).
    #[arg(long, env = "LONGRUN_STORE_POOL_SIZE", default_value_t = longrun_store_postgres::DEFAULT_POOL_SIZE)]
    pub store_pool_size: usize,
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
    /// Bearer tokens and their grants (TOML, SPEC §5): every call then
    /// needs `authorization: Bearer <token>`. Reloaded on SIGHUP.
    #[arg(long, env = "LONGRUN_TOKENS", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Open connections at once. At the limit the longest-idle connection
    /// is closed for a new one; only if all are busy is it turned away.
    #[arg(long, env = "LONGRUN_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
    /// How long a request's headers may take to arrive (also how long an
    /// HTTP/1 keep-alive connection may wait for its next request).
    #[arg(long, env = "LONGRUN_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive.
    #[arg(long, env = "LONGRUN_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    #[arg(long, env = "LONGRUN_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Wait and Claim calls blocked at once, in all; past it they are
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "LONGRUN_MAX_WAITERS", default_value_t = 10_000)]
    pub max_waiters: usize,
    /// Wait and Claim calls blocked at once for one token (or for all
    /// callers of an open server together).
    #[arg(long, env = "LONGRUN_MAX_WAITERS_PER_PRINCIPAL", default_value_t = 2_000)]
    pub max_waiters_per_principal: usize,
    /// Host names the server answers besides its own. On a loopback address
    /// only localhost, 127.0.0.1 and [::1] are answered by default (DNS
    /// rebinding); elsewhere any name is, unless names are given here.
    #[arg(long, env = "LONGRUN_ALLOWED_HOSTS", value_delimiter = ',', value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://console.example.com`) whose web pages may make
    /// changing REST calls; pages from other sites are refused.
    #[arg(long, env = "LONGRUN_ALLOWED_ORIGINS", value_delimiter = ',', value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Believe X-Forwarded-Proto and X-Forwarded-Host (set only when a
    /// proxy in front of the server sets them).
    #[arg(long, env = "LONGRUN_TRUST_FORWARDED_HEADERS")]
    pub trust_forwarded_headers: bool,
    /// Serve TLS with this certificate chain (PEM), with --tls-key.
    #[arg(long, env = "LONGRUN_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "LONGRUN_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
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
    /// How to print operations: a table (the default for list and watch),
    /// JSON (the default otherwise; one object per line for watch) or YAML.
    #[arg(long, global = true, env = "LONGRUN_FORMAT", value_enum)]
    pub format: Option<Format>,
    #[command(subcommand)]
    pub command: OperationsCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
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
    },
    /// Follow the operations under PARENT as they change, with a progress
    /// bar for each one running, until interrupted.
    Watch {
        #[arg(default_value = "")]
        parent: String,
        /// AIP-160 filter, e.g. `done = false`.
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Print one operation (JSON by default).
    #[command(alias = "get")]
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
        /// The operation's id (the last segment of its name); generated
        /// (time-ordered, unique) when omitted.
        #[arg(long)]
        operation_id: Option<String>,
        /// Makes retries safe: a second create with the same request id under
        /// the same parent returns the first operation.
        #[arg(long)]
        request_id: Option<String>,
        /// What the operation does, e.g. "import" (standard metadata).
        #[arg(long)]
        verb: Option<String>,
        /// The resource it works on, e.g. "projects/p/datasets/d".
        #[arg(long)]
        target: Option<String>,
        /// The API version that started it, e.g. "v1".
        #[arg(long)]
        api_version: Option<String>,
        /// Attempts a queued operation gets (1-100; default 3).
        #[arg(long)]
        max_attempts: Option<i32>,
        /// Ends it with DEADLINE_EXCEEDED if not done within this, e.g. 10m.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Ask for cancellation.
    Cancel { name: String },
    /// Delete the record (does not cancel).
    Delete { name: String },
    /// Wait for completion with a progress bar (progress lines when stderr
    /// is not a terminal), then print it; exits 1 if it failed or was
    /// cancelled, 2 if still running after --timeout.
    Wait {
        name: String,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Report progress on an operation (producer API); prints whether
    /// cancellation was requested.
    Update {
        name: String,
        /// Percent done, 0-100.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..=100))]
        progress: Option<i32>,
        /// A line for people: what it is doing now.
        #[arg(long)]
        detail: Option<String>,
        /// Replaces the producer's metadata: JSON with "@type".
        #[arg(long)]
        metadata: Option<String>,
        /// The lease token of a claimed operation (workers).
        #[arg(long, env = "LONGRUN_LEASE_TOKEN", hide_env_values = true)]
        lease_token: Option<String>,
    },
    /// Finish an operation (producer API): with --response, or with
    /// --error-code and --error-message.
    Complete {
        name: String,
        /// The response as JSON (objects without "@type" become
        /// google.protobuf.Struct).
        #[arg(long, conflicts_with_all = ["error_code", "error_message"])]
        response: Option<String>,
        /// A canonical code: a name (`NOT_FOUND`) or its number.
        #[arg(long, requires = "error_message")]
        error_code: Option<String>,
        #[arg(long, requires = "error_code")]
        error_message: Option<String>,
        /// A worker's failure that may be retried (if attempts are left).
        #[arg(long, requires = "error_code")]
        retryable: bool,
        /// The lease token of a claimed operation (workers).
        #[arg(long, env = "LONGRUN_LEASE_TOKEN", hide_env_values = true)]
        lease_token: Option<String>,
    },
}
