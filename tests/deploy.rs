//! `deploy.container`, `deploy.rollback`, `pipe deployments`, `pipe rollback`
//! and `pipe gc` against the real Docker Engine. The service deployed is
//! busybox `httpd` serving `/health` (which says its version) in an image
//! built offline from a busybox-static root filesystem. Every container,
//! network and image a test makes carries its unique id and is removed at
//! its end; every wait is bounded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, RemoveImageOptions,
};
use bollard::Docker;

use crate::common::{busybox_rootfs, finish, unique_id, Ran, Sandbox};

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

/// A project with a busybox rootfs, app images `<id>-app:v1`, `:v2`, `:bad`
/// (no /health) and `:slow` (healthy after 20 s), and a service `<id>-web`.
struct Proj {
    sb: Sandbox,
    id: String,
}

impl std::ops::Deref for Proj {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

impl Proj {
    fn new(tag: &str) -> Proj {
        let id = unique_id(&format!("pipedeploy-{tag}"));
        let p = Proj {
            sb: Sandbox::new(),
            id,
        };
        busybox_rootfs(p.dir.path(), None);
        let base = format!("{}-base:1", p.id);
        let app = |extra: &str| {
            format!(
                "FROM {base}\nARG VERSION\nRUN mkdir -p /www && echo \"version=$VERSION\" > /www/health\n{extra}CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
            )
        };
        p.write("app/Dockerfile", &app(""));
        p.write("bad/Dockerfile", &format!("FROM {base}\nRUN mkdir -p /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"));
        p.write(
            "slow/Dockerfile",
            &format!("FROM {base}\nARG VERSION\nRUN mkdir -p /www && echo \"version=$VERSION\" > /www/health\nCMD [\"sh\", \"-c\", \"sleep 20; exec httpd -f -p 8080 -h /www\"]\n"),
        );
        let id = &p.id;
        p.write(
            "pipelines/images.pipe",
            &format!(
                r#"import "std/docker"

pipeline images {{
  stage base {{
    step import = docker.import {{ rootfs = "rootfs"  image = "{base}" }}
  }}
  stage build {{
    needs = [base]
    step v1 = docker.build {{ dockerfile = "app/Dockerfile"  context = "app"  image = "{id}-app"  tags = ["v1"]  args = {{ VERSION = "1" }} }}
    step v2 = docker.build {{ dockerfile = "app/Dockerfile"  context = "app"  image = "{id}-app"  tags = ["v2"]  args = {{ VERSION = "2" }} }}
    step bad = docker.build {{ dockerfile = "bad/Dockerfile"  context = "bad"  image = "{id}-app"  tags = ["bad"] }}
    step slow = docker.build {{ dockerfile = "slow/Dockerfile"  context = "slow"  image = "{id}-app"  tags = ["slow"]  args = {{ VERSION = "3" }} }}
  }}
}}
"#
            ),
        );
        p.write("shared/note.txt", "from the project\n");
        let r = p.run(
            &["run", "images", "--output", "plain"],
            Duration::from_mins(4),
        );
        assert_eq!(r.code, 0, "building the test images: {}", r.all());
        p
    }

    /// `pipelines/ship.pipe`: deploys `<id>-app:${tag}` as `version`.
    fn ship(&self, strategy: &str) {
        let id = &self.id;
        self.write(
            "pipelines/ship.pipe",
            &format!(
                r#"import "std/deploy"

pipeline ship {{
  param version: string   = "1"
  param tag: string       = "v1"
  param migration: string = "1"

  stage deploy {{
    step web = deploy.container {{
      image             = "{id}-app:${{tag}}"
      service           = "{id}-web"
      version           = version
      strategy          = "{strategy}"
      network           = "{id}-net"
      env_name          = "test"
      environment       = {{ GREETING = "hello" }}
      volumes           = ["shared:/www/shared:ro"]
      migration_version = migration
      migrate_down      = "echo \"down $PIPE_MIGRATION_FROM -> $PIPE_MIGRATION_TO for $PIPE_ROLLBACK_VERSION with $GREETING\" >> migrations.log"
      ready_within      = 8s
      drain             = 1s
    }}
  }}
}}
"#
            ),
        );
    }

    fn deploy(&self, version: &str, tag: &str) -> Ran {
        self.run(
            &[
                "run",
                "ship",
                "-p",
                &format!("version={version}"),
                "-p",
                &format!("tag={tag}"),
                "-p",
                &format!("migration={version}"),
                "--output",
                "plain",
            ],
            Duration::from_mins(3),
        )
    }

