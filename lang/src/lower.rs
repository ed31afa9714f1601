//! Analysis and lowering in one pass over a pipeline: names are resolved, types
//! checked, loops unrolled, templates instantiated and needs turned into edges.
//! Every problem found is collected (not just the first) and the result, when
//! there is none, is a frozen [`Plan`].

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use indexmap::IndexMap;

use crate::ast::{
    Attr, Block, Body, Expr, ExprKind, ForLoop, HandlerKind, Ident, Name, Param, Path, Pipeline,
    StageEntry, StrPart, Template,
};
use crate::diagnostic::{did_you_mean, sort_and_dedup, Diagnostic};
use crate::eval::{fold, Folded, Lookup, Scope};
use crate::misplaced::{self, Place};
use crate::plan::{
    Backoff, CacheSpec, CommandPart, CommandTemplate, Deferrable, EnvSpec, Plan, PlanParts,
    PlanStep, RetryPolicy, StageInfo,
};
use crate::span::Span;
use crate::value::{Type, Value};
use crate::workspace::Workspace;

/// Loops may not expand a pipeline beyond this many steps.
pub const MAX_STEPS: usize = 50_000;

/// Names only the runtime can resolve.
const DEFERRED_ROOTS: &[&str] = &["steps", "env", "secrets", "run", "chaos"];

/// Attributes every step understands; anything else on a template step is an
/// argument of the template.
const STEP_ATTRS: &[&str] = &[
    "run",
    "shell",
    "needs",
    "when",
    "timeout",
    "estimate",
    "env",
    "outputs",
    "on_failure",
    "cache",
    "idempotent",
    "concurrency",
    "description",
];
/// Container settings of a plain step (`image = ...`), handed to the executor as inputs.
const CONTAINER_ATTRS: &[&str] = &[
    "image",
    "user",
    "workdir",
    "network",
    "cpus",
    "memory",
    "executor",
    "placement",
    "artifacts",
];
const STEP_BLOCKS: &[&str] = &["retry", "cache", "service"];
const STAGE_ATTRS: &[&str] = &[
    "needs",
    "env",
    "when",
    "required",
    "description",
    "concurrency",
    "executor",
];
const ENV_ATTRS: &[&str] = &[
    "file",
    "vars",
    "require",
    "forbid",
    "secrets",
    "approvers",
    "allow_if",
    "protected",
    "description",
];
const APPROVAL_ATTRS: &[&str] = &[
    "approvers",
    "timeout",
    "show",
    "min_approvals",
    "message",
    "allow_self_approval",
    "needs",
    "when",
    "estimate",
    "description",
];
const POLICY_ATTRS: &[&str] = &[
    "require",
    "warn",
    "message",
    "needs",
    "when",
    "estimate",
    "description",
];
const CHAOS_ATTRS: &[&str] = &[
    "upstream",
    "listen",
    "seed",
    "container",
    "needs",
    "when",
    "estimate",
    "description",
    "required",
];
/// The parameters of a `fault KIND { ... }` (the runtime checks their values,
/// see docs/chaos.md).
fn fault_params(kind: &str) -> Vec<&'static str> {
    let mut p = vec!["rate", "after", "for", "path", "method"];
    p.extend_from_slice(match kind {
        "latency" => &["delay", "jitter"][..],
        "http_status" => &["status", "retry_after", "body", "headers"],
        "bandwidth" => &["bytes_per_second"],
        "slow_body" | "slicer" => &["chunk", "delay"],
        "kill" => &["signal"],
        _ => &[],
    });
    p
}
const RETRY_ATTRS: &[&str] = &[
    "attempts",
    "backoff",
    "max_elapsed",
    "on",
    "respect_retry_after",
    "max_delay",
];

/// What lowering needs from outside the source: the git context, `-p`
/// overrides (as typed on the command line) and the target environment.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// A map with `sha`, `short_sha`, `branch`, `tag`, `dirty`, `commit_time`.
    pub git: Value,
    pub params: IndexMap<String, String>,
    pub target_env: Option<String>,
}

impl Context {
    /// A context with an empty git map: every field null.
    pub fn offline() -> Self {
        let mut git = IndexMap::new();
        for k in ["sha", "short_sha", "branch", "tag", "commit_time"] {
            git.insert(k.to_string(), Value::Null);
        }
        git.insert("dirty".to_string(), Value::Bool(false));
        Context {
            git: Value::Map(git),
            ..Context::default()
        }
    }
}

/// Checks every pipeline and template of the workspace's root files.
pub fn check(ws: &Workspace, ctx: &Context) -> Vec<Diagnostic> {
    check_and_lower(ws, ctx).0
}

/// [`check`], keeping what it builds: every diagnostic of the workspace and
/// the plan (for every environment, as `pipe graph` without `--env` shows it)
/// of each root pipeline that lowered, in declaration order. Each pipeline is
/// lowered once: its analysis is its lowering.
pub fn check_and_lower(ws: &Workspace, ctx: &Context) -> (Vec<Diagnostic>, Vec<Plan>) {
    let mut plans = Vec::new();
    let mut diags = ws.diagnostics.clone();
    for (m, module) in ws.modules.iter().enumerate() {
        if !module.root {
            continue;
        }
        diags.extend(check_templates(ws, m));
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for pl in module.pipelines() {
            if let Some(prev) = seen.insert(&pl.name.name, pl.name.span) {
                diags.push(
                    Diagnostic::error(
                        "pipe::duplicate",
                        format!("pipeline `{}` is defined twice", pl.name.name),
                        pl.name.span,
                        "second definition",
                    )
                    .with_label(prev, "first defined here"),
                );
            }
            let ctx = Context {
                target_env: None,
                ..ctx.clone()
            };
            let (plan, d) = lower(ws, m, pl, &ctx);
            diags.extend(d);
            plans.extend(plan);
        }
    }
    sort_and_dedup(&mut diags);
    (diags, plans)
}

/// Lowers one pipeline to a plan. Diagnostics may hold warnings even when a plan is returned.
/// The pipeline's `assert`s are proved on the plan for every env (see `crate::asserts`).
pub fn lower(
    ws: &Workspace,
    module: usize,
    pl: &Pipeline,
    ctx: &Context,
) -> (Option<Plan>, Vec<Diagnostic>) {
    let (plan, mut diags) = lower_plan(ws, module, pl, ctx);
    if pl.asserts.is_empty() {
        return (plan, diags);
    }
    let found = match (&plan, &ctx.target_env) {
        (None, _) => crate::asserts::validate(pl),
        (Some(p), None) => crate::asserts::prove(pl, p),
        (Some(_), Some(env)) => {
            let every_env = Context {
                target_env: None,
                ..ctx.clone()
            };
            match lower_plan(ws, module, pl, &every_env) {
                (Some(full), _) => crate::asserts::prove(pl, &full),
                (None, _) => crate::asserts::unprovable(pl, env),
            }
        }
    };
    diags.extend(found);
    sort_and_dedup(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    (plan, diags)
}

fn lower_plan(
    ws: &Workspace,
    module: usize,
    pl: &Pipeline,
    ctx: &Context,
) -> (Option<Plan>, Vec<Diagnostic>) {
    let mut l = Lowerer {
        ws,
        module,
        pl,
        ctx,
        diags: Vec::new(),
        params: Rc::new(IndexMap::new()),
        steps: Vec::new(),
        stage_names: pl.stages.iter().map(|s| s.name.name.clone()).collect(),
    };
    let parts = l.run();
    let mut diags = l.diags;
    sort_and_dedup(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    match parts.freeze(ws.sources.clone()) {
        Ok(plan) => (Some(plan), diags),
        Err(_) => {
            diags.push(Diagnostic::error(
                "pipe::cycle",
                "the steps form a cycle",
                pl.name.span,
                "in this pipeline",
            ));
            (None, diags)
        }
    }
}

/// Template definitions are checked once, apart from their uses.
fn check_templates(ws: &Workspace, m: usize) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for t in ws.modules[m].templates() {
        if let Some(prev) = seen.insert(&t.name.name, t.name.span) {
            diags.push(
                Diagnostic::error(
                    "pipe::duplicate",
                    format!("template `{}` is defined twice", t.name.name),
                    t.name.span,
                    "second definition",
                )
                .with_label(prev, "first defined here"),
            );
        }
        let mut names: HashMap<&str, Span> = HashMap::new();
        for p in &t.params {
            if let Some(prev) = names.insert(&p.name.name, p.name.span) {
                diags.push(
                    Diagnostic::error(
                        "pipe::duplicate",
                        format!("parameter `{}` is declared twice", p.name.name),
                        p.name.span,
                        "second declaration",
                    )
                    .with_label(prev, "first declared here"),
                );
            }
            if STEP_ATTRS.contains(&p.name.name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        "pipe::reserved",
                        format!(
                            "`{}` is a step attribute and cannot be a template parameter",
                            p.name.name
                        ),
                        p.name.span,
                        "reserved name",
                    )
                    .with_help("rename the parameter"),
                );
            }
        }
        if t.body.attr("uses").is_none()
            && t.body.attr("run").is_none()
            && t.body.attr("image").is_none()
        {
            diags.push(
                Diagnostic::error(
                    "pipe::template",
                    format!("template `{}` runs nothing", t.name.name),
                    t.name.span,
                    "no `uses` or `run`",
                )
                .with_help("set `uses = \"<executor action>\"` or `run = \"...\"` in its body"),
            );
        }
    }
    diags
}

struct RawStep {
    step: PlanStep,
    stage: usize,
    name_span: Span,
    /// `needs` entries: name and the span of the entry.
    needs: Vec<(String, Span)>,
    /// Steps referenced through `steps.<name>` in deferred expressions.
    refs: Vec<(String, Option<String>, Span)>,
    /// Chaos proxies referenced through `chaos.<name>`.
    chaos_refs: Vec<(String, Span)>,
}

struct Lowerer<'a> {
    ws: &'a Workspace,
    module: usize,
    pl: &'a Pipeline,
    ctx: &'a Context,
    diags: Vec<Diagnostic>,
    params: Rc<IndexMap<String, Value>>,
    steps: Vec<RawStep>,
    stage_names: Vec<String>,
}

/// A template argument: its folded value and, for `command` parameters given
/// a string literal, the shell text with its interpolations kept apart.
#[derive(Clone)]
struct ArgBinding {
    value: Folded,
    command: Option<Vec<CommandPart>>,
}

/// Names visible to an expression while lowering.
struct LScope<'s> {
    locals: &'s [(String, Value)],
    params: Option<Rc<IndexMap<String, Value>>>,
    args: Option<&'s IndexMap<String, ArgBinding>>,
    git: &'s Value,
    pipeline: &'s str,
    deferred: bool,
}

impl Scope for LScope<'_> {
    fn lookup(&self, root: &str, _keys: &[Value]) -> Lookup {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| n == root) {
            return Lookup::Found(v.clone(), 0);
        }
        if let Some(a) = self.args.and_then(|a| a.get(root)) {
            return match &a.value {
                Folded::Value(v) => Lookup::Found(v.clone(), 0),
                Folded::Residual(e) => Lookup::Expr(e.clone()),
            };
        }
        if let Some(v) = self.params.as_ref().and_then(|p| p.get(root)) {
            return Lookup::Found(v.clone(), 0);
        }
        match root {
            "git" => Lookup::Found(self.git.clone(), 0),
            "pipeline" => {
                let mut m = IndexMap::new();
                m.insert("name".to_string(), Value::Str(self.pipeline.to_string()));
                Lookup::Found(Value::Map(m), 0)
            }
            r if self.deferred && DEFERRED_ROOTS.contains(&r) => Lookup::Deferred,
            _ => Lookup::Missing,
        }
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.locals.iter().map(|(n, _)| n.clone()).collect();
        n.extend(self.args.iter().flat_map(|a| a.keys().cloned()));
        n.extend(self.params.iter().flat_map(|p| p.keys().cloned()));
        n.extend(["git".to_string(), "pipeline".to_string()]);
        if self.deferred {
            n.extend(DEFERRED_ROOTS.iter().map(|s| (*s).to_string()));
        }
        n
    }
}

