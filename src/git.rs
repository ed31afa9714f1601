//! The release context from git: sha, branch, tag, dirtiness and commit time,
//! read with the git CLI. Outside a repository every field is null.

use std::path::Path;
use std::process::Command;

use indexmap::IndexMap;
use pipe_lang::Value;

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The `git` map visible to expressions. `git_ref` overrides HEAD.
pub fn context(root: &Path, git_ref: Option<&str>) -> Value {
    let rev = git_ref.unwrap_or("HEAD");
    let sha = git(
        root,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    );
    let opt = |v: Option<String>| v.map_or(Value::Null, Value::Str);
    let mut m = IndexMap::new();
    m.insert(
        "short_sha".to_string(),
        opt(sha.as_ref().map(|s| s.chars().take(7).collect())),
    );
    m.insert("sha".to_string(), opt(sha.clone()));
    let branch = match git_ref {
        Some(r) if git(root, &["show-ref", "--verify", &format!("refs/heads/{r}")]).is_some() => {
            Some(r.to_string())
        }
        Some(_) => None,
        None => git(root, &["symbolic-ref", "--short", "-q", "HEAD"]),
    };
    m.insert("branch".to_string(), opt(branch));
    let tag = sha
        .as_ref()
        .and_then(|s| git(root, &["describe", "--tags", "--exact-match", s]));
    m.insert("tag".to_string(), opt(tag));
    let dirty = sha.is_some()
        && git_ref.is_none()
        && git(root, &["status", "--porcelain", "--untracked-files=no"]).is_some();
    m.insert("dirty".to_string(), Value::Bool(dirty));
    m.insert(
        "commit_time".to_string(),
        opt(sha
            .as_ref()
            .and_then(|s| git(root, &["show", "-s", "--format=%cI", s]))),
    );
    Value::Map(m)
}
