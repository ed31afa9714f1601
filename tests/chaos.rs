//! Chaos stages: every fault kind observed by a real client (raw TCP or
//! reqwest) through the fault proxy in front of a real HTTP/1.1 server on
//! 127.0.0.1; `rate` statistics and seed reproducibility; the `required`
//! policy on the exit code and teardown on Ctrl-C through the `pipe` binary;
//! container faults against the real Docker Engine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipe_runtime::chaos::{Fault, Proxy, Spec};

use crate::common::{busybox_rootfs, finish, pipe_bin, unique_id, Sandbox};

/// A keep-alive HTTP/1.1 server on 127.0.0.1: `GET /big` answers 10,000
/// bytes, anything else `hello <path>`. It counts the requests it served.
struct Upstream {
    port: u16,
    served: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || serve(conn, &counter));
            }
        });
        Upstream { port, served }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(conn: TcpStream, served: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
        }
        served.fetch_add(1, Ordering::SeqCst);
        let body = if path == "/big" {
            "x".repeat(10_000)
        } else {
            format!("hello {path}")
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn proxy(upstream: &Upstream, faults: Vec<Fault>, seed: u64) -> Proxy {
    let mut spec = Spec::proxy("api", &upstream.url());
    spec.seed = seed;
    spec.faults = faults;
    Proxy::start(spec).expect("proxy starts")
}

fn fault(kind: &str, f: impl FnOnce(&mut Fault)) -> Fault {
    let mut x = Fault::new(kind);
    f(&mut x);
    x
}

/// One HTTP/1.1 exchange on an open connection: (status, headers, body).
fn exchange(
    conn: &mut BufReader<TcpStream>,
    path: &str,
) -> std::io::Result<(u16, HashMap<String, String>, String)> {
    // One write: a request in pieces would wait on Nagle and delayed ACKs.
    conn.get_mut().write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    )?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    conn.read_exact(&mut body)?;
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn connect(p: &Proxy) -> BufReader<TcpStream> {
    let s = TcpStream::connect(p.addr).expect("connect to the proxy");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    BufReader::new(s)
}

fn get(p: &Proxy, path: &str) -> std::io::Result<(u16, HashMap<String, String>, String)> {
    exchange(&mut connect(p), path)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every message in an error's source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(" / ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn keep_alive_carries_many_requests_on_one_connection() {
    let up = Upstream::start();
    let p = proxy(&up, vec![], 1);
    let mut c = connect(&p);
    for i in 0..5 {
        let (status, _, body) = exchange(&mut c, &format!("/item/{i}")).expect("exchange");
        assert_eq!(
            (status, body.as_str()),
            (200, format!("hello /item/{i}").as_str())
        );
    }
    let r = p.stop();
    assert_eq!(r["connections"], 1, "{r}");
    assert_eq!(r["requests"], 5, "{r}");
    assert_eq!(r["forwarded"], 5, "{r}");
    assert_eq!(up.served.load(Ordering::SeqCst), 5);
}

/// Each client connection has an upstream connection of its own; when the
/// upstream closes it (after each answer, here), the next request opens
/// another, unseen by the client.
#[test]
fn an_upstream_that_closes_its_connections_is_reconnected_to() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            // One request, one answer without `Connection: close`, then close.
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = (&conn).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let p = Proxy::start(Spec::proxy("api", &format!("http://127.0.0.1:{port}"))).expect("proxy");
    let mut c = connect(&p);
    for _ in 0..3 {
        let (status, _, body) = exchange(&mut c, "/").expect("exchange");
        assert_eq!((status, body.as_str()), (200, "ok"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = p.stop();
    assert_eq!(
        (r["connections"].as_u64(), r["forwarded"].as_u64()),
        (Some(1), Some(3)),
        "{r}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn http_status_429_carries_the_configured_retry_after() {
    let up = Upstream::start();
    let p = proxy(
        &up,
        vec![fault("http_status", |f| {
            f.status = 429;
            f.retry_after = Some("2".into());
            f.body = Some("slow down".into());
        })],
        1,
    );
    let resp = rt()
        .block_on(async { reqwest::get(format!("{}/api", p.url)).await })
        .expect("a response");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!(rt().block_on(resp.text()).expect("body"), "slow down");
    assert_eq!(
        up.served.load(Ordering::SeqCst),
        0,
        "nothing reached upstream"
    );
    let r = p.stop();
    assert_eq!(r["injected"]["http_status"], 1, "{r}");
}

#[test]
fn latency_delays_only_the_selected_paths() {
    let up = Upstream::start();
    let p = proxy(
        &up,
        vec![fault("latency", |f| {
            f.delay_ms = 400;
            f.jitter_ms = 50;
            f.paths = vec!["/slow/*".into()];
        })],
        3,
    );
    let t0 = Instant::now();
    let (status, _, body) = get(&p, "/slow/x").expect("slow request");
    let took = t0.elapsed();
    assert_eq!((status, body.as_str()), (200, "hello /slow/x"));
    assert!(took >= Duration::from_millis(350), "took {took:?}");
    get(&p, "/fast").expect("fast request");
    let r = p.stop();
    assert_eq!(
        r["faults"][0]["seen"], 1,
        "the filter selects one request: {r}"
    );
    assert_eq!(r["faults"][0]["injected"], 1, "{r}");
    assert_eq!(r["requests"], 2, "{r}");
}

#[test]
fn reset_is_seen_as_a_connection_reset() {
    let up = Upstream::start();
    let p = proxy(&up, vec![Fault::new("reset")], 1);
    let err = get(&p, "/").expect_err("a reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(p.stop()["injected"]["reset"], 1);
}

#[test]
fn close_ends_the_connection_without_an_answer() {
    let up = Upstream::start();
    let p = proxy(&up, vec![Fault::new("close")], 1);
    let err = get(&p, "/").expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(up.served.load(Ordering::SeqCst), 0);
}

#[test]
fn timeout_holds_the_connection_open_and_silent() {
    let up = Upstream::start();
    let p = proxy(&up, vec![Fault::new("timeout")], 1);
    let mut c = connect(&p);
    c.get_ref()
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let err = exchange(&mut c, "/").expect_err("no answer");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "the connection stays open and nothing arrives: {err:?}"
    );
    assert_eq!(up.served.load(Ordering::SeqCst), 0);
    // Stopping the proxy releases what it held.
    p.stop();
    c.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(matches!(c.get_mut().read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn refuse_closes_the_port_for_its_window() {
    let up = Upstream::start();
    let p = proxy(&up, vec![fault("refuse", |f| f.for_ms = Some(800))], 1);
    let err = TcpStream::connect(p.addr).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let t0 = Instant::now();
    let back = loop {
        if let Ok(s) = TcpStream::connect(p.addr) {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never listened again"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    s_set(&back);
    let (status, _, _) = exchange(&mut BufReader::new(back), "/").expect("served after");
    assert_eq!(status, 200);
    assert_eq!(p.stop()["injected"]["refuse"], 1);
}

fn s_set(s: &TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
}

#[test]
fn bandwidth_and_slow_body_pace_an_intact_body() {
    let up = Upstream::start();
    let p = proxy(
        &up,
        vec![fault("bandwidth", |f| {
            f.bytes_per_second = 10_000;
            f.paths = vec!["/big".into()];
            f.methods = vec!["GET".into()];
        })],
        1,
    );
    let t0 = Instant::now();
    let (status, _, body) = get(&p, "/big").expect("paced");
    assert_eq!((status, body.len()), (200, 10_000));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    p.stop();

    let p = proxy(
        &up,
        vec![fault("slow_body", |f| {
            f.chunk = 2_000;
            f.delay_ms = 200;
        })],
        1,
    );
    let t0 = Instant::now();
    let (status, _, body) = get(&p, "/big").expect("sliced");
    assert_eq!((status, body.len()), (200, 10_000));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(p.stop()["injected"]["slow_body"], 1);
}

#[test]
fn tls_fails_with_a_certificate_error() {
    let up = Upstream::start();
    let p = proxy(&up, vec![Fault::new("tls")], 1);
    assert!(p.url.starts_with("https://127.0.0.1:"), "{}", p.url);
    let err = rt()
        .block_on(async { reqwest::get(&p.url).await })
        .expect_err("an untrusted certificate");
    let text = chain(&err).to_lowercase();
    assert!(text.contains("certificate"), "{text}");
    assert_eq!(up.served.load(Ordering::SeqCst), 0);
}

#[test]
fn dns_gives_a_url_that_does_not_resolve() {
    let up = Upstream::start();
    let p = proxy(&up, vec![Fault::new("dns")], 1);
    assert!(p.host.ends_with(".invalid"), "{}", p.host);
    let err = rt()
        .block_on(async { reqwest::get(&p.url).await })
        .expect_err("no such host");
    assert!(err.is_connect(), "{err:?}");
    assert!(chain(&err).contains("dns error"), "{}", chain(&err));
}

#[test]
fn upstream_down_is_a_502_that_is_counted() {
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let p = Proxy::start(Spec::proxy("api", &format!("http://127.0.0.1:{port}"))).expect("proxy");
    let (status, _, body) = get(&p, "/").expect("answer");
    assert_eq!(status, 502);
    assert!(body.contains("upstream 127.0.0.1"), "{body}");
    assert_eq!(p.stop()["upstream_errors"], 1);
}

/// The statuses of 1,000 sequential requests on one connection.
fn statuses(up: &Upstream, seed: u64) -> (Vec<u16>, serde_json::Value) {
    let p = proxy(
        up,
        vec![fault("http_status", |f| {
            f.status = 503;
            f.rate = 0.3;
        })],
        seed,
    );
    let mut c = connect(&p);
    let v = (0..1000)
        .map(|_| exchange(&mut c, "/").expect("exchange").0)
        .collect();
    (v, p.stop())
}

#[test]
fn rate_is_statistically_right_and_reproducible_from_the_seed() {
    let up = Upstream::start();
    let (a, report) = statuses(&up, 42);
    let hits = a.iter().filter(|&&s| s == 503).count();
    // Binomial(1000, 0.3): sd ≈ 14.5; ±50 is beyond 3 sd.
    assert!((250..=350).contains(&hits), "{hits} of 1000");
    assert_eq!(report["faults"][0]["seen"], 1000);
    assert_eq!(report["faults"][0]["injected"], hits as u64);
    assert_eq!(report["forwarded"], 1000 - hits as u64);
    let (b, _) = statuses(&up, 42);
    assert_eq!(a, b, "same seed, same faults");
    let (c, _) = statuses(&up, 43);
    assert_ne!(a, c, "another seed, other faults");
}

// ---- the no-fault path: relayed bytes, counted requests ----

/// What [`echo_serve`] saw of each request, in order.
type Seen = Arc<std::sync::Mutex<Vec<String>>>;

/// A keep-alive HTTP/1.1 server on 127.0.0.1 that reads request bodies
/// (`Content-Length` or chunked, trailers included) and answers
/// `METHOD TARGET host=HOST body=BODY`; `[/pre]/chunked` answers in chunks,
/// `/until-close` without a length, then closes; `HEAD` gets no body.
fn echo_upstream() -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let log = log.clone();
            std::thread::spawn(move || echo_serve(conn, &log));
        }
    });
    (url, seen)
}

fn echo_serve(conn: TcpStream, log: &Seen) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    let line = |r: &mut BufReader<TcpStream>| {
        let mut s = String::new();
        match r.read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s.trim_end().to_string()),
        }
    };
    loop {
        let Some(request) = line(&mut r) else { return };
        let mut parts = request.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut headers = HashMap::new();
        loop {
            let Some(h) = line(&mut r) else { return };
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("a header field");
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
        let mut body = Vec::new();
        if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            loop {
                let Some(size) = line(&mut r) else { return };
                let size = usize::from_str_radix(size.split(';').next().unwrap_or(""), 16)
                    .expect("chunk size");
                if size == 0 {
                    while line(&mut r).is_some_and(|t| !t.is_empty()) {}
                    break;
                }
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk).expect("chunk");
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = headers.get("content-length") {
            body = vec![0; n.parse().expect("length")];
            r.read_exact(&mut body).expect("body");
        }
        let text = format!(
            "{method} {target} host={} body={}",
            headers.get("host").map_or("", String::as_str),
            String::from_utf8_lossy(&body)
        );
        log.lock().expect("log").push(text.clone());
        // Under the proxy's `/pre` prefix too.
        let route = target.strip_prefix("/pre").unwrap_or(target);
        let resp = match route {
            "/chunked" => format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n{:x}\r\n{text}\r\n0\r\n\r\n",
                text.len()
            ),
            "/until-close" => format!("HTTP/1.1 200 OK\r\n\r\n{text}"),
            _ if method == "HEAD" => {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len())
            }
            _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()),
        };
        if w.write_all(resp.as_bytes()).is_err() || route == "/until-close" {
            return;
        }
    }
}

