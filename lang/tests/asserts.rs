//! `assert` declarations: parsed with spans, proved on the lowered plan, and
//! violations rendered with the witness path (docs/asserts.md).

use miette::{GraphicalReportHandler, GraphicalTheme};
use pipe_lang::{Context, Diagnostic, Workspace};

use crate::common::{assert_spans, check, line_col, load, FILE};

/// A release pipeline in the shape of pipelines/release.pipe: per-service
/// images and scans from loops, staging, then production behind `approve`.
/// `PRODUCTION` is replaced by the production stage's steps.
const BASE: &str = r#"pipeline release {
  param services: list<string> = ["api", "worker"]

  env staging { }
  env prod { }

  stage build {
    for svc in services {
      step "image-${svc}" { run = "make ${svc}" }
    }
  }
  stage scan {
    needs = [build]
    for svc in services {
      step "scan-${svc}" { run = "scan ${svc}" }
    }
  }
  stage staging {
    needs = [scan]
    env   = staging
    step deploy { run = "deploy staging" }
    step smoke { run = "smoke"  needs = [deploy] }
  }
  stage production {
    needs = [staging]
    env   = prod
PRODUCTION
  }

ASSERT
}
"#;

const GATED: &str = r#"    gate approve = approval { timeout = 1h }
    for svc in services {
      step "release-${svc}" { run = "release ${svc}"  needs = [approve] }
    }"#;

const ASSERT: &str = r#"  assert prod_is_gated {
    from    = stage.build
    to      = stage.production
    through = [approve, "scan-*"]
    message = "production deploys need an approval and a clean scan"
  }"#;

fn pipeline(production: &str, assert: &str) -> String {
    BASE.replace("PRODUCTION", production)
        .replace("ASSERT", assert)
}

fn errors(diags: &[Diagnostic]) -> Vec<&Diagnostic> {
    diags.iter().filter(|d| d.is_error()).collect()
}

/// Renders diagnostics as `pipe check` prints them (unicode, no colour, 100 columns).
fn render(ws: &Workspace, diags: &[Diagnostic]) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in diags {
        handler
            .render_report(&mut out, &d.with_sources(&ws.sources))
            .expect("render");
        out.push('\n');
    }
    out
}

/// The source text a span covers.
fn text(src: &str, span: pipe_lang::Span) -> &str {
    &src[span.range()]
}

#[test]
fn parses_with_spans() {
    assert_spans(
        "pipeline p {\n  assert gated {\n    to      = stage.prod\n    through = [approve, \"scan-*\"]\n  }\n}\n",
        &[
            (0, 1, 1, "pipeline p", "pipeline p {\n  assert gated {\n    to      = stage.prod\n    through = [approve, \"scan-*\"]\n  }\n}"),
            (9, 1, 10, "name", "p"),
            (15, 2, 3, "assert gated", "assert gated {\n    to      = stage.prod\n    through = [approve, \"scan-*\"]\n  }"),
            (22, 2, 10, "name", "gated"),
            (28, 2, 16, "body", "{\n    to      = stage.prod\n    through = [approve, \"scan-*\"]\n  }"),
            (34, 3, 5, "attr to", "to      = stage.prod"),
            (44, 3, 15, "field .prod", "stage.prod"),
            (44, 3, 15, "ident stage", "stage"),
            (59, 4, 5, "attr through", "through = [approve, \"scan-*\"]"),
            (69, 4, 15, "list of 2", "[approve, \"scan-*\"]"),
            (70, 4, 16, "ident approve", "approve"),
            (79, 4, 25, "str [\"scan-*\"]", "\"scan-*\""),
        ],
    );
}

