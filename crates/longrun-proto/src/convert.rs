//! Conversions between [`longrun_types`] and the generated wire messages.

use prost::Message as _;
use prost_types::Any;

use crate::TYPE_URL_PREFIX;
use crate::google::longrunning::{self, operation};
use crate::google::rpc;
use crate::longrun::v1::OperationMetadata;
use longrun_types::{Operation, Outcome, Payload, Status};

/// The wire Operation for a record: the producer's metadata if it set one,
/// otherwise the standard `longrun.v1.OperationMetadata`.
pub fn to_wire(op: &Operation) -> longrunning::Operation {
    let metadata = match &op.metadata {
        Some(custom) => payload_to_any(custom),
        None => Any {
            type_url: format!("{TYPE_URL_PREFIX}longrun.v1.OperationMetadata"),
            value: standard_metadata(op).encode_to_vec(),
        },
    };
    longrunning::Operation {
        name: op.name.to_string(),
        metadata: Some(metadata),
        done: op.done(),
        result: op.outcome.as_ref().map(|outcome| match outcome {
            Outcome::Response(payload) => operation::Result::Response(payload_to_any(payload)),
            Outcome::Error(status) => operation::Result::Error(status_to_wire(status)),
        }),
    }
}

/// An operation with longrun's standard view of it, whatever its
/// producer's metadata type.
pub fn operation_view(op: &Operation) -> crate::longrun::v1::OperationView {
    crate::longrun::v1::OperationView {
        operation: Some(to_wire(op)),
        standard: Some(standard_metadata(op)),
        queue: op.queue.clone().unwrap_or_default(),
    }
}

/// The standard metadata longrun serves for an operation.
pub fn standard_metadata(op: &Operation) -> OperationMetadata {
    OperationMetadata {
        create_time: Some(op.create_time.into()),
        update_time: Some(op.update_time.into()),
        end_time: op.end_time.map(Into::into),
        target: op.target.clone(),
        verb: op.verb.clone(),
        status_detail: op.status_detail.clone(),
        cancel_requested: op.cancel_requested,
        api_version: op.api_version.clone(),
        state: op.state.as_i32(),
        progress_percent: op.progress_percent,
        attempt: op.attempt,
    }
}

pub fn payload_to_any(payload: &Payload) -> Any {
    Any {
        type_url: payload.type_url.clone(),
        value: payload.value.to_vec(),
    }
}

pub fn any_to_payload(any: Any) -> Payload {
    Payload {
        type_url: any.type_url,
        value: any.value.into(),
    }
}

pub fn status_to_wire(status: &Status) -> rpc::Status {
    rpc::Status {
        code: status.code,
        message: status.message.clone(),
        details: status.details.iter().map(payload_to_any).collect(),
    }
}

pub fn status_from_wire(status: rpc::Status) -> Status {
    Status {
        code: status.code,
        message: status.message,
        details: status.details.into_iter().map(any_to_payload).collect(),
    }
}

/// A Status as google.rpc.Status bytes, the form stores keep it in.
pub fn encode_status(status: &Status) -> Vec<u8> {
    status_to_wire(status).encode_to_vec()
}

pub fn decode_status(bytes: &[u8]) -> Result<Status, prost::DecodeError> {
    rpc::Status::decode(bytes).map(status_from_wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use longrun_types::{Code, OperationName, State};
    use std::time::{Duration, SystemTime};

    pub(crate) fn sample(state: State, outcome: Option<Outcome>) -> Operation {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Operation {
            name: OperationName::parse("projects/p/locations/l/operations/op1").unwrap(),
            state,
            outcome,
            metadata: None,
            input: None,
            queue: None,
            verb: "create".into(),
            target: "projects/p/locations/l/datasets/d".into(),
            api_version: "v1".into(),
            status_detail: "halfway".into(),
            progress_percent: 50,
            cancel_requested: false,
            cancel_time: None,
            attempt: 1,
            max_attempts: 3,
            request_id: None,
            create_time: now,
            update_time: now,
            end_time: None,
            deadline: None,
            lease: None,
            finished_by: None,
        }
    }

    #[test]
    fn standard_metadata_reflects_the_record() {
        let wire = to_wire(&sample(State::Running, None));
        assert!(!wire.done);
        let any = wire.metadata.unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/longrun.v1.OperationMetadata");
        let metadata = OperationMetadata::decode(any.value.as_slice()).unwrap();
        assert_eq!(metadata.state, State::Running.as_i32());
        assert_eq!(metadata.progress_percent, 50);
        assert_eq!(metadata.verb, "create");
    }

    #[test]
    fn status_round_trips_through_bytes() {
        let mut status = Status::new(Code::Cancelled, "stopped");
        status.details.push(Payload {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: Vec::new().into(),
        });
        assert_eq!(decode_status(&encode_status(&status)).unwrap(), status);
        let wire = to_wire(&sample(State::Cancelled, Some(Outcome::Error(status))));
        assert!(wire.done);
        assert!(matches!(
            wire.result,
            Some(operation::Result::Error(rpc::Status { code: 1, .. }))
        ));
    }
}
