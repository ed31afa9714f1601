//! Hover text: what a step runs and needs, its estimate and critical-path
//! slack; a template's parameters and `##` docs; a param's type and default.

use pipe_lang::ast::{Param, StageEntry, Template};
use pipe_lang::critical::{schedule_from_estimates, DEFAULT_ESTIMATE_MS};
use pipe_lang::lower::lower;
use pipe_lang::value::format_duration;

use super::analysis::{Analysis, Kind, Sym};

/// The Markdown shown for the name at `offset`, if any.
pub fn hover(a: &Analysis, offset: usize) -> Option<String> {
    let occ = a.occ_at(offset)?;
    let sym = &occ.sym;
    match sym.kind {
        Kind::Step => step(a, sym),
        Kind::Template => {
            let m = (0..a.ws.modules.len()).find(|&m| a.ws.module_name(m) == sym.scope)?;
            Some(template(a, a.template(m, &sym.name)?))
        }
        Kind::TemplateParam => {
            let (module, t) = sym.scope.rsplit_once('.')?;
            let m = (0..a.ws.modules.len()).find(|&m| a.ws.module_name(m) == module)?;
            let t = a.template(m, t)?;
            let p = t.params.iter().find(|p| p.name.name == sym.name)?;
            Some(format!(
                "```pipe\n{}\n```\nparameter of `{}` ({module})",
                param_text(a, p),
                t.name.name
            ))
        }
        Kind::Param => {
            let (_, pl) = a.ws.find_pipeline(&sym.scope)?;
            let p = pl.params.iter().find(|p| p.name.name == sym.name)?;
            Some(format!("```pipe\nparam {}\n```", param_text(a, p)))
        }
        Kind::Stage => {
            let (_, pl) = a.ws.find_pipeline(&sym.scope)?;
            let s = pl.stages.iter().find(|s| s.name.name == sym.name)?;
            let mut names = Vec::new();
            collect(&s.entries, &mut names);
            let mut out = format!("```pipe\nstage {}\n```\n", sym.name);
            if let Some(n) = s.entries.iter().find_map(|e| match e {
                StageEntry::Attr(a) if a.key.name == "needs" => Some(a),
                _ => None,
            }) {
                out.push_str(&format!(
                    "needs: `{}`\n\n",
                    pipe_lang::fmt::expr_to_string(&n.value)
                ));
            }
            out.push_str(&format!("steps: {}", names.join(", ")));
            Some(out)
        }
        Kind::Env => Some(format!(
            "```pipe\nenv {}\n```\nan environment of `{}`",
            sym.name, sym.scope
        )),
        Kind::Pipeline => Some(format!("```pipe\npipeline {}\n```", sym.name)),
    }
}

fn collect(entries: &[StageEntry], out: &mut Vec<String>) {
    for e in entries {
        match e {
            StageEntry::Step(s) => out.push(format!("`{}`", name_text(&s.name.expr))),
            StageEntry::Gate(g) => out.push(format!("`{}`", name_text(&g.name.expr))),
            StageEntry::Chaos(c) => out.push(format!("`{}`", name_text(&c.name.expr))),
            StageEntry::For(f) => collect(&f.entries, out),
            _ => {}
        }
    }
}

fn name_text(e: &pipe_lang::ast::Expr) -> String {
    let s = pipe_lang::fmt::expr_to_string(e);
    s.trim_matches('"').to_string()
}

fn param_text(a: &Analysis, p: &Param) -> String {
    let mut s = format!("{}: {}", p.name.name, p.ty.ty);
    if let Some(d) = &p.default {
        s.push_str(" = ");
        s.push_str(a.ws.sources.snippet(d.span));
    }
    s
}

/// `template build(dockerfile: string, ...)` and its docs.
pub fn template(a: &Analysis, t: &Template) -> String {
    let params: Vec<String> = t
        .params
        .iter()
        .map(|p| format!("  {},", param_text(a, p)))
        .collect();
    let sig = if params.is_empty() {
        format!("template {}()", t.name.name)
    } else {
        format!("template {}(\n{}\n)", t.name.name, params.join("\n"))
    };
    if t.doc.is_empty() {
        format!("```pipe\n{sig}\n```")
    } else {
        format!("```pipe\n{sig}\n```\n{}", t.doc)
    }
}

fn step(a: &Analysis, sym: &Sym) -> Option<String> {
    let (m, pl) = a.ws.find_pipeline(&sym.scope)?;
    let (plan, _) = lower(&a.ws, m, pl, &a.ctx);
    let mut out = String::new();
    // The syntax: what kind of entry and which template.
    let mut kind = "step".to_string();
    let mut stage = String::new();
    find_entry(pl, &sym.name, &mut kind, &mut stage);
    out.push_str(&format!("```pipe\n{kind}\n```\nin stage `{stage}`"));
    let Some(plan) = plan else {
        return Some(out);
    };
    let Some(i) = plan.steps().iter().position(|s| s.name == sym.name) else {
        return Some(out);
    };
    let st = plan.step(i);
    out.push_str(&format!(" · runs on `{}`", st.executor));
    let needs: Vec<String> = st
        .needs
        .iter()
        .map(|&j| format!("`{}`", plan.step(j).name))
        .collect();
    out.push_str(&format!(
        "\n\nneeds: {}",
        if needs.is_empty() {
            "nothing".to_string()
        } else {
            needs.join(", ")
        }
    ));
    let sched = schedule_from_estimates(&plan);
    let t = &sched.steps[i];
    let estimate = match st.estimate_ms {
        Some(ms) => format_duration(ms),
        None => format!("{} (default)", format_duration(DEFAULT_ESTIMATE_MS)),
    };
    out.push_str(&format!(
        "\n\nestimate: {estimate} · slack: {}{}",
        format_duration(t.slack_ms),
        if t.critical {
            " (on the critical path)"
        } else {
            ""
        }
    ));
    if !st.outputs.is_empty() {
        out.push_str(&format!("\n\noutputs: {}", st.outputs.join(", ")));
    }
    Some(out)
}

/// Fills `kind` with `step name = template` and `stage` with the stage holding it.
fn find_entry(pl: &pipe_lang::ast::Pipeline, name: &str, kind: &mut String, stage: &mut String) {
    fn walk(entries: &[StageEntry], name: &str, kind: &mut String) -> bool {
        for e in entries {
            let found = match e {
                StageEntry::Step(s) if s.name.literal() == Some(name) => {
                    *kind = match &s.uses {
                        Some(u) => format!("step {name} = {}", u.dotted()),
                        None => format!("step {name}"),
                    };
                    true
                }
                StageEntry::Gate(g) if g.name.literal() == Some(name) => {
                    *kind = format!("gate {name} = {}", g.kind.dotted());
                    true
                }
                StageEntry::Chaos(c) if c.name.literal() == Some(name) => {
                    *kind = format!("chaos {name}");
                    true
                }
                StageEntry::For(f) => walk(&f.entries, name, kind),
                _ => false,
            };
            if found {
                return true;
            }
        }
        false
    }
    for s in &pl.stages {
        if walk(&s.entries, name, kind) {
            stage.clone_from(&s.name.name);
            return;
        }
    }
    for h in &pl.handlers {
        if walk(&h.entries, name, kind) {
            *stage = format!("on {}", h.kind.as_str());
            return;
        }
    }
}
