//! The book under docs/ is tested like code: the tutorial's commands run and
//! print what the page shows, every `pipe` example passes `pipe check`, the
//! generated references (CLI, standard library) are current, every page is in
//! SUMMARY.md, and every internal link and anchor resolves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{pipe_bin, repo_root, run_bounded};

fn docs() -> PathBuf {
    repo_root().join("docs")
}

/// Every Markdown file under docs/, as a path relative to docs/.
fn pages() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![docs()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read docs").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p.strip_prefix(docs()).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(docs().join(rel)).expect("read page")
}

/// A fenced code block: its info string, body and the line it starts on.
struct Block {
    lang: String,
    body: String,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match &mut open {
            None if fence => {
                open = Some(Block {
                    lang: line.trim_start().trim_start_matches('`').trim().to_string(),
                    body: String::new(),
                    line: n + 1,
                });
            }
            Some(_) if fence && line.trim() == "```" => out.extend(open.take()),
            Some(b) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Text outside fenced blocks, with inline code spans blanked.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if !fenced {
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                }
                out.push(if in_code || c == '`' { ' ' } else { c });
            }
        }
        out.push('\n');
    }
    out
}

/// Does `actual` match `expected`, line by line, where `[..]` in an expected
/// line stands for any text? Trailing spaces are ignored.
fn matches(expected: &str, actual: &str) -> bool {
    let e: Vec<&str> = expected.lines().map(str::trim_end).collect();
    let a: Vec<&str> = actual.lines().map(str::trim_end).collect();
    e.len() == a.len()
        && e.iter().zip(&a).all(|(e, a)| {
            let parts: Vec<&str> = e.split("[..]").collect();
            let pat = parts
                .iter()
                .map(|p| regex::escape(p))
                .collect::<Vec<_>>()
                .join(".*");
            regex::Regex::new(&format!("^{pat}$")).unwrap().is_match(a)
        })
}

#[test]
fn tutorial_commands_run_and_print_what_the_page_shows() {
    let text = read(Path::new("tutorial.md"));
    let all = blocks(&text);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cwd = dir.path().to_path_buf();
    let cwd_file = dir.path().join(".cwd");
    let bin_dir = pipe_bin().parent().unwrap().to_path_buf();
    let mut ran = 0;
    for (i, b) in all.iter().enumerate() {
        if b.lang != "sh" {
            continue;
        }
        let script = format!("exec 2>&1\n{}\npwd > '{}'\n", b.body, cwd_file.display());
        let out = run_bounded(
            Command::new("bash")
                .args(["-eu", "-c", &script])
                .current_dir(&cwd)
                .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
                .env_remove("PIPE_STATE_DIR")
                .env_remove("GITHUB_STEP_SUMMARY")
                .env_remove("GITHUB_RUN_ID"),
            Duration::from_mins(1),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "docs/tutorial.md:{}: the block failed ({:?}):\n{}\n--- output\n{stdout}",
            b.line,
            out.status.code(),
            b.body
        );
        cwd = PathBuf::from(
            std::fs::read_to_string(&cwd_file)
                .expect("cwd")
                .trim()
                .to_string(),
        );
        if let Some(next) = all.get(i + 1).filter(|n| n.lang == "text") {
            assert!(
                matches(&next.body, &stdout),
                "docs/tutorial.md:{}: the page shows\n{}\nbut the commands printed\n{stdout}",
                next.line,
                next.body
            );
        }
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} command blocks in the tutorial");
}

