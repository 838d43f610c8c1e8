//! longrun's PostgreSQL store: several stateless `longrun serve` nodes on
//! one database behave as one service.
//!
//! - **Connections**: a [`deadpool_postgres`] pool per node of
//!   tokio-postgres connections, statements prepared once per connection;
//!   every connection works in the schema `longrun`, with a statement
//!   timeout so that nothing waits forever.
//! - **Schema**: versioned migrations applied at start in one transaction
//!   under an advisory lock, so nodes starting together do not race.
//! - **Writes**: a call reads the operation, asks
//!   [`longrun_types::lifecycle`] what may happen, and writes the answer in
//!   one statement fenced by what it read; the same statement logs the
//!   change for the feed and writes custom fields. If another node changed
//!   the operation in between, the fence matches nothing and the call reads
//!   and decides again. Claims take the oldest claimable row with `FOR
//!   UPDATE SKIP LOCKED`, and the sweep skips rows another node is
//!   settling, so every claim and every expiry happens exactly once.
//!   Commits are durable as the server is configured (`synchronous_commit =
//!   on` by default), and concurrent ones share WAL flushes.
//! - **Time**: the store takes `now` from its caller like every store;
//!   nodes read it from the database's clock ([`Store::time`], carried by
//!   [`longrun_store::StoreClock`]), so a node's own wall clock does not
//!   matter.
//! - **Changes**: a change log table, `NOTIFY`, and a reader per node
//!   (`feed`): Wait and the claim long-poll on one node wake when another
//!   commits.
//!
//! ```no_run
//! # async fn example() -> longrun_store::Result<()> {
//! let store = longrun_store_postgres::PostgresStore::connect("postgres://longrun@db.internal/longrun").await?;
//! # Ok(()) }
//! ```

mod batches;
mod completes;
mod creates;
mod feed;
mod fields;
mod rows;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;
mod work;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_postgres::types::{ToSql, Type};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::rows::{COLUMNS, Fields, Params, listed, read, update_fenced, write_step};
use longrun_store::sql::{Dialect, Param, SqlBuilder};
use longrun_store::{
    Cancelled, Change, ClaimRequest, Completion, Created, Error, ListQuery, Listed, NewOperation, QueueStats, Result,
    Store, SweepEvent, SweepPolicy, Unindexed, Update,
};
use longrun_types::filter::Indexed;
use longrun_types::lifecycle::{self, Cancel};
use longrun_types::{Operation, OperationName, Parent};

/// Connections per node unless [`Options::pool_size`] says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long a call waits for a free connection before it is UNAVAILABLE.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Longest any one statement may run, so nothing waits forever on a lock
/// or a stuck server. The feed waits longer than this for an id a
/// transaction took but has not committed yet ([`feed::GAP_PATIENCE`]).
const STATEMENT_TIMEOUT: &str = "30s";

/// How a node uses the database.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most connections this node holds (its listener's comes on top).
    pub pool_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// A store on a PostgreSQL database. Cheap to clone; the node's change
/// feed stops when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    changes: broadcast::Sender<Change>,
    key: [u8; 32],
    notifier: feed::Notifier,
    /// This node's change feed watermark (see `feed`).
    position: Arc<AtomicU64>,
    /// Where creates wait to share a statement (see `creates`).
    creates: creates::Creates,
    /// Where completions wait to share a transaction (see `completes`).
    completes: completes::Completes,
    _feed: Arc<DropGuard>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// creates or migrates longrun's schema in it, and starts this node's
    /// change feed.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, Options::default()).await
    }

    pub async fn connect_with(url: &str, options: Options) -> Result<Self> {
        let config = connection_config(url)?;
        let (mut client, connection) = config.connect(NoTls).await.map_err(db)?;
        let connection = tokio::spawn(connection);
        schema::migrate(&mut client).await?;
        let key = schema::page_token_key(&client).await?;
        drop(client);
        // The migration's connection closes with its client.
        let _ = connection.await;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(Error::internal)?;
        let (changes, _) = broadcast::channel(4096);
        let stop = CancellationToken::new();
        let position = Arc::new(AtomicU64::new(0));
        let notifier = feed::start(pool.clone(), config, changes.clone(), position.clone(), stop.clone()).await?;
        // A quarter of the connections at most write creates, so the
        // rest serve everything else meanwhile.
        let creates = creates::Creates::start(pool.clone(), options.pool_size / 4);
        let completes = completes::Completes::start(
            completes::Writer::new(pool.clone(), notifier.clone()),
            options.pool_size / 4,
        );
        Ok(Self {
            pool,
            changes,
            position,
            key,
            notifier,
            creates,
            completes,
            _feed: Arc::new(stop.drop_guard()),
        })
    }
}

