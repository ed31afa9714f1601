//! `pipe status [RUN]`: one run's steps with status, attempts and durations.

use super::run::StateArgs;
use crate::exit::Failure;
use crate::project::Project;
use crate::render::duration;

/// Output format of `pipe status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn run(
    project: &Project,
    state: &StateArgs,
    run: Option<&str>,
    format: Format,
) -> Result<String, Failure> {
    let store = state.open_existing(project)?;
    let fail = |e: pipe_runtime::StateError| Failure::invalid(e.to_string());
    let r = store.resolve_run(run).map_err(fail)?;
    let steps = store.steps(r.id).map_err(fail)?;
    if format == Format::Json {
        let steps: Vec<_> = steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "step": s.step_id, "status": s.status, "attempt": s.attempt,
                    "started_ms": s.started_ms, "finished_ms": s.finished_ms,
                    "exit_code": s.exit_code, "outputs": s.outputs, "error": s.error,
                })
            })
            .collect();
        let v = serde_json::json!({
            "run": r.id, "pipeline": r.pipeline, "env": r.env, "status": r.status,
            "started_ms": r.started_ms, "finished_ms": r.finished_ms,
            "failed_step": r.failed_step, "source_hash": r.source_hash, "steps": steps,
            "gates": pipe_runtime::gate::gates_of_run(&store, r.id).map_err(fail)?
                .iter().map(|g| super::gates::json(&store, g)).collect::<Vec<_>>(),
        });
        return Ok(format!("{v}\n"));
    }
    let mut out = format!("run {} `{}`: {}\n", r.id, r.pipeline, r.status);
    let w = steps
        .iter()
        .map(|s| s.step_id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:w$}  {:10}  {:>8}  {:>9}  {:>4}  error\n",
        "step", "status", "attempts", "duration", "exit"
    ));
    for s in &steps {
        let dur = match (s.started_ms, s.finished_ms) {
            (Some(a), Some(b)) => duration((b - a).max(0) as u64),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:w$}  {:10}  {:>8}  {:>9}  {:>4}  {}\n",
            s.step_id,
            s.status,
            s.attempt,
            dur,
            s.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            s.error.as_deref().unwrap_or("")
        ));
    }
    out.push_str(&super::gates::status_section(&store, r.id)?);
    Ok(out)
}
