//! A `google.protobuf.Struct` that implements `prost::Name` (prost-types'
//! does not), for handlers whose input or output is plain JSON.

use std::collections::BTreeMap;

/// Wire-identical to `google.protobuf.Struct`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Struct {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, prost_types::Value>,
}

impl prost::Name for Struct {
    const NAME: &'static str = "Struct";
    const PACKAGE: &'static str = "google.protobuf";
}

impl Struct {
    pub fn get(&self, key: &str) -> Option<&prost_types::value::Kind> {
        self.fields.get(key).and_then(|value| value.kind.as_ref())
    }

    /// Sets `key` to a value (`prost_types::value::Kind`).
    pub fn insert(&mut self, key: impl Into<String>, kind: prost_types::value::Kind) {
        self.fields.insert(key.into(), prost_types::Value { kind: Some(kind) });
    }
}
