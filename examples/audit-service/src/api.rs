//! The audit API: health, database health, Prometheus metrics and the audit
//! resource (create with a bearer token, read back). Every answer is counted
//! in `http_requests_total{status="..."}`; `FAIL_RATE` turns a share of the
//! answers (all but `/health` and `/metrics`) into 500s for the rollback demo.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::config::Config;
use crate::db;
use crate::http::{Request, Response};

/// The API with its counters.
pub struct Api {
    pub config: Config,
    requests: Mutex<BTreeMap<u16, u64>>,
    /// Requests subject to `FAIL_RATE`, to spread the failures evenly.
    served: AtomicU64,
}

impl Api {
    pub fn new(config: Config) -> Api {
        Api {
            config,
            requests: Mutex::new(BTreeMap::new()),
            served: AtomicU64::new(0),
        }
    }

    /// Answers one request and counts it.
    pub fn handle(&self, req: &Request) -> Response {
        let mut resp = if req.path != "/health" && req.path != "/metrics" && self.injected_failure()
        {
            Response::json(
                500,
                &json!({"error": "injected failure (FAIL_RATE / BROKEN build)"}),
            )
        } else {
            self.route(req)
        };
        if let Some(origin) = req.header("origin") {
            if self
                .config
                .cors_origins
                .iter()
                .any(|o| o == origin || o == "*")
            {
                resp = resp
                    .with_header("Access-Control-Allow-Origin", origin)
                    .with_header("Vary", "Origin");
            }
        }
        resp = resp
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("X-Audit-Version", &self.config.build.version);
        *self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(resp.status)
            .or_default() += 1;
        resp
    }

    /// Fails `fail_rate` of the requests, evenly spread (no randomness: the
    /// n-th request fails when floor(n·rate) steps up).
    fn injected_failure(&self) -> bool {
        let rate = self.config.fail_rate;
        if rate <= 0.0 {
            return false;
        }
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        (n as f64 * rate).floor() > ((n - 1) as f64 * rate).floor()
    }

