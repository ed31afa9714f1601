//! The summary table printed at the end of a run on a terminal, and the
//! critical path of that run: the longest chain of steps through the plan's
//! dependency edges, weighed by how long each step really took (see
//! docs/runtime.md, "Output").

use std::collections::HashMap;
use std::fmt::Write as _;

use pipe_lang::Plan;

use super::duration;

/// The dependency edges of a plan's main steps, kept by the renderer so it
/// can compute the run's critical path when the run ends.
#[derive(Clone, Debug, Default)]
pub struct RunGraph {
    ids: Vec<String>,
    /// `needs[i]`: the steps `i` waits for.
    needs: Vec<Vec<usize>>,
    /// A topological order of the steps.
    topo: Vec<usize>,
    index: HashMap<String, usize>,
}

impl RunGraph {
    /// `ids[i]` needs `needs[i]`; `topo` is a topological order.
    pub fn new(ids: Vec<String>, needs: Vec<Vec<usize>>, topo: Vec<usize>) -> RunGraph {
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        RunGraph {
            ids,
            needs,
            topo,
            index,
        }
    }

    pub fn from_plan(plan: &Plan) -> RunGraph {
        RunGraph::new(
            plan.steps().iter().map(|s| s.id.clone()).collect(),
            plan.steps().iter().map(|s| s.needs.clone()).collect(),
            plan.topo_order().to_vec(),
        )
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }
}

/// The critical path of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriticalPath {
    /// Step ids in order.
    pub steps: Vec<String>,
    pub total_ms: u64,
}

/// The longest path by real duration. `durations` holds the steps that
/// finished in this run (skipped and cached ones with 0); a step the run
/// never reached takes no time and is no part of the path. Ties go to the
/// step first in topological order, so the result is deterministic.
pub fn critical_path(g: &RunGraph, durations: &HashMap<String, u64>) -> CriticalPath {
    let n = g.ids.len();
    let dur: Vec<Option<u64>> = g.ids.iter().map(|id| durations.get(id).copied()).collect();
    // best[i]: the longest chain of reached steps ending with i.
    let mut best = vec![0u64; n];
    let mut pred: Vec<Option<usize>> = vec![None; n];
    for &i in &g.topo {
        let Some(d) = dur[i] else { continue };
        let mut from: Option<usize> = None;
        for &j in &g.needs[i] {
            if dur[j].is_some() && from.is_none_or(|f| best[j] > best[f]) {
                from = Some(j);
            }
        }
        best[i] = d + from.map_or(0, |f| best[f]);
        pred[i] = from;
    }
    let mut end: Option<usize> = None;
    for &i in &g.topo {
        if dur[i].is_some() && end.is_none_or(|e| best[i] > best[e]) {
            end = Some(i);
        }
    }
    let mut path = Vec::new();
    let mut cur = end;
    while let Some(i) = cur {
        path.push(g.ids[i].clone());
        cur = pred[i];
    }
    path.reverse();
    CriticalPath {
        steps: path,
        total_ms: end.map_or(0, |e| best[e]),
    }
}

/// One finished step, as the table shows it.
#[derive(Clone, Debug)]
pub struct Row {
    pub step: String,
    /// `ok`, `failed`, `timed out`, `cancelled`, `skipped`, `cached`, `warning`.
    pub status: &'static str,
    pub attempts: u32,
    /// From its first start in this run to its end (retries included).
    pub duration_ms: u64,
}

/// The word a `step_finished` status is shown as on a terminal.
pub fn status_word(status: &str, required: bool) -> &'static str {
    match status {
        "succeeded" => "ok",
        "failed" | "timed_out" if !required => "warning",
        "failed" => "failed",
        "timed_out" => "timed out",
        "cancelled" => "cancelled",
        "skipped" => "skipped",
        "cached" => "cached",
        _ => "done",
    }
}

/// The SGR colour of a status word.
pub fn status_color(word: &str) -> &'static str {
    match word {
        "ok" | "cached" => "\x1b[32m",
        "failed" | "timed out" => "\x1b[31m",
        "warning" | "cancelled" => "\x1b[33m",
        _ => "\x1b[2m",
    }
}

