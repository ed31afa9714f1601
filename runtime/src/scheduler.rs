//! The scheduler: one dispatcher loop (`tokio::select!` over step completions,
//! log lines, signals and retry timers) that starts each step as soon as its
//! needs are done, within `--jobs` and concurrency groups. Every state change is
//! committed to the [`Store`] before the event about it is emitted. See
//! docs/runtime.md for the rules (skips, fail-fast, retries, handlers).

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use pipe_lang::ast::HandlerKind;
use pipe_lang::eval::{eval, interpolate};
use pipe_lang::plan::{Backoff, CommandTemplate, Deferrable, PlanStep};
use pipe_lang::{Plan, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::event::{Event, Sink};
use crate::executor::{Ending, Io, Job, LogLine, Outcome, Registry, Stop};
use crate::mask::{mask_with, SharedMasker};
use crate::retry::Class;
use crate::scope::{RunScope, StepView};
use crate::state::{now_ms, StateError, StepRecord, Store};

mod gates;

/// How a run is executed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Working directory of steps: the project root.
    pub root: PathBuf,
    pub jobs: usize,
    pub keep_going: bool,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Ignore `cache` (`--no-cache`).
    pub no_cache: bool,
    /// Report why each cacheable step missed (`--explain-cache`).
    pub explain_cache: bool,
    /// Where `secrets.NAME` values come from.
    pub secrets: std::sync::Arc<crate::secrets::Secrets>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Failed,
    Interrupted,
    /// Stopped at approval gates that wait for a decision (`pipe resume`).
    Waiting,
}

impl RunEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Succeeded => "succeeded",
            RunEnd::Failed => "failed",
            RunEnd::Interrupted => "interrupted",
            RunEnd::Waiting => "waiting",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Running,
    Retrying,
    Succeeded,
    Failed,
    /// Failed because it hit its `timeout` (its process tree was killed).
    TimedOut,
    Skipped,
    Cancelled,
    /// An approval gate waiting for a decision.
    Waiting,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
            Status::Waiting => "waiting",
        }
    }

    /// Done in a way that lets dependents start.
    fn satisfies(self) -> bool {
        matches!(self, Status::Succeeded | Status::Skipped)
    }

    /// A failure of the step itself (a timeout is one), not a cancel.
    fn failed(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut)
    }
}

struct Slot {
    status: Status,
    attempt: u32,
    started_ms: Option<i64>,
    first_start: Option<Instant>,
    attempt_start: Option<Instant>,
    exit_code: Option<i32>,
    outputs: IndexMap<String, String>,
    error: Option<String>,
    remaining: usize,
    /// Set while its `on_failure` command runs, holding the final outcome.
    failing: Option<Outcome>,
    when_checked: bool,
    cache_key: Option<String>,
    /// The last attempt ended at its timeout: recorded `timed_out`, not `failed`.
    timed_out: bool,
}

enum Done {
    Attempt(usize, Outcome),
    OnFailure(usize),
}

/// An attempt's task, spawned once its tick's writes are committed.
type HeldTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs a plan (or the rest of it, given prior step records) to the end.
pub struct Scheduler<'a> {
    plan: &'a Plan,
    store: &'a Store,
    run_id: i64,
    token_base: String,
    registry: Registry,
    opts: Options,
    sink: &'a mut dyn Sink,
    /// Outputs of every main step, visible to handlers.
    views: Vec<StepView>,
    stage_names: Vec<String>,
    interrupted: bool,
    killed: bool,
    /// `--explain-cache` events found while preparing a step, emitted after.
    explained: std::cell::RefCell<Vec<Event>>,
    /// Every secret value of the run, in every form: masked out of events,
    /// log files, step outputs and errors.
    masker: SharedMasker,
    /// `secrets.NAME` values resolved since the last registration.
    resolved: std::cell::RefCell<Vec<(String, String)>>,
    /// Approval gates: how to wait, and the plan hash decisions are bound to.
    gates: crate::gate::GateOptions,
    plan_hash: String,
    /// The gates the main phase stopped at, when it stopped waiting.
    waiting_at: Vec<String>,
    /// The run's status is `waiting` in the store (only gates are left).
    run_waiting: bool,
    /// A dispatcher tick's store writes share one transaction
    /// ([`Store::begin_batch`]); until it commits, the tick's events and the
    /// attempts it starts wait here ([`Scheduler::flush`]).
    batching: bool,
    held_events: Vec<Event>,
    held_tasks: Vec<HeldTask>,
}

/// The prefix of the process token of every step of a run (see
/// [`crate::process_tree`]); unique across state directories.
pub fn token_base(store: &Store, run_id: i64) -> String {
    let dir = store
        .dir()
        .canonicalize()
        .unwrap_or_else(|_| store.dir().to_path_buf());
    let h = crate::state::source_hash(&[(dir.display().to_string(), String::new())]);
    format!("{}-{run_id}/", &h[..8])
}

/// Kills every process a previous, crashed `pipe` left running for this run,
/// so that none of them can finish a step behind the resumed run's back.
pub fn kill_leftovers(store: &Store, run_id: i64) {
    crate::process_tree::kill_all_blocking(
        None,
        &token_base(store, run_id),
        true,
        Duration::from_secs(5),
    );
}

