//! The `swarm` executor: a container step runs as a Docker Swarm job — a
//! service of one replica with restart condition `none` — created
//! through the Engine API of a swarm manager (`DOCKER_HOST`). pipe follows the
//! job's task to a final state, streams the service's logs into the step log,
//! takes the task's exit code as the result and removes the service, its
//! secrets and volumes afterwards, also on timeout and cancel (and through
//! `pipe gc` after a crash, see [`gc`]).
//!
//! The workspace travels explicitly (see [`workspace`]): it is copied into a
//! volume through the Engine API archive endpoint, `$PIPE_OUTPUT` lives in a
//! second volume and is read back the same way, and `artifacts` are copied
//! back into the project. Secret environment values become Docker secrets and
//! never appear in the service spec. See docs/swarm.md.

pub mod gc;
mod workspace;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bollard::models::{
    Limit, Mount, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, SecretSpec,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListTasksOptions, LogsOptions};
use bollard::Docker;
use futures_util::StreamExt;
use indexmap::IndexMap;
use pipe_lang::Value;

use super::{BoxFuture, Ending, Executor, Io, Job, Outcome, Stop};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_list, input_str, is_not_found};

/// Label kind of everything the swarm executor creates.
pub const KIND: &str = "swarm";
/// Environment: the volume driver of workspace and output volumes (default `local`).
pub const ENV_VOLUME_DRIVER: &str = "PIPE_SWARM_VOLUME_DRIVER";
/// Environment: comma-separated `key=value` options of that driver.
pub const ENV_VOLUME_OPTS: &str = "PIPE_SWARM_VOLUME_OPTS";
/// How often the task's state is polled.
const POLL: Duration = Duration::from_millis(100);

/// Runs container steps as Swarm jobs.
pub struct Swarm;

impl Executor for Swarm {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(run(job, io))
    }
}

/// What `pipe run --executor swarm` puts in place of the `container`
/// executor: every container step runs on the swarm, except one that says
/// `executor = "container"` itself.
pub struct SwarmByDefault;

impl Executor for SwarmByDefault {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        match input_str(&job.inputs, "executor").as_deref() {
            Some("container" | "docker") => super::container::Container.run(job, io),
            _ => Swarm.run(job, io),
        }
    }
}

/// Makes `registry` run container steps on the swarm (`--executor swarm`).
pub fn make_default(registry: &mut super::Registry) {
    registry.register("container", Arc::new(SwarmByDefault));
}

/// The name of the service of an attempt, and the prefix of everything else
/// it owns: `pipe-<run key>-<step>-<attempt>`, shortened with a hash to leave
/// room for suffixes within Docker's 63-character limit.
fn base_name(job: &Job) -> String {
    // Service names are DNS name components: letters, digits, `-`, `_`.
    let full = docker::container_name(job, "").replace('.', "-");
    if full.len() <= 52 {
        return full;
    }
    let hash = crate::state::source_hash(&[(full.clone(), String::new())]);
    format!(
        "{}-{}",
        full[..39].trim_end_matches(['-', '_']),
        &hash[..12]
    )
}

async fn run(job: Job, mut io: Io) -> Outcome {
    let Some(command) = job.command.clone() else {
        return Outcome::error("a swarm step needs a `run` command");
    };
    let Some(image) = input_str(&job.inputs, "image") else {
        return Outcome::error("a swarm step needs `image`");
    };
    if job.inputs.contains_key("services") {
        return Outcome::error(
            "`service` blocks are not supported on the swarm executor: run the step with `executor = \"container\"`, or deploy the service to the swarm separately",
        );
    }
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => return Outcome::error(e),
    };
    let node = match manager_node(&docker).await {
        Ok(n) => n,
        Err(e) => return Outcome::error(e),
    };
    // The workspace helper container runs from the step's image on this engine.
    if let Err(e) = docker::ensure_image(&docker, &image, &sink).await {
        return Outcome::error(e);
    }
    let base = base_name(&job);
    let mut owned = Owned::new(docker.clone());
    let outcome = match prepare_and_run(
        &docker, &job, &base, &image, &command, &node, &mut owned, &sink, &mut io,
    )
    .await
    {
        Ok(o) | Err(o) => o,
    };
    owned.remove().await;
    sink.flush();
    outcome
}

