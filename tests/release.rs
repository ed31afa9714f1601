//! `pipelines/release.pipe` end to end, as shipped: the audit service built
//! from source, imaged offline, pushed to the registry on 127.0.0.1:5000,
//! scanned by Trivy, migrated, deployed to staging, smoke-tested, approved
//! (`--approve-as`), deployed blue-green to production and watched. Real
//! dockerd, registry, containers, SQLite and webhook server.
//!
//! Each test copies the pipeline and `examples/audit-service/` into a scratch
//! git repository (tags v1.0.0 ...) and gives its images, containers and
//! networks a unique prefix (`-p prefix=`), and its endpoints free ports, so
//! it shares the Engine with everyone else's tests; all of it is removed at
//! the end. The cargo workspace that builds the service binaries is this
//! repository (`AUDIT_WORKSPACE`). Every wait is bounded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

use crate::common::{finish, pipe_bin, repo_root, Ran};

/// Each environment's own API token (`.pipe/secrets/<env>/API_TOKEN`).
const STAGING_TOKEN: &str = "release-test-staging-token-0123456789";
const PROD_TOKEN: &str = "release-test-prod-token-9876543210";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn engine() -> Docker {
    let d = Docker::connect_with_local_defaults().expect("docker client");
    rt().block_on(d.negotiate_version())
        .expect("the Docker Engine does not answer: run `bash .ci/docker-up.sh`")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One HTTP/1.1 request on a fresh connection, with production's token:
/// (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    http_as(PROD_TOKEN, port, method, path, body)
}

fn http_as(
    token: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {out:?}"))?;
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1);
    Ok((status, body.to_string()))
}

/// The version `/health` reports on the endpoint at `port`.
fn version_at(port: u16) -> String {
    let (code, body) = http(port, "GET", "/health", "").expect("GET /health");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("health json");
    v["version"].as_str().expect("version").to_string()
}

/// A Slack webhook stand-in: every POST as "PATH BODY", in order.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

