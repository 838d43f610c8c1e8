//! Custom metadata and response fields: the `operation_fields` rows that
//! filters on `metadata.<path>` and `response.<path>` read. They are
//! written in the statement that writes their payload (`rows`).

use std::collections::HashMap;

use longrun_store::sql::field_columns;
use longrun_types::filter::Indexed;

pub(crate) use longrun_store::sql::{METADATA_FIELDS as METADATA, RESPONSE_FIELDS as RESPONSE};

/// Rows of `operation_fields`, column by column, for `unnest`.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub paths: Vec<String>,
    pub ns: Vec<i32>,
    pub ints: Vec<Option<i64>>,
    pub reals: Vec<Option<f64>>,
    pub texts: Vec<Option<String>>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// The rows for `indexed` under `prefix` (`metadata.` or `response.`): one
/// per value, elements of a repeated field numbered by position.
pub(crate) fn rows(prefix: &str, indexed: &[Indexed]) -> Rows {
    let mut rows = Rows::default();
    let mut elements: HashMap<&str, i32> = HashMap::new();
    for entry in indexed.iter().filter(|entry| entry.path.starts_with(prefix)) {
        let n = elements.entry(&entry.path).or_default();
        let (int, real, text) = field_columns(&entry.value);
        rows.paths.push(entry.path.clone());
        rows.ns.push(*n);
        rows.ints.push(int);
        rows.reals.push(real);
        rows.texts.push(text.map(str::to_owned));
        *n += 1;
    }
    rows
}
