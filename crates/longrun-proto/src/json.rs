//! Proto3 JSON of the messages every worker call answers with, written
//! straight to text: an operation, a claim, a batch of completions.
//!
//! The registry's descriptor-driven mapping decodes each message into a
//! dynamic one and walks it field by field; for the envelope of an
//! operation and longrun's own standard metadata that was most of the
//! server's time in a drain (BENCHMARKS.md, "Rendering an operation").
//! Here those are written from the generated structs, and everything else
//! (a producer's metadata, a response, an error, a claimed input) still
//! goes through the registry. The output is byte for byte the registry's:
//! `tests::the_same_text_as_the_registry` holds the two side by side.

use std::io::Write as _;

use prost::Message as _;
use prost_types::{Any, Timestamp};

use crate::google::longrunning::{Operation, operation};
use crate::longrun::v1::{
    BatchCompleteOperationsResponse, ClaimOperationResponse, ClaimedOperation, OperationMetadata, State,
    complete_operation_result,
};
use crate::registry::{Enums, Error, Registry};

const STANDARD_METADATA: &str = "type.googleapis.com/longrun.v1.OperationMetadata";

impl Registry {
    /// [`Registry::to_json_bytes_with`] of a `google.longrunning.Operation`.
    pub fn operation_json_bytes(&self, operation: &Operation, enums: Enums) -> Result<Vec<u8>, Error> {
        let mut out = Writer::new(self, enums);
        out.operation(operation)?;
        Ok(out.text)
    }

    /// [`Registry::to_json_bytes_with`] of a `longrun.v1.ClaimOperationResponse`.
    pub fn claim_json_bytes(&self, response: &ClaimOperationResponse, enums: Enums) -> Result<Vec<u8>, Error> {
        let mut out = Writer::new(self, enums);
        out.object(|out| {
            if let Some(operation) = &response.operation {
                out.key("operation");
                out.operation(operation)?;
            }
            out.claimed_fields(
                response.input.as_ref(),
                &response.lease_token,
                response.attempt,
                response.lease_expire_time.as_ref(),
            )?;
            if !response.claims.is_empty() {
                out.key("claims");
                out.array(&response.claims, |out, claimed: &ClaimedOperation| {
                    out.object(|out| {
                        if let Some(operation) = &claimed.operation {
                            out.key("operation");
                            out.operation(operation)?;
                        }
                        out.claimed_fields(
                            claimed.input.as_ref(),
                            &claimed.lease_token,
                            claimed.attempt,
                            claimed.lease_expire_time.as_ref(),
                        )
                    })
                })?;
            }
            Ok(())
        })?;
        Ok(out.text)
    }

    /// [`Registry::to_json_bytes_with`] of a
    /// `longrun.v1.BatchCompleteOperationsResponse`.
    pub fn batch_complete_json_bytes(
        &self,
        response: &BatchCompleteOperationsResponse,
        enums: Enums,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Writer::new(self, enums);
        out.object(|out| {
            if !response.results.is_empty() {
                out.key("results");
                out.array(&response.results, |out, result| {
                    out.object(|out| match &result.result {
                        Some(complete_operation_result::Result::Operation(operation)) => {
                            out.key("operation");
                            out.operation(operation)
                        }
                        Some(complete_operation_result::Result::Error(status)) => {
                            out.key("error");
                            out.through_registry("google.rpc.Status", &status.encode_to_vec())
                        }
                        None => Ok(()),
                    })
                })?;
            }
            Ok(())
        })?;
        Ok(out.text)
    }
}

/// JSON text being written: objects track whether a field came before.
struct Writer<'a> {
    registry: &'a Registry,
    enums: Enums,
    text: Vec<u8>,
    first: bool,
}

impl<'a> Writer<'a> {
    fn new(registry: &'a Registry, enums: Enums) -> Self {
        Self {
            registry,
            enums,
            text: Vec::with_capacity(512),
            first: true,
        }
    }

