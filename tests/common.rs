//! A small builder for running `pipe` in a temporary project and comparing
//! its exit status, stdout and stderr in full.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn pipe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pipe"))
}

/// The repository root (for tests over shipped files).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[must_use]
pub struct Test {
    dir: tempfile::TempDir,
    args: Vec<String>,
    status: i32,
    stdout: Option<String>,
    stderr: Option<String>,
    stdout_contains: Vec<String>,
    stderr_contains: Vec<String>,
    timeout: Duration,
}

impl Test {
    pub fn new() -> Self {
        Test {
            dir: tempfile::tempdir().expect("tempdir"),
            args: Vec::new(),
            status: 0,
            stdout: None,
            stderr: None,
            stdout_contains: Vec::new(),
            stderr_contains: Vec::new(),
            timeout: Duration::from_mins(1),
        }
    }

    /// Writes a file relative to the project root, creating directories.
    pub fn file(self, rel: &str, text: &str) -> Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
        self
    }

    /// `pipelines/<name>.pipe`.
    pub fn pipeline(self, name: &str, text: &str) -> Self {
        self.file(&format!("pipelines/{name}.pipe"), text)
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| (*s).to_string()));
        self
    }

    pub fn status(mut self, code: i32) -> Self {
        self.status = code;
        self
    }

    pub fn stdout(mut self, s: &str) -> Self {
        self.stdout = Some(s.to_string());
        self
    }

    pub fn stderr(mut self, s: &str) -> Self {
        self.stderr = Some(s.to_string());
        self
    }

    pub fn stdout_contains(mut self, s: &str) -> Self {
        self.stdout_contains.push(s.to_string());
        self
    }

    pub fn stderr_contains(mut self, s: &str) -> Self {
        self.stderr_contains.push(s.to_string());
        self
    }

    /// Runs the command in the project directory and checks every expectation.
    pub fn run(self) -> Output {
        let out = run_bounded(
            Command::new(pipe_bin())
                .args(&self.args)
                .current_dir(self.dir.path())
                // A store named by the environment would give `pipe graph` history.
                .env_remove("PIPE_STATE_DIR"),
            self.timeout,
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let ctx = format!(
            "pipe {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            self.args.join(" ")
        );
        assert_eq!(out.status.code(), Some(self.status), "exit status of {ctx}");
        if let Some(s) = &self.stdout {
            assert_eq!(&stdout, s, "stdout of {ctx}");
        }
        if let Some(s) = &self.stderr {
            assert_eq!(&stderr, s, "stderr of {ctx}");
        }
        for s in &self.stdout_contains {
            assert!(stdout.contains(s.as_str()), "stdout lacks {s:?}: {ctx}");
        }
        for s in &self.stderr_contains {
            assert!(stderr.contains(s.as_str()), "stderr lacks {s:?}: {ctx}");
        }
        out
    }
}

/// Runs a command with NO_COLOR and a bounded wait: a hung child is killed.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pipe");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let stdout = t_out.join().expect("stdout reader");
            let stderr = t_err.join().expect("stderr reader");
            return Output {
                status,
                stdout,
                stderr,
            };
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!(
                "command timed out after {timeout:?}: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a `pipe` child printed and how it ended.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Ran {
    /// Both streams, labelled, for assertion messages.
    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }

    /// The JSON events among stdout's lines (`--output json`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Waits for a spawned child with piped stdout/stderr, at most `bound`: both
/// pipes are drained on threads (a chatty child never blocks on a full pipe),
/// and a child still running at the bound is killed and the test fails with
/// what it printed.
pub fn finish(mut child: std::process::Child, bound: Duration) -> Ran {
    fn drain(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            String::from_utf8_lossy(&v).into_owned()
        })
    }
    let t_out = drain(child.stdout.take());
    let t_err = drain(child.stderr.take());
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if t0.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pipe did not finish within {bound:?}\n{}{}",
                t_out.join().unwrap_or_default(),
                t_err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        took: t0.elapsed(),
    }
}

/// A project in a temporary directory, and `pipe` run in it the way the
/// integration tests run it: the project's own state directory
/// (`PIPE_STATE_DIR` unset), no colour, a short kill grace (1 s unless
/// [`Sandbox::kill_grace_ms`] says otherwise), stdin closed, output captured.
/// The harnesses of the test files wrap it with what their subject needs.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    kill_grace_ms: u64,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
            kill_grace_ms: 1000,
        }
    }

    /// A project whose `pipelines/p.pipe` is `pipeline`.
    pub fn with_pipeline(pipeline: &str) -> Sandbox {
        let sb = Sandbox::new();
        sb.write("pipelines/p.pipe", pipeline);
        sb
    }

    /// The grace between SIGTERM and SIGKILL for the steps `pipe` stops.
    pub fn kill_grace_ms(mut self, ms: u64) -> Sandbox {
        self.kill_grace_ms = ms;
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `rel` (and its parent directories).
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// The text of `rel`, empty when it does not exist.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// `pipe ARGS` in the project, not started.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(pipe_bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("PIPE_KILL_GRACE_MS", self.kill_grace_ms.to_string())
            .env("NO_COLOR", "1")
            .env_remove("PIPE_STATE_DIR")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    }

    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd(args).spawn().expect("spawn pipe")
    }

    /// Runs `pipe ARGS` to the end, killing it (and failing) after `bound`.
    pub fn run(&self, args: &[&str], bound: Duration) -> Ran {
        finish(self.spawn(args), bound)
    }
}

/// A name unique to this test process and moment, for the images,
/// containers and networks a test creates on the shared daemon.
pub fn unique_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Writes a busybox-static root filesystem at `<root>/rootfs` (every applet
/// linked in `bin/`, an empty `tmp/`, and `etc/passwd` when given): the
/// offline base image the container tests import, since nothing can be
/// pulled on these machines.
pub fn busybox_rootfs(root: &std::path::Path, passwd: Option<&str>) {
    let rootfs = root.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(rootfs.join("tmp")).expect("mkdir");
    if let Some(passwd) = passwd {
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
        std::fs::write(rootfs.join("etc/passwd"), passwd).expect("passwd");
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("/bin/busybox (Debian busybox-static) is needed: run `bash .ci/docker-up.sh`");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
        }
    }
}
