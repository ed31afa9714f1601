//! Critical-path analysis of a plan: earliest and latest start of every step
//! from its estimated duration, its slack, and the chain of zero-slack steps
//! that bounds the run's length.

use serde::Serialize;

use crate::plan::Plan;

/// The estimate of a step that declares none (and has no recorded history).
pub const DEFAULT_ESTIMATE_MS: u64 = 30_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepTiming {
    pub duration_ms: u64,
    pub earliest_start_ms: u64,
    pub earliest_finish_ms: u64,
    pub latest_start_ms: u64,
    pub latest_finish_ms: u64,
    pub slack_ms: u64,
    pub critical: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// Indexed like [`Plan::steps`].
    pub steps: Vec<StepTiming>,
    /// Total length of the run if every step takes its estimate.
    pub length_ms: u64,
    /// Step indices along one critical path, in order.
    pub path: Vec<usize>,
}

/// Computes the schedule with `duration(i)` as the length of step `i`.
pub fn schedule(plan: &Plan, duration: impl Fn(usize) -> u64) -> Schedule {
    let n = plan.steps().len();
    let dur: Vec<u64> = (0..n).map(&duration).collect();
    let mut es = vec![0u64; n];
    for &i in plan.topo_order() {
        let start = plan
            .step(i)
            .needs
            .iter()
            .map(|&j| es[j] + dur[j])
            .max()
            .unwrap_or(0);
        es[i] = start;
    }
    let length = (0..n).map(|i| es[i] + dur[i]).max().unwrap_or(0);
    let mut lf = vec![length; n];
    for &i in plan.topo_order().iter().rev() {
        let finish = plan
            .dependents(i)
            .map(|d| lf[d] - dur[d])
            .min()
            .unwrap_or(length);
        lf[i] = finish;
    }
    let steps: Vec<StepTiming> = (0..n)
        .map(|i| {
            let slack = lf[i] - dur[i] - es[i];
            StepTiming {
                duration_ms: dur[i],
                earliest_start_ms: es[i],
                earliest_finish_ms: es[i] + dur[i],
                latest_start_ms: lf[i] - dur[i],
                latest_finish_ms: lf[i],
                slack_ms: slack,
                critical: slack == 0,
            }
        })
        .collect();
    // Follow zero-slack steps from a critical start to a critical finish.
    let mut path = Vec::new();
    let mut cur = plan
        .topo_order()
        .iter()
        .copied()
        .filter(|&i| steps[i].critical && steps[i].earliest_start_ms == 0)
        .max_by_key(|&i| (dur[i], std::cmp::Reverse(i)));
    while let Some(i) = cur {
        path.push(i);
        cur = plan
            .dependents(i)
            .filter(|&d| {
                steps[d].critical && steps[d].earliest_start_ms == steps[i].earliest_finish_ms
            })
            .min();
    }
    Schedule {
        steps,
        length_ms: length,
        path,
    }
}

/// The schedule with each step's declared estimate or the default.
pub fn schedule_from_estimates(plan: &Plan) -> Schedule {
    schedule(plan, |i| {
        plan.step(i).estimate_ms.unwrap_or(DEFAULT_ESTIMATE_MS)
    })
}
