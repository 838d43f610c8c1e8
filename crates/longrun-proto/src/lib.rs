//! Wire formats: prost/tonic code generated from `proto/`, conversions
//! between the wire messages and [`longrun_types`], and the type [`Registry`]
//! that maps messages, including `Any` payloads, to and from proto3 JSON.
//!
//! The JSON mapping is prost-reflect's, driven by descriptors: the ones
//! compiled into this crate ([`DESCRIPTOR_SET`]) plus any the operator loads
//! with `--descriptors`. The answers of the hot worker calls (an operation,
//! a claim, a batch of completions) are written straight to text with the
//! same output (`json`); every payload still goes through the registry.

pub mod codec;
mod convert;
mod fields;
mod json;
mod registry;

pub use convert::{
    any_to_payload, decode_status, encode_status, operation_view, payload_to_any, standard_metadata, status_from_wire,
    status_to_wire, to_wire,
};
pub use fields::MAX_INDEXED;
pub use registry::{Enums, Error, Registry, type_untyped};

/// `type.googleapis.com/` + a message's full name.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The encoded `FileDescriptorSet` of every file in `proto/` and its
/// imports; feeds the registry and gRPC reflection.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// Generated from `proto/google/...`.
pub mod google {
    pub mod longrunning {
        #![allow(missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/google.longrunning.rs"));
    }
    pub mod rpc {
        #![allow(missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// Generated from `proto/longrun/v1`.
pub mod longrun {
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/longrun.v1.rs"));
    }
}

pub use google::longrunning::Operation;
pub use longrun::v1::OperationMetadata;
