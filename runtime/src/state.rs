//! The durable state store: runs, steps and their outputs in SQLite (WAL), log
//! files beside it. Every state change is committed here before the scheduler
//! emits an event about it, so `kill -9` at any moment loses nothing that was
//! reported. See docs/runtime.md.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{params, Connection, OptionalExtension};

/// Errors of the state store, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state store {path} is corrupted or not a pipe state database ({detail}); it was left untouched: move it aside to start afresh")]
    Corrupt { path: PathBuf, detail: String },
    #[error("state store {path}: {detail}")]
    Sqlite { path: PathBuf, detail: String },
    #[error("cannot use state directory {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("no run `{0}` in the state store (see `pipe runs`)")]
    NoSuchRun(String),
    #[error(
        "run {run} is being executed by another pipe (pid {holder}); wait for it or stop it first"
    )]
    Locked { run: i64, holder: String },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What is recorded about a run when it starts.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    pub pipeline: String,
    pub env: Option<String>,
    pub params: IndexMap<String, String>,
    /// The lowering context (git map) as JSON, to re-lower identically on resume.
    pub context: serde_json::Value,
    /// The files the pipeline was loaded from (roots of the workspace).
    pub roots: Vec<String>,
    /// Every source file of the plan: display name and text.
    pub sources: Vec<(String, String)>,
}

/// A stored run.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: i64,
    pub pipeline: String,
    pub env: Option<String>,
    pub params: IndexMap<String, String>,
    pub context: serde_json::Value,
    pub roots: Vec<String>,
    pub sources: Vec<(String, String)>,
    pub source_hash: String,
    pub status: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub failed_step: Option<String>,
}

/// A stored step of a run.
#[derive(Clone, Debug, Default)]
pub struct StepRecord {
    pub step_id: String,
    pub status: String,
    pub attempt: u32,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub outputs: IndexMap<String, String>,
    pub error: Option<String>,
}

/// One change of a step's status, as `put_step` recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub step_id: String,
    pub attempt: u32,
    pub status: String,
    pub at_ms: i64,
}

/// The SQLite state store of one project.
pub struct Store {
    /// Declared first so that it stops before `conn` closes (see
    /// [`Store::checkpoint_in_background`]).
    checkpointer: std::cell::RefCell<Option<Checkpointer>>,
    conn: Connection,
    path: PathBuf,
    dir: PathBuf,
    /// Write transactions of the run's steps and the time spent in them
    /// (statements and commit), for `PIPE_BENCH_STATS` (runtime/bench/README.md).
    writes: Cell<u64>,
    write_time: Cell<Duration>,
    /// Between [`Store::begin_batch`] and [`Store::commit_batch`]: step
    /// writes join one transaction, opened by the first of them.
    batch: Cell<bool>,
    /// Whether the batch's transaction is open (a write of it began one).
    batch_open: Cell<bool>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  pipeline TEXT NOT NULL,
  env TEXT,
  params TEXT NOT NULL,
  context TEXT NOT NULL,
  roots TEXT NOT NULL,
  sources TEXT NOT NULL,
  source_hash TEXT NOT NULL,
  status TEXT NOT NULL,
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER,
  failed_step TEXT
);
CREATE TABLE IF NOT EXISTS steps (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  step_id TEXT NOT NULL,
  status TEXT NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  started_ms INTEGER,
  finished_ms INTEGER,
  exit_code INTEGER,
  outputs TEXT NOT NULL DEFAULT '{}',
  error TEXT,
  PRIMARY KEY (run_id, step_id)
);
-- Every status a step went through, in order: the run report's timeline.
CREATE TABLE IF NOT EXISTS step_history (
  run_id INTEGER NOT NULL,
  step_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  status TEXT NOT NULL,
  at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cache (
  key TEXT PRIMARY KEY,
  step_id TEXT NOT NULL,
  run_id INTEGER NOT NULL,
  outputs TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  environment TEXT NOT NULL,
  service TEXT NOT NULL,
  version TEXT NOT NULL,
  image TEXT NOT NULL,
  image_digest TEXT,
  migration_version TEXT,
  run_id INTEGER,
  step_id TEXT,
  container_id TEXT,
  strategy TEXT NOT NULL,
  spec TEXT NOT NULL DEFAULT '{}',
  approved_by TEXT,
  status TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  finished_ms INTEGER,
  note TEXT
);
CREATE INDEX IF NOT EXISTS deployments_by_service ON deployments (environment, service, id);
-- `pipe graph`'s estimates read the newest runs of one pipeline (see history.rs).
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, id);
";

