//! `pipe logs [RUN] [STEP] [--attempt N]`: the log files of a run's steps.

use super::run::StateArgs;
use crate::exit::Failure;
use crate::project::Project;

pub fn run(
    project: &Project,
    state: &StateArgs,
    run: Option<&str>,
    step: Option<&str>,
    attempt: Option<u32>,
) -> Result<String, Failure> {
    let store = state.open_existing(project)?;
    let fail = |e: pipe_runtime::StateError| Failure::invalid(e.to_string());
    let r = store.resolve_run(run).map_err(fail)?;
    let steps = store.steps(r.id).map_err(fail)?;
    let chosen: Vec<_> = match step {
        Some(name) => {
            let hit: Vec<_> = steps
                .iter()
                .filter(|s| {
                    s.step_id == name || s.step_id.rsplit_once('.').is_some_and(|(_, n)| n == name)
                })
                .collect();
            if hit.is_empty() {
                let known: Vec<&str> = steps.iter().map(|s| s.step_id.as_str()).collect();
                return Err(Failure::invalid(format!(
                    "run {} has no step `{name}` (its steps: {})",
                    r.id,
                    known.join(", ")
                )));
            }
            hit
        }
        None => steps.iter().collect(),
    };
    let mut out = String::new();
    for s in &chosen {
        let a = attempt.unwrap_or(s.attempt);
        if a == 0 {
            continue;
        }
        if attempt.is_some_and(|n| n > s.attempt) {
            return Err(Failure::invalid(format!(
                "step {} made {} attempt(s) in run {}; there is no attempt {a}",
                s.step_id, s.attempt, r.id
            )));
        }
        let path = store.log_path(r.id, &s.step_id, a);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if chosen.len() == 1 {
            out.push_str(&text);
        } else {
            for line in text.lines() {
                out.push_str(&format!("[{}] {line}\n", s.step_id));
            }
        }
    }
    Ok(out)
}