impl<'a> Scheduler<'a> {
    pub fn new(
        plan: &'a Plan,
        store: &'a Store,
        run_id: i64,
        opts: Options,
        sink: &'a mut dyn Sink,
    ) -> Self {
        let masker = declared_secrets_masker(plan, &opts.secrets);
        Scheduler {
            plan,
            store,
            run_id,
            token_base: token_base(store, run_id),
            registry: Registry::builtin(),
            opts,
            sink,
            views: Vec::new(),
            stage_names: plan.stages().iter().map(|s| s.name.clone()).collect(),
            interrupted: false,
            killed: false,
            explained: std::cell::RefCell::new(Vec::new()),
            masker,
            resolved: std::cell::RefCell::new(Vec::new()),
            gates: crate::gate::GateOptions::default(),
            plan_hash: crate::gate::plan_hash(plan),
            waiting_at: Vec::new(),
            run_waiting: false,
            batching: false,
            held_events: Vec::new(),
            held_tasks: Vec::new(),
        }
    }

    /// Sets how approval gates are waited for (default: not at all).
    pub fn set_gates(&mut self, gates: crate::gate::GateOptions) {
        self.gates = gates;
    }

    /// The executors by name, to swap one in (`--executor swarm`).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Executes the run: main steps, then the matching handlers. `prior` holds
    /// the records of a resumed run: succeeded and skipped steps are not run again.
    pub fn execute(
        &mut self,
        prior: &[StepRecord],
        resumed: bool,
    ) -> Result<(RunEnd, Option<String>), StateError> {
        // No checkpoint `fsync` on the dispatcher's thread (state.rs).
        self.store.checkpoint_in_background();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StateError::Io {
                path: self.opts.root.clone(),
                detail: format!("cannot start the async runtime: {e}"),
            })?;
        let r = rt.block_on(self.execute_async(prior, resumed));
        // Stage services whose steps did not all run are removed with the run.
        rt.block_on(crate::executor::services::end_run(
            self.token_base.trim_end_matches('/'),
        ));
        r
    }

    async fn execute_async(
        &mut self,
        prior: &[StepRecord],
        resumed: bool,
    ) -> Result<(RunEnd, Option<String>), StateError> {
        let t0 = Instant::now();
        self.store
            .set_run_status(self.run_id, "running", None, false)?;
        self.emit(Event::RunStarted {
            run: self.run_id,
            pipeline: self.plan.pipeline.clone(),
            steps: self.plan.steps().len(),
            resumed,
        });
        let mut sigint = signal(SignalKind::interrupt()).ok();
        let mut sigterm = signal(SignalKind::terminate()).ok();
        let main: Vec<&PlanStep> = self.plan.steps().iter().collect();
        let main_sel = vec![true; main.len()];
        let (failed, failed_step) = self
            .run_phase(&main, &main_sel, prior, &mut sigint, &mut sigterm, None)
            .await?;
        let mut end = if self.interrupted {
            RunEnd::Interrupted
        } else if failed {
            RunEnd::Failed
        } else if !self.waiting_at.is_empty() {
            return self.stop_waiting(t0);
        } else {
            RunEnd::Succeeded
        };
        if end != RunEnd::Interrupted && !self.plan.handlers().is_empty() {
            let handlers: Vec<&PlanStep> = self.plan.handlers().iter().collect();
            let sel: Vec<bool> = handlers
                .iter()
                .map(|h| match h.handler {
                    Some(HandlerKind::Failure) => end == RunEnd::Failed,
                    Some(HandlerKind::Success) => end == RunEnd::Succeeded,
                    Some(HandlerKind::Always) | None => true,
                })
                .collect();
            let mut run = crate::run_context::vars(self.store, self.run_id, &self.plan.pipeline);
            run.insert("status".to_string(), Value::Str(end.as_str().to_string()));
            run.insert(
                "failed_step".to_string(),
                failed_step.clone().map_or(Value::Null, Value::Str),
            );
            run.insert(
                "pipeline".to_string(),
                Value::Str(self.plan.pipeline.clone()),
            );
            self.run_context(&mut run)?;
            self.run_phase(&handlers, &sel, prior, &mut sigint, &mut sigterm, Some(run))
                .await?;
            if self.interrupted {
                end = RunEnd::Interrupted;
            }
        }
        self.store
            .set_run_status(self.run_id, end.as_str(), failed_step.as_deref(), true)?;
        self.emit(Event::RunFinished {
            run: self.run_id,
            status: end.as_str().to_string(),
            failed_step: failed_step.clone(),
            duration_ms: t0.elapsed().as_millis() as u64,
        });
        Ok((end, failed_step))
    }

    fn record(&self, step: &PlanStep, s: &Slot) -> Result<(), StateError> {
        self.store.put_step(
            self.run_id,
            &StepRecord {
                step_id: step.id.clone(),
                status: s.status.as_str().to_string(),
                attempt: s.attempt,
                started_ms: s.started_ms,
                finished_ms: matches!(
                    s.status,
                    Status::Succeeded
                        | Status::Failed
                        | Status::TimedOut
                        | Status::Skipped
                        | Status::Cancelled
                )
                .then(now_ms),
                exit_code: s.exit_code,
                outputs: self.mask_map(&s.outputs),
                error: s.error.as_deref().map(|e| self.mask(e)),
            },
        )
    }

    fn mask(&self, text: &str) -> String {
        mask_with(&self.masker, text)
    }

    fn mask_map(&self, m: &IndexMap<String, String>) -> IndexMap<String, String> {
        m.iter().map(|(k, v)| (k.clone(), self.mask(v))).collect()
    }

    /// Emits an event with every secret masked out of it.
    fn emit(&mut self, mut event: Event) {
        let masker = self.masker.clone();
        event.map_text(|t| mask_with(&masker, t));
        if self.batching {
            self.held_events.push(event);
        } else {
            self.sink.emit(&event);
        }
    }

    /// Starts batching the store writes of a dispatcher tick.
    fn begin_batch(&mut self) {
        self.batching = true;
        self.store.begin_batch();
    }

    /// Ends a tick: commits its store writes, then emits its events and
    /// starts its attempts, so that every state change is committed before
    /// the event about it and a step is recorded `running` before it runs.
    fn flush(&mut self) -> Result<(), StateError> {
        self.store.commit_batch()?;
        self.batching = false;
        for e in std::mem::take(&mut self.held_events) {
            self.sink.emit(&e);
        }
        for t in self.held_tasks.drain(..) {
            tokio::spawn(t);
        }
        Ok(())
    }

    /// Spawns an attempt's task, once the tick's writes are committed.
    fn spawn_attempt(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if self.batching {
            self.held_tasks.push(Box::pin(task));
        } else {
            tokio::spawn(task);
        }
    }

    /// Registers the secrets resolved since the last call with the masker,
    /// before anything that uses them runs. A secret too short to be masked
    /// is refused.
    fn register_secrets(&self) -> Result<(), String> {
        let resolved = self.resolved.take();
        let mut m = self
            .masker
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, value) in resolved {
            m.add(&value)
                .map_err(|e| format!("secret `{name}` is refused: {e}"))?;
        }
        Ok(())
    }

    /// Runs one phase (the main steps, or the handlers). Returns whether a
    /// required step failed, and the first such step.
    async fn run_phase(
        &mut self,
        steps: &[&PlanStep],
        selected: &[bool],
        prior: &[StepRecord],
        sigint: &mut Option<tokio::signal::unix::Signal>,
        sigterm: &mut Option<tokio::signal::unix::Signal>,
        run_vars: Option<IndexMap<String, Value>>,
    ) -> Result<(bool, Option<String>), StateError> {
        let n = steps.len();
        let mut slots: Vec<Slot> = steps
            .iter()
            .map(|s| {
                let p = prior.iter().find(|r| r.step_id == s.id);
                let status = match p.map(|r| r.status.as_str()) {
                    // A chaos block's proxy died with the crashed run: start it again.
                    Some("succeeded") if s.executor != "chaos" => Status::Succeeded,
                    Some("skipped") => Status::Skipped,
                    _ => Status::Pending,
                };
                Slot {
                    status,
                    attempt: p.map_or(0, |r| r.attempt),
                    started_ms: None,
                    first_start: None,
                    attempt_start: None,
                    exit_code: p.and_then(|r| r.exit_code),
                    outputs: if status.satisfies() {
                        p.map(|r| r.outputs.clone()).unwrap_or_default()
                    } else {
                        IndexMap::new()
                    },
                    error: None,
                    remaining: 0,
                    failing: None,
                    when_checked: false,
                    cache_key: None,
                    timed_out: false,
                }
            })
            .collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, s) in steps.iter().enumerate() {
            for &d in &s.needs {
                if d < n && selected[d] {
                    dependents[d].push(i);
                    if !slots[d].status.satisfies() {
                        slots[i].remaining += 1;
                    }
                }
            }
        }
        // Ready steps ordered by declaration (a topological order of the DAG
        // would do too; declaration order keeps output predictable).
        let mut ready: BTreeSet<usize> = (0..n)
            .filter(|&i| {
                selected[i] && slots[i].status == Status::Pending && slots[i].remaining == 0
            })
            .collect();
        let mut timers: BTreeSet<(Instant, usize)> = BTreeSet::new();
        // Approval gates waiting for a decision, and when the store is read next.
        let mut waiting: BTreeSet<usize> = BTreeSet::new();
        let mut next_poll = Instant::now();
        let mut prompt = gates::Prompt::default();
        let mut groups: HashSet<String> = HashSet::new();
        let mut running = 0usize;
        let mut stopping = self.interrupted;
        let mut failed = false;
        let mut failed_step: Option<String> = None;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let (log_tx, mut log_rx) = mpsc::unbounded_channel::<LogLine>();
        let (stop_tx, stop_rx) = watch::channel(if self.killed { Stop::Kill } else { Stop::Run });
        let is_main = run_vars.is_none();
        let run_vars = run_vars.unwrap_or_else(|| {
            crate::run_context::vars(self.store, self.run_id, &self.plan.pipeline)
        });

        // Whether the last arm handled an attempt's end.
        let mut after_done = false;
        loop {
            // Attempts that ended while the last arm ran join its tick: their
            // records share one commit, and the steps they free start with
            // the last of them (runtime/bench/README.md). A queued end means
            // a running attempt, so none of the checks below could end the loop.
            // Only ends in a row are batched: log lines win the biased select
            // below, so while a step prints steadily a queued end could wait
            // for long, and the tick must not (no events, no starts) meanwhile.
            // A run of ends is bounded: no step starts until it is over.
            let more_done = self.batching && after_done && !done_rx.is_empty();
            // Chaos blocks end with the rest of their stage (crate::chaos);
            // tearing one down awaits, so the tick so far is committed first.
            if crate::chaos::any_active(&self.token_base) {
                self.flush()?;
            }
            if let Some(id) = self
                .settle_chaos(steps, &mut slots, stopping, false)
                .await?
            {
                if is_main {
                    failed = true;
                    failed_step.get_or_insert(id);
                }
            }
            // Start what can start.
            if !stopping && !more_done {
                let mut blocked = Vec::new();
                while running < self.opts.jobs.max(1) {
                    let Some(i) = ready.pop_first() else { break };
                    if let Some(g) = &steps[i].concurrency {
                        if groups.contains(g) {
                            blocked.push(i);
                            continue;
                        }
                    }
                    let started =
                        self.start(i, steps, &mut slots, &run_vars, &done_tx, &log_tx, &stop_rx)?;
                    match started {
                        Started::Running => {
                            running += 1;
                            if let Some(g) = &steps[i].concurrency {
                                groups.insert(g.clone());
                            }
                        }
                        Started::Skipped | Started::Cached => {
                            for &d in &dependents[i] {
                                slots[d].remaining -= 1;
                                if slots[d].remaining == 0 && slots[d].status == Status::Pending {
                                    ready.insert(d);
                                }
                            }
                        }
                        Started::Waiting => {
                            waiting.insert(i);
                        }
                        Started::Failed => {
                            if crate::chaos::failure_only_warns(steps[i]) {
                                for &d in &dependents[i] {
                                    slots[d].remaining -= 1;
                                    if slots[d].remaining == 0 && slots[d].status == Status::Pending
                                    {
                                        ready.insert(d);
                                    }
                                }
                            }
                            if steps[i].required && is_main {
                                failed = true;
                                failed_step.get_or_insert_with(|| steps[i].id.clone());
                                if !self.opts.keep_going {
                                    stopping = true;
                                    let _ = stop_tx.send(Stop::Cancel);
                                    break;
                                }
                            }
                        }
                    }
                }
                ready.extend(blocked);
            }
            if !more_done {
                self.flush()?;
            }
            let idle = running == 0 && ready.is_empty() && timers.is_empty();
            if idle && !stopping && !waiting.is_empty() {
                // Only gates are left: stop (non-interactive) or wait for them.
                self.mark_waiting(true)?;
                if !self.gates.wait {
                    self.waiting_at = waiting.iter().map(|&i| steps[i].id.clone()).collect();
                    break;
                }
                self.ask(steps, &waiting, &mut prompt);
            }
            if running == 0 && (stopping || (idle && waiting.is_empty())) {
                self.abandon_gates(steps, &mut slots, &waiting)?;
                break;
            }
            let next_timer = timers.first().map(|t| t.0);
            let poll_at = (!waiting.is_empty()).then_some(next_poll);
            // What the arm below records joins the next tick's transaction
            // (flushed at the top of the loop, after the starts it enables).
            self.begin_batch();
            after_done = false;
            tokio::select! {
                biased;
                Some(()) = recv_signal(sigint) => {
                    self.on_signal(&stop_tx);
                    stopping = true;
                }
                Some(()) = recv_signal(sigterm) => {
                    self.on_signal(&stop_tx);
                    stopping = true;
                }
                Some(l) = log_rx.recv() => {
                    self.emit(Event::StepLog {
                        run: self.run_id,
                        step: steps[l.index].id.clone(),
                        attempt: slots[l.index].attempt,
                        stream: if l.stderr { "stderr" } else { "stdout" },
                        line: l.line,
                    });
                }
                Some(done) = done_rx.recv() => {
                    after_done = true;
                    let (i, mut outcome, after_on_failure) = match done {
                        Done::Attempt(i, o) => (i, o, false),
                        Done::OnFailure(i) => {
                            let o = slots[i].failing.take().unwrap_or_else(|| Outcome::error("lost outcome"));
                            (i, o, true)
                        }
                    };
                    let step = steps[i];
                    // The raw `$PIPE_OUTPUT` file is removed by the executor
                    // that made it (executor::OutputsFile).
                    if outcome.ending == Ending::Succeeded {
                        running -= 1;
                        release(step, &mut groups);
                        let s = &mut slots[i];
                        s.status = Status::Succeeded;
                        s.exit_code = outcome.exit_code;
                        s.outputs = outcome.outputs;
                        s.error = None;
                        self.record(step, s)?;
                        if let Some(k) = &s.cache_key {
                            self.store.cache_put(k, &step.id, self.run_id, &self.mask_map(&s.outputs))?;
                        }
                        self.finished_event(step, s, true);
                        for &d in &dependents[i] {
                            slots[d].remaining -= 1;
                            if slots[d].remaining == 0 && slots[d].status == Status::Pending {
                                ready.insert(d);
                            }
                        }
                        continue;
                    }
                    // A failure: retry, run on_failure, or record it.
                    if !after_on_failure {
                        if let Some(delay) = retry_delay(step, &slots[i], &outcome, stopping) {
                            running -= 1;
                            release(step, &mut groups);
                            let s = &mut slots[i];
                            s.status = Status::Retrying;
                            s.timed_out = outcome.ending == Ending::TimedOut;
                            s.exit_code = outcome.exit_code;
                            s.error.clone_from(&outcome.error);
                            self.record(step, s)?;
                            self.emit(Event::StepRetrying {
                                run: self.run_id,
                                step: step.id.clone(),
                                attempt: s.attempt,
                                delay_ms: delay.as_millis() as u64,
                                error: outcome.error.clone().unwrap_or_default(),
                            });
                            timers.insert((Instant::now() + delay, i));
                            continue;
                        }
                        if outcome.ending != Ending::Cancelled {
                            if let Some(cmd) = &step.on_failure {
                                match self.on_failure_job(i, steps, cmd, &slots, &run_vars) {
                                    Ok(job) => {
                                    slots[i].failing = Some(outcome);
                                    let tx = done_tx.clone();
                                    let io = Io { logs: log_tx.clone(), stop: stop_rx.clone() };
                                    let exec = crate::executor::shell::Shell;
                                    self.spawn_attempt(async move {
                                        let _ = crate::executor::Executor::run(&exec, job, io).await;
                                        let _ = tx.send(Done::OnFailure(i));
                                    });
                                    continue;
                                    }
                                    Err(e) => {
                                        let mut o = outcome;
                                        o.error = Some(format!("{}; on_failure not run: {e}", o.error.unwrap_or_default()));
                                        outcome = o;
                                    }
                                }
                            }
                        }
                    }
                    running -= 1;
                    release(step, &mut groups);
                    let s = &mut slots[i];
                    s.status = match outcome.ending {
                        Ending::Cancelled => Status::Cancelled,
                        Ending::TimedOut => Status::TimedOut,
                        _ => Status::Failed,
                    };
                    s.exit_code = outcome.exit_code;
                    s.error = outcome.error;
                    self.record(step, s)?;
                    self.finished_event(step, s, false);
                    if s.status.failed() && crate::chaos::failure_only_warns(step) {
                        for &d in &dependents[i] {
                            slots[d].remaining -= 1;
                            if slots[d].remaining == 0 && slots[d].status == Status::Pending {
                                ready.insert(d);
                            }
                        }
                    }
                    let s = &slots[i];
                    if s.status.failed() && step.required && is_main {
                        failed = true;
                        failed_step.get_or_insert_with(|| step.id.clone());
                        if !self.opts.keep_going && !stopping {
                            stopping = true;
                            let _ = stop_tx.send(Stop::Cancel);
                        }
                    }
                }
                Some(answer) = gates::recv_answer(&mut prompt) => {
                    self.answer(steps, &answer, &mut prompt)?;
                    next_poll = Instant::now();
                }
                () = sleep_until(poll_at) => {
                    next_poll = Instant::now() + self.gates.poll;
                    for i in waiting.clone() {
                        if let Some(outcome) = self.check_gate(steps[i])? {
                            waiting.remove(&i);
                            self.mark_waiting(false)?;
                            // Settled like any attempt, by the arm above.
                            running += 1;
                            let _ = done_tx.send(Done::Attempt(i, outcome));
                        }
                    }
                }
                () = sleep_until(next_timer) => {
                    let now = Instant::now();
                    while let Some(&(t, i)) = timers.first() {
                        if t > now { break; }
                        timers.pop_first();
                        if !stopping {
                            ready.insert(i);
                        }
                    }
                }
            }
        }
        // Steps waiting for a retry when the run stopped: their last failure stands.
        for (_, i) in timers {
            let s = &mut slots[i];
            s.status = if self.interrupted {
                Status::Cancelled
            } else if s.timed_out {
                Status::TimedOut
            } else {
                Status::Failed
            };
            self.record(steps[i], s)?;
            self.finished_event(steps[i], s, false);
        }
        if let Some(id) = self.settle_chaos(steps, &mut slots, true, true).await? {
            if is_main {
                failed = true;
                failed_step.get_or_insert(id);
            }
        }
        if is_main {
            self.views = steps
                .iter()
                .zip(&slots)
                .map(|(st, sl)| view(st, sl))
                .collect();
        }
        Ok((failed, failed_step))
    }

    fn on_signal(&mut self, stop_tx: &watch::Sender<Stop>) {
        if self.interrupted {
            self.killed = true;
            let _ = stop_tx.send(Stop::Kill);
        } else {
            self.interrupted = true;
            let _ = stop_tx.send(Stop::Cancel);
        }
    }

    fn finished_event(&mut self, step: &PlanStep, s: &Slot, ok: bool) {
        self.emit(Event::StepFinished {
            run: self.run_id,
            step: step.id.clone(),
            attempt: s.attempt,
            status: s.status.as_str().to_string(),
            exit_code: s.exit_code,
            duration_ms: s
                .attempt_start
                .map_or(0, |t| t.elapsed().as_millis() as u64),
            error: s.error.clone(),
            location: (!ok).then(|| self.plan.location(step.span)),
            required: step.required,
        });
        if s.status.failed() && !step.required {
            self.emit(Event::Warning {
                run: self.run_id,
                step: step.id.clone(),
                message: format!(
                    "`{}` {}, but stage `{}` is not required: the run goes on",
                    step.id,
                    if s.status == Status::TimedOut {
                        "timed out"
                    } else {
                        "failed"
                    },
                    step.stage
                ),
            });
        }
    }

    /// Tears down the chaos blocks whose stage is over (every one with
    /// `all`), records each report as the block's `report` output, and
    /// returns a required block whose faults could not be injected.
    async fn settle_chaos(
        &mut self,
        steps: &[&PlanStep],
        slots: &mut [Slot],
        stopping: bool,
        all: bool,
    ) -> Result<Option<String>, StateError> {
        if !crate::chaos::any_active(&self.token_base) {
            return Ok(None);
        }
        let status = |i: usize| slots[i].status.as_str();
        let ended = crate::chaos::settle(&self.token_base, |id| {
            all || steps
                .iter()
                .find(|s| s.id == id)
                .is_none_or(|s| crate::chaos::stage_over(steps, &status, stopping, &s.stage))
        })
        .await;
        let mut failed = None;
        for e in ended {
            let Some(i) = steps.iter().position(|s| s.id == e.step_id) else {
                continue;
            };
            let s = &mut slots[i];
            s.outputs.insert("report".into(), e.report.to_string());
            if let Some(err) = &e.error {
                s.status = Status::Failed;
                s.error = Some(err.clone());
            }
            self.record(steps[i], &slots[i])?;
            self.emit(Event::ChaosReport {
                run: self.run_id,
                step: e.step_id.clone(),
                summary: e.summary,
                report: e.report,
            });
            if e.error.is_some() {
                self.finished_event(steps[i], &slots[i], false);
                if steps[i].required {
                    failed.get_or_insert(e.step_id);
                }
            }
        }
        Ok(failed)
    }

    /// The secrets `step` may read by name: its env's, else the run's `--env`.
    fn step_secrets(&self, step: &PlanStep) -> crate::secrets::StepSecrets {
        crate::secrets::StepSecrets::new(
            self.opts.secrets.clone(),
            step.environment
                .clone()
                .or_else(|| self.plan.target_env.clone()),
        )
    }

    /// The scope a step's expressions see.
    fn with_scope<T>(
        &self,
        steps: &[&PlanStep],
        slots: &[Slot],
        env: &IndexMap<String, String>,
        run_vars: &IndexMap<String, Value>,
        secret_env: Option<&str>,
        f: impl FnOnce(&RunScope<'_>) -> T,
    ) -> T {
        let find = |key: &str| -> Option<StepView> {
            let by = |exact: bool| {
                steps
                    .iter()
                    .zip(slots)
                    .find(|(st, _)| if exact { st.id == key } else { st.name == key })
                    .map(|(st, sl)| view(st, sl))
                    .or_else(|| {
                        self.views
                            .iter()
                            .find(|v| if exact { v.id == key } else { v.name == key })
                            .cloned()
                    })
            };
            by(true).or_else(|| by(false))
        };
        let scope = RunScope {
            find: &find,
            stages: &self.stage_names,
            env,
            run: run_vars,
            secrets_used: &self.resolved,
            secrets: &self.opts.secrets,
            secret_env: secret_env.or(self.plan.target_env.as_deref()),
        };
        f(&scope)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the dispatcher's channels are passed explicitly"
    )]
    fn start(
        &mut self,
        i: usize,
        steps: &[&PlanStep],
        slots: &mut [Slot],
        run_vars: &IndexMap<String, Value>,
        done_tx: &mpsc::UnboundedSender<Done>,
        log_tx: &mpsc::UnboundedSender<LogLine>,
        stop_rx: &watch::Receiver<Stop>,
    ) -> Result<Started, StateError> {
        let step = steps[i];
        let prepared = self.prepare(i, steps, slots, run_vars);
        for e in self.explained.take() {
            self.emit(e);
        }
        let s = &mut slots[i];
        let (job, executor, cache_key) = match prepared {
            Ok(Prepared::Skip(reason)) => {
                s.status = Status::Skipped;
                s.error = Some(reason.clone());
                self.record(step, s)?;
                self.emit(Event::StepSkipped {
                    run: self.run_id,
                    step: step.id.clone(),
                    reason,
                });
                return Ok(Started::Skipped);
            }
            Ok(Prepared::Job(job, e, k)) => (job, e, k),
            Ok(Prepared::Cached {
                key,
                from_run,
                outputs,
            }) => {
                s.status = Status::Succeeded;
                s.outputs = outputs;
                s.error = None;
                s.cache_key = None;
                self.record(step, s)?;
                self.emit(Event::StepCached {
                    run: self.run_id,
                    step: step.id.clone(),
                    key,
                    from_run,
                });
                return Ok(Started::Cached);
            }
            Err(msg) => {
                s.status = Status::Failed;
                s.error = Some(format!("{}: {msg}", self.plan.location(step.span)));
                self.record(step, s)?;
                self.finished_event(step, &slots[i], false);
                return Ok(Started::Failed);
            }
        };
        let Some(executor) = executor else {
            // An approval gate: no executor runs it; the dispatcher holds it.
            return self.open_gate(i, step, &mut slots[i], &job, done_tx);
        };
        let s = &mut slots[i];
        s.when_checked = true;
        s.cache_key = cache_key;
        s.status = Status::Running;
        s.attempt = job.attempt;
        s.started_ms = Some(now_ms());
        s.attempt_start = Some(Instant::now());
        s.first_start.get_or_insert_with(Instant::now);
        s.error = None;
        // Recorded as started before it starts: after a crash it is "in doubt".
        self.record(step, s)?;
        self.emit(Event::StepStarted {
            run: self.run_id,
            step: step.id.clone(),
            attempt: job.attempt,
        });
        let tx = done_tx.clone();
        let io = Io {
            logs: log_tx.clone(),
            stop: stop_rx.clone(),
        };
        self.spawn_attempt(async move {
            let o = executor.run(*job, io).await;
            let _ = tx.send(Done::Attempt(i, o));
        });
        Ok(Started::Running)
    }

    /// Evaluates `when`, the command and the environment of a step's next attempt.
    fn prepare(
        &self,
        i: usize,
        steps: &[&PlanStep],
        slots: &[Slot],
        run_vars: &IndexMap<String, Value>,
    ) -> Result<Prepared, String> {
        let step = steps[i];
        let executor = if step.executor == crate::gate::APPROVAL {
            None
        } else {
            Some(self.registry.get(&step.executor)?)
        };
        let env = self.environment(step, steps, slots, run_vars);
        self.register_secrets()?;
        let env = env?;
        let out = self.with_scope(
            steps,
            slots,
            &env,
            run_vars,
            step.environment.as_deref(),
            |scope| {
                let value = |d: &Deferrable| -> Result<Value, String> {
                    match d {
                        Deferrable::Ready(v) => Ok(v.clone()),
                        Deferrable::Deferred(e) => eval(e, scope).map_err(|e| {
                            format!("{} (at {})", e.message, self.plan.location(e.span))
                        }),
                    }
                };
                if !slots[i].when_checked {
                    if let Some(w) = &step.when {
                        if !value(w)?.truthy() {
                            return Ok::<_, String>(None);
                        }
                    }
                }
                let render = |t: &CommandTemplate| {
                    t.render(|d| {
                        let v = value(d)?;
                        interpolate(&v, t.span).map_err(|e| e.message)
                    })
                };
                let command = step.run.as_ref().map(render).transpose()?;
                let mut vars: Vec<(String, String)> =
                    env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for (k, d) in &step.env {
                    let v = value(d)?;
                    vars.push((
                        k.clone(),
                        interpolate(&v, step.span)
                            .map_err(|e| format!("env {k}: {}", e.message))?,
                    ));
                }
                let mut inputs = IndexMap::new();
                for (k, d) in &step.inputs {
                    // A shell step's only input is its `service` blocks.
                    if step.executor != "shell" || k == "services" {
                        let v = value(d).map_err(|e| crate::gate::cannot_evaluate(step, k, e))?;
                        inputs.insert(k.clone(), v);
                    }
                }
                let user_key = match step.cache.as_ref().and_then(|c| c.key.as_ref()) {
                    Some(k) => Some(interpolate(&value(k)?, step.span).map_err(|e| e.message)?),
                    None => None,
                };
                Ok(Some((command, vars, inputs, user_key)))
            },
        );
        self.register_secrets()?;
        let out = out?;
        let Some((command, vars, inputs, user_key)) = out else {
            return Ok(Prepared::Skip("`when` is false".into()));
        };
        if step.executor == "shell" && command.is_none() {
            return Err("a shell step needs a `run` command".into());
        }
        let mut cache_key = None;
        if let (Some(spec), false) = (&step.cache, self.opts.no_cache) {
            // An executor step has no command: its inputs (tags, build args...) decide its result.
            let rendered = command.clone().or_else(|| Some(format!("{inputs:?}")));
            match crate::cache::compute(
                &self.opts.root,
                &step.id,
                rendered.as_deref(),
                &vars,
                user_key.as_deref(),
                &spec.inputs,
            ) {
                Ok(k) => match self.store.cache_get(&k.key).map_err(|e| e.to_string())? {
                    Some((from_run, outputs)) => {
                        return Ok(Prepared::Cached {
                            key: k.key,
                            from_run,
                            outputs,
                        })
                    }
                    None => {
                        self.explain(step, Some(&k.key), format!(
                            "no recorded success has this key (command, environment, key and {} input file(s) hashed)",
                            k.files
                        ));
                        cache_key = Some(k.key);
                    }
                },
                Err(e) => self.explain(step, None, format!("not cacheable: {e}")),
            }
        }
        let attempt = slots[i].attempt + 1;
        let mut env_vars = vars;
        env_vars.push(("PIPE_RUN_ID".into(), self.run_id.to_string()));
        env_vars.push(("PIPE_STEP".into(), step.id.clone()));
        env_vars.push(("PIPE_ATTEMPT".into(), attempt.to_string()));
        if let Some(e) = &step.environment {
            env_vars.push(("PIPE_ENV".into(), e.clone()));
        }
        let log_path = self.store.log_path(self.run_id, &step.id, attempt);
        let output_path = log_path.with_extension("outputs");
        Ok(Prepared::Job(
            Box::new(Job {
                index: i,
                step_id: step.id.clone(),
                attempt,
                command,
                shell: step.shell.clone(),
                env: env_vars,
                inputs,
                cwd: self.opts.root.clone(),
                timeout: step.timeout_ms.map(Duration::from_millis),
                grace: self.opts.grace,
                log_path,
                output_path,
                token: format!("{}{}/{attempt}", self.token_base, step.id),
                mask: self.masker.clone(),
                secrets: self.step_secrets(step),
            }),
            executor,
            cache_key,
        ))
    }

    fn explain(&self, step: &PlanStep, key: Option<&str>, reason: String) {
        if self.opts.explain_cache {
            self.explained.borrow_mut().push(Event::CacheMiss {
                run: self.run_id,
                step: step.id.clone(),
                key: key.map(str::to_string),
                reason,
            });
        }
    }

    /// The variables of the step's `env` block: its file, then its `vars`
    /// (`require`, `forbid` and `allow_if` were checked before the run).
    fn environment(
        &self,
        step: &PlanStep,
        steps: &[&PlanStep],
        slots: &[Slot],
        run_vars: &IndexMap<String, Value>,
    ) -> Result<IndexMap<String, String>, String> {
        let mut env = IndexMap::new();
        let Some(spec) = step
            .environment
            .as_ref()
            .and_then(|e| self.plan.envs().get(e))
        else {
            return Ok(env);
        };
        let at = self.plan.location(spec.span);
        if let Some(file) = &spec.file {
            let path = self.opts.root.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "env `{}` (at {at}): cannot read {}: {e}",
                    spec.name,
                    path.display()
                )
            })?;
            // Validated before the run (crate::environment); only read here.
            env.extend(crate::environment::DotEnv::parse(&text).vars);
        }
        for (k, d) in &spec.vars {
            let v = match d {
                Deferrable::Ready(v) => v.clone(),
                Deferrable::Deferred(e) => self
                    .with_scope(steps, slots, &env, run_vars, Some(&spec.name), |scope| {
                        eval(e, scope)
                    })
                    .map_err(|e| format!("env `{}`: {}", spec.name, e.message))?,
            };
            let s = interpolate(&v, spec.span).map_err(|e| e.message)?;
            env.insert(k.clone(), s);
        }
        Ok(env)
    }

    fn on_failure_job(
        &self,
        i: usize,
        steps: &[&PlanStep],
        cmd: &CommandTemplate,
        slots: &[Slot],
        run_vars: &IndexMap<String, Value>,
    ) -> Result<Job, String> {
        let step = steps[i];
        let env = self.environment(step, steps, slots, run_vars);
        self.register_secrets()?;
        let env = env?;
        let rendered = self.with_scope(
            steps,
            slots,
            &env,
            run_vars,
            step.environment.as_deref(),
            |scope| {
                cmd.render(|d| {
                    let v = match d {
                        Deferrable::Ready(v) => v.clone(),
                        Deferrable::Deferred(e) => eval(e, scope).map_err(|e| e.message)?,
                    };
                    interpolate(&v, cmd.span).map_err(|e| e.message)
                })
            },
        );
        self.register_secrets()?;
        let command = rendered?;
        let attempt = slots[i].attempt;
        let log_path = self
            .store
            .log_dir(self.run_id)
            .join(format!("{}.{attempt}.on_failure.log", step.id));
        let mut vars: Vec<(String, String)> = env.into_iter().collect();
        vars.push(("PIPE_RUN_ID".into(), self.run_id.to_string()));
        vars.push(("PIPE_STEP".into(), step.id.clone()));
        Ok(Job {
            index: i,
            step_id: step.id.clone(),
            attempt,
            command: Some(command),
            shell: step.shell.clone(),
            env: vars,
            inputs: IndexMap::new(),
            cwd: self.opts.root.clone(),
            timeout: step.timeout_ms.map(Duration::from_millis),
            grace: self.opts.grace,
            output_path: log_path.with_extension("outputs"),
            log_path,
            token: format!("{}{}/{attempt}/on_failure", self.token_base, step.id),
            mask: self.masker.clone(),
            secrets: self.step_secrets(step),
        })
    }
}

