//! Compiles a [`Filter`] to a parameterised SQL condition. Values are always
//! bound parameters, never spliced into the text.
//!
//! Every restriction compiles to a condition that is true or false, never
//! NULL (`col IS NOT NULL AND …`), so `NOT` keeps AIP-160's meaning: an
//! unset field satisfies no restriction, and its negation does hold.

use crate::micros::micros;
use longrun_types::filter::{Comparator, Expr, Field, Filter, Restriction, STANDARD_METADATA_TYPE, Value};

/// A bound parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Int(i64),
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
        let column = self.column(restriction.field);
        let set = format!("{column} IS NOT NULL");
        let param = match &restriction.value {
            Value::Present if restriction.field.kind() == longrun_types::filter::Kind::Text => {
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
            Value::Int(number) => Param::Int(*number),
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

    /// The SQL for a field; indexed columns are noted in the schema.
    fn column(&mut self, field: Field) -> String {
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