/// Reads one response: (status, body), de-chunking a chunked body and
/// reading to the close a body without a length.
fn read_response(c: &mut BufReader<TcpStream>, head: bool) -> (u16, String) {
    let mut status = String::new();
    c.read_line(&mut status).expect("status line");
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line, not {status:?}"));
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        c.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("a header field");
        headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if head {
    } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        loop {
            let mut size = String::new();
            c.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim_end(), 16).expect("hex");
            let mut chunk = vec![0; size + 2];
            c.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = headers.get("content-length") {
        body = vec![0; n.parse().expect("length")];
        c.read_exact(&mut body).expect("body");
    } else {
        c.read_to_end(&mut body).expect("body to the close");
    }
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// Requests in one write, bodies by length and in chunks (trailers too),
/// a `HEAD`, chunked answers: each is relayed intact, in order, on one
/// upstream connection, with the upstream's `Host`, and counted once.
#[test]
fn with_no_fault_pipelined_keep_alive_requests_with_bodies_are_relayed_and_counted() {
    let (url, seen) = echo_upstream();
    let host = url.trim_start_matches("http://").to_string();
    let p = Proxy::start(Spec::proxy("api", &format!("{url}/pre"))).expect("proxy");
    let mut c = connect(&p);
    let requests = "GET /a HTTP/1.1\r\nHost: front\r\n\r\n\
        POST /b?x=1 HTTP/1.1\r\nHost: front\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: front\r\nTransfer-Encoding: chunked\r\n\r\n\
        2;ext=1\r\nab\r\n3\r\ncde\r\n0\r\nX-Sum: 5\r\n\r\n\
        HEAD /d HTTP/1.1\r\nHost: front\r\n\r\n\
        GET /chunked HTTP/1.1\r\nHost: front\r\nKeep-Alive: 5\r\n\r\n";
    // All at once, and again byte by byte: the proxy finds the same
    // boundaries however the bytes arrive.
    c.get_mut().write_all(requests.as_bytes()).expect("send");
    let expect = |c: &mut BufReader<TcpStream>| {
        let got: Vec<(u16, String)> = [false, false, false, true, false]
            .into_iter()
            .map(|head| read_response(c, head))
            .collect();
        assert_eq!(
            got,
            vec![
                (200, format!("GET /pre/a host={host} body=")),
                (200, format!("POST /pre/b?x=1 host={host} body=hello")),
                (200, format!("POST /pre/c host={host} body=abcde")),
                (200, String::new()),
                (200, format!("abcGET /pre/chunked host={host} body=")),
            ]
        );
    };
    expect(&mut c);
    for b in requests.as_bytes() {
        c.get_mut().write_all(&[*b]).expect("send a byte");
    }
    expect(&mut c);
    let r = p.stop();
    assert_eq!(
        (
            &r["connections"],
            &r["requests"],
            &r["forwarded"],
            &r["upstream_errors"]
        ),
        (&json(1), &json(10), &json(10), &json(0)),
        "{r}"
    );
    assert_eq!(seen.lock().expect("log").len(), 10);
}

fn json(n: u64) -> serde_json::Value {
    serde_json::Value::from(n)
}

/// `Connection: close` from the client, a response whose end is the
/// upstream's close, HTTP/1.0 without `keep-alive`: the client connection
/// closes after that answer.
#[test]
fn with_no_fault_the_client_connection_closes_when_its_answer_says_so() {
    let (url, _) = echo_upstream();
    let p = Proxy::start(Spec::proxy("api", &url)).expect("proxy");
    // One request, its answer (echoing `line`), then the close.
    let answered_then_closed = |request: &[u8], line: &str| {
        let mut c = connect(&p);
        c.get_mut().write_all(request).expect("send");
        let (status, body) = read_response(&mut c, false);
        assert_eq!(status, 200);
        assert!(body.starts_with(line), "{body}");
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("closed");
        assert!(rest.is_empty());
    };
    answered_then_closed(
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET /x ",
    );

    let mut c = connect(&p);
    c.get_mut()
        .write_all(b"GET /until-close HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    let (status, body) = read_response(&mut c, false);
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /until-close "), "{body}");

    // HTTP/1.0 without `keep-alive`: one answer, then the close.
    answered_then_closed(b"GET /old HTTP/1.0\r\n\r\n", "GET /old ");
    let r = p.stop();
    assert_eq!(
        (&r["requests"], &r["forwarded"]),
        (&json(3), &json(3)),
        "{r}"
    );
}

/// A real client (reqwest, keep-alive pool) through the relayed path.
#[test]
fn with_no_fault_a_real_client_reuses_its_connection() {
    let (url, seen) = echo_upstream();
    let p = Proxy::start(Spec::proxy("api", &url)).expect("proxy");
    let bodies = rt().block_on(async {
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for i in 0..20 {
            let resp = client
                .post(format!("{}/item/{i}", p.url))
                .body(format!("payload {i}"))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200);
            out.push(resp.text().await.expect("body"));
        }
        out
    });
    for (i, b) in bodies.iter().enumerate() {
        assert!(
            b.starts_with(&format!("POST /item/{i} ")) && b.ends_with(&format!("body=payload {i}")),
            "{b}"
        );
    }
    let r = p.stop();
    assert_eq!(
        (&r["connections"], &r["requests"], &r["forwarded"]),
        (&json(1), &json(20), &json(20)),
        "{r}"
    );
    assert_eq!(seen.lock().expect("log").len(), 20);
}

/// Garbage instead of a request: a 400, then the connection closes; the
/// upstream sees nothing.
#[test]
fn with_no_fault_a_malformed_request_gets_400() {
    let (url, seen) = echo_upstream();
    let p = Proxy::start(Spec::proxy("api", &url)).expect("proxy");
    let mut c = connect(&p);
    c.get_mut().write_all(b"NOT HTTP\r\n\r\n").expect("send");
    let (status, _) = read_response(&mut c, false);
    assert_eq!(status, 400);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty());
    assert!(seen.lock().expect("log").is_empty());
}