/// The connection settings for `url`, plus longrun's own: its schema, a
/// statement timeout, and its name in `pg_stat_activity`.
fn connection_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|err| Error::internal(format!("invalid PostgreSQL URL: {err}")))?;
    let options = format!(
        "{} -c search_path=longrun -c statement_timeout={STATEMENT_TIMEOUT} \
         -c idle_in_transaction_session_timeout=60s -c client_min_messages=warning",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim_start());
    if config.get_application_name().is_none() {
        config.application_name("longrun");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_WAIT);
    }
    Ok(config)
}

/// Only a lost connection or a timeout is UNAVAILABLE (a caller may
/// retry); everything else PostgreSQL refuses is a fault of ours.
pub(crate) fn db(err: tokio_postgres::Error) -> Error {
    if err.is_closed() {
        return Error::unavailable(err);
    }
    let transient = match err.code() {
        Some(state) => {
            let code = state.code();
            // 08: connection exceptions; 57P01-03: server shutting down or
            // starting; 53300: too many connections; 57014: statement
            // timeout; 40001, 40P01: serialization failure, deadlock;
            // 55P03: lock not available.
            code.starts_with("08")
                || matches!(
                    code,
                    "57P01" | "57P02" | "57P03" | "53300" | "57014" | "40001" | "40P01" | "55P03"
                )
        }
        // No answer from the server: the connection failed or timed out.
        None => std::error::Error::source(&err).is_some_and(|source| source.is::<std::io::Error>()),
    };
    if transient {
        Error::unavailable(err)
    } else {
        Error::internal(err)
    }
}

/// A connection that cannot be had, whatever the server answered (down,
/// refusing connections, no such database any more), is an outage.
fn pool_error(err: PoolError) -> Error {
    match err {
        PoolError::Backend(err) => Error::unavailable(err),
        PoolError::Timeout(_) => Error::unavailable(format!("no database connection within {POOL_WAIT:?}")),
        other => Error::internal(other),
    }
}

pub(crate) async fn client(pool: &Pool) -> Result<Object> {
    pool.get().await.map_err(pool_error)
}

/// A dynamic statement's parameters with their types, for `query_typed`
/// (one round trip, no statement kept: filters have endless shapes).
fn typed(params: &[Param]) -> Vec<(Box<dyn ToSql + Sync + Send>, Type)> {
    params
        .iter()
        .map(|param| -> (Box<dyn ToSql + Sync + Send>, Type) {
            match param {
                Param::Int(value) => (Box::new(*value), Type::INT8),
                Param::Real(value) => (Box::new(*value), Type::FLOAT8),
                Param::Text(value) => (Box::new(value.clone()), Type::TEXT),
                Param::Bool(flag) => (Box::new(*flag), Type::BOOL),
                Param::Time(time) => (Box::new(*time), Type::TIMESTAMPTZ),
            }
        })
        .collect()
}

/// Runs a statement of a few fixed shapes (a claim's, say) as a prepared,
/// cached one; its placeholders carry their types (`$1::int8`).
async fn query_cached(client: &Object, text: &str, params: &[Param]) -> Result<Vec<tokio_postgres::Row>> {
    let params = typed(params);
    let values: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|(value, _)| value.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let statement = client.prepare_cached(text).await.map_err(db)?;
    client.query(&statement, &values).await.map_err(db)
}

fn typed_refs(params: &[(Box<dyn ToSql + Sync + Send>, Type)]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|(value, kind)| (value.as_ref() as &(dyn ToSql + Sync), kind.clone()))
        .collect()
}

impl PostgresStore {
    async fn client(&self) -> Result<Object> {
        client(&self.pool).await
    }

