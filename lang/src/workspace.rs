//! A set of parsed modules and what they import. The language crate does no
//! IO: callers hand in file text and a [`Loader`] that fetches imports; the
//! embedded standard library (`std/...`) is resolved here.

use indexmap::IndexMap;

use crate::ast::{Item, Module, Pipeline, Template};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::parser;
use crate::span::{FileId, SourceMap, Span};
use crate::stdlib;

/// Fetches the text of an imported file.
pub trait Loader {
    /// Resolves `path` as imported from the file named `from`; returns the
    /// display name of the resolved file and its text.
    fn load(&mut self, from: &str, path: &str) -> Result<(String, String), String>;
}

/// A loader that refuses every non-std import (for tests and single files).
pub struct NoLoader;

impl Loader for NoLoader {
    fn load(&mut self, _from: &str, _path: &str) -> Result<(String, String), String> {
        // The caller prefixes "cannot import `<path>`: ".
        Err("only the standard library (`std/...`) can be imported here".into())
    }
}

#[derive(Debug)]
pub struct LoadedModule {
    pub file: FileId,
    /// `None` when the file did not parse.
    pub ast: Option<Module>,
    /// Namespace → module index, from the file's imports.
    pub imports: IndexMap<String, usize>,
    /// Whether the module is one of the files the caller asked about (not an import).
    pub root: bool,
}

impl LoadedModule {
    pub fn pipelines(&self) -> impl Iterator<Item = &Pipeline> {
        self.ast
            .iter()
            .flat_map(|m| m.items.iter())
            .filter_map(|i| match i {
                Item::Pipeline(p) => Some(p),
                _ => None,
            })
    }

    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.ast
            .iter()
            .flat_map(|m| m.items.iter())
            .filter_map(|i| match i {
                Item::Template(t) => Some(t),
                _ => None,
            })
    }

    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates().find(|t| t.name.name == name)
    }
}

/// Parsed files and their imports.
#[derive(Debug, Default)]
pub struct Workspace {
    pub sources: SourceMap,
    pub modules: Vec<LoadedModule>,
    /// Parse and import errors.
    pub diagnostics: Vec<Diagnostic>,
}

impl Workspace {
    /// Parses the given files and, transitively, everything they import.
    pub fn load(files: Vec<(String, String)>, loader: &mut dyn Loader) -> Workspace {
        let mut ws = Workspace::default();
        for (name, text) in files {
            ws.add(&name, &text, true, loader);
        }
        ws
    }

    fn add(&mut self, name: &str, text: &str, root: bool, loader: &mut dyn Loader) -> usize {
        if let Some(i) = self
            .modules
            .iter()
            .position(|m| self.sources.get(m.file).name == name)
        {
            self.modules[i].root |= root;
            return i;
        }
        let file = self.sources.add(name, text);
        let text = self.sources.get(file).text.clone();
        let idx = self.modules.len();
        let ast = match parser::parse(file, &text) {
            Ok(m) => Some(m),
            Err(d) => {
                self.diagnostics.extend(d);
                None
            }
        };
        self.modules.push(LoadedModule {
            file,
            ast: None,
            imports: IndexMap::new(),
            root,
        });
        let imports: Vec<_> = ast
            .iter()
            .flat_map(|m| m.items.iter())
            .filter_map(|i| {
                if let Item::Import(imp) = i {
                    Some(imp.clone())
                } else {
                    None
                }
            })
            .collect();
        let mut bound = IndexMap::new();
        for imp in imports {
            let ns = imp.namespace().to_string();
            if let Some(prev) = bound.get(&ns) {
                let _: &usize = prev;
                self.diagnostics.push(
                    Diagnostic::error(
                        "pipe::duplicate",
                        format!("`{ns}` is imported twice"),
                        imp.span,
                        "second import",
                    )
                    .with_help("give one of them another name: `import \"...\" as other`"),
                );
                continue;
            }
            let loaded = if let Some(std) = imp.path.strip_prefix("std/") {
                match stdlib::source(std) {
                    Some(text) => Ok((format!("std/{std}"), text.to_string())),
                    None => Err(unknown_std(std, imp.path_span)),
                }
            } else {
                loader.load(name, &imp.path).map_err(|e| {
                    Diagnostic::error(
                        "pipe::import",
                        format!("cannot import `{}`: {e}", imp.path),
                        imp.path_span,
                        "imported here",
                    )
                })
            };
            match loaded {
                Ok((n, t)) => {
                    let m = self.add(&n, &t, false, loader);
                    bound.insert(ns, m);
                }
                Err(d) => self.diagnostics.push(d),
            }
        }
        self.modules[idx].ast = ast;
        self.modules[idx].imports = bound;
        idx
    }

    pub fn module_name(&self, m: usize) -> &str {
        &self.sources.get(self.modules[m].file).name
    }

    /// Every pipeline in the root files, with its module index.
    pub fn pipelines(&self) -> impl Iterator<Item = (usize, &Pipeline)> {
        self.modules
            .iter()
            .enumerate()
            .filter(|(_, m)| m.root)
            .flat_map(|(i, m)| m.pipelines().map(move |p| (i, p)))
    }

    pub fn find_pipeline(&self, name: &str) -> Option<(usize, &Pipeline)> {
        self.pipelines().find(|(_, p)| p.name.name == name)
    }
}

fn unknown_std(name: &str, span: Span) -> Diagnostic {
    let mut d = Diagnostic::error(
        "pipe::import",
        format!("no standard module `std/{name}`"),
        span,
        "unknown module",
    );
    let names: Vec<&str> = stdlib::MODULES.iter().map(|(n, _)| *n).collect();
    d = match did_you_mean(name, names.iter().copied()) {
        Some(n) => d.with_help(format!("did you mean `std/{n}`?")),
        None => d.with_help(format!(
            "the standard modules are: {}",
            names
                .iter()
                .map(|n| format!("std/{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    d
}