    /// The ledger, newest first.
    fn ledger(&self) -> Vec<serde_json::Value> {
        let r = self.run(
            &["deployments", "--env", "test", "--output", "json"],
            Duration::from_secs(20),
        );
        assert_eq!(r.code, 0, "{}", r.all());
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .expect("deployments json")
            .as_array()
            .expect("array")
            .clone()
    }

    /// The stable endpoint, from the active ledger row's deployment outputs.
    fn url(&self) -> String {
        let r = self.run(&["status", "--format", "json"], Duration::from_secs(20));
        let st: serde_json::Value = serde_json::from_str(&r.stdout).expect("status json");
        let steps = st["steps"].as_array().expect("steps");
        let url = steps
            .iter()
            .find_map(|s| s["outputs"]["url"].as_str())
            .unwrap_or_else(|| panic!("no url output in {st}"));
        url.trim_start_matches("http://").to_string()
    }

    /// This service's containers: (name, labels, running).
    fn containers(&self) -> Vec<(String, HashMap<String, String>, bool)> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("dev.pipe.deploy.service={}-web", self.id)],
        )]);
        let mut v: Vec<_> = rt()
            .block_on(engine().list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            })))
            .expect("list")
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
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Versions of the app containers (not the proxy), sorted.
    fn app_versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .containers()
            .into_iter()
            .filter(|c| c.1.get("dev.pipe.deploy.role").map(String::as_str) == Some("app"))
            .map(|c| c.1["dev.pipe.deploy.version"].clone())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Proj {
    fn drop(&mut self) {
        let d = engine();
        let rt = rt();
        for svc in ["web", "other"] {
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("dev.pipe.deploy.service={}-{svc}", self.id)],
            )]);
            if let Ok(list) = rt.block_on(d.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))) {
                for c in list.into_iter().filter_map(|c| c.id) {
                    let _ = rt.block_on(d.remove_container(
                        &c,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    ));
                }
            }
        }
        let _ = rt.block_on(d.remove_network(&format!("{}-net", self.id)));
        for tag in ["v1", "v2", "bad", "slow"] {
            let _ = rt.block_on(d.remove_image(
                &format!("{}-app:{tag}", self.id),
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            ));
        }
        let _ = rt.block_on(d.remove_image(
            &format!("{}-base:1", self.id),
            Some(RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        ));
    }
}

/// `GET /health` on a fresh connection: (status code, body).
fn health(addr: &str) -> Result<(u16, String), String> {
    get(addr, "/health")
}

fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {out:?}"))?;
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((code, body))
}

/// A one-shot webhook on 127.0.0.1: its URL, and the body it receives.
fn webhook() -> (String, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
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
                    let _ = tx.send(text[i + 4..].to_string());
                    return;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (url, rx)
}

fn version_at(addr: &str) -> String {
    match health(addr) {
        Ok((200, body)) => body,
        other => panic!("GET {addr}/health: {other:?}"),
    }
}

fn row<'a>(ledger: &'a [serde_json::Value], version: &str, status: &str) -> &'a serde_json::Value {
    ledger
        .iter()
        .find(|r| r["version"] == version && r["status"] == status)
        .unwrap_or_else(|| panic!("no {status} row of version {version} in {ledger:#?}"))
}