    /// The operation an earlier create with `new`'s request id made, if any.
    async fn by_request_id(client: &Object, new: &NewOperation) -> Result<Option<Operation>> {
        let Some(request_id) = &new.request_id else {
            return Ok(None);
        };
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM operations WHERE parent = $1 AND request_id = $2"
            ))
            .await
            .map_err(db)?;
        let row = client
            .query_opt(&statement, &[&new.name.parent().as_str(), request_id])
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(listed).transpose()?.map(|listed| listed.operation))
    }

    /// The operation as written, after telling every node.
    fn written(&self, written: Listed) -> Operation {
        self.notifier.committed();
        written.operation
    }
}

/// How many times a write reads and decides again when its fence finds
/// that the operation changed since it was read.
pub(crate) const ATTEMPTS: usize = 8;

/// The operation changed under every attempt: a transient condition.
pub(crate) fn contended(name: &str) -> Error {
    Error::unavailable(format!(
        "operation {name:?} kept changing while this call decided; retry"
    ))
}

/// The answer to a lifecycle refusal of `name`.
pub(crate) fn refused(name: &str) -> impl Fn(lifecycle::Refusal) -> Error + '_ {
    move |refusal| Error::refused(name, &refusal)
}

// The writes' spans (the operation's name) are at debug level: at the
// default level they cost nothing, and the request's span, with its id, is
// on every line a call logs anyway. Made at info level, creating them was
// 1.8 % of all samples in a profile of durable creates.
#[async_trait]
impl Store for PostgresStore {
    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %new.name))]
    async fn create(&self, new: NewOperation) -> Result<Created> {
        let new = Arc::new(new);
        if let Some(inserted) = self.creates.insert(new.clone()).await? {
            let operation = self.written(inserted);
            return Ok(Created {
                operation,
                existed: false,
            });
        }
        // Taken: by the same request (on any node), or the name by another.
        let client = self.client().await?;
        match Self::by_request_id(&client, &new).await? {
            Some(operation) => Ok(Created {
                operation,
                existed: true,
            }),
            None => Err(Error::AlreadyExists(new.name.to_string())),
        }
    }

    async fn get(&self, name: &OperationName) -> Result<Operation> {
        let client = self.client().await?;
        Ok(read(&client, &name.to_string()).await?.operation)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Listed>> {
        let mut sql = SqlBuilder::list(Dialect::Postgres, query);
        let limit = sql.bind(Param::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        let text = format!(
            "SELECT {COLUMNS} FROM operations WHERE {} ORDER BY create_time DESC, seq DESC LIMIT {limit}",
            sql.where_clause()
        );
        let params = typed(sql.params());
        let client = self.client().await?;
        let rows = client.query_typed(&text, &typed_refs(&params)).await.map_err(db)?;
        rows.iter().map(listed).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn cancel(&self, name: &OperationName, now: SystemTime) -> Result<Cancelled> {
        let name = name.to_string();
        let client = self.client().await?;
        for _ in 0..ATTEMPTS {
            let Listed { operation: op, cursor } = read(&client, &name).await?;
            let written = match lifecycle::cancel(&op, now) {
                Cancel::End(step) => write_step(&client, cursor.seq, &op, &step, now, Fields::Keep)
                    .await?
                    .map(|written| (written, true)),
                Cancel::Request => {
                    let sets = "cancel_requested = true, cancel_time = $1, update_time = $1";
                    let change = Change {
                        name: name.clone(),
                        done: false,
                        deleted: false,
                        queued: None,
                        position: 0,
                    };
                    update_fenced(
                        &client,
                        cursor.seq,
                        &op,
                        sets,
                        vec![Box::new(now)],
                        &change,
                        Fields::Keep,
                    )
                    .await?
                    .map(|written| (written, false))
                }
                Cancel::Unchanged => {
                    return Ok(Cancelled {
                        operation: op,
                        ended: false,
                    });
                }
            };
            if let Some((written, ended)) = written {
                let operation = self.written(written);
                return Ok(Cancelled { operation, ended });
            }
        }
        Err(contended(&name))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn delete(&self, name: &OperationName) -> Result<()> {
        let name = name.to_string();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "WITH deleted AS (DELETE FROM operations WHERE name = $1 RETURNING name), \
                      logged AS (INSERT INTO changes (name, done, deleted) SELECT name, false, true FROM deleted) \
                 SELECT count(*) FROM deleted",
            )
            .await
            .map_err(db)?;
        let deleted: i64 = client
            .query_one(&statement, &[&name])
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if deleted == 0 {
            return Err(Error::NotFound(name));
        }
        self.notifier.committed();
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn update(&self, name: &OperationName, update: Update, now: SystemTime) -> Result<Operation> {
        let name = name.to_string();
        let client = self.client().await?;
        // `$1` the time, `$2` the lease's new expiry, then what the update sets.
        let mut sets = vec!["update_time = $1".to_owned(), "lease_expire_time = $2".to_owned()];
        let mut set = |column: &str| sets.push(format!("{column} = ${}", sets.len() + 1));
        if update.metadata.is_some() {
            set("metadata_type");
            set("metadata");
        }
        if update.progress_percent.is_some() {
            set("progress_percent");
        }
        if update.status_detail.is_some() {
            set("status_detail");
        }
        let sets = sets.join(", ");
        let values = |lease_expiry: Option<SystemTime>| -> Params {
            let mut values: Params = vec![Box::new(now), Box::new(lease_expiry)];
            if let Some(metadata) = &update.metadata {
                values.push(Box::new(metadata.type_url.clone()));
                values.push(Box::new(metadata.value.to_vec()));
            }
            if let Some(percent) = update.progress_percent {
                values.push(Box::new(percent));
            }
            if let Some(detail) = &update.status_detail {
                values.push(Box::new(detail.clone()));
            }
            values
        };
        let fields = match update.metadata {
            Some(_) => Fields::Replace(fields::METADATA, &update.indexed),
            None => Fields::Keep,
        };
        let change = Change {
            name: name.clone(),
            done: false,
            deleted: false,
            queued: None,
            position: 0,
        };
        for _ in 0..ATTEMPTS {
            let Listed { operation: op, cursor } = read(&client, &name).await?;
            let lease_expiry = lifecycle::report(&op, update.lease_token.as_deref(), now).map_err(refused(&name))?;
            let written = update_fenced(&client, cursor.seq, &op, &sets, values(lease_expiry), &change, fields).await?;
            if let Some(written) = written {
                return Ok(self.written(written));
            }
        }
        Err(contended(&name))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn complete(&self, name: &OperationName, completion: Completion, now: SystemTime) -> Result<Operation> {
        self.completes.complete(name.clone(), completion, now).await
    }

    /// See [`completes::Writer::complete_many`].
    async fn complete_many(
        &self,
        completions: Vec<(OperationName, Completion)>,
        now: SystemTime,
    ) -> Vec<Result<Operation>> {
        self.completes.writer().complete_many(completions, now).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(queue = %request.queue))]
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Operation>> {
        self.claim_next(request).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn release(&self, name: &OperationName, lease_token: &str, now: SystemTime) -> Result<Operation> {
        let name = name.to_string();
        let client = self.client().await?;
        for _ in 0..ATTEMPTS {
            let Listed { operation: op, cursor } = read(&client, &name).await?;
            let step = lifecycle::release(&op, lease_token, now).map_err(refused(&name))?;
            if let Some(written) = write_step(&client, cursor.seq, &op, &step, now, Fields::Keep).await? {
                return Ok(self.written(written));
            }
        }
        Err(contended(&name))
    }

    async fn next_claimable(&self, parent: &Parent, queue: &str) -> Result<Option<SystemTime>> {
        self.next_claimable_time(parent, queue).await
    }

    async fn sweep(&self, now: SystemTime, policy: SweepPolicy) -> Result<Vec<SweepEvent>> {
        self.sweep_now(now, policy).await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        self.stats().await
    }

    async fn position(&self) -> Result<u64> {
        Ok(self.position.load(Ordering::Acquire))
    }

    async fn changes_after(&self, position: u64, limit: usize) -> Result<Option<Vec<Change>>> {
        feed::after(&self.pool, position, self.position.load(Ordering::Acquire), limit).await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn unindexed(&self, limit: usize) -> Result<Vec<Unindexed>> {
        self.pending_fields(limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(op.name = %name))]
    async fn reindex(&self, name: &OperationName, indexed: Vec<Indexed>) -> Result<()> {
        self.reindex_fields(name, indexed).await
    }

    fn page_token_key(&self) -> [u8; 32] {
        self.key
    }

    async fn check_ready(&self) -> Result<()> {
        let ready = async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(db)?;
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(2), ready).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable("the database did not answer within 2s")),
        }
    }

    async fn time(&self) -> Result<SystemTime> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT clock_timestamp()").await.map_err(db)?;
        client
            .query_one(&statement, &[])
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)
    }
}
