//! The type registry: every message type longrun can read and write, and the
//! proto3 JSON mapping for them, `Any` included.

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use crate::{DESCRIPTOR_SET, TYPE_URL_PREFIX};
use longrun_types::Payload;
use longrun_types::filter::Indexed;

const STRUCT: &str = "google.protobuf.Struct";
const VALUE: &str = "google.protobuf.Value";

/// Why a payload or message could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A payload names a type the registry has no descriptor for.
    #[error(
        "unknown payload type {type_name:?}: the server has no descriptor for it; \
         start the server with --descriptors FILE holding a descriptor set that defines it"
    )]
    UnknownType { type_name: String },
    /// JSON that is not the proto3 JSON form of the expected message.
    #[error("invalid JSON for {message}: {reason}")]
    Json { message: String, reason: String },
    /// Binary data that does not decode as the message it claims to be.
    #[error("payload of type {type_name:?} does not decode: {reason}")]
    Binary { type_name: String, reason: String },
    /// A descriptor set that cannot be loaded.
    #[error("cannot load descriptors: {0}")]
    Descriptors(String),
}

/// How JSON writes enum values: by name (proto3 JSON's default) or by
/// number, as Google's `$alt=json;enum-encoding=int` asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Enums {
    #[default]
    Names,
    Numbers,
}

