//! `pipe run`: lowers a pipeline, records a new run (with a snapshot of every
//! source file) and executes it; `--dry-run` shows what would run.

use std::path::PathBuf;
use std::time::Duration;

use pipe_lang::lower::Context;
use pipe_lang::plan::Deferrable;
use pipe_lang::Plan;
use pipe_runtime::state::{NewRun, StepRecord};
use pipe_runtime::{Options, RunEnd, Scheduler, Store};

use crate::exit::{Failure, INTERRUPTED, RUN_FAILED, WAITING};
use crate::project::Project;
use crate::render::{Output, Renderer};

/// Flags shared by `run` and `resume`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// At most this many steps at once (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Run every branch that does not depend on a failure, instead of stopping at the first.
    #[arg(long)]
    pub keep_going: bool,
    /// Run cacheable steps even when a recorded success matches.
    #[arg(long)]
    pub no_cache: bool,
    /// Say why each cacheable step was or was not a cache hit.
    #[arg(long)]
    pub explain_cache: bool,
    /// At approval gates, do not wait: when only gates are left, stop with
    /// status `waiting` and exit code 3 (the default unless stdin and stdout
    /// are a terminal).
    #[arg(long, conflicts_with = "wait")]
    pub detach: bool,
    /// Wait at approval gates for a decision (up to their timeout) even when
    /// not on a terminal.
    #[arg(long)]
    pub wait: bool,
    /// Record an approval by USER at each approval gate reached, for scripted
    /// demos: the rules still apply, and it is recorded as such.
    #[arg(long, value_name = "USER")]
    pub approve_as: Option<String>,
    /// Run every container step on this executor (`swarm`: as Docker Swarm
    /// jobs); a step's own `executor = "container"` still wins.
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<RunExecutor>,
    /// Output format (`human` on a terminal; use `plain` or `json` in scripts).
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub secrets: super::env::SecretArgs,
}

/// Executors `--executor` can make the default for container steps.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunExecutor {
    /// A local container on the Docker Engine (the default).
    Container,
    /// A Docker Swarm job on the swarm `DOCKER_HOST` manages (docs/swarm.md).
    Swarm,
}

/// Where the state store lives.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StateArgs {
    /// The state directory (default: `.pipe` at the project root).
    #[arg(long, value_name = "DIR", env = "PIPE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    pub fn dir(&self, project: &Project) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| project.root.join(".pipe"))
    }

    pub fn open(&self, project: &Project) -> Result<Store, Failure> {
        Store::open(&self.dir(project)).map_err(|e| Failure::invalid(e.to_string()))
    }

    /// Opens an existing store, for the commands that only read.
    pub fn open_existing(&self, project: &Project) -> Result<Store, Failure> {
        let dir = self.dir(project);
        if !dir.join("state.db").exists() {
            return Err(Failure::invalid(format!(
                "no runs yet: {} does not exist (start one with `pipe run`)",
                dir.join("state.db").display()
            )));
        }
        self.open(project)
    }
}

pub fn run(
    project: &Project,
    pipeline: &str,
    ctx: &Context,
    exec: &ExecArgs,
    dry_run: bool,
) -> Result<(), Failure> {
    let plan = super::plan_for(project, pipeline, ctx)?;
    if dry_run {
        return crate::print(&dry_run_text(&plan));
    }
    super::env::preflight(project, &plan, &ctx.git, &exec.secrets)?;
    let (files, _) = project.resolve(pipeline)?;
    let roots = files.iter().map(|f| project.display_name(f)).collect();
    let store = exec.state.open(project)?;
    let sources = plan
        .sources()
        .files()
        .map(|(_, f)| (f.name.clone(), f.text.to_string()))
        .collect();
    let run_id = store
        .create_run(&NewRun {
            pipeline: plan.pipeline.clone(),
            env: ctx.target_env.clone(),
            params: ctx.params.clone(),
            context: ctx.git.to_json(),
            roots,
            sources,
        })
        .map_err(|e| Failure::invalid(e.to_string()))?;
    pipe_runtime::gate::record_starter(
        &store,
        run_id,
        &pipe_runtime::gate::identity::current_user(),
    )
    .map_err(|e| Failure::invalid(e.to_string()))?;
    // Held while the run executes, so `pipe resume` cannot take it over.
    let _lock = store
        .lock_run(run_id)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    execute(project, &plan, &store, run_id, &[], false, exec)
}

/// Executes a recorded run and maps how it ended to an exit code.
pub fn execute(
    project: &Project,
    plan: &Plan,
    store: &Store,
    run_id: i64,
    prior: &[StepRecord],
    resumed: bool,
    exec: &ExecArgs,
) -> Result<(), Failure> {
    let opts = Options {
        root: project.root.clone(),
        jobs: exec.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        }),
        keep_going: exec.keep_going,
        grace: grace(),
        no_cache: exec.no_cache,
        explain_cache: exec.explain_cache,
        secrets: super::env::secrets(),
    };
    if opts.jobs == 0 {
        return Err(Failure::invalid("--jobs must be at least 1"));
    }
    let mut renderer = Renderer::new(exec.output).with_plan(plan);
    let mut sched = Scheduler::new(plan, store, run_id, opts, &mut renderer);
    sched.set_gates(super::gates::options(exec));
    if exec.executor == Some(RunExecutor::Swarm) {
        pipe_runtime::executor::swarm::make_default(sched.registry_mut());
    }
    let (end, _) = sched
        .execute(prior, resumed)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    if std::env::var_os("PIPE_BENCH_STATS").is_some() {
        // For runtime/bench/run-vs-ninja.sh (runtime/bench/README.md).
        let (writes, time) = store.write_stats();
        eprintln!(
            "pipe-bench: store_writes={writes} store_us={}",
            time.as_micros()
        );
    }
    match end {
        RunEnd::Succeeded => Ok(()),
        RunEnd::Failed => Err(Failure::silent(RUN_FAILED)),
        RunEnd::Interrupted => Err(Failure::silent(INTERRUPTED)),
        RunEnd::Waiting => Err(Failure::silent(WAITING)),
    }
}

/// The SIGTERM-to-SIGKILL grace period: `PIPE_KILL_GRACE_MS`, default 5 s.
fn grace() -> Duration {
    Duration::from_millis(
        std::env::var("PIPE_KILL_GRACE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000),
    )
}

fn dry_run_text(plan: &Plan) -> String {
    let mut out = format!(
        "would run `{}` ({} steps), in this order:\n",
        plan.pipeline,
        plan.steps().len()
    );
    for &i in plan.topo_order() {
        let s = plan.step(i);
        let needs: Vec<&str> = s.needs.iter().map(|&n| plan.step(n).id.as_str()).collect();
        out.push_str(&format!("  {} [{}]", s.id, s.executor));
        if !needs.is_empty() {
            out.push_str(&format!(" after {}", needs.join(", ")));
        }
        if s.when.is_some() {
            out.push_str(" (conditional)");
        }
        out.push('\n');
        if let Some(run) = &s.run {
            let text = run
                .render(|d| match d {
                    Deferrable::Ready(v) => {
                        pipe_lang::eval::interpolate(v, run.span).map_err(|e| e.message)
                    }
                    Deferrable::Deferred(e) => {
                        Ok(format!("${{{}}}", pipe_lang::fmt::expr_to_string(e)))
                    }
                })
                .unwrap_or_else(|e| format!("<{e}>"));
            out.push_str(&format!("      $ {text}\n"));
        }
    }
    out
}
