//! What a report says about one recorded run, gathered from the state store
//! (run, step records, step history) and the run's log files, over the plan
//! lowered again from the run's source snapshot. The HTML page, the Markdown
//! summary and `--format json` all render this one value.

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;
use pipe_lang::critical::schedule;
use pipe_lang::Plan;
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

/// A gate's decision, or the wait for one.
#[derive(Debug, Serialize)]
pub struct Approval {
    pub step: String,
    /// `approved`, `rejected`, `waiting`, or the step's status.
    pub decision: String,
    pub by: Option<String>,
    pub comment: Option<String>,
    pub waiting_since_ms: Option<i64>,
    pub decided_ms: Option<i64>,
}

/// Gathers the report of `run` from the store, its log directory and `plan`.
pub fn build(
    store: &Store,
    run: &RunRecord,
    plan: &Plan,
    records: &[StepRecord],
    history: &[Transition],
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
    let approvals = approvals(&steps, &hist);
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
        if s.status == "failed" && s.handler.is_some() {
            out.push(Warning {
                step: id.clone(),
                kind: "handler failed",
                message: s.error.clone().unwrap_or_else(|| "failed".into()),
            });
        } else if s.status == "failed" && !s.required {
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

/// Gates: steps of the `approval` executor, and any step that stopped in the
/// `waiting` status. Who decided comes from the gate's outputs
/// (`approved_by`, `by` or `approver`; `comment`).
fn approvals(steps: &[StepReport], hist: &HashMap<&str, Vec<&Transition>>) -> Vec<Approval> {
    let mut out = Vec::new();
    for s in steps {
        let h = hist.get(s.id.as_str()).map_or(&[][..], Vec::as_slice);
        let waited = h.iter().find(|t| t.status == "waiting").map(|t| t.at_ms);
        if s.executor != "approval" && waited.is_none() {
            continue;
        }
        let out_of = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| s.outputs.get(*k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let decision = match s.status.as_str() {
            "succeeded" => "approved".to_string(),
            "failed" => out_of(&["decision"]).unwrap_or_else(|| "rejected".into()),
            other => other.to_string(),
        };
        out.push(Approval {
            step: s.id.clone(),
            decision,
            by: out_of(&["approved_by", "by", "approver", "decided_by"]),
            comment: out_of(&["comment", "reason"]),
            waiting_since_ms: waited,
            decided_ms: s.finished_ms,
        });
    }
    out
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

    fn gate(status: &str, outputs: &[(&str, &str)]) -> StepReport {
        StepReport {
            id: "prod.approve".into(),
            stage: "prod".into(),
            name: "approve".into(),
            executor: "approval".into(),
            template: None,
            handler: None,
            needs: vec![],
            required: true,
            status: status.into(),
            attempts: 1,
            started_ms: Some(100),
            finished_ms: (status != "waiting").then_some(5000),
            duration_ms: 4900,
            exit_code: None,
            error: None,
            outputs: outputs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            critical: false,
            slack_ms: 0,
            location: String::new(),
            segments: vec![],
            logs: vec![],
        }
    }

    #[test]
    fn gates_become_approvals_with_who_and_when() {
        let waiting = Transition {
            step_id: "prod.approve".into(),
            attempt: 1,
            status: "waiting".into(),
            at_ms: 150,
        };
        let mut hist = HashMap::new();
        hist.insert("prod.approve", vec![&waiting]);
        let a = approvals(
            &[gate(
                "succeeded",
                &[("approved_by", "alice"), ("comment", "ship it")],
            )],
            &hist,
        );
        assert_eq!(a.len(), 1);
        assert_eq!(
            (
                a[0].decision.as_str(),
                a[0].by.as_deref(),
                a[0].comment.as_deref(),
                a[0].waiting_since_ms,
                a[0].decided_ms
            ),
            (
                "approved",
                Some("alice"),
                Some("ship it"),
                Some(150),
                Some(5000)
            )
        );
        let still = approvals(&[gate("waiting", &[])], &hist);
        assert_eq!(
            (
                still[0].decision.as_str(),
                still[0].by.as_deref(),
                still[0].decided_ms
            ),
            ("waiting", None, None)
        );
        let rejected = approvals(&[gate("failed", &[("by", "bob")])], &HashMap::new());
        assert_eq!(
            (rejected[0].decision.as_str(), rejected[0].by.as_deref()),
            ("rejected", Some("bob"))
        );
        // A plain step that never waited is no gate.
        let mut plain = gate("succeeded", &[]);
        plain.executor = "shell".into();
        assert!(approvals(&[plain], &HashMap::new()).is_empty());
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
