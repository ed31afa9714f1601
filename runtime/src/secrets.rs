//! Where `secrets.NAME` comes from: a dotenv-format secrets file
//! (`--secrets-file`), a directory of mounted secrets with one file per secret
//! (`--secrets-dir`, e.g. `/run/secrets`), and the process environment, in
//! that order of precedence. Loading refuses what could leak or be swapped
//! behind the project's back: a `../` path, a world-readable file, a symlink
//! leading out of the project, and a value too short to mask.
//!
//! Secrets are scoped to environments: a subdirectory of the secrets
//! directory named after an env block (`.pipe/secrets/prod/API_TOKEN`) holds
//! that environment's own values. A step sees its environment's values first
//! (its stage's `env`, else the run's `--env`), then the shared ones; never
//! another environment's. See docs/environments.md.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use pipe_lang::plan::{CommandPart, Deferrable};
use pipe_lang::Plan;

use crate::mask::{Masker, SharedMasker, MIN_SECRET_LEN};

/// Where a secret's value was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A variable of `pipe`'s own environment.
    Environment,
    /// One file of the secrets directory.
    Dir(PathBuf),
    /// A line of the secrets file.
    File { path: PathBuf, line: usize },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Environment => f.write_str("process environment"),
            Origin::Dir(p) => write!(f, "{}", p.display()),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// The places secrets are read from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The project root: relative paths are resolved in it and symlinks must
    /// stay inside it.
    pub root: PathBuf,
    /// A dotenv file of secrets.
    pub file: Option<PathBuf>,
    /// A directory holding one file per secret.
    pub dir: Option<PathBuf>,
    /// False when `dir` is the default, which may be absent.
    pub dir_explicit: bool,
}

/// A secret that cannot be used, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub help: String,
}

/// Every secret value the run can see. The values of the file and the
/// directory are read once, up front; environment variables are read by name.
#[derive(Clone, Default)]
pub struct Secrets {
    loaded: IndexMap<String, (String, Origin)>,
    /// Per environment: the files of `<secrets dir>/<env>/`.
    scoped: IndexMap<String, IndexMap<String, (String, Origin)>>,
}

impl std::fmt::Debug for Secrets {
    // Names only: the values never reach a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.loaded.keys())
            .entries(
                self.scoped
                    .iter()
                    .flat_map(|(e, m)| m.keys().map(move |k| format!("{e}/{k}"))),
            )
            .finish()
    }
}

impl Secrets {
    /// Reads the secrets file and directory. Every refusal is returned, not
    /// only the first.
    pub fn load(src: &Sources) -> Result<Secrets, Vec<Refusal>> {
        let mut out = Secrets::default();
        let mut refused = Vec::new();
        let dir = match &src.dir {
            Some(d) => match resolve(&src.root, d, "--secrets-dir") {
                Ok(p) if p.is_dir() => Some(p),
                Ok(p) if src.dir_explicit => {
                    refused.push(Refusal {
                        message: format!("the secrets directory {} does not exist", p.display()),
                        help:
                            "create it (one file per secret, mode 600) or leave out --secrets-dir"
                                .into(),
                    });
                    None
                }
                Ok(_) => None,
                Err(r) => {
                    refused.push(r);
                    None
                }
            },
            None => None,
        };
        if let Some(dir) = &dir {
            out.load_dir(&src.root, dir, &mut refused);
        }
        if let Some(f) = &src.file {
            match resolve(&src.root, f, "--secrets-file") {
                Ok(path) => out.load_file(&src.root, &path, &mut refused),
                Err(r) => refused.push(r),
            }
        }
        let scoped = out.scoped.values().flat_map(IndexMap::iter);
        for (name, (value, origin)) in out.loaded.iter().chain(scoped) {
            if let Err(r) = maskable(name, value, origin) {
                refused.push(r);
            }
        }
        if refused.is_empty() {
            Ok(out)
        } else {
            Err(refused)
        }
    }

