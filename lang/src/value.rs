//! Run-time values of the language and their types.

use std::fmt;

use indexmap::IndexMap;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// A value an expression evaluates to.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Milliseconds.
    Duration(u64),
    List(Vec<Value>),
    Map(IndexMap<String, Value>),
}

/// The type of a parameter, template argument or attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Any,
    String,
    Int,
    Float,
    Bool,
    Duration,
    /// Shell text: literal text written at the call site runs as shell,
    /// interpolated values inside it are quoted. A string otherwise.
    Command,
    List(Box<Type>),
    Map(Box<Type>),
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::String => f.write_str("string"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Bool => f.write_str("bool"),
            Type::Duration => f.write_str("duration"),
            Type::Command => f.write_str("command"),
            Type::List(t) => write!(f, "list<{t}>"),
            Type::Map(t) => write!(f, "map<{t}>"),
        }
    }
}

impl Type {
    /// Whether a value of type `other` may stand where `self` is expected.
    pub fn accepts(&self, other: &Type) -> bool {
        match (self, other) {
            (Type::Any, _) | (_, Type::Any) => true,
            (Type::Float, Type::Int)
            | (Type::Command, Type::String)
            | (Type::String, Type::Command) => true,
            (Type::List(a), Type::List(b)) | (Type::Map(a), Type::Map(b)) => a.accepts(b),
            (a, b) => a == b,
        }
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Duration(_) => "duration",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// The most precise type of this value (`any` for null and mixed lists).
    pub fn ty(&self) -> Type {
        match self {
            Value::Null => Type::Any,
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Str(_) => Type::String,
            Value::Duration(_) => Type::Duration,
            Value::List(items) => Type::List(Box::new(common_type(items.iter()))),
            Value::Map(m) => Type::Map(Box::new(common_type(m.values()))),
        }
    }

    /// Whether this value fits `ty`. Null fits every type: it means "not set".
    pub fn conforms(&self, ty: &Type) -> bool {
        match (self, ty) {
            (Value::Null, _) | (_, Type::Any) => true,
            (Value::List(items), Type::List(t)) => items.iter().all(|v| v.conforms(t)),
            (Value::Map(m), Type::Map(t)) => m.values().all(|v| v.conforms(t)),
            (v, t) => t.accepts(&v.ty()),
        }
    }

    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Duration(d) => *d != 0,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Parses command-line text (`-p key=value`) as a value of `ty`: lists and
    /// maps as JSON or, for lists, comma-separated words.
    pub fn parse_as(text: &str, ty: &Type) -> Result<Value, String> {
        let bad = || format!("`{text}` is not a valid {ty}");
        match ty {
            Type::Any | Type::String | Type::Command => Ok(Value::Str(text.to_string())),
            Type::Int => text.trim().parse().map(Value::Int).map_err(|_| bad()),
            Type::Float => text.trim().parse().map(Value::Float).map_err(|_| bad()),
            Type::Bool => match text.trim() {
                "true" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "0" => Ok(Value::Bool(false)),
                _ => Err(bad()),
            },
            Type::Duration => parse_duration(text.trim())
                .map(Value::Duration)
                .ok_or_else(bad),
            Type::List(inner) => {
                if text.trim_start().starts_with('[') {
                    let json: serde_json::Value =
                        serde_json::from_str(text).map_err(|e| format!("{}: {e}", bad()))?;
                    let v = Value::from_json(&json);
                    if v.conforms(ty) {
                        Ok(v)
                    } else {
                        Err(bad())
                    }
                } else {
                    text.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::parse_as(s, inner))
                        .collect::<Result<_, _>>()
                        .map(Value::List)
                }
            }
            Type::Map(_) => {
                let json: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("{}: {e}", bad()))?;
                let v = Value::from_json(&json);
                if matches!(v, Value::Map(_)) && v.conforms(ty) {
                    Ok(v)
                } else {
                    Err(bad())
                }
            }
        }
    }

    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)), Value::Int),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn common_type<'a>(mut values: impl Iterator<Item = &'a Value>) -> Type {
    let Some(first) = values.find(|v| !matches!(v, Value::Null)) else {
        return Type::Any;
    };
    let mut t = first.ty();
    for v in values {
        if matches!(v, Value::Null) {
            continue;
        }
        let vt = v.ty();
        if t.accepts(&vt) {
            continue;
        }
        if vt.accepts(&t) {
            t = vt;
        } else {
            return Type::Any;
        }
    }
    t
}

/// Parses `500ms`, `30s`, `5m`, `24h`, `2d` and sums like `1h30m` into milliseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.chars().next()? {
                's' => (1000, 1),
                'm' => (60_000, 1),
                'h' => (3_600_000, 1),
                'd' => (86_400_000, 1),
                _ => return None,
            }
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// Formats milliseconds the way they are written in source: `1h30m`, `500ms`, `0s`.
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, name) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
        (1, "ms"),
    ] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

impl fmt::Display for Value {
    /// Strings display bare (as they are interpolated); other values as literals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str(""),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Duration(d) => f.write_str(&format_duration(*d)),
            Value::List(_) | Value::Map(_) => f.write_str(&self.to_json().to_string()),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(x) => s.serialize_f64(*x),
            Value::Str(v) => s.serialize_str(v),
            Value::Duration(d) => s.serialize_str(&format_duration(*d)),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
        ] {
            assert_eq!(parse_duration(text), Some(ms), "{text}");
            assert_eq!(format_duration(ms), text);
        }
        // Whole days format as days, however they were written.
        assert_eq!(parse_duration("24h"), Some(86_400_000));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn cli_values_parse_by_type() {
        let list = Type::List(Box::new(Type::String));
        assert_eq!(
            Value::parse_as("api, worker", &list),
            Ok(Value::List(vec![
                Value::Str("api".into()),
                Value::Str("worker".into())
            ]))
        );
        assert_eq!(
            Value::parse_as(r#"["a"]"#, &list),
            Ok(Value::List(vec![Value::Str("a".into())]))
        );
        assert_eq!(Value::parse_as("3", &Type::Int), Ok(Value::Int(3)));
        assert!(Value::parse_as("three", &Type::Int).is_err());
        assert_eq!(
            Value::parse_as("2m", &Type::Duration),
            Ok(Value::Duration(120_000))
        );
    }

    #[test]
    fn conformance() {
        assert!(Value::Int(1).conforms(&Type::Float));
        assert!(!Value::Float(1.5).conforms(&Type::Int));
        assert!(Value::List(vec![Value::Int(1), Value::Float(2.0)])
            .conforms(&Type::List(Box::new(Type::Float))));
        assert!(
            !Value::List(vec![Value::Str("x".into())]).conforms(&Type::List(Box::new(Type::Int)))
        );
    }
}
