//! Compiles a [`Filter`] to a parameterised SQL condition. Values are always
//! bound parameters, never spliced into the text.
//!
//! Every restriction compiles to a condition that is true or false, never
//! NULL (`col IS NOT NULL AND …`), so `NOT` keeps AIP-160's meaning: an
//! unset field satisfies no restriction, and its negation does hold.

use crate::micros::micros;
use longrun_types::filter::{
    Comparator, Custom, Expr, Field, Filter, Kind, Restriction, STANDARD_METADATA_TYPE, Value,
};

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Real(f64),
    Text(String),
}

/// Builds `WHERE` conditions and their parameters. `placeholder(n)` renders
/// the n-th (1-based) parameter in the backend's syntax (`?n`, `$n`).
#[derive(Debug)]
pub(crate) struct SqlBuilder {
    pub conditions: Vec<String>,
    pub params: Vec<Param>,
    placeholder: fn(usize) -> String,
}

impl SqlBuilder {
    pub fn new(placeholder: fn(usize) -> String) -> Self {
        Self {
            conditions: Vec::new(),
            params: Vec::new(),
            placeholder,
        }
    }

    /// Binds a parameter and returns its placeholder.
    pub fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        (self.placeholder)(self.params.len())
    }

    pub fn push(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// `cond AND cond ...`, or `1=1` when there is none.
    pub fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            "1=1".to_owned()
        } else {
            self.conditions.join(" AND ")
        }
    }

    /// Adds the filter as one condition on the `operations` table.
    pub fn filter(&mut self, filter: &Filter) {
        if let Some(expr) = &filter.expr {
            let condition = self.expr(expr);
            self.push(condition);
        }
    }

    fn expr(&mut self, expr: &Expr) -> String {
        match expr {
            Expr::And(items) => self.join(items, " AND "),
            Expr::Or(items) => self.join(items, " OR "),
            Expr::Not(inner) => format!("NOT {}", self.expr(inner)),
            Expr::Restriction(restriction) => self.restriction(restriction),
        }
    }

    fn join(&mut self, items: &[Expr], separator: &str) -> String {
        let parts: Vec<String> = items.iter().map(|item| self.expr(item)).collect();
        format!("({})", parts.join(separator))
    }

    fn restriction(&mut self, restriction: &Restriction) -> String {
        match &restriction.field {
            Field::Custom(custom) => self.custom(custom, restriction),
            field => {
                let column = self.column(field);
                self.compare(&column, restriction)
            }
        }
    }

    /// `column` (a standard column, or one of `operation_fields`) against the
    /// restriction's value; false, never NULL, when the column is NULL.
    fn compare(&mut self, column: &str, restriction: &Restriction) -> String {
        let set = format!("{column} IS NOT NULL");
        let param = match &restriction.value {
            Value::Present if matches!(restriction.field.kind(), Kind::Text | Kind::Enum) => {
                return format!("({set} AND {column} <> '')");
            }
            Value::Present => return format!("({set})"),
            Value::Pattern(pattern) => {
                let placeholder = self.bind(Param::Text(glob(pattern)));
                let negation = if restriction.comparator == Comparator::Ne {
                    "NOT "
                } else {
                    ""
                };
                return format!("({set} AND {negation}{column} GLOB {placeholder})");
            }
            Value::Text(text) => Param::Text(text.clone()),
            Value::Bool(flag) => Param::Int(i64::from(*flag)),
            Value::Int(number) | Value::Duration(number) => Param::Int(*number),
            Value::Float(number) => Param::Real(*number),
            Value::State(state) => Param::Int(i64::from(state.as_i32())),
            Value::Time(time) => Param::Int(micros(*time)),
        };
        let placeholder = self.bind(param);
        let operator = match restriction.comparator {
            Comparator::Eq | Comparator::Has => "=",
            Comparator::Ne => "<>",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
        };
        format!("({set} AND {column} {operator} {placeholder})")
    }

    /// Some `operation_fields` row at the field's path satisfies the
    /// restriction (no row: the field is unset, and nothing holds).
    fn custom(&mut self, custom: &Custom, restriction: &Restriction) -> String {
        let path = self.bind(Param::Text(custom.path.clone()));
        let value = match custom.kind {
            Kind::Text | Kind::Enum => "f.text_value",
            Kind::Float => "f.real_value",
            Kind::Bool | Kind::Int | Kind::State | Kind::Time | Kind::Duration => "f.int_value",
            // Presence of a set message: its row has no value.
            Kind::Message => {
                return format!(
                    "EXISTS (SELECT 1 FROM operation_fields f WHERE f.seq = operations.seq AND f.path = {path})"
                );
            }
        };
        let condition = if restriction.value == Value::Present && !matches!(custom.kind, Kind::Text | Kind::Enum) {
            // A scalar of another kind is present when it has a row.
            "1".to_owned()
        } else {
            self.compare(value, restriction)
        };
        format!(
            "EXISTS (SELECT 1 FROM operation_fields f WHERE f.seq = operations.seq AND f.path = {path} AND {condition})"
        )
    }

    /// The SQL for a field; indexed columns are noted in the schema.
    fn column(&mut self, field: &Field) -> String {
        match field {
            Field::Name => "name".into(),
            Field::Done => "done".into(),
            Field::ErrorCode => "error_code".into(),
            Field::ErrorMessage => "error_message".into(),
            Field::MetadataType => {
                let standard = self.bind(Param::Text(STANDARD_METADATA_TYPE.into()));
                format!("coalesce(metadata_type, {standard})")
            }
            Field::ResponseType => "response_type".into(),
            Field::State => "state".into(),
            Field::Verb => "verb".into(),
            Field::Target => "target".into(),
            Field::ApiVersion => "api_version".into(),
            Field::StatusDetail => "status_detail".into(),
            Field::CreateTime => "create_time".into(),
            Field::UpdateTime => "update_time".into(),
            Field::EndTime => "end_time".into(),
            Field::ProgressPercent => "progress_percent".into(),
            Field::Attempt => "attempt".into(),
            Field::CancelRequested => "cancel_requested".into(),
            Field::Custom(custom) => unreachable!("custom field {} has no column", custom.path),
        }
    }
}

/// A filter pattern (`*` wildcards) as a GLOB pattern: GLOB's other special
/// characters are made literal.
fn glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_spliced() {
        let filter = Filter::parse(r#"metadata.verb = "x'; DROP TABLE operations; --" AND NOT done = true"#).unwrap();
        let mut sql = SqlBuilder::new(|n| format!("?{n}"));
        sql.filter(&filter);
        assert_eq!(
            sql.where_clause(),
            "((verb IS NOT NULL AND verb = ?1) AND NOT (done IS NOT NULL AND done = ?2))"
        );
        assert_eq!(
            sql.params,
            vec![Param::Text("x'; DROP TABLE operations; --".into()), Param::Int(1)]
        );
    }

    #[test]
    fn glob_specials_are_literal() {
        assert_eq!(glob("a?b[c]*"), "a[?]b[[]c]*");
    }
}
