//! The gate tables of the state store. Decisions are written in `BEGIN
//! IMMEDIATE` transactions (the store's busy timeout waits out a concurrent
//! writer), so two people approving at once, or an approval racing the
//! deadline, are ordered by SQLite and every rule is checked against what is
//! committed.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use super::identity::approver_entry;
use super::{Shown, Spec};
use crate::state::{now_ms, StateError, Store};

/// Added to the store's schema when it opens.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS run_users (
  run_id INTEGER PRIMARY KEY REFERENCES runs(id),
  user TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gates (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  gate TEXT NOT NULL,
  plan_hash TEXT NOT NULL,
  approvers TEXT NOT NULL,
  min_approvals INTEGER NOT NULL,
  allow_self INTEGER NOT NULL,
  opened_ms INTEGER NOT NULL,
  deadline_ms INTEGER NOT NULL,
  shown TEXT NOT NULL,
  message TEXT,
  status TEXT NOT NULL,
  decided_ms INTEGER,
  PRIMARY KEY (run_id, gate)
);
CREATE TABLE IF NOT EXISTS gate_decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id INTEGER NOT NULL,
  gate TEXT NOT NULL,
  plan_hash TEXT NOT NULL,
  user TEXT NOT NULL,
  decision TEXT NOT NULL,
  comment TEXT,
  via TEXT NOT NULL,
  at_ms INTEGER NOT NULL
);
";

/// What a person decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// One recorded decision.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionRecord {
    pub user: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: Option<String>,
    /// `cli` (`pipe approve`/`reject`) or `approve-as` (`--approve-as` of a run).
    pub via: String,
    pub at_ms: i64,
    pub plan_hash: String,
}

/// A gate of a run, as stored.
#[derive(Clone, Debug, Serialize)]
pub struct GateRecord {
    pub run: i64,
    pub gate: String,
    pub plan_hash: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub allow_self_approval: bool,
    /// Who started the run (the one who may not approve it).
    pub started_by: Option<String>,
    pub opened_ms: i64,
    pub deadline_ms: i64,
    pub shown: Vec<Shown>,
    pub message: Option<String>,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    pub decided_ms: Option<i64>,
    /// Decisions made for the gate's current plan hash, oldest first.
    pub decisions: Vec<DecisionRecord>,
}

impl GateRecord {
    /// The distinct users who approved the current plan.
    pub fn approved_by(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for d in &self.decisions {
            if d.decision == "approve" && !v.contains(&d.user) {
                v.push(d.user.clone());
            }
        }
        v
    }

    /// Pending, but past its deadline (nobody has marked it expired yet).
    pub fn is_overdue(&self, now: i64) -> bool {
        self.status == "pending" && now >= self.deadline_ms
    }
}

/// How [`open`] found the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Opened now.
    New,
    /// Already open for this run and plan (a resumed run): its deadline,
    /// shown values and decisions stand.
    Existing,
    /// Open before for another plan hash: its decisions no longer count and
    /// it is open afresh.
    Replanned,
}

/// Why a decision was not recorded.
#[derive(Debug)]
pub enum DecideError {
    /// The rules refuse it; the message says which and why.
    Refused(String),
    State(StateError),
}

impl From<StateError> for DecideError {
    fn from(e: StateError) -> Self {
        DecideError::State(e)
    }
}

impl std::fmt::Display for DecideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecideError::Refused(m) => f.write_str(m),
            DecideError::State(e) => write!(f, "{e}"),
        }
    }
}

fn immediate(store: &Store) -> Result<Transaction<'_>, StateError> {
    Transaction::new_unchecked(store.conn(), TransactionBehavior::Immediate)
        .map_err(|e| store.err(&e))
}

/// Records who started a run.
pub fn record_starter(store: &Store, run: i64, user: &str) -> Result<(), StateError> {
    store
        .conn()
        .execute(
            "INSERT OR REPLACE INTO run_users (run_id, user) VALUES (?1, ?2)",
            params![run, user],
        )
        .map_err(|e| store.err(&e))?;
    Ok(())
}

/// Who started a run, if recorded.
pub fn starter(store: &Store, run: i64) -> Result<Option<String>, StateError> {
    store
        .conn()
        .query_row("SELECT user FROM run_users WHERE run_id = ?1", [run], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| store.err(&e))
}

const GATE_COLS: &str = "g.run_id, g.gate, g.plan_hash, g.approvers, g.min_approvals, g.allow_self, u.user, g.opened_ms, g.deadline_ms, g.shown, g.message, g.status, g.decided_ms";

