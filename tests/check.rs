//! `pipe check`: good files pass, bad files print every diagnostic with a span
//! and exit 2.

use crate::common::Test;

const GOOD: &str = r#"import "std/http"

pipeline deploy {
  param target: string = "http://127.0.0.1:8080"

  stage build {
    step compile { run = "make build" }
  }
  stage verify {
    needs = [build]
    step smoke = http.check { url = "${target}/health" }
  }
}
"#;

#[test]
fn clean_file_passes() {
    Test::new()
        .pipeline("deploy", GOOD)
        .args(&["check"])
        .stderr("checked 1 file: no problems\n")
        .stdout("")
        .run();
}

#[test]
fn unknown_step_points_at_the_name_with_a_suggestion() {
    Test::new()
        .pipeline(
            "p",
            r#"pipeline p {
  stage a {
    step migrate { run = "true" }
    step deploy { run = "true"  needs = [migrat] }
  }
}
"#,
        )
        .args(&["check"])
        .status(2)
        .stderr(
            r#"pipe::unknown-step

  × unknown step `migrat`
   ╭─[pipelines/p.pipe:4:42]
 3 │     step migrate { run = "true" }
 4 │     step deploy { run = "true"  needs = [migrat] }
   ·                                          ───┬──
   ·                                             ╰── no step or stage of that name
 5 │   }
   ╰────
  help: did you mean `migrate`?

checked 1 file: 1 error, 0 warnings
"#,
        )
        .run();
}

#[test]
fn every_error_is_reported_in_source_order() {
    let out = Test::new()
        .pipeline(
            "p",
            r#"import "std/http"
pipeline p {
  param n: int = "three"
  stage a {
    needs = [nope]
    step s = http.chek { url = "x" }
    step t { run = "true"  timeout = 30 }
  }
  stage empty { }
}
"#,
        )
        .args(&["check", "--format", "json"])
        .status(2)
        .run();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let got: Vec<(String, u64, u64)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("pipe::type".to_string(), 3, 18),
            ("pipe::unknown-stage".to_string(), 5, 14),
            ("pipe::unknown-template".to_string(), 6, 14),
            ("pipe::type".to_string(), 7, 38),
            ("pipe::empty-stage".to_string(), 9, 9),
        ]
    );
    assert_eq!(v[2]["help"], "did you mean `http.check`?");
    assert_eq!(
        v[3]["help"],
        "write durations with a unit: `30s`, `5m`, `500ms`"
    );
}

#[test]
fn syntax_error_in_one_file_does_not_hide_errors_in_another() {
    let out = Test::new()
        .pipeline(
            "a",
            "pipeline a {\n  stage s {\n    step x { run = \"true\" \n  }\n}\n",
        )
        .pipeline(
            "b",
            "pipeline b {\n  stage s { step y { run = \"true\"  needs = [z] } }\n}\n",
        )
        .args(&["check", "--format", "json"])
        .status(2)
        .run();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let files: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["file"].as_str().unwrap(), d["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        files,
        vec![
            ("pipelines/a.pipe", "pipe::syntax"),
            ("pipelines/b.pipe", "pipe::unknown-step")
        ]
    );
    assert_eq!(v[0]["message"], "unclosed `{` at end of file");
    assert_eq!(
        (v[0]["line"].as_u64(), v[0]["column"].as_u64()),
        (Some(1), Some(12))
    );
}

#[test]
fn cycle_reports_every_edge() {
    let out = Test::new()
        .pipeline(
            "p",
            r#"pipeline p {
  stage s {
    step a { run = "true"  needs = [c] }
    step b { run = "true"  needs = [a] }
    step c { run = "true"  needs = [b] }
  }
}
"#,
        )
        .args(&["check"])
        .status(2)
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dependency cycle: `s.a` → `s.c` → `s.b` → `s.a`"),
        "{err}"
    );
    assert!(err.contains("`s.a` needs `s.c`"), "{err}");
    assert!(err.contains("`s.c` needs `s.b`"), "{err}");
    assert!(err.contains("`s.b` needs `s.a`"), "{err}");
}

#[test]
fn secret_in_a_command_is_rejected_with_the_env_form() {
    Test::new()
        .pipeline(
            "p",
            "pipeline p {\n  stage s {\n    step leak { run = \"curl -H 'Authorization: ${secrets.TOKEN}' x\" }\n  }\n}\n",
        )
        .args(&["check"])
        .status(2)
        .stderr_contains("a secret cannot be interpolated into a command")
        .stderr_contains("help: pass it through the environment: `env = { TOKEN = secrets.TOKEN }`")
        .run();
}

