//! `pipe env check` and `pipe env show`, the secret-source flags, and the
//! pre-run validation `pipe run` and `pipe resume` go through: secrets are
//! loaded (refusing unsafe files), every environment the run uses is
//! validated with every violation reported at once, and the run's masker is
//! installed for error and panic messages. See docs/environments.md.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pipe_lang::lower::Context;
use pipe_lang::{Plan, Value};
use pipe_runtime::environment::{self, Validation};
use pipe_runtime::mask::{mask_with, Masker, SharedMasker};
use pipe_runtime::secrets::{Secrets, Sources};

use crate::diagnostics::{plural, render};
use crate::exit::{Failure, INVALID};
use crate::project::Project;

/// Where `secrets.NAME` values come from, besides the environment.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecretArgs {
    /// A dotenv file of secrets (mode 600), e.g. `--secrets-file .secrets.env`.
    #[arg(long, value_name = "FILE", env = "PIPE_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// A directory with one file per secret, named after it (default:
    /// `.pipe/secrets` when it exists; `/run/secrets` for mounted secrets).
    #[arg(long, value_name = "DIR", env = "PIPE_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum EnvCommand {
    /// Validate environments without running anything (default: every env of every pipeline).
    Check {
        /// A pipeline name or a path to a .pipe file (default: every file under pipelines/).
        pipeline: Option<String>,
        /// Check this environment (and those its stages need) only.
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Print an environment's variables (secrets masked) and where each came from.
    Show {
        /// A pipeline name or a path (default: the first pipeline declaring the env).
        pipeline: Option<String>,
        #[arg(long, value_name = "ENV")]
        env: String,
        #[command(flatten)]
        secrets: SecretArgs,
    },
}

/// The secrets and masker of this process, once loaded.
static LOADED: OnceLock<(Arc<Secrets>, SharedMasker)> = OnceLock::new();

/// Masks every known secret out of `text` (error messages, panics, output).
pub fn mask(text: &str) -> String {
    match LOADED.get() {
        Some((_, m)) => mask_with(m, text),
        None => text.to_string(),
    }
}

/// The secrets loaded by [`preflight`] (none loaded: the environment only).
pub fn secrets() -> Arc<Secrets> {
    LOADED
        .get()
        .map_or_else(|| Arc::new(Secrets::default()), |(s, _)| s.clone())
}

/// Reports every panic through the masker, so a secret in a panic message
/// (or in the value that caused it) never reaches the terminal.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", panic_text(info));
    }));
}

fn panic_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    let msg = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    let at = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    // Captured only when RUST_BACKTRACE asks for it, and masked like the rest.
    let trace = std::backtrace::Backtrace::capture();
    let trace = match trace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{trace}"),
        _ => String::new(),
    };
    mask(&format!(
        "pipe panicked{at}: {msg}\nThis is a bug in pipe; please report it.{trace}"
    ))
}

/// Reads the secret sources; every refusal is printed.
pub fn load_secrets(project: &Project, args: &SecretArgs) -> Result<Secrets, Failure> {
    let (dir, explicit) = match &args.secrets_dir {
        Some(d) => (Some(d.clone()), true),
        None => (Some(PathBuf::from(".pipe/secrets")), false),
    };
    let src = Sources {
        root: project.root.clone(),
        file: args.secrets_file.clone(),
        dir,
        dir_explicit: explicit,
    };
    Secrets::load(&src).map_err(|refusals| {
        let mut msg = String::new();
        for (i, r) in refusals.iter().enumerate() {
            if i > 0 {
                msg.push_str("\nerror: ");
            }
            let _ = write!(msg, "{}\n  help: {}", r.message, r.help);
        }
        Failure::invalid(msg)
    })
}

/// Prints the diagnostics of a validation, masked; fails when any is an error.
fn report(v: &Validation, masker: &Masker) -> Result<(), Failure> {
    for d in &v.diagnostics {
        eprintln!("{}", masker.mask(&render(d, &v.sources)));
    }
    if v.ok() {
        Ok(())
    } else {
        let n = v.diagnostics.iter().filter(|d| d.is_error()).count();
        eprintln!(
            "error: {} in the environment; nothing was run",
            plural(n, "problem")
        );
        Err(Failure::silent(INVALID))
    }
}