    fn route(&self, req: &Request) -> Response {
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["health"]) => self.health(),
            ("GET", ["health", "db"]) => self.health_db(),
            ("GET", ["metrics"]) => self.metrics(),
            ("POST", ["audits"]) => self.authorized(req, || self.create(req)),
            ("GET", ["audits"]) => self.authorized(req, || self.list()),
            ("GET", ["audits", id]) => self.authorized(req, || self.read(id)),
            ("OPTIONS", _) => Response::new(204, "text/plain", "")
                .with_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                .with_header(
                    "Access-Control-Allow-Headers",
                    "Authorization, Content-Type",
                ),
            (_, ["health" | "metrics" | "audits"] | ["health", "db"] | ["audits", _]) => {
                Response::json(
                    405,
                    &json!({"error": format!("{} is not allowed on {}", req.method, req.path)}),
                )
            }
            _ => Response::json(404, &json!({"error": format!("no route for {}", req.path)})),
        }
    }

    fn health(&self) -> Response {
        let b = &self.config.build;
        Response::json(
            200,
            &json!({
                "status": "ok",
                "service": "audit-api",
                "version": b.version,
                "git_sha": b.git_sha,
                "build_date": b.build_date,
                "environment": self.config.app_env,
            }),
        )
    }

    fn conn(&self) -> rusqlite::Result<Connection> {
        db::open(&self.config.database)
    }

    fn health_db(&self) -> Response {
        let check = || -> Result<u32, String> {
            let conn = self.conn().map_err(|e| e.to_string())?;
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(|e| e.to_string())?;
            db::current_version(&conn).map_err(|e| e.to_string())
        };
        let latest = db::embedded().last().map_or(0, |m| m.version);
        match check() {
            Ok(v) if v >= latest => {
                Response::json(200, &json!({"database": "ok", "schema_version": v}))
            }
            Ok(v) => Response::json(
                503,
                &json!({
                    "database": "outdated",
                    "schema_version": v,
                    "detail": format!("the schema is at version {v}; this build needs {latest}: run the migrations"),
                }),
            ),
            Err(e) => Response::json(503, &json!({"database": "error", "detail": e})),
        }
    }

    fn metrics(&self) -> Response {
        let mut out = String::from(
            "# HELP http_requests_total HTTP requests answered, by status code.\n# TYPE http_requests_total counter\n",
        );
        let counts = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (status, n) in &counts {
            out.push_str(&format!("http_requests_total{{status=\"{status}\"}} {n}\n"));
        }
        let b = &self.config.build;
        out.push_str(&format!(
            "# HELP audit_build_info The running build.\n# TYPE audit_build_info gauge\naudit_build_info{{version=\"{}\",git_sha=\"{}\"}} 1\n",
            b.version, b.git_sha
        ));
        if let Ok(by_status) = self.conn().and_then(|c| queue_counts(&c)) {
            out.push_str("# HELP audits Audits in the database, by status.\n# TYPE audits gauge\n");
            for (s, n) in by_status {
                out.push_str(&format!("audits{{status=\"{s}\"}} {n}\n"));
            }
        }
        Response::new(200, "text/plain; version=0.0.4", out)
    }

    fn authorized(&self, req: &Request, f: impl FnOnce() -> Response) -> Response {
        let token = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        match token {
            Some(t) if constant_time_eq(t.as_bytes(), self.config.api_token.as_bytes()) => f(),
            Some(_) => Response::json(401, &json!({"error": "invalid bearer token"})),
            None => Response::json(
                401,
                &json!({"error": "authentication required: send Authorization: Bearer <token>"}),
            )
            .with_header("WWW-Authenticate", "Bearer"),
        }
    }

    fn create(&self, req: &Request) -> Response {
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return Response::json(400, &json!({"error": format!("the body is not JSON: {e}")}))
            }
        };
        let Some(url) = body.get("url").and_then(Value::as_str) else {
            return Response::json(400, &json!({"error": "`url` (a string) is required"}));
        };
        if let Err(e) = crate::http::Url::parse(url) {
            return Response::json(400, &json!({"error": e}));
        }
        let result = (|| -> rusqlite::Result<Result<i64, i64>> {
            let conn = self.conn()?;
            let queued: i64 = conn.query_row(
                "SELECT COUNT(*) FROM audits WHERE status = 'queued'",
                [],
                |r| r.get(0),
            )?;
            if queued >= self.config.max_queue {
                return Ok(Err(queued));
            }
            conn.execute("INSERT INTO audits (url) VALUES (?1)", [url])?;
            Ok(Ok(conn.last_insert_rowid()))
        })();
        match result {
            Ok(Ok(id)) => Response::json(
                201,
                &json!({"id": id, "url": url, "status": "queued"}),
            )
            .with_header("Location", &format!("/audits/{id}")),
            Ok(Err(queued)) => Response::json(
                503,
                &json!({"error": format!("the queue is full ({queued} audits waiting): try again later")}),
            )
            .with_header("Retry-After", "5"),
            Err(e) => db_error(&e),
        }
    }

    fn read(&self, id: &str) -> Response {
        let Ok(id) = id.parse::<i64>() else {
            return Response::json(400, &json!({"error": format!("`{id}` is not an audit id")}));
        };
        let found = self.conn().and_then(|c| {
            c.query_row(
                "SELECT a.id, a.url, a.status, a.created_at, a.started_at, a.finished_at,
                        r.http_status, r.duration_ms, r.error, r.details
                 FROM audits a LEFT JOIN audit_results r ON r.audit_id = a.id
                 WHERE a.id = ?1",
                params![id],
                |r| {
                    let details: Option<String> = r.get(9)?;
                    Ok(json!({
                        "id": r.get::<_, i64>(0)?,
                        "url": r.get::<_, String>(1)?,
                        "status": r.get::<_, String>(2)?,
                        "created_at": r.get::<_, String>(3)?,
                        "started_at": r.get::<_, Option<String>>(4)?,
                        "finished_at": r.get::<_, Option<String>>(5)?,
                        "result": if r.get::<_, Option<i64>>(7)?.is_some() {
                            json!({
                                "http_status": r.get::<_, Option<i64>>(6)?,
                                "duration_ms": r.get::<_, Option<i64>>(7)?,
                                "error": r.get::<_, Option<String>>(8)?,
                                "details": details.and_then(|d| serde_json::from_str::<Value>(&d).ok()),
                            })
                        } else {
                            Value::Null
                        },
                    }))
                },
            )
            .optional()
        });
        match found {
            Ok(Some(v)) => Response::json(200, &v),
            Ok(None) => Response::json(404, &json!({"error": format!("no audit {id}")})),
            Err(e) => db_error(&e),
        }
    }

    fn list(&self) -> Response {
        let rows = self.conn().and_then(|c| {
            let mut st = c.prepare(
                "SELECT id, url, status, created_at FROM audits ORDER BY id DESC LIMIT 50",
            )?;
            let v: rusqlite::Result<Vec<Value>> = st
                .query_map([], |r| {
                    Ok(json!({
                        "id": r.get::<_, i64>(0)?,
                        "url": r.get::<_, String>(1)?,
                        "status": r.get::<_, String>(2)?,
                        "created_at": r.get::<_, String>(3)?,
                    }))
                })?
                .collect();
            v
        });
        match rows {
            Ok(v) => Response::json(200, &json!({ "audits": v })),
            Err(e) => db_error(&e),
        }
    }
}

