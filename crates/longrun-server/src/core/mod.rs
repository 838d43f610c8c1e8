//! The service core: every API method once, protocol-agnostic. REST and
//! gRPC are thin adapters that decode a request into the generated request
//! message, call one method here, and encode the result.

mod waiters;
mod wakeups;
mod watch;

pub use watch::{Event as WatchEvent, Sent as WatchSent, WatchStream};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::auth::{Access, Action, Principal, Scope, authorize, scope};
use crate::metrics::Metrics;
use crate::page_token::PageTokens;
use crate::{Clock, Config, Error};
use longrun_proto::google::longrunning::ListOperationsRequest;
use longrun_proto::longrun::v1::{
    BatchCompleteOperationsRequest, BatchCompleteOperationsResponse, ClaimOperationRequest, ClaimOperationResponse,
    ClaimedOperation, CompleteOperationRequest, CompleteOperationResult, CreateOperationRequest,
    ReleaseOperationRequest, UpdateOperationRequest, UpdateOperationResponse, complete_operation_request,
    complete_operation_result,
};
use longrun_proto::{Registry, any_to_payload, status_from_wire};
use longrun_store::{
    Backoff, ClaimRequest, ClaimWaiters, Completion, ListQuery, NewOperation, Store, SweepPolicy, Update, claim_or_wait,
};
use longrun_types::filter::{Filter, Indexed};
use longrun_types::{Code, Operation, OperationName, Outcome, Parent, Payload, validate_id};
use waiters::Waiters;

/// Page size when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Larger page sizes are lowered to this.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Attempts when the producer does not say.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;
const MAX_ATTEMPTS_LIMIT: i32 = 100;
const MAX_TEXT: usize = 1024;
/// An error's message may say more than a status detail.
const MAX_ERROR_MESSAGE: usize = 8192;
/// Where custom fields are indexed: `metadata.<path>`, `response.<path>`.
const METADATA: &str = "metadata";
const RESPONSE: &str = "response";
const MAX_REQUEST_ID: usize = 128;
/// Lease when the worker does not ask for a duration.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Most operations one claim leases (`max_operations`).
pub const MAX_CLAIM_BATCH: i32 = 100;
/// Most completions in one BatchCompleteOperations.
pub const MAX_BATCH_COMPLETE: usize = 100;
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Most done operations one sweep deletes.
const PURGE_BATCH: usize = 500;

/// Who is calling, for logs, metrics and authorization.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Unique per request; in every log line and in INTERNAL errors.
    pub request_id: String,
    /// `rest` or `grpc`.
    pub protocol: &'static str,
    /// Who the token says is calling; `None` on an open server.
    pub principal: Option<Arc<Principal>>,
    /// When the caller stops waiting for an answer (a gRPC deadline): a
    /// blocking call answers before then with what it has.
    pub deadline: Option<tokio::time::Instant>,
}

impl Caller {
    /// The principal's name for logs: `anonymous` on an open server.
    pub fn who(&self) -> &str {
        self.principal
            .as_deref()
            .map_or("anonymous", |principal| principal.name.as_str())
    }
}

