//! `pipe rollback --env E [--service S] [--to VERSION]`: redeploys an earlier
//! version from the deployment ledger as a run of the built-in `rollback`
//! pipeline (recorded, logged and resumable like any run). See docs/ROLLBACK.md.

use pipe_lang::lower::Context;

use super::run::ExecArgs;
use crate::exit::Failure;
use crate::project::Project;

/// The built-in pipeline: one `deploy.rollback` step.
const PIPELINE: &str = r#"# The pipeline `pipe rollback` runs (written by pipe; edits are overwritten).
import "std/deploy"

pipeline rollback {
  param environment: string  = ""
  param service: string      = ""
  param to: string           = ""
  param migrate_down: string = ""

  stage rollback {
    step rollback = deploy.rollback {
      env_name     = environment
      service      = service
      to           = to
      migrate_down = migrate_down
    }
  }
}
"#;

/// What to roll back.
pub struct Target<'a> {
    pub env: &'a str,
    pub service: Option<&'a str>,
    pub to: Option<&'a str>,
    pub migrate_down: Option<&'a str>,
}

pub fn run(
    project: &Project,
    target: &Target<'_>,
    git: pipe_lang::Value,
    exec: &ExecArgs,
) -> Result<(), Failure> {
    let dir = exec.state.dir(project).join("builtin");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("rollback.pipe");
    std::fs::write(&file, PIPELINE)?;
    let mut params = indexmap::IndexMap::new();
    params.insert("environment".to_string(), target.env.to_string());
    for (k, v) in [
        ("service", target.service),
        ("to", target.to),
        ("migrate_down", target.migrate_down),
    ] {
        if let Some(v) = v {
            params.insert(k.to_string(), v.to_string());
        }
    }
    let ctx = Context {
        git,
        params,
        target_env: None,
    };
    super::run::run(project, &file.display().to_string(), &ctx, exec, false)
}
