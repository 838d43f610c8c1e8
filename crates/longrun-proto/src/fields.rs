//! Custom metadata and response fields in filters: the registry resolves
//! `metadata.<path>` and `response.<path>` against the registered message
//! types (it is the filter's [`Schema`]), and reads a payload's filterable
//! values ([`Indexed`]) for the store to keep beside the operation.
//!
//! Paths use JSON field names (`rowsImported`); proto names are accepted
//! and printed back in JSON form. Filterable: scalars, enums (by value
//! name), `Timestamp`, `Duration` and the wrapper types, singular message
//! fields to traverse or test with `:*`, and repeated scalars with `:`.
//! Maps, bytes and repeated messages are not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind as ProtoKind, MessageDescriptor, ReflectMessage as _, Value as ProtoValue,
};

use crate::Registry;
use longrun_types::Payload;
use longrun_types::filter::{Custom, Indexed, Kind, Schema, Value};

/// Packages whose messages are longrun's, protobuf's or Google's plumbing,
/// not producers' metadata or responses.
const PLUMBING: [&str; 5] = [
    "google.protobuf",
    "google.rpc",
    "google.longrunning",
    "google.api",
    "longrun.v1",
];

/// Deepest message nesting indexed under a payload.
const MAX_DEPTH: usize = 8;
/// Most values indexed for one payload; fields past it are not filterable.
pub const MAX_INDEXED: usize = 256;

/// What a field holds, for filtering.
fn kind_of(field: &FieldDescriptor) -> Option<Kind> {
    Some(match field.kind() {
        ProtoKind::Double | ProtoKind::Float => Kind::Float,
        ProtoKind::Int32
        | ProtoKind::Sint32
        | ProtoKind::Sfixed32
        | ProtoKind::Int64
        | ProtoKind::Sint64
        | ProtoKind::Sfixed64
        | ProtoKind::Uint32
        | ProtoKind::Fixed32
        | ProtoKind::Uint64
        | ProtoKind::Fixed64 => Kind::Int,
        ProtoKind::Bool => Kind::Bool,
        ProtoKind::String => Kind::Text,
        ProtoKind::Bytes => return None,
        ProtoKind::Enum(_) => Kind::Enum,
        ProtoKind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => Kind::Time,
            "google.protobuf.Duration" => Kind::Duration,
            "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => Kind::Float,
            "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value" => Kind::Int,
            "google.protobuf.BoolValue" => Kind::Bool,
            "google.protobuf.StringValue" => Kind::Text,
            "google.protobuf.BytesValue" => return None,
            _ => Kind::Message,
        },
    })
}

fn is_plumbing(message: &MessageDescriptor) -> bool {
    PLUMBING.contains(&message.package_name())
}

/// `segments` resolved in `message`: the field, or why not.
fn resolve(message: &MessageDescriptor, segments: &[&str]) -> Result<Custom, String> {
    let mut current = message.clone();
    let mut path = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        let field = current
            .fields()
            .find(|field| field.json_name() == *segment || field.name() == *segment)
            .ok_or_else(|| format!("{} has no field {segment:?}", current.full_name()))?;
        path.push(field.json_name().to_owned());
        let last = index + 1 == segments.len();
        let shown = path.join(".");
        if field.is_map() {
            return Err(format!("{shown} is a map, which filters cannot read"));
        }
        let kind = kind_of(&field).ok_or_else(|| format!("{shown} holds bytes, which filters cannot read"))?;
        if last {
            if field.is_list() && kind == Kind::Message {
                return Err(format!("{shown} is a repeated message, which filters cannot read"));
            }
            let enum_values = match field.kind() {
                ProtoKind::Enum(values) => values.values().map(|value| value.name().to_owned()).collect(),
                _ => Vec::new(),
            };
            return Ok(Custom {
                path: shown,
                kind,
                repeated: field.is_list(),
                enum_values,
            });
        }
        match field.kind() {
            ProtoKind::Message(inner) if kind == Kind::Message && !field.is_list() => current = inner,
            _ if field.is_list() => return Err(format!("{shown} is repeated: filters cannot traverse it")),
            _ => return Err(format!("{shown} is not a message: filters cannot traverse it")),
        }
    }
    Err("an empty field path".into())
}

