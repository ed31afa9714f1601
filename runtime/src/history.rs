//! Step durations recorded by earlier runs, for `pipe graph`'s estimates: the
//! median of a step's recent successful durations (see docs/runtime.md,
//! "Estimates from history"). Read-only: looking never creates or changes a
//! state store.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::state::StateError;

/// The newest runs of a pipeline that are looked at.
pub const RUNS: i64 = 100;
/// The newest successes of a step whose median is taken.
pub const SAMPLES: usize = 20;

/// What history says about one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The median of the recorded successful durations.
    pub median_ms: u64,
    /// How many durations it is the median of.
    pub samples: usize,
}

/// The median of each step's successful durations in the newest [`RUNS`]
/// runs of `pipeline` recorded in `dir/state.db` (at most [`SAMPLES`] per
/// step, newest first). No store: no history, and none is created.
pub fn estimates(dir: &Path, pipeline: &str) -> Result<HashMap<String, Estimate>, StateError> {
    let path = dir.join("state.db");
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let err = |e: rusqlite::Error| StateError::Sqlite {
        path: path.clone(),
        detail: e.to_string(),
    };
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    // One query: the newest runs through `runs_by_pipeline`, their steps
    // through the primary key (run_id, step_id). Cached steps never started
    // and are left out, as they took no time.
    let mut st = conn
        .prepare(
            "SELECT s.step_id, s.finished_ms - s.started_ms
             FROM (SELECT id FROM runs WHERE pipeline = ?1 ORDER BY id DESC LIMIT ?2) r
             JOIN steps s ON s.run_id = r.id
             WHERE s.status = 'succeeded' AND s.started_ms IS NOT NULL
               AND s.finished_ms >= s.started_ms
             ORDER BY r.id DESC",
        )
        .map_err(err)?;
    let rows = st
        .query_map(rusqlite::params![pipeline, RUNS], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(err)?;
    let mut by_step: HashMap<String, Vec<u64>> = HashMap::new();
    for row in rows {
        let (step, ms) = row.map_err(err)?;
        let v = by_step.entry(step).or_default();
        if v.len() < SAMPLES {
            v.push(ms as u64);
        }
    }
    Ok(by_step
        .into_iter()
        .map(|(k, mut v)| {
            let samples = v.len();
            (
                k,
                Estimate {
                    median_ms: median(&mut v),
                    samples,
                },
            )
        })
        .collect())
}

/// The median (the mean of the two middle values for an even count).
fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        u64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{NewRun, StepRecord, Store};

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [30, 10, 20]), 20);
        assert_eq!(median(&mut [40, 10, 20, 30]), 25);
        assert_eq!(median(&mut [7]), 7);
        assert_eq!(median(&mut []), 0);
    }

    #[test]
    fn no_store_is_no_history_and_none_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".pipe");
        assert!(estimates(&state, "p").unwrap().is_empty());
        assert!(!state.exists());
    }

    #[test]
    fn successes_of_the_pipeline_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let step = |run, id: &str, status: &str, start: Option<i64>, end: i64| {
            store
                .put_step(
                    run,
                    &StepRecord {
                        step_id: id.into(),
                        status: status.into(),
                        attempt: 1,
                        started_ms: start,
                        finished_ms: Some(end),
                        ..StepRecord::default()
                    },
                )
                .unwrap();
        };
        for (k, ms) in [100, 300, 200].into_iter().enumerate() {
            let run = store
                .create_run(&NewRun {
                    pipeline: "p".into(),
                    ..NewRun::default()
                })
                .unwrap();
            step(run, "s.a", "succeeded", Some(1000), 1000 + ms);
            // Failures, timeouts and cache hits are not durations of a success.
            step(run, "s.b", "failed", Some(1000), 9000);
            step(run, "s.c", "timed_out", Some(1000), 9000);
            step(run, "s.d", "succeeded", None, 5000 + k as i64);
        }
        let other = store
            .create_run(&NewRun {
                pipeline: "q".into(),
                ..NewRun::default()
            })
            .unwrap();
        step(other, "s.a", "succeeded", Some(0), 99_000);
        let e = estimates(dir.path(), "p").unwrap();
        assert_eq!(
            e,
            HashMap::from([(
                "s.a".to_string(),
                Estimate {
                    median_ms: 200,
                    samples: 3
                }
            )])
        );
    }
}
