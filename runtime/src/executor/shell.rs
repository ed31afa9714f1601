//! The `shell` executor: runs a step's `run` command with `sh -c` (or the
//! declared shell) in its own process group, streams stdout and stderr to the
//! scheduler and to a log file per attempt, enforces the timeout by killing
//! the whole process tree, and reads outputs from `$PIPE_OUTPUT`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use std::io::Write as _;
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{BoxFuture, Ending, Executor, Io, Job, LogLine, Outcome, Stop};
use crate::process_tree;

mod program;
mod spawn;

/// Runs shell commands.
pub struct Shell;

impl Executor for Shell {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(run(job, io))
    }
}

async fn run(job: Job, mut io: Io) -> Outcome {
    let Some(command) = job.command.clone() else {
        return Outcome::error("the step has no `run` command");
    };
    // The step creates its outputs file by writing to it (`>> $PIPE_OUTPUT`):
    // creating and deleting an empty file for each of thousands of silent
    // steps costs more than running them (runtime/bench/README.md). Each
    // attempt has a path of its own; one a crashed pipe left is removed (it
    // can only be there if the log directory is older than this process).
    let fresh_dir = match job.log_path.parent().map(program::create_dir_once) {
        Some(Ok(fresh)) => fresh,
        Some(Err(e)) => {
            let dir = job.log_path.parent().unwrap_or(&job.log_path);
            return Outcome::error(format!("cannot create {}: {e}", dir.display()));
        }
        None => false,
    };
    let log = Arc::new(Mutex::new(LazyLog::new(job.log_path.clone())));
    if !fresh_dir {
        if let Err(e) = std::fs::remove_file(&job.output_path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Outcome::error(format!("cannot remove {}: {e}", job.output_path.display()));
            }
        }
    }
    let shell = job.shell.clone().unwrap_or_else(|| "sh".to_string());
    let path_var = job
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    let resolved = program::resolve(&shell, path_var.as_deref());
    let mut child = match start(
        &shell,
        resolved.as_deref(),
        path_var.as_deref(),
        &command,
        &job,
    ) {
        Ok(c) => c,
        Err(e) => return Outcome::error(format!("cannot start `{shell}`: {e}")),
    };
    // It goes whatever the ending.
    let mut outputs_file = super::OutputsFile::new(&job.output_path);
    let pgid = child.id().map(|p| p as i32);
    // One task reads both streams: a task per stream cost a spawn per step.
    let (out, err) = child.streams();
    let (logs, mask, index, file) = (io.logs.clone(), job.mask.clone(), job.index, log.clone());
    let readers = vec![tokio::spawn(async move {
        let out = async {
            if let Some(out) = out {
                pump(out, false, index, logs.clone(), file.clone(), mask.clone()).await;
            }
        };
        let err = async {
            if let Some(err) = err {
                pump(err, true, index, logs.clone(), file.clone(), mask.clone()).await;
            }
        };
        tokio::join!(out, err);
    })];
    let timeout = async {
        match job.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let mut ending = None;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            () = &mut timeout, if ending.is_none() => {
                ending = Some(Ending::TimedOut);
                terminate(&mut child, pgid, &job, &mut io).await;
            }
            r = io.stop.changed(), if ending.is_none() => {
                if r.is_err() { continue; }
                let level = *io.stop.borrow();
                if level != Stop::Run {
                    ending = Some(Ending::Cancelled);
                    terminate(&mut child, pgid, &job, &mut io).await;
                }
            }
        }
    };
    // Whatever the step left behind (background jobs, `setsid` children) dies
    // with it. The group goes at once; the /proc scan for escaped descendants
    // costs milliseconds, so after a normal exit it runs only when something
    // still holds the step's stdout or stderr (a background job that also
    // redirected its output and left the group is not caught: docs/runtime.md).
    if let Some(g) = pgid {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(g), Signal::SIGKILL);
    }
    let readers = futures_join(readers);
    tokio::pin!(readers);
    let drained = ending.is_none()
        && tokio::time::timeout(Duration::from_millis(50), &mut readers)
            .await
            .is_ok();
    if !drained {
        process_tree::kill_all(pgid, &job.token, false, Duration::from_secs(5)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), readers).await;
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => return Outcome::error(format!("waiting for the step failed: {e}")),
    };
    if let Some(e) = log.lock().ok().and_then(|mut l| l.error.take()) {
        return Outcome::error(format!("cannot create {}: {e}", job.log_path.display()));
    }
    let exit_code = status.code().or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        status.signal().map(|s| 128 + s)
    });
    if let Some(e) = ending {
        let what = if e == Ending::TimedOut {
            format!(
                "timed out after {}",
                pipe_lang::value::format_duration(job.timeout.map_or(0, |t| t.as_millis() as u64))
            )
        } else {
            "cancelled".to_string()
        };
        return Outcome {
            ending: e,
            exit_code,
            outputs: indexmap::IndexMap::new(),
            error: Some(what),
            class: None,
        };
    }
    if !status.success() {
        return Outcome {
            ending: Ending::Failed,
            exit_code,
            outputs: indexmap::IndexMap::new(),
            error: Some(match exit_code {
                Some(126) => "exit code 126: the command could not be executed".to_string(),
                Some(127) => "exit code 127: command not found".to_string(),
                Some(c) => format!("exit code {c}"),
                None => "ended without an exit code".to_string(),
            }),
            class: None,
        };
    }
    let text = match std::fs::read_to_string(&job.output_path) {
        Ok(t) => t,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::NotFound {
                // The step wrote no outputs: nothing to remove.
                outputs_file.absent();
            }
            String::new()
        }
    };
    match super::parse_outputs(&text) {
        Ok(outputs) => Outcome {
            ending: Ending::Succeeded,
            exit_code,
            outputs,
            error: None,
            class: None,
        },
        Err(e) => Outcome {
            ending: Ending::Error,
            exit_code,
            outputs: indexmap::IndexMap::new(),
            error: Some(format!("$PIPE_OUTPUT: {e}")),
            class: None,
        },
    }
}

