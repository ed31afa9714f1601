//! `assert` declarations: properties of a pipeline's DAG that `pipe check`
//! proves on the lowered plan (loops unrolled, templates instantiated, stage
//! needs turned into step edges). docs/asserts.md explains them to users.
//!
//! `assert A { from = F  to = T  through = [G, ...] }` holds when
//! 1. every step of `T` that depends (transitively) on a step of `F` also
//!    depends on every step each `through` entry selects (a glob selects each
//!    step it matches, and each one is required);
//! 2. every such gate depends on a step of `F` (or is one): it sits between
//!    the two ends, not before them;
//! 3. a gate with a `when` that may skip it guards only the `to` steps that
//!    carry the same condition, since a skipped step lets the steps after it
//!    run.
//!
//! The scheduler starts a step only when all its needs are done, so "depends
//! on G" is exactly "cannot start before G passed". A path from `F` to `T`
//! that no step waits for `G` on exists iff `T` is reachable from `F` and not
//! from `G`; that path is the witness a violation shows. The proof is linear:
//! one breadth-first search from `F` (which also gives the shortest witness)
//! and one pass in topological order that carries, per step, the set of gates
//! it waits for as a bitset.

use std::collections::HashMap;

use globset::{GlobBuilder, GlobMatcher};

use crate::ast::{Assert, BinOp, Expr, ExprKind, Pipeline, StrPart};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::plan::{Deferrable, Plan, PlanStep};
use crate::span::{SourceMap, Span};

const ASSERT_ATTRS: &[&str] = &["from", "to", "through", "message", "description"];

/// Checks the form of every assert without a plan: known attributes, selector
/// syntax, duplicate names. Used when the pipeline does not lower, so these
/// errors still show.
pub(crate) fn validate(pl: &Pipeline) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    duplicates(pl, &mut diags);
    for a in &pl.asserts {
        let _ = Spec::parse(a, &mut diags);
    }
    diags
}

/// Proves every assert of `pl` on `plan`, which must be lowered for every env
/// (no target env): a plan for one env is that plan with the other envs'
/// stages left out, and the paths of a subgraph are paths of the whole.
pub(crate) fn prove(pl: &Pipeline, plan: &Plan) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    duplicates(pl, &mut diags);
    for a in &pl.asserts {
        if let Some(spec) = Spec::parse(a, &mut diags) {
            prove_one(&spec, plan, &mut diags);
        }
    }
    diags
}

/// The error when the asserts cannot be proved because the pipeline does
/// not lower for every env (it did for the one targeted).
pub(crate) fn unprovable(pl: &Pipeline, env: &str) -> Vec<Diagnostic> {
    pl.asserts
        .first()
        .map(|a| {
            Diagnostic::error(
                "pipe::assert",
                format!(
                    "the asserts of pipeline `{}` cannot be proved: it lowers for env `{env}` but not for every env",
                    pl.name.name
                ),
                a.name.span,
                "not proved",
            )
            .with_help("run `pipe check` to see the errors in the other envs' stages")
        })
        .into_iter()
        .collect()
}

fn duplicates(pl: &Pipeline, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for a in &pl.asserts {
        if let Some(prev) = seen.insert(&a.name.name, a.name.span) {
            diags.push(
                Diagnostic::error(
                    "pipe::duplicate",
                    format!("assert `{}` is defined twice", a.name.name),
                    a.name.span,
                    "second definition",
                )
                .with_label(prev, "first defined here"),
            );
        }
    }
}

/// What one selector names.
enum Pattern {
    /// A step name (`approve`) or id (`production.approve`): every step so named.
    Name(String),
    /// `stage.NAME`: every step of the stage.
    Stage(String),
    /// `"scan-*"`: every step whose name (or id, when the pattern has a `.`) matches.
    Glob {
        text: String,
        matcher: GlobMatcher,
        on_id: bool,
    },
}

struct Selector {
    pattern: Pattern,
    span: Span,
}

impl Selector {
    fn describe(&self) -> String {
        match &self.pattern {
            Pattern::Name(n) => format!("`{n}`"),
            Pattern::Stage(s) => format!("`stage.{s}`"),
            Pattern::Glob { text, .. } => format!("`\"{text}\"`"),
        }
    }
}

