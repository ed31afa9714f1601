//! The example service `pipelines/release.pipe` builds and ships: an audit API
//! (`audit-api`) and the worker that runs the audits (`audit-worker`), over one
//! SQLite database with versioned migrations. Small on purpose: std::net and
//! threads, static binaries for a scratch image. See README.md beside this crate.

pub mod api;
pub mod audit;
pub mod config;
pub mod db;
pub mod http;
pub mod migrate;
pub mod robots;
pub mod worker;

/// `GET http://127.0.0.1:<port>/health` answers 200: the images' HEALTHCHECK
/// (a scratch image has no curl or wget).
pub fn healthcheck(port: u16) -> i32 {
    let url = http::Url {
        scheme: "http".into(),
        host: "127.0.0.1".into(),
        port,
        path: "/health".into(),
    };
    match http::get(&url, std::time::Duration::from_secs(3), "healthcheck") {
        Ok(r) if r.status == 200 => 0,
        Ok(r) => {
            eprintln!("unhealthy: {url} answered {}: {}", r.status, r.text());
            1
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            1
        }
    }
}
