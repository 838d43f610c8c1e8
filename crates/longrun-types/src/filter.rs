//! The List filter: parsing and type-checking against the Operation's fields.
//!
//! This module is the one place that knows the filter language; stores
//! compile its [`Filter`] AST to SQL. The language today is a conjunction of
//! equality tests, `field = value` and `field != value` joined by `AND`, over
//! `name`, `done`, `error.code`, `metadata.state`, `metadata.verb` and
//! `metadata.target`. The full AIP-160 grammar replaces the parser, not its
//! callers.
//!
//! Unset fields follow AIP-160: a test on `error.code` never matches an
//! operation without an error, even with `!=`.

use crate::{Code, Error, Operation, Outcome, State};

/// Longest filter accepted, so no filter can make the server do unbounded work.
pub const MAX_LENGTH: usize = 4096;
const MAX_CONDITIONS: usize = 64;

/// A parsed, type-checked filter: all conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub field: Field,
    pub comparator: Comparator,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
}

/// A filterable field of the Operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Done,
    ErrorCode,
    State,
    Verb,
    Target,
}

/// A literal, already checked against its field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Text(String),
    State(State),
}

impl Field {
    const NAMES: [(&'static str, Field); 6] = [
        ("name", Field::Name),
        ("done", Field::Done),
        ("error.code", Field::ErrorCode),
        ("metadata.state", Field::State),
        ("metadata.verb", Field::Verb),
        ("metadata.target", Field::Target),
    ];

    fn from_path(path: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(_, field)| *field)
    }

    fn names() -> String {
        Self::NAMES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
    }

    /// Converts a literal to this field's type.
    fn literal(self, text: &str, quoted: bool) -> Result<Value, String> {
        match self {
            Field::Name | Field::Verb | Field::Target => Ok(Value::Text(text.to_owned())),
            Field::Done => match (text, quoted) {
                ("true", false) => Ok(Value::Bool(true)),
                ("false", false) => Ok(Value::Bool(false)),
                _ => Err(format!("done is a boolean: expected true or false, found {text:?}")),
            },
            Field::ErrorCode => text
                .parse::<i64>()
                .ok()
                .or_else(|| Code::from_name(text).map(|code| i64::from(code.as_i32())))
                .map(Value::Int)
                .ok_or_else(|| format!("error.code is an integer or a code name like NOT_FOUND, found {text:?}")),
            Field::State => State::from_name(text).map(Value::State).ok_or_else(|| {
                format!("metadata.state is one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, found {text:?}")
            }),
        }
    }
}

impl Filter {
    /// Parses and type-checks a filter; the empty string matches everything.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.len() > MAX_LENGTH {
            return Err(invalid(
                1,
                format!("filter is {} bytes long; the limit is {MAX_LENGTH}", text.len()),
            ));
        }
        let tokens = tokenize(text)?;
        let mut conditions = Vec::new();
        let mut rest = tokens.as_slice();
        while !rest.is_empty() {
            if !conditions.is_empty() {
                match rest {
                    [
                        Token {
                            kind: Kind::Word(word), ..
                        },
                        tail @ ..,
                    ] if word == "AND" => rest = tail,
                    [token, ..] => {
                        return Err(invalid(
                            token.column,
                            format!("expected AND, found {}", token.describe()),
                        ));
                    }
                    [] => unreachable_empty(),
                }
            }
            let (condition, tail) = parse_condition(rest, text)?;
            conditions.push(condition);
            if conditions.len() > MAX_CONDITIONS {
                return Err(invalid(1, format!("more than {MAX_CONDITIONS} conditions")));
            }
            rest = tail;
        }
        Ok(Self { conditions })
    }

    /// Evaluates the filter in memory: the reference the SQL must agree with.
    pub fn matches(&self, op: &Operation) -> bool {
        self.conditions.iter().all(|condition| condition.matches(op))
    }
}

impl Condition {
    fn matches(&self, op: &Operation) -> bool {
        let actual = match self.field {
            Field::Name => Value::Text(op.name.to_string()),
            Field::Done => Value::Bool(op.done()),
            Field::ErrorCode => match &op.outcome {
                Some(Outcome::Error(status)) => Value::Int(i64::from(status.code)),
                _ => return false, // unset never matches
            },
            Field::State => Value::State(op.state),
            Field::Verb => Value::Text(op.verb.clone()),
            Field::Target => Value::Text(op.target.clone()),
        };
        (actual == self.value) == (self.comparator == Comparator::Eq)
    }
}

fn invalid(column: usize, message: String) -> Error {
    Error::InvalidFilter { column, message }
}

fn unreachable_empty() -> ! {
    // The loop only runs while tokens remain.
    unreachable!("match on a non-empty slice")
}

