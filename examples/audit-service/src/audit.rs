//! One audit of a URL, as the worker runs it: robots.txt first (missing →
//! allowed, unreachable → nothing allowed, per RFC 9309), then the page, then
//! a sample of its same-site links. 429 and 503 answers are retried with
//! exponential backoff, honouring `Retry-After`; every request has a timeout
//! and the whole audit a deadline. What could not be checked is reported, and
//! the audit is `partial` rather than lost.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{self, FetchError, Response, Url};
use crate::robots::Robots;

/// How an audit fetches. See README.md for the environment variables.
#[derive(Clone, Debug)]
pub struct Policy {
    pub user_agent: String,
    /// Per request.
    pub timeout: Duration,
    /// For the whole audit.
    pub deadline: Duration,
    /// Attempts per request (429/503/reset are retried).
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this gives up instead of waiting.
    pub max_retry_after: Duration,
    pub max_links: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            user_agent: format!("audit-worker/{}", env!("CARGO_PKG_VERSION")),
            timeout: Duration::from_secs(10),
            deadline: Duration::from_mins(1),
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
            max_links: 10,
        }
    }
}

impl Policy {
    /// The defaults, overridden by `FETCH_TIMEOUT_MS`, `AUDIT_DEADLINE_MS`,
    /// `FETCH_ATTEMPTS`, `BACKOFF_MS`, `MAX_BACKOFF_MS`, `MAX_RETRY_AFTER_MS`
    /// and `MAX_LINKS`.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Policy, Vec<String>> {
        let mut p = Policy::default();
        let mut errors = Vec::new();
        let mut ms = |key: &str, slot: &mut Duration| {
            if let Some(v) = var(key).filter(|v| !v.is_empty()) {
                match v.parse::<u64>() {
                    Ok(n) => *slot = Duration::from_millis(n),
                    Err(_) => errors.push(format!("{key} `{v}` is not a number of milliseconds")),
                }
            }
        };
        ms("FETCH_TIMEOUT_MS", &mut p.timeout);
        ms("AUDIT_DEADLINE_MS", &mut p.deadline);
        ms("BACKOFF_MS", &mut p.backoff);
        ms("MAX_BACKOFF_MS", &mut p.max_backoff);
        ms("MAX_RETRY_AFTER_MS", &mut p.max_retry_after);
        for (key, slot) in [("FETCH_ATTEMPTS", &mut p.attempts)] {
            if let Some(v) = var(key).filter(|v| !v.is_empty()) {
                match v.parse::<u32>() {
                    Ok(n) if n >= 1 => *slot = n,
                    _ => errors.push(format!("{key} `{v}` is not a whole number from 1")),
                }
            }
        }
        if let Some(v) = var("MAX_LINKS").filter(|v| !v.is_empty()) {
            match v.parse() {
                Ok(n) => p.max_links = n,
                Err(_) => errors.push(format!("MAX_LINKS `{v}` is not a whole number")),
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }

    /// The wait before attempt `n + 1` (1-based `n`) without `Retry-After`.
    fn backoff_after(&self, n: u32) -> Duration {
        let f = 2u32.saturating_pow(n.saturating_sub(1));
        self.backoff.saturating_mul(f).min(self.max_backoff)
    }
}

/// The end of an audit.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `completed`, `partial`, `blocked` or `failed`.
    pub status: &'static str,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub details: Value,
}

/// What fetching one URL (with retries) gave.
struct Fetched {
    response: Option<Response>,
    error: Option<FetchError>,
    /// Why retrying stopped early, when it did.
    gave_up: Option<String>,
    attempts: Vec<Value>,
}

