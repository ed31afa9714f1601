//! Renderers of run events: `plain` (one prefixed line per log line and
//! event), `json` (one object per line, see docs/events.md) and `human`
//! (the live view of [`live`], with a summary table and the run's critical
//! path).

mod live;
pub mod summary;

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
    /// The live view, with `human` on a terminal.
    live: Option<live::Live>,
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
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Renderer {
            format,
            finished: Vec::new(),
            live: (format == Output::Human).then(|| live::Live::new(color)),
        }
    }

    /// The plan being run: the live view draws its critical path from it.
    pub fn with_plan(mut self, plan: &pipe_lang::Plan) -> Self {
        if let Some(l) = &mut self.live {
            let longest = plan.steps().iter().map(|s| s.id.len()).max().unwrap_or(0);
            l.set_graph(summary::RunGraph::from_plan(plan), longest);
        }
        self
    }

    fn line(&self, s: &str) {
        if let Some(l) = &self.live {
            l.println(s);
            return;
        }
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
            self.line(&v.to_string());
            return;
        }
        if self.live.as_mut().is_some_and(|l| l.emit(e)) {
            return;
        }
        match e {
            Event::RunStarted {
                run,
                pipeline,
                steps,
                resumed,
            } => self.line(&format!(
                "[run {run}] {} `{pipeline}` ({steps} steps)",
                if *resumed { "resuming" } else { "running" }
            )),
            Event::StepStarted { step, attempt, .. } => {
                if *attempt > 1 {
                    self.line(&format!("[{step}] started (attempt {attempt})"));
                } else {
                    self.line(&format!("[{step}] started"));
                }
            }
            Event::StepLog { step, line, .. } => self.line(&format!("[{step}] | {line}")),
            Event::StepRetrying {
                step,
                attempt,
                delay_ms,
                error,
                ..
            } => self.line(&format!(
                "[{step}] attempt {attempt} failed ({error}); retrying in {}",
                duration(*delay_ms)
            )),
            Event::StepSkipped { step, reason, .. } => {
                self.finished.push((step.clone(), "skipped".into(), 0, 0));
                self.line(&format!("[{step}] skipped: {reason}"));
            }
            Event::StepCached {
                step,
                key,
                from_run,
                ..
            } => {
                self.finished.push((step.clone(), "cached".into(), 0, 0));
                self.line(&format!(
                    "[{step}] cached: outputs restored from run {from_run} (key {key})"
                ));
            }
            Event::CacheMiss { step, reason, .. } => {
                self.line(&format!("[{step}] cache miss: {reason}"));
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
                if (status == "failed" || status == "timed_out") && !required {
                    s.push_str(" [not required: only a warning]");
                }
                self.line(&s);
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
                self.line(&s);
                if let Some(m) = message {
                    self.line(&format!("[{step}]   {m}"));
                }
                for v in shown {
                    self.line(&format!("[{step}]   {}:", v.label));
                    for l in v.value.lines() {
                        self.line(&format!("[{step}]     {l}"));
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
                self.line(&s);
            }
            Event::GateExpired {
                step, deadline_ms, ..
            } => self.line(&format!(
                "[{step}] expired: no decision by {}; the gate fails closed",
                pipe_runtime::time::rfc3339(*deadline_ms)
            )),
            Event::GatePrompt { step, user, .. } => self.line(&format!(
                "[{step}] decide as {user}? y = approve, n = reject, Enter = leave it to others"
            )),
            Event::GateRefused {
                step, user, reason, ..
            } => self.line(&format!("[{step}] decision as {user} refused: {reason}")),
            Event::RunWaiting {
                run,
                gates,
                duration_ms,
            } => self.line(&format!(
                "[run {run}] waiting at {} after {}: decide with `pipe approve {run} GATE` or `pipe reject {run} GATE`, then `pipe resume {run}`",
                gates.join(", "),
                duration(*duration_ms)
            )),
            Event::Warning { step, message, .. } => {
                // The step is shown as a warning, not a failure, in the summary.
                if let Some(f) = self.finished.iter_mut().rev().find(|f| f.0 == *step) {
                    f.1 = "warning".into();
                }
                self.line(&format!("[{step}] warning: {message}"));
            }
            Event::ChaosReport { step, summary, .. } => {
                self.line(&format!("[{step}] chaos report: {summary}"));
            }
            Event::RunFinished {
                run,
                status,
                failed_step,
                duration_ms,
            } => {
                let warnings = self.finished.iter().filter(|f| f.1 == "warning").count();
                self.line(&run_finished_line(
                    run,
                    status,
                    *duration_ms,
                    warnings,
                    failed_step.as_deref(),
                ));
            }
        }
    }
}

/// The last line of a run, in every human output: `[run 3] failed in 4.2s
/// with 1 warning(s) (first failure: build.api)`.
pub(crate) fn run_finished_line(
    run: impl std::fmt::Display,
    status: impl std::fmt::Display,
    duration_ms: u64,
    warnings: usize,
    failed_step: Option<&str>,
) -> String {
    let mut s = format!("[run {run}] {status} in {}", duration(duration_ms));
    if warnings > 0 {
        s.push_str(&format!(" with {warnings} warning(s)"));
    }
    if let Some(f) = failed_step {
        s.push_str(&format!(" (first failure: {f})"));
    }
    s
}
