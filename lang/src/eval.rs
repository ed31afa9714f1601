//! Expression evaluation. [`fold`] evaluates what is known at plan time and
//! leaves the rest as a residual expression (deferred until the runtime knows
//! step outputs, env files and secrets); [`eval`] evaluates fully.

use std::cell::RefCell;
use std::collections::HashMap;

use indexmap::IndexMap;

use crate::ast::{BinOp, Expr, ExprKind, StrPart, UnOp};
use crate::diagnostic::Diagnostic;
use crate::functions;
use crate::span::Span;
use crate::value::Value;

/// What a [`Scope`] knows about a name.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// The value at the root name, after `used` of the given keys.
    Found(Value, usize),
    /// Stands for this expression (template arguments substitute unevaluated).
    Expr(Expr),
    /// Known to exist, but only at run time.
    Deferred,
    Missing,
}

/// Names visible to an expression.
pub trait Scope {
    /// Resolves `root` followed by the constant field and index `keys` of the
    /// access chain (`steps.build.outputs.digest` asks for `steps` with keys
    /// `["build", "outputs", "digest"]`); a scope may consume as many keys as it likes.
    fn lookup(&self, root: &str, keys: &[Value]) -> Lookup;

    /// Functions with effects (`now()`, `env()`); `None` means "not known here".
    fn call_impure(&self, _name: &str, _args: &[Value]) -> Option<Result<Value, String>> {
        None
    }

    /// The names visible here, for "did you mean" help.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An evaluation error with the span of the sub-expression at fault.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalError {
    pub message: String,
    pub span: Span,
    pub help: Option<String>,
}

impl EvalError {
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        Self {
            message: message.into(),
            span,
            help: None,
        }
    }

    #[must_use]
    pub fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }

    pub fn into_diagnostic(self) -> Diagnostic {
        let d = Diagnostic::error("pipe::eval", self.message, self.span, "in this expression");
        match self.help {
            Some(h) => d.with_help(h),
            None => d,
        }
    }
}

/// The result of folding: a value, or what is left to evaluate at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Folded {
    Value(Value),
    Residual(Expr),
}

impl Folded {
    pub fn into_expr(self, span: Span) -> Expr {
        match self {
            Folded::Value(v) => Expr::new(ExprKind::Value(v), span),
            Folded::Residual(e) => e,
        }
    }

    pub fn value(&self) -> Option<&Value> {
        match self {
            Folded::Value(v) => Some(v),
            Folded::Residual(_) => None,
        }
    }
}

/// Evaluates `expr` completely; a deferred name is an error.
pub fn eval(expr: &Expr, scope: &dyn Scope) -> Result<Value, EvalError> {
    match fold(expr, scope)? {
        Folded::Value(v) => Ok(v),
        Folded::Residual(e) => Err(first_deferred(&e, scope)),
    }
}

fn first_deferred(e: &Expr, scope: &dyn Scope) -> EvalError {
    let mut found = None;
    e.walk(&mut |sub| {
        if found.is_none() {
            if let ExprKind::Ident(n) = &sub.kind {
                found = Some(EvalError::new(
                    format!("`{n}` is not known until the pipeline runs"),
                    sub.span,
                ));
            } else if let ExprKind::Call(f, _) = &sub.kind {
                if scope.call_impure(&f.name, &[]).is_none() && functions::is_impure(&f.name) {
                    found = Some(EvalError::new(
                        format!("`{}()` is only evaluated when the pipeline runs", f.name),
                        sub.span,
                    ));
                }
            }
        }
    });
    found.unwrap_or_else(|| {
        EvalError::new("this value is not known until the pipeline runs", e.span)
    })
}