/// A chunked request body that turns malformed after its head went upstream
/// closes the connection at once: the upstream never gets a half request
/// it would wait on forever, and the client is not left hanging.
#[test]
fn with_no_fault_a_malformed_chunked_body_closes_the_connection() {
    let (url, _) = echo_upstream();
    let p = Proxy::start(Spec::proxy("api", &url)).expect("proxy");
    let mut c = connect(&p);
    c.get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    c.get_mut()
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )
        .expect("send");
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "not closed: {e}"),
    }
    let r = p.stop();
    assert_eq!(r["requests"], json(1), "{r}");
}

/// A fault whose window opens later acts on connections opened before it
/// opened, and on new ones; once a window has closed for good, new
/// connections are served unharmed and still counted.
#[test]
fn a_fault_window_that_opens_later_still_injects_and_one_that_closed_does_not() {
    let up = Upstream::start();
    let p = proxy(
        &up,
        vec![fault("http_status", |f| {
            f.status = 429;
            f.after_ms = 1500;
            f.for_ms = Some(1500);
        })],
        1,
    );
    // Before the window (1.5 s of slack for a loaded machine).
    let mut early = connect(&p);
    assert_eq!(exchange(&mut early, "/").expect("before").0, 200);
    std::thread::sleep(Duration::from_millis(1600));
    // Inside the window (1500–3000 ms), on the early connection and a new one.
    assert_eq!(exchange(&mut early, "/").expect("during").0, 429);
    assert_eq!(get(&p, "/").expect("during, new").0, 429);
    std::thread::sleep(Duration::from_millis(1600));
    // After it: a new connection takes the relayed path.
    let mut late = connect(&p);
    for _ in 0..3 {
        assert_eq!(exchange(&mut late, "/").expect("after").0, 200);
    }
    assert_eq!(exchange(&mut early, "/").expect("after, early").0, 200);
    let r = p.stop();
    assert_eq!(r["requests"], 7, "{r}");
    assert_eq!(r["forwarded"], 5, "{r}");
    assert_eq!(
        (&r["faults"][0]["seen"], &r["faults"][0]["injected"]),
        (&json(2), &json(2)),
        "{r}"
    );
}