fn hook() -> Hook {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len = text[..i]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                        // "PATH BODY": each environment has its own webhook.
                        let path = text.split(' ').nth(1).unwrap_or("");
                        b.lock()
                            .expect("hook")
                            .push(format!("{path} {}", &text[i + 4..]));
                        break;
                    }
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    });
    Hook { url, bodies }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name();
        if ["dist", "target", "var", "reports"].contains(&name.to_string_lossy().as_ref()) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().expect("type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A scratch project holding release.pipe and the audit service, as a git
/// repository, with each environment's secrets in `.pipe/secrets/<env>/`.
struct Project {
    dir: tempfile::TempDir,
    prefix: String,
    staging_port: u16,
    prod_port: u16,
    slow_site_port: u16,
    limited_site_port: u16,
    hook: Hook,
}

impl Project {
    fn new(tag: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let prefix = format!("e2e{tag}{}x{nanos:x}", std::process::id());
        let root = repo_root();
        std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
        std::fs::copy(
            root.join("pipelines/release.pipe"),
            dir.path().join("pipelines/release.pipe"),
        )
        .expect("copy release.pipe");
        copy_dir(
            &root.join("examples/audit-service"),
            &dir.path().join("examples/audit-service"),
        );
        std::fs::write(
            dir.path().join(".gitignore"),
            "/.pipe\n/var\n/reports\ndist/\n",
        )
        .expect("gitignore");
        let hook = hook();
        let (staging_hook, prod_hook) = (
            format!("{}/staging", hook.url),
            format!("{}/prod", hook.url),
        );
        for (env, k, v) in [
            ("staging", "API_TOKEN", STAGING_TOKEN),
            ("staging", "SMOKE_TOKEN", STAGING_TOKEN),
            ("staging", "SLACK_WEBHOOK", staging_hook.as_str()),
            ("prod", "API_TOKEN", PROD_TOKEN),
            ("prod", "SLACK_WEBHOOK", prod_hook.as_str()),
        ] {
            let secrets = dir.path().join(".pipe/secrets").join(env);
            std::fs::create_dir_all(&secrets).expect("mkdir secrets");
            let f = secrets.join(k);
            std::fs::write(&f, format!("{v}\n")).expect("secret");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let p = Project {
            dir,
            prefix,
            staging_port: free_port(),
            prod_port: free_port(),
            slow_site_port: free_port(),
            limited_site_port: free_port(),
            hook,
        };
        p.git(&["init", "-q", "-b", "main"]);
        p.git(&["add", "-A"]);
        p.git(&["commit", "-qm", "audit service"]);
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@example.org"])
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// A new commit tagged `tag`.
    fn release_tag(&self, tag: &str) {
        self.git(&["commit", "-q", "--allow-empty", "-m", tag]);
        self.git(&["tag", tag]);
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(pipe_bin());
        c.args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env("PIPE_KILL_GRACE_MS", "1000")
            .env("AUDIT_WORKSPACE", repo_root())
            .env_remove("PIPE_STATE_DIR")
            .env_remove("PIPE_SECRETS_FILE")
            .env_remove("PIPE_SECRETS_DIR")
            .env_remove("SLACK_WEBHOOK")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// `pipe run release` with this project's names and ports and short
    /// monitor windows, plus `extra`, without the chaos scripts.
    fn release(&self, extra: &[&str]) -> Command {
        let mut args = vec!["-p", "run_chaos=false"];
        args.extend_from_slice(extra);
        self.release_with_chaos(&args)
    }

    /// The same, chaos scripts included unless `extra` says otherwise.
    fn release_with_chaos(&self, extra: &[&str]) -> Command {
        let (sp, pp) = (
            format!("staging_port={}", self.staging_port),
            format!("prod_port={}", self.prod_port),
        );
        let prefix = format!("prefix={}", self.prefix);
        let slow = format!("slow_site_port={}", self.slow_site_port);
        let limited = format!("limited_site_port={}", self.limited_site_port);
        let mut args = vec![
            "run",
            "release",
            "-p",
            &slow,
            "-p",
            &limited,
            "-p",
            &prefix,
            "-p",
            &sp,
            "-p",
            &pp,
            "-p",
            "monitor_window=8s",
            "-p",
            "monitor_interval=2s",
            "-p",
            "approvers=alice",
        ];
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    fn run(&self, args: &[&str], bound: Duration) -> Ran {
        finish(self.cmd(args).spawn().expect("spawn pipe"), bound)
    }

    /// The ledger of `env`, newest first.
    fn ledger(&self, env: &str) -> Vec<serde_json::Value> {
        let r = self.run(
            &["deployments", "--env", env, "--output", "json"],
            Duration::from_secs(30),
        );
        assert_eq!(r.code, 0, "{}", r.all());
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .expect("deployments json")
            .as_array()
            .expect("array")
            .clone()
    }

    /// The active version of `service` (`api-prod`...) in the ledger.
    fn active(&self, env: &str, service: &str) -> Vec<serde_json::Value> {
        let name = format!("{}-{service}", self.prefix);
        self.ledger(env)
            .into_iter()
            .filter(|r| r["service"] == name.as_str() && r["status"] == "active")
            .collect()
    }

    fn active_version(&self, env: &str, service: &str) -> String {
        let rows = self.active(env, service);
        assert_eq!(rows.len(), 1, "one active row for {service}: {rows:?}");
        rows[0]["version"].as_str().expect("version").to_string()
    }

    /// The migration version of an environment's database (`var/<dir>`).
    fn schema_version(&self, dir: &str) -> String {
        let out = Command::new(self.path().join("examples/audit-service/dist/audit-api"))
            .args(["migrate", "version"])
            .env("DATABASE_URL", format!("sqlite://var/{dir}/audit.db"))
            .current_dir(self.path())
            .output()
            .expect("audit-api migrate version");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn notifications(&self) -> Vec<String> {
        self.hook.bodies.lock().expect("hook").clone()
    }

    /// Every container whose name or labels carry this project's prefix:
    /// (name, labels, running).
    fn containers(&self) -> Vec<(String, HashMap<String, String>, bool)> {
        let list = rt()
            .block_on(engine().list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            })))
            .expect("list containers");
        let mut v: Vec<_> = list
            .into_iter()
            .map(|c| {
                (
                    c.names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    c.labels.unwrap_or_default(),
                    c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                    c.image.unwrap_or_default(),
                )
            })
            .filter(|(name, labels, _, image)| {
                name.contains(&self.prefix)
                    || image.contains(&self.prefix)
                    || labels.values().any(|v| v.contains(&self.prefix))
            })
            .map(|(n, l, r, _)| (n, l, r))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Asserts that only the deployed services run: per service one app
    /// container (and its proxy for blue-green), nothing stopped or extra.
    fn assert_only_the_deployed_services(&self, services: &[&str]) {
        let cs = self.containers();
        for (name, labels, running) in &cs {
            assert!(
                running,
                "a stopped container was left behind: {name} {labels:?}"
            );
            assert_eq!(
                labels.get("dev.pipe.kind").map(String::as_str),
                Some("deploy"),
                "a container of the run was left behind: {name} {labels:?}"
            );
        }
        for s in services {
            let service = format!("{}-{s}", self.prefix);
            let apps = cs
                .iter()
                .filter(|c| {
                    c.1.get("dev.pipe.deploy.service") == Some(&service)
                        && c.1.get("dev.pipe.deploy.role").map(String::as_str) == Some("app")
                })
                .count();
            assert_eq!(apps, 1, "one app container of {service}: {cs:?}");
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let d = engine();
        let rt = rt();
        for (name, _, _) in self.containers() {
            let _ = rt.block_on(d.remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            ));
        }
        for env in ["staging", "prod"] {
            let _ = rt.block_on(d.remove_network(&format!("{}-{env}", self.prefix)));
        }
        // Every tag of the project's images (the registry keeps its copies:
        // pushed tags are named after the unique prefix).
        if let Ok(images) =
            rt.block_on(d.list_images(None::<bollard::query_parameters::ListImagesOptions>))
        {
            for img in images {
                if img.repo_tags.iter().any(|t| t.contains(&self.prefix)) {
                    for t in img.repo_tags.iter().filter(|t| t.contains(&self.prefix)) {
                        let _ = rt.block_on(d.remove_image(
                            t,
                            Some(bollard::query_parameters::RemoveImageOptions {
                                force: true,
                                ..Default::default()
                            }),
                            None,
                        ));
                    }
                }
            }
        }
    }
}

/// Requests to production's `/audits` every 50 ms while it runs, so the
/// post-deploy monitor has traffic to judge: (stop flag, 5xx count).
fn traffic(port: u16) -> (Arc<AtomicBool>, Arc<AtomicUsize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let (s, e) = (stop.clone(), errors.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if let Ok((code, _)) = http(port, "GET", "/audits", "") {
                if code >= 500 {
                    e.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (stop, errors)
}

const RUN_BOUND: Duration = Duration::from_mins(15);

#[test]
fn release_staging_production_automatic_and_manual_rollback() {
    let p = Project::new("r");
    let t_total = Instant::now();

    // 1. v1.0.0 through staging and production, approved by a script.
    p.release_tag("v1.0.0");
    let (stop, _) = traffic(p.prod_port);
    let r = finish(
        p.release(&[
            "--env",
            "prod",
            "--git-ref",
            "v1.0.0",
            "--approve-as",
            "alice",
        ])
        .spawn()
        .expect("spawn"),
        RUN_BOUND,
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(r.code, 0, "release v1.0.0 to prod\n{}", r.all());
    eprintln!("release v1.0.0 (build, scan, staging, prod): {:?}", r.took);
    assert_eq!(p.active_version("staging", "api-staging"), "1.0.0");
    assert_eq!(p.active_version("staging", "worker-staging"), "1.0.0");
    let api = &p.active("prod", "api-prod")[0];
    assert_eq!(api["version"], "1.0.0");
    assert_eq!(api["approved_by"], "alice", "{api}");
    assert_eq!(api["migration_version"], "3", "{api}");
    assert_eq!(p.active_version("prod", "worker-prod"), "1.0.0");
    assert_eq!(version_at(p.staging_port), "1.0.0");
    assert_eq!(version_at(p.prod_port), "1.0.0");
    assert_eq!(p.schema_version("staging"), "3");
    assert_eq!(p.schema_version("production"), "3");
    // The smoke suite created an audit on staging, and production serves
    // its own database.
    let (code, body) = http(
        p.prod_port,
        "POST",
        "/audits",
        r#"{"url":"https://example.org"}"#,
    )
    .expect("POST /audits on prod");
    assert_eq!(code, 201, "{body}");
    // SARIF from the scan stage.
    for svc in ["api", "worker"] {
        let sarif = std::fs::read_to_string(p.path().join(format!("reports/{svc}.sarif")))
            .unwrap_or_else(|e| panic!("reports/{svc}.sarif: {e}"));
        assert!(sarif.contains("\"runs\""), "{sarif}");
    }
    let notes = p.notifications();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("/hook/staging ") && n.contains("1.0.0 is on staging")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("/hook/prod ") && n.contains("1.0.0 is live in production")),
        "{notes:?}"
    );
    // Each environment runs with its own API token: staging refuses
    // production's, production refuses staging's.
    let status = |token: &str, port: u16| {
        http_as(token, port, "GET", "/audits", "")
            .expect("GET /audits")
            .0
    };
    assert_eq!(status(STAGING_TOKEN, p.staging_port), 200);
    assert_eq!(status(PROD_TOKEN, p.staging_port), 401);
    assert_eq!(status(PROD_TOKEN, p.prod_port), 200);
    assert_eq!(status(STAGING_TOKEN, p.prod_port), 401);
    p.assert_only_the_deployed_services(&[
        "api-staging",
        "worker-staging",
        "api-prod",
        "worker-prod",
    ]);

    // 2. v1.1.0, a good version.
    p.release_tag("v1.1.0");
    let (stop, _) = traffic(p.prod_port);
    let r = finish(
        p.release(&[
            "--env",
            "prod",
            "--git-ref",
            "v1.1.0",
            "--approve-as",
            "alice",
        ])
        .spawn()
        .expect("spawn"),
        RUN_BOUND,
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(r.code, 0, "release v1.1.0 to prod\n{}", r.all());
    eprintln!("release v1.1.0: {:?}", r.took);
    assert_eq!(version_at(p.prod_port), "1.1.0");

    // 3. v1.2.0 is broken (every audit request fails in production): it
    // passes staging, the monitor trips and the failure handler rolls
    // production back to v1.1.0.
    p.release_tag("v1.2.0");
    let (stop, errors) = traffic(p.prod_port);
    let r = finish(
        p.release(&[
            "--env",
            "prod",
            "--git-ref",
            "v1.2.0",
            "--approve-as",
            "alice",
            "-p",
            "broken=1",
        ])
        .spawn()
        .expect("spawn"),
        RUN_BOUND,
    );
    stop.store(true, Ordering::Relaxed);
    assert_ne!(r.code, 0, "the broken release must fail\n{}", r.all());
    eprintln!(
        "broken release v1.2.0 with automatic rollback: {:?}",
        r.took
    );
    assert!(
        errors.load(Ordering::Relaxed) > 0,
        "the broken version answered 5xx\n{}",
        r.all()
    );
    assert!(r.all().contains("monitor"), "{}", r.all());
    assert_eq!(version_at(p.prod_port), "1.1.0", "{}", r.all());
    assert_eq!(p.active_version("prod", "api-prod"), "1.1.0");
    assert_eq!(p.active_version("prod", "worker-prod"), "1.1.0");
    let name = format!("{}-api-prod", p.prefix);
    assert!(
        p.ledger("prod")
            .iter()
            .any(|r| r["service"] == name.as_str()
                && r["version"] == "1.2.0"
                && r["status"] == "rolled_back"),
        "{:?}",
        p.ledger("prod")
    );
    // Staging keeps the version it tested.
    assert_eq!(version_at(p.staging_port), "1.2.0");
    let notes = p.notifications();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("1.2.0 failed its production monitor: rolled back to 1.1.0")),
        "{notes:?}"
    );

    // 4. A manual rollback to the first version.
    let t0 = Instant::now();
    // Production's API_TOKEN comes from .pipe/secrets/prod/, by name.
    let mut c = p.cmd(&["rollback", "--env", "prod", "--to", "1.0.0"]);
    let r = finish(c.spawn().expect("spawn"), Duration::from_mins(5));
    assert_eq!(r.code, 0, "pipe rollback --to 1.0.0\n{}", r.all());
    eprintln!("manual rollback to 1.0.0: {:?}", t0.elapsed());
    assert_eq!(version_at(p.prod_port), "1.0.0");
    assert_eq!(p.active_version("prod", "api-prod"), "1.0.0");
    assert_eq!(p.active_version("prod", "worker-prod"), "1.0.0");
    assert_eq!(p.schema_version("production"), "3");
    // What v1.0.0 wrote before is still there (the same database).
    let (code, body) = http(p.prod_port, "GET", "/audits", "").expect("GET /audits");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("https://example.org"), "{body}");

    p.assert_only_the_deployed_services(&[
        "api-staging",
        "worker-staging",
        "api-prod",
        "worker-prod",
    ]);
    eprintln!("whole scenario: {:?}", t_total.elapsed());
}

#[test]
fn sigkill_during_the_staging_deploy_then_resume_completes() {
    let p = Project::new("k");
    let mut child = p
        .release(&["--env", "staging", "-p", "version=2.0.0"])
        .spawn()
        .expect("spawn");
    // Kill pipe as soon as the staging deployment has started a container.
    let service = format!("{}-api-staging", p.prefix);
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let r = finish(child, Duration::from_secs(1));
            panic!(
                "pipe ended ({status}) before the staging deploy\n{}",
                r.all()
            );
        }
        let started = p
            .containers()
            .iter()
            .any(|c| c.1.get("dev.pipe.deploy.service") == Some(&service));
        if started {
            break;
        }
        assert!(t0.elapsed() < RUN_BOUND, "the staging deploy never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL pipe");
    let killed = finish(child, Duration::from_secs(30));
    assert_ne!(killed.code, 0);

    let r = p.run(&["resume"], RUN_BOUND);
    assert_eq!(
        r.code,
        0,
        "pipe resume\n{}\n(killed run)\n{}",
        r.all(),
        killed.all()
    );
    assert_eq!(version_at(p.staging_port), "2.0.0");
    assert_eq!(p.active_version("staging", "api-staging"), "2.0.0");
    assert_eq!(p.active_version("staging", "worker-staging"), "2.0.0");
    assert_eq!(p.schema_version("staging"), "3");
    assert!(
        p.notifications()
            .iter()
            .any(|n| n.contains("2.0.0 is on staging")),
        "{:?}",
        p.notifications()
    );
    p.assert_only_the_deployed_services(&["api-staging", "worker-staging"]);
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

#[test]
fn the_chaos_stage_runs_for_real_in_a_release_and_is_required_on_a_release_branch() {
    let p = Project::new("c");
    // On main the chaos stage only warns; on release/* it is required.
    let graph = p.run(&["graph", "release"], Duration::from_mins(1));
    assert_eq!(graph.code, 0, "{}", graph.all());
    assert!(
        graph.stdout.contains("stage chaos [warn only]"),
        "{}",
        graph.stdout
    );
    p.git(&["checkout", "-q", "-b", "release/1.0"]);
    let graph = p.run(&["graph", "release"], Duration::from_mins(1));
    assert!(graph.stdout.contains("stage chaos\n"), "{}", graph.stdout);

    let t0 = Instant::now();
    let mut c = p.release_with_chaos(&[
        "--env",
        "staging",
        "-p",
        "version=1.0.0",
        "--output",
        "json",
    ]);
    // Three audits per script instead of eight: the same faults, less time.
    c.env("CHAOS_AUDITS", "3");
    let r = finish(c.spawn().expect("spawn"), RUN_BOUND);
    eprintln!(
        "release through staging with the chaos stage: {:?}",
        t0.elapsed()
    );
    assert_eq!(r.code, 0, "release with chaos\n{}", r.all());
    let ev = r.events();
    // Both chaos scripts ran, through the fault proxy, and passed (on a
    // release branch a failure would have failed the run).
    for step in ["chaos.timeouts", "chaos.rate_limits"] {
        let done = ev
            .iter()
            .find(|e| e["event"] == "step_finished" && e["step"] == step)
            .unwrap_or_else(|| panic!("{step} did not finish: {}", r.all()));
        assert_eq!(done["status"], "succeeded", "{done}\n{}", r.all());
        assert_eq!(done["required"], true, "required on release/1.0: {done}");
        eprintln!("{step}: {} ms", done["duration_ms"]);
    }
    assert!(
        !ev.iter().any(|e| e["event"] == "warning"),
        "no warning on a release branch: {}",
        r.all()
    );
    // The summary: each proxy's report, after the stage's last step, and
    // the same report as its chaos block's output.
    let st = p.run(&["status", "--format", "json"], Duration::from_secs(30));
    let status: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
    for (block, fault) in [
        ("chaos.slow_pagespeed", "latency"),
        ("chaos.limited_pagespeed", "http_status"),
    ] {
        let report = ev
            .iter()
            .find(|e| e["event"] == "chaos_report" && e["step"] == block)
            .unwrap_or_else(|| panic!("no chaos report of {block}: {}", r.all()));
        let rep = &report["report"];
        assert!(rep["requests"].as_u64().unwrap_or(0) > 0, "{report}");
        assert!(
            rep["injected"][fault].as_u64().unwrap_or(0) > 0,
            "{fault} faults were injected: {report}"
        );
        let step = status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["step"] == block)
            .unwrap_or_else(|| panic!("no {block} in {status}"))
            .clone();
        let saved: serde_json::Value =
            serde_json::from_str(step["outputs"]["report"].as_str().expect("report output"))
                .expect("report json");
        assert_eq!(saved["requests"], rep["requests"], "{step}");
        // Nothing of it is left: the fault proxy's port is closed.
        let port: u16 = step["outputs"]["port"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no port output: {step}"));
        assert!(
            !listening(port),
            "the fault proxy of {block} on {port} is gone"
        );
    }
    // The scripts' own summaries are in their logs.
    for (step, name) in [
        ("timeouts", "chaos timeouts: 3 audits"),
        ("rate_limits", "chaos rate_limits: 3 audits"),
    ] {
        let logs = p.run(&["logs", "1", step], Duration::from_secs(30));
        assert!(logs.stdout.contains(name), "{}", logs.all());
        assert!(
            logs.stdout.contains("0 hung; 0 unexpected"),
            "{}",
            logs.all()
        );
    }
    // Nor are the sites the scripts served.
    for port in [p.slow_site_port, p.limited_site_port] {
        assert!(!listening(port), "the upstream on {port} is gone");
    }
    // Staging was released as usual beside it.
    assert_eq!(version_at(p.staging_port), "1.0.0");
    p.assert_only_the_deployed_services(&["api-staging", "worker-staging"]);
}