fn gate_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GateRecord> {
    let approvers: String = r.get(3)?;
    let shown: String = r.get(9)?;
    Ok(GateRecord {
        run: r.get(0)?,
        gate: r.get(1)?,
        plan_hash: r.get(2)?,
        approvers: serde_json::from_str(&approvers).unwrap_or_default(),
        min_approvals: r.get(4)?,
        allow_self_approval: r.get::<_, i64>(5)? != 0,
        started_by: r.get(6)?,
        opened_ms: r.get(7)?,
        deadline_ms: r.get(8)?,
        shown: serde_json::from_str(&shown).unwrap_or_default(),
        message: r.get(10)?,
        status: r.get(11)?,
        decided_ms: r.get(12)?,
        decisions: Vec::new(),
    })
}

fn query_gates(
    store: &Store,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<GateRecord>, StateError> {
    let sql = format!(
        "SELECT {GATE_COLS} FROM gates g LEFT JOIN run_users u ON u.run_id = g.run_id WHERE {filter} ORDER BY g.run_id, g.opened_ms"
    );
    let mut st = store.conn().prepare(&sql).map_err(|e| store.err(&e))?;
    let rows = st
        .query_map(args, gate_from_row)
        .map_err(|e| store.err(&e))?;
    let mut gates: Vec<GateRecord> = rows.collect::<Result<_, _>>().map_err(|e| store.err(&e))?;
    let mut st = store
        .conn()
        .prepare(
            "SELECT user, decision, comment, via, at_ms, plan_hash FROM gate_decisions
             WHERE run_id = ?1 AND gate = ?2 AND plan_hash = ?3 ORDER BY id",
        )
        .map_err(|e| store.err(&e))?;
    for g in &mut gates {
        let rows = st
            .query_map(params![g.run, g.gate, g.plan_hash], |r| {
                Ok(DecisionRecord {
                    user: r.get(0)?,
                    decision: r.get(1)?,
                    comment: r.get(2)?,
                    via: r.get(3)?,
                    at_ms: r.get(4)?,
                    plan_hash: r.get(5)?,
                })
            })
            .map_err(|e| store.err(&e))?;
        g.decisions = rows.collect::<Result<_, _>>().map_err(|e| store.err(&e))?;
    }
    Ok(gates)
}

/// One gate of a run, by its id (`stage.name`).
pub fn gate(store: &Store, run: i64, gate: &str) -> Result<Option<GateRecord>, StateError> {
    Ok(
        query_gates(store, "g.run_id = ?1 AND g.gate = ?2", &[&run, &gate])?
            .into_iter()
            .next(),
    )
}

/// Every gate a run has opened.
pub fn gates_of_run(store: &Store, run: i64) -> Result<Vec<GateRecord>, StateError> {
    query_gates(store, "g.run_id = ?1", &[&run])
}

/// Every gate still waiting for a decision, over all runs.
pub fn pending(store: &Store) -> Result<Vec<GateRecord>, StateError> {
    query_gates(store, "g.status = 'pending'", &[])
}

/// Opens a gate of a run for a plan, or finds it open (see [`Opened`]).
pub fn open(
    store: &Store,
    run: i64,
    plan_hash: &str,
    spec: &Spec,
) -> Result<(GateRecord, Opened), StateError> {
    let tx = immediate(store)?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT plan_hash FROM gates WHERE run_id = ?1 AND gate = ?2",
            params![run, spec.gate],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| store.err(&e))?;
    let now = now_ms();
    let deadline = now.saturating_add(i64::try_from(spec.timeout_ms).unwrap_or(i64::MAX / 2));
    let how = match existing {
        Some(h) if h == plan_hash => Opened::Existing,
        found => {
            tx.execute(
                "INSERT OR REPLACE INTO gates (run_id, gate, plan_hash, approvers, min_approvals, allow_self, opened_ms, deadline_ms, shown, message, status, decided_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', NULL)",
                params![
                    run,
                    spec.gate,
                    plan_hash,
                    serde_json::to_string(&spec.approvers).unwrap_or_default(),
                    spec.min_approvals,
                    i64::from(spec.allow_self_approval),
                    now,
                    deadline,
                    serde_json::to_string(&spec.shown).unwrap_or_default(),
                    spec.message,
                ],
            )
            .map_err(|e| store.err(&e))?;
            if found.is_some() {
                Opened::Replanned
            } else {
                Opened::New
            }
        }
    };
    tx.commit().map_err(|e| store.err(&e))?;
    let rec = gate(store, run, &spec.gate)?.ok_or_else(|| StateError::Sqlite {
        path: store.dir().join("state.db"),
        detail: format!("gate {} of run {run} vanished", spec.gate),
    })?;
    Ok((rec, how))
}

