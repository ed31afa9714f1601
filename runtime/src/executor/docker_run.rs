//! `docker.run`: starts a long-running container (name, ports, environment,
//! env file, network, restart policy) and waits until it is ready — the image
//! HEALTHCHECK, or an HTTP probe when `health` is given — within
//! `ready_within`. The container outlives the step (labelled kind `run`, so
//! `pipe gc` leaves it alone); one that never becomes ready is removed.
//! Outputs `container_id` and `address` (host:port of the first published port).
//! See docs/docker.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use indexmap::IndexMap;

use super::container::{create, remove_bounded};
use super::{BoxFuture, Ending, Executor, Io, Job, Outcome};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_duration, input_list, input_map, input_str};

/// Starts long-running containers.
pub struct Run;

impl Executor for Run {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(run(job, io))
    }
}

/// `8080:80`, `127.0.0.1:8080:80`, `80` (a free host port), `53/udp`.
fn parse_port(spec: &str) -> Result<(String, PortBinding), String> {
    let (spec, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("127.0.0.1", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => {
            return Err(format!(
                "port `{spec}`: expected [IP:]HOST:CONTAINER or CONTAINER"
            ))
        }
    };
    if container.parse::<u16>().is_err() || (!host.is_empty() && host.parse::<u16>().is_err()) {
        return Err(format!("port `{spec}`: ports are numbers from 1 to 65535"));
    }
    Ok((
        format!("{container}/{proto}"),
        PortBinding {
            host_ip: (!ip.is_empty()).then(|| ip.to_string()),
            host_port: Some(host.to_string()),
        },
    ))
}

async fn run(job: Job, mut io: Io) -> Outcome {
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let (Some(image), Some(name)) = (
        input_str(&job.inputs, "image"),
        input_str(&job.inputs, "name"),
    ) else {
        return Outcome::error("docker.run needs `image` and `name`");
    };
    let mut env: Vec<String> = Vec::new();
    if let Some(f) = input_str(&job.inputs, "env_file") {
        let path = job.cwd.join(&f);
        match std::fs::read_to_string(&path) {
            Ok(t) => env.extend(
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#') && l.contains('='))
                    .map(str::to_string),
            ),
            Err(e) => {
                return Outcome::error(format!("cannot read env_file {}: {e}", path.display()))
            }
        }
    }
    env.extend(
        input_map(&job.inputs, "environment")
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in input_list(&job.inputs, "ports") {
        match parse_port(&p) {
            Ok((k, b)) => {
                exposed.push(k.clone());
                bindings
                    .entry(k)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(b);
            }
            Err(e) => return Outcome::error(e),
        }
    }
    let restart = match input_str(&job.inputs, "restart").as_deref().unwrap_or("no") {
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        other => {
            return Outcome::error(format!(
                "restart = \"{other}\": expected \"no\", \"always\", \"unless-stopped\" or \"on-failure\""
            ))
        }
    };
    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => return Outcome::error(e),
    };
    if let Err(e) = docker::ensure_image(&docker, &image, &sink).await {
        return Outcome::error(e);
    }
    let config = ContainerCreateBody {
        image: Some(image.clone()),
        env: Some(env),
        exposed_ports: Some(exposed),
        labels: Some(docker::labels(&job, "run")),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            network_mode: input_str(&job.inputs, "network"),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = match create(&docker, &docker::sanitize(&name), config).await {
        Ok(id) => id,
        Err(e) => return Outcome::error(e),
    };
    if let Err(e) = docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
    {
        remove_bounded(&docker, &id).await;
        return Outcome::error(format!(
            "container `{name}` did not start: {}",
            describe(&e)
        ));
    }
    let address = match address(&docker, &id).await {
        Ok(a) => a,
        Err(e) => {
            remove_bounded(&docker, &id).await;
            return Outcome::error(e);
        }
    };
    let within =
        Duration::from_millis(input_duration(&job.inputs, "ready_within").unwrap_or(60_000));
    let ready = match input_str(&job.inputs, "health") {
        Some(h) => http_ready(&docker, &name, &id, &h, address.as_deref(), within, &mut io).await,
        None => super::services::wait_ready(&docker, &name, &id, within, &mut io).await,
    };
    if let Err(mut o) = ready {
        remove_bounded(&docker, &id).await;
        if let Some(e) = &mut o.error {
            e.push_str("; the container was removed");
        }
        return o;
    }
    sink.line(
        false,
        &format!(
            "container `{name}` ({}) is ready{}",
            &id[..12.min(id.len())],
            address
                .as_deref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default()
        ),
    );
    let mut outputs = IndexMap::new();
    outputs.insert("container_id".to_string(), id);
    outputs.insert("address".to_string(), address.unwrap_or_default());
    docker::outcome(Ending::Succeeded, Some(0), outputs, None)
}

/// host:port of the first published port.
async fn address(docker: &bollard::Docker, id: &str) -> Result<Option<String>, String> {
    let info = docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| describe(&e))?;
    let ports = info
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort();
    for k in keys {
        if let Some(Some(b)) = ports.get(k) {
            if let Some(b) = b
                .iter()
                .find(|b| b.host_ip.as_deref() != Some("::"))
                .or(b.first())
            {
                let ip = match b.host_ip.as_deref() {
                    None | Some("" | "0.0.0.0") => "127.0.0.1",
                    Some(ip) => ip,
                };
                return Ok(Some(format!(
                    "{ip}:{}",
                    b.host_port.clone().unwrap_or_default()
                )));
            }
        }
    }
    Ok(None)
}

/// Polls an HTTP URL (or a path on `address`) until it answers 2xx/3xx.
async fn http_ready(
    docker: &bollard::Docker,
    name: &str,
    id: &str,
    health: &str,
    address: Option<&str>,
    within: Duration,
    io: &mut Io,
) -> Result<(), Outcome> {
    let url = if health.starts_with("http://") {
        health.to_string()
    } else {
        let Some(a) = address else {
            return Err(Outcome::error(format!(
                "`health = \"{health}\"` is a path, but `{name}` publishes no port to probe"
            )));
        };
        format!("http://{a}/{}", health.trim_start_matches('/'))
    };
    let t0 = Instant::now();
    loop {
        if *io.stop.borrow() != super::Stop::Run {
            return Err(Outcome::error(format!(
                "cancelled while waiting for `{name}`"
            )));
        }
        if let Ok(info) = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            let st = info.state.unwrap_or_default();
            if st.running != Some(true) {
                let tail = super::services::logs_tail(docker, id).await;
                return Err(Outcome::error(format!(
                    "`{name}` exited with code {} before it was ready{tail}",
                    st.exit_code.unwrap_or(-1)
                )));
            }
        }
        let last = match probe(&url).await {
            Ok(code) if (200..400).contains(&code) => return Ok(()),
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e,
        };
        if t0.elapsed() >= within {
            return Err(Outcome::error(format!(
                "`{name}` was not ready within {}: {url} answered {last}",
                pipe_lang::value::format_duration(within.as_millis() as u64)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One `GET` over plain HTTP/1.0; the status code.
async fn probe(url: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// probes are supported")?;
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let io = async {
        let mut s = tokio::net::TcpStream::connect(&hostport)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {head:?}"))
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .unwrap_or_else(|_| Err("no answer within 2 s".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        let (k, b) = parse_port("8080:80").unwrap();
        assert_eq!(k, "80/tcp");
        assert_eq!(b.host_port.as_deref(), Some("8080"));
        let (k, b) = parse_port("53/udp").unwrap();
        assert_eq!(k, "53/udp");
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
        assert!(parse_port("a:b").is_err());
    }
}
