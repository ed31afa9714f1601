//! Sidecar services of a container step (`service db { image = ... }`): each
//! starts on the run's network, reachable from the step by its name, and must
//! become healthy (its `health` command, else the image's HEALTHCHECK, else
//! merely running) within `ready_within` (default 60 s) before the step runs.
//! They are removed when the step ends. See docs/docker.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use indexmap::IndexMap;
use pipe_lang::Value;

use super::container::{create, remove_bounded};
use super::{Io, Job, Outcome, Stop};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_duration, input_map, input_str};

#[derive(Default)]
pub struct Services {
    started: Vec<String>,
    network: Option<String>,
}

impl Services {
    /// Starts every service and waits until each is ready. On failure the
    /// outcome to report; what was started is removed by [`Services::remove`].
    pub async fn start(
        &mut self,
        docker: &Docker,
        job: &Job,
        list: &Value,
        net: &str,
        sink: &LogSink,
        io: &mut Io,
    ) -> Result<(), Outcome> {
        let Value::List(items) = list else {
            return Err(Outcome::error(
                "`services` must be a list of service blocks",
            ));
        };
        ensure_network(docker, job, net)
            .await
            .map_err(Outcome::error)?;
        self.network = Some(net.to_string());
        let mut waits = Vec::new();
        for item in items {
            let Value::Map(m) = item else {
                return Err(Outcome::error("each service must be a block"));
            };
            let Some(name) = input_str(m, "name") else {
                return Err(Outcome::error(
                    "a service needs a name: `service db { ... }`",
                ));
            };
            let Some(image) = input_str(m, "image") else {
                return Err(Outcome::error(format!("service `{name}` needs `image`")));
            };
            docker::ensure_image(docker, &image, sink)
                .await
                .map_err(|e| Outcome::error(format!("service `{name}`: {e}")))?;
            let id = self.create_one(docker, job, m, &name, &image, net).await?;
            sink.line(false, &format!("service `{name}` started ({image})"));
            let within = input_duration(m, "ready_within").unwrap_or(60_000);
            waits.push((name, id, Duration::from_millis(within)));
        }
        for (name, id, within) in waits {
            wait_ready(docker, &name, &id, within, io).await?;
            sink.line(false, &format!("service `{name}` is ready"));
        }
        Ok(())
    }

    async fn create_one(
        &mut self,
        docker: &Docker,
        job: &Job,
        m: &IndexMap<String, Value>,
        name: &str,
        image: &str,
        net: &str,
    ) -> Result<String, Outcome> {
        let env: Vec<String> = input_map(m, "env")
            .into_iter()
            .chain(input_map(m, "environment"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let cmd = match m.get("command") {
            Some(Value::Str(s)) => Some(vec!["sh".to_string(), "-c".to_string(), s.clone()]),
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
        let config = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd,
            env: Some(env),
            healthcheck,
            labels: Some(docker::labels(job, "service")),
            host_config: Some(HostConfig {
                network_mode: Some(net.to_string()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![name.to_string()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let cname = docker::container_name(job, &format!("svc-{name}"));
        let id = create(docker, &cname, config)
            .await
            .map_err(|e| Outcome::error(format!("service `{name}`: {e}")))?;
        self.started.push(id.clone());
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

    /// Removes the services, then the run's network unless another step still uses it.
    pub async fn remove(self, docker: &Docker) {
        for id in &self.started {
            remove_bounded(docker, id).await;
        }
        if let Some(net) = self.network {
            let _ = docker.remove_network(&net).await;
        }
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
