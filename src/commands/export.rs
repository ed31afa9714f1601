//! `pipe export github`: writes a pipeline as GitHub Actions workflow YAML,
//! so the same source runs on GitHub's engine. What GitHub cannot express
//! is a comment in the file and a warning on stderr. See docs/export.md.

mod github;
mod yaml;

use std::path::{Path, PathBuf};

use pipe_lang::lower::Context;

use crate::exit::Failure;
use crate::project::Project;

/// Exports `pipeline` to `<out>/pipe-<pipeline>[-<env>].yml`, or to stdout
/// when `out` is `-`. Returns what to print.
pub fn github(
    project: &Project,
    pipeline: &str,
    ctx: &Context,
    out: &Path,
) -> Result<String, Failure> {
    let plan = super::plan_for(project, pipeline, ctx)?;
    let wf = github::export(&plan);
    for w in &wf.warnings {
        eprintln!("warning: {w}");
    }
    if out == Path::new("-") {
        return Ok(wf.yaml);
    }
    let name = match &ctx.target_env {
        Some(e) => format!("pipe-{}-{e}.yml", plan.pipeline),
        None => format!("pipe-{}.yml", plan.pipeline),
    };
    let dir: PathBuf = if out.is_absolute() {
        out.to_path_buf()
    } else {
        project.root.join(out)
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::invalid(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(name);
    std::fs::write(&path, &wf.yaml)
        .map_err(|e| Failure::invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(format!(
        "wrote {} ({} warning(s): constructs GitHub Actions cannot express)\n",
        path.strip_prefix(&project.root).unwrap_or(&path).display(),
        wf.warnings.len()
    ))
}