/// A page of a listing.
#[derive(Debug)]
pub struct Page {
    pub operations: Vec<Operation>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// The service core shared by both protocols.
#[derive(Debug)]
pub struct Service {
    store: Arc<dyn Store>,
    exposure: crate::Exposure,
    /// Wait and Claim calls blocked now, bounded (`Limits`).
    waiters: Arc<Waiters>,
    access: Arc<Access>,
    registry: Registry,
    tokens: PageTokens,
    clock: Arc<dyn Clock>,
    max_wait: Duration,
    sweep: SweepPolicy,
    sweep_interval: Duration,
    /// Delay before re-running an operation that failed with a retryable error.
    retry_backoff: Backoff,
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled on shutdown so that blocked Wait calls return at once.
    shutdown: CancellationToken,
    /// Follows the store's changes for watch streams, from the first one on.
    hub: watch::HubCell,
    /// Events held for a watch client that reads slowly.
    watch_buffer: usize,
    /// How often a quiet watch stream says it is alive.
    watch_heartbeat: Duration,
    /// Claim long-polls parked on this node, woken one per claimable
    /// operation of their queue.
    claim_waiters: ClaimWaiters,
    /// Wait calls blocked on this node, woken by the name that changed.
    wakeups: wakeups::Wakeups,
}

impl Service {
    pub(crate) fn new(config: &Config, shutdown: CancellationToken) -> Self {
        let tokens = PageTokens::new(config.store.page_token_key());
        Self {
            store: config.counted_store(),
            metrics: config.metrics.clone(),
            exposure: config.exposure.clone(),
            waiters: Arc::new(Waiters::new(
                config.limits.max_waiters,
                config.limits.max_waiters_per_principal,
            )),
            access: config.access.clone(),
            registry: config.registry.clone(),
            tokens,
            clock: config.clock.clone(),
            max_wait: config.max_wait,
            sweep: SweepPolicy {
                cancel_grace: config.cancel_grace,
                retention: config.retention,
                purge_batch: PURGE_BATCH,
            },
            sweep_interval: config.sweep_interval,
            retry_backoff: config.retry_backoff,
            shutdown,
            hub: watch::HubCell::default(),
            watch_buffer: config.limits.watch_buffer,
            watch_heartbeat: config.limits.watch_heartbeat,
            claim_waiters: ClaimWaiters::new(),
            wakeups: wakeups::Wakeups::default(),
        }
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Times a call and counts it by method and code. Errors are logged
    /// where they leave the protocol adapters ([`Error::log`]).
    /// Times a call and counts it by method and code; a call that changes
    /// something (`action`) also writes one audit line: who, what, on which
    /// resource (`target`, as the caller named it), and how it ended.
    async fn observe<T>(
        &self,
        caller: &Caller,
        method: &'static str,
        (action, target): (Action, &str),
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = work.await;
        let code = result.as_ref().map_or_else(|err| err.code, |_| Code::Ok);
        self.metrics.request(method, caller.protocol, code, started.elapsed());
        if action.mutates() {
            tracing::info!(
                target: "longrun::audit",
                request_id = %caller.request_id,
                principal = caller.who(),
                method,
                name = target,
                outcome = code.name(),
                "audit"
            );
        }
        result
    }

    /// How the server treats browsers and proxies.
    pub(crate) fn exposure(&self) -> &crate::Exposure {
        &self.exposure
    }

    /// The server's access rules, for the protocol adapters.
    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    pub async fn get(&self, caller: &Caller, name: &str) -> Result<Operation, Error> {
        self.observe(caller, "GetOperation", (Action::Get, name), async {
            let name = OperationName::parse(name)?;
            authorize(caller, Action::Get, &name.to_string())?;
            Ok(self.store.get(&name).await?)
        })
        .await
    }

    pub async fn list(&self, caller: &Caller, request: ListOperationsRequest) -> Result<Page, Error> {
        let target = request.name.clone();
        self.observe(caller, "ListOperations", (Action::List, &target), async {
            let parent = Parent::parse_pattern(&request.name)?;
            let within = match scope(caller, Action::List, &parent, false)? {
                Scope::All => None,
                Scope::Within(prefixes) => Some(prefixes),
            };
            let limit = match usize::try_from(request.page_size) {
                Err(_) => {
                    return Err(Error::invalid(
                        "INVALID_PAGE_SIZE",
                        format!("page_size must not be negative, got {}", request.page_size),
                    ));
                }
                Ok(0) => DEFAULT_PAGE_SIZE,
                Ok(size) => size.min(MAX_PAGE_SIZE),
            };
            let filter = Filter::parse_with(&request.filter, &self.registry)?;
            let now = self.clock.now();
            let after = match request.page_token.as_str() {
                "" => None,
                token => Some(self.tokens.redeem(token, parent.as_str(), &request.filter, now)?),
            };
            let query = ListQuery {
                parent: parent.clone(),
                filter,
                after,
                limit: limit + 1,
                within,
            };
            let mut listed = self.store.list(&query).await?;
            let next_page_token = if listed.len() > limit {
                listed.truncate(limit);
                listed.last().map_or_else(String::new, |last| {
                    self.tokens.issue(last.cursor, parent.as_str(), &request.filter, now)
                })
            } else {
                String::new()
            };
            Ok(Page {
                operations: listed.into_iter().map(|listed| listed.operation).collect(),
                next_page_token,
            })
        })
        .await
    }

    pub async fn cancel(&self, caller: &Caller, name: &str) -> Result<Operation, Error> {
        self.observe(caller, "CancelOperation", (Action::Cancel, name), async {
            let name = OperationName::parse(name)?;
            authorize(caller, Action::Cancel, &name.to_string())?;
            Ok(self.store.cancel(&name, self.clock.now()).await?.operation)
        })
        .await
    }

    pub async fn delete(&self, caller: &Caller, name: &str) -> Result<(), Error> {
        self.observe(caller, "DeleteOperation", (Action::Delete, name), async {
            let name = OperationName::parse(name)?;
            authorize(caller, Action::Delete, &name.to_string())?;
            Ok(self.store.delete(&name).await?)
        })
        .await
    }

    /// Returns when the operation is done, or after `timeout` (capped at
    /// `--max-wait`) with its latest state. Woken by the store's change
    /// announcements, never by polling.
    pub async fn wait(
        &self,
        caller: &Caller,
        name: &str,
        timeout: Option<prost_types::Duration>,
    ) -> Result<Operation, Error> {
        self.observe(caller, "WaitOperation", (Action::Wait, name), async {
            let name = OperationName::parse(name)?;
            authorize(caller, Action::Wait, &name.to_string())?;
            let timeout = match timeout {
                None => self.max_wait,
                Some(timeout) => duration("timeout", timeout)?.min(self.max_wait),
            };
            let _waiting = if timeout.is_zero() {
                None
            } else {
                Some(Waiters::enter(&self.waiters, caller.who())?)
            };
            let deadline = caller.deadline.map_or(tokio::time::Instant::now() + timeout, |caller| {
                caller.min(tokio::time::Instant::now() + timeout)
            });
            let _waiter = self.metrics.waiter();
            let listening = self.wakeups.listen(self.store.as_ref(), &name.to_string());
            loop {
                // Armed before reading, so no completion slips between the two.
                let changed = listening.armed();
                let operation = self.store.get(&name).await?;
                if operation.done() {
                    return Ok(operation);
                }
                if listening.closed() {
                    return Err(Error::internal("store change feed closed"));
                }
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(deadline) => return Ok(self.store.get(&name).await?),
                    () = self.shutdown.cancelled() => return Ok(operation),
                }
            }
        })
        .await
    }

