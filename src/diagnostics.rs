//! Rendering diagnostics for the terminal (miette, like rustc) or as JSON.

use std::io::IsTerminal;

use miette::{GraphicalReportHandler, GraphicalTheme};
use pipe_lang::{Diagnostic, SourceMap};

/// Renders one diagnostic the way `pipe check` prints it.
pub fn render(d: &Diagnostic, sources: &SourceMap) -> String {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    let rendered = d.with_sources(sources);
    if handler.render_report(&mut out, &rendered).is_err() {
        out = format!("{}: {}\n", sources.location(d.span), d.message);
    }
    out
}

/// Prints diagnostics to stderr; returns (errors, warnings).
pub fn emit(diags: &[Diagnostic], sources: &SourceMap) -> (usize, usize) {
    let mut errors = 0;
    let mut warnings = 0;
    for d in diags {
        if d.is_error() {
            errors += 1;
        } else {
            warnings += 1;
        }
        eprintln!("{}", render(d, sources));
    }
    (errors, warnings)
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
