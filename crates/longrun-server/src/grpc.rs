//! gRPC: `google.longrunning.Operations`, `longrun.v1.Control`, health and
//! reflection (v1 and v1alpha), served through the same axum router as REST.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::core::{WatchEvent, WatchSent};
use crate::{Caller, Error, RequestId, Service, claim_response};
use longrun_proto::google::longrunning::operations_server::{Operations, OperationsServer};
use longrun_proto::google::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest, ListOperationsResponse,
    Operation, WaitOperationRequest,
};
use longrun_proto::longrun::v1::control_server::{Control, ControlServer};
use longrun_proto::longrun::v1::watch_operations_response::Event as WireEvent;
use longrun_proto::longrun::v1::watch_server::{Watch, WatchServer};
use longrun_proto::longrun::v1::{
    BatchCompleteOperationsRequest, BatchCompleteOperationsResponse, ClaimOperationRequest, ClaimOperationResponse,
    CompleteOperationRequest, CreateOperationRequest, ReleaseOperationRequest, UpdateOperationRequest,
    UpdateOperationResponse,
};
use longrun_proto::longrun::v1::{Heartbeat, Removed, Reset, Synced, WatchOperationsRequest, WatchOperationsResponse};
use longrun_proto::{operation_view, to_wire};
use longrun_types::Code;

/// The `domain` of every ErrorInfo longrun sends.
pub(crate) const ERROR_DOMAIN: &str = "longrun.dev";

pub(crate) fn router(service: Arc<Service>) -> axum::Router {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Serving from the start: the store was opened before the server runs.
    tokio::spawn(async move {
        health.set_serving::<OperationsServer<Grpc>>().await;
        health.set_serving::<ControlServer<Grpc>>().await;
        health.set_serving::<WatchServer<Grpc>>().await;
    });
    let descriptors = service.registry().encoded_file_descriptor_set();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .build_v1alpha();
    let operations = OperationsServer::new(Grpc(service.clone())).max_decoding_message_size(crate::rest::MAX_BODY);
    let control = ControlServer::new(Grpc(service.clone())).max_decoding_message_size(crate::rest::MAX_BODY);
    let watch = WatchServer::new(Grpc(service.clone())).max_decoding_message_size(crate::rest::MAX_BODY);
    let mut routes = tonic::service::Routes::new(operations)
        .add_service(control)
        .add_service(watch)
        .add_service(health_service);
    match (reflection_v1, reflection_v1alpha) {
        (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "gRPC reflection is unavailable")
        }
    }
    routes
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(service, count_refusals))
}

/// Set by a handler once it serves a call (the core counts those); a call
/// refused before (a message that does not decode, one over the size
/// limit, an unknown method) is counted here instead.
#[derive(Debug, Clone, Default)]
struct Handled(Arc<AtomicBool>);

/// The methods whose refusals are counted under their own name.
const METHODS: &[&str] = &[
    "GetOperation",
    "ListOperations",
    "CancelOperation",
    "DeleteOperation",
    "WaitOperation",
    "CreateOperation",
    "UpdateOperation",
    "CompleteOperation",
    "ClaimOperation",
    "ReleaseOperation",
    "WatchOperations",
];

async fn count_refusals(
    axum::extract::State(service): axum::extract::State<Arc<Service>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let handled = Handled::default();
    request.extensions_mut().insert(handled.clone());
    let called = request.uri().path().rsplit('/').next().unwrap_or_default();
    let method = METHODS.iter().find(|known| **known == called).copied();
    let started = Instant::now();
    let response = next.run(request).await;
    let refused = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .and_then(Code::from_i32);
    if let (Some(code), false) = (refused, handled.0.load(Ordering::Relaxed)) {
        service
            .metrics
            .request(method.unwrap_or("unknown"), "grpc", code, started.elapsed());
    }
    response
}

/// The one place a canonical code becomes a gRPC code.
fn grpc_code(code: Code) -> tonic::Code {
    match code {
        Code::Ok => tonic::Code::Ok,
        Code::Cancelled => tonic::Code::Cancelled,
        Code::Unknown => tonic::Code::Unknown,
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::Aborted => tonic::Code::Aborted,
        Code::OutOfRange => tonic::Code::OutOfRange,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Internal => tonic::Code::Internal,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::DataLoss => tonic::Code::DataLoss,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
    }
}

/// A gRPC status carrying the same google.rpc.Status (with ErrorInfo) as
/// the REST envelope, in `grpc-status-details-bin`.
fn status(err: &Error, request_id: &str) -> Status {
    err.log(request_id);
    status_of(err, request_id)
}

/// [`status`] without logging.
fn status_of(err: &Error, request_id: &str) -> Status {
    let details = err.to_rpc_status(request_id);
    Status::with_details(
        grpc_code(err.code),
        details.message.clone(),
        details.encode_to_vec().into(),
    )
}

#[derive(Debug, Clone)]
pub(crate) struct Grpc(Arc<Service>);

impl Grpc {
    /// Who is calling, from the request's `authorization` metadata; a
    /// missing or bad token is `UNAUTHENTICATED`.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if let Some(handled) = request.extensions().get::<Handled>() {
            handled.0.store(true, Ordering::Relaxed);
        }
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), |id| id.0.clone());
        let authorization = request.metadata().get("authorization").map(|value| value.as_bytes());
        match self.0.access().authenticate(authorization) {
            Ok(principal) => Ok(Caller {
                request_id,
                protocol: "grpc",
                principal,
                deadline: request
                    .metadata()
                    .get("grpc-timeout")
                    .and_then(|value| value.to_str().ok())
                    .and_then(grpc_timeout)
                    .map(|budget| tokio::time::Instant::now() + answer_within(budget)),
            }),
            Err(err) => {
                self.0.metrics.request(
                    std::any::type_name::<T>()
                        .rsplit("::")
                        .next()
                        .map_or("unknown", method_of),
                    "grpc",
                    err.code,
                    std::time::Duration::ZERO,
                );
                Err(status(&err, &request_id))
            }
        }
    }
}

