//! Compiles a listing (parent, page position, [`Filter`]) and a claim's
//! parent to parameterised SQL, in the [`Dialect`] of a backend. Values are
//! always bound parameters, never spliced into the text.
//!
//! Every restriction compiles to a condition that is true or false, never
//! NULL (`col IS NOT NULL AND …`), so `NOT` keeps AIP-160's meaning: an
//! unset field satisfies no restriction, and its negation does hold.
//!
//! Both backends share the table shape this assumes: an `operations` table
//! with the standard fields as columns (`done` and `cancel_requested`
//! booleans, times as the backend keeps them), and `operation_fields` rows
//! (`seq`, `path`, `int_value`, `real_value`, `text_value`) for custom
//! fields, times there in microseconds and durations in nanoseconds.

use std::time::SystemTime;

use crate::micros::{from_micros, micros};
use crate::{Cursor, ListQuery};
use longrun_types::filter::{
    Comparator, Custom, Expr, Field, Filter, Kind, Restriction, STANDARD_METADATA_TYPE, Value,
};
use longrun_types::{Parent, State};

/// How a backend spells what differs between SQL databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `?n` placeholders; booleans and times are integers (times in µs
    /// since the epoch); `GLOB` patterns.
    Sqlite,
    /// `$n` placeholders with their types; `boolean` and `timestamptz`
    /// columns; `LIKE` patterns and regular expressions; text columns
    /// compare bytewise (`COLLATE "C"`) as SQLite's do.
    Postgres,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
    Time(SystemTime),
}

