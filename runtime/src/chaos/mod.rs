//! Chaos stages: the `chaos` executor starts a fault proxy ([`proxy`]) or
//! schedules container faults ([`container`]) for a `chaos NAME { ... }`
//! block, and succeeds at once with `url`, `host`, `port` and `seed` as
//! outputs, so that the steps of its stage can use `chaos.NAME.url`. What it
//! started stays registered here until the scheduler sees the rest of the
//! stage finished ([`settle`]); then it is torn down and its report becomes
//! the step's `report` output. See docs/chaos.md.

pub mod container;
pub mod proxy;
pub mod spec;

use std::sync::{Arc, Mutex};

use pipe_lang::plan::PlanStep;

use crate::docker::log::LogSink;
use crate::executor::{BoxFuture, Executor, Io, Job, Outcome};

pub use proxy::Proxy;
pub use spec::{Fault, Spec};

/// Runs `chaos` blocks.
pub struct Chaos;

impl Executor for Chaos {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(run(job, io))
    }
}

enum Active {
    Proxy(Proxy),
    Containers(container::ContainerFaults),
}

struct Entry {
    /// The job's process token: `<run key>/<step id>/<attempt>`.
    token: String,
    step_id: String,
    active: Active,
    sink: Arc<LogSink>,
}

/// What the chaos blocks of every run in this process have started.
static ACTIVE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn active() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn run(job: Job, io: Io) -> Outcome {
    let name = job.step_id.rsplit('.').next().unwrap_or(&job.step_id);
    let spec = match Spec::from_inputs(name, &job.inputs) {
        Ok(s) => s,
        Err(e) => return Outcome::error(format!("chaos `{name}`: {e}")),
    };
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => return Outcome::error(e),
    };
    let faults: Vec<String> = spec.faults.iter().map(Fault::describe).collect();
    let faults = if faults.is_empty() {
        "no fault".to_string()
    } else {
        faults.join(", ")
    };
    let seed = spec.seed;
    let seeded = spec.seeded;
    let mut outcome = Outcome {
        ending: crate::executor::Ending::Succeeded,
        exit_code: None,
        outputs: indexmap::IndexMap::new(),
        error: None,
        class: None,
    };
    let started = if spec.container.is_some() {
        let target = spec.container.clone().unwrap_or_default();
        let run_key = crate::docker::run_key(&job);
        match container::ContainerFaults::start(spec, &run_key, &job.step_id, sink.clone()).await {
            Ok(c) => {
                sink.line(false, &format!("chaos: on container `{target}`: {faults}"));
                outcome.outputs.insert("container".into(), target);
                Active::Containers(c)
            }
            Err(e) => return Outcome::error(format!("chaos `{name}`: {e}")),
        }
    } else {
        let upstream = spec.upstream.clone().unwrap_or_default();
        match Proxy::start(spec) {
            Ok(p) => {
                sink.line(
                    false,
                    &format!("chaos: proxy {} -> {upstream}: {faults}", p.url),
                );
                outcome.outputs.insert("url".into(), p.url.clone());
                outcome.outputs.insert("host".into(), p.host.clone());
                outcome
                    .outputs
                    .insert("port".into(), p.addr.port().to_string());
                Active::Proxy(p)
            }
            Err(e) => return Outcome::error(format!("chaos `{name}`: {e}")),
        }
    };
    if !seeded {
        sink.line(
            false,
            &format!("chaos: seed {seed} (write `seed = {seed}` to replay this run's faults)"),
        );
    }
    outcome.outputs.insert("seed".into(), seed.to_string());
    active().push(Entry {
        token: job.token.clone(),
        step_id: job.step_id.clone(),
        active: started,
        sink,
    });
    outcome
}

/// A chaos block torn down.
#[derive(Debug)]
pub struct Ended {
    pub step_id: String,
    /// What it did: requests seen and faults injected, per fault.
    pub report: serde_json::Value,
    /// The report in one line, for people.
    pub summary: String,
    /// A fault that could not be injected (container not found, Engine error).
    pub error: Option<String>,
}