/// A `grpc-timeout` header: up to 8 digits and a unit (gRPC over HTTP/2).
fn grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How long a blocking call may take within the caller's budget: a little
/// less, so the answer arrives before the caller gives up on it.
fn answer_within(budget: std::time::Duration) -> std::time::Duration {
    let margin = (budget / 10).min(std::time::Duration::from_millis(200));
    budget.saturating_sub(margin)
}

/// The method a request type belongs to, for metrics.
fn method_of(request_type: &str) -> &'static str {
    let method = request_type.strip_suffix("Request").unwrap_or(request_type);
    METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("unknown")
}

/// Runs a core call and converts its error.
async fn answer<T>(caller: Caller, work: impl Future<Output = Result<T, Error>>) -> Result<Response<T>, Status> {
    work.await
        .map(Response::new)
        .map_err(|err| status(&err, &caller.request_id))
}

#[tonic::async_trait]
impl Operations for Grpc {
    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            let page = self.0.list(&caller, request.into_inner()).await?;
            Ok(ListOperationsResponse {
                operations: page.operations.iter().map(to_wire).collect(),
                next_page_token: page.next_page_token,
                unreachable: Vec::new(),
            })
        })
        .await
    }

    async fn get_operation(&self, request: Request<GetOperationRequest>) -> Result<Response<Operation>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.get(&caller, &request.into_inner().name).await?))
        })
        .await
    }

    async fn delete_operation(&self, request: Request<DeleteOperationRequest>) -> Result<Response<()>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), self.0.delete(&caller, &request.into_inner().name)).await
    }

    async fn cancel_operation(&self, request: Request<CancelOperationRequest>) -> Result<Response<()>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            self.0.cancel(&caller, &request.into_inner().name).await?;
            Ok(())
        })
        .await
    }

    async fn wait_operation(&self, request: Request<WaitOperationRequest>) -> Result<Response<Operation>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.wait(&caller, &request.name, request.timeout).await?))
        })
        .await
    }
}

#[tonic::async_trait]
impl Control for Grpc {
    async fn create_operation(&self, request: Request<CreateOperationRequest>) -> Result<Response<Operation>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.create(&caller, request.into_inner()).await?))
        })
        .await
    }

    async fn update_operation(
        &self,
        request: Request<UpdateOperationRequest>,
    ) -> Result<Response<UpdateOperationResponse>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), self.0.update(&caller, request.into_inner())).await
    }

    async fn complete_operation(
        &self,
        request: Request<CompleteOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.complete(&caller, request.into_inner()).await?))
        })
        .await
    }

    async fn batch_complete_operations(
        &self,
        request: Request<BatchCompleteOperationsRequest>,
    ) -> Result<Response<BatchCompleteOperationsResponse>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            self.0.batch_complete(&caller, request.into_inner()).await
        })
        .await
    }

    async fn release_operation(
        &self,
        request: Request<ReleaseOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.release(&caller, request.into_inner()).await?))
        })
        .await
    }

    async fn claim_operation(
        &self,
        request: Request<ClaimOperationRequest>,
    ) -> Result<Response<ClaimOperationResponse>, Status> {
        let caller = self.caller(&request)?;
        answer(caller.clone(), async {
            Ok(claim_response(self.0.claim(&caller, request.into_inner()).await?))
        })
        .await
    }
}

type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchOperationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for Grpc {
    type WatchOperationsStream = WatchStream;

    async fn watch_operations(
        &self,
        request: Request<WatchOperationsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        use futures::StreamExt as _;
        let caller = self.caller(&request)?;
        let connection = request
            .extensions()
            .get::<crate::connections::ConnectionClose>()
            .map(|close| close.0.clone());
        let request_id = caller.request_id.clone();
        let stream = self
            .0
            .watch(&caller, request.into_inner(), connection)
            .await
            .map_err(|err| status(&err, &request_id))?;
        let responses = stream.map(move |sent| response(sent, &request_id));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// A watch event on the wire; the last one (why the stream ends) is the
/// call's status.
fn response(sent: WatchSent, request_id: &str) -> Result<WatchOperationsResponse, Status> {
    let event = match sent.event {
        WatchEvent::Operation(operation) => WireEvent::Operation(operation_view(&operation)),
        WatchEvent::Removed { name, deleted } => WireEvent::Removed(Removed { name, deleted }),
        WatchEvent::Synced { next_page_token } => WireEvent::Synced(Synced { next_page_token }),
        WatchEvent::Reset => WireEvent::Reset(Reset {}),
        WatchEvent::Heartbeat => WireEvent::Heartbeat(Heartbeat {}),
        WatchEvent::End(err) => {
            err.log_ending(request_id);
            return Err(status_of(&err, request_id));
        }
    };
    Ok(WatchOperationsResponse {
        event: Some(event),
        resume_token: sent.position.map(|position| position.to_string()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        use std::time::Duration;
        assert_eq!(grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("123456789S"), None, "at most 8 digits");
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout("10x"), None);
        assert_eq!(answer_within(Duration::from_secs(1)), Duration::from_millis(900));
        assert_eq!(answer_within(Duration::from_secs(60)), Duration::from_millis(59_800));
    }

    #[test]
    fn codes_keep_their_numbers() {
        for code in Code::ALL {
            assert_eq!(grpc_code(code) as i32, code.as_i32());
        }
    }
}