impl Schema for Registry {
    /// Resolves the path in every registered producer type. It must mean
    /// the same (kind, shape) in all that have it.
    fn custom_field(&self, path: &str) -> Result<Custom, String> {
        let (root, rest) = path.split_once('.').unwrap_or((path, ""));
        let segments: Vec<&str> = rest.split('.').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return Err(format!("{path:?} has an empty field name"));
        }
        let mut found: Option<(String, Custom)> = None;
        let mut nearest: Option<String> = None;
        for message in self.pool.all_messages() {
            if is_plumbing(&message) || message.is_map_entry() {
                continue;
            }
            let mut custom = match resolve(&message, &segments) {
                Ok(custom) => custom,
                Err(reason) => {
                    // A type that has the first field explains best.
                    if nearest.is_none()
                        && message
                            .fields()
                            .any(|f| f.json_name() == segments[0] || f.name() == segments[0])
                    {
                        nearest = Some(reason);
                    }
                    continue;
                }
            };
            custom.path = format!("{root}.{}", custom.path);
            match &mut found {
                None => found = Some((message.full_name().to_owned(), custom)),
                Some((first, known)) => {
                    let same =
                        known.path == custom.path && known.kind == custom.kind && known.repeated == custom.repeated;
                    if !same {
                        return Err(format!(
                            "{path} is ambiguous: it is {} in {first} but {} in {}; filter on one type's fields only",
                            describe(known),
                            describe(&custom),
                            message.full_name()
                        ));
                    }
                    for value in custom.enum_values {
                        if !known.enum_values.contains(&value) {
                            known.enum_values.push(value);
                        }
                    }
                }
            }
        }
        match (found, nearest) {
            (Some((_, custom)), _) => Ok(custom),
            (None, Some(reason)) => Err(format!("{path} cannot be filtered on: {reason}")),
            (None, None) => Err(format!(
                "unknown field {path:?}: no registered metadata or response type has it \
                 (custom types are registered with --descriptors)"
            )),
        }
    }
}

fn describe(custom: &Custom) -> String {
    let repeated = if custom.repeated { "repeated " } else { "" };
    format!("{}{repeated}{:?}", custom.path, custom.kind)
}

impl Registry {
    /// The filterable values of a payload stored as `root` (`metadata` or
    /// `response`). Types the registry does not know, and plumbing types
    /// (Struct, Empty, …), give none.
    pub fn indexed(&self, root: &str, payload: &Payload) -> Vec<Indexed> {
        let Some(descriptor) = self.pool.get_message_by_name(payload.type_name()) else {
            return Vec::new();
        };
        match DynamicMessage::decode(descriptor, payload.value.as_ref()) {
            Ok(message) => index_message(root, &message),
            Err(_) => Vec::new(),
        }
    }
}

/// The filterable values of a decoded payload (none for plumbing types).
pub(crate) fn index_message(root: &str, message: &DynamicMessage) -> Vec<Indexed> {
    let mut out = Vec::new();
    if !is_plumbing(&message.descriptor()) {
        walk(message, root, 0, &mut out);
    }
    out
}

fn walk(message: &DynamicMessage, prefix: &str, depth: usize, out: &mut Vec<Indexed>) {
    for field in message.descriptor().fields() {
        if out.len() >= MAX_INDEXED {
            return;
        }
        let Some(kind) = kind_of(&field) else { continue };
        if field.is_map() {
            continue;
        }
        let path = format!("{prefix}.{}", field.json_name());
        let value = message.get_field(&field);
        if field.is_list() {
            if kind == Kind::Message {
                continue;
            }
            for item in value.as_list().unwrap_or_default() {
                if out.len() >= MAX_INDEXED {
                    return;
                }
                if let Some(value) = scalar(&field, kind, item) {
                    out.push(Indexed {
                        path: path.clone(),
                        value,
                    });
                }
            }
            continue;
        }
        // Fields with presence (messages, `optional`, oneof members) are
        // unset when absent; plain proto3 scalars hold their default.
        if field.supports_presence() && !message.has_field(&field) {
            continue;
        }
        if kind == Kind::Message {
            out.push(Indexed {
                path: path.clone(),
                value: Value::Present,
            });
            if let (Some(inner), true) = (value.as_message(), depth + 1 < MAX_DEPTH) {
                walk(inner, &path, depth + 1, out);
            }
            continue;
        }
        if let Some(value) = scalar(&field, kind, &value) {
            out.push(Indexed { path, value });
        }
    }
}

