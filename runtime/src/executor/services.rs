//! Sidecar services (`service db { image = ... }`) of a step or a stage: each
//! starts on the run's network (`pipe-<run>`) under its name, publishes its
//! `ports` on 127.0.0.1 (a free host port each), and must become healthy (its
//! `health` command, else the image's HEALTHCHECK, else merely running) within
//! `ready_within` (default 60 s) before the step runs. A container step reaches
//! a service by its name; a shell step, which runs on the host, through the
//! published port. Either finds it in `PIPE_SERVICE_<NAME>_HOST`, `_PORT` and
//! `_ADDR`. A step's services are removed when the step ends; a stage's are
//! started once for the steps that share them and removed after the last one,
//! or when the run ends ([`end_run`]). See docs/docker.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use indexmap::IndexMap;
use pipe_lang::Value;

use super::container::{create, remove_bounded};
use super::{BoxFuture, Executor, Io, Job, Outcome, Stop};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_duration, input_list, input_map, input_str};

/// One service as declared.
#[derive(Clone, Debug)]
struct Spec {
    name: String,
    image: String,
    block: IndexMap<String, Value>,
    /// Container ports to publish (`8080`, `53/udp`).
    ports: Vec<String>,
    /// The stage that shares it, and how many of its steps do.
    stage: Option<(String, usize)>,
}

fn parse(list: &Value) -> Result<Vec<Spec>, String> {
    let Value::List(items) = list else {
        return Err("`services` must be a list of service blocks".into());
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Map(m) = item else {
            return Err("each service must be a block".into());
        };
        let Some(name) = input_str(m, "name") else {
            return Err("a service needs a name: `service db { ... }`".into());
        };
        let Some(image) = input_str(m, "image") else {
            return Err(format!("service `{name}` needs `image`"));
        };
        let mut ports = input_list(m, "ports");
        if let Some(p) = input_str(m, "port") {
            ports.insert(0, p);
        }
        for p in &mut ports {
            let (num, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            if num.parse::<u16>().map_or(true, |n| n == 0) || !["tcp", "udp"].contains(&proto) {
                return Err(format!(
                    "service `{name}`: port `{p}` is not a container port such as 5432 or \"53/udp\""
                ));
            }
            *p = format!("{num}/{proto}");
        }
        let stage = input_str(m, "stage").map(|s| {
            let users = match m.get("users") {
                Some(Value::Int(n)) => (*n).max(1) as usize,
                _ => 1,
            };
            (s, users)
        });
        out.push(Spec {
            name,
            image,
            block: m.clone(),
            ports,
            stage,
        });
    }
    Ok(out)
}

/// `PIPE_SERVICE_<NAME>_...`: the name upper-cased, other characters as `_`.
fn var_prefix(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PIPE_SERVICE_{n}")
}

/// A started service: its container and where its ports landed on the host.
#[derive(Clone, Debug)]
struct Running {
    name: String,
    /// (container port `8080/tcp`, host port on 127.0.0.1)
    published: Vec<(String, String)>,
}

impl Running {
    /// The variables a step sees: the host side for a shell step, the
    /// network side for a container step.
    fn env(&self, in_container: bool) -> Vec<(String, String)> {
        let p = var_prefix(&self.name);
        let mut env = Vec::new();
        let host = if in_container {
            self.name.clone()
        } else {
            "127.0.0.1".to_string()
        };
        env.push((format!("{p}_HOST"), host.clone()));
        for (i, (cport, hport)) in self.published.iter().enumerate() {
            let num = cport.split('/').next().unwrap_or(cport);
            let port = if in_container { num } else { hport.as_str() };
            if i == 0 {
                env.push((format!("{p}_PORT"), port.to_string()));
                env.push((format!("{p}_ADDR"), format!("{host}:{port}")));
            }
            env.push((format!("{p}_PORT_{num}"), port.to_string()));
        }
        env
    }
}

/// Services started together (a step's own, or a stage's).
#[derive(Default)]
struct Group {
    running: Vec<Running>,
    /// Created containers, also those that never became ready.
    ids: Vec<String>,
}

impl Group {
    async fn start(
        &mut self,
        docker: &Docker,
        job: &Job,
        specs: &[Spec],
        net: &str,
        sink: &LogSink,
        io: &mut Io,
    ) -> Result<(), Outcome> {
        ensure_network(docker, job, net)
            .await
            .map_err(Outcome::error)?;
        let mut waits = Vec::new();
        for s in specs {
            docker::ensure_image(docker, &s.image, sink)
                .await
                .map_err(|e| Outcome::error(format!("service `{}`: {e}", s.name)))?;
            let id = self.create_one(docker, job, s, net).await?;
            sink.line(
                false,
                &format!("service `{}` started ({})", s.name, s.image),
            );
            let within = input_duration(&s.block, "ready_within").unwrap_or(60_000);
            waits.push((s, id, Duration::from_millis(within)));
        }
        for (s, id, within) in waits {
            wait_ready(docker, &s.name, &id, within, io).await?;
            let published = published(docker, &id, &s.ports).await;
            let r = Running {
                name: s.name.clone(),
                published,
            };
            let at = r
                .published
                .first()
                .map(|(c, h)| format!(" (its {c} is 127.0.0.1:{h} on the host)"))
                .unwrap_or_default();
            sink.line(false, &format!("service `{}` is ready{at}", s.name));
            self.running.push(r);
        }
        Ok(())
    }

    async fn create_one(
        &mut self,
        docker: &Docker,
        job: &Job,
        s: &Spec,
        net: &str,
    ) -> Result<String, Outcome> {
        let m = &s.block;
        let name = &s.name;
        let env: Vec<String> = input_map(m, "env")
            .into_iter()
            .chain(input_map(m, "environment"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let cmd = match m.get("command") {
            Some(Value::Str(c)) => Some(vec!["sh".to_string(), "-c".to_string(), c.clone()]),
            Some(Value::List(l)) => Some(l.iter().map(docker::value_text).collect()),
            _ => None,
        };
        let healthcheck = input_str(m, "health").map(|h| HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), h]),
            interval: Some(500_000_000),
            timeout: Some(5_000_000_000),
            retries: Some(3),
            ..Default::default()
        });
        // Each port on 127.0.0.1 only, on a port the kernel picks: parallel
        // runs never collide, and nothing is exposed beyond this host.
        let bindings: HashMap<String, Option<Vec<PortBinding>>> = s
            .ports
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )
            })
            .collect();
        let config = ContainerCreateBody {
            image: Some(s.image.clone()),
            cmd,
            env: Some(env),
            healthcheck,
            exposed_ports: (!s.ports.is_empty()).then(|| s.ports.clone()),
            labels: Some(docker::labels(job, "service")),
            host_config: Some(HostConfig {
                network_mode: Some(net.to_string()),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let cname = match &s.stage {
            Some((stage, _)) => {
                docker::sanitize(&format!("pipe-{}-{stage}-svc-{name}", docker::run_key(job)))
            }
            None => docker::container_name(job, &format!("svc-{name}")),
        };
        let id = create(docker, &cname, config)
            .await
            .map_err(|e| Outcome::error(format!("service `{name}`: {e}")))?;
        self.ids.push(id.clone());
        docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| {
                Outcome::error(format!("service `{name}` did not start: {}", describe(&e)))
            })?;
        Ok(id)
    }

    /// Removes the containers, then the run's network unless another step
    /// still uses it (the Engine refuses; the last user's removal succeeds).
    async fn remove(self, docker: &Docker, net: &str) {
        for id in &self.ids {
            remove_bounded(docker, id).await;
        }
        if !self.ids.is_empty() {
            let _ = docker.remove_network(net).await;
        }
    }
}

