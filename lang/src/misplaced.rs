//! Blocks that name a language construct in the wrong form or place.
//!
//! The grammar reads any `word label { ... }` it cannot match otherwise as a
//! generic block, so `on error { }` (no such handler kind) or `gate g { }`
//! (a gate without its kind, or outside a stage) would only be an "unknown
//! block `on`". These checks say what the construct needs instead.

use crate::ast::{Block, Name};
use crate::diagnostic::{did_you_mean, Diagnostic};

/// Where a generic block was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Pipeline,
    /// A stage, a `for` loop in one, or an `on ...` handler.
    Stage,
    Step,
}

impl Place {
    fn article(self) -> &'static str {
        match self {
            Place::Pipeline => "a pipeline",
            Place::Stage => "a stage",
            Place::Step => "a step",
        }
    }
}

const HANDLER_KINDS: [&str; 3] = ["failure", "success", "always"];
const GATE_KINDS: [&str; 2] = ["approval", "policy"];

/// The diagnostic for `b` if its keyword is one of the language's own
/// (`on`, `gate`, `step`, `stage`); `None` leaves it to the caller's
/// "unknown block" report.
pub(crate) fn check(b: &Block, place: Place) -> Option<Diagnostic> {
    let text = b.label.as_ref().and_then(Name::literal);
    match b.key.name.as_str() {
        "on" => Some(handler(b, place, text)),
        "gate" => Some(gate(b, place, text)),
        "step" if place != Place::Stage => Some(
            Diagnostic::error(
                "pipe::misplaced",
                format!("a step cannot be declared in {}", place.article()),
                b.key.span,
                "not allowed here",
            )
            .with_help(
                "declare steps inside a stage: `stage build { step api { run = \"...\" } }`",
            ),
        ),
        "stage" if place != Place::Pipeline => Some(
            Diagnostic::error(
                "pipe::misplaced",
                format!("a stage cannot be declared in {}", place.article()),
                b.key.span,
                "stages do not nest",
            )
            .with_help(
                "declare stages at the top of the pipeline; order them with `needs = [other]`",
            ),
        ),
        _ => None,
    }
}

fn handler(b: &Block, place: Place, kind: Option<&str>) -> Diagnostic {
    let help = "expected one of failure, success, always";
    let mut d = match (b.label.as_ref(), kind) {
        (Some(l), Some(k)) if !HANDLER_KINDS.contains(&k) => {
            let d = Diagnostic::error(
                "pipe::handler-kind",
                format!("`{k}` is not a handler kind"),
                l.span,
                "not a handler kind",
            );
            match did_you_mean(k, HANDLER_KINDS) {
                Some(n) => d.with_help(format!("did you mean `{n}`? {help}")),
                None => d.with_help(help),
            }
        }
        (Some(l), Some(k)) if place == Place::Pipeline => Diagnostic::error(
            "pipe::handler-kind",
            "a handler kind is a keyword, not a string",
            l.span,
            "quoted",
        )
        .with_help(format!("write `on {k} {{ ... }}`; {help}")),
        (Some(l), Some(_)) => Diagnostic::error(
            "pipe::misplaced",
            format!("a handler cannot be declared in {}", place.article()),
            b.key.span,
            "not allowed here",
        )
        .with_label(l.span, "handler kind")
        .with_help("declare `on failure|success|always { ... }` at the top of the pipeline"),
        (Some(l), None) => Diagnostic::error(
            "pipe::handler-kind",
            "a handler kind is a keyword, not a string",
            l.span,
            "not a handler kind",
        )
        .with_help(help),
        (None, _) => Diagnostic::error(
            "pipe::handler-kind",
            "`on` needs a handler kind",
            b.key.span,
            "no kind",
        )
        .with_help(format!("{help}: `on failure {{ ... }}`")),
    };
    if place != Place::Pipeline && d.code == "pipe::handler-kind" {
        d = d.with_label(
            b.key.span,
            format!(
                "and handlers belong in the pipeline, not {}",
                place.article()
            ),
        );
    }
    d
}

fn gate(b: &Block, place: Place, name: Option<&str>) -> Diagnostic {
    let name = name.unwrap_or("name");
    if place == Place::Stage {
        return Diagnostic::error(
            "pipe::gate-kind",
            format!("gate `{name}` needs a kind"),
            b.label.as_ref().map_or(b.key.span, |l| l.span),
            "no kind after the name",
        )
        .with_help(format!(
            "expected one of {}: `gate {name} = approval {{ ... }}`",
            GATE_KINDS.join(", ")
        ));
    }
    Diagnostic::error(
        "pipe::misplaced",
        format!("a gate cannot be declared in {}", place.article()),
        b.key.span,
        "not allowed here",
    )
    .with_help(format!(
        "a gate is a step of a stage: `stage release {{ gate {name} = approval {{ ... }} }}`"
    ))
}
