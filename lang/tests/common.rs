//! Helpers shared by the test modules: loading source text into a workspace,
//! checking it, and flattening an AST into a table of spans.

use std::fmt::Write as _;

use pipe_lang::ast::{
    Attr, Block, Body, Expr, ExprKind, Item, Module, Name, Param, StageEntry, StrPart,
};
use pipe_lang::span::SourceFile;
use pipe_lang::workspace::NoLoader;
use pipe_lang::{Context, Diagnostic, FileId, Plan, Workspace};

/// The name every single-file test source is loaded under.
pub const FILE: &str = "test.pipe";

/// Parses `src` as file 0, panicking with the diagnostics if it does not parse.
pub fn parse_ok(src: &str) -> Module {
    match pipe_lang::parser::parse(FileId(0), src) {
        Ok(m) => m,
        Err(d) => panic!("expected {src:?} to parse, got {d:#?}"),
    }
}

/// Loads one file (std imports resolve; others are refused).
pub fn load(src: &str) -> Workspace {
    Workspace::load(vec![(FILE.to_string(), src.to_string())], &mut NoLoader)
}

/// Every diagnostic `check` reports for one file.
pub fn check(src: &str) -> (Workspace, Vec<Diagnostic>) {
    let ws = load(src);
    let d = pipe_lang::check(&ws, &Context::offline());
    (ws, d)
}

/// Lowers the first pipeline of `src`, panicking on any error.
pub fn lower_ok(src: &str) -> Plan {
    let ws = load(src);
    let (m, pl) = ws.pipelines().next().expect("a pipeline");
    let (plan, diags) = pipe_lang::lower(&ws, m, pl, &Context::offline());
    assert!(
        !diags.iter().any(Diagnostic::is_error),
        "unexpected errors: {diags:#?}"
    );
    plan.expect("a plan")
}

/// 1-based line and column of a byte offset in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    SourceFile::new(FILE, src).line_col(offset)
}

/// One row of a span table: where a node starts, and what it is and covers.
#[derive(Debug, PartialEq, Eq)]
pub struct Row {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    pub kind: String,
    pub text: String,
}

/// Builds rows from `(offset, line, column, kind, text)` tuples.
pub fn rows(table: &[(usize, usize, usize, &str, &str)]) -> Vec<Row> {
    table
        .iter()
        .map(|&(offset, line, column, kind, text)| Row {
            offset,
            line,
            column,
            kind: kind.to_string(),
            text: text.to_string(),
        })
        .collect()
}

/// Renders rows as the Rust tuples a test would write, for a readable failure.
pub fn table_source(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(
            s,
            "    ({}, {}, {}, {:?}, {:?}),",
            r.offset, r.line, r.column, r.kind, r.text
        );
    }
    s
}

/// Flattens a module into one row per node, parents first, each with the
/// source text its span covers.
pub fn flatten(src: &str, module: &Module) -> Vec<Row> {
    let mut f = Flattener {
        src,
        rows: Vec::new(),
    };
    for item in &module.items {
        f.item(item);
    }
    f.rows
}

struct Flattener<'s> {
    src: &'s str,
    rows: Vec<Row>,
}

