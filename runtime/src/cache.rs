//! Step caching: a step with `cache = true` (or `cache { key = ... inputs = [...] }`)
//! whose command, environment, key and input files hash to the key of a
//! recorded success is not run; its outputs are restored from that success.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Directories never hashed as inputs.
const SKIP_DIRS: &[&str] = &[".git", ".pipe", "target", "node_modules"];

/// What went into a cache key, for `--explain-cache`.
#[derive(Clone, Debug)]
pub struct CacheKey {
    pub key: String,
    pub files: usize,
}

/// Hashes everything that decides a step's result.
pub fn compute(
    root: &Path,
    step_id: &str,
    command: Option<&str>,
    env: &[(String, String)],
    user_key: Option<&str>,
    inputs: &[String],
) -> Result<CacheKey, String> {
    let mut h = Sha256::new();
    let mut field = |tag: &str, v: &[u8]| {
        h.update(tag.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    };
    field("step", step_id.as_bytes());
    field("command", command.unwrap_or("").as_bytes());
    let mut env: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("PIPE_"))
        .collect();
    env.sort();
    for (k, v) in env {
        field("env", k.as_bytes());
        field("val", v.as_bytes());
    }
    field("key", user_key.unwrap_or("").as_bytes());
    let mut files = Vec::new();
    for pattern in inputs {
        let re = glob_regex(pattern)?;
        let before = files.len();
        walk(root, root, &re, &mut files);
        if files.len() == before {
            return Err(format!("cache input `{pattern}` matches no file"));
        }
    }
    files.sort();
    files.dedup();
    for f in &files {
        let bytes = std::fs::read(root.join(f)).map_err(|e| format!("cache input {f}: {e}"))?;
        field("file", f.as_bytes());
        field("content", &Sha256::digest(&bytes));
    }
    let key = h
        .finalize()
        .iter()
        .take(16)
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
    Ok(CacheKey {
        key,
        files: files.len(),
    })
}

/// `src/**/*.rs`-style globs: `**` spans directories, `*` and `?` do not.
fn glob_regex(pattern: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut chars = pattern.trim_start_matches("./").chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("cache input `{pattern}`: {e}"))
}

fn walk(root: &Path, dir: &Path, re: &regex::Regex, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(rel) = p.strip_prefix(root) else {
            continue;
        };
        let rel = rel.display().to_string();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if !SKIP_DIRS.contains(&e.file_name().to_string_lossy().as_ref()) {
                walk(root, &p, re, out);
            }
        } else if ft.is_file() && re.is_match(&rel) {
            out.push(rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shells() {
        let re = glob_regex("src/**/*.rs").unwrap();
        assert!(re.is_match("src/main.rs"));
        assert!(re.is_match("src/a/b/c.rs"));
        assert!(!re.is_match("srcx/main.rs"));
        assert!(!re.is_match("src/main.rsx"));
        assert!(glob_regex("src/**").unwrap().is_match("src/a/b"));
    }

    #[test]
    fn key_changes_with_input_content_and_command() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.txt"), "one").unwrap();
        let inputs = vec!["src/**".to_string()];
        let k1 = compute(dir.path(), "s.a", Some("make"), &[], None, &inputs).unwrap();
        let k2 = compute(dir.path(), "s.a", Some("make"), &[], None, &inputs).unwrap();
        assert_eq!(k1.key, k2.key);
        assert_eq!(k1.files, 1);
        std::fs::write(dir.path().join("src/a.txt"), "two").unwrap();
        let k3 = compute(dir.path(), "s.a", Some("make"), &[], None, &inputs).unwrap();
        assert_ne!(k1.key, k3.key);
        let k4 = compute(dir.path(), "s.a", Some("make all"), &[], None, &inputs).unwrap();
        assert_ne!(k3.key, k4.key);
        let missing = compute(dir.path(), "s.a", None, &[], None, &["nope/*".into()]);
        assert!(missing.unwrap_err().contains("matches no file"));
    }
}
