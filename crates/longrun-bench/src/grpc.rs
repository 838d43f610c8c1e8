//! The end-to-end drain through the gRPC worker protocol: the same work as
//! the REST drain, over `longrun.v1.Control` on HTTP/2, one channel per
//! worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::bail;
use hdrhistogram::Histogram;
use longrun_proto::longrun::v1::control_client::ControlClient;
use longrun_proto::longrun::v1::{
    BatchCompleteOperationsRequest, ClaimOperationRequest, ClaimedOperation, CompleteOperationRequest,
    complete_operation_request, complete_operation_result,
};
use tonic::transport::Channel;

/// One worker: claims (one, or `batch` at a time) and completes with a
/// trivial response until `remaining` reaches zero; the latency of each
/// operation runs from its claim's sending to its completion's answer.
pub(crate) async fn worker(
    endpoint: String,
    parent: &'static str,
    queue: String,
    worker: usize,
    batch: u32,
    remaining: Arc<AtomicUsize>,
    mut latencies: Histogram<u64>,
) -> anyhow::Result<Histogram<u64>> {
    let mut control = ControlClient::new(Channel::from_shared(endpoint)?.connect().await?);
    let claim = ClaimOperationRequest {
        parent: parent.into(),
        queue,
        worker: format!("bench-grpc-{worker}"),
        lease_duration: None,
        wait: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        max_operations: if batch > 1 { i32::try_from(batch)? } else { 0 },
    };
    while remaining.load(Ordering::Relaxed) > 0 {
        let sent = Instant::now();
        let answer = control.claim_operation(claim.clone()).await?.into_inner();
        let claims = if batch > 1 {
            answer.claims
        } else {
            match answer.operation {
                Some(operation) => vec![ClaimedOperation {
                    operation: Some(operation),
                    lease_token: answer.lease_token,
                    ..ClaimedOperation::default()
                }],
                None => continue,
            }
        };
        if claims.is_empty() {
            continue;
        }
        let requests: Vec<CompleteOperationRequest> = claims.iter().map(trivial_completion).collect();
        let count = requests.len();
        if batch > 1 {
            let done = control
                .batch_complete_operations(BatchCompleteOperationsRequest {
                    parent: parent.into(),
                    requests,
                })
                .await?
                .into_inner();
            for result in done.results {
                if let Some(complete_operation_result::Result::Error(status)) = result.result {
                    bail!("batch complete: {} {}", status.code, status.message);
                }
            }
        } else {
            for request in requests {
                control.complete_operation(request).await?;
            }
        }
        for _ in 0..count {
            crate::scenarios::record(&mut latencies, sent);
        }
        remaining.fetch_sub(count, Ordering::Relaxed);
    }
    Ok(latencies)
}

fn trivial_completion(claimed: &ClaimedOperation) -> CompleteOperationRequest {
    CompleteOperationRequest {
        name: claimed.operation.as_ref().map(|op| op.name.clone()).unwrap_or_default(),
        lease_token: claimed.lease_token.clone(),
        retryable: false,
        result: Some(complete_operation_request::Result::Response(prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: Vec::new(),
        })),
    }
}