/// Host ports of a started container's published `ports`.
async fn published(docker: &Docker, id: &str, ports: &[String]) -> Vec<(String, String)> {
    if ports.is_empty() {
        return Vec::new();
    }
    let map = docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|i| i.network_settings)
        .and_then(|n| n.ports)
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| {
            let b = map.get(p)?.as_ref()?;
            let hp = b.iter().find_map(|b| b.host_port.clone())?;
            Some((p.clone(), hp))
        })
        .collect()
}

/// A stage's services, shared by the steps that use them.
struct Shared {
    /// `Some` once started (or once starting them failed: every user fails alike).
    state: Option<Result<Vec<Running>, String>>,
    group: Group,
    /// Steps that have not yet released them.
    remaining: usize,
    net: String,
}

type SharedRef = Arc<tokio::sync::Mutex<Shared>>;

/// Stage groups by `<run key>/<stage>`, for this process's runs.
static STAGES: Mutex<Vec<(String, SharedRef)>> = Mutex::new(Vec::new());

fn stage_group(key: &str, users: usize, net: &str) -> SharedRef {
    let mut all = STAGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, g)) = all.iter().find(|(k, _)| k == key) {
        return g.clone();
    }
    let g = Arc::new(tokio::sync::Mutex::new(Shared {
        state: None,
        group: Group::default(),
        remaining: users,
        net: net.to_string(),
    }));
    all.push((key.to_string(), g.clone()));
    g
}

