//! What a `chaos NAME { ... }` block asks for, read from the step's evaluated
//! inputs and checked: the proxy (`upstream`, `listen`, `seed`) or the
//! container target, and each `fault KIND { ... }` with its parameters, its
//! `rate`, its `after`/`for` window and its path and method filters. Every
//! unknown or ill-typed parameter is an error that names the fault.

use indexmap::IndexMap;
use pipe_lang::Value;

/// Kinds that act on one HTTP request (or its connection).
pub const REQUEST_KINDS: &[&str] = &[
    "latency",
    "timeout",
    "http_status",
    "reset",
    "close",
    "bandwidth",
    "slow_body",
    "slicer",
];
/// Kinds that change the whole proxy.
pub const PROXY_KINDS: &[&str] = &["refuse", "dns", "tls"];
/// Kinds that act on a container through the Engine API.
pub const CONTAINER_KINDS: &[&str] = &["kill", "pause", "restart"];

/// Parameters every fault takes.
const COMMON: &[&str] = &["kind", "rate", "after", "for", "path", "method"];

/// The parameters of each kind, besides [`COMMON`].
fn params(kind: &str) -> &'static [&'static str] {
    match kind {
        "latency" => &["delay", "jitter"],
        "http_status" => &["status", "retry_after", "body", "headers"],
        "bandwidth" => &["bytes_per_second"],
        "slow_body" | "slicer" => &["chunk", "delay"],
        "kill" => &["signal"],
        _ => &[],
    }
}

/// One declared fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: String,
    /// Probability that a matching request gets the fault.
    pub rate: f64,
    /// Active from this long after the chaos step started (ms).
    pub after_ms: u64,
    /// Active for this long after `after` (ms); `None`: until the stage ends.
    pub for_ms: Option<u64>,
    /// Glob patterns over the request path; empty: every path.
    pub paths: Vec<String>,
    /// Upper-case methods; empty: every method.
    pub methods: Vec<String>,
    /// `latency`: base delay; `slow_body`: pause between slices.
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub status: u16,
    /// The `Retry-After` header, verbatim (seconds or an HTTP date).
    pub retry_after: Option<String>,
    pub body: Option<String>,
    pub headers: Vec<(String, String)>,
    pub bytes_per_second: u64,
    /// `slow_body`: bytes per slice.
    pub chunk: usize,
    /// `kill`: the signal sent.
    pub signal: String,
}

impl Fault {
    /// A fault of `kind` with every parameter at its default.
    pub fn new(kind: &str) -> Fault {
        Fault {
            kind: kind.to_string(),
            rate: 1.0,
            after_ms: 0,
            for_ms: None,
            paths: Vec::new(),
            methods: Vec::new(),
            delay_ms: if kind == "latency" { 1000 } else { 10 },
            jitter_ms: 0,
            status: 503,
            retry_after: None,
            body: None,
            headers: Vec::new(),
            bytes_per_second: 1024,
            chunk: 1,
            signal: "SIGKILL".into(),
        }
    }

    /// Whether the fault's window covers `t_ms` after the start.
    pub fn active_at(&self, t_ms: u64) -> bool {
        t_ms >= self.after_ms && self.for_ms.is_none_or(|f| t_ms < self.after_ms + f)
    }

    /// Whether a request with this method and path is subject to the fault.
    pub fn selects(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.paths.is_empty()
                || self.paths.iter().any(|p| {
                    globset::Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(path))
                }))
    }

    /// A short description for logs: `http_status 429 (rate 0.3)`.
    pub fn describe(&self) -> String {
        let mut s = self.kind.clone();
        match self.kind.as_str() {
            "latency" => s.push_str(&format!(" {}ms±{}ms", self.delay_ms, self.jitter_ms)),
            "http_status" => s.push_str(&format!(" {}", self.status)),
            "bandwidth" => s.push_str(&format!(" {} B/s", self.bytes_per_second)),
            "slow_body" | "slicer" => {
                s.push_str(&format!(" {} B every {}ms", self.chunk, self.delay_ms));
            }
            "kill" => s.push_str(&format!(" {}", self.signal)),
            _ => {}
        }
        if self.rate < 1.0 {
            s.push_str(&format!(" (rate {})", self.rate));
        }
        if self.after_ms > 0 || self.for_ms.is_some() {
            s.push_str(&format!(" from {}ms", self.after_ms));
            if let Some(f) = self.for_ms {
                s.push_str(&format!(" for {f}ms"));
            }
        }
        s
    }
}