#[test]
fn every_pipe_example_in_the_docs_is_accepted_by_pipe_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    let mut reference = String::new();
    for page in pages() {
        for b in blocks(&read(&page)) {
            if b.lang != "pipe" {
                continue;
            }
            let file = dir.path().join(format!("example{checked}.pipe"));
            std::fs::write(&file, &b.body).expect("write");
            let out = run_bounded(
                Command::new(pipe_bin())
                    .arg("check")
                    .arg(&file)
                    .current_dir(dir.path()),
                Duration::from_secs(30),
            );
            assert!(
                out.status.success(),
                "docs/{}:{}: `pipe check` rejects this example:\n{}\n{}",
                page.display(),
                b.line,
                b.body,
                String::from_utf8_lossy(&out.stderr)
            );
            if page == Path::new("reference.md") {
                reference.push_str(&b.body);
            }
            checked += 1;
        }
    }
    // The reference has an example of every construct of the grammar.
    for construct in [
        "import \"std/",
        " as ",
        "pipeline ",
        "param ",
        "env ",
        "stage ",
        "needs",
        "when",
        "required",
        "step ",
        "step \"",
        " = http.",
        "template ",
        "##",
        "uses",
        "retry {",
        "cache {",
        "service ",
        "gate ",
        "chaos ",
        "fault ",
        "for ",
        "on failure",
        "on always",
        "steps.",
        "secrets.",
        "git.",
        "'",
        "??",
        "=~",
        "&&",
        "||",
        "timeout",
        "estimate",
        "on_failure",
        "concurrency",
        "idempotent",
        "outputs",
        "image",
        "shell",
        "1h30m",
        "list<",
        "map<",
    ] {
        assert!(
            reference.contains(construct),
            "docs/reference.md has no example using `{construct}`"
        );
    }
    assert!(checked >= 20, "only {checked} examples");
}

/// Fails with the first line that differs, not both whole pages.
fn assert_current(page: &str, have: &str, want: &str, regenerate: &str) {
    if have == want {
        return;
    }
    let lines = have.lines().count().max(want.lines().count()) + 1;
    let (n, (h, w)) = have
        .lines()
        .chain(std::iter::repeat("<end of file>"))
        .zip(want.lines().chain(std::iter::repeat("<end of file>")))
        .take(lines)
        .enumerate()
        .find(|(_, (h, w))| h != w)
        .unwrap_or((0, ("", "")));
    panic!(
        "docs/{page} is stale at line {}:\n  page:      {h}\n  generated: {w}\nregenerate it with `{regenerate}`",
        n + 1
    );
}

