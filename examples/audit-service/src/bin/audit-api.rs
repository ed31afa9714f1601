//! `audit-api`: the HTTP API (default), `migrate ...`, `healthcheck`, `version`.

use std::net::TcpListener;
use std::sync::Arc;

use audit_service::config::{self, Config};
use audit_service::{api::Api, http, migrate};

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("migrate") => migrate::main(&args[1..], &var),
        Some("healthcheck") => match config::port_from_env(&var) {
            Ok(p) => audit_service::healthcheck(p),
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Some("version" | "--version") => {
            let b = config::Build::from_env(&var);
            println!(
                "audit-api {} ({}, built {})",
                b.version, b.git_sha, b.build_date
            );
            0
        }
        Some(other) => {
            eprintln!("unknown command `{other}`: use serve, migrate, healthcheck or version");
            2
        }
    };
    std::process::exit(code);
}

fn serve() -> i32 {
    let cfg = match Config::from_env(&var) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("audit-api: invalid configuration:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return config::EX_CONFIG;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", cfg.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("audit-api: cannot listen on port {}: {e}", cfg.port);
            return 1;
        }
    };
    eprintln!(
        "audit-api {} ({}) on :{} env={} db={}{}",
        cfg.build.version,
        cfg.build.git_sha,
        cfg.port,
        cfg.app_env,
        cfg.database.display(),
        if cfg.fail_rate > 0.0 {
            format!(" FAIL_RATE={}", cfg.fail_rate)
        } else {
            String::new()
        }
    );
    let api = Arc::new(Api::new(cfg));
    let handler: http::Handler = Arc::new(move |r| api.handle(r));
    http::serve(&listener, &handler);
    0
}
