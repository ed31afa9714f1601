//! The [`Executor`] trait and the registry that picks one by a step's
//! `executor` name (`shell`, `docker.build`, ...). New executors plug in here
//! without touching the scheduler.

pub mod container;
pub mod docker_build;
pub mod docker_push;
pub mod docker_run;
pub mod hadolint;
pub mod scan;
pub mod services;
pub mod shell;
pub mod swarm;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use pipe_lang::Value;
use tokio::sync::{mpsc, watch};

/// One attempt of a step, fully evaluated: nothing deferred is left.
#[derive(Clone, Debug)]
pub struct Job {
    /// Index of the step in the scheduler's phase.
    pub index: usize,
    pub step_id: String,
    pub attempt: u32,
    /// The rendered `run` command (interpolations already quoted).
    pub command: Option<String>,
    pub shell: Option<String>,
    /// Environment variables added to the process.
    pub env: Vec<(String, String)>,
    /// Evaluated template inputs, for executors other than `shell`.
    pub inputs: IndexMap<String, Value>,
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    pub log_path: PathBuf,
    /// The file the step writes `key=value` outputs to (`$PIPE_OUTPUT`).
    pub output_path: PathBuf,
    /// Marks every process of this attempt (see [`crate::process_tree`]).
    pub token: String,
    /// The run's secrets: what the log file receives passes through it.
    pub mask: crate::mask::SharedMasker,
    /// The secrets this step may read, by name (its environment's own first).
    pub secrets: crate::secrets::StepSecrets,
}

/// How hard the scheduler asks a running step to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    Run,
    /// SIGTERM, grace, then SIGKILL.
    Cancel,
    /// SIGKILL now (second Ctrl-C).
    Kill,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// Non-zero exit or a signal.
    Failed,
    TimedOut,
    Cancelled,
    /// The executor could not start it, or the step is misconfigured: never retried.
    Error,
}

/// The result of one attempt.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub exit_code: Option<i32>,
    pub outputs: IndexMap<String, String>,
    pub error: Option<String>,
    /// How a failure should be retried, when the executor knows better than
    /// its ending (a 503 with `Retry-After`, a 404). `None`: by the ending.
    pub class: Option<crate::retry::Class>,
}

impl Outcome {
    pub fn error(message: impl Into<String>) -> Outcome {
        Outcome {
            ending: Ending::Error,
            exit_code: None,
            outputs: IndexMap::new(),
            error: Some(message.into()),
            class: None,
        }
    }

    /// A failed attempt, retried as `class` says.
    pub fn failed(
        ending: Ending,
        message: impl Into<String>,
        class: Option<crate::retry::Class>,
    ) -> Outcome {
        Outcome {
            ending,
            exit_code: None,
            outputs: IndexMap::new(),
            error: Some(message.into()),
            class,
        }
    }
}

/// Removes an attempt's `$PIPE_OUTPUT` file when the attempt ends: the raw
/// file may hold secrets in clear (its outputs are stored masked). Each
/// executor that makes or hands out the file holds one; [`OutputsFile::absent`]
/// spares the `unlink` when the step is known to have written none.
pub(crate) struct OutputsFile(Option<PathBuf>);

impl OutputsFile {
    pub(crate) fn new(path: &std::path::Path) -> OutputsFile {
        OutputsFile(Some(path.to_path_buf()))
    }

    /// The file does not exist: nothing to remove.
    pub(crate) fn absent(&mut self) {
        self.0 = None;
    }
}

impl Drop for OutputsFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A log line a step printed.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub index: usize,
    pub stderr: bool,
    pub line: String,
}

/// What an executor gets besides its job: where to send log lines and how it
/// is told to stop.
pub struct Io {
    pub logs: mpsc::UnboundedSender<LogLine>,
    pub stop: watch::Receiver<Stop>,
}

pub type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Runs one attempt of a step.
pub trait Executor: Send + Sync {
    fn run(&self, job: Job, io: Io) -> BoxFuture;
}

/// Executors by name.
#[derive(Clone)]
pub struct Registry {
    map: HashMap<String, Arc<dyn Executor>>,
}

