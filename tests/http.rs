//! HTTP steps, retries and notifications against real servers on 127.0.0.1
//! that each test starts: a tiny HTTP/1.1 server on `std::net` whose replies
//! the test scripts (including resets, hangs and a self-signed TLS listener).
//! Every wait is bounded; timing checks only measure deliberate waits, with
//! tolerance.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{pipe_bin, run_bounded};

/// A request the server received.
#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Reply {
    Send(u16, Vec<(String, String)>, String),
    /// Headers and part of the body, then a TCP reset.
    ResetMidBody,
    /// Holds the connection open without answering.
    Hang(Duration),
}

fn reply(status: u16, body: &str) -> Reply {
    Reply::Send(status, Vec::new(), body.to_string())
}

fn reply_with(status: u16, header: (&str, &str), body: &str) -> Reply {
    Reply::Send(
        status,
        vec![(header.0.to_string(), header.1.to_string())],
        body.to_string(),
    )
}

struct Server {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Server {
    /// Serves each request with `handler(n, hit)`, `n` counting from 0.
    fn start(handler: impl Fn(usize, &Hit) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (h, handler) = (h.clone(), handler.clone());
                std::thread::spawn(move || serve_one(stream, &h, &*handler));
            }
        });
        Server { port, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    /// Seconds between the first two requests.
    fn gap(&self) -> f64 {
        let h = self.hits();
        assert!(h.len() >= 2, "expected a retry, got {} request(s)", h.len());
        (h[1].at - h[0].at).as_secs_f64()
    }
}

