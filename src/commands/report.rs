//! `pipe report [RUN]`: the report of a recorded run as a self-contained HTML
//! page (`--html FILE`), a Markdown summary (`--markdown`, also appended to
//! `$GITHUB_STEP_SUMMARY` when set) or JSON (`--format json`).

use std::io::Write as _;
use std::path::PathBuf;

use super::run::StateArgs;
use crate::exit::Failure;
use crate::project::Project;
use crate::report::{html, markdown, model};

/// What `pipe report` prints on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The run id (default: the latest run).
    pub run: Option<String>,
    /// Write the HTML report to this file (one self-contained page).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Print the Markdown summary; appended to $GITHUB_STEP_SUMMARY too when that is set.
    #[arg(long, conflicts_with = "format")]
    pub markdown: bool,
    /// Print the report in this format (default: markdown, unless --html is given).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    #[command(flatten)]
    pub state: StateArgs,
}

pub fn run(project: &Project, args: &ReportArgs) -> Result<(), Failure> {
    let store = args.state.open_existing(project)?;
    let fail = |e: pipe_runtime::StateError| Failure::invalid(e.to_string());
    let record = store.resolve_run(args.run.as_deref()).map_err(fail)?;
    let plan = super::resume::plan_from_snapshot(&record)?;
    let records = store.steps(record.id).map_err(fail)?;
    let history = store.history(record.id).map_err(fail)?;
    let gates = pipe_runtime::gate::gates_of_run(&store, record.id).map_err(fail)?;
    let report = model::build(
        &store,
        &record,
        &plan,
        &records,
        &history,
        &gates,
        pipe_runtime::state::now_ms(),
    );
    if let Some(path) = &args.html {
        let page = html::render(&report, &html::dag_svg(&report, &plan));
        std::fs::write(path, page)
            .map_err(|e| Failure::invalid(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    // Markdown when asked for, or when nothing else was.
    let format = if args.markdown || (args.format.is_none() && args.html.is_none()) {
        Some(Format::Markdown)
    } else {
        args.format
    };
    match format {
        None => Ok(()),
        Some(Format::Json) => {
            let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
            s.push('\n');
            crate::print(&s)
        }
        Some(Format::Markdown) => {
            let links = markdown::Links {
                html: args.html.as_ref().map(|p| p.display().to_string()),
                ci_run: markdown::Links::github_run(),
            };
            let md = markdown::render(&report, &links);
            append_step_summary(&md)?;
            crate::print(&md)
        }
    }
}

/// Appends to the file GitHub Actions names in `$GITHUB_STEP_SUMMARY`.
fn append_step_summary(md: &str) -> Result<(), Failure> {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| {
            Failure::invalid(format!(
                "cannot append to $GITHUB_STEP_SUMMARY ({}): {e}",
                PathBuf::from(&path).display()
            ))
        })?;
    f.write_all(md.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .map_err(Failure::from)
}
