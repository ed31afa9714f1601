//! The syntax tree of a `.pipe` file. Every node keeps the [`Span`] it was
//! parsed from; nothing here is evaluated or resolved yet.

use crate::span::Span;
use crate::value::{Type, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub items: Vec<Item>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Import(Import),
    Pipeline(Pipeline),
    Template(Template),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    /// `"std/docker"` or a path relative to the importing file.
    pub path: String,
    pub path_span: Span,
    pub alias: Option<Ident>,
    pub span: Span,
}

impl Import {
    /// The namespace the import binds: the alias, or the last path segment
    /// without its `.pipe` extension.
    pub fn namespace(&self) -> &str {
        if let Some(a) = &self.alias {
            return &a.name;
        }
        let last = self.path.rsplit('/').next().unwrap_or(&self.path);
        last.strip_suffix(".pipe").unwrap_or(last)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub name: Ident,
    pub params: Vec<Param>,
    pub envs: Vec<EnvDecl>,
    pub stages: Vec<Stage>,
    pub handlers: Vec<Handler>,
    pub asserts: Vec<Assert>,
    pub attrs: Vec<Attr>,
    pub blocks: Vec<Block>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: TypeExpr,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub ty: Type,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EnvDecl {
    pub name: Ident,
    pub body: Body,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: Ident,
    pub entries: Vec<StageEntry>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlerKind {
    Failure,
    Success,
    Always,
}

impl HandlerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Failure => "failure",
            HandlerKind::Success => "success",
            HandlerKind::Always => "always",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Handler {
    pub kind: HandlerKind,
    pub kind_span: Span,
    pub entries: Vec<StageEntry>,
    pub span: Span,
}

/// `assert NAME { from = ...  to = ...  through = [...]  message = "..." }`:
/// a property of the lowered DAG that `pipe check` proves. Its attributes are
/// step selectors, read by `crate::asserts`.
#[derive(Clone, Debug, PartialEq)]
pub struct Assert {
    pub name: Ident,
    pub body: Body,
    pub span: Span,
}

/// What a stage (or a loop or handler body) holds.
#[derive(Clone, Debug, PartialEq)]
pub enum StageEntry {
    Step(Step),
    Gate(Gate),
    Chaos(Chaos),
    For(ForLoop),
    Attr(Attr),
    Block(Block),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: Name,
    /// `step x = docker.build { ... }`: the template it instantiates.
    pub uses: Option<Path>,
    pub body: Body,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub name: Name,
    pub kind: Path,
    pub body: Body,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chaos {
    pub name: Name,
    pub body: Body,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForLoop {
    /// `for x in list` binds one name; `for k, v in map` binds two.
    pub vars: Vec<Ident>,
    pub iter: Expr,
    pub entries: Vec<StageEntry>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Body,
    /// The `##` comment lines right above the definition.
    pub doc: String,
    pub span: Span,
}

/// A dotted name such as `docker.build`.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub segments: Vec<Ident>,
    pub span: Span,
}

impl Path {
    pub fn dotted(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// The name of a step, gate or chaos block: an identifier or a string that may
/// interpolate loop variables (`"image-${svc}"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    pub expr: Expr,
    pub span: Span,
}

impl Name {
    /// The name when it needs no evaluation.
    pub fn literal(&self) -> Option<&str> {
        match &self.expr.kind {
            ExprKind::Str(parts) => match parts.as_slice() {
                [] => Some(""),
                [StrPart::Lit(s)] => Some(s),
                _ => None,
            },
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Body {
    pub attrs: Vec<Attr>,
    pub blocks: Vec<Block>,
    pub span: Span,
}

impl Body {
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.key.name == key)
    }

    pub fn block(&self, key: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.key.name == key)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub key: Ident,
    pub label: Option<Name>,
    pub body: Body,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Milliseconds.
    Duration(u64),
    Str(Vec<StrPart>),
    List(Vec<Expr>),
    Map(Vec<(Ident, Expr)>),
    Ident(String),
    Field(Box<Expr>, Ident),
    Index(Box<Expr>, Box<Expr>),
    Call(Ident, Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A value substituted during lowering (a parameter, a loop variable).
    Value(Value),
}

#[derive(Clone, Debug, PartialEq)]
pub enum StrPart {
    Lit(String),
    Interp(Expr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Coalesce,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NotMatch,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Coalesce => "??",
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Match => "=~",
            BinOp::NotMatch => "!~",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }

    /// Binding strength, loosest first; used by the formatter to place parentheses.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Coalesce => 1,
            BinOp::Or => 2,
            BinOp::And => 3,
            BinOp::Eq
            | BinOp::Ne
            | BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::Match
            | BinOp::NotMatch => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 6,
        }
    }
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Self {
        Self { kind, span }
    }

    /// `a.b.c` as segments, when the expression is a plain dotted name.
    pub fn as_path(&self) -> Option<Vec<&str>> {
        match &self.kind {
            ExprKind::Ident(n) => Some(vec![n.as_str()]),
            ExprKind::Field(base, f) => {
                let mut p = base.as_path()?;
                p.push(&f.name);
                Some(p)
            }
            _ => None,
        }
    }

    /// Calls `f` on this expression and every sub-expression, parents first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Str(parts) => {
                for p in parts {
                    if let StrPart::Interp(e) = p {
                        e.walk(f);
                    }
                }
            }
            ExprKind::List(items) => items.iter().for_each(|e| e.walk(f)),
            ExprKind::Map(entries) => entries.iter().for_each(|(_, e)| e.walk(f)),
            ExprKind::Field(b, _) => b.walk(f),
            ExprKind::Index(b, i) => {
                b.walk(f);
                i.walk(f);
            }
            ExprKind::Call(_, args) => args.iter().for_each(|e| e.walk(f)),
            ExprKind::Unary(_, e) => e.walk(f),
            ExprKind::Binary(_, l, r) => {
                l.walk(f);
                r.walk(f);
            }
            ExprKind::Null
            | ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Duration(_)
            | ExprKind::Ident(_)
            | ExprKind::Value(_) => {}
        }
    }
}
