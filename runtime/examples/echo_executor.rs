//! The executor that docs/executors.md walks through: `echo` writes its
//! `message` input to the step's log and returns it as an output. Run it with
//! `cargo run -p pipe-runtime --example echo_executor`; `cargo test` builds it,
//! so the guide's code always compiles.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use pipe_lang::Value;
use pipe_runtime::executor::{
    BoxFuture, Ending, Executor, Io, Job, LogLine, Outcome, Registry, Stop,
};
use pipe_runtime::mask::Masker;
use tokio::sync::{mpsc, watch};

// ANCHOR: executor
/// Writes `message` to the step log and returns it as the output `message`.
pub struct Echo;

impl Executor for Echo {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(async move {
            // Inputs are the template's arguments, fully evaluated.
            let Some(message) = job.inputs.get("message").map(ToString::to_string) else {
                return Outcome::error("`message` is required");
            };
            // The log file of this attempt is the executor's to write; the
            // masker removes secrets from anything written there.
            let masked = pipe_runtime::mask::mask_with(&job.mask, &message);
            if let Err(e) = std::fs::write(&job.log_path, format!("{masked}\n")) {
                return Outcome::error(format!("cannot write {}: {e}", job.log_path.display()));
            }
            // Lines sent here become `step_log` events and the live output.
            let _ = io.logs.send(LogLine {
                index: job.index,
                stderr: false,
                line: masked.clone(),
            });
            let mut outputs = IndexMap::new();
            outputs.insert("message".to_string(), message);
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
// ANCHOR_END: executor

fn main() {
    // ANCHOR: register
    let mut registry = Registry::builtin();
    registry.register("echo", Arc::new(Echo));
    // ANCHOR_END: register
    let dir = std::env::temp_dir().join(format!("pipe-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut inputs = IndexMap::new();
    inputs.insert("message".to_string(), Value::Str("hello from echo".into()));
    let job = Job {
        index: 0,
        step_id: "demo.say".into(),
        attempt: 1,
        command: None,
        shell: None,
        env: Vec::new(),
        inputs,
        cwd: dir.clone(),
        timeout: None,
        grace: Duration::from_secs(1),
        log_path: dir.join("demo.say.1.log"),
        output_path: dir.join("demo.say.1.out"),
        token: "echo-example".into(),
        mask: Masker::shared(),
        secrets: pipe_runtime::secrets::StepSecrets::default(),
    };
    let (logs, mut lines) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = watch::channel(Stop::Run);
    let executor = registry.get("echo").expect("registered");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(executor.run(job, Io { logs, stop }));
    while let Ok(l) = lines.try_recv() {
        println!("log: {}", l.line);
    }
    println!("{:?}: outputs {:?}", outcome.ending, outcome.outputs);
    let _ = std::fs::remove_dir_all(&dir);
}
