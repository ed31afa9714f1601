//! Renderers of run events: `plain` (one prefixed line per log line and
//! event), `json` (one object per line, see docs/events.md) and `human`
//! (plain lines plus a summary table at the end).

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use pipe_runtime::{Event, Sink};

/// The output format of `pipe run` and `pipe resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Plain,
    Json,
}

/// Renders events to stdout.
pub struct Renderer {
    format: Output,
    /// (step, status, attempt, duration) of finished steps, for the summary.
    finished: Vec<(String, String, u32, u64)>,
    /// (step, summary) of chaos blocks torn down, for the summary.
    chaos: Vec<(String, String)>,
    /// Whether the summary may use colour (a terminal, not `NO_COLOR`).
    color: bool,
}

impl Renderer {
    pub fn new(format: Output) -> Self {
        use std::io::IsTerminal as _;
        // The summary table is for people: not on a pipe, nor in CI.
        let format = if format == Output::Human
            && (!std::io::stdout().is_terminal() || std::env::var_os("CI").is_some())
        {
            Output::Plain
        } else {
            format
        };
        Renderer {
            format,
            finished: Vec::new(),
            chaos: Vec::new(),
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn line(s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }
}

pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000)
    }
}

impl Sink for Renderer {
    fn emit(&mut self, e: &Event) {
        if self.format == Output::Json {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("ts_ms".into(), ts.into());
            }
            Self::line(&v.to_string());
            return;
        }
        match e {
            Event::RunStarted {
                run,
                pipeline,
                steps,
                resumed,
            } => Self::line(&format!(
                "[run {run}] {} `{pipeline}` ({steps} steps)",
                if *resumed { "resuming" } else { "running" }
            )),
            Event::StepStarted { step, attempt, .. } => {
                if *attempt > 1 {
                    Self::line(&format!("[{step}] started (attempt {attempt})"));
                } else {
                    Self::line(&format!("[{step}] started"));
                }
            }
            Event::StepLog { step, line, .. } => Self::line(&format!("[{step}] | {line}")),
            Event::StepRetrying {
                step,
                attempt,
                delay_ms,
                error,
                ..
            } => Self::line(&format!(
                "[{step}] attempt {attempt} failed ({error}); retrying in {}",
                duration(*delay_ms)
            )),
            Event::StepSkipped { step, reason, .. } => {
                self.finished.push((step.clone(), "skipped".into(), 0, 0));
                Self::line(&format!("[{step}] skipped: {reason}"));
            }
            Event::StepCached {
                step,
                key,
                from_run,
                ..
            } => {
                self.finished.push((step.clone(), "cached".into(), 0, 0));
                Self::line(&format!(
                    "[{step}] cached: outputs restored from run {from_run} (key {key})"
                ));
            }
            Event::CacheMiss { step, reason, .. } => {
                Self::line(&format!("[{step}] cache miss: {reason}"));
            }
            Event::StepFinished {
                step,
                attempt,
                status,
                duration_ms,
                error,
                location,
                required,
                ..
            } => {
                self.finished
                    .push((step.clone(), status.clone(), *attempt, *duration_ms));
                let mut s = format!("[{step}] {status} in {}", duration(*duration_ms));
                if let Some(err) = error {
                    s.push_str(&format!(": {err}"));
                }
                if let Some(l) = location {
                    if !error.as_deref().is_some_and(|e| e.contains(l.as_str())) {
                        s.push_str(&format!(" (step at {l})"));
                    }
                }
                if status == "failed" && !required {
                    s.push_str(" [not required: only a warning]");
                }
                Self::line(&s);
            }
            Event::GateOpened {
                step,
                approvers,
                min_approvals,
                deadline_ms,
                message,
                shown,
                how,
                approved_by,
                ..
            } => {
                let mut s = format!(
                    "[{step}] waiting for {} of: {} (until {})",
                    if *min_approvals == 1 {
                        "an approval by one".to_string()
                    } else {
                        format!("approvals by {min_approvals} different people")
                    },
                    approvers.join(", "),
                    pipe_runtime::time::rfc3339(*deadline_ms)
                );
                if *how == "replanned" {
                    s.push_str(" [the plan changed: earlier approvals no longer count]");
                }
                if !approved_by.is_empty() {
                    s.push_str(&format!(" [approved so far by {}]", approved_by.join(", ")));
                }
                Self::line(&s);
                if let Some(m) = message {
                    Self::line(&format!("[{step}]   {m}"));
                }
                for v in shown {
                    Self::line(&format!("[{step}]   {}:", v.label));
                    for l in v.value.lines() {
                        Self::line(&format!("[{step}]     {l}"));
                    }
                }
            }
            Event::GateDecided {
                step,
                decision,
                by,
                comment,
                ..
            } => {
                let mut s = format!("[{step}] {decision} by {}", by.join(", "));
                if let Some(c) = comment {
                    s.push_str(&format!(": {c}"));
                }
                Self::line(&s);
            }
            Event::GateExpired {
                step, deadline_ms, ..
            } => Self::line(&format!(
                "[{step}] expired: no decision by {}; the gate fails closed",
                pipe_runtime::time::rfc3339(*deadline_ms)
            )),
            Event::GatePrompt { step, user, .. } => Self::line(&format!(
                "[{step}] decide as {user}? y = approve, n = reject, Enter = leave it to others"
            )),
            Event::GateRefused {
                step, user, reason, ..
            } => Self::line(&format!("[{step}] decision as {user} refused: {reason}")),
            Event::RunWaiting {
                run,
                gates,
                duration_ms,
            } => Self::line(&format!(
                "[run {run}] waiting at {} after {}: decide with `pipe approve {run} GATE` or `pipe reject {run} GATE`, then `pipe resume {run}`",
                gates.join(", "),
                duration(*duration_ms)
            )),
            Event::Warning { step, message, .. } => {
                // The step is shown as a warning, not a failure, in the summary.
                if let Some(f) = self.finished.iter_mut().rev().find(|f| f.0 == *step) {
                    f.1 = "warning".into();
                }
                Self::line(&format!("[{step}] warning: {message}"));
            }
            Event::ChaosReport { step, summary, .. } => {
                self.chaos.push((step.clone(), summary.clone()));
                Self::line(&format!("[{step}] chaos report: {summary}"));
            }
            Event::RunFinished {
                run,
                status,
                failed_step,
                duration_ms,
            } => {
                if self.format == Output::Human && !self.finished.is_empty() {
                    let w = self
                        .finished
                        .iter()
                        .map(|f| f.0.len())
                        .max()
                        .unwrap_or(4)
                        .max(4);
                    Self::line(&format!(
                        "\n{:w$}  {:10}  {:>8}  {:>9}",
                        "step", "status", "attempts", "duration"
                    ));
                    for (step, st, a, d) in &self.finished {
                        let status = format!("{st:10}");
                        let status = match (self.color, st.as_str()) {
                            (true, "warning") => format!("\x1b[33m{status}\x1b[0m"),
                            (true, "failed") => format!("\x1b[31m{status}\x1b[0m"),
                            _ => status,
                        };
                        Self::line(&format!("{step:w$}  {status}  {a:>8}  {:>9}", duration(*d)));
                    }
                    for (step, summary) in &self.chaos {
                        Self::line(&format!("chaos {step}: {summary}"));
                    }
                }
                let mut s = format!("[run {run}] {status} in {}", duration(*duration_ms));
                let warnings = self.finished.iter().filter(|f| f.1 == "warning").count();
                if warnings > 0 {
                    s.push_str(&format!(" with {warnings} warning(s)"));
                }
                if let Some(f) = failed_step {
                    s.push_str(&format!(" (first failure: {f})"));
                }
                Self::line(&s);
            }
        }
    }
}