#[test]
fn hostile_nesting_is_a_diagnostic_not_a_crash() {
    let deep = format!(
        "pipeline p {{ stage s {{ step x {{ run = {}1{} }} }} }}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    Test::new()
        .pipeline("p", &deep)
        .args(&["check"])
        .status(2)
        .stderr_contains("nesting too deep: more than 64 levels")
        .run();
}

#[test]
fn fan_out_over_the_cap_names_the_loop() {
    Test::new()
        .pipeline(
            "p",
            r#"pipeline p {
  stage s {
    for a in range(1000) {
      for b in range(100) {
        step "x-${a}-${b}" { run = "true" }
      }
    }
  }
}
"#,
        )
        .args(&["check"])
        .status(2)
        .stderr_contains("this loop expands to 100000 steps; a pipeline may have at most 50000")
        .stderr_contains("1000 × 100 steps")
        .stderr_contains("[pipelines/p.pipe:3:5]")
        .run();
}

#[test]
fn missing_directory_is_a_usage_error() {
    Test::new()
        .args(&["check"])
        .status(2)
        .stderr_contains("error: no .pipe files under")
        .run();
}

#[test]
fn chained_comparison_says_how_to_write_it() {
    Test::new()
        .pipeline(
            "p",
            "pipeline p {\n  param n: int = 3\n  stage s {\n    step x { when = 1 < n < 5  run = \"true\" }\n  }\n}\n",
        )
        .args(&["check"])
        .status(2)
        .stderr_contains("[pipelines/p.pipe:4:27]")
        .stderr_contains("help: comparisons do not chain: write `a < b && b < c`")
        .run();
    Test::new()
        .pipeline(
            "p",
            "pipeline p {\n  param n: int = 3\n  stage s {\n    step x { when = n = 5  run = \"true\" }\n  }\n}\n",
        )
        .args(&["check"])
        .status(2)
        .stderr_contains("help: to compare, write `==`; a single `=` only sets an attribute")
        .run();
}

/// A production deploy that needs its image but not the approval: the assert
/// fails with the path that bypasses the gate, in full as `pipe check` prints it.
const BYPASS: &str = r#"pipeline release {
  env prod { }
  stage build {
    step image { run = "make image" }
  }
  stage production {
    env = prod
    gate approve = approval { needs = [image] }
    step deploy { run = "deploy"  needs = [image] }
  }
  assert gated {
    from    = stage.build
    to      = stage.production
    through = [approve]
  }
}
"#;

#[test]
fn check_rejects_a_production_deploy_that_bypasses_the_approval() {
    Test::new()
        .pipeline("release", BYPASS)
        .args(&["check"])
        .status(2)
        .stderr(
            r#"pipe::assert

  × assert `gated` fails: `production.deploy` can start before `production.approve` has passed
  │ path: build.image → production.deploy  (no step on it waits for `production.approve`)
    ╭─[pipelines/release.pipe:14:16]
  3 │   stage build {
  4 │     step image { run = "make image" }
    ·          ──┬──
    ·            ╰── 1. `build.image`
  5 │   }
  6 │   stage production {
  7 │     env = prod
  8 │     gate approve = approval { needs = [image] }
    ·          ───┬───
    ·             ╰── the gate `production.approve`, not on the path
  9 │     step deploy { run = "deploy"  needs = [image] }
    ·          ───┬──
    ·             ╰── 2. `production.deploy`
 10 │   }
 11 │   assert gated {
 12 │     from    = stage.build
 13 │     to      = stage.production
 14 │     through = [approve]
    ·                ───┬───
    ·                   ╰── `production.deploy` does not wait for this
 15 │   }
    ╰────
  help: make `deploy` wait for the gate: add `needs = [approve]` to it

checked 1 file: 1 error, 0 warnings
"#,
        )
        .run();

    // The same spans for editors: the gate in `through`, then the path.
    let out = Test::new()
        .pipeline("release", BYPASS)
        .args(&["check", "--format", "json"])
        .status(2)
        .run();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v:#}");
    assert_eq!(v[0]["code"], "pipe::assert");
    assert_eq!(
        (v[0]["line"].as_u64(), v[0]["column"].as_u64()),
        (Some(14), Some(16))
    );
    let related: Vec<(u64, u64, &str)> = v[0]["related"]
        .as_array()
        .expect("related")
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["column"].as_u64().unwrap(),
                r["label"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        related,
        [
            (4, 10, "1. `build.image`"),
            (9, 10, "2. `production.deploy`"),
            (8, 10, "the gate `production.approve`, not on the path"),
        ]
    );

    // Waiting for the approval proves it.
    Test::new()
        .pipeline(
            "release",
            &BYPASS.replace(
                "step deploy { run = \"deploy\"  needs = [image] }",
                "step deploy { run = \"deploy\"  needs = [approve] }",
            ),
        )
        .args(&["check"])
        .stderr("checked 1 file: no problems\n")
        .run();
}

#[test]
fn run_refuses_a_pipeline_whose_assert_fails_before_running_anything() {
    Test::new()
        .pipeline("release", BYPASS)
        .args(&["run", "release", "--env", "prod"])
        .status(2)
        .stderr_contains("assert `gated` fails: `production.deploy` can start before `production.approve` has passed")
        .run();
}
