//! In-memory evaluation: the reference the stores' SQL must agree with.

use std::cmp::Ordering;

use super::{Comparator, Expr, Field, Filter, Indexed, Restriction, STANDARD_METADATA_TYPE, Value};
use crate::{Operation, Outcome};

impl Filter {
    /// True when `op` satisfies the filter (which has no custom fields).
    pub fn matches(&self, op: &Operation) -> bool {
        self.matches_with(op, &[])
    }

    /// True when `op`, whose custom metadata and response hold `indexed`,
    /// satisfies the filter.
    pub fn matches_with(&self, op: &Operation, indexed: &[Indexed]) -> bool {
        self.expr.as_ref().is_none_or(|expr| expr.matches(op, indexed))
    }
}

impl Expr {
    pub fn matches(&self, op: &Operation, indexed: &[Indexed]) -> bool {
        match self {
            Expr::And(items) => items.iter().all(|item| item.matches(op, indexed)),
            Expr::Or(items) => items.iter().any(|item| item.matches(op, indexed)),
            Expr::Not(inner) => !inner.matches(op, indexed),
            Expr::Restriction(restriction) => restriction.matches(op, indexed),
        }
    }
}

/// A standard field's value on an operation; `None` when unset.
fn actual(field: &Field, op: &Operation) -> Option<Value> {
    let error = match &op.outcome {
        Some(Outcome::Error(status)) => Some(status),
        _ => None,
    };
    Some(match field {
        Field::Name => Value::Text(op.name.to_string()),
        Field::Done => Value::Bool(op.done()),
        Field::ErrorCode => Value::Int(i64::from(error?.code)),
        Field::ErrorMessage => Value::Text(error?.message.clone()),
        Field::MetadataType => Value::Text(
            op.metadata
                .as_ref()
                .map_or(STANDARD_METADATA_TYPE, |metadata| &metadata.type_url)
                .to_owned(),
        ),
        Field::ResponseType => match &op.outcome {
            Some(Outcome::Response(payload)) => Value::Text(payload.type_url.clone()),
            _ => return None,
        },
        Field::State => Value::State(op.state),
        Field::Verb => Value::Text(op.verb.clone()),
        Field::Target => Value::Text(op.target.clone()),
        Field::ApiVersion => Value::Text(op.api_version.clone()),
        Field::StatusDetail => Value::Text(op.status_detail.clone()),
        Field::CreateTime => Value::Time(op.create_time),
        Field::UpdateTime => Value::Time(op.update_time),
        Field::EndTime => Value::Time(op.end_time?),
        Field::ProgressPercent => Value::Int(i64::from(op.progress_percent)),
        Field::Attempt => Value::Int(i64::from(op.attempt)),
        Field::CancelRequested => Value::Bool(op.cancel_requested),
        // Custom fields come from the operation's indexed values.
        Field::Custom(_) => return None,
    })
}

impl Restriction {
    /// AIP-160: an unset field satisfies no restriction, not even `!=`. A
    /// custom field holds when some indexed value at its path satisfies it.
    pub fn matches(&self, op: &Operation, indexed: &[Indexed]) -> bool {
        if let Field::Custom(custom) = &self.field {
            return indexed
                .iter()
                .filter(|entry| entry.path == custom.path)
                .any(|entry| self.holds(&entry.value));
        }
        actual(&self.field, op).is_some_and(|actual| self.holds(&actual))
    }

    /// True when a set value satisfies the restriction.
    fn holds(&self, actual: &Value) -> bool {
        let ordering = match (actual, &self.value) {
            (_, Value::Present) => return !matches!(actual, Value::Text(text) if text.is_empty()),
            (Value::Text(text), Value::Pattern(pattern)) => {
                let hit = wildcard_match(pattern, text);
                return if self.comparator == Comparator::Ne { !hit } else { hit };
            }
            (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Int(a), Value::Int(b)) | (Value::Duration(a), Value::Duration(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => match a.partial_cmp(b) {
                Some(ordering) => ordering,
                None => return false,
            },
            (Value::Time(a), Value::Time(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::State(a), Value::State(b)) => a.cmp(b),
            // The checker pairs every field with values of its own kind.
            _ => return false,
        };
        match self.comparator {
            Comparator::Eq | Comparator::Has => ordering == Ordering::Equal,
            Comparator::Ne => ordering != Ordering::Equal,
            Comparator::Lt => ordering == Ordering::Less,
            Comparator::Le => ordering != Ordering::Greater,
            Comparator::Gt => ordering == Ordering::Greater,
            Comparator::Ge => ordering != Ordering::Less,
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently covers up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}
