//! The example's own API method: start an import, answer with the Operation.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use crate::proto::{ImportDatasetMetadata, ImportDatasetRequest};
use longrun_proto::Registry;
use longrun_store::{NewOperation, Store};
use longrun_types::{OperationName, Parent, Payload, validate_id};

#[derive(Clone)]
pub struct Api {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
}

pub fn routes(api: Api) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/projects/{project}/locations/{location}/datasets:import",
            post(import),
        )
        .with_state(api)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImportBody {
    dataset_id: String,
    source_path: String,
    /// Retries with the same id get the same operation (AIP-155).
    #[serde(default)]
    request_id: Option<String>,
}

fn payload<M: prost::Name + prost::Message>(message: &M) -> Payload {
    Payload {
        type_url: format!("type.googleapis.com/{}", M::full_name()),
        value: message.encode_to_vec().into(),
    }
}

/// An AIP-193 error envelope.
fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": code}})),
    )
        .into_response()
}

async fn import(
    State(api): State<Api>,
    Path((project, location)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    // Like longrun's own routes, any content type is read as JSON.
    let body: ImportBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                format!("invalid request body: {err}"),
            );
        }
    };
    if let Err(why) = validate_id(&body.dataset_id) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("datasetId {:?} {why}", body.dataset_id),
        );
    }
    let parent = match Parent::parse(&format!("projects/{project}/locations/{location}")) {
        Ok(parent) => parent,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", err.to_string()),
    };
    let dataset = format!("{parent}/datasets/{}", body.dataset_id);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let Ok(name) = OperationName::new(parent, &id) else {
        unreachable!("a validated parent and a UUID make a name")
    };
    let input = ImportDatasetRequest {
        dataset: dataset.clone(),
        source_path: body.source_path,
    };
    let metadata = ImportDatasetMetadata {
        dataset: dataset.clone(),
        phase: "queued".into(),
        rows_read: 0,
    };
    let metadata = payload(&metadata);
    let new = NewOperation {
        request_id: body.request_id,
        input: Some(payload(&input)),
        indexed: api.registry.indexed("metadata", &metadata),
        metadata: Some(metadata),
        verb: "import".into(),
        target: dataset,
        api_version: "v1".into(),
        ..NewOperation::queued(name, crate::QUEUE, SystemTime::now())
    };
    let created = match api.store.create(new).await {
        Ok(created) => created,
        Err(err) => {
            tracing::error!(error = %err, "cannot start an import");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "cannot start the import; try again".into(),
            );
        }
    };
    match api.registry.to_json(
        "google.longrunning.Operation",
        &longrun_proto::to_wire(&created.operation),
    ) {
        Ok(operation) => Json(operation).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot render the operation");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error".into())
        }
    }
}
