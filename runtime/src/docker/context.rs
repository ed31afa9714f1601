//! Build contexts as tar archives: the context directory minus what its
//! `.dockerignore` excludes (Docker's rules: paths relative to the context,
//! `*`/`?`/`**` globs, `!` re-includes, the last matching line wins, a match on
//! a directory excludes everything under it), plus root filesystems for
//! `docker.import`.

use std::path::Path;

use globset::{Glob, GlobMatcher};

/// The parsed `.dockerignore` of a context.
pub struct Ignore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Result<Ignore, String> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pat = pat.trim_start_matches('/');
            let pat = pat.strip_prefix("./").unwrap_or(pat);
            let pat = pat.trim_end_matches('/');
            if pat.is_empty() {
                continue;
            }
            let glob = globset::GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .or_else(|_| Glob::new(&globset::escape(pat)))
                .map_err(|e| format!(".dockerignore line {}: {e}", n + 1))?;
            rules.push((glob.compile_matcher(), negate));
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (a `/`-separated path inside the context) is left out.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (glob, negate) in &self.rules {
            // A pattern that matches a parent directory covers the path too.
            let mut hit = glob.is_match(rel);
            let mut p = rel;
            while !hit {
                match p.rfind('/') {
                    Some(i) => {
                        p = &p[..i];
                        hit = glob.is_match(p);
                    }
                    None => break,
                }
            }
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }

    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, n)| *n)
    }
}

/// Tars `dir` for `POST /build`, honouring its `.dockerignore`. `extra` files
/// (name, bytes) are added at the root, e.g. a Dockerfile from outside the
/// context. Returns the archive and how many files it holds.
pub fn tar_context(dir: &Path, extra: &[(String, Vec<u8>)]) -> Result<(Vec<u8>, usize), String> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore { rules: Vec::new() },
        Err(e) => return Err(format!("cannot read {}/.dockerignore: {e}", dir.display())),
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut count = 0;
    add_dir(&mut b, dir, "", &ignore, &mut count)?;
    for (name, bytes) in extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice())
            .map_err(|e| format!("cannot add {name} to the build context: {e}"))?;
        count += 1;
    }
    let out = b
        .into_inner()
        .map_err(|e| format!("cannot finish the build context archive: {e}"))?;
    Ok((out, count))
}

fn add_dir(
    b: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    rel: &str,
    ignore: &Ignore,
    count: &mut usize,
) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = e.path();
        let ft = e
            .file_type()
            .map_err(|err| format!("cannot stat {}: {err}", path.display()))?;
        // The Dockerfile and .dockerignore always reach the daemon, as with the CLI.
        let always = rel.is_empty() && (name == ".dockerignore" || name == "Dockerfile");
        let excluded = !always && ignore.excluded(&r);
        if ft.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                b.append_dir(&r, &path)
                    .map_err(|err| format!("cannot add {}: {err}", path.display()))?;
            }
            add_dir(b, &path, &r, ignore, count)?;
        } else if !excluded {
            b.append_path_with_name(&path, &r)
                .map_err(|err| format!("cannot add {}: {err}", path.display()))?;
            *count += 1;
        }
    }
    Ok(())
}

/// A root filesystem for `docker.import`: a tarball as is, or a directory tarred
/// (symlinks kept as symlinks).
pub fn rootfs_tar(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_file() {
        return std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    }
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", path)
        .map_err(|e| format!("cannot archive {}: {e}", path.display()))?;
    b.into_inner()
        .map_err(|e| format!("cannot archive {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules_follow_docker() {
        let i =
            Ignore::parse("# comment\n/target\n*.log\n**/*.tmp\nsecrets/\n!secrets/public.txt\n")
                .unwrap();
        assert!(i.excluded("target"));
        assert!(i.excluded("target/debug/x"));
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("sub/a.log"), "`*` does not cross directories");
        assert!(i.excluded("sub/deep/x.tmp"));
        assert!(i.excluded("secrets/key"));
        assert!(!i.excluded("secrets/public.txt"));
        assert!(!i.excluded("src/main.rs"));
    }

    #[test]
    fn context_tar_leaves_out_ignored_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".dockerignore"), "*.secret\nbig\n").unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(d.path().join("a.txt"), "a").unwrap();
        std::fs::write(d.path().join("k.secret"), "s").unwrap();
        std::fs::create_dir(d.path().join("big")).unwrap();
        std::fs::write(d.path().join("big/blob"), "b").unwrap();
        let (tar, n) = tar_context(d.path(), &[]).unwrap();
        let mut names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "a.txt"]);
        assert_eq!(n, 3);
    }
}
