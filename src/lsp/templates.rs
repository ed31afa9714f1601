//! Templates across files: a template is defined in one file and used by
//! steps in every file that imports it, so its references and its rename
//! look through every open document (and the defining file, open or not),
//! not only the one the request came from.

use std::collections::HashMap;
use std::path::PathBuf;

use tower_lsp::jsonrpc::{Error, Result};
use tower_lsp::lsp_types::{Location, TextEdit, Url, WorkspaceEdit};

use super::analysis::{Analysis, Kind, Occ};
use super::{is_ident, lock, Backend};

/// A file URI's path with symlinks resolved, for comparing files named
/// through different URIs (the client's and one built from the project root).
pub(super) fn canonical(u: &Url) -> Option<PathBuf> {
    let p = u.to_file_path().ok()?;
    Some(p.canonicalize().unwrap_or(p))
}

impl Backend {
    /// Every place the template `occ` names (in the document `uri` analyzed
    /// as `a`) is defined or used, across open documents; `None` if `occ`
    /// is not a template with a definition. Each location says whether it is
    /// the definition.
    pub(super) fn template_locations(
        &self,
        a: &Analysis,
        uri: &Url,
        occ: &Occ,
    ) -> Option<Vec<(Location, bool)>> {
        if occ.sym.kind != Kind::Template {
            return None;
        }
        let def = a.definition(&occ.sym)?;
        let def_uri = self.uri_of(a, uri, def.span.file)?;
        let def_path = canonical(&def_uri)?;
        let name = &occ.sym.name;

        let mut docs: Vec<(Url, String)> = lock(&self.docs)
            .iter()
            .map(|(u, t)| (u.clone(), t.clone()))
            .collect();
        // Open documents answer by the URI the client knows them under.
        let open: HashMap<PathBuf, Url> = docs
            .iter()
            .filter_map(|(u, _)| Some((canonical(u)?, u.clone())))
            .collect();
        // The defining file's own pipelines may use it too, open or not
        // (the standard library's do not).
        if !occ.sym.scope.starts_with("std/") && !open.contains_key(&def_path) {
            if let Ok(text) = std::fs::read_to_string(&def_path) {
                docs.push((def_uri.clone(), text));
            }
        }

        let mut out: Vec<(Location, bool)> = Vec::new();
        let mut seen: Vec<(PathBuf, tower_lsp::lsp_types::Range)> = Vec::new();
        for (doc, text) in docs {
            let b = if doc == *uri {
                None
            } else {
                Some(self.analyze(&doc, &text))
            };
            let b = b.as_ref().unwrap_or(a);
            for o in b
                .occs
                .iter()
                .filter(|o| o.sym.kind == Kind::Template && &o.sym.name == name)
            {
                if !o.def && o.span.file != b.file() {
                    continue;
                }
                let same = b
                    .definition(&o.sym)
                    .and_then(|d| self.uri_of(b, &doc, d.span.file))
                    .and_then(|u| canonical(&u))
                    .is_some_and(|p| p == def_path);
                if !same {
                    continue;
                }
                let Some(mut loc) = self.location(b, &doc, o) else {
                    continue;
                };
                let Some(path) = canonical(&loc.uri) else {
                    continue;
                };
                if let Some(u) = open.get(&path) {
                    loc.uri = u.clone();
                }
                if seen.contains(&(path.clone(), loc.range)) {
                    continue;
                }
                seen.push((path, loc.range));
                out.push((loc, o.def));
            }
        }
        Some(out)
    }

    /// Renames the template `occ` names at its definition and every use in
    /// open documents.
    pub(super) fn rename_template(
        &self,
        a: &Analysis,
        uri: &Url,
        occ: &Occ,
        new: &str,
    ) -> Result<WorkspaceEdit> {
        if occ.sym.scope.starts_with("std/") {
            return Err(Error::invalid_params(
                "templates of the standard library cannot be renamed",
            ));
        }
        if !is_ident(new) {
            return Err(Error::invalid_params(format!(
                "`{new}` is not a valid template name: use letters, digits and `_`"
            )));
        }
        let module = a
            .definition(&occ.sym)
            .and_then(|d| a.module_of(d.span.file))
            .ok_or_else(|| Error::invalid_params("this template has no definition"))?;
        if new != occ.sym.name && a.template(module, new).is_some() {
            return Err(Error::invalid_params(format!(
                "`{}` already defines a template `{new}`",
                a.ws.module_name(module)
            )));
        }
        let locs = self
            .template_locations(a, uri, occ)
            .ok_or_else(|| Error::invalid_params("nothing to rename here"))?;
        let mut changes: HashMap<Url, Vec<TextEdit>> = HashMap::new();
        for (l, _) in locs {
            changes
                .entry(l.uri)
                .or_default()
                .push(TextEdit::new(l.range, new.to_string()));
        }
        Ok(WorkspaceEdit::new(changes))
    }
}
