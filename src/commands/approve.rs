//! `pipe approve [RUN] GATE` and `pipe reject [RUN] GATE`: record a decision
//! on an open approval gate, as `PIPE_USER` (else the OS user), from any
//! terminal. A running `pipe run` notices it within its poll interval; a run
//! that stopped waiting continues with `pipe resume`. See docs/gates.md.

use pipe_runtime::gate::{self, identity, DecideError, Decision};

use super::run::StateArgs;
use crate::exit::Failure;
use crate::project::Project;

#[derive(clap::Args, Debug, Clone)]
pub struct DecideArgs {
    /// `[RUN] GATE`: the run id (default: the one run with this gate open)
    /// and the gate, as `stage.name` or its name.
    #[arg(num_args = 1..=2, required = true, value_names = ["RUN", "GATE"])]
    pub target: Vec<String>,
    /// Why: recorded with the decision and shown with it.
    #[arg(long, short = 'm')]
    pub comment: Option<String>,
    /// The plan hash you reviewed (from `pipe gates`): refused if the gate is
    /// open for another plan.
    #[arg(long, value_name = "HASH")]
    pub plan: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

pub fn run(project: &Project, args: &DecideArgs, decision: Decision) -> Result<String, Failure> {
    let store = args.state.open_existing(project)?;
    let fail = |e: pipe_runtime::StateError| Failure::invalid(e.to_string());
    let (run, gate_name) = match args.target.as_slice() {
        [run, g] => {
            let id = store.resolve_run(Some(run)).map_err(fail)?.id;
            (id, g.clone())
        }
        [g] => (only_run_with(&store, g)?, g.clone()),
        _ => return Err(Failure::invalid("give `[RUN] GATE`")),
    };
    let user = identity::current_user();
    match gate::decide(
        &store,
        run,
        &gate_name,
        &user,
        decision,
        args.comment.as_deref(),
        "cli",
        args.plan.as_deref(),
    ) {
        Ok(g) => Ok(match (decision, g.status.as_str()) {
            (Decision::Reject, _) => format!(
                "rejected gate {} of run {run} as {user}: its branch fails\n",
                g.gate
            ),
            (Decision::Approve, "approved") => format!(
                "approved gate {} of run {run} as {user} (approved by {}): a waiting `pipe run` goes on; a stopped run goes on with `pipe resume {run}`\n",
                g.gate,
                g.approved_by().join(", ")
            ),
            (Decision::Approve, _) => format!(
                "approved gate {} of run {run} as {user}: {} of {} approvals, it needs another person\n",
                g.gate,
                g.approved_by().len(),
                g.min_approvals
            ),
        }),
        Err(DecideError::Refused(m)) => Err(Failure::invalid(format!("refused: {m}"))),
        Err(DecideError::State(e)) => Err(fail(e)),
    }
}

/// The run whose open gate `name` is, when exactly one has it open.
fn only_run_with(store: &pipe_runtime::Store, name: &str) -> Result<i64, Failure> {
    let pending = gate::pending(store).map_err(|e| Failure::invalid(e.to_string()))?;
    let runs: Vec<i64> = pending
        .iter()
        .filter(|g| g.gate == name || g.gate.rsplit_once('.').is_some_and(|(_, n)| n == name))
        .map(|g| g.run)
        .collect();
    match runs.as_slice() {
        [r] => Ok(*r),
        [] => Err(Failure::invalid(format!(
            "no run has gate `{name}` open (see `pipe gates`)"
        ))),
        many => Err(Failure::invalid(format!(
            "gate `{name}` is open in runs {}: name the run, `pipe approve RUN {name}`",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
