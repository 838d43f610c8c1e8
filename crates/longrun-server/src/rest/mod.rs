//! REST: Google's HTTP/JSON mapping of the API (AIP-127/136), proto3 JSON
//! throughout. Paths under `/v1/` are routed by hand because resource names
//! contain slashes: `{name=**/operations/*}` and `{parent=**}/operations`
//! with an optional `:verb` suffix.

mod documents;
pub(crate) mod guard;
mod rendered;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::core::Page;
use crate::rest::rendered::Rendered;
use crate::{Caller, Error, RequestId, Service, claim_response};
use longrun_proto::google::longrunning::{ListOperationsRequest, WaitOperationRequest};
use longrun_proto::google::rpc::{ErrorInfo, RequestInfo};
use longrun_proto::longrun::v1::{
    BatchCompleteOperationsRequest, ClaimOperationRequest, CompleteOperationRequest, CreateOperationRequest,
    ReleaseOperationRequest, UpdateOperationRequest,
};
use longrun_proto::{Enums, TYPE_URL_PREFIX, operation_view, to_wire, type_untyped};
use longrun_types::{Code, Operation};

type Shared = Arc<Service>;

pub(crate) fn router(service: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/$discovery/rest", get(documents::discovery))
        .route("/openapi.json", get(documents::openapi))
        .route("/v1/{*path}", any(dispatch))
        .layer(Extension(Arc::new(Rendered::new())))
        .merge(crate::console::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .fallback(unknown_path)
        .method_not_allowed_fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            guard::check_browser,
        ))
        .with_state(service)
}

/// Paths and methods outside the API get the same JSON errors as the API.
async fn unknown_path(
    State(service): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    method: Method,
    uri: Uri,
) -> Response {
    let err = Error::new(
        Code::NotFound,
        "UNKNOWN_METHOD",
        format!("no REST method {method} {}; see /openapi.json", uri.path()),
    );
    error_response(&service, &request_id, &err)
}

/// The most a request body may hold: ample for any payload the API takes.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// True when `E` is somewhere in `err`'s chain of causes.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(error) = cause {
        if error.is::<E>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Refuses a path whose meaning a proxy and longrun could read apart: an
/// encoded `/` (one resource, many URLs) or a `.`/`..` segment.
fn check_raw_path(uri: &Uri) -> Result<(), Error> {
    let path = uri.path();
    if path.to_ascii_lowercase().contains("%2f") {
        return Err(Error::invalid(
            "INVALID_PATH",
            "the path contains an encoded \"/\" (%2F); resource names are written with plain slashes",
        ));
    }
    let dots = path.split('/').any(|segment| {
        let segment = segment.to_ascii_lowercase().replace("%2e", ".");
        segment == "." || segment == ".."
    });
    if dots {
        return Err(Error::invalid(
            "INVALID_PATH",
            "the path contains a \".\" or \"..\" segment, which names no resource",
        ));
    }
    Ok(())
}

async fn readyz(State(service): State<Shared>) -> Response {
    match service.store().check_ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n").into_response()
        }
    }
}

/// Metrics name queues and counts calls: any valid token may read them.
async fn metrics(
    State(service): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(|value| value.as_bytes());
    if let Err(err) = service.access().authenticate(authorization) {
        return error_response(&service, &request_id, &err);
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], service.render_metrics().await).into_response()
}

/// The one place a canonical code becomes an HTTP status.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// The AIP-193 error envelope, with ErrorInfo (and RequestInfo for faults).
pub(crate) fn error_response(service: &Service, request_id: &str, err: &Error) -> Response {
    err.log(request_id);
    let (status, body) = error_body(service, request_id, err);
    let mut response = (status, axum::Json(body)).into_response();
    if err.code == Code::Unauthenticated {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"longrun\""),
        );
    }
    response
}

