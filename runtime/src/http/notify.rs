//! `notify.slack`, `notify.discord` and `notify.webhook`: post a message in
//! the format the service documents (a Slack incoming-webhook payload with
//! blocks, a Discord webhook payload with an embed, or any JSON), retried a
//! bounded number of times under the shared [`crate::retry`] policy. A
//! notification that cannot be delivered warns and leaves the run's outcome
//! alone unless `required = true`. Payloads never carry secret values: the
//! webhook URL, header values and secret-looking environment variables are
//! masked out of every text.

use std::time::{Duration, Instant};

use pipe_lang::plan::{Backoff, RetryPolicy};
use pipe_lang::Value;
use reqwest::Method;

use super::client::{client, parse_url, redact_url, Body, Req};
use super::step::{Ctx, Failure, Outputs};
use crate::retry::{next_delay, Class};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Slack,
    Discord,
    Webhook,
}

/// Slack caps a section's text at 3000 characters and a field at 2000.
const SLACK_TEXT: usize = 3000;
const SLACK_FIELD: usize = 2000;
/// Discord caps an embed description at 4096, field names at 256, values at
/// 1024, and an embed at 25 fields.
const DISCORD_TEXT: usize = 4096;
const DISCORD_NAME: usize = 256;
const DISCORD_VALUE: usize = 1024;
const DISCORD_FIELDS: usize = 25;

pub(crate) async fn notify(ctx: Ctx, service: Service) -> Result<Outputs, Failure> {
    let url_key = if service == Service::Webhook {
        "url"
    } else {
        "webhook"
    };
    let url_text = ctx.str(url_key)?;
    let url = parse_url(&url_text, url_key)?;
    let headers = ctx.pairs("headers")?;
    let mut mask = Mask::new();
    mask.1 = Some(ctx.masker());
    mask.add(&url_text);
    for seg in url.path_segments().into_iter().flatten() {
        if seg.len() >= 16 {
            mask.add(seg);
        }
    }
    for (_, v) in &headers {
        mask.add(v);
    }
    mask.add_env_secrets();
    let context = context_line(&ctx);
    let payload = match service {
        Service::Slack => slack_payload(
            &mask.apply(&ctx.str("text")?),
            &mask.pairs(&ctx.pairs("fields")?),
            &context,
        ),
        Service::Discord => discord_payload(
            &mask.apply(&ctx.str("text")?),
            &mask.pairs(&ctx.pairs("fields")?),
            &context,
        ),
        Service::Webhook => match ctx.inputs.get("payload") {
            Some(v @ Value::Map(_)) => mask.json(v.to_json()),
            _ => return Err(Failure::config("`payload` must be a map")),
        },
    };
    let attempts = ctx.int("attempts", 3)?.clamp(1, 10) as u32;
    let policy = RetryPolicy {
        attempts,
        backoff: Backoff::Exponential {
            base_ms: 1000,
            max_ms: ctx
                .duration("max_delay", Duration::from_secs(10))?
                .as_millis() as u64,
        },
        max_elapsed_ms: Some(60_000),
        on: Vec::new(),
        respect_retry_after: true,
        span: pipe_lang::Span::default(),
    };
    let mut req = Req::new(Method::POST, url, Duration::from_secs(10));
    req.headers = headers;
    req.body = Some(Body::Json(payload));
    // A duplicate message is better than a lost one: notifications repeat.
    req.retry_unsafe = true;
    let client = client()?;
    let start = Instant::now();
    let mut attempt = 1;
    let failure = loop {
        let f = match req.send(&client, attempt).await {
            Ok(resp) if (200..300).contains(&resp.status) => {
                ctx.log(format!(
                    "delivered to {} ({}, attempt {attempt})",
                    redact_url(&req.url),
                    resp.status
                ));
                let mut out = Outputs::new();
                out.insert("delivered".into(), "true".into());
                out.insert("status".into(), resp.status.to_string());
                out.insert("attempts".into(), attempt.to_string());
                return Ok(out);
            }
            Ok(resp) => {
                let (class, _) = req.status_class(&resp);
                Failure {
                    ending: crate::executor::Ending::Failed,
                    message: format!(
                        "{} answered {}: {} (attempt {attempt})",
                        redact_url(&req.url),
                        resp.status,
                        mask.apply(resp.body.trim())
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ),
                    class: Some(class),
                }
            }
            Err(f) => f,
        };
        let delay = match f.class {
            Some(c @ Class::Transient { .. }) if attempt < attempts => {
                next_delay(&policy, attempt, start.elapsed(), Some(c))
            }
            _ => None,
        };
        let Some(delay) = delay else { break f };
        ctx.log(format!(
            "{}; retrying in {}ms",
            mask.apply(&f.message),
            delay.as_millis()
        ));
        tokio::time::sleep(delay).await;
        attempt += 1;
    };
    let message = format!(
        "notification not delivered: {}",
        mask.apply(&failure.message)
    );
    if ctx.bool("required") {
        return Err(Failure::permanent(message));
    }
    ctx.warn(format!(
        "warning: {message} (not required, the run goes on)"
    ));
    let mut out = Outputs::new();
    out.insert("delivered".into(), "false".into());
    out.insert("error".into(), message);
    out.insert("attempts".into(), attempt.to_string());
    Ok(out)
}