/// `Retry-After` as a wait: delta-seconds or an HTTP date.
pub fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.header("retry-after")?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn fetch(url: &Url, p: &Policy, end: Instant) -> Fetched {
    let mut out = Fetched {
        response: None,
        error: None,
        gave_up: None,
        attempts: Vec::new(),
    };
    for n in 1..=p.attempts {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            out.error = Some(FetchError::Timeout(p.deadline));
            out.gave_up = Some("the audit deadline passed".into());
            return out;
        }
        let t0 = Instant::now();
        let r = http::get(url, p.timeout.min(left), &p.user_agent);
        let ms = t0.elapsed().as_millis() as u64;
        let wait = match &r {
            Ok(resp) if resp.status == 429 || resp.status == 503 => {
                Some(retry_after(resp).map_or((p.backoff_after(n), false), |d| (d, true)))
            }
            Err(FetchError::Reset) => Some((p.backoff_after(n), false)),
            _ => None,
        };
        out.attempts.push(match &r {
            Ok(resp) => json!({"status": resp.status, "ms": ms}),
            Err(e) => json!({"error": e.kind(), "ms": ms}),
        });
        match r {
            Ok(resp) => {
                out.response = Some(resp);
                out.error = None;
            }
            Err(e) => {
                out.response = None;
                out.error = Some(e);
            }
        }
        let Some((wait, from_header)) = wait else {
            return out;
        };
        if n == p.attempts {
            out.gave_up = Some(format!("still failing after {n} attempts"));
            return out;
        }
        if from_header && wait > p.max_retry_after {
            out.gave_up = Some(format!(
                "Retry-After asks for {} s, more than the {} s this worker waits",
                wait.as_secs(),
                p.max_retry_after.as_secs()
            ));
            return out;
        }
        if Instant::now() + wait >= end {
            out.gave_up = Some(format!(
                "waiting {} ms before retrying would pass the audit deadline",
                wait.as_millis()
            ));
            return out;
        }
        if let Some(last) = out.attempts.last_mut() {
            last["wait_ms"] = json!(wait.as_millis() as u64);
            last["retry_after"] = json!(from_header);
        }
        std::thread::sleep(wait);
    }
    out
}

/// Audits `url`.
pub fn run(url: &str, p: &Policy) -> Report {
    let start = Instant::now();
    let end = start + p.deadline;
    let done = |status, http_status, error: Option<String>, details| Report {
        status,
        http_status,
        error,
        duration_ms: start.elapsed().as_millis() as u64,
        details,
    };
    let target = match Url::parse(url) {
        Ok(u) => u,
        Err(e) => return done("failed", None, Some(e), json!({})),
    };

    // robots.txt
    let rf = fetch(&target.with_path("/robots.txt"), p, end);
    let (robots, robots_note) = match (&rf.response, &rf.error) {
        (Some(r), _) if (200..300).contains(&r.status) => (
            Robots::parse(&r.text(), "audit-worker"),
            "found".to_string(),
        ),
        (Some(r), _) if (400..500).contains(&r.status) && r.status != 429 => (
            Robots::allow_all(),
            format!("missing ({}): everything allowed", r.status),
        ),
        (Some(r), _) => (
            Robots::disallow_all(),
            format!(
                "unavailable ({}): nothing may be crawled until it answers",
                r.status
            ),
        ),
        (None, Some(e)) if matches!(e, FetchError::Tls) => {
            return done("failed", None, Some(e.to_string()), json!({}));
        }
        (None, Some(e @ (FetchError::Dns(_) | FetchError::Refused))) => {
            return done(
                "failed",
                None,
                Some(format!("{target}: {e}")),
                json!({"error_kind": e.kind(), "robots": {"attempts": rf.attempts}}),
            );
        }
        (None, e) => (
            Robots::disallow_all(),
            format!(
                "unreachable ({}): nothing may be crawled until it answers",
                e.as_ref()
                    .map_or_else(|| "no answer".into(), ToString::to_string)
            ),
        ),
    };
    let mut details = json!({
        "robots": {"status": robots_note, "attempts": rf.attempts},
    });
    if !robots.allowed(&target.path) {
        let why = if robots.blocks_everything() {
            format!(
                "robots.txt disallows the whole site for audit-worker (robots.txt {robots_note})"
            )
        } else {
            format!("robots.txt disallows {} for audit-worker", target.path)
        };
        return done("blocked", None, Some(why), details);
    }

    // The page.
    let pf = fetch(&target, p, end);
    details["page"] = json!({"attempts": pf.attempts});
    let page = match (pf.response, pf.error) {
        (Some(r), _) if r.status == 429 || r.status == 503 => {
            let why = format!(
                "{target} answered {} ({}): partial results",
                r.status,
                pf.gave_up.unwrap_or_else(|| "no more attempts".into())
            );
            return done("partial", Some(r.status), Some(why), details);
        }
        (Some(r), _) => r,
        (None, Some(e)) => {
            let status = if matches!(e, FetchError::Timeout(_) | FetchError::Reset) {
                "partial"
            } else {
                "failed"
            };
            details["error_kind"] = json!(e.kind());
            let mut why = format!("{target}: {e}");
            if let Some(g) = pf.gave_up {
                why.push_str(&format!(" ({g})"));
            }
            return done(status, None, Some(why), details);
        }
        (None, None) => return done("failed", None, Some("no answer".into()), details),
    };
    let html = page.text();
    details["page"]["status"] = json!(page.status);
    details["page"]["bytes"] = json!(page.body.len());
    details["page"]["title"] = json!(between(&html, "<title>", "</title>"));
    details["page"]["description"] = json!(meta_description(&html));

    // A sample of its same-site links.
    let mut links: Vec<Url> = Vec::new();
    for href in hrefs(&html) {
        if let Some(u) = target.join(&href) {
            if u.origin() == target.origin() && u != target && !links.contains(&u) {
                links.push(u);
            }
        }
    }
    let total_links = links.len();
    let mut checked = Vec::new();
    let mut incomplete = 0;
    for u in links.into_iter().take(p.max_links) {
        if !robots.allowed(&u.path) {
            incomplete += 1;
            checked.push(json!({"path": u.path, "skipped": "disallowed by robots.txt"}));
            continue;
        }
        if Instant::now() >= end {
            incomplete += 1;
            checked.push(json!({"path": u.path, "skipped": "audit deadline passed"}));
            continue;
        }
        let lf = fetch(&u, p, end);
        match (lf.response, lf.error) {
            (Some(r), _) => {
                if r.status == 429 || r.status == 503 {
                    incomplete += 1;
                }
                checked.push(json!({"path": u.path, "status": r.status}));
            }
            (None, e) => {
                incomplete += 1;
                checked.push(json!({
                    "path": u.path,
                    "error": e.map_or_else(|| "no answer".into(), |e| e.to_string()),
                }));
            }
        }
    }
    details["links"] = json!({"found": total_links, "checked": checked});
    if page.status >= 400 {
        let why = format!("{target} answered {}", page.status);
        return done("completed", Some(page.status), Some(why), details);
    }
    if incomplete > 0 {
        let why = format!("{incomplete} of the sampled links could not be checked");
        return done("partial", Some(page.status), Some(why), details);
    }
    done("completed", Some(page.status), None, details)
}

