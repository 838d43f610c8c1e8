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

/// Operations stored before custom fields were indexed (schema v3) are
/// listed by `unindexed` until the server reindexes them, and then filter.
#[tokio::test]
async fn operations_from_before_custom_fields_are_indexed_after_upgrade() {
    use longrun_types::filter::arbitrary::FixtureSchema;
    use longrun_types::filter::{Filter, Indexed, Value};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO operations (name, parent, state, done, metadata_type, metadata, attempt, max_attempts, \
                 create_time, update_time) \
             VALUES ('projects/p/operations/old', 'projects/p', 2, 0, 'type.googleapis.com/example.ImportMetadata', \
                 x'0828', 1, 3, 0, 0), \
                    ('projects/p/operations/plain', 'projects/p', 2, 0, NULL, NULL, 1, 3, 0, 0)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let query = ListQuery {
        parent: Parent::parse("projects/p").unwrap(),
        filter: Filter::parse_with("metadata.rowsImported = 40", &FixtureSchema).unwrap(),
        after: None,
        limit: 10,
    };
    assert!(store.list(&query).await.unwrap().is_empty());
    let pending = store.unindexed(10).await.unwrap();
    assert_eq!(pending.len(), 1, "only the operation with a payload waits: {pending:?}");
    assert_eq!(pending[0].name.to_string(), "projects/p/operations/old");
    assert_eq!(pending[0].metadata.as_ref().unwrap().value.as_ref(), [0x08, 0x28]);
    let fields = vec![Indexed {
        path: "metadata.rowsImported".into(),
        value: Value::Int(40),
    }];
    store.reindex(&pending[0].name, fields).await.unwrap();
    let listed = store.list(&query).await.unwrap();
    assert_eq!(listed[0].operation.name.to_string(), "projects/p/operations/old");
    assert!(store.unindexed(10).await.unwrap().is_empty());
    // Deleting the operation deletes its fields with it.
    store.delete(&pending[0].name).await.unwrap();
    let left: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM operation_fields", [], |row| row.get(0))
        .unwrap();
    assert_eq!(left, 0);
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

/// The filters docs/api.md calls index-backed are answered from an index,
/// in keyset order (no sort of every match), whatever the page depth.
#[test]
fn indexed_filters_read_an_index_in_keyset_order() {
    use longrun_types::filter::Filter;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("longrun.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    // Statistics as a large table would have them, so the planner chooses
    // as it would in production.
    conn.execute_batch("ANALYZE").unwrap();
    for (parent, filter) in [
        "",
        "done = true",
        "metadata.state = SUCCEEDED",
        "error.code = 5",
        "metadata.verb = import",
        "metadata.target = \"datasets/a\"",
        "metadata.createTime >= \"2025-01-01T00:00:00Z\"",
        "metadata.createTime < \"2025-01-01T00:00:00Z\"",
        "done = false AND metadata.createTime >= \"2025-01-01T00:00:00Z\"",
        "metadata.rowsImported > 5",
    ]
    .into_iter()
    .map(|filter| ("projects/p/locations/l", filter))
    .chain([
        ("projects/-/locations/-", ""),
        ("projects/-/locations/l", "done = true"),
    ]) {
        let query = ListQuery {
            parent: Parent::parse_pattern(parent).unwrap(),
            filter: Filter::parse_with(filter, &longrun_types::filter::arbitrary::FixtureSchema).unwrap(),
            after: Some(Cursor {
                create_time: 1_750_000_000_000_000,
                seq: 1_000_000,
            }),
            limit: 100,
        };
        let (text, params) = list_statement(&query);
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {text}")).unwrap();
        let plan: Vec<String> = statement
            .query_map(params_from_iter(params), |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        println!("{filter:?}: {plan}");
        assert!(
            plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
            "{filter:?}: {plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts every match: {plan}");
    }
}
