//! Starting a shell step's process with the least time spent inside the
//! spawn, where the dispatcher's thread is blocked.
//!
//! `posix_spawn` (what `std::process::Command` uses) clones with
//! `CLONE_VM | CLONE_VFORK`: the parent is suspended until the child has
//! called `execve`. glibc's child resets the disposition of every signal
//! first — 64 queries and up to 64 changes, about 130 system calls — and on a
//! busy machine the parent waits about 0.4 ms per spawn, a large part of
//! a no-op step (runtime/bench/README.md). Here the child resets only the
//! signals that have a handler in this process (read from
//! `/proc/self/status` by the parent, outside the suspended window) and
//! `SIGPIPE` (ignored by Rust programs; the step gets the default, as with
//! `std`), then sets its process group, working directory and standard
//! streams and calls `execve` with an `envp` built by the parent: about ten
//! system calls. The clone's stack is one buffer per thread, kept for the
//! next spawn (glibc maps and unmaps one each time).
//!
//! The child is awaited through a pidfd registered with Tokio. Where this
//! path cannot be taken (no absolute program path, no `pidfd_open`), the
//! caller uses `tokio::process::Command` as before.
//!
//! The only module of the workspace with `unsafe` code (the workspace denies
//! it elsewhere): each block says why it holds.
#![expect(
    unsafe_code,
    reason = "clone(CLONE_VM | CLONE_VFORK) and raw fds: see the module doc"
)]

use std::cell::RefCell;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// What a spawn needs, built before the clone (the child may not allocate).
pub(super) struct Spec<'a> {
    /// An absolute path: `execve` does no `PATH` search.
    pub program: &'a OsStr,
    /// After `argv[0]`, which is `program`.
    pub args: &'a [&'a OsStr],
    /// The whole environment of the child, in order; a later name wins.
    pub env: &'a [(&'a OsStr, &'a OsStr)],
    pub cwd: &'a std::path::Path,
}

/// A running (or finished, not yet awaited) child.
pub(super) struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Set when `pidfd_open` is missing: later steps go the `std` way at once.
static NO_PIDFD: AtomicBool = AtomicBool::new(false);

/// Whether this path can be tried at all.
pub(super) fn available() -> bool {
    !NO_PIDFD.load(Ordering::Relaxed)
}

/// The data the child reads; it lives on the parent's stack, which the
/// suspended parent does not touch until the child has exec'd or exited.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// Signals to set back to their default disposition.
    reset: [libc::c_int; 64],
    reset_len: usize,
    /// `stdin`, `stdout`, `stderr` for the child, all at 3 or above.
    fds: [RawFd; 3],
    /// The `errno` of the step that failed, written by the child.
    errno: libc::c_int,
}

const STACK_SIZE: usize = 64 * 1024;

/// The kernel's sigset size, as the `size_t` the raw calls take: through the
/// variadic `syscall`, a plain `8` would be an `int` with undefined upper
/// bits, and the kernel would refuse the call.
const SIGSET_SIZE: libc::size_t = 8;

thread_local! {
    static STACK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the program, an argument or the environment",
        )
    })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A pipe whose ends are close-on-exec and at fd 3 or above (0–2 may be
/// closed in pipe itself, and the child's `dup2` onto them must not clobber
/// another of its sources).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both were just opened and are owned here only.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor owned by no one else.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The signals this process catches (`SigCgt` of `/proc/self/status`). A
/// handler installed by another thread between this read and the clone is
/// not reset; glibc's query of each signal in the child has the same race,
/// in a narrower window (and pipe installs its handlers before any step).
fn caught_signals(out: &mut [libc::c_int; 64]) -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::other("no SigCgt in /proc/self/status"))?;
    let mut n = 0;
    for sig in 1..=64 {
        if mask & (1u64 << (sig - 1)) != 0 && sig != libc::SIGKILL && sig != libc::SIGSTOP {
            out[n] = sig;
            n += 1;
        }
    }
    Ok(n)
}