/// A step's process, started by [`spawn`] or, where that cannot be used, by
/// `tokio::process`.
enum Proc {
    Short(spawn::Child),
    Tokio(tokio::process::Child),
}

type Stream = Box<dyn AsyncRead + Unpin + Send>;

impl Proc {
    fn id(&self) -> Option<u32> {
        match self {
            Proc::Short(c) => Some(c.id()),
            Proc::Tokio(c) => c.id(),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Proc::Short(c) => c.wait().await,
            Proc::Tokio(c) => c.wait().await,
        }
    }

    fn streams(&mut self) -> (Option<Stream>, Option<Stream>) {
        match self {
            Proc::Short(c) => (
                c.stdout.take().map(|s| Box::new(s) as Stream),
                c.stderr.take().map(|s| Box::new(s) as Stream),
            ),
            Proc::Tokio(c) => (
                c.stdout.take().map(|s| Box::new(s) as Stream),
                c.stderr.take().map(|s| Box::new(s) as Stream),
            ),
        }
    }
}

/// pipe's own environment, read once: a step's is this, then its `env`,
/// then `PIPE_OUTPUT` and the process-tree token (pipe never changes its
/// environment while it runs).
fn parent_env() -> &'static [(std::ffi::OsString, std::ffi::OsString)] {
    static ENV: std::sync::LazyLock<Vec<(std::ffi::OsString, std::ffi::OsString)>> =
        std::sync::LazyLock::new(|| std::env::vars_os().collect());
    &ENV
}

/// Starts `shell -c command`: with the short spawn when the shell's path is
/// known, else (or where it is unavailable) with `tokio::process`, which
/// searches `PATH` itself. A cached path that went away is forgotten and the
/// name looked up again.
fn start(
    shell: &str,
    resolved: Option<&std::path::Path>,
    path_var: Option<&std::ffi::OsStr>,
    command: &str,
    job: &Job,
) -> std::io::Result<Proc> {
    let program = resolved.map_or(shell.as_ref(), |p| p.as_os_str());
    let first = match (resolved, dev_null_file()) {
        (Some(path), Some(null)) => short(path, null, command, job).transpose(),
        _ => None,
    }
    .unwrap_or_else(|| {
        shell_command(program, command, job)
            .spawn()
            .map(Proc::Tokio)
    });
    match first {
        Err(e) if resolved.is_some() && e.kind() == std::io::ErrorKind::NotFound => {
            program::forget(shell, path_var);
            shell_command(shell.as_ref(), command, job)
                .spawn()
                .map(Proc::Tokio)
        }
        r => r,
    }
}

