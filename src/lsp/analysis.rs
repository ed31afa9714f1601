//! One analysis of an open document: its workspace (the document and what it
//! imports, with open editors' text taking precedence over the disk), its
//! diagnostics, and an index of every name it defines or refers to, which
//! definition, references, rename and hover share.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use pipe_lang::ast::{Attr, Body, Expr, ExprKind, Name, Pipeline, StageEntry, StrPart, Template};
use pipe_lang::lower::{check, Context};
use pipe_lang::workspace::{Loader, Workspace};
use pipe_lang::{Diagnostic, FileId, Span};

/// What a name stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Pipeline,
    Param,
    Env,
    Stage,
    Step,
    Template,
    /// A parameter of a template, set by a step's attribute.
    TemplateParam,
}

/// A named thing: its kind, the scope it lives in (a pipeline's name, a
/// module's name for templates, `module.template` for their parameters) and
/// its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sym {
    pub kind: Kind,
    pub scope: String,
    pub name: String,
}

/// Where a name occurs: its definition or a reference to it.
#[derive(Clone, Debug)]
pub struct Occ {
    /// The name's text only (inside the quotes of a string name).
    pub span: Span,
    pub sym: Sym,
    pub def: bool,
}

pub struct Analysis {
    pub ws: Workspace,
    pub root: PathBuf,
    pub occs: Vec<Occ>,
    pub ctx: Context,
}

/// Reads imports relative to the importing file, from open documents first.
pub struct OverlayLoader<'a> {
    pub root: &'a Path,
    pub open: &'a HashMap<PathBuf, String>,
}

impl Loader for OverlayLoader<'_> {
    fn load(&mut self, from: &str, path: &str) -> Result<(String, String), String> {
        let base = Path::new(from).parent().unwrap_or(Path::new(""));
        let joined = normalize(&base.join(path));
        if joined
            .components()
            .any(|c| matches!(c, Component::ParentDir))
            || Path::new(path).is_absolute()
        {
            return Err("imports must stay inside the project".into());
        }
        let mut full = self.root.join(&joined);
        if full.extension().is_none() {
            full = full.with_extension("pipe");
        }
        let name = full
            .strip_prefix(self.root)
            .unwrap_or(&full)
            .display()
            .to_string();
        if let Some(text) = self.open.get(&full) {
            return Ok((name, text.clone()));
        }
        std::fs::read_to_string(&full)
            .map(|t| (name, t))
            .map_err(|e| format!("cannot read {}: {e}", full.display()))
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.iter().collect()
}

impl Analysis {
    /// Analyzes `text` as the file `name` (relative to `root` when inside it).
    pub fn new(
        root: &Path,
        name: &str,
        text: &str,
        open: &HashMap<PathBuf, String>,
        ctx: Context,
    ) -> Analysis {
        let mut loader = OverlayLoader { root, open };
        let ws = Workspace::load(vec![(name.to_string(), text.to_string())], &mut loader);
        let mut a = Analysis {
            ws,
            root: root.to_path_buf(),
            occs: Vec::new(),
            ctx,
        };
        a.index();
        a
    }

    /// The document's own file.
    pub fn file(&self) -> FileId {
        self.ws.modules[0].file
    }

    pub fn text(&self, file: FileId) -> &str {
        &self.ws.sources.get(file).text
    }

    pub fn parsed(&self) -> bool {
        self.ws.modules[0].ast.is_some()
    }

    /// Every diagnostic `pipe check` reports for this document and the
    /// files it imports.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        check(&self.ws, &self.ctx)
    }

    /// The module index of a file of the workspace.
    pub fn module_of(&self, file: FileId) -> Option<usize> {
        self.ws.modules.iter().position(|m| m.file == file)
    }

    /// The occurrence under a byte offset of the document.
    pub fn occ_at(&self, offset: usize) -> Option<&Occ> {
        let file = self.file();
        self.occs.iter().find(|o| {
            o.span.file == file && o.span.start as usize <= offset && offset <= o.span.end as usize
        })
    }

    pub fn definition(&self, sym: &Sym) -> Option<&Occ> {
        self.occs.iter().find(|o| o.def && &o.sym == sym)
    }

    pub fn occurrences<'s>(&'s self, sym: &'s Sym) -> impl Iterator<Item = &'s Occ> + 's {
        self.occs.iter().filter(move |o| &o.sym == sym)
    }

    /// The module a template path like `docker.build` names, from the document.
    pub fn template_module(&self, m: usize, path: &[&str]) -> Option<usize> {
        match path {
            [_] => Some(m),
            [ns, _] => self.ws.modules[m].imports.get(*ns).copied(),
            _ => None,
        }
    }

    pub fn template(&self, module: usize, name: &str) -> Option<&Template> {
        self.ws.modules[module].template(name)
    }

    fn index(&mut self) {
        let mut occs = Vec::new();
        // Templates of the document and of everything it imports.
        for (mi, module) in self.ws.modules.iter().enumerate() {
            let mname = self.ws.module_name(mi).to_string();
            for t in module.templates() {
                occs.push(Occ {
                    span: t.name.span,
                    sym: Sym {
                        kind: Kind::Template,
                        scope: mname.clone(),
                        name: t.name.name.clone(),
                    },
                    def: true,
                });
                for p in &t.params {
                    occs.push(Occ {
                        span: p.name.span,
                        sym: Sym {
                            kind: Kind::TemplateParam,
                            scope: format!("{mname}.{}", t.name.name),
                            name: p.name.name.clone(),
                        },
                        def: true,
                    });
                }
            }
        }
        let text = self.text(self.file()).to_string();
        for pl in self.ws.modules[0].pipelines() {
            let mut ix = Indexer {
                a: self,
                text: &text,
                pl,
                occs: &mut occs,
                loop_vars: Vec::new(),
            };
            ix.pipeline();
        }
        self.occs = occs;
    }
}

