//! `pipe gates`: the approval gates waiting for a decision, with who may
//! decide, the deadline and what they show; and the gate section of
//! `pipe status`. See docs/gates.md.

use std::io::IsTerminal as _;
use std::time::Duration;

use pipe_runtime::gate::{GateOptions, GateRecord};
use pipe_runtime::state::now_ms;
use pipe_runtime::time::rfc3339;
use pipe_runtime::Store;

use super::run::{ExecArgs, StateArgs};
use crate::exit::Failure;
use crate::project::Project;
use crate::render::duration;

/// Output format of `pipe gates`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// How a run waits at gates: `--wait`, `--detach`, else wait only when
/// stdin and stdout are a terminal. `PIPE_GATE_POLL_MS` sets how often the
/// store is read for decisions (default 500 ms).
pub fn options(exec: &ExecArgs) -> GateOptions {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    GateOptions {
        wait: exec.wait || (!exec.detach && tty),
        prompt: !exec.detach && tty,
        approve_as: exec.approve_as.clone(),
        poll: Duration::from_millis(
            std::env::var("PIPE_GATE_POLL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&ms: &u64| ms > 0)
                .unwrap_or(500),
        ),
    }
}

pub fn run(project: &Project, state: &StateArgs, format: Format) -> Result<String, Failure> {
    let dir = state.dir(project);
    if !dir.join("state.db").exists() {
        return Ok(if format == Format::Json {
            "[]\n".into()
        } else {
            "no gates are waiting\n".into()
        });
    }
    let store = state.open(project)?;
    let gates = pipe_runtime::gate::pending(&store).map_err(|e| Failure::invalid(e.to_string()))?;
    if format == Format::Json {
        let v: Vec<_> = gates.iter().map(|g| json(&store, g)).collect();
        return Ok(format!("{}\n", serde_json::Value::Array(v)));
    }
    if gates.is_empty() {
        return Ok("no gates are waiting\n".into());
    }
    let mut out = String::new();
    for g in &gates {
        let pipeline = store.run(g.run).map(|r| r.pipeline).unwrap_or_default();
        out.push_str(&format!("run {} `{pipeline}`  gate {}\n", g.run, g.gate));
        out.push_str(&describe(g, "  "));
        out.push_str(&format!(
            "  decide: pipe approve {run} {gate}   |   pipe reject {run} {gate} --comment \"...\"\n",
            run = g.run,
            gate = g.gate
        ));
    }
    Ok(out)
}

/// The lines `pipe gates` and `pipe status` print about one gate.
pub fn describe(g: &GateRecord, indent: &str) -> String {
    let now = now_ms();
    let mut out = String::new();
    let who = format!(
        "{} (needs {} different {})",
        g.approvers.join(", "),
        g.min_approvals,
        if g.min_approvals == 1 {
            "person"
        } else {
            "people"
        }
    );
    out.push_str(&format!("{indent}may approve: {who}"));
    if !g.allow_self_approval {
        if let Some(s) = &g.started_by {
            out.push_str(&format!("; not {s}, who started the run"));
        }
    }
    out.push('\n');
    let deadline = if g.is_overdue(now) {
        format!("{} (passed: it fails closed)", rfc3339(g.deadline_ms))
    } else if g.status == "pending" {
        format!(
            "{} (in {})",
            rfc3339(g.deadline_ms),
            duration(u64::try_from(g.deadline_ms - now).unwrap_or(0))
        )
    } else {
        rfc3339(g.deadline_ms)
    };
    out.push_str(&format!("{indent}deadline: {deadline}\n"));
    let approved = g.approved_by();
    out.push_str(&format!(
        "{indent}approved by: {}\n",
        if approved.is_empty() {
            "nobody yet".to_string()
        } else {
            approved.join(", ")
        }
    ));
    out.push_str(&format!("{indent}plan: {}\n", g.plan_hash));
    if let Some(m) = &g.message {
        out.push_str(&format!("{indent}message: {m}\n"));
    }
    for s in &g.shown {
        out.push_str(&format!("{indent}{}:\n", s.label));
        for l in s.value.lines() {
            out.push_str(&format!("{indent}  {l}\n"));
        }
    }
    out
}

pub fn json(store: &Store, g: &GateRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(g).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "pipeline".into(),
            store
                .run(g.run)
                .map(|r| r.pipeline)
                .unwrap_or_default()
                .into(),
        );
        o.insert("approved_by".into(), g.approved_by().into());
        o.insert("overdue".into(), g.is_overdue(now_ms()).into());
    }
    v
}

/// The gates section of `pipe status` (empty when the run opened none).
pub fn status_section(store: &Store, run: i64) -> Result<String, Failure> {
    let gates = pipe_runtime::gate::gates_of_run(store, run)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let mut out = String::new();
    for g in &gates {
        let state = if g.is_overdue(now_ms()) {
            "expired"
        } else {
            g.status.as_str()
        };
        out.push_str(&format!("\ngate {}: {state}\n", g.gate));
        out.push_str(&describe(g, "  "));
    }
    Ok(out)
}