/// Whether a chaos block of the run whose tokens start with `token_base` is active.
pub fn any_active(token_base: &str) -> bool {
    active().iter().any(|e| e.token.starts_with(token_base))
}

/// Tears down the active chaos blocks of a run for which `stage_over(step_id)`
/// holds, and returns their reports.
pub async fn settle(token_base: &str, stage_over: impl Fn(&str) -> bool) -> Vec<Ended> {
    let ending: Vec<Entry> = {
        let mut list = active();
        let (end, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|e| e.token.starts_with(token_base) && stage_over(&e.step_id));
        *list = keep;
        end
    };
    let mut out = Vec::new();
    for e in ending {
        let (report, error) = match e.active {
            Active::Proxy(p) => (p.stop(), None),
            Active::Containers(c) => c.stop().await,
        };
        let summary = summary(&report);
        e.sink.line(false, &format!("chaos: stopped; {summary}"));
        if let Some(err) = &error {
            e.sink.line(true, &format!("chaos: {err}"));
        }
        out.push(Ended {
            step_id: e.step_id,
            report,
            summary,
            error,
        });
    }
    out
}

/// `412 requests; http_status 429: 121/400, latency 3000ms±500ms: 80/400`.
pub fn summary(report: &serde_json::Value) -> String {
    let faults: Vec<String> = report["faults"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|f| {
                    let what = f["fault"].as_str().unwrap_or("?");
                    if report["type"] == "proxy" {
                        format!(
                            "{what}: {}/{}",
                            f["injected"].as_u64().unwrap_or(0),
                            f["seen"].as_u64().unwrap_or(0)
                        )
                    } else {
                        format!(
                            "{what}: {}",
                            if f["injected"].as_u64().unwrap_or(0) > 0 {
                                format!("injected at {}ms", f["at_ms"].as_u64().unwrap_or(0))
                            } else {
                                "not injected".into()
                            }
                        )
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let head = if report["type"] == "proxy" {
        format!(
            "{} requests, {} forwarded, {} upstream errors",
            report["requests"], report["forwarded"], report["upstream_errors"]
        )
    } else {
        format!("container {}", report["target"].as_str().unwrap_or("?"))
    };
    if faults.is_empty() {
        head
    } else {
        format!("{head}; {}", faults.join(", "))
    }
}

/// Whether a failure of `step` only warns and so lets the steps that need it
/// run: a main step of a stage that is not `required` (docs/chaos.md,
/// "Policy"). A handler step's failure never changes the run's outcome, but
/// it still stops the handler steps that need it.
pub fn failure_only_warns(step: &PlanStep) -> bool {
    !step.required && step.handler.is_none()
}

/// Whether every step of `stage` other than its chaos blocks has finished or
/// can no longer start: none is running or waiting for a retry, and each
/// pending one depends (transitively) on a failure, or the run is stopping.
/// `status(i)` is the scheduler's status name of step `i`.
pub fn stage_over(
    steps: &[&PlanStep],
    status: &dyn Fn(usize) -> &'static str,
    stopping: bool,
    stage: &str,
) -> bool {
    fn can_run(
        i: usize,
        steps: &[&PlanStep],
        status: &dyn Fn(usize) -> &'static str,
        memo: &mut Vec<Option<bool>>,
    ) -> bool {
        match status(i) {
            "running" | "retrying" => true,
            "pending" => {
                if let Some(m) = memo[i] {
                    return m;
                }
                // Provisional, against cycles (a plan has none).
                memo[i] = Some(true);
                let r = steps[i]
                    .needs
                    .iter()
                    .filter(|&&d| d < steps.len())
                    .all(|&d| can_run(d, steps, status, memo));
                memo[i] = Some(r);
                r
            }
            "failed" | "timed_out" => failure_only_warns(steps[i]),
            "cancelled" => false,
            _ => true,
        }
    }
    let mut memo = vec![None; steps.len()];
    steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.stage == stage && s.executor != "chaos")
        .all(|(i, _)| match status(i) {
            // A gate waiting for a decision can still let its branch go on.
            "running" | "retrying" | "waiting" => false,
            "pending" => stopping || !can_run(i, steps, status, &mut memo),
            _ => true,
        })
}
