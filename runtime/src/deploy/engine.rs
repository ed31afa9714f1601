//! The deployment procedures behind the executors: recreate, blue-green,
//! rollback, and the reconciliation of the ledger with the Engine after a
//! `pipe` died mid-deployment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HealthStatusEnum, HostConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    InspectContainerOptions, InspectNetworkOptions, ListContainersOptions, StopContainerOptions,
};
use bollard::Docker;
use indexmap::IndexMap;
use pipe_lang::Value;

use super::{ledger, proxy, Spec};
use super::{
    KIND, LABEL_COLOUR, LABEL_ENV, LABEL_LEDGER, LABEL_ROLE, LABEL_SERVICE, LABEL_STRATEGY,
    LABEL_VERSION,
};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_bool, input_duration, input_map, input_str};
use crate::executor::container::{create, remove_bounded};
use crate::executor::{Ending, Io, Job, Outcome, Stop};
use crate::state::Store;

/// What one deployment operation works with.
struct Cx<'a> {
    docker: Docker,
    store: Mutex<Store>,
    job: &'a Job,
    sink: &'a LogSink,
    io: &'a Io,
    run_id: Option<i64>,
}

impl Cx<'_> {
    fn ledger<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::state::StateError>,
    ) -> Result<T, String> {
        let store = self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&store).map_err(|e| format!("deployment ledger: {e}"))
    }

    fn log(&self, line: &str) {
        self.sink.line(false, line);
    }

    fn stopped(&self) -> bool {
        *self.io.stop.borrow() != Stop::Run
    }
}

/// The state directory of a job: its log file is `<dir>/logs/<run>/<file>`.
fn state_dir(job: &Job) -> Option<PathBuf> {
    Some(job.log_path.parent()?.parent()?.parent()?.to_path_buf())
}

fn job_var<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.env
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn open<'a>(job: &'a Job, sink: &'a LogSink, io: &'a Io) -> Result<Cx<'a>, String> {
    let dir = state_dir(job).ok_or("cannot find the state directory of this run")?;
    let store = Store::open(&dir).map_err(|e| e.to_string())?;
    let docker = docker::connect().await?;
    let run_id = job_var(job, "PIPE_RUN_ID").and_then(|r| r.parse().ok());
    Ok(Cx {
        docker,
        store: Mutex::new(store),
        job,
        sink,
        io,
        run_id,
    })
}

fn fail(e: impl Into<String>) -> Outcome {
    docker::outcome(Ending::Failed, None, IndexMap::new(), Some(e.into()))
}

/// The name of the environment deployed to: `env_name`, else the stage's
/// `env` block, else the run's `--env`, else `default`.
fn env_name(cx: &Cx<'_>) -> String {
    if let Some(n) = input_str(&cx.job.inputs, "env_name").filter(|s| !s.is_empty()) {
        return n;
    }
    if let Some(n) = job_var(cx.job, "PIPE_ENV").filter(|s| !s.is_empty()) {
        return n.to_string();
    }
    cx.run_id
        .and_then(|r| cx.ledger(|s| s.run(r)).ok())
        .and_then(|r| r.env)
        .unwrap_or_else(|| "default".to_string())
}

fn port_input(job: &Job, key: &str) -> Result<Option<u16>, String> {
    match job.inputs.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Int(i)) => u16::try_from(*i)
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| format!("`{key} = {i}` is not a port (1-65535)")),
        Some(Value::Str(s)) if s.is_empty() => Ok(None),
        Some(Value::Str(s)) => s
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| format!("`{key} = \"{s}\"` is not a port (1-65535)")),
        Some(v) => Err(format!(
            "`{key}` must be a port number, found {}",
            v.type_name()
        )),
    }
}

/// A spec, the version, and the secret values (`(name, value)`).
type Inputs = (Spec, String, Vec<(String, String)>);

/// Reads the inputs of a `deploy.container` step. Returns the spec and the
/// secret values (`(name, value)`), which stay out of the spec.
fn spec_from_inputs(cx: &Cx<'_>) -> Result<Inputs, String> {
    let job = cx.job;
    let need = |k: &str| {
        input_str(&job.inputs, k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("deploy.container needs `{k}`"))
    };
    let image = need("image")?;
    let service = need("service")?;
    let version = need("version")?;
    let strategy = input_str(&job.inputs, "strategy").unwrap_or_else(|| "recreate".into());
    if strategy != "recreate" && strategy != "blue-green" {
        return Err(format!(
            "strategy = \"{strategy}\": expected \"recreate\" or \"blue-green\""
        ));
    }
    let environment = env_name(cx);
    let masker = job
        .mask
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut vars = Vec::new();
    let mut secrets = Vec::new();
    // The stage's environment (its `env` block) first, then `environment`.
    let stage = job
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("PIPE_"))
        .cloned();
    for (k, v) in stage.chain(input_map(&job.inputs, "environment")) {
        // A value the run masks is a secret: deployed, never stored.
        if !masker.is_empty() && masker.mask(&v) != v {
            secrets.push((k, v));
        } else {
            vars.push((k, v));
        }
    }
    drop(masker);
    secrets.extend(input_map(&job.inputs, "secrets"));
    vars.retain(|(k, _)| !secrets.iter().any(|(s, _)| s == k));
    let container_port = port_input(job, "container_port")?.unwrap_or(8080);
    let network = input_str(&job.inputs, "network")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| docker::sanitize(&format!("pipe-deploy-{environment}")));
    let spec = Spec {
        image,
        service: docker::sanitize(&service),
        environment,
        strategy,
        network,
        port: port_input(job, "port")?,
        container_port,
        health: input_str(&job.inputs, "health").filter(|s| !s.is_empty()),
        vars,
        secret_keys: secrets.iter().map(|(k, _)| k.clone()).collect(),
        ready_within_ms: input_duration(&job.inputs, "ready_within").unwrap_or(60_000),
        drain_ms: input_duration(&job.inputs, "drain").unwrap_or(2_000),
        volumes: volumes(job)?,
        migrate_down: input_str(&job.inputs, "migrate_down").filter(|s| !s.is_empty()),
        repo_digest: None,
        owner: docker::owner(),
    };
    Ok((spec, version, secrets))
}

