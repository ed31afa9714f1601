//! `http.suite`: several checks against one base URL run as one step, each
//! recorded as pass or fail in a table (in the log and the `table` output).
//! A check can `save` fields of its JSON response and later checks use them
//! as `${name}` in their path or body: create, then read what was created.

use std::time::Duration;

use indexmap::IndexMap;
use pipe_lang::Value;
use reqwest::Method;

use super::client::{client, parse_url, Body, Req};
use super::expect::{json_map, json_path, json_text, statuses, Expect};
use super::request::judge;
use super::step::{pairs_of, scalar_text, Ctx, Failure, Outputs};
use crate::retry::Class;

struct Row {
    name: String,
    method: String,
    path: String,
    expected: String,
    got: String,
    ok: bool,
    ms: Option<u128>,
    detail: Option<String>,
}

pub(crate) async fn suite(ctx: Ctx) -> Result<Outputs, Failure> {
    let base = ctx.str("base_url")?;
    let common = ctx.pairs("headers")?;
    let timeout = ctx.duration("request_timeout", Duration::from_secs(10))?;
    let checks = match ctx.inputs.get("checks") {
        Some(Value::List(l)) if !l.is_empty() => l.clone(),
        _ => return Err(Failure::config("`checks` must be a non-empty list of maps")),
    };
    let client = client()?;
    let mut saved: IndexMap<String, String> = IndexMap::new();
    let mut rows = Vec::new();
    let mut transient: Option<Option<Duration>> = None;
    for (n, check) in checks.iter().enumerate() {
        let Value::Map(c) = check else {
            return Err(Failure::config(format!("check {} must be a map", n + 1)));
        };
        let get = |k: &str| c.get(k).and_then(scalar_text);
        let name = get("name").unwrap_or_else(|| format!("check {}", n + 1));
        let raw_path = get("path").unwrap_or_default();
        let method_text = get("method")
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        let method = Method::from_bytes(method_text.as_bytes()).map_err(|_| {
            Failure::config(format!(
                "check `{name}`: `{method_text}` is not an HTTP method"
            ))
        })?;
        let mut expect = Expect {
            status: statuses(c.get("status"), &format!("checks.{name}.status"))?,
            ..Expect::default()
        };
        if expect.status.is_empty() {
            expect.status.push(200);
        }
        if let Some(t) = get("contains") {
            expect.contains.push(t);
        }
        if let Some(j) = c.get("json") {
            expect.json = json_map(j, &format!("checks.{name}.json"))?;
        }
        let mut row = Row {
            name: name.clone(),
            method: method_text.clone(),
            path: raw_path.clone(),
            expected: expect.status_text(),
            got: "-".into(),
            ok: false,
            ms: None,
            detail: None,
        };
        let path = substitute(&raw_path, &saved);
        let body = get("body").map(|b| substitute(&b, &saved));
        let (path, body) = match (path, body.transpose()) {
            (Ok(p), Ok(b)) => (p, b),
            (Err(missing), _) | (_, Err(missing)) => {
                row.detail = Some(format!(
                    "needs `${{{missing}}}`, which no earlier check saved"
                ));
                rows.push(row);
                continue;
            }
        };
        row.path.clone_from(&path);
        let url = parse_url(&join(&base, &path), &format!("checks.{name}.path"))?;
        let mut req = Req::new(method, url, timeout);
        if !c.get("anonymous").is_some_and(Value::truthy) {
            req.headers.clone_from(&common);
        }
        req.headers.extend(pairs_of(
            c.get("headers"),
            &format!("checks.{name}.headers"),
        )?);
        req.body = body.map(|b| match serde_json::from_str::<serde_json::Value>(&b) {
            Ok(j) if j.is_object() || j.is_array() => Body::Json(j),
            _ => Body::Text(b),
        });
        match req.send(&client, ctx.attempt).await {
            Err(f) => {
                if let Some(Class::Transient { after }) = f.class {
                    transient = Some(transient.flatten().max(after));
                }
                row.got = "error".into();
                row.detail = Some(f.message);
            }
            Ok(resp) => {
                row.got = resp.status.to_string();
                row.ms = Some(resp.elapsed.as_millis());
                match judge(&req, &resp, &expect, ctx.attempt) {
                    Err(f) => {
                        if let Some(Class::Transient { after }) = f.class {
                            transient = Some(transient.flatten().max(after));
                        }
                        row.detail = Some(expect.mismatches(&resp).join("; "));
                    }
                    Ok(()) => {
                        row.ok = true;
                        if let Some(save) = c.get("save") {
                            for (var, p) in pairs_of(Some(save), &format!("checks.{name}.save"))? {
                                match resp.json().as_ref().and_then(|d| json_path(d, &p)) {
                                    Some(v) => {
                                        saved.insert(var, json_text(v));
                                    }
                                    None => {
                                        row.ok = false;
                                        row.detail = Some(format!(
                                            "cannot save `{var}`: `{p}` is not in the JSON body"
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        rows.push(row);
    }
    let table = render(&rows);
    ctx.log(&table);
    let passed = rows.iter().filter(|r| r.ok).count();
    let failed = rows.len() - passed;
    if failed > 0 {
        let what: Vec<String> = rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{} ({})", r.name, r.detail.as_deref().unwrap_or("failed")))
            .collect();
        let msg = format!(
            "{failed} of {} checks failed: {} (attempt {})",
            rows.len(),
            what.join("; "),
            ctx.attempt
        );
        return Err(match transient {
            Some(after) => Failure::transient(msg, after),
            None => Failure::permanent(msg),
        });
    }
    let mut out = Outputs::new();
    out.insert("passed".into(), passed.to_string());
    out.insert("failed".into(), failed.to_string());
    out.insert("table".into(), table);
    Ok(out)
}

/// Replaces `${name}` with saved values; `Err(name)` when one is missing.
fn substitute(text: &str, saved: &IndexMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        match saved.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn join(base: &str, path: &str) -> String {
    if path.starts_with("http://") || path.starts_with("https://") {
        return path.to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// A plain-text table, one row per check.
fn render(rows: &[Row]) -> String {
    let head = [
        "check", "method", "path", "expected", "got", "result", "time",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.method.clone(),
                r.path.clone(),
                r.expected.clone(),
                r.got.clone(),
                if r.ok { "pass" } else { "FAIL" }.to_string(),
                r.ms.map_or("-".into(), |ms| format!("{ms}ms")),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let parts: Vec<String> = cols
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(&head.map(str::to_string))];
    out.extend(cells.iter().map(|r| line(r)));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_saved_values() {
        let mut saved = IndexMap::new();
        saved.insert("id".to_string(), "42".to_string());
        assert_eq!(substitute("/audits/${id}", &saved).unwrap(), "/audits/42");
        assert_eq!(substitute("/x/${nope}", &saved).unwrap_err(), "nope");
        assert_eq!(join("http://h:1/api/", "/x"), "http://h:1/api/x");
    }
}
