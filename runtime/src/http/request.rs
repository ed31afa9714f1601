//! `http.request`, `http.check` and `http.wait`: one request with
//! expectations and extracted outputs, a smoke test, and a health poll.

use std::time::{Duration, Instant};

use pipe_lang::value::format_duration;
use pipe_lang::Value;
use reqwest::Method;

use super::client::{client, describe, parse_url, redact_url, Body, Req, Resp};
use super::expect::{json_path, json_text, Expect};
use super::step::{Ctx, Failure, Outputs};
use crate::retry::Class;

/// Bodies longer than this are cut in the `body` output (the store keeps outputs).
const BODY_OUTPUT_LIMIT: usize = 64 * 1024;

/// `http.request`.
pub(crate) async fn request(ctx: Ctx) -> Result<Outputs, Failure> {
    let req = build(&ctx)?;
    let expect = Expect::from_value(ctx.inputs.get("expect"))?;
    let extract = ctx.pairs("extract")?;
    let resp = req.send(&client()?, ctx.attempt).await?;
    ctx.log(describe(&req, &resp));
    judge(&req, &resp, &expect, ctx.attempt)?;
    let mut out = base_outputs(&resp);
    out.insert("headers".into(), resp.headers_json());
    if !extract.is_empty() {
        let doc = resp.json().ok_or_else(|| {
            Failure::permanent(format!(
                "{}: cannot extract {}: the body is not JSON",
                redact_url(&req.url),
                names(&extract)
            ))
        })?;
        for (name, path) in &extract {
            let v = json_path(&doc, path).ok_or_else(|| {
                Failure::permanent(format!(
                    "{}: cannot extract `{name}`: `{path}` is not in the JSON body",
                    redact_url(&req.url)
                ))
            })?;
            out.insert(name.clone(), json_text(v));
        }
    }
    Ok(out)
}

/// `http.check`: `expect` is a status, `contains` some text.
pub(crate) async fn check(ctx: Ctx) -> Result<Outputs, Failure> {
    let req = build(&ctx)?;
    let mut expect = Expect {
        status: super::expect::statuses(ctx.inputs.get("expect"), "expect")?,
        ..Expect::default()
    };
    if expect.status.is_empty() {
        expect.status.push(200);
    }
    if let Some(text) = ctx.opt_str("contains")? {
        expect.contains.push(text);
    }
    let resp = req.send(&client()?, ctx.attempt).await?;
    ctx.log(describe(&req, &resp));
    judge(&req, &resp, &expect, ctx.attempt)?;
    Ok(base_outputs(&resp))
}

/// `http.wait`: polls every `interval` until the URL answers `expect`, for at
/// most `within`.
pub(crate) async fn wait(ctx: Ctx) -> Result<Outputs, Failure> {
    let url = parse_url(&ctx.str("url")?, "url")?;
    let interval = ctx.duration("interval", Duration::from_secs(2))?;
    let within = ctx.duration("within", Duration::from_mins(2))?;
    let expect = Expect {
        status: match super::expect::statuses(ctx.inputs.get("expect"), "expect")? {
            s if s.is_empty() => vec![200],
            s => s,
        },
        ..Expect::default()
    };
    let client = client()?;
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        polls += 1;
        let left = within.saturating_sub(start.elapsed());
        let timeout = interval
            .max(Duration::from_secs(1))
            .min(left.max(Duration::from_millis(100)));
        let req = Req::new(Method::GET, url.clone(), timeout);
        let last = match req.send(&client, polls).await {
            Ok(resp) if expect.mismatches(&resp).is_empty() => {
                ctx.log(format!(
                    "{} (healthy after {polls} poll(s))",
                    describe(&req, &resp)
                ));
                let mut out = base_outputs(&resp);
                out.insert("polls".into(), polls.to_string());
                out.insert("waited_ms".into(), start.elapsed().as_millis().to_string());
                return Ok(out);
            }
            Ok(resp) => {
                ctx.log(describe(&req, &resp));
                format!("status {}", resp.status)
            }
            Err(f) => {
                ctx.log(&f.message);
                f.message
            }
        };
        if start.elapsed() + interval > within {
            return Err(Failure::transient(
                format!(
                    "{} did not answer {} within {} ({polls} polls; last: {last})",
                    redact_url(&url),
                    expect.status_text(),
                    format_duration(within.as_millis() as u64)
                ),
                None,
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// The request a `http.request` or `http.check` step describes.
fn build(ctx: &Ctx) -> Result<Req, Failure> {
    let mut url = parse_url(&ctx.str("url")?, "url")?;
    let query = ctx.pairs("query")?;
    if !query.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in &query {
            q.append_pair(k, v);
        }
    }
    let method_text = ctx.opt_str("method")?.unwrap_or_else(|| "GET".into());
    let method = Method::from_bytes(method_text.to_ascii_uppercase().as_bytes())
        .map_err(|_| Failure::config(format!("`{method_text}` is not an HTTP method")))?;
    let timeout = ctx.duration("request_timeout", Duration::from_secs(10))?;
    let mut req = Req::new(method, url, timeout);
    req.headers = ctx.pairs("headers")?;
    if let Some(key) = ctx.opt_str("idempotency_key")? {
        req.headers.push(("Idempotency-Key".into(), key));
    }
    req.retry_unsafe = ctx.bool("retry_unsafe");
    req.body = match (ctx.opt_str("body")?, ctx.inputs.get("json")) {
        (Some(_), Some(j)) if !matches!(j, Value::Null) => {
            return Err(Failure::config("give `body` or `json`, not both"))
        }
        (Some(text), _) => Some(Body::Text(text)),
        (None, Some(j)) if !matches!(j, Value::Null) => Some(Body::Json(j.to_json())),
        _ => None,
    };
    Ok(req)
}

/// Fails the attempt when the response is not what `expect` says, classed by
/// its status (see [`Req::status_class`]).
pub(crate) fn judge(req: &Req, resp: &Resp, expect: &Expect, attempt: u32) -> Result<(), Failure> {
    let wrong = expect.mismatches(resp);
    if wrong.is_empty() {
        return Ok(());
    }
    let status_wrong = if expect.status.is_empty() {
        !(200..300).contains(&resp.status)
    } else {
        !expect.status.contains(&resp.status)
    };
    let (class, note) = if status_wrong {
        req.status_class(resp)
    } else {
        (Class::Permanent, None)
    };
    let mut msg = format!(
        "{} {}: {} (attempt {attempt})",
        req.method,
        redact_url(&req.url),
        wrong.join("; ")
    );
    if let Class::Transient { after: Some(a) } = class {
        msg.push_str(&format!(
            "; the server asked to retry after {}",
            format_duration(a.as_millis() as u64)
        ));
    }
    if let Some(n) = note {
        msg.push_str("; ");
        msg.push_str(&n);
    }
    Err(Failure {
        ending: crate::executor::Ending::Failed,
        message: msg,
        class: Some(class),
    })
}

fn base_outputs(resp: &Resp) -> Outputs {
    let mut out = Outputs::new();
    out.insert("status".into(), resp.status.to_string());
    let body = if resp.body.len() > BODY_OUTPUT_LIMIT {
        let mut end = BODY_OUTPUT_LIMIT;
        while !resp.body.is_char_boundary(end) {
            end -= 1;
        }
        resp.body[..end].to_string()
    } else {
        resp.body.clone()
    };
    out.insert("body".into(), body);
    out
}

fn names(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, _)| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
