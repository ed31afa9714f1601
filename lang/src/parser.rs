//! Text to [`Module`]: a lexical pre-scan that bounds nesting, the pest grammar
//! (`lang/pipe.pest`), and a builder that turns pest pairs into the AST while
//! checking what the grammar cannot (escapes, number ranges, expression depth).

use pest::iterators::{Pair, Pairs};
use pest::Parser as _;

use crate::ast::{
    Assert, Attr, BinOp, Block, Body, Chaos, EnvDecl, Expr, ExprKind, ForLoop, Gate, Handler,
    HandlerKind, Ident, Import, Item, Module, Name, Param, Path, Pipeline, Stage, StageEntry, Step,
    StrPart, Template, TypeExpr, UnOp,
};
use crate::diagnostic::Diagnostic;
use crate::span::{FileId, Span};
use crate::value::{parse_duration, Type};

/// Brackets, braces and interpolations nested deeper than this are refused
/// before pest sees the text, so no input can exhaust the parser's stack.
pub const MAX_NESTING: usize = 64;
/// Expression trees deeper than this (long operator chains) are refused.
/// Folding and evaluating recurse once per level; a tree this deep takes
/// about 1 MiB of stack in a debug build, half a test thread's or a tokio
/// worker's 2 MiB (200 levels overflowed one).
pub const MAX_EXPR_DEPTH: usize = 100;
/// Larger files are refused outright.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

#[derive(pest_derive::Parser)]
#[grammar = "../pipe.pest"]
struct Grammar;

/// Parses one file. On failure the diagnostics say where and why; a file has
/// at most one syntax error reported, since pest stops at the first.
pub fn parse(file: FileId, text: &str) -> Result<Module, Vec<Diagnostic>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![Diagnostic::error(
            "pipe::file-too-large",
            format!(
                "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                text.len()
            ),
            Span::new(file, 0, 0),
            "this file is too large",
        )
        .with_help("split the pipeline into several files and `import` them")]);
    }
    prescan(file, text)?;
    with_parse_stack(|| {
        let pairs =
            Grammar::parse(Rule::file, text).map_err(|e| vec![syntax_error(file, text, &e)])?;
        let mut b = Builder {
            file,
            text,
            errors: Vec::new(),
        };
        let module = b.module(pairs);
        if b.errors.is_empty() {
            Ok(module)
        } else {
            Err(b.errors)
        }
    })
}

/// Stack for one parse. pest's generated parser recurses about a dozen rules
/// per bracket, with frames of ~100 KiB a level in debug builds, so even the
/// [`MAX_NESTING`] levels the prescan allows overflow a 2 MiB thread (test
/// threads, async workers). Only the pages touched are committed.
const PARSE_STACK_BYTES: usize = 256 << 20;

/// Runs `f` on a scoped thread with [`PARSE_STACK_BYTES`] of stack, or in
/// place if no thread can be spawned.
fn with_parse_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let f = std::sync::Mutex::new(Some(f));
    // Runs `f` at most once: on the thread, or here if spawning failed.
    let run = || {
        f.lock()
            .map_or(None, |mut g| g.take())
            .map(|f| f())
            .expect("the parse runs once")
    };
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("pipe-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(s, run);
        match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => run(),
        }
    })
}

/// Parses a lone expression (used by `-p` overrides and tests).
pub fn parse_expr(file: FileId, text: &str) -> Result<Expr, Vec<Diagnostic>> {
    prescan(file, text)?;
    with_parse_stack(|| parse_expr_unchecked(file, text))
}

fn parse_expr_unchecked(file: FileId, text: &str) -> Result<Expr, Vec<Diagnostic>> {
    let mut pairs =
        Grammar::parse(Rule::expr, text).map_err(|e| vec![syntax_error(file, text, &e)])?;
    let pair = pairs.next().expect("expr");
    if pair.as_span().end() != text.trim_end().len() {
        let at = pair.as_span().end();
        return Err(vec![Diagnostic::error(
            "pipe::syntax",
            "unexpected text after the expression",
            Span::new(file, at, text.len()),
            "not part of the expression",
        )]);
    }
    let mut b = Builder {
        file,
        text,
        errors: Vec::new(),
    };
    let e = b.expr(pair);
    if b.errors.is_empty() {
        Ok(e)
    } else {
        Err(b.errors)
    }
}