// ---- through the `pipe` binary ----

fn proj(pipeline: &str) -> Sandbox {
    Sandbox::with_pipeline(pipeline).kill_grace_ms(500)
}

fn wait_for(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A chaos stage whose client fails on the injected 503; `strict` decides
/// whether the stage is required.
fn policy_pipeline(upstream: &str) -> String {
    format!(
        r#"pipeline p {{
  param strict: bool = false

  stage chaos {{
    required = strict

    chaos api {{
      upstream = "{upstream}"
      seed     = 1
      fault http_status {{
        status      = 503
        retry_after = 1s
        path        = "/orders/*"
      }}
    }}
    step healthy {{
      run = "curl -fsS ${{chaos.api.url}}/health"
    }}
    step orders {{
      needs = [healthy]
      env   = {{ URL = chaos.api.url }}
      run   = "curl -fsS $URL/orders/1"
    }}
  }}
}}
"#
    )
}

#[test]
fn a_failure_in_a_chaos_stage_that_is_not_required_only_warns() {
    let up = Upstream::start();
    let p = proj(&policy_pipeline(&up.url()));
    let r = p.run(&["run", "p", "--output", "json"], Duration::from_mins(1));
    assert_eq!(r.code, 0, "{}", r.all());
    let ev = r.events();
    let warning = ev
        .iter()
        .find(|e| e["event"] == "warning")
        .unwrap_or_else(|| panic!("no warning event: {}", r.all()));
    assert_eq!(warning["step"], "chaos.orders");
    let report = ev
        .iter()
        .find(|e| e["event"] == "chaos_report")
        .unwrap_or_else(|| panic!("no chaos report: {}", r.all()));
    assert_eq!(report["step"], "chaos.api");
    assert_eq!(report["report"]["requests"], 2, "{report}");
    assert_eq!(report["report"]["injected"]["http_status"], 1, "{report}");
    assert_eq!(report["report"]["faults"][0]["seen"], 1, "{report}");
    // The report comes after the last step of the stage, before the run ends.
    let pos = |pred: &dyn Fn(&serde_json::Value) -> bool| ev.iter().position(pred).expect("event");
    let orders_done = pos(&|e| e["event"] == "step_finished" && e["step"] == "chaos.orders");
    let report_at = pos(&|e| e["event"] == "chaos_report");
    let next = pos(&|e| e["event"] == "run_finished");
    assert!(orders_done < report_at, "{}", r.all());
    assert!(report_at < next, "{}", r.all());
    // The report is recorded as the block's output.
    let st = p.run(&["status", "--format", "json"], Duration::from_secs(20));
    let status: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
    let api = status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "chaos.api")
        .expect("chaos.api")
        .clone();
    let saved: serde_json::Value =
        serde_json::from_str(api["outputs"]["report"].as_str().expect("report output"))
            .expect("report json");
    assert_eq!(saved["injected"]["http_status"], 1, "{api}");

    let plain = p.run(&["run", "p", "--output", "plain"], Duration::from_mins(1));
    assert_eq!(plain.code, 0, "{}", plain.all());
    assert!(
        plain.stdout.contains(
            "[chaos.orders] warning: `chaos.orders` failed, but stage `chaos` is not required"
        ),
        "{}",
        plain.all()
    );
    assert!(
        plain.stdout.contains("[chaos.api] chaos report: 2 requests, 1 forwarded, 0 upstream errors; http_status 503: 1/1"),
        "{}",
        plain.all()
    );
    assert!(plain.stdout.contains("succeeded in"), "{}", plain.all());
    assert!(
        plain.stdout.contains("with 1 warning(s)"),
        "{}",
        plain.all()
    );
}

