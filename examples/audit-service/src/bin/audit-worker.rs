//! `audit-worker`: runs queued audits (default), `audit URL` (one audit,
//! printed as JSON), `healthcheck`, `version`.

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use audit_service::audit::{self, Policy};
use audit_service::config::{self, Build};
use audit_service::{http, worker};

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("run") => run(),
        Some("audit") if args.len() == 2 => one(&args[1]),
        Some("healthcheck") => match config::port_from_env(&var) {
            Ok(p) => audit_service::healthcheck(p),
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Some("version" | "--version") => {
            let b = Build::from_env(&var);
            println!(
                "audit-worker {} ({}, built {})",
                b.version, b.git_sha, b.build_date
            );
            0
        }
        _ => {
            eprintln!("usage: audit-worker [run | audit URL | healthcheck | version]");
            2
        }
    };
    std::process::exit(code);
}

fn policy() -> Result<Policy, i32> {
    Policy::from_env(&var).map_err(|errors| {
        eprintln!("audit-worker: invalid configuration:");
        for e in errors {
            eprintln!("  - {e}");
        }
        config::EX_CONFIG
    })
}

/// One audit, for scripts (the chaos stage): the report as JSON on stdout.
/// Exit 0 completed, 3 partial, 4 blocked, 1 failed.
fn one(url: &str) -> i32 {
    let p = match policy() {
        Ok(p) => p,
        Err(c) => return c,
    };
    let r = audit::run(url, &p);
    println!(
        "{}",
        serde_json::json!({
            "url": url,
            "status": r.status,
            "http_status": r.http_status,
            "error": r.error,
            "duration_ms": r.duration_ms,
            "details": r.details,
        })
    );
    match r.status {
        "completed" => 0,
        "partial" => 3,
        "blocked" => 4,
        _ => 1,
    }
}

fn run() -> i32 {
    let mut errors = Vec::new();
    let db = config::database_from_env(&var)
        .map_err(|e| errors.push(e))
        .ok();
    let port = config::port_from_env(&var).map_err(|e| errors.push(e)).ok();
    let poll = match var("POLL_INTERVAL_MS").filter(|v| !v.is_empty()) {
        None => Duration::from_millis(500),
        Some(v) => {
            if let Ok(ms) = v.parse() {
                Duration::from_millis(ms)
            } else {
                errors.push(format!("POLL_INTERVAL_MS `{v}` is not a number"));
                Duration::ZERO
            }
        }
    };
    let p = match Policy::from_env(&var) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let (Some(db), Some(port), Some(p), true) = (db, port, p, errors.is_empty()) else {
        eprintln!("audit-worker: invalid configuration:");
        for e in errors {
            eprintln!("  - {e}");
        }
        return config::EX_CONFIG;
    };
    let build = Build::from_env(&var);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("audit-worker: cannot listen on port {port}: {e}");
            return 1;
        }
    };
    eprintln!(
        "audit-worker {} ({}) db={} health on :{port}",
        build.version,
        build.git_sha,
        db.display()
    );
    let stats = Arc::new(worker::Stats::default());
    let handler = worker::handler(Arc::clone(&stats), build);
    std::thread::spawn(move || http::serve(&listener, &handler));
    worker::run(&db, &p, poll, &stats, &AtomicBool::new(false));
    0
}
