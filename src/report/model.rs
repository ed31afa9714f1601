//! What a report says about one recorded run, gathered from the state store
//! (run, step records, step history) and the run's log files, over the plan
//! lowered again from the run's source snapshot. The HTML page, the Markdown
//! summary and `--format json` all render this one value.

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;
use pipe_lang::critical::schedule;
use pipe_lang::Plan;
use pipe_runtime::gate::GateRecord;
use pipe_runtime::state::{RunRecord, StepRecord, Store, Transition};
use serde::Serialize;

/// The most of one log file a report keeps: its end, where failures are.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

#[derive(Debug, Serialize)]
pub struct Report {
    pub run: RunInfo,
    /// Step ids along the critical path of the actual durations, in order.
    pub critical_path: Vec<String>,
    pub critical_length_ms: u64,
    /// Main steps in plan order, then handlers.
    pub steps: Vec<StepReport>,
    pub warnings: Vec<Warning>,
    pub approvals: Vec<Approval>,
}

#[derive(Debug, Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub pipeline: String,
    pub env: Option<String>,
    pub params: IndexMap<String, String>,
    pub status: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub duration_ms: u64,
    pub failed_step: Option<String>,
    pub source_hash: String,
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub id: String,
    pub stage: String,
    pub name: String,
    pub executor: String,
    pub template: Option<String>,
    /// `failure`, `success` or `always` for a handler step.
    pub handler: Option<String>,
    pub needs: Vec<String>,
    /// False: the step's stage only warns on failure.
    pub required: bool,
    /// `pending` when the run never reached it.
    pub status: String,
    pub attempts: u32,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// From the first attempt's start to the end (retries and waits included).
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// As stored: secrets were masked before they were written.
    pub outputs: IndexMap<String, String>,
    pub critical: bool,
    pub slack_ms: u64,
    pub location: String,
    pub segments: Vec<Segment>,
    pub logs: Vec<LogFile>,
}

/// What a step was doing during one stretch of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// Its needs were done, but it had not started (a `--jobs` or
    /// concurrency slot, or a resume).
    Queued,
    Running,
    /// Waiting for the next attempt after a failed one.
    Retrying,
    /// Stopped at a gate for a decision.
    Waiting,
}