fn parse_condition<'t>(tokens: &'t [Token], text: &str) -> Result<(Condition, &'t [Token]), Error> {
    let end_column = text.chars().count() + 1;
    let (path, column) = match tokens.first() {
        Some(Token {
            kind: Kind::Word(word),
            column,
        }) => (word.as_str(), *column),
        Some(token) => {
            return Err(invalid(
                token.column,
                format!("expected a field name, found {}", token.describe()),
            ));
        }
        None => return Err(invalid(end_column, "expected a field name".into())),
    };
    let field = Field::from_path(path).ok_or_else(|| {
        invalid(
            column,
            format!("unknown field {path:?}; filterable fields are {}", Field::names()),
        )
    })?;
    let comparator = match tokens.get(1) {
        Some(Token { kind: Kind::Eq, .. }) => Comparator::Eq,
        Some(Token { kind: Kind::Ne, .. }) => Comparator::Ne,
        Some(token) => {
            return Err(invalid(
                token.column,
                format!("expected = or != after {path}, found {}", token.describe()),
            ));
        }
        None => {
            return Err(invalid(end_column, format!("expected = or != after {path}")));
        }
    };
    let (literal, quoted, value_column) = match tokens.get(2) {
        Some(Token {
            kind: Kind::Word(word),
            column,
        }) => (word.as_str(), false, *column),
        Some(Token {
            kind: Kind::Quoted(text),
            column,
        }) => (text.as_str(), true, *column),
        Some(token) => {
            return Err(invalid(
                token.column,
                format!("expected a value, found {}", token.describe()),
            ));
        }
        None => {
            return Err(invalid(end_column, format!("expected a value after {path}")));
        }
    };
    let value = field
        .literal(literal, quoted)
        .map_err(|message| invalid(value_column, message))?;
    Ok((
        Condition {
            field,
            comparator,
            value,
        },
        &tokens[3..],
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    Quoted(String),
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    kind: Kind,
    /// 1-based character column where the token starts.
    column: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Word(word) => format!("{word:?}"),
            Kind::Quoted(text) => format!("the string {text:?}"),
            Kind::Eq => "\"=\"".into(),
            Kind::Ne => "\"!=\"".into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let column = i + 1;
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '=' {
            tokens.push(Token { kind: Kind::Eq, column });
            i += 1;
        } else if c == '!' && chars.get(i + 1) == Some(&'=') {
            tokens.push(Token { kind: Kind::Ne, column });
            i += 2;
        } else if c == '"' || c == '\'' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(invalid(column, "unterminated string".into())),
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some(escaped) => value.push(*escaped),
                            None => return Err(invalid(column, "unterminated string".into())),
                        }
                        i += 2;
                    }
                    Some(&quote) if quote == c => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        value.push(*other);
                        i += 1;
                    }
                }
            }
            tokens.push(Token {
                kind: Kind::Quoted(value),
                column,
            });
        } else if c.is_alphanumeric() || "._-@/*~".contains(c) {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "._-@/*~:".contains(chars[i])) {
                i += 1;
            }
            tokens.push(Token {
                kind: Kind::Word(chars[start..i].iter().collect()),
                column,
            });
        } else {
            return Err(invalid(column, format!("unexpected character {c:?}")));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column_of(filter: &str) -> (usize, String) {
        match Filter::parse(filter) {
            Err(Error::InvalidFilter { column, message }) => (column, message),
            other => panic!("{filter:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_conjunctions_of_typed_equalities() {
        let filter = Filter::parse(
            r#"done = false AND metadata.state != QUEUED AND error.code=NOT_FOUND AND metadata.verb = "create x""#,
        )
        .unwrap();
        assert_eq!(
            filter.conditions,
            vec![
                Condition {
                    field: Field::Done,
                    comparator: Comparator::Eq,
                    value: Value::Bool(false)
                },
                Condition {
                    field: Field::State,
                    comparator: Comparator::Ne,
                    value: Value::State(State::Queued)
                },
                Condition {
                    field: Field::ErrorCode,
                    comparator: Comparator::Eq,
                    value: Value::Int(5)
                },
                Condition {
                    field: Field::Verb,
                    comparator: Comparator::Eq,
                    value: Value::Text("create x".into())
                },
            ]
        );
        assert_eq!(Filter::parse("  ").unwrap(), Filter::default());
        assert_eq!(
            Filter::parse("name = projects/p/operations/1").unwrap().conditions[0].value,
            Value::Text("projects/p/operations/1".into())
        );
    }

    #[test]
    fn errors_name_the_column() {
        assert_eq!(column_of("bogus = 1").0, 1);
        assert!(column_of("bogus = 1").1.contains("unknown field \"bogus\""));
        assert_eq!(column_of("done = maybe").0, 8);
        assert_eq!(column_of("done = true OR done = false").0, 13);
        assert_eq!(column_of("done true").0, 6);
        assert_eq!(column_of("done =").0, 7);
        assert_eq!(column_of("metadata.state = DONE").0, 18);
        assert_eq!(column_of("error.code = \"x").0, 14);
        assert_eq!(column_of("done = true AND").0, 16);
        assert_eq!(column_of("done ( true").0, 6);
        assert!(column_of(&"x".repeat(MAX_LENGTH + 1)).1.contains("limit"));
    }
}
