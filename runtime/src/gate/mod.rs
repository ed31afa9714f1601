//! Gates: `approval` (a person decides, from any terminal, through the state
//! store) and `policy` (an expression over step outputs decides). The
//! scheduler holds an approval gate's branch while its decision is pending and
//! polls the store for it; `pipe approve` / `pipe reject` write decisions with
//! [`decide`], under the rules of docs/gates.md: listed approvers only, no
//! self-approval unless allowed, `min_approvals` different people, bound to
//! the run id and the plan hash, failing closed at the deadline.

pub mod identity;
pub mod policy;
mod store;

use std::time::Duration;

use indexmap::IndexMap;
use pipe_lang::ast::ExprKind;
use pipe_lang::plan::{Deferrable, PlanStep};
use pipe_lang::{Plan, Value};
use serde::Serialize;

pub use store::{
    decide, expire, gate, gates_of_run, open, pending, record_starter, starter, DecideError,
    Decision, DecisionRecord, GateRecord, Opened, SCHEMA,
};

/// The executor name of an approval gate: the scheduler holds it, no executor runs it.
pub const APPROVAL: &str = "approval";

/// A gate without `timeout` gives up (and fails) after a day.
pub const DEFAULT_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// How a run treats approval gates.
#[derive(Clone, Debug)]
pub struct GateOptions {
    /// Keep waiting (polling) when only gates are left; otherwise the run
    /// stops with status `waiting` (exit code 3).
    pub wait: bool,
    /// Record an approval by this user at every approval gate (`--approve-as`).
    pub approve_as: Option<String>,
    /// How often the store is read for decisions made by other processes.
    pub poll: Duration,
    /// Ask on the terminal (stdin) for a decision as the current user.
    pub prompt: bool,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            wait: false,
            approve_as: None,
            poll: Duration::from_millis(500),
            prompt: false,
        }
    }
}

/// One value a gate shows its approvers: the `show` expression and its
/// value, rendered when the gate opened.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Shown {
    pub label: String,
    pub value: String,
}

/// An approval gate's settings, evaluated when it opens.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The gate's step id, `stage.name`.
    pub gate: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub allow_self_approval: bool,
    pub timeout_ms: u64,
    pub shown: Vec<Shown>,
    pub message: Option<String>,
}

impl Spec {
    /// Reads the evaluated inputs of an approval gate. Without `approvers`
    /// (or when they evaluate to null, as `env.approvers` does) the
    /// `approvers` of the stage's env block apply. `mask` hides secrets in
    /// what is shown and stored.
    pub fn from_inputs(
        plan: &Plan,
        step: &PlanStep,
        inputs: &IndexMap<String, Value>,
        mask: impl Fn(&str) -> String,
    ) -> Result<Spec, String> {
        let env = step.environment.as_ref().and_then(|e| plan.envs().get(e));
        let approvers = match inputs.get("approvers") {
            None | Some(Value::Null) => env.map(|e| e.approvers.clone()).unwrap_or_default(),
            Some(Value::Str(s)) => vec![s.clone()],
            Some(Value::List(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    other => Err(format!(
                        "`approvers` lists user or group names, but one entry is a {}",
                        other.type_name()
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "`approvers` is a list of user or group names, not a {}",
                    other.type_name()
                ))
            }
        };
        if approvers.is_empty() {
            return Err(format!(
                "approval gate `{}` has no approvers (neither the gate nor {} lists any), so nobody could approve it; it fails closed",
                step.name,
                env.map_or_else(|| "an env block".to_string(), |e| format!("env `{}`", e.name))
            ));
        }
        let min_approvals = match inputs.get("min_approvals") {
            None | Some(Value::Null) => 1,
            Some(Value::Int(n)) if *n >= 1 && *n <= 100 => *n as u32,
            Some(other) => {
                return Err(format!(
                    "`min_approvals` must be a whole number from 1 to 100, not `{other}`"
                ))
            }
        };
        let allow_self_approval = match inputs.get("allow_self_approval") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "`allow_self_approval` must be true or false, not `{other}`"
                ))
            }
        };
        let message = match inputs.get("message") {
            None | Some(Value::Null) => None,
            Some(v) => Some(mask(&v.to_string())),
        };
        let shown = match inputs.get("show") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => {
                let labels = show_labels(step.inputs.get("show"));
                let values: Vec<&Value> = match v {
                    Value::List(items) => items.iter().collect(),
                    one => vec![one],
                };
                values
                    .iter()
                    .enumerate()
                    .map(|(n, v)| Shown {
                        label: labels
                            .get(n)
                            .cloned()
                            .unwrap_or_else(|| format!("show[{n}]")),
                        value: mask(&render(v)),
                    })
                    .collect()
            }
        };
        Ok(Spec {
            gate: step.id.clone(),
            approvers,
            min_approvals,
            allow_self_approval,
            timeout_ms: step.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            shown,
            message,
        })
    }
}

/// The source text of each `show` entry, to label its value.
fn show_labels(d: Option<&Deferrable>) -> Vec<String> {
    match d {
        Some(Deferrable::Deferred(e)) => match &e.kind {
            ExprKind::List(items) => items.iter().map(pipe_lang::fmt::expr_to_string).collect(),
            _ => vec![pipe_lang::fmt::expr_to_string(e)],
        },
        Some(Deferrable::Ready(Value::List(items))) => items.iter().map(render).collect(),
        Some(Deferrable::Ready(v)) => vec![render(v)],
        None => Vec::new(),
    }
}

/// A shown value as text: strings as they are (tables keep their lines),
/// anything else as pretty JSON.
fn render(v: &Value) -> String {
    match v {
        Value::List(_) | Value::Map(_) => {
            serde_json::to_string_pretty(&v.to_json()).unwrap_or_else(|_| v.to_string())
        }
        other => other.to_string(),
    }
}

/// The hash approvals are bound to: everything that decides what the run
/// does (steps, commands, inputs, envs, params), not where it was written.
/// Editing the pipeline and resuming with `--replan` changes it.
pub fn plan_hash(plan: &Plan) -> String {
    let v = serde_json::json!({
        "pipeline": plan.pipeline,
        "params": plan.params,
        "target_env": plan.target_env,
        "steps": plan.steps(),
        "handlers": plan.handlers(),
        "envs": plan.envs(),
    });
    crate::state::source_hash(&[("plan".to_string(), v.to_string())])
}

/// The error of a gate input that cannot be evaluated. A policy gate fails
/// closed on it, and says so.
pub fn cannot_evaluate(step: &PlanStep, key: &str, e: String) -> String {
    match step.executor.as_str() {
        "policy" => format!(
            "policy gate `{}`: `{key}` cannot be evaluated, so the gate fails closed: {e}",
            step.name
        ),
        APPROVAL => format!(
            "approval gate `{}`: `{key}` cannot be evaluated, so the gate fails closed: {e}",
            step.name
        ),
        _ => e,
    }
}
