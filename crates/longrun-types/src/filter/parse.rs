//! Tokenizer, recursive-descent parser and type checker.

use std::time::SystemTime;

use super::{Comparator, Custom, Expr, Field, Filter, Kind, Restriction, Schema, StandardOnly, Value, type_url};
use crate::{Code, Error, State};

/// Longest filter accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;
/// Deepest nesting of parentheses and `NOT`.
pub const MAX_DEPTH: usize = 16;
/// Most restrictions in one filter.
pub const MAX_RESTRICTIONS: usize = 100;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Compare(Comparator),
    And,
    Or,
    Not,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(word) => format!("{word:?}"),
            Token::Quoted(text) => format!("the string {text:?}"),
            Token::Open => "\"(\"".into(),
            Token::Close => "\")\"".into(),
            Token::Compare(comparator) => format!("{:?}", super::print::comparator(*comparator).trim()),
            Token::And => "AND".into(),
            Token::Or => "OR".into(),
            Token::Not => "NOT".into(),
        }
    }
}

fn invalid(column: usize, message: impl Into<String>) -> Error {
    Error::InvalidFilter {
        column,
        message: message.into(),
    }
}

/// Characters that end a bare word.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || "()\"'=<>!:".contains(c)
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let column = i + 1;
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (token, width) = match c {
            _ if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '=' => (Token::Compare(Comparator::Eq), 1),
            ':' => (Token::Compare(Comparator::Has), 1),
            '!' if next == Some('=') => (Token::Compare(Comparator::Ne), 2),
            '<' if next == Some('=') => (Token::Compare(Comparator::Le), 2),
            '>' if next == Some('=') => (Token::Compare(Comparator::Ge), 2),
            '<' => (Token::Compare(Comparator::Lt), 1),
            '>' => (Token::Compare(Comparator::Gt), 1),
            '!' => return Err(invalid(column, "unexpected \"!\"; did you mean \"!=\" or NOT?")),
            '"' | '\'' => {
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(invalid(column, "unterminated string")),
                        Some('\\') => match chars.get(j + 1) {
                            Some(escaped) => {
                                value.push(*escaped);
                                j += 2;
                            }
                            None => return Err(invalid(column, "unterminated string")),
                        },
                        Some(&quote) if quote == c => break,
                        Some(other) => {
                            value.push(*other);
                            j += 1;
                        }
                    }
                }
                (Token::Quoted(value), j + 1 - i)
            }
            _ => {
                let mut j = i;
                while j < chars.len() && !is_delimiter(chars[j]) {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                let token = match word.as_str() {
                    "AND" => Token::And,
                    "OR" => Token::Or,
                    "NOT" => Token::Not,
                    _ => Token::Word(word),
                };
                (token, j - i)
            }
        };
        tokens.push((token, column));
        i += width;
    }
    Ok(tokens)
}

struct Parser<'s> {
    schema: &'s dyn Schema,
    tokens: Vec<(Token, usize)>,
    position: usize,
    depth: usize,
    restrictions: usize,
    /// The column just past the end, for "expected …" at the end.
    end: usize,
}

impl Filter {
    /// Parses and type-checks a filter over the standard fields. Errors are
    /// [`Error::InvalidFilter`] with the 1-based column of the problem.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::parse_with(text, &StandardOnly)
    }

    /// Parses and type-checks a filter, resolving custom `metadata.<path>`
    /// and `response.<path>` fields through `schema`.
    pub fn parse_with(text: &str, schema: &dyn Schema) -> Result<Self, Error> {
        if text.len() > MAX_LENGTH {
            return Err(invalid(
                1,
                format!("the filter is {} bytes long; the limit is {MAX_LENGTH}", text.len()),
            ));
        }
        // No value of any field holds a NUL, and databases refuse it in text.
        if let Some(at) = text.chars().position(|c| c == '\0') {
            return Err(invalid(at + 1, "the filter contains a NUL character"));
        }
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Ok(Filter::default());
        }
        let mut parser = Parser {
            schema,
            tokens,
            position: 0,
            depth: 0,
            restrictions: 0,
            end: text.chars().count() + 1,
        };
        let expr = parser.expression()?;
        if let Some((token, column)) = parser.peek() {
            let hint = if *token == Token::Close {
                "; it closes nothing"
            } else {
                ""
            };
            return Err(invalid(*column, format!("unexpected {}{hint}", token.describe())));
        }
        Ok(Filter { expr: Some(expr) })
    }
}

