//! `pipe lsp`: the language server, over stdio with tower-lsp. Every request
//! re-analyzes the document from its current text (parsing and checking a
//! pipeline takes milliseconds), so there is no cache to go stale.
//!
//! The embedded standard library is written out as read-only files under the
//! user's cache directory (`~/.cache/pipe/stdlib-<version>/docker.pipe`, or the
//! temporary directory) so that "go to definition" can open it in any editor.

mod analysis;
mod completion;
mod hover;
mod imports;
mod position;
mod symbols;
mod templates;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use pipe_lang::lower::Context;
use pipe_lang::{FileId, Severity, Span, Value};
use tower_lsp::jsonrpc::{Error, Request, Result};
use tower_lsp::lsp_types::{
    CompletionOptions, CompletionParams, CompletionResponse, Diagnostic as LspDiagnostic,
    DiagnosticRelatedInformation, DiagnosticSeverity, DidChangeTextDocumentParams,
    DidCloseTextDocumentParams, DidOpenTextDocumentParams, DocumentFormattingParams,
    DocumentSymbolParams, DocumentSymbolResponse, GotoDefinitionParams, GotoDefinitionResponse,
    Hover, HoverContents, HoverParams, HoverProviderCapability, InitializeParams, InitializeResult,
    Location, MarkupContent, MarkupKind, NumberOrString, OneOf, Position, Range, ReferenceParams,
    RenameParams, ServerCapabilities, ServerInfo, TextDocumentSyncCapability, TextDocumentSyncKind,
    TextEdit, Url, WorkspaceEdit,
};
use tower_lsp::{Client, LanguageServer, LspService, Server};

use crate::exit::Failure;
use crate::project::Project;
use analysis::{Analysis, Kind, Occ};
use position::LineIndex;

/// Runs the server until the client says `exit` or closes stdin.
pub fn serve() -> std::result::Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (service, socket) = LspService::new(|client| Backend {
            client,
            docs: Mutex::default(),
            last_good: Mutex::default(),
            git: Mutex::default(),
            imported: Mutex::default(),
            stdlib: OnceLock::new(),
        });
        let service = ExitOnExit {
            inner: service,
            shutdown: false,
        };
        Server::new(tokio::io::stdin(), tokio::io::stdout(), socket)
            .serve(service)
            .await;
    });
    // The stdin reader is a blocking thread still waiting for input that will
    // never come: do not wait for it.
    rt.shutdown_background();
    Ok(())
}

/// Ends the process on the `exit` notification. tower-lsp only stops reading
/// once stdin closes or another message arrives, and a client may wait for
/// the process to end before closing its end.
struct ExitOnExit<S> {
    inner: S,
    shutdown: bool,
}

impl<S> tower_service::Service<Request> for ExitOnExit<S>
where
    S: tower_service::Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> S::Future {
        match req.method() {
            "shutdown" => self.shutdown = true,
            // The spec: 0 after a shutdown request, 1 without one. The reply
            // to `shutdown` was written before the client sent `exit`.
            "exit" => std::process::exit(i32::from(!self.shutdown)),
            _ => {}
        }
        self.inner.call(req)
    }
}

struct Backend {
    client: Client,
    /// Open documents' current text.
    docs: Mutex<HashMap<Url, String>>,
    /// Each document's latest text that parsed, for completion while typing.
    last_good: Mutex<HashMap<Url, String>>,
    /// The `git` context per project root, read once.
    git: Mutex<HashMap<PathBuf, Value>>,
    /// The project files each open document imported at its last analysis,
    /// so that an edit republishes only the documents that read the file.
    imported: Mutex<HashMap<Url, Vec<PathBuf>>>,
    stdlib: OnceLock<Option<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Backend {
    fn text(&self, uri: &Url) -> Option<String> {
        lock(&self.docs).get(uri).cloned()
    }

    /// The project root and the name the document is loaded under.
    fn locate(uri: &Url) -> (PathBuf, String) {
        match uri.to_file_path() {
            Ok(path) => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                let project = Project::discover(dir);
                let name = project.display_name(&path);
                (project.root, name)
            }
            Err(()) => (
                std::env::current_dir().unwrap_or_default(),
                "untitled.pipe".to_string(),
            ),
        }
    }

