//! Removing what crashed runs left in the swarm: job services, their Docker
//! secrets and workspace volumes, labelled by pipe, whose owning `pipe`
//! process is gone. A live run's are never touched. Quietly does nothing
//! when the engine is not a swarm manager. Used by `pipe gc` and `pipe resume`.

use std::collections::HashMap;

use bollard::query_parameters::{ListSecretsOptions, ListServicesOptions, ListVolumesOptions};
use bollard::Docker;

use crate::docker::gc::owner_alive;
use crate::docker::{describe, is_not_found, LABEL_OWNER, LABEL_RUN, LABEL_STEP};

/// What a collection removed.
#[derive(Debug, Default)]
pub struct Report {
    /// `name (run, step)` of each removed service.
    pub services: Vec<String>,
    pub secrets: Vec<String>,
    pub volumes: Vec<String>,
    pub errors: Vec<String>,
}

fn dead(labels: Option<&HashMap<String, String>>) -> bool {
    let owner = labels
        .and_then(|l| l.get(LABEL_OWNER))
        .map_or("", String::as_str);
    !owner_alive(owner)
}

fn describe_labels(name: &str, labels: Option<&HashMap<String, String>>) -> String {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map_or("?", String::as_str);
    format!("{name} (run {}, step {})", get(LABEL_RUN), get(LABEL_STEP))
}

/// Removes the swarm leftovers of dead runs (of one run key only, with `only_run`).
pub async fn collect(docker: &Docker, only_run: Option<&str>) -> Result<Report, String> {
    let label = match only_run {
        Some(r) => format!("{LABEL_RUN}={r}"),
        None => LABEL_RUN.to_string(),
    };
    let filters = HashMap::from([("label".to_string(), vec![label])]);
    let mut report = Report::default();
    let services = match docker
        .list_services(Some(ListServicesOptions {
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
    {
        Ok(s) => s,
        // 503: this engine is not a swarm manager; nothing of ours can be here.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 503, ..
        }) => return Ok(report),
        Err(e) => return Err(format!("cannot list swarm services: {}", describe(&e))),
    };
    for s in services {
        let spec = s.spec.unwrap_or_default();
        if !dead(spec.labels.as_ref()) {
            continue;
        }
        let Some(id) = s.id else { continue };
        let what = describe_labels(spec.name.as_deref().unwrap_or(&id), spec.labels.as_ref());
        match docker.delete_service(&id).await {
            Ok(()) => report.services.push(what),
            Err(e) if is_not_found(&e) => {}
            Err(e) => report
                .errors
                .push(format!("service {what}: {}", describe(&e))),
        }
    }
    let secrets = docker
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .map_err(|e| format!("cannot list swarm secrets: {}", describe(&e)))?;
    for s in secrets {
        let spec = s.spec.unwrap_or_default();
        if !dead(spec.labels.as_ref()) {
            continue;
        }
        let Some(id) = s.id else { continue };
        let name = spec.name.clone().unwrap_or_else(|| id.clone());
        match docker.delete_secret(&id).await {
            Ok(()) => report.secrets.push(name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => report
                .errors
                .push(format!("secret {name}: {}", describe(&e))),
        }
    }
    // The helper containers go first (crate::docker::gc), then the volumes,
    // once the swarm has torn the removed services' containers down.
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| format!("cannot list volumes: {}", describe(&e)))?;
    for v in volumes.volumes.unwrap_or_default() {
        if v.labels.get(crate::docker::LABEL_KIND).map(String::as_str) != Some(super::KIND)
            || !dead(Some(&v.labels))
        {
            continue;
        }
        match super::remove_volume(docker, &v.name).await {
            Ok(()) => report.volumes.push(v.name),
            Err(e) => report.errors.push(format!("volume {}: {e}", v.name)),
        }
    }
    Ok(report)
}

/// [`collect`] on a runtime of its own, for the synchronous CLI.
pub fn collect_blocking(only_run: Option<&str>) -> Result<Report, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let docker = crate::docker::connect().await?;
        collect(&docker, only_run).await
    })
}
