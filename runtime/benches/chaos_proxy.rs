//! The fault proxy's overhead with no fault active: `wrk` sends about
//! 50,000 small requests per run (the duration is sized from a warm-up) to a
//! local hyper server,
//! directly and through the proxy, and the req/s and p50/p99 latencies of
//! both are compared. Needs Debian's `wrk` (`apt-get install -y wrk`).
//!
//!   cargo bench -p pipe-runtime --bench chaos_proxy
//!
//! Environment: `CHAOS_BENCH_REQUESTS` (50000), `CHAOS_BENCH_CONNECTIONS`
//! (16), `CHAOS_BENCH_ROUNDS` (3; the median round is reported).
//! See docs/chaos.md for figures.

use std::convert::Infallible;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pipe_runtime::chaos::{Proxy, Spec};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small keep-alive HTTP/1.1 server on a runtime (one thread) of its own.
fn upstream() -> (u16, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, rt)
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

/// `1.23ms`, `456.00us`, `1.02s` → milliseconds.
fn ms(text: &str) -> f64 {
    let (n, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

/// `wrk` for `seconds` against `url`. (A fixed request count through a wrk
/// script would not do: wrk divides by its whole `-d` duration.)
fn wrk(url: &str, seconds: u64, connections: u64) -> Figures {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = Figures {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => f.rps = v.parse().unwrap_or(f64::NAN),
            ["50%", v] => f.p50_ms = ms(v),
            ["99%", v] => f.p99_ms = ms(v),
            [n, "requests", "in", ..] => f.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    assert!(f.rps.is_finite(), "cannot read wrk's output:\n{text}");
    f
}

fn median(mut v: Vec<Figures>) -> Figures {
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v[v.len() / 2]
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("chaos_proxy: `wrk` is not installed (apt-get install -y wrk); skipped");
        return;
    }
    let requests = env("CHAOS_BENCH_REQUESTS", 50_000);
    let connections = env("CHAOS_BENCH_CONNECTIONS", 16);
    let rounds = env("CHAOS_BENCH_ROUNDS", 3).max(1);
    let (port, _up) = upstream();
    let direct_url = format!("http://127.0.0.1:{port}/");
    let proxy =
        Proxy::start(Spec::proxy("bench", &format!("http://127.0.0.1:{port}"))).expect("proxy");
    let proxied_url = format!("{}/", proxy.url);
    // Warm both paths (connection pools), and size each run from the
    // slower one's rate so that it makes about `requests` requests.
    let warm = wrk(&direct_url, 1, connections)
        .rps
        .min(wrk(&proxied_url, 1, connections).rps);
    let seconds = (requests as f64 / warm).ceil().max(1.0) as u64;
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        direct.push(wrk(&direct_url, seconds, connections));
        proxied.push(wrk(&proxied_url, seconds, connections));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (d, p) = (median(direct), median(proxied));
    let report = proxy.stop();
    println!("chaos proxy overhead, no fault active (about {requests} requests per run, {seconds}s each, {rounds} rounds, {connections} connections, wrk -t2; median round)");
    println!(
        "            {:>10}  {:>9}  {:>9}  {:>9}",
        "req/s", "p50 ms", "p99 ms", "requests"
    );
    println!(
        "direct      {:>10.0}  {:>9.3}  {:>9.3}  {:>9}",
        d.rps, d.p50_ms, d.p99_ms, d.requests
    );
    println!(
        "proxied     {:>10.0}  {:>9.3}  {:>9.3}  {:>9}",
        p.rps, p.p50_ms, p.p99_ms, p.requests
    );
    println!(
        "throughput {:.1}% of direct; added latency p50 {:+.3} ms, p99 {:+.3} ms",
        100.0 * p.rps / d.rps,
        p.p50_ms - d.p50_ms,
        p.p99_ms - d.p99_ms
    );
    println!(
        "proxy counted {} requests on {} connections, {} upstream errors",
        report["requests"], report["connections"], report["upstream_errors"]
    );
}