#[test]
fn a_gated_release_passes() {
    let (_, diags) = check(&pipeline(GATED, ASSERT));
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn a_production_step_that_skips_the_approval_is_shown_with_its_path() {
    // `release-worker` waits for the image it ships, not for the approval.
    let production = r#"    gate approve = approval { timeout = 1h }
    step "release-api" { run = "release api"  needs = [approve] }
    step "release-worker" { run = "release worker"  needs = ["image-worker"] }"#;
    let src = pipeline(production, ASSERT);
    let (ws, diags) = check(&src);
    let errs = errors(&diags);
    assert_eq!(errs.len(), 1, "{diags:#?}");
    let d = errs[0];
    assert_eq!(d.code, "pipe::assert");
    assert_eq!(
        d.message,
        "assert `prod_is_gated` fails: production deploys need an approval and a clean scan\n\
         `production.release-worker` can start before `production.approve` has passed\n\
         path: build.image-worker → production.release-worker  (no step on it waits for `production.approve`)"
    );
    // The primary label is the gate in `through`; the others are the path's
    // steps (a loop's declaration for `image-worker`) and the gate itself.
    assert_eq!(text(&src, d.span), "approve");
    assert_eq!(
        d.label,
        "`production.release-worker` does not wait for this"
    );
    let labels: Vec<(&str, (usize, usize), &str)> = d
        .secondary
        .iter()
        .map(|(s, l)| (text(&src, *s), line_col(&src, s.start as usize), l.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("\"image-${svc}\"", (9, 12), "1. `build.image-worker`"),
            (
                "\"release-worker\"",
                (29, 10),
                "2. `production.release-worker`"
            ),
            (
                "approve",
                (27, 10),
                "the gate `production.approve`, not on the path"
            ),
        ]
    );
    assert_eq!(
        d.help.as_deref(),
        Some("make `release-worker` wait for the gate: add `needs = [approve]` to it")
    );
    insta::assert_snapshot!("assert_bypassed_approval", render(&ws, &diags), &src);
}

#[test]
fn a_glob_requires_each_step_it_matches() {
    // `release-*` wait for the approval, but the approval waits only for
    // `scan-api`: nothing in production waits for `scan-worker`. The scan
    // stage has no `needs` on staging's side here, so build the DAG by hand.
    let src = r#"pipeline p {
  stage build {
    step "image-api" { run = "a" }
    step "image-worker" { run = "w" }
  }
  stage scan {
    step "scan-api" { run = "s"  needs = ["image-api"] }
    step "scan-worker" { run = "s"  needs = ["image-worker"] }
  }
  stage production {
    gate approve = approval { needs = ["scan-api"] }
    step release { run = "r"  needs = [approve] }
  }
  assert scanned {
    from    = stage.build
    to      = release
    through = ["scan-*"]
  }
}
"#;
    let (_, diags) = check(src);
    let errs = errors(&diags);
    assert_eq!(errs.len(), 1, "{diags:#?}");
    assert_eq!(
        errs[0].message,
        "assert `scanned` fails: `production.release` can start before `scan.scan-worker` has passed\n\
         path: build.image-api → scan.scan-api → production.approve → production.release  \
         (no step on it waits for `scan.scan-worker`)"
    );
    assert_eq!(text(src, errs[0].span), "\"scan-*\"");
    assert_eq!(
        errs[0].help.as_deref(),
        Some("make `release` wait for the gate: add `needs = [\"scan-worker\"]` to it")
    );

    // Waiting for both scans satisfies it; a glob with a `.` matches ids.
    let fixed = src
        .replace(
            r#"needs = ["scan-api"]"#,
            r#"needs = ["scan-api", "scan-worker"]"#,
        )
        .replace(
            r#"through = ["scan-*"]"#,
            r#"through = ["scan.*", approve]"#,
        );
    let (_, diags) = check(&fixed);
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn a_glob_that_bypasses_several_steps_says_how_many() {
    let src = r#"pipeline p {
  stage build {
    for i in range(4) {
      step "scan-${i}" { run = "s" }
    }
    step release { run = "r"  needs = ["scan-0"] }
  }
  assert scanned {
    to      = release
    through = ["scan-*"]
  }
}
"#;
    let (_, diags) = check(src);
    let errs = errors(&diags);
    assert_eq!(errs.len(), 1, "{diags:#?}");
    // Without `from`, paths start at any step without needs.
    assert!(
        errs[0].message.ends_with(
            "`build.release` can start before `build.scan-1` has passed\n\
             path: build.scan-0 → build.release  (no step on it waits for `build.scan-1`)\n\
             2 more steps selected by `\"scan-*\"` are bypassed too"
        ),
        "{}",
        errs[0].message
    );
}

