//! Finding the project, its `.pipe` files and a pipeline by name, and loading
//! them (with their imports) into a [`Workspace`].

use std::path::{Component, Path, PathBuf};

use pipe_lang::workspace::{Loader, Workspace};

use crate::exit::Failure;

pub struct Project {
    pub root: PathBuf,
}

impl Project {
    /// The nearest ancestor of `start` holding `pipelines/` (or `.git`), else `start`.
    pub fn discover(start: &Path) -> Project {
        let start = start.canonicalize().unwrap_or_else(|_| start.to_path_buf());
        for dir in start.ancestors() {
            if dir.join("pipelines").is_dir() || dir.join(".git").exists() {
                return Project {
                    root: dir.to_path_buf(),
                };
            }
        }
        Project { root: start }
    }

    pub fn pipelines_dir(&self) -> PathBuf {
        self.root.join("pipelines")
    }

    /// The name a file is shown under: relative to the project root when inside it.
    pub fn display_name(&self, path: &Path) -> String {
        let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        abs.strip_prefix(&self.root)
            .map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
    }

    /// Every `.pipe` file under `dir`, sorted.
    pub fn pipe_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "pipe") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Reads files and loads them with their imports.
    pub fn load(&self, paths: &[PathBuf]) -> Result<Workspace, Failure> {
        let mut files = Vec::new();
        for p in paths {
            let text = read_source(p)?;
            files.push((self.display_name(p), text));
        }
        let mut loader = FsLoader {
            root: self.root.clone(),
        };
        Ok(Workspace::load(files, &mut loader))
    }

    /// Resolves a pipeline argument: a path to a `.pipe` file, `pipelines/<name>.pipe`,
    /// or a pipeline of that name in any file under `pipelines/`. Returns the
    /// files to load and the pipeline's name (when the argument named one).
    pub fn resolve(&self, arg: &str) -> Result<(Vec<PathBuf>, Option<String>), Failure> {
        let as_path = Path::new(arg);
        if as_path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pipe"))
            || as_path.is_file()
        {
            if as_path.is_file() {
                return Ok((vec![as_path.to_path_buf()], None));
            }
            return Err(Failure::invalid(format!("no such file: {arg}")));
        }
        let direct = self.pipelines_dir().join(format!("{arg}.pipe"));
        if direct.is_file() {
            return Ok((vec![direct], Some(arg.to_string())));
        }
        let files = Self::pipe_files(&self.pipelines_dir());
        for f in &files {
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            if declares_pipeline(&text, arg) {
                return Ok((vec![f.clone()], Some(arg.to_string())));
            }
        }
        let mut known = Vec::new();
        for f in &files {
            if let Ok(text) = std::fs::read_to_string(f) {
                known.extend(pipeline_names(&text));
            }
        }
        let mut msg = format!("no pipeline named `{arg}` (looked for pipelines/{arg}.pipe and in every file under pipelines/)");
        if let Some(n) = pipe_lang::diagnostic::did_you_mean(arg, known.iter().map(String::as_str))
        {
            msg.push_str(&format!("\n  help: did you mean `{n}`?"));
        } else if !known.is_empty() {
            msg.push_str(&format!("\n  help: pipelines here: {}", known.join(", ")));
        }
        Err(Failure::invalid(msg))
    }
}

/// A cheap textual scan for `pipeline NAME`, to avoid parsing every file.
fn declares_pipeline(text: &str, name: &str) -> bool {
    pipeline_names(text).iter().any(|n| n == name)
}

fn pipeline_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("pipeline "))
        .filter_map(|rest| {
            rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
        })
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn read_source(path: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > pipe_lang::parser::MAX_FILE_BYTES as u64 {
        return Err(Failure::invalid(format!(
            "{} is {} bytes; the limit for a .pipe file is {}",
            path.display(),
            meta.len(),
            pipe_lang::parser::MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        Failure::invalid(format!(
            "{} is not UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Loads imports relative to the importing file, refusing paths that leave the project.
struct FsLoader {
    root: PathBuf,
}

impl Loader for FsLoader {
    fn load(&mut self, from: &str, path: &str) -> Result<(String, String), String> {
        let base = Path::new(from).parent().unwrap_or(Path::new(""));
        let joined = normalize(&base.join(path));
        if joined
            .components()
            .any(|c| matches!(c, Component::ParentDir))
            || Path::new(path).is_absolute()
        {
            return Err("imports must stay inside the project".into());
        }
        let full = self.root.join(&joined);
        let full = if full.extension().is_none() {
            full.with_extension("pipe")
        } else {
            full
        };
        let text = read_source(&full).map_err(|f| f.message.unwrap_or_default())?;
        let name = full
            .strip_prefix(&self.root)
            .unwrap_or(&full)
            .display()
            .to_string();
        Ok((name, text))
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.iter().collect()
}
