//! `prom.query`: a PromQL instant query against a Prometheus server's HTTP
//! API (`GET /api/v1/query`), its first value compared with `below` and
//! `above`.

use std::time::Duration;

use reqwest::Method;

use super::client::{client, parse_url, redact_url, Req};
use super::step::{Ctx, Failure, Outputs};

pub(crate) async fn query(ctx: Ctx) -> Result<Outputs, Failure> {
    let server = ctx.str("server")?;
    let promql = ctx.str("query")?;
    let below = ctx.float("below")?;
    let above = ctx.float("above")?;
    let mut url = parse_url(
        &format!("{}/api/v1/query", server.trim_end_matches('/')),
        "server",
    )?;
    url.query_pairs_mut().append_pair("query", &promql);
    let req = Req::new(Method::GET, url, Duration::from_secs(30));
    let resp = req.send(&client()?, ctx.attempt).await?;
    let at = redact_url(&parse_url(&server, "server")?);
    let doc = resp.json().ok_or_else(|| {
        Failure::permanent(format!(
            "{at} answered {} without a Prometheus API response",
            resp.status
        ))
    })?;
    if doc["status"] != "success" {
        let msg = format!(
            "Prometheus at {at} rejected `{promql}`: {} ({})",
            doc["error"].as_str().unwrap_or("no error message"),
            doc["errorType"].as_str().unwrap_or("error")
        );
        return Err(if resp.status >= 500 || resp.status == 429 {
            Failure::transient(msg, None)
        } else {
            Failure::permanent(msg)
        });
    }
    let value = first_value(&doc["data"])
        .ok_or_else(|| Failure::permanent(format!("`{promql}` returned no data from {at}")))?;
    ctx.log(format!("{promql} = {value}"));
    if let Some(b) = below {
        if value.is_nan() || value >= b {
            return Err(Failure::permanent(format!(
                "`{promql}` is {value}, not below {b}"
            )));
        }
    }
    if let Some(a) = above {
        if value.is_nan() || value <= a {
            return Err(Failure::permanent(format!(
                "`{promql}` is {value}, not above {a}"
            )));
        }
    }
    let mut out = Outputs::new();
    out.insert("value".into(), value.to_string());
    Ok(out)
}

/// The first sample of a vector, scalar or matrix result.
fn first_value(data: &serde_json::Value) -> Option<f64> {
    let pair = match data["resultType"].as_str()? {
        "scalar" | "string" => &data["result"],
        "vector" => &data["result"][0]["value"],
        "matrix" => {
            let values = data["result"][0]["values"].as_array()?;
            values.last()?
        }
        _ => return None,
    };
    let text = pair.get(1)?.as_str()?;
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_result_type() {
        let v = serde_json::json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]});
        assert_eq!(first_value(&v), Some(0.25));
        let s = serde_json::json!({"resultType": "scalar", "result": [1.0, "3"]});
        assert_eq!(first_value(&s), Some(3.0));
        let empty = serde_json::json!({"resultType": "vector", "result": []});
        assert_eq!(first_value(&empty), None);
    }
}
