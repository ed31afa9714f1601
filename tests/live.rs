//! The live view of `pipe run` on a real terminal (a pty made by util-linux
//! `script`), steps that hit their timeout, and `pipe graph` estimates from
//! the durations a run recorded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{finish, pipe_bin, Ran};

const SECRET: &str = "sup3r-s3cret-t0ken-live";

/// a, then slow (1 s), quick and flaky (fails once, retried) at once, then
/// d: the run's critical path is a → slow → d.
const DIAMOND: &str = r#"pipeline p {
  env dev { secrets = ["API_TOKEN"] }
  stage build {
    env = dev
    step a { run = "echo starting a; sleep 0.2" }
    step slow {
      needs = [a]
      env   = { TOKEN = secrets.API_TOKEN }
      run   = "echo token is $TOKEN; sleep 1"
    }
    step quick { needs = [a]  run = "sleep 0.1" }
    step flaky {
      needs = [a]
      retry { attempts = 2  backoff = fixed(100ms) }
      run   = "if [ -f once ]; then exit 0; fi; touch once; echo first try fails; exit 3"
    }
    step d { needs = [slow, quick, flaky]  run = "echo all done" }
  }
}
"#;

fn project(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(dir.path().join("pipelines/p.pipe"), pipeline).expect("write");
    dir
}

/// `pipe ARGS` with stdin and stdout a pty, as on a developer's terminal.
fn on_terminal(dir: &Path, args: &str, no_color: bool) -> Ran {
    in_pty(dir, &format!("{} {args}", pipe_bin().display()), no_color)
}

/// Runs the shell command `line` on a pty.
fn in_pty(dir: &Path, line: &str, no_color: bool) -> Ran {
    let mut c = Command::new("script");
    c.args(["-qfec", line, "/dev/null"])
        .current_dir(dir)
        .env_remove("CI")
        .env_remove("PIPE_STATE_DIR")
        .env("PIPE_KILL_GRACE_MS", "300")
        .env("API_TOKEN", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if no_color {
        c.env("NO_COLOR", "1");
    } else {
        c.env_remove("NO_COLOR");
    }
    let mut child = c.spawn().expect("spawn script (util-linux)");
    // Held open until the end: EOF on its stdin would end `script` early.
    let stdin = child.stdin.take();
    let r = finish(child, Duration::from_mins(1));
    drop(stdin);
    r
}

/// Runs `pipe` without a terminal.
fn plain(dir: &Path, args: &[&str]) -> Ran {
    let child = Command::new(pipe_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("PIPE_STATE_DIR")
        .env("PIPE_KILL_GRACE_MS", "300")
        .env("API_TOKEN", SECRET)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pipe");
    finish(child, Duration::from_mins(1))
}

/// SGR sequences (colours), as opposed to the cursor moves that redraw.
fn has_colour(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == 0x1b && b.get(i + 1) == Some(&b'[') && {
            let rest = &b[i + 2..];
            let n = rest
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == b';')
                .count();
            rest.get(n) == Some(&b'm')
        }
    })
}

