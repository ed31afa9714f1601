//! `pipe-lang`: the pipe language without any IO. Text goes in; an AST,
//! diagnostics and a frozen [`plan::Plan`] come out. See `docs/GRAMMAR.md` and
//! the design notes in DESIGN.md.

mod asserts;
pub mod ast;
pub mod critical;
pub mod diagnostic;
pub mod eval;
pub mod fmt;
pub mod format;
pub mod functions;
pub mod lower;
mod misplaced;
pub mod parser;
pub mod plan;
pub mod span;
pub mod stdlib;
pub mod value;
pub mod workspace;

pub use diagnostic::{Diagnostic, Severity};
pub use lower::{check, lower, Context};
pub use plan::Plan;
pub use span::{FileId, SourceMap, Span};
pub use value::{Type, Value};
pub use workspace::{Loader, Workspace};