#[test]
fn a_failure_in_a_required_chaos_stage_fails_the_run() {
    let up = Upstream::start();
    let p = proj(&policy_pipeline(&up.url()));
    let r = p.run(
        &["run", "p", "-p", "strict=true", "--output", "json"],
        Duration::from_mins(1),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let ev = r.events();
    assert!(!ev.iter().any(|e| e["event"] == "warning"), "{}", r.all());
    assert!(
        ev.iter().any(|e| e["event"] == "chaos_report"),
        "torn down on failure too: {}",
        r.all()
    );
    let end = ev.last().expect("events");
    assert_eq!(end["status"], "failed");
    assert_eq!(end["failed_step"], "chaos.orders");
}

/// A warn-only chaos stage whose test fails, a step of the same stage and a
/// later stage that need it.
fn dependents_pipeline(upstream: &str) -> String {
    format!(
        r#"pipeline p {{
  param strict: bool = false

  stage chaos {{
    required = strict

    chaos api {{
      upstream = "{upstream}"
      seed     = 1
      fault http_status {{ status = 503  path = "/orders/*" }}
    }}
    step orders {{
      env = {{ URL = chaos.api.url }}
      run = "curl -fsS $URL/orders/1"
    }}
    step tally {{
      needs = [orders]
      run   = "echo tallied > tallied.txt"
    }}
    step celebrate {{
      needs = [orders]
      when  = steps.orders.status == "succeeded"
      run   = "echo clean > clean.txt"
    }}
  }}

  stage deploy {{
    needs = [chaos]
    step ship {{
      run = "echo shipped > shipped.txt"
    }}
  }}
}}
"#
    )
}

