//! `pipe fmt`: rewrite `.pipe` files in the canonical layout of
//! [`pipe_lang::format`], or with `--check` only list those that would change.

use std::path::PathBuf;

use pipe_lang::{format, parser, SourceMap};

use crate::diagnostics::{emit, plural};
use crate::exit::{Failure, INVALID, RUN_FAILED};
use crate::project::{read_source, Project};

pub fn run(project: &Project, paths: &[PathBuf], check: bool) -> Result<(), Failure> {
    let files: Vec<PathBuf> = if paths.is_empty() {
        Project::pipe_files(&project.pipelines_dir())
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
    if files.is_empty() {
        return Err(Failure::invalid("no .pipe files to format"));
    }
    let mut changed = 0;
    let mut invalid = 0;
    for path in &files {
        let name = project.display_name(path);
        let text = match read_source(path) {
            Ok(t) => t,
            Err(f) => {
                eprintln!("error: {}", f.message.unwrap_or_default());
                invalid += 1;
                continue;
            }
        };
        let mut sources = SourceMap::new();
        let file = sources.add(name.clone(), text.as_str());
        let module = match parser::parse(file, &text) {
            Ok(m) => m,
            Err(diags) => {
                emit(&diags, &sources);
                invalid += 1;
                continue;
            }
        };
        let formatted = format::format_module(&module, &text);
        // The formatter must never change what a file means: refuse to write
        // rather than trust it blindly.
        let same = parser::parse(file, &formatted).is_ok_and(|m| format::same_syntax(&module, &m));
        if !same {
            eprintln!("error: {name}: formatting would change its meaning; left as it is (a bug in pipe fmt)");
            invalid += 1;
            continue;
        }
        if formatted == text {
            continue;
        }
        changed += 1;
        if check {
            println!("{name}");
        } else {
            std::fs::write(path, formatted)
                .map_err(|e| Failure::invalid(format!("cannot write {name}: {e}")))?;
        }
    }
    let verb = if check {
        "would reformat"
    } else {
        "reformatted"
    };
    eprintln!(
        "{verb} {}, {} unchanged{}",
        plural(changed, "file"),
        files.len() - changed - invalid,
        if invalid > 0 {
            format!(", {invalid} with errors left as they are")
        } else {
            String::new()
        }
    );
    if invalid > 0 {
        Err(Failure::silent(INVALID))
    } else if check && changed > 0 {
        Err(Failure::silent(RUN_FAILED))
    } else {
        Ok(())
    }
}
