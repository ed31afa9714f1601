//! Container faults: `chaos NAME { container = "worker"  fault kill { ... } }`
//! kills, pauses or restarts a container through the Engine API at the
//! fault's `after`. The target is a container of this run (a service, a
//! `docker.run` or container step whose name matches) or any container by
//! name or id; it is waited for until it appears.
//!
//! A pause is journalled in the Engine itself: a labelled marker volume
//! names the paused container and the `pipe` process that paused it, so that
//! after a crash `pipe gc` / `pipe resume` unpause it ([`collect`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, ListVolumesOptions, RemoveVolumeOptions,
    RestartContainerOptions,
};
use bollard::Docker;
use serde_json::json;

use super::spec::{Fault, Spec};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, is_not_found, LABEL_KIND, LABEL_OWNER, LABEL_RUN, LABEL_STEP};

/// `dev.pipe.kind` of a pause marker volume.
pub const KIND_PAUSE: &str = "chaos-pause";
/// Label of a pause marker: the id of the paused container.
pub const LABEL_PAUSED: &str = "dev.pipe.chaos.paused";

#[derive(Clone, Debug, Default)]
struct Record {
    injected: u64,
    at_ms: Option<u64>,
    target: Option<String>,
    error: Option<String>,
}

struct Inner {
    records: Vec<Record>,
    /// (marker volume, container id) of pauses not yet undone.
    paused: Vec<(String, String)>,
}

/// The running container faults of one chaos block.
pub struct ContainerFaults {
    spec: Spec,
    docker: Docker,
    start: Instant,
    inner: Arc<Mutex<Inner>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ContainerFaults {
    /// Connects to the Engine and schedules every fault of `spec`.
    pub async fn start(
        spec: Spec,
        run_key: &str,
        step_id: &str,
        sink: Arc<LogSink>,
    ) -> Result<ContainerFaults, String> {
        let docker = docker::connect().await?;
        let target = spec.container.clone().unwrap_or_default();
        let inner = Arc::new(Mutex::new(Inner {
            records: vec![Record::default(); spec.faults.len()],
            paused: Vec::new(),
        }));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, f) in spec.faults.iter().enumerate() {
            let ctx = Ctx {
                docker: docker.clone(),
                target: target.clone(),
                run_key: run_key.to_string(),
                marker: docker::sanitize(&format!("pipe-chaos-{run_key}-{step_id}-{i}")),
                step_id: step_id.to_string(),
                inner: inner.clone(),
                sink: sink.clone(),
                start,
            };
            let f = f.clone();
            tasks.push(tokio::spawn(async move { ctx.inject(i, f).await }));
        }
        Ok(ContainerFaults {
            spec,
            docker,
            start,
            inner,
            tasks,
        })
    }

    /// Stops what is pending, undoes every pause still in force, and returns
    /// the report, with an error when a fault could not be injected.
    pub async fn stop(self) -> (serde_json::Value, Option<String>) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let paused = std::mem::take(&mut lock(&self.inner).paused);
        let mut errors = Vec::new();
        for (marker, id) in paused {
            if let Err(e) = unpause(&self.docker, &marker, &id).await {
                errors.push(e);
            }
        }
        let inner = lock(&self.inner);
        let mut by_kind = serde_json::Map::new();
        let mut faults = Vec::new();
        for (f, r) in self.spec.faults.iter().zip(&inner.records) {
            let e = by_kind.entry(f.kind.clone()).or_insert(json!(0));
            *e = json!(e.as_u64().unwrap_or(0) + r.injected);
            if r.injected == 0 && r.error.is_none() {
                errors.push(format!(
                    "`{}` was not injected: {}",
                    f.describe(),
                    if r.target.is_none() {
                        format!(
                            "no container `{}` appeared",
                            self.spec.container.as_deref().unwrap_or("")
                        )
                    } else {
                        "the stage ended first".into()
                    }
                ));
            }
            if let Some(e) = &r.error {
                errors.push(format!("`{}`: {e}", f.describe()));
            }
            faults.push(json!({
                "kind": f.kind,
                "fault": f.describe(),
                "container": r.target,
                "injected": r.injected,
                "at_ms": r.at_ms,
                "error": r.error,
            }));
        }
        let report = json!({
            "name": self.spec.name,
            "type": "container",
            "target": self.spec.container,
            "elapsed_ms": self.start.elapsed().as_millis() as u64,
            "injected": by_kind,
            "faults": faults,
        });
        (report, (!errors.is_empty()).then(|| errors.join("; ")))
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Ctx {
    docker: Docker,
    target: String,
    run_key: String,
    marker: String,
    step_id: String,
    inner: Arc<Mutex<Inner>>,
    sink: Arc<LogSink>,
    start: Instant,
}

impl Ctx {
    async fn inject(self, i: usize, f: Fault) {
        tokio::time::sleep_until((self.start + Duration::from_millis(f.after_ms)).into()).await;
        let (id, name) = loop {
            match find(&self.docker, &self.target, &self.run_key).await {
                Ok(Some(found)) => break found,
                Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    lock(&self.inner).records[i].error = Some(e);
                    return;
                }
            }
        };
        lock(&self.inner).records[i].target = Some(name.clone());
        let at = self.start.elapsed().as_millis() as u64;
        let result = match f.kind.as_str() {
            "kill" => self
                .docker
                .kill_container(
                    &id,
                    Some(KillContainerOptions {
                        signal: f.signal.clone(),
                    }),
                )
                .await
                .map(|()| format!("sent {} to container {name}", f.signal))
                .map_err(|e| describe(&e)),
            "restart" => self
                .docker
                .restart_container(
                    &id,
                    Some(RestartContainerOptions {
                        t: Some(0),
                        ..Default::default()
                    }),
                )
                .await
                .map(|()| format!("restarted container {name}"))
                .map_err(|e| describe(&e)),
            _ => self.pause(&id, &name).await,
        };
        match result {
            Ok(what) => {
                self.sink.line(false, &format!("chaos: {what} at {at}ms"));
                let mut g = lock(&self.inner);
                g.records[i].injected += 1;
                g.records[i].at_ms = Some(at);
            }
            Err(e) => {
                self.sink
                    .line(true, &format!("chaos: `{}` on {name} failed: {e}", f.kind));
                lock(&self.inner).records[i].error = Some(e);
                return;
            }
        }
        if f.kind == "pause" {
            if let Some(d) = f.for_ms {
                tokio::time::sleep(Duration::from_millis(d)).await;
                let entry = {
                    let mut g = lock(&self.inner);
                    let pos = g.paused.iter().position(|(m, _)| *m == self.marker);
                    pos.map(|p| g.paused.remove(p))
                };
                if let Some((marker, id)) = entry {
                    match unpause(&self.docker, &marker, &id).await {
                        Ok(()) => self.sink.line(
                            false,
                            &format!(
                                "chaos: unpaused container {name} at {}ms",
                                self.start.elapsed().as_millis()
                            ),
                        ),
                        Err(e) => lock(&self.inner).records[i].error = Some(e),
                    }
                }
            }
        }
    }

