//! A backend's filter SQL agrees with the in-memory reference
//! ([`Filter::matches_with`]) on random operations and random filters.
//!
//! Proptest generates the cases, driven by hand so that they run inside the
//! suite's async context; a failure names the case's operations and filter.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRunner};

use crate::{Completion, ListQuery, NewOperation, Store, Update};
use longrun_types::filter::arbitrary::{FIXTURE_METADATA_TYPE, expr_strategy};
use longrun_types::filter::{Expr, Filter, Indexed, Value};
use longrun_types::{OperationName, Outcome, Parent, Payload, Status};

/// Random cases, each with up to 9 operations and 8 filters.
const CASES: u32 = 48;

/// What happens to one generated operation.
#[derive(Debug, Clone)]
struct Spec {
    verb: &'static str,
    target: &'static str,
    made: u64,
    progress: Option<i32>,
    ending: u8,
    code: i32,
    message: &'static str,
    cancel: bool,
    queued: bool,
    /// Custom metadata fields (`FixtureSchema`), if any.
    metadata: Vec<Indexed>,
    /// Custom response fields, for a response.
    response: Vec<Indexed>,
}

fn field(path: &str, value: Value) -> Indexed {
    Indexed {
        path: path.into(),
        value,
    }
}

/// Values of `example.ImportMetadata`, some unset.
fn metadata() -> impl Strategy<Value = Vec<Indexed>> {
    (
        prop::option::of(-2i64..50),
        prop::option::of(prop::sample::select(vec![-1.5, 0.0, 0.25, 0.5, 2.0])),
        prop::option::of(prop::sample::select(vec![-1_000_000_000i64, 0, 1, 1_500_000_000])),
        prop::option::of(prop::sample::select(vec!["PHASE_UNSPECIFIED", "READING", "WRITING"])),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "ab"]), 0..3),
        prop::option::of(prop::sample::select(vec!["x", "y", ""])),
        any::<bool>(),
    )
        .prop_map(|(rows, ratio, elapsed, phase, tags, uri, started)| {
            let mut out = Vec::new();
            out.extend(rows.map(|n| field("metadata.rowsImported", Value::Int(n))));
            out.extend(ratio.map(|x| field("metadata.ratio", Value::Float(x))));
            out.extend(elapsed.map(|n| field("metadata.elapsed", Value::Duration(n))));
            out.extend(phase.map(|p| field("metadata.phase", Value::Text(p.into()))));
            out.extend(tags.into_iter().map(|t| field("metadata.tags", Value::Text(t.into()))));
            if let Some(uri) = uri {
                out.push(field("metadata.source", Value::Present));
                out.push(field("metadata.source.uri", Value::Text(uri.into())));
            }
            if started {
                out.push(field("metadata.startTime", Value::Time(t0())));
            }
            out
        })
}

fn response() -> impl Strategy<Value = Vec<Indexed>> {
    prop::option::of((-2i64..50, any::<bool>())).prop_map(|values| match values {
        Some((rows, valid)) => vec![
            field("response.rowCount", Value::Int(rows)),
            field("response.valid", Value::Bool(valid)),
        ],
        None => Vec::new(),
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    let words = prop::sample::select(vec!["", "a", "ab", "b c", "a/b", "*", "\\\"", "c", "A", "a%_"]);
    (
        words.clone(),
        words.clone(),
        0u64..1_000,
        prop::option::of(0i32..=100),
        0u8..3,
        prop::sample::select(vec![1, 2, 5, 9, 14]),
        words,
        any::<bool>(),
        any::<bool>(),
        (metadata(), response()),
    )
        .prop_map(
            |(verb, target, made, progress, ending, code, message, cancel, queued, (metadata, response))| Spec {
                verb,
                target,
                made,
                progress,
                ending,
                code,
                message,
                cancel,
                queued,
                metadata,
                response,
            },
        )
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

async fn build(store: &dyn Store, parent: &Parent, specs: &[Spec]) {
    for (index, spec) in specs.iter().enumerate() {
        let name = OperationName::new(parent.clone(), &format!("op{index}")).unwrap();
        let made = t0() + Duration::from_millis(spec.made);
        let new = NewOperation {
            verb: spec.verb.into(),
            target: spec.target.into(),
            queue: spec.queued.then(|| "q".into()),
            metadata: (!spec.metadata.is_empty()).then(|| Payload {
                type_url: FIXTURE_METADATA_TYPE.into(),
                value: Vec::new().into(),
            }),
            indexed: spec.metadata.clone(),
            ..NewOperation::new(name.clone(), made)
        };
        store.create(new).await.unwrap();
        let later = made + Duration::from_millis(spec.made / 2 + 1);
        if spec.cancel {
            store.cancel(&name, later).await.unwrap();
        }
        if spec.queued {
            continue;
        }
        if let Some(percent) = spec.progress {
            let update = Update {
                progress_percent: Some(percent),
                status_detail: Some(spec.message.into()),
                ..Update::default()
            };
            let _ = store.update(&name, update, later).await;
        }
        let outcome = match spec.ending {
            0 => continue,
            1 => Outcome::Response(Payload {
                type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                value: Vec::new().into(),
            }),
            _ => Outcome::Error(Status {
                code: spec.code,
                message: spec.message.into(),
                details: Vec::new(),
            }),
        };
        let completion = Completion {
            indexed: spec.response.clone(),
            ..Completion::new(outcome)
        };
        let _ = store.complete(&name, completion, later).await;
    }
}

pub(super) async fn filters_agree_with_the_reference_on_random_data(store: &dyn Store) {
    let mut runner = TestRunner::new(Config::default());
    let cases = (
        prop::collection::vec(spec(), 1..10),
        prop::collection::vec(expr_strategy(), 8),
    );
    for case in 0..CASES {
        let (specs, exprs): (Vec<Spec>, Vec<Expr>) = cases.new_tree(&mut runner).unwrap().current();
        let parent = Parent::parse(&format!("projects/random-{case}")).unwrap();
        build(store, &parent, &specs).await;
        let everything = ListQuery {
            parent: parent.clone(),
            filter: Filter::default(),
            after: None,
            limit: 100,
            within: None,
        };
        let all = store.list(&everything).await.unwrap();
        for expr in exprs {
            let filter = Filter { expr: Some(expr) };
            let expected: Vec<String> = all
                .iter()
                .filter(|listed| {
                    let index: usize = listed.operation.name.id()[2..].parse().unwrap();
                    let spec = &specs[index];
                    let mut fields = spec.metadata.clone();
                    if matches!(listed.operation.outcome, Some(Outcome::Response(_))) {
                        fields.extend(spec.response.iter().cloned());
                    }
                    filter.matches_with(&listed.operation, &fields)
                })
                .map(|listed| listed.operation.name.to_string())
                .collect();
            let query = ListQuery {
                parent: parent.clone(),
                filter: filter.clone(),
                after: None,
                limit: 100,
                within: None,
            };
            let got: Vec<String> = store
                .list(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|listed| listed.operation.name.to_string())
                .collect();
            assert_eq!(got, expected, "case {case}, filter: {filter}\noperations: {specs:#?}");
        }
    }
}