/// One value of `field` (of `kind`) as a filter value.
fn scalar(field: &FieldDescriptor, kind: Kind, value: &ProtoValue) -> Option<Value> {
    let message_field = |name: &str| value.as_message().and_then(|message| message.get_field_by_name(name));
    Some(match (kind, value) {
        (Kind::Time, _) => {
            let seconds = message_field("seconds")?.as_i64()?;
            let nanos = message_field("nanos")?.as_i32()?;
            // Stores keep microseconds: truncate here so every comparison
            // sees the same value.
            let micros = seconds.checked_mul(1_000_000)?.checked_add(i64::from(nanos / 1000))?;
            let magnitude = Duration::from_micros(micros.unsigned_abs());
            let time: SystemTime = if micros >= 0 {
                UNIX_EPOCH.checked_add(magnitude)?
            } else {
                UNIX_EPOCH.checked_sub(magnitude)?
            };
            Value::Time(time)
        }
        (Kind::Duration, _) => {
            let seconds = message_field("seconds")?.as_i64()?;
            let nanos = message_field("nanos")?.as_i32()?;
            Value::Duration(seconds.checked_mul(1_000_000_000)?.checked_add(i64::from(nanos))?)
        }
        // Wrapper types: the value is their one field.
        (_, ProtoValue::Message(wrapper)) => {
            return scalar(field, kind, &*wrapper.get_field_by_name("value")?);
        }
        (_, ProtoValue::Bool(flag)) => Value::Bool(*flag),
        (_, ProtoValue::I32(number)) => Value::Int(i64::from(*number)),
        (_, ProtoValue::I64(number)) => Value::Int(*number),
        (_, ProtoValue::U32(number)) => Value::Int(i64::from(*number)),
        // Beyond i64: saturate (documented).
        (_, ProtoValue::U64(number)) => Value::Int(i64::try_from(*number).unwrap_or(i64::MAX)),
        (_, ProtoValue::F32(number)) if number.is_finite() => Value::Float(f64::from(*number)),
        (_, ProtoValue::F64(number)) if number.is_finite() => Value::Float(*number),
        (_, ProtoValue::String(text)) => Value::Text(text.clone()),
        (_, ProtoValue::EnumNumber(number)) => match field.kind() {
            ProtoKind::Enum(values) => Value::Text(values.get_value(*number)?.name().to_owned()),
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use serde_json::json;

    use super::*;

    /// The registry with `tests/fixtures/example/<files>` loaded.
    fn load(files: &[&str]) -> Registry {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let set = protox::compile(files, [root]).unwrap();
        let mut registry = Registry::new();
        registry.load_descriptor_set(&set.encode_to_vec()).unwrap();
        registry
    }

    fn import() -> Registry {
        load(&["example/import.proto"])
    }

    fn payload(registry: &Registry, name: &str, json: serde_json::Value) -> Payload {
        let descriptor = registry.pool.get_message_by_name(name).unwrap();
        let message = DynamicMessage::deserialize(descriptor, json).unwrap();
        Payload {
            type_url: format!("type.googleapis.com/{name}"),
            value: message.encode_to_vec().into(),
        }
    }

    #[test]
    fn paths_resolve_by_json_or_proto_name_to_their_kind() {
        let registry = import();
        let resolve = |path: &str| registry.custom_field(path).unwrap();
        let rows = resolve("metadata.rowsImported");
        assert_eq!(
            (rows.path.as_str(), rows.kind, rows.repeated),
            ("metadata.rowsImported", Kind::Int, false)
        );
        assert_eq!(resolve("metadata.rows_imported").path, "metadata.rowsImported");
        assert_eq!(resolve("metadata.ratio").kind, Kind::Float);
        assert_eq!(resolve("metadata.elapsed").kind, Kind::Duration);
        assert_eq!(resolve("metadata.startTime").kind, Kind::Time);
        assert_eq!(resolve("metadata.limit").kind, Kind::Int, "wrappers are their value");
        assert_eq!(resolve("metadata.source").kind, Kind::Message);
        assert_eq!(resolve("metadata.source.uri").kind, Kind::Text);
        let tags = resolve("metadata.tags");
        assert!(tags.repeated && tags.kind == Kind::Text);
        let phase = resolve("metadata.phase");
        assert_eq!(phase.kind, Kind::Enum);
        assert_eq!(phase.enum_values, ["PHASE_UNSPECIFIED", "READING", "WRITING"]);
        assert_eq!(resolve("response.rowCount").kind, Kind::Int);
    }

    #[test]
    fn unfilterable_and_unknown_paths_say_why() {
        let registry = import();
        let reason = |path: &str| registry.custom_field(path).unwrap_err();
        assert!(
            reason("metadata.labels").contains("is a map"),
            "{}",
            reason("metadata.labels")
        );
        assert!(reason("metadata.digest").contains("bytes"));
        assert!(reason("metadata.sources").contains("repeated message"));
        assert!(reason("metadata.sources.uri").contains("repeated: filters cannot traverse"));
        assert!(reason("metadata.ratio.x").contains("not a message"));
        assert!(reason("metadata.nope").contains("no registered metadata or response type"));
        // longrun's and Google's own types are not producer types.
        assert!(reason("response.code").contains("no registered"));
        let both = load(&["example/import.proto", "example/conflict.proto"]);
        let ambiguous = both.custom_field("metadata.ratio").unwrap_err();
        assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
        assert!(both.custom_field("metadata.rowsImported").is_ok());
    }

    #[test]
    fn payload_values_are_indexed_as_filters_compare_them() {
        let registry = import();
        let metadata = payload(
            &registry,
            "example.ImportMetadata",
            json!({
                "ratio": 0.5,
                "elapsed": "1.5s",
                "phase": "READING",
                "tags": ["csv", "nightly"],
                "source": {"uri": "gs://b/x.csv"},
                "startTime": "2025-01-02T03:04:05.123456789Z",
                "labels": {"k": "v"},
                "digest": "AAEC",
                "sources": [{"uri": "a"}],
                "limit": "7",
                "huge": "18446744073709551615"
            }),
        );
        let start = UNIX_EPOCH + Duration::from_micros(1_735_787_045_123_456);
        let entry = |path: &str, value: Value| Indexed {
            path: path.into(),
            value,
        };
        assert_eq!(
            registry.indexed("metadata", &metadata),
            vec![
                // A proto3 scalar without presence holds its default.
                entry("metadata.rowsImported", Value::Int(0)),
                entry("metadata.ratio", Value::Float(0.5)),
                entry("metadata.elapsed", Value::Duration(1_500_000_000)),
                entry("metadata.phase", Value::Text("READING".into())),
                entry("metadata.tags", Value::Text("csv".into())),
                entry("metadata.tags", Value::Text("nightly".into())),
                entry("metadata.source", Value::Present),
                entry("metadata.source.uri", Value::Text("gs://b/x.csv".into())),
                // Truncated to the microseconds stores keep.
                entry("metadata.startTime", Value::Time(start)),
                entry("metadata.limit", Value::Int(7)),
                // Unset `optional` note: absent. uint64 beyond i64 saturates.
                entry("metadata.huge", Value::Int(i64::MAX)),
            ]
        );
        let response = payload(
            &registry,
            "example.ImportResponse",
            json!({"rowCount": "12", "valid": true}),
        );
        assert_eq!(
            registry.indexed("response", &response),
            vec![
                entry("response.rowCount", Value::Int(12)),
                entry("response.valid", Value::Bool(true))
            ]
        );
    }

    #[test]
    fn plumbing_and_unknown_types_index_nothing() {
        let registry = import();
        let structure = payload(&registry, "google.protobuf.Struct", json!({"rowsImported": 3}));
        assert!(registry.indexed("metadata", &structure).is_empty());
        let unknown = Payload {
            type_url: "type.googleapis.com/example.Missing".into(),
            value: Vec::new().into(),
        };
        assert!(registry.indexed("metadata", &unknown).is_empty());
        assert!(matches!(
            registry.check_and_index("metadata", &unknown),
            Err(crate::Error::UnknownType { .. })
        ));
    }
}
