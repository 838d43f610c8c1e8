//! Proptest strategies for filters (well-typed restrictions and normalised
//! expression trees) and a fixed [`Schema`] of custom fields, for tests here
//! and in the stores.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::{Comparator, Custom, Expr, Field, Kind, Restriction, Schema, Value};
use crate::State;

/// The metadata type of [`FixtureSchema`].
pub const FIXTURE_METADATA_TYPE: &str = "type.googleapis.com/example.ImportMetadata";

/// A custom metadata type `example.ImportMetadata` and its response, as a
/// registry would resolve them:
///
/// | path                       | kind                                   |
/// |----------------------------|----------------------------------------|
/// | `metadata.rowsImported`    | int64                                  |
/// | `metadata.ratio`           | double                                 |
/// | `metadata.elapsed`         | Duration                               |
/// | `metadata.phase`           | enum PHASE_UNSPECIFIED, READING, WRITING |
/// | `metadata.tags`            | repeated string                        |
/// | `metadata.source`          | message                                |
/// | `metadata.source.uri`      | string                                 |
/// | `metadata.startTime`       | Timestamp                              |
/// | `response.rowCount`        | int64                                  |
/// | `response.valid`           | bool                                   |
#[derive(Debug, Clone, Copy, Default)]
pub struct FixtureSchema;

