//! Completion from the text left of the cursor: template names after
//! `module.`, outputs after `steps.<name>.outputs.`, step names after `steps.`,
//! step and stage names inside `needs = [...]`, a template's parameters inside
//! the body of a step that calls it, and keywords elsewhere.

use std::sync::LazyLock;

use pipe_lang::ast::{Body, Expr, ExprKind, Pipeline, StageEntry, StrPart};
use regex::Regex;
use tower_lsp::lsp_types::{CompletionItem, CompletionItemKind};

use super::analysis::{pipeline_steps, Analysis};
use super::hover;

const KEYWORDS: &[&str] = &[
    "import", "as", "pipeline", "template", "param", "env", "stage", "on", "step", "gate", "chaos",
    "for", "in", "needs", "run", "estimate", "timeout", "retry", "when", "outputs", "required",
    "true", "false", "null",
];

static OUTPUTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"steps(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*["']([^"']*)["']\s*\])\.outputs\.[A-Za-z0-9_]*$"#)
        .expect("outputs pattern")
});
static STEPS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bsteps\.[A-Za-z0-9_]*$").expect("steps pattern"));
static MEMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([A-Za-z_][A-Za-z0-9_]*)\.[A-Za-z0-9_]*$").expect("member pattern")
});
static NEEDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bneeds\s*=\s*\[[^\]]*$").expect("needs pattern"));

fn item(label: &str, kind: CompletionItemKind, detail: Option<String>) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail,
        ..CompletionItem::default()
    }
}

/// `before` is the current line up to the cursor; `offset` is the cursor in
/// the text `a` analyzed.
pub fn complete(a: &Analysis, before: &str, offset: usize) -> Vec<CompletionItem> {
    let pipelines: Vec<&Pipeline> = a.ws.modules[0].pipelines().collect();
    if let Some(c) = OUTPUTS.captures(before) {
        let name = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        return pipelines
            .iter()
            .flat_map(|pl| outputs_of(a, pl, name))
            .map(|o| {
                item(
                    &o,
                    CompletionItemKind::PROPERTY,
                    Some(format!("output of `{name}`")),
                )
            })
            .collect();
    }
    if STEPS.is_match(before) {
        return pipelines
            .iter()
            .flat_map(|pl| pipeline_steps(pl))
            .map(|s| item(&s, CompletionItemKind::FUNCTION, Some("step".into())))
            .collect();
    }
    if let Some(c) = MEMBER.captures(before) {
        let ns = &c[1];
        if let Some(&m) = a.ws.modules[0].imports.get(ns) {
            return a.ws.modules[m]
                .templates()
                .map(|t| {
                    let mut it = item(
                        &t.name.name,
                        CompletionItemKind::FUNCTION,
                        Some(format!("{ns}.{}", t.name.name)),
                    );
                    it.documentation = Some(tower_lsp::lsp_types::Documentation::MarkupContent(
                        tower_lsp::lsp_types::MarkupContent {
                            kind: tower_lsp::lsp_types::MarkupKind::Markdown,
                            value: hover::template(a, t),
                        },
                    ));
                    it
                })
                .collect();
        }
    }
    if NEEDS.is_match(before) {
        let mut out = Vec::new();
        for pl in &pipelines {
            out.extend(
                pipeline_steps(pl)
                    .iter()
                    .map(|s| item(s, CompletionItemKind::FUNCTION, Some("step".into()))),
            );
            out.extend(pl.stages.iter().map(|s| {
                item(
                    &s.name.name,
                    CompletionItemKind::MODULE,
                    Some("stage".into()),
                )
            }));
        }
        return out;
    }
    let mut out = Vec::new();
    if let Some((uses, body)) = pipelines.iter().find_map(|pl| step_at(pl, offset)) {
        let segs: Vec<&str> = uses.iter().map(String::as_str).collect();
        if let Some(t) = a
            .template_module(0, &segs)
            .and_then(|m| a.template(m, segs.last().copied().unwrap_or_default()))
        {
            for p in &t.params {
                if body.attr(&p.name.name).is_none() {
                    out.push(item(
                        &p.name.name,
                        CompletionItemKind::FIELD,
                        Some(format!("{}: {}", p.name.name, p.ty.ty)),
                    ));
                }
            }
        }
    }
    out.extend(
        KEYWORDS
            .iter()
            .map(|k| item(k, CompletionItemKind::KEYWORD, None)),
    );
    out
}

/// The template path and body of the step whose body holds `offset`.
fn step_at(pl: &Pipeline, offset: usize) -> Option<(Vec<String>, &Body)> {
    fn walk(entries: &[StageEntry], offset: usize) -> Option<(Vec<String>, &Body)> {
        for e in entries {
            match e {
                StageEntry::Step(s)
                    if (s.body.span.start as usize) < offset
                        && offset < s.body.span.end as usize =>
                {
                    let uses = s.uses.as_ref()?;
                    return Some((
                        uses.segments.iter().map(|s| s.name.clone()).collect(),
                        &s.body,
                    ));
                }
                StageEntry::For(f) => {
                    if let Some(r) = walk(&f.entries, offset) {
                        return Some(r);
                    }
                }
                _ => {}
            }
        }
        None
    }
    pl.stages
        .iter()
        .map(|s| &s.entries)
        .chain(pl.handlers.iter().map(|h| &h.entries))
        .find_map(|e| walk(e, offset))
}

fn string_list(e: &Expr) -> Vec<String> {
    match &e.kind {
        ExprKind::List(items) => items
            .iter()
            .filter_map(|i| match &i.kind {
                ExprKind::Str(p) => match p.as_slice() {
                    [StrPart::Lit(s)] => Some(s.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The declared outputs of step `name`: its own `outputs` or its template's.
fn outputs_of(a: &Analysis, pl: &Pipeline, name: &str) -> Vec<String> {
    fn find<'p>(entries: &'p [StageEntry], name: &str) -> Option<&'p pipe_lang::ast::Step> {
        entries.iter().find_map(|e| match e {
            StageEntry::Step(s) if s.name.literal() == Some(name) => Some(s),
            StageEntry::For(f) => find(&f.entries, name),
            _ => None,
        })
    }
    let Some(step) = pl
        .stages
        .iter()
        .map(|s| &s.entries)
        .chain(pl.handlers.iter().map(|h| &h.entries))
        .find_map(|e| find(e, name))
    else {
        return Vec::new();
    };
    if let Some(o) = step.body.attr("outputs") {
        return string_list(&o.value);
    }
    let Some(uses) = &step.uses else {
        return Vec::new();
    };
    let segs: Vec<&str> = uses.segments.iter().map(|s| s.name.as_str()).collect();
    a.template_module(0, &segs)
        .and_then(|m| a.template(m, segs.last().copied().unwrap_or_default()))
        .and_then(|t| t.body.attr("outputs"))
        .map(|o| string_list(&o.value))
        .unwrap_or_default()
}
