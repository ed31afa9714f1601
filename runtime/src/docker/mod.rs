//! Talking to the Docker Engine API through bollard: the client (unix socket by
//! default, `DOCKER_HOST` honoured, tcp+TLS with `DOCKER_TLS_VERIFY` and
//! `DOCKER_CERT_PATH`), the labels that mark every container pipe creates, image
//! helpers, build-context tarring and the cleanup of crashed runs' leftovers.
//! The executors built on it live in `crate::executor`. See docs/docker.md.

pub mod context;
pub mod gc;
pub mod log;

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures_util::StreamExt;
use indexmap::IndexMap;
use pipe_lang::Value;

use crate::executor::{Ending, Job, Outcome};

/// Label: the run a container belongs to (`<state hash>-<run id>`).
pub const LABEL_RUN: &str = "dev.pipe.run";
/// Label: the step id.
pub const LABEL_STEP: &str = "dev.pipe.step";
/// Label: the `pipe` process that created it (`host:pid:start time`), to tell a
/// live run's containers from a crashed one's.
pub const LABEL_OWNER: &str = "dev.pipe.owner";
/// Label: `step`, `service` or `run` (a `docker.run` container, kept after the step).
pub const LABEL_KIND: &str = "dev.pipe.kind";

/// Where the workspace is mounted in a container step.
pub const WORKSPACE: &str = "/workspace";
/// Where the `$PIPE_OUTPUT` file is mounted in a container step.
pub const OUTPUT_FILE: &str = "/pipe/output";

/// Engine requests answered at once (inspect, create, remove...) give up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_mins(2);

/// The address pipe connects to, for messages.
pub fn host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// Connects to the Engine named by `DOCKER_HOST` (default: the local unix
/// socket), checks that it answers and agrees on an API version.
pub async fn connect() -> Result<Docker, String> {
    let host = host();
    let timeout = REQUEST_TIMEOUT.as_secs();
    let version = bollard::API_DEFAULT_VERSION;
    let tls = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, timeout, version)
    } else if host.starts_with("https://") || (host.starts_with("tcp://") && tls) {
        let certs = match std::env::var("DOCKER_CERT_PATH") {
            Ok(p) => std::path::PathBuf::from(p),
            Err(_) => {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".docker")
            }
        };
        Docker::connect_with_ssl(
            &host,
            &certs.join("key.pem"),
            &certs.join("cert.pem"),
            &certs.join("ca.pem"),
            timeout,
            version,
        )
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(&host, timeout, version)
    } else {
        return Err(format!(
            "DOCKER_HOST={host} is not supported: use unix:///path, tcp://host:port (with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH for TLS) or https://host:port"
        ));
    };
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "cannot reach the Docker Engine at {host}: {e}\n  help: start it (`sudo dockerd &`, `sudo systemctl start docker`, or `bash .ci/docker-up.sh` in this repository), or point DOCKER_HOST at a running one"
        )
    };
    let docker = docker.map_err(|e| unreachable(&e))?;
    let docker = tokio::time::timeout(Duration::from_secs(30), docker.negotiate_version())
        .await
        .map_err(|_| unreachable(&"no answer within 30 s"))?
        .map_err(|e| unreachable(&e))?;
    Ok(docker)
}

/// A client for requests that last as long as a step (wait, follow logs).
pub fn long(docker: &Docker) -> Docker {
    docker.clone().with_timeout(Duration::from_hours(30 * 24))
}

/// The run key of a job: `<state hash>-<run id>` (its token up to the first `/`).
pub fn run_key(job: &Job) -> String {
    job.token.split('/').next().unwrap_or_default().to_string()
}

/// Identifies this `pipe` process across pid reuse: `host:pid:start time`.
pub fn owner() -> String {
    let pid = std::process::id();
    format!(
        "{}:{pid}:{}",
        hostname(),
        start_time(pid).unwrap_or_default()
    )
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
pub(crate) fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// The labels of a container (or network) created for `job`.
pub fn labels(job: &Job, kind: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_RUN.to_string(), run_key(job)),
        (LABEL_STEP.to_string(), job.step_id.clone()),
        (LABEL_OWNER.to_string(), owner()),
        (LABEL_KIND.to_string(), kind.to_string()),
    ])
}

/// A container name unique to the attempt: `pipe-<run key>-<step>-<attempt>[-suffix]`.
pub fn container_name(job: &Job, suffix: &str) -> String {
    let mut name = format!("pipe-{}-{}-{}", run_key(job), job.step_id, job.attempt);
    if !suffix.is_empty() {
        name.push('-');
        name.push_str(suffix);
    }
    sanitize(&name)
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The network shared by the services and container steps of one run.
pub fn run_network(job: &Job) -> String {
    sanitize(&format!("pipe-{}", run_key(job)))
}

/// An Engine error as a sentence (the daemon's message without bollard's wrapping).
pub fn describe(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// True for a 404 from the Engine.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Makes sure `image` is present, pulling it when it is not.
pub async fn ensure_image(docker: &Docker, image: &str, log: &log::LogSink) -> Result<(), String> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(format!("cannot inspect image `{image}`: {}", describe(&e))),
    }
    log.line(false, &format!("pulling {image}"));
    let opts = CreateImageOptions {
        from_image: Some(image.to_string()),
        ..Default::default()
    };
    let mut s = docker.create_image(Some(opts), None, None);
    while let Some(item) = s.next().await {
        match item {
            Ok(info) => {
                if let Some(d) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!(
                        "image `{image}` is not present and pulling it failed: {d}"
                    ));
                }
            }
            Err(e) => {
                return Err(format!(
                    "image `{image}` is not present and pulling it failed: {}",
                    describe(&e)
                ))
            }
        }
    }
    Ok(())
}

