//! Filters against a fixed set of operations, with the expected results
//! written out by hand (not computed by the code under test).

use std::collections::HashMap;
use std::time::Duration;

use longrun_types::filter::arbitrary::{FIXTURE_METADATA_TYPE, FixtureSchema};
use longrun_types::filter::{Filter, Indexed, Value};
use longrun_types::{Code, OperationName, Outcome, Parent, Payload, Status};

use super::{struct_payload, t0};
use crate::{Completion, ListQuery, NewOperation, Store, Update};

fn parent() -> Parent {
    Parent::parse("projects/filters/locations/l").unwrap()
}

fn at(seconds: u64) -> std::time::SystemTime {
    t0() + Duration::from_secs(seconds)
}

/// Seven operations, oldest first:
///
/// | id | made | verb     | target         | outcome                          | other |
/// |----|------|----------|----------------|----------------------------------|-------|
/// | a  | +0   | import   | datasets/alpha | running, 40 %, "reading rows"    | apiVersion v1 |
/// | b  | +10  | export   | datasets/beta  | Struct response at +20           | apiVersion v1 |
/// | c  | +20  | import   | datasets/gamma | error 5 "not found: gamma.csv" at +30 | |
/// | d  | +30  | train    | models/m1      | queued                           | |
/// | e  | +40  | train    | models/m2      | cancelled while queued at +50    | |
/// | f  | +50  | (none)   | (none)         | running, cancel requested        | Struct metadata |
/// | g  | +60  | import?  | datasets/[x]   | error 9 "disk full" at +70       | |
///
/// Custom fields ([`FixtureSchema`]): `a` and `d` have `example.ImportMetadata`,
/// `b` a response with `rowCount` 1200 and `valid` true.
///
/// | id | rowsImported | ratio | elapsed | phase             | tags         | source.uri            | startTime |
/// |----|--------------|-------|---------|-------------------|--------------|-----------------------|-----------|
/// | a  | 40 (was 0)   | 0.4   | 12.5s   | READING           | csv, nightly | gs://bucket/alpha.csv | +1        |
/// | d  | 0            | 0.0   | 0s      | PHASE_UNSPECIFIED | (none)       | (no source)           | (unset)   |
///
/// Returns the custom fields each operation holds in the end, for the
/// reference evaluation.
async fn make(store: &dyn Store) -> HashMap<&'static str, Vec<Indexed>> {
    let name = |id: &str| OperationName::new(parent(), id).unwrap();
    let new = |id: &str, made: u64, verb: &str, target: &str| NewOperation {
        verb: verb.into(),
        target: target.into(),
        ..NewOperation::new(name(id), at(made))
    };
    let fail = |code: Code, message: &str| Completion {
        lease_token: None,
        outcome: Outcome::Error(Status::new(code, message)),
        indexed: Vec::new(),
        retry: None,
    };
    store
        .create(NewOperation {
            api_version: "v1".into(),
            metadata: Some(import_metadata()),
            indexed: fresh_import(),
            ..new("a", 0, "import", "datasets/alpha")
        })
        .await
        .unwrap();
    let indexed = |path: &str, value: Value| Indexed {
        path: path.into(),
        value,
    };
    let a_fields = vec![
        indexed("metadata.rowsImported", Value::Int(40)),
        indexed("metadata.ratio", Value::Float(0.4)),
        indexed("metadata.elapsed", Value::Duration(12_500_000_000)),
        indexed("metadata.phase", Value::Text("READING".into())),
        indexed("metadata.tags", Value::Text("csv".into())),
        indexed("metadata.tags", Value::Text("nightly".into())),
        indexed("metadata.source", Value::Present),
        indexed("metadata.source.uri", Value::Text("gs://bucket/alpha.csv".into())),
        indexed("metadata.startTime", Value::Time(at(1))),
    ];
    let progress = Update {
        progress_percent: Some(40),
        status_detail: Some("reading rows".into()),
        metadata: Some(import_metadata()),
        indexed: a_fields.clone(),
        ..Update::default()
    };
    store.update(&name("a"), progress, at(5)).await.unwrap();
    store
        .create(NewOperation {
            api_version: "v1".into(),
            ..new("b", 10, "export", "datasets/beta")
        })
        .await
        .unwrap();
    let b_fields = vec![
        indexed("response.rowCount", Value::Int(1200)),
        indexed("response.valid", Value::Bool(true)),
    ];
    let response = Completion {
        lease_token: None,
        outcome: Outcome::Response(struct_payload()),
        indexed: b_fields.clone(),
        retry: None,
    };
    store.complete(&name("b"), response, at(20)).await.unwrap();
    store.create(new("c", 20, "import", "datasets/gamma")).await.unwrap();
    store
        .complete(&name("c"), fail(Code::NotFound, "not found: gamma.csv"), at(30))
        .await
        .unwrap();
    store
        .create(NewOperation {
            queue: Some("q".into()),
            metadata: Some(import_metadata()),
            indexed: fresh_import(),
            ..new("d", 30, "train", "models/m1")
        })
        .await
        .unwrap();
    store
        .create(NewOperation {
            queue: Some("q".into()),
            ..new("e", 40, "train", "models/m2")
        })
        .await
        .unwrap();
    store.cancel(&name("e"), at(50)).await.unwrap();
    let custom = Payload {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: Vec::new().into(),
    };
    store
        .create(NewOperation {
            metadata: Some(custom),
            ..new("f", 50, "", "")
        })
        .await
        .unwrap();
    store.cancel(&name("f"), at(55)).await.unwrap();
    store.create(new("g", 60, "import?", "datasets/[x]")).await.unwrap();
    store
        .complete(&name("g"), fail(Code::FailedPrecondition, "disk full"), at(70))
        .await
        .unwrap();
    HashMap::from([("a", a_fields), ("b", b_fields), ("d", fresh_import())])
}