/// Before `pipe run` or `pipe resume` starts anything: loads the secrets,
/// installs the masker, and validates every environment the plan uses.
pub fn preflight(
    project: &Project,
    plan: &Plan,
    git: &Value,
    args: &SecretArgs,
) -> Result<(), Failure> {
    if let Some(e) = &plan.target_env {
        // A typo would otherwise run only the stages without an env.
        if !plan.envs().contains_key(e) {
            return Err(Failure::invalid(unknown_env(plan, e)));
        }
    }
    let secrets = load_secrets(project, args)?;
    let masker = pipe_runtime::secrets::masker_for(plan, &secrets);
    let _ = LOADED.set((Arc::new(secrets), masker.clone()));
    let secrets = self::secrets();
    let v = environment::validate(
        plan,
        &project.root,
        &secrets,
        git,
        &environment::used_by(plan),
    );
    let m = masker
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A secret a step reads that is too short to mask: refused now rather
    // than when the step comes (the env's own `secrets` are reported above).
    let declared: Vec<&String> = v.resolved.iter().flat_map(|r| r.secrets.keys()).collect();
    let mut short = Vec::new();
    for name in pipe_runtime::secrets::names_in(plan) {
        if declared.contains(&&name) {
            continue;
        }
        if let Some(Err(r)) = secrets.check(&name) {
            short.push(format!(
                "{}
  help: {}",
                r.message, r.help
            ));
        }
    }
    // A step that reads a secret only another environment has: refused now,
    // with where it is (the value itself is never visible to the step).
    for (step, env, name) in pipe_runtime::secrets::reads_by_step(plan) {
        if secrets.get_in(env.as_deref(), &name).is_some() {
            continue;
        }
        if let Some((other, origin)) = secrets.scoped_elsewhere(env.as_deref(), &name).first() {
            let scope = env
                .as_deref()
                .map_or("no environment".to_string(), |e| format!("env `{e}`"));
            short.push(format!(
                "step `{step}` ({scope}) reads `secrets.{name}`, which is set only for env `{other}` ({origin}); a step never sees another environment's secrets
  help: give {scope} its own `{name}` ({}), or set a shared one",
                env.as_deref().map_or(format!("a file `{name}` in the secrets directory"), |e| format!("the secrets directory's `{e}/{name}`, mode 600"))
            ));
        }
    }
    let envs = report(&v, &m);
    if !short.is_empty() {
        return Err(Failure::invalid(short.join("\nerror: ")));
    }
    envs
}

/// Masks the text of a command's output with the plan's secrets.
pub fn mask_output(
    project: &Project,
    plan: &Plan,
    args: &SecretArgs,
    text: &str,
) -> Result<String, Failure> {
    Ok(mask_with(&output_masker(project, plan, args)?, text))
}

/// The masker for a command's output with the plan's secrets, for output
/// written as a stream ([`pipe_runtime::mask::MaskingWriter`]).
pub fn output_masker(
    project: &Project,
    plan: &Plan,
    args: &SecretArgs,
) -> Result<pipe_runtime::mask::SharedMasker, Failure> {
    let secrets = load_secrets(project, args)?;
    let masker = pipe_runtime::secrets::masker_for(plan, &secrets);
    let _ = LOADED.set((Arc::new(secrets), masker.clone()));
    Ok(masker)
}

fn with_env(ctx: &Context, env: Option<&str>) -> Context {
    Context {
        target_env: env.map(str::to_string),
        ..ctx.clone()
    }
}

/// The `.pipe` files a command without a PIPELINE argument looks at.
fn all_pipeline_files(project: &Project) -> Vec<String> {
    Project::pipe_files(&project.pipelines_dir())
        .iter()
        .map(|f| f.display().to_string())
        .collect()
}

pub fn run(project: &Project, cmd: EnvCommand, ctx: &Context) -> Result<(), Failure> {
    match cmd {
        EnvCommand::Check {
            pipeline,
            env,
            secrets,
        } => check(project, pipeline.as_deref(), env.as_deref(), ctx, &secrets),
        EnvCommand::Show {
            pipeline,
            env,
            secrets,
        } => show(project, pipeline.as_deref(), &env, ctx, &secrets),
    }
}

fn check(
    project: &Project,
    pipeline: Option<&str>,
    env: Option<&str>,
    ctx: &Context,
    args: &SecretArgs,
) -> Result<(), Failure> {
    let targets = match pipeline {
        Some(p) => vec![p.to_string()],
        None => all_pipeline_files(project),
    };
    if targets.is_empty() {
        return Err(Failure::invalid(
            "no pipelines: pipelines/ holds no .pipe file (name one: `pipe env check FILE`)",
        ));
    }
    let secrets = load_secrets(project, args)?;
    let mut out = String::new();
    let mut failed = false;
    let mut checked = 0;
    for t in &targets {
        let plan = super::plan_for(project, t, &with_env(ctx, env))?;
        if let Some(e) = env {
            if !plan.envs().contains_key(e) {
                if pipeline.is_none() {
                    continue;
                }
                return Err(Failure::invalid(unknown_env(&plan, e)));
            }
        }
        let names: Vec<String> = match env {
            Some(_) => environment::used_by(&plan),
            None => plan.envs().keys().cloned().collect(),
        };
        let masker = pipe_runtime::secrets::masker_for(&plan, &secrets);
        let m = masker
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in names {
            let v = environment::validate(
                &plan,
                &project.root,
                &secrets,
                &ctx.git,
                std::slice::from_ref(&name),
            );
            for d in &v.diagnostics {
                eprintln!("{}", m.mask(&render(d, &v.sources)));
            }
            let Some(r) = v.resolved.first() else {
                continue;
            };
            checked += 1;
            let errors = v.diagnostics.iter().filter(|d| d.is_error()).count();
            let _ = writeln!(
                out,
                "{} env `{}` of `{}`: {}, {}{}",
                if errors > 0 { "✗" } else { "✓" },
                r.name,
                plan.pipeline,
                plural(r.vars.len(), "variable"),
                plural(r.secrets.len(), "secret"),
                if errors > 0 {
                    format!(" ({})", plural(errors, "problem"))
                } else {
                    String::new()
                }
            );
            failed |= !v.ok();
        }
    }
    if checked == 0 {
        return Err(Failure::invalid(match env {
            Some(e) => format!("no pipeline declares `env {e}`"),
            None => "no pipeline declares an `env` block".into(),
        }));
    }
    crate::print(&out)?;
    if failed {
        return Err(Failure::silent(INVALID));
    }
    Ok(())
}

