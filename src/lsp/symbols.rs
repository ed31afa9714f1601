//! The outline of a document: pipelines holding their params, envs, stages,
//! handlers and asserts, stages holding their steps; templates at the top.

use pipe_lang::ast::{Item, StageEntry};
use pipe_lang::Span;
use tower_lsp::lsp_types::{DocumentSymbol, SymbolKind};

use super::analysis::Analysis;
use super::position::LineIndex;

#[expect(
    deprecated,
    reason = "DocumentSymbol's `deprecated` field must still be set"
)]
fn symbol(
    idx: &LineIndex<'_>,
    name: String,
    detail: Option<String>,
    kind: SymbolKind,
    span: Span,
    sel: Span,
    children: Vec<DocumentSymbol>,
) -> DocumentSymbol {
    DocumentSymbol {
        name,
        detail,
        kind,
        tags: None,
        deprecated: None,
        range: idx.range(span.start as usize, span.end as usize),
        selection_range: idx.range(sel.start as usize, sel.end as usize),
        children: (!children.is_empty()).then_some(children),
    }
}

fn entries(idx: &LineIndex<'_>, text: &str, list: &[StageEntry], out: &mut Vec<DocumentSymbol>) {
    for e in list {
        let (name, detail, span, sel) = match e {
            StageEntry::Step(s) => (
                &s.name,
                s.uses.as_ref().map(pipe_lang::ast::Path::dotted),
                s.span,
                s.name.span,
            ),
            StageEntry::Gate(g) => (
                &g.name,
                Some(format!("gate {}", g.kind.dotted())),
                g.span,
                g.name.span,
            ),
            StageEntry::Chaos(c) => (&c.name, Some("chaos".to_string()), c.span, c.name.span),
            StageEntry::For(f) => {
                entries(idx, text, &f.entries, out);
                continue;
            }
            _ => continue,
        };
        let label = name.literal().map_or_else(
            || text.get(name.span.range()).unwrap_or("").to_string(),
            str::to_string,
        );
        out.push(symbol(
            idx,
            label,
            detail,
            SymbolKind::FUNCTION,
            span,
            sel,
            Vec::new(),
        ));
    }
}

pub fn document_symbols(a: &Analysis) -> Vec<DocumentSymbol> {
    let text = a.text(a.file());
    let idx = LineIndex::new(text);
    let Some(module) = a.ws.modules[0].ast.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in &module.items {
        match item {
            Item::Import(_) => {}
            Item::Template(t) => out.push(symbol(
                &idx,
                t.name.name.clone(),
                Some("template".into()),
                SymbolKind::CLASS,
                t.span,
                t.name.span,
                Vec::new(),
            )),
            Item::Pipeline(pl) => {
                let mut children = Vec::new();
                for p in &pl.params {
                    children.push(symbol(
                        &idx,
                        p.name.name.clone(),
                        Some(p.ty.ty.to_string()),
                        SymbolKind::VARIABLE,
                        p.span,
                        p.name.span,
                        Vec::new(),
                    ));
                }
                for e in &pl.envs {
                    children.push(symbol(
                        &idx,
                        e.name.name.clone(),
                        Some("env".into()),
                        SymbolKind::NAMESPACE,
                        e.span,
                        e.name.span,
                        Vec::new(),
                    ));
                }
                for s in &pl.stages {
                    let mut steps = Vec::new();
                    entries(&idx, text, &s.entries, &mut steps);
                    children.push(symbol(
                        &idx,
                        s.name.name.clone(),
                        Some("stage".into()),
                        SymbolKind::MODULE,
                        s.span,
                        s.name.span,
                        steps,
                    ));
                }
                for h in &pl.handlers {
                    let mut steps = Vec::new();
                    entries(&idx, text, &h.entries, &mut steps);
                    children.push(symbol(
                        &idx,
                        format!("on {}", h.kind.as_str()),
                        Some("handler".into()),
                        SymbolKind::EVENT,
                        h.span,
                        h.kind_span,
                        steps,
                    ));
                }
                for a in &pl.asserts {
                    children.push(symbol(
                        &idx,
                        a.name.name.clone(),
                        Some("assert".into()),
                        SymbolKind::BOOLEAN,
                        a.span,
                        a.name.span,
                        Vec::new(),
                    ));
                }
                children.sort_by_key(|c| (c.range.start.line, c.range.start.character));
                out.push(symbol(
                    &idx,
                    pl.name.name.clone(),
                    Some("pipeline".into()),
                    SymbolKind::PACKAGE,
                    pl.span,
                    pl.name.span,
                    children,
                ));
            }
        }
    }
    out
}