    /// Journals the pause in a marker volume, then pauses.
    async fn pause(&self, id: &str, name: &str) -> Result<String, String> {
        let labels = HashMap::from([
            (LABEL_RUN.to_string(), self.run_key.clone()),
            (LABEL_STEP.to_string(), self.step_id.clone()),
            (LABEL_OWNER.to_string(), docker::owner()),
            (LABEL_KIND.to_string(), KIND_PAUSE.to_string()),
            (LABEL_PAUSED.to_string(), id.to_string()),
        ]);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(self.marker.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot journal the pause: {}", describe(&e)))?;
        lock(&self.inner)
            .paused
            .push((self.marker.clone(), id.to_string()));
        self.docker
            .pause_container(id)
            .await
            .map_err(|e| describe(&e))?;
        Ok(format!("paused container {name}"))
    }
}

/// Unpauses (a container no longer paused, or gone, is fine) and removes the marker.
async fn unpause(docker: &Docker, marker: &str, id: &str) -> Result<(), String> {
    match docker.unpause_container(id).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) || describe(&e).contains("not paused") => {}
        Err(e) => return Err(format!("cannot unpause {id}: {}", describe(&e))),
    }
    match docker
        .remove_volume(marker, None::<RemoveVolumeOptions>)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(format!("cannot remove {marker}: {}", describe(&e))),
    }
}

/// The running container `target` names: one of this run's (a service
/// `-svc-<target>`, or a step `<stage>.<target>`), else any by name or id.
async fn find(
    docker: &Docker,
    target: &str,
    run_key: &str,
) -> Result<Option<(String, String)>, String> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run_key}")])]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("cannot list containers: {}", describe(&e)))?;
    for c in list {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let step = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_STEP))
            .cloned()
            .unwrap_or_default();
        let is_service = name.ends_with(&format!("-svc-{target}"));
        let is_step = !is_service
            && (step == target || step.rsplit('.').next() == Some(target))
            && c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_KIND))
                .is_some_and(|k| k != "service");
        if is_service || is_step {
            if let Some(id) = c.id {
                return Ok(Some((id, name)));
            }
        }
    }
    match docker.inspect_container(target, None).await {
        Ok(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => Ok(Some((
            c.id.unwrap_or_else(|| target.to_string()),
            c.name.map_or_else(
                || target.to_string(),
                |n| n.trim_start_matches('/').to_string(),
            ),
        ))),
        Ok(_) => Ok(None),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(format!("cannot inspect `{target}`: {}", describe(&e))),
    }
}

/// After a crash: unpauses every container that a dead `pipe` process paused
/// (of one run key only, with `only_run`), and removes the markers. Returns
/// what it unpaused, and what it could not.
pub async fn collect(docker: &Docker, only_run: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut labels = vec![format!("{LABEL_KIND}={KIND_PAUSE}")];
    if let Some(r) = only_run {
        labels.push(format!("{LABEL_RUN}={r}"));
    }
    let filters = HashMap::from([("label".to_string(), labels)]);
    let Ok(list) = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
    else {
        return (Vec::new(), vec!["cannot list chaos pause markers".into()]);
    };
    let (mut done, mut errors) = (Vec::new(), Vec::new());
    for v in list.volumes.unwrap_or_default() {
        if crate::docker::gc::owner_alive(v.labels.get(LABEL_OWNER).map_or("", String::as_str)) {
            continue;
        }
        let Some(id) = v.labels.get(LABEL_PAUSED) else {
            continue;
        };
        match unpause(docker, &v.name, id).await {
            Ok(()) => done.push(format!(
                "{} (paused by run {}, step {})",
                &id[..12.min(id.len())],
                v.labels.get(LABEL_RUN).map_or("?", String::as_str),
                v.labels.get(LABEL_STEP).map_or("?", String::as_str)
            )),
            Err(e) => errors.push(e),
        }
    }
    (done, errors)
}
