//! `pipe list`: the pipelines of the project, or one pipeline's params,
//! environments, stages and steps.

use std::fmt::Write as _;

use pipe_lang::fmt::expr_to_string;
use pipe_lang::lower::Context;

use crate::exit::Failure;
use crate::project::Project;

pub fn run(project: &Project, pipeline: Option<&str>, ctx: &Context) -> Result<String, Failure> {
    let mut out = String::new();
    let Some(name) = pipeline else {
        let files = Project::pipe_files(&project.pipelines_dir());
        let ws = project.load(&files)?;
        let rows: Vec<(String, String, String)> = ws
            .pipelines()
            .map(|(m, p)| {
                let stages = p.stages.len();
                let params: Vec<&str> = p.params.iter().map(|x| x.name.name.as_str()).collect();
                (
                    p.name.name.clone(),
                    ws.module_name(m).to_string(),
                    format!(
                        "{} stage{}{}",
                        stages,
                        if stages == 1 { "" } else { "s" },
                        if params.is_empty() {
                            String::new()
                        } else {
                            format!(", params: {}", params.join(", "))
                        }
                    ),
                )
            })
            .collect();
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        for (n, f, d) in rows {
            let _ = writeln!(out, "{n:<w0$}  {f:<w1$}  {d}");
        }
        return Ok(out);
    };
    let plan = super::plan_for(project, name, ctx)?;
    let (files, _) = project.resolve(name)?;
    let ws = project.load(&files)?;
    let _ = writeln!(out, "pipeline {}", plan.pipeline);
    if let Some((_, pl)) = ws.find_pipeline(&plan.pipeline) {
        if !pl.params.is_empty() {
            let _ = writeln!(out, "params:");
            for p in &pl.params {
                let default = p
                    .default
                    .as_ref()
                    .map(|d| format!(" = {}", expr_to_string(d)))
                    .unwrap_or_default();
                let value = plan
                    .params
                    .get(&p.name.name)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {}: {}{default}   (now: {})",
                    p.name.name,
                    p.ty.ty,
                    if value.is_empty() { "null" } else { &value }
                );
            }
        }
    }
    if !plan.envs().is_empty() {
        let _ = writeln!(
            out,
            "envs: {}",
            plan.envs().keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let _ = writeln!(out, "stages:");
    for st in plan.stages() {
        let env = st
            .environment
            .as_deref()
            .map(|e| format!(" [env {e}]"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {}{env}", st.name);
        for &i in &st.steps {
            let s = plan.step(i);
            let kind = s.template.clone().unwrap_or_else(|| s.executor.clone());
            let needs: Vec<&str> = s
                .needs
                .iter()
                .map(|&n| plan.step(n).name.as_str())
                .collect();
            let needs = if needs.is_empty() {
                String::new()
            } else {
                format!("  needs {}", needs.join(", "))
            };
            let _ = writeln!(out, "    {} ({kind}){needs}", s.name);
        }
    }
    for h in plan.handlers() {
        let _ = writeln!(
            out,
            "  on {}: {} ({})",
            h.handler.map_or("", |k| k.as_str()),
            h.name,
            h.template.clone().unwrap_or_else(|| h.executor.clone())
        );
    }
    Ok(out)
}