    /// The value of `name` and where it came from: the secrets file, then the
    /// directory, then the environment.
    pub fn get(&self, name: &str) -> Option<(String, Origin)> {
        if let Some(v) = self.loaded.get(name) {
            return Some(v.clone());
        }
        std::env::var(name).ok().map(|v| (v, Origin::Environment))
    }

    /// The value of `name` as a step of environment `env` sees it: the
    /// environment's own (`<secrets dir>/<env>/NAME`) first, then the shared
    /// sources of [`Secrets::get`]. Another environment's value never.
    pub fn get_in(&self, env: Option<&str>, name: &str) -> Option<(String, Origin)> {
        if let Some(v) = env.and_then(|e| self.scoped.get(e)?.get(name)) {
            return Some(v.clone());
        }
        self.get(name)
    }

    /// The value of `name`, or a refusal when it is set but too short to mask.
    pub fn check(&self, name: &str) -> Option<Result<(String, Origin), Refusal>> {
        self.check_in(None, name)
    }

    /// [`Secrets::check`] for a step of environment `env`.
    pub fn check_in(
        &self,
        env: Option<&str>,
        name: &str,
    ) -> Option<Result<(String, Origin), Refusal>> {
        let (v, o) = self.get_in(env, name)?;
        Some(maskable(name, &v, &o).map(|()| (v, o)))
    }

    /// The environments that have their own value of `name`, with where
    /// (for the error of a step that reads another environment's secret).
    pub fn scoped_elsewhere(&self, env: Option<&str>, name: &str) -> Vec<(String, Origin)> {
        self.scoped
            .iter()
            .filter(|(e, m)| Some(e.as_str()) != env && m.contains_key(name))
            .map(|(e, m)| (e.clone(), m[name].1.clone()))
            .collect()
    }

    /// Every value read from the file and the directory, every
    /// environment's included (all are masked, named by the plan or not).
    pub fn loaded(&self) -> impl Iterator<Item = (&str, &str)> {
        self.loaded
            .iter()
            .chain(self.scoped.values().flat_map(IndexMap::iter))
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    fn load_dir(&mut self, root: &Path, dir: &Path, refused: &mut Vec<Refusal>) {
        let mut shared = std::mem::take(&mut self.loaded);
        Self::read_dir_into(&mut shared, root, dir, dir, refused, true);
        self.loaded = shared;
        // One subdirectory per environment.
        let mut envs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        envs.sort();
        for sub in envs {
            let Some(env) = sub.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if env.starts_with('.') || !sub.is_dir() {
                continue;
            }
            let mut m = IndexMap::new();
            Self::read_dir_into(&mut m, root, dir, &sub, refused, false);
            self.scoped.insert(env.to_string(), m);
        }
    }

    /// Reads the files of `dir` (one secret each) into `into`; `base` is the
    /// secrets directory (symlinks may point inside it).
    fn read_dir_into(
        into: &mut IndexMap<String, (String, Origin)>,
        root: &Path,
        base: &Path,
        dir: &Path,
        refused: &mut Vec<Refusal>,
        top: bool,
    ) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                refused.push(Refusal {
                    message: format!(
                        "cannot read the secrets {} {}: {e}",
                        if top {
                            "directory"
                        } else {
                            "directory of an environment"
                        },
                        dir.display()
                    ),
                    help: "make it readable by the user running pipe".into(),
                });
                return;
            }
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // Kubernetes keeps its bookkeeping in `..data` and friends.
            if name.starts_with('.') || !is_name(name) || path.is_dir() {
                continue;
            }
            if let Err(r) = safe_file(root, Some(base), &path) {
                refused.push(r);
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let value = text
                        .strip_suffix('\n')
                        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
                    into.insert(
                        name.to_string(),
                        (value.to_string(), Origin::Dir(path.clone())),
                    );
                }
                Err(e) => refused.push(Refusal {
                    message: format!("cannot read the secret file {}: {e}", path.display()),
                    help: "make it readable by the user running pipe (chmod 600)".into(),
                }),
            }
        }
    }

    fn load_file(&mut self, root: &Path, path: &Path, refused: &mut Vec<Refusal>) {
        if let Err(r) = safe_file(root, None, path) {
            refused.push(r);
            return;
        }
        match crate::environment::DotEnv::read(path) {
            Ok(env) => {
                for (k, v) in env.vars {
                    let line = env.lines.get(&k).copied().unwrap_or(1);
                    let origin = Origin::File {
                        path: path.to_path_buf(),
                        line,
                    };
                    // The file wins over the directory.
                    self.loaded.insert(k, (v, origin));
                }
                for e in env.errors {
                    refused.push(Refusal {
                        message: format!(
                            "{}:{}: cannot parse the secrets file: {}",
                            path.display(),
                            e.line,
                            e.message
                        ),
                        help: "write one `NAME=value` per line (dotenv syntax)".into(),
                    });
                }
            }
            Err(e) => refused.push(Refusal {
                message: format!("cannot read the secrets file {}: {e}", path.display()),
                help: "check the path given to --secrets-file".into(),
            }),
        }
    }
}

