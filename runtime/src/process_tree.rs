//! Finding and killing every process a step started, even those that left its
//! process group with `setsid`. Each step runs in its own process group and
//! carries a token in its environment (`PIPE_STEP_TOKEN`); a process belongs to
//! the step when it is in the step's group or inherited the token. Descendants
//! that scrub their environment *and* leave the group escape; a cgroup would
//! catch those, and is future work (see docs/runtime.md).

use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// The environment variable that marks a step's processes.
pub const TOKEN_VAR: &str = "PIPE_STEP_TOKEN";

/// Processes in group `pgid` or whose environment holds `TOKEN_VAR=token`
/// (or, with `prefix`, a token starting with it). Never includes this process.
pub fn members(pgid: Option<i32>, token: &str, prefix: bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let needle = format!("{TOKEN_VAR}={token}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(g) = pgid {
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // Fields after the `(comm)`: state ppid pgrp ...
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    if f.first() == Some(&"Z") {
                        continue;
                    }
                    if f.get(2).and_then(|s| s.parse::<i32>().ok()) == Some(g) {
                        out.push(pid);
                        continue;
                    }
                }
            }
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            let hit = env.split(|&b| b == 0).any(|kv| {
                if prefix {
                    kv.starts_with(needle.as_bytes())
                } else {
                    kv == needle.as_bytes()
                }
            });
            if hit {
                out.push(pid);
            }
        }
    }
    out
}

/// Sends `sig` to the group and to every tracked member.
pub fn signal_all(pgid: Option<i32>, token: &str, prefix: bool, sig: Signal) -> usize {
    if let Some(g) = pgid {
        let _ = killpg(Pid::from_raw(g), sig);
    }
    let found = members(pgid, token, prefix);
    for &p in &found {
        let _ = kill(Pid::from_raw(p), sig);
    }
    found.len()
}

/// SIGKILLs the step's processes until none is left (processes may fork while
/// being killed), for at most `bound`.
pub async fn kill_all(pgid: Option<i32>, token: &str, prefix: bool, bound: Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let n = signal_all(pgid, token, prefix, Signal::SIGKILL);
        if n == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether any process of the step is still alive.
pub fn any_alive(pgid: Option<i32>, token: &str) -> bool {
    !members(pgid, token, false).is_empty()
}

/// [`kill_all`] for callers outside the async runtime.
pub fn kill_all_blocking(pgid: Option<i32>, token: &str, prefix: bool, bound: Duration) {
    let deadline = std::time::Instant::now() + bound;
    loop {
        let n = signal_all(pgid, token, prefix, Signal::SIGKILL);
        if n == 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
