//! `pipe fmt`: rewrites files in place, `--check` only lists them, a file
//! with a syntax error is reported and left alone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{pipe_bin, run_bounded};

const MESSY: &str = "pipeline p { # the pipeline\n  param v: string = \"1\"\n  param services: list<string> = [\"a\"]\n  stage s { step a { run = \"echo ${v}\"  timeout = 5s } }\n}\n";
const TIDY: &str = "pipeline p {  # the pipeline\n  param v: string              = \"1\"\n  param services: list<string> = [\"a\"]\n  stage s {\n    step a {\n      run     = \"echo ${v}\"\n      timeout = 5s\n    }\n  }\n}\n";

fn pipe(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = run_bounded(
        Command::new(pipe_bin()).args(args).current_dir(dir),
        Duration::from_mins(1),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    dir
}

#[test]
fn check_lists_files_that_would_change_and_changes_nothing() {
    let dir = project(&[("pipelines/p.pipe", MESSY), ("pipelines/ok.pipe", TIDY)]);
    let got = pipe(dir.path(), &["fmt", "--check"]);
    assert_eq!(
        got,
        (
            1,
            "pipelines/p.pipe\n".into(),
            "would reformat 1 file, 1 unchanged\n".into()
        )
    );
    let text = std::fs::read_to_string(dir.path().join("pipelines/p.pipe")).expect("read");
    assert_eq!(text, MESSY);
}

#[test]
fn rewrites_in_place_then_check_passes() {
    let dir = project(&[("pipelines/p.pipe", MESSY)]);
    let got = pipe(dir.path(), &["fmt"]);
    assert_eq!(
        got,
        (0, String::new(), "reformatted 1 file, 0 unchanged\n".into())
    );
    let text = std::fs::read_to_string(dir.path().join("pipelines/p.pipe")).expect("read");
    assert_eq!(text, TIDY);
    let again = pipe(dir.path(), &["fmt", "--check", "pipelines/p.pipe"]);
    assert_eq!(
        again,
        (
            0,
            String::new(),
            "would reformat 0 files, 1 unchanged\n".into()
        )
    );
}

#[test]
fn syntax_error_is_reported_and_the_file_left_alone() {
    let bad = "pipeline p {\n  stage s { step a { run: \"x\" } }\n}\n";
    let dir = project(&[("pipelines/bad.pipe", bad), ("pipelines/p.pipe", MESSY)]);
    let (code, stdout, stderr) = pipe(dir.path(), &["fmt"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("pipe::syntax"), "{stderr}");
    assert!(stderr.contains("pipelines/bad.pipe:2:"), "{stderr}");
    assert!(
        stderr.ends_with("reformatted 1 file, 0 unchanged, 1 with errors left as they are\n"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(dir.path().join("pipelines/bad.pipe")).expect("read");
    assert_eq!(text, bad);
    let fixed = std::fs::read_to_string(dir.path().join("pipelines/p.pipe")).expect("read");
    assert_eq!(fixed, TIDY);
}

#[test]
fn shipped_files_are_formatted() {
    let (code, stdout, stderr) = pipe(
        &crate::common::repo_root(),
        &["fmt", "--check", "pipelines", "stdlib", "examples"],
    );
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
}