#[test]
fn a_warn_only_failure_lets_the_steps_that_need_it_run() {
    let up = Upstream::start();
    let p = proj(&dependents_pipeline(&up.url()));
    let r = p.run(&["run", "p", "--output", "json"], Duration::from_mins(1));
    assert_eq!(r.code, 0, "{}", r.all());
    let ev = r.events();
    let finished = |step: &str| {
        ev.iter()
            .position(|e| e["event"] == "step_finished" && e["step"] == step)
            .unwrap_or_else(|| panic!("`{step}` did not finish: {}", r.all()))
    };
    assert_eq!(ev[finished("chaos.orders")]["status"], "failed");
    assert_eq!(
        ev[finished("chaos.tally")]["status"],
        "succeeded",
        "{}",
        r.all()
    );
    assert_eq!(
        ev[finished("deploy.ship")]["status"],
        "succeeded",
        "{}",
        r.all()
    );
    assert!(p.path("tallied.txt").exists() && p.path("shipped.txt").exists());
    // ... unless it asks for a clean pass.
    assert!(
        ev.iter()
            .any(|e| e["event"] == "step_skipped" && e["step"] == "chaos.celebrate"),
        "{}",
        r.all()
    );
    assert!(!p.path("clean.txt").exists());
    let warnings: Vec<_> = ev.iter().filter(|e| e["event"] == "warning").collect();
    assert_eq!(warnings.len(), 1, "{}", r.all());
    assert_eq!(warnings[0]["step"], "chaos.orders");
    // The proxy lives until the stage's last step is over.
    let report = ev
        .iter()
        .position(|e| e["event"] == "chaos_report")
        .unwrap_or_else(|| panic!("no chaos report: {}", r.all()));
    assert!(finished("chaos.tally") < report, "{}", r.all());
    let end = ev.last().expect("events");
    assert_eq!(end["event"], "run_finished");
    assert_eq!(end["status"], "succeeded", "{}", r.all());

    // Required: the same failure stops what needs it, and fails the run.
    let p = proj(&dependents_pipeline(&up.url()));
    let r = p.run(
        &["run", "p", "-p", "strict=true", "--output", "json"],
        Duration::from_mins(1),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let ev = r.events();
    for step in ["chaos.tally", "deploy.ship"] {
        assert!(
            !ev.iter()
                .any(|e| e["event"] == "step_started" && e["step"] == step),
            "`{step}` ran: {}",
            r.all()
        );
    }
    assert!(!p.path("tallied.txt").exists() && !p.path("shipped.txt").exists());
    assert!(
        ev.iter().any(|e| e["event"] == "chaos_report"),
        "{}",
        r.all()
    );
}

#[test]
fn ctrl_c_stops_the_proxy_before_pipe_exits() {
    let up = Upstream::start();
    let p = proj(&format!(
        r#"pipeline p {{
  stage chaos {{
    chaos api {{
      upstream = "{}"
      fault latency {{ delay = 10ms }}
    }}
    step wait {{ run = "echo ${{chaos.api.port}} > port; sleep 60" }}
  }}
}}
"#,
        up.url()
    ));
    let child = p.spawn(&["run", "p", "--output", "json"]);
    let port_file = p.path("port");
    assert!(wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&port_file).is_ok_and(|s| s.ends_with('\n'))
    }));
    let port: u16 = std::fs::read_to_string(&port_file)
        .expect("port")
        .trim()
        .parse()
        .expect("a port number");
    let mut c = BufReader::new(TcpStream::connect(("127.0.0.1", port)).expect("proxy listens"));
    s_set(c.get_ref());
    assert_eq!(exchange(&mut c, "/").expect("through the proxy").0, 200);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let r = finish(child, Duration::from_secs(30));
    assert_eq!(r.code, 130, "{}", r.all());
    let ev = r.events();
    let report = ev
        .iter()
        .position(|e| e["event"] == "chaos_report")
        .unwrap_or_else(|| panic!("no teardown report: {}", r.all()));
    let end = ev
        .iter()
        .position(|e| e["event"] == "run_finished")
        .expect("run_finished");
    assert!(report < end, "torn down before the run ended");
    assert_eq!(ev[report]["report"]["requests"], 1);
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("nobody listens");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // The kept-alive connection was cut too.
    let mut buf = [0u8; 8];
    assert!(matches!(c.get_mut().read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn a_bad_fault_parameter_is_reported_at_its_line_before_anything_runs() {
    let p = proj(
        r#"pipeline p {
  stage chaos {
    chaos api {
      upstream = "http://127.0.0.1:9"
      fault latency { dealy = 1s }
    }
  }
}
"#,
    );
    let r = p.run(&["run", "p", "--output", "plain"], Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}", r.all());
    for text in [
        "unknown attribute `dealy` in fault `latency`",
        "pipelines/p.pipe:5:23",
        "did you mean `delay`?",
    ] {
        assert!(r.stderr.contains(text), "{text}: {}", r.all());
    }
    assert!(r.stdout.is_empty(), "nothing ran: {}", r.all());
}

// ---- container faults, against the real Docker Engine ----

fn engine() -> bollard::Docker {
    let d = bollard::Docker::connect_with_local_defaults().expect("docker client");
    rt().block_on(d.negotiate_version())
        .expect("the Docker Engine does not answer: run `bash .ci/docker-up.sh`")
}

/// A project with a busybox-static root filesystem at `rootfs/` (imported as
/// the base image: nothing is pulled), a name unique to the test, and the
/// images and containers to remove at the end.
struct DockerProj {
    proj: Sandbox,
    id: String,
    base: String,
    containers: Vec<String>,
}

impl DockerProj {
    fn new(tag: &str) -> DockerProj {
        let proj = proj("");
        let dir = proj.dir.path();
        let id = unique_id(&format!("pipetest-chaos-{tag}"));
        busybox_rootfs(dir, None);
        let base = format!("{id}-base:1");
        DockerProj {
            proj,
            id,
            base,
            containers: Vec::new(),
        }
    }

    fn pipeline(&self, name: &str, text: &str) {
        std::fs::write(self.proj.path(&format!("pipelines/{name}.pipe")), text).expect("write");
    }

    /// The state of container `name`: (running, paused).
    fn state(name: &str) -> Option<(bool, bool)> {
        let c = rt().block_on(engine().inspect_container(name, None)).ok()?;
        let s = c.state?;
        Some((s.running == Some(true), s.paused == Some(true)))
    }

    fn markers(&self) -> Vec<String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec!["dev.pipe.kind=chaos-pause".to_string()],
        )]);
        rt().block_on(
            engine().list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: Some(filters),
            })),
        )
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|v| {
            v.labels
                .get("dev.pipe.chaos.paused")
                .is_some_and(|c| self.state_id(c))
        })
        .map(|v| v.name)
        .collect()
    }

    /// Whether a container id is one of this test's.
    fn state_id(&self, id: &str) -> bool {
        self.containers.iter().any(|n| {
            rt().block_on(engine().inspect_container(n, None))
                .ok()
                .and_then(|c| c.id)
                .is_some_and(|cid| cid == id)
        })
    }
}

