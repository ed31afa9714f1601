//! `pipe graph`: the DAG with its critical path, as text, DOT, Mermaid, JSON
//! or SVG. Each step is estimated from the median of its recorded successful
//! durations when the state store has some, else from its declared
//! `estimate` (see [`Estimates`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use pipe_lang::critical::{schedule, Schedule, DEFAULT_ESTIMATE_MS};
use pipe_lang::value::format_duration;
use pipe_lang::Plan;
use pipe_runtime::history::Estimate;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Ascii,
    Dot,
    Mermaid,
    Json,
    /// Drawn by a pure-Rust layout: no Graphviz needed.
    Svg,
}

/// Where a step's estimate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The median of its recorded successful durations.
    History,
    /// Its `estimate = ...`.
    Declared,
    /// Neither: [`DEFAULT_ESTIMATE_MS`].
    Default,
}

/// Each step's estimate and its source, indexed like [`Plan::steps`].
/// Recorded history wins over a declared `estimate`: the declared value is a
/// guess written once, the median of real runs follows the step as it
/// changes (and shrugs off the odd slow run).
pub struct Estimates {
    ms: Vec<u64>,
    source: Vec<Source>,
    samples: Vec<usize>,
}

impl Estimates {
    /// Declared estimates only (no history, or `--no-history`).
    pub fn declared(plan: &Plan) -> Estimates {
        Estimates::with_history(plan, &HashMap::new())
    }

    pub fn with_history(plan: &Plan, history: &HashMap<String, Estimate>) -> Estimates {
        let mut e = Estimates {
            ms: Vec::new(),
            source: Vec::new(),
            samples: Vec::new(),
        };
        for s in plan.steps() {
            let (ms, source, n) = match (history.get(&s.id), s.estimate_ms) {
                (Some(h), _) => (h.median_ms, Source::History, h.samples),
                (None, Some(d)) => (d, Source::Declared, 0),
                (None, None) => (DEFAULT_ESTIMATE_MS, Source::Default, 0),
            };
            e.ms.push(ms);
            e.source.push(source);
            e.samples.push(n);
        }
        e
    }

    fn any_history(&self) -> bool {
        self.source.contains(&Source::History)
    }

    /// The estimate as shown: `~` marks one from history.
    fn label(&self, i: usize) -> String {
        if self.source[i] == Source::History {
            format!("~{}", dur(self.ms[i]))
        } else {
            dur(self.ms[i])
        }
    }
}

/// The estimates `pipe graph` uses: from the state store in `state_dir`
/// unless `no_history` (a store that does not exist is not created).
pub fn estimates(
    plan: &Plan,
    state_dir: &std::path::Path,
    no_history: bool,
) -> Result<Estimates, crate::exit::Failure> {
    if no_history {
        return Ok(Estimates::declared(plan));
    }
    let history = pipe_runtime::history::estimates(state_dir, &plan.pipeline)
        .map_err(|e| crate::exit::Failure::invalid(e.to_string()))?;
    Ok(Estimates::with_history(plan, &history))
}

pub fn render(plan: &Plan, format: Format, est: &Estimates) -> String {
    let sched = schedule(plan, |i| est.ms[i]);
    match format {
        Format::Ascii => ascii(
            plan,
            &sched,
            est,
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        ),
        Format::Dot => dot(plan, &sched, est),
        Format::Mermaid => mermaid(plan, &sched, est),
        Format::Json => json(plan, &sched, est),
        Format::Svg => svg(plan, &sched, est),
    }
}