impl FixtureSchema {
    pub const FIELDS: [(&'static str, Kind, bool); 10] = [
        ("metadata.rowsImported", Kind::Int, false),
        ("metadata.ratio", Kind::Float, false),
        ("metadata.elapsed", Kind::Duration, false),
        ("metadata.phase", Kind::Enum, false),
        ("metadata.tags", Kind::Text, true),
        ("metadata.source", Kind::Message, false),
        ("metadata.source.uri", Kind::Text, false),
        ("metadata.startTime", Kind::Time, false),
        ("response.rowCount", Kind::Int, false),
        ("response.valid", Kind::Bool, false),
    ];

    /// The field at `path`; panics when there is none.
    pub fn field(path: &str) -> Field {
        match FixtureSchema.custom_field(path) {
            Ok(custom) => Field::Custom(Box::new(custom)),
            Err(message) => panic!("{message}"),
        }
    }
}

impl Schema for FixtureSchema {
    fn custom_field(&self, path: &str) -> Result<Custom, String> {
        let (_, kind, repeated) = Self::FIELDS
            .iter()
            .find(|(known, _, _)| *known == path)
            .ok_or_else(|| format!("unknown field {path:?}: no registered metadata or response type has it"))?;
        let enum_values = if *kind == Kind::Enum {
            ["PHASE_UNSPECIFIED", "READING", "WRITING"].map(String::from).to_vec()
        } else {
            Vec::new()
        };
        Ok(Custom {
            path: path.to_owned(),
            kind: *kind,
            repeated: *repeated,
            enum_values,
        })
    }
}

/// Restrictions on [`FixtureSchema`]'s fields, with values of their kinds.
pub fn custom_restriction_strategy() -> impl Strategy<Value = Restriction> {
    let ordered = prop_oneof![
        Just(Comparator::Eq),
        Just(Comparator::Ne),
        Just(Comparator::Lt),
        Just(Comparator::Ge)
    ];
    let equality = prop_oneof![Just(Comparator::Eq), Just(Comparator::Ne)];
    let field = FixtureSchema::field;
    prop_oneof![
        (ordered.clone(), -2i64..50).prop_map(move |(comparator, number)| Restriction {
            field: field("metadata.rowsImported"),
            comparator,
            value: Value::Int(number)
        }),
        (ordered.clone(), prop::sample::select(vec![-1.5, 0.0, 0.25, 0.5, 2.0])).prop_map(
            move |(comparator, number)| Restriction {
                field: field("metadata.ratio"),
                comparator,
                value: Value::Float(number)
            }
        ),
        (
            ordered,
            prop::sample::select(vec![-1_000_000_000i64, 0, 1, 1_500_000_000])
        )
            .prop_map(move |(comparator, nanos)| Restriction {
                field: field("metadata.elapsed"),
                comparator,
                value: Value::Duration(nanos)
            }),
        (
            equality.clone(),
            prop::sample::select(vec!["PHASE_UNSPECIFIED", "READING", "WRITING"])
        )
            .prop_map(move |(comparator, phase)| Restriction {
                field: field("metadata.phase"),
                comparator,
                value: Value::Text(phase.into())
            }),
        prop::sample::select(vec!["a", "b", "a*"]).prop_map(move |tag| Restriction {
            field: field("metadata.tags"),
            comparator: Comparator::Has,
            value: if tag.contains('*') {
                Value::Pattern(tag.into())
            } else {
                Value::Text(tag.into())
            }
        }),
        prop::sample::select(vec![
            "metadata.tags",
            "metadata.source",
            "metadata.startTime",
            "response.valid"
        ])
        .prop_map(move |path| Restriction {
            field: field(path),
            comparator: Comparator::Has,
            value: Value::Present
        }),
        (equality.clone(), prop::sample::select(vec!["x", "y", "*"])).prop_map(move |(comparator, uri)| Restriction {
            field: field("metadata.source.uri"),
            comparator,
            value: if uri.contains('*') {
                Value::Pattern(uri.into())
            } else {
                Value::Text(uri.into())
            }
        }),
        (equality, any::<bool>()).prop_map(move |(comparator, flag)| Restriction {
            field: field("response.valid"),
            comparator,
            value: Value::Bool(flag)
        }),
    ]
}

/// Restrictions with values of the right kind for their field.
pub fn restriction_strategy() -> impl Strategy<Value = Restriction> {
    let text = "[a-cA/ *\"\\\\%_]{0,6}";
    let time =
        (0i64..4_000_000_000_000_000).prop_map(|micros| SystemTime::UNIX_EPOCH + Duration::from_micros(micros as u64));
    let comparators = prop_oneof![
        Just(Comparator::Eq),
        Just(Comparator::Ne),
        Just(Comparator::Lt),
        Just(Comparator::Le),
        Just(Comparator::Gt),
        Just(Comparator::Ge)
    ];
    let equality = prop_oneof![Just(Comparator::Eq), Just(Comparator::Ne)];
    prop_oneof![
        (
            prop_oneof![
                Just(Field::Name),
                Just(Field::Verb),
                Just(Field::ErrorMessage),
                Just(Field::StatusDetail)
            ],
            comparators.clone(),
            text
        )
            .prop_map(|(field, comparator, text): (Field, Comparator, String)| {
                let ordered = !matches!(comparator, Comparator::Eq | Comparator::Ne);
                let value = if text.contains('*') && !ordered {
                    Value::Pattern(text)
                } else {
                    Value::Text(text)
                };
                Restriction {
                    field,
                    comparator,
                    value,
                }
            }),
        (
            prop_oneof![Just(Field::Done), Just(Field::CancelRequested)],
            equality.clone(),
            any::<bool>()
        )
            .prop_map(|(field, comparator, flag)| Restriction {
                field,
                comparator,
                value: Value::Bool(flag)
            }),
        (
            prop_oneof![
                Just(Field::ErrorCode),
                Just(Field::ProgressPercent),
                Just(Field::Attempt)
            ],
            comparators.clone(),
            -3i64..120
        )
            .prop_map(|(field, comparator, number)| Restriction {
                field,
                comparator,
                value: Value::Int(number)
            }),
        (equality, prop::sample::select(State::ALL.to_vec())).prop_map(|(comparator, state)| Restriction {
            field: Field::State,
            comparator,
            value: Value::State(state)
        }),
        (
            prop_oneof![Just(Field::CreateTime), Just(Field::EndTime)],
            comparators,
            time
        )
            .prop_map(|(field, comparator, time)| Restriction {
                field,
                comparator,
                value: Value::Time(time)
            }),
        prop_oneof![
            Just(Field::EndTime),
            Just(Field::ErrorCode),
            Just(Field::Verb),
            Just(Field::ResponseType)
        ]
        .prop_map(|field| Restriction {
            field,
            comparator: Comparator::Has,
            value: Value::Present
        }),
    ]
}

/// Normalised expressions (as the parser builds them) over the standard
/// fields and [`FixtureSchema`]'s.
pub fn expr_strategy() -> impl Strategy<Value = Expr> {
    prop_oneof![3 => restriction_strategy(), 1 => custom_restriction_strategy()]
        .prop_map(Expr::Restriction)
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::all),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::any),
                inner.prop_map(|item| Expr::Not(Box::new(item))),
            ]
        })
}
