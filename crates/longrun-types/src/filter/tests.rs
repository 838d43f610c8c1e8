use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::arbitrary::{FixtureSchema, expr_strategy};

use super::*;
use crate::Error;

fn parse(text: &str) -> Expr {
    Filter::parse(text).unwrap().expr.unwrap()
}

fn restriction(field: Field, comparator: Comparator, value: Value) -> Expr {
    Expr::Restriction(Restriction {
        field,
        comparator,
        value,
    })
}

fn done(flag: bool) -> Expr {
    restriction(Field::Done, Comparator::Eq, Value::Bool(flag))
}

fn verb(text: &str) -> Expr {
    restriction(Field::Verb, Comparator::Eq, Value::Text(text.into()))
}

#[test]
fn or_binds_tighter_than_and() {
    assert_eq!(
        parse("done = true AND metadata.verb = a OR metadata.verb = b"),
        Expr::And(vec![done(true), Expr::Or(vec![verb("a"), verb("b")])])
    );
    assert_eq!(
        parse("(done = true AND metadata.verb = a) OR metadata.verb = b"),
        Expr::Or(vec![Expr::And(vec![done(true), verb("a")]), verb("b")])
    );
}

#[test]
fn adjacency_is_and_and_negation_has_two_spellings() {
    assert_eq!(
        parse("done = true metadata.verb = a"),
        Expr::And(vec![done(true), verb("a")])
    );
    assert_eq!(parse("NOT done = true"), Expr::Not(Box::new(done(true))));
    assert_eq!(parse("-done = true"), Expr::Not(Box::new(done(true))));
    assert_eq!(
        parse("NOT (done = true OR metadata.verb = a)"),
        Expr::Not(Box::new(Expr::Or(vec![done(true), verb("a")])))
    );
}

#[test]
fn literals_take_their_field_kind() {
    assert_eq!(
        parse("error.code = NOT_FOUND"),
        restriction(Field::ErrorCode, Comparator::Eq, Value::Int(5))
    );
    assert_eq!(
        parse("error.code != -1"),
        restriction(Field::ErrorCode, Comparator::Ne, Value::Int(-1))
    );
    assert_eq!(
        parse("metadata.state = \"QUEUED\""),
        restriction(Field::State, Comparator::Eq, Value::State(State::Queued))
    );
    assert_eq!(
        parse("name = \"projects/p/*\""),
        restriction(Field::Name, Comparator::Eq, Value::Pattern("projects/p/*".into()))
    );
    assert_eq!(
        parse("name > \"a*\""),
        restriction(Field::Name, Comparator::Gt, Value::Text("a*".into())),
        "no wildcard in <"
    );
    assert_eq!(
        parse("metadata.endTime:*"),
        restriction(Field::EndTime, Comparator::Has, Value::Present)
    );
    assert_eq!(parse("metadata.verb:export"), verb("export"), ": on a scalar is =");
    assert_eq!(
        parse("metadata.@type = longrun.v1.OperationMetadata"),
        restriction(
            Field::MetadataType,
            Comparator::Eq,
            Value::Text(STANDARD_METADATA_TYPE.into())
        )
    );
    let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    assert_eq!(
        parse("metadata.createTime >= \"2024-05-01T12:00:00Z\""),
        restriction(Field::CreateTime, Comparator::Ge, Value::Time(expected))
    );
    assert_eq!(
        parse("metadata.createTime >= '2024-05-01T14:00:00+02:00'"),
        restriction(Field::CreateTime, Comparator::Ge, Value::Time(expected)),
        "offsets are honoured"
    );
    assert_eq!(Filter::parse("   ").unwrap(), Filter::default());
}

/// Each `(filter, column, words)` is refused at `column` with a message
/// containing `words`.
fn assert_invalid(cases: &[(&str, usize, &str)], schema: &dyn Schema) {
    for (filter, column, needle) in cases {
        match Filter::parse_with(filter, schema) {
            Err(Error::InvalidFilter { column: at, message }) => {
                assert!(message.contains(needle), "{filter:?}: {message:?} lacks {needle:?}");
                assert_eq!(at, *column, "{filter:?}: {message}");
            }
            other => panic!("{filter:?} should be invalid, got {other:?}"),
        }
    }
}

#[test]
fn invalid_filters_say_what_and_where() {
    let cases: &[(&str, usize, &str)] = &[
        ("bogus = 1", 1, "unknown field \"bogus\""),
        ("metadata.nope = 1", 1, "unknown field \"metadata.nope\""),
        ("\"hello\"", 1, "bare value"),
        ("hello", 1, "a bare value is not supported"),
        ("done", 5, "expected a comparator"),
        ("done = maybe", 8, "done is a boolean"),
        ("done < true", 8, "compare it with = or !="),
        ("done = \"true\"", 8, "expected true or false"),
        ("error.code = lots", 14, "integer or a code name"),
        ("metadata.attempt = 1.5", 20, "is an integer"),
        ("metadata.state = DONE", 18, "one of QUEUED"),
        ("metadata.state > QUEUED", 18, "is an enum"),
        ("metadata.createTime > 2024", 23, "RFC 3339"),
        (
            "metadata.createTime > \"2024-05-01T00:00:00.0000001Z\"",
            23,
            "microsecond precision",
        ),
        ("done = true OR", 15, "expected a field"),
        ("done = true AND", 16, "expected a field"),
        ("(done = true", 1, "never closed"),
        ("done = true)", 12, "closes nothing"),
        ("done ! true", 6, "did you mean"),
        ("name = \"unterminated", 8, "unterminated string"),
        ("done =", 7, "expected a value"),
        ("= true", 1, "expected a field"),
        ("done = true AND AND done = false", 17, "expected a field"),
    ];
    assert_invalid(cases, &StandardOnly);
}

