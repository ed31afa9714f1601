//! Events the scheduler emits, after the state change they report has been
//! committed. Renderers (TTY, plain, JSON lines) consume them; the JSON form is
//! documented in docs/events.md.

use serde::Serialize;

/// One thing that happened in a run.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: i64,
        pipeline: String,
        steps: usize,
        resumed: bool,
    },
    StepStarted {
        run: i64,
        step: String,
        attempt: u32,
    },
    StepLog {
        run: i64,
        step: String,
        attempt: u32,
        stream: &'static str,
        line: String,
    },
    StepRetrying {
        run: i64,
        step: String,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    StepSkipped {
        run: i64,
        step: String,
        reason: String,
    },
    /// Not run: a recorded success had the same cache key; its outputs were restored.
    StepCached {
        run: i64,
        step: String,
        key: String,
        from_run: i64,
    },
    /// With `--explain-cache`: why a cacheable step runs.
    CacheMiss {
        run: i64,
        step: String,
        key: Option<String>,
        reason: String,
    },
    StepFinished {
        run: i64,
        step: String,
        attempt: u32,
        /// `succeeded`, `failed`, `cancelled`.
        status: String,
        exit_code: Option<i32>,
        duration_ms: u64,
        error: Option<String>,
        /// `file:line:col` of the step, on failure.
        location: Option<String>,
        /// False when the step's stage is not required: its failure only warns.
        required: bool,
    },
    /// An approval gate waits for a decision (opened now, or found open by a
    /// resumed run). The branch behind it holds; other branches go on.
    GateOpened {
        run: i64,
        step: String,
        approvers: Vec<String>,
        min_approvals: u32,
        deadline_ms: i64,
        message: Option<String>,
        shown: Vec<crate::gate::Shown>,
        plan_hash: String,
        /// `new`, `existing` (a resumed run) or `replanned` (the plan changed:
        /// earlier approvals no longer count).
        how: &'static str,
        /// Who approved it so far (for this plan).
        approved_by: Vec<String>,
    },
    /// A decision let the gate pass (`approved`) or failed it (`rejected`).
    GateDecided {
        run: i64,
        step: String,
        decision: String,
        by: Vec<String>,
        comment: Option<String>,
    },
    /// No decision by the deadline: the gate failed closed.
    GateExpired {
        run: i64,
        step: String,
        deadline_ms: i64,
    },
    /// The run asks on its terminal for `user`'s decision (y approves, n
    /// rejects, anything else leaves it to others).
    GatePrompt {
        run: i64,
        step: String,
        user: String,
    },
    /// A decision was not recorded (`--approve-as` against the rules).
    GateRefused {
        run: i64,
        step: String,
        user: String,
        reason: String,
    },
    /// Only gates are left and the run does not wait for them: it stops with
    /// status `waiting` (exit code 3) until `pipe resume`.
    RunWaiting {
        run: i64,
        gates: Vec<String>,
        duration_ms: u64,
    },
    /// A chaos block was torn down with the rest of its stage: what it did
    /// (see docs/chaos.md for the report).
    ChaosReport {
        run: i64,
        step: String,
        summary: String,
        report: serde_json::Value,
    },
    /// A step of a stage that is not required failed: the run goes on and
    /// its exit code is not affected.
    Warning {
        run: i64,
        step: String,
        message: String,
    },
    RunFinished {
        run: i64,
        /// `succeeded`, `failed` or `interrupted`.
        status: String,
        failed_step: Option<String>,
        duration_ms: u64,
    },
}

impl Event {
    /// Rewrites every free-text field (log lines, errors, reasons): how
    /// secrets are masked out of an event.
    pub fn map_text(&mut self, f: impl Fn(&str) -> String) {
        match self {
            Event::StepLog { line, .. } => *line = f(line),
            Event::StepRetrying { error, .. } => *error = f(error),
            Event::StepSkipped { reason, .. } | Event::CacheMiss { reason, .. } => {
                *reason = f(reason);
            }
            Event::StepFinished { error, .. } => {
                if let Some(e) = error {
                    *e = f(e);
                }
            }
            Event::GateOpened { message, shown, .. } => {
                if let Some(m) = message {
                    *m = f(m);
                }
                for s in shown {
                    s.value = f(&s.value);
                }
            }
            Event::GateDecided { comment, .. } => {
                if let Some(c) = comment {
                    *c = f(c);
                }
            }
            Event::GateRefused { reason, .. } => *reason = f(reason),
            Event::Warning { message, .. } => *message = f(message),
            Event::ChaosReport { summary, .. } => *summary = f(summary),
            Event::RunStarted { .. }
            | Event::GateExpired { .. }
            | Event::GatePrompt { .. }
            | Event::RunWaiting { .. }
            | Event::StepStarted { .. }
            | Event::StepCached { .. }
            | Event::RunFinished { .. } => {}
        }
    }
}

/// Receives events in order.
pub trait Sink {
    fn emit(&mut self, event: &Event);
}

/// Discards events.
pub struct NullSink;

impl Sink for NullSink {
    fn emit(&mut self, _event: &Event) {}
}
