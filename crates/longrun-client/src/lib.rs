//! A typed client for longrun's REST API, which is also Google's
//! `google.longrunning.Operations` REST mapping, so it works against any
//! AIP-151 service that serves it.
//!
//! ```no_run
//! # async fn example() -> Result<(), longrun_client::Error> {
//! use std::time::Duration;
//! let client = longrun_client::Client::new("http://127.0.0.1:8080", None)?;
//! let op = client.create("projects/demo/locations/us", &longrun_client::CreateRequest {
//!     queue: Some("imports".into()),
//!     input: Some(serde_json::json!({"path": "data.csv"})),
//!     ..Default::default()
//! }).await?;
//! let done = client.poll_until_done(&op.name, Duration::from_secs(600), |op| {
//!     println!("{}%", op.standard_metadata().map_or(0, |m| m.progress_percent));
//! }).await?;
//! println!("{:?}", done.error);
//! # Ok(()) }
//! ```
//!
//! `https://` endpoints are verified against the system's certificate
//! store (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honored), with rustls on
//! `ring`: a process without a default rustls crypto provider gets ring's.
//!
//! Payloads (`metadata`, `response`, error details) are proto3 JSON values
//! with their `@type`, exactly as the server sent them; the standard
//! `longrun.v1.OperationMetadata` has a typed view in [`Metadata`].

mod poll;
mod watch;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use longrun_types::Code;

pub use poll::Backoff;
pub use watch::{Watch, WatchEvent};

/// `@type` of longrun's standard metadata.
pub const METADATA_TYPE: &str = "type.googleapis.com/longrun.v1.OperationMetadata";

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an AIP-193 error.
    #[error("{status}: {message}")]
    Api {
        code: Code,
        status: String,
        message: String,
        http_status: u16,
    },
    /// The request did not reach the server or the answer did not arrive.
    #[error("cannot reach {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    /// The server's answer was not what the API defines.
    #[error("unexpected response from the server: {0}")]
    Decode(String),
    /// The endpoint or a name is unusable.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The canonical code, for API errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// google.rpc.Status as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    pub code: i32,
    pub message: String,
    pub details: Vec<Value>,
}

/// google.longrunning.Operation as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// longrun's standard view of the operation (state, progress, verb,
    /// times), which the server sends beside it when asked for its longrun
    /// view (`?view=longrun`), whatever type the producer's metadata has.
    /// Not part of Google's `Operation`: never serialised.
    #[serde(skip)]
    pub standard: Option<Metadata>,
}

/// longrun.v1.OperationMetadata as JSON; absent fields are defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Metadata {
    pub create_time: Option<String>,
    pub update_time: Option<String>,
    pub end_time: Option<String>,
    pub target: String,
    pub verb: String,
    pub status_detail: String,
    pub cancel_requested: bool,
    pub api_version: String,
    /// `QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub state: String,
    pub progress_percent: i32,
    pub attempt: i32,
}

impl Operation {
    /// The standard metadata: longrun's view of the operation when the
    /// server sent one, else the metadata when it is of the standard type.
    pub fn standard_metadata(&self) -> Option<Metadata> {
        if let Some(standard) = &self.standard {
            return Some(standard.clone());
        }
        let metadata = self.metadata.as_ref()?;
        if metadata.get("@type")?.as_str()? != METADATA_TYPE {
            return None;
        }
        serde_json::from_value(metadata.clone()).ok()
    }

    /// True when done with an error whose code is 1 (CANCELLED).
    pub fn cancelled(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|error| error.code == Code::Cancelled.as_i32())
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ListPage {
    pub operations: Vec<Operation>,
    pub next_page_token: String,
    pub unreachable: Vec<String>,
}

/// Options for [`Client::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub filter: String,
    pub page_size: i32,
    pub page_token: String,
}

/// The body of a Create call (SPEC §3).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    /// A proto3 JSON duration, e.g. `"600s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A REST client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    /// False once the server refused `?view=longrun` (not a longrun server):
    /// operations are then read as Google's `Operation` alone.
    views: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// longrun.v1.OperationView as JSON.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct View {
    operation: Operation,
    standard: Option<Metadata>,
}

