//! Critical-path tests: small graphs written as source text with `estimate`s,
//! lowered, scheduled, and compared with earliest start, latest start and
//! slack computed by hand (in seconds).

use crate::common::lower_ok;
use pipe_lang::critical::{schedule_from_estimates, DEFAULT_ESTIMATE_MS};

/// (step id, earliest start, latest start, slack, critical) in seconds.
type Row = (&'static str, u64, u64, u64, bool);
/// A [`Row`] as computed.
type Timing = (String, u64, u64, u64, bool);

/// Schedules the first pipeline of `src`; returns its rows, length and path.
fn schedule(src: &str) -> (Vec<Timing>, u64, Vec<String>) {
    let plan = lower_ok(src);
    let s = schedule_from_estimates(&plan);
    let rows = plan
        .steps()
        .iter()
        .zip(&s.steps)
        .map(|(step, t)| {
            assert_eq!(t.duration_ms % 1000, 0);
            (
                step.id.clone(),
                t.earliest_start_ms / 1000,
                t.latest_start_ms / 1000,
                t.slack_ms / 1000,
                t.critical,
            )
        })
        .collect();
    let path = s.path.iter().map(|&i| plan.step(i).id.clone()).collect();
    (rows, s.length_ms / 1000, path)
}

#[track_caller]
fn assert_schedule(src: &str, expected: &[Row], length_s: u64, path: &[&str]) {
    let (rows, length, actual_path) = schedule(src);
    let expected: Vec<Timing> = expected
        .iter()
        .map(|&(id, es, ls, slack, c)| (id.to_string(), es, ls, slack, c))
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(length, length_s);
    assert_eq!(actual_path, path);
}

#[test]
fn chain() {
    // a(10) -> b(20) -> c(5): everything is critical, length 35.
    let src = r#"pipeline p {
  stage s {
    step a { run = "a", estimate = 10s }
    step b { run = "b", estimate = 20s, needs = [a] }
    step c { run = "c", estimate = 5s, needs = [b] }
  }
}"#;
    assert_schedule(
        src,
        &[
            ("s.a", 0, 0, 0, true),
            ("s.b", 10, 10, 0, true),
            ("s.c", 30, 30, 0, true),
        ],
        35,
        &["s.a", "s.b", "s.c"],
    );
}

#[test]
fn diamond() {
    // a(10) -> {b(30), c(10)} -> d(5). Through b: 10+30+5 = 45.
    // c may start as late as 40 - 10 = 30, so its slack is 30 - 10 = 20.
    let src = r#"pipeline p {
  stage s {
    step a { run = "a", estimate = 10s }
    step b { run = "b", estimate = 30s, needs = [a] }
    step c { run = "c", estimate = 10s, needs = [a] }
    step d { run = "d", estimate = 5s, needs = [b, c] }
  }
}"#;
    assert_schedule(
        src,
        &[
            ("s.a", 0, 0, 0, true),
            ("s.b", 10, 10, 0, true),
            ("s.c", 10, 30, 20, false),
            ("s.d", 40, 40, 0, true),
        ],
        45,
        &["s.a", "s.b", "s.d"],
    );
}

#[test]
fn wide() {
    // Five independent steps of 1..5 minutes joined by a 10 s step:
    // the join starts at 300 s; step k may start as late as 300 - 60k.
    let src = r#"pipeline p {
  stage s {
    step w1 { run = "w", estimate = 1m }
    step w2 { run = "w", estimate = 2m }
    step w3 { run = "w", estimate = 3m }
    step w4 { run = "w", estimate = 4m }
    step w5 { run = "w", estimate = 5m }
    step join { run = "j", estimate = 10s, needs = [w1, w2, w3, w4, w5] }
  }
}"#;
    assert_schedule(
        src,
        &[
            ("s.w1", 0, 240, 240, false),
            ("s.w2", 0, 180, 180, false),
            ("s.w3", 0, 120, 120, false),
            ("s.w4", 0, 60, 60, false),
            ("s.w5", 0, 0, 0, true),
            ("s.join", 300, 300, 0, true),
        ],
        310,
        &["s.w5", "s.join"],
    );
}

#[test]
fn stage_needs_and_default_estimate() {
    // Stage `test` waits for the sinks of `build` (x: 60 s, y: default 30 s).
    // u runs 60..90; v (20 s) may start as late as 70.
    let src = r#"pipeline p {
  stage build {
    step x { run = "x", estimate = 1m }
    step y { run = "y" }
  }
  stage test {
    needs = [build]
    step u { run = "u", estimate = 30s }
    step v { run = "v", estimate = 20s }
  }
}"#;
    assert_eq!(DEFAULT_ESTIMATE_MS, 30_000);
    assert_schedule(
        src,
        &[
            ("build.x", 0, 0, 0, true),
            ("build.y", 0, 30, 30, false),
            ("test.u", 60, 60, 0, true),
            ("test.v", 60, 70, 10, false),
        ],
        90,
        &["build.x", "test.u"],
    );
}

#[test]
fn fan_out_in_a_loop() {
    // Each service builds (2 m) then deploys (10 s); `done` joins both
    // chains, which tie, so every step is critical.
    let src = r#"pipeline p {
  param svcs: list<string> = ["api", "worker"]
  stage s {
    for svc in svcs {
      step "build-${svc}" { run = "b", estimate = 2m }
      step "deploy-${svc}" { run = "d", estimate = 10s, needs = ["build-${svc}"] }
    }
    step done { run = "n", estimate = 5s, needs = ["deploy-api", "deploy-worker"] }
  }
}"#;
    assert_schedule(
        src,
        &[
            ("s.build-api", 0, 0, 0, true),
            ("s.deploy-api", 120, 120, 0, true),
            ("s.build-worker", 0, 0, 0, true),
            ("s.deploy-worker", 120, 120, 0, true),
            ("s.done", 130, 130, 0, true),
        ],
        135,
        &["s.build-api", "s.deploy-api", "s.done"],
    );
}
