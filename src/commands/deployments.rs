//! `pipe deployments [--env E] [--service S]`: the deployment ledger, newest
//! first (see docs/deploy.md).

use pipe_runtime::deploy::ledger;
use pipe_runtime::time::rfc3339;

use super::run::StateArgs;
use crate::exit::Failure;
use crate::project::Project;

/// Output format of `pipe deployments`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn run(
    project: &Project,
    state: &StateArgs,
    env: Option<&str>,
    service: Option<&str>,
    format: Format,
) -> Result<String, Failure> {
    let store = state.open_existing(project)?;
    let rows = ledger::list(&store, env, service).map_err(|e| Failure::invalid(e.to_string()))?;
    if format == Format::Json {
        let mut s = serde_json::to_string_pretty(&rows).unwrap_or_default();
        s.push('\n');
        return Ok(s);
    }
    if rows.is_empty() {
        return Ok("no deployments recorded yet\n".to_string());
    }
    let mut out = format!(
        "{:>4}  {:10}  {:20}  {:12}  {:11}  {:19}  {:9}  {:>5}  {:12}  {}\n",
        "id",
        "env",
        "service",
        "version",
        "status",
        "image",
        "migration",
        "run",
        "approved by",
        "time"
    );
    for r in rows {
        let digest = r
            .image_digest
            .as_deref()
            .map(|d| d.trim_start_matches("sha256:"))
            .map_or_else(
                || "-".to_string(),
                |d| format!("sha256:{}", &d[..12.min(d.len())]),
            );
        out.push_str(&format!(
            "{:>4}  {:10}  {:20}  {:12}  {:11}  {:19}  {:9}  {:>5}  {:12}  {}\n",
            r.id,
            r.environment,
            r.service,
            r.version,
            r.status,
            digest,
            r.migration_version.as_deref().unwrap_or("-"),
            r.run_id.map_or_else(|| "-".to_string(), |i| i.to_string()),
            r.approved_by.as_deref().unwrap_or("-"),
            rfc3339(r.created_ms)
        ));
    }
    Ok(out)
}