/// Walks one pipeline and records its names.
struct Indexer<'a> {
    a: &'a Analysis,
    text: &'a str,
    pl: &'a Pipeline,
    occs: &'a mut Vec<Occ>,
    loop_vars: Vec<String>,
}

/// Every literal step, gate and chaos name in some entries, recursively.
fn step_names(entries: &[StageEntry], out: &mut Vec<String>) {
    for e in entries {
        match e {
            StageEntry::Step(s) => out.extend(s.name.literal().map(str::to_string)),
            StageEntry::Gate(g) => out.extend(g.name.literal().map(str::to_string)),
            StageEntry::Chaos(c) => out.extend(c.name.literal().map(str::to_string)),
            StageEntry::For(f) => step_names(&f.entries, out),
            _ => {}
        }
    }
}

/// Every literal step name of a pipeline (stages and handlers).
pub fn pipeline_steps(pl: &Pipeline) -> Vec<String> {
    let mut out = Vec::new();
    for s in &pl.stages {
        step_names(&s.entries, &mut out);
    }
    for h in &pl.handlers {
        step_names(&h.entries, &mut out);
    }
    out
}

/// The span of a string's text without its quotes, or the span itself.
pub fn inner_span(text: &str, span: Span) -> Span {
    let s = text.get(span.range()).unwrap_or("");
    if s.len() >= 2 && (s.starts_with('"') || s.starts_with('\'')) {
        Span {
            start: span.start + 1,
            end: span.end - 1,
            ..span
        }
    } else {
        span
    }
}

fn literal_str(e: &Expr) -> Option<&str> {
    match &e.kind {
        ExprKind::Str(parts) => match parts.as_slice() {
            [StrPart::Lit(s)] => Some(s),
            _ => None,
        },
        _ => None,
    }
}