/// Where the message came from: the run and the step.
fn context_line(ctx: &Ctx) -> String {
    let run = ctx
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PIPE_RUN_ID")
        .map_or("?", |(_, v)| v.as_str());
    format!("pipe · run {run} · step {}", ctx.step_id)
}

/// Slack incoming webhook: `text` is the notification fallback, `blocks`
/// what the channel shows (a section, the fields two-up, a context line).
fn slack_payload(text: &str, fields: &[(String, String)], context: &str) -> serde_json::Value {
    let mut blocks = vec![serde_json::json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": cut(text, SLACK_TEXT)},
    })];
    // A section holds at most 10 fields.
    for chunk in fields.chunks(10) {
        let f: Vec<serde_json::Value> = chunk
            .iter()
            .map(|(k, v)| {
                serde_json::json!({"type": "mrkdwn", "text": cut(&format!("*{k}*\n{v}"), SLACK_FIELD)})
            })
            .collect();
        blocks.push(serde_json::json!({"type": "section", "fields": f}));
    }
    blocks.push(serde_json::json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": context}],
    }));
    serde_json::json!({"text": cut(text, SLACK_TEXT), "blocks": blocks})
}

/// Discord webhook: one embed, no pings (`allowed_mentions` empty).
fn discord_payload(text: &str, fields: &[(String, String)], context: &str) -> serde_json::Value {
    let f: Vec<serde_json::Value> = fields
        .iter()
        .take(DISCORD_FIELDS)
        .map(|(k, v)| {
            serde_json::json!({"name": cut(k, DISCORD_NAME), "value": cut(v, DISCORD_VALUE), "inline": true})
        })
        .collect();
    serde_json::json!({
        "embeds": [{
            "description": cut(text, DISCORD_TEXT),
            "fields": f,
            "footer": {"text": context},
            "timestamp": crate::time::rfc3339(crate::state::now_ms()),
        }],
        "allowed_mentions": {"parse": []},
    })
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

/// Values that must not leave in a payload: the run's secrets (every
/// source, every encoding) and the values named above.
struct Mask(Vec<String>, Option<crate::mask::SharedMasker>);

impl Mask {
    fn new() -> Mask {
        Mask(Vec::new(), None)
    }

    fn add(&mut self, v: &str) {
        if v.len() >= 6 && !self.0.iter().any(|m| m == v) {
            self.0.push(v.to_string());
            self.0.sort_by_key(|m| std::cmp::Reverse(m.len()));
        }
    }

    /// Environment variables whose names say they are secret.
    fn add_env_secrets(&mut self) {
        const MARKS: [&str; 6] = [
            "TOKEN", "SECRET", "PASSWORD", "WEBHOOK", "API_KEY", "PRIVATE",
        ];
        for (k, v) in std::env::vars() {
            let k = k.to_ascii_uppercase();
            if MARKS.iter().any(|m| k.contains(m)) {
                self.add(&v);
            }
        }
    }

    fn apply(&self, s: &str) -> String {
        let mut out = match &self.1 {
            Some(m) => crate::mask::mask_with(m, s),
            None => s.to_string(),
        };
        for m in &self.0 {
            out = out.replace(m.as_str(), "***");
        }
        out
    }

    fn pairs(&self, p: &[(String, String)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (self.apply(k), self.apply(v)))
            .collect()
    }

    fn json(&self, v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(self.apply(&s)),
            serde_json::Value::Array(a) => a.into_iter().map(|v| self.json(v)).collect(),
            serde_json::Value::Object(o) => o
                .into_iter()
                .map(|(k, v)| (self.apply(&k), self.json(v)))
                .collect(),
            v => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_has_blocks_and_fallback_text() {
        let p = slack_payload(
            "deployed",
            &[("version".into(), "1.2".into())],
            "pipe · run 1 · step s",
        );
        assert_eq!(p["text"], "deployed");
        assert_eq!(p["blocks"][0]["type"], "section");
        assert_eq!(p["blocks"][1]["fields"][0]["text"], "*version*\n1.2");
        assert_eq!(p["blocks"][2]["type"], "context");
    }

    #[test]
    fn masks_secret_values() {
        let mut m = Mask::new();
        m.add("https://hooks.example/T000/B000/XXXXXXXX");
        assert_eq!(
            m.apply("posting to https://hooks.example/T000/B000/XXXXXXXX now"),
            "posting to *** now"
        );
    }
}