/// Walks the text as a lexer would (code, "strings", 'raw strings', comments,
/// `${` interpolations) and refuses nesting deeper than [`MAX_NESTING`].
fn prescan(file: FileId, text: &str) -> Result<(), Vec<Diagnostic>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Code,
        Str,
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<(Mode, usize)> = vec![(Mode::Code, 0)];
    let mut i = 0;
    while i < bytes.len() {
        let mode = stack.last().map_or(Mode::Code, |m| m.0);
        let c = bytes[i];
        match mode {
            Mode::Code => match c {
                b'#' => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'\'' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'\'' {
                        i += 1;
                    }
                }
                b'"' => stack.push((Mode::Str, i)),
                b'(' | b'[' | b'{' => stack.push((Mode::Code, i)),
                b')' | b']' | b'}' if stack.len() > 1 => {
                    stack.pop();
                }
                _ => {}
            },
            Mode::Str => match c {
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    stack.push((Mode::Code, i));
                    i += 1;
                }
                _ => {}
            },
        }
        if stack.len() > MAX_NESTING {
            let at = stack.last().map_or(i, |m| m.1);
            return Err(vec![Diagnostic::error(
                "pipe::nesting-too-deep",
                format!("nesting too deep: more than {MAX_NESTING} levels of brackets, braces or interpolations"),
                Span::new(file, at, at + 1),
                "this opens one level too many",
            )
            .with_help("flatten the structure: name intermediate values with params or split the step")]);
        }
        i += 1;
    }
    if let Some(&(mode, at)) = stack.last().filter(|_| stack.len() > 1) {
        let (message, label, help) = match (mode, bytes[at]) {
            (Mode::Str, _) => (
                "unterminated string",
                "this string is never closed",
                "close it with `\"`",
            ),
            (_, b'$') => (
                "unterminated interpolation",
                "this `${` is never closed",
                "close it with `}`",
            ),
            (_, b'{') => (
                "unclosed `{`",
                "this `{` is never closed",
                "add the matching `}`",
            ),
            (_, b'[') => (
                "unclosed `[`",
                "this `[` is never closed",
                "add the matching `]`",
            ),
            _ => (
                "unclosed `(`",
                "this `(` is never closed",
                "add the matching `)`",
            ),
        };
        return Err(vec![Diagnostic::error(
            "pipe::syntax",
            format!("{message} at end of file"),
            Span::new(file, at, at + 1),
            label,
        )
        .with_help(help)]);
    }
    Ok(())
}

fn rule_name(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::import => "`import`",
        Rule::pipeline => "`pipeline`",
        Rule::template => "`template`",
        Rule::template_param => "a template parameter",
        Rule::param => "`param`",
        Rule::env_decl => "`env`",
        Rule::stage => "`stage`",
        Rule::handler => "`on`",
        Rule::handler_kind => "`failure`, `success` or `always`",
        Rule::assert_decl => "`assert`",
        Rule::step => "`step`",
        Rule::gate => "`gate`",
        Rule::chaos => "`chaos`",
        Rule::for_loop => "`for`",
        Rule::body => "`{`",
        Rule::attr => "an attribute (`key = value`)",
        Rule::block => "a block",
        Rule::name => "a name",
        Rule::path => "a template name",
        Rule::type_expr | Rule::list_type | Rule::map_type | Rule::scalar_type => "a type",
        Rule::expr
        | Rule::coalesce
        | Rule::or_expr
        | Rule::and_expr
        | Rule::cmp_expr
        | Rule::add_expr
        | Rule::mul_expr
        | Rule::unary
        | Rule::postfix
        | Rule::paren
        | Rule::list
        | Rule::map
        | Rule::call
        | Rule::duration
        | Rule::number
        | Rule::boolean
        | Rule::null => "an expression",
        Rule::map_entry => "a map entry (`key = value`)",
        Rule::field | Rule::index => "`.` or `[`",
        Rule::op_coalesce
        | Rule::op_or
        | Rule::op_and
        | Rule::op_cmp
        | Rule::op_add
        | Rule::op_mul
        | Rule::op_unary => "an operator",
        Rule::string | Rule::raw_string => "a string",
        Rule::str_text | Rule::escape | Rule::interp | Rule::raw_text => "string text",
        Rule::ident => "a name",
        Rule::kw_import => "`import`",
        Rule::kw_as => "`as`",
        Rule::kw_pipeline => "`pipeline`",
        Rule::kw_template => "`template`",
        Rule::kw_param => "`param`",
        Rule::kw_env => "`env`",
        Rule::kw_stage => "`stage`",
        Rule::kw_on => "`on`",
        Rule::kw_step => "`step`",
        Rule::kw_gate => "`gate`",
        Rule::kw_chaos => "`chaos`",
        Rule::kw_for => "`for`",
        Rule::kw_in => "`in`",
        Rule::kw_assert => "`assert`",
        _ => return None,
    })
}