    pub async fn create(&self, caller: &Caller, request: CreateOperationRequest) -> Result<Operation, Error> {
        let target = request.parent.clone();
        self.observe(caller, "CreateOperation", (Action::Create, &target), async {
            let parent = Parent::parse(&request.parent)?;
            let id = if request.operation_id.is_empty() {
                uuid::Uuid::now_v7().simple().to_string()
            } else {
                request.operation_id.clone()
            };
            let name = OperationName::new(parent, &id)?;
            authorize(caller, Action::Create, &name.to_string())?;
            let request_id = optional_text("request_id", request.request_id, MAX_REQUEST_ID)?;
            let queue = match request.queue.as_str() {
                "" => None,
                queue => {
                    validate_id(queue)
                        .map_err(|why| Error::invalid("INVALID_QUEUE", format!("queue {queue:?} {why}")))?;
                    Some(request.queue.clone())
                }
            };
            let max_attempts = match request.max_attempts {
                0 => DEFAULT_MAX_ATTEMPTS,
                n if (1..=MAX_ATTEMPTS_LIMIT).contains(&n) => n,
                n => {
                    return Err(Error::invalid(
                        "INVALID_MAX_ATTEMPTS",
                        format!("max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {n}"),
                    ));
                }
            };
            let timeout = request
                .timeout
                .map(|timeout| duration("timeout", timeout))
                .transpose()?;
            let (metadata, indexed) = self.metadata(request.metadata)?;
            let new = NewOperation {
                name,
                request_id,
                queue,
                input: self.payload(request.input)?,
                metadata,
                indexed,
                verb: text("verb", request.verb)?,
                target: text("target", request.target)?,
                api_version: text("api_version", request.api_version)?,
                max_attempts,
                timeout,
                now: self.clock.now(),
            };
            Ok(self.store.create(new).await?.operation)
        })
        .await
    }