    fn object(&mut self, fields: impl FnOnce(&mut Self) -> Result<(), Error>) -> Result<(), Error> {
        self.text.push(b'{');
        self.first = true;
        fields(self)?;
        self.text.push(b'}');
        self.first = false;
        Ok(())
    }

    fn array<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T) -> Result<(), Error>) -> Result<(), Error> {
        self.text.push(b'[');
        for (i, value) in items.iter().enumerate() {
            if i > 0 {
                self.text.push(b',');
            }
            item(self, value)?;
        }
        self.text.push(b']');
        self.first = false;
        Ok(())
    }

    /// `"name":`, after a comma unless it is the object's first field.
    fn key(&mut self, name: &str) {
        if !self.first {
            self.text.push(b',');
        }
        self.first = false;
        self.string(name);
        self.text.push(b':');
    }

    fn string(&mut self, value: &str) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.text, value);
    }

    fn string_field(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.key(name);
            self.string(value);
        }
    }

    fn int_field(&mut self, name: &str, value: i32) {
        if value != 0 {
            self.key(name);
            // Writing into a Vec cannot fail.
            let _ = write!(self.text, "{value}");
        }
    }

    fn timestamp_field(&mut self, name: &str, value: Option<&Timestamp>) {
        if let Some(time) = value {
            self.key(name);
            // RFC 3339 with 0, 3, 6 or 9 digits of fraction: nothing to escape.
            let _ = write!(self.text, "\"{time}\"");
        }
    }

    fn operation(&mut self, operation: &Operation) -> Result<(), Error> {
        self.object(|out| {
            out.string_field("name", &operation.name);
            if let Some(metadata) = &operation.metadata {
                out.key("metadata");
                out.any(metadata)?;
            }
            if operation.done {
                out.key("done");
                out.text.extend_from_slice(b"true");
            }
            match &operation.result {
                Some(operation::Result::Error(status)) => {
                    out.key("error");
                    out.through_registry("google.rpc.Status", &status.encode_to_vec())
                }
                Some(operation::Result::Response(response)) => {
                    out.key("response");
                    out.any(response)
                }
                None => Ok(()),
            }
        })
    }

    /// The fields a claimed operation carries beside the operation itself.
    fn claimed_fields(
        &mut self,
        input: Option<&Any>,
        lease_token: &str,
        attempt: i32,
        lease_expire_time: Option<&Timestamp>,
    ) -> Result<(), Error> {
        if let Some(input) = input {
            self.key("input");
            self.any(input)?;
        }
        self.string_field("leaseToken", lease_token);
        self.int_field("attempt", attempt);
        self.timestamp_field("leaseExpireTime", lease_expire_time);
        Ok(())
    }

    /// An `Any`: longrun's standard metadata by hand, any other type
    /// through the registry.
    fn any(&mut self, any: &Any) -> Result<(), Error> {
        if any.type_url != STANDARD_METADATA {
            return self.through_registry("google.protobuf.Any", &any.encode_to_vec());
        }
        let Ok(metadata) = OperationMetadata::decode(any.value.as_slice()) else {
            // Let the registry say what is wrong with it.
            return self.through_registry("google.protobuf.Any", &any.encode_to_vec());
        };
        self.object(|out| {
            out.key("@type");
            out.string(STANDARD_METADATA);
            out.timestamp_field("createTime", metadata.create_time.as_ref());
            out.timestamp_field("updateTime", metadata.update_time.as_ref());
            out.timestamp_field("endTime", metadata.end_time.as_ref());
            out.string_field("target", &metadata.target);
            out.string_field("verb", &metadata.verb);
            out.string_field("statusDetail", &metadata.status_detail);
            if metadata.cancel_requested {
                out.key("cancelRequested");
                out.text.extend_from_slice(b"true");
            }
            out.string_field("apiVersion", &metadata.api_version);
            if metadata.state != 0 {
                out.key("state");
                match (out.enums, State::try_from(metadata.state)) {
                    (Enums::Names, Ok(state)) => out.string(state.as_str_name()),
                    _ => {
                        let _ = write!(out.text, "{}", metadata.state);
                    }
                }
            }
            out.int_field("progressPercent", metadata.progress_percent);
            out.int_field("attempt", metadata.attempt);
            Ok(())
        })
    }

    fn through_registry(&mut self, full_name: &str, bytes: &[u8]) -> Result<(), Error> {
        self.registry.write_json(full_name, bytes, self.enums, &mut self.text)?;
        self.first = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;
    use prost_types::{Any, Timestamp};

    use super::STANDARD_METADATA;
    use crate::google::longrunning::{Operation, operation};
    use crate::google::rpc::{ErrorInfo, Status};
    use crate::longrun::v1::{
        BatchCompleteOperationsResponse, ClaimOperationResponse, ClaimedOperation, CompleteOperationResult,
        OperationMetadata, complete_operation_result,
    };
    use crate::registry::{Enums, Registry};

    fn timestamp() -> BoxedStrategy<Option<Timestamp>> {
        // Whole seconds, milliseconds, microseconds and nanoseconds, which
        // RFC 3339 writes with 0, 3, 6 and 9 digits of fraction.
        let nanos = prop_oneof![
            Just(0),
            (0..1000i32).prop_map(|ms| ms * 1_000_000),
            (0..1_000_000i32).prop_map(|us| us * 1000),
            0..1_000_000_000i32
        ];
        proptest::option::of(
            (-62_135_596_800i64..253_402_300_799, nanos).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
        )
        .boxed()
    }

    fn text() -> BoxedStrategy<String> {
        prop_oneof![
            Just(String::new()),
            "[a-z ]{1,12}",
            any::<String>(),
            Just("\"quoted\\\\ \u{7f} \u{1} \u{2028} é 🦀".to_owned())
        ]
        .boxed()
    }

    fn any_of<M: prost::Message>(type_name: &str, message: &M) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: message.encode_to_vec(),
        }
    }

    fn payload() -> BoxedStrategy<Any> {
        let metadata = (
            timestamp(),
            timestamp(),
            timestamp(),
            text(),
            text(),
            text(),
            any::<bool>(),
            text(),
            -1..7i32,
            any::<i32>(),
            any::<i32>(),
        )
            .prop_map(
                |(
                    create_time,
                    update_time,
                    end_time,
                    target,
                    verb,
                    status_detail,
                    cancel_requested,
                    api_version,
                    state,
                    progress_percent,
                    attempt,
                )| {
                    any_of(
                        "longrun.v1.OperationMetadata",
                        &OperationMetadata {
                            create_time,
                            update_time,
                            end_time,
                            target,
                            verb,
                            status_detail,
                            cancel_requested,
                            api_version,
                            state,
                            progress_percent,
                            attempt,
                        },
                    )
                },
            );
        let structure = proptest::collection::btree_map(
            "[a-z]{1,5}",
            prop_oneof![
                any::<bool>().prop_map(prost_types::value::Kind::BoolValue),
                (-1e6..1e6f64).prop_map(prost_types::value::Kind::NumberValue),
                (-1000..1000i32).prop_map(|n| prost_types::value::Kind::NumberValue(n.into())),
                text().prop_map(prost_types::value::Kind::StringValue)
            ],
            0..4,
        )
        .prop_map(|fields| {
            any_of(
                "google.protobuf.Struct",
                &prost_types::Struct {
                    fields: fields
                        .into_iter()
                        .map(|(k, kind)| (k, prost_types::Value { kind: Some(kind) }))
                        .collect(),
                },
            )
        });
        prop_oneof![metadata, structure, Just(any_of("google.protobuf.Empty", &()))].boxed()
    }

    fn status() -> BoxedStrategy<Status> {
        (0..17i32, text(), proptest::option::of(text()))
            .prop_map(|(code, message, reason)| Status {
                code,
                message,
                details: reason
                    .into_iter()
                    .map(|reason| {
                        any_of(
                            "google.rpc.ErrorInfo",
                            &ErrorInfo {
                                reason,
                                domain: "longrun.dev".into(),
                                metadata: Default::default(),
                            },
                        )
                    })
                    .collect(),
            })
            .boxed()
    }

    fn wire_operation() -> BoxedStrategy<Operation> {
        let result = prop_oneof![
            Just(None),
            payload().prop_map(|any| Some(operation::Result::Response(any))),
            status().prop_map(|status| Some(operation::Result::Error(status)))
        ];
        (
            "projects/[a-z]{1,4}/operations/[a-z0-9]{1,8}",
            proptest::option::of(payload()),
            any::<bool>(),
            result,
        )
            .prop_map(|(name, metadata, done, result)| Operation {
                name,
                metadata,
                done,
                result,
            })
            .boxed()
    }

    fn claimed() -> BoxedStrategy<ClaimedOperation> {
        (
            proptest::option::of(wire_operation()),
            proptest::option::of(payload()),
            text(),
            any::<i32>(),
            timestamp(),
        )
            .prop_map(
                |(operation, input, lease_token, attempt, lease_expire_time)| ClaimedOperation {
                    operation,
                    input,
                    lease_token,
                    attempt,
                    lease_expire_time,
                },
            )
            .boxed()
    }

    fn enums() -> BoxedStrategy<Enums> {
        prop_oneof![Just(Enums::Names), Just(Enums::Numbers)].boxed()
    }

    fn text_of(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("JSON is UTF-8")
    }

    proptest! {
        #[test]
        fn the_same_text_as_the_registry(operation in wire_operation(), claims in proptest::collection::vec(claimed(), 0..3), single in claimed(), errors in proptest::collection::vec(proptest::option::of(status()), 0..3), enums in enums()) {
            let registry = Registry::new();
            prop_assert_eq!(
                text_of(registry.operation_json_bytes(&operation, enums).unwrap()),
                text_of(registry.to_json_bytes_with("google.longrunning.Operation", &operation, enums).unwrap())
            );
            for response in [
                ClaimOperationResponse { claims: claims.clone(), ..ClaimOperationResponse::default() },
                ClaimOperationResponse { operation: single.operation, input: single.input, lease_token: single.lease_token, attempt: single.attempt, lease_expire_time: single.lease_expire_time, claims: Vec::new() },
            ] {
                prop_assert_eq!(
                    text_of(registry.claim_json_bytes(&response, enums).unwrap()),
                    text_of(registry.to_json_bytes_with("longrun.v1.ClaimOperationResponse", &response, enums).unwrap())
                );
            }
            let results = errors.into_iter().zip(claims.into_iter().map(|claimed| claimed.operation.unwrap_or_default()))
                .map(|(error, operation)| CompleteOperationResult {
                    result: Some(match error {
                        Some(status) => complete_operation_result::Result::Error(status),
                        None => complete_operation_result::Result::Operation(operation),
                    }),
                })
                .collect();
            let response = BatchCompleteOperationsResponse { results };
            prop_assert_eq!(
                text_of(registry.batch_complete_json_bytes(&response, enums).unwrap()),
                text_of(registry.to_json_bytes_with("longrun.v1.BatchCompleteOperationsResponse", &response, enums).unwrap())
            );
        }
    }

    #[test]
    fn standard_metadata_is_written_by_hand_as_the_registry_would() {
        // The case the hand-written path exists for, spelled out.
        let registry = Registry::new();
        let metadata = OperationMetadata {
            create_time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 120_000_000,
            }),
            state: 2,
            attempt: 1,
            ..OperationMetadata::default()
        };
        let operation = Operation {
            name: "projects/p/operations/x".into(),
            metadata: Some(Any {
                type_url: STANDARD_METADATA.into(),
                value: metadata.encode_to_vec(),
            }),
            ..Operation::default()
        };
        let text = text_of(registry.operation_json_bytes(&operation, Enums::Names).unwrap());
        assert_eq!(
            text,
            r#"{"name":"projects/p/operations/x","metadata":{"@type":"type.googleapis.com/longrun.v1.OperationMetadata","createTime":"2023-11-14T22:13:20.120Z","state":"RUNNING","attempt":1}}"#
        );
    }
}