#[test]
fn every_to_step_is_checked_and_the_nearest_is_shown() {
    let src = r#"pipeline p {
  stage s {
    step build { run = "b" }
    gate approve = approval { needs = [build] }
    step a { run = "a"  needs = [build] }
    step b { run = "b"  needs = [a] }
    step c { run = "c"  needs = [b] }
  }
  assert gated {
    from    = build
    to      = [a, b, c]
    through = [approve]
  }
}
"#;
    let (_, diags) = check(src);
    let errs = errors(&diags);
    assert_eq!(errs.len(), 1, "{diags:#?}");
    assert_eq!(
        errs[0].message,
        "assert `gated` fails: `s.a` can start before `s.approve` has passed\n\
         path: s.build → s.a  (no step on it waits for `s.approve`)\n\
         2 more steps of `to` do not wait for `s.approve` either"
    );
}

#[test]
fn a_gate_a_when_can_skip_does_not_guard() {
    let production = r#"    gate approve = approval { when = steps.smoke.outputs.ok == "yes" }
    for svc in services {
      step "release-${svc}" { run = "release ${svc}"  needs = [approve] }
    }"#;
    let src = pipeline(production, ASSERT);
    let (_, diags) = check(&src);
    let errs = errors(&diags);
    assert_eq!(errs.len(), 1, "{diags:#?}");
    assert_eq!(
        errs[0].message,
        "assert `prod_is_gated` fails: production deploys need an approval and a clean scan\n\
         gate `production.approve` may be skipped by its `when`, and `production.release-api` then runs without it"
    );
    assert_eq!(text(&src, errs[0].span), "approve");
    let labels: Vec<&str> = errs[0]
        .secondary
        .iter()
        .map(|(s, _)| text(&src, *s))
        .collect();
    assert_eq!(
        labels,
        ["steps.smoke.outputs.ok == \"yes\"", "\"release-${svc}\""]
    );
}

#[test]
fn a_when_the_gate_shares_with_what_it_guards_is_fine() {
    // The stage's `when` skips the approval and the releases together.
    let production = r#"    when = env.RELEASES == "on"
    gate approve = approval { timeout = 1h }
    for svc in services {
      step "release-${svc}" { run = "release ${svc}"  needs = [approve]  when = true }
    }"#;
    let (_, diags) = check(&pipeline(production, ASSERT));
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn a_gate_before_the_start_does_not_guard() {
    // The approval is asked before anything is built: it approves nothing.
    let src = r#"pipeline p {
  stage ask {
    gate approve = approval { timeout = 1h }
  }
  stage build {
    step image { run = "b" }
  }
  stage production {
    needs = [ask, build]
    step release { run = "r" }
  }
  assert gated {
    from    = stage.build
    to      = stage.production
    through = [approve]
  }
}
"#;
    let (_, diags) = check(src);
    let errs = errors(&diags);
    assert_eq!(errs.len(), 1, "{diags:#?}");
    assert_eq!(
        errs[0].message,
        "assert `gated` fails: gate `ask.approve` does not come after any step of `from`"
    );
    assert_eq!(
        errs[0].help.as_deref(),
        Some("a gate guards what comes after the start: make `approve` need a step of `from`")
    );
}

#[test]
fn unknown_names_suggest_the_nearest() {
    let assert = r#"  assert prod_is_gated {
    from    = stage.biuld
    to      = production
    through = [aprove, "scna-*"]
  }"#;
    let src = pipeline(GATED, assert);
    let (_, diags) = check(&src);
    let got: Vec<(&str, &str, &str, Option<&str>)> = errors(&diags)
        .iter()
        .map(|d| {
            (
                d.code,
                text(&src, d.span),
                d.message.as_str(),
                d.help.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "pipe::unknown-stage",
                "stage.biuld",
                "unknown stage `biuld` in `from`",
                Some("did you mean `stage.build`?")
            ),
            (
                "pipe::unknown-step",
                "production",
                "unknown step `production` in `to`",
                Some("`production` is a stage: write `stage.production` for every step of it")
            ),
            (
                "pipe::unknown-step",
                "aprove",
                "unknown step `aprove` in `through`",
                Some("did you mean `approve`?")
            ),
            (
                "pipe::assert-vacuous",
                "\"scna-*\"",
                "`scna-*` in `through` matches no step",
                Some("the steps are: approve, deploy, image-api, image-worker, release-api, release-worker, scan-api, scan-worker, smoke")
            ),
        ]
    );
}

