//! `pipe graph`: every format, with the critical path computed from estimates.

use std::process::Command;
use std::time::Duration;

use crate::common::{pipe_bin, repo_root, run_bounded, Test};

/// a(1m) → b(3m) → d(1m), a → c(1m) → d: the path through b is critical,
/// c has 2m of slack.
const DIAMOND: &str = r#"pipeline diamond {
  stage s {
    step a { run = "true"  estimate = 1m }
    step b { run = "true"  estimate = 3m  needs = [a] }
    step c { run = "true"  estimate = 1m  needs = [a] }
    step d { run = "true"  estimate = 1m  needs = [b, c] }
  }
}
"#;

#[test]
fn ascii_shows_slack_and_the_critical_path() {
    Test::new()
        .pipeline("diamond", DIAMOND)
        .args(&["graph", "diamond"])
        .stdout(
            "pipeline diamond: 4 steps, critical path 5m
  * = on the critical path; est = estimate, start = earliest start
    step                                      est     start     slack
stage s
  * a                                          1m        0s        0s
  * b                                          3m        1m        0s
    c                                          1m        1m        2m
  * d                                          1m        4m        0s
critical path (5m):
  s.a → s.b → s.d
",
        )
        .run();
}

#[test]
fn json_has_timings_per_step() {
    let out = Test::new()
        .pipeline("diamond", DIAMOND)
        .args(&["graph", "diamond", "--format", "json"])
        .run();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["length_ms"], 300_000);
    assert_eq!(v["critical_path"], serde_json::json!(["s.a", "s.b", "s.d"]));
    let c = &v["steps"][2];
    assert_eq!(c["id"], "s.c");
    assert_eq!(c["earliest_start_ms"], 60_000);
    assert_eq!(c["latest_start_ms"], 180_000);
    assert_eq!(c["slack_ms"], 120_000);
    assert_eq!(c["critical"], false);
    assert_eq!(c["needs"], serde_json::json!(["s.a"]));
    assert_eq!(c["location"], "pipelines/diamond.pipe:5:5");
}

#[test]
fn mermaid_marks_critical_nodes() {
    Test::new()
        .pipeline("diamond", DIAMOND)
        .args(&["graph", "diamond", "--format", "mermaid"])
        .stdout(
            r#"flowchart LR
  subgraph s_s["s"]
    n0["a<br/>est 1m · slack 0s"]
    n1["b<br/>est 3m · slack 0s"]
    n2["c<br/>est 1m · slack 2m"]
    n3["d<br/>est 1m · slack 0s"]
  end
  n0 --> n1
  n0 --> n2
  n1 --> n3
  n2 --> n3
  classDef critical stroke:#d00,stroke-width:3px
  class n0,n1,n3 critical
"#,
        )
        .run();
}

#[test]
fn dot_output_renders_with_graphviz() {
    let t = Test::new().pipeline("diamond", DIAMOND);
    let out = t.args(&["graph", "diamond", "--format", "dot"]).run();
    let dot_src = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        dot_src.contains("\"s.a\" -> \"s.b\" [color=red, penwidth=2];"),
        "{dot_src}"
    );
    assert!(dot_src.contains("\"s.a\" -> \"s.c\";"), "{dot_src}");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("g.dot");
    std::fs::write(&src, &dot_src).expect("write");
    let svg = run_bounded(
        Command::new("dot").arg("-Tsvg").arg(&src),
        Duration::from_secs(30),
    );
    assert!(
        svg.status.success(),
        "dot failed: {}",
        String::from_utf8_lossy(&svg.stderr)
    );
    assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"));
}

#[test]
fn release_graph_fits_80_columns() {
    let out = run_bounded(
        Command::new(pipe_bin())
            .args(["graph", "release"])
            .current_dir(repo_root()),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "line over 80 columns: {line:?}");
    }
    assert!(text.contains("stage production [env prod]"), "{text}");
    assert!(text.contains("critical path ("), "{text}");
}

#[test]
fn env_selection_leaves_out_other_environments() {
    let src = r#"pipeline p {
  env staging { }
  env prod { }
  stage build { step b { run = "true" } }
  stage stg { needs = [build]  env = staging  step deploy { run = "true" } }
  stage prd { needs = [stg]  env = prod  step deploy { run = "true" } }
}
"#;
    let ids = |env: &str| -> Vec<String> {
        let out = Test::new()
            .pipeline("p", src)
            .args(&["graph", "p", "--format", "json", "--env", env])
            .run();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("staging"), vec!["build.b", "stg.deploy"]);
    assert_eq!(ids("prod"), vec!["build.b", "stg.deploy", "prd.deploy"]);
}

