//! What every shell attempt needs from the file system, looked up once per
//! process instead of at every spawn: the shell's executable and the run's
//! log directory.
//!
//! Spawning a bare name (`sh`) makes `posix_spawnp` try `execve` in each
//! `PATH` directory until one succeeds: with `PATH` entries before `/usr/bin`
//! (`~/.cargo/bin`, pyenv shims...), every step paid several failed
//! `execve` calls, more kernel time than the shell's own start
//! (runtime/bench/README.md). The lookup below follows `execvp`'s rules (the
//! first directory holding an executable regular file of that name) and is
//! kept per (name, `PATH`) pair, so a step whose `env` sets its own `PATH`
//! still gets the shell that `PATH` names.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};

type Key = (OsString, OsString);

fn cache() -> std::sync::MutexGuard<'static, HashMap<Key, Option<PathBuf>>> {
    static CACHE: LazyLock<Mutex<HashMap<Key, Option<PathBuf>>>> = LazyLock::new(Default::default);
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The absolute path `execvp` would run for `name` with this `PATH`, or
/// `None` to leave the lookup to the spawn: a name with a `/`, no `PATH`,
/// nothing found, or a relative `PATH` entry met first (it depends on the
/// step's working directory).
pub(super) fn resolve(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let key = (OsString::from(name), path.to_os_string());
    if let Some(hit) = cache().get(&key) {
        return hit.clone();
    }
    let found = lookup(name, path);
    cache().insert(key, found.clone());
    found
}

/// Drops a cached lookup whose file went away.
pub(super) fn forget(name: &str, path: Option<&OsStr>) {
    if let Some(path) = path {
        cache().remove(&(OsString::from(name), path.to_os_string()));
    }
}

fn lookup(name: &str, path: &OsStr) -> Option<PathBuf> {
    for dir in std::env::split_paths(path) {
        if dir.as_os_str().is_empty() || dir.is_relative() {
            return None;
        }
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file())
        && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// `create_dir_all` for a run's log directory, once per directory and
/// process: every attempt of every step asked for the same one (a `mkdir`
/// and a `stat` per step). A directory removed while the run goes on is not
/// made again; the attempt then fails to create its log or outputs file,
/// with the path in the error.
///
/// Returns whether this process made the directory: nothing older than this
/// process can be in it then, so an attempt need not remove a stale
/// `$PIPE_OUTPUT` file that a crashed pipe left (an `unlink` per step).
pub(super) fn create_dir_once(dir: &Path) -> std::io::Result<bool> {
    static MADE: LazyLock<Mutex<HashMap<PathBuf, bool>>> = LazyLock::new(Default::default);
    if let Some(&fresh) = MADE.lock().unwrap_or_else(PoisonError::into_inner).get(dir) {
        return Ok(fresh);
    }
    // Only this run's pipe writes in its log directory (the run is locked),
    // so nothing can make it between the check and the creation.
    let fresh = !dir.is_dir();
    std::fs::create_dir_all(dir)?;
    MADE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(dir.to_path_buf(), fresh);
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn exe(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn first_executable_file_in_path_order() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).unwrap();
        }
        exe(&a, "xsh", 0o644); // not executable: skipped, as execvp does
        std::fs::create_dir(b.join("ysh")).unwrap(); // a directory: skipped
        let want = exe(&c, "xsh", 0o755);
        exe(&c, "ysh", 0o755);
        let path = std::env::join_paths([&a, &b, &c]).unwrap();
        assert_eq!(resolve("xsh", Some(&path)), Some(want.clone()));
        assert_eq!(resolve("ysh", Some(&path)), Some(c.join("ysh")));
        assert_eq!(resolve("zsh-none", Some(&path)), None);
        // Another PATH is another lookup.
        let only_a = std::env::join_paths([&a]).unwrap();
        assert_eq!(resolve("xsh", Some(&only_a)), None);
        // Cached until forgotten.
        std::fs::remove_file(&want).unwrap();
        assert_eq!(resolve("xsh", Some(&path)), Some(want));
        forget("xsh", Some(&path));
        assert_eq!(resolve("xsh", Some(&path)), None);
    }

    #[test]
    fn left_to_the_spawn() {
        let t = tempfile::tempdir().unwrap();
        exe(t.path(), "rsh", 0o755);
        let path = std::env::join_paths([Path::new("rel"), t.path()]).unwrap();
        assert_eq!(resolve("rsh", Some(&path)), None, "relative entry first");
        let empty_first = OsString::from(format!(":{}", t.path().display()));
        assert_eq!(
            resolve("rsh", Some(&empty_first)),
            None,
            "empty entry is the cwd"
        );
        assert_eq!(resolve("/bin/sh", Some(OsStr::new("/usr/bin"))), None);
        assert_eq!(resolve("rsh", None), None);
    }

    #[test]
    fn a_directory_is_fresh_only_when_this_process_made_it() {
        let t = tempfile::tempdir().unwrap();
        let made = t.path().join("runs/7");
        assert!(create_dir_once(&made).unwrap(), "made here, parents too");
        assert!(made.is_dir());
        assert!(create_dir_once(&made).unwrap(), "still this process's");
        let old = t.path().join("old");
        std::fs::create_dir(&old).unwrap();
        assert!(!create_dir_once(&old).unwrap(), "it was there before");
        std::fs::write(t.path().join("file"), "").unwrap();
        assert!(create_dir_once(&t.path().join("file")).is_err());
    }
}
