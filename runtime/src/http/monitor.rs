//! `http.monitor`: scrapes a Prometheus text endpoint every `interval` for
//! `window`, and fails as soon as the share of error requests since the first
//! scrape passes `max_error_rate`. Errors and totals are counter selectors in
//! PromQL's form, `http_requests_total{status=~"5.."}`; the text format is
//! parsed by the `prometheus-parse` crate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pipe_lang::value::format_duration;
use prometheus_parse::{Sample, Scrape};
use regex::Regex;
use reqwest::Method;

use super::client::{client, parse_url, redact_url, Req};
use super::step::{Ctx, Failure, Outputs};

/// A metric name and label matchers.
#[derive(Debug)]
pub(crate) struct Selector {
    pub name: String,
    matchers: Vec<Matcher>,
    text: String,
}

#[derive(Debug)]
enum Matcher {
    Eq(String, String),
    Ne(String, String),
    Re(Regex, String),
    NotRe(Regex, String),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let t = text.trim();
        let (name, body) = match t.find('{') {
            Some(i) => {
                let inner = t[i + 1..]
                    .strip_suffix('}')
                    .ok_or_else(|| format!("`{text}`: a selector ends with `}}`"))?;
                (t[..i].trim(), inner)
            }
            None => (t, ""),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("`{text}`: expected a metric name"));
        }
        let mut matchers = Vec::new();
        let mut rest = body.trim();
        while !rest.is_empty() {
            let op_at = rest
                .find(['=', '!'])
                .ok_or_else(|| format!("`{text}`: expected label=\"value\""))?;
            let label = rest[..op_at].trim().to_string();
            let after = &rest[op_at..];
            let (op, after) = ["=~", "!~", "!=", "="]
                .iter()
                .find_map(|op| after.strip_prefix(op).map(|a| (*op, a)))
                .ok_or_else(|| format!("`{text}`: unknown matcher after `{label}`"))?;
            let after = after.trim_start();
            let quoted = after
                .strip_prefix('"')
                .ok_or_else(|| format!("`{text}`: the value of `{label}` must be quoted"))?;
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("`{text}`: unclosed quote"))?;
            let value = quoted[..end].to_string();
            let re = |label: &str| {
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("`{text}`: bad regex for `{label}`: {e}"))
            };
            matchers.push(match op {
                "=" => Matcher::Eq(label, value.clone()),
                "!=" => Matcher::Ne(label, value.clone()),
                "=~" => Matcher::Re(re(&label)?, label),
                _ => Matcher::NotRe(re(&label)?, label),
            });
            rest = quoted[end + 1..].trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        }
        Ok(Selector {
            name: name.to_string(),
            matchers,
            text: t.to_string(),
        })
    }

    fn matches(&self, s: &Sample) -> bool {
        s.metric == self.name
            && self.matchers.iter().all(|m| {
                let get = |l: &str| s.labels.get(l).unwrap_or("");
                match m {
                    Matcher::Eq(l, v) => get(l) == v,
                    Matcher::Ne(l, v) => get(l) != v,
                    Matcher::Re(r, l) => r.is_match(get(l)),
                    Matcher::NotRe(r, l) => !r.is_match(get(l)),
                }
            })
    }

    /// The value of every matching series, by its labels.
    fn series(&self, scrape: &Scrape) -> HashMap<String, f64> {
        scrape
            .samples
            .iter()
            .filter(|s| self.matches(s))
            .filter_map(|s| {
                let (prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v)
                | prometheus_parse::Value::Gauge(v)) = s.value
                else {
                    return None;
                };
                let mut labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                Some((labels.join(","), v))
            })
            .collect()
    }

    /// How much the matching counters grew from `base` to `now`. A series
    /// that is new counts from zero; one that went down was reset.
    pub fn increase(&self, base: &Scrape, now: &Scrape) -> f64 {
        let before = self.series(base);
        self.series(now)
            .iter()
            .map(|(k, v)| match before.get(k) {
                Some(b) if v >= b => v - b,
                _ => *v,
            })
            .fold(0.0, |a, b| a + b)
    }
}