fn serve_one(
    stream: TcpStream,
    hits: &Mutex<Vec<Hit>>,
    handler: &(dyn Fn(usize, &Hit) -> Reply + Send + Sync),
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let hit = Hit {
        at: Instant::now(),
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let n = {
        let mut h = hits.lock().expect("hits");
        h.push(hit.clone());
        h.len() - 1
    };
    let mut stream = stream;
    match handler(n, &hit) {
        Reply::Send(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        Reply::ResetMidBody => {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\npartial",
            );
            let _ = stream.flush();
            std::thread::sleep(Duration::from_millis(100));
            // SO_LINGER 0: close sends RST instead of FIN.
            let _ = nix::sys::socket::setsockopt(
                &stream,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
        }
        Reply::Hang(d) => std::thread::sleep(d),
    }
}

/// A finished `pipe run` and the step statuses from `pipe status`.
struct Ran {
    code: i32,
    out: String,
    status: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl Ran {
    fn step(&self, id: &str) -> &serde_json::Value {
        self.status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["step"] == id)
            .unwrap_or_else(|| panic!("no step {id} in {}", self.status))
    }

    fn output(&self, id: &str, key: &str) -> String {
        self.step(id)["outputs"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no output {key} of {id}: {}", self.out))
            .to_string()
    }
}

/// Runs `pipeline p { stage s { <steps> } }` importing the HTTP stdlib.
fn run_steps(steps: &str, env: &[(&str, &str)]) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    let text = format!(
        "import \"std/http\"\nimport \"std/notify\"\nimport \"std/prom\"\n\npipeline p {{\n  stage s {{\n{steps}\n  }}\n}}\n"
    );
    std::fs::write(dir.path().join("pipelines/p.pipe"), text).expect("write");
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(pipe_bin());
        c.args(args)
            .current_dir(dir.path())
            .env_remove("PIPE_STATE_DIR");
        for (k, v) in env {
            c.env(k, v);
        }
        run_bounded(&mut c, Duration::from_mins(1))
    };
    let r = run(&["run", "p", "--keep-going", "--output", "plain"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    let st = run(&["status", "--format", "json"]);
    let status =
        serde_json::from_slice(&st.stdout).unwrap_or_else(|e| panic!("status json: {e}\n{out}"));
    Ran {
        code: r.status.code().unwrap_or(-1),
        out,
        status,
        _dir: dir,
    }
}

fn assert_has(ran: &Ran, text: &str) {
    assert!(
        ran.out.contains(text),
        "output lacks {text:?}:\n{}",
        ran.out
    );
}

#[test]
fn retry_after_seconds_is_honoured() {
    let srv = Server::start(|n, _| match n {
        0 => reply_with(429, ("retry-after", "2"), "slow down"),
        _ => reply(200, "ok"),
    });
    let ran = run_steps(
        &format!(
            "    step call = http.request {{ url = \"{}\"  retry {{ attempts = 3  backoff = exponential(50ms, 10s) }} }}",
            srv.url("/x")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    assert_eq!(ran.step("s.call")["attempt"], 2);
    let gap = srv.gap();
    assert!(
        (1.9..4.5).contains(&gap),
        "waited {gap}s for Retry-After: 2"
    );
    assert_has(&ran, "the server asked to retry after 2s");
}

#[test]
fn retry_after_http_date_is_honoured() {
    let srv = Server::start(|n, _| match n {
        0 => {
            let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
            reply_with(503, ("retry-after", &when), "maintenance")
        }
        _ => reply(200, "ok"),
    });
    let ran = run_steps(
        &format!(
            "    step call = http.request {{ url = \"{}\"  retry {{ attempts = 3  backoff = exponential(50ms, 10s) }} }}",
            srv.url("/x")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    // An HTTP date has whole seconds: now + 3s is 2 to 3 seconds away.
    let gap = srv.gap();
    assert!(
        (1.9..5.0).contains(&gap),
        "waited {gap}s for a date 3s ahead"
    );
}

#[test]
fn huge_retry_after_is_capped_by_max_delay() {
    let srv = Server::start(|n, _| match n {
        0 => reply_with(429, ("retry-after", "100000"), ""),
        _ => reply(200, "ok"),
    });
    let ran = run_steps(
        &format!(
            "    step call = http.request {{ url = \"{}\"  retry {{ attempts = 3  backoff = exponential(50ms, 10s)  max_delay = 1s }} }}",
            srv.url("/x")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    let gap = srv.gap();
    assert!(
        (0.9..3.5).contains(&gap),
        "waited {gap}s with max_delay = 1s"
    );
}

#[test]
fn a_503_then_200_succeeds_with_extracted_outputs() {
    let srv = Server::start(|n, _| match n {
        0 => reply(503, "starting"),
        _ => reply_with(
            200,
            ("content-type", "application/json"),
            r#"{"version":"1.4.2","checks":[{"name":"db","ok":true}]}"#,
        ),
    });
    let ran = run_steps(
        &format!(
            r#"    step call = http.request {{
      url     = "{}"
      query   = {{ verbose = "1" }}
      expect  = {{ status = 200, json = {{ "checks[0].ok" = true }}, header = {{ "content-type" = "json" }} }}
      extract = {{ version = "version", first = "$.checks.0.name" }}
      retry {{ attempts = 3  backoff = fixed(100ms) }}
    }}"#,
            srv.url("/status")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    assert_eq!(ran.step("s.call")["attempt"], 2);
    assert_eq!(ran.output("s.call", "version"), "1.4.2");
    assert_eq!(ran.output("s.call", "first"), "db");
    assert_eq!(ran.output("s.call", "status"), "200");
    assert_eq!(srv.hits()[1].path, "/status?verbose=1");
}

#[test]
fn a_4xx_is_permanent() {
    let srv = Server::start(|_, _| reply(404, "no such thing"));
    let ran = run_steps(
        &format!(
            "    step call = http.check {{ url = \"{}\"  retry {{ attempts = 4  backoff = fixed(50ms) }} }}",
            srv.url("/missing")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_eq!(srv.hits().len(), 1, "a 404 is not retried");
    assert_has(
        &ran,
        "expected status 200, got 404: no such thing (attempt 1)",
    );
}

#[test]
fn connection_refused_names_host_port_and_attempt() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let ran = run_steps(
        &format!(
            "    step call = http.request {{ url = \"http://127.0.0.1:{port}/\"  retry {{ attempts = 2  backoff = fixed(50ms) }} }}"
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_eq!(ran.step("s.call")["attempt"], 2);
    assert_has(
        &ran,
        &format!("connection refused by 127.0.0.1:{port} (attempt 2)"),
    );
}

#[test]
fn reset_mid_body_is_reported_as_a_reset() {
    let srv = Server::start(|_, _| Reply::ResetMidBody);
    let ran = run_steps(
        &format!(
            "    step call = http.request {{ url = \"{}\" }}",
            srv.url("/big")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_has(
        &ran,
        &format!(
            "connection to 127.0.0.1:{} reset while reading the response body",
            srv.port
        ),
    );
    assert_has(&ran, "(attempt 1)");
}

#[test]
fn a_hanging_server_hits_the_request_timeout() {
    let srv = Server::start(|_, _| Reply::Hang(Duration::from_secs(15)));
    let t0 = Instant::now();
    let ran = run_steps(
        &format!(
            "    step call = http.request {{ url = \"{}\"  request_timeout = 500ms }}",
            srv.url("/slow")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_has(
        &ran,
        &format!(
            "timed out after 500ms waiting for a response from 127.0.0.1:{} (attempt 1)",
            srv.port
        ),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "the timeout did not fire"
    );
}

#[test]
fn dns_failure_is_named() {
    let ran = run_steps(
        "    step call = http.request { url = \"http://pipe-test.invalid:8080/\"  request_timeout = 20s }",
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_has(&ran, "DNS lookup failed for pipe-test.invalid:8080");
    assert_has(&ran, "(attempt 1)");
}

#[test]
fn self_signed_tls_fails_and_is_not_retried() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("tls config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handshakes = Arc::new(Mutex::new(0));
    let count = handshakes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            *count.lock().expect("count") += 1;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let conn = rustls::ServerConnection::new(config.clone()).expect("conn");
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut buf = [0; 512];
            let _ = tls.read(&mut buf);
        }
    });
    let ran = run_steps(
        &format!(
            "    step call = http.request {{ url = \"https://127.0.0.1:{port}/\"  retry {{ attempts = 3  backoff = fixed(50ms) }} }}"
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_has(
        &ran,
        &format!("TLS handshake with 127.0.0.1:{port} failed: invalid peer certificate"),
    );
    assert_has(&ran, "never falls back to an insecure connection");
    assert_eq!(
        ran.step("s.call")["attempt"],
        1,
        "a certificate error is permanent"
    );
    assert_eq!(*handshakes.lock().expect("count"), 1);
}

#[test]
fn post_without_idempotency_key_is_not_repeated_after_a_500() {
    let srv = Server::start(|n, _| match n {
        0 => reply(500, "oops"),
        _ => reply(201, "{}"),
    });
    let ran = run_steps(
        &format!(
            r#"    step create = http.request {{ url = "{url}"  method = "POST"  json = {{ name = "a" }}  retry {{ attempts = 3  backoff = fixed(50ms) }} }}
    step keyed = http.request {{ needs = [create]  url = "{url}"  method = "POST"  json = {{ name = "b" }}  idempotency_key = "k-1"  expect = {{ status = 201 }}  retry {{ attempts = 3  backoff = fixed(50ms) }} }}"#,
            url = srv.url("/items")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_eq!(ran.step("s.create")["attempt"], 1);
    assert_has(
        &ran,
        "not retried: a POST without an idempotency key may already have been applied",
    );
    let hits = srv.hits();
    assert_eq!(
        hits.len(),
        1,
        "the keyed POST must not run after the failure"
    );
    assert_eq!(hits[0].body, r#"{"name":"a"}"#);
    assert_eq!(hits[0].header("content-type"), Some("application/json"));
}

#[test]
fn post_with_idempotency_key_is_retried() {
    let srv = Server::start(|n, _| match n {
        0 => reply(500, "oops"),
        _ => reply(201, "{}"),
    });
    let ran = run_steps(
        &format!(
            r#"    step keyed = http.request {{ url = "{}"  method = "POST"  body = "x=1"  idempotency_key = "k-1"  expect = {{ status = 201 }}  retry {{ attempts = 3  backoff = fixed(50ms) }} }}"#,
            srv.url("/items")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    let hits = srv.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].header("idempotency-key"), Some("k-1"));
}

#[test]
fn slack_payload_has_blocks_and_no_secret() {
    let srv = Server::start(|_, _| reply(200, "ok"));
    let hook = srv.url("/services/T0001/B0001/sEcReTtOkEn1234567890");
    let ran = run_steps(
        r#"    step tell = notify.slack {
      webhook = secrets.SLACK_WEBHOOK
      text    = "release 1.2 failed; hook was ${secrets.SLACK_WEBHOOK}"
      fields  = { version = "1.2", step = "deploy" }
    }"#,
        &[("SLACK_WEBHOOK", &hook)],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    let hits = srv.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].method, "POST");
    assert_eq!(hits[0].header("content-type"), Some("application/json"));
    assert!(
        !hits[0].body.contains("sEcReTtOkEn"),
        "secret in payload: {}",
        hits[0].body
    );
    let p: serde_json::Value = serde_json::from_str(&hits[0].body).expect("json");
    assert_eq!(p["text"], "release 1.2 failed; hook was ***");
    let blocks = p["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert_eq!(
        blocks[0]["text"]["text"],
        "release 1.2 failed; hook was ***"
    );
    assert_eq!(blocks[1]["fields"][0]["text"], "*version*\n1.2");
    assert_eq!(blocks[1]["fields"][1]["text"], "*step*\ndeploy");
    assert_eq!(blocks[2]["type"], "context");
    assert!(blocks[2]["elements"][0]["text"]
        .as_str()
        .expect("ctx")
        .contains("step s.tell"));
    assert_eq!(ran.output("s.tell", "delivered"), "true");
}

#[test]
fn discord_payload_has_an_embed() {
    let srv = Server::start(|_, _| reply(204, ""));
    let ran = run_steps(
        &format!(
            r#"    step tell = notify.discord {{ webhook = "{}"  text = "staging is green"  fields = {{ passed = "5" }} }}"#,
            srv.url("/api/webhooks/123/abcdefghijklmnopqrstuvwxyz")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    let hits = srv.hits();
    let p: serde_json::Value = serde_json::from_str(&hits[0].body).expect("json");
    let embed = &p["embeds"][0];
    assert_eq!(embed["description"], "staging is green");
    assert_eq!(embed["fields"][0]["name"], "passed");
    assert_eq!(embed["fields"][0]["value"], "5");
    assert_eq!(embed["fields"][0]["inline"], true);
    assert!(embed["timestamp"].as_str().expect("ts").ends_with('Z'));
    assert_eq!(p["allowed_mentions"]["parse"], serde_json::json!([]));
}

#[test]
fn failed_notification_warns_unless_required() {
    let srv = Server::start(|n, _| match n {
        0 => reply_with(429, ("retry-after", "0"), "rate limited"),
        _ => reply(500, "down"),
    });
    let ran = run_steps(
        &format!(
            r#"    step soft = notify.webhook {{ url = "{url}"  payload = {{ event = "x" }}  attempts = 2  max_delay = 100ms }}
    step hard = notify.webhook {{ needs = [soft]  url = "{url}"  payload = {{ event = "y" }}  required = true  attempts = 2  max_delay = 100ms }}"#,
            url = srv.url("/hook")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_eq!(ran.step("s.soft")["status"], "succeeded");
    assert_eq!(ran.output("s.soft", "delivered"), "false");
    assert_has(&ran, "warning: notification not delivered");
    assert_eq!(ran.step("s.hard")["status"], "failed");
    assert_eq!(srv.hits().len(), 4, "two bounded attempts each");
}

#[test]
fn monitor_fails_when_the_5xx_rate_rises() {
    let srv = Server::start(|n, _| {
        // 100 good requests per scrape; 5xx start at the third scrape.
        let ok = 100 * (n + 1);
        let bad = if n >= 2 { 30 * (n - 1) } else { 0 };
        let mut body = String::from(
            "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n",
        );
        body.push_str(&format!(
            "http_requests_total{{method=\"GET\",status=\"200\"}} {ok}\n"
        ));
        if bad > 0 {
            body.push_str(&format!(
                "http_requests_total{{method=\"GET\",status=\"503\"}} {bad}\n"
            ));
        }
        reply(200, &body)
    });
    let ran = run_steps(
        &format!(
            "    step watch = http.monitor {{ metrics = \"{}\"  window = 20s  interval = 200ms  max_error_rate = 0.05 }}",
            srv.url("/metrics")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    // Third scrape: 30 errors among 200 + 30 requests since the first.
    assert_has(&ran, "error rate 13.04% (30 of 230 requests matching `http_requests_total{status=~\"5..\"}` over `http_requests_total`) exceeds max_error_rate 5.00%");
    assert_eq!(srv.hits().len(), 3);
}

#[test]
fn monitor_passes_a_healthy_window() {
    let srv = Server::start(|n, _| {
        reply(
            200,
            &format!("http_requests_total{{status=\"200\"}} {}\n", 50 * (n + 1)),
        )
    });
    let ran = run_steps(
        &format!(
            "    step watch = http.monitor {{ metrics = \"{}\"  window = 1s  interval = 250ms }}",
            srv.url("/metrics")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    assert_eq!(ran.output("s.watch", "error_rate"), "0.0000");
    assert_eq!(ran.output("s.watch", "errors"), "0");
}

fn audit_service(_: usize, hit: &Hit) -> Reply {
    let authed = hit.header("authorization") == Some("Bearer t0k");
    match (hit.method.as_str(), hit.path.as_str()) {
        ("GET", "/health") => reply(200, "ok"),
        ("GET", "/health/db") => reply(200, r#"{"database":"ok"}"#),
        (_, "/audits") if !authed => reply(401, "no token"),
        ("POST", "/audits") if hit.body.contains("example.org") => reply(201, r#"{"id":42}"#),
        ("GET", "/audits/42") => reply(200, r#"{"id":42,"url":"https://example.org"}"#),
        _ => reply(404, "not found"),
    }
}

const SMOKE_CHECKS: &str = r#"
        { name = "health",   path = "/health",    status = 200 },
        { name = "database", path = "/health/db", status = 200, contains = "\"database\":\"ok\"" },
        { name = "auth",     path = "/audits",    status = 401, anonymous = true },
        { name = "create",   path = "/audits",    method = "POST", body = "{\"url\":\"https://example.org\"}", status = 201, save = { id = "id" } },
        { name = "read",     path = '/audits/${id}', status = 200, json = { url = "https://example.org" } },"#;

#[test]
fn suite_runs_checks_with_saved_values_and_a_table() {
    let srv = Server::start(audit_service);
    let ran = run_steps(
        &format!(
            "    step smoke = http.suite {{\n      base_url = \"{}\"\n      headers = {{ Authorization = \"Bearer t0k\" }}\n      checks = [{SMOKE_CHECKS}\n      ]\n    }}",
            srv.url("")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    assert_eq!(ran.output("s.smoke", "passed"), "5");
    assert_eq!(ran.output("s.smoke", "failed"), "0");
    let table = ran.output("s.smoke", "table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].starts_with("check     method  path"), "{table}");
    assert!(
        lines[5].starts_with("read      GET     /audits/42  200       200  pass"),
        "{table}"
    );
    assert!(srv.hits().iter().any(|h| h.path == "/audits/42"));
}

#[test]
fn suite_failure_lists_each_failed_check() {
    let srv = Server::start(audit_service);
    let ran = run_steps(
        &format!(
            "    step smoke = http.suite {{\n      base_url = \"{}\"\n      checks = [{SMOKE_CHECKS}\n      ]\n    }}",
            srv.url("")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    // Without the token, create gets 401 and read has no id to use.
    assert_has(&ran, "create    POST    /audits");
    assert_has(&ran, "FAIL");
    assert_has(&ran, "2 of 5 checks failed: create (expected status 201, got 401: no token); read (needs `${id}`, which no earlier check saved)");
}

#[test]
fn wait_polls_until_healthy() {
    let srv = Server::start(|n, _| {
        if n < 2 {
            reply(503, "")
        } else {
            reply(200, "up")
        }
    });
    let ran = run_steps(
        &format!(
            "    step up = http.wait {{ url = \"{}\"  interval = 100ms  within = 10s }}",
            srv.url("/health")
        ),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.out);
    assert_eq!(ran.output("s.up", "polls"), "3");
}

#[test]
fn prom_query_compares_the_value() {
    // Speaks the Prometheus HTTP API's instant-query format.
    let srv = Server::start(|_, hit| {
        if hit.path.starts_with("/api/v1/query?query=") && hit.path.contains("rate") {
            reply(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"api"},"value":[1700000000.1,"0.02"]}]}}"#,
            )
        } else {
            reply(
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            )
        }
    });
    let ran = run_steps(
        &format!(
            r#"    step low = prom.query {{ server = "{url}"  query = "sum(rate(errors[5m]))"  below = 0.05 }}
    step high = prom.query {{ server = "{url}"  query = "sum(rate(errors[5m]))"  above = 0.5 }}
    step bad = prom.query {{ server = "{url}"  query = "(" }}"#,
            url = srv.url("")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_eq!(ran.output("s.low", "value"), "0.02");
    assert_has(&ran, "`sum(rate(errors[5m]))` is 0.02, not above 0.5");
    assert_has(&ran, "rejected `(`: parse error (bad_data)");
}

#[test]
fn failure_handler_notifies_with_run_context() {
    let srv = Server::start(|_, _| reply(200, "ok"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    let text = format!(
        r#"import "std/notify"

pipeline p {{
  stage s {{
    step bad {{ run = "exit 3" }}
  }}
  on failure {{
    step alert = notify.slack {{
      webhook = "{}"
      text    = "release failed at ${{run.failed_step}}"
      fields  = {{ status = run.status }}
    }}
  }}
}}
"#,
        srv.url("/services/T1/B1/0123456789abcdef")
    );
    std::fs::write(dir.path().join("pipelines/p.pipe"), text).expect("write");
    let out = run_bounded(
        std::process::Command::new(pipe_bin())
            .args(["run", "p", "--output", "plain"])
            .current_dir(dir.path())
            .env_remove("PIPE_STATE_DIR"),
        Duration::from_mins(1),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let hits = srv.hits();
    assert_eq!(hits.len(), 1, "{out:?}");
    let p: serde_json::Value = serde_json::from_str(&hits[0].body).expect("json");
    assert_eq!(p["text"], "release failed at s.bad");
    assert_eq!(p["blocks"][1]["fields"][0]["text"], "*status*\nfailed");
}

#[test]
fn step_timeout_bounds_an_http_wait() {
    let srv = Server::start(|_, _| reply(503, "not yet"));
    let t0 = Instant::now();
    let ran = run_steps(
        &format!(
            "    step up = http.wait {{ url = \"{}\"  interval = 100ms  within = 1m  timeout = 1s }}",
            srv.url("/health")
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_has(&ran, "timed out after 1s");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the step timeout did not fire"
    );
    assert!(srv.hits().len() >= 2, "it polled before the timeout");
}

/// A Prometheus server (Debian's `prometheus` package) on 127.0.0.1,
/// scraping `target` every second; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: api\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("config");
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus (Debian package `prometheus`, installed by .ci/run)");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        // Ready, and the target scraped at least once.
        let t0 = Instant::now();
        loop {
            let up = get(port, "/api/v1/query?query=up%7Bjob%3D%22api%22%7D");
            if up.contains(r#""value":["#) && up.contains(r#""1"]"#) {
                return p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "prometheus not scraping: {up}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A plain HTTP/1.0 GET, for the test's own polling.
fn get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn prom_query_against_a_real_prometheus() {
    let metrics = Server::start(|_, _| {
        reply(
            200,
            "# TYPE http_requests_total counter\nhttp_requests_total{status=\"200\"} 97\nhttp_requests_total{status=\"503\"} 3\n",
        )
    });
    let prom = Prometheus::start(metrics.port);
    let ran = run_steps(
        &format!(
            r#"    step ratio = prom.query {{ server = "http://127.0.0.1:{port}"  query = "sum(http_requests_total{{status=~\"5..\"}}) / sum(http_requests_total)"  below = 0.05 }}
    step strict = prom.query {{ server = "http://127.0.0.1:{port}"  query = "sum(http_requests_total{{status=~\"5..\"}}) / sum(http_requests_total)"  below = 0.01 }}
    step typo = prom.query {{ server = "http://127.0.0.1:{port}"  query = "sum(" }}"#,
            port = prom.port
        ),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.out);
    assert_eq!(ran.output("s.ratio", "value"), "0.03");
    assert_has(&ran, "is 0.03, not below 0.01");
    assert_has(&ran, "rejected `sum(`");
    assert_has(&ran, "(bad_data)");
}