/// `And`/`Or` of `items`, flattened; a single item stands alone.
pub(super) fn combine(items: Vec<Expr>, and: bool) -> Expr {
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match (item, and) {
            (Expr::And(inner), true) | (Expr::Or(inner), false) => flat.extend(inner),
            (other, _) => flat.push(other),
        }
    }
    if flat.len() == 1 {
        return flat.remove(0);
    }
    if and { Expr::And(flat) } else { Expr::Or(flat) }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&(Token, usize)> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<(Token, usize)> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn expression(&mut self) -> Result<Expr, Error> {
        let mut sequences = vec![self.sequence()?];
        while matches!(self.peek(), Some((Token::And, _))) {
            self.next();
            sequences.push(self.sequence()?);
        }
        Ok(combine(sequences, true))
    }

    /// Factors side by side: an implicit AND.
    fn sequence(&mut self) -> Result<Expr, Error> {
        let mut factors = vec![self.factor()?];
        while matches!(
            self.peek(),
            Some((Token::Word(_) | Token::Quoted(_) | Token::Open | Token::Not, _))
        ) {
            factors.push(self.factor()?);
        }
        Ok(combine(factors, true))
    }

    fn factor(&mut self) -> Result<Expr, Error> {
        let mut terms = vec![self.term()?];
        while matches!(self.peek(), Some((Token::Or, _))) {
            self.next();
            terms.push(self.term()?);
        }
        Ok(combine(terms, false))
    }

    fn term(&mut self) -> Result<Expr, Error> {
        let negated = match self.peek() {
            Some((Token::Not, _)) => {
                self.next();
                true
            }
            Some((Token::Word(word), column)) if word.len() > 1 && word.starts_with('-') => {
                let (word, column) = (word[1..].to_owned(), column + 1);
                self.tokens[self.position] = (Token::Word(word), column);
                true
            }
            _ => false,
        };
        if !negated {
            return self.simple();
        }
        self.enter()?;
        let inner = self.simple()?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(inner)))
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let column = self.peek().map_or(self.end, |(_, column)| *column);
            return Err(invalid(
                column,
                format!("the filter nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn simple(&mut self) -> Result<Expr, Error> {
        match self.next() {
            Some((Token::Open, column)) => {
                self.enter()?;
                let inner = self.expression()?;
                match self.next() {
                    Some((Token::Close, _)) => {}
                    Some((token, at)) => {
                        return Err(invalid(at, format!("expected \")\", found {}", token.describe())));
                    }
                    None => return Err(invalid(column, "this \"(\" is never closed")),
                }
                self.depth -= 1;
                Ok(inner)
            }
            Some((Token::Word(path), column)) => self.restriction(&path, column),
            Some((Token::Quoted(text), column)) => Err(invalid(
                column,
                format!("a bare value like {text:?} is not supported: compare a field, e.g. name = \"{text}\""),
            )),
            Some((token, column)) => Err(invalid(
                column,
                format!("expected a field or \"(\", found {}", token.describe()),
            )),
            None => Err(invalid(self.end, "expected a field or \"(\" at the end of the filter")),
        }
    }

    fn restriction(&mut self, path: &str, column: usize) -> Result<Expr, Error> {
        let standard = Field::ALL
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(_, field)| field.clone());
        let custom = || -> Option<Result<Field, Error>> {
            let custom = path.starts_with("metadata.") || path.starts_with("response.");
            custom.then(|| {
                self.schema
                    .custom_field(path)
                    .map(|custom| Field::Custom(Box::new(custom)))
                    .map_err(|message| invalid(column, message))
            })
        };
        let Some(field) = standard.map(Ok).or_else(custom).transpose()? else {
            let known: Vec<&str> = Field::ALL.iter().map(|(name, _)| *name).collect();
            let what = if path.contains('.') || Field::ALL.iter().any(|(name, _)| name.starts_with(path)) {
                format!("unknown field {path:?}")
            } else {
                format!("unknown field {path:?} (a bare value is not supported: compare a field)")
            };
            return Err(invalid(
                column,
                format!("{what}; filterable fields are {}", known.join(", ")),
            ));
        };
        let comparator = match self.next() {
            Some((Token::Compare(comparator), _)) => comparator,
            Some((token, at)) => {
                return Err(invalid(
                    at,
                    format!(
                        "expected a comparator (= != < <= > >= :) after {path}, found {}",
                        token.describe()
                    ),
                ));
            }
            None => {
                return Err(invalid(
                    self.end,
                    format!("expected a comparator (= != < <= > >= :) after {path}"),
                ));
            }
        };
        let (literal, quoted, at) = match self.next() {
            Some((Token::Word(word), at)) => (word, false, at),
            Some((Token::Quoted(text), at)) => (text, true, at),
            Some((token, at)) => {
                return Err(invalid(
                    at,
                    format!("expected a value after {path}, found {}", token.describe()),
                ));
            }
            None => return Err(invalid(self.end, format!("expected a value after {path}"))),
        };
        self.restrictions += 1;
        if self.restrictions > MAX_RESTRICTIONS {
            return Err(invalid(
                column,
                format!("the filter has more than {MAX_RESTRICTIONS} restrictions"),
            ));
        }
        let (comparator, value) =
            check(&field, comparator, &literal, quoted).map_err(|message| invalid(at, message))?;
        Ok(Expr::Restriction(Restriction {
            field,
            comparator,
            value,
        }))
    }
}