/// An assert with its selectors parsed.
struct Spec<'a> {
    decl: &'a Assert,
    /// `None`: every step without needs, so every path ending in `to` counts.
    from: Option<(Vec<Selector>, Span)>,
    to: (Vec<Selector>, Span),
    through: Vec<Selector>,
    message: Option<String>,
}

impl<'a> Spec<'a> {
    fn parse(a: &'a Assert, diags: &mut Vec<Diagnostic>) -> Option<Spec<'a>> {
        let before = diags.len();
        let mut from = None;
        let mut to = None;
        let mut through = None;
        let mut message = None;
        for attr in &a.body.attrs {
            match attr.key.name.as_str() {
                "from" => from = Some((selectors(&attr.value, diags), attr.value.span)),
                "to" => to = Some((selectors(&attr.value, diags), attr.value.span)),
                "through" => {
                    let s = selectors(&attr.value, diags);
                    if s.is_empty() && matches!(&attr.value.kind, ExprKind::List(l) if l.is_empty())
                    {
                        diags.push(
                            Diagnostic::error(
                                "pipe::assert-vacuous",
                                "`through` lists no step: the assert would prove nothing",
                                attr.value.span,
                                "empty list",
                            )
                            .with_help("name the gates every path must pass, e.g. `through = [approve, \"scan-*\"]`"),
                        );
                    }
                    through = Some(s);
                }
                "message" | "description" => match literal(&attr.value) {
                    Some(s) => {
                        if attr.key.name == "message" {
                            message = Some(s);
                        }
                    }
                    None => diags.push(
                        Diagnostic::error(
                            "pipe::type",
                            format!("`{}` of an assert is a plain string", attr.key.name),
                            attr.value.span,
                            "expected a string without `${...}`",
                        )
                        .with_help(
                            "an assert is proved before any value exists: write the text out",
                        ),
                    ),
                },
                other => {
                    let mut d = Diagnostic::error(
                        "pipe::unknown-attribute",
                        format!("unknown attribute `{other}` in an assert"),
                        attr.key.span,
                        "unknown attribute",
                    );
                    d = match did_you_mean(other, ASSERT_ATTRS.iter().copied()) {
                        Some(n) => d.with_help(format!("did you mean `{n}`?")),
                        None => {
                            d.with_help(format!("an assert takes: {}", ASSERT_ATTRS.join(", ")))
                        }
                    };
                    diags.push(d);
                }
            }
        }
        for b in &a.body.blocks {
            diags.push(
                Diagnostic::error(
                    "pipe::unknown-block",
                    format!("unknown block `{}` in an assert", b.key.name),
                    b.key.span,
                    "not allowed here",
                )
                .with_help("an assert holds `from`, `to`, `through` and `message` attributes"),
            );
        }
        for (key, missing) in [("to", to.is_none()), ("through", through.is_none())] {
            if missing {
                diags.push(
                    Diagnostic::error(
                        "pipe::assert",
                        format!("assert `{}` has no `{key}`", a.name.name),
                        a.name.span,
                        format!("`{key}` missing"),
                    )
                    .with_help(
                        "write e.g. `from = stage.build  to = stage.production  through = [approve]`",
                    ),
                );
            }
        }
        if diags.len() > before {
            return None;
        }
        Some(Spec {
            decl: a,
            from,
            to: to?,
            through: through?,
            message,
        })
    }
}

/// A plain string literal.
fn literal(e: &Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Str(parts) => match parts.as_slice() {
            [] => Some(String::new()),
            [StrPart::Lit(s)] => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// A selector or a list of them.
fn selectors(e: &Expr, diags: &mut Vec<Diagnostic>) -> Vec<Selector> {
    let items: Vec<&Expr> = match &e.kind {
        ExprKind::List(items) => items.iter().collect(),
        _ => vec![e],
    };
    let mut out = Vec::new();
    for item in items {
        match selector(item) {
            Ok(s) => out.push(s),
            Err(d) => diags.push(*d),
        }
    }
    out
}

fn selector(e: &Expr) -> Result<Selector, Box<Diagnostic>> {
    let bad = |label: &str| {
        Box::new(Diagnostic::error(
            "pipe::assert-selector",
            "an assert selects steps by name, stage or glob",
            e.span,
            label.to_string(),
        )
        .with_help(
            "write a step name (`approve`), `stage.production`, or a glob string (`\"scan-*\"`)",
        ))
    };
    let pattern = match &e.kind {
        ExprKind::Ident(n) => Pattern::Name(n.clone()),
        ExprKind::Field(base, field) => match &base.kind {
            ExprKind::Ident(b) if b == "stage" => Pattern::Stage(field.name.clone()),
            ExprKind::Ident(b) => Pattern::Name(format!("{b}.{}", field.name)),
            _ => return Err(bad("not a selector")),
        },
        ExprKind::Str(parts) => {
            let text = match parts.as_slice() {
                [StrPart::Lit(s)] => s.clone(),
                [] => return Err(bad("empty name")),
                _ => {
                    return Err(bad(
                        "a selector cannot interpolate: it is matched before anything runs",
                    ))
                }
            };
            if text.contains(['*', '?', '[', '{']) {
                let glob = GlobBuilder::new(&text)
                    .literal_separator(false)
                    .build()
                    .map_err(|err| {
                        Box::new(Diagnostic::error(
                            "pipe::assert-selector",
                            format!("invalid glob `{text}`: {}", err.kind()),
                            e.span,
                            "invalid glob",
                        )
                        .with_help("`*` matches any text, `?` one character, `[a-z]` a class, `{a,b}` either"))
                    })?;
                Pattern::Glob {
                    on_id: text.contains('.'),
                    matcher: glob.compile_matcher(),
                    text,
                }
            } else {
                Pattern::Name(text)
            }
        }
        _ => return Err(bad("not a selector")),
    };
    Ok(Selector {
        pattern,
        span: e.span,
    })
}

/// Every step name, sorted and once each, for help texts.
fn step_names(plan: &Plan) -> Vec<&str> {
    let mut names: Vec<&str> = plan.steps().iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The steps a selector matches, in plan order; an error when none.
fn resolve(sel: &Selector, plan: &Plan, role: &str) -> Result<Vec<usize>, Box<Diagnostic>> {
    match &sel.pattern {
        Pattern::Name(n) => {
            // A handful of selectors per assert: a scan beats building an index.
            let found: Vec<usize> = (0..plan.steps().len())
                .filter(|&i| plan.step(i).name == *n || plan.step(i).id == *n)
                .collect();
            if !found.is_empty() {
                return Ok(found);
            }
            let mut d = Diagnostic::error(
                "pipe::unknown-step",
                format!("unknown step `{n}` in `{role}`"),
                sel.span,
                "no step of that name",
            );
            if plan.stages().iter().any(|s| s.name == *n) {
                d = d.with_help(format!(
                    "`{n}` is a stage: write `stage.{n}` for every step of it"
                ));
            } else if let Some(m) = did_you_mean(n, step_names(plan)) {
                d = d.with_help(format!("did you mean `{m}`?"));
            }
            Err(Box::new(d))
        }
        Pattern::Stage(name) => match plan.stages().iter().find(|s| s.name == *name) {
            Some(st) if !st.steps.is_empty() => Ok(st.steps.clone()),
            Some(_) => Err(Box::new(Diagnostic::error(
                "pipe::assert-vacuous",
                format!("stage `{name}` has no steps in the plan"),
                sel.span,
                "selects nothing",
            ))),
            None => {
                let mut d = Diagnostic::error(
                    "pipe::unknown-stage",
                    format!("unknown stage `{name}` in `{role}`"),
                    sel.span,
                    "no stage of that name",
                );
                if let Some(m) = did_you_mean(name, plan.stages().iter().map(|s| s.name.as_str())) {
                    d = d.with_help(format!("did you mean `stage.{m}`?"));
                }
                Err(Box::new(d))
            }
        },
        Pattern::Glob {
            text,
            matcher,
            on_id,
        } => {
            let found: Vec<usize> = plan
                .steps()
                .iter()
                .enumerate()
                .filter(|(_, s)| matcher.is_match(if *on_id { &s.id } else { &s.name }))
                .map(|(i, _)| i)
                .collect();
            if !found.is_empty() {
                return Ok(found);
            }
            let mut d = Diagnostic::error(
                "pipe::assert-vacuous",
                format!("`{text}` in `{role}` matches no step"),
                sel.span,
                "matches nothing",
            );
            let names = step_names(plan);
            d = if names.len() <= 12 {
                d.with_help(format!("the steps are: {}", names.join(", ")))
            } else {
                d.with_help("a glob without `.` matches step names; with a `.`, `stage.step` ids")
            };
            Err(Box::new(d))
        }
    }
}

/// The union of several selectors' steps as a membership vector.
fn resolve_all(
    sels: &[Selector],
    plan: &Plan,
    role: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<bool>> {
    let mut set = vec![false; plan.steps().len()];
    let mut ok = true;
    for s in sels {
        match resolve(s, plan, role) {
            Ok(found) => found.into_iter().for_each(|i| set[i] = true),
            Err(d) => {
                diags.push(*d);
                ok = false;
            }
        }
    }
    ok.then_some(set)
}

fn prove_one(spec: &Spec<'_>, plan: &Plan, diags: &mut Vec<Diagnostic>) {
    let steps = plan.steps();
    let n = steps.len();
    let from = match &spec.from {
        Some((sels, _)) => resolve_all(sels, plan, "from", diags),
        None => Some(steps.iter().map(|s| s.needs.is_empty()).collect()),
    };
    let to = resolve_all(&spec.to.0, plan, "to", diags);
    // Each step a `through` entry selects is one gate: (entry, step).
    let mut gates: Vec<(usize, usize)> = Vec::new();
    let mut through_ok = true;
    for (e, sel) in spec.through.iter().enumerate() {
        match resolve(sel, plan, "through") {
            Ok(found) => gates.extend(found.into_iter().map(|g| (e, g))),
            Err(d) => {
                diags.push(*d);
                through_ok = false;
            }
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return;
    };
    if !through_ok {
        return;
    }

    // Breadth-first from every `from` step: what depends on them, and for
    // each such step the shortest way back.
    let mut parent = vec![usize::MAX; n];
    let mut reached = vec![false; n];
    let mut order: Vec<usize> = (0..n).filter(|&i| from[i]).collect();
    for &i in &order {
        reached[i] = true;
    }
    let mut head = 0;
    // The graph lists a step's dependents last-declared first; declaration
    // order makes the witness the first-declared of equally near steps.
    let mut next = Vec::new();
    while head < order.len() {
        let i = order[head];
        head += 1;
        next.clear();
        next.extend(plan.dependents(i));
        for &d in next.iter().rev() {
            if !reached[d] {
                reached[d] = true;
                parent[d] = i;
                order.push(d);
            }
        }
    }
    if !order.iter().any(|&i| to[i]) {
        let span = spec.from.as_ref().map_or(spec.to.1, |(_, s)| *s);
        diags.push(
            Diagnostic::error(
                "pipe::assert-vacuous",
                format!(
                    "assert `{}` proves nothing: no step of `to` depends on a step of `from`",
                    spec.decl.name.name
                ),
                span,
                "nothing in `to` comes after this",
            )
            .with_label(spec.to.1, "no step here needs a `from` step")
            .with_help("check the two ends: `to` should name steps that run after `from`"),
        );
        return;
    }

    // Per step, the gates it waits for (itself included), in topological order.
    let k = gates.len();
    let w = k.div_ceil(64);
    let mut bits = vec![0u64; n * w];
    for (gi, &(_, g)) in gates.iter().enumerate() {
        bits[g * w + gi / 64] |= 1 << (gi % 64);
    }
    let mut acc = vec![0u64; w];
    for &i in plan.topo_order() {
        acc.copy_from_slice(&bits[i * w..(i + 1) * w]);
        for &d in &steps[i].needs {
            for (a, b) in acc.iter_mut().zip(&bits[d * w..(d + 1) * w]) {
                *a |= b;
            }
        }
        bits[i * w..(i + 1) * w].copy_from_slice(&acc);
    }
    // For each gate: the first `to` step (nearest to `from`) that does not
    // wait for it, and how many such steps there are.
    let mut first: Vec<Option<usize>> = vec![None; k];
    let mut count = vec![0usize; k];
    for &t in order.iter().filter(|&&t| to[t]) {
        for j in 0..w {
            let valid = if j + 1 == w && !k.is_multiple_of(64) {
                (1u64 << (k % 64)) - 1
            } else {
                u64::MAX
            };
            let mut missing = !bits[t * w + j] & valid;
            while missing != 0 {
                let gi = j * 64 + missing.trailing_zeros() as usize;
                first[gi].get_or_insert(t);
                count[gi] += 1;
                missing &= missing - 1;
            }
        }
    }

    let sources = plan.sources();
    for (e, sel) in spec.through.iter().enumerate() {
        let in_entry: Vec<usize> = (0..k).filter(|&gi| gates[gi].0 == e).collect();
        // A gate a `when` may skip guards only the steps skipped with it.
        let unguarded = in_entry.iter().find_map(|&gi| {
            let g = gates[gi].1;
            let when = steps[g].when.as_ref().filter(|_| skippable(&steps[g]))?;
            order
                .iter()
                .find(|&&t| {
                    to[t]
                        && t != g
                        && bits[t * w + gi / 64] & (1 << (gi % 64)) != 0
                        && !implies(steps[t].when.as_ref(), when)
                })
                .map(|&t| (g, t))
        });
        if let Some((g, t)) = unguarded {
            diags.push(skippable_gate(spec, sel, &steps[g], &steps[t], sources));
        }
        if let Some(&gi) = in_entry.iter().find(|&&gi| !reached[gates[gi].1]) {
            diags.push(gate_before_from(spec, sel, &steps[gates[gi].1], sources));
        }
        let violated: Vec<usize> = in_entry
            .iter()
            .copied()
            .filter(|&gi| first[gi].is_some())
            .collect();
        if let Some(&gi) = violated.first() {
            let t = first[gi].expect("violated");
            let mut path = vec![t];
            let mut cur = t;
            while parent[cur] != usize::MAX {
                cur = parent[cur];
                path.push(cur);
            }
            path.reverse();
            diags.push(bypass(
                spec,
                sel,
                plan,
                &Bypass {
                    gate: gates[gi].1,
                    path: &path,
                    more_targets: count[gi] - 1,
                    more_gates: violated.len() - 1,
                },
            ));
        }
    }
}

/// Whether a `when` may skip the step (a skipped step lets its dependents run).
fn skippable(s: &PlanStep) -> bool {
    match &s.when {
        None => false,
        Some(Deferrable::Ready(v)) => !v.truthy(),
        Some(Deferrable::Deferred(_)) => true,
    }
}

/// "assert `x` fails: <its message>" then the fact, or the fact alone.
fn headline(spec: &Spec<'_>, fact: &str) -> String {
    match &spec.message {
        Some(m) => format!("assert `{}` fails: {m}\n{fact}", spec.decl.name.name),
        None => format!("assert `{}` fails: {fact}", spec.decl.name.name),
    }
}

/// Whether a step with condition `t` runs only when `g` holds: `t` is `g`
/// or a conjunction holding it (a stage's `when` joined with its step's), or
/// `t` never runs.
fn implies(t: Option<&Deferrable>, g: &Deferrable) -> bool {
    fn holds(e: &Expr, g: &Expr) -> bool {
        e == g
            || matches!(&e.kind, ExprKind::Binary(BinOp::And, l, r) if holds(l, g) || holds(r, g))
    }
    match (t, g) {
        (Some(Deferrable::Ready(v)), _) => !v.truthy(),
        (Some(Deferrable::Deferred(t)), Deferrable::Deferred(g)) => holds(t, g),
        _ => false,
    }
}

fn skippable_gate(
    spec: &Spec<'_>,
    sel: &Selector,
    g: &PlanStep,
    t: &PlanStep,
    sources: &SourceMap,
) -> Diagnostic {
    let mut d = Diagnostic::error(
        "pipe::assert",
        headline(
            spec,
            &format!(
                "gate `{}` may be skipped by its `when`, and `{}` then runs without it",
                g.id, t.id
            ),
        ),
        sel.span,
        format!("`{}` has a `when`, so it may not run", g.id),
    );
    if let Some(Deferrable::Deferred(e)) = &g.when {
        d = d.with_label(e.span, "a skipped step lets the steps after it run");
    } else {
        d = d.with_label(name_span(sources, g.span), "its `when` is always false");
    }
    d = d.with_label(
        name_span(sources, t.span),
        format!("`{}` does not share that condition", t.id),
    );
    d.with_help(format!(
        "a gate must always run: remove the `when` from `{}`, or give the steps after it the same condition (put both in one stage with a `when`)",
        g.name
    ))
}

fn gate_before_from(
    spec: &Spec<'_>,
    sel: &Selector,
    g: &PlanStep,
    sources: &SourceMap,
) -> Diagnostic {
    let from = spec.from.as_ref().map_or(spec.to.1, |(_, s)| *s);
    Diagnostic::error(
        "pipe::assert",
        headline(
            spec,
            &format!("gate `{}` does not come after any step of `from`", g.id),
        ),
        sel.span,
        format!("`{}` runs without waiting for `from`", g.id),
    )
    .with_label(name_span(sources, g.span), "declared here")
    .with_label(from, "`from`")
    .with_help(format!(
        "a gate guards what comes after the start: make `{}` need a step of `from`",
        g.name
    ))
}

struct Bypass<'p> {
    gate: usize,
    /// From a `from` step to the `to` step that does not wait for the gate.
    path: &'p [usize],
    more_targets: usize,
    more_gates: usize,
}

fn bypass(spec: &Spec<'_>, sel: &Selector, plan: &Plan, b: &Bypass<'_>) -> Diagnostic {
    let steps = plan.steps();
    let sources = plan.sources();
    let gate = &steps[b.gate];
    let target = &steps[*b.path.last().expect("non-empty path")];
    let mut message = headline(
        spec,
        &format!("`{}` can start before `{}` has passed", target.id, gate.id),
    );
    let chain: Vec<&str> = b.path.iter().map(|&i| steps[i].id.as_str()).collect();
    message.push_str(&format!(
        "\npath: {}  (no step on it waits for `{}`)",
        chain.join(" → "),
        gate.id
    ));
    if b.more_targets > 0 {
        message.push_str(&format!(
            "\n{} more step{} of `to` do{} not wait for `{}` either",
            b.more_targets,
            if b.more_targets == 1 { "" } else { "s" },
            if b.more_targets == 1 { "es" } else { "" },
            gate.id
        ));
    }
    if b.more_gates > 0 {
        message.push_str(&format!(
            "\n{} more step{} selected by {} {} bypassed too",
            b.more_gates,
            if b.more_gates == 1 { "" } else { "s" },
            sel.describe(),
            if b.more_gates == 1 { "is" } else { "are" }
        ));
    }
    let mut d = Diagnostic::error(
        "pipe::assert",
        message,
        sel.span,
        format!("`{}` does not wait for this", target.id),
    );
    // Steps from one loop or template share a declaration: one label each.
    let mut labels: Vec<(Span, Vec<String>)> = Vec::new();
    let mut add = |span: Span, text: String| match labels.iter_mut().find(|(s, _)| *s == span) {
        Some((_, v)) => v.push(text),
        None => labels.push((span, vec![text])),
    };
    for (k, &i) in b.path.iter().enumerate() {
        add(
            name_span(sources, steps[i].span),
            format!("{}. `{}`", k + 1, steps[i].id),
        );
    }
    add(
        name_span(sources, gate.span),
        format!("the gate `{}`, not on the path", gate.id),
    );
    for (span, texts) in labels {
        d = d.with_label(span, texts.join("; "));
    }
    let unique = steps.iter().filter(|s| s.name == gate.name).count() == 1;
    let reference = needs_entry(if unique { &gate.name } else { &gate.id });
    d.with_help(format!(
        "make `{}` wait for the gate: add `needs = [{reference}]` to it",
        target.name
    ))
}

/// How a step is written in a `needs` list.
fn needs_entry(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(name, "true" | "false" | "null");
    if plain {
        name.to_string()
    } else {
        format!("\"{name}\"")
    }
}

/// The name in a step's declaration (`step "image-${svc}" = ...` →
/// `"image-${svc}"`), so labels underline one token, not the whole body.
fn name_span(sources: &SourceMap, span: Span) -> Span {
    let b = sources.snippet(span).as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_alphabetic() {
        i += 1;
    }
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    match b.get(i) {
        Some(b'"') => {
            i += 1;
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 1,
                    b'$' if b.get(i + 1) == Some(&b'{') => {
                        depth += 1;
                        i += 1;
                    }
                    b'}' if depth > 0 => depth -= 1,
                    b'"' if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        Some(b'\'') => {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        }
        _ => {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
        }
    }
    if i == start || i > b.len() {
        return span;
    }
    Span::new(
        span.file,
        span.start as usize + start,
        span.start as usize + i,
    )
}
