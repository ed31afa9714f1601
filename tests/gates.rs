//! Approval and policy gates with the real binary: a run waits at a gate
//! while `pipe approve` / `pipe reject` run as separate processes (as other
//! users, through `PIPE_USER`) against the same SQLite store. Every wait is
//! bounded.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{finish, pipe_bin, Ran, Sandbox, Test};

/// A project with `pipelines/p.pipe`; `pipe` runs in it as a given user.
struct Proj(Sandbox);

impl std::ops::Deref for Proj {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.0
    }
}

impl Proj {
    fn new(pipeline: &str) -> Proj {
        Proj(Sandbox::with_pipeline(pipeline).kill_grace_ms(300))
    }

    /// `pipe ARGS` as `user`, stdin not a terminal.
    fn cmd(&self, user: &str, args: &[&str]) -> Command {
        let mut c = self.0.cmd(args);
        c.env("PIPE_USER", user)
            .env_remove("PIPE_GATE_POLL_MS")
            .env_remove("PIPE_LOGS_URL");
        c
    }

    fn spawn(&self, user: &str, args: &[&str]) -> Child {
        self.cmd(user, args).spawn().expect("spawn pipe")
    }

    fn run(&self, user: &str, args: &[&str]) -> Ran {
        finish(self.spawn(user, args), Duration::from_mins(1))
    }

    fn status(&self, run: &str) -> serde_json::Value {
        let r = self.run("nobody", &["status", run, "--format", "json"]);
        assert_eq!(r.code, 0, "{}", r.all());
        serde_json::from_str(&r.stdout).expect("status json")
    }

    fn gates(&self) -> Vec<serde_json::Value> {
        let r = self.run("nobody", &["gates", "--format", "json"]);
        assert_eq!(r.code, 0, "{}", r.all());
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .expect("gates json")
            .as_array()
            .expect("a list")
            .clone()
    }

    /// Waits until run `run` has gate `gate` open and pending.
    fn wait_for_gate(&self, run: i64, gate: &str) {
        let ok = wait_for(Duration::from_secs(30), || {
            self.gates()
                .iter()
                .any(|g| g["run"] == run && g["gate"] == gate && g["status"] == "pending")
        });
        assert!(ok, "gate {gate} of run {run} never opened");
    }
}

fn wait_for(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn step<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {status}"))
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// A build step, an approval gate behind it and a deploy behind the gate;
/// `GATE` is replaced by the gate's extra settings.
fn gated(extra: &str) -> String {
    format!(
        r#"pipeline p {{
  env prod {{
    approvers = ["alice", "bob", "carol"]
  }}
  stage build {{
    step smoke {{ run = "echo x >> built; echo 'table=3 passed, 0 failed' >> $PIPE_OUTPUT" }}
  }}
  stage production {{
    needs = [build]
    env   = prod
    gate approve = approval {{
      show    = [steps.smoke.outputs.table]
      message = "ship it?"
      {extra}
    }}
    step deploy {{ needs = [approve]  run = "echo deployed > deployed" }}
  }}
  on failure {{ step alert {{ run = "echo ${{run.status}} ${{run.failed_step}} ${{run.pipeline}} ${{run.id}} ${{run.env}} ${{run.started_by}} ${{run.logs}} ${{run.duration_ms}} > alert" }} }}
}}
"#
    )
}

