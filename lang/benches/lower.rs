//! Benchmark (run by hand) of the language core on a generated pipeline.
//!
//! The whole benchmark, with the `pipe graph` process, its peak memory and
//! the `just --summary` reference, is one command (docs/benchmarks.md):
//!
//! ```text
//! bash lang/benches/run.sh [STEPS]
//! ```
//!
//! This binary is its in-process part: `cargo bench -p pipe-lang --bench lower
//! -- 10000 [out.pipe [justfile]]` generates a pipeline of about that many
//! steps (stages of fan-out with dependencies and template calls), times each
//! phase (best, median and spread of `BENCH_RUNS`, default 15, runs), and writes
//! the source to `out.pipe` and a justfile of as many recipes, shaped alike,
//! to `justfile`.

use std::time::{Duration, Instant};

// The allocator of the `pipe` binary (src/main.rs), so that the figures are
// the ones `pipe` gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pipe_lang::critical::schedule_from_estimates;
use pipe_lang::lower::{check, check_and_lower, lower, Context};
use pipe_lang::workspace::{NoLoader, Workspace};

/// `stages` stages of `per_stage` steps: half build steps from a loop, half
/// test steps that each need their build step; each stage needs the previous.
fn generate(steps: usize) -> String {
    let per_stage = 100;
    let stages = steps.div_ceil(per_stage);
    let mut s = String::from("import \"std/http\"\n\npipeline big {\n  param shards: int = 50\n\n");
    for st in 0..stages {
        s.push_str(&format!("  stage s{st} {{\n"));
        if st > 0 {
            s.push_str(&format!("    needs = [s{}]\n", st - 1));
        }
        s.push_str("    for i in range(shards) {\n");
        s.push_str(&format!(
            "      step \"build-${{i}}\" {{ run = \"make -C shard${{i}} stage{st}\"  estimate = 30s  env = {{ SHARD = string(i) }} }}\n"
        ));
        s.push_str("      step \"check-${i}\" = http.check { needs = [\"build-${i}\"]  url = \"http://127.0.0.1:8080/shard/${i}\"  expect = 200 }\n");
        s.push_str("    }\n  }\n");
    }
    s.push_str("}\n");
    s
}

/// The reference for `just --summary`: as many recipes, in stages of 50
/// builds and 50 checks, each check depending on its build and each build on
/// the same shard's check of the previous stage.
fn generate_justfile(steps: usize) -> String {
    let per_stage = 100;
    let stages = steps.div_ceil(per_stage);
    let mut s = String::new();
    for st in 0..stages {
        for i in 0..per_stage / 2 {
            if st > 0 {
                s.push_str(&format!("build-{st}-{i}: check-{}-{i}\n", st - 1));
            } else {
                s.push_str(&format!("build-{st}-{i}:\n"));
            }
            s.push_str(&format!("    make -C shard{i} stage{st}\n\n"));
            s.push_str(&format!(
                "check-{st}-{i}: build-{st}-{i}\n    curl -fsS http://127.0.0.1:8080/shard/{i}\n\n"
            ));
        }
    }
    s
}