impl Drop for DockerProj {
    fn drop(&mut self) {
        let d = engine();
        let rt = rt();
        for c in &self.containers {
            let _ = rt.block_on(d.remove_container(
                c,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            ));
        }
        let _ = rt.block_on(d.remove_image(
            &self.base,
            Some(bollard::query_parameters::RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        ));
    }
}

#[test]
fn a_worker_killed_mid_step_fails_its_step_and_the_policy_decides() {
    let p = DockerProj::new("kill");
    p.pipeline(
        "p",
        &format!(
            r#"import "std/docker"

pipeline p {{
  param strict: bool = false

  stage base {{
    step import = docker.import {{ rootfs = "rootfs"  image = "{base}" }}
  }}
  stage chaos {{
    needs    = [base]
    required = strict

    chaos crash {{
      container = "worker"
      fault kill {{
        after  = 2s
        signal = "SIGKILL"
      }}
    }}
    step worker {{
      image = "{base}"
      run   = "i=0; while [ $i -lt 300 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done"
    }}
  }}
}}
"#,
            base = p.base
        ),
    );
    let r = p
        .proj
        .run(&["run", "p", "--output", "json"], Duration::from_mins(2));
    assert_eq!(r.code, 0, "not required: a warning\n{}", r.all());
    let ev = r.events();
    let worker = ev
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == "chaos.worker")
        .unwrap_or_else(|| panic!("worker never finished: {}", r.all()));
    assert_eq!(worker["status"], "failed", "{worker}");
    assert_eq!(worker["exit_code"], 137, "killed by SIGKILL: {worker}");
    assert!(
        worker["duration_ms"].as_u64().unwrap_or(0) < 25_000,
        "killed before its 30 s of work: {worker}"
    );
    assert!(ev
        .iter()
        .any(|e| e["event"] == "warning" && e["step"] == "chaos.worker"));
    let report = ev
        .iter()
        .find(|e| e["event"] == "chaos_report")
        .unwrap_or_else(|| panic!("no chaos report: {}", r.all()));
    assert_eq!(report["report"]["injected"]["kill"], 1, "{report}");
    let at = report["report"]["faults"][0]["at_ms"]
        .as_u64()
        .expect("at_ms");
    assert!(at >= 2000, "after 2s: {report}");
    assert!(
        report["report"]["faults"][0]["container"]
            .as_str()
            .is_some_and(|c| c.contains("chaos.worker")),
        "{report}"
    );

