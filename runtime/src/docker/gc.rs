//! Removing what crashed runs left in the Engine: containers and networks
//! labelled by pipe whose owning `pipe` process is gone. A live run's
//! containers are never touched (its owner label names a running process), nor
//! are `docker.run` containers, which are meant to outlive their step, nor
//! deployments that took traffic (see `crate::deploy::keep_in_gc`). Used by
//! `pipe gc` and by `pipe resume`.

use std::collections::HashMap;

use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use bollard::Docker;

use super::{describe, is_not_found, LABEL_KIND, LABEL_OWNER, LABEL_RUN, LABEL_STEP};

/// What a collection found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// `name (run, step)` of each removed container.
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    /// Containers a chaos `pause` of a dead run left paused, now unpaused.
    pub unpaused: Vec<String>,
    /// Containers of live runs, or created on another host, left alone.
    pub kept: usize,
    /// Removals that failed, with the reason.
    pub errors: Vec<String>,
}

/// Whether the `pipe` process named by an owner label (`host:pid:start`) still runs.
/// Owners on another host are assumed alive: this host cannot tell.
pub fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != super::hostname() {
        return true;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    super::start_time(pid).is_some_and(|s| s == start)
}

/// Removes the leftovers of dead runs (of one run key only, with `only_run`).
pub async fn collect(docker: &Docker, only_run: Option<&str>) -> Result<Report, String> {
    let label = match only_run {
        Some(r) => format!("{LABEL_RUN}={r}"),
        None => LABEL_RUN.to_string(),
    };
    let filters = HashMap::from([("label".to_string(), vec![label])]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("cannot list containers: {}", describe(&e)))?;
    let mut report = Report::default();
    let (unpaused, errors) = crate::chaos::container::collect(docker, only_run).await;
    report.unpaused = unpaused;
    report.errors = errors;
    for c in list {
        let labels = c.labels.unwrap_or_default();
        let owner = labels.get(LABEL_OWNER).map_or("", String::as_str);
        if labels.get(LABEL_KIND).map(String::as_str) == Some("run") || owner_alive(owner) {
            report.kept += 1;
            continue;
        }
        let Some(id) = c.id else { continue };
        // A deployment outlives its run unless it never took traffic.
        if labels.get(LABEL_KIND).map(String::as_str) == Some(crate::deploy::KIND) {
            let running = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            if crate::deploy::keep_in_gc(docker, &labels, &id, running).await {
                report.kept += 1;
                continue;
            }
        }
        let name = c.names.and_then(|n| n.into_iter().next()).map_or_else(
            || id[..12.min(id.len())].to_string(),
            |n| n.trim_start_matches('/').to_string(),
        );
        let what = format!(
            "{name} (run {}, step {})",
            labels.get(LABEL_RUN).map_or("?", String::as_str),
            labels.get(LABEL_STEP).map_or("?", String::as_str)
        );
        match docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => report.containers.push(what),
            Err(e) if is_not_found(&e) => {}
            Err(e) => report.errors.push(format!("{what}: {}", describe(&e))),
        }
    }
    let nets = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| format!("cannot list networks: {}", describe(&e)))?;
    for n in nets {
        let labels = n.labels.unwrap_or_default();
        if owner_alive(labels.get(LABEL_OWNER).map_or("", String::as_str)) {
            continue;
        }
        let Some(name) = n.name else { continue };
        // A network still in use (a resumed run's) refuses removal: that is fine.
        if docker.remove_network(&name).await.is_ok() {
            report.networks.push(name);
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
        let docker = super::connect().await?;
        collect(&docker, only_run).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_alive_only_while_their_process_runs() {
        assert!(owner_alive(&crate::docker::owner()));
        let host = crate::docker::hostname();
        assert!(!owner_alive(&format!("{host}:{}:1", std::process::id())));
        assert!(!owner_alive(&format!("{host}:999999999:1")));
        assert!(!owner_alive("garbage"));
        assert!(owner_alive("another-host:1:1"));
    }
}