/// Best, median and spread (max - min) of the runs.
struct Timing {
    best: Duration,
    median: Duration,
    spread: Duration,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "best {:>10.2?}  median {:>10.2?}  spread {:>10.2?}",
            self.best, self.median, self.spread
        )
    }
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Timing, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed());
        last = Some(out);
    }
    times.sort();
    let timing = Timing {
        best: times[0],
        median: times[runs / 2],
        spread: times[runs - 1].saturating_sub(times[0]),
    };
    (timing, last.expect("runs > 0"))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let text = generate(n);
    if let Some(out) = args.get(1) {
        std::fs::write(out, &text).expect("write generated pipeline");
    }
    let ctx = Context::offline();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    if let Some(out) = args.get(2) {
        std::fs::write(out, generate_justfile(n)).expect("write generated justfile");
    }
    let (parse, ws) = time(runs, || {
        Workspace::load(vec![("big.pipe".into(), text.clone())], &mut NoLoader)
    });
    assert!(ws.diagnostics.is_empty(), "generated pipeline must parse");
    let (_, pl) = ws.find_pipeline("big").expect("pipeline");
    let (lowering, plan) = time(runs, || lower(&ws, 0, pl, &ctx).0.expect("lowers"));
    let (checking, diags) = time(runs, || check(&ws, &ctx));
    assert!(diags.is_empty(), "{diags:?}");
    // What `pipe graph` does before rendering: parse, then lower (lowering
    // is the analysis of that pipeline).
    let (graph_path, _) = time(runs, || {
        let ws = Workspace::load(vec![("big.pipe".into(), text.clone())], &mut NoLoader);
        let (_, pl) = ws.find_pipeline("big").expect("pipeline");
        lower(&ws, 0, pl, &ctx).0.expect("lowers").steps().len()
    });
    // The issue's figure: parse, then `pipe check`'s analysis of the whole
    // workspace, which lowers each pipeline once and keeps the plans.
    let (total, _) = time(runs, || {
        let ws = Workspace::load(vec![("big.pipe".into(), text.clone())], &mut NoLoader);
        let (diags, plans) = check_and_lower(&ws, &ctx);
        assert!(diags.is_empty());
        plans[0].steps().len()
    });
    let (sched, _) = time(runs, || schedule_from_estimates(&plan).length_ms);
    let edges: usize = plan.steps().iter().map(|s| s.needs.len()).sum();
    println!(
        "generated: {} bytes, {} steps, {edges} edges; {runs} runs each",
        text.len(),
        plan.steps().len()
    );
    println!("parse (incl. std imports):  {parse}");
    println!("lower (analysis + plan):    {lowering}");
    println!("check (all diagnostics):    {checking}");
    println!("parse + lower (pipe graph): {graph_path}");
    println!("parse + check + lower:      {total}");
    println!("critical path (schedule):   {sched}");

    // Lowering again with asserts (lang/src/asserts.rs): one that holds, over
    // the middle stage's 100 steps as gates, and one that fails, with every
    // `check-*` step (half the plan) as a gate. Runs are interleaved so that
    // machine noise hits each variant alike; the best run is the figure.
    let last = n.div_ceil(100) - 1;
    let mid = last / 2;
    let variants = [
        ("no assert", String::new()),
        (
            "assert that holds (100 gates)",
            format!(
                "assert holds {{ from = stage.s0  to = stage.s{last}  through = [\"s{mid}.*\"] }}"
            ),
        ),
        (
            "assert that fails (5000 gates)",
            format!(
                "assert fails {{ from = stage.s0  to = stage.s{last}  through = [\"check-*\"] }}"
            ),
        ),
    ];
    let spaces: Vec<Workspace> = variants
        .iter()
        .map(|(_, a)| {
            let src = text
                .trim_end()
                .strip_suffix('}')
                .expect("pipeline end")
                .to_string()
                + a
                + "\n}\n";
            Workspace::load(vec![("big.pipe".into(), src)], &mut NoLoader)
        })
        .collect();
    let mut best = [Duration::MAX; 3];
    for _ in 0..runs {
        for (k, ws) in spaces.iter().enumerate() {
            let (_, pl) = ws.find_pipeline("big").expect("pipeline");
            let t = Instant::now();
            let (plan, diags) = lower(ws, 0, pl, &ctx);
            best[k] = best[k].min(t.elapsed());
            assert_eq!(plan.is_some(), k != 2, "{diags:?}");
        }
    }
    for (k, (what, _)) in variants.iter().enumerate() {
        println!(
            "lower, {what:<30} best {:>10.2?}  (+{:.2?})",
            best[k],
            best[k].saturating_sub(best[0])
        );
    }
}
