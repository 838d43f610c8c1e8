//! Machine-readable descriptions of the REST API: a Google discovery
//! document (for google-api-python-client and other discovery-driven
//! clients) and OpenAPI 3. Both are generated from one table of parent
//! shapes so they cannot drift apart.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::Service;

/// Discovery resources: a path of resource names, and the regular
/// expression for an operation name under them. `(/[^/]+/[^/]+)*` admits
/// nested collections such as `…/datasets/d` (SPEC §1).
const SHAPES: &[(&[&str], &str, &str)] = &[
    (&[], "^operations/[^/]+$", ""),
    (
        &["projects"],
        "^projects/[^/]+(/[^/]+/[^/]+)*/operations/[^/]+$",
        "^projects/[^/]+(/[^/]+/[^/]+)*$",
    ),
    (
        &["projects", "locations"],
        "^projects/[^/]+/locations/[^/]+(/[^/]+/[^/]+)*/operations/[^/]+$",
        "^projects/[^/]+/locations/[^/]+(/[^/]+/[^/]+)*$",
    ),
    (
        &["locations"],
        "^locations/[^/]+(/[^/]+/[^/]+)*/operations/[^/]+$",
        "^locations/[^/]+(/[^/]+/[^/]+)*$",
    ),
];

/// OpenAPI paths cannot hold slashes in parameters, so each parent shape is
/// spelled out.
const OPENAPI_PARENTS: &[&str] = &[
    "",
    "projects/{project}",
    "projects/{project}/locations/{location}",
    "projects/{project}/locations/{location}/{collection}/{resource}",
    "locations/{location}",
];

fn root_url(service: &Service, headers: &HeaderMap) -> String {
    format!("{}/", service.exposure().public_base(headers))
}

fn name_param(pattern: &str, what: &str) -> Value {
    json!({"type": "string", "location": "path", "required": true, "pattern": pattern, "description": what})
}

fn discovery_methods(prefix: &str, name_pattern: &str, parent_pattern: &str) -> Value {
    let id = |method: &str| format!("longrun.{prefix}operations.{method}");
    let name = || name_param(name_pattern, "The operation's resource name.");
    let list = if parent_pattern.is_empty() {
        // As in Google's own documents: `name` is the collection itself,
        // so `operations().list(name="operations")` is GET /v1/operations.
        json!({
            "id": id("list"), "path": "v1/{+name}", "flatPath": "v1/operations", "httpMethod": "GET",
            "description": "Lists top-level operations, newest first.",
            "parameters": list_parameters(Some(name_param("^operations$", "Always \"operations\"."))),
            "parameterOrder": ["name"],
            "response": {"$ref": "ListOperationsResponse"},
        })
    } else {
        json!({
            "id": id("list"), "path": "v1/{+name}/operations", "httpMethod": "GET",
            "description": "Lists the operations under a parent, newest first.",
            "parameters": list_parameters(Some(name_param(parent_pattern, "The parent; \"-\" matches any id."))),
            "parameterOrder": ["name"],
            "response": {"$ref": "ListOperationsResponse"},
        })
    };
    json!({
        "get": {
            "id": id("get"), "path": "v1/{+name}", "httpMethod": "GET",
            "description": "Gets the latest state of an operation.",
            "parameters": {"name": name()}, "parameterOrder": ["name"],
            "response": {"$ref": "Operation"},
        },
        "list": list,
        "cancel": {
            "id": id("cancel"), "path": "v1/{+name}:cancel", "httpMethod": "POST",
            "description": "Asks for cancellation; queued operations end at once with code 1.",
            "parameters": {"name": name()}, "parameterOrder": ["name"],
            "request": {"$ref": "CancelOperationRequest"},
            "response": {"$ref": "Empty"},
        },
        "delete": {
            "id": id("delete"), "path": "v1/{+name}", "httpMethod": "DELETE",
            "description": "Deletes the operation's record; does not cancel it.",
            "parameters": {"name": name()}, "parameterOrder": ["name"],
            "response": {"$ref": "Empty"},
        },
        "wait": {
            "id": id("wait"), "path": "v1/{+name}:wait", "httpMethod": "POST",
            "description": "Waits until the operation is done or the timeout passes, then returns its latest state.",
            "parameters": {
                "name": name(),
                "timeout": {"type": "string", "format": "google-duration", "location": "query",
                            "description": "How long to wait, e.g. \"30s\"; capped by the server's --max-wait."},
            },
            "parameterOrder": ["name"],
            "response": {"$ref": "Operation"},
        },
    })
}

fn list_parameters(name: Option<Value>) -> Value {
    let mut parameters = json!({
        "filter": {"type": "string", "location": "query", "description": "An AIP-160 filter."},
        "pageSize": {"type": "integer", "format": "int32", "location": "query",
                     "description": "0 means 50; at most 1000."},
        "pageToken": {"type": "string", "location": "query"},
        "returnPartialSuccess": {"type": "boolean", "location": "query"},
    });
    if let (Some(name), Value::Object(map)) = (name, &mut parameters) {
        map.insert("name".into(), name);
    }
    parameters
}

