//! `pipe resume [RUN]`: continues a run from the source snapshot stored with
//! it. Succeeded steps never run again; a step that started and never
//! finished ("in doubt") runs again only if it is idempotent, or with
//! `--rerun-in-doubt`. If the files changed since, it refuses unless
//! `--replan`. A lock keeps two resumes of one run apart.

use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use pipe_lang::lower::{lower, Context};
use pipe_lang::workspace::{Loader, Workspace};
use pipe_lang::{Plan, Value};

use super::run::{execute, ExecArgs};
use crate::diagnostics::emit;
use crate::exit::{Failure, INVALID};
use crate::project::Project;

pub fn run(
    project: &Project,
    run_arg: Option<&str>,
    rerun_in_doubt: bool,
    replan: bool,
    exec: &ExecArgs,
) -> Result<(), Failure> {
    let store = exec.state.open_existing(project)?;
    let fail = |e: pipe_runtime::StateError| Failure::invalid(e.to_string());
    let record = match run_arg {
        Some(a) => store.resolve_run(Some(a)).map_err(fail)?,
        None => store.latest_resumable().map_err(fail)?,
    };
    if record.status == "succeeded" {
        return Err(Failure::invalid(format!(
            "run {} already succeeded; there is nothing to resume",
            record.id
        )));
    }
    let _lock = store.lock_run(record.id).map_err(fail)?;
    // Holding the lock, no live pipe runs this run: whatever still carries its
    // token was left by a crash.
    pipe_runtime::scheduler::kill_leftovers(&store, record.id);
    super::gc::for_resume(
        pipe_runtime::scheduler::token_base(&store, record.id).trim_end_matches('/'),
    );
    let changed = changed_sources(project, &record);
    let plan = if changed.is_empty() {
        plan_from_snapshot(&record)?
    } else if replan {
        let plan = plan_from_files(project, &record)?;
        let sources = plan
            .sources()
            .files()
            .map(|(_, f)| (f.name.clone(), f.text.to_string()))
            .collect();
        store.replace_sources(record.id, &sources).map_err(fail)?;
        plan
    } else {
        return Err(Failure::invalid(format!(
            "the sources of run {} changed since it started:\n  {}\n  help: `pipe resume {} --replan` continues with the current files (succeeded steps are matched by id), or restore the files",
            record.id,
            changed.join("\n  "),
            record.id
        )));
    };
    let prior = store.steps(record.id).map_err(fail)?;
    let in_doubt: Vec<String> = prior
        .iter()
        .filter(|r| r.status == "running")
        .filter_map(|r| {
            let step = plan
                .steps()
                .iter()
                .chain(plan.handlers())
                .find(|s| s.id == r.step_id)?;
            (!step.idempotent).then(|| format!("{} (at {})", step.id, plan.location(step.span)))
        })
        .collect();
    if !in_doubt.is_empty() && !rerun_in_doubt {
        return Err(Failure::invalid(format!(
            "run {} has steps that started and never finished, and are not idempotent:\n  {}\n  help: check what they did, then `pipe resume {} --rerun-in-doubt` to run them again",
            record.id,
            in_doubt.join("\n  "),
            record.id
        )));
    }
    super::env::preflight(project, &plan, &context(&record).git, &exec.secrets)?;
    execute(project, &plan, &store, record.id, &prior, true, exec)
}

/// Project files of the snapshot that differ on disk now, with how.
fn changed_sources(project: &Project, record: &pipe_runtime::state::RunRecord) -> Vec<String> {
    record
        .sources
        .iter()
        .filter(|(name, _)| !name.starts_with("std/"))
        .filter_map(
            |(name, text)| match std::fs::read_to_string(project.root.join(name)) {
                Ok(now) if now == *text => None,
                Ok(now) => {
                    let (old, new) = (text.lines().count(), now.lines().count());
                    Some(format!("{name}: modified ({old} lines then, {new} now)"))
                }
                Err(_) => Some(format!("{name}: removed or unreadable")),
            },
        )
        .collect()
}

fn context(record: &pipe_runtime::state::RunRecord) -> Context {
    Context {
        git: Value::from_json(&record.context),
        params: record.params.clone(),
        target_env: record.env.clone(),
    }
}

/// Lowers the run's pipeline from the current files, with the run's context.
fn plan_from_files(
    project: &Project,
    record: &pipe_runtime::state::RunRecord,
) -> Result<Plan, Failure> {
    let paths: Vec<PathBuf> = record.roots.iter().map(|r| project.root.join(r)).collect();
    let ws = project.load(&paths)?;
    finish(&ws, record)
}

fn finish(ws: &Workspace, record: &pipe_runtime::state::RunRecord) -> Result<Plan, Failure> {
    if ws.diagnostics.iter().any(pipe_lang::Diagnostic::is_error) {
        emit(&ws.diagnostics, &ws.sources);
        return Err(Failure::silent(INVALID));
    }
    let Some((module, pl)) = ws.find_pipeline(&record.pipeline) else {
        return Err(Failure::invalid(format!(
            "run {}: its sources have no pipeline `{}`",
            record.id, record.pipeline
        )));
    };
    let (plan, diags) = lower(ws, module, pl, &context(record));
    emit(&diags, &ws.sources);
    plan.ok_or(Failure::silent(INVALID))
}

/// Lowers the run's pipeline again from its stored snapshot and context.
pub(crate) fn plan_from_snapshot(record: &pipe_runtime::state::RunRecord) -> Result<Plan, Failure> {
    let files: IndexMap<String, String> = record.sources.iter().cloned().collect();
    let mut roots = Vec::new();
    for r in &record.roots {
        let text = files.get(r).ok_or_else(|| {
            Failure::invalid(format!(
                "run {}: its snapshot lacks {r}; the state store is damaged",
                record.id
            ))
        })?;
        roots.push((r.clone(), text.clone()));
    }
    let ws = Workspace::load(roots, &mut SnapshotLoader { files: &files });
    finish(&ws, record)
}

/// Resolves imports the way the file-system loader does, from the snapshot.
struct SnapshotLoader<'a> {
    files: &'a IndexMap<String, String>,
}

impl Loader for SnapshotLoader<'_> {
    fn load(&mut self, from: &str, path: &str) -> Result<(String, String), String> {
        let base = Path::new(from).parent().unwrap_or(Path::new(""));
        let mut joined: PathBuf = normalize(&base.join(path));
        if joined.extension().is_none() {
            joined = joined.with_extension("pipe");
        }
        let name = joined.display().to_string();
        self.files
            .get(&name)
            .map(|t| (name.clone(), t.clone()))
            .ok_or_else(|| format!("`{name}` is not in the run's snapshot"))
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.iter().collect()
}