/// The table of finished steps (`*` marks the run's critical path), then
/// the path itself with its total.
pub fn table(rows: &[Row], graph: Option<&RunGraph>, color: bool) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    let (bold, red, reset) = if color {
        ("\x1b[1m", "\x1b[1;31m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let path = graph.map(|g| {
        let durations: HashMap<String, u64> = rows
            .iter()
            .filter(|r| g.contains(&r.step))
            .map(|r| (r.step.clone(), r.duration_ms))
            .collect();
        critical_path(g, &durations)
    });
    let on_path = |s: &str| {
        path.as_ref()
            .is_some_and(|p| p.steps.iter().any(|x| x == s))
    };
    let w = rows.iter().map(|r| r.step.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{bold}  {:w$}  {:10}  {:>8}  {:>9}{reset}",
        "step", "status", "attempts", "duration"
    );
    for r in rows {
        let status = format!("{:10}", r.status);
        let status = if color {
            format!("{}{status}{reset}", status_color(r.status))
        } else {
            status
        };
        let line = format!(
            "{:w$}  {status}  {:>8}  {:>9}",
            r.step,
            r.attempts,
            duration(r.duration_ms)
        );
        if on_path(&r.step) {
            let _ = writeln!(out, "{red}*{reset} {line}");
        } else {
            let _ = writeln!(out, "  {line}");
        }
    }
    if let Some(p) = path.filter(|p| !p.steps.is_empty()) {
        let _ = writeln!(
            out,
            "{bold}critical path of this run ({}):{reset} {}",
            duration(p.total_ms),
            p.steps.join(" → ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a → {b, c} → d
    fn diamond() -> RunGraph {
        RunGraph::new(
            vec!["s.a".into(), "s.b".into(), "s.c".into(), "s.d".into()],
            vec![vec![], vec![0], vec![0], vec![1, 2]],
            vec![0, 1, 2, 3],
        )
    }

    fn durations(d: &[(&str, u64)]) -> HashMap<String, u64> {
        d.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }

    #[test]
    fn diamond_takes_the_longer_branch() {
        // a=100, b=300, c=200, d=50: a→b→d = 450, a→c→d = 350.
        let p = critical_path(
            &diamond(),
            &durations(&[("s.a", 100), ("s.b", 300), ("s.c", 200), ("s.d", 50)]),
        );
        assert_eq!(p.steps, ["s.a", "s.b", "s.d"]);
        assert_eq!(p.total_ms, 450);
        // c grows to 350: a→c→d = 500 beats a→b→d = 450.
        let p = critical_path(
            &diamond(),
            &durations(&[("s.a", 100), ("s.b", 300), ("s.c", 350), ("s.d", 50)]),
        );
        assert_eq!(p.steps, ["s.a", "s.c", "s.d"]);
        assert_eq!(p.total_ms, 500);
    }

    #[test]
    fn a_branch_that_outlasts_the_join_ends_the_path() {
        // Without d, and with b the longest: the path ends at b (a→b = 400 > a→c = 300).
        let p = critical_path(
            &diamond(),
            &durations(&[("s.a", 100), ("s.b", 300), ("s.c", 200)]),
        );
        assert_eq!(p.steps, ["s.a", "s.b"]);
        assert_eq!(p.total_ms, 400);
    }

    #[test]
    fn steps_not_reached_are_no_part_of_it() {
        // A resumed run: a succeeded before and was not run again.
        let p = critical_path(&diamond(), &durations(&[("s.b", 30), ("s.d", 5)]));
        assert_eq!(p.steps, ["s.b", "s.d"]);
        assert_eq!(p.total_ms, 35);
        let none = critical_path(&diamond(), &HashMap::new());
        assert!(none.steps.is_empty());
        assert_eq!(none.total_ms, 0);
    }

    #[test]
    fn table_marks_the_path_and_prints_its_total() {
        let rows: Vec<Row> = [("s.a", 100), ("s.b", 300), ("s.c", 200), ("s.d", 50)]
            .iter()
            .map(|(s, d)| Row {
                step: (*s).into(),
                status: "ok",
                attempts: 1,
                duration_ms: *d,
            })
            .collect();
        let t = table(&rows, Some(&diamond()), false);
        assert_eq!(
            t,
            "  step  status      attempts   duration\n\
             * s.a   ok                 1      100ms\n\
             * s.b   ok                 1      300ms\n\
             \x20 s.c   ok                 1      200ms\n\
             * s.d   ok                 1       50ms\n\
             critical path of this run (450ms): s.a → s.b → s.d\n"
        );
    }
}