fn unknown_env(plan: &Plan, e: &str) -> String {
    let known: Vec<&str> = plan.envs().keys().map(String::as_str).collect();
    let mut msg = format!("pipeline `{}` has no `env {e}`", plan.pipeline);
    if let Some(n) = pipe_lang::diagnostic::did_you_mean(e, known.iter().copied()) {
        let _ = write!(msg, "\n  help: did you mean `{n}`?");
    } else if !known.is_empty() {
        let _ = write!(msg, "\n  help: its envs: {}", known.join(", "));
    }
    msg
}

fn show(
    project: &Project,
    pipeline: Option<&str>,
    env: &str,
    ctx: &Context,
    args: &SecretArgs,
) -> Result<(), Failure> {
    let ctx = with_env(ctx, Some(env));
    let plan = match pipeline {
        Some(p) => super::plan_for(project, p, &ctx)?,
        None => {
            let mut found = None;
            for f in all_pipeline_files(project) {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                if text.contains(&format!("env {env}")) {
                    found = Some(super::plan_for(project, &f, &ctx)?);
                    break;
                }
            }
            found.ok_or_else(|| {
                Failure::invalid(format!(
                    "no pipeline under pipelines/ declares `env {env}` (name one: `pipe env show PIPELINE --env {env}`)"
                ))
            })?
        }
    };
    if !plan.envs().contains_key(env) {
        return Err(Failure::invalid(unknown_env(&plan, env)));
    }
    let secrets = load_secrets(project, args)?;
    let masker = pipe_runtime::secrets::masker_for(&plan, &secrets);
    let v = environment::validate(&plan, &project.root, &secrets, &ctx.git, &[env.to_string()]);
    let m = masker
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(r) = v.resolved.first() else {
        return Err(Failure::invalid(unknown_env(&plan, env)));
    };
    let mut out = format!("env `{}` of pipeline `{}`\n", r.name, plan.pipeline);
    let width = r
        .vars
        .keys()
        .chain(r.secrets.keys())
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    out.push_str("variables:\n");
    if r.vars.is_empty() {
        out.push_str("  (none)\n");
    }
    let vwidth = r
        .vars
        .values()
        .map(|(v, _)| m.mask(v).chars().count())
        .chain(std::iter::once(pipe_runtime::mask::REPLACEMENT.len()))
        .max()
        .unwrap_or(0);
    for (k, (val, origin)) in &r.vars {
        let _ = writeln!(out, "  {k:<width$} = {:<vwidth$}  # {origin}", m.mask(val));
    }
    out.push_str("secrets:\n");
    if r.secrets.is_empty() {
        out.push_str("  (none)\n");
    }
    for (k, origin) in &r.secrets {
        match origin {
            Some(o) => {
                let _ = writeln!(
                    out,
                    "  {k:<width$} = {:<vwidth$}  # {o}",
                    pipe_runtime::mask::REPLACEMENT
                );
            }
            None => {
                let _ = writeln!(out, "  {k:<width$}   (not set)");
            }
        }
    }
    crate::print(&m.mask(&out))?;
    report(&v, &m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_panic_message_is_masked() {
        const SECRET: &str = "panic-secret-4242";
        let plan_masker = Masker::shared();
        plan_masker.write().unwrap().add(SECRET).unwrap();
        let _ = LOADED.set((Arc::new(Secrets::default()), plan_masker));
        static SEEN: Mutex<String> = Mutex::new(String::new());
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            *SEEN.lock().unwrap() = panic_text(info);
        }));
        let r = std::panic::catch_unwind(|| {
            panic!("token {SECRET} was rejected");
        });
        std::panic::set_hook(prev);
        assert!(r.is_err());
        let seen = SEEN.lock().unwrap().clone();
        assert!(seen.contains("token *** was rejected"), "{seen}");
        assert!(!seen.contains(SECRET), "{seen}");
    }
}