impl From<View> for Operation {
    fn from(view: View) -> Self {
        Self {
            standard: view.standard.or_else(|| Some(Metadata::default())),
            ..view.operation
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ViewPage {
    operations: Vec<View>,
    next_page_token: String,
    unreachable: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: EnvelopeError,
}

#[derive(Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

impl Client {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:8080`), sending
    /// `token` as a bearer token when given.
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Self, Error> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        // rustls without a built-in provider: ring, unless the process
        // chose one already (then this does nothing).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| Error::Usage(err.to_string()))?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            views: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn transport(&self, err: &reqwest::Error) -> Error {
        Error::Transport {
            endpoint: self.endpoint.clone(),
            reason: causes(err),
        }
    }

    /// The response if it succeeded, else its AIP-193 error.
    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, Error> {
        let http_status = response.status();
        if http_status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.map_err(|err| self.transport(&err))?;
        let (status, message) = match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(envelope) => (envelope.error.status, envelope.error.message),
            Err(_) => (String::new(), String::from_utf8_lossy(&bytes).trim().to_owned()),
        };
        let code = Code::from_name(&status).unwrap_or(Code::Unknown);
        let status = if status.is_empty() {
            format!("HTTP {}", http_status.as_u16())
        } else {
            status
        };
        Err(Error::Api {
            code,
            status,
            message,
            http_status: http_status.as_u16(),
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, Error> {
        let url = format!("{}/v1/{path}", self.endpoint);
        let mut request = self.http.request(method, &url).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| self.transport(&err))?;
        let response = self.check(response).await?;
        let bytes = response.bytes().await.map_err(|err| self.transport(&err))?;
        serde_json::from_slice(&bytes).map_err(|err| Error::Decode(err.to_string()))
    }

    /// Like [`call`](Self::call) for a method that answers with operations,
    /// asking for longrun's view of them (`?view=longrun`). A server that
    /// refuses the parameter (any other google.longrunning API) is asked
    /// again without it, and from then on never with it.
    async fn call_viewed<V: serde::de::DeserializeOwned, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Result<V, T>, Error> {
        use std::sync::atomic::Ordering;
        if self.views.load(Ordering::Relaxed) {
            let mut viewed = query.to_vec();
            viewed.push(("view", "longrun".to_owned()));
            match self.call(method.clone(), path, &viewed, body).await {
                Err(Error::Api {
                    code: Code::InvalidArgument,
                    ..
                }) => {}
                other => return other.map(Ok),
            }
            let plain = self.call(method, path, query, body).await?;
            // The same call without the view succeeded: the view was refused.
            self.views.store(false, Ordering::Relaxed);
            return Ok(Err(plain));
        }
        self.call(method, path, query, body).await.map(Err)
    }

    async fn operation(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Operation, Error> {
        Ok(
            match self.call_viewed::<View, Operation>(method, path, query, body).await? {
                Ok(view) => view.into(),
                Err(operation) => operation,
            },
        )
    }

    /// The operation, with its [standard view](Operation::standard) when the
    /// server is longrun.
    pub async fn get(&self, name: &str) -> Result<Operation, Error> {
        self.operation(reqwest::Method::GET, name, &[], None).await
    }

    /// One page of the operations under `parent` (`""` for top level).
    pub async fn list(&self, parent: &str, options: &ListOptions) -> Result<ListPage, Error> {
        let path = collection(parent);
        let mut query = Vec::new();
        if !options.filter.is_empty() {
            query.push(("filter", options.filter.clone()));
        }
        if options.page_size != 0 {
            query.push(("pageSize", options.page_size.to_string()));
        }
        if !options.page_token.is_empty() {
            query.push(("pageToken", options.page_token.clone()));
        }
        Ok(
            match self
                .call_viewed::<ViewPage, ListPage>(reqwest::Method::GET, &path, &query, None)
                .await?
            {
                Ok(page) => ListPage {
                    operations: page.operations.into_iter().map(Operation::from).collect(),
                    next_page_token: page.next_page_token,
                    unreachable: page.unreachable,
                },
                Err(page) => page,
            },
        )
    }

    pub async fn cancel(&self, name: &str) -> Result<(), Error> {
        let _: Value = self
            .call(
                reqwest::Method::POST,
                &format!("{name}:cancel"),
                &[],
                Some(&Value::Object(Default::default())),
            )
            .await?;
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        let _: Value = self.call(reqwest::Method::DELETE, name, &[], None).await?;
        Ok(())
    }

    /// Blocks on the server until the operation is done or `timeout` passes.
    pub async fn wait(&self, name: &str, timeout: Duration) -> Result<Operation, Error> {
        let body = serde_json::json!({ "timeout": duration_json(timeout) });
        self.operation(reqwest::Method::POST, &format!("{name}:wait"), &[], Some(&body))
            .await
    }

    /// Creates an operation under `parent` (longrun's producer API).
    pub async fn create(&self, parent: &str, request: &CreateRequest) -> Result<Operation, Error> {
        let path = collection(parent);
        let body = serde_json::to_value(request).map_err(|err| Error::Usage(err.to_string()))?;
        self.call(reqwest::Method::POST, &path, &[], Some(&body)).await
    }

    /// Reports progress; for a worker also the heartbeat that extends its
    /// lease. The answer says whether cancellation was requested.
    pub async fn update(&self, name: &str, request: &UpdateRequest) -> Result<UpdateResponse, Error> {
        let body = serde_json::to_value(request).map_err(|err| Error::Usage(err.to_string()))?;
        self.call(reqwest::Method::POST, &format!("{name}:update"), &[], Some(&body))
            .await
    }

    /// Finishes an operation with a response or an error.
    pub async fn complete(&self, name: &str, request: &CompleteRequest) -> Result<Operation, Error> {
        let body = serde_json::to_value(request).map_err(|err| Error::Usage(err.to_string()))?;
        self.call(reqwest::Method::POST, &format!("{name}:complete"), &[], Some(&body))
            .await
    }

    /// Hands a claimed operation back to its queue without spending an
    /// attempt (the worker is shutting down).
    pub async fn release(&self, name: &str, lease_token: &str) -> Result<Operation, Error> {
        let body = serde_json::json!({ "leaseToken": lease_token });
        self.call(reqwest::Method::POST, &format!("{name}:release"), &[], Some(&body))
            .await
    }

    /// Leases the next queued operation of `queue` under `parent`, waiting up
    /// to `wait` for one to arrive. `None` when none did.
    pub async fn claim(&self, parent: &str, request: &ClaimRequest) -> Result<Option<Claim>, Error> {
        let path = format!("{}:claim", collection(parent));
        let body = serde_json::to_value(request).map_err(|err| Error::Usage(err.to_string()))?;
        let claim: Claim = self.call(reqwest::Method::POST, &path, &[], Some(&body)).await?;
        Ok((!claim.lease_token.is_empty()).then_some(claim))
    }

    /// Completes several operations under `parent` in one call, each on its
    /// own: the answer for each, in order (`Ok` with the operation, or the
    /// error that completion alone met).
    pub async fn complete_many(
        &self,
        parent: &str,
        completions: &[(String, CompleteRequest)],
    ) -> Result<Vec<Result<Operation, Status>>, Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Answer {
            results: Vec<Value>,
        }
        let requests = completions
            .iter()
            .map(|(name, request)| {
                let mut body = serde_json::to_value(request).map_err(|err| Error::Usage(err.to_string()))?;
                body["name"] = name.clone().into();
                Ok(body)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let path = format!("{}:batchComplete", collection(parent));
        let body = serde_json::json!({ "requests": requests });
        let answer: Answer = self.call(reqwest::Method::POST, &path, &[], Some(&body)).await?;
        answer
            .results
            .into_iter()
            .map(|mut result| match result.get_mut("error") {
                Some(error) => Ok(Err(serde_json::from_value(error.take()).map_err(|err| {
                    Error::Usage(format!("the server answered an unreadable error: {err}"))
                })?)),
                None => Ok(Ok(serde_json::from_value(result["operation"].take()).map_err(
                    |err| Error::Usage(format!("the server answered an unreadable operation: {err}")),
                )?)),
            })
            .collect()
    }

    /// Leases up to `max` (1 to 100) queued operations of `queue` under
    /// `parent` in one call, oldest first, waiting up to `wait` for the
    /// first to arrive (not for the rest). Empty when none did.
    pub async fn claim_many(&self, parent: &str, request: &ClaimRequest, max: u32) -> Result<Vec<Claim>, Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Claims {
            claims: Vec<Claim>,
        }
        let path = format!("{}:claim", collection(parent));
        let mut body = serde_json::to_value(request).map_err(|err| Error::Usage(err.to_string()))?;
        body["maxOperations"] = max.into();
        let answer: Claims = self.call(reqwest::Method::POST, &path, &[], Some(&body)).await?;
        Ok(answer.claims)
    }
}

/// The body of an Update call.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_percent: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// What an Update answers.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct UpdateResponse {
    /// Stop and complete with code 1 (CANCELLED).
    pub cancel_requested: bool,
    pub lease_expire_time: Option<String>,
}

/// The body of a Complete call: exactly one of `response` and `error`.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    /// JSON; objects without `@type` become `google.protobuf.Struct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Status>,
    /// The error is transient: re-queue while attempts remain.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

/// The body of a Claim call.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    pub queue: String,
    pub worker: String,
    /// A proto3 JSON duration, e.g. `"30s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
}

/// A leased operation.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Claim {
    pub operation: Operation,
    /// The input as JSON with its `@type`.
    pub input: Option<Value>,
    /// Pass it to every Update and Complete; it fences off stale workers.
    pub lease_token: String,
    pub attempt: i32,
    pub lease_expire_time: Option<String>,
}

/// A duration in proto3 JSON form.
pub fn duration_json(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// The operations collection under `parent` (`""`: top level).
fn collection(parent: &str) -> String {
    if parent.is_empty() {
        "operations".to_owned()
    } else {
        format!("{parent}/operations")
    }
}

/// An error and its causes, `: `-separated; reqwest's own text names only
/// the request ("error sending request for url …"), its causes say why
/// (connection refused, an untrusted certificate).
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
