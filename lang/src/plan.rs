//! The frozen result of lowering: every step fully expanded (loops unrolled,
//! templates instantiated, stage needs turned into step edges) with the span it
//! came from. A [`Plan`] is immutable; the runtime receives nothing else.

use indexmap::IndexMap;
use serde::Serialize;

use crate::ast::{Expr, HandlerKind};
use crate::span::{SourceMap, Span};
use crate::value::Value;

/// A value known at plan time, or an expression the runtime evaluates.
#[derive(Clone, Debug, PartialEq)]
pub enum Deferrable {
    Ready(Value),
    Deferred(Expr),
}

impl Deferrable {
    pub fn ready(&self) -> Option<&Value> {
        match self {
            Deferrable::Ready(v) => Some(v),
            Deferrable::Deferred(_) => None,
        }
    }
}

impl Serialize for Deferrable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Deferrable::Ready(v) => v.serialize(s),
            Deferrable::Deferred(e) => {
                s.serialize_str(&format!("${{{}}}", crate::fmt::expr_to_string(e)))
            }
        }
    }
}

/// A shell command with its interpolations kept apart, so that each one reaches
/// the shell as a single quoted word and never as shell syntax.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandTemplate {
    pub parts: Vec<CommandPart>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CommandPart {
    /// Shell text written by the pipeline author.
    Lit(String),
    /// An interpolated value: quoted as one word when the command is rendered.
    Value(Deferrable),
}

impl CommandTemplate {
    /// Renders the command, quoting each interpolated value with `quote`.
    pub fn render(
        &self,
        mut value: impl FnMut(&Deferrable) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                CommandPart::Lit(s) => out.push_str(s),
                CommandPart::Value(v) => out.push_str(&shell_quote(&value(v)?)),
            }
        }
        Ok(out)
    }
}

/// Quotes `s` as one POSIX shell word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Backoff {
    Fixed { delay_ms: u64 },
    Exponential { base_ms: u64, max_ms: u64 },
    Linear { base_ms: u64, max_ms: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    pub backoff: Backoff,
    pub max_elapsed_ms: Option<u64>,
    /// Exit codes or error classes (`"timeout"`, `"transient"`) that may be retried;
    /// empty means every retryable failure.
    pub on: Vec<Value>,
    pub respect_retry_after: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheSpec {
    pub key: Option<Deferrable>,
    pub inputs: Vec<String>,
}

/// One node of the DAG.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanStep {
    /// `stage.name`, unique in the plan.
    pub id: String,
    pub stage: String,
    pub name: String,
    /// The executor that runs it: `shell`, `container`, `approval`, `policy`,
    /// `chaos`, or an action such as `docker.build`.
    pub executor: String,
    /// The template it instantiates, e.g. `docker.build`.
    pub template: Option<String>,
    #[serde(skip)]
    pub span: Span,
    /// Indices into [`Plan::steps`] (or [`Plan::handlers`] for handler steps).
    pub needs: Vec<usize>,
    pub when: Option<Deferrable>,
    pub run: Option<CommandTemplate>,
    pub shell: Option<String>,
    pub env: IndexMap<String, Deferrable>,
    /// Template arguments, gate and chaos settings, container settings.
    pub inputs: IndexMap<String, Deferrable>,
    /// Declared output keys (empty: any).
    pub outputs: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub retry: Option<RetryPolicy>,
    pub estimate_ms: Option<u64>,
    pub on_failure: Option<CommandTemplate>,
    pub cache: Option<CacheSpec>,
    pub idempotent: bool,
    pub concurrency: Option<String>,
    /// The `env` block the step's stage runs in.
    pub environment: Option<String>,
    /// False when the stage is not required: a failure only warns.
    pub required: bool,
    pub handler: Option<HandlerKind>,
}

/// An `env` block, resolved as far as plan time allows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnvSpec {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
    pub file: Option<String>,
    pub vars: IndexMap<String, Deferrable>,
    pub require: Vec<String>,
    pub forbid: IndexMap<String, Value>,
    pub secrets: Vec<String>,
    pub approvers: Vec<String>,
    pub allow_if: Option<Deferrable>,
    pub protected: bool,
    /// Where each attribute was declared, for validation errors.
    #[serde(skip)]
    pub spans: IndexMap<String, Span>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageInfo {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
    pub environment: Option<String>,
    pub required: bool,
    /// Indices of its steps, in declaration order.
    pub steps: Vec<usize>,
}

