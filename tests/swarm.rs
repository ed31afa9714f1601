//! The swarm executor on a one-node Docker Swarm (`.ci/run` initialises it;
//! a test that finds the engine outside a swarm initialises one and leaves
//! it again when the last swarm test ends). Nothing is pulled: each test
//! imports a busybox-static root filesystem as its base image. Every wait is
//! bounded; every image, service, secret and volume carries the test's
//! unique id and is gone at its end.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::models::{LocalNodeState, SwarmInitRequest};
use bollard::query_parameters::{
    ListSecretsOptions, ListServicesOptions, ListVolumesOptions, RemoveImageOptions,
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

/// How many swarm tests run now, and whether one of them initialised the swarm.
static SWARM: Mutex<(usize, bool)> = Mutex::new((0, false));

/// Holds the engine in a swarm while a test runs: initialises a one-node
/// swarm if there is none, and leaves it when the last holder is dropped —
/// only if a test initialised it.
struct SwarmHold;

impl SwarmHold {
    fn take() -> SwarmHold {
        let mut g = SWARM
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0 == 0 {
            let d = engine();
            let info = rt().block_on(d.info()).expect("docker info");
            let state = info.swarm.and_then(|s| s.local_node_state);
            if state != Some(LocalNodeState::ACTIVE) {
                rt().block_on(d.init_swarm(SwarmInitRequest {
                    listen_addr: Some("127.0.0.1:2377".into()),
                    advertise_addr: Some("127.0.0.1".into()),
                    ..Default::default()
                }))
                .expect("docker swarm init");
                g.1 = true;
            }
        }
        g.0 += 1;
        SwarmHold
    }
}

impl Drop for SwarmHold {
    fn drop(&mut self) {
        let mut g = SWARM
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0 -= 1;
        if g.0 == 0 && g.1 {
            let d = engine();
            let _ = rt().block_on(d.leave_swarm(Some(
                bollard::query_parameters::LeaveSwarmOptions { force: true },
            )));
            g.1 = false;
        }
    }
}

/// A project in a temp dir with a busybox rootfs, on a held swarm.
struct Proj {
    sb: Sandbox,
    id: String,
    image: String,
    _swarm: SwarmHold,
}

impl std::ops::Deref for Proj {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

impl Proj {
    fn new(tag: &str) -> Proj {
        let swarm = SwarmHold::take();
        let sb = Sandbox::new();
        let id = unique_id(&format!("swarmtest-{tag}"));
        busybox_rootfs(sb.dir.path(), Some("root:x:0:0:root:/root:/bin/sh\n"));
        // The base image is imported by the pipeline's first stage; the
        // rootfs need not travel into each job's workspace.
        sb.write(".dockerignore", "rootfs\n");
        let image = format!("{id}:1");
        Proj {
            sb,
            id,
            image,
            _swarm: swarm,
        }
    }

    /// Writes `pipelines/p.pipe`: a stage importing the base image, then `body`.
    fn pipeline(&self, body: &str) {
        let text = format!(
            "import \"std/docker\"\n\npipeline p {{\n  stage base {{\n    step import = docker.import {{ rootfs = \"rootfs\"  image = \"{}\" }}\n  }}\n{body}}}\n",
            self.image
        );
        self.write("pipelines/p.pipe", &text);
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.sb.cmd(args);
        c.env_remove("PIPE_SWARM_VOLUME_DRIVER")
            .env_remove("PIPE_SWARM_VOLUME_OPTS");
        c
    }

    fn run(&self, args: &[&str]) -> Ran {
        finish(
            self.cmd(args).spawn().expect("spawn pipe"),
            Duration::from_mins(3),
        )
    }

    fn status_json(&self) -> serde_json::Value {
        let r = self.run(&["status", "--format", "json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).expect("status json")
    }

    fn logs(&self, step: &str) -> String {
        self.run(&["logs", "1", step]).stdout
    }

    /// Names of this test's services, secrets and volumes still in the engine.
    fn left(&self) -> Vec<String> {
        let d = engine();
        let rt = rt();
        let step = |labels: Option<&HashMap<String, String>>| {
            labels
                .and_then(|l| l.get("dev.pipe.step"))
                .is_some_and(|s| s.contains(&self.id))
        };
        let mut out = Vec::new();
        for s in rt
            .block_on(d.list_services(None::<ListServicesOptions>))
            .expect("list services")
        {
            let spec = s.spec.unwrap_or_default();
            if step(spec.labels.as_ref()) {
                out.push(format!("service {}", spec.name.unwrap_or_default()));
            }
        }
        for s in rt
            .block_on(d.list_secrets(None::<ListSecretsOptions>))
            .expect("list secrets")
        {
            let spec = s.spec.unwrap_or_default();
            if step(spec.labels.as_ref()) {
                out.push(format!("secret {}", spec.name.unwrap_or_default()));
            }
        }
        for v in rt
            .block_on(d.list_volumes(None::<ListVolumesOptions>))
            .expect("list volumes")
            .volumes
            .unwrap_or_default()
        {
            if step(Some(&v.labels)) {
                out.push(format!("volume {}", v.name));
            }
        }
        out
    }

    /// Waits (bounded) until nothing of this test is left.
    fn assert_clean(&self) {
        let clean = wait_for(Duration::from_secs(30), || self.left().is_empty());
        assert!(clean, "left behind: {:?}", self.left());
    }

    /// The specs (as JSON) of this test's live services.
    fn service_specs(&self) -> Vec<String> {
        let d = engine();
        rt().block_on(d.list_services(None::<ListServicesOptions>))
            .expect("list services")
            .into_iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|sp| sp.labels.as_ref())
                    .and_then(|l| l.get("dev.pipe.step"))
                    .is_some_and(|st| st.contains(&self.id))
            })
            .map(|s| serde_json::to_string(&s).expect("json"))
            .collect()
    }
}

impl Drop for Proj {
    fn drop(&mut self) {
        let d = engine();
        let _ = rt().block_on(d.remove_image(
            &self.image,
            Some(RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        ));
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

fn wait_for(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

#[test]
fn a_swarm_job_streams_logs_sets_outputs_and_copies_artifacts_back() {
    let p = Proj::new("job");
    let id = p.id.clone();
    let image = p.image.clone();
    p.write("input.txt", "from-the-project\n");
    p.pipeline(&format!(
        r#"  stage s {{
    needs = [base]
    step "{id}" {{
      image     = "{image}"
      executor  = "swarm"
      placement = ["node.role==manager"]
      cpus      = 0.5
      memory    = "64m"
      artifacts = ["dist"]
      env       = {{ GREETING = "hello" }}
      run       = "echo $GREETING from $(pwd); cat input.txt; echo to-stderr >&2; echo answer=42 >> $PIPE_OUTPUT; mkdir -p dist; echo built > dist/out.txt"
    }}
  }}
"#
    ));
    let r = p.run(&["run", "p", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let sid = format!("s.{id}");
    let log = p.logs(&sid);
    assert!(log.contains("hello from /workspace"), "{log}");
    assert!(
        log.contains("from-the-project"),
        "the workspace travels: {log}"
    );
    assert!(log.contains("to-stderr"), "{log}");
    assert!(log.contains("swarm: job service pipe-"), "{log}");
    let st = p.status_json();
    assert_eq!(step(&st, &sid)["outputs"]["answer"], "42", "{st}");
    assert_eq!(step(&st, &sid)["exit_code"], 0, "{st}");
    assert_eq!(
        std::fs::read_to_string(p.path("dist/out.txt")).expect("artifact copied back"),
        "built\n"
    );
    p.assert_clean();
}

#[test]
fn the_task_exit_code_is_the_step_result_with_executor_flag() {
    let p = Proj::new("exit");
    let id = p.id.clone();
    let image = p.image.clone();
    // No `executor` on the step: `--executor swarm` puts it on the swarm.
    p.pipeline(&format!(
        "  stage s {{\n    needs = [base]\n    step \"{id}\" {{ image = \"{image}\"  run = \"echo before; exit 3\" }}\n  }}\n"
    ));
    let r = p.run(&["run", "p", "--output", "plain", "--executor", "swarm"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let sid = format!("s.{id}");
    let st = p.status_json();
    let s = step(&st, &sid);
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["exit_code"], 3, "{s}");
    assert_eq!(s["error"], "exit code 3 (swarm task)", "{s}");
    let log = p.logs(&sid);
    assert!(log.contains("before"), "{log}");
    assert!(
        log.contains("swarm: job service"),
        "ran on the swarm: {log}"
    );
    p.assert_clean();
}

#[test]
fn a_stage_executor_applies_to_its_container_steps() {
    let p = Proj::new("stage");
    let image = p.image.clone();
    p.pipeline(&format!(
        "  stage s {{\n    needs = [base]\n    executor = \"swarm\"\n    step job {{ image = \"{image}\"  run = \"true\" }}\n    step local {{ image = \"{image}\"  executor = \"container\"  run = \"true\" }}\n  }}\n"
    ));
    let r = p.run(&["run", "p", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("  s.job [swarm] after base.import\n"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout
            .contains("  s.local [container] after base.import\n"),
        "{}",
        r.all()
    );
}

#[test]
fn secrets_reach_the_job_as_docker_secrets_and_never_the_spec() {
    let p = Proj::new("secret");
    let id = p.id.clone();
    let image = p.image.clone();
    let value = format!("tok-{}-zz", p.id);
    p.pipeline(&format!(
        r#"  stage s {{
    needs = [base]
    step "{id}" {{
      image    = "{image}"
      executor = "swarm"
      env      = {{ TOKEN = secrets.PIPE_SWARM_TEST_TOKEN, AUTH = "Bearer ${{secrets.PIPE_SWARM_TEST_TOKEN}}" }}
      run      = "sleep 3; [ \"$TOKEN\" = \"tok-$(echo {id})-zz\" ] && [ \"$AUTH\" = \"Bearer $TOKEN\" ] && echo secret-arrived; echo $TOKEN"
    }}
  }}
"#
    ));
    // The job rebuilds the expected value, so that the run command (which is
    // in the spec) does not hold the secret itself.
    let mut child = p
        .cmd(&["run", "p", "--output", "plain"])
        .env("PIPE_SWARM_TEST_TOKEN", &value)
        .spawn()
        .expect("spawn");
    let mut specs = Vec::new();
    let seen = wait_for(Duration::from_mins(1), || {
        specs = p.service_specs();
        !specs.is_empty()
    });
    let r = finish(child_take(&mut child), Duration::from_mins(2));
    assert!(seen, "the service never appeared: {}", r.all());
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
    for s in &specs {
        assert!(
            !s.contains(&value),
            "the secret is in the service spec: {s}"
        );
        assert!(!s.contains(&b64), "the secret (base64) is in the spec: {s}");
        assert!(s.contains("\"Secrets\""), "no Docker secret attached: {s}");
    }
    assert_eq!(r.code, 0, "{}", r.all());
    let log = p.logs(&format!("s.{id}"));
    assert!(log.contains("secret-arrived"), "{log}");
    assert!(!log.contains(&value), "unmasked in the log: {log}");
    assert!(log.contains("***"), "{log}");
    p.assert_clean();
}

fn child_take(c: &mut Child) -> Child {
    std::mem::replace(
        c,
        Command::new("true").spawn().expect("spawn a placeholder"),
    )
}

#[test]
fn a_timeout_removes_the_service() {
    let p = Proj::new("tmo");
    let id = p.id.clone();
    let image = p.image.clone();
    p.pipeline(&format!(
        "  stage s {{\n    needs = [base]\n    step \"{id}\" {{ image = \"{image}\"  executor = \"swarm\"  timeout = 3s  run = \"echo started; sleep 300\" }}\n  }}\n"
    ));
    let r = p.run(&["run", "p", "--output", "plain"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let st = p.status_json();
    let s = step(&st, &format!("s.{id}"));
    assert_eq!(s["status"], "timed_out", "{st}");
    assert_eq!(
        s["error"], "timed out after 3s; the swarm service was removed",
        "{st}"
    );
    p.assert_clean();
}

#[test]
fn an_unsatisfiable_placement_is_reported_and_times_out() {
    let p = Proj::new("place");
    let id = p.id.clone();
    let image = p.image.clone();
    p.pipeline(&format!(
        "  stage s {{\n    needs = [base]\n    step \"{id}\" {{ image = \"{image}\"  executor = \"swarm\"  placement = [\"node.labels.pipe-test-pool==nowhere\"]  timeout = 4s  run = \"true\" }}\n  }}\n"
    ));
    let r = p.run(&["run", "p", "--output", "plain"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let log = p.logs(&format!("s.{id}"));
    assert!(log.contains("no suitable node"), "{log}");
    p.assert_clean();
}

#[test]
fn sigkill_of_pipe_leaves_a_service_that_gc_removes() {
    let p = Proj::new("gc");
    let id = p.id.clone();
    let image = p.image.clone();
    p.pipeline(&format!(
        "  stage s {{\n    needs = [base]\n    step \"{id}\" {{ image = \"{image}\"  executor = \"swarm\"  env = {{ T = secrets.PIPE_SWARM_GC_TOKEN }}  run = \"sleep 300\" }}\n  }}\n"
    ));
    let mut child = p
        .cmd(&["run", "p", "--output", "plain"])
        .env("PIPE_SWARM_GC_TOKEN", "gc-test-token")
        .spawn()
        .expect("spawn");
    let started = wait_for(Duration::from_mins(1), || !p.service_specs().is_empty());
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(started, "the swarm step never started");
    std::thread::sleep(Duration::from_millis(500));
    let left = p.left();
    assert!(
        left.iter().any(|l| l.starts_with("service ")),
        "SIGKILL cannot clean up: {left:?}"
    );
    assert!(left.iter().any(|l| l.starts_with("secret ")), "{left:?}");
    let r = p.run(&["gc"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("removed swarm service pipe-"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains(&format!("s.{id}")), "{}", r.all());
    p.assert_clean();
}

#[test]
fn ctrl_c_removes_the_service() {
    let p = Proj::new("int");
    let id = p.id.clone();
    let image = p.image.clone();
    p.pipeline(&format!(
        "  stage s {{\n    needs = [base]\n    step \"{id}\" {{ image = \"{image}\"  executor = \"swarm\"  run = \"sleep 300\" }}\n  }}\n"
    ));
    let child = p
        .cmd(&["run", "p", "--output", "plain"])
        .spawn()
        .expect("spawn");
    let started = wait_for(Duration::from_mins(1), || !p.service_specs().is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let r = finish(child, Duration::from_mins(1));
    assert!(started, "the swarm step never started: {}", r.all());
    assert_eq!(r.code, 130, "{}", r.all());
    p.assert_clean();
}

#[test]
fn an_unknown_executor_or_one_without_image_points_at_the_source() {
    crate::common::Test::new()
        .pipeline(
            "p",
            "pipeline p {\n  stage s {\n    step a { image = \"x:1\"  executor = \"nomad\"  run = \"true\" }\n    step b { executor = \"swarm\"  run = \"true\" }\n  }\n}\n",
        )
        .args(&["check", "pipelines/p.pipe"])
        .status(2)
        .stderr_contains("`executor` of a container step is \"container\" or \"swarm\"")
        .stderr_contains("p.pipe:3:40")
        .stderr_contains("`executor` needs a container step")
        .stderr_contains("p.pipe:4:25")
        .run();
}