fn take_stage_group(key: &str) {
    STAGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|(k, _)| k != key);
}

/// The services one attempt of a step uses; give it back with [`Attached::detach`].
pub struct Attached {
    own: Option<Group>,
    stage: Option<String>,
    net: String,
    docker: Docker,
    /// Variables for the step's process.
    pub env: Vec<(String, String)>,
    /// The network a container step joins.
    pub network: String,
}

/// Starts the step's services (and joins its stage's, starting them if it
/// is the first) and waits until they are ready. `None` without services.
pub async fn attach(
    docker: &Docker,
    job: &Job,
    sink: &LogSink,
    io: &mut Io,
    in_container: bool,
) -> Result<Option<Attached>, Outcome> {
    let Some(list) = job.inputs.get("services") else {
        return Ok(None);
    };
    let specs = parse(list).map_err(Outcome::error)?;
    if specs.is_empty() {
        return Ok(None);
    }
    let net = docker::run_network(job);
    let (shared, own): (Vec<Spec>, Vec<Spec>) = specs.into_iter().partition(|s| s.stage.is_some());
    let mut att = Attached {
        own: None,
        stage: None,
        net: net.clone(),
        docker: docker.clone(),
        env: Vec::new(),
        network: net.clone(),
    };
    if let Some((stage, users)) = shared.first().and_then(|s| s.stage.clone()) {
        let key = format!("{}/{stage}", docker::run_key(job));
        let g = stage_group(&key, users, &net);
        att.stage = Some(key.clone());
        let mut g = g.lock().await;
        if g.state.is_none() {
            sink.line(false, &format!("starting the services of stage `{stage}`"));
            let r = g.group.start(docker, job, &shared, &net, sink, io).await;
            g.state = Some(match r {
                Ok(()) => Ok(g.group.running.clone()),
                Err(o) => Err(o.error.unwrap_or_default()),
            });
        }
        match g.state.as_ref() {
            Some(Ok(running)) => {
                for r in running {
                    att.env.extend(r.env(in_container));
                }
            }
            Some(Err(e)) => {
                let e = e.clone();
                drop(g);
                att.detach().await;
                return Err(Outcome::error(format!("stage `{stage}`: {e}")));
            }
            None => {}
        }
    }
    if !own.is_empty() {
        let mut group = Group::default();
        let r = group.start(docker, job, &own, &net, sink, io).await;
        for run in &group.running {
            att.env.extend(run.env(in_container));
        }
        att.own = Some(group);
        if let Err(o) = r {
            att.detach().await;
            return Err(o);
        }
    }
    Ok(Some(att))
}

impl Attached {
    /// Removes the step's own services and releases its stage's: the last
    /// step to release them removes them.
    pub async fn detach(mut self) {
        if let Some(g) = self.own.take() {
            g.remove(&self.docker, &self.net).await;
        }
        if let Some(key) = self.stage.take() {
            release(&self.docker, &key).await;
        }
    }
}

impl Drop for Attached {
    /// A step future dropped midway still cleans up, on a spawned task.
    fn drop(&mut self) {
        let (own, stage) = (self.own.take(), self.stage.take());
        if own.is_none() && stage.is_none() {
            return;
        }
        let (docker, net) = (self.docker.clone(), self.net.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Some(g) = own {
                    g.remove(&docker, &net).await;
                }
                if let Some(key) = stage {
                    release(&docker, &key).await;
                }
            });
        }
    }
}

async fn release(docker: &Docker, key: &str) {
    let g = {
        let all = STAGES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().find(|(k, _)| k == key).map(|(_, g)| g.clone())
    };
    let Some(g) = g else { return };
    let mut g = g.lock().await;
    g.remaining = g.remaining.saturating_sub(1);
    if g.remaining == 0 {
        take_stage_group(key);
        let group = std::mem::take(&mut g.group);
        group.remove(docker, &g.net).await;
    }
}

/// Removes what stage services of a run are left: those of stages whose
/// steps did not all run (skipped, cancelled, failed before). The scheduler
/// calls it when the run ends; `pipe gc` catches them after a crash.
pub async fn end_run(run_key: &str) {
    let prefix = format!("{run_key}/");
    let groups: Vec<SharedRef> = {
        let mut all = STAGES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mine, rest): (Vec<_>, Vec<_>) =
            all.drain(..).partition(|(k, _)| k.starts_with(&prefix));
        *all = rest;
        mine.into_iter().map(|(_, g)| g).collect()
    };
    if groups.is_empty() {
        return;
    }
    let Ok(docker) = docker::connect().await else {
        return;
    };
    for g in groups {
        let mut g = g.lock().await;
        let group = std::mem::take(&mut g.group);
        group.remove(&docker, &g.net).await;
    }
}