/// The secrets one step may read: the run's, as its environment sees them
/// ([`Secrets::get_in`]). Executors that deploy by secret *name* (a
/// `deploy.rollback` redeploying what the ledger recorded) look values up
/// through it, so they never see another environment's.
#[derive(Clone, Debug, Default)]
pub struct StepSecrets {
    secrets: std::sync::Arc<Secrets>,
    env: Option<String>,
}

impl StepSecrets {
    pub fn new(secrets: std::sync::Arc<Secrets>, env: Option<String>) -> StepSecrets {
        StepSecrets { secrets, env }
    }

    /// The environment the step's secrets come from, if any.
    pub fn env(&self) -> Option<&str> {
        self.env.as_deref()
    }

    /// The value of `name`: the step's environment's own, then the shared
    /// sources, then pipe's environment.
    pub fn get(&self, name: &str) -> Option<String> {
        self.secrets.get_in(self.env.as_deref(), name).map(|v| v.0)
    }
}

/// Every secret `plan` names: each env block's `secrets` list and every
/// `secrets.X` read by a step or handler.
pub fn names_in(plan: &Plan) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for env in plan.envs().values() {
        names.extend(env.secrets.iter().cloned());
    }
    for step in plan.steps().iter().chain(plan.handlers()) {
        names.extend(read_by(step));
    }
    for env in plan.envs().values() {
        env.vars
            .values()
            .for_each(|d| secrets_in(d, &mut |n| names.insert(n)));
    }
    names
}

/// Calls `found` with the name of every `secrets.NAME` that `d` reads.
fn secrets_in(d: &Deferrable, found: &mut impl FnMut(String) -> bool) {
    if let Deferrable::Deferred(e) = d {
        e.walk(&mut |sub| {
            if let Some(["secrets", name, ..]) = sub.as_path().as_deref() {
                found((*name).to_string());
            }
        });
    }
}

/// Every `secrets.NAME` one step reads: in its env, inputs, `when`, `run`
/// and `on_failure`.
fn read_by(step: &pipe_lang::plan::PlanStep) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut visit = |d: &Deferrable| secrets_in(d, &mut |n| names.insert(n));
    step.env
        .values()
        .chain(step.inputs.values())
        .for_each(&mut visit);
    step.when.iter().for_each(&mut visit);
    for cmd in step.run.iter().chain(step.on_failure.iter()) {
        for part in &cmd.parts {
            if let CommandPart::Value(d) = part {
                visit(d);
            }
        }
    }
    names
}

/// Every `secrets.NAME` each step and handler of `plan` reads, as
/// (step id, the environment whose secrets it sees, name): the step's
/// stage's `env`, else the run's `--env` (see [`Secrets::get_in`]).
pub fn reads_by_step(plan: &Plan) -> Vec<(String, Option<String>, String)> {
    let mut out: Vec<(String, Option<String>, String)> = Vec::new();
    for step in plan.steps().iter().chain(plan.handlers()) {
        let env = step.environment.clone().or_else(|| plan.target_env.clone());
        out.extend(
            read_by(step)
                .into_iter()
                .map(|n| (step.id.clone(), env.clone(), n)),
        );
    }
    out
}

