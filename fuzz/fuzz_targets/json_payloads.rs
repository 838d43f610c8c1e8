//! Any JSON as the body of a Create or Complete: decoding never panics,
//! and a payload that decodes either passes the registry's check (and
//! then indexes and serves back as JSON) or is refused; never half-read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use longrun_proto::longrun::v1::{CompleteOperationRequest, CreateOperationRequest, complete_operation_request};
use longrun_proto::{Registry, any_to_payload, type_untyped};
use std::sync::OnceLock;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let registry = registry();
    // As the REST layer prepares a body: untyped payloads become Struct.
    if let Some(object) = json.as_object_mut() {
        for field in ["input", "metadata", "response"] {
            if let Some(value) = object.get_mut(field) {
                type_untyped(value);
            }
        }
    }
    if let Ok(create) = registry.from_json::<CreateOperationRequest>("longrun.v1.CreateOperationRequest", &json) {
        for any in [create.input, create.metadata].into_iter().flatten() {
            let payload = any_to_payload(any);
            if registry.check_payload(&payload).is_ok() {
                let _ = registry.check_and_index("metadata", &payload);
                registry.payload_to_json(&payload).expect("a checked payload serves");
            }
        }
    }
    if let Ok(complete) = registry.from_json::<CompleteOperationRequest>("longrun.v1.CompleteOperationRequest", &json)
        && let Some(complete_operation_request::Result::Response(any)) = complete.result
    {
        let payload = any_to_payload(any);
        if registry.check_payload(&payload).is_ok() {
            let indexed = registry
                .check_and_index("response", &payload)
                .expect("a checked payload indexes");
            assert!(indexed.len() <= 256);
            registry.payload_to_json(&payload).expect("a checked payload serves");
        }
    }
});