/// Builds `WHERE` conditions and their parameters.
#[derive(Debug)]
pub struct SqlBuilder {
    dialect: Dialect,
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl SqlBuilder {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            conditions: Vec::new(),
            params: Vec::new(),
        }
    }

    /// The conditions of one page of a listing, newest first: the parent
    /// (wildcards included), the page position, then the filter.
    pub fn list(dialect: Dialect, query: &ListQuery) -> Self {
        let mut sql = Self::new(dialect);
        sql.parent(&query.parent);
        // The page position goes before the filter: SQLite bounds an index
        // range by the first matching term, and the position's bound is the
        // tighter one (its row passed the filter's own `createTime` bounds).
        if let Some(after) = query.after {
            sql.before(after);
        }
        if let Some(prefixes) = &query.within {
            sql.within(prefixes);
        }
        sql.filter(&query.filter);
        sql
    }

    /// Operations whose name is one of `prefixes` or lies below one, whole
    /// segments at a time (`projects/a` reaches `projects/a/…`, not
    /// `projects/ab`). No prefixes: nothing.
    pub fn within(&mut self, prefixes: &[String]) {
        let mut reaches = Vec::new();
        for prefix in prefixes {
            let exact = self.bind(Param::Text(prefix.clone()));
            let below = format!("{prefix}/");
            reaches.push(match self.dialect {
                Dialect::Sqlite => {
                    let length = self.bind(Param::Int(i64::try_from(below.len()).unwrap_or(i64::MAX)));
                    let below = self.bind(Param::Text(below));
                    format!("name = {exact} OR substr(name, 1, {length}) = {below}")
                }
                Dialect::Postgres => {
                    let below = self.bind(Param::Text(below));
                    format!("name = {exact} OR starts_with(name, {below})")
                }
            });
        }
        if reaches.is_empty() {
            self.push("1=0".into());
        } else {
            self.push(format!("({})", reaches.join(" OR ")));
        }
    }

    /// Queued operations of `queue` whose parent is `parent` or lies below
    /// it: what a claim takes from, and whose earliest availability a
    /// waiting claim sleeps until. Returns the queued state's placeholder.
    ///
    /// The state is written as a literal, not bound: the planner matches it
    /// to the claimable partial index (`WHERE state = 1`) only then, and
    /// SQLite would prepare the statement again on every run to check.
    pub fn queued_under(&mut self, queue: &str, parent: &Parent) -> String {
        let queued = State::Queued.as_i32().to_string();
        let queue = self.bind(Param::Text(queue.to_owned()));
        self.push(format!("state = {queued} AND queue = {queue}"));
        self.under(parent);
        queued
    }

    /// The parameters bound so far, in placeholder order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Binds a parameter and returns its placeholder.
    pub fn bind(&mut self, param: Param) -> String {
        let placeholder = match self.dialect {
            Dialect::Sqlite => format!("?{}", self.params.len() + 1),
            Dialect::Postgres => {
                let kind = match param {
                    Param::Int(_) => "int8",
                    Param::Real(_) => "float8",
                    Param::Text(_) => "text",
                    Param::Bool(_) => "bool",
                    Param::Time(_) => "timestamptz",
                };
                format!("${}::{kind}", self.params.len() + 1)
            }
        };
        self.params.push(param);
        placeholder
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

    /// Operations whose parent is `parent`; `-` ids match any one id.
    pub fn parent(&mut self, parent: &Parent) {
        if !parent.has_wildcard() {
            let placeholder = self.bind(Param::Text(parent.as_str().to_owned()));
            self.push(format!("parent = {placeholder}"));
            return;
        }
        let segments = parent.as_str().split('/').enumerate();
        let is_wildcard = |i: usize, segment: &str| i % 2 == 1 && segment == "-";
        match self.dialect {
            Dialect::Sqlite => {
                let pattern: Vec<&str> = segments.map(|(i, s)| if is_wildcard(i, s) { "*" } else { s }).collect();
                let glob = self.bind(Param::Text(pattern.join("/")));
                let slashes = self.bind(Param::Int(
                    i64::try_from(parent.as_str().matches('/').count()).unwrap_or(i64::MAX),
                ));
                // Ids never contain '/', so with the same number of slashes
                // each '*' matches exactly one id. The unary `+` keeps the
                // planner off the parent index (a prefix range it would then
                // have to sort): the list reads `operations_by_create_time`
                // in order instead.
                self.push(format!(
                    "+parent GLOB {glob} AND length(parent) - length(replace(parent, '/', '')) = {slashes}"
                ));
            }
            Dialect::Postgres => {
                let pattern: Vec<String> = segments
                    .map(|(i, s)| {
                        if is_wildcard(i, s) {
                            "[^/]+".to_owned()
                        } else {
                            regex_literal(s)
                        }
                    })
                    .collect();
                let regex = self.bind(Param::Text(format!("^{}$", pattern.join("/"))));
                self.push(format!("parent ~ {regex}"));
            }
        }
    }

    /// Operations whose parent is `parent` or lies below it (claims).
    pub fn under(&mut self, parent: &Parent) {
        if parent.is_root() {
            return;
        }
        let exact = self.bind(Param::Text(parent.as_str().to_owned()));
        let prefix = format!("{}/", parent.as_str());
        match self.dialect {
            Dialect::Sqlite => {
                let length = self.bind(Param::Int(i64::try_from(prefix.len()).unwrap_or(i64::MAX)));
                let below = self.bind(Param::Text(prefix));
                self.push(format!("(parent = {exact} OR substr(parent, 1, {length}) = {below})"));
            }
            Dialect::Postgres => {
                let below = self.bind(Param::Text(prefix));
                self.push(format!("(parent = {exact} OR starts_with(parent, {below}))"));
            }
        }
    }

    /// Strictly after `cursor` in the newest-first order.
    pub fn before(&mut self, cursor: Cursor) {
        let time = self.time(cursor.create_time);
        let seq = self.bind(Param::Int(cursor.seq));
        self.push(format!("(create_time, seq) < ({time}, {seq})"));
    }

    /// Adds the filter as one condition on the `operations` table.
    pub fn filter(&mut self, filter: &Filter) {
        if let Some(expr) = &filter.expr {
            let condition = self.expr(expr);
            self.push(condition);
        }
    }

    /// A time column's value for `micros` since the epoch.
    fn time(&mut self, micros: i64) -> String {
        self.bind(Param::Time(from_micros(micros)))
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
                self.compare(&column, restriction, false)
            }
        }
    }

    /// `column` (a standard column, or one of `operation_fields` when
    /// `custom`) against the restriction's value; false, never NULL, when
    /// the column is NULL.
    fn compare(&mut self, column: &str, restriction: &Restriction, custom: bool) -> String {
        let set = format!("{column} IS NOT NULL");
        let param = match &restriction.value {
            Value::Present if matches!(restriction.field.kind(), Kind::Text | Kind::Enum) => {
                return format!("({set} AND {column} <> '')");
            }
            Value::Present => return format!("({set})"),
            Value::Pattern(pattern) => {
                let negation = if restriction.comparator == Comparator::Ne {
                    "NOT "
                } else {
                    ""
                };
                let matches = match self.dialect {
                    Dialect::Sqlite => format!("GLOB {}", self.bind(Param::Text(glob(pattern)))),
                    Dialect::Postgres => format!("LIKE {}", self.bind(Param::Text(like(pattern)))),
                };
                return format!("({set} AND {negation}{column} {matches})");
            }
            Value::Text(text) => Param::Text(text.clone()),
            // `operation_fields` keeps booleans and times as integers.
            Value::Bool(flag) if custom => Param::Int(i64::from(*flag)),
            Value::Bool(flag) => Param::Bool(*flag),
            Value::Time(time) if custom => Param::Int(micros(*time)),
            Value::Time(time) => Param::Time(*time),
            Value::Int(number) | Value::Duration(number) => Param::Int(*number),
            Value::Float(number) => Param::Real(*number),
            Value::State(state) => Param::Int(i64::from(state.as_i32())),
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
        let rows = format!("SELECT 1 FROM operation_fields f WHERE f.seq = operations.seq AND f.path = {path}");
        let value = match custom.kind {
            Kind::Text | Kind::Enum => "f.text_value",
            Kind::Float => "f.real_value",
            Kind::Bool | Kind::Int | Kind::State | Kind::Time | Kind::Duration => "f.int_value",
            // Presence of a set message: its row has no value.
            Kind::Message => return format!("EXISTS ({rows})"),
        };
        if restriction.value == Value::Present && !matches!(custom.kind, Kind::Text | Kind::Enum) {
            // A scalar of another kind is present when it has a row.
            return format!("EXISTS ({rows})");
        }
        let condition = self.compare(value, restriction, true);
        format!("EXISTS ({rows} AND {condition})")
    }

    /// The column of a standard field.
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

/// The prefix of custom metadata paths in `operation_fields`.
pub const METADATA_FIELDS: &str = "metadata.";
/// The prefix of custom response paths in `operation_fields`.
pub const RESPONSE_FIELDS: &str = "response.";

/// The `(int_value, real_value, text_value)` of the `operation_fields` row
/// that holds `value`, in every backend: what [`SqlBuilder`] compares
/// custom fields against.
pub fn field_columns(value: &Value) -> (Option<i64>, Option<f64>, Option<&str>) {
    match value {
        Value::Bool(flag) => (Some(i64::from(*flag)), None, None),
        Value::Int(number) | Value::Duration(number) => (Some(*number), None, None),
        Value::State(state) => (Some(i64::from(state.as_i32())), None, None),
        Value::Time(time) => (Some(micros(*time)), None, None),
        Value::Float(number) => (None, Some(*number), None),
        Value::Text(text) | Value::Pattern(text) => (None, None, Some(text)),
        Value::Present => (None, None, None),
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

/// A filter pattern as a LIKE pattern (backslash escapes): `*` matches any
/// run, and LIKE's own `%`, `_` and `\` are literal.
fn like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out
}

/// `text` matched literally in a POSIX regular expression.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_spliced() {
        let filter = Filter::parse(r#"metadata.verb = "x'; DROP TABLE operations; --" AND NOT done = true"#).unwrap();
        let mut sql = SqlBuilder::new(Dialect::Sqlite);
        sql.filter(&filter);
        assert_eq!(
            sql.where_clause(),
            "((verb IS NOT NULL AND verb = ?1) AND NOT (done IS NOT NULL AND done = ?2))"
        );
        assert_eq!(
            sql.params,
            vec![Param::Text("x'; DROP TABLE operations; --".into()), Param::Bool(true)]
        );
    }

    #[test]
    fn postgres_placeholders_carry_their_types() {
        let filter = Filter::parse(r#"metadata.verb = "import*" AND error.code = 5 AND done = false"#).unwrap();
        let mut sql = SqlBuilder::new(Dialect::Postgres);
        sql.filter(&filter);
        assert_eq!(
            sql.where_clause(),
            "((verb IS NOT NULL AND verb LIKE $1::text) AND (error_code IS NOT NULL AND error_code = $2::int8) \
             AND (done IS NOT NULL AND done = $3::bool))"
        );
    }

    #[test]
    fn pattern_specials_are_literal() {
        assert_eq!(glob("a?b[c]*"), "a[?]b[[]c]*");
        assert_eq!(like(r"50%_a\b*"), r"50\%\_a\\b%");
    }

    #[test]
    fn wildcard_parents_match_one_segment() {
        let mut sql = SqlBuilder::new(Dialect::Postgres);
        sql.parent(&Parent::parse_pattern("projects/-/locations/us.east-1").unwrap());
        assert_eq!(sql.where_clause(), "parent ~ $1::text");
        assert_eq!(
            sql.params,
            vec![Param::Text(r"^projects/[^/]+/locations/us\.east\-1$".into())]
        );
    }
}
