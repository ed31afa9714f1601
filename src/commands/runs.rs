//! `pipe runs`: the recorded runs, newest first.

use pipe_runtime::time::rfc3339;

use super::run::StateArgs;
use crate::exit::Failure;
use crate::project::Project;
use crate::render::duration;

pub fn run(project: &Project, state: &StateArgs, limit: usize) -> Result<String, Failure> {
    let store = state.open_existing(project)?;
    let runs = store
        .runs(limit)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let mut out = format!(
        "{:>5}  {:20}  {:10}  {:11}  {:20}  {:>9}\n",
        "id", "pipeline", "env", "status", "started", "duration"
    );
    for r in runs {
        let dur = r.finished_ms.map_or_else(
            || "-".to_string(),
            |f| duration((f - r.started_ms).max(0) as u64),
        );
        out.push_str(&format!(
            "{:>5}  {:20}  {:10}  {:11}  {:20}  {:>9}\n",
            r.id,
            r.pipeline,
            r.env.as_deref().unwrap_or("-"),
            r.status,
            rfc3339(r.started_ms),
            dur
        ));
    }
    Ok(out)
}
