//! The fault proxy's overhead with no fault active: `wrk` sends about
//! 50,000 small keep-alive requests per run (the duration is sized from a
//! warm-up) to a local hyper server, directly and through the proxy, at 4 and
//! at 16 connections, and compares req/s and p50/p99 latency (the median of
//! several rounds), and the CPU time the proxy spends per request against
//! the server's — a figure that depends little on what else the machine runs.
//! Needs Debian's `wrk` (`apt-get install -y wrk`).
//!
//!   cargo bench -p pipe-runtime --bench chaos_proxy
//!
//! Environment: `CHAOS_BENCH_REQUESTS` (50000), `CHAOS_BENCH_CONNECTIONS`
//! (`4,16`), `CHAOS_BENCH_ROUNDS` (3; the median round by req/s is shown).
//! See docs/chaos.md, "Overhead", for figures.

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

/// A small keep-alive HTTP/1.1 server on a runtime (one thread, `upstream`)
/// of its own.
fn upstream() -> (u16, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("upstream")
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

/// Nanoseconds on a CPU so far of this process's threads whose name starts
/// with `prefix` (from /proc; 0 where it is not available).
fn cpu_ns(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The 1-minute load average.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    /// CPU time per request of the proxy's and of the server's threads (µs).
    proxy_us: f64,
    server_us: f64,
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
    let (proxy0, server0) = (cpu_ns("chaos-"), cpu_ns("upstream"));
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
    let (proxy1, server1) = (cpu_ns("chaos-"), cpu_ns("upstream"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = Figures {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        proxy_us: 0.0,
        server_us: 0.0,
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
    let per = |ns: u64| ns as f64 / 1000.0 / f.requests.max(1) as f64;
    f.proxy_us = per(proxy1 - proxy0);
    f.server_us = per(server1 - server0);
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
    let rounds = env("CHAOS_BENCH_ROUNDS", 3).max(1);
    let connections: Vec<u64> = std::env::var("CHAOS_BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "4,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let (port, _up) = upstream();
    let direct_url = format!("http://127.0.0.1:{port}/");
    let proxy =
        Proxy::start(Spec::proxy("bench", &format!("http://127.0.0.1:{port}"))).expect("proxy");
    let proxied_url = format!("{}/", proxy.url);
    let load_before = load();
    println!(
        "chaos proxy overhead, no fault active: about {requests} requests per run, wrk -t2, \
         median of {rounds} rounds by req/s; {} CPUs",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "{:>5} {:<8} {:>9} {:>8} {:>8} {:>8} {:>12} {:>12}",
        "conns", "path", "req/s", "p50 ms", "p99 ms", "requests", "proxy us/req", "server us/req"
    );
    let mut verdicts = Vec::new();
    for &c in &connections {
        // Warm both paths (connections), and size each path's runs from its
        // rate so that they make about `requests` requests.
        let secs = |url: &str| {
            let warm = wrk(url, 1, c).rps;
            (requests as f64 / warm).ceil().clamp(1.0, 60.0) as u64
        };
        let (ds, ps) = (secs(&direct_url), secs(&proxied_url));
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            direct.push(wrk(&direct_url, ds, c));
            proxied.push(wrk(&proxied_url, ps, c));
            std::thread::sleep(Duration::from_millis(200));
        }
        let (d, p) = (median(direct), median(proxied));
        for (name, f) in [("direct", d), ("proxied", p)] {
            println!(
                "{c:>5} {name:<8} {:>9.0} {:>8.3} {:>8.3} {:>8} {:>12.1} {:>12.1}",
                f.rps, f.p50_ms, f.p99_ms, f.requests, f.proxy_us, f.server_us
            );
        }
        verdicts.push(format!(
            "{c:>5} connections ({ds}s/{ps}s runs): {:.1}% of direct throughput (target 80%), \
             p50 {:+.3} ms (target < 0.2), p99 {:+.3} ms",
            100.0 * p.rps / d.rps,
            p.p50_ms - d.p50_ms,
            p.p99_ms - d.p99_ms
        ));
    }
    for v in verdicts {
        println!("{v}");
    }
    let report = proxy.stop();
    println!(
        "proxy counted {} requests on {} connections, {} upstream errors; load average {load_before} before, {} after",
        report["requests"],
        report["connections"],
        report["upstream_errors"],
        load()
    );
}
