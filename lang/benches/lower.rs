//! Benchmark (run by hand): parse + check + lower of a generated pipeline.
//!
//! `cargo bench -p pipe-lang --bench lower -- 10000 [out.pipe]` generates a
//! pipeline of about that many steps (stages of fan-out with dependencies and
//! template calls), times each phase (best and median of 15 runs), and writes
//! the source to `out.pipe` for timing the whole `pipe graph` process.

use std::time::{Duration, Instant};

use pipe_lang::lower::{check, lower, Context};
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

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed());
        last = Some(out);
    }
    times.sort();
    (times[0], times[runs / 2], last.expect("runs > 0"))
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
    let (pb, pm, ws) = time(runs, || {
        Workspace::load(vec![("big.pipe".into(), text.clone())], &mut NoLoader)
    });
    assert!(ws.diagnostics.is_empty(), "generated pipeline must parse");
    let (_, pl) = ws.find_pipeline("big").expect("pipeline");
    let (lb, lm, plan) = time(runs, || lower(&ws, 0, pl, &ctx).0.expect("lowers"));
    let (cb, cm, diags) = time(runs, || check(&ws, &ctx));
    assert!(diags.is_empty(), "{diags:?}");
    let (tb, tm, _) = time(runs, || {
        let ws = Workspace::load(vec![("big.pipe".into(), text.clone())], &mut NoLoader);
        let (_, pl) = ws.find_pipeline("big").expect("pipeline");
        lower(&ws, 0, pl, &ctx).0.expect("lowers").steps().len()
    });
    let edges: usize = plan.steps().iter().map(|s| s.needs.len()).sum();
    println!(
        "generated: {} bytes, {} steps, {edges} edges",
        text.len(),
        plan.steps().len()
    );
    println!("parse (incl. std imports):  best {pb:>10.2?}  median {pm:>10.2?}");
    println!("lower (analysis + plan):    best {lb:>10.2?}  median {lm:>10.2?}");
    println!("check (all diagnostics):    best {cb:>10.2?}  median {cm:>10.2?}");
    println!("parse + check + lower:      best {tb:>10.2?}  median {tm:>10.2?}");
}