/// Imports a root filesystem tarball as an image (`POST /images/create?fromSrc=-`):
/// how a base image is made where nothing can be pulled. Returns the image id.
pub async fn import_rootfs(
    docker: &Docker,
    tar: Vec<u8>,
    reference: &str,
    changes: Vec<String>,
) -> Result<String, String> {
    let (repo, tag) = split_reference(reference);
    let opts = CreateImageOptions {
        from_src: Some("-".to_string()),
        repo: Some(repo.clone()),
        tag: Some(tag.clone()),
        changes,
        ..Default::default()
    };
    let body = bollard::body_full(bytes::Bytes::from(tar));
    let mut s = docker.create_image(Some(opts), Some(body), None);
    while let Some(item) = s.next().await {
        match item {
            Ok(info) => {
                if let Some(d) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("importing `{reference}` failed: {d}"));
                }
            }
            Err(e) => return Err(format!("importing `{reference}` failed: {}", describe(&e))),
        }
    }
    let full = format!("{repo}:{tag}");
    let img = docker
        .inspect_image(&full)
        .await
        .map_err(|e| format!("imported `{full}` but cannot inspect it: {}", describe(&e)))?;
    Ok(img.id.unwrap_or_default())
}

/// `registry:5000/app:1.2` → (`registry:5000/app`, `1.2`); no tag means `latest`.
pub fn split_reference(reference: &str) -> (String, String) {
    let reference = reference.split('@').next().unwrap_or(reference);
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (
            reference[..slash + i].to_string(),
            reference[slash + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// The registry a repository lives in (`None`: Docker Hub).
pub fn registry_of(repo: &str) -> Option<String> {
    let (first, rest) = repo.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    (first.contains('.') || first.contains(':') || first == "localhost").then(|| first.to_string())
}

/// An attempt's outcome, built through [`Outcome::error`] so that it keeps
/// compiling as `Outcome` grows fields.
pub fn outcome(
    ending: Ending,
    exit_code: Option<i32>,
    outputs: IndexMap<String, String>,
    error: Option<String>,
) -> Outcome {
    let mut o = Outcome::error(String::new());
    o.ending = ending;
    o.exit_code = exit_code;
    o.outputs = outputs;
    o.error = error;
    o
}

/// A string input, if present and not null.
pub fn input_str(inputs: &IndexMap<String, Value>, key: &str) -> Option<String> {
    match inputs.get(key)? {
        Value::Null => None,
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Duration(ms) => Some(pipe_lang::value::format_duration(*ms)),
        other => Some(crate::docker::value_text(other)),
    }
}

/// A list-of-strings input (a single string counts as a list of one).
pub fn input_list(inputs: &IndexMap<String, Value>, key: &str) -> Vec<String> {
    match inputs.get(key) {
        Some(Value::List(l)) => l.iter().map(value_text).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(v) => vec![value_text(v)],
    }
}

/// A map-of-strings input, in declaration order.
pub fn input_map(inputs: &IndexMap<String, Value>, key: &str) -> Vec<(String, String)> {
    match inputs.get(key) {
        Some(Value::Map(m)) => m.iter().map(|(k, v)| (k.clone(), value_text(v))).collect(),
        _ => Vec::new(),
    }
}

pub fn input_bool(inputs: &IndexMap<String, Value>, key: &str) -> bool {
    inputs.get(key).is_some_and(Value::truthy)
}

/// A duration input in milliseconds (a duration value, or seconds as a number).
pub fn input_duration(inputs: &IndexMap<String, Value>, key: &str) -> Option<u64> {
    match inputs.get(key)? {
        Value::Duration(ms) => Some(*ms),
        Value::Int(s) => Some((*s).max(0) as u64 * 1000),
        Value::Str(s) => pipe_lang::value::parse_duration(s),
        _ => None,
    }
}

/// The text of a scalar value, as it would be interpolated.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Duration(ms) => pipe_lang::value::format_duration(*ms),
        other => other.to_json().to_string(),
    }
}

/// `512m`, `1g`, `1.5GiB`, `1048576` → bytes.
pub fn parse_memory(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`memory = \"{text}\"` is not a size such as \"512m\" or \"2g\""))?;
    if n <= 0.0 {
        return Err(format!("`memory = \"{text}\"` must be positive"));
    }
    Ok((n * mult as f64) as i64)
}

/// `cpus = 1.5` → nano-CPUs.
pub fn parse_cpus(v: &Value) -> Result<i64, String> {
    let n = match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`cpus = \"{s}\"` is not a number such as 0.5 or 2"))?,
        other => {
            return Err(format!(
                "`cpus` must be a number, found {}",
                other.type_name()
            ))
        }
    };
    if n <= 0.0 {
        return Err("`cpus` must be positive".into());
    }
    Ok((n * 1e9) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("app"), ("app".into(), "latest".into()));
        assert_eq!(split_reference("app:1"), ("app".into(), "1".into()));
        assert_eq!(
            split_reference("127.0.0.1:5000/ns/app"),
            ("127.0.0.1:5000/ns/app".into(), "latest".into())
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app:v2"),
            ("127.0.0.1:5000/app".into(), "v2".into())
        );
        assert_eq!(
            registry_of("127.0.0.1:5000/app").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(registry_of("library/app"), None);
        assert_eq!(registry_of("app"), None);
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_cpus(&Value::Float(1.5)).unwrap(), 1_500_000_000);
        assert!(parse_cpus(&Value::Int(0)).is_err());
    }

    #[test]
    fn names_are_valid_docker_names() {
        assert_eq!(sanitize("pipe-ab-1-build.x y"), "pipe-ab-1-build.x-y");
    }
}