/// Converts a literal to the field's kind and checks the comparator.
fn check(field: &Field, comparator: Comparator, literal: &str, quoted: bool) -> Result<(Comparator, Value), String> {
    let path = field.path();
    if comparator == Comparator::Has && literal == "*" && !quoted {
        return Ok((Comparator::Has, Value::Present));
    }
    if let Field::Custom(custom) = field {
        check_custom(custom, comparator)?;
    }
    // `:` on a scalar is equality; on a repeated field it stays "contains".
    let repeated = matches!(field, Field::Custom(custom) if custom.repeated);
    let comparator = if comparator == Comparator::Has && !repeated {
        Comparator::Eq
    } else {
        comparator
    };
    let ordered = matches!(
        comparator,
        Comparator::Lt | Comparator::Le | Comparator::Gt | Comparator::Ge
    );
    let value = match field.kind() {
        Kind::Text => {
            let text = match field {
                Field::MetadataType | Field::ResponseType => type_url(literal),
                _ => literal.to_owned(),
            };
            if text.contains('*') && !ordered {
                Value::Pattern(text)
            } else {
                Value::Text(text)
            }
        }
        Kind::Bool => {
            if ordered {
                return Err(format!("{path} is a boolean: compare it with = or !="));
            }
            match (literal, quoted) {
                ("true", false) => Value::Bool(true),
                ("false", false) => Value::Bool(false),
                _ => {
                    return Err(format!(
                        "{path} is a boolean: expected true or false, found {literal:?}"
                    ));
                }
            }
        }
        Kind::Int => {
            let number = literal.parse::<i64>().ok().or_else(|| {
                (*field == Field::ErrorCode)
                    .then(|| Code::from_name(literal).map(|code| i64::from(code.as_i32())))
                    .flatten()
            });
            match number {
                Some(number) => Value::Int(number),
                None if *field == Field::ErrorCode => {
                    return Err(format!(
                        "{path} is an integer or a code name such as NOT_FOUND, found {literal:?}"
                    ));
                }
                None => return Err(format!("{path} is an integer, found {literal:?}")),
            }
        }
        Kind::State => {
            if ordered {
                return Err(format!("{path} is an enum: compare it with = or !="));
            }
            match State::from_name(literal) {
                Some(state) => Value::State(state),
                None => {
                    return Err(format!(
                        "{path} is one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED; found {literal:?}"
                    ));
                }
            }
        }
        Kind::Float => match literal.parse::<f64>() {
            Ok(number) if number.is_finite() => Value::Float(number),
            _ => return Err(format!("{path} is a number, found {literal:?}")),
        },
        Kind::Enum => {
            if ordered {
                return Err(format!("{path} is an enum: compare it with = or !="));
            }
            let values = match field {
                Field::Custom(custom) => custom.enum_values.as_slice(),
                _ => &[],
            };
            if !values.iter().any(|value| value == literal) {
                return Err(format!("{path} is one of {}; found {literal:?}", values.join(", ")));
            }
            Value::Text(literal.to_owned())
        }
        Kind::Time => Value::Time(timestamp(path, literal)?),
        Kind::Duration => Value::Duration(duration(path, literal)?),
        Kind::Message => {
            return Err(format!(
                "{path} is a message: test its presence with {path}:* or filter on one of its fields"
            ));
        }
    };
    Ok((comparator, value))
}

/// Comparators a custom field's shape allows (before its literal is read).
fn check_custom(custom: &Custom, comparator: Comparator) -> Result<(), String> {
    let path = &custom.path;
    if custom.repeated && comparator != Comparator::Has {
        return Err(format!(
            "{path} is repeated: use {path}:value (some element equals value) or {path}:*"
        ));
    }
    Ok(())
}

/// Seconds with an `s` suffix (AIP-160): `30s`, `-1.5s`, `0.000000001s`.
fn duration(path: &str, literal: &str) -> Result<i64, String> {
    let wrong =
        || format!("{path} is a duration: expected seconds with an s suffix, e.g. 30s or \"1.5s\", found {literal:?}");
    let number = literal.strip_suffix('s').ok_or_else(wrong)?;
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || (digits.contains('.') && fraction.is_empty())
    {
        return Err(wrong());
    }
    if fraction.len() > 9 {
        return Err(format!(
            "{path}: durations have nanosecond precision at most, found {literal:?}"
        ));
    }
    let seconds: i64 = whole.parse().map_err(|_| wrong())?;
    let nanos: i64 = format!("{fraction:0<9}").parse().map_err(|_| wrong())?;
    let total = seconds
        .checked_mul(1_000_000_000)
        .and_then(|value| value.checked_add(nanos))
        .ok_or_else(|| format!("{path}: {literal:?} is out of range (at most about 292 years)"))?;
    Ok(if negative { -total } else { total })
}

/// An RFC 3339 timestamp with at most microsecond precision (the precision
/// operations are stored with).
fn timestamp(path: &str, literal: &str) -> Result<SystemTime, String> {
    let parsed: jiff::Timestamp = literal.parse().map_err(|_| {
        format!("{path} is a timestamp: expected RFC 3339 in quotes, e.g. \"2024-05-01T12:00:00Z\", found {literal:?}")
    })?;
    if parsed.subsec_nanosecond() % 1000 != 0 {
        return Err(format!(
            "{path}: timestamps have microsecond precision at most, found {literal:?}"
        ));
    }
    Ok(SystemTime::from(parsed))
}
