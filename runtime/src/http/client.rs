//! Sending one request with reqwest (rustls, the platform's trust roots never
//! bypassed) and turning what went wrong into a message that names the host,
//! port and attempt, with a retry [`Class`]: refused, reset, DNS, TLS and
//! timeout each read differently. A request that is not idempotent (POST or
//! PATCH without an `Idempotency-Key`) is not retried once its body may have
//! reached the server, unless the step allows it.

use std::error::Error as _;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::step::Failure;
use crate::retry::{parse_retry_after, Class};

/// One request, ready to send.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
    pub timeout: Duration,
    /// Retry a non-idempotent request even after its body was sent.
    pub retry_unsafe: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    Text(String),
    Json(serde_json::Value),
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Resp {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The headers as a JSON object (repeated headers joined by `, `).
    pub fn headers_json(&self) -> String {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.headers {
            let v = String::from_utf8_lossy(v.as_bytes()).to_string();
            match m.get_mut(k.as_str()) {
                Some(serde_json::Value::String(s)) => {
                    s.push_str(", ");
                    s.push_str(&v);
                }
                _ => {
                    m.insert(k.as_str().to_string(), serde_json::Value::String(v));
                }
            }
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// The client every HTTP step uses. Certificates are always verified.
pub(crate) fn client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("pipe/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(10))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Failure::config(format!("cannot set up the HTTP client: {e}")))
}

/// Parses a URL, with a message that says which input was wrong.
pub(crate) fn parse_url(text: &str, what: &str) -> Result<Url, Failure> {
    let url = Url::parse(text)
        .map_err(|e| Failure::config(format!("`{what}` is not a URL ({e}): {text}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::config(format!(
            "`{what}` must be an http or https URL, not {}",
            url.scheme()
        )));
    }
    Ok(url)
}

impl Req {
    pub fn new(method: Method, url: Url, timeout: Duration) -> Req {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: None,
            timeout,
            retry_unsafe: false,
        }
    }

    /// `host:port` for messages.
    pub fn authority(&self) -> String {
        authority(&self.url)
    }

    /// POST and PATCH without an idempotency key may act twice if repeated.
    pub fn is_idempotent(&self) -> bool {
        !matches!(self.method, Method::POST | Method::PATCH)
            || self
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
    }

    fn may_repeat(&self) -> bool {
        self.retry_unsafe || self.is_idempotent()
    }

    /// Sends the request and reads the whole body.
    pub async fn send(&self, client: &reqwest::Client, attempt: u32) -> Result<Resp, Failure> {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Failure::config(format!("`{k}` is not a valid header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| Failure::config(format!("the value of header `{k}` is not valid")))?;
            headers.append(name, value);
        }
        let mut rb = client
            .request(self.method.clone(), self.url.clone())
            .headers(headers)
            .timeout(self.timeout);
        match &self.body {
            Some(Body::Text(t)) => rb = rb.body(t.clone()),
            Some(Body::Json(j)) => {
                if !self
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    rb = rb.header("content-type", "application/json");
                }
                rb = rb.body(j.to_string());
            }
            None => {}
        }
        let start = Instant::now();
        let resp = rb
            .send()
            .await
            .map_err(|e| self.failure(&e, attempt, false))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| self.failure(&e, attempt, true))?;
        Ok(Resp {
            status,
            headers,
            body,
            elapsed: start.elapsed(),
        })
    }

    /// Classifies a transport error.
    fn failure(&self, e: &reqwest::Error, attempt: u32, reading_body: bool) -> Failure {
        let at = self.authority();
        let chain = chain_text(e);
        let lower = chain.to_ascii_lowercase();
        let io_kind = io_kind(e);
        let connecting = e.is_connect();
        let (msg, transient) = if e.is_timeout() {
            let phase = if connecting {
                "connecting to"
            } else if reading_body {
                "reading the response body from"
            } else {
                "waiting for a response from"
            };
            (
                format!(
                    "timed out after {} {phase} {at} (attempt {attempt})",
                    pipe_lang::value::format_duration(self.timeout.as_millis() as u64)
                ),
                true,
            )
        } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
            (
                format!(
                    "DNS lookup failed for {at}: {} (attempt {attempt})",
                    innermost(e)
                ),
                true,
            )
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
        {
            return Failure::permanent(format!(
                "TLS handshake with {at} failed: {} (attempt {attempt}); the server's certificate is not trusted and pipe never falls back to an insecure connection",
                innermost(e)
            ));
        } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused)
            || lower.contains("connection refused")
        {
            (
                format!("connection refused by {at} (attempt {attempt})"),
                true,
            )
        } else if matches!(
            io_kind,
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
        ) || lower.contains("reset")
            || lower.contains("incomplete")
            || lower.contains("closed before")
            || lower.contains("end of file")
        {
            let phase = if reading_body {
                "while reading the response body"
            } else {
                "before a response"
            };
            (
                format!(
                    "connection to {at} reset {phase}: {} (attempt {attempt})",
                    innermost(e)
                ),
                true,
            )
        } else {
            (
                format!("request to {at} failed: {chain} (attempt {attempt})"),
                !e.is_builder(),
            )
        };
        if !transient {
            return Failure::permanent(msg);
        }
        // Refused, DNS and connect timeouts happen before the body leaves.
        if !connecting && !self.may_repeat() {
            return Failure::permanent(format!(
                "{msg}; not retried: a {} without an idempotency key may already have been applied (set `idempotency_key`, or `retry_unsafe = true` if repeating it is safe)",
                self.method
            ));
        }
        Failure::transient(msg, None)
    }

    /// The class of a response with an unexpected status: 429 and 503 are
    /// transient and carry `Retry-After`, other 5xx are transient unless the
    /// request must not be repeated, 4xx and the rest are permanent.
    pub fn status_class(&self, resp: &Resp) -> (Class, Option<String>) {
        match resp.status {
            429 | 503 => {
                let after = resp
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                (Class::Transient { after }, None)
            }
            500..=599 if self.may_repeat() => (Class::Transient { after: None }, None),
            500..=599 => (
                Class::Permanent,
                Some(format!(
                    "not retried: a {} without an idempotency key may already have been applied",
                    self.method
                )),
            ),
            _ => (Class::Permanent, None),
        }
    }
}

/// `host:port` of a URL, the port filled in from the scheme.
pub(crate) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

fn chain_text(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// The most specific cause, which is the one a person can act on.
fn innermost(e: &reqwest::Error) -> String {
    let mut last = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    last
}

fn io_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        src = s.source();
    }
    None
}

/// Renders an outcome for the log: `GET http://h:p/x → 200 in 12ms`.
pub(crate) fn describe(req: &Req, resp: &Resp) -> String {
    format!(
        "{} {} -> {} in {}ms",
        req.method,
        redact_url(&req.url),
        resp.status,
        resp.elapsed.as_millis()
    )
}

/// A URL for logs and messages: no password, no query string values.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.to_string()).collect();
        u.set_query(None);
        let mut q = u.query_pairs_mut();
        for k in keys {
            q.append_pair(&k, "***");
        }
        drop(q);
    }
    u.to_string()
}