/// An error's HTTP status and AIP-193 body.
pub(crate) fn error_body(service: &Service, request_id: &str, err: &Error) -> (StatusCode, Value) {
    // A body over the limit is 413 and one too slow 408, as HTTP says,
    // whatever their codes.
    let status = match err.reason {
        "REQUEST_TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
        "BODY_TIMEOUT" => StatusCode::REQUEST_TIMEOUT,
        "UNSUPPORTED_CONTENT_TYPE" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => http_status(err.code),
    };
    let mut details = vec![detail(
        service,
        "google.rpc.ErrorInfo",
        &ErrorInfo {
            reason: err.reason.to_owned(),
            domain: crate::grpc::ERROR_DOMAIN.to_owned(),
            metadata: err.info_metadata(request_id),
        },
    )];
    if status.is_server_error() {
        details.push(detail(
            service,
            "google.rpc.RequestInfo",
            &RequestInfo {
                request_id: request_id.to_owned(),
                serving_data: String::new(),
            },
        ));
    }
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": err.public_message(request_id),
            "status": err.code.name(),
            "details": details,
        }
    });
    (status, body)
}

fn detail<M: prost::Message>(service: &Service, type_name: &str, message: &M) -> Value {
    let any = prost_types::Any {
        type_url: format!("{TYPE_URL_PREFIX}{type_name}"),
        value: message.encode_to_vec(),
    };
    // Built-in detail types always serialise.
    service
        .registry()
        .to_json("google.protobuf.Any", &any)
        .unwrap_or(Value::Null)
}

/// A routed REST call: `{target}` and an optional `:verb`.
#[derive(Debug)]
struct Call<'a> {
    target: &'a str,
    verb: Option<&'a str>,
    /// `target` is a collection (`…/operations`), not an operation.
    collection: bool,
}

impl<'a> Call<'a> {
    fn parse(path: &'a str) -> Self {
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (target, verb) = match path[last_slash..].find(':') {
            Some(colon) => (&path[..last_slash + colon], Some(&path[last_slash + colon + 1..])),
            None => (path, None),
        };
        // A collection has an odd number of segments ending in
        // `operations`; an operation's name an even number (so an operation
        // may be called `operations`).
        let segments = target.split('/').count();
        let collection = segments % 2 == 1 && (target == "operations" || target.ends_with("/operations"));
        Self {
            target,
            verb,
            collection,
        }
    }

    /// The parent of a collection path: `projects/p/operations` → `projects/p`.
    fn parent(&self) -> &'a str {
        self.target
            .strip_suffix("operations")
            .map_or("", |rest| rest.strip_suffix('/').unwrap_or(rest))
    }
}

async fn dispatch(
    State(service): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(rendered): Extension<Arc<Rendered>>,
    request: axum::http::request::Parts,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let axum::http::request::Parts {
        method,
        uri,
        headers,
        extensions,
        ..
    } = request;
    let connection = extensions
        .get::<crate::connections::ConnectionClose>()
        .map(|close| close.0.clone());
    drop(extensions);
    let principal = service
        .access()
        .authenticate(headers.get(header::AUTHORIZATION).map(|value| value.as_bytes()));
    let principal = match principal {
        Ok(principal) => principal,
        Err(err) => return error_response(&service, &request_id, &err),
    };
    let caller = Caller {
        request_id: request_id.clone(),
        protocol: "rest",
        principal,
        deadline: None,
    };
    let result = handle(
        (&service, &rendered),
        &caller,
        &method,
        uri,
        headers,
        connection,
        (path, query, body),
    )
    .await;
    match result {
        Ok(response) => response,
        Err(err) => error_response(&service, &request_id, &err),
    }
}

/// The extractors' results, checked in [`handle`].
type Extracted = (
    Result<Path<String>, PathRejection>,
    Result<Query<HashMap<String, String>>, QueryRejection>,
    Result<Bytes, BytesRejection>,
);