impl Registry {
    /// The executors this build ships.
    pub fn builtin() -> Registry {
        let mut r = Registry {
            map: HashMap::new(),
        };
        r.register(
            "shell",
            Arc::new(services::WithServices(Arc::new(shell::Shell))),
        );
        crate::http::register(&mut r);
        r.register("container", Arc::new(container::Container));
        r.register("docker.build", Arc::new(docker_build::Build));
        r.register("docker.import", Arc::new(docker_build::Import));
        r.register("docker.push", Arc::new(docker_push::Push));
        r.register("docker.run", Arc::new(docker_run::Run));
        r.register("policy", Arc::new(crate::gate::policy::Policy));
        r.register("scan.image", Arc::new(scan::Image));
        r.register("scan.config", Arc::new(scan::Config));
        r.register("scan.dockerfile_lint", Arc::new(hadolint::DockerfileLint));
        r.register("swarm", Arc::new(swarm::Swarm));
        crate::deploy::register(&mut r);
        r.register("chaos", Arc::new(crate::chaos::Chaos));
        r
    }

    pub fn register(&mut self, name: &str, e: Arc<dyn Executor>) {
        self.map.insert(name.to_string(), e);
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Executor>, String> {
        self.map.get(name).cloned().ok_or_else(|| {
            let mut known: Vec<&str> = self.map.keys().map(String::as_str).collect();
            known.sort_unstable();
            format!(
                "no executor for `{name}` yet (this build has: {})",
                known.join(", ")
            )
        })
    }
}

/// Parses a `$PIPE_OUTPUT` file: `key=value` lines and `key<<DELIM` heredocs
/// ending at a line equal to `DELIM`.
pub fn parse_outputs(text: &str) -> Result<IndexMap<String, String>, String> {
    let mut out = IndexMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let eq = line.find('=');
        let hd = line.find("<<");
        let eq_first = match (eq, hd) {
            (Some(e), Some(h)) => e < h,
            (Some(_), None) => true,
            _ => false,
        };
        match (eq, hd) {
            (Some(e), _) if eq_first => {
                let key = &line[..e];
                check_key(key, n)?;
                out.insert(key.to_string(), line[e + 1..].to_string());
            }
            (_, Some(h)) => {
                let key = &line[..h];
                check_key(key, n)?;
                let delim = &line[h + 2..];
                if delim.is_empty() {
                    return Err(format!("line {}: `{key}<<` needs a delimiter", n + 1));
                }
                let mut body: Vec<&str> = Vec::new();
                let mut closed = false;
                for (_, l) in lines.by_ref() {
                    if l == delim {
                        closed = true;
                        break;
                    }
                    body.push(l);
                }
                if !closed {
                    return Err(format!(
                        "line {}: the heredoc of `{key}` is not closed by a line `{delim}`",
                        n + 1
                    ));
                }
                out.insert(key.to_string(), body.join("\n"));
            }
            _ => {
                return Err(format!(
                    "line {}: expected `key=value` or `key<<DELIMITER`, found `{line}`",
                    n + 1
                ))
            }
        }
    }
    Ok(out)
}

fn check_key(key: &str, n: usize) -> Result<(), String> {
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "line {}: `{key}` is not a valid output name",
            n + 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_heredocs() {
        let o = parse_outputs("a=1\nb=x=y\n\nmsg<<EOF\nline 1\nline=2\nEOF\nc=\n").unwrap();
        assert_eq!(o["a"], "1");
        assert_eq!(o["b"], "x=y");
        assert_eq!(o["msg"], "line 1\nline=2");
        assert_eq!(o["c"], "");
    }

    #[test]
    fn rejects_unclosed_heredoc_and_junk() {
        assert!(parse_outputs("m<<EOF\nx\n")
            .unwrap_err()
            .contains("not closed"));
        assert!(parse_outputs("just words").unwrap_err().contains("line 1"));
    }

    #[test]
    fn unknown_executor_is_named() {
        let Err(e) = Registry::builtin().get("nomad") else {
            panic!("nomad has no executor");
        };
        assert!(e.contains("no executor for `nomad` yet"), "{e}");
        assert!(e.contains("swarm"), "{e}");
    }
}