    fn analyze(&self, uri: &Url, text: &str) -> Analysis {
        let (root, name) = Self::locate(uri);
        let open: HashMap<PathBuf, String> = lock(&self.docs)
            .iter()
            .filter(|(u, _)| *u != uri)
            .filter_map(|(u, t)| Some((u.to_file_path().ok()?, t.clone())))
            .collect();
        let git = lock(&self.git)
            .entry(root.clone())
            .or_insert_with(|| crate::git::context(&root, None))
            .clone();
        let ctx = Context {
            git,
            ..Context::default()
        };
        Analysis::new(&root, &name, text, &open, ctx)
    }

    /// The analysis of an open document, or nothing if it is not open.
    fn analysis(&self, uri: &Url) -> Option<(Analysis, String)> {
        let text = self.text(uri)?;
        Some((self.analyze(uri, &text), text))
    }

    /// The directory the standard library is written to, once.
    fn stdlib_dir(&self) -> Option<&Path> {
        self.stdlib
            .get_or_init(|| {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .unwrap_or_else(std::env::temp_dir);
                let dir = base
                    .join("pipe")
                    .join(format!("stdlib-{}", env!("CARGO_PKG_VERSION")));
                std::fs::create_dir_all(&dir).ok()?;
                for (name, text) in pipe_lang::stdlib::MODULES {
                    let p = dir.join(format!("{name}.pipe"));
                    if std::fs::read_to_string(&p).is_ok_and(|t| t == *text) {
                        continue;
                    }
                    if let Ok(meta) = std::fs::metadata(&p) {
                        let mut perm = meta.permissions();
                        #[expect(
                            clippy::permissions_set_readonly_false,
                            reason = "our own cache file, rewritten then made read-only again"
                        )]
                        perm.set_readonly(false);
                        let _ = std::fs::set_permissions(&p, perm);
                    }
                    std::fs::write(&p, text).ok()?;
                    if let Ok(meta) = std::fs::metadata(&p) {
                        let mut perm = meta.permissions();
                        perm.set_readonly(true);
                        let _ = std::fs::set_permissions(&p, perm);
                    }
                }
                Some(dir)
            })
            .as_deref()
    }

    /// The URI of a file of an analysis.
    fn uri_of(&self, a: &Analysis, doc: &Url, file: FileId) -> Option<Url> {
        if file == a.file() {
            return Some(doc.clone());
        }
        let name = &a.ws.sources.get(file).name;
        let path = match name.strip_prefix("std/") {
            Some(std) => self.stdlib_dir()?.join(format!("{std}.pipe")),
            None => a.root.join(name),
        };
        Url::from_file_path(path).ok()
    }

    fn location(&self, a: &Analysis, doc: &Url, occ: &Occ) -> Option<Location> {
        self.span_location(a, doc, occ.span)
    }

    fn span_location(&self, a: &Analysis, doc: &Url, span: Span) -> Option<Location> {
        let uri = self.uri_of(a, doc, span.file)?;
        let idx = LineIndex::new(a.text(span.file));
        Some(Location::new(
            uri,
            idx.range(span.start as usize, span.end as usize),
        ))
    }

    /// Publishes the document's diagnostics, then those of the other open
    /// documents that import it.
    async fn publish_all(&self, uri: Url, version: Option<i32>) {
        self.publish(uri.clone(), version).await;
        self.publish_importers(&uri).await;
    }

    /// Republishes the open documents whose last analysis imported `uri`.
    async fn publish_importers(&self, uri: &Url) {
        let Some(path) = templates::canonical(uri) else {
            return;
        };
        let importers: Vec<Url> = lock(&self.imported)
            .iter()
            .filter(|(u, files)| *u != uri && files.contains(&path))
            .map(|(u, _)| u.clone())
            .collect();
        for other in importers {
            self.publish(other, None).await;
        }
    }

    async fn publish(&self, uri: Url, version: Option<i32>) {
        let Some(text) = self.text(&uri) else { return };
        let diags = {
            let a = self.analyze(&uri, &text);
            if a.parsed() {
                lock(&self.last_good).insert(uri.clone(), text.clone());
            }
            let files: Vec<PathBuf> = (1..a.ws.modules.len())
                .map(|m| a.ws.module_name(m))
                .filter(|n| !n.starts_with("std/"))
                .map(|n| {
                    let p = a.root.join(n);
                    p.canonicalize().unwrap_or(p)
                })
                .collect();
            lock(&self.imported).insert(uri.clone(), files);
            let all = a.all_diagnostics();
            let file = a.file();
            let mut out: Vec<LspDiagnostic> = all
                .iter()
                .filter(|d| d.span.file == file)
                .map(|d| self.to_lsp(&a, &uri, d, d.span, false))
                .collect();
            // A problem inside an imported file shows on the import that
            // brings it in, with its place in that file as related information.
            for (at, d) in imports::imported_problems(&a, &all) {
                out.push(self.to_lsp(&a, &uri, d, at, true));
            }
            out
        };
        self.client.publish_diagnostics(uri, diags, version).await;
    }

    /// The LSP form of a diagnostic, shown at `at` in the document; `moved`
    /// when `at` is not the diagnostic's own place (an import of its file).
    fn to_lsp(
        &self,
        a: &Analysis,
        uri: &Url,
        d: &pipe_lang::Diagnostic,
        at: Span,
        moved: bool,
    ) -> LspDiagnostic {
        let mut related: Vec<DiagnosticRelatedInformation> = Vec::new();
        let mut message = d.message.clone();
        if moved {
            if let Some(loc) = self.span_location(a, uri, d.span) {
                let name = &a.ws.sources.get(d.span.file).name;
                let p = loc.range.start;
                message = format!("in {name}:{}:{}: {message}", p.line + 1, p.character + 1);
                related.push(DiagnosticRelatedInformation {
                    location: loc,
                    message: d.label.clone(),
                });
            }
        }
        related.extend(d.secondary.iter().filter_map(|(s, label)| {
            Some(DiagnosticRelatedInformation {
                location: self.span_location(a, uri, *s)?,
                message: label.clone(),
            })
        }));
        if let Some(h) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(h);
        }
        let idx = LineIndex::new(a.text(at.file));
        LspDiagnostic {
            range: idx.range(at.start as usize, at.end as usize),
            severity: Some(match d.severity {
                Severity::Error => DiagnosticSeverity::ERROR,
                Severity::Warning => DiagnosticSeverity::WARNING,
            }),
            code: Some(NumberOrString::String(d.code.to_string())),
            source: Some("pipe".into()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            ..LspDiagnostic::default()
        }
    }

    /// An analysis for completion at `pos`: the text as it is if it parses,
    /// else with a placeholder name at the cursor (`steps.build.outputs.`
    /// does not parse until something follows the dot), else the last text
    /// that parsed.
    fn completion_analysis(&self, uri: &Url, text: &str, offset: usize) -> Analysis {
        let a = self.analyze(uri, text);
        if a.parsed() {
            return a;
        }
        let mut patched = text.to_string();
        patched.insert_str(offset, "pipe_completion_placeholder");
        let b = self.analyze(uri, &patched);
        if b.parsed() {
            return b;
        }
        match lock(&self.last_good).get(uri).cloned() {
            Some(good) => self.analyze(uri, &good),
            None => a,
        }
    }
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !matches!(s, "true" | "false" | "null")
}

