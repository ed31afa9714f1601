//! The worker against real HTTP servers on 127.0.0.1: robots.txt (full block,
//! partial block, missing, unreachable), 429/503 with backoff and
//! `Retry-After`, timeouts with partial results, and the queue end to end
//! (API creates, worker audits, API reads the result).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_service::audit::{self, Policy};
use audit_service::http::{self, Request, Response};

/// A site on 127.0.0.1 whose answers come from `route`; it records each path
/// it was asked for with the time.
struct Site {
    base: String,
    hits: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Site {
    fn start(route: impl Fn(&Request, usize) -> Response + Send + Sync + 'static) -> Site {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let h2 = Arc::clone(&hits);
        let handler: http::Handler = Arc::new(move |r: &Request| {
            h2.lock().unwrap().push((r.path.clone(), Instant::now()));
            let n = {
                let mut c = counts.lock().unwrap();
                let e = c.entry(r.path.clone()).or_default();
                *e += 1;
                *e
            };
            route(r, n)
        });
        std::thread::spawn(move || http::serve(&l, &handler));
        Site { base, hits }
    }

    fn times(&self, path: &str) -> Vec<Instant> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }
}

fn html(links: &[&str]) -> Response {
    let mut a = String::new();
    for l in links {
        a.push_str("<a href=\"");
        a.push_str(l);
        a.push_str("\">x</a>");
    }
    Response::new(
        200,
        "text/html",
        format!("<html><head><title>Test page</title></head><body>{a}</body></html>"),
    )
}

fn fast() -> Policy {
    Policy {
        timeout: Duration::from_millis(800),
        deadline: Duration::from_secs(10),
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..Policy::default()
    }
}

#[test]
fn robots_full_block_is_a_clear_error() {
    let site = Site::start(|r, _| match r.path.as_str() {
        "/robots.txt" => Response::new(200, "text/plain", "User-agent: *\nDisallow: /\n"),
        _ => html(&[]),
    });
    let r = audit::run(&format!("{}/page", site.base), &fast());
    assert_eq!(r.status, "blocked");
    let e = r.error.unwrap();
    assert!(e.contains("disallows the whole site"), "{e}");
    assert!(site.times("/page").is_empty(), "the page is never fetched");
}

#[test]
fn robots_partial_block_gives_partial_results() {
    let site = Site::start(|r, _| match r.path.as_str() {
        "/robots.txt" => Response::new(200, "text/plain", "User-agent: *\nDisallow: /private\n"),
        "/" => html(&["/public", "/private/a", "/private/b"]),
        _ => html(&[]),
    });
    let r = audit::run(&format!("{}/", site.base), &fast());
    assert_eq!(r.status, "partial", "{r:?}");
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.details["page"]["title"], "Test page");
    let checked = r.details["links"]["checked"].as_array().unwrap();
    assert_eq!(checked.len(), 3);
    assert_eq!(checked[0]["status"], 200);
    assert_eq!(checked[1]["skipped"], "disallowed by robots.txt");
    assert!(site.times("/private/a").is_empty());
    // A disallowed target itself is blocked, with the path named.
    let r = audit::run(&format!("{}/private/x", site.base), &fast());
    assert_eq!(r.status, "blocked");
    assert!(r.error.unwrap().contains("disallows /private/x"));
}

#[test]
fn missing_robots_allows_everything() {
    let site = Site::start(|r, _| match r.path.as_str() {
        "/robots.txt" => Response::new(404, "text/plain", "no"),
        "/" => html(&["/a"]),
        _ => html(&[]),
    });
    let r = audit::run(&format!("{}/", site.base), &fast());
    assert_eq!(r.status, "completed", "{r:?}");
    assert!(r.details["robots"]["status"]
        .as_str()
        .unwrap()
        .starts_with("missing (404)"));
}

#[test]
fn slow_robots_blocks_with_a_reason() {
    let site = Site::start(|r, _| {
        if r.path == "/robots.txt" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        html(&[])
    });
    let p = Policy {
        timeout: Duration::from_millis(300),
        ..fast()
    };
    let t = Instant::now();
    let r = audit::run(&format!("{}/", site.base), &p);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "no hang: {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, "blocked");
    assert!(r.error.unwrap().contains("timed out after 300 ms"));
}

#[test]
fn rate_limits_are_retried_honouring_retry_after() {
    let site = Site::start(|r, n| match r.path.as_str() {
        "/robots.txt" => Response::new(404, "text/plain", ""),
        "/" if n <= 2 => {
            Response::new(429, "text/plain", "slow down").with_header("Retry-After", "1")
        }
        _ => html(&[]),
    });
    let r = audit::run(&format!("{}/", site.base), &fast());
    assert_eq!(r.status, "completed", "{r:?}");
    let t = site.times("/");
    assert_eq!(t.len(), 3);
    for w in t.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 waited {gap:?}"
        );
    }
    let attempts = r.details["page"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], 429);
    assert_eq!(attempts[0]["retry_after"], true);
}

