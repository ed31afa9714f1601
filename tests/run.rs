//! `pipe run`, `resume`, `status` and `logs` against real processes and a real
//! SQLite store. Every wait is bounded; timings come from real timestamps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{finish, Sandbox};

/// A project with `pipelines/p.pipe`, and `pipe` run in it.
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

    fn status_json(&self, run: Option<&str>) -> serde_json::Value {
        let mut args = vec!["status", "--format", "json"];
        args.extend(run);
        let r = self.run(&args, Duration::from_secs(20));
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).expect("status json")
    }
}

/// Polls `cond` every 20 ms for at most `bound`.
fn wait_for(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only its parent has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

fn pids_in(p: &Path) -> Vec<i32> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn step<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {status}"))
}

/// Nanosecond timestamps a step wrote to `t/<name>.start` and `.end`.
fn stamp(p: &Proj, name: &str, which: &str) -> u128 {
    p.read(&format!("t/{name}.{which}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no {which} stamp for {name}"))
}

const STAMPED: &str =
    "mkdir -p t; date +%s%N > t/$PIPE_STEP.start; sleep 0.4; date +%s%N > t/$PIPE_STEP.end";

#[test]
fn dag_order_and_parallelism_from_timestamps() {
    let p = Proj::new(&format!(
        r#"pipeline p {{
  stage s {{
    step a {{ run = "{STAMPED}" }}
    step b {{ needs = [a]  run = "{STAMPED}" }}
    step c {{ needs = [a]  run = "{STAMPED}" }}
    step d {{ needs = [b, c]  run = "{STAMPED}" }}
  }}
}}
"#
    ));
    let r = p.run(
        &["run", "p", "--jobs", "2", "--output", "plain"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (a_end, b_start, c_start) = (
        stamp(&p, "s.a", "end"),
        stamp(&p, "s.b", "start"),
        stamp(&p, "s.c", "start"),
    );
    let (b_end, c_end, d_start) = (
        stamp(&p, "s.b", "end"),
        stamp(&p, "s.c", "end"),
        stamp(&p, "s.d", "start"),
    );
    assert!(
        b_start >= a_end && c_start >= a_end,
        "b and c must wait for a"
    );
    assert!(d_start >= b_end.max(c_end), "d must wait for b and c");
    assert!(
        b_start < c_end && c_start < b_end,
        "b and c must overlap at --jobs 2"
    );
    assert!(r.stdout.contains("[run 1] succeeded"), "{}", r.stdout);
}

#[test]
fn jobs_limit_is_never_exceeded() {
    // Each step bumps a counter under flock, records the maximum, sleeps, then decrements.
    let body = r"flock c.lock sh -c 'n=$(( $(cat c 2>/dev/null || echo 0) + 1 )); echo $n > c; m=$(cat max 2>/dev/null || echo 0); [ $n -gt $m ] && echo $n > max; true'; sleep 0.2; flock c.lock sh -c 'echo $(( $(cat c) - 1 )) > c'";
    let steps = (0..8)
        .map(|i| {
            format!(
                "    step s{i} {{ run = \"{}\" }}\n",
                body.replace('"', "\\\"")
            )
        })
        .collect::<Vec<_>>()
        .concat();
    let p = Proj::new(&format!("pipeline p {{\n  stage s {{\n{steps}  }}\n}}\n"));
    let r = p.run(
        &["run", "p", "--jobs", "3", "--output", "plain"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let max: u32 = p.read("max").trim().parse().expect("max");
    assert!(max <= 3, "{max} steps ran at once with --jobs 3");
    assert!(max >= 2, "steps never overlapped (max {max})");
    assert_eq!(p.read("c").trim(), "0");
}

const FAILING: &str = r#"pipeline p {
  stage s {
    step bad { run = "sleep 0.2; exit 4" }
    step slow { run = "sleep 1.5; touch slow.done" }
    step after { needs = [bad]  run = "touch after.done" }
  }
}
"#;

#[test]
fn fail_fast_cancels_running_steps() {
    let p = Proj::new(FAILING);
    let r = p.run(
        &["run", "p", "--jobs", "2", "--output", "plain"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("[s.bad] failed"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("exit code 4 (step at pipelines/p.pipe:3:5)"),
        "{}",
        r.stdout
    );
    assert!(
        !p.path("slow.done").exists(),
        "fail-fast must cancel `slow`"
    );
    assert!(!p.path("after.done").exists());
    let st = p.status_json(None);
    assert_eq!(st["status"], "failed");
    assert_eq!(st["failed_step"], "s.bad");
    assert_eq!(step(&st, "s.slow")["status"], "cancelled");
}

#[test]
fn keep_going_runs_independent_branches() {
    let p = Proj::new(FAILING);
    let r = p.run(
        &[
            "run",
            "p",
            "--jobs",
            "2",
            "--keep-going",
            "--output",
            "plain",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        p.path("slow.done").exists(),
        "keep-going must finish `slow`"
    );
    assert!(
        !p.path("after.done").exists(),
        "a step after a failure never runs"
    );
    let st = p.status_json(None);
    assert_eq!(step(&st, "s.slow")["status"], "succeeded");
}

#[test]
fn timeout_kills_grandchildren_including_setsid() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step t {
      timeout = 1s
      run = "sleep 3001 & echo $! >> pids; setsid sleep 3002 & echo $! >> pids; sh -c 'sleep 3003 & echo $! >> pids; wait' & sleep 3004"
    }
  }
}
"#,
    );
    let t0 = Instant::now();
    let r = p.run(&["run", "p", "--output", "plain"], Duration::from_secs(30));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(r.stdout.contains("timed out after 1s"), "{}", r.stdout);
    let pids = pids_in(&p.path("pids"));
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p))),
        "survivors: {:?}",
        pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
}