impl SegmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Queued => "queued",
            SegmentKind::Running => "running",
            SegmentKind::Retrying => "retrying",
            SegmentKind::Waiting => "waiting",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub kind: SegmentKind,
    pub attempt: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The status that ended it; `None` if the record stops there (a crash,
    /// or the run is still going).
    pub ended_as: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LogFile {
    /// `attempt 2` or `attempt 2 on_failure`.
    pub name: String,
    pub attempt: u32,
    pub text: String,
    /// Bytes left out from the start of the file.
    pub omitted_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Warning {
    pub step: Option<String>,
    /// `warn-only failure`, `retried`, `in doubt`, `handler failed`, `output`.
    pub kind: &'static str,
    pub message: String,
}

/// An approval gate of the run: its outcome and every decision on it, as
/// the gate tables of the state store hold them.
#[derive(Debug, Serialize)]
pub struct Approval {
    pub step: String,
    /// `approved`, `rejected`, `expired`, or `waiting` for a decision.
    pub decision: String,
    /// Who approved (the distinct approvers), or who rejected.
    pub by: Option<String>,
    pub comment: Option<String>,
    pub waiting_since_ms: Option<i64>,
    pub decided_ms: Option<i64>,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub deadline_ms: Option<i64>,
    pub decisions: Vec<pipe_runtime::gate::DecisionRecord>,
}

/// Gathers the report of `run` from the store, its log directory and `plan`.
pub fn build(
    store: &Store,
    run: &RunRecord,
    plan: &Plan,
    records: &[StepRecord],
    history: &[Transition],
    gates: &[GateRecord],
    now_ms: i64,
) -> Report {
    let by_id: HashMap<&str, &StepRecord> =
        records.iter().map(|r| (r.step_id.as_str(), r)).collect();
    let mut hist: HashMap<&str, Vec<&Transition>> = HashMap::new();
    for t in history {
        hist.entry(t.step_id.as_str()).or_default().push(t);
    }
    let run_end = run.finished_ms.unwrap_or(now_ms).max(run.started_ms);
    let main = plan.steps();
    // First the main steps' own segments, then queueing from their needs' ends.
    let mut segs: Vec<Vec<Segment>> = main
        .iter()
        .map(|s| {
            segments(
                by_id.get(s.id.as_str()).copied(),
                hist.get(s.id.as_str()).map_or(&[][..], Vec::as_slice),
                run_end,
            )
        })
        .collect();
    let ends: Vec<Option<i64>> = main
        .iter()
        .zip(&segs)
        .map(|(s, sg)| {
            by_id
                .get(s.id.as_str())
                .and_then(|r| r.finished_ms)
                .or_else(|| sg.last().map(|x| x.end_ms))
        })
        .collect();
    for (i, s) in main.iter().enumerate() {
        let Some(first) = segs[i].first().map(|x| x.start_ms) else {
            continue;
        };
        let ready = s
            .needs
            .iter()
            .filter_map(|&n| ends[n])
            .max()
            .unwrap_or(run.started_ms);
        if first > ready {
            segs[i].insert(
                0,
                Segment {
                    kind: SegmentKind::Queued,
                    attempt: 0,
                    start_ms: ready,
                    end_ms: first,
                    ended_as: Some("running".into()),
                },
            );
        }
    }
    let active = |sg: &[Segment]| -> u64 {
        let non_queued: Vec<&Segment> = sg
            .iter()
            .filter(|x| x.kind != SegmentKind::Queued)
            .collect();
        match (non_queued.first(), non_queued.last()) {
            (Some(a), Some(b)) => (b.end_ms - a.start_ms).max(0) as u64,
            _ => 0,
        }
    };
    let sched = schedule(plan, |i| active(&segs[i]));
    // Steps the run never reached take no time and are no part of its path.
    let path: Vec<usize> = sched
        .path
        .iter()
        .copied()
        .filter(|&i| {
            by_id
                .get(main[i].id.as_str())
                .is_some_and(|r| r.status != "pending")
        })
        .collect();
    let mut on_path = vec![false; main.len()];
    for &i in &path {
        on_path[i] = true;
    }
    let mut steps = Vec::new();
    for (i, s) in main.iter().enumerate() {
        let rec = by_id.get(s.id.as_str()).copied();
        steps.push(step_report(
            store,
            run.id,
            s,
            plan,
            rec,
            std::mem::take(&mut segs[i]),
            Some((&sched.steps[i], on_path[i])),
        ));
    }
    for h in plan.handlers() {
        let rec = by_id.get(h.id.as_str()).copied();
        let sg = segments(
            rec,
            hist.get(h.id.as_str()).map_or(&[][..], Vec::as_slice),
            run_end,
        );
        steps.push(step_report(store, run.id, h, plan, rec, sg, None));
    }
    let critical_path = path.iter().map(|&i| plan.step(i).id.clone()).collect();
    let warnings = warnings(&steps, run.finished_ms.is_some());
    let approvals = gates.iter().map(approval).collect();
    Report {
        run: RunInfo {
            id: run.id,
            pipeline: run.pipeline.clone(),
            env: run.env.clone(),
            // Every param's value, defaults included (the run stores only `-p`).
            params: plan
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            status: run.status.clone(),
            started_ms: run.started_ms,
            finished_ms: run.finished_ms,
            duration_ms: (run_end - run.started_ms).max(0) as u64,
            failed_step: run.failed_step.clone(),
            source_hash: run.source_hash.clone(),
        },
        critical_path,
        critical_length_ms: sched.length_ms,
        steps,
        warnings,
        approvals,
    }
}

fn step_report(
    store: &Store,
    run: i64,
    s: &pipe_lang::plan::PlanStep,
    plan: &Plan,
    rec: Option<&StepRecord>,
    segments: Vec<Segment>,
    timing: Option<(&pipe_lang::critical::StepTiming, bool)>,
) -> StepReport {
    let attempts = rec.map_or(0, |r| r.attempt);
    let first = segments
        .iter()
        .find(|x| x.kind != SegmentKind::Queued)
        .map(|x| x.start_ms)
        .or_else(|| rec.and_then(|r| r.started_ms));
    let finished = rec.and_then(|r| r.finished_ms);
    let last = finished.or_else(|| segments.last().map(|x| x.end_ms));
    StepReport {
        id: s.id.clone(),
        stage: s.stage.clone(),
        name: s.name.clone(),
        executor: s.executor.clone(),
        template: s.template.clone(),
        handler: s.handler.map(|k| k.as_str().to_string()),
        needs: s.needs.iter().map(|&n| plan.step(n).id.clone()).collect(),
        required: s.required,
        // A handler whose condition did not hold is never recorded.
        status: rec.map_or_else(
            || {
                if s.handler.is_some() {
                    "not run"
                } else {
                    "pending"
                }
                .to_string()
            },
            |r| r.status.clone(),
        ),
        attempts,
        started_ms: first,
        finished_ms: finished,
        duration_ms: match (first, last) {
            (Some(a), Some(b)) => (b - a).max(0) as u64,
            _ => 0,
        },
        exit_code: rec.and_then(|r| r.exit_code),
        error: rec.and_then(|r| r.error.clone()),
        outputs: rec.map(|r| r.outputs.clone()).unwrap_or_default(),
        critical: timing.is_some_and(|(_, on_path)| on_path),
        slack_ms: timing.map_or(0, |(t, _)| t.slack_ms),
        location: plan.location(s.span),
        segments,
        logs: logs(store, run, &s.id, attempts),
    }
}

/// The stretches of a step's history. A status opens a stretch (running,
/// retrying, waiting) or ends one (succeeded, failed, ...); a stretch still
/// open at the end of the record ends at `open_end`.
pub fn segments(rec: Option<&StepRecord>, history: &[&Transition], open_end: i64) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut open: Option<(SegmentKind, u32, i64)> = None;
    for t in history {
        let kind = match t.status.as_str() {
            "running" => Some(SegmentKind::Running),
            "retrying" => Some(SegmentKind::Retrying),
            "waiting" => Some(SegmentKind::Waiting),
            _ => None,
        };
        if let Some((k, a, start)) = open {
            // The same status written twice is one stretch.
            if Some(k) == kind && a == t.attempt {
                continue;
            }
            out.push(Segment {
                kind: k,
                attempt: a,
                start_ms: start,
                end_ms: t.at_ms.max(start),
                ended_as: Some(t.status.clone()),
            });
        }
        open = kind.map(|k| (k, t.attempt, t.at_ms));
    }
    if let Some((k, a, start)) = open {
        out.push(Segment {
            kind: k,
            attempt: a,
            start_ms: start,
            end_ms: open_end.max(start),
            ended_as: None,
        });
    }
    // A run recorded before the store kept history: one stretch from the record.
    if history.is_empty() {
        if let Some(r) = rec {
            if let (Some(a), Some(b)) = (r.started_ms, r.finished_ms) {
                out.push(Segment {
                    kind: SegmentKind::Running,
                    attempt: r.attempt,
                    start_ms: a,
                    end_ms: b.max(a),
                    ended_as: Some(r.status.clone()),
                });
            }
        }
    }
    out
}

fn logs(store: &Store, run: i64, step: &str, attempts: u32) -> Vec<LogFile> {
    let mut out = Vec::new();
    for a in 1..=attempts {
        let main = store.log_path(run, step, a);
        if let Some((text, omitted)) = read_tail(&main) {
            out.push(LogFile {
                name: format!("attempt {a}"),
                attempt: a,
                text,
                omitted_bytes: omitted,
            });
        }
        let on_failure = store
            .log_dir(run)
            .join(format!("{step}.{a}.on_failure.log"));
        if let Some((text, omitted)) = read_tail(&on_failure) {
            out.push(LogFile {
                name: format!("attempt {a} on_failure"),
                attempt: a,
                text,
                omitted_bytes: omitted,
            });
        }
    }
    out
}

/// The last [`LOG_TAIL_BYTES`] of a file, from a line start, and how much was left out.
fn read_tail(path: &Path) -> Option<(String, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let skip = len.saturating_sub(LOG_TAIL_BYTES as u64);
    f.seek(SeekFrom::Start(skip)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    let mut omitted = skip;
    if skip > 0 {
        if let Some(nl) = text.find('\n') {
            omitted += nl as u64 + 1;
            text.drain(..=nl);
        }
    }
    Some((text, omitted))
}

fn warnings(steps: &[StepReport], finished: bool) -> Vec<Warning> {
    let mut out = Vec::new();
    for s in steps {
        let id = Some(s.id.clone());
        if matches!(s.status.as_str(), "failed" | "timed_out") && s.handler.is_some() {
            out.push(Warning {
                step: id.clone(),
                kind: "handler failed",
                message: s.error.clone().unwrap_or_else(|| "failed".into()),
            });
        } else if matches!(s.status.as_str(), "failed" | "timed_out") && !s.required {
            out.push(Warning {
                step: id.clone(),
                kind: "warn-only failure",
                message: format!(
                    "failed in a stage that is not required: {}",
                    s.error.as_deref().unwrap_or("no error recorded")
                ),
            });
        }
        if s.status == "succeeded" && s.attempts > 1 {
            out.push(Warning {
                step: id.clone(),
                kind: "retried",
                message: format!(
                    "succeeded on attempt {} after {} failed",
                    s.attempts,
                    s.attempts - 1
                ),
            });
        }
        if finished && s.status == "running" {
            out.push(Warning {
                step: id.clone(),
                kind: "in doubt",
                message: "started and never finished (the run was killed); `pipe resume` decides whether to run it again".into(),
            });
        }
        // A step reports its own warnings (scan findings, chaos results) as
        // an output named `warning` or `warnings`, one per line.
        for (k, v) in &s.outputs {
            if k == "warning" || k == "warnings" {
                for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    out.push(Warning {
                        step: id.clone(),
                        kind: "output",
                        message: line.to_string(),
                    });
                }
            }
        }
    }
    out
}

/// The report's view of a gate record.
fn approval(g: &GateRecord) -> Approval {
    let approved = g.approved_by();
    let rejected_by = g
        .decisions
        .iter()
        .rev()
        .find(|d| d.decision == "reject")
        .map(|d| d.user.clone());
    let by = match g.status.as_str() {
        "rejected" => rejected_by,
        _ if approved.is_empty() => None,
        _ => Some(approved.join(", ")),
    };
    Approval {
        step: g.gate.clone(),
        decision: if g.status == "pending" {
            "waiting".to_string()
        } else {
            g.status.clone()
        },
        by,
        comment: g.decisions.iter().rev().find_map(|d| d.comment.clone()),
        waiting_since_ms: Some(g.opened_ms),
        decided_ms: g.decided_ms,
        approvers: g.approvers.clone(),
        min_approvals: g.min_approvals,
        deadline_ms: Some(g.deadline_ms),
        decisions: g.decisions.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(status: &str, attempt: u32, at: i64) -> Transition {
        Transition {
            step_id: "s.a".into(),
            attempt,
            status: status.into(),
            at_ms: at,
        }
    }

    #[test]
    fn history_becomes_running_retrying_running() {
        let h = [
            t("running", 1, 100),
            t("retrying", 1, 300),
            t("running", 2, 1300),
            t("succeeded", 2, 1500),
        ];
        let refs: Vec<&Transition> = h.iter().collect();
        let s = segments(None, &refs, 9999);
        let got: Vec<(SegmentKind, u32, i64, i64)> = s
            .iter()
            .map(|x| (x.kind, x.attempt, x.start_ms, x.end_ms))
            .collect();
        assert_eq!(
            got,
            [
                (SegmentKind::Running, 1, 100, 300),
                (SegmentKind::Retrying, 1, 300, 1300),
                (SegmentKind::Running, 2, 1300, 1500),
            ]
        );
        assert_eq!(s[2].ended_as.as_deref(), Some("succeeded"));
    }

    #[test]
    fn an_open_stretch_ends_at_the_end_of_the_record() {
        let h = [t("running", 1, 100), t("waiting", 1, 200)];
        let refs: Vec<&Transition> = h.iter().collect();
        let s = segments(None, &refs, 900);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].kind, SegmentKind::Waiting);
        assert_eq!(
            (s[1].start_ms, s[1].end_ms, s[1].ended_as.clone()),
            (200, 900, None)
        );
    }

    fn record(status: &str, decisions: &[(&str, &str, Option<&str>)]) -> GateRecord {
        GateRecord {
            run: 1,
            gate: "prod.approve".into(),
            plan_hash: "h".into(),
            approvers: vec!["alice".into(), "bob".into()],
            min_approvals: 1,
            allow_self_approval: false,
            started_by: Some("carol".into()),
            opened_ms: 150,
            deadline_ms: 86_400_150,
            shown: vec![],
            message: None,
            status: status.into(),
            decided_ms: (status != "pending").then_some(5000),
            decisions: decisions
                .iter()
                .map(|(user, d, c)| pipe_runtime::gate::DecisionRecord {
                    user: (*user).into(),
                    decision: (*d).into(),
                    comment: c.map(str::to_string),
                    via: "cli".into(),
                    at_ms: 5000,
                    plan_hash: "h".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn gate_records_become_approvals_with_who_and_when() {
        let a = approval(&record(
            "approved",
            &[("alice", "approve", Some("ship it"))],
        ));
        assert_eq!(
            (
                a.decision.as_str(),
                a.by.as_deref(),
                a.comment.as_deref(),
                a.waiting_since_ms,
                a.decided_ms
            ),
            (
                "approved",
                Some("alice"),
                Some("ship it"),
                Some(150),
                Some(5000)
            )
        );
        let w = approval(&record("pending", &[]));
        assert_eq!(
            (w.decision.as_str(), w.by.as_deref(), w.decided_ms),
            ("waiting", None, None)
        );
        let r = approval(&record(
            "rejected",
            &[
                ("alice", "approve", None),
                ("bob", "reject", Some("not today")),
            ],
        ));
        assert_eq!(
            (r.decision.as_str(), r.by.as_deref(), r.comment.as_deref()),
            ("rejected", Some("bob"), Some("not today"))
        );
    }

    #[test]
    fn no_history_falls_back_to_the_record() {
        let rec = StepRecord {
            step_id: "s.a".into(),
            status: "succeeded".into(),
            attempt: 1,
            started_ms: Some(10),
            finished_ms: Some(50),
            ..StepRecord::default()
        };
        let s = segments(Some(&rec), &[], 100);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].start_ms, s[0].end_ms), (10, 50));
    }
}