/// `volumes`: `HOST:CONTAINER[:ro]` binds, relative host paths made
/// absolute against the project root; `NAME:CONTAINER` named volumes (a bare
/// name that is also a file or directory of the project is a bind).
fn volumes(job: &Job) -> Result<Vec<String>, String> {
    crate::docker::input_list(&job.inputs, "volumes")
        .into_iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            if !(2..=3).contains(&parts.len())
                || parts[0].is_empty()
                || !parts[1].starts_with('/')
                || parts.get(2).is_some_and(|m| *m != "ro" && *m != "rw")
            {
                return Err(format!(
                    "volume `{v}`: expected HOST:/CONTAINER[:ro] or NAME:/CONTAINER"
                ));
            }
            let host = parts[0];
            // `data:/x` is a named volume unless the project has a `data`.
            let named =
                !host.contains('/') && !host.starts_with('.') && !job.cwd.join(host).exists();
            if named || host.starts_with('/') {
                return Ok(v);
            }
            let abs = job.cwd.join(host);
            let mut out = format!("{}:{}", abs.display(), parts[1]);
            if let Some(m) = parts.get(2) {
                out.push(':');
                out.push_str(m);
            }
            Ok(out)
        })
        .collect()
}

/// The `deploy.container` executor.
pub async fn deploy_step(job: Job, io: Io) -> Outcome {
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let cx = match open(&job, &sink, &io).await {
        Ok(c) => c,
        Err(e) => return Outcome::error(e),
    };
    let (spec, version, secrets) = match spec_from_inputs(&cx) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let migration = input_str(&job.inputs, "migration_version").filter(|s| !s.is_empty());
    let t0 = Instant::now();
    let r = deploy(&cx, spec, &version, migration, &secrets, "superseded", None).await;
    sink.flush();
    match r {
        Ok(mut outputs) => {
            outputs.insert(
                "seconds".into(),
                format!("{:.1}", t0.elapsed().as_secs_f64()),
            );
            docker::outcome(Ending::Succeeded, Some(0), outputs, None)
        }
        Err(e) if cx.stopped() => {
            docker::outcome(Ending::Cancelled, None, IndexMap::new(), Some(e))
        }
        Err(e) => fail(e),
    }
}

/// Labels of a deployment container.
fn labels(
    cx: &Cx<'_>,
    spec: &Spec,
    version: &str,
    colour: &str,
    role: &str,
    row: i64,
) -> HashMap<String, String> {
    let mut l = docker::labels(cx.job, KIND);
    l.insert(LABEL_SERVICE.into(), spec.service.clone());
    l.insert(LABEL_ENV.into(), spec.environment.clone());
    l.insert(LABEL_VERSION.into(), version.to_string());
    l.insert(LABEL_COLOUR.into(), colour.to_string());
    l.insert(LABEL_ROLE.into(), role.to_string());
    l.insert(LABEL_STRATEGY.into(), spec.strategy.clone());
    l.insert(LABEL_LEDGER.into(), row.to_string());
    l
}

/// A deployment container as found in the Engine.
#[derive(Clone, Debug)]
struct Found {
    id: String,
    name: String,
    labels: HashMap<String, String>,
    running: bool,
}

/// Every deployment container of a service in an environment.
async fn containers(docker: &Docker, env: &str, service: &str) -> Result<Vec<Found>, String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_SERVICE}={service}"),
            format!("{LABEL_ENV}={env}"),
        ],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("cannot list containers: {}", describe(&e)))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            Some(Found {
                id: c.id?,
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c.labels.unwrap_or_default(),
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
            })
        })
        .collect())
}

/// The container that serves a service now: the proxy's target (blue-green)
/// or the running recreated container.
pub async fn active_container(
    docker: &Docker,
    env: &str,
    service: &str,
) -> Result<Option<String>, String> {
    let all = containers(docker, env, service).await?;
    if let Some(p) = all
        .iter()
        .find(|c| c.labels.get(LABEL_ROLE).map(String::as_str) == Some("proxy"))
    {
        let t = proxy::target(docker, &p.id).await?;
        return Ok(t.and_then(|t| {
            all.iter()
                .find(|c| c.id == t || c.id.starts_with(&t))
                .map(|c| c.id.clone())
        }));
    }
    Ok(all
        .into_iter()
        .find(|c| c.running && c.labels.get(LABEL_ROLE).map(String::as_str) == Some("app"))
        .map(|c| c.id))
}