#[test]
fn retries_with_backoff_and_no_retry_of_127() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step flaky {
      retry { attempts = 3  backoff = fixed(300ms) }
      run = "date +%s%N >> times; n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; [ $n -ge 3 ]"
    }
    step missing {
      retry { attempts = 3  backoff = fixed(10ms) }
      run = "no-such-command-pipe-test"
    }
  }
}
"#,
    );
    let r = p.run(
        &["run", "p", "--keep-going", "--output", "plain"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let st = p.status_json(None);
    assert_eq!(step(&st, "s.flaky")["status"], "succeeded");
    assert_eq!(step(&st, "s.flaky")["attempt"], 3);
    assert_eq!(step(&st, "s.missing")["status"], "failed");
    assert_eq!(
        step(&st, "s.missing")["attempt"],
        1,
        "exit 127 is not retried"
    );
    let times: Vec<u128> = p
        .read("times")
        .lines()
        .map(|l| l.parse().expect("ns"))
        .collect();
    assert_eq!(times.len(), 3);
    for w in times.windows(2) {
        let gap_ms = (w[1] - w[0]) / 1_000_000;
        // 300 ms with ±20% jitter.
        assert!(gap_ms >= 240, "retry came after {gap_ms} ms");
    }
    assert!(r.stdout.contains("retrying in"), "{}", r.stdout);
}

#[test]
fn outputs_flow_between_steps_and_stdout_is_not_parsed() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step make {
      run = "echo forged=1; echo digest=sha256:abc >> $PIPE_OUTPUT; printf 'notes<<END\nline one\nline two\nEND\n' >> $PIPE_OUTPUT"
    }
    step use {
      needs = [make]
      run = "printf '%s|%s' ${steps.make.outputs.digest} ${steps.make.outputs.notes} > got"
    }
  }
}
"#,
    );
    let r = p.run(&["run", "p", "--output", "plain"], Duration::from_secs(30));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(p.read("got"), "sha256:abc|line one\nline two");
    let st = p.status_json(None);
    let outputs = &step(&st, "s.make")["outputs"];
    assert_eq!(outputs["digest"], "sha256:abc");
    assert!(
        outputs.get("forged").is_none(),
        "stdout must not become outputs"
    );
}