impl<'a> Lowerer<'a> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn scope<'s>(&self, locals: &'s [(String, Value)]) -> LScope<'s>
    where
        'a: 's,
    {
        let ctx: &'a Context = self.ctx;
        let pl: &'a Pipeline = self.pl;
        LScope {
            locals,
            params: Some(Rc::clone(&self.params)),
            args: None,
            git: &ctx.git,
            pipeline: &pl.name.name,
            deferred: true,
        }
    }

    fn fold_in(&mut self, e: &Expr, scope: &LScope<'_>) -> Option<Folded> {
        match fold(e, scope) {
            Ok(f) => Some(f),
            Err(err) => {
                self.err(err.into_diagnostic());
                None
            }
        }
    }

    fn run(&mut self) -> PlanParts {
        self.check_duplicates();
        self.check_nested_blocks();
        self.lower_params();
        let envs = self.lower_envs();
        let (stage_needs, stage_env) = self.lower_stage_attrs(&envs);
        let selected = self.select_stages(&stage_needs, &stage_env);

        let mut stages = Vec::new();
        for (si, stage) in self.pl.stages.iter().enumerate() {
            let required = self.stage_required(si);
            let when = stage.entries.iter().find_map(|e| match e {
                StageEntry::Attr(a) if a.key.name == "when" => Some(a.clone()),
                _ => None,
            });
            let stage_when = when.as_ref().and_then(|a| self.fold_when(&a.value));
            if !count_steps_ast(&stage.entries) {
                self.err(
                    Diagnostic::error(
                        "pipe::empty-stage",
                        format!("stage `{}` has no steps", stage.name.name),
                        stage.name.span,
                        "empty stage",
                    )
                    .with_help("add a `step`, or remove the stage"),
                );
            }
            let first = self.steps.len();
            if selected[si] {
                let ctx = StageCtx {
                    index: si,
                    name: stage.name.name.clone(),
                    environment: stage_env[si].clone(),
                    required,
                    when: stage_when,
                    handler: None,
                };
                self.expand(&stage.entries, &mut Vec::new(), &ctx);
                let stage_name = stage.name.name.clone();
                self.attach_stage_services(&stage.entries, &stage_name, first..self.steps.len());
            }
            stages.push(StageInfo {
                name: stage.name.name.clone(),
                span: stage.span,
                environment: stage_env[si].clone(),
                required,
                steps: (first..self.steps.len()).collect(),
            });
        }
        let main_count = self.steps.len();
        // Handlers lower like stages into the same list, then split off.
        let mut handler_kinds: HashMap<HandlerKind, Span> = HashMap::new();
        for (hi, h) in self.pl.handlers.iter().enumerate() {
            if let Some(prev) = handler_kinds.insert(h.kind, h.kind_span) {
                self.err(
                    Diagnostic::error(
                        "pipe::duplicate",
                        format!("`on {}` is declared twice", h.kind.as_str()),
                        h.kind_span,
                        "second handler",
                    )
                    .with_label(prev, "first declared here"),
                );
            }
            let ctx = StageCtx {
                index: self.pl.stages.len() + hi,
                name: format!("on_{}", h.kind.as_str()),
                environment: self.ctx.target_env.clone(),
                required: false,
                when: None,
                handler: Some(h.kind),
            };
            self.expand(&h.entries, &mut Vec::new(), &ctx);
        }
        self.check_unique_names();
        self.resolve_edges(main_count, &stage_needs, &stages);
        let handler_steps: Vec<RawStep> = self.steps.split_off(main_count);
        // Handler needs index into the handler list.
        let handlers = handler_steps
            .into_iter()
            .map(|mut r| {
                r.step.needs = r
                    .step
                    .needs
                    .iter()
                    .filter(|&&n| n >= main_count)
                    .map(|n| n - main_count)
                    .collect();
                r.step
            })
            .collect();
        PlanParts {
            pipeline: self.pl.name.name.clone(),
            span: self.pl.span,
            params: (*self.params).clone(),
            target_env: self.ctx.target_env.clone(),
            steps: self.steps.drain(..).map(|r| r.step).collect(),
            handlers,
            stages,
            envs,
        }
    }

    fn check_duplicates(&mut self) {
        let pl = self.pl;
        let dup = |kind: &str, items: Vec<&Ident>, diags: &mut Vec<Diagnostic>| {
            let mut seen: HashMap<&str, Span> = HashMap::new();
            for i in items {
                if let Some(prev) = seen.insert(&i.name, i.span) {
                    diags.push(
                        Diagnostic::error(
                            "pipe::duplicate",
                            format!("{kind} `{}` is defined twice", i.name),
                            i.span,
                            "second definition",
                        )
                        .with_label(prev, "first defined here"),
                    );
                }
            }
        };
        dup(
            "param",
            pl.params.iter().map(|p| &p.name).collect(),
            &mut self.diags,
        );
        dup(
            "env",
            pl.envs.iter().map(|e| &e.name).collect(),
            &mut self.diags,
        );
        dup(
            "stage",
            pl.stages.iter().map(|s| &s.name).collect(),
            &mut self.diags,
        );
        for a in &pl.attrs {
            if !["description", "concurrency"].contains(&a.key.name.as_str()) {
                self.unknown_attr(&a.key, &["description", "concurrency"], "pipeline");
            }
        }
        for b in &pl.blocks {
            if let Some(d) = misplaced::check(b, Place::Pipeline) {
                self.err(d);
                continue;
            }
            self.err(
                Diagnostic::error(
                    "pipe::unknown-block",
                    format!("unknown block `{}` in a pipeline", b.key.name),
                    b.key.span,
                    "not allowed here",
                )
                .with_help(
                    "a pipeline holds `param`, `env`, `stage`, `assert` and `on failure|success|always`",
                ),
            );
        }
    }

    /// Language keywords read as generic blocks inside `for` loops and
    /// handlers (a stage's own entries are checked in `lower_stage_attrs`).
    fn check_nested_blocks(&mut self) {
        fn walk(entries: &[StageEntry], nested: bool, out: &mut Vec<Diagnostic>) {
            for e in entries {
                match e {
                    StageEntry::For(f) => walk(&f.entries, true, out),
                    StageEntry::Block(b) if nested => {
                        out.extend(misplaced::check(b, Place::Stage));
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for st in &self.pl.stages {
            walk(&st.entries, false, &mut out);
        }
        for h in &self.pl.handlers {
            walk(&h.entries, true, &mut out);
        }
        self.diags.extend(out);
    }

    fn unknown_attr(&mut self, key: &Ident, allowed: &[&str], place: &str) {
        let mut d = Diagnostic::error(
            "pipe::unknown-attribute",
            format!("unknown attribute `{}` in {place}", key.name),
            key.span,
            "unknown attribute",
        );
        d = match did_you_mean(&key.name, allowed.iter().copied()) {
            Some(n) => d.with_help(format!("did you mean `{n}`?")),
            None => d.with_help(format!("{place} takes: {}", allowed.join(", "))),
        };
        self.err(d);
    }

    fn lower_params(&mut self) {
        let known: HashSet<&str> = self
            .pl
            .params
            .iter()
            .map(|p| p.name.name.as_str())
            .collect();
        for (k, _) in &self.ctx.params {
            if !known.contains(k.as_str()) {
                let mut d = Diagnostic::error(
                    "pipe::unknown-param",
                    format!("pipeline `{}` has no param `{k}`", self.pl.name.name),
                    self.pl.name.span,
                    "set with -p",
                );
                let names: Vec<&str> = known.iter().copied().collect();
                d = match did_you_mean(k, names.iter().copied()) {
                    Some(n) => d.with_help(format!("did you mean `{n}`?")),
                    None if names.is_empty() => d.with_help("this pipeline declares no params"),
                    None => d.with_help(format!("its params are: {}", names.join(", "))),
                };
                self.err(d);
            }
        }
        for p in &self.pl.params {
            let value = if let Some(text) = self.ctx.params.get(&p.name.name) {
                match Value::parse_as(text, &p.ty.ty) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.err(Diagnostic::error(
                            "pipe::type",
                            format!("-p {}: {e}", p.name.name),
                            p.ty.span,
                            format!("declared {} here", p.ty.ty),
                        ));
                        None
                    }
                }
            } else if let Some(d) = &p.default {
                let scope = LScope {
                    locals: &[],
                    params: Some(Rc::clone(&self.params)),
                    args: None,
                    git: &self.ctx.git,
                    pipeline: &self.pl.name.name,
                    deferred: false,
                };
                match self.fold_in(d, &scope) {
                    Some(Folded::Value(v)) => {
                        self.check_type(&v, &p.ty.ty, d.span, &format!("param `{}`", p.name.name));
                        Some(v)
                    }
                    Some(Folded::Residual(_)) => None,
                    None => None,
                }
            } else {
                self.err(
                    Diagnostic::error(
                        "pipe::missing-param",
                        format!("param `{}` has no default and was not given", p.name.name),
                        p.name.span,
                        "needs a value",
                    )
                    .with_help(format!(
                        "pass `-p {}=<value>` or give it a default",
                        p.name.name
                    )),
                );
                None
            };
            Rc::make_mut(&mut self.params)
                .insert(p.name.name.clone(), value.unwrap_or(Value::Null));
        }
    }

    fn check_type(&mut self, v: &Value, ty: &Type, span: Span, what: &str) -> bool {
        if v.conforms(ty) {
            return true;
        }
        let mut d = Diagnostic::error(
            "pipe::type",
            format!("{what} expects {ty}, found {}", v.ty()),
            span,
            format!("this is {}", a_type(&v.ty())),
        );
        if *ty == Type::Duration && matches!(v, Value::Int(_)) {
            d = d.with_help("write durations with a unit: `30s`, `5m`, `500ms`");
        } else if matches!(ty, Type::List(_)) && !matches!(v, Value::List(_)) {
            d = d.with_help("wrap it in brackets: `[...]`");
        }
        self.err(d);
        false
    }

    /// Statically known type of a deferred expression, when there is one.
    fn infer(e: &Expr) -> Type {
        match &e.kind {
            ExprKind::Str(_) => Type::String,
            ExprKind::Value(v) => v.ty(),
            ExprKind::Bool(_) => Type::Bool,
            ExprKind::Int(_) => Type::Int,
            ExprKind::Float(_) => Type::Float,
            ExprKind::Duration(_) => Type::Duration,
            ExprKind::List(items) => {
                Type::List(Box::new(items.first().map_or(Type::Any, Self::infer)))
            }
            ExprKind::Map(_) => Type::Map(Box::new(Type::Any)),
            ExprKind::Binary(op, _, _)
                if op.precedence() == 4
                    || matches!(op, crate::ast::BinOp::And | crate::ast::BinOp::Or) =>
            {
                Type::Bool
            }
            ExprKind::Call(f, _) if f.name == "now" || f.name == "env" => Type::String,
            _ => {
                if let Some(p) = e.as_path() {
                    match p.as_slice() {
                        ["env" | "secrets" | "run", _] | ["steps", _, "outputs", _] => {
                            return Type::String
                        }
                        _ => {}
                    }
                }
                Type::Any
            }
        }
    }

    fn lower_envs(&mut self) -> IndexMap<String, EnvSpec> {
        let mut out = IndexMap::new();
        for e in &self.pl.envs {
            let mut spec = EnvSpec {
                name: e.name.name.clone(),
                span: e.name.span,
                file: None,
                vars: IndexMap::new(),
                require: vec![],
                forbid: IndexMap::new(),
                secrets: vec![],
                approvers: vec![],
                allow_if: None,
                protected: false,
                spans: IndexMap::new(),
            };
            for b in &e.body.blocks {
                self.err(Diagnostic::error(
                    "pipe::unknown-block",
                    format!("unknown block `{}` in an env", b.key.name),
                    b.key.span,
                    "not allowed here",
                ));
            }
            for a in &e.body.attrs {
                spec.spans.insert(a.key.name.clone(), a.value.span);
                let scope = self.scope(&[]);
                let folded = self.fold_in(&a.value, &scope);
                let value = folded.as_ref().and_then(Folded::value).cloned();
                match a.key.name.as_str() {
                    "file" => spec.file = self.expect_str(&a.value, value.as_ref()),
                    "vars" => {
                        if let Some(f) = folded {
                            spec.vars = self.deferrable_map(&a.value, f);
                        }
                    }
                    "require" | "secrets" | "approvers" => {
                        let list = self.expect_str_list(&a.value, value.as_ref());
                        match a.key.name.as_str() {
                            "require" => spec.require = list,
                            "secrets" => spec.secrets = list,
                            _ => spec.approvers = list,
                        }
                    }
                    "forbid" => match value {
                        Some(Value::Map(m)) => spec.forbid = m,
                        Some(v) => {
                            self.check_type(
                                &v,
                                &Type::Map(Box::new(Type::Any)),
                                a.value.span,
                                "`forbid`",
                            );
                        }
                        None => {}
                    },
                    "allow_if" => spec.allow_if = folded.map(to_deferrable),
                    "protected" => {
                        spec.protected =
                            self.expect_bool(&a.value, value.as_ref()).unwrap_or(false);
                    }
                    "description" => {}
                    _ => self.unknown_attr(&a.key, ENV_ATTRS, "an env"),
                }
            }
            out.insert(e.name.name.clone(), spec);
        }
        out
    }

    fn expect_str(&mut self, e: &Expr, v: Option<&Value>) -> Option<String> {
        match v {
            Some(Value::Str(s)) => Some(s.clone()),
            Some(v) => {
                self.check_type(v, &Type::String, e.span, "this attribute");
                None
            }
            None => None,
        }
    }

    fn expect_bool(&mut self, e: &Expr, v: Option<&Value>) -> Option<bool> {
        match v {
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                self.check_type(v, &Type::Bool, e.span, "this attribute");
                None
            }
            None => None,
        }
    }

    fn expect_str_list(&mut self, e: &Expr, v: Option<&Value>) -> Vec<String> {
        match v {
            Some(Value::List(items)) if items.iter().all(|i| matches!(i, Value::Str(_))) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            Some(v) => {
                self.check_type(
                    v,
                    &Type::List(Box::new(Type::String)),
                    e.span,
                    "this attribute",
                );
                vec![]
            }
            None => vec![],
        }
    }

    fn deferrable_map(&mut self, e: &Expr, f: Folded) -> IndexMap<String, Deferrable> {
        match f {
            Folded::Value(Value::Map(m)) => m
                .into_iter()
                .map(|(k, v)| (k, Deferrable::Ready(v)))
                .collect(),
            Folded::Value(v) => {
                self.check_type(
                    &v,
                    &Type::Map(Box::new(Type::String)),
                    e.span,
                    "this attribute",
                );
                IndexMap::new()
            }
            Folded::Residual(r) => match r.kind {
                ExprKind::Map(entries) => entries
                    .into_iter()
                    .map(|(k, v)| {
                        let d = match v.kind {
                            ExprKind::Value(v) => Deferrable::Ready(v),
                            _ => Deferrable::Deferred(v),
                        };
                        (k.name, d)
                    })
                    .collect(),
                _ => {
                    self.err(Diagnostic::error(
                        "pipe::type",
                        "expected a map literal `{ KEY = value }`",
                        e.span,
                        "not a map",
                    ));
                    IndexMap::new()
                }
            },
        }
    }

    /// Stage needs and environments, with stage cycles reported.
    #[allow(clippy::type_complexity)]
    fn lower_stage_attrs(
        &mut self,
        envs: &IndexMap<String, EnvSpec>,
    ) -> (Vec<Vec<(usize, Span)>>, Vec<Option<String>>) {
        let mut needs = vec![Vec::new(); self.pl.stages.len()];
        let mut env = vec![None; self.pl.stages.len()];
        for (si, stage) in self.pl.stages.iter().enumerate() {
            for entry in &stage.entries {
                match entry {
                    StageEntry::Attr(a) => match a.key.name.as_str() {
                        "needs" => {
                            for (name, span) in self.need_names(&a.value, &[]) {
                                match self.stage_names.iter().position(|s| *s == name) {
                                    Some(i) if i == si => self.err(Diagnostic::error(
                                        "pipe::cycle",
                                        format!("stage `{name}` needs itself"),
                                        span,
                                        "self-dependency",
                                    )),
                                    Some(i) => needs[si].push((i, span)),
                                    None => {
                                        let names = self.stage_names.clone();
                                        self.unknown_ref(
                                            "stage",
                                            &name,
                                            span,
                                            names.iter().map(String::as_str),
                                        );
                                    }
                                }
                            }
                        }
                        "env" => {
                            let name = match &a.value.kind {
                                ExprKind::Ident(n) => Some(n.clone()),
                                ExprKind::Str(_) => {
                                    let scope = self.scope(&[]);
                                    self.fold_in(&a.value, &scope).and_then(|f| {
                                        f.value().and_then(Value::as_str).map(str::to_string)
                                    })
                                }
                                _ => {
                                    self.err(
                                        Diagnostic::error("pipe::type", "a stage's `env` names an `env` block", a.value.span, "expected an env name")
                                            .with_help("write `env = staging` where `env staging { ... }` is declared in the pipeline"),
                                    );
                                    None
                                }
                            };
                            if let Some(name) = name {
                                if envs.contains_key(&name) {
                                    env[si] = Some(name);
                                } else {
                                    let names: Vec<String> = envs.keys().cloned().collect();
                                    self.unknown_ref(
                                        "env",
                                        &name,
                                        a.value.span,
                                        names.iter().map(String::as_str),
                                    );
                                }
                            }
                        }
                        "when" | "required" | "description" | "concurrency" | "executor" => {}
                        _ => self.unknown_attr(&a.key, STAGE_ATTRS, "a stage"),
                    },
                    StageEntry::Block(b) if b.key.name != "service" => {
                        if let Some(d) = misplaced::check(b, Place::Stage) {
                            self.err(d);
                            continue;
                        }
                        self.err(
                            Diagnostic::error(
                                "pipe::unknown-block",
                                format!("unknown block `{}` in a stage", b.key.name),
                                b.key.span,
                                "not allowed here",
                            )
                            .with_help(
                                "a stage holds `step`, `gate`, `chaos`, `for` and `service` blocks",
                            ),
                        );
                    }
                    _ => {}
                }
            }
        }
        let cyclic = self.report_cycles(
            self.pl.stages.len(),
            |i| needs[i].iter().map(|(n, s)| (*n, *s)).collect(),
            |i| format!("stage `{}`", self.pl.stages[i].name.name),
        );
        if cyclic {
            // The cycle is reported once, between stages; turned into step
            // edges it would be reported again as a cycle of their steps.
            needs.iter_mut().for_each(Vec::clear);
        }
        (needs, env)
    }

    /// Finds every cycle in a graph given by `deps(i) = [(needed, span)]` and
    /// reports each once, with every edge of the cycle labelled.
    fn report_cycles(
        &mut self,
        n: usize,
        deps: impl Fn(usize) -> Vec<(usize, Span)>,
        name: impl Fn(usize) -> String,
    ) -> bool {
        let mut g = petgraph::graph::DiGraph::<(), Span>::with_capacity(n, n);
        for _ in 0..n {
            g.add_node(());
        }
        for i in 0..n {
            for (d, s) in deps(i) {
                g.add_edge(
                    petgraph::graph::NodeIndex::new(i),
                    petgraph::graph::NodeIndex::new(d),
                    s,
                );
            }
        }
        let mut found = false;
        for scc in petgraph::algo::tarjan_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            found = true;
            let members: HashSet<usize> = scc.iter().map(|x| x.index()).collect();
            // Walk the cycle from its first member (by index) for a stable report.
            let start = *members.iter().min().expect("non-empty");
            let mut path = vec![start];
            let mut edges: Vec<Span> = Vec::new();
            let mut visited = HashSet::new();
            let mut cur = start;
            loop {
                visited.insert(cur);
                let next = deps(cur)
                    .into_iter()
                    .filter(|(d, _)| members.contains(d))
                    .min_by_key(|(d, _)| {
                        // Prefer closing the cycle, then unvisited nodes.
                        (
                            usize::from(*d != start),
                            usize::from(visited.contains(d)),
                            *d,
                        )
                    });
                let Some((nx, span)) = next else { break };
                edges.push(span);
                if nx == start || visited.contains(&nx) {
                    path.push(nx);
                    break;
                }
                path.push(nx);
                cur = nx;
            }
            let desc: Vec<String> = path.iter().map(|&i| name(i)).collect();
            let mut d = Diagnostic::error(
                "pipe::cycle",
                format!("dependency cycle: {}", desc.join(" → ")),
                edges[0],
                format!("{} needs {}", desc[0], desc[1]),
            )
            .with_help("remove one of these `needs` to break the cycle");
            for (k, s) in edges.iter().enumerate().skip(1) {
                d = d.with_label(*s, format!("{} needs {}", desc[k], desc[k + 1]));
            }
            self.err(d);
        }
        found
    }

    fn unknown_ref<'n>(
        &mut self,
        kind: &str,
        name: &str,
        span: Span,
        candidates: impl IntoIterator<Item = &'n str>,
    ) {
        let cands: Vec<&str> = candidates.into_iter().collect();
        let mut d = Diagnostic::error(
            leak_code(kind),
            format!("unknown {kind} `{name}`"),
            span,
            format!("no {kind} of that name"),
        );
        if let Some(n) = did_you_mean(name, cands.iter().copied()) {
            d = d.with_help(format!("did you mean `{n}`?"));
        } else if !cands.is_empty() && cands.len() <= 12 {
            d = d.with_help(format!("known: {}", cands.join(", ")));
        }
        self.err(d);
    }

    /// Names listed in a `needs` attribute: identifiers, strings (which may
    /// interpolate loop variables) and `stage.step` paths.
    fn need_names(&mut self, e: &Expr, locals: &[(String, Value)]) -> Vec<(String, Span)> {
        let items: Vec<&Expr> = match &e.kind {
            ExprKind::List(items) => items.iter().collect(),
            _ => vec![e],
        };
        let mut out = Vec::new();
        for item in items {
            if let Some(path) = item.as_path() {
                if path.len() <= 2 && !(path.len() == 1 && locals.iter().any(|(n, _)| n == path[0]))
                {
                    out.push((path.join("."), item.span));
                    continue;
                }
            }
            let scope = self.scope(locals);
            match self.fold_in(item, &scope) {
                Some(Folded::Value(Value::Str(s))) => out.push((s, item.span)),
                Some(Folded::Value(Value::List(l))) => {
                    out.extend(l.into_iter().filter_map(|v| v.as_str().map(|s| (s.to_string(), item.span))));
                }
                Some(_) => self.err(
                    Diagnostic::error("pipe::needs", "`needs` lists step or stage names", item.span, "not a name")
                        .with_help("write names (`needs = [migrate]`) or strings (`needs = [\"image-${svc}\"]`)"),
                ),
                None => {}
            }
        }
        out
    }

    /// Which stages run for the target environment: stages without an env,
    /// stages of the target env and every stage those need.
    fn select_stages(&self, needs: &[Vec<(usize, Span)>], env: &[Option<String>]) -> Vec<bool> {
        let n = self.pl.stages.len();
        let Some(target) = &self.ctx.target_env else {
            return vec![true; n];
        };
        let mut sel: Vec<bool> = env
            .iter()
            .map(|e| e.as_ref().is_none_or(|e| e == target))
            .collect();
        let mut stack: Vec<usize> = (0..n).filter(|&i| sel[i]).collect();
        while let Some(i) = stack.pop() {
            for (d, _) in &needs[i] {
                if !sel[*d] {
                    sel[*d] = true;
                    stack.push(*d);
                }
            }
        }
        sel
    }

    fn stage_required(&mut self, si: usize) -> bool {
        let stage = &self.pl.stages[si];
        let Some(a) = stage.entries.iter().find_map(|e| match e {
            StageEntry::Attr(a) if a.key.name == "required" => Some(a),
            _ => None,
        }) else {
            return true;
        };
        let scope = self.scope(&[]);
        match self.fold_in(&a.value, &scope) {
            Some(Folded::Value(v)) => v.truthy(),
            Some(Folded::Residual(_)) => {
                self.err(
                    Diagnostic::error(
                        "pipe::deferred",
                        "`required` must be known before the run starts",
                        a.value.span,
                        "depends on run-time values",
                    )
                    .with_help("use params and `git.*` here, not step outputs, env or secrets"),
                );
                true
            }
            None => true,
        }
    }

    fn fold_when(&mut self, e: &Expr) -> Option<Deferrable> {
        let scope = self.scope(&[]);
        let f = self.fold_in(e, &scope)?;
        Some(to_deferrable(f))
    }

    /// Unrolls a list of stage entries under the given loop bindings.
    fn expand(
        &mut self,
        entries: &[StageEntry],
        locals: &mut Vec<(String, Value)>,
        ctx: &StageCtx,
    ) {
        for entry in entries {
            match entry {
                StageEntry::Step(s) => self.lower_step(
                    &s.name,
                    s.uses.as_ref(),
                    &s.body,
                    s.span,
                    locals,
                    ctx,
                    StepForm::Step,
                ),
                StageEntry::Gate(g) => {
                    let form = match g.kind.dotted().as_str() {
                        "approval" => StepForm::Approval,
                        "policy" => StepForm::Policy,
                        other => {
                            let mut d = Diagnostic::error(
                                "pipe::unknown-gate",
                                format!("unknown gate kind `{other}`"),
                                g.kind.span,
                                "not a gate kind",
                            )
                            .with_help("gates are `approval` or `policy`");
                            if let Some(n) = did_you_mean(other, ["approval", "policy"]) {
                                d = d.with_help(format!("did you mean `{n}`?"));
                            }
                            self.err(d);
                            continue;
                        }
                    };
                    self.lower_step(&g.name, None, &g.body, g.span, locals, ctx, form);
                }
                StageEntry::Chaos(c) => {
                    self.lower_step(&c.name, None, &c.body, c.span, locals, ctx, StepForm::Chaos);
                }
                StageEntry::For(f) => self.expand_for(f, locals, ctx),
                StageEntry::Attr(_) | StageEntry::Block(_) => {}
            }
        }
    }

    fn loop_items(&mut self, f: &ForLoop, locals: &[(String, Value)]) -> Option<Vec<Vec<Value>>> {
        let scope = self.scope(locals);
        let folded = self.fold_in(&f.iter, &scope)?;
        let items = match folded {
            Folded::Value(Value::List(items)) => items.into_iter().map(|v| vec![v]).collect(),
            Folded::Value(Value::Map(m)) => {
                m.into_iter().map(|(k, v)| vec![Value::Str(k), v]).collect()
            }
            Folded::Value(v) => {
                self.err(Diagnostic::error(
                    "pipe::type",
                    format!("`for` iterates over a list or map, found {}", v.type_name()),
                    f.iter.span,
                    "not a list",
                ));
                return None;
            }
            Folded::Residual(_) => {
                self.err(
                    Diagnostic::error("pipe::deferred", "the list of a `for` must be known before the run starts", f.iter.span, "depends on run-time values")
                        .with_help("loop over params, literals or `git.*`; step outputs are only known while running"),
                );
                return None;
            }
        };
        if f.vars.len() == 2
            && !matches!(
                fold(&f.iter, &self.scope(locals)),
                Ok(Folded::Value(Value::Map(_)))
            )
        {
            self.err(Diagnostic::error(
                "pipe::type",
                "`for k, v in ...` needs a map",
                f.iter.span,
                "not a map",
            ));
            return None;
        }
        Some(items)
    }

    fn expand_for(&mut self, f: &ForLoop, locals: &mut Vec<(String, Value)>, ctx: &StageCtx) {
        let Some(items) = self.loop_items(f, locals) else {
            return;
        };
        // Bound the whole product before expanding anything.
        let per_item = self.count_expansion(&f.entries, locals, &f.vars, items.first());
        let total = (items.len() as u64).saturating_mul(per_item);
        if self.steps.len() as u64 + total > MAX_STEPS as u64 {
            self.err(
                Diagnostic::error(
                    "pipe::fan-out",
                    format!("this loop expands to {total} steps; a pipeline may have at most {MAX_STEPS}"),
                    Span { end: f.iter.span.end, ..f.span },
                    format!(
                        "`for {}`: {} × {per_item} steps",
                        f.vars.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", "),
                        items.len()
                    ),
                )
                .with_help("shrink the lists, or split the work across pipelines"),
            );
            return;
        }
        for item in items {
            let n = locals.len();
            for (var, v) in f
                .vars
                .iter()
                .zip(item.into_iter().rev().collect::<Vec<_>>().into_iter().rev())
            {
                locals.push((var.name.clone(), v));
            }
            self.expand(&f.entries, locals, ctx);
            locals.truncate(n);
        }
    }

    /// Steps one iteration of a loop body yields (nested loops multiplied out,
    /// evaluated with the first item bound).
    fn count_expansion(
        &mut self,
        entries: &[StageEntry],
        locals: &[(String, Value)],
        vars: &[Ident],
        first: Option<&Vec<Value>>,
    ) -> u64 {
        let mut l = locals.to_vec();
        if let Some(item) = first {
            for (var, v) in vars.iter().zip(item) {
                l.push((var.name.clone(), v.clone()));
            }
        }
        let mut n: u64 = 0;
        for e in entries {
            match e {
                StageEntry::Step(_) | StageEntry::Gate(_) | StageEntry::Chaos(_) => n += 1,
                StageEntry::For(f) => {
                    let scope = self.scope(&l);
                    let items = match fold(&f.iter, &scope) {
                        Ok(Folded::Value(Value::List(items))) => {
                            items.into_iter().map(|v| vec![v]).collect()
                        }
                        Ok(Folded::Value(Value::Map(m))) => m
                            .into_iter()
                            .map(|(k, v)| vec![Value::Str(k), v])
                            .collect::<Vec<_>>(),
                        _ => vec![],
                    };
                    let inner = self.count_expansion(&f.entries, &l, &f.vars, items.first());
                    n = n.saturating_add((items.len() as u64).saturating_mul(inner));
                }
                _ => {}
            }
        }
        n
    }

    fn resolve_template(&mut self, path: &Path) -> Option<(usize, &'a Template)> {
        let ws = self.ws;
        let module = &ws.modules[self.module];
        let segs: Vec<&str> = path.segments.iter().map(|s| s.name.as_str()).collect();
        match segs.as_slice() {
            [name] => {
                if let Some(t) = module.template(name) {
                    return Some((self.module, t));
                }
                let cands: Vec<String> = module.templates().map(|t| t.name.name.clone()).collect();
                let mut d = Diagnostic::error(
                    "pipe::unknown-template",
                    format!("unknown template `{name}`"),
                    path.span,
                    "no template of that name",
                );
                if let Some(n) = did_you_mean(name, cands.iter().map(String::as_str)) {
                    d = d.with_help(format!("did you mean `{n}`?"));
                } else if module.imports.is_empty() {
                    d = d.with_help("templates from the standard library need an import, e.g. `import \"std/docker\"` then `docker.build`");
                }
                self.err(d);
                None
            }
            [ns, name] => {
                let Some(&m) = module.imports.get(*ns) else {
                    let imported: Vec<String> = module.imports.keys().cloned().collect();
                    let mut d = Diagnostic::error(
                        "pipe::unknown-import",
                        format!("`{ns}` is not imported"),
                        path.segments[0].span,
                        "unknown namespace",
                    );
                    if let Some(n) = did_you_mean(ns, imported.iter().map(String::as_str)) {
                        d = d.with_help(format!("did you mean `{n}`?"));
                    } else if crate::stdlib::source(ns).is_some() {
                        d = d
                            .with_help(format!("add `import \"std/{ns}\"` at the top of the file"));
                    }
                    self.err(d);
                    return None;
                };
                if let Some(t) = ws.modules[m].template(name) {
                    return Some((m, t));
                }
                let cands: Vec<String> = ws.modules[m]
                    .templates()
                    .map(|t| t.name.name.clone())
                    .collect();
                self.unknown_ref("template", &format!("{ns}.{name}"), path.span, []);
                if let Some(n) = did_you_mean(name, cands.iter().map(String::as_str)) {
                    if let Some(last) = self.diags.last_mut() {
                        last.help = Some(format!("did you mean `{ns}.{n}`?"));
                    }
                } else if let Some(last) = self.diags.last_mut() {
                    last.help = Some(format!("`{ns}` has: {}", cands.join(", ")));
                }
                None
            }
            _ => {
                self.err(Diagnostic::error(
                    "pipe::unknown-template",
                    format!("`{}` is not a template name", path.dotted()),
                    path.span,
                    "expected `name` or `module.name`",
                ));
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn lower_step(
        &mut self,
        name: &Name,
        uses: Option<&Path>,
        body: &Body,
        span: Span,
        locals: &[(String, Value)],
        ctx: &StageCtx,
        form: StepForm,
    ) {
        let scope = self.scope(locals);
        let step_name = match self.fold_in(&name.expr, &scope) {
            Some(Folded::Value(Value::Str(s))) if !s.is_empty() => s,
            Some(Folded::Value(v)) => {
                self.err(Diagnostic::error(
                    "pipe::name",
                    format!("a step name must be a non-empty string, found `{v}`"),
                    name.span,
                    "invalid name",
                ));
                return;
            }
            Some(Folded::Residual(_)) => {
                self.err(
                    Diagnostic::error(
                        "pipe::deferred",
                        "a step name must be known before the run starts",
                        name.span,
                        "depends on run-time values",
                    )
                    .with_help("interpolate loop variables and params only"),
                );
                return;
            }
            None => return,
        };
        if step_name.contains(['.', '/', ' ', '\n']) {
            self.err(
                Diagnostic::error(
                    "pipe::name",
                    format!("step name `{step_name}` contains `.`, `/` or whitespace"),
                    name.span,
                    "invalid name",
                )
                .with_help("use letters, digits, `-` and `_`"),
            );
        }
        let executor = match form {
            StepForm::Approval => "approval",
            StepForm::Policy => "policy",
            StepForm::Chaos => "chaos",
            StepForm::Step => "",
        };
        let mut raw = RawStep {
            step: PlanStep {
                id: format!("{}.{}", ctx.name, step_name),
                stage: ctx.name.clone(),
                name: step_name,
                executor: executor.to_string(),
                template: uses.map(Path::dotted),
                span,
                needs: vec![],
                when: ctx.when.clone(),
                run: None,
                shell: None,
                env: IndexMap::new(),
                inputs: IndexMap::new(),
                outputs: vec![],
                timeout_ms: None,
                retry: None,
                estimate_ms: None,
                on_failure: None,
                cache: None,
                idempotent: true,
                concurrency: None,
                environment: ctx.environment.clone(),
                required: ctx.required,
                handler: ctx.handler,
            },
            stage: ctx.index,
            name_span: name.span,
            needs: vec![],
            refs: vec![],
            chaos_refs: vec![],
        };

        let allowed: &[&str] = match form {
            StepForm::Approval => APPROVAL_ATTRS,
            StepForm::Policy => POLICY_ATTRS,
            StepForm::Chaos => CHAOS_ATTRS,
            StepForm::Step => STEP_ATTRS,
        };

        // Template instantiation: arguments first, then the template's own body.
        let mut template_body: Option<(usize, &Template, IndexMap<String, ArgBinding>)> = None;
        if let Some(path) = uses {
            if let Some((m, t)) = self.resolve_template(path) {
                let args = self.bind_args(t, body, locals, name.span, path);
                template_body = Some((m, t, args));
            }
        }
        if let Some((_, t, args)) = &mut template_body {
            let tscope = LScope {
                locals: &[],
                params: None,
                args: Some(args),
                git: &self.ctx.git,
                pipeline: &self.pl.name.name,
                deferred: true,
            };
            for a in &t.body.attrs {
                if a.key.name == "uses" {
                    match fold(&a.value, &tscope) {
                        Ok(Folded::Value(Value::Str(s))) => raw.step.executor = s,
                        _ => self.err(Diagnostic::error(
                            "pipe::type",
                            "`uses` names an executor action as a string",
                            a.value.span,
                            "expected a string",
                        )),
                    }
                    continue;
                }
                if !STEP_ATTRS.contains(&a.key.name.as_str())
                    && !CONTAINER_ATTRS.contains(&a.key.name.as_str())
                {
                    self.unknown_attr(
                        &a.key,
                        &[STEP_ATTRS, CONTAINER_ATTRS, &["uses"]].concat(),
                        "a template body",
                    );
                    continue;
                }
                self.apply_attr(&mut raw, a, &tscope, true);
            }
            for b in &t.body.blocks {
                self.apply_block(&mut raw, b, &tscope);
            }
            raw.step.inputs.reserve(args.len());
            for (k, v) in args.drain(..) {
                let d = match v.value {
                    Folded::Value(v) => Deferrable::Ready(v),
                    Folded::Residual(e) => Deferrable::Deferred(e),
                };
                raw.step.inputs.insert(k, d);
            }
        }

        let scope = self.scope(locals);
        for a in &body.attrs {
            let key = a.key.name.as_str();
            if key == "needs" {
                raw.needs.extend(self.need_names(&a.value, locals));
                continue;
            }
            if uses.is_some() {
                // Other attributes are template arguments, bound (or reported) above.
                if STEP_ATTRS.contains(&key) {
                    self.apply_attr(&mut raw, a, &scope, false);
                }
                // Other attributes were bound as template arguments.
                continue;
            }
            match form {
                StepForm::Step if CONTAINER_ATTRS.contains(&key) => {
                    self.apply_input(&mut raw, a, &scope);
                }
                StepForm::Step if STEP_ATTRS.contains(&key) => {
                    self.apply_attr(&mut raw, a, &scope, false);
                }
                StepForm::Step => {
                    let allowed_all = [STEP_ATTRS, CONTAINER_ATTRS].concat();
                    self.unknown_attr(&a.key, &allowed_all, "a step");
                    if uses.is_none() && did_you_mean(key, allowed_all.iter().copied()).is_none() {
                        if let Some(last) = self.diags.last_mut() {
                            last.help = Some(format!(
                                "a plain step takes: {}; to pass `{key}` to a template, write `step {} = module.template {{ ... }}`",
                                STEP_ATTRS.join(", "),
                                raw.step.name
                            ));
                        }
                    }
                }
                _ if ["timeout", "estimate", "when"].contains(&key) => {
                    self.apply_attr(&mut raw, a, &scope, false);
                }
                _ if allowed.contains(&key) => self.apply_input(&mut raw, a, &scope),
                _ => {
                    let place = match form {
                        StepForm::Approval => "an approval gate",
                        StepForm::Policy => "a policy gate",
                        _ => "a chaos block",
                    };
                    self.unknown_attr(&a.key, allowed, place);
                }
            }
        }
        for b in &body.blocks {
            if form == StepForm::Chaos && b.key.name == "fault" {
                self.apply_fault(&mut raw, b, &scope);
            } else if let Some(d) = misplaced::check(b, Place::Step) {
                self.err(d);
            } else if template_body.is_none() || STEP_BLOCKS.contains(&b.key.name.as_str()) {
                self.apply_block(&mut raw, b, &scope);
            } else {
                self.err(
                    Diagnostic::error(
                        "pipe::unknown-block",
                        format!("unknown block `{}` in a step", b.key.name),
                        b.key.span,
                        "not allowed here",
                    )
                    .with_help(format!("blocks in a step: {}", STEP_BLOCKS.join(", "))),
                );
            }
        }

        if form == StepForm::Step && raw.step.executor.is_empty() {
            raw.step.executor = if raw.step.inputs.contains_key("image") {
                self.container_executor(&raw, body, ctx)
            } else if raw.step.run.is_some() {
                if let Some(a) = body.attr("executor") {
                    self.err(
                        Diagnostic::error(
                            "pipe::executor",
                            "`executor` needs a container step",
                            a.value.span,
                            "this step has no `image`",
                        )
                        .with_help("add `image = \"...\"`: a swarm job runs the `run` command in that image"),
                    );
                }
                "shell".into()
            } else {
                if template_body.is_none()
                    && uses.is_none()
                    && body.attr("run").is_none()
                    && body.attr("image").is_none()
                {
                    self.err(
                        Diagnostic::error("pipe::empty-step", format!("step `{}` has nothing to run", raw.step.name), name.span, "no `run`, `image` or template")
                            .with_help("give it `run = \"...\"`, or instantiate a template: `step build = docker.build { ... }`"),
                    );
                }
                "shell".into()
            };
        }
        if form == StepForm::Policy
            && !raw.step.inputs.contains_key("require")
            && !raw.step.inputs.contains_key("warn")
        {
            self.err(
                Diagnostic::error(
                    "pipe::gate",
                    "a policy gate needs `require` (or `warn`)",
                    name.span,
                    "nothing to check",
                )
                .with_help("e.g. `require = steps.scan.outputs.critical == \"0\"`"),
            );
        }
        if form == StepForm::Chaos
            && !raw.step.inputs.contains_key("upstream")
            && !raw.step.inputs.contains_key("container")
        {
            self.err(
                Diagnostic::error(
                    "pipe::chaos",
                    "a chaos block needs `upstream` (a proxy) or `container`",
                    name.span,
                    "no target",
                )
                .with_help("e.g. `upstream = \"http://127.0.0.1:8081\"`"),
            );
        }
        if let Some(Deferrable::Ready(v)) = &raw.step.when {
            if !v.truthy() && ctx.when.as_ref() != raw.step.when.as_ref() {
                let span = body.attr("when").map_or(name.span, |a| a.value.span);
                self.err(
                    Diagnostic::warning("pipe::never-runs", format!("step `{}` never runs: its `when` is always false", raw.step.name), span, "always false")
                        .with_help("remove the step, or make the condition depend on params, git or step outputs"),
                );
            }
        }
        self.collect_refs(&mut raw);
        self.steps.push(raw);
    }

    /// Binds a template call's arguments: unknown names, missing required
    /// parameters and type mismatches are reported.
    fn bind_args(
        &mut self,
        t: &Template,
        body: &Body,
        locals: &[(String, Value)],
        name_span: Span,
        path: &Path,
    ) -> IndexMap<String, ArgBinding> {
        let mut args: IndexMap<String, ArgBinding> = IndexMap::with_capacity(t.params.len());
        let param_names: Vec<&str> = t.params.iter().map(|p| p.name.name.as_str()).collect();
        let scope = self.scope(locals);
        // A handful of arguments: a vector beats hashing each name.
        let mut given: Vec<(&str, &Attr)> = Vec::with_capacity(body.attrs.len());
        for a in &body.attrs {
            let k = a.key.name.as_str();
            if STEP_ATTRS.contains(&k) && !param_names.contains(&k) {
                continue;
            }
            if !param_names.contains(&k) {
                let mut d = Diagnostic::error(
                    "pipe::unknown-argument",
                    format!("`{}` has no parameter `{k}`", path.dotted()),
                    a.key.span,
                    "unknown argument",
                );
                d = match did_you_mean(
                    k,
                    param_names
                        .iter()
                        .copied()
                        .chain(STEP_ATTRS.iter().copied()),
                ) {
                    Some(n) => d.with_help(format!("did you mean `{n}`?")),
                    None => d.with_help(format!("its parameters are: {}", param_names.join(", "))),
                };
                self.err(d);
                continue;
            }
            given.push((k, a));
        }
        for p in &t.params {
            let found = given
                .iter()
                .find(|(k, _)| *k == p.name.name)
                .map(|(_, a)| *a);
            let binding = if let Some(a) = found {
                let Some(value) = self.fold_in(&a.value, &scope) else {
                    continue;
                };
                self.check_arg(p, &value, a.value.span, path);
                let command = if p.ty.ty == Type::Command {
                    self.command_parts(&a.value, &scope).map(|c| c.parts)
                } else {
                    None
                };
                ArgBinding { value, command }
            } else if let Some(d) = &p.default {
                let tscope = LScope {
                    locals: &[],
                    params: None,
                    args: Some(&args),
                    git: &self.ctx.git,
                    pipeline: &self.pl.name.name,
                    deferred: true,
                };
                let Some(value) = self.fold_in(d, &tscope) else {
                    continue;
                };
                ArgBinding {
                    value,
                    command: None,
                }
            } else {
                self.err(
                    Diagnostic::error(
                        "pipe::missing-argument",
                        format!("missing argument `{}` for `{}`", p.name.name, path.dotted()),
                        name_span,
                        format!("needs `{}`", p.name.name),
                    )
                    .with_help(format!("add `{} = <{}>` to the step", p.name.name, p.ty.ty))
                    .with_label(p.name.span, "declared here"),
                );
                continue;
            };
            args.insert(p.name.name.clone(), binding);
        }
        args
    }

    fn check_arg(&mut self, p: &Param, value: &Folded, span: Span, path: &Path) {
        let what = format!("`{}` of `{}`", p.name.name, path.dotted());
        match value {
            Folded::Value(v) => {
                self.check_type(v, &p.ty.ty, span, &what);
            }
            Folded::Residual(e) => {
                let t = Self::infer(e);
                if !p.ty.ty.accepts(&t) {
                    self.err(Diagnostic::error(
                        "pipe::type",
                        format!("{what} expects {}, found {t}", p.ty.ty),
                        span,
                        format!("this is {}", a_type(&t)),
                    ));
                }
            }
        }
    }

    /// Builds a shell command: literal text stays shell, interpolations
    /// become quoted values. Secrets may not be interpolated.
    fn command_parts(&mut self, e: &Expr, scope: &LScope<'_>) -> Option<CommandTemplate> {
        let mut parts = Vec::new();
        match &e.kind {
            ExprKind::Str(ps) => {
                for p in ps {
                    match p {
                        StrPart::Lit(s) => parts.push(CommandPart::Lit(s.clone())),
                        StrPart::Interp(ie) => {
                            if let ExprKind::Ident(n) = &ie.kind {
                                if let Some(cmd) = scope
                                    .args
                                    .and_then(|a| a.get(n))
                                    .and_then(|b| b.command.clone())
                                {
                                    parts.extend(cmd);
                                    continue;
                                }
                            }
                            self.reject_secret(ie);
                            let f = self.fold_in(ie, scope)?;
                            parts.push(CommandPart::Value(to_deferrable(f)));
                        }
                    }
                }
            }
            ExprKind::Ident(n)
                if scope
                    .args
                    .and_then(|a| a.get(n))
                    .is_some_and(|b| b.command.is_some()) =>
            {
                parts = scope
                    .args
                    .and_then(|a| a.get(n))
                    .and_then(|b| b.command.clone())
                    .unwrap_or_default();
            }
            _ => {
                self.reject_secret(e);
                let f = self.fold_in(e, scope)?;
                match &f {
                    Folded::Value(Value::Str(_)) | Folded::Residual(_) => {
                        // A command given by value (a param, `-p`) is one quoted word.
                        parts.push(CommandPart::Value(to_deferrable(f)));
                    }
                    Folded::Value(v) => {
                        self.check_type(v, &Type::String, e.span, "a command");
                        return None;
                    }
                }
            }
        }
        Some(CommandTemplate {
            parts,
            span: e.span,
        })
    }

    fn reject_secret(&mut self, e: &Expr) {
        let mut hit = None;
        e.walk(&mut |s| {
            if let Some(p) = s.as_path() {
                if p.first() == Some(&"secrets") && hit.is_none() {
                    hit = Some((s.span, p.get(1).map(|x| (*x).to_string())));
                }
            }
        });
        if let Some((span, name)) = hit {
            let n = name.unwrap_or_else(|| "NAME".into());
            self.err(
                Diagnostic::error("pipe::secret-in-command", "a secret cannot be interpolated into a command", span, "secret interpolated here")
                    .with_help(format!("pass it through the environment: `env = {{ {n} = secrets.{n} }}` and write `\"${n}\"` in the shell command")),
            );
        }
    }

    /// `container`, or `swarm` when the step (or else its stage) says
    /// `executor = "swarm"`: see docs/swarm.md.
    fn container_executor(&mut self, raw: &RawStep, body: &Body, ctx: &StageCtx) -> String {
        let stage_attr = self.pl.stages.get(ctx.index).and_then(|st| {
            st.entries.iter().find_map(|e| match e {
                StageEntry::Attr(a) if a.key.name == "executor" => Some(a),
                _ => None,
            })
        });
        let (value, span) = match (raw.step.inputs.get("executor"), stage_attr) {
            (Some(d), _) => (
                d.ready().cloned(),
                body.attr("executor").map(|a| a.value.span),
            ),
            (None, Some(a)) => {
                let scope = self.scope(&[]);
                (
                    self.fold_in(&a.value, &scope)
                        .and_then(|f| f.value().cloned()),
                    Some(a.value.span),
                )
            }
            (None, None) => return "container".into(),
        };
        match value.as_ref().and_then(Value::as_str) {
            Some("swarm") => "swarm".into(),
            Some("container" | "docker") => "container".into(),
            _ => {
                let span = span.unwrap_or(raw.name_span);
                self.err(
                    Diagnostic::error(
                        "pipe::executor",
                        "`executor` of a container step is \"container\" or \"swarm\"",
                        span,
                        "unknown executor",
                    )
                    .with_help("write `executor = \"swarm\"` to run the step as a Docker Swarm job, or leave it out to run a local container"),
                );
                "container".into()
            }
        }
    }

    fn apply_input(&mut self, raw: &mut RawStep, a: &Attr, scope: &LScope<'_>) {
        if let Some(f) = self.fold_in(&a.value, scope) {
            raw.step.inputs.insert(a.key.name.clone(), to_deferrable(f));
        }
    }

    fn apply_attr(&mut self, raw: &mut RawStep, a: &Attr, scope: &LScope<'_>, from_template: bool) {
        let key = a.key.name.as_str();
        match key {
            "run" | "on_failure" => {
                if let Some(c) = self.command_parts(&a.value, scope) {
                    if key == "run" {
                        raw.step.run = Some(c);
                    } else {
                        raw.step.on_failure = Some(c);
                    }
                }
            }
            "needs" => raw.needs.extend(self.need_names(&a.value, scope.locals)),
            "image" | "user" | "workdir" | "network" | "cpus" | "memory" | "executor"
            | "placement" | "artifacts" => self.apply_input(raw, a, scope),
            _ => {
                let Some(f) = self.fold_in(&a.value, scope) else {
                    return;
                };
                let v = f.value().cloned();
                match key {
                    "shell" => raw.step.shell = self.expect_str(&a.value, v.as_ref()),
                    "when" => {
                        // A step's condition and its stage's both hold.
                        raw.step.when = Some(match (raw.step.when.take(), to_deferrable(f)) {
                            (None, d) => d,
                            (Some(Deferrable::Ready(s)), d) if s.truthy() => d,
                            (Some(s @ Deferrable::Ready(_)), _) => s,
                            (Some(Deferrable::Deferred(s)), d) => {
                                let span = a.value.span;
                                Deferrable::Deferred(Expr::new(
                                    ExprKind::Binary(
                                        crate::ast::BinOp::And,
                                        Box::new(s),
                                        Box::new(deferrable_expr(d, span)),
                                    ),
                                    span,
                                ))
                            }
                        });
                    }
                    "timeout" | "estimate" => {
                        let d = match &v {
                            Some(Value::Duration(d)) => Some(*d),
                            Some(other) => {
                                self.check_type(
                                    other,
                                    &Type::Duration,
                                    a.value.span,
                                    &format!("`{key}`"),
                                );
                                None
                            }
                            None => {
                                self.err(Diagnostic::error(
                                    "pipe::deferred",
                                    format!("`{key}` must be known before the run starts"),
                                    a.value.span,
                                    "depends on run-time values",
                                ));
                                None
                            }
                        };
                        if key == "timeout" {
                            raw.step.timeout_ms = d.or(raw.step.timeout_ms);
                        } else {
                            raw.step.estimate_ms = d.or(raw.step.estimate_ms);
                        }
                    }
                    "env" => {
                        let m = self.deferrable_map(&a.value, f);
                        raw.step.env.extend(m);
                    }
                    "outputs" => raw.step.outputs = self.expect_str_list(&a.value, v.as_ref()),
                    "cache" => match v {
                        Some(Value::Bool(true)) => {
                            raw.step.cache = Some(CacheSpec {
                                key: None,
                                inputs: vec![],
                            });
                        }
                        Some(Value::Bool(false)) => raw.step.cache = None,
                        Some(other) => {
                            self.check_type(&other, &Type::Bool, a.value.span, "`cache`");
                        }
                        None => {}
                    },
                    "idempotent" => {
                        if let Some(b) = self.expect_bool(&a.value, v.as_ref()) {
                            raw.step.idempotent = b;
                        }
                    }
                    "concurrency" => raw.step.concurrency = self.expect_str(&a.value, v.as_ref()),
                    "description" => {
                        raw.step
                            .inputs
                            .entry("description".into())
                            .or_insert(to_deferrable(f));
                    }
                    _ => {
                        if !from_template {
                            self.unknown_attr(&a.key, STEP_ATTRS, "a step");
                        }
                    }
                }
            }
        }
    }

    fn apply_block(&mut self, raw: &mut RawStep, b: &Block, scope: &LScope<'_>) {
        match b.key.name.as_str() {
            "retry" => raw.step.retry = Some(self.retry_policy(b, scope)),
            "cache" => {
                let mut spec = CacheSpec {
                    key: None,
                    inputs: vec![],
                };
                for a in &b.body.attrs {
                    let Some(f) = self.fold_in(&a.value, scope) else {
                        continue;
                    };
                    match a.key.name.as_str() {
                        "key" => spec.key = Some(to_deferrable(f)),
                        "inputs" => spec.inputs = self.expect_str_list(&a.value, f.value()),
                        _ => self.unknown_attr(&a.key, &["key", "inputs"], "a cache block"),
                    }
                }
                raw.step.cache = Some(spec);
            }
            "service" => {
                let m = self.service_map(b, scope);
                let list = raw
                    .step
                    .inputs
                    .entry("services".into())
                    .or_insert(Deferrable::Ready(Value::List(vec![])));
                if let Deferrable::Ready(Value::List(l)) = list {
                    l.push(Value::Map(m));
                }
            }
            other => {
                let mut d = Diagnostic::error(
                    "pipe::unknown-block",
                    format!("unknown block `{other}` in a step"),
                    b.key.span,
                    "not allowed here",
                );
                d = match did_you_mean(other, STEP_BLOCKS.iter().copied()) {
                    Some(n) => d.with_help(format!("did you mean `{n}`?")),
                    None => d.with_help(format!("blocks in a step: {}", STEP_BLOCKS.join(", "))),
                };
                self.err(d);
            }
        }
    }

    /// A `service NAME { ... }` block as the map the executors read.
    fn service_map(&mut self, b: &Block, scope: &LScope<'_>) -> IndexMap<String, Value> {
        let mut m = IndexMap::new();
        if let Some(label) = &b.label {
            if let Some(Folded::Value(v)) = self.fold_in(&label.expr, scope) {
                m.insert("name".to_string(), v);
            }
        }
        let mut deferred = false;
        for a in &b.body.attrs {
            match self.fold_in(&a.value, scope) {
                Some(Folded::Value(v)) => {
                    m.insert(a.key.name.clone(), v);
                }
                Some(Folded::Residual(_)) => deferred = true,
                None => {}
            }
        }
        if deferred {
            self.err(Diagnostic::error(
                "pipe::deferred",
                "a service's settings must be known before the run starts",
                b.span,
                "depends on run-time values",
            ));
        }
        m
    }

    /// A stage's `service` blocks are shared by its shell and container
    /// steps: each such step gets them with the stage's name and the number
    /// of steps sharing them, so the runtime starts them once, before the
    /// first, and removes them after the last (docs/docker.md).
    fn attach_stage_services(
        &mut self,
        entries: &[StageEntry],
        stage: &str,
        steps: std::ops::Range<usize>,
    ) {
        let blocks: Vec<&Block> = entries
            .iter()
            .filter_map(|e| match e {
                StageEntry::Block(b) if b.key.name == "service" => Some(b),
                _ => None,
            })
            .collect();
        if blocks.is_empty() {
            return;
        }
        let scope = self.scope(&[]);
        let maps: Vec<IndexMap<String, Value>> =
            blocks.iter().map(|b| self.service_map(b, &scope)).collect();
        let users: Vec<usize> = steps
            .filter(|&i| matches!(self.steps[i].step.executor.as_str(), "shell" | "container"))
            .collect();
        for &i in &users {
            let list = self.steps[i]
                .step
                .inputs
                .entry("services".into())
                .or_insert(Deferrable::Ready(Value::List(vec![])));
            if let Deferrable::Ready(Value::List(l)) = list {
                for m in &maps {
                    let mut m = m.clone();
                    m.insert("stage".into(), Value::Str(stage.to_string()));
                    m.insert("users".into(), Value::Int(users.len() as i64));
                    l.push(Value::Map(m));
                }
            }
        }
    }

    fn apply_fault(&mut self, raw: &mut RawStep, b: &Block, scope: &LScope<'_>) {
        let Some(label) = &b.label else {
            self.err(Diagnostic::error("pipe::chaos", "a fault needs a kind: `fault latency { ... }`", b.key.span, "no kind")
                .with_help("kinds: latency, timeout, http_status, reset, close, bandwidth, slow_body, refuse, dns, tls, kill, pause, restart"));
            return;
        };
        let Some(Folded::Value(Value::Str(kind))) = self.fold_in(&label.expr, scope) else {
            return;
        };
        const KINDS: &[&str] = &[
            "latency",
            "timeout",
            "http_status",
            "reset",
            "close",
            "bandwidth",
            "slow_body",
            "slicer",
            "refuse",
            "dns",
            "tls",
            "kill",
            "pause",
            "restart",
        ];
        if !KINDS.contains(&kind.as_str()) {
            self.unknown_ref("fault", &kind, label.span, KINDS.iter().copied());
            return;
        }
        let allowed = fault_params(&kind);
        let place = format!("fault `{kind}`");
        let mut m = IndexMap::new();
        m.insert("kind".to_string(), Value::Str(kind));
        for a in &b.body.attrs {
            if !allowed.contains(&a.key.name.as_str()) {
                self.unknown_attr(&a.key, &allowed, &place);
                continue;
            }
            match self.fold_in(&a.value, scope) {
                Some(Folded::Value(v)) => {
                    if a.key.name == "rate" {
                        let ok = match v {
                            Value::Float(x) => (0.0..=1.0).contains(&x),
                            Value::Int(i) => (0..=1).contains(&i),
                            _ => false,
                        };
                        if !ok {
                            self.err(Diagnostic::error(
                                "pipe::chaos",
                                "`rate` is a probability between 0 and 1",
                                a.value.span,
                                "out of range",
                            ));
                        }
                    }
                    m.insert(a.key.name.clone(), v);
                }
                Some(Folded::Residual(_)) => {
                    self.err(Diagnostic::error(
                        "pipe::deferred",
                        "fault settings must be known before the run starts",
                        a.value.span,
                        "depends on run-time values",
                    ));
                }
                None => {}
            }
        }
        let list = raw
            .step
            .inputs
            .entry("faults".into())
            .or_insert(Deferrable::Ready(Value::List(vec![])));
        if let Deferrable::Ready(Value::List(l)) = list {
            l.push(Value::Map(m));
        }
    }

    fn retry_policy(&mut self, b: &Block, scope: &LScope<'_>) -> RetryPolicy {
        let mut p = RetryPolicy {
            attempts: 3,
            backoff: Backoff::Exponential {
                base_ms: 1000,
                max_ms: 30_000,
            },
            max_elapsed_ms: None,
            on: vec![],
            respect_retry_after: true,
            span: b.span,
        };
        for a in &b.body.attrs {
            let Some(f) = self.fold_in(&a.value, scope) else {
                continue;
            };
            let Some(v) = f.value().cloned() else {
                self.err(Diagnostic::error(
                    "pipe::deferred",
                    "retry settings must be known before the run starts",
                    a.value.span,
                    "depends on run-time values",
                ));
                continue;
            };
            match a.key.name.as_str() {
                "attempts" => match v {
                    Value::Int(n) if (1..=100).contains(&n) => p.attempts = n as u32,
                    _ => self.err(Diagnostic::error(
                        "pipe::type",
                        "`attempts` is a whole number from 1 to 100",
                        a.value.span,
                        "out of range",
                    )),
                },
                "backoff" => match backoff_of(&v) {
                    Some(bk) => p.backoff = bk,
                    None => self.err(Diagnostic::error(
                        "pipe::type",
                        "`backoff` is `fixed(d)`, `linear(step, max)` or `exponential(base, max)`",
                        a.value.span,
                        "not a backoff",
                    )),
                },
                "max_elapsed" => match v {
                    Value::Duration(d) => p.max_elapsed_ms = Some(d),
                    v => {
                        self.check_type(&v, &Type::Duration, a.value.span, "`max_elapsed`");
                    }
                },
                "max_delay" => match (v, &mut p.backoff) {
                    (
                        Value::Duration(d),
                        Backoff::Exponential { max_ms, .. } | Backoff::Linear { max_ms, .. },
                    ) => *max_ms = d,
                    (Value::Duration(_), Backoff::Fixed { .. }) => {}
                    (v, _) => {
                        self.check_type(&v, &Type::Duration, a.value.span, "`max_delay`");
                    }
                },
                "on" => match v {
                    Value::List(l) => p.on = l,
                    v => p.on = vec![v],
                },
                "respect_retry_after" => {
                    if let Some(b) = self.expect_bool(&a.value, Some(&v)) {
                        p.respect_retry_after = b;
                    }
                }
                _ => self.unknown_attr(&a.key, RETRY_ATTRS, "a retry block"),
            }
        }
        p
    }

    /// Records `steps.<name>` and `chaos.<name>` references in deferred values.
    fn collect_refs(&mut self, raw: &mut RawStep) {
        let mut exprs: Vec<&Expr> = Vec::new();
        let push = |d: &'_ Deferrable, exprs: &mut Vec<Expr>| {
            if let Deferrable::Deferred(e) = d {
                exprs.push(e.clone());
            }
        };
        let mut owned: Vec<Expr> = Vec::new();
        let s = &raw.step;
        for d in s.env.values().chain(s.inputs.values()) {
            push(d, &mut owned);
        }
        if let Some(w) = &s.when {
            push(w, &mut owned);
        }
        for c in s.run.iter().chain(s.on_failure.iter()) {
            for p in &c.parts {
                if let CommandPart::Value(d) = p {
                    push(d, &mut owned);
                }
            }
        }
        if let Some(CacheSpec { key: Some(k), .. }) = &s.cache {
            push(k, &mut owned);
        }
        exprs.extend(owned.iter());
        let mut refs = Vec::new();
        let mut chaos = Vec::new();
        for e in exprs {
            e.walk(&mut |sub| {
                if let Some((root, keys)) = const_chain(sub) {
                    match root {
                        "steps" if !keys.is_empty() => {
                            // `steps.build.outputs.x` or `steps.stage.step.outputs.x`.
                            let (name, rest) = if keys.len() >= 2
                                && self.stage_names.contains(&keys[0])
                                && keys[1] != "outputs"
                            {
                                (format!("{}.{}", keys[0], keys[1]), &keys[2..])
                            } else {
                                (keys[0].clone(), &keys[1..])
                            };
                            let output = match rest {
                                [o, k, ..] if o == "outputs" => Some(k.clone()),
                                _ => None,
                            };
                            if !refs
                                .iter()
                                .any(|(n, o, _): &(String, Option<String>, Span)| {
                                    *n == name && *o == output
                                })
                            {
                                refs.push((name, output, sub.span));
                            }
                        }
                        "chaos"
                            if !keys.is_empty()
                                && !chaos.iter().any(|(n, _): &(String, Span)| *n == keys[0]) =>
                        {
                            chaos.push((keys[0].clone(), sub.span));
                        }
                        _ => {}
                    }
                }
            });
        }
        raw.refs = refs;
        raw.chaos_refs = chaos;
    }

    fn check_unique_names(&mut self) {
        let mut seen: HashMap<&str, (Span, usize)> = HashMap::new();
        let mut dups = Vec::new();
        for r in &self.steps {
            if let Some((prev, prev_stage)) = seen.insert(&r.step.id, (r.name_span, r.stage)) {
                // Two declarations of one stage are reported once, as a
                // duplicate stage, not again for every step they share.
                if prev_stage == r.stage {
                    dups.push((r.step.id.clone(), r.step.name.clone(), r.name_span, prev));
                }
            }
        }
        for (id, name, span, prev) in dups {
            let mut d = Diagnostic::error(
                "pipe::duplicate",
                format!(
                    "step `{name}` is defined twice in stage `{}`",
                    id.split('.').next().unwrap_or("")
                ),
                span,
                "second definition",
            );
            if prev == span {
                d = d.with_help("inside a `for`, interpolate the loop variable into the name: `step \"build-${svc}\"`");
            } else {
                d = d.with_label(prev, "first defined here");
            }
            self.err(d);
        }
    }

    /// Turns needs, references and stage needs into edges; reports unknown
    /// names, self-dependencies and cycles.
    fn resolve_edges(
        &mut self,
        main_count: usize,
        stage_needs: &[Vec<(usize, Span)>],
        stages: &[StageInfo],
    ) {
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in self.steps.iter().enumerate() {
            by_id.insert(r.step.id.clone(), i);
            by_name.entry(r.step.name.clone()).or_default().push(i);
        }
        let all_names: Vec<String> = {
            let mut v: Vec<String> = by_name.keys().cloned().collect();
            v.sort();
            v
        };
        let handler_base = main_count;
        let mut edges: Vec<Vec<(usize, Span)>> = vec![Vec::new(); self.steps.len()];
        let mut errors = Vec::new();
        for (i, r) in self.steps.iter().enumerate() {
            let in_handler = i >= handler_base;
            let resolve = |name: &str| -> Result<usize, String> {
                if let Some(&j) = by_id.get(&format!("{}.{}", r.step.stage, name)) {
                    return Ok(j);
                }
                if let Some(&j) = by_id.get(name) {
                    return Ok(j);
                }
                match by_name.get(name).map(Vec::as_slice) {
                    Some([j]) => Ok(*j),
                    Some(many) => Err(format!(
                        "ambiguous: {}",
                        many.iter()
                            .map(|&j| format!("`{}`", self.steps[j].step.id))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )),
                    None => Err(String::new()),
                }
            };
            for (name, span) in &r.needs {
                if let Some(si) = self.stage_names.iter().position(|s| s == name) {
                    // A stage: every step in it.
                    if si == r.stage {
                        errors.push(Diagnostic::error(
                            "pipe::cycle",
                            format!("step `{}` needs its own stage", r.step.name),
                            *span,
                            "self-dependency",
                        ));
                    }
                    for &j in stages.get(si).map_or(&[][..], |s| &s.steps[..]) {
                        edges[i].push((j, *span));
                    }
                    continue;
                }
                match resolve(name) {
                    Ok(j) if j == i => errors.push(Diagnostic::error(
                        "pipe::cycle",
                        format!("step `{}` needs itself", r.step.name),
                        *span,
                        "self-dependency",
                    )),
                    Ok(j) if !in_handler && j >= handler_base => errors.push(Diagnostic::error(
                        "pipe::needs",
                        format!("`{name}` is a handler step; only other handler steps can need it"),
                        *span,
                        "handler step",
                    )),
                    Ok(j) => edges[i].push((j, *span)),
                    Err(msg) => errors.push(self.unknown_step(name, *span, &msg, &all_names)),
                }
            }
            for (name, output, span) in &r.refs {
                match resolve(name) {
                    Ok(j) if j == i => errors.push(
                        Diagnostic::error(
                            "pipe::cycle",
                            format!("step `{}` reads its own outputs", r.step.name),
                            *span,
                            "self-reference",
                        )
                        .with_help("a step's outputs exist only after it finishes"),
                    ),
                    Ok(j) => {
                        let target = &self.steps[j].step;
                        if let Some(o) = output {
                            if !target.outputs.is_empty() && !target.outputs.contains(o) {
                                let mut d = Diagnostic::error(
                                    "pipe::unknown-output",
                                    format!("step `{}` has no output `{o}`", target.name),
                                    *span,
                                    "unknown output",
                                );
                                d = match did_you_mean(o, target.outputs.iter().map(String::as_str))
                                {
                                    Some(n) => d.with_help(format!("did you mean `{n}`?")),
                                    None => d.with_help(format!(
                                        "its outputs are: {}",
                                        target.outputs.join(", ")
                                    )),
                                };
                                errors.push(d);
                            }
                        }
                        // Handlers run after the whole DAG: no edge needed from main steps.
                        if !(in_handler && j < handler_base) {
                            edges[i].push((j, *span));
                        }
                    }
                    Err(msg) => errors.push(self.unknown_step(name, *span, &msg, &all_names)),
                }
            }
            for (name, span) in &r.chaos_refs {
                let found = self
                    .steps
                    .iter()
                    .position(|s| s.step.executor == "chaos" && s.step.name == *name);
                match found {
                    Some(j) => edges[i].push((j, *span)),
                    None => {
                        let names: Vec<String> = self
                            .steps
                            .iter()
                            .filter(|s| s.step.executor == "chaos")
                            .map(|s| s.step.name.clone())
                            .collect();
                        errors.push({
                            let mut d = Diagnostic::error(
                                "pipe::unknown-chaos",
                                format!("unknown chaos block `{name}`"),
                                *span,
                                "no chaos block of that name",
                            );
                            if let Some(n) = did_you_mean(name, names.iter().map(String::as_str)) {
                                d = d.with_help(format!("did you mean `{n}`?"));
                            }
                            d
                        });
                    }
                }
            }
        }
        // Stage needs: the first steps (roots) of a stage wait for the last
        // steps (sinks) of each stage it needs. Two stages of 50 such steps
        // make 2,500 step edges; until the plan is built each stage need is
        // kept as one join (a barrier node for the cycle check), so that the
        // check walks roots + sinks edges instead of roots × sinks.
        let n = self.steps.len();
        let mut joins: Vec<(Vec<usize>, Vec<usize>, Span)> = Vec::new();
        let mut mark = vec![false; n];
        for (si, needs) in stage_needs.iter().enumerate() {
            let Some(stage) = stages.get(si) else {
                continue;
            };
            if needs.is_empty() {
                continue;
            }
            for &i in &stage.steps {
                mark[i] = true;
            }
            let roots: Vec<usize> = stage
                .steps
                .iter()
                .copied()
                .filter(|&i| !edges[i].iter().any(|(j, _)| mark[*j]))
                .collect();
            for &i in &stage.steps {
                mark[i] = false;
            }
            for (dep, span) in needs {
                // Sinks: steps of the needed stage that no step of that stage needs.
                let members = &stages[*dep].steps;
                for &k in members {
                    for (x, _) in &edges[k] {
                        mark[*x] = true;
                    }
                }
                let sinks: Vec<usize> = members.iter().copied().filter(|&j| !mark[j]).collect();
                for &k in members {
                    for (x, _) in &edges[k] {
                        mark[*x] = false;
                    }
                }
                joins.push((roots.clone(), sinks, *span));
            }
        }
        self.diags.extend(errors);
        for e in &mut edges {
            e.sort_unstable_by_key(|(j, _)| *j);
            e.dedup_by_key(|(j, _)| *j);
        }
        let cyclic = joined_cycle(&edges, &joins) && {
            // Only a cyclic plan pays for the expanded edges: the report
            // names steps, never joins.
            let mut full = edges.clone();
            for (roots, sinks, span) in &joins {
                for &r in roots {
                    full[r].extend(sinks.iter().map(|&s| (s, *span)));
                }
            }
            let names: Vec<String> = self.steps.iter().map(|r| r.step.id.clone()).collect();
            self.report_cycles(n, |i| full[i].clone(), |i| format!("`{}`", names[i]))
        };
        if !cyclic {
            let mut needs: Vec<Vec<usize>> = edges
                .into_iter()
                .map(|e| e.into_iter().map(|(j, _)| j).collect())
                .collect();
            for (roots, sinks, _) in &joins {
                for &r in roots {
                    needs[r].extend_from_slice(sinks);
                }
            }
            for (i, mut e) in needs.into_iter().enumerate() {
                e.sort_unstable();
                e.dedup();
                self.steps[i].step.needs = e;
            }
        }
    }

    fn unknown_step(&self, name: &str, span: Span, msg: &str, all: &[String]) -> Diagnostic {
        if !msg.is_empty() {
            return Diagnostic::error(
                "pipe::ambiguous-step",
                format!("step name `{name}` is {msg}"),
                span,
                "ambiguous",
            )
            .with_help("qualify it with its stage: `stage.step`, or `steps[\"stage.step\"]`");
        }
        let mut d = Diagnostic::error(
            "pipe::unknown-step",
            format!("unknown step `{name}`"),
            span,
            "no step or stage of that name",
        );
        let cands = all
            .iter()
            .map(String::as_str)
            .chain(self.stage_names.iter().map(String::as_str));
        if let Some(n) = did_you_mean(name, cands) {
            d = d.with_help(format!("did you mean `{n}`?"));
        }
        d
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StepForm {
    Step,
    Approval,
    Policy,
    Chaos,
}

struct StageCtx {
    index: usize,
    name: String,
    environment: Option<String>,
    required: bool,
    when: Option<Deferrable>,
    handler: Option<HandlerKind>,
}

/// A type with its article, for labels: "a string", "an int".
fn a_type(t: &Type) -> String {
    let name = t.to_string();
    if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {name}")
    } else {
        format!("a {name}")
    }
}

fn to_deferrable(f: Folded) -> Deferrable {
    match f {
        Folded::Value(v) => Deferrable::Ready(v),
        Folded::Residual(e) => Deferrable::Deferred(e),
    }
}

fn deferrable_expr(d: Deferrable, span: Span) -> Expr {
    match d {
        Deferrable::Ready(v) => Expr::new(ExprKind::Value(v), span),
        Deferrable::Deferred(e) => e,
    }
}

fn backoff_of(v: &Value) -> Option<Backoff> {
    let Value::Map(m) = v else { return None };
    let dur = |k: &str| match m.get(k) {
        Some(Value::Duration(d)) => Some(*d),
        _ => None,
    };
    match m.get("kind").and_then(Value::as_str)? {
        "fixed" => Some(Backoff::Fixed {
            delay_ms: dur("delay")?,
        }),
        "exponential" => Some(Backoff::Exponential {
            base_ms: dur("base")?,
            max_ms: dur("max")?,
        }),
        "linear" => Some(Backoff::Linear {
            base_ms: dur("base")?,
            max_ms: dur("max")?,
        }),
        _ => None,
    }
}

/// A chain `root.a["b"].c` with constant string keys, as (root, keys).
fn const_chain(e: &Expr) -> Option<(&str, Vec<String>)> {
    match &e.kind {
        ExprKind::Ident(n) => Some((n, vec![])),
        ExprKind::Field(b, f) => {
            let (r, mut k) = const_chain(b)?;
            k.push(f.name.clone());
            Some((r, k))
        }
        ExprKind::Index(b, i) => {
            let (r, mut k) = const_chain(b)?;
            match &i.kind {
                ExprKind::Value(Value::Str(s)) => k.push(s.clone()),
                ExprKind::Str(parts) => match parts.as_slice() {
                    [StrPart::Lit(s)] => k.push(s.clone()),
                    _ => return None,
                },
                _ => return None,
            }
            Some((r, k))
        }
        _ => None,
    }
}

/// Whether entries declare at least one step, gate or chaos block (loops count).
fn count_steps_ast(entries: &[StageEntry]) -> bool {
    entries.iter().any(|e| match e {
        StageEntry::Step(_) | StageEntry::Gate(_) | StageEntry::Chaos(_) => true,
        StageEntry::For(f) => count_steps_ast(&f.entries),
        _ => false,
    })
}

fn leak_code(kind: &str) -> &'static str {
    match kind {
        "stage" => "pipe::unknown-stage",
        "env" => "pipe::unknown-env",
        "template" => "pipe::unknown-template",
        "fault" => "pipe::unknown-fault",
        _ => "pipe::unknown-name",
    }
}

/// Whether the step graph has a cycle, with each join `(roots, sinks, _)`
/// standing for the edges from every root to every sink: a barrier node
/// that the roots need and that needs the sinks. Kahn's algorithm, linear in
/// steps + edges + roots + sinks.
fn joined_cycle(edges: &[Vec<(usize, Span)>], joins: &[(Vec<usize>, Vec<usize>, Span)]) -> bool {
    let n = edges.len();
    let total = n + joins.len();
    // needs[v]: how many nodes v still waits for; dependents in CSR form.
    let mut needs = vec![0usize; total];
    let mut count = vec![0usize; total + 1];
    let mut add = |from: usize, to: usize, count: &mut Vec<usize>| {
        // `to` needs `from`.
        needs[to] += 1;
        count[from + 1] += 1;
    };
    for (i, e) in edges.iter().enumerate() {
        for (j, _) in e {
            add(*j, i, &mut count);
        }
    }
    for (k, (roots, sinks, _)) in joins.iter().enumerate() {
        for &s in sinks {
            add(s, n + k, &mut count);
        }
        for &r in roots {
            add(n + k, r, &mut count);
        }
    }
    for v in 0..total {
        count[v + 1] += count[v];
    }
    let mut fill = count.clone();
    let mut dependents = vec![0usize; count[total]];
    let mut put = |from: usize, to: usize| {
        dependents[fill[from]] = to;
        fill[from] += 1;
    };
    for (i, e) in edges.iter().enumerate() {
        for (j, _) in e {
            put(*j, i);
        }
    }
    for (k, (roots, sinks, _)) in joins.iter().enumerate() {
        for &s in sinks {
            put(s, n + k);
        }
        for &r in roots {
            put(n + k, r);
        }
    }
    let mut ready: Vec<usize> = (0..total).filter(|&v| needs[v] == 0).collect();
    let mut done = 0;
    while let Some(v) = ready.pop() {
        done += 1;
        for &d in &dependents[count[v]..count[v + 1]] {
            needs[d] -= 1;
            if needs[d] == 0 {
                ready.push(d);
            }
        }
    }
    done < total
}