fn pipe_doc(args: &[&str]) -> String {
    let out = run_bounded(
        Command::new(pipe_bin()).arg("doc").args(args),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "pipe doc {args:?} failed");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_cli_reference_is_generated_and_current() {
    let now = pipe_doc(&["--cli"]);
    assert_current(
        "cli.md",
        &read(Path::new("cli.md")),
        &now,
        "cargo run -- doc --cli > docs/cli.md",
    );
    // Every subcommand of the binary is in it.
    for cmd in [
        "check",
        "fmt",
        "lsp",
        "list",
        "graph",
        "run",
        "resume",
        "gc",
        "runs",
        "status",
        "logs",
        "report",
        "doc",
        "completions",
    ] {
        assert!(now.contains(&format!("## `pipe {cmd}`")), "{cmd}");
    }
}

#[test]
fn the_stdlib_reference_is_generated_from_the_modules_and_current() {
    assert_current(
        "stdlib.md",
        &read(Path::new("stdlib.md")),
        &pipe_doc(&["--stdlib"]),
        "cargo run -- doc --stdlib > docs/stdlib.md",
    );
    let mut modules = 0;
    for e in std::fs::read_dir(repo_root().join("stdlib"))
        .expect("stdlib")
        .flatten()
    {
        let p = e.path();
        let Some(name) = p.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let page = format!("std/{name}.md");
        let text = std::fs::read_to_string(docs().join(&page)).unwrap_or_default();
        let now = pipe_doc(&[&format!("std/{name}")]);
        assert_current(
            &page,
            &text,
            &now,
            &format!("cargo run -- doc std/{name} > docs/{page}"),
        );
        // Each template of the module has its section and its documentation.
        let source = std::fs::read_to_string(&p).expect("module");
        for line in source.lines() {
            if let Some(rest) = line.strip_prefix("template ") {
                let t = rest.split('(').next().unwrap().trim();
                assert!(now.contains(&format!("## {name}.{t}\n")), "{name}.{t}");
            }
        }
        assert!(
            !now.contains("(undocumented)"),
            "std/{name} has an undocumented template"
        );
        modules += 1;
    }
    assert!(modules >= 7);
    let out = run_bounded(
        Command::new(pipe_bin()).args(["doc", "std/dockr"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no standard library module `std/dockr`\n  help: did you mean `std/docker`?\n"
    );
}

/// The anchor mdBook gives a heading: lower case, spaces to `-`, only
/// letters, digits, `-` and `_` kept (from the rendered text: no backticks,
/// link targets or emphasis).
fn slug(heading: &str) -> String {
    let link = regex::Regex::new(r"\[([^\]]*)\]\([^)]*\)").unwrap();
    let text = link.replace_all(heading, "$1");
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The anchors of a page: its headings' slugs (repeats get `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let Some(h) = line.strip_prefix('#') else {
            continue;
        };
        let h = h.trim_start_matches('#');
        if !h.starts_with(' ') {
            continue;
        }
        let s = slug(h.trim());
        let n = seen.entry(s.clone()).or_insert(0);
        out.insert(if *n == 0 {
            s.clone()
        } else {
            format!("{s}-{n}")
        });
        *n += 1;
    }
    out
}

#[test]
fn every_page_is_in_the_summary_and_every_internal_link_resolves() {
    let link = regex::Regex::new(r"\]\(([^)\s]*)\)").unwrap();
    let include = regex::Regex::new(r"\{\{#include ([^:}]+)(?::(\w+))?\}\}").unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let base = page.parent().unwrap_or(Path::new(""));
        for c in link.captures_iter(&prose(&text)) {
            let target = &c[1];
            if target.is_empty()
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let dest = if file.is_empty() {
                page.clone()
            } else {
                base.join(file)
            };
            let full = docs().join(&dest);
            if !full.is_file() {
                problems.push(format!(
                    "docs/{}: link to a missing file: {target}",
                    page.display()
                ));
                continue;
            }
            if !anchor.is_empty() && dest.extension().is_some_and(|e| e == "md") {
                let have = anchors(&std::fs::read_to_string(&full).unwrap_or_default());
                if !have.contains(anchor) {
                    problems.push(format!(
                        "docs/{}: no heading `#{anchor}` in docs/{} (it has: {})",
                        page.display(),
                        dest.display(),
                        have.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        for c in include.captures_iter(&text) {
            let path = docs().join(base).join(&c[1]);
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            if body.is_empty() {
                problems.push(format!(
                    "docs/{}: include of a missing file {}",
                    page.display(),
                    &c[1]
                ));
            } else if let Some(a) = c.get(2) {
                if !body.contains(&format!("ANCHOR: {}", a.as_str()))
                    || !body.contains(&format!("ANCHOR_END: {}", a.as_str()))
                {
                    problems.push(format!(
                        "docs/{}: {} has no anchor `{}`",
                        page.display(),
                        &c[1],
                        a.as_str()
                    ));
                }
            }
        }
    }
    // Every page is a chapter (a page outside SUMMARY.md is not in the book).
    let summary = read(Path::new("SUMMARY.md"));
    let listed: BTreeSet<String> = link
        .captures_iter(&summary)
        .map(|c| c[1].to_string())
        .collect();
    for page in pages() {
        let p = page.display().to_string();
        if p != "SUMMARY.md" && !listed.contains(&p) {
            problems.push(format!(
                "docs/{p} is not in docs/SUMMARY.md: add it as a chapter (a draft entry such as `- [Gates and approvals]()` takes the path once the page exists)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 30, "only {checked} links checked");
}

#[test]
fn slugs_follow_mdbook() {
    assert_eq!(slug("`pipe check`"), "pipe-check");
    assert_eq!(slug("Secrets and masking"), "secrets-and-masking");
    assert_eq!(slug("std/docker"), "stddocker");
    assert_eq!(slug("1. A first pipeline"), "1-a-first-pipeline");
    assert_eq!(slug("See [the grammar](GRAMMAR.md)"), "see-the-grammar");
    let a = anchors("# Title\n## Same\n## Same\n```\n# not a heading\n```\n");
    assert_eq!(
        a.into_iter().collect::<Vec<_>>(),
        ["same", "same-1", "title"]
    );
}