/// Checks the request and routes it. Takes the URI, headers and body by
/// value: they are slices of the connection's read buffer, and a call can
/// block for minutes (Wait, a claim's long-poll), so they are dropped (the
/// body copied) before routing, letting hyper free that buffer while the
/// call waits (BENCHMARKS.md, 10,000 Waits).
async fn handle(
    (service, rendered): (&Shared, &Rendered),
    caller: &Caller,
    method: &Method,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<CancellationToken>,
    (path, query, body): Extracted,
) -> Result<Response, Error> {
    check_raw_path(&uri)?;
    drop(uri);
    let body = body.map_err(|err| match err.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::new(
            Code::ResourceExhausted,
            "REQUEST_TOO_LARGE",
            format!("the request body is over the limit of {MAX_BODY} bytes"),
        ),
        _ if caused_by::<crate::connections::BodyTimeout>(&err) => Error::new(
            Code::DeadlineExceeded,
            "BODY_TIMEOUT",
            "the request body did not arrive in time",
        ),
        _ => Error::invalid(
            "INVALID_BODY",
            format!("cannot read the request body: {}", err.body_text()),
        ),
    })?;
    let Path(path) = path.map_err(|err| Error::invalid("INVALID_PATH", err.body_text()))?;
    let Query(query) = query.map_err(|err| Error::invalid("INVALID_QUERY", err.body_text()))?;
    let enums = system_parameters(&query)?;
    let call = Call::parse(&path);
    if method == Method::GET && call.collection && call.verb == Some("watch") {
        return watch::open(service, caller, call.parent(), &query, &headers, connection, enums).await;
    }
    drop(headers);
    // A copy of the bytes, and the slice let go. (`Vec::from` would keep
    // the whole read buffer when the slice is its last owner.)
    let body = {
        let copy = body.to_vec();
        drop(body);
        copy
    };
    Ok(
        match route((service, rendered), caller, method, &call, &query, &body, enums).await? {
            Reply::Json(json) => (StatusCode::OK, axum::Json(json)).into_response(),
            Reply::Rendered(json) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                json,
            )
                .into_response(),
        },
    )
}

/// What a call answers: JSON made for it, or one operation written
/// straight to JSON text (kept by [`Rendered`] for Get and Wait).
enum Reply {
    Json(Value),
    Rendered(Bytes),
}

/// Google's system parameters: `alt` (or `$alt`) and `$.xgafv`. Only JSON
/// is served; `json;enum-encoding=int` (what Google's generated clients
/// send) asks for enum values as numbers.
fn system_parameters(query: &HashMap<String, String>) -> Result<Enums, Error> {
    if let Some(version) = query.get("$.xgafv").filter(|v| !matches!(v.as_str(), "1" | "2")) {
        return Err(Error::invalid(
            "UNSUPPORTED_XGAFV",
            format!("$.xgafv={version} is not supported; use 1 or 2"),
        ));
    }
    let mut enums = Enums::Names;
    for alt in ["alt", "$alt"].iter().filter_map(|key| query.get(*key)) {
        match alt.as_str() {
            "json" => {}
            "json;enum-encoding=int" => enums = Enums::Numbers,
            _ => {
                return Err(Error::invalid(
                    "UNSUPPORTED_ALT",
                    format!("alt={alt} is not supported; this API serves alt=json (optionally json;enum-encoding=int)"),
                ));
            }
        }
    }
    Ok(enums)
}

