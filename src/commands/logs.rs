//! `pipe logs [RUN] [STEP] [--attempt N] [--follow]`: the log files of a run's steps.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use pipe_runtime::state::{StepRecord, Store};

use super::run::StateArgs;
use crate::exit::Failure;
use crate::project::Project;

pub struct LogArgs<'a> {
    pub run: Option<&'a str>,
    pub step: Option<&'a str>,
    pub attempt: Option<u32>,
    pub follow: bool,
}

fn fail(e: &pipe_runtime::StateError) -> Failure {
    Failure::invalid(e.to_string())
}

/// The (step id, log file) pairs to show.
fn chosen(
    store: &Store,
    run: i64,
    steps: &[StepRecord],
    args: &LogArgs<'_>,
) -> Result<Vec<(String, PathBuf)>, Failure> {
    let picked: Vec<&StepRecord> = match args.step {
        Some(name) => {
            let hit: Vec<_> = steps
                .iter()
                .filter(|s| {
                    s.step_id == name || s.step_id.rsplit_once('.').is_some_and(|(_, n)| n == name)
                })
                .collect();
            if hit.is_empty() && !args.follow {
                let known: Vec<&str> = steps.iter().map(|s| s.step_id.as_str()).collect();
                return Err(Failure::invalid(format!(
                    "run {run} has no step `{name}` (its steps: {})",
                    known.join(", ")
                )));
            }
            hit
        }
        None => steps.iter().collect(),
    };
    let mut out = Vec::new();
    for s in picked {
        if let Some(n) = args.attempt {
            if n > s.attempt && !args.follow {
                return Err(Failure::invalid(format!(
                    "step {} made {} attempt(s) in run {run}; there is no attempt {n}",
                    s.step_id, s.attempt
                )));
            }
        }
        let a = args.attempt.unwrap_or(s.attempt);
        if a > 0 {
            out.push((s.step_id.clone(), store.log_path(run, &s.step_id, a)));
        }
    }
    Ok(out)
}

pub fn run(project: &Project, state: &StateArgs, args: &LogArgs<'_>) -> Result<String, Failure> {
    let store = state.open_existing(project)?;
    let r = store.resolve_run(args.run).map_err(|e| fail(&e))?;
    let steps = store.steps(r.id).map_err(|e| fail(&e))?;
    let files = chosen(&store, r.id, &steps, args)?;
    if args.follow {
        follow(&store, r.id, args)?;
        return Ok(String::new());
    }
    let single = args.step.is_some();
    let mut out = String::new();
    for (id, path) in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if single {
            out.push_str(&text);
        } else {
            for line in text.lines() {
                out.push_str(&format!("[{id}] {line}\n"));
            }
        }
    }
    Ok(out)
}

/// Prints new log lines as they are written, until the run is no longer
/// executed by any pipe (its lock is free).
fn follow(store: &Store, run: i64, args: &LogArgs<'_>) -> Result<(), Failure> {
    let mut offsets: HashMap<PathBuf, u64> = HashMap::new();
    let mut partial: HashMap<PathBuf, String> = HashMap::new();
    loop {
        // Taking the lock succeeds only when no pipe executes the run.
        let live = store.lock_run(run).is_err();
        let steps = store.steps(run).map_err(|e| fail(&e))?;
        let single = args.step.is_some();
        let mut out = std::io::stdout().lock();
        for (id, path) in chosen(store, run, &steps, args)? {
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            let off = offsets.entry(path.clone()).or_insert(0);
            if f.seek(std::io::SeekFrom::Start(*off)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_err() {
                continue;
            }
            *off += buf.len() as u64;
            let pending = partial.entry(path).or_default();
            pending.push_str(&String::from_utf8_lossy(&buf));
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                let line = line.trim_end_matches('\n');
                let _ = if single {
                    writeln!(out, "{line}")
                } else {
                    writeln!(out, "[{id}] {line}")
                };
            }
        }
        let _ = out.flush();
        if !live {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