impl Flattener<'_> {
    fn row(&mut self, span: pipe_lang::Span, kind: String) {
        let (line, column) = line_col(self.src, span.start as usize);
        self.rows.push(Row {
            offset: span.start as usize,
            line,
            column,
            kind,
            text: self.src[span.range()].to_string(),
        });
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Import(i) => {
                self.row(i.span, "import".into());
                self.row(i.path_span, format!("path {}", i.path));
                if let Some(a) = &i.alias {
                    self.row(a.span, format!("alias {}", a.name));
                }
            }
            Item::Pipeline(p) => {
                self.row(p.span, format!("pipeline {}", p.name.name));
                self.row(p.name.span, "name".into());
                for a in &p.attrs {
                    self.attr(a);
                }
                for b in &p.blocks {
                    self.block(b);
                }
                for prm in &p.params {
                    self.param(prm);
                }
                for e in &p.envs {
                    self.row(e.span, format!("env {}", e.name.name));
                    self.body(&e.body);
                }
                for s in &p.stages {
                    self.row(s.span, format!("stage {}", s.name.name));
                    self.row(s.name.span, "name".into());
                    for e in &s.entries {
                        self.entry(e);
                    }
                }
                for a in &p.asserts {
                    self.row(a.span, format!("assert {}", a.name.name));
                    self.row(a.name.span, "name".into());
                    self.body(&a.body);
                }
                for h in &p.handlers {
                    self.row(h.span, format!("on {}", h.kind.as_str()));
                    self.row(h.kind_span, "kind".into());
                    for e in &h.entries {
                        self.entry(e);
                    }
                }
            }
            Item::Template(t) => {
                self.row(t.span, format!("template {} doc={:?}", t.name.name, t.doc));
                for prm in &t.params {
                    self.param(prm);
                }
                self.body(&t.body);
            }
        }
    }

    fn param(&mut self, p: &Param) {
        self.row(p.span, format!("param {}", p.name.name));
        self.row(p.ty.span, format!("type {}", p.ty.ty));
        if let Some(d) = &p.default {
            self.expr(d);
        }
    }

    fn entry(&mut self, e: &StageEntry) {
        match e {
            StageEntry::Step(s) => {
                let uses = s
                    .uses
                    .as_ref()
                    .map(|u| format!(" = {}", u.dotted()))
                    .unwrap_or_default();
                self.row(s.span, format!("step{uses}"));
                self.name(&s.name);
                if let Some(u) = &s.uses {
                    self.row(u.span, format!("uses {}", u.dotted()));
                }
                self.body(&s.body);
            }
            StageEntry::Gate(g) => {
                self.row(g.span, format!("gate = {}", g.kind.dotted()));
                self.name(&g.name);
                self.body(&g.body);
            }
            StageEntry::Chaos(c) => {
                self.row(c.span, "chaos".into());
                self.name(&c.name);
                self.body(&c.body);
            }
            StageEntry::For(f) => {
                let vars: Vec<&str> = f.vars.iter().map(|v| v.name.as_str()).collect();
                self.row(f.span, format!("for {}", vars.join(", ")));
                for v in &f.vars {
                    self.row(v.span, format!("var {}", v.name));
                }
                self.expr(&f.iter);
                for e in &f.entries {
                    self.entry(e);
                }
            }
            StageEntry::Attr(a) => self.attr(a),
            StageEntry::Block(b) => self.block(b),
        }
    }

    fn name(&mut self, n: &Name) {
        self.row(n.span, "name".into());
    }

    fn body(&mut self, b: &Body) {
        self.row(b.span, "body".into());
        for a in &b.attrs {
            self.attr(a);
        }
        for bl in &b.blocks {
            self.block(bl);
        }
    }

    fn attr(&mut self, a: &Attr) {
        self.row(a.span, format!("attr {}", a.key.name));
        self.expr(&a.value);
    }

    fn block(&mut self, b: &Block) {
        self.row(b.span, format!("block {}", b.key.name));
        if let Some(l) = &b.label {
            self.name(l);
        }
        self.body(&b.body);
    }

    fn expr(&mut self, e: &Expr) {
        let kind = match &e.kind {
            ExprKind::Null => "null".to_string(),
            ExprKind::Bool(b) => format!("bool {b}"),
            ExprKind::Int(i) => format!("int {i}"),
            ExprKind::Float(f) => format!("float {f}"),
            ExprKind::Duration(ms) => format!("duration {ms}ms"),
            ExprKind::Str(parts) => {
                let shown: Vec<String> = parts
                    .iter()
                    .map(|p| match p {
                        StrPart::Lit(s) => format!("{s:?}"),
                        StrPart::Interp(_) => "${}".to_string(),
                    })
                    .collect();
                format!("str [{}]", shown.join(", "))
            }
            ExprKind::List(items) => format!("list of {}", items.len()),
            ExprKind::Map(entries) => {
                let keys: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
                format!("map {{{}}}", keys.join(", "))
            }
            ExprKind::Ident(n) => format!("ident {n}"),
            ExprKind::Field(_, f) => format!("field .{}", f.name),
            ExprKind::Index(..) => "index".to_string(),
            ExprKind::Call(n, args) => format!("call {}/{}", n.name, args.len()),
            ExprKind::Unary(op, _) => format!("unary {op:?}"),
            ExprKind::Binary(op, ..) => format!("binary {}", op.symbol()),
            ExprKind::Value(v) => format!("value {v:?}"),
        };
        self.row(e.span, kind);
        match &e.kind {
            ExprKind::Str(parts) => {
                for p in parts {
                    if let StrPart::Interp(i) = p {
                        self.expr(i);
                    }
                }
            }
            ExprKind::List(items) => items.iter().for_each(|i| self.expr(i)),
            ExprKind::Map(entries) => {
                for (k, v) in entries {
                    self.row(k.span, format!("key {}", k.name));
                    self.expr(v);
                }
            }
            ExprKind::Field(b, _) => self.expr(b),
            ExprKind::Index(b, i) => {
                self.expr(b);
                self.expr(i);
            }
            ExprKind::Call(_, args) => args.iter().for_each(|a| self.expr(a)),
            ExprKind::Unary(_, x) => self.expr(x),
            ExprKind::Binary(_, l, r) => {
                self.expr(l);
                self.expr(r);
            }
            _ => {}
        }
    }
}