/// A whole chaos block.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    /// `http://host:port` (an optional path prefix is kept).
    pub upstream: Option<String>,
    pub listen: String,
    pub seed: u64,
    /// Whether `seed` was given (otherwise one was drawn and is reported).
    pub seeded: bool,
    pub container: Option<String>,
    pub faults: Vec<Fault>,
}

impl Spec {
    /// A proxy in front of `upstream` with no fault, listening on a free port.
    pub fn proxy(name: &str, upstream: &str) -> Spec {
        Spec {
            name: name.to_string(),
            upstream: Some(upstream.to_string()),
            listen: "127.0.0.1:0".into(),
            seed: 0,
            seeded: true,
            container: None,
            faults: Vec::new(),
        }
    }

    /// Reads and checks the inputs of a chaos step.
    pub fn from_inputs(name: &str, inputs: &IndexMap<String, Value>) -> Result<Spec, String> {
        let upstream = opt_str(inputs, "upstream")?;
        let container = opt_str(inputs, "container")?;
        if upstream.is_none() && container.is_none() {
            return Err("a chaos block needs `upstream` (a proxy) or `container`".into());
        }
        if upstream.is_some() && container.is_some() {
            return Err(
                "a chaos block is a proxy (`upstream`) or a container target (`container`), not both: write two blocks"
                    .into(),
            );
        }
        if let Some(u) = &upstream {
            if !u.starts_with("http://") {
                return Err(format!(
                    "`upstream = \"{u}\"`: the proxy forwards to a plain `http://host:port` upstream"
                ));
            }
        }
        let (seed, seeded) = match inputs.get("seed") {
            None | Some(Value::Null) => {
                // Short, so that it is easy to copy into `seed = ...`.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                ((t ^ u64::from(std::process::id()) << 20) % 1_000_000, false)
            }
            Some(Value::Int(i)) if *i >= 0 => (*i as u64, true),
            Some(other) => {
                return Err(format!(
                    "`seed` must be a non-negative integer, not {}",
                    other.type_name()
                ))
            }
        };
        let listen = opt_str(inputs, "listen")?.unwrap_or_else(|| "127.0.0.1:0".into());
        let mut faults = Vec::new();
        if let Some(v) = inputs.get("faults") {
            let Value::List(items) = v else {
                return Err("`faults` must be a list of fault blocks".into());
            };
            for (n, item) in items.iter().enumerate() {
                let Value::Map(m) = item else {
                    return Err(format!("fault #{} is not a block", n + 1));
                };
                let f = fault(m).map_err(|e| {
                    let kind = m.get("kind").and_then(Value::as_str).unwrap_or("?");
                    format!("fault #{} `{kind}`: {e}", n + 1)
                })?;
                let allowed = if container.is_some() {
                    CONTAINER_KINDS
                } else {
                    &[REQUEST_KINDS, PROXY_KINDS].concat()[..]
                };
                if !allowed.contains(&f.kind.as_str()) {
                    return Err(if container.is_some() {
                        format!(
                            "fault `{}` acts on HTTP traffic: a `container` block takes {}",
                            f.kind,
                            CONTAINER_KINDS.join(", ")
                        )
                    } else {
                        format!(
                            "fault `{}` acts on a container: give the block `container = \"<name>\"` instead of `upstream`",
                            f.kind
                        )
                    });
                }
                faults.push(f);
            }
        }
        Ok(Spec {
            name: name.to_string(),
            upstream,
            listen,
            seed,
            seeded,
            container,
            faults,
        })
    }