/// Runs an executor (the shell's) with the step's services around it: they
/// are started and healthy before it runs, and removed after it, however it ends.
pub struct WithServices(pub Arc<dyn Executor>);

impl Executor for WithServices {
    fn run(&self, mut job: Job, mut io: Io) -> BoxFuture {
        let inner = self.0.clone();
        if !job.inputs.contains_key("services") {
            return inner.run(job, io);
        }
        Box::pin(async move {
            let sink = match LogSink::create(&job, io.logs.clone()) {
                Ok(s) => s,
                Err(e) => return Outcome::error(e),
            };
            let docker = match docker::connect().await {
                Ok(d) => d,
                Err(e) => return Outcome::error(e),
            };
            let att = match attach(&docker, &job, &sink, &mut io, false).await {
                Ok(a) => a,
                Err(o) => return o,
            };
            sink.flush();
            drop(sink);
            if let Some(a) = &att {
                job.env.extend(a.env.iter().cloned());
            }
            let outcome = inner.run(job, io).await;
            if let Some(a) = att {
                a.detach().await;
            }
            outcome
        })
    }
}
/// Creates the run's network unless it exists (parallel steps race for it).
pub(crate) async fn ensure_network(docker: &Docker, job: &Job, net: &str) -> Result<(), String> {
    if docker
        .inspect_network(
            net,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .is_ok()
    {
        return Ok(());
    }
    let req = NetworkCreateRequest {
        name: net.to_string(),
        driver: Some("bridge".into()),
        labels: Some(docker::labels(job, "network")),
        ..Default::default()
    };
    match docker.create_network(req).await {
        Ok(_) => Ok(()),
        Err(e) => {
            if docker
                .inspect_network(
                    net,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .is_ok()
            {
                Ok(())
            } else {
                Err(format!("cannot create network `{net}`: {}", describe(&e)))
            }
        }
    }
}

/// Waits until a container is healthy (or, without a health check, running),
/// failing when it exits, turns unhealthy or `within` passes.
pub(crate) async fn wait_ready(
    docker: &Docker,
    name: &str,
    id: &str,
    within: Duration,
    io: &mut Io,
) -> Result<(), Outcome> {
    let t0 = Instant::now();
    loop {
        if *io.stop.borrow() != Stop::Run {
            return Err(docker::outcome(
                super::Ending::Cancelled,
                None,
                IndexMap::new(),
                Some(format!("cancelled while waiting for service `{name}`")),
            ));
        }
        let info = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| Outcome::error(format!("service `{name}`: {}", describe(&e))))?;
        let state = info.state.unwrap_or_default();
        if state.running != Some(true) {
            let tail = logs_tail(docker, id).await;
            return Err(Outcome::error(format!(
                "service `{name}` exited with code {} before it was ready{tail}",
                state.exit_code.unwrap_or(-1)
            )));
        }
        match state.health.as_ref().and_then(|h| h.status) {
            None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => return Ok(()),
            Some(HealthStatusEnum::HEALTHY) => return Ok(()),
            Some(HealthStatusEnum::UNHEALTHY) => {
                return Err(Outcome::error(format!(
                    "service `{name}` is unhealthy: its health check keeps failing{}",
                    probe_text(state.health.as_ref())
                )))
            }
            Some(HealthStatusEnum::STARTING) => {}
        }
        if t0.elapsed() >= within {
            let last_probe = probe_text(state.health.as_ref());
            return Err(Outcome::error(format!(
                "service `{name}` did not become healthy within {}{last_probe}",
                pipe_lang::value::format_duration(within.as_millis() as u64)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn probe_text(h: Option<&bollard::models::Health>) -> String {
    let Some(last) = h.and_then(|h| h.log.as_ref()).and_then(|l| l.last()) else {
        return String::new();
    };
    let out = last.output.as_deref().unwrap_or("").trim();
    format!(
        " (last check: exit code {}{})",
        last.exit_code.unwrap_or(-1),
        if out.is_empty() {
            String::new()
        } else {
            format!(", output: {out}")
        }
    )
}

/// The last lines a container printed, for error messages.
pub(crate) async fn logs_tail(docker: &Docker, id: &str) -> String {
    let mut s = docker.logs(
        id,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            tail: "10".into(),
            ..Default::default()
        }),
    );
    let mut text = String::new();
    let read = async {
        while let Some(Ok(chunk)) = s.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n{text}")
    }
}
