//! Custom metadata and response fields: the `operation_fields` rows that
//! filters on `metadata.<path>` and `response.<path>` read.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _};

use crate::{SqliteStore, db};
use longrun_store::sql::field_columns;
use longrun_store::{Error, Result, Unindexed};
use longrun_types::filter::Indexed;
use longrun_types::{OperationName, Payload};

pub(crate) use longrun_store::sql::{METADATA_FIELDS as METADATA, RESPONSE_FIELDS as RESPONSE};

/// Replaces the rows under `prefix` (`metadata.` or `response.`) of
/// operation `name` with `indexed`.
pub(crate) fn write(conn: &Connection, name: &str, prefix: &str, indexed: &[Indexed]) -> Result<()> {
    let seq: i64 = conn
        .prepare_cached("SELECT seq FROM operations WHERE name = ?1")
        .map_err(db)?
        .query_row([name], |row| row.get(0))
        .map_err(db)?;
    conn.prepare_cached("DELETE FROM operation_fields WHERE seq = ?1 AND substr(path, 1, length(?2)) = ?2")
        .map_err(db)?
        .execute(rusqlite::params![seq, prefix])
        .map_err(db)?;
    add(conn, seq, prefix, indexed)
}

/// Adds `indexed` under `prefix` to the operation at `seq`, which has none
/// there yet (it was just inserted).
pub(crate) fn add(conn: &Connection, seq: i64, prefix: &str, indexed: &[Indexed]) -> Result<()> {
    if indexed.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO operation_fields (seq, path, n, int_value, real_value, text_value) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(db)?;
    let mut elements: HashMap<&str, i64> = HashMap::new();
    for entry in indexed {
        // Callers index metadata with `metadata.` paths and responses with
        // `response.` ones; anything else has no place here.
        if !entry.path.starts_with(prefix) {
            debug_assert!(false, "{:?} indexed under {prefix:?}", entry.path);
            continue;
        }
        let n = elements.entry(&entry.path).or_default();
        let (int, real, text) = field_columns(&entry.value);
        insert
            .execute(rusqlite::params![seq, entry.path, *n, int, real, text])
            .map_err(db)?;
        *n += 1;
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn pending_fields(&self, limit: usize) -> Result<Vec<Unindexed>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT name, metadata_type, metadata, response_type, response FROM operations \
                     WHERE fields_pending = 1 ORDER BY seq LIMIT ?1",
                )
                .map_err(db)?;
            let rows = statement
                .query_map([limit], |row| {
                    let payload = |type_at: usize, value_at: usize| -> rusqlite::Result<Option<Payload>> {
                        let type_url: Option<String> = row.get(type_at)?;
                        let value: Option<Vec<u8>> = row.get(value_at)?;
                        Ok(type_url.map(|type_url| Payload {
                            type_url,
                            value: value.unwrap_or_default().into(),
                        }))
                    };
                    Ok((row.get::<_, String>(0)?, payload(1, 2)?, payload(3, 4)?))
                })
                .map_err(db)?;
            rows.map(|row| {
                let (name, metadata, response) = row.map_err(db)?;
                let name = OperationName::parse(&name)
                    .map_err(|err| Error::Corrupt(format!("stored name {name:?} does not parse: {err}")))?;
                Ok(Unindexed {
                    name,
                    metadata,
                    response,
                })
            })
            .collect()
        })
        .await
    }

    pub(crate) async fn reindex_fields(&self, name: &OperationName, indexed: Vec<Indexed>) -> Result<()> {
        let name = name.to_string();
        self.write(move |conn| {
            let exists = conn
                .query_row("SELECT 1 FROM operations WHERE name = ?1", [&name], |_| Ok(()))
                .optional()
                .map_err(db)?;
            // Deleted meanwhile: nothing to index.
            if exists.is_none() {
                return Ok(((), None));
            }
            let (metadata, response): (Vec<Indexed>, Vec<Indexed>) =
                indexed.into_iter().partition(|entry| entry.path.starts_with(METADATA));
            write(conn, &name, METADATA, &metadata)?;
            write(conn, &name, RESPONSE, &response)?;
            conn.execute("UPDATE operations SET fields_pending = 0 WHERE name = ?1", [&name])
                .map_err(db)?;
            Ok(((), None))
        })
        .await
    }
}