#[test]
fn unavailable_backs_off_exponentially_then_gives_partial_results() {
    let site = Site::start(|r, _| match r.path.as_str() {
        "/robots.txt" => Response::new(404, "text/plain", ""),
        _ => Response::new(503, "text/plain", "down"),
    });
    let r = audit::run(&format!("{}/", site.base), &fast());
    assert_eq!(r.status, "partial", "{r:?}");
    assert_eq!(r.http_status, Some(503));
    assert!(r.error.unwrap().contains("still failing after 4 attempts"));
    let t = site.times("/");
    assert_eq!(t.len(), 4);
    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // 100, 200, 400 ms: each wait at least its backoff, and growing.
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(400), "{gaps:?}");
    assert!(gaps[2] > gaps[0], "{gaps:?}");
}

#[test]
fn a_retry_after_beyond_the_budget_gives_up_at_once() {
    let site = Site::start(|r, _| match r.path.as_str() {
        "/robots.txt" => Response::new(404, "text/plain", ""),
        _ => Response::new(429, "text/plain", "").with_header("Retry-After", "3600"),
    });
    let t = Instant::now();
    let r = audit::run(&format!("{}/", site.base), &fast());
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(r.status, "partial");
    assert!(r.error.unwrap().contains("Retry-After asks for 3600 s"));
}

#[test]
fn a_slow_link_times_out_and_the_rest_is_kept() {
    let site = Site::start(|r, _| match r.path.as_str() {
        "/robots.txt" => Response::new(404, "text/plain", ""),
        "/" => html(&["/fast", "/slow"]),
        "/slow" => {
            std::thread::sleep(Duration::from_millis(1500));
            html(&[])
        }
        _ => html(&[]),
    });
    let p = Policy {
        timeout: Duration::from_millis(400),
        ..fast()
    };
    let r = audit::run(&format!("{}/", site.base), &p);
    assert_eq!(r.status, "partial", "{r:?}");
    let checked = r.details["links"]["checked"].as_array().unwrap();
    assert_eq!(checked[0]["status"], 200);
    assert!(checked[1]["error"].as_str().unwrap().contains("timed out"));
}

#[test]
fn network_failures_are_named() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = audit::run(&format!("http://127.0.0.1:{port}/"), &fast());
    assert_eq!(r.status, "failed");
    assert!(r.error.unwrap().contains("connection refused"));
    let r = audit::run("http://no-such-host.invalid/", &fast());
    assert!(r.error.unwrap().contains("DNS resolution failed"));
    let r = audit::run("https://127.0.0.1/", &fast());
    assert!(r.error.unwrap().contains("TLS is not supported"));
}

#[test]
fn api_and_worker_share_the_queue() {
    use audit_service::api::Api;
    use audit_service::config::{Build, Config};
    use audit_service::{db, worker};

    let site = Site::start(|r, _| match r.path.as_str() {
        "/robots.txt" => Response::new(404, "text/plain", ""),
        _ => html(&[]),
    });
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("audit.db");
    let mut conn = db::open(&database).unwrap();
    db::migrate_to(&mut conn, &db::embedded(), 3).unwrap();
    drop(conn);
    let api = Api::new(Config {
        database: database.clone(),
        port: 0,
        api_token: "token-token-token-1".into(),
        app_env: "test".into(),
        cors_origins: vec![],
        fail_rate: 0.0,
        max_queue: 100,
        build: Build::default(),
    });
    let auth = vec![(
        "Authorization".to_string(),
        "Bearer token-token-token-1".to_string(),
    )];
    let created = api.handle(&Request {
        method: "POST".into(),
        path: "/audits".into(),
        headers: auth.clone(),
        body: format!("{{\"url\":\"{}/\"}}", site.base).into_bytes(),
        ..Request::default()
    });
    assert_eq!(created.status, 201);
    let id = serde_json::from_slice::<serde_json::Value>(&created.body).unwrap()["id"].clone();

    let stats = Arc::new(worker::Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (db2, s2, st2) = (database.clone(), Arc::clone(&stats), Arc::clone(&stop));
    let t = std::thread::spawn(move || {
        worker::run(&db2, &fast(), Duration::from_millis(50), &s2, &st2);
    });
    let read = || {
        let r = api.handle(&Request {
            method: "GET".into(),
            path: format!("/audits/{id}"),
            headers: auth.clone(),
            ..Request::default()
        });
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
    };
    let t0 = Instant::now();
    let mut v = read();
    while v["status"] != "completed" && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        v = read();
    }
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["result"]["http_status"], 200);
    assert_eq!(v["result"]["details"]["page"]["title"], "Test page");
    assert_eq!(stats.completed.load(Ordering::SeqCst), 1);
}
