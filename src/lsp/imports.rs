//! A document's `import`s in the editor: which module each import path
//! resolved to (for go to definition on the path, into project files and the
//! embedded standard library alike), and which import brings in a problem
//! found inside another file, so that it can be reported on the import line
//! of the document being edited.

use pipe_lang::ast::Item;
use pipe_lang::{Diagnostic, Span};

use super::analysis::{inner_span, Analysis};

/// An `import "..."` of the document that loaded.
pub struct ImportRef {
    /// The path's text, without its quotes.
    pub span: Span,
    /// The module it resolved to.
    pub module: usize,
}

/// The document's imports that resolved to a module, in source order. A
/// second import of the same namespace is an error and binds nothing.
pub fn imports(a: &Analysis) -> Vec<ImportRef> {
    let doc = &a.ws.modules[0];
    let text = a.text(a.file());
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for item in doc.ast.iter().flat_map(|m| m.items.iter()) {
        let Item::Import(imp) = item else { continue };
        let ns = imp.namespace();
        if seen.contains(&ns) {
            continue;
        }
        seen.push(ns);
        if let Some(&module) = doc.imports.get(ns) {
            out.push(ImportRef {
                span: inner_span(text, imp.path_span),
                module,
            });
        }
    }
    out
}

/// The import whose path is under a byte offset of the document.
pub fn import_at(a: &Analysis, offset: usize) -> Option<ImportRef> {
    imports(a)
        .into_iter()
        .find(|i| i.span.start as usize <= offset && offset <= i.span.end as usize)
}

/// Whether module `to` is `from` or is imported by it, directly or not.
fn reaches(a: &Analysis, from: usize, to: usize) -> bool {
    let mut stack = vec![from];
    let mut seen = vec![false; a.ws.modules.len()];
    while let Some(m) = stack.pop() {
        if m == to {
            return true;
        }
        if std::mem::replace(&mut seen[m], true) {
            continue;
        }
        stack.extend(a.ws.modules[m].imports.values().copied());
    }
    false
}

/// Each diagnostic inside another file, with the document's import that
/// brings that file in (the first one, when several do).
pub fn imported_problems<'d>(a: &Analysis, diags: &'d [Diagnostic]) -> Vec<(Span, &'d Diagnostic)> {
    let file = a.file();
    let imports = imports(a);
    diags
        .iter()
        .filter(|d| d.span.file != file)
        .filter_map(|d| {
            let m = a.module_of(d.span.file)?;
            let imp = imports.iter().find(|i| reaches(a, i.module, m))?;
            Some((imp.span, d))
        })
        .collect()
}
