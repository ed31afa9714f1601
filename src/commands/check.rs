//! `pipe check`: parse and analyze files, print every diagnostic.

use std::path::PathBuf;

use pipe_lang::lower::{check, Context};

use crate::diagnostics::{emit, plural};
use crate::exit::{Failure, INVALID};
use crate::project::Project;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub fn run(
    project: &Project,
    paths: &[PathBuf],
    format: Format,
    ctx: &Context,
) -> Result<(), Failure> {
    let files: Vec<PathBuf> = if paths.is_empty() {
        let f = Project::pipe_files(&project.pipelines_dir());
        if f.is_empty() {
            return Err(Failure::invalid(format!(
                "no .pipe files under {}",
                project.pipelines_dir().display()
            )));
        }
        f
    } else {
        let mut out = Vec::new();
        for p in paths {
            if p.is_dir() {
                out.extend(Project::pipe_files(p));
            } else {
                out.push(p.clone());
            }
        }
        out
    };
    let ws = project.load(&files)?;
    let diags = check(&ws, ctx);
    let errors = diags.iter().filter(|d| d.is_error()).count();
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> =
                diags.iter().map(|d| d.to_json(&ws.sources)).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
        }
        Format::Human => {
            let (e, w) = emit(&diags, &ws.sources);
            let files = plural(files.len(), "file");
            if e == 0 && w == 0 {
                eprintln!("checked {files}: no problems");
            } else {
                eprintln!(
                    "checked {files}: {}, {}",
                    plural(e, "error"),
                    plural(w, "warning")
                );
            }
        }
    }
    if errors > 0 {
        Err(Failure::silent(INVALID))
    } else {
        Ok(())
    }
}