/// Marks a pending gate past its deadline as expired. Returns the record if
/// this call expired it.
pub fn expire(store: &Store, run: i64, gate_id: &str) -> Result<Option<GateRecord>, StateError> {
    let now = now_ms();
    let n = store
        .conn()
        .execute(
            "UPDATE gates SET status = 'expired', decided_ms = ?3
             WHERE run_id = ?1 AND gate = ?2 AND status = 'pending' AND deadline_ms <= ?3",
            params![run, gate_id, now],
        )
        .map_err(|e| store.err(&e))?;
    if n == 0 {
        return Ok(None);
    }
    gate(store, run, gate_id)
}

/// Records a decision on a run's open gate, named by id (`stage.name`) or
/// by name, if the rules allow it (see docs/gates.md). `plan`, when given, is
/// the plan hash the decider reviewed: a gate now open for another plan is
/// refused. Returns the gate as it is after the decision.
#[expect(
    clippy::too_many_arguments,
    reason = "every part of a decision is explicit"
)]
pub fn decide(
    store: &Store,
    run: i64,
    gate_name: &str,
    user: &str,
    decision: Decision,
    comment: Option<&str>,
    via: &str,
    plan: Option<&str>,
) -> Result<GateRecord, DecideError> {
    let refuse = |m: String| Err(DecideError::Refused(m));
    let tx = immediate(store)?;
    let all = gates_of_run(store, run)?;
    let matching: Vec<&GateRecord> = all
        .iter()
        .filter(|g| {
            g.gate == gate_name || g.gate.rsplit_once('.').is_some_and(|(_, n)| n == gate_name)
        })
        .collect();
    let g = match matching.as_slice() {
        [g] => (*g).clone(),
        [] => {
            let open: Vec<&str> = all.iter().map(|g| g.gate.as_str()).collect();
            return refuse(if open.is_empty() {
                format!("run {run} has not opened any gate (a gate can be decided once the run reaches it: see `pipe gates`)")
            } else {
                format!(
                    "run {run} has not opened a gate `{gate_name}` (its gates: {})",
                    open.join(", ")
                )
            });
        }
        many => {
            let ids: Vec<&str> = many.iter().map(|g| g.gate.as_str()).collect();
            return refuse(format!(
                "`{gate_name}` names several gates of run {run}: {}; give one as `stage.name`",
                ids.join(", ")
            ));
        }
    };
    let now = now_ms();
    if g.status == "pending" && now >= g.deadline_ms {
        tx.execute(
            "UPDATE gates SET status = 'expired', decided_ms = ?3 WHERE run_id = ?1 AND gate = ?2",
            params![run, g.gate, now],
        )
        .map_err(|e| store.err(&e))?;
        tx.commit().map_err(|e| store.err(&e))?;
        return refuse(format!(
            "gate {} of run {run} expired at {} without a decision; it failed closed and cannot be {}d now",
            g.gate,
            crate::time::rfc3339(g.deadline_ms),
            decision.as_str()
        ));
    }
    if g.status != "pending" {
        return refuse(format!(
            "gate {} of run {run} is already {}{}",
            g.gate,
            g.status,
            match g.status.as_str() {
                "approved" => format!(" (by {})", g.approved_by().join(", ")),
                _ => String::new(),
            }
        ));
    }
    if let Some(p) = plan {
        if p != g.plan_hash {
            return refuse(format!(
                "gate {} of run {run} is open for plan {}, not the plan {p} you reviewed; look again with `pipe gates`",
                g.gate, g.plan_hash
            ));
        }
    }
    if approver_entry(&g.approvers, user).is_none() {
        return refuse(format!(
            "{user} may not decide gate {} of run {run}: the approvers are {} (user names, Unix groups or `*`)",
            g.gate,
            g.approvers.join(", ")
        ));
    }
    if decision == Decision::Approve {
        match &g.started_by {
            Some(s) if s == user && !g.allow_self_approval => {
                return refuse(format!(
                    "{user} started run {run} and cannot approve it: a different person must (the gate would need `allow_self_approval = true`)"
                ));
            }
            None if !g.allow_self_approval => {
                return refuse(format!(
                    "run {run} does not record who started it, so self-approval cannot be ruled out; the gate fails closed"
                ));
            }
            _ => {}
        }
        if g.approved_by().iter().any(|u| u == user) {
            return refuse(format!(
                "{user} already approved gate {} of run {run}; it needs {} approvals from different people",
                g.gate, g.min_approvals
            ));
        }
    }
    tx.execute(
        "INSERT INTO gate_decisions (run_id, gate, plan_hash, user, decision, comment, via, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run,
            g.gate,
            g.plan_hash,
            user,
            decision.as_str(),
            comment,
            via,
            now
        ],
    )
    .map_err(|e| store.err(&e))?;
    let approvals = g.approved_by().len() + usize::from(decision == Decision::Approve);
    let status = match decision {
        Decision::Reject => Some("rejected"),
        Decision::Approve if approvals >= g.min_approvals as usize => Some("approved"),
        Decision::Approve => None,
    };
    if let Some(s) = status {
        tx.execute(
            "UPDATE gates SET status = ?3, decided_ms = ?4 WHERE run_id = ?1 AND gate = ?2",
            params![run, g.gate, s, now],
        )
        .map_err(|e| store.err(&e))?;
    }
    tx.commit().map_err(|e| store.err(&e))?;
    Ok(gate(store, run, &g.gate)?.unwrap_or(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewRun;

    fn spec(min: u32, allow_self: bool) -> Spec {
        Spec {
            gate: "prod.approve".into(),
            approvers: vec!["alice".into(), "bob".into(), "carol".into()],
            min_approvals: min,
            allow_self_approval: allow_self,
            timeout_ms: 60_000,
            shown: vec![Shown {
                label: "steps.smoke.outputs.table".into(),
                value: "ok".into(),
            }],
            message: Some("ship?".into()),
        }
    }

    fn store_with_run(dir: &std::path::Path) -> (Store, i64) {
        let store = Store::open(dir).unwrap();
        let run = store
            .create_run(&NewRun {
                pipeline: "p".into(),
                ..NewRun::default()
            })
            .unwrap();
        record_starter(&store, run, "carol").unwrap();
        (store, run)
    }

    #[test]
    fn rules_and_min_approvals() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = store_with_run(dir.path());
        let (g, how) = open(&store, run, "h1", &spec(2, false)).unwrap();
        assert_eq!((g.status.as_str(), how), ("pending", Opened::New));
        let d = |u: &str, what| decide(&store, run, "approve", u, what, None, "cli", None);
        let refused = |r: Result<GateRecord, DecideError>| match r {
            Err(DecideError::Refused(m)) => m,
            other => panic!("not refused: {other:?}"),
        };
        assert!(refused(d("mallory", Decision::Approve)).contains("may not decide"));
        assert!(refused(d("carol", Decision::Approve)).contains("started run"));
        assert_eq!(d("alice", Decision::Approve).unwrap().status, "pending");
        assert!(refused(d("alice", Decision::Approve)).contains("already approved"));
        let g = d("bob", Decision::Approve).unwrap();
        assert_eq!(g.status, "approved");
        assert_eq!(g.approved_by(), vec!["alice", "bob"]);
        assert!(refused(d("bob", Decision::Reject)).contains("already approved"));
        // Reopened for the same plan: the decision stands.
        let (g, how) = open(&store, run, "h1", &spec(2, false)).unwrap();
        assert_eq!((g.status.as_str(), how), ("approved", Opened::Existing));
        // For another plan: open afresh, the old approvals do not count.
        let (g, how) = open(&store, run, "h2", &spec(2, false)).unwrap();
        assert_eq!((g.status.as_str(), how), ("pending", Opened::Replanned));
        assert!(g.approved_by().is_empty());
        assert!(refused(decide(
            &store,
            run,
            "prod.approve",
            "alice",
            Decision::Approve,
            None,
            "cli",
            Some("h1")
        ))
        .contains("not the plan h1"));
    }

    #[test]
    fn deadline_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = store_with_run(dir.path());
        let mut s = spec(1, true);
        s.timeout_ms = 0;
        open(&store, run, "h", &s).unwrap();
        let Err(DecideError::Refused(m)) = decide(
            &store,
            run,
            "approve",
            "carol",
            Decision::Approve,
            None,
            "cli",
            None,
        ) else {
            panic!("an expired gate was approved");
        };
        assert!(m.contains("expired"), "{m}");
        assert_eq!(
            gate(&store, run, "prod.approve").unwrap().unwrap().status,
            "expired"
        );
        assert!(pending(&store).unwrap().is_empty());
    }
}
