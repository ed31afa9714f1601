//! One module per subcommand.

pub mod approve;
pub mod check;
pub mod deployments;
pub mod doc;
pub mod env;
pub mod export;
pub mod fmt;
pub mod gates;
pub mod gc;
pub mod graph;
pub mod list;
pub mod logs;
pub mod report;
pub mod resume;
pub mod rollback;
pub mod run;
pub mod runs;
pub mod status;

use pipe_lang::lower::{lower, Context};
use pipe_lang::Plan;

use crate::diagnostics::emit;
use crate::exit::{Failure, INVALID};
use crate::project::Project;

/// Loads and lowers the pipeline an argument names, printing diagnostics;
/// invalid source fails with exit code 2.
pub fn plan_for(project: &Project, arg: &str, ctx: &Context) -> Result<Plan, Failure> {
    let (files, name) = project.resolve(arg)?;
    let ws = project.load(&files)?;
    if !ws.diagnostics.is_empty() {
        emit(&ws.diagnostics, &ws.sources);
        if ws.diagnostics.iter().any(pipe_lang::Diagnostic::is_error) {
            return Err(Failure::silent(INVALID));
        }
    }
    let found = match &name {
        Some(n) => ws.find_pipeline(n).or_else(|| {
            // `pipelines/<n>.pipe` holding a single pipeline of another name.
            let all: Vec<_> = ws.pipelines().collect();
            if all.len() == 1 {
                all.into_iter().next()
            } else {
                None
            }
        }),
        None => ws.pipelines().next(),
    };
    let Some((module, pl)) = found else {
        return Err(Failure::invalid(format!(
            "no pipeline `{}` in {}",
            name.unwrap_or_default(),
            files[0].display()
        )));
    };
    let (plan, diags) = lower(&ws, module, pl, ctx);
    emit(&diags, &ws.sources);
    plan.ok_or(Failure::silent(INVALID))
}
