//! `pipe report` and `pipe graph --format svg` over a real run: a real
//! pipeline runs (real processes, a retry, a warn-only failure, a secret), its
//! report is written as HTML, Markdown and JSON and checked; the HTML page is
//! opened in a real headless Chromium, its DOM checked and a screenshot kept.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{pipe_bin, run_bounded};

/// compile (1s) then unit (0.5s) is the longest chain; flaky fails once and is
/// retried; `breaks` fails in a warn-only stage; `unit` handles a secret.
const DEMO: &str = r#"pipeline demo {
  param name: string = "world"
  stage build {
    step compile { run = "echo compiling ${name}; sleep 1; echo version=1.2.3 >> $PIPE_OUTPUT" }
    step lint { run = "echo linting" }
    step flaky {
      run = "if [ $PIPE_ATTEMPT -lt 2 ]; then echo 'not yet' >&2; exit 3; fi; echo ok"
      retry { attempts = 3  backoff = fixed(200ms) }
    }
  }
  stage test {
    needs = [build]
    step unit {
      run = "echo token is $TOKEN; echo secret=$TOKEN >> $PIPE_OUTPUT; echo warning=coverage fell to 71% >> $PIPE_OUTPUT; sleep 0.5"
      env = { TOKEN = secrets.DEMO_TOKEN }
    }
  }
  stage chaos {
    needs    = [build]
    required = false
    step breaks { run = "echo boom; exit 4" }
  }
}
"#;

const SECRET: &str = "hunter2-correct-horse";

const STEPS: [&str; 5] = [
    "build.compile",
    "build.lint",
    "build.flaky",
    "test.unit",
    "chaos.breaks",
];

struct Ran {
    dir: tempfile::TempDir,
}