fn between(s: &str, open: &str, close: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let a = lower.find(open)? + open.len();
    let b = a + lower[a..].find(close)?;
    Some(s[a..b].trim().to_string())
}

fn meta_description(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let at = lower.find("name=\"description\"")?;
    let tag_start = lower[..at].rfind('<')?;
    let tag_end = at + lower[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let c = tag.to_ascii_lowercase().find("content=\"")? + "content=\"".len();
    let rest = &tag[c..];
    Some(rest[..rest.find('"')?].to_string())
}

fn hrefs(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("href=") {
        let start = pos + i + 5;
        let quote = html[start..].chars().next();
        let (from, to) = match quote {
            Some(q @ ('"' | '\'')) => {
                let end = html[start + 1..].find(q).map(|e| start + 1 + e);
                (start + 1, end)
            }
            _ => (
                start,
                html[start..]
                    .find(|c: char| c.is_whitespace() || c == '>')
                    .map(|e| start + e),
            ),
        };
        let Some(to) = to else { break };
        out.push(html[from..to].to_string());
        pos = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bits() {
        let h = r#"<html><head><TITLE> Home </TITLE><meta name="description" content="A site"></head>
            <a href="/a">a</a> <a href='b.html'>b</a> <a href=/c>c</a>"#;
        assert_eq!(between(h, "<title>", "</title>").as_deref(), Some("Home"));
        assert_eq!(meta_description(h).as_deref(), Some("A site"));
        assert_eq!(hrefs(h), ["/a", "b.html", "/c"]);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let p = Policy {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..Policy::default()
        };
        let waits: Vec<u128> = (1..=4).map(|n| p.backoff_after(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
    }

    #[test]
    fn retry_after_forms() {
        let r = Response::default().with_header("Retry-After", "3");
        assert_eq!(retry_after(&r), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_mins(2);
        let r = Response::default().with_header("Retry-After", &httpdate::fmt_http_date(later));
        let d = retry_after(&r).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_mins(2),
            "{d:?}"
        );
        assert_eq!(retry_after(&Response::default()), None);
    }

    #[test]
    fn policy_from_env() {
        let p =
            Policy::from_env(&|k| (k == "FETCH_TIMEOUT_MS").then(|| "250".to_string())).unwrap();
        assert_eq!(p.timeout, Duration::from_millis(250));
        let e =
            Policy::from_env(&|k| (k == "FETCH_ATTEMPTS").then(|| "0".to_string())).unwrap_err();
        assert!(e[0].contains("FETCH_ATTEMPTS"));
    }
}