/// The node id of the manager pipe talks to, or why it is not one.
async fn manager_node(docker: &Docker) -> Result<String, String> {
    let info = docker.info().await.map_err(|e| {
        format!(
            "cannot ask the Engine for its swarm state: {}",
            describe(&e)
        )
    })?;
    let swarm = info.swarm.unwrap_or_default();
    let active = matches!(
        swarm.local_node_state,
        Some(bollard::models::LocalNodeState::ACTIVE)
    );
    if !active || swarm.control_available != Some(true) {
        return Err(format!(
            "the Docker Engine at {} is not a swarm manager (swarm state: {}): run `docker swarm init` there, or point DOCKER_HOST at a manager of your swarm (see docs/swarm.md)",
            docker::host(),
            swarm
                .local_node_state
                .map_or_else(|| "unknown".to_string(), |s| s.to_string())
        ));
    }
    swarm
        .node_id
        .ok_or_else(|| "the Engine did not say which swarm node it is".to_string())
}

#[expect(clippy::too_many_arguments, reason = "one attempt's whole context")]
async fn prepare_and_run(
    docker: &Docker,
    job: &Job,
    base: &str,
    image: &str,
    command: &str,
    node: &str,
    owned: &mut Owned,
    sink: &LogSink,
    io: &mut Io,
) -> Result<Outcome, Outcome> {
    let labels = docker::labels(job, KIND);
    let driver = volume_driver().map_err(Outcome::error)?;
    // Workspace and output volumes, filled through a helper container.
    let ws = workspace::Volumes::create(docker, base, image, &labels, &driver, owned)
        .await
        .map_err(Outcome::error)?;
    let started = std::time::Instant::now();
    let sent = ws.fill(docker, job).await.map_err(Outcome::error)?;
    sink.line(
        false,
        &format!(
            "swarm: workspace copied into volume {} ({} files, {} KiB, {} ms)",
            ws.workspace,
            sent.files,
            sent.bytes / 1024,
            started.elapsed().as_millis()
        ),
    );

    // Secret environment values travel as Docker secrets, never in the spec.
    // A value that holds a secret anywhere (`Bearer <token>`) counts as one.
    let secret_flags: Vec<bool> =
        match job.mask.read() {
            Ok(m) => job.env.iter().map(|(_, v)| m.mask(v) != *v).collect(),
            Err(_) => return Err(Outcome::error(
                "the secret masker is poisoned: refusing to put the environment in a service spec",
            )),
        };
    let mut env: Vec<String> = Vec::new();
    let mut secret_refs = Vec::new();
    let mut secret_names = Vec::new();
    for ((k, v), is_secret) in job.env.iter().zip(secret_flags) {
        if is_secret {
            let name = format!("{base}-{}", secret_refs.len());
            let id = docker
                .create_secret(SecretSpec {
                    name: Some(name.clone()),
                    labels: Some(labels.clone()),
                    data: Some(base64::engine::general_purpose::STANDARD.encode(v.as_bytes())),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    Outcome::error(format!(
                        "cannot create the Docker secret for `{k}`: {}",
                        describe(&e)
                    ))
                })?
                .id;
            owned.secrets.push(id.clone());
            secret_refs.push(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(format!("pipe-env-{k}")),
                    uid: Some("0".into()),
                    gid: Some("0".into()),
                    mode: Some(0o444),
                }),
                secret_id: Some(id),
                secret_name: Some(name),
            });
            secret_names.push(k.clone());
        } else {
            env.push(format!("{k}={v}"));
        }
    }
    env.push(format!("PIPE_OUTPUT={}", docker::OUTPUT_FILE));
    env.push(format!("PIPE_WORKSPACE={}", docker::WORKSPACE));
    let shell = job.shell.clone().unwrap_or_else(|| "sh".into());
    let cmd = if secret_names.is_empty() {
        vec![shell, "-c".into(), command.to_string()]
    } else {
        env.push(format!("PIPE_SECRET_ENV={}", secret_names.join(" ")));
        vec![
            "sh".into(),
            "-c".into(),
            SECRET_WRAPPER.into(),
            shell,
            command.to_string(),
        ]
    };

    let mut constraints = input_list(&job.inputs, "placement");
    let mut task_image = image.to_string();
    if driver.pins() {
        // A local volume lives on this node only: the task must run here,
        // where the image is too. Naming it by id spares the node a registry
        // lookup for an image that may exist nowhere else (docs/swarm.md).
        constraints.push(format!("node.id=={node}"));
        if let Ok(i) = docker.inspect_image(image).await {
            task_image = i.id.unwrap_or(task_image);
        }
    }
    let mut limits = Limit::default();
    if let Some(m) = input_str(&job.inputs, "memory") {
        limits.memory_bytes = Some(docker::parse_memory(&m).map_err(Outcome::error)?);
    }
    if let Some(c) = job.inputs.get("cpus").filter(|v| !matches!(v, Value::Null)) {
        limits.nano_cpus = Some(docker::parse_cpus(c).map_err(Outcome::error)?);
    }
    let mount = |source: &str, target: &str| Mount {
        target: Some(target.into()),
        source: Some(source.into()),
        typ: Some(MountType::VOLUME),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            labels: Some(labels.clone()),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some(driver.name.clone()),
                options: (!driver.options.is_empty()).then(|| driver.options.clone()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = ServiceSpec {
        name: Some(base.to_string()),
        labels: Some(labels.clone()),
        // One replica that is never restarted: a one-off job. Not the
        // `replicated-job` mode: removing such a service leaves its completed
        // task and container behind for good (moby/moby#42789, #44312).
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(task_image),
                command: Some(cmd),
                env: Some(env),
                dir: Some(
                    input_str(&job.inputs, "workdir")
                        .unwrap_or_else(|| docker::WORKSPACE.to_string()),
                ),
                user: input_str(&job.inputs, "user"),
                mounts: Some(vec![
                    mount(&ws.workspace, docker::WORKSPACE),
                    mount(&ws.output, workspace::OUTPUT_DIR),
                ]),
                secrets: (!secret_refs.is_empty()).then_some(secret_refs),
                stop_grace_period: Some(job.grace.as_nanos().try_into().unwrap_or(i64::MAX)),
                labels: Some(HashMap::from([(
                    docker::LABEL_STEP.to_string(),
                    job.step_id.clone(),
                )])),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(limits),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(0),
                ..Default::default()
            }),
            placement: (!constraints.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(constraints),
                ..Default::default()
            }),
            networks: input_str(&job.inputs, "network").map(|n| {
                vec![bollard::models::NetworkAttachmentConfig {
                    target: Some(n),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = create_service(docker, base, spec)
        .await
        .map_err(Outcome::error)?;
    owned.service = Some(id.clone());
    sink.line(false, &format!("swarm: job service {base} created"));

    let ended = follow(docker, job, &id, sink, io).await;
    let code = match ended {
        Followed::Stopped(e) => {
            let what = if e == Ending::TimedOut {
                format!(
                    "timed out after {}; the swarm service was removed",
                    pipe_lang::value::format_duration(
                        job.timeout.map_or(0, |t| t.as_millis() as u64)
                    )
                )
            } else {
                "cancelled; the swarm service was removed".to_string()
            };
            return Ok(docker::outcome(e, None, IndexMap::new(), Some(what)));
        }
        Followed::Unfinished(state, message) => {
            return Ok(docker::outcome(
                Ending::Failed,
                None,
                IndexMap::new(),
                Some(format!(
                    "the swarm task ended `{state}` without running to completion: {message}"
                )),
            ));
        }
        Followed::Error(e) => return Ok(Outcome::error(e)),
        Followed::Exited(code) => code,
    };
    if code != 0 {
        return Ok(docker::outcome(
            Ending::Failed,
            Some(code),
            IndexMap::new(),
            Some(format!("exit code {code} (swarm task)")),
        ));
    }
    let text = ws.read_output(docker).await.map_err(Outcome::error)?;
    let outputs = match super::parse_outputs(&text) {
        Ok(o) => o,
        Err(e) => {
            return Ok(docker::outcome(
                Ending::Error,
                Some(0),
                IndexMap::new(),
                Some(format!("$PIPE_OUTPUT: {e}")),
            ))
        }
    };
    for path in input_list(&job.inputs, "artifacts") {
        match ws.copy_back(docker, &path, &job.cwd).await {
            Ok(n) => sink.line(
                false,
                &format!("swarm: artifact {path} copied back ({n} entries)"),
            ),
            Err(e) => {
                return Ok(docker::outcome(
                    Ending::Failed,
                    Some(0),
                    IndexMap::new(),
                    Some(format!("artifact `{path}`: {e}")),
                ))
            }
        }
    }
    Ok(docker::outcome(Ending::Succeeded, Some(0), outputs, None))
}

/// Exports each variable named in `$PIPE_SECRET_ENV` from its Docker secret
/// file, then runs the step's command with its shell (`$0 -c "$1"`).
const SECRET_WRAPPER: &str = r#"for n in $PIPE_SECRET_ENV; do v=$(cat "/run/secrets/pipe-env-$n") || exit 125; export "$n=$v"; done; unset PIPE_SECRET_ENV n v; exec "$0" -c "$1""#;

/// Creates the service, replacing a leftover of the same name (an attempt of
/// a crashed run whose cleanup never ran).
async fn create_service(docker: &Docker, name: &str, spec: ServiceSpec) -> Result<String, String> {
    let r = match docker.create_service(spec.clone(), None).await {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            let _ = docker.delete_service(name).await;
            docker.create_service(spec, None).await
        }
        r => r,
    };
    r.map_err(|e| format!("cannot create the swarm service `{name}`: {}", describe(&e)))?
        .id
        .ok_or_else(|| format!("the Engine created `{name}` without an id"))
}

/// How following a job's task ended.
enum Followed {
    Exited(i32),
    /// Rejected, shut down or orphaned before it could exit on its own.
    Unfinished(String, String),
    Stopped(Ending),
    Error(String),
}

/// Follows the service's task until it reaches a final state, streaming the
/// service's logs, enforcing the timeout and obeying stop requests (which
/// remove the service: the swarm stops its container with the grace period).
async fn follow(docker: &Docker, job: &Job, id: &str, sink: &LogSink, io: &mut Io) -> Followed {
    let long = docker::long(docker);
    let log_opts = |follow: bool| LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut logs = Box::pin(long.service_logs(id, Some(log_opts(true))));
    let mut seen = 0usize;
    let mut logs_open = true;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = async {
        match job.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let mut last_message = String::new();
    let mut stop_open = true;
    let filters = HashMap::from([("service".to_string(), vec![id.to_string()])]);
    let result = loop {
        tokio::select! {
            item = logs.next(), if logs_open => match item {
                Some(Ok(out)) => {
                    seen += 1;
                    emit(sink, out);
                }
                _ => logs_open = false,
            },
            _ = tick.tick() => {
                let tasks = match docker.list_tasks(Some(ListTasksOptions { filters: Some(filters.clone()) })).await {
                    Ok(t) => t,
                    Err(e) => break Followed::Error(format!("cannot list the tasks of the swarm job: {}", describe(&e))),
                };
                let Some(task) = tasks.into_iter().max_by_key(|t| t.created_at.clone()) else { continue };
                let status = task.status.unwrap_or_default();
                let message = [status.message.unwrap_or_default(), status.err.clone().unwrap_or_default()]
                    .into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(": ");
                if !message.is_empty() && message != last_message {
                    // Scheduling news (`no suitable node`, `pulling`) belongs in the log.
                    if matches!(status.state, Some(TaskState::PENDING | TaskState::ASSIGNED | TaskState::PREPARING | TaskState::REJECTED)) {
                        sink.line(true, &format!("swarm: task {message}"));
                    }
                    last_message.clone_from(&message);
                }
                let code = status.container_status.and_then(|c| c.exit_code);
                match status.state {
                    Some(TaskState::COMPLETE) => break Followed::Exited(code.unwrap_or(0) as i32),
                    Some(TaskState::FAILED) => match code {
                        Some(c) if c != 0 => break Followed::Exited(c as i32),
                        _ => break Followed::Unfinished("failed".into(), message),
                    },
                    Some(s @ (TaskState::REJECTED | TaskState::SHUTDOWN | TaskState::ORPHANED | TaskState::REMOVE)) => {
                        break Followed::Unfinished(s.to_string(), message)
                    }
                    _ => {}
                }
            }
            () = &mut timeout => {
                let _ = docker.delete_service(id).await;
                break Followed::Stopped(Ending::TimedOut);
            }
            r = io.stop.changed(), if stop_open => {
                // A closed channel would wake this branch forever.
                stop_open = r.is_ok();
                if r.is_ok() && *io.stop.borrow() != Stop::Run {
                    let _ = docker.delete_service(id).await;
                    break Followed::Stopped(Ending::Cancelled);
                }
            }
        }
    };
    drop(logs);
    if matches!(result, Followed::Exited(_) | Followed::Unfinished(..)) {
        // The followed stream may lag the task: read the whole log once and
        // emit what it has not delivered yet.
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            let mut all = Box::pin(docker.service_logs(id, Some(log_opts(false))));
            let mut n = 0usize;
            while let Some(Ok(out)) = all.next().await {
                n += 1;
                if n > seen {
                    emit(sink, out);
                }
            }
        });
        let _ = rest.await;
    }
    sink.flush();
    result
}

fn emit(sink: &LogSink, out: bollard::container::LogOutput) {
    match out {
        bollard::container::LogOutput::StdErr { message } => sink.chunk(true, &message),
        bollard::container::LogOutput::StdOut { message }
        | bollard::container::LogOutput::Console { message } => sink.chunk(false, &message),
        bollard::container::LogOutput::StdIn { .. } => {}
    }
}

/// The volume driver for workspace and output volumes.
struct Driver {
    name: String,
    options: HashMap<String, String>,
}

impl Driver {
    /// A `local` volume without options is a directory on one node.
    fn pins(&self) -> bool {
        self.name == "local" && self.options.is_empty()
    }
}

fn volume_driver() -> Result<Driver, String> {
    let name = std::env::var(ENV_VOLUME_DRIVER)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string());
    let mut options = HashMap::new();
    if let Ok(text) = std::env::var(ENV_VOLUME_OPTS) {
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("{ENV_VOLUME_OPTS}: `{part}` is not key=value (e.g. type=nfs,o=addr=10.0.0.5,device=:/exports/pipe)")
            })?;
            options.insert(k.to_string(), v.to_string());
        }
    }
    Ok(Driver { name, options })
}