    pub fn has(&self, kind: &str) -> bool {
        self.faults.iter().any(|f| f.kind == kind)
    }
}

fn opt_str(m: &IndexMap<String, Value>, key: &str) -> Result<Option<String>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "`{key}` must be a string, not {}",
            other.type_name()
        )),
    }
}

fn duration(v: &Value, key: &str) -> Result<u64, String> {
    match v {
        Value::Duration(ms) => Ok(*ms),
        Value::Int(s) if *s >= 0 => Ok(*s as u64 * 1000),
        Value::Str(s) => pipe_lang::value::parse_duration(s)
            .ok_or_else(|| format!("`{key} = \"{s}\"` is not a duration (e.g. 500ms, 2s)")),
        other => Err(format!(
            "`{key}` must be a duration (e.g. 500ms, 2s), not {}",
            other.type_name()
        )),
    }
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Str(s) => Ok(vec![s.clone()]),
        Value::List(l) => l
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{key}` must list strings"))
            })
            .collect(),
        other => Err(format!(
            "`{key}` must be a string or a list of strings, not {}",
            other.type_name()
        )),
    }
}

fn positive(v: &Value, key: &str) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i > 0 => Ok(*i as u64),
        _ => Err(format!("`{key}` must be a positive integer")),
    }
}

fn fault(m: &IndexMap<String, Value>) -> Result<Fault, String> {
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("a fault needs a kind")?;
    let known: Vec<&str> = COMMON.iter().chain(params(kind)).copied().collect();
    let mut f = Fault::new(kind);
    for (k, v) in m {
        match k.as_str() {
            "kind" => {}
            "rate" => {
                f.rate = match v {
                    Value::Float(x) => *x,
                    Value::Int(i) => *i as f64,
                    _ => f64::NAN,
                };
                if !(0.0..=1.0).contains(&f.rate) {
                    return Err("`rate` is a probability between 0 and 1".into());
                }
                if f.rate < 1.0 && (PROXY_KINDS.contains(&kind) || CONTAINER_KINDS.contains(&kind))
                {
                    return Err(format!(
                        "`rate` applies to requests; `{kind}` acts once, in its `after`/`for` window"
                    ));
                }
            }
            "after" => f.after_ms = duration(v, k)?,
            "for" => f.for_ms = Some(duration(v, k)?),
            "path" => f.paths = strings(v, k)?,
            "method" => {
                f.methods = strings(v, k)?
                    .into_iter()
                    .map(|s| s.to_ascii_uppercase())
                    .collect();
            }
            "delay" => f.delay_ms = duration(v, k)?,
            "jitter" => f.jitter_ms = duration(v, k)?,
            "status" => {
                f.status = match v {
                    Value::Int(i) if (100..=599).contains(i) => *i as u16,
                    _ => return Err("`status` must be an HTTP status code (100-599)".into()),
                };
            }
            "retry_after" => {
                f.retry_after = Some(match v {
                    // Whole seconds, rounded up: `Retry-After` has no fractions.
                    Value::Duration(ms) => ms.div_ceil(1000).to_string(),
                    Value::Int(i) if *i >= 0 => i.to_string(),
                    // `"2s"`, or an HTTP date, sent as it is.
                    Value::Str(s) => pipe_lang::value::parse_duration(s)
                        .map_or_else(|| s.clone(), |ms| ms.div_ceil(1000).to_string()),
                    _ => return Err("`retry_after` must be a duration (e.g. 2s)".into()),
                });
            }
            "body" => {
                f.body = Some(v.as_str().ok_or("`body` must be a string")?.to_string());
            }
            "headers" => {
                let Value::Map(h) = v else {
                    return Err("`headers` must be a map: `{ X_Y = \"z\" }`".into());
                };
                f.headers = h
                    .iter()
                    .map(|(k, v)| (k.replace('_', "-"), crate::docker::value_text(v)))
                    .collect();
            }
            "bytes_per_second" => f.bytes_per_second = positive(v, k)?,
            "chunk" => f.chunk = positive(v, k)? as usize,
            "signal" => {
                let s = v
                    .as_str()
                    .ok_or("`signal` must be a string, e.g. \"SIGKILL\"")?;
                let s = s.to_ascii_uppercase();
                f.signal = if s.starts_with("SIG") {
                    s
                } else {
                    format!("SIG{s}")
                };
            }
            other => {
                let mut e = format!("unknown parameter `{other}`");
                if let Some(n) = known
                    .iter()
                    .filter(|c| **c != "kind")
                    .min_by_key(|c| strsim::levenshtein(other, c))
                    .filter(|c| strsim::levenshtein(other, c) <= 2)
                {
                    e.push_str(&format!(" (did you mean `{n}`?)"));
                }
                e.push_str(&format!("; `{kind}` takes: {}", known[1..].join(", ")));
                return Err(e);
            }
        }
    }
    for p in &f.paths {
        globset::Glob::new(p).map_err(|e| format!("`path = \"{p}\"`: {e}"))?;
    }
    if kind == "http_status" && !m.contains_key("status") {
        return Err("`http_status` needs `status`, e.g. `status = 429`".into());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(json: &str) -> IndexMap<String, Value> {
        match Value::from_json(&serde_json::from_str(json).unwrap()) {
            Value::Map(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn reads_a_proxy_block() {
        let s = Spec::from_inputs(
            "api",
            &inputs(
                r#"{"upstream":"http://127.0.0.1:1","seed":7,"faults":[
                  {"kind":"http_status","status":429,"retry_after":"2s","rate":0.3,"path":"/api/*","method":"get"},
                  {"kind":"latency","delay":"200ms","jitter":"50ms","after":"1s","for":"2s"}]}"#,
            ),
        )
        .unwrap();
        assert_eq!((s.seed, s.seeded), (7, true));
        let f = &s.faults[0];
        assert_eq!(
            (f.status, f.retry_after.as_deref(), f.rate),
            (429, Some("2"), 0.3)
        );
        assert!(f.selects("GET", "/api/x") && !f.selects("POST", "/api/x"));
        assert!(!f.selects("GET", "/other"));
        let l = &s.faults[1];
        assert_eq!((l.delay_ms, l.jitter_ms), (200, 50));
        assert!(!l.active_at(999) && l.active_at(1000) && l.active_at(2999) && !l.active_at(3000));
    }

    #[test]
    fn errors_name_the_fault_and_the_fix() {
        let e = Spec::from_inputs(
            "api",
            &inputs(r#"{"upstream":"http://h:1","faults":[{"kind":"latency","dealy":"1s"}]}"#),
        )
        .unwrap_err();
        assert!(
            e.contains("fault #1 `latency`: unknown parameter `dealy` (did you mean `delay`?)"),
            "{e}"
        );
        let e = Spec::from_inputs(
            "api",
            &inputs(r#"{"upstream":"http://h:1","faults":[{"kind":"kill"}]}"#),
        )
        .unwrap_err();
        assert!(e.contains("acts on a container"), "{e}");
        let e = Spec::from_inputs("api", &inputs(r#"{"upstream":"https://h:1"}"#)).unwrap_err();
        assert!(e.contains("plain `http://host:port`"), "{e}");
        let e = Spec::from_inputs(
            "api",
            &inputs(r#"{"upstream":"http://h:1","faults":[{"kind":"http_status"}]}"#),
        )
        .unwrap_err();
        assert!(e.contains("needs `status`"), "{e}");
        let e = Spec::from_inputs(
            "api",
            &inputs(r#"{"upstream":"http://h:1","faults":[{"kind":"refuse","rate":0.5}]}"#),
        )
        .unwrap_err();
        assert!(e.contains("acts once"), "{e}");
    }

    #[test]
    fn an_unseeded_block_draws_a_seed() {
        let s = Spec::from_inputs(
            "c",
            &inputs(r#"{"container":"w","faults":[{"kind":"kill","signal":"term"}]}"#),
        )
        .unwrap();
        assert!(!s.seeded);
        assert_eq!(s.faults[0].signal, "SIGTERM");
    }
}
