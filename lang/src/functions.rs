//! Built-in functions callable from expressions. Pure ones fold at plan time;
//! impure ones (`now()`, `env()`) are answered by the scope at run time.

use indexmap::IndexMap;

use crate::ast::{Expr, Ident};
use crate::eval::{interpolate, regex, EvalError};
use crate::span::Span;
use crate::value::{format_duration, parse_duration, Value};

/// Every built-in: name, signature, what it does. Shown by `pipe doc functions`
/// and used for "did you mean".
pub const FUNCTIONS: &[(&str, &str, &str)] = &[
    (
        "now",
        "now() -> string",
        "the current UTC time in RFC 3339, read when the step starts",
    ),
    (
        "env",
        "env(name, default?) -> string",
        "a variable of pipe's own process environment, read at run time",
    ),
    (
        "len",
        "len(list|map|string) -> int",
        "number of items or characters",
    ),
    (
        "contains",
        "contains(list|map|string, x) -> bool",
        "membership, key presence or substring",
    ),
    (
        "default",
        "default(x, fallback)",
        "`x` unless it is null or empty",
    ),
    (
        "join",
        "join(list, sep) -> string",
        "joins items with a separator",
    ),
    (
        "split",
        "split(string, sep) -> list<string>",
        "splits on a separator",
    ),
    ("upper", "upper(string) -> string", "upper case"),
    ("lower", "lower(string) -> string", "lower case"),
    (
        "trim",
        "trim(string) -> string",
        "strips surrounding whitespace",
    ),
    (
        "replace",
        "replace(string, from, to) -> string",
        "replaces every occurrence",
    ),
    (
        "starts_with",
        "starts_with(string, prefix) -> bool",
        "prefix test",
    ),
    (
        "ends_with",
        "ends_with(string, suffix) -> bool",
        "suffix test",
    ),
    (
        "matches",
        "matches(string, regex) -> bool",
        "regular-expression test, like `=~`",
    ),
    (
        "keys",
        "keys(map) -> list<string>",
        "the keys of a map, in order",
    ),
    (
        "values",
        "values(map) -> list",
        "the values of a map, in order",
    ),
    ("range", "range(n) -> list<int>", "0, 1, ..., n-1"),
    ("string", "string(x) -> string", "converts to text"),
    (
        "int",
        "int(x) -> int",
        "converts a string or number to an integer",
    ),
    (
        "duration",
        "duration(string) -> duration",
        "parses `30s`, `1h30m`",
    ),
    ("json", "json(x) -> string", "encodes as JSON"),
    (
        "fixed",
        "fixed(delay) -> backoff",
        "retry backoff: the same delay every time",
    ),
    (
        "exponential",
        "exponential(base, max) -> backoff",
        "retry backoff: base, 2x base, ... capped at max, with full jitter",
    ),
    (
        "linear",
        "linear(step, max) -> backoff",
        "retry backoff: step, 2x step, ... capped at max",
    ),
];

pub fn is_impure(name: &str) -> bool {
    matches!(name, "now" | "env")
}

pub fn exists(name: &str) -> bool {
    FUNCTIONS.iter().any(|(n, _, _)| *n == name)
}

fn arity(
    name: &Ident,
    args: &[Value],
    min: usize,
    max: usize,
    span: Span,
) -> Result<(), EvalError> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        let sig = FUNCTIONS
            .iter()
            .find(|f| f.0 == name.name)
            .map_or("", |f| f.1);
        return Err(EvalError::new(
            format!(
                "`{}` takes {want} argument(s), found {}",
                name.name,
                args.len()
            ),
            span,
        )
        .help(format!("usage: {sig}")));
    }
    Ok(())
}

fn str_arg<'a>(f: &str, v: &'a Value, e: Option<&Expr>, span: Span) -> Result<&'a str, EvalError> {
    v.as_str().ok_or_else(|| {
        EvalError::new(
            format!("`{f}` expects a string here, found {}", v.type_name()),
            e.map_or(span, |e| e.span),
        )
    })
}