impl Indexer<'_> {
    fn push(&mut self, span: Span, kind: Kind, name: &str, def: bool) {
        self.occs.push(Occ {
            span,
            sym: Sym {
                kind,
                scope: self.pl.name.name.clone(),
                name: name.to_string(),
            },
            def,
        });
    }

    fn pipeline(&mut self) {
        let pl = self.pl;
        self.push(pl.name.span, Kind::Pipeline, &pl.name.name, true);
        for p in &pl.params {
            self.push(p.name.span, Kind::Param, &p.name.name, true);
            if let Some(d) = &p.default {
                self.expr(d);
            }
        }
        for e in &pl.envs {
            self.push(e.name.span, Kind::Env, &e.name.name, true);
            self.body(&e.body, None);
        }
        for s in &pl.stages {
            self.push(s.name.span, Kind::Stage, &s.name.name, true);
        }
        for s in &pl.stages {
            self.entries(&s.entries);
        }
        for h in &pl.handlers {
            self.entries(&h.entries);
        }
        for a in &pl.attrs {
            self.attr(a, None);
        }
        for a in &pl.asserts {
            self.assert_selectors(a);
        }
    }

    /// An assert's `from`, `to` and `through` name steps (`approve`,
    /// `"release-api"`) and stages (`stage.production`); a glob names no one step.
    fn assert_selectors(&mut self, a: &pipe_lang::ast::Assert) {
        let steps = pipeline_steps(self.pl);
        for attr in &a.body.attrs {
            if !["from", "to", "through"].contains(&attr.key.name.as_str()) {
                continue;
            }
            let items: Vec<&Expr> = match &attr.value.kind {
                ExprKind::List(items) => items.iter().collect(),
                _ => vec![&attr.value],
            };
            for it in items {
                match &it.kind {
                    ExprKind::Ident(n) if steps.contains(n) => {
                        self.push(it.span, Kind::Step, n, false);
                    }
                    ExprKind::Field(base, f)
                        if matches!(&base.kind, ExprKind::Ident(b) if b == "stage")
                            && self.pl.stages.iter().any(|s| s.name.name == f.name) =>
                    {
                        self.push(f.span, Kind::Stage, &f.name, false);
                    }
                    _ => {
                        if let Some(n) = literal_str(it).filter(|n| steps.iter().any(|s| s == n)) {
                            let span = inner_span(self.text, it.span);
                            self.push(span, Kind::Step, n, false);
                        }
                    }
                }
            }
        }
    }

    fn name_def(&mut self, n: &Name) {
        if let Some(lit) = n.literal() {
            let span = inner_span(self.text, n.span);
            self.push(span, Kind::Step, lit, true);
        } else {
            self.expr(&n.expr);
        }
    }

    fn entries(&mut self, entries: &[StageEntry]) {
        for e in entries {
            match e {
                StageEntry::Step(s) => {
                    self.name_def(&s.name);
                    let target = s.uses.as_ref().and_then(|u| {
                        let segs: Vec<&str> = u.segments.iter().map(|s| s.name.as_str()).collect();
                        let m = self.a.template_module(0, &segs)?;
                        let last = u.segments.last()?;
                        self.a.template(m, &last.name)?;
                        let scope = self.a.ws.module_name(m).to_string();
                        self.occs.push(Occ {
                            span: last.span,
                            sym: Sym {
                                kind: Kind::Template,
                                scope: scope.clone(),
                                name: last.name.clone(),
                            },
                            def: false,
                        });
                        Some(format!("{scope}.{}", last.name))
                    });
                    self.body(&s.body, target.as_deref());
                }
                StageEntry::Gate(g) => {
                    self.name_def(&g.name);
                    self.body(&g.body, None);
                }
                StageEntry::Chaos(c) => {
                    self.name_def(&c.name);
                    self.body(&c.body, None);
                }
                StageEntry::For(f) => {
                    self.expr(&f.iter);
                    let n = self.loop_vars.len();
                    self.loop_vars.extend(f.vars.iter().map(|v| v.name.clone()));
                    self.entries(&f.entries);
                    self.loop_vars.truncate(n);
                }
                StageEntry::Attr(a) => self.attr(a, None),
                StageEntry::Block(b) => self.body(&b.body, None),
            }
        }
    }

    /// `template` is `module.template` when the body sets a template's parameters.
    fn body(&mut self, body: &Body, template: Option<&str>) {
        for a in &body.attrs {
            self.attr(a, template);
        }
        for b in &body.blocks {
            self.body(&b.body, None);
        }
    }

    fn attr(&mut self, a: &Attr, template: Option<&str>) {
        if let Some(t) = template {
            let exists = self.occs.iter().any(|o| {
                o.def
                    && o.sym.kind == Kind::TemplateParam
                    && o.sym.scope == t
                    && o.sym.name == a.key.name
            });
            if exists {
                self.occs.push(Occ {
                    span: a.key.span,
                    sym: Sym {
                        kind: Kind::TemplateParam,
                        scope: t.to_string(),
                        name: a.key.name.clone(),
                    },
                    def: false,
                });
            }
        }
        match a.key.name.as_str() {
            "needs" => {
                let items: Vec<&Expr> = match &a.value.kind {
                    ExprKind::List(items) => items.iter().collect(),
                    _ => vec![&a.value],
                };
                for it in items {
                    match &it.kind {
                        ExprKind::Ident(n) if !self.loop_vars.contains(n) => {
                            self.step_or_stage(it.span, n);
                        }
                        _ => match literal_str(it) {
                            Some(n) => {
                                let span = inner_span(self.text, it.span);
                                self.step_or_stage(span, n);
                            }
                            None => self.expr(it),
                        },
                    }
                }
            }
            "env" => match &a.value.kind {
                ExprKind::Ident(n) if self.pl.envs.iter().any(|e| &e.name.name == n) => {
                    self.push(a.value.span, Kind::Env, n, false);
                }
                _ => self.expr(&a.value),
            },
            _ => self.expr(&a.value),
        }
    }

    fn step_or_stage(&mut self, span: Span, name: &str) {
        if pipeline_steps(self.pl).iter().any(|s| s == name) {
            self.push(span, Kind::Step, name, false);
        } else if self.pl.stages.iter().any(|s| s.name.name == name) {
            self.push(span, Kind::Stage, name, false);
        }
    }

    fn expr(&mut self, e: &Expr) {
        let mut found: Vec<(Span, Kind, String)> = Vec::new();
        let params: Vec<&str> = self
            .pl
            .params
            .iter()
            .map(|p| p.name.name.as_str())
            .collect();
        let steps = pipeline_steps(self.pl);
        let text = self.text;
        let loop_vars = &self.loop_vars;
        e.walk(&mut |x| match &x.kind {
            ExprKind::Ident(n) if params.contains(&n.as_str()) && !loop_vars.contains(n) => {
                found.push((x.span, Kind::Param, n.clone()));
            }
            ExprKind::Field(base, f)
                if matches!(&base.kind, ExprKind::Ident(s) if s == "steps")
                    && steps.contains(&f.name) =>
            {
                found.push((f.span, Kind::Step, f.name.clone()));
            }
            ExprKind::Index(base, i) if matches!(&base.kind, ExprKind::Ident(s) if s == "steps") => {
                if let Some(n) = literal_str(i) {
                    if steps.iter().any(|s| s == n) {
                        found.push((inner_span(text, i.span), Kind::Step, n.to_string()));
                    }
                }
            }
            _ => {}
        });
        for (span, kind, name) in found {
            self.push(span, kind, &name, false);
        }
    }
}