fn syntax_error(file: FileId, text: &str, e: &pest::error::Error<Rule>) -> Diagnostic {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let found = found_at(text, pos);
    let end = pos + found.len().max(usize::from(pos < text.len()));
    let span = Span::new(file, pos, end.min(text.len()));
    let (expected, unexpected) = match &e.variant {
        pest::error::ErrorVariant::ParsingError {
            positives,
            negatives,
        } => (positives.clone(), negatives.clone()),
        pest::error::ErrorVariant::CustomError { message } => {
            return Diagnostic::error("pipe::syntax", message.clone(), span, "here");
        }
    };
    let mut names: Vec<&str> = expected.iter().filter_map(|r| rule_name(*r)).collect();
    names.dedup();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(*n));
    let list = match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    let found_desc = if pos >= text.len() {
        "end of file".to_string()
    } else {
        format!("`{found}`")
    };
    let message = if list.is_empty() {
        let what: Vec<&str> = unexpected.iter().filter_map(|r| rule_name(*r)).collect();
        format!(
            "unexpected {}",
            what.first().copied().unwrap_or(found_desc.as_str())
        )
    } else {
        format!("expected {list}, found {found_desc}")
    };
    let mut d = Diagnostic::error(
        "pipe::syntax",
        message,
        span,
        if list.is_empty() {
            "unexpected".into()
        } else {
            format!("expected {list}")
        },
    );
    if let Some(help) = syntax_help(&found, &expected) {
        d = d.with_help(help);
    }
    d
}

fn found_at(text: &str, pos: usize) -> String {
    let rest = text.get(pos..).unwrap_or("");
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if word.is_empty() {
        rest.chars().next().map(String::from).unwrap_or_default()
    } else {
        word
    }
}

fn syntax_help(found: &str, expected: &[Rule]) -> Option<String> {
    // `run: "x"` stops at the colon, where a block body or label was expected.
    if found == ":"
        && (expected.contains(&Rule::attr)
            || expected.contains(&Rule::body)
            || expected.contains(&Rule::name))
    {
        return Some("attributes are written `key = value`".into());
    }
    if found == ";" {
        return Some("pipe needs no semicolons: separate entries with newlines or commas".into());
    }
    // Right after a whole comparison only looser operators may follow.
    if matches!(found, "<" | ">" | "=" | "!")
        && expected.contains(&Rule::op_and)
        && !expected.contains(&Rule::op_cmp)
    {
        return Some("comparisons do not chain: write `a < b && b < c`".into());
    }
    if found == "=" && expected.contains(&Rule::op_cmp) {
        return Some("to compare, write `==`; a single `=` only sets an attribute".into());
    }
    if matches!(found, "true" | "false" | "null") && expected.contains(&Rule::ident) {
        return Some(format!(
            "`{found}` is a literal and cannot be used as a name"
        ));
    }
    if expected.contains(&Rule::EOI) || expected.contains(&Rule::kw_pipeline) {
        return Some("a file holds `import`s, `pipeline`s and `template`s".into());
    }
    None
}

