//! The `pipe` command: thin glue between the language (`pipe-lang`), the
//! runtime (`pipe-runtime`) and the terminal.

/// mimalloc rather than the system allocator: `pipe` builds and drops many
/// small strings and maps (a 10,000-step plan), where glibc malloc cost more
/// than a third of the lowering time (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod diagnostics;
mod exit;
mod git;
mod lsp;
mod project;
mod render;
mod report;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use indexmap::IndexMap;
use pipe_lang::lower::Context;

use crate::exit::Failure;
use crate::project::Project;

/// A declarative pipeline language and its interpreter.
#[derive(Parser, Debug)]
#[command(name = "pipe", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Run as if started in this directory.
    #[arg(short = 'C', long, global = true, value_name = "DIR")]
    directory: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone, Default)]
struct PlanArgs {
    /// Target environment: stages bound to other environments are left out,
    /// except those a stage of this environment needs.
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// Set a param: `-p version=1.2.0` (lists: `a,b` or JSON).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
    params: Vec<(String, String)>,
    /// Evaluate `git.*` at this ref instead of HEAD.
    #[arg(long, value_name = "REF")]
    git_ref: Option<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and analyze .pipe files and report every problem (default: every file under pipelines/).
    Check {
        /// Files or directories to check.
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: commands::check::Format,
    },
    /// Rewrite .pipe files in the canonical layout (default: every file under pipelines/).
    Fmt {
        /// Files or directories to format.
        paths: Vec<PathBuf>,
        /// Change nothing: list the files that would change and exit 1 if any would.
        #[arg(long)]
        check: bool,
    },
    /// Run the language server on stdin and stdout (for editors).
    Lsp,
    /// List pipelines, or one pipeline's params, stages and steps.
    List {
        /// A pipeline name or a path to a .pipe file.
        pipeline: Option<String>,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Show a pipeline's DAG with estimates, slack and the critical path.
    Graph {
        /// A pipeline name (`pipelines/NAME.pipe`, or a pipeline of that name) or a path.
        pipeline: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "ascii")]
        format: commands::graph::Format,
        /// Use only declared estimates, not the median of recorded runs.
        #[arg(long)]
        no_history: bool,
        #[command(flatten)]
        state: commands::run::StateArgs,
        #[command(flatten)]
        secrets: commands::env::SecretArgs,
    },
    /// Run a pipeline: every step as soon as its needs are done.
    Run {
        /// A pipeline name or a path to a .pipe file.
        pipeline: String,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        exec: commands::run::ExecArgs,
        /// Show what would run, in order, without running anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Continue a failed, cancelled or interrupted run (default: the latest).
    Resume {
        /// The run id (see `pipe runs`).
        run: Option<String>,
        /// Run again steps that started and never finished even if not idempotent.
        #[arg(long)]
        rerun_in_doubt: bool,
        /// Continue with the current files even though they changed since the run started.
        #[arg(long)]
        replan: bool,
        #[command(flatten)]
        exec: commands::run::ExecArgs,
    },
    /// Approve a waiting approval gate, as PIPE_USER (else the OS user).
    Approve {
        #[command(flatten)]
        args: commands::approve::DecideArgs,
    },
    /// Reject a waiting approval gate: the branch behind it fails.
    Reject {
        #[command(flatten)]
        args: commands::approve::DecideArgs,
    },
    /// List approval gates waiting for a decision, with what they show.
    Gates {
        #[command(flatten)]
        state: commands::run::StateArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: commands::gates::Format,
    },
    /// Validate environments (`env check`) or show one's resolved variables (`env show`).
    Env {
        #[command(subcommand)]
        command: commands::env::EnvCommand,
        /// Set a param: `-p version=1.2.0`.
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_kv, global = true)]
        params: Vec<(String, String)>,
        /// Evaluate `git.*` (and so `allow_if`) at this ref instead of HEAD.
        #[arg(long, value_name = "REF", global = true)]
        git_ref: Option<String>,
    },
    /// Remove containers, networks and swarm jobs left in the Docker Engine by runs that crashed.
    Gc {
        #[command(flatten)]
        state: commands::run::StateArgs,
    },
    /// List the deployment ledger, newest first.
    Deployments {
        /// Only this environment.
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
        /// Only this service.
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: commands::deployments::Format,
        #[command(flatten)]
        state: commands::run::StateArgs,
    },
    /// Redeploy an earlier version from the deployment ledger.
    Rollback {
        /// The environment to roll back.
        #[arg(long, value_name = "ENV")]
        env: String,
        /// Only this service (default: every service deployed to ENV).
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        /// This version (default: the one before the active one).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// The database down-step command (default: the one recorded at deploy time).
        #[arg(long, value_name = "COMMAND")]
        migrate_down: Option<String>,
        #[command(flatten)]
        exec: commands::run::ExecArgs,
    },
    /// List recorded runs, newest first.
    Runs {
        #[command(flatten)]
        state: commands::run::StateArgs,
        /// Show at most this many.
        #[arg(long, default_value = "20")]
        limit: usize,
    },
    /// Show one run's steps (default: the latest run).
    Status {
        run: Option<String>,
        #[command(flatten)]
        state: commands::run::StateArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: commands::status::Format,
    },
    /// Print the logs of a run's steps (default: the latest run, every step).
    Logs {
        run: Option<String>,
        step: Option<String>,
        /// Which attempt (default: the last).
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing new lines until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        state: commands::run::StateArgs,
    },
    /// Write a pipeline as workflows for another engine (docs/export.md).
    Export {
        #[command(subcommand)]
        target: ExportTarget,
    },
    /// Write a run's report: a self-contained HTML page, a Markdown summary or JSON.
    Report(commands::report::ReportArgs),
    /// Print reference documentation: the CLI (`--cli`) or a stdlib module (`std/docker`).
    Doc(commands::doc::DocArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ExportTarget {
    /// GitHub Actions: one workflow file per pipeline (and target environment).
    Github {
        /// A pipeline name or a path to a .pipe file.
        pipeline: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// The directory to write to (`-`: print to stdout).
        #[arg(long, value_name = "DIR", default_value = ".github/workflows")]
        out: PathBuf,
    },
}

fn context(project: &Project, args: &PlanArgs) -> Context {
    Context {
        git: git::context(&project.root, args.git_ref.as_deref()),
        params: args.params.iter().cloned().collect::<IndexMap<_, _>>(),
        target_env: args.env.clone(),
    }
}

fn print(s: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .or_else(broken_pipe_is_ok)
}

/// A closed pipe (`pipe graph | head`) is not an error.
fn broken_pipe_is_ok(e: std::io::Error) -> Result<(), Failure> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(Failure::from(e))
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let cwd = match &cli.directory {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    if !cwd.is_dir() {
        return Err(Failure::invalid(format!(
            "no such directory: {}",
            cwd.display()
        )));
    }
    let project = Project::discover(&cwd);
    if cli.directory.is_some() {
        std::env::set_current_dir(&cwd)?;
    }
    match cli.command {
        Command::Check { paths, format } => {
            let ctx = context(&project, &PlanArgs::default());
            commands::check::run(&project, &paths, format, &ctx)
        }
        Command::Fmt { paths, check } => commands::fmt::run(&project, &paths, check),
        Command::Lsp => lsp::serve(),
        Command::List { pipeline, plan } => {
            let ctx = context(&project, &plan);
            print(&commands::list::run(&project, pipeline.as_deref(), &ctx)?)
        }
        Command::Graph {
            pipeline,
            plan,
            format,
            no_history,
            state,
            secrets,
        } => {
            let ctx = context(&project, &plan);
            let p = commands::plan_for(&project, &pipeline, &ctx)?;
            let est = commands::graph::estimates(&p, &state.dir(&project), no_history)?;
            let result = if let commands::graph::Format::Json = format {
                // Streamed: the JSON of a big plan is never one string.
                let masker = commands::env::output_masker(&project, &p, &secrets)?;
                let out = pipe_runtime::mask::MaskingWriter::new(masker, std::io::stdout().lock());
                let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
                commands::graph::write_json_for(&p, &est, &mut w)
                    .and_then(|()| w.into_inner().map_err(std::io::IntoInnerError::into_error))
                    .and_then(|out| out.finish().map(drop))
                    .or_else(broken_pipe_is_ok)
            } else {
                let text = commands::graph::render(&p, format, &est);
                print(&commands::env::mask_output(&project, &p, &secrets, &text)?)
            };
            // The plan of a big pipeline takes a while to free, and the
            // process ends here: the OS takes its memory back at once.
            std::mem::forget(p);
            result
        }
        Command::Env {
            command,
            params,
            git_ref,
        } => {
            let plan = PlanArgs {
                params,
                git_ref,
                ..PlanArgs::default()
            };
            commands::env::run(&project, command, &context(&project, &plan))
        }
        Command::Run {
            pipeline,
            plan,
            exec,
            dry_run,
        } => {
            let ctx = context(&project, &plan);
            commands::run::run(&project, &pipeline, &ctx, &exec, dry_run)
        }
        Command::Resume {
            run,
            rerun_in_doubt,
            replan,
            exec,
        } => commands::resume::run(&project, run.as_deref(), rerun_in_doubt, replan, &exec),
        Command::Approve { args } => print(&commands::approve::run(
            &project,
            &args,
            pipe_runtime::gate::Decision::Approve,
        )?),
        Command::Reject { args } => print(&commands::approve::run(
            &project,
            &args,
            pipe_runtime::gate::Decision::Reject,
        )?),
        Command::Gates { state, format } => print(&commands::gates::run(&project, &state, format)?),
        Command::Gc { state } => print(&commands::gc::run(&project, &state)?),
        Command::Deployments {
            env,
            service,
            output,
            state,
        } => print(&commands::deployments::run(
            &project,
            &state,
            env.as_deref(),
            service.as_deref(),
            output,
        )?),
        Command::Rollback {
            env,
            service,
            to,
            migrate_down,
            exec,
        } => commands::rollback::run(
            &project,
            &commands::rollback::Target {
                env: &env,
                service: service.as_deref(),
                to: to.as_deref(),
                migrate_down: migrate_down.as_deref(),
            },
            git::context(&project.root, None),
            &exec,
        ),
        Command::Runs { state, limit } => print(&commands::runs::run(&project, &state, limit)?),
        Command::Status { run, state, format } => print(&commands::status::run(
            &project,
            &state,
            run.as_deref(),
            format,
        )?),
        Command::Logs {
            run,
            step,
            attempt,
            follow,
            state,
        } => print(&commands::logs::run(
            &project,
            &state,
            &commands::logs::LogArgs {
                run: run.as_deref(),
                step: step.as_deref(),
                attempt,
                follow,
            },
        )?),
        Command::Export {
            target:
                ExportTarget::Github {
                    pipeline,
                    plan,
                    out,
                },
        } => {
            let ctx = context(&project, &plan);
            print(&commands::export::github(&project, &pipeline, &ctx, &out)?)
        }
        Command::Report(args) => commands::report::run(&project, &args),
        Command::Doc(args) => print(&commands::doc::run(&args, &Cli::command())?),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pipe", &mut buf);
            print(&String::from_utf8_lossy(&buf))
        }
    }
}

fn main() -> ExitCode {
    commands::env::install_panic_hook();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(f) => {
            if let Some(m) = f.message {
                eprintln!("error: {}", commands::env::mask(&m));
            }
            ExitCode::from(f.code)
        }
    }
}
