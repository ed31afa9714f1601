//! The run report as one self-contained HTML page: inline CSS, inline SVG
//! (the timeline and the DAG) and a little inline JS, nothing fetched from
//! anywhere. Every step carries `data-step="ID"` in each view and the class
//! `critical` when it lies on the critical path, which is what the browser
//! test checks (docs/report.md).

use std::fmt::Write as _;

use pipe_runtime::time::rfc3339;

use super::dag::{self, escape};
use super::model::{Report, Segment, SegmentKind, StepReport};
use crate::render::duration;

const CHART_W: f64 = 900.0;
const LABEL_W: f64 = 280.0;
const ROW_H: f64 = 22.0;
const AXIS_H: f64 = 24.0;

/// Catches every script error and `console.error` into `#console-errors`,
/// before any other script runs, so a headless `--dump-dom` shows them.
const ERROR_TRAP: &str = r"
(function () {
  var errs = [];
  function show() {
    var el = document.getElementById('console-errors');
    if (el) { el.textContent = errs.join('\n'); el.hidden = errs.length === 0; }
  }
  window.addEventListener('error', function (e) {
    errs.push('error: ' + (e.message || e.type) + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
    show();
  }, true);
  document.addEventListener('securitypolicyviolation', function (e) {
    errs.push('blocked by the page policy: ' + e.violatedDirective + ' ' + e.blockedURI);
    show();
  });
  window.addEventListener('unhandledrejection', function (e) { errs.push('unhandled rejection: ' + e.reason); show(); });
  var orig = console.error;
  console.error = function () {
    errs.push('console.error: ' + Array.prototype.slice.call(arguments).join(' '));
    show();
    return orig.apply(console, arguments);
  };
  window.__pipeErrors = errs;
  document.addEventListener('DOMContentLoaded', show);
})();
";

/// Highlights one step across every view on click, and filters the step
/// table to the critical path. Marks `<html data-js="ok">` when done.
const SCRIPT: &str = r"
(function () {
  function esc(s) { return (window.CSS && CSS.escape) ? CSS.escape(s) : s.replace(/([^\w-])/g, '\\$1'); }
  function focus(id) {
    document.querySelectorAll('.focus').forEach(function (el) { el.classList.remove('focus'); });
    if (!id) return;
    document.querySelectorAll('[data-step=\'' + esc(id) + '\']').forEach(function (el) { el.classList.add('focus'); });
  }
  document.addEventListener('click', function (ev) {
    var el = ev.target.closest ? ev.target.closest('[data-step]') : null;
    if (!el) return;
    var id = el.getAttribute('data-step');
    focus(id);
    if (el.closest('svg') || el.closest('#steps')) {
      var d = document.getElementById('step-' + id);
      if (d) { d.open = true; }
    }
  });
  var only = document.getElementById('only-critical');
  if (only) {
    only.addEventListener('change', function () {
      document.body.classList.toggle('only-critical', only.checked);
    });
  }
  var n = document.querySelectorAll('#steps tbody tr[data-step]').length;
  var counter = document.getElementById('step-count');
  if (counter) { counter.textContent = String(n); }
  document.documentElement.setAttribute('data-js', 'ok');
})();
";

const STYLE: &str = r"
:root { --ok:#2e7d32; --bad:#c62828; --warn:#ef6c00; --crit:#d00000; --muted:#666; --line:#ddd; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 16px 24px; }
header h1 { margin: 0 0 8px; font-size: 22px; }
main { padding: 8px 24px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 16px 0; padding: 12px 16px; overflow-x: auto; }
h2 { font-size: 17px; margin: 4px 0 10px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, 'SFMono-Regular', Menlo, monospace; font-size: 12.5px; }
pre { background: #111; color: #eee; padding: 8px 10px; border-radius: 4px; overflow-x: auto; max-height: 480px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; background: #888; vertical-align: middle; }
.badge.succeeded { background: var(--ok); } .badge.failed { background: var(--bad); }
.badge.cancelled, .badge.interrupted { background: #6d4c41; } .badge.running, .badge.retrying { background: #1565c0; }
.badge.skipped, .badge.pending { background: #9e9e9e; } .badge.waiting { background: #6a1b9a; }
tr.critical td:first-child, li.critical { color: var(--crit); font-weight: 600; }
tr.critical td:first-child::before { content: '◆ '; }
.focus, tr.focus td { outline: 2px solid #1565c0; background: #e3f2fd !important; }
svg .focus rect { stroke: #1565c0 !important; stroke-width: 3 !important; }
body.only-critical #steps tbody tr:not(.critical) { display: none; }
.gantt text { font: 12px system-ui, sans-serif; fill: #222; }
.gantt .axis text { fill: var(--muted); font-size: 11px; }
.gantt .axis line { stroke: #eee; }
.gantt .gantt-row.critical > text { fill: var(--crit); font-weight: 700; }
.gantt .gantt-row.critical .seg.running { stroke: var(--crit); stroke-width: 2; }
.gantt .gantt-row:hover > rect.band { fill: #f0f7ff; }
.seg.queued { fill: #d6d6d6; } .seg.running { fill: #4a90d9; } .seg.running.end-failed, .seg.running.end-retrying, .seg.running.end-cancelled { fill: #e06666; }
.seg.retrying { fill: #f0ad4e; } .seg.waiting { fill: #9b59b6; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 14px; height: 10px; margin-right: 4px; vertical-align: middle; border-radius: 2px; }
.legend i.crit { background: #fff; border: 2px solid var(--crit); }
details.step { border-bottom: 1px solid var(--line); padding: 6px 0; }
details.step > summary { cursor: pointer; }
details.step.critical > summary { color: var(--crit); font-weight: 600; }
details.log { margin: 6px 0 6px 16px; }
.warn { color: var(--warn); }
.muted { color: var(--muted); }
#console-errors { background: #fee; color: #900; }
.dag { max-width: none; }
";

/// Renders the whole page. `dag_svg` is the inline DAG picture.
pub fn render(r: &Report, dag_svg: &str) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("{} · run {}", r.run.pipeline, r.run.id);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\" data-js=\"pending\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n<meta name=\"generator\" content=\"pipe {}\">\n<title>{}</title>\n<script>{ERROR_TRAP}</script>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&title)
    );
    header(&mut h, r);
    h.push_str("<main>\n");
    let _ = writeln!(
        h,
        "<nav><a href=\"#timeline\">Timeline</a><a href=\"#critical-path\">Critical path</a><a href=\"#dag\">DAG</a><a href=\"#steps\">Steps</a><a href=\"#warnings\">Warnings</a>{}<a href=\"#details\">Outputs and logs</a></nav>",
        if r.approvals.is_empty() {
            ""
        } else {
            "<a href=\"#approvals\">Approvals</a>"
        }
    );
    timeline(&mut h, r);
    critical(&mut h, r);
    let _ = writeln!(
        h,
        "<section id=\"dag\"><h2>DAG</h2>\n<p class=\"muted\">Boxes are steps, coloured by status; the critical path is drawn in red.</p>\n{dag_svg}</section>"
    );
    steps_table(&mut h, r);
    warnings(&mut h, r);
    approvals(&mut h, r);
    details(&mut h, r);
    h.push_str("<pre id=\"console-errors\" hidden></pre>\n</main>\n");
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    h
}

fn header(h: &mut String, r: &Report) {
    let run = &r.run;
    let _ = writeln!(
        h,
        "<header><h1>{} <span class=\"badge {}\" id=\"run-status\">{}</span></h1>\n<dl class=\"meta\">",
        escape(&run.pipeline),
        escape(&run.status),
        escape(&run.status)
    );
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<dt>{k}</dt><dd>{v}</dd>");
    };
    row("run", run.id.to_string());
    if let Some(e) = &run.env {
        row("environment", escape(e));
    }
    row("started", rfc3339(run.started_ms));
    row(
        "finished",
        run.finished_ms
            .map_or_else(|| "not yet".to_string(), rfc3339),
    );
    row("duration", duration(run.duration_ms));
    if let Some(f) = &run.failed_step {
        row(
            "failed step",
            format!("<a href=\"#step-{}\">{}</a>", escape(f), escape(f)),
        );
    }
    if !run.params.is_empty() {
        let p: Vec<String> = run
            .params
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
            .collect();
        row("params", p.join(" "));
    }
    row(
        "sources",
        format!("<code>{}</code>", escape(&run.source_hash)),
    );
    let _ = writeln!(h, "</dl></header>");
}

/// A tick step that gives at most about ten ticks over `span` ms.
fn tick_step(span: u64) -> u64 {
    const STEPS: [u64; 24] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 10)
        .unwrap_or_else(|| span.div_ceil(10 * 86_400_000) * 86_400_000)
}

fn timeline(h: &mut String, r: &Report) {
    let origin = r.run.started_ms;
    let end = r
        .steps
        .iter()
        .flat_map(|s| s.segments.iter().map(|x| x.end_ms))
        .chain([origin + r.run.duration_ms as i64])
        .max()
        .unwrap_or(origin);
    let span = (end - origin).max(1) as u64;
    let scale = CHART_W / span as f64;
    let rows = r.steps.len();
    let height = AXIS_H + ROW_H * rows as f64 + 6.0;
    let width = LABEL_W + CHART_W + 20.0;
    let _ = writeln!(
        h,
        "<section id=\"timeline\"><h2>Timeline</h2>\n<p class=\"legend\"><span><i class=\"seg-key\" style=\"background:#d6d6d6\"></i>queued</span><span><i style=\"background:#4a90d9\"></i>running</span><span><i style=\"background:#e06666\"></i>failed attempt</span><span><i style=\"background:#f0ad4e\"></i>retrying</span><span><i style=\"background:#9b59b6\"></i>waiting at a gate</span><span><i class=\"crit\"></i>critical path</span></p>"
    );
    let _ = writeln!(
        h,
        "<svg class=\"gantt\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline of run {}\">",
        r.run.id
    );
    // Axis with gridlines.
    let step = tick_step(span);
    let _ = writeln!(h, "<g class=\"axis\">");
    let mut t = 0u64;
    while t <= span {
        let x = LABEL_W + t as f64 * scale;
        let _ = writeln!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{height}\"/><text x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            AXIS_H - 4.0,
            pipe_lang::value::format_duration(t)
        );
        t += step;
    }
    let _ = writeln!(h, "</g>");
    for (row, s) in r.steps.iter().enumerate() {
        let y = AXIS_H + row as f64 * ROW_H;
        let _ = writeln!(
            h,
            "<g class=\"gantt-row{} status-{}\" data-step=\"{}\">",
            if s.critical { " critical" } else { "" },
            escape(&s.status),
            escape(&s.id)
        );
        let _ = writeln!(
            h,
            "<rect class=\"band\" x=\"0\" y=\"{y}\" width=\"{width}\" height=\"{ROW_H}\" fill=\"transparent\"/>"
        );
        let label = if s.critical {
            format!("◆ {}", s.id)
        } else {
            s.id.clone()
        };
        let _ = writeln!(
            h,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y + ROW_H * 0.68,
            escape(&truncate(&label, 40))
        );
        if s.segments.is_empty() {
            let _ = writeln!(
                h,
                "<text x=\"{}\" y=\"{:.1}\" class=\"muted\" fill=\"#888\">{}</text>",
                LABEL_W + 4.0,
                y + ROW_H * 0.68,
                escape(&s.status)
            );
        }
        for seg in &s.segments {
            segment(h, seg, origin, scale, y);
        }
        let _ = writeln!(h, "</g>");
    }
    let _ = writeln!(h, "</svg></section>");
}

fn segment(h: &mut String, seg: &Segment, origin: i64, scale: f64, y: f64) {
    let x = LABEL_W + (seg.start_ms - origin).max(0) as f64 * scale;
    let w = ((seg.end_ms - seg.start_ms).max(0) as f64 * scale).max(1.5);
    let (pad, hh) = if seg.kind == SegmentKind::Queued {
        (8.0, ROW_H - 16.0)
    } else {
        (4.0, ROW_H - 8.0)
    };
    let ended = seg.ended_as.as_deref().unwrap_or("");
    let what = match seg.kind {
        SegmentKind::Queued => "queued".to_string(),
        k => format!("{} (attempt {})", k.as_str(), seg.attempt),
    };
    let tip = format!(
        "{what}: {}{}",
        duration((seg.end_ms - seg.start_ms).max(0) as u64),
        if ended.is_empty() {
            " (no end recorded)".to_string()
        } else {
            format!(", then {ended}")
        }
    );
    let _ = writeln!(
        h,
        "<rect class=\"seg {} end-{}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{hh}\" rx=\"2\"><title>{}</title></rect>",
        seg.kind.as_str(),
        escape(if ended.is_empty() { "open" } else { ended }),
        y + pad,
        escape(&tip)
    );
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

fn critical(h: &mut String, r: &Report) {
    let _ = writeln!(
        h,
        "<section id=\"critical-path\"><h2>Critical path <span class=\"muted\">({} of actual durations)</span></h2>",
        duration(r.critical_length_ms)
    );
    if r.critical_path.is_empty() {
        let _ = writeln!(h, "<p class=\"muted\">No step ran.</p></section>");
        return;
    }
    let _ = writeln!(h, "<ol class=\"critical-path\">");
    for id in &r.critical_path {
        let d = r
            .steps
            .iter()
            .find(|s| &s.id == id)
            .map_or(0, |s| s.duration_ms);
        let _ = writeln!(
            h,
            "<li class=\"critical\" data-step=\"{}\">{} <span class=\"muted\">{}</span></li>",
            escape(id),
            escape(id),
            duration(d)
        );
    }
    let _ = writeln!(h, "</ol></section>");
}

fn steps_table(h: &mut String, r: &Report) {
    let _ = writeln!(
        h,
        "<section id=\"steps\"><h2>Steps (<span id=\"step-count\">{}</span>)</h2>\n<label><input type=\"checkbox\" id=\"only-critical\"> only the critical path</label>\n<table><thead><tr><th>step</th><th>status</th><th>attempts</th><th>duration</th><th>exit</th><th>executor</th><th>error</th></tr></thead><tbody>",
        r.steps.len()
    );
    for s in &r.steps {
        let _ = writeln!(
            h,
            "<tr data-step=\"{}\" class=\"{}\"><td><a href=\"#step-{}\">{}</a></td><td><span class=\"badge {}\">{}</span>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&s.id),
            if s.critical { "critical" } else { "" },
            escape(&s.id),
            escape(&s.id),
            escape(&s.status),
            escape(&s.status),
            if s.required { "" } else { " <span class=\"muted\">(warn only)</span>" },
            s.attempts,
            if s.started_ms.is_some() { duration(s.duration_ms) } else { "-".into() },
            s.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            escape(s.template.as_deref().unwrap_or(&s.executor)),
            escape(s.error.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(h, "</tbody></table></section>");
}

fn warnings(h: &mut String, r: &Report) {
    let _ = writeln!(
        h,
        "<section id=\"warnings\"><h2>Warnings ({})</h2>",
        r.warnings.len()
    );
    if r.warnings.is_empty() {
        let _ = writeln!(h, "<p class=\"muted\">None.</p></section>");
        return;
    }
    let _ = writeln!(h, "<ul>");
    for w in &r.warnings {
        let step = w.step.as_deref().map_or_else(String::new, |s| {
            format!(
                "<a href=\"#step-{}\" data-step=\"{}\">{}</a>: ",
                escape(s),
                escape(s),
                escape(s)
            )
        });
        let _ = writeln!(
            h,
            "<li class=\"warn\">{step}<strong>{}</strong> — {}</li>",
            escape(w.kind),
            escape(&w.message)
        );
    }
    let _ = writeln!(h, "</ul></section>");
}

fn approvals(h: &mut String, r: &Report) {
    if r.approvals.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<section id=\"approvals\"><h2>Approvals</h2><table><thead><tr><th>gate</th><th>decision</th><th>by</th><th>waiting since</th><th>decided</th><th>comment</th></tr></thead><tbody>"
    );
    for a in &r.approvals {
        let _ = writeln!(
            h,
            "<tr data-step=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.step),
            escape(&a.step),
            escape(&a.decision),
            escape(a.by.as_deref().unwrap_or("-")),
            a.waiting_since_ms.map_or_else(|| "-".into(), rfc3339),
            a.decided_ms.map_or_else(|| "-".into(), rfc3339),
            escape(a.comment.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(h, "</tbody></table>");
    for a in r.approvals.iter().filter(|a| !a.decisions.is_empty()) {
        let _ = writeln!(
            h,
            "<p>Decisions on <code>{}</code> (approvers: {}; {} needed):</p><ul class=\"decisions\">",
            escape(&a.step),
            escape(&a.approvers.join(", ")),
            a.min_approvals
        );
        for d in &a.decisions {
            let _ = writeln!(
                h,
                "<li>{} — <strong>{}</strong> by {} via {}{}</li>",
                rfc3339(d.at_ms),
                escape(&d.decision),
                escape(&d.user),
                escape(&d.via),
                d.comment
                    .as_deref()
                    .map_or_else(String::new, |c| format!(": {}", escape(c)))
            );
        }
        let _ = writeln!(h, "</ul>");
    }
    let _ = writeln!(h, "</section>");
}

fn details(h: &mut String, r: &Report) {
    let _ = writeln!(
        h,
        "<section id=\"details\"><h2>Outputs and logs</h2>\n<p class=\"muted\">Secrets were masked (<code>***</code>) before anything was stored.</p>"
    );
    for s in &r.steps {
        step_details(h, s);
    }
    let _ = writeln!(h, "</section>");
}

fn step_details(h: &mut String, s: &StepReport) {
    let _ = writeln!(
        h,
        "<details class=\"step{}\" id=\"step-{}\" data-step=\"{}\"><summary>{} <span class=\"badge {}\">{}</span> <span class=\"muted\">{}</span></summary>",
        if s.critical { " critical" } else { "" },
        escape(&s.id),
        escape(&s.id),
        escape(&s.id),
        escape(&s.status),
        escape(&s.status),
        escape(&s.location)
    );
    if !s.needs.is_empty() {
        let _ = writeln!(
            h,
            "<p>needs: {}</p>",
            s.needs
                .iter()
                .map(|n| format!("<a href=\"#step-{}\">{}</a>", escape(n), escape(n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(e) = &s.error {
        let _ = writeln!(h, "<p class=\"warn\">error: {}</p>", escape(e));
    }
    if s.outputs.is_empty() {
        let _ = writeln!(h, "<p class=\"muted\">No outputs.</p>");
    } else {
        let _ = writeln!(
            h,
            "<table class=\"outputs\"><thead><tr><th>output</th><th>value</th></tr></thead><tbody>"
        );
        for (k, v) in &s.outputs {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(k),
                escape(v)
            );
        }
        let _ = writeln!(h, "</tbody></table>");
    }
    if s.logs.is_empty() {
        let _ = writeln!(h, "<p class=\"muted\">No log.</p>");
    }
    for l in &s.logs {
        let lines = l.text.lines().count();
        let omitted = if l.omitted_bytes > 0 {
            format!(" — the first {} bytes are left out", l.omitted_bytes)
        } else {
            String::new()
        };
        let _ = writeln!(
            h,
            "<details class=\"log\"><summary>log, {} ({lines} lines{omitted})</summary><pre>{}</pre></details>",
            escape(&l.name),
            escape(&l.text)
        );
    }
    let _ = writeln!(h, "</details>");
}

/// Above this many steps the report leaves the DAG picture out: the layout
/// grows much faster than the graph (measured: 100 steps 0.5 s, 400 steps
/// 20 s in a debug build), and the timeline and table still show every step.
pub const MAX_DAG_STEPS: usize = 250;

/// The DAG picture of a report: nodes coloured by status, critical path red.
pub fn dag_svg(r: &Report, plan: &pipe_lang::Plan) -> String {
    if plan.steps().len() > MAX_DAG_STEPS {
        return format!(
            "<p class=\"muted\">The DAG has {} steps, too many to draw here (the limit is {MAX_DAG_STEPS}); <code>pipe graph {} --format svg</code> draws it.</p>",
            plan.steps().len(),
            escape(&r.run.pipeline)
        );
    }
    let status: Vec<&StepReport> = plan
        .steps()
        .iter()
        .map(|st| {
            r.steps
                .iter()
                .find(|s| s.id == st.id)
                .expect("every plan step is in its report")
        })
        .collect();
    let labels: Vec<String> = status
        .iter()
        .map(|s| {
            if s.started_ms.is_some() {
                format!("{}\n{} · {}", s.id, s.status, duration(s.duration_ms))
            } else {
                format!("{}\n{}", s.id, s.status)
            }
        })
        .collect();
    let nodes: Vec<dag::Node<'_>> = status
        .iter()
        .zip(&labels)
        .map(|(s, label)| dag::Node {
            id: &s.id,
            label: label.clone(),
            critical: s.critical,
            class: status_class(&s.status),
            fill: status_fill(&s.status),
        })
        .collect();
    let on_path: std::collections::HashSet<(&str, &str)> = r
        .critical_path
        .windows(2)
        .map(|w| (w[0].as_str(), w[1].as_str()))
        .collect();
    let mut edges = Vec::new();
    for (i, st) in plan.steps().iter().enumerate() {
        for &n in &st.needs {
            edges.push(dag::Edge {
                from: n,
                to: i,
                critical: on_path.contains(&(plan.step(n).id.as_str(), st.id.as_str())),
            });
        }
    }
    dag::svg(&format!("DAG of {}", r.run.pipeline), &nodes, &edges)
}

fn status_class(s: &str) -> &'static str {
    match s {
        "succeeded" => "succeeded",
        "failed" | "timed_out" => "failed",
        "skipped" => "skipped",
        "cancelled" => "cancelled",
        "running" => "running",
        "retrying" => "retrying",
        "waiting" => "waiting",
        _ => "pending",
    }
}

pub fn status_fill(s: &str) -> &'static str {
    match s {
        "succeeded" => "#d7f0da",
        "failed" | "timed_out" => "#f8d0d0",
        "skipped" | "pending" => "#eeeeee",
        "cancelled" => "#e8dcd5",
        "waiting" => "#ead5f2",
        _ => "#fff3c4",
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Approval, Report, RunInfo};
    use super::render;

    #[test]
    fn approvals_render_only_when_recorded() {
        let mut r = Report {
            run: RunInfo {
                id: 3,
                pipeline: "release".into(),
                env: Some("prod".into()),
                params: indexmap::IndexMap::new(),
                status: "succeeded".into(),
                started_ms: 0,
                finished_ms: Some(1000),
                duration_ms: 1000,
                failed_step: None,
                source_hash: "abc".into(),
            },
            critical_path: vec![],
            critical_length_ms: 0,
            steps: vec![],
            warnings: vec![],
            approvals: vec![],
        };
        let page = render(&r, "<svg></svg>");
        assert!(!page.contains("id=\"approvals\""));
        assert!(!page.contains("href=\"#approvals\""));
        r.approvals.push(Approval {
            step: "prod.approve".into(),
            decision: "approved".into(),
            by: Some("alice <a@b>".into()),
            comment: None,
            waiting_since_ms: Some(0),
            decided_ms: Some(60_000),
            approvers: vec!["alice".into()],
            min_approvals: 1,
            deadline_ms: Some(86_400_000),
            decisions: vec![],
        });
        let page = render(&r, "<svg></svg>");
        assert!(page.contains("<a href=\"#approvals\">Approvals</a>"));
        assert!(page.contains(
            "<tr data-step=\"prod.approve\"><td>prod.approve</td><td>approved</td><td>alice &lt;a@b&gt;</td><td>1970-01-01T00:00:00Z</td><td>1970-01-01T00:01:00Z</td><td></td></tr>"
        ), "{page}");
    }

    #[test]
    fn ticks_stay_few() {
        for span in [1, 7, 999, 12_345, 600_000, 86_400_000, 7 * 86_400_000] {
            let s = super::tick_step(span);
            assert!(span / s <= 10, "{span} / {s}");
        }
    }
}
