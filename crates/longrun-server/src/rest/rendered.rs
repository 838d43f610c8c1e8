//! Operations as REST serves them, kept for the next read of the same
//! operation in the same state.
//!
//! A caller that polls an operation with Get (what Google's clients do
//! until it is done), and every Wait on one operation when it changes, gets
//! the same JSON until the operation changes again. Rendering it (proto3
//! JSON through the descriptors, its `Any` payloads decoded by type) was the
//! largest part of a Get's CPU after the socket write (BENCHMARKS.md, Get ÷
//! healthz). So Get and Wait keep what they rendered, with the operation it
//! was rendered from, and serve it again while the store returns an equal
//! operation. The store is still read every time: the cache only saves the
//! rendering, it never answers in the store's place, so what a caller sees
//! is always what the store holds now.

use std::sync::Arc;

use axum::body::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::Error;
use longrun_proto::Enums;
use longrun_types::Operation;

use super::View;

/// Room for the rendered JSON kept, in bytes.
const CAPACITY_BYTES: u64 = 32 * 1024 * 1024;
/// How many operations that room is expected to hold (sizes the table).
const EXPECTED_ENTRIES: usize = 8 * 1024;

/// The rendered JSON of recently read operations, by name and rendering.
pub(crate) struct Rendered {
    cache: Cache<Key, Arc<Entry>, BySize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    view: View,
    enums: Enums,
}

struct Entry {
    /// The operation `json` was rendered from.
    operation: Operation,
    json: Bytes,
}

/// An entry weighs its JSON and its operation's payloads, which it keeps.
#[derive(Clone)]
struct BySize;

impl Weighter<Key, Arc<Entry>> for BySize {
    fn weight(&self, key: &Key, entry: &Arc<Entry>) -> u64 {
        let payloads = [&entry.operation.metadata, &entry.operation.input]
            .into_iter()
            .flatten()
            .map(|payload| payload.value.len())
            .sum::<usize>();
        u64::try_from(key.name.len() + entry.json.len() + payloads).unwrap_or(u64::MAX)
    }
}

impl Rendered {
    pub(crate) fn new() -> Self {
        Self {
            cache: Cache::with_weighter(EXPECTED_ENTRIES, CAPACITY_BYTES, BySize),
        }
    }

    /// `operation` as JSON: what `render` wrote for an equal operation
    /// before, or `render`'s JSON now (kept for next time).
    pub(crate) fn json(
        &self,
        operation: &Operation,
        view: View,
        enums: Enums,
        render: impl FnOnce(&Operation) -> Result<Bytes, Error>,
    ) -> Result<Bytes, Error> {
        let key = Key {
            name: operation.name.to_string(),
            view,
            enums,
        };
        if let Some(entry) = self.cache.get(&key)
            && entry.operation == *operation
        {
            return Ok(entry.json.clone());
        }
        let json = render(operation)?;
        let entry = Entry {
            operation: operation.clone(),
            json: json.clone(),
        };
        self.cache.insert(key, Arc::new(entry));
        Ok(json)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a panic is the failure report.
mod tests {
    use std::cell::Cell;
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::*;
    use longrun_types::{OperationName, State};

    fn operation(progress: i32) -> Operation {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Operation {
            name: OperationName::parse("projects/p/operations/op-1").unwrap(),
            state: State::Running,
            outcome: None,
            metadata: None,
            input: None,
            queue: Some("q".into()),
            verb: String::new(),
            target: String::new(),
            api_version: String::new(),
            status_detail: String::new(),
            progress_percent: progress,
            cancel_requested: false,
            cancel_time: None,
            attempt: 1,
            max_attempts: 1,
            request_id: None,
            create_time: at,
            update_time: at,
            end_time: None,
            deadline: None,
            lease: None,
            finished_by: None,
        }
    }

    #[test]
    fn renders_again_only_when_the_operation_changed() {
        let rendered = Rendered::new();
        let renders = Cell::new(0);
        let render = |op: &Operation| {
            renders.set(renders.get() + 1);
            Ok(Bytes::from(
                json!({ "name": op.name.to_string(), "progress": op.progress_percent }).to_string(),
            ))
        };
        let first = rendered
            .json(&operation(10), View::Operation, Enums::Names, render)
            .unwrap();
        let again = rendered
            .json(&operation(10), View::Operation, Enums::Names, render)
            .unwrap();
        assert_eq!(
            (first.clone(), renders.get()),
            (again, 1),
            "the same state renders once"
        );
        let changed = rendered
            .json(&operation(60), View::Operation, Enums::Names, render)
            .unwrap();
        assert_eq!(renders.get(), 2, "a changed operation renders again");
        assert_ne!(first, changed);
        assert!(String::from_utf8_lossy(&changed).contains("60"), "{changed:?}");
        rendered
            .json(&operation(60), View::Longrun, Enums::Names, render)
            .unwrap();
        rendered
            .json(&operation(60), View::Operation, Enums::Numbers, render)
            .unwrap();
        assert_eq!(renders.get(), 4, "each view and enum encoding is its own rendering");
    }

    #[test]
    fn a_failed_rendering_is_not_kept() {
        let rendered = Rendered::new();
        let failed = rendered.json(&operation(1), View::Operation, Enums::Names, |_| {
            Err(Error::internal("no descriptor"))
        });
        assert!(failed.is_err());
        let json = rendered
            .json(&operation(1), View::Operation, Enums::Names, |_| {
                Ok(Bytes::from_static(br#"{"ok":true}"#))
            })
            .unwrap();
        assert_eq!(&json[..], br#"{"ok":true}"#);
    }
}