/// An `example.ImportMetadata` payload (its bytes do not matter to stores).
fn import_metadata() -> Payload {
    Payload {
        type_url: FIXTURE_METADATA_TYPE.into(),
        value: Vec::new().into(),
    }
}

/// What a registry indexes for a new, all-default `example.ImportMetadata`:
/// proto3 scalars hold their defaults; no message, no repeated elements.
fn fresh_import() -> Vec<Indexed> {
    [
        ("metadata.rowsImported", Value::Int(0)),
        ("metadata.ratio", Value::Float(0.0)),
        ("metadata.elapsed", Value::Duration(0)),
        ("metadata.phase", Value::Text("PHASE_UNSPECIFIED".into())),
    ]
    .into_iter()
    .map(|(path, value)| Indexed {
        path: path.into(),
        value,
    })
    .collect()
}

/// (filter, ids it matches, newest first)
const CASES: &[(&str, &str)] = &[
    ("", "g f e d c b a"),
    ("done = true", "g e c b"),
    ("done = false", "f d a"),
    ("NOT done = true", "f d a"),
    ("-done = true", "f d a"),
    ("metadata.state = QUEUED", "d"),
    ("metadata.state = \"RUNNING\"", "f a"),
    ("metadata.state != RUNNING", "g e d c b"),
    ("metadata.state = CANCELLED OR metadata.state = FAILED", "g e c"),
    ("error.code = 5", "c"),
    ("error.code = NOT_FOUND", "c"),
    // Unset fields match nothing, not even !=, but their negation holds.
    ("error.code != 5", "g e"),
    ("NOT error.code = 5", "g f e d b a"),
    ("error.code:*", "g e c"),
    ("error.code > 1", "g c"),
    ("error.code <= 5", "e c"),
    ("error.message = \"disk full\"", "g"),
    ("error.message = \"not found*\"", "c"),
    ("error.message = \"*cancelled*\"", "e"),
    ("metadata.verb = import", "c a"),
    ("metadata.verb = \"import*\"", "g c a"),
    ("metadata.verb = \"import?\"", "g"),
    ("metadata.verb != import", "g f e d b"),
    ("metadata.verb:*", "g e d c b a"),
    ("metadata.verb:import", "c a"),
    ("metadata.target = \"datasets/*\"", "g c b a"),
    ("metadata.target = \"datasets/[x]\"", "g"),
    ("metadata.target = \"models/*\" AND metadata.state = QUEUED", "d"),
    ("metadata.verb = train OR metadata.verb = export", "e d b"),
    // OR binds tighter than AND.
    ("done = false AND metadata.verb = import OR metadata.verb = export", "a"),
    (
        "(done = false AND metadata.verb = import) OR metadata.verb = export",
        "b a",
    ),
    ("done = false metadata.verb = import", "a"),
    ("NOT (metadata.verb = import OR done = true)", "f d"),
    (
        "metadata.verb = import AND NOT metadata.target = \"datasets/alpha\"",
        "c",
    ),
    ("metadata.createTime >= \"2025-06-15T15:07:10Z\"", "g f e d"),
    ("metadata.createTime < \"2025-06-15T15:07:00Z\"", "b a"),
    (
        "metadata.createTime > \"2025-06-15T15:07:00Z\" AND metadata.createTime <= \"2025-06-15T15:07:30Z\"",
        "f e d",
    ),
    ("metadata.createTime >= \"2025-06-15T17:07:10+02:00\"", "g f e d"),
    ("metadata.endTime:*", "g e c b"),
    ("NOT metadata.endTime:*", "f d a"),
    ("metadata.endTime < \"2025-06-15T15:07:20Z\"", "c b"),
    ("metadata.endTime != \"2025-06-15T15:07:00Z\"", "g e c"),
    ("metadata.progressPercent = 40", "a"),
    ("metadata.progressPercent >= 0", "g f e d c b a"),
    ("metadata.attempt = 1", "g f e d c b a"),
    ("metadata.cancelRequested = true", "f e"),
    ("metadata.@type = google.protobuf.Struct", "f"),
    (
        "metadata.@type = \"type.googleapis.com/longrun.v1.OperationMetadata\"",
        "g e c b",
    ),
    ("metadata.@type = example.ImportMetadata", "d a"),
    ("response.@type = \"google.protobuf.Struct\"", "b"),
    ("response.@type:*", "b"),
    ("NOT response.@type:*", "g f e d c a"),
    ("name = \"projects/filters/locations/l/operations/a\"", "a"),
    ("name = \"*/operations/a\"", "a"),
    ("metadata.statusDetail = \"reading*\"", "a"),
    ("metadata.apiVersion = v1", "b a"),
    ("metadata.apiVersion:*", "b a"),
    // Custom fields of registered types. An update replaces the old values.
    ("metadata.rowsImported > 10", "a"),
    ("metadata.rowsImported = 0", "d"),
    // Operations of other types do not have the field: no match, even !=.
    ("metadata.rowsImported != 40", "d"),
    ("NOT metadata.rowsImported = 40", "g f e d c b"),
    ("metadata.ratio >= 0.25", "a"),
    ("metadata.ratio < 1", "d a"),
    ("metadata.elapsed > 10s", "a"),
    ("metadata.elapsed = \"12.5s\"", "a"),
    ("metadata.elapsed <= 0s", "d"),
    ("metadata.phase = READING", "a"),
    ("metadata.phase = \"PHASE_UNSPECIFIED\"", "d"),
    ("metadata.phase != WRITING", "d a"),
    ("metadata.tags:csv", "a"),
    ("metadata.tags:\"night*\"", "a"),
    ("metadata.tags:*", "a"),
    ("NOT metadata.tags:*", "g f e d c b"),
    ("metadata.source:*", "a"),
    ("metadata.source.uri = \"gs://*\"", "a"),
    // Traversal through an unset message never matches, even with !=.
    ("metadata.source.uri != \"x\"", "a"),
    ("metadata.startTime >= \"2025-06-15T15:06:41Z\"", "a"),
    ("metadata.startTime > \"2025-06-15T15:06:41Z\"", ""),
    ("response.rowCount >= 1000 AND response.valid = true", "b"),
    ("response.valid = false", ""),
    ("metadata.rowsImported > 10 OR response.rowCount > 10", "b a"),
    ("metadata.verb = train AND metadata.phase = PHASE_UNSPECIFIED", "d"),
];

pub(super) async fn filters_match_what_was_written_by_hand(store: &dyn Store) {
    let fields = make(store).await;
    let everything = ListQuery {
        parent: parent(),
        filter: Filter::default(),
        after: None,
        limit: 100,
        within: None,
    };
    let all = store.list(&everything).await.unwrap();
    assert!(CASES.len() >= 40);
    for (text, expected) in CASES {
        let filter = Filter::parse_with(text, &FixtureSchema).unwrap_or_else(|err| panic!("{text:?}: {err}"));
        let query = ListQuery {
            parent: parent(),
            filter,
            after: None,
            limit: 100,
            within: None,
        };
        let listed = store.list(&query).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|listed| listed.operation.name.id()).collect();
        assert_eq!(ids.join(" "), *expected, "filter {text:?}");
        // The in-memory reference agrees with the SQL.
        let reference: Vec<&str> = all
            .iter()
            .map(|listed| (listed.operation.name.id(), &listed.operation))
            .filter(|(id, op)| query.filter.matches_with(op, fields.get(id).map_or(&[], Vec::as_slice)))
            .map(|(id, _)| id)
            .collect();
        assert_eq!(reference, ids, "reference evaluation of {text:?}");
    }
    let _ = at(0);
}