/// A masker that knows, from the start of the run, every value of the
/// secrets file and directory and every secret the plan names that is set:
/// a step that reads the variable directly, or runs before the first step
/// that references it, is masked too. A value too short to mask is left out
/// here; validation refuses it, with its name, before anything runs.
pub fn masker_for(plan: &Plan, secrets: &Secrets) -> SharedMasker {
    let masker = Masker::shared();
    {
        let mut m = masker
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, value) in secrets.loaded() {
            let _ = m.add(value);
        }
        for name in names_in(plan) {
            if let Some((value, _)) = secrets.get(&name) {
                let _ = m.add(&value);
            }
        }
    }
    masker
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Refuses a value a masker could not hide.
fn maskable(name: &str, value: &str, origin: &Origin) -> Result<(), Refusal> {
    if value.chars().count() < MIN_SECRET_LEN {
        return Err(Refusal {
            message: format!(
                "secret `{name}` is refused: a secret shorter than {MIN_SECRET_LEN} characters cannot be masked (from {origin})"
            ),
            help: format!(
                "use a real secret of at least {MIN_SECRET_LEN} characters; a short value would be masked out of ordinary text and still leak"
            ),
        });
    }
    Ok(())
}

/// A path given on the command line or in an env block: relative paths are
/// resolved in the project and may not climb out of it with `..`.
pub fn resolve(root: &Path, p: &Path, what: &str) -> Result<PathBuf, Refusal> {
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Refusal {
            message: format!(
                "{what} {}: a path with `..` is refused",
                p.display()
            ),
            help: "name the file inside the project (or by its absolute path where the platform mounts secrets)"
                .into(),
        });
    }
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    })
}

