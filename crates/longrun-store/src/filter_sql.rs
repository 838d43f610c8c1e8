//! Compiles a [`Filter`] to a parameterised SQL condition. Values are always
//! bound parameters, never spliced into the text.

use longrun_types::filter::{Comparator, Field, Filter, Value};

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

    /// Adds the filter's conditions. Columns are those of the `operations`
    /// table, each indexed (see the schema).
    pub fn filter(&mut self, filter: &Filter) {
        for condition in &filter.conditions {
            let column = match condition.field {
                Field::Name => "name",
                Field::Done => "done",
                Field::ErrorCode => "error_code",
                Field::State => "state",
                Field::Verb => "verb",
                Field::Target => "target",
            };
            let param = match &condition.value {
                Value::Bool(flag) => Param::Int(i64::from(*flag)),
                Value::Int(number) => Param::Int(*number),
                Value::Text(text) => Param::Text(text.clone()),
                Value::State(state) => Param::Int(i64::from(state.as_i32())),
            };
            let placeholder = self.bind(param);
            let sql = match condition.comparator {
                Comparator::Eq => format!("{column} = {placeholder}"),
                // AIP-160: an unset field never matches, even with !=.
                Comparator::Ne => format!("({column} IS NOT NULL AND {column} <> {placeholder})"),
            };
            self.push(sql);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_spliced() {
        let filter = Filter::parse(r#"metadata.verb = "x'; DROP TABLE operations; --" AND done != true"#).unwrap();
        let mut sql = SqlBuilder::new(|n| format!("?{n}"));
        sql.filter(&filter);
        assert_eq!(sql.where_clause(), "verb = ?1 AND (done IS NOT NULL AND done <> ?2)");
        assert_eq!(
            sql.params,
            vec![Param::Text("x'; DROP TABLE operations; --".into()), Param::Int(1)]
        );
    }
}
