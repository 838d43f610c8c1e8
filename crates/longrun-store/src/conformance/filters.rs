//! Filters against a fixed set of operations, with the expected results
//! written out by hand (not computed by the code under test).

use std::time::Duration;

use longrun_types::filter::Filter;
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
async fn make(store: &dyn Store) {
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
            ..new("a", 0, "import", "datasets/alpha")
        })
        .await
        .unwrap();
    let progress = Update {
        progress_percent: Some(40),
        status_detail: Some("reading rows".into()),
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
    let response = Completion {
        lease_token: None,
        outcome: Outcome::Response(struct_payload()),
        indexed: Vec::new(),
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
        "g e d c b a",
    ),
    ("response.@type = \"google.protobuf.Struct\"", "b"),
    ("response.@type:*", "b"),
    ("NOT response.@type:*", "g f e d c a"),
    ("name = \"projects/filters/locations/l/operations/a\"", "a"),
    ("name = \"*/operations/a\"", "a"),
    ("metadata.statusDetail = \"reading*\"", "a"),
    ("metadata.apiVersion = v1", "b a"),
    ("metadata.apiVersion:*", "b a"),
];

pub(super) async fn filters_match_what_was_written_by_hand(store: &dyn Store) {
    make(store).await;
    assert!(CASES.len() >= 40);
    for (text, expected) in CASES {
        let filter = Filter::parse(text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
        let query = ListQuery {
            parent: parent(),
            filter,
            after: None,
            limit: 100,
        };
        let listed = store.list(&query).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|listed| listed.operation.name.id()).collect();
        assert_eq!(ids.join(" "), *expected, "filter {text:?}");
        // The in-memory reference agrees with the SQL.
        let reference: Vec<&str> = listed
            .iter()
            .filter(|l| query.filter.matches(&l.operation))
            .map(|l| l.operation.name.id())
            .collect();
        assert_eq!(reference, ids, "reference evaluation of {text:?}");
    }
    let _ = at(0);
}