fn dur(ms: u64) -> String {
    format_duration(ms)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Stages as sections, one line per step, within 80 columns.
pub fn ascii(plan: &Plan, sched: &Schedule, est: &Estimates, color: bool) -> String {
    let (bold, red, dim, reset) = if color {
        ("\x1b[1m", "\x1b[1;31m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let mut out = String::new();
    let env = plan
        .target_env
        .as_deref()
        .map(|e| format!(" --env {e}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{bold}pipeline {}{env}{reset}: {} steps, critical path {}",
        plan.pipeline,
        plan.steps().len(),
        dur(sched.length_ms)
    );
    if est.any_history() {
        let _ = writeln!(
            out,
            "{dim}  * = critical path; est = estimate (~: from past runs), start = earliest start{reset}"
        );
    } else {
        let _ = writeln!(
            out,
            "{dim}  * = on the critical path; est = estimate, start = earliest start{reset}"
        );
    }
    let _ = writeln!(
        out,
        "    {:<36} {:>8} {:>9} {:>9}",
        "step", "est", "start", "slack"
    );
    for stage in plan.stages() {
        if stage.steps.is_empty() {
            continue;
        }
        let mut header = format!("stage {}", stage.name);
        if let Some(e) = &stage.environment {
            let _ = write!(header, " [env {e}]");
        }
        if !stage.required {
            header.push_str(" [warn only]");
        }
        let _ = writeln!(out, "{bold}{}{reset}", truncate(&header, 78));
        for &i in &stage.steps {
            let s = plan.step(i);
            let t = &sched.steps[i];
            let name = match &s.template {
                Some(t) => format!("{} ({t})", s.name),
                None if s.executor == "shell" => s.name.clone(),
                None => format!("{} ({})", s.name, s.executor),
            };
            let line = format!(
                "{:<36} {:>8} {:>9} {:>9}",
                truncate(&name, 36),
                est.label(i),
                dur(t.earliest_start_ms),
                dur(t.slack_ms)
            );
            if t.critical {
                let _ = writeln!(out, "  {red}* {line}{reset}");
            } else {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    let names: Vec<String> = sched
        .path
        .iter()
        .map(|&i| plan.step(i).id.clone())
        .collect();
    let _ = writeln!(
        out,
        "{bold}critical path ({}):{reset}",
        dur(sched.length_ms)
    );
    let mut line = String::from("  ");
    for (k, n) in names.iter().enumerate() {
        let piece = if k + 1 < names.len() {
            format!("{n} → ")
        } else {
            n.clone()
        };
        if line.chars().count() + piece.chars().count() > 78 {
            let _ = writeln!(out, "{line}");
            line = String::from("  ");
        }
        line.push_str(&piece);
    }
    let _ = writeln!(out, "{line}");
    if !plan.handlers().is_empty() {
        let h: Vec<String> = plan
            .handlers()
            .iter()
            .map(|s| format!("{} (on {})", s.name, s.handler.map_or("", |k| k.as_str())))
            .collect();
        let _ = writeln!(out, "{dim}handlers: {}{reset}", truncate(&h.join(", "), 68));
    }
    out
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn dot(plan: &Plan, sched: &Schedule, est: &Estimates) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_id(&plan.pipeline));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  label={};",
        dot_id(&format!(
            "{} — critical path {}",
            plan.pipeline,
            dur(sched.length_ms)
        ))
    );
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    for (si, stage) in plan.stages().iter().enumerate() {
        if stage.steps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  subgraph cluster_{si} {{");
        let _ = writeln!(out, "    label={};", dot_id(&stage.name));
        for &i in &stage.steps {
            let s = plan.step(i);
            let t = &sched.steps[i];
            let label = format!(
                "{}\\nest {} · slack {}",
                s.name,
                est.label(i),
                dur(t.slack_ms)
            );
            let style = if t.critical {
                ", color=red, penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label=\"{}\"{style}];",
                dot_id(&s.id),
                label.replace('"', "\\\"")
            );
        }
        let _ = writeln!(out, "  }}");
    }
    // Quoted once: a big plan has 25 edges per step.
    let ids: Vec<String> = plan.steps().iter().map(|s| dot_id(&s.id)).collect();
    for (i, s) in plan.steps().iter().enumerate() {
        for &n in &s.needs {
            let crit = sched.steps[i].critical
                && sched.steps[n].critical
                && sched.steps[n].earliest_finish_ms == sched.steps[i].earliest_start_ms;
            let style = if crit { " [color=red, penwidth=2]" } else { "" };
            let _ = writeln!(out, "  {} -> {}{style};", ids[n], ids[i]);
        }
    }
    let _ = writeln!(out, "}}");
    out
}

pub fn mermaid(plan: &Plan, sched: &Schedule, est: &Estimates) -> String {
    let mut out = String::from("flowchart LR\n");
    for stage in plan.stages() {
        if stage.steps.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  subgraph {}[\"{}\"]",
            stage_id(&stage.name),
            stage.name
        );
        for &i in &stage.steps {
            let s = plan.step(i);
            let t = &sched.steps[i];
            let _ = writeln!(
                out,
                "    n{i}[\"{}<br/>est {} · slack {}\"]",
                s.name.replace('"', "#quot;"),
                est.label(i),
                dur(t.slack_ms)
            );
        }
        let _ = writeln!(out, "  end");
    }
    for (i, s) in plan.steps().iter().enumerate() {
        for &n in &s.needs {
            let _ = writeln!(out, "  n{n} --> n{i}");
        }
    }
    let crit: Vec<String> = (0..plan.steps().len())
        .filter(|&i| sched.steps[i].critical)
        .map(|i| format!("n{i}"))
        .collect();
    let _ = writeln!(out, "  classDef critical stroke:#d00,stroke-width:3px");
    if !crit.is_empty() {
        let _ = writeln!(out, "  class {} critical", crit.join(","));
    }
    out
}

/// The DAG as a standalone SVG file: estimates and slack in each box, the
/// critical path in red (see [`crate::report::dag`]).
pub fn svg(plan: &Plan, sched: &Schedule, est: &Estimates) -> String {
    use crate::report::dag::{svg_file, Edge, Node};
    let labels: Vec<String> = plan
        .steps()
        .iter()
        .zip(&sched.steps)
        .enumerate()
        .map(|(i, (s, t))| format!("{}\nest {} · slack {}", s.id, est.label(i), dur(t.slack_ms)))
        .collect();
    let on_path: Vec<bool> = (0..plan.steps().len())
        .map(|i| sched.path.contains(&i))
        .collect();
    let nodes: Vec<Node<'_>> = plan
        .steps()
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (s, label))| Node {
            id: &s.id,
            label: label.clone(),
            critical: on_path[i],
            class: "",
            fill: "#ffffff",
        })
        .collect();
    let mut edges = Vec::new();
    for (i, s) in plan.steps().iter().enumerate() {
        for &n in &s.needs {
            let critical = sched.path.windows(2).any(|w| w[0] == n && w[1] == i);
            edges.push(Edge {
                from: n,
                to: i,
                critical,
            });
        }
    }
    svg_file(
        &format!("{} — critical path {}", plan.pipeline, dur(sched.length_ms)),
        &nodes,
        &edges,
    )
}

fn stage_id(name: &str) -> String {
    format!(
        "s_{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

#[derive(serde::Serialize)]
struct JsonGraph<'p> {
    pipeline: &'p str,
    env: Option<&'p str>,
    params: &'p indexmap::IndexMap<String, pipe_lang::Value>,
    length_ms: u64,
    critical_path: Vec<&'p str>,
    stages: &'p [pipe_lang::plan::StageInfo],
    steps: Vec<JsonStep<'p>>,
    handlers: Vec<JsonHandler<'p>>,
}

#[derive(serde::Serialize)]
struct JsonStep<'p> {
    id: &'p str,
    stage: &'p str,
    name: &'p str,
    executor: &'p str,
    template: Option<&'p str>,
    needs: Vec<&'p str>,
    environment: Option<&'p str>,
    estimate_ms: u64,
    /// `history`, `declared` or `default`.
    estimate_source: Source,
    /// How many recorded successes the history estimate is the median of.
    estimate_samples: usize,
    earliest_start_ms: u64,
    latest_start_ms: u64,
    slack_ms: u64,
    critical: bool,
    location: String,
}

#[derive(serde::Serialize)]
struct JsonHandler<'p> {
    id: &'p str,
    on: Option<pipe_lang::ast::HandlerKind>,
    executor: &'p str,
}

/// Serialised straight from borrowed fields: a 10,000-step plan with its
/// edges is megabytes of JSON, and an intermediate `serde_json::Value` tree
/// would triple the memory.
pub fn json(plan: &Plan, sched: &Schedule, est: &Estimates) -> String {
    let mut out = Vec::new();
    write_json(plan, sched, est, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The JSON graph of `plan` and estimates `est`, written as it is serialised
/// (a 10,000-step plan is about 10 MB of JSON: no string of it is built).
pub fn write_json_for(
    plan: &Plan,
    est: &Estimates,
    out: impl std::io::Write,
) -> std::io::Result<()> {
    write_json(plan, &schedule(plan, |i| est.ms[i]), est, out)
}

fn write_json(
    plan: &Plan,
    sched: &Schedule,
    est: &Estimates,
    mut out: impl std::io::Write,
) -> std::io::Result<()> {
    let steps = plan
        .steps()
        .iter()
        .zip(&sched.steps)
        .enumerate()
        .map(|(i, (s, t))| JsonStep {
            id: &s.id,
            stage: &s.stage,
            name: &s.name,
            executor: &s.executor,
            template: s.template.as_deref(),
            needs: s.needs.iter().map(|&n| plan.step(n).id.as_str()).collect(),
            environment: s.environment.as_deref(),
            estimate_ms: t.duration_ms,
            estimate_source: est.source[i],
            estimate_samples: est.samples[i],
            earliest_start_ms: t.earliest_start_ms,
            latest_start_ms: t.latest_start_ms,
            slack_ms: t.slack_ms,
            critical: t.critical,
            location: plan.location(s.span),
        })
        .collect();
    let graph = JsonGraph {
        pipeline: &plan.pipeline,
        env: plan.target_env.as_deref(),
        params: &plan.params,
        length_ms: sched.length_ms,
        critical_path: sched
            .path
            .iter()
            .map(|&i| plan.step(i).id.as_str())
            .collect(),
        stages: plan.stages(),
        steps,
        handlers: plan
            .handlers()
            .iter()
            .map(|h| JsonHandler {
                id: &h.id,
                on: h.handler,
                executor: &h.executor,
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut out, &graph)?;
    out.write_all(b"\n")
}