/// Held from the inspect to the create: the Engine accepts two networks of
/// one name, so two deployments of a run starting at once (release.pipe's API
/// and worker) would each create one, and neither could attach by name.
static NETWORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn ensure_network(cx: &Cx<'_>, net: &str) -> Result<(), String> {
    let _one_at_a_time = NETWORK_LOCK.lock().await;
    let d = &cx.docker;
    if d.inspect_network(net, None::<InspectNetworkOptions>)
        .await
        .is_ok()
    {
        return Ok(());
    }
    // Not labelled with the run: a deployment network outlives runs and `pipe gc`.
    let req = NetworkCreateRequest {
        name: net.to_string(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([(LABEL_ENV.to_string(), String::new())])),
        ..Default::default()
    };
    match d.create_network(req).await {
        Ok(_) => {
            cx.log(&format!("created network `{net}`"));
            Ok(())
        }
        Err(e) => {
            if d.inspect_network(net, None::<InspectNetworkOptions>)
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

/// Creates and starts a container publishing `container_port` on 127.0.0.1
/// (`host_port`, or a free port) on the deployment network.
#[expect(clippy::too_many_arguments, reason = "one call site per role")]
async fn start_container(
    cx: &Cx<'_>,
    name: &str,
    image: &str,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    spec: &Spec,
    host_port: Option<u16>,
    labels: HashMap<String, String>,
    before_start: Option<(&str, &str)>,
) -> Result<String, String> {
    let key = format!("{}/tcp", spec.container_port);
    let bindings = HashMap::from([(
        key.clone(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(host_port.map(|p| p.to_string()).unwrap_or_default()),
        }]),
    )]);
    // The service's volumes; the proxy (which has a `cmd`) needs none.
    let binds = (cmd.is_none() && !spec.volumes.is_empty()).then(|| spec.volumes.clone());
    let config = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd,
        env: Some(env),
        exposed_ports: Some(vec![key]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            binds,
            network_mode: Some(spec.network.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    };
    let id = create(&cx.docker, name, config).await?;
    if let Some((addr, target)) = before_start {
        proxy::switch(&cx.docker, &id, addr, target).await?;
    }
    if let Err(e) = cx
        .docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
    {
        remove_bounded(&cx.docker, &id).await;
        return Err(format!(
            "container `{name}` did not start: {}",
            describe(&e)
        ));
    }
    Ok(id)
}

/// The host address of a container's published port, and its address on the network.
async fn addresses(cx: &Cx<'_>, id: &str, spec: &Spec) -> Result<(String, String), String> {
    let info = cx
        .docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| describe(&e))?;
    let ns = info.network_settings.unwrap_or_default();
    let key = format!("{}/tcp", spec.container_port);
    let host = ns
        .ports
        .as_ref()
        .and_then(|p| p.get(&key).cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .ok_or_else(|| format!("the container publishes no port for {key}"))?;
    let ip = ns
        .networks
        .as_ref()
        .and_then(|n| n.get(&spec.network))
        .and_then(|e| e.ip_address.clone())
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| format!("the container has no address on network `{}`", spec.network))?;
    Ok((
        format!("127.0.0.1:{host}"),
        format!("{ip}:{}", spec.container_port),
    ))
}

/// One HTTP GET; the status code.
async fn get(url: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    client
        .get(url)
        .header("Connection", "close")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s = format!("{s}: {x}");
                src = x.source();
            }
            s
        })
}

