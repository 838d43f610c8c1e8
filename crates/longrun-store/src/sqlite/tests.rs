use super::*;

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("longrun.db")).unwrap();
    crate::conformance::run_tests(&store).await;
}

#[tokio::test]
async fn acknowledged_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    let name = OperationName::parse("operations/kept").unwrap();
    let key = {
        let store = SqliteStore::open(&path).unwrap();
        store
            .create(NewOperation::queued(name.clone(), "q", SystemTime::now()))
            .await
            .unwrap();
        store.page_token_key()
    };
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.get(&name).await.unwrap().state, State::Queued);
    assert_eq!(reopened.page_token_key(), key, "page tokens stay valid across restarts");
}

#[tokio::test]
async fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("longrun.db")).unwrap();
    let parent = longrun_types::Parent::parse("projects/p").unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let name = OperationName::new(parent.clone(), &format!("op{i}")).unwrap();
            tokio::spawn(async move { store.create(NewOperation::new(name, SystemTime::now())).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let query = ListQuery {
        parent,
        filter: Default::default(),
        after: None,
        limit: 1000,
    };
    assert_eq!(store.list(&query).await.unwrap().len(), 200);
}

#[test]
fn refuses_a_database_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer than this longrun"), "{err}");
}

mod filters {
    //! SQL filtering agrees with the in-memory reference on random data and
    //! random filters.

    use std::time::{Duration, SystemTime};

    use proptest::prelude::*;

    use crate::{Completion, ListQuery, NewOperation, SqliteStore, Store, Update};
    use longrun_types::filter::arbitrary::{FIXTURE_METADATA_TYPE, expr_strategy};
    use longrun_types::filter::{Filter, Indexed, Value};
    use longrun_types::{OperationName, Outcome, Parent, Payload, Status};

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
        /// Custom metadata fields ([`FixtureSchema`]), if any.
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
                    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
                    out.push(field("metadata.startTime", Value::Time(time)));
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
        let words = prop::sample::select(vec!["", "a", "ab", "b c", "a/b", "*", "\\\"", "c"]);
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

    async fn build(store: &SqliteStore, specs: &[Spec]) -> Parent {
        let parent = Parent::parse("projects/random").unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for (index, spec) in specs.iter().enumerate() {
            let name = OperationName::new(parent.clone(), &format!("op{index}")).unwrap();
            let made = t0 + Duration::from_millis(spec.made);
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
            let _ = store
                .complete(
                    &name,
                    Completion {
                        lease_token: None,
                        outcome,
                        indexed: spec.response.clone(),
                        retry: None,
                    },
                    later,
                )
                .await;
        }
        parent
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn sql_agrees_with_the_reference(specs in prop::collection::vec(spec(), 1..10), exprs in prop::collection::vec(expr_strategy(), 8)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path().join("longrun.db")).unwrap();
            runtime.block_on(async {
                let parent = build(&store, &specs).await;
                let everything = ListQuery { parent: parent.clone(), filter: Filter::default(), after: None, limit: 100 };
                let all = store.list(&everything).await.unwrap();
                for expr in exprs {
                    let filter = Filter { expr: Some(expr) };
                    let expected: Vec<String> = all
                        .iter()
                        .filter(|l| {
                            let index: usize = l.operation.name.id()[2..].parse().unwrap();
                            let spec = &specs[index];
                            let mut fields = spec.metadata.clone();
                            if matches!(l.operation.outcome, Some(Outcome::Response(_))) {
                                fields.extend(spec.response.iter().cloned());
                            }
                            filter.matches_with(&l.operation, &fields)
                        })
                        .map(|l| l.operation.name.to_string())
                        .collect();
                    let query = ListQuery { parent: parent.clone(), filter: filter.clone(), after: None, limit: 100 };
                    let got: Vec<String> = store.list(&query).await.unwrap().into_iter().map(|l| l.operation.name.to_string()).collect();
                    assert_eq!(got, expected, "filter: {}", filter);
                }
            });
        }
    }
}