impl Store {
    /// Opens (creating if absent) `state.db` in `dir`. A file that is not a
    /// valid database is reported and never overwritten.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let path = dir.join("state.db");
        let existed = path.exists() && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let corrupt = |e: rusqlite::Error| StateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        };
        let conn = Connection::open(&path).map_err(|e| StateError::Sqlite {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(corrupt)?;
        if existed {
            // Read the header before anything could write to the file.
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(corrupt)?;
            if check != "ok" {
                return Err(StateError::Corrupt {
                    path,
                    detail: check,
                });
            }
            let has_runs: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='runs'",
                    [],
                    |r| r.get(0),
                )
                .map_err(corrupt)?;
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type='table'",
                    [],
                    |r| r.get(0),
                )
                .map_err(corrupt)?;
            // No table at all: another pipe is creating the store right now.
            if has_runs == 0 && tables > 0 {
                return Err(StateError::Corrupt {
                    path,
                    detail: "it has no `runs` table".into(),
                });
            }
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        conn.execute_batch(SCHEMA).map_err(corrupt)?;
        conn.execute_batch(crate::gate::SCHEMA).map_err(corrupt)?;
        Ok(Store {
            checkpointer: std::cell::RefCell::new(None),
            conn,
            dir: dir.to_path_buf(),
            path,
            writes: Cell::new(0),
            write_time: Cell::new(Duration::ZERO),
            batch: Cell::new(false),
            batch_open: Cell::new(false),
        })
    }

    /// Moves the WAL's checkpoints to a thread of their own, for a run: the
    /// connection's automatic checkpoint (every 1,000 pages, after a commit)
    /// `fsync`s the WAL and the database on the dispatcher's thread, 5 ms
    /// each on a slow disk, some fifty times per 5,000 steps
    /// (runtime/bench/README.md). The thread checkpoints passively every
    /// 100 ms (300 ms while nothing is written), which never blocks a
    /// commit; and since the WAL starts over
    /// only after a checkpoint that no commit overlapped, once it holds more
    /// than 4,096 frames (16 MB) it makes one that briefly holds the writers.
    /// Without a thread (it could not start), checkpoints stay automatic.
    /// The last connection to close checkpoints what is left.
    pub fn checkpoint_in_background(&self) {
        if self.checkpointer.borrow().is_some() {
            return;
        }
        let Ok(conn) = Connection::open(&self.path) else {
            return;
        };
        if conn.busy_timeout(Duration::from_secs(10)).is_err()
            || self
                .conn
                .pragma_update(None, "wal_autocheckpoint", 0)
                .is_err()
        {
            return;
        }
        let stop = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let signal = stop.clone();
        match std::thread::Builder::new()
            .name("pipe-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &signal))
        {
            Ok(thread) => {
                *self.checkpointer.borrow_mut() = Some(Checkpointer {
                    stop,
                    thread: Some(thread),
                });
            }
            Err(_) => {
                let _ = self.conn.pragma_update(None, "wal_autocheckpoint", 1000);
            }
        }
    }

    /// How many step and run writes this store made, and the time they took.
    pub fn write_stats(&self) -> (u64, Duration) {
        (self.writes.get(), self.write_time.get())
    }

    /// Runs one write, counting it in [`Store::write_stats`].
    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.writes.set(self.writes.get() + 1);
        self.write_time.set(self.write_time.get() + t.elapsed());
        out
    }

    /// The connection, for the modules that keep their own tables here
    /// (see [`crate::gate`] and [`crate::deploy::ledger`]). They open
    /// transactions of their own (a gate decision is `BEGIN IMMEDIATE`), so
    /// a dispatcher tick's open batch is committed first: its records become
    /// durable earlier than the tick's end, which the batch allows, and the
    /// batch goes on in a new transaction with its next write.
    pub(crate) fn conn(&self) -> &Connection {
        if self.batch_open.replace(false) && !self.conn.is_autocommit() {
            // Should COMMIT fail, the caller's own BEGIN fails next and
            // reports the store with its path.
            let _ = self.timed(|| self.conn.execute_batch("COMMIT"));
        }
        &self.conn
    }

    pub(crate) fn err(&self, e: &rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding the log files of a run.
    pub fn log_dir(&self, run: i64) -> PathBuf {
        self.dir.join("logs").join(run.to_string())
    }

    /// The log file of one attempt of a step.
    pub fn log_path(&self, run: i64, step_id: &str, attempt: u32) -> PathBuf {
        self.log_dir(run).join(format!("{step_id}.{attempt}.log"))
    }

    /// Records a new run and returns its id.
    pub fn create_run(&self, run: &NewRun) -> Result<i64, StateError> {
        let sources = serde_json::to_string(&run.sources).unwrap_or_default();
        let hash = source_hash(&run.sources);
        self.conn
            .execute(
                "INSERT INTO runs (pipeline, env, params, context, roots, sources, source_hash, status, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8)",
                params![
                    run.pipeline,
                    run.env,
                    serde_json::to_string(&run.params).unwrap_or_default(),
                    run.context.to_string(),
                    serde_json::to_string(&run.roots).unwrap_or_default(),
                    sources,
                    hash,
                    now_ms()
                ],
            )
            .map_err(|e| self.err(&e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn set_run_status(
        &self,
        run: i64,
        status: &str,
        failed_step: Option<&str>,
        finished: bool,
    ) -> Result<(), StateError> {
        self.timed(|| {
            self.conn.execute(
                "UPDATE runs SET status = ?2, failed_step = ?3, finished_ms = ?4 WHERE id = ?1",
                params![run, status, failed_step, finished.then(now_ms)],
            )
        })
        .map_err(|e| self.err(&e))?;
        Ok(())
    }

    /// Replaces a run's source snapshot (`pipe resume --replan`).
    pub fn replace_sources(
        &self,
        run: i64,
        sources: &Vec<(String, String)>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE runs SET sources = ?2, source_hash = ?3 WHERE id = ?1",
                params![
                    run,
                    serde_json::to_string(sources).unwrap_or_default(),
                    source_hash(sources)
                ],
            )
            .map_err(|e| self.err(&e))?;
        Ok(())
    }

    /// Writes a step's record (insert or replace) and appends the change to
    /// the step's history, in one transaction.
    pub fn put_step(&self, run: i64, s: &StepRecord) -> Result<(), StateError> {
        self.timed(|| self.write_step(run, s))
            .map_err(|e| self.err(&e))
    }

    /// Starts a batch: the step records written until [`Store::commit_batch`]
    /// share one transaction. Nothing they record is durable, so nothing may
    /// be reported about them, before `commit_batch` returns (the scheduler
    /// holds its events and the processes it starts until then).
    pub fn begin_batch(&self) {
        self.batch.set(true);
    }

    /// Commits the batch's transaction, if a write opened one.
    pub fn commit_batch(&self) -> Result<(), StateError> {
        self.batch.set(false);
        if !self.batch_open.replace(false) || self.conn.is_autocommit() {
            return Ok(());
        }
        // Cached, like the step statements: parsing it again each tick cost
        // more than a step's record (runtime/bench/README.md).
        self.timed(|| self.conn.prepare_cached("COMMIT")?.execute([]))
            .map(drop)
            .map_err(|e| self.err(&e))
    }

    fn write_step(&self, run: i64, s: &StepRecord) -> rusqlite::Result<()> {
        if self.batch.get() {
            if self.conn.is_autocommit() {
                self.conn.prepare_cached("BEGIN")?.execute([])?;
                self.batch_open.set(true);
            }
            return Self::step_statements(&self.conn, run, s);
        }
        let tx = self.conn.unchecked_transaction()?;
        Self::step_statements(&tx, run, s)?;
        tx.commit()
    }

    /// The step's history row and its latest record.
    fn step_statements(tx: &Connection, run: i64, s: &StepRecord) -> rusqlite::Result<()> {
        // Cached: thousands of steps write the same two statements.
        tx.prepare_cached(
            "INSERT INTO step_history (run_id, step_id, attempt, status, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![run, s.step_id, s.attempt, s.status, now_ms()])?;
        // An upsert changes the row in place; `INSERT OR REPLACE` deleted and
        // re-inserted it, rewriting the primary key's index page as well (one
        // more WAL frame per commit, runtime/bench/README.md).
        tx.prepare_cached(
            "INSERT INTO steps (run_id, step_id, status, attempt, started_ms, finished_ms, exit_code, outputs, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status,
               attempt = excluded.attempt, started_ms = excluded.started_ms,
               finished_ms = excluded.finished_ms, exit_code = excluded.exit_code,
               outputs = excluded.outputs, error = excluded.error",
        )?
        .execute(params![
            run,
            s.step_id,
            s.status,
            s.attempt,
            s.started_ms,
            s.finished_ms,
            s.exit_code,
            serde_json::to_string(&s.outputs).unwrap_or_default(),
            s.error
        ])?;
        Ok(())
    }

    /// Every status change of a run's steps, oldest first (see [`Transition`]).
    pub fn history(&self, run: i64) -> Result<Vec<Transition>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT step_id, attempt, status, at_ms FROM step_history WHERE run_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.err(&e))?;
        let rows = st
            .query_map([run], |r| {
                Ok(Transition {
                    step_id: r.get(0)?,
                    attempt: r.get(1)?,
                    status: r.get(2)?,
                    at_ms: r.get(3)?,
                })
            })
            .map_err(|e| self.err(&e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(&e))
    }

    fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
        let params: String = r.get(3)?;
        let context: String = r.get(4)?;
        let roots: String = r.get(5)?;
        let sources: String = r.get(6)?;
        Ok(RunRecord {
            id: r.get(0)?,
            pipeline: r.get(1)?,
            env: r.get(2)?,
            params: serde_json::from_str(&params).unwrap_or_default(),
            context: serde_json::from_str(&context).unwrap_or_default(),
            roots: serde_json::from_str(&roots).unwrap_or_default(),
            sources: serde_json::from_str(&sources).unwrap_or_default(),
            source_hash: r.get(7)?,
            status: r.get(8)?,
            started_ms: r.get(9)?,
            finished_ms: r.get(10)?,
            failed_step: r.get(11)?,
        })
    }

    const RUN_COLS: &'static str = "id, pipeline, env, params, context, roots, sources, source_hash, status, started_ms, finished_ms, failed_step";

    pub fn run(&self, id: i64) -> Result<RunRecord, StateError> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM runs WHERE id = ?1", Self::RUN_COLS),
                [id],
                Self::run_from_row,
            )
            .optional()
            .map_err(|e| self.err(&e))?
            .ok_or_else(|| StateError::NoSuchRun(id.to_string()))
    }

    /// Runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM runs ORDER BY id DESC LIMIT ?1",
                Self::RUN_COLS
            ))
            .map_err(|e| self.err(&e))?;
        let rows = st
            .query_map([limit as i64], Self::run_from_row)
            .map_err(|e| self.err(&e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(&e))
    }

    /// Resolves a run argument: a number, or the newest run when absent.
    pub fn resolve_run(&self, arg: Option<&str>) -> Result<RunRecord, StateError> {
        match arg {
            Some(a) => {
                let id: i64 = a
                    .trim_start_matches('#')
                    .parse()
                    .map_err(|_| StateError::NoSuchRun(a.to_string()))?;
                self.run(id)
            }
            None => self
                .runs(1)?
                .into_iter()
                .next()
                .ok_or_else(|| StateError::NoSuchRun("(none yet)".into())),
        }
    }

    /// The newest run that `pipe resume` can continue.
    pub fn latest_resumable(&self) -> Result<RunRecord, StateError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM runs WHERE status IN ('failed','cancelled','interrupted','running','waiting') ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(&e))?;
        match id {
            Some(id) => self.run(id),
            None => Err(StateError::NoSuchRun(
                "(no failed, cancelled or interrupted run)".into(),
            )),
        }
    }

    /// Every step record of a run.
    pub fn steps(&self, run: i64) -> Result<Vec<StepRecord>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT step_id, status, attempt, started_ms, finished_ms, exit_code, outputs, error
                 FROM steps WHERE run_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.err(&e))?;
        let rows = st
            .query_map([run], |r| {
                let outputs: String = r.get(6)?;
                Ok(StepRecord {
                    step_id: r.get(0)?,
                    status: r.get(1)?,
                    attempt: r.get(2)?,
                    started_ms: r.get(3)?,
                    finished_ms: r.get(4)?,
                    exit_code: r.get(5)?,
                    outputs: serde_json::from_str(&outputs).unwrap_or_default(),
                    error: r.get(7)?,
                })
            })
            .map_err(|e| self.err(&e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(&e))
    }

    /// The run and outputs of the recorded success with this cache key.
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheHit>, StateError> {
        self.conn
            .query_row(
                "SELECT run_id, outputs FROM cache WHERE key = ?1",
                [key],
                |r| {
                    let o: String = r.get(1)?;
                    Ok((r.get(0)?, serde_json::from_str(&o).unwrap_or_default()))
                },
            )
            .optional()
            .map_err(|e| self.err(&e))
    }

    /// Records a success under its cache key.
    pub fn cache_put(
        &self,
        key: &str,
        step_id: &str,
        run: i64,
        outputs: &IndexMap<String, String>,
    ) -> Result<(), StateError> {
        self.timed(|| {
            self.conn.execute(
                "INSERT OR REPLACE INTO cache (key, step_id, run_id, outputs, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, step_id, run, serde_json::to_string(outputs).unwrap_or_default(), now_ms()],
            )
        })
        .map_err(|e| self.err(&e))?;
        Ok(())
    }

    /// Takes the exclusive lock of a run (held until the guard drops); a second
    /// holder is refused with the pid of the first.
    pub fn lock_run(&self, run: i64) -> Result<RunLock, StateError> {
        let dir = self.dir.join("locks");
        let io = |e: std::io::Error| StateError::Io {
            path: dir.clone(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let path = dir.join(format!("{run}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                use std::io::{Seek, Write};
                let _ = lock.set_len(0);
                let _ = lock.seek(std::io::SeekFrom::Start(0));
                let _ = write!(lock, "{}", std::process::id());
                let _ = lock.flush();
                Ok(RunLock { _lock: lock })
            }
            Err((_, _)) => Err(StateError::Locked {
                run,
                holder: std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            }),
        }
    }
}

/// A recorded success: the run it happened in and its outputs.
pub type CacheHit = (i64, IndexMap<String, String>);

/// Holds a run's lock while alive.
pub struct RunLock {
    _lock: Flock<File>,
}

/// The thread of [`Store::checkpoint_in_background`].
struct Checkpointer {
    stop: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self
            .stop
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// WAL frames past which the checkpointer forces the WAL to start over.
const RESTART_FRAMES: i64 = 4096;

fn checkpoint_loop(conn: &Connection, stop: &(std::sync::Mutex<bool>, std::sync::Condvar)) {
    // A run waiting at a gate writes nothing for minutes: after a pass that
    // found nothing new, the next waits 300 ms (short enough that a burst of
    // commits after a pause stays under RESTART_FRAMES).
    let mut last = None;
    let mut pause = Duration::from_millis(100);
    loop {
        {
            let stopped = stop
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (stopped, _) = stop
                .1
                .wait_timeout_while(stopped, pause, |s| !*s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stopped {
                return;
            }
        }
        // (busy, frames in the WAL, frames checkpointed)
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        if let Ok((_, frames, done)) = passive {
            if frames >= RESTART_FRAMES {
                let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
            }
            let idle = last == Some((frames, done)) && frames == done;
            pause = Duration::from_millis(if idle { 300 } else { 100 });
            last = Some((frames, done));
        }
    }
}

/// A stable hash of a set of source files.
pub fn source_hash(sources: &[(String, String)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, text) in sources {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize()
        .iter()
        .take(16)
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_runs_and_steps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store
            .create_run(&NewRun {
                pipeline: "p".into(),
                sources: vec![("a.pipe".into(), "pipeline p {}".into())],
                ..NewRun::default()
            })
            .unwrap();
        let mut s = StepRecord {
            step_id: "build.a".into(),
            status: "running".into(),
            attempt: 1,
            ..StepRecord::default()
        };
        store.put_step(id, &s).unwrap();
        s.status = "succeeded".into();
        s.outputs.insert("k".into(), "v".into());
        store.put_step(id, &s).unwrap();
        let steps = store.steps(id).unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].status, "succeeded");
        assert_eq!(steps[0].outputs["k"], "v");
        assert_eq!(store.run(id).unwrap().sources[0].1, "pipeline p {}");
        let h: Vec<(String, u32)> = store
            .history(id)
            .unwrap()
            .into_iter()
            .map(|t| (t.status, t.attempt))
            .collect();
        assert_eq!(
            h,
            [("running".to_string(), 1), ("succeeded".to_string(), 1)]
        );
    }

    #[test]
    fn a_runs_wal_is_checkpointed_by_a_thread_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.checkpoint_in_background();
        let db = dir.path().join("state.db");
        let before = std::fs::metadata(&db).unwrap().len();
        let run = store
            .create_run(&NewRun {
                pipeline: "p".into(),
                ..NewRun::default()
            })
            .unwrap();
        for i in 0..3000 {
            let s = StepRecord {
                step_id: format!("s.step{i}"),
                status: "succeeded".into(),
                attempt: 1,
                ..StepRecord::default()
            };
            store.put_step(run, &s).unwrap();
        }
        // The writing connection no longer checkpoints: only the thread can
        // have grown the database file.
        let auto: i64 = store
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0);
        let t0 = Instant::now();
        while std::fs::metadata(&db).unwrap().len() <= before
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            std::fs::metadata(&db).unwrap().len() > before,
            "never checkpointed"
        );
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.steps(run).unwrap().len(), 3000);
        // The last connection to close checkpointed and removed the WAL.
        drop(again);
        assert!(!dir.path().join("state.db-wal").exists());
    }

    #[test]
    fn refuses_and_keeps_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, b"this is not sqlite at all, just text").unwrap();
        let Err(e) = Store::open(dir.path()) else {
            panic!("a corrupt file was accepted");
        };
        assert!(e.to_string().contains("corrupted"), "{e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"this is not sqlite at all, just text"
        );
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let _held = store.lock_run(7).unwrap();
        let Err(e) = store.lock_run(7) else {
            panic!("two locks on one run");
        };
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
    }
}
