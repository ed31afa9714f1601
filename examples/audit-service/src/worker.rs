//! The worker's queue: claim the oldest queued audit (requeueing those a
//! crashed worker left `running` past their lease), run it, store the report.
//! Claims are single `UPDATE ... RETURNING` statements under SQLite's write
//! lock, so two workers never take the same audit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;

use crate::audit::{self, Policy, Report};
use crate::config::Build;
use crate::db;
use crate::http::{Request, Response};

/// An audit `running` longer than this is taken to belong to a dead worker.
pub const LEASE: Duration = Duration::from_mins(5);
/// An audit claimed this many times without finishing is given up.
pub const MAX_CLAIMS: i64 = 3;

/// Takes the next audit, if any: `(id, url)`.
pub fn claim(conn: &Connection, lease: Duration) -> rusqlite::Result<Option<(i64, String)>> {
    let lease = format!("-{} seconds", lease.as_secs());
    conn.execute(
        "UPDATE audits SET status = 'failed', finished_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
         WHERE status = 'running' AND started_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?1)
           AND attempts >= ?2",
        params![lease, MAX_CLAIMS],
    )?;
    conn.execute(
        "UPDATE audits SET status = 'queued'
         WHERE status = 'running' AND started_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?1)",
        params![lease],
    )?;
    conn.query_row(
        "UPDATE audits SET status = 'running', attempts = attempts + 1,
                started_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
         WHERE id = (SELECT id FROM audits WHERE status = 'queued' ORDER BY id LIMIT 1)
         RETURNING id, url",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Stores the report of audit `id`.
pub fn finish(conn: &Connection, id: i64, report: &Report) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO audit_results (audit_id, http_status, duration_ms, error, details)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id,
            report.http_status,
            report.duration_ms as i64,
            report.error,
            report.details.to_string()
        ],
    )?;
    conn.execute(
        "UPDATE audits SET status = ?2, finished_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?1",
        params![id, report.status],
    )?;
    Ok(())
}