#[test]
fn interpolated_params_cannot_inject() {
    let payload =
        "x\"; touch pwned1; echo \"$(touch pwned2)`touch pwned3`'; touch pwned4; '\ntouch pwned5";
    let p = Proj::new(
        r#"pipeline p {
  param x: string = "safe"
  stage s {
    step show { run = "printf '%s' ${x} > got" }
  }
}
"#,
    );
    let param = format!("x={payload}");
    let r = p.run(
        &["run", "p", "-p", &param, "--output", "plain"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(p.read("got"), payload, "the value must arrive verbatim");
    for i in 1..=5 {
        assert!(
            !p.path(&format!("pwned{i}")).exists(),
            "pwned{i} was created"
        );
    }
    assert!(!Path::new("/tmp/pwned").exists());
}

#[test]
fn kill_9_then_resume_runs_each_succeeded_step_once() {
    let steps = (0..30)
        .map(|i| {
            let needs = if i >= 2 {
                format!("needs = [n{}]  ", i - 2)
            } else {
                String::new()
            };
            format!(
                "    step n{i} {{ {needs}run = \"mkdir -p m; echo x >> m/n{i}; sleep 0.1\" }}\n"
            )
        })
        .collect::<Vec<_>>()
        .concat();
    let p = Proj::new(&format!("pipeline p {{\n  stage s {{\n{steps}  }}\n}}\n"));
    let mut child = p.spawn(&["run", "p", "--jobs", "2", "--output", "plain"]);
    let got_some = wait_for(Duration::from_secs(20), || {
        std::fs::read_dir(p.path("m")).is_ok_and(|d| d.count() >= 8)
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(got_some, "the run never got going");
    let before = p.status_json(Some("1"));
    let succeeded: Vec<String> = before["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["status"] == "succeeded")
        .map(|s| s["step"].as_str().expect("id").to_string())
        .collect();
    assert!(!succeeded.is_empty());
    assert_eq!(before["status"], "running", "a killed run stays `running`");
    let r = p.run(&["resume", "--output", "plain"], Duration::from_mins(1));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for id in &succeeded {
        let name = id.trim_start_matches("s.");
        assert_eq!(
            p.read(&format!("m/{name}")),
            "x\n",
            "{id} ran again after resume"
        );
    }
    let after = p.status_json(Some("1"));
    assert_eq!(after["status"], "succeeded");
    for i in 0..30 {
        assert!(!p.read(&format!("m/n{i}")).is_empty(), "n{i} never ran");
        assert_eq!(step(&after, &format!("s.n{i}"))["status"], "succeeded");
    }
    let again = p.run(&["resume", "1"], Duration::from_secs(20));
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already succeeded"),
        "{}",
        again.stderr
    );
}

#[test]
fn in_doubt_non_idempotent_step_needs_confirmation() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step deploy { idempotent = false  run = "echo $$ >> deployed; [ -e second ] || sleep 30" }
  }
}
"#,
    );
    let mut child = p.spawn(&["run", "p", "--output", "plain"]);
    let started = wait_for(Duration::from_secs(20), || p.path("deployed").exists());
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(started);
    let r = p.run(&["resume"], Duration::from_secs(20));
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("started and never finished"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("s.deploy (at pipelines/p.pipe:3:5)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--rerun-in-doubt"), "{}", r.stderr);
    // The crashed run's process was killed by the resume, even though it refused.
    let first = pids_in(&p.path("deployed"));
    assert!(
        wait_for(Duration::from_secs(5), || !alive(first[0])),
        "orphan survived"
    );
    std::fs::write(p.path("second"), "").expect("write");
    let r = p.run(
        &["resume", "--rerun-in-doubt", "--output", "plain"],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(pids_in(&p.path("deployed")).len(), 2);
}

#[test]
fn resume_of_a_live_run_names_the_holder() {
    let p = Proj::new(
        "pipeline p {\n  stage s {\n    step a { run = \"touch started; sleep 30\" }\n  }\n}\n",
    );
    let child = p.spawn(&["run", "p", "--output", "plain"]);
    assert!(wait_for(Duration::from_secs(20), || p
        .path("started")
        .exists()));
    let r = p.run(&["resume", "1"], Duration::from_secs(20));
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(&format!("by another pipe (pid {})", child.id())),
        "{}",
        r.stderr
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let r = finish(child, Duration::from_secs(20));
    assert_eq!(
        r.code, 130,
        "SIGTERM is handled like Ctrl-C: {}{}",
        r.stdout, r.stderr
    );
}