/// Calls the service. Each call's future is boxed: a blocked Wait or claim
/// then holds its own state, not room for the largest of them all (10,000
/// Waits: BENCHMARKS.md).
async fn route(
    (service, rendered): (&Service, &Rendered),
    caller: &Caller,
    method: &Method,
    call: &Call<'_>,
    query: &HashMap<String, String>,
    body: &[u8],
    enums: Enums,
) -> Result<Reply, Error> {
    let registry = service.registry();
    let view = view_param(query)?;
    // An operation written straight to JSON text: the whole answer, or a
    // part of a List page.
    let render_text = |operation: &Operation| operation_text(service, operation, view, enums);
    let answer_with = |operation: &Operation| render_text(operation).map(Reply::Rendered);
    // Get and Wait read one operation, often again and again in the same
    // state (a caller polling it, the Waits on it): rendered once per state.
    let render_read = |operation: &Operation| rendered.json(operation, view, enums, render_text).map(Reply::Rendered);
    let answer = match (method.as_str(), call.verb, call.collection) {
        ("GET", None, true) => {
            let request = ListOperationsRequest {
                name: call.parent().to_owned(),
                filter: param(query, "filter", "filter").unwrap_or_default(),
                page_size: match param(query, "pageSize", "page_size") {
                    None => 0,
                    Some(size) => size.parse().map_err(|_| {
                        Error::invalid(
                            "INVALID_PAGE_SIZE",
                            format!("pageSize must be an integer, got {size:?}"),
                        )
                    })?,
                },
                page_token: param(query, "pageToken", "page_token").unwrap_or_default(),
                return_partial_success: match param(query, "returnPartialSuccess", "return_partial_success") {
                    None => false,
                    Some(flag) => flag.parse().map_err(|_| {
                        Error::invalid(
                            "INVALID_QUERY",
                            format!("returnPartialSuccess must be true or false, got {flag:?}"),
                        )
                    })?,
                },
            };
            let page = Box::pin(service.list(caller, request)).await?;
            return Ok(Reply::Rendered(list_text(&page, caller, render_text)));
        }
        ("GET", None, false) => return render_read(&Box::pin(service.get(caller, call.target)).await?),
        ("DELETE", None, false) => {
            Box::pin(service.delete(caller, call.target)).await?;
            Ok(json!({}))
        }
        ("POST", Some("cancel"), false) => {
            json_body(body)?;
            Box::pin(service.cancel(caller, call.target)).await?;
            Ok(json!({}))
        }
        ("POST", Some("wait"), false) => {
            let mut json = json_body(body)?;
            if let (Some(timeout), Value::Object(map)) = (query.get("timeout"), &mut json) {
                map.entry("timeout").or_insert_with(|| Value::String(timeout.clone()));
            }
            let request: WaitOperationRequest =
                decode(service, "google.longrunning.WaitOperationRequest", json, call.target)?;
            return render_read(&Box::pin(service.wait(caller, call.target, request.timeout)).await?);
        }
        ("POST", None, true) => {
            let mut json = json_body(body)?;
            type_fields(&mut json, &["input", "metadata"]);
            set_resource(&mut json, "parent", call.parent())?;
            let request: CreateOperationRequest = registry.from_json("longrun.v1.CreateOperationRequest", &json)?;
            return answer_with(&Box::pin(service.create(caller, request)).await?);
        }
        ("POST", Some("update"), false) => {
            let mut json = json_body(body)?;
            type_fields(&mut json, &["metadata"]);
            let request: UpdateOperationRequest =
                decode(service, "longrun.v1.UpdateOperationRequest", json, call.target)?;
            let response = Box::pin(service.update(caller, request)).await?;
            let mut json = registry
                .to_json_with("longrun.v1.UpdateOperationResponse", &response, enums)
                .map_err(|err| Error::internal(err.to_string()))?;
            // A worker reads this field on every heartbeat: always present.
            if let Value::Object(fields) = &mut json {
                fields.entry("cancelRequested").or_insert(Value::Bool(false));
            }
            Ok(json)
        }
        ("POST", Some("complete"), false) => {
            let mut json = json_body(body)?;
            type_completion(&mut json);
            let request: CompleteOperationRequest =
                decode(service, "longrun.v1.CompleteOperationRequest", json, call.target)?;
            return answer_with(&Box::pin(service.complete(caller, request)).await?);
        }
        ("POST", Some("batchComplete"), true) => {
            let mut json = json_body(body)?;
            if let Some(Value::Array(requests)) = json.get_mut("requests") {
                requests.iter_mut().for_each(type_completion);
            }
            set_resource(&mut json, "parent", call.parent())?;
            let request: BatchCompleteOperationsRequest =
                registry.from_json("longrun.v1.BatchCompleteOperationsRequest", &json)?;
            let response = Box::pin(service.batch_complete(caller, request)).await?;
            return registry
                .batch_complete_json_bytes(&response, enums)
                .map(|text| Reply::Rendered(text.into()))
                .map_err(|err| Error::internal(format!("cannot serve completed operations: {err}")));
        }
        ("POST", Some("release"), false) => {
            let json = json_body(body)?;
            let request: ReleaseOperationRequest =
                decode(service, "longrun.v1.ReleaseOperationRequest", json, call.target)?;
            return answer_with(&Box::pin(service.release(caller, request)).await?);
        }
        ("POST", Some("claim"), true) => {
            let mut json = json_body(body)?;
            set_resource(&mut json, "parent", call.parent())?;
            let request: ClaimOperationRequest = registry.from_json("longrun.v1.ClaimOperationRequest", &json)?;
            let response = claim_response(Box::pin(service.claim(caller, request)).await?);
            return registry
                .claim_json_bytes(&response, enums)
                .map(|text| Reply::Rendered(text.into()))
                .map_err(|err| Error::internal(format!("cannot serve a claimed operation: {err}")));
        }
        _ => Err(Error::new(
            Code::NotFound,
            "UNKNOWN_METHOD",
            format!(
                "no REST method {method} /v1/{}{}; see /openapi.json",
                call.target,
                call.verb.map(|verb| format!(":{verb}")).unwrap_or_default()
            ),
        )),
    };
    answer.map(Reply::Json)
}