fn custom(text: &str) -> Expr {
    Filter::parse_with(text, &FixtureSchema).unwrap().expr.unwrap()
}

#[test]
fn custom_fields_take_their_registered_kind() {
    let field = FixtureSchema::field;
    assert_eq!(
        custom("metadata.rowsImported >= 10"),
        restriction(field("metadata.rowsImported"), Comparator::Ge, Value::Int(10))
    );
    assert_eq!(
        custom("metadata.ratio < 0.5"),
        restriction(field("metadata.ratio"), Comparator::Lt, Value::Float(0.5))
    );
    assert_eq!(
        custom("metadata.ratio = 1"),
        restriction(field("metadata.ratio"), Comparator::Eq, Value::Float(1.0)),
        "an integer literal is a fine double"
    );
    assert_eq!(
        custom("metadata.phase = READING"),
        restriction(field("metadata.phase"), Comparator::Eq, Value::Text("READING".into()))
    );
    assert_eq!(
        custom("metadata.phase = \"WRITING\""),
        restriction(field("metadata.phase"), Comparator::Eq, Value::Text("WRITING".into()))
    );
    // `:` on a repeated field means "contains", and stays `:`.
    assert_eq!(
        custom("metadata.tags:nightly"),
        restriction(field("metadata.tags"), Comparator::Has, Value::Text("nightly".into()))
    );
    assert_eq!(
        custom("metadata.source:*"),
        restriction(field("metadata.source"), Comparator::Has, Value::Present)
    );
    assert_eq!(
        custom("response.valid = true"),
        restriction(field("response.valid"), Comparator::Eq, Value::Bool(true))
    );
    // Standard fields keep their meaning with a schema.
    assert_eq!(custom("metadata.verb = a"), verb("a"));
}

#[test]
fn durations_are_seconds_with_an_s() {
    let elapsed = |nanos: i64| {
        restriction(
            FixtureSchema::field("metadata.elapsed"),
            Comparator::Gt,
            Value::Duration(nanos),
        )
    };
    assert_eq!(custom("metadata.elapsed > 30s"), elapsed(30_000_000_000));
    assert_eq!(custom("metadata.elapsed > \"1.5s\""), elapsed(1_500_000_000));
    assert_eq!(custom("metadata.elapsed > -0.000000001s"), elapsed(-1));
    assert_eq!(custom("metadata.elapsed > 0s"), elapsed(0));
    for (nanos, text) in [
        (1_500_000_000, "1.5s"),
        (-2_000_000_000, "-2s"),
        (1, "0.000000001s"),
        (0, "0s"),
    ] {
        assert_eq!(super::print::duration(nanos), text);
    }
}

#[test]
fn invalid_custom_filters_say_what_and_where() {
    let cases: &[(&str, usize, &str)] = &[
        ("metadata.rowsImported = many", 25, "is an integer"),
        ("metadata.ratio > high", 18, "is a number"),
        ("metadata.elapsed > 30", 20, "seconds with an s suffix"),
        ("metadata.elapsed > 1m", 20, "seconds with an s suffix"),
        ("metadata.elapsed > 1.0000000001s", 20, "nanosecond precision"),
        (
            "metadata.phase = DONE",
            18,
            "one of PHASE_UNSPECIFIED, READING, WRITING",
        ),
        ("metadata.phase > READING", 18, "is an enum"),
        ("metadata.tags = nightly", 17, "is repeated"),
        ("metadata.source = x", 19, "is a message"),
        ("metadata.startTime > yesterday", 22, "RFC 3339"),
        ("metadata.rowz = 1", 1, "no registered metadata or response type"),
        ("response.valid = yes", 18, "is a boolean"),
    ];
    assert_invalid(cases, &FixtureSchema);
    // Without a schema, custom fields are unknown, with a hint.
    let err = Filter::parse("metadata.rowsImported = 1").unwrap_err().to_string();
    assert!(err.contains("need their types registered"), "{err}");
}

#[test]
fn limits_keep_filters_cheap() {
    let long = format!("name = \"{}\"", "x".repeat(MAX_LENGTH));
    assert!(Filter::parse(&long).unwrap_err().to_string().contains("limit"));
    let deep = format!("{}done = true{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    assert!(Filter::parse(&deep).unwrap_err().to_string().contains("nests deeper"));
    let nots = format!("{}done = true", "NOT (".repeat(MAX_DEPTH)) + &")".repeat(MAX_DEPTH);
    assert!(Filter::parse(&nots).is_err());
    let many = vec!["done = true"; MAX_RESTRICTIONS + 1].join(" AND ");
    assert!(Filter::parse(&many).unwrap_err().to_string().contains("restrictions"));
    let fine = vec!["done = true"; MAX_RESTRICTIONS].join(" OR ");
    assert!(Filter::parse(&fine).is_ok());
}

#[test]
fn wildcards_match_runs_of_characters() {
    use super::eval::wildcard_match;
    assert!(wildcard_match("projects/*/operations/*", "projects/p/operations/1"));
    assert!(wildcard_match("*", ""));
    assert!(wildcard_match("a*b*c", "aXbYbZc"));
    assert!(!wildcard_match("a*b", "aXc"));
    assert!(wildcard_match("*done", "half done"));
    assert!(!wildcard_match("ab", "abc"));
}

proptest! {
    #[test]
    fn print_then_parse_gives_the_same_tree(expr in expr_strategy()) {
        let filter = Filter { expr: Some(expr) };
        let text = filter.to_string();
        let reparsed = Filter::parse_with(&text, &FixtureSchema);
        prop_assert_eq!(reparsed.as_ref().ok(), Some(&filter), "{}", text);
    }
}
