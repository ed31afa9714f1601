//! `pipe rollback --env E [--service S] [--to VERSION]`: redeploys an earlier
//! version from the deployment ledger as a run of the built-in `rollback`
//! pipeline (recorded, logged and resumable like any run). See docs/ROLLBACK.md.

use pipe_lang::lower::Context;

use super::run::ExecArgs;
use crate::exit::Failure;
use crate::project::Project;

/// The built-in pipeline: one `deploy.rollback` step, of every service of
/// the environment unless `service` names one. When the environment's name
/// can be an env block, the stage runs in it, so that the step reads the
/// secrets the services were deployed with (by the names in the ledger)
/// from that environment's own (`.pipe/secrets/<env>/NAME`, see
/// docs/environments.md) and never from another's, as `pipe run rollback
/// --env E` does. `secret_keys` are their names: the env block declares
/// them, so a missing one is refused before anything runs.
fn pipeline(env: &str, secret_keys: &[String]) -> String {
    // A name the language reserves cannot be an env block: no scope then.
    const KEYWORDS: &[&str] = &[
        "pipeline", "stage", "step", "env", "gate", "chaos", "assert", "import", "template",
        "param", "for", "in", "if", "on", "true", "false", "null",
    ];
    let scoped = is_ident(env) && !KEYWORDS.contains(&env);
    let quoted: Vec<String> = secret_keys.iter().map(|k| format!("\"{k}\"")).collect();
    let env_block = if scoped {
        format!(
            "\n  env {env} {{\n    secrets = [{}]\n  }}\n",
            quoted.join(", ")
        )
    } else {
        String::new()
    };
    let stage_env = if scoped {
        format!("    env = {env}\n\n")
    } else {
        String::new()
    };
    format!(
        r#"# The pipeline `pipe rollback` runs (written by pipe; edits are overwritten).
import "std/deploy"

pipeline rollback {{
  param environment: string  = ""
  param service: string      = ""
  param to: string           = ""
  param migrate_down: string = ""
{env_block}
  stage rollback {{
{stage_env}    step rollback = deploy.rollback {{
      env_name     = environment
      service      = service
      all          = true
      to           = to
      migrate_down = migrate_down
    }}
  }}
}}
"#
    )
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// The names of the secret variables the services to roll back were
/// deployed with, from the ledger.
fn secret_keys(project: &Project, exec: &ExecArgs, target: &Target<'_>) -> Vec<String> {
    let Ok(store) = exec.state.open(project) else {
        return Vec::new();
    };
    let rows = pipe_runtime::deploy::ledger::list(&store, Some(target.env), target.service)
        .unwrap_or_default();
    let mut keys: Vec<String> = Vec::new();
    for r in rows {
        let spec: Option<pipe_runtime::deploy::Spec> = serde_json::from_value(r.spec).ok();
        for k in spec.map(|s| s.secret_keys).unwrap_or_default() {
            if is_ident(&k) && !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

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
    std::fs::write(
        &file,
        pipeline(target.env, &secret_keys(project, exec, target)),
    )?;
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