/// Starts `spec` with stdin from `stdin`, stdout and stderr on new pipes, in
/// a process group of its own. Returns `Ok(None)` when this path is not
/// available here (the caller then spawns with `std`).
pub(super) fn spawn(spec: &Spec<'_>, stdin: BorrowedFd<'_>) -> io::Result<Option<Child>> {
    if !available() {
        return Ok(None);
    }
    // Without /proc the child cannot know which handlers to reset: `std`.
    let mut reset = [0; 64];
    let Ok(reset_len) = caught_signals(&mut reset) else {
        return Ok(None);
    };
    // Everything the child reads, allocated now.
    let program = cstring(spec.program)?;
    let args: Vec<CString> = spec
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = std::iter::once(program.as_ptr())
        .chain(args.iter().map(|a| a.as_ptr()))
        .collect();
    argv.push(std::ptr::null());
    let env = environment(spec.env)?;
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = cstring(spec.cwd.as_os_str())?;
    // Close-on-exec and above 2 already (Rust reopens a closed 0–2 at start):
    // passed as it is; otherwise a duplicate that is.
    let stdin_copy = if stdin.as_raw_fd() > 2 {
        None
    } else {
        Some(above_stdio(stdin.try_clone_to_owned()?)?)
    };
    let stdin_fd = stdin_copy
        .as_ref()
        .map_or(stdin.as_raw_fd(), AsRawFd::as_raw_fd);
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let mut args_block = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        reset,
        reset_len,
        fds: [stdin_fd, out_w.as_raw_fd(), err_w.as_raw_fd()],
        errno: 0,
    };

    let pid = STACK.with(|stack| -> io::Result<libc::pid_t> {
        let mut stack = stack.borrow_mut();
        if stack.len() < STACK_SIZE {
            stack.resize(STACK_SIZE, 0);
        }
        // The stack grows down from its 16-byte aligned top.
        let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
        // No handler of this process may run in the child, which shares its
        // memory: every signal is blocked across the clone, and the child
        // unblocks them only after resetting the caught ones. The raw system
        // call, as glibc's posix_spawn does: its wrappers leave its internal
        // signals (32, 33) unblocked.
        let all: u64 = !0;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask reads and writes one 8-byte kernel sigset.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const all,
                &raw mut old,
                SIGSET_SIZE,
            );
        }
        // SAFETY: `child` only makes async-signal-safe calls on data that
        // outlives the clone (CLONE_VFORK suspends this thread until the
        // child has exec'd or exited), on a stack of its own.
        let pid = unsafe {
            libc::clone(
                child,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::addr_of_mut!(args_block).cast(),
            )
        };
        let err = io::Error::last_os_error();
        // SAFETY: restores the mask read above.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const old,
                std::ptr::null_mut::<u64>(),
                SIGSET_SIZE,
            );
        }
        if pid < 0 {
            return Err(err);
        }
        Ok(pid)
    })?;
    drop((out_w, err_w, stdin_copy));
    // SAFETY: read after the child is gone from this memory (exec'd or exited).
    let errno = unsafe { std::ptr::read_volatile(&raw const args_block.errno) };
    if errno != 0 {
        reap_blocking(pid);
        return Err(io::Error::from_raw_os_error(errno));
    }
    // The step runs from here: if what follows fails, it is killed and
    // reaped rather than left running unwatched.
    let guard = KillOnError(pid);
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = if pidfd < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            NO_PIDFD.store(true, Ordering::Relaxed);
        }
        // Awaited by polling (below) for this child.
        None
    } else {
        // SAFETY: a new descriptor owned here only.
        let fd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        // SAFETY: an `OwnedFd` keeps its descriptor open and the same until
        // it is dropped, with the `AsyncFd`.
        let registered =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        Some(registered.map_err(io::Error::from)?)
    };
    let child = Child {
        pid,
        pidfd,
        status: None,
        stdout: Some(receiver(out_r)?),
        stderr: Some(receiver(err_r)?),
    };
    std::mem::forget(guard);
    Ok(Some(child))
}