pub(crate) async fn monitor(ctx: Ctx) -> Result<Outputs, Failure> {
    let url = parse_url(&ctx.str("metrics")?, "metrics")?;
    let window = ctx.duration("window", Duration::from_mins(2))?;
    let interval = ctx
        .duration("interval", Duration::from_secs(10))?
        .max(Duration::from_millis(10));
    let total_text = ctx
        .opt_str("total")?
        .unwrap_or_else(|| "http_requests_total".into());
    let errors_text = ctx
        .opt_str("errors")?
        .unwrap_or_else(|| "http_requests_total{status=~\"5..\"}".into());
    let total_sel = Selector::parse(&total_text).map_err(Failure::config)?;
    let errors_sel = Selector::parse(&errors_text).map_err(Failure::config)?;
    let max_rate = ctx.float("max_error_rate")?.unwrap_or(0.05);
    let min_requests = ctx.int("min_requests", 1)?.max(0) as f64;
    let client = client()?;
    let scrape = |n: u32| {
        let req = Req::new(
            Method::GET,
            url.clone(),
            interval.max(Duration::from_secs(5)),
        );
        let client = client.clone();
        async move {
            let resp = req.send(&client, n).await?;
            if resp.status != 200 {
                return Err(Failure::transient(
                    format!(
                        "scraping {} answered {} (scrape {n})",
                        redact_url(&req.url),
                        resp.status
                    ),
                    None,
                ));
            }
            Scrape::parse(resp.body.lines().map(|l| Ok(l.to_string()))).map_err(|e| {
                Failure::permanent(format!(
                    "{} is not Prometheus text format: {e}",
                    redact_url(&req.url)
                ))
            })
        }
    };
    let start = Instant::now();
    let base = scrape(1).await?;
    ctx.log(format!(
        "watching {} for {}: fail above {} of `{}` over `{}`",
        redact_url(&url),
        format_duration(window.as_millis() as u64),
        percent(max_rate),
        errors_sel.text,
        total_sel.text
    ));
    let mut n = 1;
    let (mut requests, mut errors) = (0.0, 0.0);
    while start.elapsed() < window {
        let left = window.saturating_sub(start.elapsed());
        tokio::time::sleep(interval.min(left)).await;
        n += 1;
        let now = scrape(n).await?;
        requests = total_sel.increase(&base, &now);
        errors = errors_sel.increase(&base, &now);
        let rate = if requests > 0.0 {
            errors / requests
        } else {
            0.0
        };
        let at = format_duration(start.elapsed().as_millis() as u64);
        ctx.log(format!(
            "after {at}: {errors} errors in {requests} requests ({})",
            percent(rate)
        ));
        if requests >= min_requests && requests > 0.0 && rate > max_rate {
            return Err(Failure::permanent(format!(
                "error rate {} ({errors} of {requests} requests matching `{}` over `{}`) exceeds max_error_rate {} after {at} of the {} window",
                percent(rate),
                errors_sel.text,
                total_sel.text,
                percent(max_rate),
                format_duration(window.as_millis() as u64)
            )));
        }
    }
    let rate = if requests > 0.0 {
        errors / requests
    } else {
        0.0
    };
    if requests < min_requests {
        ctx.warn(format!(
            "warning: only {requests} requests in the window (min_requests = {min_requests}): too little traffic to judge"
        ));
    }
    let mut out = Outputs::new();
    out.insert("error_rate".into(), format!("{rate:.4}"));
    out.insert("requests".into(), requests.to_string());
    out.insert("errors".into(), errors.to_string());
    Ok(out)
}

fn percent(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    }

    #[test]
    fn selectors_match_labels_and_count_increases() {
        let sel = Selector::parse(r#"http_requests_total{status=~"5..", method!="HEAD"}"#).unwrap();
        let all = Selector::parse("http_requests_total").unwrap();
        let a = scrape(
            "# TYPE http_requests_total counter\n\
             http_requests_total{status=\"200\",method=\"GET\"} 100\n\
             http_requests_total{status=\"500\",method=\"HEAD\"} 7\n",
        );
        let b = scrape(
            "# TYPE http_requests_total counter\n\
             http_requests_total{status=\"200\",method=\"GET\"} 150\n\
             http_requests_total{status=\"500\",method=\"HEAD\"} 9\n\
             http_requests_total{status=\"503\",method=\"GET\"} 5\n",
        );
        assert!((sel.increase(&a, &b) - 5.0).abs() < 1e-9);
        assert!((all.increase(&a, &b) - 57.0).abs() < 1e-9);
        assert!(Selector::parse("x{a=b}").is_err());
        assert!(Selector::parse("{a=\"b\"}").is_err());
    }
}
