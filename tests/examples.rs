//! Everything shipped is checked: every `.pipe` file under pipelines/,
//! stdlib/ and examples/ passes `pipe check` with no diagnostics at all.

use std::process::Command;
use std::time::Duration;

use crate::common::{pipe_bin, repo_root, run_bounded};

fn pipe_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            pipe_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "pipe") {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_pipe_file_checks_clean() {
    let root = repo_root();
    let mut files = Vec::new();
    for d in ["pipelines", "stdlib", "examples"] {
        pipe_files(&root.join(d), &mut files);
    }
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the release pipeline and the stdlib, found {files:?}"
    );
    for f in files {
        let out = run_bounded(
            Command::new(pipe_bin())
                .arg("check")
                .arg(&f)
                .current_dir(&root),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} does not check:\n{err}",
            f.display()
        );
        assert!(
            err.ends_with("no problems\n"),
            "{} has warnings:\n{err}",
            f.display()
        );
    }
}