/// Everything an attempt created in the swarm, removed when it ends (also
/// when the step's future is dropped midway, then on a spawned task).
struct Owned {
    docker: Docker,
    service: Option<String>,
    secrets: Vec<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Owned {
    fn new(docker: Docker) -> Owned {
        Owned {
            docker,
            service: None,
            secrets: Vec::new(),
            containers: Vec::new(),
            volumes: Vec::new(),
        }
    }

    fn take(&mut self) -> Owned {
        Owned {
            docker: self.docker.clone(),
            service: self.service.take(),
            secrets: std::mem::take(&mut self.secrets),
            containers: std::mem::take(&mut self.containers),
            volumes: std::mem::take(&mut self.volumes),
        }
    }

    async fn remove(&mut self) {
        let all = self.take();
        let _ = tokio::time::timeout(Duration::from_secs(90), all.remove_now()).await;
    }

    async fn remove_now(mut self) {
        let d = self.docker.clone();
        if let Some(s) = self.service.take() {
            let _ = d.delete_service(&s).await;
        }
        for s in std::mem::take(&mut self.secrets) {
            let _ = d.delete_secret(&s).await;
        }
        for c in std::mem::take(&mut self.containers) {
            super::container::remove_bounded(&d, &c).await;
        }
        for v in std::mem::take(&mut self.volumes) {
            let _ = remove_volume(&d, &v).await;
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.service.is_none()
            && self.secrets.is_empty()
            && self.containers.is_empty()
            && self.volumes.is_empty()
        {
            return;
        }
        let all = self.take();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(90), all.remove_now()).await;
            });
        }
    }
}

/// Removes a volume if nothing uses it.
pub(crate) async fn remove_volume_once(docker: &Docker, name: &str) -> Result<(), String> {
    match docker
        .remove_volume(
            name,
            Some(bollard::query_parameters::RemoveVolumeOptions { force: false }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(describe(&e)),
    }
}

/// Removes a volume, waiting (bounded) while the swarm still tears down the
/// task container that uses it.
pub(crate) async fn remove_volume(docker: &Docker, name: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    loop {
        match remove_volume_once(docker, name).await {
            Ok(()) => return Ok(()),
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_wrapper_is_plain_sh() {
        // No value ever appears in it: only names, read from the environment.
        assert!(SECRET_WRAPPER.contains("/run/secrets/pipe-env-$n"));
        assert!(SECRET_WRAPPER.ends_with(r#"exec "$0" -c "$1""#));
    }

    #[test]
    fn volume_options_parse() {
        let d = Driver {
            name: "local".into(),
            options: HashMap::new(),
        };
        assert!(d.pins());
        let d = Driver {
            name: "local".into(),
            options: HashMap::from([("type".into(), "nfs".into())]),
        };
        assert!(!d.pins());
    }
}
