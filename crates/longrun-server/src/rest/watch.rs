//! `GET /v1/{name=**}/operations:watch`: a watch stream as Server-Sent
//! Events, for browsers (`EventSource` reconnects with `Last-Event-ID` by
//! itself) and any HTTP client.
//!
//! Events, each with `id:` (the position to resume from) and JSON `data:`:
//! `operation` (a `longrun.v1.OperationView`), `removed` (`{name,
//! deleted}`), `synced` (`{nextPageToken?}`), `reset` (`{}`), and `end` (an
//! AIP-193 error body) last. Heartbeats are comments that move the id on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{error_body, param};
use crate::core::{WatchEvent, WatchSent};
use crate::{Caller, Error, Service};
use longrun_proto::longrun::v1::WatchOperationsRequest;
use longrun_proto::{Enums, operation_view};

/// Opens a stream on `parent`; errors in the request are answered as
/// usual, before any event.
pub(super) async fn open(
    service: &Arc<Service>,
    caller: &Caller,
    parent: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    connection: Option<CancellationToken>,
    enums: Enums,
) -> Result<Response, Error> {
    let page_size = match param(query, "pageSize", "page_size") {
        None => 0,
        Some(size) => size
            .parse()
            .map_err(|_| Error::invalid("INVALID_QUERY", format!("pageSize must be an integer, got {size:?}")))?,
    };
    // EventSource sends the last id it saw when it reconnects; other
    // clients may pass it in the query.
    let resume_token = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| param(query, "resumeToken", "resume_token"))
        .unwrap_or_default();
    let request = WatchOperationsRequest {
        name: parent.to_owned(),
        filter: param(query, "filter", "filter").unwrap_or_default(),
        page_size,
        resume_token,
    };
    let stream = service.watch(caller, request, connection).await?;
    let service = service.clone();
    let request_id = caller.request_id.clone();
    let events = stream.map(move |sent| Ok::<_, Infallible>(event(&service, &request_id, sent, enums)));
    let mut response = Sse::new(events).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn event(service: &Service, request_id: &str, sent: WatchSent, enums: Enums) -> SseEvent {
    // An event without an id leaves the client's last one as it was.
    let with_id = |event: SseEvent| match sent.position {
        Some(position) => event.id(position.to_string()),
        None => event,
    };
    let (kind, data): (&str, Value) = match sent.event {
        WatchEvent::Operation(operation) => {
            match service
                .registry()
                .to_json_with("longrun.v1.OperationView", &operation_view(&operation), enums)
            {
                Ok(view) => ("operation", view),
                Err(err) => {
                    // As in List: one that cannot be shown does not stop the rest.
                    Error::internal(format!("cannot serve operation {}: {err}", operation.name)).log(request_id);
                    return with_id(SseEvent::default().comment("an operation could not be rendered"));
                }
            }
        }
        WatchEvent::Removed { name, deleted } => ("removed", json!({"name": name, "deleted": deleted})),
        WatchEvent::Synced { next_page_token } if next_page_token.is_empty() => ("synced", json!({})),
        WatchEvent::Synced { next_page_token } => ("synced", json!({"nextPageToken": next_page_token})),
        WatchEvent::Reset => ("reset", json!({})),
        WatchEvent::Heartbeat => return with_id(SseEvent::default().comment("heartbeat")),
        WatchEvent::End(err) => {
            err.log_ending(request_id);
            ("end", error_body(service, request_id, &err).1)
        }
    };
    with_id(SseEvent::default().event(kind).data(data.to_string()))
}