/// A List page as JSON text, each operation written on its own: one whose
/// payload type is no longer registered is named in `unreachable` (and
/// logged) rather than failing the page.
fn list_text(page: &Page, caller: &Caller, render_text: impl Fn(&Operation) -> Result<Bytes, Error>) -> Bytes {
    let mut text = Vec::with_capacity(64 + 512 * page.operations.len());
    let mut unreachable = Vec::new();
    for operation in &page.operations {
        match render_text(operation) {
            Ok(json) => {
                text.extend_from_slice(if text.is_empty() { b"{\"operations\":[" } else { b"," });
                text.extend_from_slice(&json);
            }
            Err(err) => {
                err.log(&caller.request_id);
                unreachable.push(operation.name.to_string());
            }
        }
    }
    if !text.is_empty() {
        text.push(b']');
    }
    if !page.next_page_token.is_empty() {
        json_field(&mut text, "nextPageToken", &page.next_page_token);
    }
    if !unreachable.is_empty() {
        json_field(&mut text, "unreachable", &unreachable);
    }
    if text.is_empty() {
        text.push(b'{');
    }
    text.push(b'}');
    text.into()
}

/// Appends `"name":value` to an object being written (its `{` written
/// here when it is the first field).
fn json_field(text: &mut Vec<u8>, name: &str, value: &impl serde::Serialize) {
    text.extend_from_slice(if text.is_empty() { b"{\"" } else { b",\"" });
    text.extend_from_slice(name.as_bytes());
    text.extend_from_slice(b"\":");
    // Strings and lists of strings always serialize.
    let _ = serde_json::to_writer(&mut *text, value);
}

/// Gives a completion's untyped JSON payloads (its response, its error's
/// details) their `@type`, as Complete accepts them.
fn type_completion(json: &mut Value) {
    type_fields(json, &["response"]);
    if let Some(Value::Array(details)) = json.pointer_mut("/error/details") {
        details.iter_mut().for_each(type_untyped);
    }
}

/// A query parameter by its JSON (camelCase) or proto (snake_case) name.
fn param(query: &HashMap<String, String>, json_name: &str, proto_name: &str) -> Option<String> {
    query.get(json_name).or_else(|| query.get(proto_name)).cloned()
}

