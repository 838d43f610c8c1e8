//! Proptest strategies for filters: well-typed restrictions and normalised
//! expression trees, for property tests here and in the stores.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::{Comparator, Expr, Field, Restriction, Value};
use crate::State;

/// Restrictions with values of the right kind for their field.
pub fn restriction_strategy() -> impl Strategy<Value = Restriction> {
    let text = "[a-c/ *\"\\\\]{0,6}";
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

/// Normalised expressions (as the parser builds them).
pub fn expr_strategy() -> impl Strategy<Value = Expr> {
    restriction_strategy()
        .prop_map(Expr::Restriction)
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::all),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::any),
                inner.prop_map(|item| Expr::Not(Box::new(item))),
            ]
        })
}
