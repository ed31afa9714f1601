//! The run report as a Markdown summary, for CI job summaries
//! (`$GITHUB_STEP_SUMMARY`) and pull-request comments: a status table, the
//! critical path, warnings, approvals and links.

use std::fmt::Write as _;

use super::model::Report;
use crate::render::duration;

/// Where the summary links to, besides the steps.
#[derive(Default)]
pub struct Links {
    /// The HTML report written in the same invocation.
    pub html: Option<String>,
    /// The CI run, e.g. a GitHub Actions run page.
    pub ci_run: Option<String>,
}

impl Links {
    /// The GitHub Actions run page, from the variables Actions sets.
    pub fn github_run() -> Option<String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(format!(
            "{}/{}/actions/runs/{}",
            var("GITHUB_SERVER_URL")?,
            var("GITHUB_REPOSITORY")?,
            var("GITHUB_RUN_ID")?
        ))
    }
}

fn icon(status: &str) -> &'static str {
    match status {
        "succeeded" => "✅",
        "failed" | "timed_out" => "❌",
        "cancelled" | "interrupted" => "⛔",
        "skipped" => "⏭️",
        "waiting" => "⏸️",
        "running" | "retrying" => "🔄",
        _ => "⚪",
    }
}

/// Makes text safe inside a table cell or inline code.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn render(r: &Report, links: &Links) -> String {
    let mut m = String::new();
    let run = &r.run;
    let _ = writeln!(
        m,
        "## {} pipe run {} `{}`: {}{}\n",
        icon(&run.status),
        run.id,
        cell(&run.pipeline),
        run.status,
        if run.finished_ms.is_some() {
            format!(" in {}", duration(run.duration_ms))
        } else {
            String::new()
        }
    );
    if let Some(f) = &run.failed_step {
        let err = r
            .steps
            .iter()
            .find(|s| &s.id == f)
            .and_then(|s| s.error.as_deref())
            .unwrap_or("");
        let _ = writeln!(m, "Failed at `{}`: {}\n", cell(f), cell(err));
    }
    let _ = writeln!(m, "| step | status | attempts | duration | exit |");
    let _ = writeln!(m, "|---|---|---:|---:|---:|");
    for s in &r.steps {
        let _ = writeln!(
            m,
            "| {}`{}`{} | {} {} | {} | {} | {} |",
            if s.critical { "**◆** " } else { "" },
            cell(&s.id),
            if s.required { "" } else { " (warn only)" },
            icon(&s.status),
            s.status,
            s.attempts,
            if s.started_ms.is_some() {
                duration(s.duration_ms)
            } else {
                "-".into()
            },
            s.exit_code.map_or_else(|| "-".into(), |c| c.to_string())
        );
    }
    if r.critical_path.is_empty() {
        let _ = writeln!(m, "\n**Critical path**: no step ran.");
    } else {
        let path: Vec<String> = r
            .critical_path
            .iter()
            .map(|id| format!("`{}`", cell(id)))
            .collect();
        let _ = writeln!(
            m,
            "\n**Critical path** ({}, ◆ in the table): {}",
            duration(r.critical_length_ms),
            path.join(" → ")
        );
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(m, "\n### Warnings ({})\n", r.warnings.len());
        for w in &r.warnings {
            let step = w
                .step
                .as_deref()
                .map_or_else(String::new, |s| format!("`{}` ", cell(s)));
            let _ = writeln!(m, "- {step}**{}**: {}", w.kind, cell(&w.message));
        }
    }
    if !r.approvals.is_empty() {
        let _ = writeln!(m, "\n### Approvals\n");
        let _ = writeln!(m, "| gate | decision | by | comment |");
        let _ = writeln!(m, "|---|---|---|---|");
        for a in &r.approvals {
            let _ = writeln!(
                m,
                "| `{}` | {} | {} | {} |",
                cell(&a.step),
                cell(&a.decision),
                cell(a.by.as_deref().unwrap_or("-")),
                cell(a.comment.as_deref().unwrap_or(""))
            );
        }
    }
    let mut l = Vec::new();
    if let Some(h) = &links.html {
        l.push(format!("[full report]({h})"));
    }
    if let Some(c) = &links.ci_run {
        l.push(format!("[CI run]({c})"));
    }
    l.push(format!(
        "logs: `pipe logs {}`, state: `pipe status {}`",
        run.id, run.id
    ));
    let _ = writeln!(m, "\n{}", l.join(" · "));
    m
}