#[test]
fn a_vacuous_assert_is_an_error() {
    // Production does not depend on chaos: the assert could never fail.
    let src = r#"pipeline p {
  stage chaos { step faults { run = "f" } }
  stage build { step image { run = "b" } }
  stage production {
    needs = [build]
    gate approve = approval { timeout = 1h }
    step release { run = "r"  needs = [approve] }
  }
  assert gated {
    from    = stage.chaos
    to      = stage.production
    through = []
  }
}
"#;
    let (_, diags) = check(src);
    let got: Vec<(&str, &str, &str)> = errors(&diags)
        .iter()
        .map(|d| (d.code, text(src, d.span), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [(
            "pipe::assert-vacuous",
            "[]",
            "`through` lists no step: the assert would prove nothing"
        )]
    );
    let (_, diags) = check(&src.replace("through = []", "through = [approve]"));
    let got: Vec<(&str, &str, &str)> = errors(&diags)
        .iter()
        .map(|d| (d.code, text(src, d.span), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [(
            "pipe::assert-vacuous",
            "stage.chaos",
            "assert `gated` proves nothing: no step of `to` depends on a step of `from`"
        )]
    );
}

#[test]
fn malformed_asserts_are_reported_even_when_lowering_fails() {
    let src = r#"pipeline p {
  stage s { step a { run = "a"  needs = [nope] } }
  assert x {
    to      = a
    trough  = [a]
    message = "${1}"
    from    = 1 + 2
  }
  assert x { to = a  through = [a] }
}
"#;
    let (_, diags) = check(src);
    let got: Vec<(&str, &str, Option<&str>)> = errors(&diags)
        .iter()
        .map(|d| (d.code, text(src, d.span), d.help.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("pipe::unknown-step", "nope", None),
            ("pipe::assert", "x", Some("write e.g. `from = stage.build  to = stage.production  through = [approve]`")),
            ("pipe::unknown-attribute", "trough", Some("did you mean `through`?")),
            ("pipe::type", "\"${1}\"", Some("an assert is proved before any value exists: write the text out")),
            ("pipe::assert-selector", "1 + 2", Some("write a step name (`approve`), `stage.production`, or a glob string (`\"scan-*\"`)")),
            ("pipe::duplicate", "x", None),
        ]
    );
}

#[test]
fn a_run_for_one_env_proves_the_asserts_for_every_env() {
    let production = r#"    gate approve = approval { timeout = 1h }
    step "release-api" { run = "release api"  needs = [approve] }
    step "release-worker" { run = "release worker"  needs = ["image-worker"] }"#;
    for (assert, ok) in [(ASSERT, false), ("", true)] {
        let src = pipeline(production, assert);
        let ws = load(&src);
        let (m, pl) = ws.pipelines().next().expect("pipeline");
        for env in ["staging", "prod"] {
            let ctx = Context {
                target_env: Some(env.to_string()),
                ..Context::offline()
            };
            let (plan, diags) = pipe_lang::lower(&ws, m, pl, &ctx);
            assert_eq!(plan.is_some(), ok, "env {env}: {diags:#?}");
            if !ok {
                assert_eq!(errors(&diags)[0].code, "pipe::assert", "env {env}");
            }
        }
    }
}

#[test]
fn the_file_name_is_in_the_rendered_report() {
    let production = r#"    gate approve = approval { timeout = 1h }
    step "release-api" { run = "release api"  needs = ["image-api"] }"#;
    let src = pipeline(production, ASSERT);
    let (ws, diags) = check(&src);
    let out = render(&ws, &diags);
    assert!(out.contains(&format!("[{FILE}:")), "{out}");
    assert!(
        out.contains("path: build.image-api → production.release-api"),
        "{out}"
    );
}