/// Maps messages between binary protobuf and proto3 JSON using descriptors.
/// Cloning is cheap: the pool is shared.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) pool: DescriptorPool,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The well-known types, google.rpc, google.longrunning and longrun.v1.
    pub fn new() -> Self {
        let pool = DescriptorPool::decode(DESCRIPTOR_SET)
            // The set is produced by our own build script from checked-in protos.
            .unwrap_or_else(|err| panic!("built-in descriptor set is invalid: {err}"));
        let mut registry = Self { pool };
        registry.load_well_known();
        registry
    }

    /// Well-known types that none of our files import still belong in the
    /// registry: producers use them as payloads.
    fn load_well_known(&mut self) {
        for file in DescriptorPool::global().files() {
            if file.package_name() == "google.protobuf" && self.pool.get_file_by_name(file.name()).is_none() {
                // Files of the global pool are complete and consistent.
                let _ = self
                    .pool
                    .add_file_descriptor_proto(file.file_descriptor_proto().clone());
            }
        }
    }

    /// Adds the types of an encoded `FileDescriptorSet` (as `protoc
    /// --include_imports --descriptor_set_out` writes it). Files the registry
    /// already has are skipped.
    pub fn load_descriptor_set(&mut self, bytes: &[u8]) -> Result<(), Error> {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(bytes).map_err(|err| Error::Descriptors(err.to_string()))?;
        let files: Vec<_> = set
            .file
            .into_iter()
            .filter(|file| self.pool.get_file_by_name(file.name()).is_none())
            .collect();
        self.pool
            .add_file_descriptor_protos(files)
            .map_err(|err| Error::Descriptors(err.to_string()))
    }

    /// The encoded descriptor set of everything the registry knows, for
    /// gRPC reflection.
    pub fn encoded_file_descriptor_set(&self) -> Vec<u8> {
        self.pool.encode_to_vec()
    }

    /// True when `full_name` (e.g. `longrun.v1.OperationMetadata`) is known.
    pub fn contains(&self, full_name: &str) -> bool {
        self.pool.get_message_by_name(full_name).is_some()
    }

    fn descriptor(&self, full_name: &str) -> Result<MessageDescriptor, Error> {
        self.pool
            .get_message_by_name(full_name)
            .ok_or_else(|| Error::UnknownType {
                type_name: full_name.to_owned(),
            })
    }

    /// Proto3 JSON of a message, `Any` fields resolved through the registry.
    pub fn to_json<M: prost::Message>(&self, full_name: &str, message: &M) -> Result<Value, Error> {
        self.to_json_with(full_name, message, Enums::Names)
    }

    /// [`Registry::to_json`], with enum values written as `enums` asks.
    pub fn to_json_with<M: prost::Message>(&self, full_name: &str, message: &M, enums: Enums) -> Result<Value, Error> {
        self.bytes_to_json(full_name, &message.encode_to_vec(), enums)
    }

    fn bytes_to_json(&self, full_name: &str, bytes: &[u8], enums: Enums) -> Result<Value, Error> {
        let mut json = self.serialize(full_name, bytes, enums, serde_json::value::Serializer)?;
        whole_numbers_as_integers(&mut json);
        Ok(json)
    }

    /// [`Registry::to_json_with`] written straight to JSON text: what a
    /// response sends, without building a [`Value`] first (half the time).
    pub fn to_json_bytes_with<M: prost::Message>(
        &self,
        full_name: &str,
        message: &M,
        enums: Enums,
    ) -> Result<Vec<u8>, Error> {
        let mut json = Vec::with_capacity(512);
        self.write_json(full_name, &message.encode_to_vec(), enums, &mut json)?;
        Ok(json)
    }

    /// Appends the JSON text of `bytes`, decoded as the message `full_name`.
    pub(crate) fn write_json(
        &self,
        full_name: &str,
        bytes: &[u8],
        enums: Enums,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let serializer = &mut serde_json::Serializer::with_formatter(out, WholeNumbersAsIntegers);
        self.serialize(full_name, bytes, enums, serializer)
    }

    /// Decodes `bytes` as the message `full_name` and writes its proto3 JSON
    /// (default fields left out, enums as `enums` asks) to `serializer`.
    fn serialize<S: serde::Serializer>(
        &self,
        full_name: &str,
        bytes: &[u8],
        enums: Enums,
        serializer: S,
    ) -> Result<S::Ok, Error> {
        let descriptor = self.descriptor(full_name)?;
        let dynamic = DynamicMessage::decode(descriptor, bytes).map_err(|err| Error::Binary {
            type_name: full_name.to_owned(),
            reason: err.to_string(),
        })?;
        let options = SerializeOptions::new()
            .skip_default_fields(true)
            .use_enum_numbers(enums == Enums::Numbers);
        dynamic.serialize_with_options(serializer, &options).map_err(|err| {
            self.unknown_type_in(&err.to_string()).unwrap_or_else(|| Error::Json {
                message: full_name.to_owned(),
                reason: err.to_string(),
            })
        })
    }

    /// Parses the proto3 JSON form of a message; unknown fields and unknown
    /// `@type`s are errors.
    pub fn from_json<M: prost::Message + Default>(&self, full_name: &str, json: &Value) -> Result<M, Error> {
        let descriptor = self.descriptor(full_name)?;
        let invalid = |reason: String| Error::Json {
            message: full_name.to_owned(),
            reason,
        };
        let dynamic =
            DynamicMessage::deserialize_with_options(descriptor, json, &DeserializeOptions::new()).map_err(|err| {
                self.first_unknown_type(json)
                    .unwrap_or_else(|| invalid(err.to_string()))
            })?;
        dynamic.transcode_to::<M>().map_err(|err| invalid(err.to_string()))
    }

    /// The JSON form of a payload: `{"@type": ..., fields...}`.
    pub fn payload_to_json(&self, payload: &Payload) -> Result<Value, Error> {
        let any = crate::convert::payload_to_any(payload);
        self.to_json("google.protobuf.Any", &any)
    }

    /// Checks that a payload's type is known and its bytes decode as it, so
    /// that nothing stored can later fail to serve.
    pub fn check_payload(&self, payload: &Payload) -> Result<(), Error> {
        self.checked(payload).map(drop)
    }

    /// Checks a payload as [`Registry::check_payload`] does and returns its
    /// filterable values under `root`, decoding it once.
    pub fn check_and_index(&self, root: &str, payload: &Payload) -> Result<Vec<Indexed>, Error> {
        self.checked(payload)
            .map(|message| crate::fields::index_message(root, &message))
    }

    /// The payload decoded, once its type, bytes and nested `Any`s are known.
    fn checked(&self, payload: &Payload) -> Result<DynamicMessage, Error> {
        let type_name = payload.type_name();
        if !payload.type_url.contains('/') {
            return Err(Error::UnknownType {
                type_name: payload.type_url.clone(),
            });
        }
        let descriptor = self.descriptor(type_name)?;
        let dynamic = DynamicMessage::decode(descriptor, payload.value.as_ref()).map_err(|err| Error::Binary {
            type_name: type_name.to_owned(),
            reason: err.to_string(),
        })?;
        // Nested Any fields must be known too: serialising resolves them all.
        let options = SerializeOptions::new();
        dynamic
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|err| {
                self.unknown_type_in(&err.to_string()).unwrap_or_else(|| Error::Binary {
                    type_name: type_name.to_owned(),
                    reason: err.to_string(),
                })
            })?;
        Ok(dynamic)
    }

    fn first_unknown_type(&self, json: &Value) -> Option<Error> {
        match json {
            Value::Object(map) => {
                if let Some(Value::String(url)) = map.get("@type") {
                    let name = url.rsplit_once('/').map_or(url.as_str(), |(_, name)| name);
                    if !self.contains(name) {
                        return Some(Error::UnknownType { type_name: url.clone() });
                    }
                }
                map.values().find_map(|value| self.first_unknown_type(value))
            }
            Value::Array(items) => items.iter().find_map(|value| self.first_unknown_type(value)),
            _ => None,
        }
    }

    fn unknown_type_in(&self, message: &str) -> Option<Error> {
        message
            .split(['\'', '"', ' '])
            .filter(|word| word.contains('/') && word.contains('.'))
            .find(|url| !self.contains(url.rsplit_once('/').map_or(url, |(_, name)| name)))
            .map(|url| Error::UnknownType {
                type_name: url.to_owned(),
            })
    }
}