enum Prepared {
    /// No executor for an approval gate: the dispatcher holds it.
    Job(
        Box<Job>,
        Option<std::sync::Arc<dyn crate::executor::Executor>>,
        Option<String>,
    ),
    Skip(String),
    Cached {
        key: String,
        from_run: i64,
        outputs: IndexMap<String, String>,
    },
}

enum Started {
    Running,
    Skipped,
    Cached,
    Failed,
    /// An approval gate waiting for a decision.
    Waiting,
}

fn view(st: &PlanStep, sl: &Slot) -> StepView {
    StepView {
        id: st.id.clone(),
        stage: st.stage.clone(),
        name: st.name.clone(),
        status: sl.status.as_str().to_string(),
        outputs: sl.outputs.clone(),
        exit_code: sl.exit_code,
    }
}

fn release(step: &PlanStep, groups: &mut HashSet<String>) {
    if let Some(g) = &step.concurrency {
        groups.remove(g);
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The delay before the next attempt, or `None` when the failure is final:
/// no retry policy, attempts used up, a permanent error (exit 126/127, a
/// configuration error, a failure its executor classed permanent), a class
/// the policy's `on` does not list, the `max_elapsed` budget spent, or the
/// run is stopping. The delay itself comes from [`crate::retry::next_delay`].
fn retry_delay(step: &PlanStep, slot: &Slot, o: &Outcome, stopping: bool) -> Option<Duration> {
    let policy = step.retry.as_ref()?;
    if stopping
        || slot.attempt >= policy.attempts
        || matches!(
            o.ending,
            Ending::Error | Ending::Cancelled | Ending::Succeeded
        )
        || matches!(o.exit_code, Some(126 | 127))
        || o.class == Some(Class::Permanent)
    {
        return None;
    }
    if !policy.on.is_empty() {
        let hit = policy.on.iter().any(|v| match v {
            Value::Int(c) => o.exit_code.map(i64::from) == Some(*c),
            Value::Str(s) => match s.as_str() {
                "timeout" => o.ending == Ending::TimedOut,
                "failure" | "exit" => o.ending == Ending::Failed,
                "transient" => {
                    o.ending == Ending::Failed || matches!(o.class, Some(Class::Transient { .. }))
                }
                _ => false,
            },
            _ => false,
        });
        if !hit {
            return None;
        }
    }
    let elapsed = slot.first_start.map_or(Duration::ZERO, |f| f.elapsed());
    crate::retry::next_delay(policy, slot.attempt, elapsed, o.class)
}

/// The delay after failed attempt `n` (1-based); see [`crate::retry::backoff`].
pub fn backoff_delay(b: Backoff, n: u32) -> Duration {
    crate::retry::backoff(b, n)
}

/// A masker that already knows every secret the plan names (`secrets.X` in
/// any step or handler, and each env block's `secrets` list) and that is set,
/// so a step that reads the variable directly, or runs before the first step
/// that references it, is masked too. A value too short to mask is left to
/// the step that uses it, which refuses it with the reason.
fn declared_secrets_masker(plan: &Plan, secrets: &crate::secrets::Secrets) -> SharedMasker {
    crate::secrets::masker_for(plan, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let e = Backoff::Exponential {
            base_ms: 100,
            max_ms: 1000,
        };
        for _ in 0..50 {
            // Full jitter: anywhere below the ceiling of the attempt.
            assert!(backoff_delay(e, 1).as_millis() <= 100);
            assert!(backoff_delay(e, 3).as_millis() <= 400);
            assert!(backoff_delay(e, 10).as_millis() <= 1000);
            let l = backoff_delay(
                Backoff::Linear {
                    base_ms: 100,
                    max_ms: 250,
                },
                2,
            )
            .as_millis();
            assert!((160..=240).contains(&l), "{l}");
        }
    }
}