struct Builder<'t> {
    file: FileId,
    text: &'t str,
    errors: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, s.start(), self.end_of(p))
    }

    /// Where a pair's text really ends. pest skips whitespace and comments
    /// before trying a trailing `*` or `?` and keeps them in the pair when the
    /// repetition matches nothing, so `a = 1  # note\n` would cover the note
    /// and the newline; diagnostics must underline `a = 1` only.
    fn end_of(&self, p: &Pair<'_, Rule>) -> usize {
        let end = p.as_span().end();
        let bytes = self.text.as_bytes();
        // A skip ends in whitespace, except a comment that ends the file.
        if end == 0 || (end < bytes.len() && !bytes[end - 1].is_ascii_whitespace()) {
            return end;
        }
        match p.clone().into_inner().last() {
            Some(last) => {
                let inner_end = self.end_of(&last);
                if only_skip(&self.text[inner_end..end]) {
                    inner_end
                } else {
                    end
                }
            }
            None => end,
        }
    }

    fn ident(&self, p: &Pair<'_, Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(p),
        }
    }

    fn module(&mut self, mut pairs: Pairs<'_, Rule>) -> Module {
        let file = pairs.next().expect("file rule");
        let span = self.span(&file);
        let mut items = Vec::new();
        for p in file.into_inner() {
            match p.as_rule() {
                Rule::import => items.push(Item::Import(self.import(p))),
                Rule::pipeline => items.push(Item::Pipeline(self.pipeline(p))),
                Rule::template => items.push(Item::Template(self.template(p))),
                _ => {}
            }
        }
        Module { items, span }
    }

    fn import(&mut self, p: Pair<'_, Rule>) -> Import {
        let span = self.span(&p);
        let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
        let path_pair = inner.next().expect("import path");
        let path_span = self.span(&path_pair);
        let path = match self.string(path_pair).kind {
            ExprKind::Str(parts) => match parts.as_slice() {
                [StrPart::Lit(s)] => s.clone(),
                [] => String::new(),
                _ => {
                    self.errors.push(Diagnostic::error(
                        "pipe::syntax",
                        "an import path cannot interpolate",
                        path_span,
                        "interpolation here",
                    ));
                    String::new()
                }
            },
            _ => String::new(),
        };
        let alias = inner.next().map(|a| self.ident(&a));
        Import {
            path,
            path_span,
            alias,
            span,
        }
    }

    fn pipeline(&mut self, p: Pair<'_, Rule>) -> Pipeline {
        let span = self.span(&p);
        let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
        let name = self.ident(&inner.next().expect("pipeline name"));
        let mut pl = Pipeline {
            name,
            params: vec![],
            envs: vec![],
            stages: vec![],
            handlers: vec![],
            asserts: vec![],
            attrs: vec![],
            blocks: vec![],
            span,
        };
        for e in inner {
            match e.as_rule() {
                Rule::param => pl.params.push(self.param(e)),
                Rule::env_decl => {
                    let span = self.span(&e);
                    let mut i = e.into_inner().filter(|p| !is_keyword(p.as_rule()));
                    let name = self.ident(&i.next().expect("env name"));
                    let body = self.body(i.next().expect("env body"));
                    pl.envs.push(EnvDecl { name, body, span });
                }
                Rule::stage => {
                    let span = self.span(&e);
                    let mut i = e.into_inner().filter(|p| !is_keyword(p.as_rule()));
                    let name = self.ident(&i.next().expect("stage name"));
                    let entries = i.map(|p| self.stage_entry(p)).collect();
                    pl.stages.push(Stage {
                        name,
                        entries,
                        span,
                    });
                }
                Rule::handler => {
                    let span = self.span(&e);
                    let mut i = e.into_inner().filter(|p| !is_keyword(p.as_rule()));
                    let k = i.next().expect("handler kind");
                    let kind = match k.as_str() {
                        "failure" => HandlerKind::Failure,
                        "success" => HandlerKind::Success,
                        _ => HandlerKind::Always,
                    };
                    let kind_span = self.span(&k);
                    let entries = i.map(|p| self.stage_entry(p)).collect();
                    pl.handlers.push(Handler {
                        kind,
                        kind_span,
                        entries,
                        span,
                    });
                }
                Rule::assert_decl => {
                    let span = self.span(&e);
                    let mut i = e.into_inner().filter(|p| !is_keyword(p.as_rule()));
                    let name = self.ident(&i.next().expect("assert name"));
                    let body = self.body(i.next().expect("assert body"));
                    pl.asserts.push(Assert { name, body, span });
                }
                Rule::attr => pl.attrs.push(self.attr(e)),
                Rule::block => pl.blocks.push(self.block(e)),
                _ => {}
            }
        }
        pl
    }

    fn template(&mut self, p: Pair<'_, Rule>) -> Template {
        let span = self.span(&p);
        let doc = doc_comment(self.text, span.start as usize);
        let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
        let name = self.ident(&inner.next().expect("template name"));
        let mut params = Vec::new();
        let mut body = None;
        for e in inner {
            match e.as_rule() {
                Rule::template_param => params.push(self.param(e)),
                Rule::body => body = Some(self.body(e)),
                _ => {}
            }
        }
        Template {
            name,
            params,
            body: body.expect("template body"),
            doc,
            span,
        }
    }

    fn param(&mut self, p: Pair<'_, Rule>) -> Param {
        let span = self.span(&p);
        let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
        let name = self.ident(&inner.next().expect("param name"));
        let ty = self.type_expr(inner.next().expect("param type"));
        let default = inner.next().map(|e| self.expr(e));
        Param {
            name,
            ty,
            default,
            span,
        }
    }

    fn type_expr(&mut self, p: Pair<'_, Rule>) -> TypeExpr {
        let span = self.span(&p);
        TypeExpr {
            ty: type_of(p),
            span,
        }
    }

    fn stage_entry(&mut self, p: Pair<'_, Rule>) -> StageEntry {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::step => {
                let mut i = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
                let name = self.name(i.next().expect("step name"));
                let mut uses = None;
                let mut body = None;
                for e in i {
                    match e.as_rule() {
                        Rule::path => uses = Some(self.path(e)),
                        Rule::body => body = Some(self.body(e)),
                        _ => {}
                    }
                }
                StageEntry::Step(Step {
                    name,
                    uses,
                    body: body.expect("step body"),
                    span,
                })
            }
            Rule::gate => {
                let mut i = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
                let name = self.name(i.next().expect("gate name"));
                let kind = self.path(i.next().expect("gate kind"));
                let body = self.body(i.next().expect("gate body"));
                StageEntry::Gate(Gate {
                    name,
                    kind,
                    body,
                    span,
                })
            }
            Rule::chaos => {
                let mut i = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
                let name = self.name(i.next().expect("chaos name"));
                let body = self.body(i.next().expect("chaos body"));
                StageEntry::Chaos(Chaos { name, body, span })
            }
            Rule::for_loop => {
                let mut vars = Vec::new();
                let mut iter = None;
                let mut entries = Vec::new();
                for e in p.into_inner().filter(|p| !is_keyword(p.as_rule())) {
                    match e.as_rule() {
                        Rule::ident if iter.is_none() => vars.push(self.ident(&e)),
                        Rule::expr if iter.is_none() => iter = Some(self.expr(e)),
                        _ => entries.push(self.stage_entry(e)),
                    }
                }
                StageEntry::For(ForLoop {
                    vars,
                    iter: iter.expect("for iterable"),
                    entries,
                    span,
                })
            }
            Rule::attr => StageEntry::Attr(self.attr(p)),
            _ => StageEntry::Block(self.block(p)),
        }
    }

    fn body(&mut self, p: Pair<'_, Rule>) -> Body {
        let span = self.span(&p);
        let mut attrs = Vec::new();
        let mut blocks = Vec::new();
        for e in p.into_inner() {
            match e.as_rule() {
                Rule::attr => attrs.push(self.attr(e)),
                Rule::block => blocks.push(self.block(e)),
                _ => {}
            }
        }
        Body {
            attrs,
            blocks,
            span,
        }
    }

    fn attr(&mut self, p: Pair<'_, Rule>) -> Attr {
        let span = self.span(&p);
        let mut i = p.into_inner();
        let key = self.ident(&i.next().expect("attr key"));
        let value = self.expr(i.next().expect("attr value"));
        Attr { key, value, span }
    }

    fn block(&mut self, p: Pair<'_, Rule>) -> Block {
        let span = self.span(&p);
        let mut i = p.into_inner();
        let key = self.ident(&i.next().expect("block key"));
        let mut label = None;
        let mut body = None;
        for e in i {
            match e.as_rule() {
                Rule::name => label = Some(self.name(e)),
                Rule::body => body = Some(self.body(e)),
                _ => {}
            }
        }
        Block {
            key,
            label,
            body: body.expect("block body"),
            span,
        }
    }

    fn name(&mut self, p: Pair<'_, Rule>) -> Name {
        let span = self.span(&p);
        let inner = p.into_inner().next().expect("name");
        let expr = match inner.as_rule() {
            Rule::ident => Expr::new(
                ExprKind::Str(vec![StrPart::Lit(inner.as_str().to_string())]),
                span,
            ),
            Rule::raw_string => self.raw_string(&inner),
            _ => self.string(inner),
        };
        Name { expr, span }
    }

    fn path(&mut self, p: Pair<'_, Rule>) -> Path {
        let span = self.span(&p);
        let segments = p.into_inner().map(|s| self.ident(&s)).collect();
        Path { segments, span }
    }

    fn expr(&mut self, p: Pair<'_, Rule>) -> Expr {
        let (e, _) = self.expr_depth(p);
        e
    }

    /// Builds an expression and returns its depth; chains fold left to right
    /// and stop with an error at [`MAX_EXPR_DEPTH`].
    fn expr_depth(&mut self, p: Pair<'_, Rule>) -> (Expr, usize) {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::expr | Rule::paren => {
                let inner = p.into_inner().next().expect("inner expr");
                let (mut e, d) = self.expr_depth(inner);
                if e.span != span {
                    // Parentheses are part of the expression's extent.
                    e.span = if span.len() > e.span.len() {
                        span
                    } else {
                        e.span
                    };
                }
                (e, d)
            }
            Rule::coalesce
            | Rule::or_expr
            | Rule::and_expr
            | Rule::cmp_expr
            | Rule::add_expr
            | Rule::mul_expr => {
                let mut inner = p.into_inner();
                let (mut acc, mut depth) = self.expr_depth(inner.next().expect("operand"));
                while let Some(op) = inner.next() {
                    let op = binop(op.as_str());
                    let (rhs, rd) = self.expr_depth(inner.next().expect("operand"));
                    depth = depth.max(rd) + 1;
                    if depth > MAX_EXPR_DEPTH {
                        return (self.too_deep(span), 1);
                    }
                    let s = acc.span.to(rhs.span);
                    acc = Expr::new(ExprKind::Binary(op, Box::new(acc), Box::new(rhs)), s);
                }
                (acc, depth)
            }
            Rule::unary => {
                let mut ops = Vec::new();
                let mut operand = None;
                for e in p.into_inner() {
                    if e.as_rule() == Rule::op_unary {
                        ops.push((
                            if e.as_str() == "!" {
                                UnOp::Not
                            } else {
                                UnOp::Neg
                            },
                            self.span(&e),
                        ));
                    } else {
                        operand = Some(e);
                    }
                }
                let (mut acc, mut depth) = self.expr_depth(operand.expect("unary operand"));
                for (op, op_span) in ops.into_iter().rev() {
                    depth += 1;
                    if depth > MAX_EXPR_DEPTH {
                        return (self.too_deep(span), 1);
                    }
                    // Fold `-5` into a literal so negative numbers stay literals.
                    acc = match (op, &acc.kind) {
                        (UnOp::Neg, ExprKind::Int(i)) => {
                            Expr::new(ExprKind::Int(-i), op_span.to(acc.span))
                        }
                        (UnOp::Neg, ExprKind::Float(f)) => {
                            Expr::new(ExprKind::Float(-f), op_span.to(acc.span))
                        }
                        _ => {
                            let s = op_span.to(acc.span);
                            Expr::new(ExprKind::Unary(op, Box::new(acc)), s)
                        }
                    };
                }
                (acc, depth)
            }
            Rule::postfix => {
                let mut inner = p.into_inner();
                let (mut acc, mut depth) = self.expr_depth(inner.next().expect("primary"));
                for e in inner {
                    depth += 1;
                    if depth > MAX_EXPR_DEPTH {
                        return (self.too_deep(span), 1);
                    }
                    let s = acc.span.to(self.span(&e));
                    acc = match e.as_rule() {
                        Rule::field => {
                            let f = self.ident(&e.into_inner().next().expect("field"));
                            Expr::new(ExprKind::Field(Box::new(acc), f), s)
                        }
                        _ => {
                            let (idx, d) = self.expr_depth(e.into_inner().next().expect("index"));
                            depth = depth.max(d + 1);
                            Expr::new(ExprKind::Index(Box::new(acc), Box::new(idx)), s)
                        }
                    };
                }
                (acc, depth)
            }
            Rule::list => {
                let mut depth = 0;
                let items = p
                    .into_inner()
                    .map(|e| {
                        let (e, d) = self.expr_depth(e);
                        depth = depth.max(d);
                        e
                    })
                    .collect();
                (Expr::new(ExprKind::List(items), span), depth + 1)
            }
            Rule::map => {
                let mut depth = 0;
                let mut entries = Vec::new();
                for entry in p.into_inner() {
                    let mut i = entry.into_inner();
                    let k = i.next().expect("map key");
                    let key = match k.as_rule() {
                        Rule::ident => self.ident(&k),
                        Rule::raw_string => {
                            let span = self.span(&k);
                            Ident {
                                name: k
                                    .into_inner()
                                    .next()
                                    .map(|t| t.as_str().to_string())
                                    .unwrap_or_default(),
                                span,
                            }
                        }
                        _ => {
                            let span = self.span(&k);
                            let e = self.string(k);
                            let name = match e.kind {
                                ExprKind::Str(parts) => match parts.as_slice() {
                                    [StrPart::Lit(s)] => s.clone(),
                                    [] => String::new(),
                                    _ => {
                                        self.errors.push(Diagnostic::error(
                                            "pipe::syntax",
                                            "a map key cannot interpolate",
                                            span,
                                            "interpolation here",
                                        ));
                                        String::new()
                                    }
                                },
                                _ => String::new(),
                            };
                            Ident { name, span }
                        }
                    };
                    let (v, d) = self.expr_depth(i.next().expect("map value"));
                    depth = depth.max(d);
                    entries.push((key, v));
                }
                (Expr::new(ExprKind::Map(entries), span), depth + 1)
            }
            Rule::call => {
                let mut i = p.into_inner();
                let name = self.ident(&i.next().expect("fn name"));
                let mut depth = 0;
                let args = i
                    .map(|e| {
                        let (e, d) = self.expr_depth(e);
                        depth = depth.max(d);
                        e
                    })
                    .collect();
                (Expr::new(ExprKind::Call(name, args), span), depth + 1)
            }
            Rule::string => self.string_depth(p),
            Rule::raw_string => (self.raw_string(&p), 1),
            Rule::duration => match parse_duration(p.as_str()) {
                Some(ms) => (Expr::new(ExprKind::Duration(ms), span), 1),
                None => {
                    self.errors.push(Diagnostic::error(
                        "pipe::number",
                        "duration out of range",
                        span,
                        "too large",
                    ));
                    (Expr::new(ExprKind::Null, span), 1)
                }
            },
            Rule::number => {
                let t = p.as_str();
                let kind = if t.contains(['.', 'e', 'E']) {
                    t.parse().map(ExprKind::Float).ok()
                } else {
                    t.parse().map(ExprKind::Int).ok()
                };
                if let Some(k) = kind {
                    (Expr::new(k, span), 1)
                } else {
                    self.errors.push(
                        Diagnostic::error(
                            "pipe::number",
                            format!("number `{t}` is out of range"),
                            span,
                            "too large",
                        )
                        .with_help(format!(
                            "integers range from {} to {}",
                            i64::MIN,
                            i64::MAX
                        )),
                    );
                    (Expr::new(ExprKind::Null, span), 1)
                }
            }
            Rule::boolean => (Expr::new(ExprKind::Bool(p.as_str() == "true"), span), 1),
            Rule::null => (Expr::new(ExprKind::Null, span), 1),
            Rule::ident => (Expr::new(ExprKind::Ident(p.as_str().to_string()), span), 1),
            r => unreachable!("unexpected rule in expression: {r:?}"),
        }
    }

    fn too_deep(&mut self, span: Span) -> Expr {
        self.errors.push(
            Diagnostic::error(
                "pipe::nesting-too-deep",
                format!("expression too deep: more than {MAX_EXPR_DEPTH} nested operations"),
                span,
                "this expression",
            )
            .with_help("split it with intermediate params or a list"),
        );
        Expr::new(ExprKind::Null, span)
    }

    fn raw_string(&mut self, p: &Pair<'_, Rule>) -> Expr {
        let span = self.span(p);
        let text = p
            .clone()
            .into_inner()
            .next()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default();
        Expr::new(
            ExprKind::Str(if text.is_empty() {
                vec![]
            } else {
                vec![StrPart::Lit(text)]
            }),
            span,
        )
    }

    fn string(&mut self, p: Pair<'_, Rule>) -> Expr {
        self.string_depth(p).0
    }

    /// A string and its depth: one more than its deepest interpolation, so
    /// nested `"${"${...}"}"` count towards [`MAX_EXPR_DEPTH`] like brackets do.
    fn string_depth(&mut self, p: Pair<'_, Rule>) -> (Expr, usize) {
        let mut depth = 0;
        let span = self.span(&p);
        let mut parts: Vec<StrPart> = Vec::new();
        let push_lit = |parts: &mut Vec<StrPart>, s: &str| {
            if let Some(StrPart::Lit(last)) = parts.last_mut() {
                last.push_str(s);
            } else {
                parts.push(StrPart::Lit(s.to_string()));
            }
        };
        for e in p.into_inner() {
            match e.as_rule() {
                Rule::str_text => push_lit(&mut parts, e.as_str()),
                Rule::escape => {
                    let esc = &e.as_str()[1..];
                    let c = match esc {
                        "n" => "\n",
                        "t" => "\t",
                        "r" => "\r",
                        "0" => "\0",
                        "\\" => "\\",
                        "\"" => "\"",
                        "$" => "$",
                        "\n" => "",
                        _ => {
                            let s = self.span(&e);
                            self.errors.push(
                                Diagnostic::error(
                                    "pipe::escape",
                                    format!("unknown escape `\\{esc}`"),
                                    s,
                                    "not a valid escape",
                                )
                                .with_help(
                                    "valid escapes are \\n \\t \\r \\0 \\\\ \\\" and \\$; for text with backslashes use a 'single-quoted' string",
                                ),
                            );
                            ""
                        }
                    };
                    push_lit(&mut parts, c);
                }
                Rule::interp => {
                    let inner = e.into_inner().next().expect("interp expr");
                    let (e, d) = self.expr_depth(inner);
                    depth = depth.max(d);
                    parts.push(StrPart::Interp(e));
                }
                _ => {}
            }
        }
        if depth + 1 > MAX_EXPR_DEPTH {
            return (self.too_deep(span), 1);
        }
        (Expr::new(ExprKind::Str(parts), span), depth + 1)
    }
}