/// The short spawn of `program -c command` (`None`: not available here).
fn short(
    program: &std::path::Path,
    null: &std::fs::File,
    command: &str,
    job: &Job,
) -> std::io::Result<Option<Proc>> {
    use std::ffi::OsStr;
    if !spawn::available() {
        return Ok(None);
    }
    let mut env: Vec<(&OsStr, &OsStr)> = Vec::with_capacity(parent_env().len() + job.env.len() + 2);
    env.extend(
        parent_env()
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str())),
    );
    env.extend(job.env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))));
    env.push((OsStr::new("PIPE_OUTPUT"), job.output_path.as_os_str()));
    env.push((OsStr::new(process_tree::TOKEN_VAR), OsStr::new(&job.token)));
    let spec = spawn::Spec {
        program: program.as_os_str(),
        args: &[OsStr::new("-c"), OsStr::new(command)],
        env: &env,
        cwd: &job.cwd,
    };
    Ok(spawn::spawn(&spec, std::os::fd::AsFd::as_fd(null))?.map(Proc::Short))
}

/// `shell -c command` with the step's environment, in a process group of its own.
fn shell_command(shell: &std::ffi::OsStr, command: &str, job: &Job) -> Command {
    let mut cmd = Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .current_dir(&job.cwd)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .env("PIPE_OUTPUT", &job.output_path)
        .env(process_tree::TOKEN_VAR, &job.token)
        .stdin(dev_null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    cmd
}

/// One `/dev/null` opened for the whole process, for steps' stdin.
fn dev_null_file() -> Option<&'static std::fs::File> {
    static NULL: std::sync::LazyLock<Option<std::fs::File>> =
        std::sync::LazyLock::new(|| std::fs::File::open("/dev/null").ok());
    NULL.as_ref()
}

/// The step's stdin: a duplicate of [`dev_null_file`] (`Stdio::null()`
/// opens the file again at every spawn).
fn dev_null() -> Stdio {
    dev_null_file()
        .and_then(|f| f.try_clone().ok())
        .map_or_else(Stdio::null, Stdio::from)
}

/// SIGTERM to the tree, a grace period (cut short by a `Kill` request), then SIGKILL.
async fn terminate(child: &mut Proc, pgid: Option<i32>, job: &Job, io: &mut Io) {
    if *io.stop.borrow() == Stop::Kill {
        process_tree::kill_all(pgid, &job.token, false, Duration::from_secs(5)).await;
        return;
    }
    process_tree::signal_all(pgid, &job.token, false, Signal::SIGTERM);
    let grace = tokio::time::sleep(job.grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => break,
            r = io.stop.changed() => {
                if r.is_err() || *io.stop.borrow() == Stop::Kill { break; }
            }
            _ = child.wait() => {
                if !process_tree::any_alive(pgid, &job.token) { return; }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    process_tree::kill_all(pgid, &job.token, false, Duration::from_secs(5)).await;
}

/// Waits for every reader task.
async fn futures_join(readers: Vec<tokio::task::JoinHandle<()>>) {
    for r in readers {
        let _ = r.await;
    }
}

async fn pump(
    r: impl AsyncRead + Unpin,
    stderr: bool,
    index: usize,
    tx: tokio::sync::mpsc::UnboundedSender<LogLine>,
    log: Arc<Mutex<LazyLog>>,
    mask: crate::mask::SharedMasker,
) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A whole line: a secret written a byte at a time is complete here.
        let buf = mask
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .mask_bytes(&buf);
        if let Ok(mut f) = log.lock() {
            f.write_line(&buf);
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line).to_string();
        let _ = tx.send(LogLine {
            index,
            stderr,
            line,
        });
    }
}

/// The log file of an attempt, created when the first line arrives: most
/// steps print little or nothing, and a file per silent step costs a create
/// in a directory of thousands (runtime/bench/README.md). An attempt that
/// printed nothing has no log file; `pipe logs` shows it as empty.
struct LazyLog {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    /// Why the file could not be created, reported as the step's error.
    error: Option<std::io::Error>,
}

impl LazyLog {
    fn new(path: std::path::PathBuf) -> Self {
        LazyLog {
            path,
            file: None,
            error: None,
        }
    }

    fn write_line(&mut self, line: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.file.is_none() {
            // Appended to: the step's services may have logged their start.
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            // As before the file was lazy: a failed write loses the line in
            // the file only (the event stream still has it).
            let _ = f.write_all(line);
            if !line.ends_with(b"\n") {
                let _ = f.write_all(b"\n");
            }
        }
    }
}