/// Writes doubles that hold a whole number as integers (`6`, not `6.0`), as
/// Google's servers print them: a `Struct` cannot tell 6 from 6.0, and the
/// value a client sent as `6` should come back as `6`. Only exact ones
/// (magnitude below 2^53).
fn whole_numbers_as_integers(json: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match json {
        Value::Number(number) if number.is_f64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float.abs() < EXACT
            {
                #[allow(clippy::cast_possible_truncation)] // Whole and below 2^53: exact.
                let whole = float as i64;
                *number = whole.into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// [`whole_numbers_as_integers`] as JSON text is written: compact JSON
/// whose doubles holding an exact whole number are written as integers.
struct WholeNumbersAsIntegers;

impl serde_json::ser::Formatter for WholeNumbersAsIntegers {
    fn write_f64<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, value: f64) -> std::io::Result<()> {
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if value.fract() == 0.0 && value.abs() < EXACT {
            #[allow(clippy::cast_possible_truncation)] // Whole and below 2^53: exact.
            let whole = value as i64;
            return self.write_i64(writer, whole);
        }
        serde_json::ser::CompactFormatter.write_f64(writer, value)
    }

    fn write_f32<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, value: f32) -> std::io::Result<()> {
        if value.fract() == 0.0 {
            return self.write_f64(writer, f64::from(value));
        }
        serde_json::ser::CompactFormatter.write_f32(writer, value)
    }
}

/// Gives JSON without `@type` the type longrun stores it as: an object
/// becomes a `google.protobuf.Struct`, anything else a `google.protobuf.Value`.
/// Typed JSON (and `null`) is left alone.
pub fn type_untyped(value: &mut Value) {
    let wrap = |type_name: &str, inner: Value| serde_json::json!({ "@type": format!("{TYPE_URL_PREFIX}{type_name}"), "value": inner });
    match value {
        Value::Null => {}
        Value::Object(map) if map.contains_key("@type") => {}
        Value::Object(_) => *value = wrap(STRUCT, value.take()),
        _ => *value = wrap(VALUE, value.take()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::longrunning::Operation;
    use serde_json::json;

    #[test]
    fn operation_json_round_trips_with_typed_payloads() {
        let registry = Registry::new();
        let json = json!({
            "name": "operations/1",
            "metadata": {
                "@type": "type.googleapis.com/longrun.v1.OperationMetadata",
                "createTime": "2024-01-02T03:04:05Z",
                "state": "RUNNING",
                "progressPercent": 40,
            },
            "done": true,
            "response": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"rows": 3, "ratio": 0.5}},
        });
        let op: Operation = registry.from_json("google.longrunning.Operation", &json).unwrap();
        assert_eq!(
            op.metadata.as_ref().unwrap().type_url,
            "type.googleapis.com/longrun.v1.OperationMetadata"
        );
        let back = registry.to_json("google.longrunning.Operation", &op).unwrap();
        assert_eq!(back, json);
    }

    /// The text a response sends is the JSON `to_json` builds, whole
    /// numbers in a `Struct` written as integers alike.
    #[test]
    fn json_text_is_the_json_value_written_out() {
        let registry = Registry::new();
        let json = json!({
            "name": "operations/1",
            "metadata": {
                "@type": "type.googleapis.com/longrun.v1.OperationMetadata",
                "createTime": "2024-01-02T03:04:05.250Z",
                "state": "SUCCEEDED",
                "progressPercent": 100,
            },
            "done": true,
            "response": {"@type": "type.googleapis.com/google.protobuf.Struct",
                         "value": {"rows": 3, "ratio": 0.5, "big": 1e300, "neg": -7, "list": [1, 2.25]}},
        });
        let op: Operation = registry.from_json("google.longrunning.Operation", &json).unwrap();
        for enums in [Enums::Names, Enums::Numbers] {
            let value = registry
                .to_json_with("google.longrunning.Operation", &op, enums)
                .unwrap();
            let text = registry
                .to_json_bytes_with("google.longrunning.Operation", &op, enums)
                .unwrap();
            assert_eq!(String::from_utf8(text).unwrap(), serde_json::to_string(&value).unwrap());
        }
        let text = registry
            .to_json_bytes_with("google.longrunning.Operation", &op, Enums::Names)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(r#""rows":3}"#), "{text}");
        assert!(text.contains(r#""list":[1,2.25]"#), "{text}");
    }

    #[test]
    fn knows_well_known_rpc_and_longrun_types() {
        let registry = Registry::new();
        for name in [
            "google.protobuf.Empty",
            "google.protobuf.FieldMask",
            "google.protobuf.Int64Value",
            "google.rpc.ErrorInfo",
            "google.longrunning.Operation",
            "longrun.v1.OperationMetadata",
        ] {
            assert!(registry.contains(name), "{name}");
        }
    }

    #[test]
    fn unknown_types_are_named() {
        let registry = Registry::new();
        let json = json!({"name": "operations/1", "metadata": {"@type": "type.googleapis.com/acme.Missing"}});
        let err = registry
            .from_json::<Operation>("google.longrunning.Operation", &json)
            .unwrap_err();
        assert_eq!(
            err,
            Error::UnknownType {
                type_name: "type.googleapis.com/acme.Missing".into()
            }
        );
        assert!(err.to_string().contains("--descriptors"));
        let payload = Payload {
            type_url: "type.googleapis.com/acme.Missing".into(),
            value: Vec::new().into(),
        };
        assert!(matches!(
            registry.check_payload(&payload),
            Err(Error::UnknownType { .. })
        ));
    }

    #[test]
    fn unknown_fields_and_bad_bytes_are_rejected() {
        let registry = Registry::new();
        let err = registry
            .from_json::<Operation>("google.longrunning.Operation", &json!({"nope": 1}))
            .unwrap_err();
        assert!(matches!(err, Error::Json { .. }), "{err}");
        let payload = Payload {
            type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            value: vec![0xff, 0xff, 0xff].into(),
        };
        assert!(matches!(registry.check_payload(&payload), Err(Error::Binary { .. })));
    }

    #[test]
    fn untyped_json_becomes_struct_or_value() {
        let mut object = json!({"a": 1});
        type_untyped(&mut object);
        assert_eq!(
            object,
            json!({"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"a": 1}})
        );
        let mut list = json!([1, 2]);
        type_untyped(&mut list);
        assert_eq!(list["@type"], "type.googleapis.com/google.protobuf.Value");
        let registry = Registry::new();
        let any: prost_types::Any = registry.from_json("google.protobuf.Any", &object).unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Struct");
    }
}

/// The Python package (`python/`) ships longrun.v1 as a descriptor set; it
/// must describe the same messages as `proto/`.
#[cfg(test)]
mod python_package {
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    /// Every message of a file, as `message: field=number ...`.
    fn shape(set: &FileDescriptorSet, file: &str) -> Vec<String> {
        let Some(file) = set.file.iter().find(|f| f.name() == file) else {
            return Vec::new();
        };
        file.message_type
            .iter()
            .map(|message| {
                let fields: Vec<String> = message
                    .field
                    .iter()
                    .map(|field| format!("{}={}:{:?}", field.name(), field.number(), field.r#type()))
                    .collect();
                format!("{}: {}", message.name(), fields.join(" "))
            })
            .collect()
    }

    #[test]
    #[allow(clippy::unwrap_used)] // Test code: a panic is the failure report.
    fn describes_the_protos_of_this_checkout() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let shipped = std::fs::read(root.join("python/src/longrun/descriptors.binpb")).unwrap();
        let shipped = FileDescriptorSet::decode(shipped.as_slice()).unwrap();
        let current = FileDescriptorSet::decode(crate::DESCRIPTOR_SET).unwrap();
        for file in ["longrun/v1/metadata.proto", "longrun/v1/control.proto"] {
            assert_eq!(
                shape(&shipped, file),
                shape(&current, file),
                "python/src/longrun/descriptors.binpb is out of date for {file}; regenerate it with \
                 python -m grpc_tools.protoc -I proto --descriptor_set_out=python/src/longrun/descriptors.binpb \
                 proto/longrun/v1/metadata.proto proto/longrun/v1/control.proto"
            );
        }
    }
}