/// `s` without escape sequences (CSI: colours, cursor moves).
fn strip(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// The summary table's row of a step (`* ` on the critical path, else `  `).
fn row(out: &str, step: &str) -> String {
    strip(out)
        .lines()
        .rfind(|l| {
            l.get(2..)
                .is_some_and(|r| r.starts_with(&format!("{step} ")))
        })
        .unwrap_or_else(|| panic!("no summary row for {step} in:\n{out}"))
        .to_string()
}

#[test]
fn live_view_on_a_terminal_shows_steps_and_the_run_critical_path() {
    let dir = project(DIAMOND);
    let r = on_terminal(dir.path(), "run p", true);
    assert_eq!(r.code, 0, "{}", r.all());
    let out = &r.stdout;
    for step in [
        "build.a",
        "build.slow",
        "build.quick",
        "build.flaky",
        "build.d",
    ] {
        assert!(out.contains(step), "no {step}: {}", r.all());
    }
    // The retry is visible, and the step's second attempt succeeded.
    assert!(
        out.contains("attempt 1 failed (exit code 3); retrying in"),
        "{}",
        r.all()
    );
    assert!(row(out, "build.flaky").contains("ok"), "{}", r.all());
    assert!(row(out, "build.flaky").contains("   2   "), "{}", r.all());
    // The summary marks the path through the slow step, not the others.
    assert!(row(out, "build.slow").starts_with("* "), "{}", r.all());
    assert!(row(out, "build.a").starts_with("* "), "{}", r.all());
    assert!(row(out, "build.d").starts_with("* "), "{}", r.all());
    assert!(row(out, "build.quick").starts_with("  "), "{}", r.all());
    let path = out
        .lines()
        .find(|l| l.starts_with("critical path of this run ("))
        .unwrap_or_else(|| panic!("no critical path: {}", r.all()));
    assert!(
        path.trim_end()
            .ends_with("): build.a → build.slow → build.d"),
        "{path}"
    );
    // Its total is at least the sleeps along it (0.2 s + 1 s).
    let total = path["critical path of this run (".len()..]
        .split(')')
        .next()
        .expect("total");
    let secs: f64 = total.trim_end_matches('s').parse().unwrap_or(0.0);
    assert!(secs >= 1.2, "total {total} in {path}");
    assert!(out.contains("[run 1] succeeded in"), "{}", r.all());
    // Secrets stay masked on the terminal, and NO_COLOR means no colour.
    assert!(!out.contains(SECRET), "the secret leaked: {}", r.all());
    assert!(!has_colour(out), "colour despite NO_COLOR: {out:?}");
    // The state and plain output are those of any run.
    let status = plain(dir.path(), &["status", "--format", "json"]);
    assert!(status.stdout.contains("\"succeeded\""), "{}", status.all());
}

#[test]
fn more_running_steps_than_terminal_rows_are_counted_in_the_footer() {
    let mut steps = String::new();
    for i in 1..=8 {
        steps.push_str(&format!("    step s{i} {{ run = \"sleep 1\" }}\n"));
    }
    let dir = project(&format!(
        "pipeline p {{\n  stage wide {{\n{steps}  }}\n}}\n"
    ));
    // Six rows: four step lines, the footer and the cursor's line.
    let r = in_pty(
        dir.path(),
        &format!(
            "stty rows 6 cols 100; {} run p --jobs 8",
            pipe_bin().display()
        ),
        true,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let out = &r.stdout;
    assert!(
        out.contains("8 running (4 not shown: the terminal is full)"),
        "{}",
        r.all()
    );
    for i in 1..=8 {
        assert!(
            row(out, &format!("wide.s{i}")).contains("ok"),
            "{}",
            r.all()
        );
    }
    assert!(out.contains("[run 1] succeeded in"), "{}", r.all());
}

#[test]
fn live_view_shows_a_timeout_in_colour_with_the_last_log_lines() {
    let dir = project(
        r#"pipeline p {
  stage s {
    step hang { timeout = 500ms  run = "echo hanging on; sleep 30" }
  }
}
"#,
    );
    let r = on_terminal(dir.path(), "run p", false);
    assert_eq!(r.code, 1, "{}", r.all());
    let out = &r.stdout;
    assert!(has_colour(out), "no colour on a terminal: {out:?}");
    assert!(row(out, "s.hang").contains("timed out"), "{}", r.all());
    // The failed step's last lines are shown under it.
    assert!(out.contains("│ hanging on"), "{}", r.all());
    assert!(
        out.contains("[run 1] failed in") && out.contains("(first failure: s.hang)"),
        "{}",
        r.all()
    );
}

#[test]
fn a_step_that_hits_its_timeout_is_timed_out_not_failed() {
    let dir = project(
        r#"pipeline p {
  stage s {
    step hang { timeout = 300ms  run = "sleep 30" }
  }
  stage warn {
    required = false
    step slow { timeout = 300ms  run = "sleep 30" }
  }
}
"#,
    );
    let r = plain(
        dir.path(),
        &["run", "p", "--keep-going", "--output", "json"],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let events: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let finished = |id: &str| {
        events
            .iter()
            .find(|e| e["event"] == "step_finished" && e["step"] == id)
            .unwrap_or_else(|| panic!("no step_finished for {id}: {}", r.stdout))
    };
    assert_eq!(finished("s.hang")["status"], "timed_out");
    assert!(
        finished("s.hang")["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out after")),
        "{}",
        r.stdout
    );
    assert_eq!(finished("warn.slow")["status"], "timed_out");
    assert!(
        events.iter().any(|e| e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("`warn.slow` timed out, but"))),
        "{}",
        r.stdout
    );
    let end = events.last().expect("events");
    assert_eq!(end["event"], "run_finished");
    assert_eq!(end["status"], "failed");
    assert_eq!(end["failed_step"], "s.hang");
    let st = plain(dir.path(), &["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
    let status = |id: &str| {
        v["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["step"] == id)
            .map(|s| s["status"].clone())
    };
    assert_eq!(status("s.hang"), Some("timed_out".into()), "{v}");
    // Plain output says it too.
    let r = plain(dir.path(), &["run", "p", "--output", "plain"]);
    assert!(r.stdout.contains("[s.hang] timed_out in"), "{}", r.all());
}