    pub async fn update(
        &self,
        caller: &Caller,
        request: UpdateOperationRequest,
    ) -> Result<UpdateOperationResponse, Error> {
        let target = request.name.clone();
        self.observe(caller, "UpdateOperation", (Action::Update, &target), async {
            let name = OperationName::parse(&request.name)?;
            authorize(caller, Action::Update, &name.to_string())?;
            if let Some(percent) = request.progress_percent
                && !(0..=100).contains(&percent)
            {
                return Err(Error::invalid(
                    "INVALID_PROGRESS",
                    format!("progress_percent must be between 0 and 100, got {percent}"),
                ));
            }
            let (metadata, indexed) = self.metadata(request.metadata)?;
            let update = Update {
                lease_token: optional_text("lease_token", request.lease_token, MAX_TEXT)?,
                metadata,
                indexed,
                progress_percent: request.progress_percent,
                status_detail: request
                    .status_detail
                    .map(|detail| text("status_detail", detail))
                    .transpose()?,
            };
            let operation = self.store.update(&name, update, self.clock.now()).await?;
            Ok(UpdateOperationResponse {
                cancel_requested: operation.cancel_requested,
                lease_expire_time: operation.lease.map(|lease| lease.expire_time.into()),
            })
        })
        .await
    }

    pub async fn complete(&self, caller: &Caller, request: CompleteOperationRequest) -> Result<Operation, Error> {
        let target = request.name.clone();
        self.observe(caller, "CompleteOperation", (Action::Complete, &target), async {
            let (name, completion) = self.completion(caller, request)?;
            Ok(self.store.complete(&name, completion, self.clock.now()).await?)
        })
        .await
    }

    /// Completes several operations under a parent, each on its own: a
    /// refused completion is that item's error, the others still land.
    /// The store commits them together where it can.
    pub async fn batch_complete(
        &self,
        caller: &Caller,
        request: BatchCompleteOperationsRequest,
    ) -> Result<BatchCompleteOperationsResponse, Error> {
        let target = request.parent.clone();
        self.observe(caller, "BatchCompleteOperations", (Action::Complete, &target), async {
            let parent = Parent::parse(&request.parent)?;
            // A caller who may complete nothing under the parent is refused
            // as a whole; grants that reach part of it are checked per item.
            scope(caller, Action::Complete, &parent, true)?;
            if request.requests.is_empty() || request.requests.len() > MAX_BATCH_COMPLETE {
                return Err(Error::invalid(
                    "INVALID_BATCH_SIZE",
                    format!("a batch holds 1 to {MAX_BATCH_COMPLETE} completions"),
                ));
            }
            // Refusals before the store, in request order; the store's
            // answers fill the rest.
            let mut results: Vec<Option<Result<Operation, Error>>> = Vec::with_capacity(request.requests.len());
            let mut valid = Vec::new();
            for item in request.requests {
                let checked = self.completion(caller, item).and_then(|(name, completion)| {
                    if parent.covers(name.parent()) {
                        Ok((name, completion))
                    } else {
                        Err(Error::invalid(
                            "NAME_OUTSIDE_PARENT",
                            format!(
                                "operation {:?} does not lie under {:?}",
                                name.to_string(),
                                parent.as_str()
                            ),
                        ))
                    }
                });
                match checked {
                    Ok(completion) => {
                        valid.push(completion);
                        results.push(None);
                    }
                    // Logged with the store's answers below.
                    Err(err) => results.push(Some(Err(err))),
                }
            }
            let mut stored = self.store.complete_many(valid, self.clock.now()).await.into_iter();
            let results = results
                .into_iter()
                .map(|result| match result {
                    Some(refused) => refused,
                    None => stored
                        .next()
                        .unwrap_or_else(|| {
                            Err(longrun_store::Error::internal("the store answered too few completions"))
                        })
                        .map_err(Error::from),
                })
                .map(|result| {
                    let result = match result {
                        Ok(operation) => {
                            complete_operation_result::Result::Operation(longrun_proto::to_wire(&operation))
                        }
                        Err(err) => {
                            err.log(&caller.request_id);
                            complete_operation_result::Result::Error(err.to_rpc_status(&caller.request_id))
                        }
                    };
                    CompleteOperationResult { result: Some(result) }
                })
                .collect();
            Ok(BatchCompleteOperationsResponse { results })
        })
        .await
    }

