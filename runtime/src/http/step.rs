//! What every HTTP-speaking executor shares: reading its template inputs,
//! writing its log (to the attempt's log file and to the scheduler), and
//! turning its result into an [`Outcome`] under the step's timeout and the
//! scheduler's stop requests.

use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use pipe_lang::value::format_duration;
use pipe_lang::Value;
use tokio::sync::mpsc;

use crate::executor::{Ending, Io, Job, LogLine, Outcome, Stop};
use crate::retry::Class;

/// Outputs of a successful step.
pub(crate) type Outputs = IndexMap<String, String>;

/// Why an attempt failed, and whether another attempt may help.
#[derive(Debug)]
pub(crate) struct Failure {
    pub ending: Ending,
    pub message: String,
    pub class: Option<Class>,
}

impl Failure {
    /// The step is misconfigured: no attempt will do better.
    pub fn config(message: impl Into<String>) -> Failure {
        Failure {
            ending: Ending::Error,
            message: message.into(),
            class: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            ending: Ending::Failed,
            message: message.into(),
            class: Some(Class::Permanent),
        }
    }

    pub fn transient(message: impl Into<String>, after: Option<Duration>) -> Failure {
        Failure {
            ending: Ending::Failed,
            message: message.into(),
            class: Some(Class::Transient { after }),
        }
    }
}

/// The inputs and the log of one attempt.
pub(crate) struct Ctx {
    pub inputs: IndexMap<String, Value>,
    pub attempt: u32,
    pub step_id: String,
    pub env: Vec<(String, String)>,
    index: usize,
    logs: mpsc::UnboundedSender<LogLine>,
    file: Arc<Mutex<std::fs::File>>,
    mask: crate::mask::SharedMasker,
}

impl Ctx {
    /// The run's masker: every secret of the run, from every source.
    pub fn masker(&self) -> crate::mask::SharedMasker {
        self.mask.clone()
    }

    /// A line in the step's log.
    pub fn log(&self, line: impl Into<String>) {
        let line = crate::mask::mask_with(&self.mask, &line.into());
        for l in line.lines() {
            if let Ok(mut f) = self.file.lock() {
                let _ = writeln!(f, "{l}");
            }
            let _ = self.logs.send(LogLine {
                index: self.index,
                stderr: false,
                line: l.to_string(),
            });
        }
    }

    /// A line on the step's stderr stream (warnings).
    pub fn warn(&self, line: impl Into<String>) {
        let line = crate::mask::mask_with(&self.mask, &line.into());
        if let Ok(mut f) = self.file.lock() {
            let _ = writeln!(f, "{line}");
        }
        let _ = self.logs.send(LogLine {
            index: self.index,
            stderr: true,
            line,
        });
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.inputs.get(key).filter(|v| !matches!(v, Value::Null))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>, Failure> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => scalar_text(v)
                .map(Some)
                .ok_or_else(|| Failure::config(format!("`{key}` must be a string"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<String, Failure> {
        self.opt_str(key)?
            .ok_or_else(|| Failure::config(format!("`{key}` is required")))
    }

    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration, Failure> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Duration(ms)) => Ok(Duration::from_millis(*ms)),
            Some(_) => Err(Failure::config(format!("`{key}` must be a duration"))),
        }
    }

    pub fn float(&self, key: &str) -> Result<Option<f64>, Failure> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Float(f)) => Ok(Some(*f)),
            Some(Value::Int(i)) => Ok(Some(*i as f64)),
            Some(_) => Err(Failure::config(format!("`{key}` must be a number"))),
        }
    }

    pub fn int(&self, key: &str, default: i64) -> Result<i64, Failure> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Int(i)) => Ok(*i),
            Some(_) => Err(Failure::config(format!("`{key}` must be a whole number"))),
        }
    }

    pub fn bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(Value::truthy)
    }

    /// A `map<string>` input as pairs, in declaration order.
    pub fn pairs(&self, key: &str) -> Result<Vec<(String, String)>, Failure> {
        pairs_of(self.get(key), key)
    }
}

/// A `map<string>` value as pairs.
pub(crate) fn pairs_of(v: Option<&Value>, what: &str) -> Result<Vec<(String, String)>, Failure> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| {
                scalar_text(v)
                    .map(|s| (k.clone(), s))
                    .ok_or_else(|| Failure::config(format!("`{what}.{k}` must be a string")))
            })
            .collect(),
        Some(_) => Err(Failure::config(format!("`{what}` must be a map"))),
    }
}

/// A scalar as the text it stands for (strings unquoted).
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Duration(ms) => Some(format_duration(*ms)),
        _ => None,
    }
}

/// Runs `body` as one attempt: under the step's timeout, stopped when the
/// scheduler cancels, with a log file per attempt like the shell executor's.
pub(crate) async fn drive<F, Fut>(job: Job, mut io: Io, body: F) -> Outcome
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<Outputs, Failure>>,
{
    if let Some(dir) = job.log_path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Outcome::error(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let file = match std::fs::File::create(&job.log_path) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => return Outcome::error(format!("cannot create {}: {e}", job.log_path.display())),
    };
    let ctx = Ctx {
        inputs: job.inputs,
        attempt: job.attempt,
        step_id: job.step_id,
        env: job.env,
        index: job.index,
        logs: io.logs.clone(),
        file,
        mask: job.mask,
    };
    let timeout = job.timeout;
    let expired = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let stopped = async {
        loop {
            if *io.stop.borrow() != Stop::Run {
                return;
            }
            if io.stop.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        r = body(ctx) => match r {
            Ok(outputs) => Outcome {
                ending: Ending::Succeeded,
                exit_code: None,
                outputs,
                error: None,
                class: None,
            },
            Err(f) => Outcome::failed(f.ending, f.message, f.class),
        },
        () = expired => Outcome::failed(
            Ending::TimedOut,
            format!("timed out after {}", format_duration(timeout.map_or(0, |t| t.as_millis() as u64))),
            Some(Class::Transient { after: None }),
        ),
        () = stopped => Outcome::failed(Ending::Cancelled, "cancelled", None),
    }
}