fn db_error(e: &rusqlite::Error) -> Response {
    Response::json(503, &json!({"error": format!("database unavailable: {e}")}))
        .with_header("Retry-After", "2")
}

/// Audits by status.
pub fn queue_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut st =
        conn.prepare("SELECT status, COUNT(*) FROM audits GROUP BY status ORDER BY status")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Compares tokens without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Build;

    const TOKEN: &str = "test-token-0123456789";

    fn api(dir: &std::path::Path, fail_rate: f64) -> Api {
        let database = dir.join("audit.db");
        let mut conn = db::open(&database).unwrap();
        db::migrate_to(&mut conn, &db::embedded(), 3).unwrap();
        Api::new(Config {
            database,
            port: 0,
            api_token: TOKEN.into(),
            app_env: "test".into(),
            cors_origins: vec!["https://ok.example".into()],
            fail_rate,
            max_queue: 2,
            build: Build {
                version: "1.2.3".into(),
                git_sha: "abc".into(),
                build_date: "today".into(),
            },
        })
    }

    fn req(method: &str, path: &str, token: Option<&str>, body: &str) -> Request {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("Authorization".to_string(), format!("Bearer {t}")));
        }
        Request {
            method: method.into(),
            path: path.into(),
            headers,
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    fn body(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn health_reports_the_build() {
        let d = tempfile::tempdir().unwrap();
        let a = api(d.path(), 0.0);
        let r = a.handle(&req("GET", "/health", None, ""));
        assert_eq!(r.status, 200);
        assert_eq!(body(&r)["version"], "1.2.3");
        assert_eq!(body(&r)["git_sha"], "abc");
        let r = a.handle(&req("GET", "/health/db", None, ""));
        assert_eq!((r.status, body(&r)["database"].as_str()), (200, Some("ok")));
    }

    #[test]
    fn an_unmigrated_database_is_not_healthy() {
        let d = tempfile::tempdir().unwrap();
        let a = api(d.path(), 0.0);
        let mut conn = db::open(&a.config.database).unwrap();
        db::migrate_to(&mut conn, &db::embedded(), 1).unwrap();
        let r = a.handle(&req("GET", "/health/db", None, ""));
        assert_eq!(r.status, 503);
        assert!(body(&r)["detail"]
            .as_str()
            .unwrap()
            .contains("run the migrations"));
    }

    #[test]
    fn create_then_read_with_auth() {
        let d = tempfile::tempdir().unwrap();
        let a = api(d.path(), 0.0);
        let r = a.handle(&req("POST", "/audits", None, r#"{"url":"http://x.org"}"#));
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = a.handle(&req(
            "POST",
            "/audits",
            Some("wrong"),
            r#"{"url":"http://x.org"}"#,
        ));
        assert_eq!(r.status, 401);
        let r = a.handle(&req("GET", "/audits", None, ""));
        assert_eq!(r.status, 401);
        let r = a.handle(&req(
            "POST",
            "/audits",
            Some(TOKEN),
            r#"{"url":"http://x.org/p"}"#,
        ));
        assert_eq!(r.status, 201, "{}", r.text());
        let id = body(&r)["id"].as_i64().unwrap();
        assert_eq!(r.header("location"), Some(format!("/audits/{id}").as_str()));
        let r = a.handle(&req("GET", &format!("/audits/{id}"), Some(TOKEN), ""));
        assert_eq!(r.status, 200);
        assert_eq!(body(&r)["url"], "http://x.org/p");
        assert_eq!(body(&r)["status"], "queued");
        assert_eq!(body(&r)["result"], Value::Null);
        let r = a.handle(&req("GET", "/audits/999", Some(TOKEN), ""));
        assert_eq!(r.status, 404);
        let r = a.handle(&req("POST", "/audits", Some(TOKEN), r#"{"url":"nope"}"#));
        assert_eq!(r.status, 400);
        let r = a.handle(&req("POST", "/audits", Some(TOKEN), "{"));
        assert_eq!(r.status, 400);
        // Backpressure: the queue holds 2.
        let r = a.handle(&req(
            "POST",
            "/audits",
            Some(TOKEN),
            r#"{"url":"http://x.org/2"}"#,
        ));
        assert_eq!(r.status, 201);
        let r = a.handle(&req(
            "POST",
            "/audits",
            Some(TOKEN),
            r#"{"url":"http://x.org/3"}"#,
        ));
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("5"));
    }

    #[test]
    fn metrics_count_by_status() {
        let d = tempfile::tempdir().unwrap();
        let a = api(d.path(), 0.0);
        a.handle(&req("GET", "/health", None, ""));
        a.handle(&req("GET", "/health", None, ""));
        a.handle(&req("GET", "/nope", None, ""));
        a.handle(&req("DELETE", "/audits", None, ""));
        let m = a.handle(&req("GET", "/metrics", None, "")).text();
        assert!(m.contains("# TYPE http_requests_total counter\n"), "{m}");
        assert!(m.contains("http_requests_total{status=\"200\"} 2\n"), "{m}");
        assert!(m.contains("http_requests_total{status=\"404\"} 1\n"), "{m}");
        assert!(m.contains("http_requests_total{status=\"405\"} 1\n"), "{m}");
        assert!(
            m.contains("audit_build_info{version=\"1.2.3\",git_sha=\"abc\"} 1\n"),
            "{m}"
        );
    }

    #[test]
    fn fail_rate_spreads_failures_but_spares_health() {
        let d = tempfile::tempdir().unwrap();
        let a = api(d.path(), 0.5);
        let codes: Vec<u16> = (0..6)
            .map(|_| a.handle(&req("GET", "/health/db", None, "")).status)
            .collect();
        assert_eq!(codes, [200, 500, 200, 500, 200, 500]);
        assert_eq!(a.handle(&req("GET", "/health", None, "")).status, 200);
        let m = a.handle(&req("GET", "/metrics", None, "")).text();
        assert!(m.contains("http_requests_total{status=\"500\"} 3\n"), "{m}");
    }

    #[test]
    fn cors_only_for_listed_origins() {
        let d = tempfile::tempdir().unwrap();
        let a = api(d.path(), 0.0);
        let mut r = req("GET", "/health", None, "");
        r.headers
            .push(("Origin".into(), "https://ok.example".into()));
        assert_eq!(
            a.handle(&r).header("access-control-allow-origin"),
            Some("https://ok.example")
        );
        r.headers[0].1 = "https://evil.example".into();
        assert_eq!(a.handle(&r).header("access-control-allow-origin"), None);
    }
}
