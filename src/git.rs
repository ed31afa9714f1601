//! The release context from git: sha, branch, tag, dirtiness and commit time,
//! read with the git CLI. Outside a repository every field is null.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use indexmap::IndexMap;
use pipe_lang::Value;

/// Starts `git -C root args...`; [`finish`] collects its output. The
/// commands of [`context`] run side by side: each is a process start, and
/// `pipe graph` pays for them before anything else.
fn spawn(root: &Path, args: &[&str]) -> Option<Child> {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// The trimmed stdout of a successful command; `None` on failure or no output.
fn finish(child: Option<Child>) -> Option<String> {
    let out = child?.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The `git` map visible to expressions. `git_ref` overrides HEAD.
pub fn context(root: &Path, git_ref: Option<&str>) -> Value {
    let rev = format!("{}^{{commit}}", git_ref.unwrap_or("HEAD"));
    // Four processes at once instead of five in a row.
    let commit = spawn(root, &["show", "-s", "--format=%H%n%cI", &rev, "--"]);
    let branch = match git_ref {
        Some(r) => spawn(root, &["show-ref", "--verify", &format!("refs/heads/{r}")]),
        None => spawn(root, &["symbolic-ref", "--short", "-q", "HEAD"]),
    };
    let tag = spawn(root, &["describe", "--tags", "--exact-match", &rev]);
    let status = git_ref
        .is_none()
        .then(|| spawn(root, &["status", "--porcelain", "--untracked-files=no"]))
        .flatten();
    let commit = finish(commit);
    let (branch, tag, status) = (finish(branch), finish(tag), finish(status));
    let (sha, commit_time) = match commit.as_deref().and_then(|c| c.split_once('\n')) {
        Some((sha, time)) => (Some(sha.to_string()), Some(time.to_string())),
        None => (None, None),
    };
    let branch = match git_ref {
        Some(r) => branch.map(|_| r.to_string()),
        None => branch,
    };
    let opt = |v: Option<String>| v.map_or(Value::Null, Value::Str);
    let found = sha.is_some();
    let mut m = IndexMap::new();
    m.insert(
        "short_sha".to_string(),
        opt(sha.as_ref().map(|s| s.chars().take(7).collect())),
    );
    m.insert("sha".to_string(), opt(sha));
    m.insert("branch".to_string(), opt(branch));
    m.insert("tag".to_string(), opt(tag.filter(|_| found)));
    m.insert("dirty".to_string(), Value::Bool(found && status.is_some()));
    m.insert("commit_time".to_string(), opt(commit_time));
    Value::Map(m)
}