/// The request body as JSON; an empty body is `{}`.
fn json_body(body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| Error::invalid("INVALID_JSON", format!("the request body is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(Error::invalid("INVALID_JSON", "the request body must be a JSON object"));
    }
    Ok(value)
}

/// Untyped JSON payloads become `Struct` (or `Value`), per SPEC §1.
fn type_fields(json: &mut Value, fields: &[&str]) {
    for field in fields {
        if let Some(value) = json.get_mut(*field) {
            type_untyped(value);
        }
    }
}

/// Puts the resource from the URL into the body's field, refusing a body
/// that names a different one.
fn set_resource(json: &mut Value, field: &str, resource: &str) -> Result<(), Error> {
    let Value::Object(map) = json else {
        return Ok(());
    };
    match map.get(field) {
        Some(Value::String(given)) if given != resource => Err(Error::invalid(
            "RESOURCE_MISMATCH",
            format!("the body's {field} {given:?} differs from the URL's {resource:?}"),
        )),
        Some(Value::String(_)) | None => {
            map.insert(field.to_owned(), Value::String(resource.to_owned()));
            Ok(())
        }
        Some(other) => Err(Error::invalid(
            "INVALID_JSON",
            format!("the body's {field} must be a string naming the resource, got {other}"),
        )),
    }
}

/// Decodes a body addressed to operation `name`.
fn decode<M: prost::Message + Default>(
    service: &Service,
    message: &str,
    mut json: Value,
    name: &str,
) -> Result<M, Error> {
    set_resource(&mut json, "name", name)?;
    Ok(service.registry().from_json(message, &json)?)
}

/// What Get, List and Wait return for each operation: the `Operation`
/// (what Google's clients expect), or with `?view=longrun` a
/// `longrun.v1.OperationView`, which adds the standard state, progress, verb
/// and times however the producer typed its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum View {
    Operation,
    Longrun,
}

fn view_param(query: &HashMap<String, String>) -> Result<View, Error> {
    match query.get("view").map(String::as_str) {
        None | Some("operation") => Ok(View::Operation),
        Some("longrun") => Ok(View::Longrun),
        Some(other) => Err(Error::invalid(
            "INVALID_VIEW",
            format!("view={other:?} is not a view; use view=operation (the default) or view=longrun"),
        )),
    }
}

/// `operation` in `view` as JSON text: the whole answer, or a part of one.
fn operation_text(service: &Service, operation: &Operation, view: View, enums: Enums) -> Result<Bytes, Error> {
    let registry = service.registry();
    match view {
        View::Operation => registry.operation_json_bytes(&to_wire(operation), enums),
        View::Longrun => registry.to_json_bytes_with(OPERATION_VIEW, &operation_view(operation), enums),
    }
    .map(Bytes::from)
    .map_err(|err| cannot_serve(operation, &err))
}

const OPERATION_VIEW: &str = "longrun.v1.OperationView";

fn cannot_serve(operation: &Operation, err: &longrun_proto::Error) -> Error {
    Error::internal(format!("cannot serve operation {}: {err}", operation.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_targets_and_verbs() {
        let call = Call::parse("projects/p/locations/l/operations/1:cancel");
        assert_eq!(
            (call.target, call.verb, call.collection),
            ("projects/p/locations/l/operations/1", Some("cancel"), false)
        );
        let call = Call::parse("projects/p/operations:claim");
        assert_eq!(
            (call.target, call.verb, call.collection, call.parent()),
            ("projects/p/operations", Some("claim"), true, "projects/p")
        );
        let call = Call::parse("operations");
        assert_eq!((call.collection, call.parent()), (true, ""));
        let call = Call::parse("operations/abc");
        assert_eq!(
            (call.target, call.verb, call.collection),
            ("operations/abc", None, false)
        );
        let call = Call::parse("projects/p/operations/operations:cancel");
        assert_eq!(
            (call.target, call.verb, call.collection),
            ("projects/p/operations/operations", Some("cancel"), false),
            "an operation called `operations`"
        );
    }

    #[test]
    fn every_code_has_an_http_status() {
        for code in Code::ALL {
            let status = http_status(code);
            assert_eq!(status.is_success(), code == Code::Ok, "{code}");
        }
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
    }
}