/// Counters the worker's `/metrics` shows.
#[derive(Default)]
pub struct Stats {
    pub completed: AtomicU64,
    pub partial: AtomicU64,
    pub blocked: AtomicU64,
    pub failed: AtomicU64,
    pub db_errors: AtomicU64,
    /// Unix time of the last loop turn, for `/health`.
    pub heartbeat: AtomicU64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Processes at most one audit; returns whether there was one.
pub fn step(db_path: &Path, policy: &Policy, stats: &Stats) -> Result<bool, String> {
    stats.heartbeat.store(now(), Ordering::SeqCst);
    let conn = db::open(db_path).map_err(|e| e.to_string())?;
    let Some((id, url)) = claim(&conn, LEASE).map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    drop(conn);
    eprintln!("audit {id}: {url}");
    let report = audit::run(&url, policy);
    eprintln!(
        "audit {id}: {} in {} ms{}",
        report.status,
        report.duration_ms,
        report
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    let counter = match report.status {
        "completed" => &stats.completed,
        "partial" => &stats.partial,
        "blocked" => &stats.blocked,
        _ => &stats.failed,
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let conn = db::open(db_path).map_err(|e| e.to_string())?;
    finish(&conn, id, &report).map_err(|e| e.to_string())?;
    Ok(true)
}

/// Runs the queue until `stop` is set, sleeping `poll` when it is empty.
pub fn run(db_path: &Path, policy: &Policy, poll: Duration, stats: &Stats, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match step(db_path, policy, stats) {
            Ok(true) => {}
            Ok(false) => std::thread::sleep(poll),
            Err(e) => {
                stats.db_errors.fetch_add(1, Ordering::SeqCst);
                eprintln!("database error: {e} (retrying in {} ms)", poll.as_millis());
                std::thread::sleep(poll);
            }
        }
    }
}

/// The worker's own `/health` and `/metrics`.
pub fn handler(stats: Arc<Stats>, build: Build) -> crate::http::Handler {
    Arc::new(move |req: &Request| match req.path.as_str() {
        "/health" => {
            let age = now().saturating_sub(stats.heartbeat.load(Ordering::SeqCst));
            let ok = age < 60;
            Response::json(
                if ok { 200 } else { 503 },
                &json!({
                    "status": if ok { "ok" } else { "stalled" },
                    "service": "audit-worker",
                    "version": build.version,
                    "git_sha": build.git_sha,
                    "build_date": build.build_date,
                    "last_loop_seconds_ago": age,
                }),
            )
        }
        "/metrics" => {
            let mut out = String::from(
                "# HELP audits_processed_total Audits the worker finished, by result.\n# TYPE audits_processed_total counter\n",
            );
            for (name, c) in [
                ("completed", &stats.completed),
                ("partial", &stats.partial),
                ("blocked", &stats.blocked),
                ("failed", &stats.failed),
            ] {
                out.push_str(&format!(
                    "audits_processed_total{{result=\"{name}\"}} {}\n",
                    c.load(Ordering::SeqCst)
                ));
            }
            out.push_str(&format!(
                "# TYPE worker_database_errors_total counter\nworker_database_errors_total {}\n",
                stats.db_errors.load(Ordering::SeqCst)
            ));
            Response::new(200, "text/plain; version=0.0.4", out)
        }
        _ => Response::json(
            404,
            &json!({"error": "the worker serves /health and /metrics"}),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("q.db");
        let mut c = db::open(&p).unwrap();
        db::migrate_to(&mut c, &db::embedded(), 3).unwrap();
        p
    }

    #[test]
    fn claims_in_order_once_each() {
        let d = tempfile::tempdir().unwrap();
        let p = queue(d.path());
        let c = db::open(&p).unwrap();
        for u in ["http://a", "http://b"] {
            c.execute("INSERT INTO audits (url) VALUES (?1)", [u])
                .unwrap();
        }
        assert_eq!(claim(&c, LEASE).unwrap(), Some((1, "http://a".into())));
        assert_eq!(claim(&c, LEASE).unwrap(), Some((2, "http://b".into())));
        assert_eq!(claim(&c, LEASE).unwrap(), None);
    }

    #[test]
    fn a_crashed_workers_audit_is_requeued_then_given_up() {
        let d = tempfile::tempdir().unwrap();
        let p = queue(d.path());
        let c = db::open(&p).unwrap();
        c.execute("INSERT INTO audits (url) VALUES ('http://a')", [])
            .unwrap();
        for n in 1..=MAX_CLAIMS {
            assert_eq!(
                claim(&c, LEASE).unwrap(),
                Some((1, "http://a".into())),
                "claim {n}"
            );
            // The worker dies: the claim stays `running` until its lease is over.
            assert_eq!(claim(&c, LEASE).unwrap(), None);
            c.execute("UPDATE audits SET started_at = '2000-01-01T00:00:00Z'", [])
                .unwrap();
        }
        assert_eq!(claim(&c, LEASE).unwrap(), None);
        let (status, attempts): (String, i64) = c
            .query_row("SELECT status, attempts FROM audits", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((status.as_str(), attempts), ("failed", MAX_CLAIMS));
    }

    #[test]
    fn reports_are_stored() {
        let d = tempfile::tempdir().unwrap();
        let p = queue(d.path());
        let c = db::open(&p).unwrap();
        c.execute("INSERT INTO audits (url) VALUES ('http://a')", [])
            .unwrap();
        claim(&c, LEASE).unwrap();
        let r = Report {
            status: "partial",
            http_status: Some(200),
            error: Some("1 link".into()),
            duration_ms: 5,
            details: json!({"x": 1}),
        };
        finish(&c, 1, &r).unwrap();
        let (s, det): (String, String) = c
            .query_row(
                "SELECT a.status, r.details FROM audits a JOIN audit_results r ON r.audit_id = a.id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((s.as_str(), det.as_str()), ("partial", "{\"x\":1}"));
    }
}