#[test]
fn params_from_the_command_line_expand_loops() {
    let src = r#"pipeline p {
  param services: list<string> = ["api"]
  stage build { for s in services { step "image-${s}" { run = "true" } } }
}
"#;
    let out = Test::new()
        .pipeline("p", src)
        .args(&[
            "graph",
            "p",
            "--format",
            "json",
            "-p",
            "services=api,worker,web",
        ])
        .run();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["build.image-api", "build.image-worker", "build.image-web"]
    );
    Test::new()
        .pipeline("p", src)
        .args(&["graph", "p", "-p", "nope=1"])
        .status(2)
        .stderr_contains("pipeline `p` has no param `nope`")
        .stderr_contains("its params are: services")
        .run();
}

#[test]
fn unknown_pipeline_suggests_a_name() {
    Test::new()
        .pipeline("release", "pipeline release { stage s { step x { run = \"true\" } } }\n")
        .args(&["graph", "relase"])
        .status(2)
        .stderr("error: no pipeline named `relase` (looked for pipelines/relase.pipe and in every file under pipelines/)\n  help: did you mean `release`?\n")
        .run();
}

/// Declared: a(10s) → c(5s) is critical. Recorded: b sleeps 0.8 s while a
/// and c take ~0.1 s, so history moves the critical path to a → b.
const SLEEPS: &str = r#"pipeline sleeps {
  stage s {
    step a { run = "sleep 0.1"  estimate = 10s }
    step b { run = "sleep 0.8"  estimate = 1s  needs = [a] }
    step c { run = "sleep 0.1"  estimate = 5s  needs = [a] }
    step never { run = "true"  estimate = 50ms  needs = [a]  when = false }
  }
}
"#;

fn graph_json(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["graph", "sleeps", "--format", "json"];
    args.extend(extra);
    let out = run_bounded(
        Command::new(pipe_bin())
            .args(&args)
            .current_dir(dir)
            .env_remove("PIPE_STATE_DIR"),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn step<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {v}"))
}

#[test]
fn estimates_come_from_recorded_runs_when_there_are_some() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(dir.path().join("pipelines/sleeps.pipe"), SLEEPS).expect("write");
    // No runs yet: declared estimates, and looking creates no store.
    let v = graph_json(dir.path(), &[]);
    assert_eq!(v["critical_path"], serde_json::json!(["s.a", "s.c"]));
    assert_eq!(step(&v, "s.b")["estimate_source"], "declared");
    assert!(
        !dir.path().join(".pipe").exists(),
        "pipe graph made a store"
    );
    for _ in 0..2 {
        let out = run_bounded(
            Command::new(pipe_bin())
                .args(["run", "sleeps", "--output", "plain"])
                .current_dir(dir.path())
                .env_remove("PIPE_STATE_DIR"),
            Duration::from_mins(1),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let v = graph_json(dir.path(), &[]);
    assert_eq!(v["critical_path"], serde_json::json!(["s.a", "s.b"]));
    for (id, low, high) in [("s.a", 100, 5000), ("s.b", 800, 5000), ("s.c", 100, 5000)] {
        let s = step(&v, id);
        assert_eq!(s["estimate_source"], "history", "{s}");
        assert_eq!(s["estimate_samples"], 2, "{s}");
        let ms = s["estimate_ms"].as_u64().expect("estimate_ms");
        assert!((low..high).contains(&ms), "{id}: {ms} ms");
    }
    // Skipped in both runs: no successful duration, the declared estimate stays.
    assert_eq!(step(&v, "s.never")["estimate_source"], "declared");
    assert_eq!(step(&v, "s.never")["estimate_ms"], 50);
    // `~` marks them in the text form.
    let out = run_bounded(
        Command::new(pipe_bin())
            .args(["graph", "sleeps"])
            .current_dir(dir.path())
            .env_remove("PIPE_STATE_DIR"),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("~: from past runs"), "{text}");
    let b = text.lines().find(|l| l.contains(" b ")).expect("row of b");
    assert!(
        b.contains(" ~8") || b.contains(" ~9") || b.contains(" ~1s"),
        "{b}"
    );
    // `--no-history`: the declared estimates again.
    let v = graph_json(dir.path(), &["--no-history"]);
    assert_eq!(v["critical_path"], serde_json::json!(["s.a", "s.c"]));
    assert_eq!(step(&v, "s.b")["estimate_source"], "declared");
    // `--state-dir` elsewhere: that store has no history.
    let other = dir.path().join("elsewhere");
    let v = graph_json(dir.path(), &["--state-dir", other.to_str().expect("utf-8")]);
    assert_eq!(step(&v, "s.b")["estimate_source"], "declared");
    assert!(!other.exists());
}
