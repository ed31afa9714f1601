//! The formatter behind `pipe fmt` and the language server's formatting: one
//! canonical layout for a `.pipe` file, with every comment kept.
//!
//! The grammar skips comments, so they are recovered from the text by a small
//! lexer ([`comments`]) and placed by position: a comment on a line of its own
//! stays above the entry that follows it; a comment after code on the same
//! line stays at the end of that line. Strings are re-emitted exactly as
//! written. Where a comment sits inside an expression or a header, that piece
//! is kept as written rather than moved.
//!
//! Layout: two-space indent, one entry per line, `=` aligned across a run of
//! attributes (or params) not broken by a blank line or a block, lists and maps
//! inline when they fit in [`WIDTH`] columns and one item per line otherwise,
//! at most one blank line where the source had any.

use regex::Regex;

use crate::ast::{
    Assert, Attr, BinOp, Block, Body, Chaos, EnvDecl, Expr, ExprKind, ForLoop, Gate, Handler,
    Import, Item, Module, Param, Pipeline, Stage, StageEntry, Step, Template, UnOp,
};
use crate::diagnostic::Diagnostic;
use crate::parser;
use crate::span::{FileId, Span};

/// Lines are kept within this many columns where a list or map can break.
pub const WIDTH: usize = 100;
const INDENT: &str = "  ";

/// Formats a whole file. A file that does not parse is returned as its
/// diagnostics, untouched.
pub fn format(text: &str) -> Result<String, Vec<Diagnostic>> {
    let module = parser::parse(FileId(0), text)?;
    Ok(format_module(&module, text))
}

/// Formats an already parsed module; `text` is the source it came from.
pub fn format_module(module: &Module, text: &str) -> String {
    let mut p = Printer {
        src: text,
        comments: comments(text),
        used: Vec::new(),
        out: String::new(),
        indent: 0,
    };
    p.used = vec![false; p.comments.len()];
    let nodes: Vec<Node<'_>> = module
        .items
        .iter()
        .map(|i| match i {
            Item::Import(x) => Node::Import(x),
            Item::Pipeline(x) => Node::Pipeline(x),
            Item::Template(x) => Node::Template(x),
        })
        .collect();
    p.seq(&nodes, 0, text.len());
    let mut out = p.out.trim_end().to_string();
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Whether two modules have the same syntax tree, ignoring where things are.
pub fn same_syntax(a: &Module, b: &Module) -> bool {
    without_spans(a) == without_spans(b)
}

/// A module's `Debug` text with every span blanked out.
pub fn without_spans(m: &Module) -> String {
    let re =
        Regex::new(r"Span \{ file: FileId\(\d+\), start: \d+, end: \d+ \}").expect("span pattern");
    re.replace_all(&format!("{m:?}"), "Span").into_owned()
}

/// A `#` comment: its byte range (without the newline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comment {
    pub start: usize,
    pub end: usize,
}