#[test]
fn recreate_replaces_the_container_and_records_the_ledger() {
    let p = Proj::new("recreate");
    p.ship("recreate");
    let r = p.deploy("1", "v1");
    assert_eq!(r.code, 0, "{}", r.all());
    let addr = p.url();
    assert_eq!(version_at(&addr), "version=1");
    let r = p.deploy("2", "v2");
    assert_eq!(r.code, 0, "{}", r.all());
    // A recreated container keeps the stable name, so the address may change
    // only when no port is fixed: read it again.
    let addr = p.url();
    assert_eq!(version_at(&addr), "version=2");
    assert_eq!(
        get(&addr, "/shared/note.txt"),
        Ok((200, "from the project".to_string())),
        "the volume is mounted"
    );
    let cs = p.containers();
    assert_eq!(cs.len(), 1, "{cs:?}");
    let (name, labels, running) = &cs[0];
    assert_eq!(name, &format!("{}-web", p.id));
    assert!(running);
    assert_eq!(labels["dev.pipe.deploy.version"], "2");
    assert_eq!(labels["dev.pipe.deploy.colour"], "none");
    assert_eq!(labels["dev.pipe.deploy.env"], "test");
    // Run 1 built the images, runs 2 and 3 deployed.
    assert!(labels["dev.pipe.run"].ends_with("-3"), "{labels:?}");
    let ledger = p.ledger();
    assert_eq!(ledger.len(), 2, "{ledger:#?}");
    let v2 = row(&ledger, "2", "active");
    assert_eq!(v2["strategy"], "recreate");
    assert_eq!(v2["migration_version"], "2");
    assert_eq!(v2["run_id"], 3);
    assert!(v2["approved_by"].is_null());
    assert!(v2["image_digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    // Secrets aside, the spec keeps what a rollback needs.
    assert_eq!(
        v2["spec"]["vars"][0],
        serde_json::json!(["GREETING", "hello"])
    );
    row(&ledger, "1", "superseded");
    // A recreate whose new version never gets healthy leaves nothing running;
    // `pipe rollback` starts the active version again.
    let r = p.deploy("9", "bad");
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("starts the active version again"),
        "{}",
        r.all()
    );
    assert!(p.app_versions().is_empty(), "{:?}", p.containers());
    let svc = format!("{}-web", p.id);
    let r = p.run(
        &[
            "rollback",
            "--env",
            "test",
            "--service",
            &svc,
            "--output",
            "plain",
        ],
        Duration::from_mins(2),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("no container serves it"), "{}", r.all());
    assert_eq!(version_at(&p.url()), "version=2");
    assert_eq!(p.app_versions(), ["2"]);
    let ledger = p.ledger();
    assert_eq!(ledger[0]["version"], "2");
    assert_eq!(ledger[0]["status"], "active");
    row(&ledger, "9", "failed");
    let table = p.run(
        &["deployments", "--service", &format!("{}-web", p.id)],
        Duration::from_secs(20),
    );
    assert_eq!(table.code, 0, "{}", table.all());
    assert!(table.stdout.starts_with("  id  env"), "{}", table.stdout);
    assert!(table.stdout.contains(" active "), "{}", table.stdout);
    assert!(table.stdout.contains(" superseded "), "{}", table.stdout);
}

#[test]
fn blue_green_switches_without_a_failed_request_and_never_to_an_unhealthy_version() {
    let p = Proj::new("bluegreen");
    p.ship("blue-green");
    let r = p.deploy("1", "v1");
    assert_eq!(r.code, 0, "{}", r.all());
    let addr = p.url();
    assert_eq!(version_at(&addr), "version=1");
    // Hammer the stable endpoint while v2 replaces v1.
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match health(&addr) {
                    Ok((200, body)) => *seen.entry(body).or_default() += 1,
                    other => failures.push(format!("{other:?}")),
                }
            }
            (seen, failures)
        })
    };
    let r = p.deploy("2", "v2");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (seen, failures) = hammer.join().expect("hammer");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(seen.get("version=1").is_some_and(|n| *n > 0), "{seen:?}");
    assert!(seen.get("version=2").is_some_and(|n| *n > 0), "{seen:?}");
    eprintln!("requests during the blue-green switch: {seen:?}, 0 failed");
    assert_eq!(p.url(), addr, "the stable endpoint moved");
    assert_eq!(version_at(&addr), "version=2");
    assert_eq!(p.app_versions(), ["2"], "the old colour was not stopped");
    // A version whose health never passes is not switched to.
    let r = p.deploy("9", "bad");
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("was not healthy within 8s"), "{}", r.all());
    assert!(r.all().contains("still takes the traffic"), "{}", r.all());
    assert_eq!(version_at(&addr), "version=2");
    assert_eq!(p.app_versions(), ["2"], "the unhealthy container was left");
    let ledger = p.ledger();
    let bad = row(&ledger, "9", "failed");
    assert!(
        bad["note"]
            .as_str()
            .is_some_and(|n| n.contains("not healthy")),
        "{bad}"
    );
    row(&ledger, "2", "active");
    row(&ledger, "1", "superseded");
    let cs = p.containers();
    let proxy = cs
        .iter()
        .find(|c| c.1["dev.pipe.deploy.role"] == "proxy")
        .expect("a proxy");
    assert_eq!(proxy.0, format!("{}-web", p.id));
    let app = cs
        .iter()
        .find(|c| c.1["dev.pipe.deploy.role"] == "app")
        .expect("app");
    assert_eq!(app.0, format!("{}-web-green", p.id));
}