/// Whether `s` holds nothing but whitespace and `#` comments.
fn only_skip(mut s: &str) -> bool {
    loop {
        s = s.trim_start_matches([' ', '\t', '\r', '\n']);
        if s.starts_with('#') {
            s = s.find('\n').map_or("", |i| &s[i..]);
        } else {
            return s.is_empty();
        }
    }
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_import
            | Rule::kw_as
            | Rule::kw_pipeline
            | Rule::kw_template
            | Rule::kw_param
            | Rule::kw_env
            | Rule::kw_stage
            | Rule::kw_on
            | Rule::kw_step
            | Rule::kw_gate
            | Rule::kw_chaos
            | Rule::kw_for
            | Rule::kw_in
            | Rule::kw_assert
    )
}

fn type_of(p: Pair<'_, Rule>) -> Type {
    let inner = p.into_inner().next().expect("type");
    match inner.as_rule() {
        Rule::list_type => Type::List(Box::new(type_of(
            inner.into_inner().next().expect("list elem"),
        ))),
        Rule::map_type => Type::Map(Box::new(type_of(
            inner.into_inner().next().expect("map elem"),
        ))),
        _ => match inner.as_str() {
            "string" => Type::String,
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            "duration" => Type::Duration,
            "command" => Type::Command,
            _ => Type::Any,
        },
    }
}

fn binop(s: &str) -> BinOp {
    match s {
        "??" => BinOp::Coalesce,
        "||" => BinOp::Or,
        "&&" => BinOp::And,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "=~" => BinOp::Match,
        "!~" => BinOp::NotMatch,
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        _ => BinOp::Rem,
    }
}

/// The `##` lines directly above `offset`, without their markers.
fn doc_comment(text: &str, offset: usize) -> String {
    let before = &text[..offset];
    let mut lines: Vec<&str> = Vec::new();
    for line in before
        .lines()
        .rev()
        .skip(usize::from(!before.ends_with('\n')))
    {
        let t = line.trim();
        if let Some(doc) = t.strip_prefix("##") {
            lines.push(doc.strip_prefix(' ').unwrap_or(doc));
        } else {
            break;
        }
    }
    lines.reverse();
    lines.join("\n")
}