/// Every comment in `text`, in order. Understands "strings" with escapes and
/// `${...}` interpolations (which may hold strings and braces) and 'raw strings'.
pub fn comments(text: &str) -> Vec<Comment> {
    #[derive(Clone, Copy, PartialEq)]
    enum Frame {
        Str,
        Interp,
        Brace,
    }
    let b = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if stack.last() == Some(&Frame::Str) {
            match c {
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'$' if b.get(i + 1) == Some(&b'{') => {
                    stack.push(Frame::Interp);
                    i += 1;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'#' => {
                let start = i;
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                let end = if i > start && b[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                out.push(Comment { start, end });
                continue;
            }
            b'\'' => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
            }
            b'"' => stack.push(Frame::Str),
            b'{' => stack.push(Frame::Brace),
            b'}' => {
                stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// One entry of a file, pipeline, stage or body, in source order.
#[derive(Clone, Copy)]
enum Node<'a> {
    Import(&'a Import),
    Template(&'a Template),
    Pipeline(&'a Pipeline),
    Param(&'a Param),
    Env(&'a EnvDecl),
    Stage(&'a Stage),
    Handler(&'a Handler),
    Assert(&'a Assert),
    Attr(&'a Attr),
    Block(&'a Block),
    Step(&'a Step),
    Gate(&'a Gate),
    Chaos(&'a Chaos),
    For(&'a ForLoop),
}

impl Node<'_> {
    fn span(self) -> Span {
        match self {
            Node::Import(x) => x.span,
            Node::Template(x) => x.span,
            Node::Pipeline(x) => x.span,
            Node::Param(x) => x.span,
            Node::Env(x) => x.span,
            Node::Stage(x) => x.span,
            Node::Handler(x) => x.span,
            Node::Assert(x) => x.span,
            Node::Attr(x) => x.span,
            Node::Block(x) => x.span,
            Node::Step(x) => x.span,
            Node::Gate(x) => x.span,
            Node::Chaos(x) => x.span,
            Node::For(x) => x.span,
        }
    }

    /// Attributes and params line up their `=` with their neighbours.
    fn alignable(self) -> bool {
        matches!(self, Node::Attr(_) | Node::Param(_))
    }
}

fn stage_nodes(entries: &[StageEntry]) -> Vec<Node<'_>> {
    entries
        .iter()
        .map(|e| match e {
            StageEntry::Step(x) => Node::Step(x),
            StageEntry::Gate(x) => Node::Gate(x),
            StageEntry::Chaos(x) => Node::Chaos(x),
            StageEntry::For(x) => Node::For(x),
            StageEntry::Attr(x) => Node::Attr(x),
            StageEntry::Block(x) => Node::Block(x),
        })
        .collect()
}

fn body_nodes(body: &Body) -> Vec<Node<'_>> {
    let mut v: Vec<Node<'_>> = body
        .attrs
        .iter()
        .map(Node::Attr)
        .chain(body.blocks.iter().map(Node::Block))
        .collect();
    v.sort_by_key(|n| n.span().start);
    v
}

fn pipeline_nodes(pl: &Pipeline) -> Vec<Node<'_>> {
    let mut v: Vec<Node<'_>> = pl
        .params
        .iter()
        .map(Node::Param)
        .chain(pl.envs.iter().map(Node::Env))
        .chain(pl.stages.iter().map(Node::Stage))
        .chain(pl.handlers.iter().map(Node::Handler))
        .chain(pl.asserts.iter().map(Node::Assert))
        .chain(pl.attrs.iter().map(Node::Attr))
        .chain(pl.blocks.iter().map(Node::Block))
        .collect();
    v.sort_by_key(|n| n.span().start);
    v
}

/// An entry or an own-line comment inside a sequence.
enum Piece<'a> {
    Node(Node<'a>),
    Comment(usize),
}

struct Printer<'s> {
    src: &'s str,
    comments: Vec<Comment>,
    used: Vec<bool>,
    out: String,
    indent: usize,
}

impl Printer<'_> {
    fn comment_text(&self, i: usize) -> &str {
        let c = self.comments[i];
        self.src[c.start..c.end].trim_end()
    }

    /// Comments starting in `start..end` not yet printed, by index.
    fn comments_in(&self, start: usize, end: usize) -> Vec<usize> {
        (0..self.comments.len())
            .filter(|&i| {
                !self.used[i] && self.comments[i].start >= start && self.comments[i].start < end
            })
            .collect()
    }

    fn consume(&mut self, start: usize, end: usize) {
        for i in self.comments_in(start, end) {
            self.used[i] = true;
        }
    }

    fn has_comment(&self, start: usize, end: usize) -> bool {
        !self.comments_in(start, end).is_empty()
    }

    fn newline_count(&self, start: usize, end: usize) -> usize {
        self.src
            .get(start..end)
            .map_or(0, |s| s.bytes().filter(|&b| b == b'\n').count())
    }

    fn line_start(&mut self) {
        for _ in 0..self.indent {
            self.out.push_str(INDENT);
        }
    }

    fn column(&self) -> usize {
        self.out.len() - self.out.rfind('\n').map_or(0, |i| i + 1)
    }

    /// The source slice of a span.
    fn slice(&self, span: Span) -> &str {
        self.src.get(span.range()).unwrap_or("")
    }

    /// Prints a sequence of entries found between `start` and `end` with the
    /// comments among them. The caller has opened the line for nothing:
    /// every piece starts on a fresh line.
    fn seq(&mut self, nodes: &[Node<'_>], start: usize, end: usize) {
        // Own-line comments between the entries (those inside an entry belong to it).
        let mut pieces: Vec<(usize, Piece<'_>)> = nodes
            .iter()
            .map(|n| (n.span().start as usize, Piece::Node(*n)))
            .collect();
        for i in self.comments_in(start, end) {
            let at = self.comments[i].start;
            let inside = nodes
                .iter()
                .any(|n| at >= n.span().start as usize && at < n.span().end as usize);
            if !inside {
                pieces.push((at, Piece::Comment(i)));
            }
        }
        pieces.sort_by_key(|(at, _)| *at);

        // Runs of alignable entries share one key width.
        let widths = self.align_widths(&pieces, start);

        let mut prev_end: Option<usize> = None;
        let mut i = 0;
        while i < pieces.len() {
            let at = pieces[i].0;
            if let Piece::Comment(c) = pieces[i].1 {
                if self.used[c] {
                    // Printed already, at the end of the entry before it.
                    i += 1;
                    continue;
                }
            }
            if let Some(pe) = prev_end {
                if self.newline_count(pe, at) >= 2 {
                    self.out.push('\n');
                }
            }
            match pieces[i].1 {
                Piece::Comment(c) => {
                    self.used[c] = true;
                    self.line_start();
                    let t = self.comment_text(c).to_string();
                    self.out.push_str(&t);
                    self.out.push('\n');
                    prev_end = Some(self.comments[c].end);
                }
                Piece::Node(n) => {
                    self.line_start();
                    self.node(n, widths[i]);
                    let mut end = n.span().end as usize;
                    end = self.trailing(end);
                    self.out.push('\n');
                    prev_end = Some(end);
                }
            }
            i += 1;
        }
    }

    /// Appends the comment that follows `end` on the same source line, if
    /// any; returns where the printed source now ends.
    fn trailing(&mut self, end: usize) -> usize {
        let next =
            (0..self.comments.len()).find(|&i| !self.used[i] && self.comments[i].start >= end);
        if let Some(c) = next {
            let gap = &self.src[end..self.comments[c].start];
            if !gap.contains('\n') && gap.trim_matches([' ', '\t', ',', '\r']).is_empty() {
                self.used[c] = true;
                let t = self.comment_text(c).to_string();
                self.out.push_str("  ");
                self.out.push_str(&t);
                return self.comments[c].end;
            }
        }
        end
    }

    /// The key width of each piece in its run of alignable entries.
    fn align_widths(&self, pieces: &[(usize, Piece<'_>)], start: usize) -> Vec<usize> {
        let mut widths = vec![0; pieces.len()];
        let mut run: Vec<usize> = Vec::new();
        let mut prev_end = start;
        let flush = |run: &mut Vec<usize>, widths: &mut Vec<usize>| {
            let w = run
                .iter()
                .filter_map(|&j| match pieces[j].1 {
                    Piece::Node(n) => self.key_text(n).map(|k| k.len()),
                    Piece::Comment(_) => None,
                })
                .max()
                .unwrap_or(0);
            for &j in run.iter() {
                widths[j] = w;
            }
            run.clear();
        };
        for (j, (at, piece)) in pieces.iter().enumerate() {
            let blank = j > 0 && self.newline_count(prev_end, *at) >= 2;
            if blank {
                flush(&mut run, &mut widths);
            }
            match piece {
                Piece::Comment(c) => {
                    prev_end = self.comments[*c].end;
                }
                Piece::Node(n) => {
                    if n.alignable() {
                        run.push(j);
                    } else {
                        flush(&mut run, &mut widths);
                    }
                    prev_end = n.span().end as usize;
                }
            }
        }
        flush(&mut run, &mut widths);
        widths
    }

    /// The text left of ` = ` for an attribute or a param with a default,
    /// when it is printed in the canonical form (no comment inside).
    fn key_text(&self, n: Node<'_>) -> Option<String> {
        let span = n.span();
        if self.has_comment(span.start as usize, span.end as usize) {
            return None;
        }
        match n {
            Node::Attr(a) => Some(a.key.name.clone()),
            Node::Param(p) if p.default.is_some() => Some(param_head(p)),
            _ => None,
        }
    }

    fn node(&mut self, n: Node<'_>, width: usize) {
        let span = n.span();
        let leaf = matches!(n, Node::Attr(_) | Node::Param(_) | Node::Import(_));
        if leaf && self.has_comment(span.start as usize, span.end as usize) {
            // A comment inside an expression: keep the entry as written.
            let s = self.slice(span).to_string();
            self.out.push_str(&s);
            self.consume(span.start as usize, span.end as usize);
            return;
        }
        match n {
            Node::Import(i) => {
                self.out.push_str("import ");
                let s = self.slice(i.path_span).to_string();
                self.out.push_str(&s);
                if let Some(a) = &i.alias {
                    self.out.push_str(" as ");
                    self.out.push_str(&a.name);
                }
            }
            Node::Param(p) => {
                let head = param_head(p);
                self.out.push_str(&head);
                if let Some(d) = &p.default {
                    pad(&mut self.out, width.saturating_sub(head.len()));
                    self.out.push_str(" = ");
                    self.value(d);
                }
            }
            Node::Attr(a) => {
                self.out.push_str(&a.key.name);
                pad(&mut self.out, width.saturating_sub(a.key.name.len()));
                self.out.push_str(" = ");
                self.value(&a.value);
            }
            Node::Template(t) => {
                let open = t.body.span.start as usize;
                if !self.header_verbatim(span, open) {
                    self.out.push_str("template ");
                    self.out.push_str(&t.name.name);
                    let params: Vec<String> = t
                        .params
                        .iter()
                        .map(|p| {
                            let mut s = param_head(p);
                            if let Some(d) = &p.default {
                                s.push_str(" = ");
                                s.push_str(&self.inline(d));
                            }
                            s
                        })
                        .collect();
                    let inline = format!("({}) {{", params.join(", "));
                    // A trailing comma after the last parameter asks for one per line.
                    let trailing_comma = t.params.last().is_some_and(|p| {
                        let close = self.src[..open].rfind(')').unwrap_or(open);
                        self.src
                            .get(p.span.end as usize..close)
                            .is_some_and(|g| g.contains(','))
                    });
                    if params.is_empty()
                        || (!trailing_comma
                            && self.column() + inline.len() <= WIDTH
                            && !inline.contains('\n'))
                    {
                        self.out.push_str(&inline);
                    } else {
                        self.out.push_str("(\n");
                        for p in &params {
                            self.out.push_str(INDENT);
                            for _ in 0..self.indent {
                                self.out.push_str(INDENT);
                            }
                            self.out.push_str(p);
                            self.out.push_str(",\n");
                        }
                        self.line_start();
                        self.out.push_str(") {");
                    }
                }
                self.body_rest(&body_nodes(&t.body), open, span);
            }
            Node::Pipeline(pl) => {
                let open = self.brace_after(pl.name.span.end as usize);
                if !self.header_verbatim(span, open) {
                    self.out.push_str("pipeline ");
                    self.out.push_str(&pl.name.name);
                    self.out.push_str(" {");
                }
                self.body_rest(&pipeline_nodes(pl), open, span);
            }
            Node::Env(e) => {
                let open = e.body.span.start as usize;
                if !self.header_verbatim(span, open) {
                    self.out.push_str("env ");
                    self.out.push_str(&e.name.name);
                    self.out.push_str(" {");
                }
                self.body_rest(&body_nodes(&e.body), open, span);
            }
            Node::Stage(s) => {
                let open = self.brace_after(s.name.span.end as usize);
                if !self.header_verbatim(span, open) {
                    self.out.push_str("stage ");
                    self.out.push_str(&s.name.name);
                    self.out.push_str(" {");
                }
                self.body_rest(&stage_nodes(&s.entries), open, span);
            }
            Node::Handler(h) => {
                let open = self.brace_after(h.kind_span.end as usize);
                if !self.header_verbatim(span, open) {
                    self.out.push_str("on ");
                    self.out.push_str(h.kind.as_str());
                    self.out.push_str(" {");
                }
                self.body_rest(&stage_nodes(&h.entries), open, span);
            }
            Node::Assert(a) => {
                let open = a.body.span.start as usize;
                if !self.header_verbatim(span, open) {
                    self.out.push_str("assert ");
                    self.out.push_str(&a.name.name);
                    self.out.push_str(" {");
                }
                self.body_rest(&body_nodes(&a.body), open, span);
            }
            Node::For(f) => {
                let open = self.brace_after(f.iter.span.end as usize);
                if !self.header_verbatim(span, open) {
                    self.out.push_str("for ");
                    let vars: Vec<&str> = f.vars.iter().map(|v| v.name.as_str()).collect();
                    self.out.push_str(&vars.join(", "));
                    self.out.push_str(" in ");
                    let it = self.inline(&f.iter);
                    self.out.push_str(&it);
                    self.out.push_str(" {");
                }
                self.body_rest(&stage_nodes(&f.entries), open, span);
            }
            Node::Step(s) => {
                let open = s.body.span.start as usize;
                if !self.header_verbatim(span, open) {
                    self.out.push_str("step ");
                    let name = self.slice(s.name.span).to_string();
                    self.out.push_str(&name);
                    if let Some(u) = &s.uses {
                        self.out.push_str(" = ");
                        self.out.push_str(&u.dotted());
                    }
                    self.out.push_str(" {");
                }
                self.body_rest(&body_nodes(&s.body), open, span);
            }
            Node::Gate(g) => {
                let open = g.body.span.start as usize;
                if !self.header_verbatim(span, open) {
                    self.out.push_str("gate ");
                    let name = self.slice(g.name.span).to_string();
                    self.out.push_str(&name);
                    self.out.push_str(" = ");
                    self.out.push_str(&g.kind.dotted());
                    self.out.push_str(" {");
                }
                self.body_rest(&body_nodes(&g.body), open, span);
            }
            Node::Chaos(c) => {
                let open = c.body.span.start as usize;
                if !self.header_verbatim(span, open) {
                    self.out.push_str("chaos ");
                    let name = self.slice(c.name.span).to_string();
                    self.out.push_str(&name);
                    self.out.push_str(" {");
                }
                self.body_rest(&body_nodes(&c.body), open, span);
            }
            Node::Block(b) => {
                let open = b.body.span.start as usize;
                if !self.header_verbatim(span, open) {
                    self.out.push_str(&b.key.name);
                    if let Some(l) = &b.label {
                        self.out.push(' ');
                        let name = self.slice(l.span).to_string();
                        self.out.push_str(&name);
                    }
                    self.out.push_str(" {");
                }
                self.body_rest(&body_nodes(&b.body), open, span);
            }
        }
    }

    /// A header with a comment inside (`step x = # why` ...) is kept as
    /// written up to its `{`. Returns whether it was.
    fn header_verbatim(&mut self, span: Span, open: usize) -> bool {
        let start = span.start as usize;
        if !self.has_comment(start, open) {
            return false;
        }
        let s = self.src[start..open].trim_end().to_string();
        self.out.push_str(&s);
        self.out.push_str(" {");
        self.consume(start, open);
        true
    }

    /// The inside of a braced entry, after its `{` was printed, and its `}`.
    fn body_rest(&mut self, nodes: &[Node<'_>], open: usize, span: Span) {
        let close = (span.end as usize).saturating_sub(1);
        let has_comments = self.has_comment(open + 1, close);
        if nodes.is_empty() && !has_comments {
            self.out.push('}');
            return;
        }
        self.trailing(open + 1);
        self.out.push('\n');
        self.indent += 1;
        self.seq(nodes, open + 1, close);
        self.indent -= 1;
        self.line_start();
        self.out.push('}');
    }

    /// The `{` that opens a body after `from`, skipping whitespace and comments.
    fn brace_after(&self, from: usize) -> usize {
        let b = self.src.as_bytes();
        let mut i = from;
        while i < b.len() {
            match b[i] {
                b'{' => return i,
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                _ => i += 1,
            }
        }
        from
    }

    /// Prints a value at the current column: inline if it fits, else lists and
    /// maps break one item per line.
    fn value(&mut self, e: &Expr) {
        let inline = self.inline(e);
        let fits = self.column() + inline.len() <= WIDTH && !inline.contains('\n');
        match &e.kind {
            ExprKind::List(items) if !fits && !items.is_empty() => {
                self.out.push_str("[\n");
                self.indent += 1;
                for it in items {
                    self.line_start();
                    self.value(it);
                    self.out.push_str(",\n");
                }
                self.indent -= 1;
                self.line_start();
                self.out.push(']');
            }
            ExprKind::Map(entries) if !fits && !entries.is_empty() => {
                self.out.push_str("{\n");
                self.indent += 1;
                let keys: Vec<String> = entries
                    .iter()
                    .map(|(k, _)| self.slice(k.span).to_string())
                    .collect();
                let w = keys.iter().map(String::len).max().unwrap_or(0);
                for ((_, v), k) in entries.iter().zip(&keys) {
                    self.line_start();
                    self.out.push_str(k);
                    pad(&mut self.out, w - k.len());
                    self.out.push_str(" = ");
                    self.value(v);
                    self.out.push('\n');
                }
                self.indent -= 1;
                self.line_start();
                self.out.push('}');
            }
            _ => self.out.push_str(&inline),
        }
    }

    /// An expression on one line (multi-line strings keep their newlines).
    fn inline(&self, e: &Expr) -> String {
        let mut out = String::new();
        self.expr(&mut out, e, 0);
        out
    }

    fn expr(&self, out: &mut String, e: &Expr, parent: u8) {
        match &e.kind {
            ExprKind::Null => out.push_str("null"),
            ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            ExprKind::Int(i) => {
                if *i < 0 && parent >= POSTFIX {
                    out.push_str(&format!("({i})"));
                } else {
                    out.push_str(&i.to_string());
                }
            }
            ExprKind::Float(f) => {
                let t = format!("{f:?}");
                if f.is_sign_negative() && parent >= POSTFIX {
                    out.push_str(&format!("({t})"));
                } else {
                    out.push_str(&t);
                }
            }
            ExprKind::Duration(_) | ExprKind::Str(_) => {
                out.push_str(unparen(self.slice(e.span)));
            }
            ExprKind::List(items) => {
                out.push('[');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.expr(out, it, 0);
                }
                out.push(']');
            }
            ExprKind::Map(entries) => {
                if entries.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push_str("{ ");
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(self.slice(k.span));
                    out.push_str(" = ");
                    self.expr(out, v, 0);
                }
                out.push_str(" }");
            }
            ExprKind::Ident(n) => out.push_str(n),
            ExprKind::Field(b, f) => {
                self.expr(out, b, POSTFIX);
                out.push('.');
                out.push_str(&f.name);
            }
            ExprKind::Index(b, i) => {
                self.expr(out, b, POSTFIX);
                out.push('[');
                self.expr(out, i, 0);
                out.push(']');
            }
            ExprKind::Call(f, args) => {
                out.push_str(&f.name);
                out.push('(');
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.expr(out, a, 0);
                }
                out.push(')');
            }
            ExprKind::Unary(op, inner) => {
                let paren = parent >= POSTFIX;
                if paren {
                    out.push('(');
                }
                out.push(match op {
                    UnOp::Not => '!',
                    UnOp::Neg => '-',
                });
                // `op_unary* ~ postfix`: another unary or a negative literal
                // needs no parentheses; a binary operand does.
                let p = match inner.kind {
                    ExprKind::Unary(..) | ExprKind::Int(_) | ExprKind::Float(_) => UNARY,
                    _ => POSTFIX - 1,
                };
                self.expr(out, inner, p);
                if paren {
                    out.push(')');
                }
            }
            ExprKind::Binary(op, l, r) => {
                let p = op.precedence();
                let paren = p < parent;
                if paren {
                    out.push('(');
                }
                // Chains fold to the left; comparisons do not chain at all.
                let lp = if is_comparison(*op) { p + 1 } else { p };
                self.expr(out, l, lp);
                out.push(' ');
                out.push_str(op.symbol());
                out.push(' ');
                self.expr(out, r, p + 1);
                if paren {
                    out.push(')');
                }
            }
            ExprKind::Value(v) => out.push_str(&crate::fmt::value_to_source(v)),
        }
    }
}

/// Binding strength of a unary operand and of postfix `.`/`[]` bases, above
/// every binary operator's [`BinOp::precedence`].
const UNARY: u8 = 8;
const POSTFIX: u8 = 10;

fn is_comparison(op: BinOp) -> bool {
    op.precedence() == BinOp::Eq.precedence()
}

/// A literal's text without the parentheses that widened its span.
fn unparen(mut s: &str) -> &str {
    s = s.trim();
    while s.starts_with('(') && s.ends_with(')') {
        s = s[1..s.len() - 1].trim();
    }
    s
}

/// `param x: t` in a pipeline, `x: t` in a template's parameter list: the
/// span tells which, since only a pipeline param's text starts with a keyword.
fn param_head(p: &Param) -> String {
    let head = format!("{}: {}", p.name.name, p.ty.ty);
    if p.span.start < p.name.span.start {
        format!("param {head}")
    } else {
        head
    }
}

fn pad(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

/// Whether `s` is unchanged by the formatter (and parses).
pub fn is_formatted(s: &str) -> bool {
    format(s).is_ok_and(|f| f == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(s: &str) -> String {
        format(s).unwrap_or_else(|d| panic!("{s}\n{d:?}"))
    }

    /// Formats `src`, checks the result against `want`, then checks that the
    /// syntax tree is unchanged and that formatting again changes nothing.
    fn check(src: &str, want: &str) {
        let got = fmt(src);
        assert_eq!(got, want, "formatting\n{src}");
        assert_properties(src);
    }

    fn assert_properties(src: &str) {
        let got = fmt(src);
        let a = parser::parse(FileId(0), src).expect("source parses");
        let b = parser::parse(FileId(0), &got)
            .unwrap_or_else(|d| panic!("formatted text does not parse: {d:?}\n{got}"));
        assert_eq!(without_spans(&a), without_spans(&b), "AST changed:\n{got}");
        assert_eq!(fmt(&got), got, "not idempotent");
        let kept = |s: &str| {
            comments(s)
                .iter()
                .map(|c| s[c.start..c.end].trim_end().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(src), kept(&got), "comments changed:\n{got}");
    }

    #[test]
    fn asserts_lay_out_like_other_declarations() {
        check(
            "pipeline p { stage s { step a { run = \"x\" } }\n\n\n  assert gated{to=stage.s  through=[a,\"b-*\"]   # why\n message = \"m\" } }",
            "pipeline p {\n  stage s {\n    step a {\n      run = \"x\"\n    }\n  }\n\n  assert gated {\n    to      = stage.s\n    through = [a, \"b-*\"]  # why\n    message = \"m\"\n  }\n}\n",
        );
    }

    #[test]
    fn aligns_attributes_and_splits_one_entry_per_line() {
        check(
            "pipeline p { stage s { step a { run = \"x\"  timeout = 5s\n retry { attempts = 3 } } } }",
            "pipeline p {\n  stage s {\n    step a {\n      run     = \"x\"\n      timeout = 5s\n      retry {\n        attempts = 3\n      }\n    }\n  }\n}\n",
        );
    }

    #[test]
    fn params_align_and_blank_lines_collapse_to_one() {
        check(
            "pipeline p {\n  param version: string = \"1\"\n  param services: list<string> = [\"a\"]\n\n\n\n  stage s {}\n}\n",
            "pipeline p {\n  param version: string        = \"1\"\n  param services: list<string> = [\"a\"]\n\n  stage s {}\n}\n",
        );
    }

    #[test]
    fn keeps_own_line_and_trailing_comments() {
        check(
            "# head\nimport \"std/docker\" # why\n\n## Doc.\ntemplate t(a: string) { # open\n  # own\n  x = a   # tail\n  # last\n}\n",
            "# head\nimport \"std/docker\"  # why\n\n## Doc.\ntemplate t(a: string) {  # open\n  # own\n  x = a  # tail\n  # last\n}\n",
        );
    }

    #[test]
    fn strings_are_kept_as_written() {
        check(
            "pipeline p { stage s { step 'raw-${x}' { run = \"a\\tb ${ \"n\" + 1 }\"\n  sh = 'c:\\d'\n  m = \"line1\nline2\" } } }",
            "pipeline p {\n  stage s {\n    step 'raw-${x}' {\n      run = \"a\\tb ${ \"n\" + 1 }\"\n      sh  = 'c:\\d'\n      m   = \"line1\nline2\"\n    }\n  }\n}\n",
        );
    }

    #[test]
    fn long_lists_and_maps_break_one_item_per_line() {
        let long = (0..12)
            .map(|i| format!("\"item-{i}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let src =
            format!("pipeline p {{ env e {{ l = [{long}]\n m = {{ A = 1, bb = [{long}] }} }} }}");
        let got = fmt(&src);
        assert!(got.contains("    l = [\n      \"item-0\",\n"), "{got}");
        assert!(
            got.contains("    m = {\n      A  = 1\n      bb = [\n"),
            "{got}"
        );
        assert_properties(&src);
    }

    #[test]
    fn comment_inside_an_expression_keeps_it_as_written() {
        check(
            "pipeline p {\n  env e {\n    l = [\n      \"a\", # first\n      \"b\",\n    ]\n  }\n}\n",
            "pipeline p {\n  env e {\n    l = [\n      \"a\", # first\n      \"b\",\n    ]\n  }\n}\n",
        );
    }

    #[test]
    fn comment_in_a_header_keeps_the_header() {
        check(
            "pipeline p { stage s { step a = # why\n docker.build { x = 1 } } }",
            "pipeline p {\n  stage s {\n    step a = # why\n docker.build {\n      x = 1\n    }\n  }\n}\n",
        );
    }

    #[test]
    fn parentheses_survive_where_they_matter() {
        for e in [
            "a ?? (b ?? c)",
            "(a ?? b) ?? c",
            "(a == b) == c",
            "-(a + b)",
            "(-5).x",
            "(-x).y",
            "!(a && b) || c",
            "(a - b) - (c - d)",
            "1.0 * 2.5e10",
            "- - 5",
            "(\"s\")",
            "((5s))",
        ] {
            assert_properties(&format!("pipeline p {{ env e {{ v = {e} }} }}"));
        }
    }

    #[test]
    fn template_parameters_stay_one_per_line_after_a_trailing_comma() {
        check(
            "template t(a: string, b: int = 1,) {}\ntemplate u(a: string, b: int = 1) {}\n",
            "template t(\n  a: string,\n  b: int = 1,\n) {}\ntemplate u(a: string, b: int = 1) {}\n",
        );
    }

    #[test]
    fn lexer_skips_hashes_in_strings() {
        let src = "a = \"# no ${ {x = \"#no\"} } \" # yes\nb = '#no' # yes2\n";
        let found: Vec<&str> = comments(src).iter().map(|c| &src[c.start..c.end]).collect();
        assert_eq!(found, ["# yes", "# yes2"]);
    }

    #[test]
    fn shipped_files_keep_their_syntax_and_are_stable() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut n = 0;
        for dir in ["pipelines", "stdlib", "examples"] {
            let mut stack = vec![root.join(dir)];
            while let Some(d) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "pipe") {
                        let src = std::fs::read_to_string(&p).expect("read");
                        if parser::parse(FileId(0), &src).is_ok() {
                            assert_properties(&src);
                            n += 1;
                        }
                    }
                }
            }
        }
        assert!(n >= 8, "only {n} shipped files found");
    }

    mod generated {
        use super::*;
        use proptest::prelude::*;

        fn leaf() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z][a-z0-9_]{0,6}".prop_filter("not a literal", |s| !matches!(
                    s.as_str(),
                    "true" | "false" | "null"
                )),
                (0i64..100_000).prop_map(|i| i.to_string()),
                (1u32..90).prop_map(|i| format!("{i}s")),
                Just("1.5".to_string()),
                Just("null".to_string()),
                "[a-z #]{0,8}".prop_map(|s| format!("\"{s}\"")),
                "[a-z #]{0,8}".prop_map(|s| format!("'{s}'")),
            ]
        }

        fn expr() -> impl Strategy<Value = String> {
            leaf().prop_recursive(4, 24, 6, |inner| {
                prop_oneof![
                    (
                        inner.clone(),
                        inner.clone(),
                        prop::sample::select(vec!["+", "-", "*", "??", "&&", "||", "=="])
                    )
                        .prop_map(|(a, b, op)| format!("({a} {op} {b})")),
                    (
                        inner.clone(),
                        inner.clone(),
                        prop::sample::select(vec!["+", "??", "/"])
                    )
                        .prop_map(|(a, b, op)| format!("{a} {op} ({b})")),
                    inner.clone().prop_map(|a| format!("-({a})")),
                    inner.clone().prop_map(|a| format!("!{a}")),
                    inner.clone().prop_map(|a| format!("({a}).field")),
                    prop::collection::vec(inner.clone(), 0..14)
                        .prop_map(|v| format!("[{}]", v.join(", "))),
                    prop::collection::vec(inner.clone(), 0..8).prop_map(|v| {
                        let e: Vec<String> = v
                            .iter()
                            .enumerate()
                            .map(|(i, x)| format!("k{i} = {x}"))
                            .collect();
                        format!("{{ {} }}", e.join(", "))
                    }),
                    inner.clone().prop_map(|a| format!("\"pre ${{{a}}} post\"")),
                    (inner.clone(), inner).prop_map(|(a, b)| format!("f({a}, {b})")),
                ]
            })
        }

        /// Whitespace as a sloppy author types it, sometimes with a comment.
        fn gap() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(" ".to_string()),
                Just("\n".to_string()),
                Just("\n\n\n".to_string()),
                Just("  # note\n".to_string()),
                Just("\n  # own line\n".to_string()),
            ]
        }

        fn file() -> impl Strategy<Value = String> {
            fn attr() -> BoxedStrategy<String> {
                (
                    prop::sample::select(vec!["run", "x", "timeout_long_key", "a"]),
                    expr(),
                    gap(),
                )
                    .prop_map(|(k, e, g)| format!("{k} = {e}{g}"))
                    .boxed()
            }
            let step = (
                prop::sample::select(vec!["build", "'raw'", "\"s-${x}\""]),
                prop::collection::vec(attr(), 0..4),
                gap(),
            )
                .prop_map(|(n, attrs, g)| format!("step {n} = t.x {{{g}{}}}{g}", attrs.concat()));
            let stage = (
                prop::collection::vec(step, 0..3),
                prop::collection::vec(attr(), 0..2),
                gap(),
            )
                .prop_map(|(steps, attrs, g)| {
                    format!("stage s {{{g}{}{}}}\n", attrs.concat(), steps.concat())
                });
            let param =
                (expr(), gap()).prop_map(|(e, g)| format!("param p: list<string> = {e}{g}"));
            (
                prop::collection::vec(param, 0..3),
                prop::collection::vec(stage, 0..3),
                gap(),
            )
                .prop_map(|(params, stages, g)| {
                    format!(
                        "# top{g}import \"std/docker\"{g}pipeline p {{{g}{}{}}}{g}",
                        params.concat(),
                        stages.concat()
                    )
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn formatting_keeps_syntax_and_comments_and_is_idempotent(src in file()) {
                prop_assume!(parser::parse(FileId(0), &src).is_ok());
                assert_properties(&src);
            }
        }
    }
}
