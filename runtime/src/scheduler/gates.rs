//! The dispatcher's side of approval gates (see [`crate::gate`] and
//! docs/gates.md): opening a gate, reading its decision from the store on the
//! poll timer, stopping a non-interactive run when only gates are left, and
//! the `run.*` context handlers see.

use indexmap::IndexMap;
use pipe_lang::plan::PlanStep;
use pipe_lang::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Done, RunEnd, Scheduler, Slot, Started, Status};
use crate::event::Event;
use crate::executor::{Ending, Job, Outcome};
use crate::gate::{self, DecideError, Decision};
use crate::mask::mask_with;
use crate::retry::Class;
use crate::state::{now_ms, StateError};

/// The terminal prompt of an interactive run: the gate asked about, the
/// gates already asked (each once), and the lines typed on stdin.
#[derive(Default)]
pub(super) struct Prompt {
    asking: Option<usize>,
    asked: std::collections::BTreeSet<usize>,
    lines: Option<mpsc::UnboundedReceiver<String>>,
}

/// The next line typed at the prompt (never, when not prompting).
pub(super) async fn recv_answer(p: &mut Prompt) -> Option<String> {
    match &mut p.lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Scheduler<'_> {
    /// On a terminal, asks the current user about the first waiting gate
    /// not asked yet. stdin is read on a thread of its own, started once.
    pub(super) fn ask(
        &mut self,
        steps: &[&PlanStep],
        waiting: &std::collections::BTreeSet<usize>,
        p: &mut Prompt,
    ) {
        if !self.gates.prompt || p.asking.is_some_and(|i| waiting.contains(&i)) {
            return;
        }
        p.asking = None;
        let Some(&i) = waiting.iter().find(|i| !p.asked.contains(i)) else {
            return;
        };
        if p.lines.is_none() {
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            p.lines = Some(rx);
        }
        p.asking = Some(i);
        p.asked.insert(i);
        self.emit(Event::GatePrompt {
            run: self.run_id,
            step: steps[i].id.clone(),
            user: gate::identity::current_user(),
        });
    }

    /// Records the answer typed at the prompt, under the same rules as
    /// `pipe approve` / `pipe reject` (recorded with `via = "inline"`).
    pub(super) fn answer(
        &mut self,
        steps: &[&PlanStep],
        line: &str,
        p: &mut Prompt,
    ) -> Result<(), StateError> {
        let Some(i) = p.asking.take() else {
            return Ok(());
        };
        let decision = match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Decision::Approve,
            "n" | "no" => Decision::Reject,
            _ => return Ok(()),
        };
        let user = gate::identity::current_user();
        match gate::decide(
            self.store,
            self.run_id,
            &steps[i].id,
            &user,
            decision,
            None,
            "inline",
            Some(&self.plan_hash),
        ) {
            Ok(_) => Ok(()),
            Err(DecideError::Refused(reason)) => {
                self.emit(Event::GateRefused {
                    run: self.run_id,
                    step: steps[i].id.clone(),
                    user,
                    reason,
                });
                Ok(())
            }
            Err(DecideError::State(e)) => Err(e),
        }
    }

    /// Opens an approval gate (or finds it open, on resume), records an
    /// `--approve-as` approval, and settles it at once if decided.
    pub(super) fn open_gate(
        &mut self,
        i: usize,
        step: &PlanStep,
        slot: &mut Slot,
        job: &Job,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) -> Result<Started, StateError> {
        slot.when_checked = true;
        slot.attempt = job.attempt;
        slot.started_ms = Some(now_ms());
        slot.attempt_start = Some(Instant::now());
        slot.first_start.get_or_insert_with(Instant::now);
        slot.error = None;
        let masker = self.masker.clone();
        let spec = match gate::Spec::from_inputs(self.plan, step, &job.inputs, |t| {
            mask_with(&masker, t)
        }) {
            Ok(s) => s,
            Err(msg) => {
                slot.status = Status::Failed;
                slot.error = Some(format!("{}: {msg}", self.plan.location(step.span)));
                self.record(step, slot)?;
                self.finished_event(step, slot, false);
                return Ok(Started::Failed);
            }
        };
        let (rec, how) = gate::open(self.store, self.run_id, &self.plan_hash, &spec)?;
        slot.status = Status::Waiting;
        self.record(step, slot)?;
        // A resumed run that finds the gate decided only reports the decision.
        let announce = rec.status == "pending" || how != gate::Opened::Existing;
        if announce {
            self.announce_gate(step, &rec, how);
        }
        if let Some(user) = self.gates.approve_as.clone() {
            if rec.status == "pending" && !rec.is_overdue(now_ms()) {
                match gate::decide(
                    self.store,
                    self.run_id,
                    &step.id,
                    &user,
                    Decision::Approve,
                    None,
                    "approve-as",
                    Some(&self.plan_hash),
                ) {
                    Ok(_) => {}
                    Err(DecideError::Refused(reason)) => self.emit(Event::GateRefused {
                        run: self.run_id,
                        step: step.id.clone(),
                        user,
                        reason,
                    }),
                    Err(DecideError::State(e)) => return Err(e),
                }
            }
        }
        match self.check_gate(step)? {
            Some(outcome) => {
                let _ = done_tx.send(Done::Attempt(i, outcome));
                Ok(Started::Running)
            }
            None => Ok(Started::Waiting),
        }
    }

    fn announce_gate(&mut self, step: &PlanStep, rec: &gate::GateRecord, how: gate::Opened) {
        self.emit(Event::GateOpened {
            run: self.run_id,
            step: step.id.clone(),
            approvers: rec.approvers.clone(),
            min_approvals: rec.min_approvals,
            deadline_ms: rec.deadline_ms,
            message: rec.message.clone(),
            shown: rec.shown.clone(),
            plan_hash: rec.plan_hash.clone(),
            how: match how {
                gate::Opened::New => "new",
                gate::Opened::Existing => "existing",
                gate::Opened::Replanned => "replanned",
            },
            approved_by: rec.approved_by(),
        });
    }

    /// Reads a waiting gate's state: `None` while it is pending, else the
    /// outcome of its step (an expired deadline fails it, closed).
    pub(super) fn check_gate(&mut self, step: &PlanStep) -> Result<Option<Outcome>, StateError> {
        let Some(mut rec) = gate::gate(self.store, self.run_id, &step.id)? else {
            return Ok(Some(Outcome::error(
                "the gate's record is missing from the state store; it fails closed",
            )));
        };
        if rec.is_overdue(now_ms()) {
            if let Some(r) = gate::expire(self.store, self.run_id, &step.id)? {
                rec = r;
            }
        }
        let failed = |m: String| Outcome::failed(Ending::Failed, m, Some(Class::Permanent));
        let outcome = match rec.status.as_str() {
            "pending" => return Ok(None),
            "approved" => {
                let by = rec.approved_by();
                let comment = rec.decisions.iter().rev().find_map(|d| d.comment.clone());
                self.emit(Event::GateDecided {
                    run: self.run_id,
                    step: step.id.clone(),
                    decision: "approved".into(),
                    by: by.clone(),
                    comment,
                });
                let mut outputs = IndexMap::new();
                outputs.insert("approved_by".to_string(), by.join(","));
                outputs.insert(
                    "decided_at".to_string(),
                    crate::time::rfc3339(rec.decided_ms.unwrap_or_else(now_ms)),
                );
                Outcome {
                    ending: Ending::Succeeded,
                    exit_code: None,
                    outputs,
                    error: None,
                    class: None,
                }
            }
            "rejected" => {
                let d = rec.decisions.iter().rev().find(|d| d.decision == "reject");
                let by = d.map_or_else(|| "someone".to_string(), |d| d.user.clone());
                let comment = d.and_then(|d| d.comment.clone());
                self.emit(Event::GateDecided {
                    run: self.run_id,
                    step: step.id.clone(),
                    decision: "rejected".into(),
                    by: vec![by.clone()],
                    comment: comment.clone(),
                });
                failed(match comment {
                    Some(c) => format!("rejected by {by}: {c}"),
                    None => format!("rejected by {by}"),
                })
            }
            "expired" => {
                self.emit(Event::GateExpired {
                    run: self.run_id,
                    step: step.id.clone(),
                    deadline_ms: rec.deadline_ms,
                });
                failed(format!(
                    "no decision by {} (its timeout): the gate failed closed",
                    crate::time::rfc3339(rec.deadline_ms)
                ))
            }
            other => failed(format!(
                "the gate has an unknown state `{other}`; it fails closed"
            )),
        };
        Ok(Some(outcome))
    }

    /// Records the run as `waiting` (only gates are left) or back to
    /// `running`, once per change.
    pub(super) fn mark_waiting(&mut self, on: bool) -> Result<(), StateError> {
        if self.run_waiting != on {
            let status = if on { "waiting" } else { "running" };
            self.store
                .set_run_status(self.run_id, status, None, false)?;
            self.run_waiting = on;
        }
        Ok(())
    }

    /// Gates still waiting when the phase stops for another reason (a
    /// failure, a signal) are cancelled; the gates stay open for a resume.
    pub(super) fn abandon_gates(
        &mut self,
        steps: &[&PlanStep],
        slots: &mut [Slot],
        waiting: &std::collections::BTreeSet<usize>,
    ) -> Result<(), StateError> {
        for &i in waiting {
            let s = &mut slots[i];
            s.status = Status::Cancelled;
            s.error = Some(
                "the run stopped while this gate waited; it stays open for `pipe resume`".into(),
            );
            self.record(steps[i], s)?;
            self.finished_event(steps[i], &slots[i], false);
        }
        Ok(())
    }

    /// Ends the process's part of a run that stopped at gates.
    pub(super) fn stop_waiting(
        &mut self,
        t0: Instant,
    ) -> Result<(RunEnd, Option<String>), StateError> {
        self.store
            .set_run_status(self.run_id, "waiting", None, false)?;
        self.emit(Event::RunWaiting {
            run: self.run_id,
            gates: self.waiting_at.clone(),
            duration_ms: t0.elapsed().as_millis() as u64,
        });
        Ok((RunEnd::Waiting, None))
    }

    /// Adds what handlers (notifications) need to `run.*`: `env`,
    /// `started_by`, `duration` (since the run first started, waits and
    /// resumes included), `duration_ms` and `logs` (`PIPE_LOGS_URL` with
    /// `{run}` replaced by the id, or the run's log directory).
    pub(super) fn run_context(&self, run: &mut IndexMap<String, Value>) -> Result<(), StateError> {
        let rec = self.store.run(self.run_id)?;
        let ms = u64::try_from(now_ms() - rec.started_ms).unwrap_or(0);
        run.insert(
            "env".to_string(),
            rec.env
                .or_else(|| self.plan.target_env.clone())
                .map_or(Value::Null, Value::Str),
        );
        run.insert(
            "started_by".to_string(),
            gate::starter(self.store, self.run_id)?.map_or(Value::Null, Value::Str),
        );
        run.insert("duration".to_string(), Value::Duration(ms));
        run.insert("duration_ms".to_string(), Value::Int(ms as i64));
        let logs = match std::env::var("PIPE_LOGS_URL") {
            Ok(u) if !u.is_empty() => {
                if u.contains("{run}") {
                    u.replace("{run}", &self.run_id.to_string())
                } else {
                    format!("{}/{}", u.trim_end_matches('/'), self.run_id)
                }
            }
            _ => {
                let dir = self.store.log_dir(self.run_id);
                dir.canonicalize().unwrap_or(dir).display().to_string()
            }
        };
        run.insert("logs".to_string(), Value::Str(logs));
        Ok(())
    }
}