    /// A completion request checked and authorized, as the store takes it.
    fn completion(
        &self,
        caller: &Caller,
        request: CompleteOperationRequest,
    ) -> Result<(OperationName, Completion), Error> {
        let name = OperationName::parse(&request.name)?;
        authorize(caller, Action::Complete, &name.to_string())?;
        let (outcome, indexed) = match request.result {
            Some(complete_operation_request::Result::Response(any)) => {
                let payload = any_to_payload(any);
                let indexed = checked_fields(self.registry.check_and_index(RESPONSE, &payload)?)?;
                (Outcome::Response(payload), indexed)
            }
            Some(complete_operation_request::Result::Error(status)) => {
                let mut status = status_from_wire(status);
                status.message = checked_text("error.message", status.message, MAX_ERROR_MESSAGE)?;
                if !(1..=16).contains(&status.code) {
                    return Err(Error::invalid(
                        "INVALID_ERROR_CODE",
                        format!("error.code must be a google.rpc.Code from 1 to 16, got {}", status.code),
                    ));
                }
                for detail in &status.details {
                    self.registry.check_payload(detail)?;
                }
                (Outcome::Error(status), Vec::new())
            }
            None => {
                return Err(Error::invalid(
                    "MISSING_RESULT",
                    "a completion needs exactly one of response and error",
                ));
            }
        };
        let completion = Completion {
            lease_token: optional_text("lease_token", request.lease_token, MAX_TEXT)?,
            outcome,
            indexed,
            retry: request.retryable.then_some(self.retry_backoff),
        };
        Ok((name, completion))
    }

    /// Hands a claimed operation back to its queue without spending an
    /// attempt (a worker shutting down). Fenced by the lease like Complete.
    pub async fn release(&self, caller: &Caller, request: ReleaseOperationRequest) -> Result<Operation, Error> {
        let target = request.name.clone();
        self.observe(caller, "ReleaseOperation", (Action::Release, &target), async {
            let name = OperationName::parse(&request.name)?;
            authorize(caller, Action::Release, &name.to_string())?;
            let token = checked_text("lease_token", request.lease_token, MAX_TEXT)?;
            if token.is_empty() {
                return Err(Error::invalid(
                    "MISSING_LEASE_TOKEN",
                    "release needs the lease token that Claim returned",
                ));
            }
            Ok(self.store.release(&name, &token, self.clock.now()).await?)
        })
        .await
    }