#[test]
fn approval_from_a_second_process_while_other_branches_run() {
    // `slow` is independent of the gate: it holds the run open (no --wait
    // needed) until the test says so, after the deploy behind the gate ran.
    let p = Proj::new(
        r#"pipeline p {
  stage a {
    step slow { run = "for i in $(seq 600); do [ -f go ] && exit 0; sleep 0.05; done; exit 9" }
    gate approve = approval {
      approvers = ["alice"]
      show      = ["release 1.2"]
      timeout   = 5m
    }
    step deploy { needs = [approve]  run = "echo deployed > deployed" }
  }
}
"#,
    );
    let child = p.spawn("carol", &["run", "p", "--output", "json"]);
    p.wait_for_gate(1, "a.approve");
    assert!(!p.path("deployed").exists(), "deploy ran before approval");
    let gates = p.gates();
    assert_eq!(gates[0]["approvers"], serde_json::json!(["alice"]));
    assert_eq!(gates[0]["shown"][0]["value"], "release 1.2");
    assert_eq!(gates[0]["started_by"], "carol");
    let a = p.run("alice", &["approve", "1", "approve", "--comment", "lgtm"]);
    assert_eq!(a.code, 0, "{}", a.all());
    assert!(
        a.stdout
            .contains("approved gate a.approve of run 1 as alice"),
        "{}",
        a.all()
    );
    // The waiting run notices the decision by itself and deploys while
    // `slow` still runs.
    let deployed = wait_for(Duration::from_secs(20), || p.path("deployed").exists());
    std::fs::write(p.path("go"), "").expect("write go");
    let r = finish(child, Duration::from_mins(1));
    assert!(deployed, "the run did not continue after the approval");
    assert_eq!(r.code, 0, "{}", r.all());
    let ev = events(&r.stdout);
    let opened = ev
        .iter()
        .find(|e| e["event"] == "gate_opened")
        .expect("gate_opened");
    assert_eq!(opened["step"], "a.approve");
    assert_eq!(opened["how"], "new");
    assert_eq!(opened["min_approvals"], 1);
    let decided = ev
        .iter()
        .find(|e| e["event"] == "gate_decided")
        .expect("gate_decided");
    assert_eq!(decided["decision"], "approved");
    assert_eq!(decided["by"], serde_json::json!(["alice"]));
    assert_eq!(decided["comment"], "lgtm");
    let st = p.status("1");
    assert_eq!(st["status"], "succeeded");
    assert_eq!(step(&st, "a.approve")["outputs"]["approved_by"], "alice");
    assert_eq!(st["gates"][0]["status"], "approved");
    assert_eq!(st["gates"][0]["decisions"][0]["via"], "cli");
    assert!(p.gates().is_empty());
}