/// Kills the group of a child whose setup failed after it started, and
/// reaps it.
struct KillOnError(libc::pid_t);

impl Drop for KillOnError {
    fn drop(&mut self) {
        // SAFETY: the child's own group (it called setpgid(0, 0)); kill
        // writes nothing.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
        reap_blocking(self.0);
    }
}

/// Waits for child `pid` to end (it has exited or been killed).
fn reap_blocking(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child writes `status`.
    while unsafe { libc::waitpid(pid, &raw mut status, 0) } < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

fn receiver(fd: OwnedFd) -> io::Result<pipe::Receiver> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor owned here.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// `NAME=value` strings, a later name replacing an earlier one in place.
fn environment(vars: &[(&OsStr, &OsStr)]) -> io::Result<Vec<CString>> {
    let mut names: std::collections::HashMap<&[u8], usize> =
        std::collections::HashMap::with_capacity(vars.len());
    let mut out: Vec<CString> = Vec::with_capacity(vars.len());
    for (k, v) in vars {
        let mut s = Vec::with_capacity(k.len() + v.len() + 1);
        s.extend_from_slice(k.as_bytes());
        s.push(b'=');
        s.extend_from_slice(v.as_bytes());
        let s = CString::new(s).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a NUL byte in the environment variable {}",
                    k.to_string_lossy()
                ),
            )
        })?;
        match names.get(k.as_bytes()) {
            Some(&i) => out[i] = s,
            None => {
                names.insert(k.as_bytes(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// The child: runs on its own stack in the parent's memory until `execve`.
/// Only async-signal-safe libc calls; no allocation, no panic.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and untouched by the
    // suspended parent until this function's process execs or exits.
    unsafe {
        let a = &mut *arg.cast::<ChildArgs>();
        // The kernel's struct sigaction, all zero: SIG_DFL, no flags, empty
        // mask. The raw call also resets glibc's internal signals, which its
        // `sigaction` wrapper refuses.
        let dfl = [0u64; 4];
        for &sig in a.reset.iter().take(a.reset_len) {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &raw const dfl,
                std::ptr::null_mut::<u64>(),
                SIGSET_SIZE,
            );
        }
        libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE,
            &raw const dfl,
            std::ptr::null_mut::<u64>(),
            SIGSET_SIZE,
        );
        if libc::setpgid(0, 0) != 0 || libc::chdir(a.cwd) != 0 {
            fail(a);
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(a);
            }
        }
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            std::ptr::null_mut::<u64>(),
            SIGSET_SIZE,
        );
        libc::execve(a.program, a.argv, a.envp);
        fail(a)
    }
}

/// Records why the child could not exec, for the parent, and exits.
unsafe fn fail(a: &mut ChildArgs) -> ! {
    // SAFETY: errno of this thread (the parent's, which is suspended).
    unsafe {
        a.errno = *libc::__errno_location();
        if a.errno == 0 {
            a.errno = libc::EINVAL;
        }
        libc::_exit(127)
    }
}

impl Child {
    pub(super) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to exit and reaps it. Cancel-safe: the status is
    /// kept once read.
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.status {
                return Ok(s);
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut guard = fd.readable().await?;
                    self.status = try_reap(self.pid)?;
                    if self.status.is_none() {
                        guard.clear_ready();
                    }
                }
                None => {
                    self.status = try_reap(self.pid)?;
                    if self.status.is_none() {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
            }
        }
    }
}

/// The status of child `pid` if it has exited (it is reaped then).
fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: waitpid on our own child writes `status`; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r == pid).then(|| ExitStatus::from_raw(status)))
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() || matches!(try_reap(self.pid), Ok(Some(_))) {
            return;
        }
        // Dropped while running (the attempt was dropped): it is reaped when
        // it ends, if a runtime is there to wait (else it stays a zombie
        // until pipe exits, like the process-tree cleanup's leftovers).
        let pid = self.pid;
        if let (Some(fd), Ok(rt)) = (self.pidfd.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = fd.readable().await;
                let _ = try_reap(pid);
            });
        }
    }
}

