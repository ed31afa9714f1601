//! The `policy` gate executor: `require` must be `true` or the gate fails,
//! `warn` must be `true` or a warning is printed, `message` says why the
//! policy exists. Both expressions are evaluated by the scheduler before the
//! gate runs; one that cannot be evaluated (a missing output, a type error)
//! fails the gate there, closed, with the reason (see
//! [`super::cannot_evaluate`]). A value that is not a boolean fails it here.

use indexmap::IndexMap;
use pipe_lang::Value;

use crate::executor::{BoxFuture, Ending, Executor, Io, Job, LogLine, Outcome};
use crate::retry::Class;

pub struct Policy;

/// Reads `require` or `warn`: absent is `None`, a boolean is its value,
/// anything else is an error (a string "false" is not false).
fn condition(inputs: &IndexMap<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match inputs.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "`{key}` must be true or false, but it is a {} (`{other}`), so the gate fails closed; compare it, e.g. `steps.scan.outputs.critical == \"0\"`",
            other.type_name()
        )),
    }
}

impl Executor for Policy {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(async move {
            let message = job
                .inputs
                .get("message")
                .filter(|v| !matches!(v, Value::Null))
                .map(ToString::to_string);
            let say = |line: String, stderr: bool| {
                let _ = io.logs.send(LogLine {
                    index: job.index,
                    stderr,
                    line,
                });
            };
            let with_message = |s: &str| match &message {
                Some(m) => format!("{s}: {m}"),
                None => s.to_string(),
            };
            let (require, warn) = match (
                condition(&job.inputs, "require"),
                condition(&job.inputs, "warn"),
            ) {
                (Ok(r), Ok(w)) => (r, w),
                (Err(e), _) | (_, Err(e)) => {
                    return Outcome::failed(Ending::Failed, e, Some(Class::Permanent))
                }
            };
            if require == Some(false) {
                return Outcome::failed(
                    Ending::Failed,
                    with_message("policy not met (`require` is false)"),
                    Some(Class::Permanent),
                );
            }
            let mut outputs = IndexMap::new();
            outputs.insert("passed".to_string(), "true".to_string());
            let warned = warn == Some(false);
            if warned {
                say(
                    format!("warning: {}", with_message("`warn` is false")),
                    true,
                );
            } else {
                say(with_message("policy met"), false);
            }
            outputs.insert("warned".to_string(), warned.to_string());
            Outcome {
                ending: Ending::Succeeded,
                exit_code: None,
                outputs,
                error: None,
                class: None,
            }
        })
    }
}
