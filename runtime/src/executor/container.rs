//! The `container` executor: a step with `image = "..."` runs its `run` command
//! in that image through the Docker Engine API. The workspace is bind-mounted
//! at `/workspace` (the working directory unless `workdir` says otherwise), the
//! `$PIPE_OUTPUT` file at `/pipe/output`; the step's environment becomes the
//! container's; `user`, `network`, `cpus` and `memory` come from the step.
//! Output streams into the step log, the exit code is the result, and the
//! container is removed afterwards, also on timeout and cancel (stop with the
//! grace period, then kill). `service` blocks start sidecars first (see
//! [`super::services`]). See docs/docker.md.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{BoxFuture, Ending, Executor, Io, Job, Outcome, Stop};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_str};

/// Runs steps in containers.
pub struct Container;

impl Executor for Container {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(run(job, io))
    }
}

async fn run(job: Job, mut io: Io) -> Outcome {
    let Some(command) = job.command.clone() else {
        return Outcome::error("a container step needs a `run` command");
    };
    let Some(image) = input_str(&job.inputs, "image") else {
        return Outcome::error("a container step needs `image`");
    };
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    // A fresh, empty output file, writable by any user the image runs as,
    // removed when the attempt ends.
    let _outputs_file = super::OutputsFile::new(&job.output_path);
    if let Err(e) = std::fs::write(&job.output_path, b"").and_then(|()| {
        std::fs::set_permissions(&job.output_path, std::fs::Permissions::from_mode(0o666))
    }) {
        return Outcome::error(format!("cannot create {}: {e}", job.output_path.display()));
    }
    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => return Outcome::error(e),
    };
    if let Err(e) = docker::ensure_image(&docker, &image, &sink).await {
        return Outcome::error(e);
    }
    let services = match super::services::attach(&docker, &job, &sink, &mut io, true).await {
        Ok(a) => a,
        Err(o) => return o,
    };
    let mut network = input_str(&job.inputs, "network");
    let mut extra_env = Vec::new();
    if let Some(a) = &services {
        network.get_or_insert(a.network.clone());
        extra_env.clone_from(&a.env);
    }
    let spec = Spec {
        image,
        cmd: vec![
            job.shell.clone().unwrap_or_else(|| "sh".into()),
            "-c".into(),
            command,
        ],
        network,
        env: extra_env,
    };
    let outcome = run_step(&docker, &job, spec, &sink, &mut io).await;
    if let Some(a) = services {
        a.detach().await;
    }
    sink.flush();
    outcome
}

struct Spec {
    image: String,
    cmd: Vec<String>,
    network: Option<String>,
    /// Where the services are (`PIPE_SERVICE_*`).
    env: Vec<(String, String)>,
}

async fn run_step(docker: &Docker, job: &Job, spec: Spec, sink: &LogSink, io: &mut Io) -> Outcome {
    let mut env: Vec<String> = job
        .env
        .iter()
        .chain(&spec.env)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("PIPE_OUTPUT={}", docker::OUTPUT_FILE));
    env.push(format!("PIPE_WORKSPACE={}", docker::WORKSPACE));
    let mut host = HostConfig {
        binds: Some(vec![
            format!("{}:{}", job.cwd.display(), docker::WORKSPACE),
            format!("{}:{}", job.output_path.display(), docker::OUTPUT_FILE),
        ]),
        network_mode: spec.network.clone(),
        ..Default::default()
    };
    if let Some(m) = input_str(&job.inputs, "memory") {
        match docker::parse_memory(&m) {
            Ok(b) => host.memory = Some(b),
            Err(e) => return Outcome::error(e),
        }
    }
    if let Some(c) = job
        .inputs
        .get("cpus")
        .filter(|v| !matches!(v, pipe_lang::Value::Null))
    {
        match docker::parse_cpus(c) {
            Ok(n) => host.nano_cpus = Some(n),
            Err(e) => return Outcome::error(e),
        }
    }
    let networking = spec.network.as_ref().map(|n| NetworkingConfig {
        endpoints_config: Some(std::collections::HashMap::from([(
            n.clone(),
            EndpointSettings::default(),
        )])),
    });
    let config = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.cmd),
        env: Some(env),
        user: input_str(&job.inputs, "user"),
        working_dir: Some(
            input_str(&job.inputs, "workdir").unwrap_or_else(|| docker::WORKSPACE.to_string()),
        ),
        labels: Some(docker::labels(job, "step")),
        host_config: Some(host),
        networking_config: networking,
        ..Default::default()
    };
    let name = docker::container_name(job, "");
    let id = match create(docker, &name, config).await {
        Ok(id) => id,
        Err(e) => return Outcome::error(e),
    };
    let guard = Removal {
        docker: docker.clone(),
        id: Some(id.clone()),
    };
    let outcome = supervise(docker, job, &id, sink, io).await;
    guard.remove().await;
    outcome
}

/// Creates a container, replacing a leftover of the same name (a crashed
/// attempt whose cleanup never ran).
pub(crate) async fn create(
    docker: &Docker,
    name: &str,
    config: ContainerCreateBody,
) -> Result<String, String> {
    let opts = || CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let r = match docker.create_container(Some(opts()), config.clone()).await {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            let _ = docker.remove_container(name, Some(force())).await;
            docker.create_container(Some(opts()), config).await
        }
        r => r,
    };
    r.map(|c| c.id)
        .map_err(|e| format!("cannot create container `{name}`: {}", describe(&e)))
}

