//! Expectations on a response (status, headers, body text, JSON fields) and
//! the JSON paths that `expect`, `extract` and `save` use: `id`,
//! `data.items[0].name`, `$.data.items.0.name` or a JSON pointer
//! `/data/items/0/name`.

use pipe_lang::Value;

use super::client::Resp;
use super::step::{pairs_of, Failure};

/// Looks a path up in a JSON document.
pub(crate) fn json_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.starts_with('/') {
        return v.pointer(path);
    }
    let path = path.strip_prefix('$').unwrap_or(path);
    let path = path.strip_prefix('.').unwrap_or(path);
    let mut cur = v;
    if path.is_empty() {
        return Some(cur);
    }
    for seg in path.split('.') {
        let (key, mut rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !key.is_empty() {
            cur = match cur {
                serde_json::Value::Object(m) => m.get(key)?,
                serde_json::Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let i: usize = r[..end].parse().ok()?;
            cur = cur.as_array()?.get(i)?;
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(cur)
}

/// A JSON value as an output string: strings without quotes, the rest as JSON.
pub(crate) fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// What a response must look like.
#[derive(Debug, Default)]
pub(crate) struct Expect {
    /// Accepted statuses; empty means any 2xx.
    pub status: Vec<u16>,
    /// Header name and a value it must contain.
    pub headers: Vec<(String, String)>,
    pub contains: Vec<String>,
    pub json: Vec<(String, serde_json::Value)>,
}

impl Expect {
    /// Reads the `expect` map of `http.request`: `status` (a code or a list),
    /// `header`/`headers` (a map), `contains` (text or a list), `json` (a map
    /// of path to value). A bare number is a status.
    pub fn from_value(v: Option<&Value>) -> Result<Expect, Failure> {
        let mut e = Expect::default();
        let m = match v {
            None | Some(Value::Null) => return Ok(e),
            Some(Value::Int(_) | Value::List(_)) => {
                e.status = statuses(v, "expect")?;
                return Ok(e);
            }
            Some(Value::Map(m)) => m,
            Some(_) => return Err(Failure::config("`expect` must be a status or a map")),
        };
        for (k, v) in m {
            match k.as_str() {
                "status" => e.status = statuses(Some(v), "expect.status")?,
                "header" | "headers" => e.headers = pairs_of(Some(v), "expect.header")?,
                "contains" => e.contains = texts(v, "expect.contains")?,
                "json" => e.json = json_map(v, "expect.json")?,
                other => {
                    return Err(Failure::config(format!(
                    "`expect.{other}` is not an expectation (use status, header, contains or json)"
                )))
                }
            }
        }
        Ok(e)
    }

    /// Every way the response differs from the expectation.
    pub fn mismatches(&self, resp: &Resp) -> Vec<String> {
        let mut out = Vec::new();
        let status_ok = if self.status.is_empty() {
            (200..300).contains(&resp.status)
        } else {
            self.status.contains(&resp.status)
        };
        if !status_ok {
            out.push(format!(
                "expected status {}, got {}{}",
                self.status_text(),
                resp.status,
                body_hint(&resp.body)
            ));
        }
        for (name, want) in &self.headers {
            match resp
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
            {
                Some(got) if got.contains(want.as_str()) => {}
                Some(got) => out.push(format!("header {name} is {got:?}, expected {want:?}")),
                None => out.push(format!("header {name} is missing")),
            }
        }
        for text in &self.contains {
            if !resp.body.contains(text.as_str()) {
                out.push(format!("the body does not contain {text:?}"));
            }
        }
        if !self.json.is_empty() {
            match resp.json() {
                None => out.push("the body is not JSON".to_string()),
                Some(doc) => {
                    for (path, want) in &self.json {
                        match json_path(&doc, path) {
                            Some(got) if json_equal(got, want) => {}
                            Some(got) => out.push(format!("{path} is {got}, expected {want}")),
                            None => out.push(format!("{path} is missing from the JSON body")),
                        }
                    }
                }
            }
        }
        out
    }

    pub fn status_text(&self) -> String {
        if self.status.is_empty() {
            "2xx".to_string()
        } else {
            self.status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        }
    }
}

/// A short quote of an error body, to see what the server said.
fn body_hint(body: &str) -> String {
    let b = body.trim();
    if b.is_empty() {
        return String::new();
    }
    let cut: String = b.chars().take(120).collect();
    let more = if cut.len() < b.len() { "…" } else { "" };
    format!(": {}{more}", cut.replace('\n', " "))
}

fn json_equal(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    if got == want {
        return true;
    }
    match (got.as_f64(), want.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() < f64::EPSILON,
        _ => json_text(got) == json_text(want),
    }
}

pub(crate) fn statuses(v: Option<&Value>, what: &str) -> Result<Vec<u16>, Failure> {
    let one = |v: &Value| match v {
        Value::Int(i) if (100..=599).contains(i) => Ok(*i as u16),
        _ => Err(Failure::config(format!(
            "`{what}` must be an HTTP status from 100 to 599"
        ))),
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::List(l)) => l.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

fn texts(v: &Value, what: &str) -> Result<Vec<String>, Failure> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Str(s) => Ok(vec![s.clone()]),
        Value::List(l) => l
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Failure::config(format!("`{what}` must hold strings")))
            })
            .collect(),
        _ => Err(Failure::config(format!("`{what}` must be a string"))),
    }
}

pub(crate) fn json_map(v: &Value, what: &str) -> Result<Vec<(String, serde_json::Value)>, Failure> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Map(m) => Ok(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        _ => Err(Failure::config(format!(
            "`{what}` must be a map of JSON path to value"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_every_spelling() {
        let doc = serde_json::json!({"id": 7, "data": {"items": [{"name": "a"}, {"name": "b"}]}});
        for p in [
            "data.items[1].name",
            "$.data.items.1.name",
            "/data/items/1/name",
        ] {
            assert_eq!(json_path(&doc, p), Some(&serde_json::json!("b")), "{p}");
        }
        assert_eq!(json_text(json_path(&doc, "id").unwrap()), "7");
        assert_eq!(json_path(&doc, "data.items[2]"), None);
        assert_eq!(json_path(&doc, "id.x"), None);
    }
}