/// A pipeline lowered for one set of params and one target environment.
#[derive(Debug)]
pub struct Plan {
    pub pipeline: String,
    pub span: Span,
    pub params: IndexMap<String, Value>,
    pub target_env: Option<String>,
    steps: Vec<PlanStep>,
    handlers: Vec<PlanStep>,
    stages: Vec<StageInfo>,
    envs: IndexMap<String, EnvSpec>,
    /// Steps that need step `i`: `dependents[dependents_at[i]..dependents_at[i + 1]]`,
    /// last-declared first.
    dependents: Vec<usize>,
    dependents_at: Vec<usize>,
    topo: Vec<usize>,
    sources: SourceMap,
}

/// Parts of a plan while lowering builds it; [`PlanParts::freeze`] checks the
/// graph is acyclic and makes the immutable [`Plan`].
#[derive(Debug, Default)]
pub struct PlanParts {
    pub pipeline: String,
    pub span: Span,
    pub params: IndexMap<String, Value>,
    pub target_env: Option<String>,
    pub steps: Vec<PlanStep>,
    pub handlers: Vec<PlanStep>,
    pub stages: Vec<StageInfo>,
    pub envs: IndexMap<String, EnvSpec>,
}

impl PlanParts {
    /// Freezes the plan. Fails with the steps of a cycle if there is one.
    pub fn freeze(self, sources: SourceMap) -> Result<Plan, Vec<usize>> {
        let (dependents, dependents_at) = dependents_of(&self.steps);
        let topo = toposort(&dependents, &dependents_at)?;
        Ok(Plan {
            pipeline: self.pipeline,
            span: self.span,
            params: self.params,
            target_env: self.target_env,
            steps: self.steps,
            handlers: self.handlers,
            stages: self.stages,
            envs: self.envs,
            dependents,
            dependents_at,
            topo,
            sources,
        })
    }
}

impl Plan {
    pub fn steps(&self) -> &[PlanStep] {
        &self.steps
    }

    pub fn step(&self, i: usize) -> &PlanStep {
        &self.steps[i]
    }

    pub fn find(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id || s.name == id)
    }

    pub fn handlers(&self) -> &[PlanStep] {
        &self.handlers
    }

    pub fn stages(&self) -> &[StageInfo] {
        &self.stages
    }

    pub fn envs(&self) -> &IndexMap<String, EnvSpec> {
        &self.envs
    }

    /// Step indices in a dependency-respecting order.
    pub fn topo_order(&self) -> &[usize] {
        &self.topo
    }

    /// Steps that need step `i` directly.
    pub fn dependents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.dependents[self.dependents_at[i]..self.dependents_at[i + 1]]
            .iter()
            .copied()
    }

    pub fn sources(&self) -> &SourceMap {
        &self.sources
    }

    /// `file:line:col` of a step's declaration.
    pub fn location(&self, span: Span) -> String {
        self.sources.location(span)
    }
}

/// The reverse of `needs` in compressed rows: a plan of 10,000 steps can
/// have a quarter of a million edges, and flat arrays keep them in two
/// allocations. Each row lists the last-declared dependent first.
fn dependents_of(steps: &[PlanStep]) -> (Vec<usize>, Vec<usize>) {
    let n = steps.len();
    let mut at = vec![0usize; n + 1];
    for s in steps {
        for &d in &s.needs {
            at[d + 1] += 1;
        }
    }
    for i in 0..n {
        at[i + 1] += at[i];
    }
    let mut fill = at.clone();
    let mut out = vec![0usize; at[n]];
    for (i, s) in steps.iter().enumerate().rev() {
        for &d in &s.needs {
            out[fill[d]] = i;
            fill[d] += 1;
        }
    }
    (out, at)
}

/// Depth-first topological order (the order `petgraph::algo::toposort`
/// gives, which `pipe run --dry-run` prints); a step on a cycle otherwise.
fn toposort(dependents: &[usize], at: &[usize]) -> Result<Vec<usize>, Vec<usize>> {
    let n = at.len() - 1;
    let row = |v: usize| &dependents[at[v]..at[v + 1]];
    let mut discovered = vec![false; n];
    let mut finished = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut stack = Vec::new();
    for start in 0..n {
        if discovered[start] {
            continue;
        }
        stack.push(start);
        while let Some(&v) = stack.last() {
            if discovered[v] {
                stack.pop();
                if !finished[v] {
                    finished[v] = true;
                    order.push(v);
                }
            } else {
                discovered[v] = true;
                for &d in row(v) {
                    if d == v {
                        return Err(vec![v]);
                    }
                    if !discovered[d] {
                        stack.push(d);
                    }
                }
            }
        }
    }
    order.reverse();
    // Acyclic exactly when every edge goes forward in that order.
    let mut pos = vec![0usize; n];
    for (k, &v) in order.iter().enumerate() {
        pos[v] = k;
    }
    for v in 0..n {
        if let Some(&d) = row(v).iter().find(|&&d| pos[d] <= pos[v]) {
            return Err(vec![d]);
        }
    }
    Ok(order)
}