    let r = p.proj.run(
        &["run", "p", "-p", "strict=true", "--output", "json"],
        Duration::from_mins(2),
    );
    assert_eq!(r.code, 1, "required: the kill fails the run\n{}", r.all());
    let end = r.events().last().cloned().expect("events");
    assert_eq!(end["failed_step"], "chaos.worker", "{end}");
}

#[test]
fn a_pause_is_undone_on_ctrl_c_and_by_gc_after_a_crash() {
    let mut p = DockerProj::new("pause");
    let target = format!("{}-target", p.id);
    p.containers.push(target.clone());
    p.pipeline(
        "setup",
        &format!(
            r#"import "std/docker"

pipeline setup {{
  stage base {{
    step import = docker.import {{
      rootfs  = "rootfs"
      image   = "{base}"
      changes = ["CMD [\"sleep\", \"600\"]"]
    }}
  }}
  stage svc {{
    needs = [base]
    step target = docker.run {{ image = "{base}"  name = "{target}" }}
  }}
}}
"#,
            base = p.base
        ),
    );
    p.pipeline(
        "p",
        &format!(
            r#"pipeline p {{
  stage chaos {{
    chaos freeze {{
      container = "{target}"
      fault pause {{}}
    }}
    step wait {{ run = "sleep 60" }}
  }}
}}
"#
        ),
    );
    let r = p.proj.run(
        &["run", "setup", "--output", "plain"],
        Duration::from_mins(2),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(DockerProj::state(&target), Some((true, false)));

    // Ctrl-C while the container is paused: pipe unpauses it before it exits.
    let child = p.proj.spawn(&["run", "p", "--output", "plain"]);
    assert!(
        wait_for(Duration::from_mins(1), || DockerProj::state(&target)
            == Some((true, true))),
        "never paused"
    );
    assert_eq!(p.markers().len(), 1, "the pause is journalled");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let r = finish(child, Duration::from_secs(30));
    assert_eq!(r.code, 130, "{}", r.all());
    assert_eq!(
        DockerProj::state(&target),
        Some((true, false)),
        "{}",
        r.all()
    );
    assert!(p.markers().is_empty(), "no marker left");

    // SIGKILL cannot clean up: the container stays paused until `pipe gc`.
    let mut child = p.proj.spawn(&["run", "p", "--output", "plain"]);
    assert!(
        wait_for(Duration::from_mins(1), || DockerProj::state(&target)
            == Some((true, true))),
        "never paused"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        DockerProj::state(&target),
        Some((true, true)),
        "SIGKILL cannot unpause"
    );
    let r = p.proj.run(&["gc"], Duration::from_mins(1));
    assert!(r.stdout.contains("unpaused container"), "{}", r.all());
    assert_eq!(DockerProj::state(&target), Some((true, false)));
    assert!(p.markers().is_empty(), "gc removed the marker");
}

#[test]
fn the_shipped_example_runs_and_reports() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = crate::common::run_bounded(
        Command::new(pipe_bin())
            .args([
                "run",
                "examples/chaos.pipe",
                "--output",
                "plain",
                "--state-dir",
            ])
            .arg(state.path())
            .current_dir(crate::common::repo_root()),
        Duration::from_mins(2),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("10/10 fetched"), "{stdout}");
    assert!(
        stdout.contains("[resilience.flaky] chaos report: "),
        "{stdout}"
    );
    assert!(stdout.contains("http_status 429 (rate 0.3): "), "{stdout}");
}

#[test]
fn resume_after_a_crash_starts_the_proxy_again() {
    let up = Upstream::start();
    let p = proj(&format!(
        r#"pipeline p {{
  stage chaos {{
    chaos api {{ upstream = "{}" }}
    step use {{ run = "curl -fsS ${{chaos.api.url}}/x > got; test -f go || sleep 60" }}
  }}
}}
"#,
        up.url()
    ));
    let mut child = p.spawn(&["run", "p", "--output", "plain"]);
    assert!(wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(p.path("got")).is_ok_and(|s| s == "hello /x")
    }));
    child.kill().expect("kill -9");
    let _ = child.wait();
    std::fs::write(p.path("go"), "").expect("write");
    std::fs::remove_file(p.path("got")).expect("rm");
    let r = p.run(
        &["resume", "--rerun-in-doubt", "--output", "plain"],
        Duration::from_mins(1),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("[chaos.api] started"), "{}", r.all());
    assert_eq!(
        std::fs::read_to_string(p.path("got")).expect("got"),
        "hello /x"
    );
}