/// Refuses a secret file readable by every user, or a symlink that leads out
/// of the project (and out of `dir`, where mounted secrets link inside it).
fn safe_file(root: &Path, dir: Option<&Path>, path: &Path) -> Result<(), Refusal> {
    use std::os::unix::fs::PermissionsExt as _;
    let link = std::fs::symlink_metadata(path).map_err(|e| Refusal {
        message: format!("cannot read the secret file {}: {e}", path.display()),
        help: "check the path".into(),
    })?;
    if link.file_type().is_symlink() {
        let target = path.canonicalize().map_err(|e| Refusal {
            message: format!(
                "the secret file {} is a broken symlink: {e}",
                path.display()
            ),
            help: "point it at a file inside the project".into(),
        })?;
        let inside = |base: &Path| base.canonicalize().is_ok_and(|b| target.starts_with(b));
        if !inside(root) && !dir.is_some_and(inside) {
            return Err(Refusal {
                message: format!(
                    "the secret file {} is a symlink to {}, outside the project",
                    path.display(),
                    target.display()
                ),
                help: "copy the secret into the project's secrets directory (mode 600), or pass its real location with --secrets-dir / --secrets-file"
                    .into(),
            });
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| Refusal {
        message: format!("cannot read the secret file {}: {e}", path.display()),
        help: "check the path".into(),
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(Refusal {
            message: format!(
                "the secret file {} is readable by every user (mode {:o})",
                path.display(),
                mode & 0o777
            ),
            help: format!("restrict it: chmod 600 {}", path.display()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn write(p: &Path, text: &str, mode: u32) {
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn reads_a_directory_and_a_file_with_precedence() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("sec")).unwrap();
        write(&root.join("sec/API_TOKEN"), "from-dir-1234\n", 0o600);
        write(&root.join("sec/SHARED"), "dir-value-1", 0o600);
        write(&root.join("s.env"), "# c\nSHARED=file-value-1\n", 0o600);
        let s = Secrets::load(&Sources {
            root: root.to_path_buf(),
            file: Some("s.env".into()),
            dir: Some("sec".into()),
            dir_explicit: true,
        })
        .unwrap();
        assert_eq!(s.get("API_TOKEN").unwrap().0, "from-dir-1234");
        let (v, o) = s.get("SHARED").unwrap();
        assert_eq!(v, "file-value-1");
        assert_eq!(
            o,
            Origin::File {
                path: root.join("s.env"),
                line: 2
            }
        );
        assert!(format!("{s:?}").contains("SHARED") && !format!("{s:?}").contains("file-value"));
    }

    #[test]
    fn refuses_unsafe_files_all_at_once() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("sec")).unwrap();
        write(&root.join("sec/OPEN"), "world-readable", 0o644);
        write(&root.join("sec/SHORT"), "abc", 0o600);
        write(&outside.path().join("x"), "elsewhere-secret", 0o600);
        std::os::unix::fs::symlink(outside.path().join("x"), root.join("sec/LINKED")).unwrap();
        let err = Secrets::load(&Sources {
            root: root.to_path_buf(),
            file: Some("../x.env".into()),
            dir: Some("sec".into()),
            dir_explicit: true,
        })
        .unwrap_err();
        let all: Vec<&str> = err.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(err.len(), 4, "{all:#?}");
        assert!(
            all[0].contains("LINKED is a symlink to") && all[0].ends_with("outside the project")
        );
        assert!(all[1].contains("OPEN is readable by every user (mode 644)"));
        assert!(all[2].starts_with("--secrets-file ../x.env: a path with `..` is refused"));
        assert!(all[3].starts_with("secret `SHORT` is refused: a secret shorter than 4"));
        assert!(err[1].help.starts_with("restrict it: chmod 600"));
    }

    #[test]
    fn an_environment_sees_its_own_secrets_then_the_shared_ones_never_another_s() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for sub in ["sec/staging", "sec/prod"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        write(&root.join("sec/SHARED"), "shared-value", 0o600);
        write(&root.join("sec/staging/TOKEN"), "staging-value", 0o600);
        write(&root.join("sec/prod/TOKEN"), "prod-value-1", 0o600);
        write(&root.join("sec/prod/ONLY"), "prod-only-1", 0o600);
        let s = Secrets::load(&Sources {
            root: root.to_path_buf(),
            file: None,
            dir: Some("sec".into()),
            dir_explicit: true,
        })
        .unwrap();
        assert_eq!(
            s.get_in(Some("staging"), "TOKEN").unwrap().0,
            "staging-value"
        );
        assert_eq!(s.get_in(Some("prod"), "TOKEN").unwrap().0, "prod-value-1");
        assert_eq!(s.get_in(Some("prod"), "SHARED").unwrap().0, "shared-value");
        assert!(s.get_in(Some("staging"), "ONLY").is_none());
        assert!(s.get_in(None, "TOKEN").is_none());
        assert!(s.get("ONLY").is_none());
        let elsewhere = s.scoped_elsewhere(Some("staging"), "ONLY");
        assert_eq!(elsewhere.len(), 1);
        assert_eq!(elsewhere[0].0, "prod");
        // Every environment's values are masked.
        let loaded: Vec<&str> = s.loaded().map(|(_, v)| v).collect();
        for v in [
            "shared-value",
            "staging-value",
            "prod-value-1",
            "prod-only-1",
        ] {
            assert!(loaded.contains(&v), "{loaded:?}");
        }
        // An environment's files follow the same rules as the shared ones.
        write(&root.join("sec/prod/OPEN"), "world-readable", 0o644);
        let err = Secrets::load(&Sources {
            root: root.to_path_buf(),
            file: None,
            dir: Some("sec".into()),
            dir_explicit: true,
        })
        .unwrap_err();
        assert!(
            err[0].message.contains("OPEN is readable by every user"),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlink_inside_the_project_is_fine() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("sec")).unwrap();
        write(&root.join("real"), "inside-value", 0o600);
        std::os::unix::fs::symlink(root.join("real"), root.join("sec/INSIDE")).unwrap();
        let s = Secrets::load(&Sources {
            root: root.to_path_buf(),
            file: None,
            dir: Some("sec".into()),
            dir_explicit: true,
        })
        .unwrap();
        assert_eq!(s.get("INSIDE").unwrap().0, "inside-value");
    }
}