#[test]
fn rejection_fails_the_branch_and_handlers_get_the_run_context() {
    let p = Proj::new(&gated(""));
    let child = p.spawn("carol", &["run", "p", "--wait", "--output", "plain"]);
    p.wait_for_gate(1, "production.approve");
    let st = p.status("1");
    assert_eq!(
        st["status"], "waiting",
        "only the gate is left: the run waits"
    );
    let r = p.run(
        "bob",
        &["reject", "approve", "-m", "smoke table looks wrong"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = finish(child, Duration::from_mins(1));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("[production.approve] rejected by bob: smoke table looks wrong"),
        "{}",
        r.all()
    );
    assert!(!p.path("deployed").exists());
    let st = p.status("1");
    assert_eq!(st["status"], "failed");
    assert_eq!(st["failed_step"], "production.approve");
    assert_eq!(
        step(&st, "production.approve")["error"],
        "rejected by bob: smoke table looks wrong"
    );
    // The notification context: run.status, failed_step, pipeline, id, env
    // (none given), who started it, where the logs are, how long it took.
    let alert = p.read("alert");
    let f: Vec<&str> = alert.split_whitespace().collect();
    assert_eq!(
        f[..5],
        ["failed", "production.approve", "p", "1", "carol"],
        "{alert}"
    );
    assert!(
        f[5].ends_with(".pipe/logs/1") && std::path::Path::new(f[5]).is_dir(),
        "{alert}"
    );
    assert!(f[6].parse::<u64>().is_ok(), "{alert}");
    // A decided gate takes no further decisions.
    let again = p.run("alice", &["approve", "1", "approve"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already rejected"), "{}", again.all());
}

#[test]
fn timeout_fails_closed_and_the_deadline_is_kept() {
    let p = Proj::new(&gated("timeout = 2s"));
    let t0 = Instant::now();
    let r = p.run("carol", &["run", "p", "--wait", "--output", "plain"]);
    let took = t0.elapsed();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(took >= Duration::from_secs(2), "expired early: {took:?}");
    assert!(
        r.stdout
            .contains("[production.approve] expired: no decision by"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("the gate failed closed"), "{}", r.all());
    assert!(!p.path("deployed").exists());
    let st = p.status("1");
    assert_eq!(st["gates"][0]["status"], "expired");
    let late = p.run("alice", &["approve", "1", "approve"]);
    assert_eq!(late.code, 2, "{}", late.all());
    assert!(late.stderr.contains("already expired"), "{}", late.all());
    // Resuming does not get a fresh timer: still expired, still failing.
    let r = p.run("carol", &["resume", "1", "--output", "plain"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!p.path("deployed").exists());
}

#[test]
fn a_stopped_run_exits_3_and_resume_continues_after_approval() {
    let p = Proj::new(&gated(""));
    let r = p.run("carol", &["run", "p", "--output", "plain"]);
    assert_eq!(
        r.code,
        3,
        "not a terminal: the run stops at the gate\n{}",
        r.all()
    );
    assert!(
        r.stdout.contains("[run 1] waiting at production.approve"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("3 passed, 0 failed"),
        "the gate shows the table: {}",
        r.all()
    );
    let st = p.status("1");
    assert_eq!(st["status"], "waiting");
    assert_eq!(step(&st, "production.approve")["status"], "waiting");
    let table = p.run("nobody", &["status", "1"]);
    assert!(
        table.stdout.contains("gate production.approve: pending"),
        "{}",
        table.all()
    );
    // Still undecided: resume stops again with 3.
    let r = p.run("carol", &["resume", "1", "--output", "plain"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let a = p.run("alice", &["approve", "approve"]);
    assert_eq!(a.code, 0, "{}", a.all());
    let r = p.run("dave", &["resume", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(p.read("deployed"), "deployed\n");
    assert_eq!(p.read("built"), "x\n", "the build ran once");
    assert_eq!(p.status("1")["status"], "succeeded");
}

#[test]
fn approvers_off_the_list_and_self_approval_are_refused() {
    let p = Proj::new(&gated(""));
    assert_eq!(p.run("alice", &["run", "p", "--output", "plain"]).code, 3);
    let r = p.run("mallory", &["approve", "1", "approve"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("mallory may not decide gate production.approve"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("alice, bob, carol"), "{}", r.all());
    let r = p.run("mallory", &["reject", "1", "approve"]);
    assert_eq!(r.code, 2, "nor reject: {}", r.all());
    let r = p.run("alice", &["approve", "1", "approve"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("alice started run 1 and cannot approve it"),
        "{}",
        r.all()
    );
    // `--approve-as` obeys the same rules, and says so.
    let r = p.run(
        "alice",
        &["resume", "1", "--approve-as", "alice", "--output", "json"],
    );
    assert_eq!(r.code, 3, "{}", r.all());
    let refused = events(&r.stdout)
        .into_iter()
        .find(|e| e["event"] == "gate_refused")
        .expect("gate_refused");
    assert!(refused["reason"]
        .as_str()
        .expect("reason")
        .contains("started run 1"));
    assert!(!p.path("deployed").exists());
    let r = p.run(
        "alice",
        &["resume", "1", "--approve-as", "bob", "--output", "plain"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let st = p.status("1");
    assert_eq!(st["gates"][0]["decisions"][0]["user"], "bob");
    assert_eq!(st["gates"][0]["decisions"][0]["via"], "approve-as");

    // With `allow_self_approval = true` the starter may approve.
    let q = Proj::new(&gated("allow_self_approval = true"));
    assert_eq!(q.run("alice", &["run", "p"]).code, 3);
    assert_eq!(q.run("alice", &["approve", "1", "approve"]).code, 0);
}

#[test]
fn min_approvals_2_needs_two_different_people() {
    let p = Proj::new(&gated("min_approvals = 2"));
    assert_eq!(p.run("carol", &["run", "p"]).code, 3);
    let r = p.run("bob", &["approve", "1", "approve"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("1 of 2 approvals, it needs another person"),
        "{}",
        r.all()
    );
    let r = p.run("bob", &["approve", "1", "approve"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("bob already approved"), "{}", r.all());
    assert_eq!(
        p.run("carol", &["resume", "1"]).code,
        3,
        "one approval is not enough"
    );
    let r = p.run("alice", &["approve", "1", "approve"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("approved by bob, alice"), "{}", r.all());
    assert_eq!(p.run("carol", &["resume", "1"]).code, 0);
    assert_eq!(p.read("deployed"), "deployed\n");
}

#[test]
fn an_approval_cannot_be_replayed_onto_another_run() {
    let p = Proj::new(&gated(""));
    assert_eq!(p.run("carol", &["run", "p"]).code, 3);
    assert_eq!(p.run("carol", &["run", "p"]).code, 3);
    let r = p.run("alice", &["approve", "approve"]);
    assert_eq!(r.code, 2, "ambiguous without a run: {}", r.all());
    assert!(r.stderr.contains("is open in runs 1, 2"), "{}", r.all());
    let r = p.run("alice", &["approve", "1", "approve"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Run 2 has the same plan, but the approval was for run 1.
    assert_eq!(p.run("carol", &["resume", "2"]).code, 3);
    assert_eq!(p.status("2")["gates"][0]["status"], "pending");
    assert_eq!(p.run("carol", &["resume", "1"]).code, 0);
    // A run that has not reached a gate cannot be approved in advance.
    let q = Proj::new(&gated(""));
    let r = q.run("alice", &["approve", "approve"]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[test]
fn a_changed_plan_invalidates_approvals() {
    let p = Proj::new(&gated(""));
    assert_eq!(p.run("carol", &["run", "p"]).code, 3);
    let old_hash = p.gates()[0]["plan_hash"]
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(p.run("bob", &["approve", "1", "approve"]).code, 0);
    // The deploy command changes after bob approved the old plan.
    let src = p
        .read("pipelines/p.pipe")
        .replace("echo deployed", "echo changed");
    std::fs::write(p.path("pipelines/p.pipe"), src).expect("write");
    let r = p.run("carol", &["resume", "1", "--replan", "--output", "json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let opened = events(&r.stdout)
        .into_iter()
        .find(|e| e["event"] == "gate_opened")
        .expect("gate_opened");
    assert_eq!(opened["how"], "replanned");
    assert_eq!(opened["approved_by"], serde_json::json!([]));
    assert_ne!(opened["plan_hash"], old_hash.as_str());
    let r = p.run("bob", &["approve", "1", "approve", "--plan", &old_hash]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("not the plan {old_hash} you reviewed")),
        "{}",
        r.all()
    );
    assert!(!p.path("deployed").exists());
    let new_hash = opened["plan_hash"].as_str().expect("hash");
    assert_eq!(
        p.run("bob", &["approve", "1", "approve", "--plan", new_hash])
            .code,
        0
    );
    assert_eq!(p.run("carol", &["resume", "1"]).code, 0);
    assert_eq!(p.read("deployed"), "changed\n");
}

#[test]
fn sigkill_while_waiting_then_resume() {
    let p = Proj::new(&gated("timeout = 10m"));
    let mut child = p.spawn("carol", &["run", "p", "--wait", "--output", "plain"]);
    p.wait_for_gate(1, "production.approve");
    let waiting = wait_for(Duration::from_secs(20), || {
        p.status("1")["status"] == "waiting"
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(waiting, "the run never showed `waiting`");
    let deadline = p.gates()[0]["deadline_ms"].clone();
    let st = p.status("1");
    assert_eq!(
        st["status"], "waiting",
        "a crash while waiting leaves it waiting"
    );
    assert_eq!(step(&st, "production.approve")["status"], "waiting");
    assert_eq!(p.run("alice", &["approve", "1", "approve"]).code, 0);
    let r = p.run("carol", &["resume", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(p.read("built"), "x\n", "the build did not run again");
    assert_eq!(p.read("deployed"), "deployed\n");
    assert_eq!(p.status("1")["gates"][0]["deadline_ms"], deadline);
}

fn policy(body: &str) -> String {
    format!(
        r#"pipeline p {{
  stage scan {{
    step findings {{ run = "echo critical=2 >> $PIPE_OUTPUT; echo high=1 >> $PIPE_OUTPUT" }}
    gate clean = policy {{
      needs = [findings]
      {body}
    }}
    step ship {{ needs = [clean]  run = "echo shipped" }}
  }}
}}
"#
    )
}

#[test]
fn policy_gate_require_false_fails_with_its_message() {
    Test::new()
        .pipeline(
            "p",
            &policy(
                r#"require = steps.findings.outputs.critical == "0"
      message = "no critical findings may ship""#,
            ),
        )
        .args(&["run", "p", "--output", "plain"])
        .status(1)
        .stdout_contains("[scan.clean] failed in ")
        .stdout_contains(": policy not met (`require` is false): no critical findings may ship")
        .run();
}

#[test]
fn policy_gate_that_cannot_be_evaluated_fails_closed() {
    Test::new()
        .pipeline(
            "p",
            &policy("require = steps.findings.outputs.medium == \"0\""),
        )
        .args(&["run", "p", "--output", "plain"])
        .status(1)
        .stdout_contains(
            "policy gate `clean`: `require` cannot be evaluated, so the gate fails closed",
        )
        .stdout_contains("medium")
        .run();
    // Not a boolean: not taken as true.
    Test::new()
        .pipeline("p", &policy("require = steps.findings.outputs.critical"))
        .args(&["run", "p", "--output", "plain"])
        .status(1)
        .stdout_contains(
            "`require` must be true or false, but it is a string (`2`), so the gate fails closed",
        )
        .run();
}

#[test]
fn policy_gate_warn_only_warns() {
    Test::new()
        .pipeline(
            "p",
            &policy(
                r#"require = steps.findings.outputs.critical != "9"
      warn    = steps.findings.outputs.high == "0"
      message = "high findings need a ticket""#,
            ),
        )
        .args(&["run", "p", "--output", "plain"])
        .status(0)
        .stdout_contains("[scan.clean] | warning: `warn` is false: high findings need a ticket")
        .stdout_contains("[scan.ship] | shipped")
        .run();
}

#[test]
fn the_shipped_example_runs_as_its_comment_says() {
    let p = Proj::new("");
    std::fs::remove_file(p.path("pipelines/p.pipe")).expect("rm");
    std::fs::copy(
        crate::common::repo_root().join("examples/gates.pipe"),
        p.path("pipelines/gates.pipe"),
    )
    .expect("copy the example");
    let r = p.run("carol", &["run", "gates", "--output", "plain"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout
            .contains("[verify.clean] | warning: `warn` is false: critical findings block"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout
            .contains("[production.promote]     login   200  ok"),
        "{}",
        r.all()
    );
    let gates = p.run("carol", &["gates"]);
    assert!(
        gates.stdout.contains("Promote 1.4.0 to production?"),
        "{}",
        gates.all()
    );
    let a = p.run(
        "alice",
        &["approve", "promote", "--comment", "smoke is green"],
    );
    assert_eq!(a.code, 0, "{}", a.all());
    let r = p.run("carol", &["resume", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("deploying 1.4.0, approved by alice"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("run 1 of gates succeeded after"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("started by carol, logs in /"),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("failed"), "{}", r.all());
}

#[test]
fn an_approver_on_a_terminal_decides_inline() {
    let p = Proj::new(&gated(""));
    assert_eq!(p.run("carol", &["run", "p"]).code, 3);
    // `script` gives `pipe resume` a real terminal (stdin and stdout a pty);
    // the answer typed waits in the terminal until the prompt reads it.
    let mut c = Command::new("script");
    c.args([
        "-qfec",
        &format!("{} resume --output plain", pipe_bin().display()),
        "/dev/null",
    ])
    .current_dir(p.path(""))
    .env("PIPE_USER", "alice")
    .env("NO_COLOR", "1")
    .env_remove("PIPE_STATE_DIR")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn script (util-linux)");
    let mut typed = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut typed, b"y\n").expect("type y");
    let r = finish(child, Duration::from_mins(1));
    drop(typed);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(
            "[production.approve] decide as alice? y = approve, n = reject, Enter = leave it to others"
        ),
        "{}",
        r.all()
    );
    assert_eq!(p.read("deployed"), "deployed\n");
    let st = p.status("1");
    assert_eq!(st["gates"][0]["decisions"][0]["user"], "alice");
    assert_eq!(st["gates"][0]["decisions"][0]["via"], "inline");
}

#[test]
fn concurrent_decisions_are_ordered_by_the_store() {
    let p = Proj::new(&gated("min_approvals = 2"));
    assert_eq!(p.run("carol", &["run", "p"]).code, 3);
    // Four approvals at once, two by each of two people: SQLite orders
    // them, and each is checked against the ones committed before it.
    let children: Vec<Child> = ["alice", "bob", "alice", "bob"]
        .iter()
        .map(|u| p.spawn(u, &["approve", "1", "approve"]))
        .collect();
    let results: Vec<Ran> = children
        .into_iter()
        .map(|c| finish(c, Duration::from_mins(1)))
        .collect();
    let ok = results.iter().filter(|r| r.code == 0).count();
    let all: String = results.iter().map(Ran::all).collect();
    assert_eq!(ok, 2, "exactly one approval per person counts:\n{all}");
    for r in results.iter().filter(|r| r.code != 0) {
        assert_eq!(r.code, 2, "{all}");
        assert!(r.stderr.contains("already approved"), "{all}");
    }
    let st = p.status("1");
    assert_eq!(st["gates"][0]["status"], "approved");
    let mut by: Vec<String> = st["gates"][0]["approved_by"]
        .as_array()
        .expect("approved_by")
        .iter()
        .map(|v| v.as_str().expect("user").to_string())
        .collect();
    by.sort();
    assert_eq!(by, ["alice", "bob"]);
    assert_eq!(p.run("carol", &["resume", "1"]).code, 0);
}

#[test]
fn the_deadline_survives_a_crash() {
    let p = Proj::new(&gated("timeout = 3s"));
    let mut child = p.spawn("carol", &["run", "p", "--wait", "--output", "plain"]);
    p.wait_for_gate(1, "production.approve");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let g = &p.gates()[0];
    assert_eq!(g["status"], "pending");
    let overdue = wait_for(Duration::from_secs(20), || {
        p.gates().first().is_some_and(|g| g["overdue"] == true)
    });
    assert!(overdue, "the stored deadline never passed");
    let shown = p.run("nobody", &["gates"]);
    assert!(
        shown.stdout.contains("(passed: it fails closed)"),
        "{}",
        shown.all()
    );
    // The resumed run does not start a new timer: the gate fails at once.
    let t0 = Instant::now();
    let r = p.run("carol", &["resume", "--wait", "--output", "plain"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(t0.elapsed() < Duration::from_secs(3), "it waited again");
    assert!(r.stdout.contains("the gate failed closed"), "{}", r.all());
    assert!(!p.path("deployed").exists());
}