fn discovery_schemas() -> Value {
    let any = json!({"type": "object", "additionalProperties": {"type": "any"},
                     "description": "A message with an \"@type\" naming its type."});
    json!({
        "Operation": {"id": "Operation", "type": "object", "properties": {
            "name": {"type": "string"},
            "metadata": any,
            "done": {"type": "boolean"},
            "error": {"$ref": "Status"},
            "response": any,
        }},
        "Status": {"id": "Status", "type": "object", "properties": {
            "code": {"type": "integer", "format": "int32"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": any},
        }},
        "ListOperationsResponse": {"id": "ListOperationsResponse", "type": "object", "properties": {
            "operations": {"type": "array", "items": {"$ref": "Operation"}},
            "nextPageToken": {"type": "string"},
            "unreachable": {"type": "array", "items": {"type": "string"}},
        }},
        "CancelOperationRequest": {"id": "CancelOperationRequest", "type": "object", "properties": {}},
        "Empty": {"id": "Empty", "type": "object", "properties": {}},
    })
}

/// `GET /$discovery/rest?version=v1`.
pub(super) async fn discovery(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    let mut resources = Map::new();
    for (path, name_pattern, parent_pattern) in SHAPES {
        let prefix: String = path.iter().map(|resource| format!("{resource}.")).collect();
        let operations = json!({"methods": discovery_methods(&prefix, name_pattern, parent_pattern)});
        let mut level = &mut resources;
        for resource in *path {
            let entry = level
                .entry(resource.to_string())
                .or_insert_with(|| json!({"resources": {}}));
            level = match entry.get_mut("resources") {
                Some(Value::Object(map)) => map,
                _ => unreachable!("every resource is created with a resources map"),
            };
        }
        level.insert("operations".into(), operations);
    }
    let root = root_url(&service, &headers);
    let document = json!({
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "longrun:v1",
        "name": "longrun",
        "version": "v1",
        "title": "longrun Operations API",
        "description": "Long-running operations, wire-compatible with google.longrunning.Operations.",
        "protocol": "rest",
        "rootUrl": root,
        "servicePath": "",
        "baseUrl": root,
        "batchPath": "batch",
        "parameters": {
            "alt": {"type": "string", "location": "query", "default": "json", "enum": ["json"]},
            "$.xgafv": {"type": "string", "location": "query", "enum": ["1", "2"]},
        },
        "schemas": discovery_schemas(),
        "resources": resources,
    });
    axum::Json(document).into_response()
}

fn openapi_parameters(template: &str) -> Vec<Value> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            // Every id and collection segment (SPEC §1).
            json!({"name": name, "in": "path", "required": true,
                   "schema": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,63}$"}})
        })
        .collect()
}

fn openapi_operation(summary: &str, parameters: Vec<Value>, body: Option<&str>, response: &str) -> Value {
    let mut operation = json!({
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
            "default": {"description": "An AIP-193 error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}},
        },
    });
    if let (Some(body), Value::Object(map)) = (body, &mut operation) {
        map.insert(
            "requestBody".into(),
            json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}}),
        );
    }
    operation
}

