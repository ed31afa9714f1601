//! The step log of a Docker executor: every line goes to the attempt's log
//! file and to the scheduler, as the shell executor's output does. Engine
//! streams arrive in arbitrary chunks, so partial lines are held until their
//! newline.

use std::io::Write as _;
use std::sync::Mutex;

use tokio::sync::mpsc::UnboundedSender;

use crate::executor::{Job, LogLine};

pub struct LogSink {
    index: usize,
    tx: UnboundedSender<LogLine>,
    mask: crate::mask::SharedMasker,
    file: Mutex<std::fs::File>,
    /// Unterminated tails of stdout and stderr.
    partial: Mutex<[Vec<u8>; 2]>,
}

impl LogSink {
    /// Creates the attempt's log file (and its directory).
    pub fn create(job: &Job, tx: UnboundedSender<LogLine>) -> Result<LogSink, String> {
        if let Some(dir) = job.log_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = std::fs::File::create(&job.log_path)
            .map_err(|e| format!("cannot create {}: {e}", job.log_path.display()))?;
        Ok(LogSink {
            index: job.index,
            tx,
            mask: job.mask.clone(),
            file: Mutex::new(file),
            partial: Mutex::new([Vec::new(), Vec::new()]),
        })
    }

    /// One whole line.
    pub fn line(&self, stderr: bool, line: &str) {
        let line = crate::mask::mask_with(&self.mask, line);
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
            let _ = f.write_all(b"\n");
        }
        let _ = self.tx.send(LogLine {
            index: self.index,
            stderr,
            line,
        });
    }

    /// Several lines at once (a message from the Engine).
    pub fn text(&self, stderr: bool, text: &str) {
        for l in text.lines() {
            self.line(stderr, l.strip_suffix('\r').unwrap_or(l));
        }
    }

    /// A chunk of a stream: complete lines are emitted, the rest is held.
    pub fn chunk(&self, stderr: bool, bytes: &[u8]) {
        let lines: Vec<String> = {
            let Ok(mut p) = self.partial.lock() else {
                return;
            };
            let buf = &mut p[usize::from(stderr)];
            buf.extend_from_slice(bytes);
            let mut out = Vec::new();
            while let Some(n) = buf.iter().position(|&b| b == b'\n') {
                let rest = buf.split_off(n + 1);
                let line = std::mem::replace(buf, rest);
                out.push(clean(&line));
            }
            out
        };
        for l in lines {
            self.line(stderr, &l);
        }
    }

    /// Emits what is left of unterminated lines.
    pub fn flush(&self) {
        let tails: Vec<(bool, String)> = {
            let Ok(mut p) = self.partial.lock() else {
                return;
            };
            let mut out = Vec::new();
            for (i, buf) in p.iter_mut().enumerate() {
                if !buf.is_empty() {
                    out.push((i == 1, clean(buf)));
                    buf.clear();
                }
            }
            out
        };
        for (stderr, l) in tails {
            self.line(stderr, &l);
        }
    }
}

fn clean(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let t = text.strip_suffix('\n').unwrap_or(&text);
    t.strip_suffix('\r').unwrap_or(t).to_string()
}