#[test]
fn sigint_cancels_and_leaves_no_process() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step long { run = "sleep 3011 & echo $! >> pids; setsid sleep 3012 & echo $! >> pids; sleep 3013" }
  }
}
"#,
    );
    let child = p.spawn(&["run", "p", "--output", "plain"]);
    assert!(wait_for(Duration::from_secs(20), || pids_in(
        &p.path("pids")
    )
    .len()
        == 2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let r = finish(child, Duration::from_secs(20));
    assert_eq!(r.code, 130, "{}{}", r.stdout, r.stderr);
    let pids = pids_in(&p.path("pids"));
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p))),
        "survivors after Ctrl-C"
    );
    let st = p.status_json(None);
    assert_eq!(st["status"], "interrupted");
    assert_eq!(step(&st, "s.long")["status"], "cancelled");
}

#[test]
fn corrupt_state_db_is_refused_and_kept() {
    let p = Proj::new("pipeline p {\n  stage s {\n    step a { run = \"true\" }\n  }\n}\n");
    std::fs::create_dir_all(p.path(".pipe")).expect("mkdir");
    let junk = b"SQLite format 3\0 but truncated garbage".repeat(3);
    std::fs::write(p.path(".pipe/state.db"), &junk).expect("write");
    let r = p.run(&["run", "p"], Duration::from_secs(20));
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("is corrupted or not a pipe state database"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(p.path(".pipe/state.db")).expect("read"), junk);
}

#[test]
fn handlers_see_run_status_and_logs_are_kept() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step boom { run = "echo about to fail; exit 3"  on_failure = "echo cleaning >> cleaned" }
  }
  on failure { step alert { run = "echo ${run.status} ${run.failed_step} ${run.id} > alert" } }
  on success { step yay { run = "touch yay" } }
}
"#,
    );
    let r = p.run(&["run", "p", "--output", "json"], Duration::from_secs(30));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(p.read("alert"), "failed s.boom 1\n");
    assert_eq!(p.read("cleaned"), "cleaning\n");
    assert!(!p.path("yay").exists());
    let events: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events.first().expect("events")["event"], "run_started");
    assert_eq!(events.last().expect("events")["event"], "run_finished");
    assert!(events
        .iter()
        .any(|e| e["event"] == "step_log" && e["line"] == "about to fail"));
    let logs = p.run(&["logs", "1", "boom"], Duration::from_secs(20));
    assert_eq!(logs.code, 0);
    assert_eq!(logs.stdout, "about to fail\n");
}

#[test]
fn unknown_executor_fails_with_its_location() {
    let p = Proj::new(
        "template nothing(x: string) {\n  uses = \"no.such.executor\"\n}\n\npipeline p {\n  stage s {\n    step d = nothing { x = \"1\" }\n  }\n}\n",
    );
    let r = p.run(&["run", "p", "--output", "plain"], Duration::from_secs(20));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("pipelines/p.pipe:7:5: no executor for `no.such.executor` yet"),
        "{}",
        r.stdout
    );
}

#[test]
fn cache_hits_restore_outputs_and_misses_explain_why() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step build {
      cache { inputs = ["src/**"] }
      run = "echo x >> built; echo digest=$(cat src/a.txt) >> $PIPE_OUTPUT"
    }
    step use { needs = [build]  run = "echo ${steps.build.outputs.digest} >> used" }
  }
}
"#,
    );
    std::fs::create_dir_all(p.path("src")).expect("mkdir");
    std::fs::write(p.path("src/a.txt"), "one").expect("write");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "p", "--output", "plain"];
        args.extend_from_slice(extra);
        let r = p.run(&args, Duration::from_secs(30));
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        r.stdout
    };
    let first = run(&["--explain-cache"]);
    assert!(
        first.contains("[s.build] cache miss: no recorded success has this key (command, environment, key and 1 input file(s) hashed)"),
        "{first}"
    );
    let second = run(&[]);
    assert!(
        second.contains("[s.build] cached: outputs restored from run 1"),
        "{second}"
    );
    assert_eq!(p.read("built"), "x\n", "a cache hit must not run the step");
    assert_eq!(
        p.read("used"),
        "one\none\n",
        "outputs are restored on a hit"
    );
    std::fs::write(p.path("src/a.txt"), "two").expect("write");
    run(&[]);
    assert_eq!(p.read("built"), "x\nx\n", "a changed input is a miss");
    run(&["--no-cache"]);
    assert_eq!(p.read("built"), "x\nx\nx\n", "--no-cache always runs");
    assert_eq!(p.read("used"), "one\none\ntwo\ntwo\n");
}