/// `GET /openapi.json`.
pub(super) async fn openapi(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    let mut paths = Map::new();
    for parent in OPENAPI_PARENTS {
        let collection = if parent.is_empty() {
            "/v1/operations".to_owned()
        } else {
            format!("/v1/{parent}/operations")
        };
        let operation = format!("{collection}/{{operation}}");
        let list_params = openapi_parameters(&collection);
        let mut query = list_params.clone();
        for (name, kind) in [
            ("filter", "string"),
            ("pageSize", "integer"),
            ("pageToken", "string"),
            ("returnPartialSuccess", "boolean"),
        ] {
            query.push(json!({"name": name, "in": "query", "schema": {"type": kind}}));
        }
        let op_params = openapi_parameters(&operation);
        let mut wait_params = op_params.clone();
        wait_params.push(json!({"name": "timeout", "in": "query", "schema": {"type": "string", "example": "30s"}}));
        paths.insert(collection.clone(), json!({
            "get": openapi_operation("List operations, newest first", query, None, "ListOperationsResponse"),
            "post": openapi_operation("Create an operation (producer API)", list_params.clone(), Some("CreateOperationRequest"), "Operation"),
        }));
        paths.insert(format!("{collection}:batchComplete"), json!({
            "post": openapi_operation("Complete several operations under the parent, each on its own (worker API)", list_params.clone(), Some("BatchCompleteOperationsRequest"), "BatchCompleteOperationsResponse"),
        }));
        paths.insert(format!("{collection}:claim"), json!({
            "post": openapi_operation("Claim the next queued operation, or several (worker API)", list_params, Some("ClaimOperationRequest"), "ClaimOperationResponse"),
        }));
        paths.insert(
            operation.clone(),
            json!({
                "get": openapi_operation("Get an operation", op_params.clone(), None, "Operation"),
                "delete": openapi_operation("Delete an operation's record", op_params.clone(), None, "Empty"),
            }),
        );
        for (verb, summary, body, response) in [
            ("cancel", "Request cancellation", Some("Empty"), "Empty"),
            (
                "wait",
                "Wait until done or timeout",
                Some("WaitOperationRequest"),
                "Operation",
            ),
            (
                "update",
                "Report progress (producer/worker API)",
                Some("UpdateOperationRequest"),
                "UpdateOperationResponse",
            ),
            (
                "complete",
                "Finish with a response or an error (producer/worker API)",
                Some("CompleteOperationRequest"),
                "Operation",
            ),
            (
                "release",
                "Hand a claimed operation back to its queue (worker API)",
                Some("ReleaseOperationRequest"),
                "Operation",
            ),
        ] {
            let params = if verb == "wait" {
                wait_params.clone()
            } else {
                op_params.clone()
            };
            paths.insert(
                format!("{operation}:{verb}"),
                json!({"post": openapi_operation(summary, params, body, response)}),
            );
        }
    }
    let any = json!({"type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": true});
    let duration = json!({"type": "string", "pattern": "^[0-9]{1,10}(\\.[0-9]{1,9})?s$", "example": "30s"});
    let status = json!({"type": "object", "properties": {
        "code": {"type": "integer"}, "message": {"type": "string"}, "details": {"type": "array", "items": any}}});
    let operation_schema = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "metadata": any, "done": {"type": "boolean"},
        "error": {"$ref": "#/components/schemas/Status"}, "response": any}});
    let document = json!({
        "openapi": "3.0.3",
        "info": {"title": "longrun Operations API", "version": "v1",
                 "description": "google.longrunning.Operations over REST, plus longrun's producer and worker calls."},
        "servers": [{"url": root_url(&service, &headers).trim_end_matches('/')}],
        "paths": paths,
        "components": {"schemas": {
            "Operation": operation_schema,
            "Status": status,
            "Empty": {"type": "object"},
            "ListOperationsResponse": {"type": "object", "properties": {
                "operations": {"type": "array", "items": {"$ref": "#/components/schemas/Operation"}},
                "nextPageToken": {"type": "string"},
                "unreachable": {"type": "array", "items": {"type": "string"}}}},
            "WaitOperationRequest": {"type": "object", "properties": {"timeout": duration}},
            "CreateOperationRequest": {"type": "object", "properties": {
                "operationId": {"type": "string"}, "requestId": {"type": "string"}, "queue": {"type": "string"},
                "input": any, "metadata": any, "verb": {"type": "string"}, "target": {"type": "string"},
                "apiVersion": {"type": "string"},
                "maxAttempts": {"type": "integer", "minimum": 0, "maximum": 100}, "timeout": duration}},
            "UpdateOperationRequest": {"type": "object", "properties": {
                "leaseToken": {"type": "string"}, "metadata": any,
                "progressPercent": {"type": "integer", "minimum": 0, "maximum": 100},
                "statusDetail": {"type": "string"}}},
            "UpdateOperationResponse": {"type": "object", "properties": {
                "cancelRequested": {"type": "boolean"}, "leaseExpireTime": {"type": "string", "format": "date-time"}}},
            "CompleteOperationRequest": {"type": "object", "properties": {
                "leaseToken": {"type": "string"}, "response": any, "error": {"$ref": "#/components/schemas/Status"},
                "retryable": {"type": "boolean"}}},
            "ReleaseOperationRequest": {"type": "object", "required": ["leaseToken"], "properties": {
                "leaseToken": {"type": "string"}}},
            "BatchCompleteOperationsRequest": {"type": "object", "required": ["requests"], "properties": {
                "requests": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"allOf": [
                    {"$ref": "#/components/schemas/CompleteOperationRequest"},
                    {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}]}}}},
            "BatchCompleteOperationsResponse": {"type": "object", "properties": {
                "results": {"type": "array", "items": {"type": "object", "properties": {
                    "operation": {"$ref": "#/components/schemas/Operation"},
                    "error": {"$ref": "#/components/schemas/Status"}}}}}},
            "ClaimOperationRequest": {"type": "object", "required": ["queue"], "properties": {
                "queue": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,63}$"}, "worker": {"type": "string"},
                "leaseDuration": duration, "wait": duration,
                "maxOperations": {"type": "integer", "minimum": 0, "maximum": 100}}},
            "ClaimOperationResponse": {"type": "object", "properties": {
                "operation": {"$ref": "#/components/schemas/Operation"}, "input": any, "leaseToken": {"type": "string"},
                "attempt": {"type": "integer"}, "leaseExpireTime": {"type": "string", "format": "date-time"},
                "claims": {"type": "array", "items": {"$ref": "#/components/schemas/ClaimedOperation"}}}},
            "ClaimedOperation": {"type": "object", "properties": {
                "operation": {"$ref": "#/components/schemas/Operation"}, "input": any, "leaseToken": {"type": "string"},
                "attempt": {"type": "integer"}, "leaseExpireTime": {"type": "string", "format": "date-time"}}},
            "ErrorEnvelope": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "integer"}, "message": {"type": "string"}, "status": {"type": "string"},
                "details": {"type": "array", "items": any}}}}},
        }},
    });
    axum::Json(document).into_response()
}