    /// Leases the next queued operations of a queue under a parent (one,
    /// or up to `max_operations`), waiting up to `wait` (capped at
    /// `--max-wait`) for one to arrive. Woken by the creating (or
    /// re-queuing) write, or when a retry backoff ends; never by polling.
    pub async fn claim(&self, caller: &Caller, request: ClaimOperationRequest) -> Result<Claimed, Error> {
        let target = request.parent.clone();
        self.observe(caller, "ClaimOperation", (Action::Claim, &target), async {
            let parent = Parent::parse(&request.parent)?;
            let within = match scope(caller, Action::Claim, &parent, true)? {
                Scope::All => None,
                Scope::Within(prefixes) => Some(prefixes),
            };
            validate_id(&request.queue)
                .map_err(|why| Error::invalid("INVALID_QUEUE", format!("queue {:?} {why}", request.queue)))?;
            if !(0..=MAX_CLAIM_BATCH).contains(&request.max_operations) {
                return Err(Error::invalid(
                    "INVALID_MAX_OPERATIONS",
                    format!("max_operations must be between 1 and {MAX_CLAIM_BATCH} (or unset for one)"),
                ));
            }
            let batch = request.max_operations > 0;
            let limit = usize::try_from(request.max_operations.max(1)).unwrap_or(1);
            let worker = text("worker", request.worker)?;
            let lease_duration = match request.lease_duration {
                None => DEFAULT_LEASE,
                Some(duration) => {
                    let lease = self::duration("lease_duration", duration)?;
                    if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
                        return Err(Error::invalid(
                            "INVALID_LEASE_DURATION",
                            format!(
                                "lease_duration must be between {}s and {}s",
                                MIN_LEASE.as_secs(),
                                MAX_LEASE.as_secs()
                            ),
                        ));
                    }
                    lease
                }
            };
            let wait = request
                .wait
                .map(|wait| self::duration("wait", wait))
                .transpose()?
                .unwrap_or_default()
                .min(self.max_wait);
            let _waiting = if wait.is_zero() {
                None
            } else {
                Some(Waiters::enter(&self.waiters, caller.who())?)
            };
            let _waiter = self.metrics.waiter();
            let deadline = caller.deadline.map_or(tokio::time::Instant::now() + wait, |caller| {
                caller.min(tokio::time::Instant::now() + wait)
            });
            let request = |now| ClaimRequest {
                parent: parent.clone(),
                queue: request.queue.clone(),
                worker: worker.clone(),
                lease_duration,
                now,
                within: within.clone(),
                limit,
            };
            let operations = claim_or_wait(
                self.store.as_ref(),
                &self.claim_waiters,
                request,
                || self.clock.now(),
                deadline,
                self.shutdown.cancelled(),
            )
            .await?;
            // One line per claim call, naming what it took.
            match operations.as_slice() {
                [] => {}
                [operation] => tracing::info!(op.name = %operation.name, attempt = operation.attempt, "claimed"),
                several => {
                    let names: Vec<String> = several.iter().map(|op| op.name.to_string()).collect();
                    tracing::info!(count = several.len(), op.names = ?names, "claimed");
                }
            }
            Ok(Claimed { operations, batch })
        })
        .await
    }

    /// Indexes the custom fields of operations an older version stored,
    /// so that filters on them see every operation. Runs once at start.
    pub(crate) async fn index_older_operations(self: Arc<Self>) {
        const BATCH: usize = 200;
        let mut total = 0usize;
        loop {
            let pending = match self.store.unindexed(BATCH).await {
                Ok(pending) => pending,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot index older operations' custom fields; filters on them may miss those");
                    return;
                }
            };
            if pending.is_empty() {
                break;
            }
            for operation in pending {
                let mut indexed = self.indexed(METADATA, operation.metadata.as_ref());
                indexed.extend(self.indexed(RESPONSE, operation.response.as_ref()));
                if let Err(err) = self.store.reindex(&operation.name, indexed).await {
                    tracing::warn!(op.name = %operation.name, error = %err, "cannot index an older operation's custom fields");
                    return;
                }
                total += 1;
            }
        }
        if total > 0 {
            tracing::info!(operations = total, "indexed the custom fields of older operations");
        }
    }

    /// The filterable values of a metadata or response payload.
    fn indexed(&self, root: &str, payload: Option<&Payload>) -> Vec<Indexed> {
        payload.map_or_else(Vec::new, |payload| self.registry.indexed(root, payload))
    }

    /// Enforces leases, timeouts, cancel grace and retention until shutdown.
    /// Every node runs one; the store's fenced statements make that safe.
    pub(crate) async fn sweep_until_shutdown(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.sweep_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            match self.store.sweep(self.clock.now(), self.sweep).await {
                Ok(events) => {
                    for event in events {
                        tracing::info!(op.name = %event.name, queue = event.queue.as_deref().unwrap_or(""), kind = ?event.kind, "swept");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "sweep failed; retrying at the next interval"),
            }
        }
    }

    /// The Prometheus text, with queue gauges read from the store now.
    pub(crate) async fn render_metrics(&self) -> String {
        match self.store.queue_stats().await {
            Ok(stats) => self.metrics.set_queues(&stats),
            Err(err) => tracing::warn!(error = %err, "cannot read queue statistics"),
        }
        self.metrics.render()
    }

    /// A producer's payload, checked against the registry so that nothing
    /// stored can later fail to serve.
    fn payload(&self, any: Option<prost_types::Any>) -> Result<Option<Payload>, Error> {
        let Some(any) = any else { return Ok(None) };
        let payload = any_to_payload(any);
        self.registry.check_payload(&payload)?;
        Ok(Some(payload))
    }

    /// Producer metadata, checked like [`Service::payload`], with its
    /// filterable values (read in the same decode).
    fn metadata(&self, any: Option<prost_types::Any>) -> Result<(Option<Payload>, Vec<Indexed>), Error> {
        let Some(any) = any else { return Ok((None, Vec::new())) };
        let payload = any_to_payload(any);
        let indexed = checked_fields(self.registry.check_and_index(METADATA, &payload)?)?;
        Ok((Some(payload), indexed))
    }
}

