//! The `run` map every step's expressions see: `run.id`, `run.pipeline`,
//! `run.env` and `run.started` (RFC 3339, when the run was first started, so
//! a resumed run keeps its original time). Handlers also see `run.status` and
//! `run.failed_step`. See docs/environments.md.

use indexmap::IndexMap;
use pipe_lang::Value;

use crate::state::Store;

/// The `run` map of run `id` as recorded in the store.
pub fn vars(store: &Store, id: i64, pipeline: &str) -> IndexMap<String, Value> {
    let mut m = IndexMap::new();
    m.insert("id".to_string(), Value::Str(id.to_string()));
    m.insert("pipeline".to_string(), Value::Str(pipeline.to_string()));
    let record = store.run(id).ok();
    m.insert(
        "env".to_string(),
        record
            .as_ref()
            .and_then(|r| r.env.clone())
            .map_or(Value::Null, Value::Str),
    );
    let started = record.map_or_else(crate::state::now_ms, |r| r.started_ms);
    m.insert(
        "started".to_string(),
        Value::Str(crate::time::rfc3339(started)),
    );
    m
}