/// Asserts the span table of `src` equals `expected`, printing the actual
/// table as Rust source when it does not.
#[track_caller]
pub fn assert_spans(src: &str, expected: &[(usize, usize, usize, &str, &str)]) {
    let actual = flatten(src, &parse_ok(src));
    let expected = rows(expected);
    assert!(
        actual == expected,
        "span table of {src:?} differs; actual:\n{}",
        table_source(&actual)
    );
}

/// Asserts the span table of a lone expression (parsed with `parse_expr`).
#[track_caller]
pub fn assert_expr_spans(src: &str, expected: &[(usize, usize, usize, &str, &str)]) {
    let e = match pipe_lang::parser::parse_expr(FileId(0), src) {
        Ok(e) => e,
        Err(d) => panic!("expected {src:?} to parse, got {d:#?}"),
    };
    let mut f = Flattener {
        src,
        rows: Vec::new(),
    };
    f.expr(&e);
    let expected = rows(expected);
    assert!(
        f.rows == expected,
        "span table of {src:?} differs; actual:\n{}",
        table_source(&f.rows)
    );
}

/// Where a diagnostic points and what it says, for compact comparisons.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    pub code: String,
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    pub text: String,
    pub message: String,
    pub help: Option<String>,
}

/// The diagnostics of one file as [`Found`] rows (file 0 only).
pub fn found(src: &str, diags: &[Diagnostic]) -> Vec<Found> {
    diags
        .iter()
        .map(|d| {
            let (line, column) = line_col(src, d.span.start as usize);
            Found {
                code: d.code.to_string(),
                offset: d.span.start as usize,
                line,
                column,
                text: src
                    .get(d.span.range())
                    .unwrap_or("<other file>")
                    .to_string(),
                message: d.message.clone(),
                help: d.help.clone(),
            }
        })
        .collect()
}

/// Renders [`Found`] rows as the tuples an analysis test writes.
pub fn found_source(rows: &[Found]) -> String {
    let mut s = String::new();
    for f in rows {
        let _ = writeln!(
            s,
            "        ({:?}, {}, {}, {}, {:?}, {:?}, {:?}),",
            f.code, f.offset, f.line, f.column, f.text, f.message, f.help
        );
    }
    s
}

/// An expected diagnostic: code, offset, line, column, covered text, message, help.
pub type Expected<'a> = (
    &'a str,
    usize,
    usize,
    usize,
    &'a str,
    &'a str,
    Option<&'a str>,
);

/// Asserts `check` reports exactly `expected` for one file: code, offset,
/// line, column, the text the primary span covers, message and help.
#[track_caller]
pub fn assert_diagnostics(src: &str, expected: &[Expected<'_>]) {
    let (_, diags) = check(src);
    let actual = found(src, &diags);
    let expected: Vec<Found> = expected
        .iter()
        .map(|&(code, offset, line, column, text, message, help)| Found {
            code: code.into(),
            offset,
            line,
            column,
            text: text.into(),
            message: message.into(),
            help: help.map(Into::into),
        })
        .collect();
    assert!(
        actual == expected,
        "diagnostics of {src:?} differ; actual:\n{}",
        found_source(&actual)
    );
}
