//! The canonical text of a filter: parsing it gives back the same tree.

use std::fmt;

use super::{Comparator, Expr, Filter, Restriction, Value};

pub(super) fn comparator(comparator: Comparator) -> &'static str {
    match comparator {
        Comparator::Eq => " = ",
        Comparator::Ne => " != ",
        Comparator::Lt => " < ",
        Comparator::Le => " <= ",
        Comparator::Gt => " > ",
        Comparator::Ge => " >= ",
        Comparator::Has => ":",
    }
}

fn quoted(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(expr) => write!(f, "{expr}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.field.path(), comparator(self.comparator))?;
        match &self.value {
            Value::Bool(flag) => write!(f, "{flag}"),
            Value::Int(number) => write!(f, "{number}"),
            Value::Float(number) => write!(f, "{number:?}"),
            Value::Duration(nanos) => write!(f, "{}", duration(*nanos)),
            Value::Text(text) | Value::Pattern(text) => quoted(f, text),
            Value::State(state) => write!(f, "{state}"),
            Value::Time(time) => match jiff::Timestamp::try_from(*time) {
                Ok(timestamp) => quoted(f, &timestamp.to_string()),
                Err(_) => Err(fmt::Error),
            },
            Value::Present => f.write_str("*"),
        }
    }
}

/// Nanoseconds as AIP-160 writes durations: seconds with an `s` suffix.
pub(super) fn duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let magnitude = nanos.unsigned_abs();
    let (seconds, fraction) = (magnitude / 1_000_000_000, magnitude % 1_000_000_000);
    if fraction == 0 {
        return format!("{sign}{seconds}s");
    }
    let digits = format!("{fraction:09}");
    format!("{sign}{seconds}.{}s", digits.trim_end_matches('0'))
}

/// Writes `expr` where only a restriction or a parenthesised expression may
/// stand (after NOT, or inside a different connective).
fn simple(f: &mut fmt::Formatter<'_>, expr: &Expr) -> fmt::Result {
    match expr {
        Expr::Restriction(restriction) => write!(f, "{restriction}"),
        other => write!(f, "({other})"),
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (items, separator) = match self {
            Expr::Restriction(restriction) => return write!(f, "{restriction}"),
            Expr::Not(inner) => {
                f.write_str("NOT ")?;
                return simple(f, inner);
            }
            Expr::And(items) => (items, " AND "),
            Expr::Or(items) => (items, " OR "),
        };
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                f.write_str(separator)?;
            }
            match item {
                Expr::Not(_) => write!(f, "{item}")?,
                _ => simple(f, item)?,
            }
        }
        Ok(())
    }
}