impl Ran {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn pipe(&self, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
        let mut c = Command::new(pipe_bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("PIPE_STATE_DIR")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITHUB_RUN_ID");
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = run_bounded(&mut c, Duration::from_mins(1));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Runs the demo pipeline once, for real.
fn demo_run() -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(dir.path().join("pipelines/demo.pipe"), DEMO).expect("write");
    let ran = Ran { dir };
    let (code, out, err) = ran.pipe(
        &["run", "demo", "--output", "plain"],
        &[("DEMO_TOKEN", SECRET)],
    );
    assert_eq!(code, 0, "pipe run: {out}\n{err}");
    ran
}

fn json_report(ran: &Ran) -> serde_json::Value {
    let (code, out, err) = ran.pipe(&["report", "--format", "json"], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("report json")
}

#[test]
fn json_report_has_timeline_critical_path_and_masked_outputs() {
    let ran = demo_run();
    let v = json_report(&ran);
    assert_eq!(v["run"]["status"], "succeeded");
    assert_eq!(v["run"]["params"]["name"], "world");
    assert_eq!(
        v["critical_path"],
        serde_json::json!(["build.compile", "test.unit"])
    );
    let steps = v["steps"].as_array().expect("steps");
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, STEPS);
    let step = |id: &str| steps.iter().find(|s| s["id"] == id).expect(id);
    // The retried step: running, retrying (the backoff), running again.
    let flaky = step("build.flaky");
    assert_eq!(flaky["attempts"], 2);
    let kinds: Vec<(&str, u64)> = flaky["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] != "queued")
        .map(|s| (s["kind"].as_str().unwrap(), s["attempt"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, [("running", 1), ("retrying", 1), ("running", 2)]);
    let retry = flaky["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "retrying")
        .unwrap();
    let waited = retry["end_ms"].as_i64().unwrap() - retry["start_ms"].as_i64().unwrap();
    assert!(
        (150..5000).contains(&waited),
        "a 200ms ±20% backoff took {waited}ms"
    );
    // `unit` waited for all of build: it queued until compile finished.
    let compile = step("build.compile");
    let unit = step("test.unit");
    assert!(unit["started_ms"].as_i64() >= compile["finished_ms"].as_i64());
    assert_eq!(compile["critical"], true);
    assert_eq!(step("build.lint")["critical"], false);
    assert_eq!(compile["outputs"]["version"], "1.2.3");
    assert!(compile["duration_ms"].as_u64().unwrap() >= 1000);
    // The secret was masked before it was stored: no file of the state
    // directory (database, WAL, logs) holds it.
    assert_eq!(unit["outputs"]["secret"], "***");
    let mut stack = vec![ran.path(".pipe")];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("state dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                assert!(
                    !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "{} holds the secret",
                    p.display()
                );
                files += 1;
            }
        }
    }
    assert!(files >= 6, "only {files} files in the state directory");
    assert_eq!(unit["logs"][0]["name"], "attempt 1");
    assert_eq!(unit["logs"][0]["text"], "token is ***\n");
    assert_eq!(step("build.flaky")["logs"][0]["text"], "not yet\n");
    let breaks = step("chaos.breaks");
    assert_eq!(breaks["status"], "failed");
    assert_eq!(breaks["exit_code"], 4);
    assert_eq!(breaks["required"], false);
    let warnings: Vec<(String, String)> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["step"].as_str().unwrap_or("").to_string(),
                w["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        warnings,
        [
            ("build.flaky".to_string(), "retried".to_string()),
            ("test.unit".to_string(), "output".to_string()),
            ("chaos.breaks".to_string(), "warn-only failure".to_string()),
        ]
    );
    assert!(v["approvals"].as_array().unwrap().is_empty());
}

#[test]
fn html_report_is_self_contained_and_marks_every_step() {
    let ran = demo_run();
    let (code, out, err) = ran.pipe(&["report", "--html", "report.html"], &[]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert_eq!(err, "wrote report.html\n");
    let html = std::fs::read_to_string(ran.path("report.html")).expect("report.html");
    assert!(!html.contains(SECRET), "the secret leaked into the report");
    assert!(html.contains("token is ***"));
    // Nothing to fetch: no external scripts, styles, images or links.
    for bad in ["<link", " src=", "@import", "url(http", "href=\"http"] {
        assert!(!html.contains(bad), "the page refers outside itself: {bad}");
    }
    // In the timeline, the DAG, the table and the details.
    for id in STEPS {
        let n = html.matches(&format!("data-step=\"{id}\"")).count();
        assert!(n >= 4, "{id} is in {n} views");
    }
    assert!(html.contains("<details class=\"log\"><summary>log, attempt 2 (1 lines)</summary><pre>ok\n</pre></details>"));
}

#[test]
fn markdown_summary_is_printed_and_appended_to_the_step_summary() {
    let ran = demo_run();
    let summary = ran.path("summary.md");
    std::fs::write(&summary, "earlier content\n").expect("write");
    let (code, out, err) = ran.pipe(
        &["report", "--markdown"],
        &[
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ("GITHUB_SERVER_URL", "https://github.example"),
            ("GITHUB_REPOSITORY", "acme/app"),
            ("GITHUB_RUN_ID", "42"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("## ✅ pipe run 1 `demo`: succeeded in "),
        "{out}"
    );
    assert_eq!(lines[2], "| step | status | attempts | duration | exit |");
    assert!(lines[4].starts_with("| **◆** `build.compile` | ✅ succeeded | 1 | "));
    assert!(lines[6].starts_with("| `build.flaky` | ✅ succeeded | 2 | "));
    assert!(lines[8].starts_with("| `chaos.breaks` (warn only) | ❌ failed | 1 | "));
    assert!(lines[8].ends_with(" | 4 |"));
    assert!(
        out.contains(", ◆ in the table): `build.compile` → `test.unit`\n"),
        "{out}"
    );
    assert!(out.contains("- `test.unit` **output**: coverage fell to 71%\n"));
    assert!(out.contains("- `chaos.breaks` **warn-only failure**: failed in a stage that is not required: exit code 4\n"));
    assert!(out.ends_with(
        "[CI run](https://github.example/acme/app/actions/runs/42) · logs: `pipe logs 1`, state: `pipe status 1`\n"
    ));
    let appended = std::fs::read_to_string(&summary).expect("summary");
    assert_eq!(appended, format!("earlier content\n{out}\n"));
}

#[test]
fn report_of_a_missing_run_says_so() {
    let ran = demo_run();
    let (code, _, err) = ran.pipe(&["report", "7"], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: no run `7` in the state store (see `pipe runs`)\n"
    );
    let empty = tempfile::tempdir().expect("tempdir");
    let out = run_bounded(
        Command::new(pipe_bin())
            .args(["report"])
            .current_dir(empty.path())
            .env_remove("PIPE_STATE_DIR"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no runs yet"));
}

#[test]
fn graph_svg_is_drawn_without_graphviz_and_marks_the_critical_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("pipelines/diamond.pipe"),
        r#"pipeline diamond {
  stage s {
    step a { run = "true"  estimate = 1m }
    step b { run = "true"  estimate = 3m  needs = [a] }
    step c { run = "true"  estimate = 1m  needs = [a] }
    step d { run = "true"  estimate = 1m  needs = [b, c] }
  }
}
"#,
    )
    .expect("write");
    // An empty PATH: no `dot` can be found, so the drawing is our own.
    let out = run_bounded(
        Command::new(pipe_bin())
            .args(["graph", "diamond", "--format", "svg"])
            .current_dir(dir.path())
            .env("PATH", ""),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0));
    let svg = String::from_utf8(out.stdout).expect("utf-8");
    assert!(svg.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n<svg class=\"dag\""
    ));
    assert!(svg.contains("<title>diamond — critical path 5m</title>"));
    for (id, critical) in [("s.a", true), ("s.b", true), ("s.c", false), ("s.d", true)] {
        let class = if critical { "node critical" } else { "node" };
        assert!(
            svg.contains(&format!("class=\"{class}\" data-step=\"{id}\"")),
            "{id}: {svg}"
        );
    }
    for (from, to, critical) in [
        ("s.a", "s.b", true),
        ("s.a", "s.c", false),
        ("s.b", "s.d", true),
        ("s.c", "s.d", false),
    ] {
        let class = if critical { "edge critical" } else { "edge" };
        assert!(
            svg.contains(&format!(
                "class=\"{class}\" data-from=\"{from}\" data-to=\"{to}\""
            )),
            "{from}->{to}"
        );
    }
    assert!(svg.contains(">est 3m · slack 0s<"), "{svg}");
    assert!(svg.contains(">est 1m · slack 2m<"), "{svg}");
}

/// Chromium, which `.ci/run` installs: a missing browser fails the test.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("PIPE_TEST_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium found for the browser test of the run report.\n  help: `apt-get install chromium` (.ci/run does), or set PIPE_TEST_CHROMIUM to a Chrome binary"
    );
}

/// Runs headless Chromium on a file with its own profile, bounded in time.
fn headless(page: &Path, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--window-size=1400,1800",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(format!("file://{}", page.display()));
    let out = run_bounded(&mut c, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The errors the page's own trap collected (empty when none).
fn page_errors(dom: &str) -> String {
    let re = regex::Regex::new(r#"<pre id="console-errors"[^>]*>([^<]*)</pre>"#).unwrap();
    re.captures(dom)
        .map(|c| c[1].to_string())
        .expect("the page has its #console-errors trap")
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let ran = demo_run();
    let (code, _, err) = ran.pipe(&["report", "--html", "report.html"], &[]);
    assert_eq!(code, 0, "{err}");
    let page = ran.path("report.html");
    let (dom, stderr) = headless(&page, &["--dump-dom"]);
    // The script ran to its end, and nothing went wrong on the way.
    assert!(dom.contains("<html lang=\"en\" data-js=\"ok\">"), "{dom}");
    assert_eq!(page_errors(&dom), "", "the page reported errors");
    assert!(!stderr.contains("Uncaught"), "{stderr}");
    // The script filled in the step count from the table it found.
    assert!(dom.contains("<span id=\"step-count\">5</span>"));
    for id in STEPS {
        for view in [
            format!("<g class=\"gantt-row[^\"]*\" data-step=\"{id}\">"),
            format!("<g class=\"node[^\"]*\" data-step=\"{id}\">"),
            format!("<tr data-step=\"{id}\" class=\"[^\"]*\">"),
            format!("<details class=\"step[^\"]*\" id=\"step-{id}\" data-step=\"{id}\">"),
        ] {
            let re = regex::Regex::new(&view.replace('.', "\\.")).unwrap();
            assert!(re.is_match(&dom), "{id} missing: {view}");
        }
    }
    for id in ["build.compile", "test.unit"] {
        for marked in [
            format!("<g class=\"gantt-row critical status-succeeded\" data-step=\"{id}\">"),
            format!("<g class=\"node critical succeeded\" data-step=\"{id}\">"),
            format!("<tr data-step=\"{id}\" class=\"critical\">"),
            format!("<li class=\"critical\" data-step=\"{id}\">"),
        ] {
            assert!(dom.contains(&marked), "{id} not marked critical: {marked}");
        }
    }
    assert!(
        dom.contains("class=\"edge critical\" data-from=\"build.compile\" data-to=\"test.unit\"")
    );
    for id in ["build.lint", "build.flaky", "chaos.breaks"] {
        assert!(!dom.contains(&format!("class=\"critical\" data-step=\"{id}\"")));
        assert!(!dom.contains(&format!("node critical succeeded\" data-step=\"{id}\"")));
    }
    // The screenshot is kept as an artifact.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&shots).expect("mkdir");
    let shot = shots.join("report.png");
    let _ = std::fs::remove_file(&shot);
    headless(&page, &[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a suspiciously small screenshot: {} bytes",
        png.len()
    );
    std::fs::copy(&page, shots.join("report.html")).expect("keep the page");
    println!("report screenshot: {}", shot.display());
}

/// The error trap is what proves "no console errors": check that it catches
/// a script error, a console.error and a fetch from outside the page.
#[test]
fn the_page_error_trap_catches_errors() {
    let ran = demo_run();
    let (code, _, err) = ran.pipe(&["report", "--html", "report.html"], &[]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(ran.path("report.html")).expect("read");
    let broken = html.replace(
        "</main>",
        "<img src=\"http://127.0.0.1:9/x.png\"><script>console.error('told'); notDefined();</script></main>",
    );
    let page = ran.path("broken.html");
    std::fs::write(&page, broken).expect("write");
    let (dom, _) = headless(&page, &["--dump-dom"]);
    let errors = page_errors(&dom);
    assert!(errors.contains("console.error: told"), "{errors}");
    assert!(errors.contains("notDefined"), "{errors}");
    assert!(
        errors.contains("blocked by the page policy: img-src http://127.0.0.1:9/x.png"),
        "{errors}"
    );
}

/// A real approval gate: the run stops waiting (exit 3), alice approves, the
/// resumed run finishes; the report shows the wait and the decision.
#[test]
fn report_shows_the_wait_at_a_gate_and_who_approved() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("pipelines/gated.pipe"),
        r#"pipeline gated {
  stage staging {
    step smoke { run = "echo ok" }
  }
  stage production {
    needs = [staging]
    gate approve = approval { approvers = ["alice"]  timeout = 1h }
    step deploy { needs = [approve]  run = "echo deploying" }
  }
}
"#,
    )
    .expect("write");
    let ran = Ran { dir };
    let as_user = |user: &'static str| [("PIPE_USER", user)];
    let (code, out, err) = ran.pipe(&["run", "gated", "--output", "plain"], &as_user("carol"));
    assert_eq!(code, 3, "{out}\n{err}");
    let (code, _, err) = ran.pipe(
        &["approve", "1", "production.approve", "--comment", "ship it"],
        &as_user("alice"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = ran.pipe(&["resume", "1", "--output", "plain"], &as_user("carol"));
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json_report(&ran);
    let a = &v["approvals"][0];
    assert_eq!(a["step"], "production.approve");
    assert_eq!(a["decision"], "approved");
    assert_eq!(a["by"], "alice");
    assert_eq!(a["comment"], "ship it");
    assert_eq!(a["decisions"][0]["via"], "cli");
    let gate = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "production.approve")
        .expect("gate step");
    assert!(
        gate["segments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "waiting"),
        "no wait in {gate}"
    );
    let (code, md, _) = ran.pipe(&["report", "--markdown"], &[]);
    assert_eq!(code, 0);
    assert!(
        md.contains("| `production.approve` | approved | alice | ship it |\n"),
        "{md}"
    );
    let (code, _, err) = ran.pipe(&["report", "--html", "r.html"], &[]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(ran.path("r.html")).expect("html");
    assert!(html.contains("<section id=\"approvals\">"));
    assert!(html.contains("<strong>approve</strong> by alice via cli: ship it</li>"));
    assert!(html.contains("class=\"seg waiting "));
}