fn dur_arg(f: &str, v: &Value, e: Option<&Expr>, span: Span) -> Result<u64, EvalError> {
    match v {
        Value::Duration(d) => Ok(*d),
        Value::Str(s) => parse_duration(s)
            .ok_or_else(|| EvalError::new(format!("`{s}` is not a duration"), span)),
        v => Err(EvalError::new(
            format!("`{f}` expects a duration here, found {}", v.type_name()),
            e.map_or(span, |e| e.span),
        )),
    }
}

fn backoff(kind: &str, pairs: &[(&str, Value)]) -> Value {
    let mut m = IndexMap::new();
    m.insert("kind".to_string(), Value::Str(kind.to_string()));
    for (k, v) in pairs {
        m.insert((*k).to_string(), v.clone());
    }
    Value::Map(m)
}

/// Calls a pure built-in on evaluated arguments.
pub fn call(name: &Ident, args: &[Value], exprs: &[Expr], span: Span) -> Result<Value, EvalError> {
    let f = name.name.as_str();
    let arg_expr = |i: usize| exprs.get(i);
    match f {
        "len" => {
            arity(name, args, 1, 1, span)?;
            Ok(Value::Int(match &args[0] {
                Value::List(l) => l.len() as i64,
                Value::Map(m) => m.len() as i64,
                Value::Str(s) => s.chars().count() as i64,
                Value::Null => 0,
                v => {
                    return Err(EvalError::new(
                        format!("`len` of a {}", v.type_name()),
                        span,
                    ))
                }
            }))
        }
        "contains" => {
            arity(name, args, 2, 2, span)?;
            Ok(Value::Bool(match (&args[0], &args[1]) {
                (Value::List(l), x) => l.contains(x),
                (Value::Map(m), Value::Str(k)) => m.contains_key(k),
                (Value::Str(s), Value::Str(sub)) => s.contains(sub.as_str()),
                (Value::Null, _) => false,
                (a, b) => {
                    return Err(EvalError::new(
                        format!("`contains` of a {} in a {}", b.type_name(), a.type_name()),
                        span,
                    ))
                }
            }))
        }
        "default" => {
            arity(name, args, 2, 2, span)?;
            let empty = match &args[0] {
                Value::Null => true,
                Value::Str(s) => s.is_empty(),
                Value::List(l) => l.is_empty(),
                Value::Map(m) => m.is_empty(),
                _ => false,
            };
            Ok(if empty {
                args[1].clone()
            } else {
                args[0].clone()
            })
        }
        "join" => {
            arity(name, args, 1, 2, span)?;
            let sep = match args.get(1) {
                Some(v) => str_arg(f, v, arg_expr(1), span)?,
                None => ",",
            };
            match &args[0] {
                Value::List(l) => {
                    let parts: Vec<String> = l
                        .iter()
                        .map(|v| interpolate(v, span))
                        .collect::<Result<_, _>>()?;
                    Ok(Value::Str(parts.join(sep)))
                }
                v => Err(EvalError::new(
                    format!("`join` expects a list, found {}", v.type_name()),
                    span,
                )),
            }
        }
        "split" => {
            arity(name, args, 2, 2, span)?;
            let s = str_arg(f, &args[0], arg_expr(0), span)?;
            let sep = str_arg(f, &args[1], arg_expr(1), span)?;
            if s.is_empty() {
                return Ok(Value::List(vec![]));
            }
            Ok(Value::List(
                s.split(sep).map(|p| Value::Str(p.to_string())).collect(),
            ))
        }
        "upper" | "lower" | "trim" => {
            arity(name, args, 1, 1, span)?;
            let s = str_arg(f, &args[0], arg_expr(0), span)?;
            Ok(Value::Str(match f {
                "upper" => s.to_uppercase(),
                "lower" => s.to_lowercase(),
                _ => s.trim().to_string(),
            }))
        }
        "replace" => {
            arity(name, args, 3, 3, span)?;
            let s = str_arg(f, &args[0], arg_expr(0), span)?;
            let from = str_arg(f, &args[1], arg_expr(1), span)?;
            let to = str_arg(f, &args[2], arg_expr(2), span)?;
            if from.is_empty() {
                return Err(EvalError::new("`replace` needs a non-empty pattern", span));
            }
            Ok(Value::Str(s.replace(from, to)))
        }
        "starts_with" | "ends_with" => {
            arity(name, args, 2, 2, span)?;
            let s = str_arg(f, &args[0], arg_expr(0), span)?;
            let p = str_arg(f, &args[1], arg_expr(1), span)?;
            Ok(Value::Bool(if f == "starts_with" {
                s.starts_with(p)
            } else {
                s.ends_with(p)
            }))
        }
        "matches" => {
            arity(name, args, 2, 2, span)?;
            let s = str_arg(f, &args[0], arg_expr(0), span)?;
            let p = str_arg(f, &args[1], arg_expr(1), span)?;
            Ok(Value::Bool(
                regex(p, arg_expr(1).map_or(span, |e| e.span))?.is_match(s),
            ))
        }
        "keys" | "values" => {
            arity(name, args, 1, 1, span)?;
            match &args[0] {
                Value::Map(m) => Ok(Value::List(if f == "keys" {
                    m.keys().map(|k| Value::Str(k.clone())).collect()
                } else {
                    m.values().cloned().collect()
                })),
                v => Err(EvalError::new(
                    format!("`{f}` expects a map, found {}", v.type_name()),
                    span,
                )),
            }
        }
        "range" => {
            arity(name, args, 1, 1, span)?;
            match &args[0] {
                Value::Int(n) if (0..=100_000).contains(n) => {
                    Ok(Value::List((0..*n).map(Value::Int).collect()))
                }
                Value::Int(n) => Err(EvalError::new(
                    format!("`range({n})` is out of bounds (0 to 100000)"),
                    span,
                )),
                v => Err(EvalError::new(
                    format!("`range` expects an int, found {}", v.type_name()),
                    span,
                )),
            }
        }
        "string" => {
            arity(name, args, 1, 1, span)?;
            Ok(Value::Str(match &args[0] {
                Value::Duration(d) => format_duration(*d),
                v @ (Value::List(_) | Value::Map(_)) => v.to_json().to_string(),
                v => v.to_string(),
            }))
        }
        "int" => {
            arity(name, args, 1, 1, span)?;
            match &args[0] {
                Value::Int(i) => Ok(Value::Int(*i)),
                Value::Float(x) => Ok(Value::Int(x.trunc() as i64)),
                Value::Str(s) => s
                    .trim()
                    .parse()
                    .map(Value::Int)
                    .map_err(|_| EvalError::new(format!("`{s}` is not an integer"), span)),
                Value::Bool(b) => Ok(Value::Int(i64::from(*b))),
                v => Err(EvalError::new(
                    format!("cannot convert a {} to int", v.type_name()),
                    span,
                )),
            }
        }
        "duration" => {
            arity(name, args, 1, 1, span)?;
            dur_arg(f, &args[0], arg_expr(0), span).map(Value::Duration)
        }
        "json" => {
            arity(name, args, 1, 1, span)?;
            Ok(Value::Str(args[0].to_json().to_string()))
        }
        "fixed" => {
            arity(name, args, 1, 1, span)?;
            let d = dur_arg(f, &args[0], arg_expr(0), span)?;
            Ok(backoff("fixed", &[("delay", Value::Duration(d))]))
        }
        "exponential" | "linear" => {
            arity(name, args, 1, 2, span)?;
            let base = dur_arg(f, &args[0], arg_expr(0), span)?;
            let max = match args.get(1) {
                Some(v) => dur_arg(f, v, arg_expr(1), span)?,
                None => base.saturating_mul(32),
            };
            if max < base {
                return Err(EvalError::new(
                    format!(
                        "the maximum delay {} is below the base {}",
                        format_duration(max),
                        format_duration(base)
                    ),
                    span,
                ));
            }
            Ok(backoff(
                f,
                &[
                    ("base", Value::Duration(base)),
                    ("max", Value::Duration(max)),
                ],
            ))
        }
        _ => {
            let mut e = EvalError::new(format!("unknown function `{f}`"), name.span);
            if let Some(near) = crate::diagnostic::did_you_mean(f, FUNCTIONS.iter().map(|f| f.0)) {
                e = e.help(format!("did you mean `{near}()`?"));
            }
            Err(e)
        }
    }
}