/// Waits until a new container is healthy: its image's HEALTHCHECK status
/// when it has one, else `GET health` on its published port answering
/// 2xx/3xx, else running.
async fn wait_healthy(
    cx: &Cx<'_>,
    name: &str,
    id: &str,
    host: &str,
    spec: &Spec,
) -> Result<(), String> {
    let within = Duration::from_millis(spec.ready_within_ms);
    let t0 = Instant::now();
    let url = spec
        .health
        .as_ref()
        .map(|h| format!("http://{host}/{}", h.trim_start_matches('/')));
    let mut last;
    loop {
        if cx.stopped() {
            return Err(format!(
                "cancelled while waiting for `{name}` to be healthy"
            ));
        }
        let info = cx
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("`{name}`: {}", describe(&e)))?;
        let state = info.state.unwrap_or_default();
        if state.running != Some(true) {
            let tail = crate::executor::services::logs_tail(&cx.docker, id).await;
            return Err(format!(
                "`{name}` exited with code {} before it was healthy{tail}",
                state.exit_code.unwrap_or(-1)
            ));
        }
        match state.health.as_ref().and_then(|h| h.status) {
            Some(HealthStatusEnum::HEALTHY) => return Ok(()),
            Some(HealthStatusEnum::UNHEALTHY) => {
                let out = state
                    .health
                    .as_ref()
                    .and_then(|h| h.log.as_ref())
                    .and_then(|l| l.last())
                    .and_then(|l| l.output.clone())
                    .unwrap_or_default();
                return Err(format!(
                    "`{name}` is unhealthy: its HEALTHCHECK keeps failing ({})",
                    out.trim()
                ));
            }
            Some(HealthStatusEnum::STARTING) => last = "HEALTHCHECK starting".into(),
            _ => match &url {
                Some(u) => match get(u).await {
                    Ok(c) if (200..400).contains(&c) => return Ok(()),
                    Ok(c) => last = format!("{u} answered HTTP {c}"),
                    Err(e) => last = format!("{u}: {e}"),
                },
                None => return Ok(()),
            },
        }
        if t0.elapsed() >= within {
            return Err(format!(
                "`{name}` was not healthy within {} (last: {last})",
                pipe_lang::value::format_duration(within.as_millis() as u64)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stops a container with the step's grace period, then removes it.
async fn retire(cx: &Cx<'_>, id: &str) {
    let secs = cx.job.grace.as_millis().div_ceil(1000).max(1) as i32;
    let _ = tokio::time::timeout(
        Duration::from_secs(secs as u64 + 30),
        cx.docker.stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(secs),
                ..Default::default()
            }),
        ),
    )
    .await;
    remove_bounded(&cx.docker, id).await;
}

/// Settles rows left `deploying` by a `pipe` that died: `active` when the
/// Engine serves their container, else `failed`.
async fn reconcile_service(
    docker: &Docker,
    store: &Mutex<Store>,
    env: &str,
    service: &str,
) -> Result<Vec<String>, String> {
    let with = |f: &dyn Fn(&Store) -> Result<(), crate::state::StateError>| {
        let s = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&s).map_err(|e| e.to_string())
    };
    let rows = {
        let s = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ledger::in_flight(&s, env, service).map_err(|e| e.to_string())?
    };
    let mut done = Vec::new();
    for r in rows {
        let owner = r.spec.get("owner").and_then(|o| o.as_str()).unwrap_or("");
        if crate::docker::gc::owner_alive(owner) {
            continue;
        }
        let active = active_container(docker, env, service).await?;
        let serves = match (&active, &r.container_id) {
            (Some(a), Some(c)) => a == c,
            _ => false,
        };
        if serves {
            with(&|s| ledger::activate(s, r.id, "superseded"))?;
            done.push(format!(
                "deployment #{} of {service} {} in {env}: active (pipe stopped after the switch)",
                r.id, r.version
            ));
        } else {
            with(&|s| {
                ledger::fail(
                    s,
                    r.id,
                    "interrupted: pipe stopped before the traffic switch",
                )
            })?;
            done.push(format!(
                "deployment #{} of {service} {} in {env}: failed (interrupted before the switch)",
                r.id, r.version
            ));
        }
    }
    Ok(done)
}

/// [`reconcile_service`] for every service of a state store, on a runtime of
/// its own (for `pipe gc`). Returns what changed.
pub fn reconcile_blocking(state_dir: &std::path::Path) -> Result<Vec<String>, String> {
    if !state_dir.join("state.db").exists() {
        return Ok(Vec::new());
    }
    let store = Store::open(state_dir).map_err(|e| e.to_string())?;
    let pending: Vec<(String, String)> = ledger::list(&store, None, None)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| e.status == "deploying")
        .map(|e| (e.environment, e.service))
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let store = Mutex::new(store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let docker = docker::connect().await?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (env, svc) in pending {
            if seen.insert((env.clone(), svc.clone())) {
                out.extend(reconcile_service(&docker, &store, &env, &svc).await?);
            }
        }
        Ok(out)
    })
}

/// Deploys `spec` as `version`; the row it replaces becomes `replaced_as`.
/// Returns the step outputs.
async fn deploy(
    cx: &Cx<'_>,
    mut spec: Spec,
    version: &str,
    migration: Option<String>,
    secrets: &[(String, String)],
    replaced_as: &str,
    note: Option<String>,
) -> Result<IndexMap<String, String>, String> {
    let d = &cx.docker;
    let (env, svc) = (spec.environment.clone(), spec.service.clone());
    for line in reconcile_service(d, &cx.store, &env, &svc).await? {
        cx.log(&line);
    }
    docker::ensure_image(d, &spec.image, cx.sink).await?;
    let img = d
        .inspect_image(&spec.image)
        .await
        .map_err(|e| format!("cannot inspect image `{}`: {}", spec.image, describe(&e)))?;
    let digest = img.id.clone();
    spec.repo_digest = img.repo_digests.as_ref().and_then(|r| r.first().cloned());
    // A resumed run whose deployment of this very image already took traffic.
    if let Some(a) = cx.ledger(|s| ledger::active(s, &env, &svc))? {
        if a.run_id.is_some()
            && a.run_id == cx.run_id
            && a.image_digest == digest
            && a.version == version
        {
            if let (Some(c), Some(now)) = (&a.container_id, active_container(d, &env, &svc).await?)
            {
                if *c == now {
                    cx.log(&format!("{svc} {version} is already active in {env} (deployment #{}): nothing to do", a.id));
                    return outputs_for(
                        cx,
                        &spec,
                        version,
                        &a.id.to_string(),
                        c,
                        a.image_digest.as_deref(),
                    )
                    .await;
                }
            }
        }
    }
    let approved_by = cx
        .run_id
        .and_then(|r| cx.ledger(|s| Ok(ledger::approver(s, r))).ok().flatten());
    let row = cx.ledger(|s| {
        ledger::insert(
            s,
            &ledger::NewEntry {
                environment: env.clone(),
                service: svc.clone(),
                version: version.to_string(),
                image: spec.image.clone(),
                image_digest: digest.clone(),
                migration_version: migration.clone(),
                run_id: cx.run_id,
                step_id: Some(cx.job.step_id.clone()),
                strategy: spec.strategy.clone(),
                spec: serde_json::to_value(&spec).unwrap_or_default(),
                approved_by,
                note: note.clone(),
            },
        )
    })?;
    cx.log(&format!(
        "deploying {svc} {version} to {env} ({}, image {}), deployment #{row}",
        spec.strategy,
        digest.as_deref().unwrap_or(&spec.image)
    ));
    let r = match spec.strategy.as_str() {
        "blue-green" => blue_green(cx, &spec, version, secrets, row, replaced_as).await,
        _ => recreate(cx, &spec, version, secrets, row, replaced_as).await,
    };
    match r {
        Ok(id) => outputs_for(cx, &spec, version, &row.to_string(), &id, digest.as_deref()).await,
        Err(e) => {
            let _ = cx.ledger(|s| ledger::fail(s, row, &e));
            Err(e)
        }
    }
}

