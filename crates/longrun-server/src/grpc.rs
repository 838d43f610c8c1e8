//! gRPC: `google.longrunning.Operations`, `longrun.v1.Control`, health and
//! reflection (v1 and v1alpha), served through the same axum router as REST.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::{Caller, Error, RequestId, Service, claim_response};
use longrun_proto::google::longrunning::operations_server::{Operations, OperationsServer};
use longrun_proto::google::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest, ListOperationsResponse,
    Operation, WaitOperationRequest,
};
use longrun_proto::google::rpc;
use longrun_proto::longrun::v1::control_server::{Control, ControlServer};
use longrun_proto::longrun::v1::{
    ClaimOperationRequest, ClaimOperationResponse, CompleteOperationRequest, CreateOperationRequest,
    UpdateOperationRequest, UpdateOperationResponse,
};
use longrun_proto::{TYPE_URL_PREFIX, to_wire};
use longrun_types::Code;

/// The `domain` of every ErrorInfo longrun sends.
pub(crate) const ERROR_DOMAIN: &str = "longrun.dev";

pub(crate) fn router(service: Arc<Service>) -> axum::Router {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Serving from the start: the store was opened before the server runs.
    tokio::spawn(async move {
        health.set_serving::<OperationsServer<Grpc>>().await;
        health.set_serving::<ControlServer<Grpc>>().await;
    });
    let descriptors = service.registry().encoded_file_descriptor_set();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .build_v1alpha();
    let mut routes = tonic::service::Routes::new(OperationsServer::new(Grpc(service.clone())))
        .add_service(ControlServer::new(Grpc(service)))
        .add_service(health_service);
    match (reflection_v1, reflection_v1alpha) {
        (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "gRPC reflection is unavailable")
        }
    }
    routes.prepare().into_axum_router()
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
    let message = err.public_message(request_id);
    let info = rpc::ErrorInfo {
        reason: err.reason.to_owned(),
        domain: ERROR_DOMAIN.to_owned(),
        metadata: HashMap::from([("requestId".to_owned(), request_id.to_owned())]),
    };
    let details = rpc::Status {
        code: err.code.as_i32(),
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: format!("{TYPE_URL_PREFIX}google.rpc.ErrorInfo"),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(grpc_code(err.code), message, details.encode_to_vec().into())
}

#[derive(Debug, Clone)]
pub(crate) struct Grpc(Arc<Service>);

fn caller<T>(request: &Request<T>) -> Caller {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), |id| id.0.clone());
    Caller {
        request_id,
        protocol: "grpc",
    }
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
        let caller = caller(&request);
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
        let caller = caller(&request);
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.get(&caller, &request.into_inner().name).await?))
        })
        .await
    }

    async fn delete_operation(&self, request: Request<DeleteOperationRequest>) -> Result<Response<()>, Status> {
        let caller = caller(&request);
        answer(caller.clone(), self.0.delete(&caller, &request.into_inner().name)).await
    }

    async fn cancel_operation(&self, request: Request<CancelOperationRequest>) -> Result<Response<()>, Status> {
        let caller = caller(&request);
        answer(caller.clone(), async {
            self.0.cancel(&caller, &request.into_inner().name).await?;
            Ok(())
        })
        .await
    }

    async fn wait_operation(&self, request: Request<WaitOperationRequest>) -> Result<Response<Operation>, Status> {
        let caller = caller(&request);
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
        let caller = caller(&request);
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.create(&caller, request.into_inner()).await?))
        })
        .await
    }

    async fn update_operation(
        &self,
        request: Request<UpdateOperationRequest>,
    ) -> Result<Response<UpdateOperationResponse>, Status> {
        let caller = caller(&request);
        answer(caller.clone(), self.0.update(&caller, request.into_inner())).await
    }

    async fn complete_operation(
        &self,
        request: Request<CompleteOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = caller(&request);
        answer(caller.clone(), async {
            Ok(to_wire(&self.0.complete(&caller, request.into_inner()).await?))
        })
        .await
    }

    async fn claim_operation(
        &self,
        request: Request<ClaimOperationRequest>,
    ) -> Result<Response<ClaimOperationResponse>, Status> {
        let caller = caller(&request);
        answer(caller.clone(), async {
            Ok(claim_response(self.0.claim(&caller, request.into_inner()).await?))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_numbers() {
        for code in Code::ALL {
            assert_eq!(grpc_code(code) as i32, code.as_i32());
        }
    }
}
