//! Diagnostics: plain values (code, message, spans, help) that the CLI renders
//! through miette and the language server turns into LSP diagnostics. Rendering
//! is kept apart: [`Diagnostic::with_sources`] pairs a value with the text it
//! points into.

use std::fmt;
use std::sync::Arc;

use miette::{
    LabeledSpan, MietteError, MietteSpanContents, NamedSource, SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

use crate::span::{SourceMap, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in `.pipe` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable code such as `pipe::unknown-step`, documented in docs/errors.
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    pub label: String,
    /// Further places that explain the problem (the other definition, the rest of a cycle).
    pub secondary: Vec<(Span, String)>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: label.into(),
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn warning(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message, span, label)
        }
    }

    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    #[must_use]
    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Pairs this diagnostic with its source text for rendering through miette.
    pub fn with_sources<'a>(&'a self, sources: &'a SourceMap) -> Rendered<'a> {
        let file = sources.get(self.span.file);
        let related = self
            .secondary
            .iter()
            .filter(|(s, _)| s.file != self.span.file)
            .map(|(s, l)| {
                let f = sources.get(s.file);
                Related {
                    label: l.clone(),
                    span: *s,
                    source: NamedSource::new(f.name.clone(), Arc::clone(&f.text)),
                }
            })
            .collect();
        Rendered {
            diag: self,
            source: Snippets(
                NamedSource::new(file.name.clone(), Arc::clone(&file.text)).with_language("pipe"),
            ),
            related,
        }
    }

    /// A JSON object for `--format json` and editor integrations.
    pub fn to_json(&self, sources: &SourceMap) -> serde_json::Value {
        let f = sources.get(self.span.file);
        let (line, column) = f.line_col(self.span.start as usize);
        let (end_line, end_column) = f.line_col(self.span.end as usize);
        serde_json::json!({
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": f.name,
            "line": line,
            "column": column,
            "end_line": end_line,
            "end_column": end_column,
            "offset": self.span.start,
            "length": self.span.len(),
            "label": self.label,
            "help": self.help,
            "related": self.secondary.iter().map(|(s, l)| {
                let (line, column) = sources.get(s.file).line_col(s.start as usize);
                serde_json::json!({"file": sources.get(s.file).name, "line": line, "column": column, "label": l})
            }).collect::<Vec<_>>(),
        })
    }
}

/// Sorts diagnostics by file and position, errors before warnings at one place,
/// and drops exact repeats (a loop body reports a problem once, not per iteration).
pub fn sort_and_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (a.span.file, a.span.start, a.severity, a.code, &a.message).cmp(&(
            b.span.file,
            b.span.start,
            b.severity,
            b.code,
            &b.message,
        ))
    });
    diags.dedup_by(|a, b| a.span == b.span && a.code == b.code && a.message == b.message);
}

/// A [`Diagnostic`] with its source, ready for miette's report handlers.
pub struct Rendered<'a> {
    diag: &'a Diagnostic,
    source: Snippets,
    related: Vec<Related>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diag, f)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let primary =
            LabeledSpan::new_primary_with_span(Some(self.diag.label.clone()), self.diag.span);
        let file = self.diag.span.file;
        let rest = self
            .diag
            .secondary
            .iter()
            .filter(move |(s, _)| s.file == file)
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), *s));
        Some(Box::new(std::iter::once(primary).chain(rest)))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}

/// The source of a rendered diagnostic. miette 7.6 gives a snippet's
/// `line_count` as the line it ends on, counted from the top of the file, and
/// merges two labels' snippets when `line + line_count` reaches the next one:
/// past the middle of a file any two labels merged, printing every line
/// between them (an assert's path can span a whole pipeline). This reports the
/// snippet's own number of lines plus two, so snippets merge when at most two
/// lines lie between them, and otherwise print apart.
struct Snippets(NamedSource<Arc<str>>);

impl SourceCode for Snippets {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let c = self
            .0
            .read_span(span, context_lines_before, context_lines_after)?;
        // Pieces between newlines: the newlines plus one.
        let lines = c.data().split(|&b| b == b'\n').count() + 1;
        let mut fixed = MietteSpanContents::new_named(
            c.name().unwrap_or_default().to_string(),
            c.data(),
            *c.span(),
            c.line(),
            c.column(),
            lines,
        );
        if let Some(language) = c.language() {
            fixed = fixed.with_language(language);
        }
        Ok(Box::new(fixed))
    }
}

/// A label that lives in another file than the diagnostic it explains.
struct Related {
    label: String,
    span: Span,
    source: NamedSource<Arc<str>>,
}

impl fmt::Debug for Related {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl fmt::Display for Related {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl std::error::Error for Related {}

impl miette::Diagnostic for Related {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(self.label.clone()), self.span),
        )))
    }
}

/// The nearest of `candidates` to `name`, for "did you mean" help.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        // A candidate must keep some of the name: `q` is not a typo of `a`.
        .filter(|(d, c)| *d < name.len().max(c.len()))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1) + usize::from(name.len() > 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