/// Reads `CStr`s for tests.
#[cfg(test)]
fn strs(v: &[CString]) -> Vec<&std::ffi::CStr> {
    v.iter().map(CString::as_c_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use tokio::io::AsyncReadExt;

    #[test]
    fn a_later_variable_replaces_an_earlier_one_in_place() {
        let o = OsStr::new;
        let env = environment(&[(o("A"), o("1")), (o("B"), o("2")), (o("A"), o("3"))]).unwrap();
        assert_eq!(strs(&env), [c"A=3", c"B=2"]);
        assert!(environment(&[(o("A"), o("x\0y"))]).is_err());
    }

    fn run(spec: &Spec<'_>) -> (ExitStatus, String, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A caught signal, as pipe's run has (SIGINT, SIGTERM, SIGCHLD).
            let _sig =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                    .unwrap();
            let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
            let mut c = spawn(spec, null.as_fd()).unwrap().expect("pidfd available");
            let (mut out, mut err) = (String::new(), String::new());
            let mut so = c.stdout.take().unwrap();
            let mut se = c.stderr.take().unwrap();
            let (a, b) = tokio::join!(so.read_to_string(&mut out), se.read_to_string(&mut err));
            a.unwrap();
            b.unwrap();
            (c.wait().await.unwrap(), out, err)
        })
    }

    #[test]
    fn the_child_gets_its_arguments_environment_directory_group_and_default_signals() {
        let dir = tempfile::tempdir().unwrap();
        let o = OsStr::new;
        // The shell reads its own signal state first, with builtins only:
        // while it waits for a child, dash blocks every signal.
        let script = "while read -r l; do case $l in Sig*) echo \"$l\" >&2;; esac; \
             done < /proc/$$/status; \
             printf '%s|%s|%s|' \"$1\" \"$X\" \"$PWD\"; \
             read -r stat < /proc/$$/stat; set -- $stat; test \"$5\" = $$ && printf grp; \
             exit 7";
        let args = [o("-c"), o(script), o("sh"), o("one word; $(two)")];
        let env = [
            (o("X"), o("old")),
            (o("PATH"), o("/usr/bin:/bin")),
            (o("X"), o("new")),
        ];
        let spec = Spec {
            program: o("/bin/sh"),
            args: &args,
            env: &env,
            cwd: dir.path(),
        };
        let (status, out, err) = run(&spec);
        assert_eq!(status.code(), Some(7));
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("one word; $(two)|new|{}|grp", cwd.display()));
        // No signal blocked, and SIGPIPE (ignored by Rust programs) back to
        // its default; what pipe ignores otherwise stays ignored, as with
        // `std` (SigCgt is the shell's own: exec resets caught signals).
        let field = |name: &str| {
            let v = err
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {err}"));
            u64::from_str_radix(v.trim(), 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "{err}");
        assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{err}");
    }

    #[test]
    fn an_exec_failure_is_the_spawns_error_and_leaves_no_child() {
        let o = OsStr::new;
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        for (program, cwd) in [("/nonexistent/sh", "/"), ("/bin/sh", "/nonexistent-dir")] {
            let spec = Spec {
                program: o(program),
                args: &[o("-c"), o("true")],
                env: &[],
                cwd: std::path::Path::new(cwd),
            };
            let Err(e) = spawn(&spec, null.as_fd()) else {
                panic!("spawned {program} in {cwd}")
            };
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{program} in {cwd}");
        }
        // This thread made both children and reaped them (where the kernel
        // lists a thread's children).
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        if let Ok(children) = std::fs::read_to_string(format!("/proc/self/task/{tid}/children")) {
            assert_eq!(children.trim(), "", "children left: {children}");
        }
    }
}