#[test]
fn resume_refuses_changed_sources_unless_replan() {
    let p = Proj::new(FAILING);
    let r = p.run(&["run", "p", "--output", "plain"], Duration::from_secs(30));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    // Resuming from the snapshot runs the same failing command again.
    let r = p.run(&["resume", "--output", "plain"], Duration::from_secs(30));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("[s.bad] failed"), "{}", r.stdout);
    std::fs::write(
        p.path("pipelines/p.pipe"),
        FAILING.replace("exit 4", "exit 0"),
    )
    .expect("write");
    let r = p.run(&["resume", "--output", "plain"], Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "the sources of run 1 changed since it started:\n  pipelines/p.pipe: modified"
        ),
        "{}",
        r.stderr
    );
    let r = p.run(
        &["resume", "1", "--replan", "--output", "plain"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(p.path("after.done").exists() && p.path("slow.done").exists());
    let st = p.status_json(Some("1"));
    assert_eq!(st["status"], "succeeded");
    assert_eq!(
        step(&st, "s.bad")["attempt"],
        3,
        "attempts keep counting across resumes"
    );
}

#[test]
fn logs_follow_prints_lines_until_the_run_ends() {
    let p = Proj::new(
        "pipeline p {\n  stage s {\n    step tick { run = \"touch started; for i in 1 2 3 4; do echo tick $i; sleep 0.3; done\" }\n  }\n}\n",
    );
    let child = p.spawn(&["run", "p", "--output", "plain"]);
    assert!(wait_for(Duration::from_secs(20), || p
        .path("started")
        .exists()));
    let follow = p.run(&["logs", "1", "tick", "--follow"], Duration::from_secs(20));
    let run = finish(child, Duration::from_secs(20));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(follow.code, 0, "{}", follow.stderr);
    assert_eq!(follow.stdout, "tick 1\ntick 2\ntick 3\ntick 4\n");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn secrets_are_masked_in_every_form_everywhere() {
    const SECRET: &str = "s3cr3t value/42!";
    // Raw, base64, hex, URL-encoded, one byte per write, and as a step output.
    let script = r#"
printf '%s\n' "raw: $TOKEN"
printf %s "$TOKEN" | base64
printf %s "$TOKEN" | od -An -tx1 | tr -d ' \n'; echo
s=$TOKEN; enc=
while [ -n "$s" ]; do
  c=${s%"${s#?}"}; s=${s#?}
  case $c in
    [A-Za-z0-9._~-]) enc="$enc$c" ;;
    *) enc="$enc$(printf '%%%02X' "'$c")" ;;
  esac
done
echo "url: $enc"
s=$TOKEN
while [ -n "$s" ]; do
  printf %s "${s%"${s#?}"}"; s=${s#?}
done
echo
printf '%s\n' "err: $TOKEN" >&2
echo "token=$TOKEN" >> "$PIPE_OUTPUT"
"#;
    let p = Proj::new(
        "pipeline p {\n  stage s {\n    step show {\n      env = { TOKEN = secrets.PIPE_TEST_TOKEN }\n      run = \"sh show.sh\"\n    }\n  }\n}\n",
    );
    std::fs::write(p.path("show.sh"), script).expect("write");
    let hex = "7333637233742076616c75652f343221";
    let forms = [
        SECRET.to_string(),
        "czNjcjN0IHZhbHVlLzQyIQ".to_string(),
        hex.to_string(),
        hex.to_uppercase(),
        "s3cr3t%20value%2F42%21".to_string(),
    ];
    let leaks = |what: &str, text: &[u8]| {
        let text = String::from_utf8_lossy(text);
        for f in &forms {
            assert!(!text.contains(f.as_str()), "{what} leaks `{f}`:\n{text}");
        }
    };
    let mut outputs = Vec::new();
    for output in ["plain", "json"] {
        let mut c = p.cmd(&["run", "p", "--output", output]);
        c.env("PIPE_TEST_TOKEN", SECRET);
        let r = finish(c.spawn().expect("spawn"), Duration::from_secs(30));
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        leaks(output, r.stdout.as_bytes());
        leaks(output, r.stderr.as_bytes());
        outputs.push(r.stdout + &r.stderr);
    }
    // The step did print every form, masked.
    for want in ["raw: ***", "url: ***", "err: ***"] {
        assert!(outputs[0].contains(want), "{want}: {}", outputs[0]);
    }
    assert!(
        outputs[1].contains(r#""line":"raw: ***""#),
        "{}",
        outputs[1]
    );
    let files = files_under(&p.path(".pipe"));
    assert!(files.iter().any(|f| f.ends_with("state.db")), "{files:?}");
    assert!(files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "log")));
    for f in &files {
        // The outputs file is the step's own writing, read back and masked.
        if f.extension().is_some_and(|e| e == "outputs") {
            continue;
        }
        leaks(&f.display().to_string(), &std::fs::read(f).expect("read"));
    }
    let log = p.read(".pipe/logs/1/s.show.1.log");
    assert_eq!(log.matches("***").count(), 6, "{log}");
    let st = p.status_json(Some("1"));
    assert_eq!(st["steps"][0]["outputs"]["token"], "***", "{st}");
    // Too short to be masked: refused before the step runs.
    let mut c = p.cmd(&["run", "p", "--output", "plain"]);
    c.env("PIPE_TEST_TOKEN", "abc");
    let r = finish(c.spawn().expect("spawn"), Duration::from_secs(30));
    // Refused before the run starts, as an invalid setup (docs/exit-codes.md).
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let all = r.stdout + &r.stderr;
    assert!(
        all.contains("secret `PIPE_TEST_TOKEN` is refused: a secret shorter than 4 characters cannot be masked"),
        "{all}"
    );
    assert!(!p.path(".pipe/logs/3/s.show.1.log").exists());
}

#[test]
fn a_secret_read_directly_is_masked_before_any_step_resolves_it() {
    const SECRET: &str = "early-bird-9137";
    // `early` reads the variable straight from its environment and runs before
    // `late`, the only step that names `secrets.PIPE_TEST_EARLY`.
    let p = Proj::new(
        "pipeline p {\n  stage s {\n    step early { run = \"echo direct: $PIPE_TEST_EARLY\" }\n    step late {\n      needs = [early]\n      env   = { T = secrets.PIPE_TEST_EARLY }\n      run   = \"echo late: $T\"\n    }\n  }\n}\n",
    );
    let mut c = p.cmd(&["run", "p", "--output", "plain"]);
    c.env("PIPE_TEST_EARLY", SECRET);
    let r = finish(c.spawn().expect("spawn"), Duration::from_secs(30));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("direct: ***"), "{}", r.stdout);
    assert!(r.stdout.contains("late: ***"), "{}", r.stdout);
    assert!(
        !r.stdout.contains(SECRET) && !r.stderr.contains(SECRET),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

/// A log file is created at an attempt's first line: a silent attempt has
/// none and `pipe logs` shows it empty. `$PIPE_OUTPUT` does not exist until
/// the step writes to it.
#[test]
fn log_files_are_created_at_the_first_line() {
    let p = Proj::new(
        "pipeline p {\n  stage s {\n    step quiet { run = \"test ! -e \\\"$PIPE_OUTPUT\\\"\" }\n    step loud { run = \"echo hi; echo oops >&2\" }\n  }\n}\n",
    );
    let r = p.run(&["run", "p", "--output", "plain"], Duration::from_secs(30));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!p.path(".pipe/logs/1/s.quiet.1.log").exists());
    let mut lines: Vec<String> = p
        .read(".pipe/logs/1/s.loud.1.log")
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, ["hi", "oops"]);
    let quiet = p.run(&["logs", "1", "quiet"], Duration::from_secs(20));
    assert_eq!(
        (quiet.code, quiet.stdout.as_str()),
        (0, ""),
        "{}",
        quiet.stderr
    );
}

