//! `pipe gc`: removes the containers and networks that crashed runs left in
//! the Docker Engine (a `pipe` killed with SIGKILL cannot clean up after
//! itself). Only leftovers whose owning `pipe` process is gone are touched;
//! live runs and `docker.run` containers stay, and so do deployments that
//! took traffic; deployments left `deploying` in the ledger are settled
//! against the Engine. `pipe resume` runs the same cleanup for the run it
//! resumes. See docs/docker.md and docs/deploy.md.

use pipe_runtime::docker::gc;
use pipe_runtime::executor::swarm::gc as swarm_gc;

use super::run::StateArgs;
use crate::exit::{Failure, RUN_FAILED};
use crate::project::Project;

pub fn run(project: &Project, state: &StateArgs) -> Result<String, Failure> {
    let report = gc::collect_blocking(None).map_err(|e| Failure {
        code: RUN_FAILED,
        message: Some(e),
    })?;
    let mut out = String::new();
    // Deployments a crashed pipe left `deploying` in this project's ledger.
    match pipe_runtime::deploy::engine::reconcile_blocking(&state.dir(project)) {
        Ok(lines) => {
            for l in lines {
                out.push_str(&format!("ledger: {l}\n"));
            }
        }
        Err(e) => out.push_str(&format!("ledger not reconciled: {e}\n")),
    }
    for c in &report.unpaused {
        out.push_str(&format!("unpaused container {c}\n"));
    }
    for c in &report.containers {
        out.push_str(&format!("removed container {c}\n"));
    }
    for n in &report.networks {
        out.push_str(&format!("removed network {n}\n"));
    }
    out.push_str(&format!(
        "{} container(s) and {} network(s) removed; {} container(s) of live runs or `docker.run` left alone\n",
        report.containers.len(),
        report.networks.len(),
        report.kept
    ));
    // Swarm leftovers: services, secrets and volumes of swarm jobs.
    let swarm = swarm_gc::collect_blocking(None).map_err(|e| Failure {
        code: RUN_FAILED,
        message: Some(e),
    })?;
    for s in &swarm.services {
        out.push_str(&format!("removed swarm service {s}\n"));
    }
    for s in &swarm.secrets {
        out.push_str(&format!("removed swarm secret {s}\n"));
    }
    for v in &swarm.volumes {
        out.push_str(&format!("removed volume {v}\n"));
    }
    if !swarm.services.is_empty() || !swarm.secrets.is_empty() || !swarm.volumes.is_empty() {
        out.push_str(&format!(
            "{} swarm service(s), {} secret(s) and {} volume(s) removed\n",
            swarm.services.len(),
            swarm.secrets.len(),
            swarm.volumes.len()
        ));
    }
    let mut errors = report.errors;
    errors.extend(swarm.errors);
    if !errors.is_empty() {
        return Err(Failure {
            code: RUN_FAILED,
            message: Some(format!("{out}could not remove:\n  {}", errors.join("\n  "))),
        });
    }
    Ok(out)
}

/// The cleanup `pipe resume` does before it continues a run: that run's
/// leftovers, quietly skipped when no Engine answers (a pipeline without
/// containers needs none).
pub fn for_resume(run_key: &str) {
    if let Ok(report) = gc::collect_blocking(Some(run_key)) {
        for c in &report.containers {
            eprintln!("removed leftover container {c}");
        }
        for c in &report.unpaused {
            eprintln!("unpaused container {c}");
        }
    }
    if let Ok(report) = swarm_gc::collect_blocking(Some(run_key)) {
        for s in &report.services {
            eprintln!("removed leftover swarm service {s}");
        }
    }
}