/// What a claim leased, and how the caller asked for it.
#[derive(Debug)]
pub struct Claimed {
    /// Oldest first; empty when nothing arrived in time.
    pub operations: Vec<Operation>,
    /// The caller set `max_operations`: answer in `claims`.
    pub batch: bool,
}

/// The wire answer to a claim: one operation in the response's own fields
/// (`{}` when none), or with `max_operations` every one in `claims`.
pub fn claim_response(claimed: Claimed) -> ClaimOperationResponse {
    if claimed.batch {
        return ClaimOperationResponse {
            claims: claimed.operations.iter().map(claimed_operation).collect(),
            ..ClaimOperationResponse::default()
        };
    }
    let Some(operation) = claimed.operations.first() else {
        return ClaimOperationResponse::default();
    };
    let ClaimedOperation {
        operation,
        input,
        lease_token,
        attempt,
        lease_expire_time,
    } = claimed_operation(operation);
    ClaimOperationResponse {
        operation,
        input,
        lease_token,
        attempt,
        lease_expire_time,
        claims: Vec::new(),
    }
}

fn claimed_operation(operation: &Operation) -> ClaimedOperation {
    let lease = operation.lease.as_ref();
    ClaimedOperation {
        input: operation.input.as_ref().map(longrun_proto::payload_to_any),
        attempt: operation.attempt,
        lease_token: lease.map(|lease| lease.token.clone()).unwrap_or_default(),
        lease_expire_time: lease.map(|lease| lease.expire_time.into()),
        operation: Some(longrun_proto::to_wire(operation)),
    }
}

fn duration(field: &str, value: prost_types::Duration) -> Result<Duration, Error> {
    Duration::try_from(value)
        .map_err(|_| Error::invalid("INVALID_DURATION", format!("{field} must be a non-negative duration")))
}

fn text(field: &str, value: String) -> Result<String, Error> {
    checked_text(field, value, MAX_TEXT)
}

fn optional_text(field: &str, value: String, limit: usize) -> Result<Option<String>, Error> {
    let value = checked_text(field, value, limit)?;
    Ok((!value.is_empty()).then_some(value))
}

/// A caller's text: at most `limit` bytes and no NUL, which no database
/// stores in text and which is never meant.
fn checked_text(field: &str, value: String, limit: usize) -> Result<String, Error> {
    if value.len() > limit {
        return Err(Error::invalid(
            "FIELD_TOO_LONG",
            format!("{field} is {} bytes; the limit is {limit}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(
            "INVALID_TEXT",
            format!("{field} contains a NUL character"),
        ));
    }
    Ok(value)
}

/// Filterable string values of a payload may not hold NUL either: they are
/// stored as text.
fn checked_fields(indexed: Vec<Indexed>) -> Result<Vec<Indexed>, Error> {
    if let Some(entry) = indexed.iter().find(|entry| match &entry.value {
        longrun_types::filter::Value::Text(text) => text.contains('\0'),
        _ => false,
    }) {
        return Err(Error::invalid(
            "INVALID_TEXT",
            format!("{} contains a NUL character", entry.path),
        ));
    }
    Ok(indexed)
}