/// Folds what can be evaluated now.
pub fn fold(expr: &Expr, scope: &dyn Scope) -> Result<Folded, EvalError> {
    let span = expr.span;
    let v = match &expr.kind {
        ExprKind::Null => Value::Null,
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Int(i) => Value::Int(*i),
        ExprKind::Float(f) => Value::Float(*f),
        ExprKind::Duration(d) => Value::Duration(*d),
        ExprKind::Value(v) => v.clone(),
        ExprKind::Str(parts) => {
            let mut out = String::new();
            let mut residual: Option<Vec<StrPart>> = None;
            for p in parts {
                match p {
                    StrPart::Lit(s) => match &mut residual {
                        Some(r) => r.push(StrPart::Lit(s.clone())),
                        None => out.push_str(s),
                    },
                    StrPart::Interp(e) => match fold(e, scope)? {
                        Folded::Value(v) => {
                            let s = interpolate(&v, e.span)?;
                            match &mut residual {
                                Some(r) => r.push(StrPart::Lit(s)),
                                None => out.push_str(&s),
                            }
                        }
                        Folded::Residual(r) => {
                            let list = residual.get_or_insert_with(|| {
                                if out.is_empty() {
                                    vec![]
                                } else {
                                    vec![StrPart::Lit(std::mem::take(&mut out))]
                                }
                            });
                            list.push(StrPart::Interp(r));
                        }
                    },
                }
            }
            if let Some(r) = residual {
                return Ok(Folded::Residual(Expr::new(
                    ExprKind::Str(merge_lits(r)),
                    span,
                )));
            }
            Value::Str(out)
        }
        ExprKind::List(items) => {
            let folded: Vec<Folded> = items
                .iter()
                .map(|e| fold(e, scope))
                .collect::<Result<_, _>>()?;
            if folded.iter().all(|f| matches!(f, Folded::Value(_))) {
                Value::List(
                    folded
                        .into_iter()
                        .filter_map(|f| {
                            if let Folded::Value(v) = f {
                                Some(v)
                            } else {
                                None
                            }
                        })
                        .collect(),
                )
            } else {
                let items = folded
                    .into_iter()
                    .zip(items)
                    .map(|(f, e)| f.into_expr(e.span))
                    .collect();
                return Ok(Folded::Residual(Expr::new(ExprKind::List(items), span)));
            }
        }
        ExprKind::Map(entries) => {
            let folded: Vec<Folded> = entries
                .iter()
                .map(|(_, e)| fold(e, scope))
                .collect::<Result<_, _>>()?;
            if folded.iter().all(|f| matches!(f, Folded::Value(_))) {
                let mut m = IndexMap::new();
                for ((k, _), f) in entries.iter().zip(folded) {
                    if let Folded::Value(v) = f {
                        m.insert(k.name.clone(), v);
                    }
                }
                Value::Map(m)
            } else {
                let entries = entries
                    .iter()
                    .zip(folded)
                    .map(|((k, e), f)| (k.clone(), f.into_expr(e.span)))
                    .collect();
                return Ok(Folded::Residual(Expr::new(ExprKind::Map(entries), span)));
            }
        }
        ExprKind::Ident(_) | ExprKind::Field(..) | ExprKind::Index(..) => {
            return fold_access(expr, scope)
        }
        ExprKind::Call(name, args) => {
            let folded: Vec<Folded> = args
                .iter()
                .map(|e| fold(e, scope))
                .collect::<Result<_, _>>()?;
            let residual = |folded: Vec<Folded>| {
                let args = folded
                    .into_iter()
                    .zip(args)
                    .map(|(f, e)| f.into_expr(e.span))
                    .collect();
                Ok(Folded::Residual(Expr::new(
                    ExprKind::Call(name.clone(), args),
                    span,
                )))
            };
            if folded.iter().any(|f| matches!(f, Folded::Residual(_))) {
                return residual(folded);
            }
            let values: Vec<Value> = folded.iter().filter_map(|f| f.value().cloned()).collect();
            if functions::is_impure(&name.name) {
                return match scope.call_impure(&name.name, &values) {
                    Some(r) => r.map(Folded::Value).map_err(|m| EvalError::new(m, span)),
                    None => residual(folded),
                };
            }
            functions::call(name, &values, args, span)?
        }
        ExprKind::Unary(op, e) => match fold(e, scope)? {
            Folded::Value(v) => unary(*op, v, span)?,
            Folded::Residual(r) => {
                return Ok(Folded::Residual(Expr::new(
                    ExprKind::Unary(*op, Box::new(r)),
                    span,
                )))
            }
        },
        ExprKind::Binary(op, l, r) => return fold_binary(*op, l, r, span, scope),
    };
    Ok(Folded::Value(v))
}

