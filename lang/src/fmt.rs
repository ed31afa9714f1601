//! Printing expressions back as source text (used for deferred values in
//! graphs and JSON). The whole-file formatter builds on this.

use crate::ast::{BinOp, Expr, ExprKind, StrPart, UnOp};
use crate::value::{format_duration, Value};

/// The canonical source text of an expression.
pub fn expr_to_string(e: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, e, 0);
    out
}

fn write_expr(out: &mut String, e: &Expr, parent_prec: u8) {
    match &e.kind {
        ExprKind::Null => out.push_str("null"),
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Int(i) => out.push_str(&i.to_string()),
        ExprKind::Float(f) => out.push_str(&float_text(*f)),
        ExprKind::Duration(d) => out.push_str(&format_duration(*d)),
        ExprKind::Str(parts) => {
            out.push('"');
            for p in parts {
                match p {
                    StrPart::Lit(s) => out.push_str(&escape(s)),
                    StrPart::Interp(e) => {
                        out.push_str("${");
                        write_expr(out, e, 0);
                        out.push('}');
                    }
                }
            }
            out.push('"');
        }
        ExprKind::List(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, it, 0);
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
                out.push_str(&key_text(&k.name));
                out.push_str(" = ");
                write_expr(out, v, 0);
            }
            out.push_str(" }");
        }
        ExprKind::Ident(n) => out.push_str(n),
        ExprKind::Field(b, f) => {
            write_expr(out, b, 10);
            out.push('.');
            out.push_str(&f.name);
        }
        ExprKind::Index(b, i) => {
            write_expr(out, b, 10);
            out.push('[');
            write_expr(out, i, 0);
            out.push(']');
        }
        ExprKind::Call(f, args) => {
            out.push_str(&f.name);
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, a, 0);
            }
            out.push(')');
        }
        ExprKind::Unary(op, e) => {
            out.push(match op {
                UnOp::Not => '!',
                UnOp::Neg => '-',
            });
            write_expr(out, e, 9);
        }
        ExprKind::Binary(op, l, r) => {
            let p = op.precedence();
            let paren = p < parent_prec;
            if paren {
                out.push('(');
            }
            write_expr(out, l, p);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            // Left-associative: a right operand of equal precedence needs parentheses.
            let rp = if matches!(op, BinOp::Coalesce) {
                p
            } else {
                p + 1
            };
            write_expr(out, r, rp);
            if paren {
                out.push(')');
            }
        }
        ExprKind::Value(v) => write_value(out, v),
    }
}

/// A value as a source literal.
pub fn value_to_source(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&float_text(*f)),
        Value::Duration(d) => out.push_str(&format_duration(*d)),
        Value::Str(s) => {
            out.push('"');
            out.push_str(&escape(s));
            out.push('"');
        }
        Value::List(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, it);
            }
            out.push(']');
        }
        Value::Map(m) => {
            if m.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&key_text(k));
                out.push_str(" = ");
                write_value(out, v);
            }
            out.push_str(" }");
        }
    }
}

fn float_text(f: f64) -> String {
    let s = f.to_string();
    if s.contains(['.', 'e', 'E']) || !f.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

fn key_text(k: &str) -> String {
    let mut c = k.chars();
    let ident = c
        .next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !matches!(k, "true" | "false" | "null");
    if ident {
        k.to_string()
    } else {
        format!("\"{}\"", escape(k))
    }
}

/// Escapes text for a double-quoted string.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out
}