#[tower_lsp::async_trait]
impl LanguageServer for Backend {
    async fn initialize(&self, _: InitializeParams) -> Result<InitializeResult> {
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                text_document_sync: Some(TextDocumentSyncCapability::Kind(
                    TextDocumentSyncKind::FULL,
                )),
                hover_provider: Some(HoverProviderCapability::Simple(true)),
                definition_provider: Some(OneOf::Left(true)),
                references_provider: Some(OneOf::Left(true)),
                document_symbol_provider: Some(OneOf::Left(true)),
                document_formatting_provider: Some(OneOf::Left(true)),
                rename_provider: Some(OneOf::Left(true)),
                completion_provider: Some(CompletionOptions {
                    trigger_characters: Some(vec![".".into(), "[".into()]),
                    ..CompletionOptions::default()
                }),
                ..ServerCapabilities::default()
            },
            server_info: Some(ServerInfo {
                name: "pipe".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    async fn did_open(&self, p: DidOpenTextDocumentParams) {
        let uri = p.text_document.uri;
        lock(&self.docs).insert(uri.clone(), p.text_document.text);
        self.publish_all(uri, Some(p.text_document.version)).await;
    }

    async fn did_change(&self, p: DidChangeTextDocumentParams) {
        let uri = p.text_document.uri;
        // Full sync: the last change holds the whole text.
        if let Some(c) = p.content_changes.into_iter().last() {
            lock(&self.docs).insert(uri.clone(), c.text);
        }
        self.publish_all(uri, Some(p.text_document.version)).await;
    }

    async fn did_close(&self, p: DidCloseTextDocumentParams) {
        let uri = p.text_document.uri;
        lock(&self.docs).remove(&uri);
        lock(&self.last_good).remove(&uri);
        self.client
            .publish_diagnostics(uri.clone(), Vec::new(), None)
            .await;
        lock(&self.imported).remove(&uri);
        // Documents importing it now read it from the disk.
        self.publish_importers(&uri).await;
    }

    async fn hover(&self, p: HoverParams) -> Result<Option<Hover>> {
        let uri = &p.text_document_position_params.text_document.uri;
        let Some((a, text)) = self.analysis(uri) else {
            return Ok(None);
        };
        let idx = LineIndex::new(&text);
        let offset = idx.offset(p.text_document_position_params.position);
        let Some(value) = hover::hover(&a, offset) else {
            return Ok(None);
        };
        let range = a
            .occ_at(offset)
            .map(|o| idx.range(o.span.start as usize, o.span.end as usize));
        Ok(Some(Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value,
            }),
            range,
        }))
    }

    async fn goto_definition(
        &self,
        p: GotoDefinitionParams,
    ) -> Result<Option<GotoDefinitionResponse>> {
        let uri = &p.text_document_position_params.text_document.uri;
        let Some((a, text)) = self.analysis(uri) else {
            return Ok(None);
        };
        let offset = LineIndex::new(&text).offset(p.text_document_position_params.position);
        if let Some(imp) = imports::import_at(&a, offset) {
            // The imported file itself, from its first line.
            let file = a.ws.modules[imp.module].file;
            return Ok(self.uri_of(&a, uri, file).map(|target| {
                GotoDefinitionResponse::Scalar(Location::new(target, Range::default()))
            }));
        }
        let def = a.occ_at(offset).and_then(|o| a.definition(&o.sym));
        Ok(def
            .and_then(|d| self.location(&a, uri, d))
            .map(GotoDefinitionResponse::Scalar))
    }

    async fn references(&self, p: ReferenceParams) -> Result<Option<Vec<Location>>> {
        let uri = &p.text_document_position.text_document.uri;
        let Some((a, text)) = self.analysis(uri) else {
            return Ok(None);
        };
        let offset = LineIndex::new(&text).offset(p.text_document_position.position);
        let Some(occ) = a.occ_at(offset) else {
            return Ok(None);
        };
        let with_decl = p.context.include_declaration;
        if let Some(locs) = self.template_locations(&a, uri, occ) {
            return Ok(Some(
                locs.into_iter()
                    .filter(|(_, def)| with_decl || !def)
                    .map(|(l, _)| l)
                    .collect(),
            ));
        }
        Ok(Some(
            a.occurrences(&occ.sym)
                .filter(|o| with_decl || !o.def)
                .filter_map(|o| self.location(&a, uri, o))
                .collect(),
        ))
    }

    async fn rename(&self, p: RenameParams) -> Result<Option<WorkspaceEdit>> {
        let uri = &p.text_document_position.text_document.uri;
        let Some((a, text)) = self.analysis(uri) else {
            return Ok(None);
        };
        let idx = LineIndex::new(&text);
        let offset = idx.offset(p.text_document_position.position);
        let Some(occ) = a.occ_at(offset) else {
            return Err(Error::invalid_params("nothing to rename here"));
        };
        if occ.sym.kind == Kind::Template {
            return self.rename_template(&a, uri, occ, &p.new_name).map(Some);
        }
        if !matches!(
            occ.sym.kind,
            Kind::Step | Kind::Stage | Kind::Param | Kind::Env
        ) {
            return Err(Error::invalid_params(
                "only steps, stages, params, envs and templates can be renamed",
            ));
        }
        let occs: Vec<&Occ> = a.occurrences(&occ.sym).collect();
        let new = p.new_name;
        let quoted = |o: &&Occ| {
            let s = o.span.start as usize;
            s > 0 && matches!(text.as_bytes()[s - 1], b'"' | b'\'')
        };
        let ok = is_ident(&new)
            || (occs.iter().all(quoted)
                && !new.is_empty()
                && !new.contains(['"', '\'', '\\', '$', '\n']));
        if !ok {
            return Err(Error::invalid_params(format!(
                "`{new}` is not a valid name here: use letters, digits and `_`"
            )));
        }
        let file = a.file();
        let edits: Vec<TextEdit> = occs
            .iter()
            .filter(|o| o.span.file == file)
            .map(|o| {
                TextEdit::new(
                    idx.range(o.span.start as usize, o.span.end as usize),
                    new.clone(),
                )
            })
            .collect();
        let mut changes = HashMap::new();
        changes.insert(uri.clone(), edits);
        Ok(Some(WorkspaceEdit::new(changes)))
    }

    async fn completion(&self, p: CompletionParams) -> Result<Option<CompletionResponse>> {
        let uri = &p.text_document_position.text_document.uri;
        let Some(text) = self.text(uri) else {
            return Ok(None);
        };
        let pos: Position = p.text_document_position.position;
        let idx = LineIndex::new(&text);
        let offset = idx.offset(pos);
        let line_start = idx.offset(Position::new(pos.line, 0));
        let before = &text[line_start..offset];
        let a = self.completion_analysis(uri, &text, offset);
        Ok(Some(CompletionResponse::Array(completion::complete(
            &a, before, offset,
        ))))
    }

    async fn document_symbol(
        &self,
        p: DocumentSymbolParams,
    ) -> Result<Option<DocumentSymbolResponse>> {
        let Some((a, _)) = self.analysis(&p.text_document.uri) else {
            return Ok(None);
        };
        Ok(Some(DocumentSymbolResponse::Nested(
            symbols::document_symbols(&a),
        )))
    }

    async fn formatting(&self, p: DocumentFormattingParams) -> Result<Option<Vec<TextEdit>>> {
        let Some(text) = self.text(&p.text_document.uri) else {
            return Ok(None);
        };
        // A file with syntax errors is left alone; its diagnostics say why.
        let Ok(formatted) = pipe_lang::format::format(&text) else {
            return Ok(None);
        };
        if formatted == text {
            return Ok(Some(Vec::new()));
        }
        let idx = LineIndex::new(&text);
        Ok(Some(vec![TextEdit::new(
            idx.range(0, text.len()),
            formatted,
        )]))
    }
}