fn merge_lits(parts: Vec<StrPart>) -> Vec<StrPart> {
    let mut out: Vec<StrPart> = Vec::with_capacity(parts.len());
    for p in parts {
        match (out.last_mut(), p) {
            (Some(StrPart::Lit(a)), StrPart::Lit(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

/// The text a value contributes to an interpolated string.
pub fn interpolate(v: &Value, span: Span) -> Result<String, EvalError> {
    match v {
        Value::Map(_) => Err(
            EvalError::new("a map cannot be interpolated into a string", span)
                .help("pick a field (`m.key`) or use `json(m)`"),
        ),
        Value::List(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| interpolate(i, span))
                .collect::<Result<_, _>>()?;
            Ok(parts.join(" "))
        }
        v => Ok(v.to_string()),
    }
}

/// Splits `a.b["c"].d` into a root name and its keys, folding index expressions.
/// A name and the keys applied to it: `steps.build["outputs"]`.
type Chain<'e> = (&'e str, Span, Vec<(Value, Span)>);

/// Returns `None` when the chain is not rooted at a name or a key is deferred.
fn access_chain<'e>(expr: &'e Expr, scope: &dyn Scope) -> Result<Option<Chain<'e>>, EvalError> {
    match &expr.kind {
        ExprKind::Ident(n) => Ok(Some((n, expr.span, Vec::new()))),
        ExprKind::Field(base, f) => Ok(access_chain(base, scope)?.map(|(r, s, mut keys)| {
            keys.push((Value::Str(f.name.clone()), expr.span));
            (r, s, keys)
        })),
        ExprKind::Index(base, idx) => {
            let Some((r, s, mut keys)) = access_chain(base, scope)? else {
                return Ok(None);
            };
            match fold(idx, scope)? {
                Folded::Value(v) => {
                    keys.push((v, expr.span));
                    Ok(Some((r, s, keys)))
                }
                Folded::Residual(_) => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

fn fold_access(expr: &Expr, scope: &dyn Scope) -> Result<Folded, EvalError> {
    if let Some((root, root_span, keys)) = access_chain(expr, scope)? {
        let key_values: Vec<Value> = keys.iter().map(|(k, _)| k.clone()).collect();
        return match scope.lookup(root, &key_values) {
            Lookup::Found(mut v, used) => {
                for (k, s) in keys.iter().skip(used) {
                    v = index(&v, k, *s)?;
                }
                Ok(Folded::Value(v))
            }
            Lookup::Expr(e) => {
                // Substitute and re-apply the access chain on top.
                let mut acc = e;
                for (k, s) in &keys {
                    acc = Expr::new(
                        ExprKind::Index(
                            Box::new(acc),
                            Box::new(Expr::new(ExprKind::Value(k.clone()), *s)),
                        ),
                        *s,
                    );
                }
                Ok(Folded::Residual(acc))
            }
            Lookup::Deferred => {
                // Keep the expression, with constant index keys folded in.
                Ok(Folded::Residual(rebuild_chain(root, root_span, &keys)))
            }
            Lookup::Missing => {
                let mut e = EvalError::new(format!("unknown name `{root}`"), root_span);
                let names = scope.names();
                if let Some(near) =
                    crate::diagnostic::did_you_mean(root, names.iter().map(String::as_str))
                {
                    e = e.help(format!("did you mean `{near}`?"));
                }
                Err(e)
            }
        };
    }
    // The chain has a deferred index or a non-name base: fold the parts.
    match &expr.kind {
        ExprKind::Field(base, f) => match fold(base, scope)? {
            Folded::Value(v) => Ok(Folded::Value(index(
                &v,
                &Value::Str(f.name.clone()),
                expr.span,
            )?)),
            Folded::Residual(b) => Ok(Folded::Residual(Expr::new(
                ExprKind::Field(Box::new(b), f.clone()),
                expr.span,
            ))),
        },
        ExprKind::Index(base, i) => {
            let b = fold(base, scope)?;
            let i2 = fold(i, scope)?;
            match (b, i2) {
                (Folded::Value(b), Folded::Value(k)) => {
                    Ok(Folded::Value(index(&b, &k, expr.span)?))
                }
                (b, k) => Ok(Folded::Residual(Expr::new(
                    ExprKind::Index(
                        Box::new(b.into_expr(base.span)),
                        Box::new(k.into_expr(i.span)),
                    ),
                    expr.span,
                ))),
            }
        }
        _ => Err(EvalError::new("not an access expression", expr.span)),
    }
}

fn rebuild_chain(root: &str, root_span: Span, keys: &[(Value, Span)]) -> Expr {
    let mut acc = Expr::new(ExprKind::Ident(root.to_string()), root_span);
    for (k, s) in keys {
        acc = match k {
            Value::Str(name) if is_ident(name) => Expr::new(
                ExprKind::Field(
                    Box::new(acc),
                    crate::ast::Ident {
                        name: name.clone(),
                        span: *s,
                    },
                ),
                *s,
            ),
            _ => Expr::new(
                ExprKind::Index(
                    Box::new(acc),
                    Box::new(Expr::new(ExprKind::Value(k.clone()), *s)),
                ),
                *s,
            ),
        };
    }
    acc
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// `value[key]` / `value.key`.
pub fn index(v: &Value, key: &Value, span: Span) -> Result<Value, EvalError> {
    match (v, key) {
        (Value::Map(m), Value::Str(k)) => m.get(k).cloned().ok_or_else(|| {
            let mut e = EvalError::new(format!("no key `{k}` in this map"), span);
            if let Some(near) = crate::diagnostic::did_you_mean(k, m.keys().map(String::as_str)) {
                e = e.help(format!("did you mean `{near}`?"));
            } else if !m.is_empty() {
                let keys: Vec<&str> = m.keys().map(String::as_str).take(8).collect();
                e = e.help(format!("it has: {}", keys.join(", ")));
            }
            e
        }),
        (Value::List(l), Value::Int(i)) => {
            let idx = if *i < 0 { l.len() as i64 + i } else { *i };
            usize::try_from(idx)
                .ok()
                .and_then(|i| l.get(i))
                .cloned()
                .ok_or_else(|| {
                    EvalError::new(
                        format!("index {i} is out of range for a list of {}", l.len()),
                        span,
                    )
                })
        }
        (Value::Null, _) => {
            Err(EvalError::new("cannot index null", span).help("use `??` to give a default"))
        }
        (v, k) => Err(EvalError::new(
            format!("cannot index a {} with a {}", v.type_name(), k.type_name()),
            span,
        )),
    }
}

fn unary(op: UnOp, v: Value, span: Span) -> Result<Value, EvalError> {
    match (op, v) {
        (UnOp::Not, v) => Ok(Value::Bool(!v.truthy())),
        (UnOp::Neg, Value::Int(i)) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| EvalError::new("integer overflow", span)),
        (UnOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
        (UnOp::Neg, v) => Err(EvalError::new(
            format!("cannot negate a {}", v.type_name()),
            span,
        )),
    }
}

fn fold_binary(
    op: BinOp,
    l: &Expr,
    r: &Expr,
    span: Span,
    scope: &dyn Scope,
) -> Result<Folded, EvalError> {
    let lf = fold(l, scope)?;
    // Short-circuit forms decide on the left operand alone when they can.
    match (op, &lf) {
        (BinOp::Coalesce, Folded::Value(v)) if *v != Value::Null => return Ok(lf),
        (BinOp::Coalesce, Folded::Value(_)) => return fold(r, scope),
        (BinOp::And, Folded::Value(v)) if !v.truthy() => {
            return Ok(Folded::Value(Value::Bool(false)))
        }
        (BinOp::Or, Folded::Value(v)) if v.truthy() => return Ok(Folded::Value(Value::Bool(true))),
        (BinOp::And | BinOp::Or, Folded::Value(_)) => {
            return Ok(match fold(r, scope)? {
                Folded::Value(v) => Folded::Value(Value::Bool(v.truthy())),
                res @ Folded::Residual(_) => res,
            })
        }
        _ => {}
    }
    let rf = fold(r, scope)?;
    match (lf, rf) {
        (Folded::Value(a), Folded::Value(b)) => {
            binary(op, a, b, l.span, r.span, span).map(Folded::Value)
        }
        (a, b) => Ok(Folded::Residual(Expr::new(
            ExprKind::Binary(
                op,
                Box::new(a.into_expr(l.span)),
                Box::new(b.into_expr(r.span)),
            ),
            span,
        ))),
    }
}

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

/// Compiles (and caches) a regular expression for `=~`.
pub fn regex(pattern: &str, span: Span) -> Result<regex::Regex, EvalError> {
    REGEX_CACHE.with(|c| {
        if let Some(r) = c.borrow().get(pattern) {
            return Ok(r.clone());
        }
        let r = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| EvalError::new(format!("invalid regular expression: {e}"), span))?;
        c.borrow_mut().insert(pattern.to_string(), r.clone());
        Ok(r)
    })
}

fn binary(
    op: BinOp,
    a: Value,
    b: Value,
    ls: Span,
    rs: Span,
    span: Span,
) -> Result<Value, EvalError> {
    use Value::{Bool, Duration, Float, Int, List, Map, Str};
    let mismatch = |a: &Value, b: &Value| {
        EvalError::new(
            format!(
                "cannot apply `{}` to {} and {}",
                op.symbol(),
                a.type_name(),
                b.type_name()
            ),
            span,
        )
    };
    let overflow = || EvalError::new("arithmetic overflow", span);
    Ok(match op {
        BinOp::Coalesce => {
            if a == Value::Null {
                b
            } else {
                a
            }
        }
        BinOp::And => Bool(a.truthy() && b.truthy()),
        BinOp::Or => Bool(a.truthy() || b.truthy()),
        BinOp::Eq => Bool(equal(&a, &b)),
        BinOp::Ne => Bool(!equal(&a, &b)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = match (&a, &b) {
                (Int(x), Int(y)) => x.cmp(y),
                (Duration(x), Duration(y)) => x.cmp(y),
                (Str(x), Str(y)) => x.cmp(y),
                (Int(_) | Float(_), Int(_) | Float(_)) => {
                    let (x, y) = (as_f64(&a), as_f64(&b));
                    x.partial_cmp(&y)
                        .ok_or_else(|| EvalError::new("cannot compare NaN", span))?
                }
                _ => return Err(mismatch(&a, &b)),
            };
            Bool(match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        BinOp::Match | BinOp::NotMatch => {
            let text = match &a {
                Str(s) => s.clone(),
                Value::Null => String::new(),
                v => {
                    return Err(EvalError::new(
                        format!(
                            "`{}` needs a string on the left, found {}",
                            op.symbol(),
                            v.type_name()
                        ),
                        ls,
                    ))
                }
            };
            let Str(pattern) = &b else {
                return Err(EvalError::new(
                    format!(
                        "`{}` needs a regular expression string on the right",
                        op.symbol()
                    ),
                    rs,
                ));
            };
            let m = regex(pattern, rs)?.is_match(&text);
            Bool(if op == BinOp::Match { m } else { !m })
        }
        BinOp::Add => match (a, b) {
            (Int(x), Int(y)) => Int(x.checked_add(y).ok_or_else(overflow)?),
            (Duration(x), Duration(y)) => Duration(x.checked_add(y).ok_or_else(overflow)?),
            (Str(x), Str(y)) => Str(x + &y),
            (List(mut x), List(y)) => {
                x.extend(y);
                List(x)
            }
            (Map(mut x), Map(y)) => {
                x.extend(y);
                Map(x)
            }
            (a @ (Int(_) | Float(_)), b @ (Int(_) | Float(_))) => Float(as_f64(&a) + as_f64(&b)),
            (a, b) => return Err(mismatch(&a, &b)),
        },
        BinOp::Sub => match (a, b) {
            (Int(x), Int(y)) => Int(x.checked_sub(y).ok_or_else(overflow)?),
            (Duration(x), Duration(y)) => Duration(x.saturating_sub(y)),
            (a @ (Int(_) | Float(_)), b @ (Int(_) | Float(_))) => Float(as_f64(&a) - as_f64(&b)),
            (a, b) => return Err(mismatch(&a, &b)),
        },
        BinOp::Mul => match (a, b) {
            (Int(x), Int(y)) => Int(x.checked_mul(y).ok_or_else(overflow)?),
            (Duration(d), Int(n)) | (Int(n), Duration(d)) => Duration(
                d.checked_mul(u64::try_from(n).map_err(|_| overflow())?)
                    .ok_or_else(overflow)?,
            ),
            (a @ (Int(_) | Float(_)), b @ (Int(_) | Float(_))) => Float(as_f64(&a) * as_f64(&b)),
            (a, b) => return Err(mismatch(&a, &b)),
        },
        BinOp::Div | BinOp::Rem => match (a, b) {
            (_, Int(0)) => return Err(EvalError::new("division by zero", rs)),
            (Int(x), Int(y)) => Int(if op == BinOp::Div {
                x.checked_div(y)
            } else {
                x.checked_rem(y)
            }
            .ok_or_else(overflow)?),
            (Duration(d), Int(n)) if n > 0 => Duration(if op == BinOp::Div {
                d / n as u64
            } else {
                d % n as u64
            }),
            (a @ (Int(_) | Float(_)), b @ (Int(_) | Float(_))) => {
                let (x, y) = (as_f64(&a), as_f64(&b));
                Float(if op == BinOp::Div { x / y } else { x % y })
            }
            (a, b) => return Err(mismatch(&a, &b)),
        },
    })
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            (as_f64(a) - as_f64(b)).abs() < f64::EPSILON
        }
        _ => a == b,
    }
}

/// A scope that knows no names: used to fold constants.
pub struct NoScope;

impl Scope for NoScope {
    fn lookup(&self, _root: &str, _keys: &[Value]) -> Lookup {
        Lookup::Missing
    }
}

/// A scope over a flat map of names, for tests and simple callers.
impl Scope for IndexMap<String, Value> {
    fn lookup(&self, root: &str, _keys: &[Value]) -> Lookup {
        self.get(root)
            .map_or(Lookup::Missing, |v| Lookup::Found(v.clone(), 0))
    }
}