/// The raw `$PIPE_OUTPUT` file (it may hold secrets in clear) is gone after
/// every ending — success, failure, timeout, `on_failure` — and a file left
/// at an attempt's path by a crashed pipe is never read as that attempt's
/// outputs (pipe skips removing it beforehand only in a log directory it
/// made itself).
#[test]
fn outputs_files_never_outlive_their_attempt_nor_leak_into_the_next() {
    let p = Proj::new(
        r#"pipeline p {
  stage s {
    step ok { run = "echo a=1 >> $PIPE_OUTPUT" }
    step failing {
      run = "echo b=2 >> $PIPE_OUTPUT; exit 3"
      on_failure = "echo c=3 >> $PIPE_OUTPUT"
    }
    step slow {
      timeout = 300ms
      run = "echo d=4 >> $PIPE_OUTPUT; sleep 5"
    }
  }
}
"#,
    );
    let r = p.run(
        &["run", "p", "--output", "plain", "--keep-going"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let left = |p: &Proj| -> Vec<String> {
        std::fs::read_dir(p.path(".pipe/logs/1"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".outputs"))
            .collect()
    };
    assert_eq!(left(&p), Vec::<String>::new());
    assert_eq!(step(&p.status_json(None), "s.ok")["outputs"]["a"], "1");
    // A crashed pipe's leftover at the path of the next attempt of `failing`.
    p.write(".pipe/logs/1/s.failing.2.outputs", "forged=1\n");
    p.write(
        "pipelines/p.pipe",
        &p.read("pipelines/p.pipe")
            .replace("echo b=2 >> $PIPE_OUTPUT; exit 3", "true"),
    );
    let r = p.run(
        &["resume", "--replan", "--output", "plain"],
        Duration::from_secs(30),
    );
    assert_ne!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let st = p.status_json(Some("1"));
    let failing = step(&st, "s.failing");
    assert_eq!(failing["status"], "succeeded", "{st}");
    assert_eq!(failing["attempt"], 2, "{st}");
    assert!(failing["outputs"].get("forged").is_none(), "{st}");
    assert_eq!(left(&p), Vec::<String>::new());
}

/// The shell is looked up once per `PATH` (runtime/bench/README.md) with
/// `execvp`'s rules: a step's own `env` `PATH` names its shell, other steps
/// get the one pipe's `PATH` finds first, and an `sh` ahead of `/usr/bin`
/// still shadows the system's.
#[test]
fn the_shell_is_found_in_the_path_the_step_sees() {
    use std::os::unix::fs::PermissionsExt as _;
    let p = Proj::new("");
    let script = |rel: &str, body: &str| {
        let path = p.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script("bin-a/mysh", "echo a >> which");
    script("bin-b/mysh", "echo b >> which");
    script("bin-b/sh", "echo shadow >> shadow\nexec /bin/sh \"$@\"");
    let pipeline = r#"pipeline p {
  stage s {
    step own { run = "x"  shell = "mysh"  env = { PATH = "BIN_A:/usr/bin:/bin" } }
    step inherited { needs = [own]  run = "x"  shell = "mysh" }
    step default { needs = [inherited]  run = "echo ok > default" }
    step twice { needs = [default]  run = "echo ok >> default" }
  }
}
"#
    .replace("BIN_A", &p.path("bin-a").display().to_string());
    std::fs::write(p.path("pipelines/p.pipe"), pipeline).unwrap();
    let path = format!(
        "{}:{}",
        p.path("bin-b").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = finish(
        p.cmd(&["run", "p", "--output", "plain"])
            .env("PATH", path)
            .spawn()
            .expect("spawn pipe"),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(p.read("which"), "a\nb\n");
    assert_eq!(p.read("default"), "ok\nok\n");
    assert_eq!(p.read("shadow"), "shadow\nshadow\n");
}