pub(crate) fn force() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    }
}

/// Removes a container when the step ends, even if the step's future is
/// dropped midway (then on a spawned task, as long as the runtime lives;
/// `pipe gc` catches the rest).
pub(crate) struct Removal {
    pub docker: Docker,
    pub id: Option<String>,
}

impl Removal {
    pub async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            remove_bounded(&self.docker, &id).await;
        }
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let docker = self.docker.clone();
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move { remove_bounded(&docker, &id).await });
            }
        }
    }
}

pub(crate) async fn remove_bounded(docker: &Docker, id: &str) {
    let _ = tokio::time::timeout(
        Duration::from_mins(1),
        docker.remove_container(id, Some(force())),
    )
    .await;
}

/// Starts the container, streams its output, waits for it to exit (enforcing
/// the timeout and obeying stop requests) and reads `$PIPE_OUTPUT`.
async fn supervise(docker: &Docker, job: &Job, id: &str, sink: &LogSink, io: &mut Io) -> Outcome {
    let long = docker::long(docker);
    // Subscribe to the exit before starting, so a fast exit is never missed.
    let mut wait = Box::pin(long.wait_container(id, None::<WaitContainerOptions>));
    if let Err(e) = docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
    {
        return Outcome::error(format!("cannot start the container: {}", describe(&e)));
    }
    let logs = long.logs(
        id,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let pump = async {
        let mut logs = Box::pin(logs);
        while let Some(item) = logs.next().await {
            match item {
                Ok(bollard::container::LogOutput::StdErr { message }) => sink.chunk(true, &message),
                Ok(
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message },
                ) => sink.chunk(false, &message),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    let timeout = async {
        match job.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    tokio::pin!(pump);
    let mut pumped = false;
    let mut ending = None;
    let code: Result<i64, String> = loop {
        tokio::select! {
            w = wait.next() => break match w {
                Some(Ok(r)) => Ok(r.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
                Some(Err(e)) => Err(describe(&e)),
                None => Err("the Engine closed the wait without an exit code".into()),
            },
            () = &mut pump, if !pumped => pumped = true,
            () = &mut timeout, if ending.is_none() => {
                ending = Some(Ending::TimedOut);
                terminate(docker, id, job.grace, io).await;
            }
            r = io.stop.changed(), if ending.is_none() => {
                if r.is_err() { continue; }
                if *io.stop.borrow() != Stop::Run {
                    ending = Some(Ending::Cancelled);
                    terminate(docker, id, job.grace, io).await;
                }
            }
        }
    };
    // The log stream ends with the container; bounded in case the Engine lags.
    if !pumped {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut pump).await;
    }
    sink.flush();
    let code = match code {
        Ok(c) => c as i32,
        Err(e) => {
            return docker::outcome(
                ending.unwrap_or(Ending::Error),
                None,
                indexmap::IndexMap::new(),
                Some(format!("waiting for the container failed: {e}")),
            )
        }
    };
    if let Some(e) = ending {
        let what = if e == Ending::TimedOut {
            format!(
                "timed out after {}; the container was stopped and removed",
                pipe_lang::value::format_duration(job.timeout.map_or(0, |t| t.as_millis() as u64))
            )
        } else {
            "cancelled; the container was stopped and removed".to_string()
        };
        return docker::outcome(e, Some(code), indexmap::IndexMap::new(), Some(what));
    }
    if code != 0 {
        return docker::outcome(
            Ending::Failed,
            Some(code),
            indexmap::IndexMap::new(),
            Some(match code {
                126 => "exit code 126: the command could not be executed".to_string(),
                127 => "exit code 127: command not found in the image".to_string(),
                137 => "exit code 137: killed (out of memory, or SIGKILL)".to_string(),
                c => format!("exit code {c}"),
            }),
        );
    }
    let text = std::fs::read_to_string(&job.output_path).unwrap_or_default();
    match super::parse_outputs(&text) {
        Ok(outputs) => docker::outcome(Ending::Succeeded, Some(0), outputs, None),
        Err(e) => docker::outcome(
            Ending::Error,
            Some(0),
            indexmap::IndexMap::new(),
            Some(format!("$PIPE_OUTPUT: {e}")),
        ),
    }
}

/// `docker stop` with the grace period (SIGTERM, then SIGKILL by the Engine),
/// cut short by a `Kill` request.
pub(crate) async fn terminate(docker: &Docker, id: &str, grace: Duration, io: &mut Io) {
    let kill = || async {
        let _ = docker
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await;
    };
    if *io.stop.borrow() == Stop::Kill {
        kill().await;
        return;
    }
    let secs = grace.as_millis().div_ceil(1000).max(1) as i32;
    let stop = docker.stop_container(
        id,
        Some(StopContainerOptions {
            t: Some(secs),
            ..Default::default()
        }),
    );
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            r = io.stop.changed() => {
                if r.is_err() || *io.stop.borrow() == Stop::Kill {
                    kill().await;
                    return;
                }
            }
        }
    }
}