async fn outputs_for(
    cx: &Cx<'_>,
    spec: &Spec,
    version: &str,
    row: &str,
    container: &str,
    digest: Option<&str>,
) -> Result<IndexMap<String, String>, String> {
    let stable = cx
        .docker
        .inspect_container(&spec.service, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|i| i.network_settings)
        .and_then(|n| n.ports)
        .and_then(|p| {
            p.get(&format!("{}/tcp", spec.container_port))
                .cloned()
                .flatten()
        })
        .and_then(|b| b.into_iter().find_map(|b| b.host_port));
    let mut o = IndexMap::new();
    o.insert("container_id".into(), container.to_string());
    o.insert(
        "url".into(),
        stable
            .map(|p| format!("http://127.0.0.1:{p}"))
            .unwrap_or_default(),
    );
    o.insert("version".into(), version.to_string());
    o.insert(
        "image_digest".into(),
        digest.unwrap_or_default().to_string(),
    );
    o.insert("deployment".into(), row.to_string());
    o.insert("environment".into(), spec.environment.clone());
    Ok(o)
}

fn env_list(spec: &Spec, secrets: &[(String, String)]) -> Vec<String> {
    spec.vars
        .iter()
        .chain(secrets.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Stops the old container, starts the new one in its place: downtime
/// between the two, and nothing to go back to if the new one fails.
async fn recreate(
    cx: &Cx<'_>,
    spec: &Spec,
    version: &str,
    secrets: &[(String, String)],
    row: i64,
    replaced_as: &str,
) -> Result<String, String> {
    ensure_network(cx, &spec.network).await?;
    for old in containers(&cx.docker, &spec.environment, &spec.service).await? {
        cx.log(&format!(
            "stopping {} ({})",
            old.name,
            old.labels.get(LABEL_VERSION).map_or("?", String::as_str)
        ));
        retire(cx, &old.id).await;
    }
    let labels = labels(cx, spec, version, "none", "app", row);
    let id = start_container(
        cx,
        &spec.service,
        &spec.image,
        None,
        env_list(spec, secrets),
        spec,
        spec.port,
        labels,
        None,
    )
    .await?;
    cx.ledger(|s| ledger::set_container(s, row, &id))?;
    let (host, _) = addresses(cx, &id, spec).await?;
    if let Err(e) = wait_healthy(cx, &spec.service, &id, &host, spec).await {
        remove_bounded(&cx.docker, &id).await;
        return Err(format!(
            "{e}; the new container was removed and recreate kept no old one: `pipe rollback --env {} --service {}` starts the active version again",
            spec.environment, spec.service
        ));
    }
    cx.ledger(|s| ledger::activate(s, row, replaced_as))?;
    cx.log(&format!(
        "{} {version} is live at http://{host}",
        spec.service
    ));
    Ok(id)
}

/// Starts the new colour beside the old, waits healthy, switches the proxy,
/// drains, stops the old. The old version serves until the switch, and keeps
/// serving if anything before the switch fails.
async fn blue_green(
    cx: &Cx<'_>,
    spec: &Spec,
    version: &str,
    secrets: &[(String, String)],
    row: i64,
    replaced_as: &str,
) -> Result<String, String> {
    let d = &cx.docker;
    ensure_network(cx, &spec.network).await?;
    let proxy_image = proxy::ensure_image(d).await?;
    let all = containers(d, &spec.environment, &spec.service).await?;
    let active = active_container(d, &spec.environment, &spec.service).await?;
    let old = active
        .as_ref()
        .and_then(|a| all.iter().find(|c| &c.id == a))
        .cloned();
    let colour = match old
        .as_ref()
        .and_then(|o| o.labels.get(LABEL_COLOUR))
        .map(String::as_str)
    {
        Some("blue") => "green",
        _ => "blue",
    };
    // Leftovers of interrupted deployments: app containers that take no traffic.
    for c in &all {
        let app = c.labels.get(LABEL_ROLE).map(String::as_str) == Some("app");
        if app && Some(&c.id) != active.as_ref() {
            cx.log(&format!("removing leftover container {}", c.name));
            remove_bounded(d, &c.id).await;
        }
    }
    let name = docker::sanitize(&format!("{}-{colour}", spec.service));
    let labels = labels(cx, spec, version, colour, "app", row);
    let id = start_container(
        cx,
        &name,
        &spec.image,
        None,
        env_list(spec, secrets),
        spec,
        None,
        labels,
        None,
    )
    .await?;
    // Removed if anything fails before the switch, even when this future is dropped.
    let guard = crate::executor::container::Removal {
        docker: d.clone(),
        id: Some(id.clone()),
    };
    cx.ledger(|s| ledger::set_container(s, row, &id))?;
    let (host, upstream) = addresses(cx, &id, spec).await?;
    cx.log(&format!(
        "started {name} ({version}); waiting until it is healthy"
    ));
    if let Err(e) = wait_healthy(cx, &name, &id, &host, spec).await {
        guard.remove().await;
        let still = old.as_ref().map_or(String::new(), |o| {
            format!(
                "; {} ({}) still takes the traffic",
                o.name,
                o.labels.get(LABEL_VERSION).map_or("?", String::as_str)
            )
        });
        return Err(format!("{e}; the new container was removed{still}"));
    }
    let proxy = all
        .iter()
        .find(|c| c.labels.get(LABEL_ROLE).map(String::as_str) == Some("proxy") && c.running);
    match proxy {
        Some(p) => proxy::switch(d, &p.id, &upstream, &id).await?,
        None => {
            // A recreated container holds the stable name: it goes, the proxy takes its place.
            if let Some(o) = &old {
                if o.name == spec.service {
                    cx.log(&format!("replacing the recreated container {} by the traffic proxy (a short interruption, once)", o.name));
                    retire(cx, &o.id).await;
                }
            }
            if let Ok(stale) = d
                .inspect_container(&spec.service, None::<InspectContainerOptions>)
                .await
            {
                if let Some(sid) = stale.id {
                    remove_bounded(d, &sid).await;
                }
            }
            let plabels = labels_proxy(cx, spec, row);
            let cmd = vec![
                "/pipe-proxy".to_string(),
                format!("0.0.0.0:{}", spec.container_port),
                format!("{}/upstream", proxy::DIR),
            ];
            start_container(
                cx,
                &spec.service,
                &proxy_image,
                Some(cmd),
                vec![],
                spec,
                spec.port,
                plabels,
                Some((&upstream, &id)),
            )
            .await?;
            cx.log(&format!("started the traffic proxy {}", spec.service));
        }
    }
    // From here the new colour takes the traffic: it is kept.
    let mut guard = guard;
    guard.id = None;
    drop(guard);
    cx.ledger(|s| ledger::activate(s, row, replaced_as))?;
    let stable = addresses(cx, &spec.service, spec)
        .await
        .map(|a| a.0)
        .unwrap_or_default();
    cx.log(&format!(
        "switched traffic on http://{stable} to {name} ({version})"
    ));
    if let Some(o) = old {
        if o.name != spec.service {
            tokio::time::sleep(Duration::from_millis(spec.drain_ms)).await;
            cx.log(&format!(
                "stopping {} ({}) after a drain of {}",
                o.name,
                o.labels.get(LABEL_VERSION).map_or("?", String::as_str),
                pipe_lang::value::format_duration(spec.drain_ms)
            ));
            retire(cx, &o.id).await;
        }
    }
    Ok(id)
}

fn labels_proxy(cx: &Cx<'_>, spec: &Spec, row: i64) -> HashMap<String, String> {
    labels(cx, spec, "-", "none", "proxy", row)
}

/// The `deploy.rollback` executor.
pub async fn rollback_step(job: Job, io: Io) -> Outcome {
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let cx = match open(&job, &sink, &io).await {
        Ok(c) => c,
        Err(e) => return Outcome::error(e),
    };
    let t0 = Instant::now();
    let r = Box::pin(rollback(&cx)).await;
    sink.flush();
    match r {
        Ok(mut o) => {
            let secs = t0.elapsed().as_secs_f64();
            sink.line(false, &format!("rollback done in {secs:.1} s"));
            o.insert("seconds".into(), format!("{secs:.1}"));
            docker::outcome(Ending::Succeeded, Some(0), o, None)
        }
        Err(e) if cx.stopped() => {
            docker::outcome(Ending::Cancelled, None, IndexMap::new(), Some(e))
        }
        Err(e) => fail(e),
    }
}

async fn rollback(cx: &Cx<'_>) -> Result<IndexMap<String, String>, String> {
    let job = cx.job;
    let env = env_name(cx);
    let to = input_str(&job.inputs, "to").filter(|s| !s.is_empty());
    // Which services: the one named; every one of the environment (`all`);
    // else only those run `changed_in` (default: this run) deployed to — a
    // failure handler must not roll back a service its run left alone.
    let changed_in = match input_str(&job.inputs, "changed_in").filter(|s| !s.is_empty()) {
        Some(r) => Some(r.parse::<i64>().map_err(|_| {
            format!("`changed_in = \"{r}\"`: expected a run id (a number, see `pipe runs`)")
        })?),
        None => cx.run_id,
    };
    let (services, scope) = match input_str(&job.inputs, "service").filter(|s| !s.is_empty()) {
        Some(s) => (vec![docker::sanitize(&s)], None),
        None if input_bool(&job.inputs, "all") || changed_in.is_none() => {
            (cx.ledger(|s| ledger::services(s, &env))?, None)
        }
        None => {
            let r = changed_in.unwrap_or_default();
            (cx.ledger(|s| ledger::touched_by_run(s, &env, r))?, Some(r))
        }
    };
    if services.is_empty() {
        if let Some(r) = scope {
            cx.log(&format!(
                "run {r} deployed nothing to `{env}`: nothing to roll back (`all = true` rolls back every service)"
            ));
            let mut o = IndexMap::new();
            for k in ["version", "from_version", "services", "url", "unchanged"] {
                o.insert(k.to_string(), String::new());
            }
            o.insert("environment".into(), env);
            return Ok(o);
        }
        return Err(format!(
            "nothing is deployed to `{env}` according to the ledger (see `pipe deployments --env {env}`)"
        ));
    }
    let mut unchanged = Vec::new();
    let mut rolled = Vec::new();
    let given_secrets = input_map(&job.inputs, "secrets");
    let mut versions = Vec::new();
    let mut froms = Vec::new();
    let mut urls = Vec::new();
    for svc in &services {
        let current = cx.ledger(|s| ledger::active(s, &env, svc))?.ok_or_else(|| {
            format!("`{svc}` has no active deployment in `{env}` (see `pipe deployments --env {env} --service {svc}`)")
        })?;
        // A failed recreate leaves the active version stopped: then the
        // default is to start it again.
        let serving = active_container(&cx.docker, &env, svc).await?;
        let current_serves = current.container_id.is_some() && serving == current.container_id;
        if let Some(r) = scope {
            // The run's deployment of it failed before taking traffic, and
            // the version before it still serves: nothing changed.
            if current.run_id != Some(r) && current_serves {
                cx.log(&format!(
                    "{svc}: left alone: run {r} did not change it in {env} (it still runs {}, deployment #{})",
                    current.version, current.id
                ));
                unchanged.push(svc.clone());
                continue;
            }
        }
        let target = if to.is_none() && !current_serves {
            cx.log(&format!(
                "{svc} {} is the active version in {env} but no container serves it: starting it again",
                current.version
            ));
            current.clone()
        } else {
            cx.ledger(|s| ledger::rollback_target(s, &env, svc, to.as_deref()))?.ok_or_else(|| match &to {
                Some(v) => format!("`{svc}` was never deployed to `{env}` as version {v} (see `pipe deployments --env {env} --service {svc}`)"),
                None => format!("`{svc}` has no earlier version in `{env}` to roll back to (see `pipe deployments --env {env} --service {svc}`)"),
            })?
        };
        let restore = target.id == current.id;
        if restore && current_serves {
            cx.log(&format!(
                "{svc} already runs {} in {env}: nothing to roll back",
                target.version
            ));
            versions.push(target.version.clone());
            froms.push(current.version.clone());
            rolled.push(svc.clone());
            continue;
        }
        if !restore {
            cx.log(&format!(
                "rolling back {svc} in {env}: {} (deployment #{}) -> {} (deployment #{})",
                current.version, current.id, target.version, target.id
            ));
        }
        let mut spec: Spec = serde_json::from_value(target.spec.clone())
            .map_err(|e| format!("deployment #{} has an unreadable spec: {e}", target.id))?;
        // The secret values, by the names the ledger recorded, before
        // anything is touched: `secrets`, the stage's env, then the step's
        // environment's own secrets (`<secrets dir>/<env>/NAME`), the shared
        // ones and pipe's environment. `pipe rollback` and
        // `pipe run rollback --env E` both get E's this way.
        let mut secrets = Vec::new();
        for k in &spec.secret_keys {
            let v = given_secrets
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| job_var(job, k).map(str::to_string))
                .or_else(|| job.secrets.get(k))
                .ok_or_else(|| {
                    let own = job.secrets.env().map_or(String::new(), |e| {
                        format!(", give env `{e}` its own (the secrets directory's `{e}/{k}`)")
                    });
                    format!("the secret `{k}` of {svc} is not stored in the ledger: pass it in `secrets`{own} or set it in pipe's environment")
                })?;
            // Masked like every secret of the run (a value from pipe's
            // environment may not be registered yet; too short: not maskable).
            let _ = job
                .mask
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .add(&v);
            secrets.push((k.clone(), v));
        }
        // The database first: the old version expects the old schema.
        if current.migration_version != target.migration_version {
            let cmd = input_str(&job.inputs, "migrate_down")
                .filter(|s| !s.is_empty())
                .or_else(|| {
                    serde_json::from_value::<Spec>(current.spec.clone())
                        .ok()
                        .and_then(|s| s.migrate_down)
                })
                .or_else(|| spec.migrate_down.clone())
                .ok_or_else(|| {
                    format!(
                        "the database of {svc} is at migration {} but {} needs {}: give `migrate_down` (a command) to step it down",
                        current.migration_version.as_deref().unwrap_or("(none)"),
                        target.version,
                        target.migration_version.as_deref().unwrap_or("(none)")
                    )
                })?;
            migrate_down(cx, &cmd, svc, &current, &target).await?;
        }
        // The exact image that ran, by digest, when the Engine still has it.
        if let Some(dg) = &target.image_digest {
            if cx.docker.inspect_image(dg).await.is_ok() {
                spec.image.clone_from(dg);
            } else if let Some(rd) = &spec.repo_digest {
                spec.image.clone_from(rd);
            }
        }
        spec.owner = docker::owner();
        let o = deploy(
            cx,
            spec,
            &target.version,
            target.migration_version.clone(),
            &secrets,
            if restore { "superseded" } else { "rolled_back" },
            Some(if restore {
                format!(
                    "restart of {} (deployment #{}), which no container served",
                    current.version, current.id
                )
            } else {
                format!(
                    "rollback from {} (deployment #{})",
                    current.version, current.id
                )
            }),
        )
        .await?;
        if let Some(u) = o.get("url") {
            urls.push(u.clone());
        }
        versions.push(target.version.clone());
        froms.push(current.version.clone());
        rolled.push(svc.clone());
    }
    let mut o = IndexMap::new();
    o.insert("version".into(), versions.join(" "));
    o.insert("from_version".into(), froms.join(" "));
    o.insert("services".into(), rolled.join(" "));
    o.insert("environment".into(), env);
    o.insert("url".into(), urls.join(" "));
    o.insert("unchanged".into(), unchanged.join(" "));
    Ok(o)
}

/// Runs the down-step command (`sh -c`) in the project root, with the
/// environment the target version was deployed with (its non-secret
/// variables, e.g. `DATABASE_URL`), the step's, and the migration versions.
async fn migrate_down(
    cx: &Cx<'_>,
    cmd: &str,
    svc: &str,
    current: &ledger::Entry,
    target: &ledger::Entry,
) -> Result<(), String> {
    let from = current.migration_version.clone().unwrap_or_default();
    let to = target.migration_version.clone().unwrap_or_default();
    cx.log(&format!(
        "migrating {svc}'s database down: {from} -> {to}: {cmd}"
    ));
    let mut c = tokio::process::Command::new(cx.job.shell.clone().unwrap_or_else(|| "sh".into()));
    // The service's own (non-secret) settings, e.g. DATABASE_URL, then the step's.
    let deployed: Vec<(String, String)> = serde_json::from_value::<Spec>(target.spec.clone())
        .map(|s| s.vars)
        .unwrap_or_default();
    c.arg("-c")
        .arg(cmd)
        .current_dir(&cx.job.cwd)
        .envs(deployed.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(cx.job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PIPE_MIGRATION_FROM", &from)
        .env("PIPE_MIGRATION_TO", &to)
        .env("PIPE_ROLLBACK_SERVICE", svc)
        .env("PIPE_ROLLBACK_VERSION", &target.version)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_mins(5), c.output())
        .await
        .map_err(|_| format!("the down-step `{cmd}` did not finish within 5 minutes"))?
        .map_err(|e| format!("cannot run the down-step `{cmd}`: {e}"))?;
    cx.sink.text(false, &String::from_utf8_lossy(&out.stdout));
    cx.sink.text(true, &String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!(
            "the down-step `{cmd}` failed ({}); nothing was redeployed",
            out.status
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cwd: &std::path::Path, volumes: &[&str]) -> Job {
        let mut inputs = IndexMap::new();
        inputs.insert(
            "volumes".to_string(),
            Value::List(
                volumes
                    .iter()
                    .map(|v| Value::Str((*v).to_string()))
                    .collect(),
            ),
        );
        Job {
            index: 0,
            step_id: "s.d".into(),
            attempt: 1,
            command: None,
            shell: None,
            env: Vec::new(),
            inputs,
            cwd: cwd.to_path_buf(),
            timeout: None,
            grace: Duration::from_secs(1),
            log_path: cwd.join("x.log"),
            output_path: cwd.join("x.out"),
            token: "t".into(),
            mask: crate::mask::Masker::shared(),
            secrets: crate::secrets::StepSecrets::default(),
        }
    }

    #[test]
    fn volumes_are_binds_from_the_project_root_or_named_volumes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("shared")).unwrap();
        let root = d.path().display().to_string();
        let v = volumes(&job(
            d.path(),
            &[
                "shared:/www/shared:ro",
                "data:/data",
                "./db:/db",
                "/abs:/abs",
                "var/x:/x:rw",
            ],
        ))
        .unwrap();
        assert_eq!(
            v,
            [
                format!("{root}/shared:/www/shared:ro"),
                "data:/data".to_string(),
                format!("{root}/./db:/db"),
                "/abs:/abs".to_string(),
                format!("{root}/var/x:/x:rw"),
            ]
        );
        for bad in ["nocolon", "a:relative", "a:/b:maybe", ":/x"] {
            assert!(volumes(&job(d.path(), &[bad])).is_err(), "{bad}");
        }
    }
}