#[test]
fn rollback_redeploys_the_previous_version_with_its_down_step() {
    let p = Proj::new("rollback");
    p.ship("blue-green");
    for (v, tag) in [("1", "v1"), ("2", "v2")] {
        let r = p.deploy(v, tag);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let addr = p.url();
    assert_eq!(version_at(&addr), "version=2");
    let svc = format!("{}-web", p.id);
    let t0 = Instant::now();
    let r = p.run(
        &[
            "rollback",
            "--env",
            "test",
            "--service",
            &svc,
            "--output",
            "plain",
        ],
        Duration::from_mins(3),
    );
    let took = t0.elapsed();
    assert_eq!(r.code, 0, "{}", r.all());
    eprintln!("pipe rollback took {took:?}");
    assert_eq!(version_at(&addr), "version=1");
    assert_eq!(p.app_versions(), ["1"]);
    let log = std::fs::read_to_string(p.path("migrations.log")).expect("the down-step ran");
    assert_eq!(log, "down 2 -> 1 for 1 with hello\n");
    let ledger = p.ledger();
    assert_eq!(ledger[0]["version"], "1");
    assert_eq!(ledger[0]["status"], "active");
    assert!(
        ledger[0]["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("rollback from 2")),
        "{:#?}",
        ledger[0]
    );
    let old = row(&ledger, "1", "superseded");
    assert_eq!(
        ledger[0]["image_digest"], old["image_digest"],
        "rolled back by digest"
    );
    row(&ledger, "2", "rolled_back");
    // Nothing earlier than 1: a clear refusal. Forward again with --to.
    let r = p.run(
        &[
            "rollback",
            "--env",
            "test",
            "--service",
            &svc,
            "--output",
            "plain",
        ],
        Duration::from_mins(1),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all()
            .contains("has no earlier version in `test` to roll back to"),
        "{}",
        r.all()
    );
    let r = p.run(
        &[
            "rollback", "--env", "test", "--to", "2", "--output", "plain",
        ],
        Duration::from_mins(3),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(version_at(&addr), "version=2");
    // pipelines/rollback.pipe does the same and tells the team.
    let shipped = crate::common::repo_root().join("pipelines/rollback.pipe");
    p.write(
        "pipelines/rollback.pipe",
        &std::fs::read_to_string(shipped).expect("pipelines/rollback.pipe"),
    );
    let (hook, body) = webhook();
    let child = p
        .cmd(&[
            "run",
            "rollback",
            "-p",
            "environment=test",
            "-p",
            &format!("service={svc}"),
            "-p",
            "to=1",
            "--output",
            "plain",
        ])
        .env("SLACK_WEBHOOK", &hook)
        .spawn()
        .expect("spawn");
    let r = finish(child, Duration::from_mins(3));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(version_at(&addr), "version=1");
    let body = body
        .recv_timeout(Duration::from_secs(30))
        .expect("the notification");
    assert!(
        body.contains(&format!("rolled back {svc} in test: 2 -> 1 in ")),
        "{body}"
    );
    let r = p.run(
        &["rollback", "--env", "nowhere", "--output", "plain"],
        Duration::from_mins(1),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("nothing is deployed to `nowhere`"),
        "{}",
        r.all()
    );
}

/// `pipe run rollback --env prod` (the shipped `pipelines/rollback.pipe`)
/// redeploys each service with prod's own secrets, read at rollback time
/// from `.pipe/secrets/prod/` by the names the ledger recorded, as `pipe
/// rollback --env prod` does: not staging's, not pipe's environment's.
#[test]
fn pipe_run_rollback_gives_the_services_their_environment_s_own_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let p = Proj::new("rbsecrets");
    let id = &p.id;
    p.write(
        "pipelines/ship.pipe",
        &format!(
            r#"import "std/deploy"

pipeline ship {{
  param version: string = "1"
  param tag: string     = "v1"

  env prod {{}}

  stage deploy {{
    env = prod

    step web = deploy.container {{
      image        = "{id}-app:${{tag}}"
      service      = "{id}-web"
      version      = version
      network      = "{id}-net"
      env_name     = "prod"
      secrets      = {{ API_TOKEN = secrets.API_TOKEN }}
      ready_within = 8s
    }}
  }}
}}
"#
        ),
    );
    let secret = |rel: &str, value: &str| {
        p.write(&format!(".pipe/secrets/{rel}"), value);
        std::fs::set_permissions(
            p.path(&format!(".pipe/secrets/{rel}")),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod 600");
    };
    secret("prod/API_TOKEN", "prod-token-one");
    secret("staging/API_TOKEN", "staging-token");
    for (v, tag) in [("1", "v1"), ("2", "v2")] {
        let r = p.run(
            &[
                "run",
                "ship",
                "-p",
                &format!("version={v}"),
                "-p",
                &format!("tag={tag}"),
                "--output",
                "plain",
            ],
            Duration::from_mins(3),
        );
        assert_eq!(r.code, 0, "{}", r.all());
    }
    // Rotated since: the rollback reads the value prod has now.
    secret("prod/API_TOKEN", "prod-token-two");
    let (hook, body) = webhook();
    secret("prod/SLACK_WEBHOOK", &hook);
    let shipped = crate::common::repo_root().join("pipelines/rollback.pipe");
    p.write(
        "pipelines/rollback.pipe",
        &std::fs::read_to_string(shipped).expect("pipelines/rollback.pipe"),
    );
    let child = p
        .cmd(&["run", "rollback", "--env", "prod", "--output", "plain"])
        .env("API_TOKEN", "from-pipe-s-environment")
        .spawn()
        .expect("spawn");
    let r = finish(child, Duration::from_mins(3));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(p.app_versions(), ["1"]);
    let name = p
        .containers()
        .into_iter()
        .find(|c| c.2 && c.1.get("dev.pipe.deploy.role").map(String::as_str) == Some("app"))
        .expect("the running app container")
        .0;
    let env = rt()
        .block_on(engine().inspect_container(&name, None))
        .expect("inspect")
        .config
        .and_then(|c| c.env)
        .unwrap_or_default();
    let tokens: Vec<&String> = env.iter().filter(|e| e.starts_with("API_TOKEN=")).collect();
    assert_eq!(tokens, ["API_TOKEN=prod-token-two"], "{env:?}");
    assert!(!r.all().contains("prod-token-two"), "{}", r.all());
    let body = body
        .recv_timeout(Duration::from_secs(30))
        .expect("the notification");
    assert!(
        body.contains(&format!("rolled back {id}-web in prod: 2 -> 1 in ")),
        "{body}"
    );
}

#[test]
fn sigkill_during_a_deploy_then_gc_and_resume_leave_one_consistent_version() {
    let p = Proj::new("kill");
    p.ship("blue-green");
    let r = p.deploy("1", "v1");
    assert_eq!(r.code, 0, "{}", r.all());
    let addr = p.url();
    // v3 takes 20 s to answer: kill pipe while it waits.
    p.write(
        "pipelines/ship.pipe",
        &std::fs::read_to_string(p.path("pipelines/ship.pipe"))
            .expect("read")
            .replace("ready_within      = 8s", "ready_within      = 60s"),
    );
    let mut child = p
        .cmd(&[
            "run",
            "ship",
            "-p",
            "version=3",
            "-p",
            "tag=slow",
            "-p",
            "migration=3",
            "--output",
            "plain",
        ])
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    while p.app_versions() != ["1", "3"] {
        assert!(
            t0.elapsed() < Duration::from_mins(1),
            "the new colour never started: {:?}",
            p.containers()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert_eq!(
        version_at(&addr),
        "version=1",
        "the old version must keep serving"
    );
    let r = p.run(&["gc"], Duration::from_mins(1));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("{}-web-green", p.id)),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("failed (interrupted before the switch)"),
        "{}",
        r.all()
    );
    assert_eq!(p.app_versions(), ["1"], "gc left the interrupted colour");
    assert_eq!(
        p.containers().len(),
        2,
        "proxy and v1: {:?}",
        p.containers()
    );
    assert_eq!(version_at(&addr), "version=1");
    let ledger = p.ledger();
    row(&ledger, "3", "failed");
    row(&ledger, "1", "active");
    // Resume deploys v3 again, to the end.
    let r = p.run(&["resume", "--output", "plain"], Duration::from_mins(3));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(version_at(&addr), "version=3");
    assert_eq!(p.app_versions(), ["3"]);
    let ledger = p.ledger();
    assert_eq!(
        ledger.iter().filter(|r| r["status"] == "active").count(),
        1,
        "{ledger:#?}"
    );
    row(&ledger, "3", "active");
    row(&ledger, "1", "superseded");
}

#[test]
fn a_failed_monitor_rolls_back_automatically_from_the_failure_handler() {
    let p = Proj::new("auto");
    let id = &p.id;
    // As in pipelines/release.pipe: the `on failure` handler rolls back when
    // the post-deploy monitor is what failed.
    p.write(
        "pipelines/release.pipe",
        &format!(
            r#"import "std/deploy"

pipeline release {{
  param version: string = "1"

  stage production {{
    gate approve = approval {{
      approvers = ["alice"]
    }}
    step web = deploy.container {{
      needs        = [approve]
      image        = "{id}-app:v${{version}}"
      service      = "{id}-web"
      version      = version
      strategy     = "blue-green"
      network      = "{id}-net"
      env_name     = "test"
      ready_within = 8s
      drain        = 1s
    }}
    # Another service, deployed by the first release only: the failed
    # second release did not change it, so its rollback leaves it alone.
    step other = deploy.container {{
      needs        = [approve]
      when         = version == "1"
      image        = "{id}-app:v1"
      service      = "{id}-other"
      version      = "1"
      network      = "{id}-net"
      env_name     = "test"
      ready_within = 8s
    }}
    step monitor {{
      needs = [web]
      run   = "if [ ${{version}} = 2 ]; then echo error rate 0.5 is above 0.05; exit 1; fi"
    }}
  }}

  on failure {{
    # No `service`: what this run changed in `test`.
    step rollback = deploy.rollback {{
      when     = run.failed_step == "production.monitor"
      env_name = "test"
    }}
  }}
}}
"#
        ),
    );
    let r = p.run(
        &[
            "run",
            "release",
            "--approve-as",
            "alice",
            "--output",
            "plain",
        ],
        Duration::from_mins(3),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let addr = p.url();
    let other = format!("{id}-other");
    let other_id = || -> (String, bool) {
        let c = rt()
            .block_on(engine().inspect_container(
                &other,
                None::<bollard::query_parameters::InspectContainerOptions>,
            ))
            .expect("the other service's container");
        let running = c.state.and_then(|s| s.running).unwrap_or(false);
        (c.id.expect("id"), running)
    };
    let (other_before, running) = other_id();
    assert!(running, "{other} runs after the first release");
    let r = p.run(
        &[
            "run",
            "release",
            "-p",
            "version=2",
            "--approve-as",
            "alice",
            "--output",
            "plain",
        ],
        Duration::from_mins(3),
    );
    assert_eq!(r.code, 1, "the run failed at the monitor: {}", r.all());
    assert!(r.all().contains("error rate 0.5"), "{}", r.all());
    let logs = p.run(&["logs", "3", "rollback"], Duration::from_secs(20));
    assert!(logs.stdout.contains("rolling back"), "{}", logs.stdout);
    assert!(!logs.stdout.contains(&other), "{}", logs.stdout);
    assert_eq!(version_at(&addr), "version=1");
    assert_eq!(p.app_versions(), ["1"]);
    // The service the failed release did not touch: the same container,
    // still running, and one ledger row, still active.
    assert_eq!(other_id(), (other_before, true), "{other} was left alone");
    let st = p.run(&["status", "--format", "json"], Duration::from_secs(20));
    let st: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
    let rb = st["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "on_failure.rollback")
        .unwrap_or_else(|| panic!("no rollback step in {st}"))
        .clone();
    assert_eq!(rb["outputs"]["services"], format!("{id}-web"), "{rb}");
    let others: Vec<_> = p
        .ledger()
        .into_iter()
        .filter(|r| r["service"] == other.as_str())
        .collect();
    assert_eq!(others.len(), 1, "{others:#?}");
    assert_eq!(others[0]["status"], "active");
    let ledger: Vec<_> = p
        .ledger()
        .into_iter()
        .filter(|r| r["service"] == format!("{id}-web").as_str())
        .collect();
    assert_eq!(ledger[0]["version"], "1");
    assert_eq!(ledger[0]["status"], "active");
    assert_eq!(
        ledger[0]["run_id"], 3,
        "recorded by the failed run's handler"
    );
    let v2 = row(&ledger, "2", "rolled_back");
    // Who approved comes from the run's gate.
    assert_eq!(v2["approved_by"], "alice", "{v2}");
    assert_eq!(row(&ledger, "1", "superseded")["approved_by"], "alice");
}
