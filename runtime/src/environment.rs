//! Environments (`env NAME { ... }`): reading an env file (dotenv syntax,
//! parsed by `dotenvy`, with the line of every key found for diagnostics) and
//! validating an environment before any step starts: the file parses, every
//! `require`d key is set and non-empty, no `forbid`den value is set, every
//! declared secret is available and maskable, and `allow_if` holds. Every
//! violation is reported, each pointing at the `.pipe` line of the rule and at
//! the env file line. See docs/environments.md.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use pipe_lang::eval::{eval, interpolate, Lookup, Scope};
use pipe_lang::plan::{Deferrable, EnvSpec};
use pipe_lang::{Diagnostic, Plan, SourceMap, Span, Value};

use crate::secrets::{Origin, Secrets};

/// A parsed env file.
#[derive(Clone, Debug, Default)]
pub struct DotEnv {
    pub text: String,
    /// The variables, in file order; a key set twice keeps its last value.
    pub vars: IndexMap<String, String>,
    /// The 1-based line that sets each key (the last one).
    pub lines: HashMap<String, usize>,
    /// The byte range of that line in `text`.
    pub ranges: HashMap<String, Range<usize>>,
    pub errors: Vec<ParseError>,
}

/// A line dotenv syntax cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub range: Range<usize>,
    pub message: String,
}

impl DotEnv {
    /// Reads and parses a file.
    pub fn read(path: &Path) -> std::io::Result<DotEnv> {
        Ok(DotEnv::parse(&std::fs::read_to_string(path)?))
    }

    /// Parses dotenv text. Parse errors are collected, not fatal.
    pub fn parse(text: &str) -> DotEnv {
        let mut env = DotEnv {
            text: text.to_string(),
            ..DotEnv::default()
        };
        let lines = physical_lines(text);
        for item in dotenvy::from_read_iter(text.as_bytes()) {
            match item {
                Ok((k, v)) => {
                    env.vars.shift_remove(&k);
                    env.vars.insert(k, v);
                }
                Err(dotenvy::Error::LineParse(bad, at)) => {
                    let first = bad.lines().next().unwrap_or("").trim_end();
                    let (line, range) = lines
                        .iter()
                        .enumerate()
                        .find(|(_, r)| text[(*r).clone()].trim_end() == first)
                        .map_or((lines.len().max(1), 0..0), |(i, r)| (i + 1, r.clone()));
                    env.errors.push(ParseError {
                        line,
                        range,
                        message: format!("unexpected character at column {}", at + 1),
                    });
                }
                Err(e) => env.errors.push(ParseError {
                    line: 1,
                    range: 0..0,
                    message: e.to_string(),
                }),
            }
        }
        for (i, r) in lines.iter().enumerate() {
            let l = text[r.clone()].trim_start();
            let l = l.strip_prefix("export ").unwrap_or(l).trim_start();
            if let Some((k, _)) = l.split_once('=') {
                let k = k.trim_end();
                if env.vars.contains_key(k) {
                    env.lines.insert(k.to_string(), i + 1);
                    env.ranges.insert(k.to_string(), r.clone());
                }
            }
        }
        env
    }
}

/// Byte ranges of each line, without the line break.
fn physical_lines(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices('\n') {
        let end = if text[..i].ends_with('\r') { i - 1 } else { i };
        out.push(start..end);
        start = i + 1;
    }
    if start < text.len() {
        out.push(start..text.len());
    }
    out
}

/// Where a resolved variable came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarOrigin {
    /// `file:line` of the env file.
    File(String),
    /// `vars` in the `.pipe` file, at `file:line:col`.
    Vars(String),
    /// `vars` whose value is only known once steps have run.
    Deferred(String),
    /// `pipe`'s own environment.
    Process,
}

impl std::fmt::Display for VarOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VarOrigin::File(at) => write!(f, "{at}"),
            VarOrigin::Vars(at) => write!(f, "vars at {at}"),
            VarOrigin::Deferred(at) => write!(f, "vars at {at}, evaluated when the step runs"),
            VarOrigin::Process => f.write_str("process environment"),
        }
    }
}

/// One environment, resolved as far as it can be before the run.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub name: String,
    /// Variables with their value and origin.
    pub vars: IndexMap<String, (String, VarOrigin)>,
    /// Declared secrets with their origin (values stay out of this type).
    pub secrets: IndexMap<String, Option<Origin>>,
}

/// The result of validating environments.
pub struct Validation {
    pub diagnostics: Vec<Diagnostic>,
    /// The plan's sources plus every env file read, for rendering.
    pub sources: SourceMap,
    pub resolved: Vec<Resolved>,
}

impl Validation {
    pub fn ok(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The environments a run of `plan` uses: the target, and the env of every
/// stage that would run (handlers included).
pub fn used_by(plan: &Plan) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let all = plan.steps().iter().chain(plan.handlers());
    for n in all
        .filter_map(|s| s.environment.as_ref())
        .chain(plan.target_env.iter())
    {
        if plan.envs().contains_key(n) && !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Validates the named environments of `plan`. `git` is the release context
/// `allow_if` was folded with, shown when it is false.
pub fn validate(
    plan: &Plan,
    root: &Path,
    secrets: &Secrets,
    git: &Value,
    names: &[String],
) -> Validation {
    let mut v = Validation {
        diagnostics: Vec::new(),
        sources: plan.sources().clone(),
        resolved: Vec::new(),
    };
    for name in names {
        if let Some(spec) = plan.envs().get(name) {
            let r = check_env(&mut v, spec, root, secrets, git);
            v.resolved.push(r);
        }
    }
    v
}

/// The span of `needle` inside the source a span covers, or the span itself.
fn sub_span(sources: &SourceMap, span: Span, needle: &str) -> Span {
    let text = sources.snippet(span);
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    // A whole word: `DEBUG` is not the `DEBUG` inside `NODEBUG`.
    let found = text.match_indices(needle).map(|(i, _)| i).find(|&i| {
        !word(text[..i].chars().next_back()) && !word(text[i + needle.len()..].chars().next())
    });
    match found {
        Some(i) => Span::new(
            span.file,
            span.start as usize + i,
            span.start as usize + i + needle.len(),
        ),
        None => span,
    }
}

struct EnvFile {
    id: pipe_lang::span::FileId,
    env: DotEnv,
}

impl EnvFile {
    fn key_span(&self, key: &str) -> Option<Span> {
        self.env
            .ranges
            .get(key)
            .map(|r| Span::new(self.id, r.start, r.end))
    }

    /// The first line, for a label about something the file lacks.
    fn top(&self) -> Span {
        let end = self.env.text.find('\n').unwrap_or(self.env.text.len());
        Span::new(self.id, 0, end)
    }
}

fn check_env(
    v: &mut Validation,
    spec: &EnvSpec,
    root: &Path,
    secrets: &Secrets,
    git: &Value,
) -> Resolved {
    let at = |k: &str| spec.spans.get(k).copied().unwrap_or(spec.span);
    let mut resolved = Resolved {
        name: spec.name.clone(),
        ..Resolved::default()
    };
    let mut file: Option<EnvFile> = None;
    if let Some(f) = &spec.file {
        match crate::secrets::resolve(root, Path::new(f), "the env file") {
            Err(r) => v.diagnostics.push(
                Diagnostic::error("pipe::env-file", r.message, at("file"), "refused path")
                    .with_help(r.help),
            ),
            Ok(path) => {
                match DotEnv::read(&path) {
                    Ok(env) => {
                        let id = v.sources.add(display(root, &path, f), env.text.clone());
                        for e in &env.errors {
                            v.diagnostics.push(
                            Diagnostic::error(
                                "pipe::env-file",
                                format!("env `{}`: {f}:{} is not dotenv syntax: {}", spec.name, e.line, e.message),
                                at("file"),
                                "env file declared here",
                            )
                            .with_label(Span::new(id, e.range.start, e.range.end), "cannot parse this line")
                            .with_help("write `KEY=value`, quote values with spaces or `#`: `KEY=\"a b\"`"),
                        );
                        }
                        file = Some(EnvFile { id, env });
                    }
                    Err(e) => v.diagnostics.push(
                        Diagnostic::error(
                            "pipe::env-file",
                            format!("env `{}`: cannot read {}: {e}", spec.name, path.display()),
                            at("file"),
                            "env file declared here",
                        )
                        .with_help(format!(
                            "create {f} (see examples/*.env.example), or fix the path"
                        )),
                    ),
                }
            }
        }
    }
    // What a step of this environment sees: `vars`, then the file, then the
    // process environment.
    if let Some(f) = &file {
        for (k, val) in &f.env.vars {
            let line = f.env.lines.get(k).copied().unwrap_or(1);
            let name = v.sources.get(f.id).name.clone();
            resolved.vars.insert(
                k.clone(),
                (val.clone(), VarOrigin::File(format!("{name}:{line}"))),
            );
        }
    }
    for (k, d) in &spec.vars {
        let loc = v.sources.location(at("vars"));
        match d {
            Deferrable::Ready(val) => {
                if let Ok(s) = interpolate(val, spec.span) {
                    resolved.vars.insert(k.clone(), (s, VarOrigin::Vars(loc)));
                }
            }
            Deferrable::Deferred(e) => {
                let text = format!("${{{}}}", pipe_lang::fmt::expr_to_string(e));
                resolved
                    .vars
                    .insert(k.clone(), (text, VarOrigin::Deferred(loc)));
            }
        }
    }
    let lookup = |k: &str| -> Option<(String, VarOrigin)> {
        resolved
            .vars
            .get(k)
            .cloned()
            .or_else(|| std::env::var(k).ok().map(|s| (s, VarOrigin::Process)))
    };
    let file_label = spec.file.as_deref().unwrap_or("");
    for key in &spec.require {
        let rule = sub_span(&v.sources, at("require"), &format!("\"{key}\""));
        match lookup(key) {
            None => {
                let mut d = Diagnostic::error(
                    "pipe::env-require",
                    format!("env `{}` requires `{key}`, which is not set", spec.name),
                    rule,
                    "required here",
                );
                if let Some(f) = &file {
                    d = d.with_label(f.top(), format!("`{key}` is not set in {file_label}"));
                }
                v.diagnostics.push(d.with_help(format!(
                    "add `{key}=...` to {}",
                    if file.is_some() {
                        file_label
                    } else {
                        "the environment (or give the env a `file`)"
                    }
                )));
            }
            Some((val, origin)) if val.trim().is_empty() => {
                let mut d = Diagnostic::error(
                    "pipe::env-require",
                    format!("env `{}` requires `{key}`, which is empty", spec.name),
                    rule,
                    "required here",
                );
                if let (Some(f), VarOrigin::File(_)) = (&file, &origin) {
                    if let Some(s) = f.key_span(key) {
                        d = d.with_label(s, format!("`{key}` is empty here"));
                    }
                }
                v.diagnostics
                    .push(d.with_help(format!("give `{key}` a value (set in {origin})")));
            }
            Some(_) => {}
        }
    }
    for (key, bad) in &spec.forbid {
        let bad_values: Vec<String> = match bad {
            Value::List(l) => l
                .iter()
                .filter_map(|b| interpolate(b, spec.span).ok())
                .collect(),
            b => interpolate(b, spec.span).ok().into_iter().collect(),
        };
        let Some((cur, origin)) = lookup(key) else {
            continue;
        };
        if let Some(b) = bad_values
            .iter()
            .find(|b| b.eq_ignore_ascii_case(cur.trim()))
        {
            let rule = sub_span(&v.sources, at("forbid"), key);
            let mut d = Diagnostic::error(
                "pipe::env-forbid",
                format!("env `{}` forbids `{key}={b}`, and it is set", spec.name),
                rule,
                "forbidden here",
            );
            if let (Some(f), VarOrigin::File(_)) = (&file, &origin) {
                if let Some(s) = f.key_span(key) {
                    d = d.with_label(s, format!("`{key}` is set to `{cur}` here"));
                }
            }
            v.diagnostics.push(d.with_help(format!(
                "remove `{key}` or set another value (set in {origin})"
            )));
        }
    }
    // Required keys that only pipe's environment sets are part of the env too.
    for key in &spec.require {
        if !resolved.vars.contains_key(key) {
            if let Ok(val) = std::env::var(key) {
                resolved.vars.insert(key.clone(), (val, VarOrigin::Process));
            }
        }
    }
    for name in &spec.secrets {
        let rule = sub_span(&v.sources, at("secrets"), &format!("\"{name}\""));
        match secrets.check_in(Some(&spec.name), name) {
            None => v.diagnostics.push(
                Diagnostic::error(
                    "pipe::env-secret",
                    format!("env `{}` needs secret `{name}`, which no source sets", spec.name),
                    rule,
                    "declared here",
                )
                .with_help(match secrets.scoped_elsewhere(Some(&spec.name), name).first() {
                    // Another environment's value is never used here.
                    Some((other, origin)) => format!(
                        "`{name}` is set only for env `{other}` ({origin}), which `{}` cannot read: give `{}` its own value in the secrets directory's `{}/{name}` (mode 600)",
                        spec.name, spec.name, spec.name
                    ),
                    None => format!(
                        "export {name}=..., put a file named {name} (mode 600) in the secrets directory (or its `{}/` subdirectory, for this environment only), or add {name}=... to --secrets-file",
                        spec.name
                    ),
                }),
            ),
            Some(Err(r)) => v.diagnostics.push(
                Diagnostic::error("pipe::env-secret", r.message, rule, "declared here")
                    .with_help(r.help),
            ),
            Some(Ok((_, o))) => {
                resolved.secrets.insert(name.clone(), Some(o));
                continue;
            }
        }
        resolved.secrets.insert(name.clone(), None);
    }
    if let Some(cond) = &spec.allow_if {
        check_allow_if(v, spec, cond, &resolved, git);
    }
    resolved
}

fn display(root: &Path, path: &Path, written: &str) -> String {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let abs: PathBuf = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    abs.strip_prefix(&root)
        .map_or_else(|_| written.to_string(), |p| p.display().to_string())
}

/// Reads `env.*` from the resolved variables; nothing else exists before the run.
struct PreRunScope<'a> {
    vars: &'a IndexMap<String, (String, VarOrigin)>,
}

impl Scope for PreRunScope<'_> {
    fn lookup(&self, root: &str, keys: &[Value]) -> Lookup {
        match (root, keys.first().and_then(Value::as_str)) {
            ("env", Some(k)) => Lookup::Found(
                self.vars
                    .get(k)
                    .map_or(Value::Null, |(v, _)| Value::Str(v.clone())),
                1,
            ),
            _ => Lookup::Missing,
        }
    }
}

fn check_allow_if(
    v: &mut Validation,
    spec: &EnvSpec,
    cond: &Deferrable,
    resolved: &Resolved,
    git: &Value,
) {
    let span = spec.spans.get("allow_if").copied().unwrap_or(spec.span);
    let expr = v.sources.snippet(span).to_string();
    let value = match cond {
        Deferrable::Ready(b) => Ok(b.clone()),
        Deferrable::Deferred(e) => eval(
            e,
            &PreRunScope {
                vars: &resolved.vars,
            },
        )
        .map_err(|e| e.message),
    };
    let value = match value {
        Ok(b) => b,
        Err(e) => {
            v.diagnostics.push(
                Diagnostic::error(
                    "pipe::env-allow-if",
                    format!(
                        "env `{}`: `allow_if` cannot be decided before the run: {e}",
                        spec.name
                    ),
                    span,
                    "condition here",
                )
                .with_help("`allow_if` may read `git.*`, params and `env.*`"),
            );
            return;
        }
    };
    if value.truthy() {
        return;
    }
    // The `git.*` fields the condition reads, with their values now.
    let mut facts = Vec::new();
    let mut fixes = Vec::new();
    for field in ["sha", "short_sha", "branch", "tag", "dirty", "commit_time"] {
        let path = format!("git.{field}");
        let reads = expr.match_indices(&path).any(|(i, _)| {
            !expr[i + path.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        });
        if !reads {
            continue;
        }
        let val = match git {
            Value::Map(m) => m.get(field).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        match (&val, field) {
            (Value::Null, "tag") => {
                facts.push("git.tag is not set".to_string());
                fixes.push(
                    "tag the commit (git tag v1.2.3) or pass --git-ref with a tag".to_string(),
                );
            }
            (Value::Null, "branch") => {
                facts.push("git.branch is not set (detached HEAD or a tag ref)".to_string());
                fixes.push(
                    "run from the branch (git switch NAME) or pass --git-ref BRANCH".to_string(),
                );
            }
            (Value::Null, _) => facts.push(format!("{path} is not set (not a git repository?)")),
            (val, _) => {
                facts.push(format!("{path} = {}", val.to_json()));
                match field {
                    "tag" => fixes.push(
                        "tag the commit with a tag the condition accepts, or pass --git-ref".into(),
                    ),
                    "branch" => fixes
                        .push("run from a branch the condition accepts, or pass --git-ref".into()),
                    "dirty" => fixes.push("commit or stash your changes".into()),
                    _ => {}
                }
            }
        }
    }
    let mut help = format!("`{expr}` must be true");
    if !facts.is_empty() {
        help.push_str(&format!(": {}", facts.join(", ")));
    }
    if !fixes.is_empty() {
        help.push_str(&format!("; {}", fixes.join("; ")));
    }
    v.diagnostics.push(
        Diagnostic::error(
            "pipe::env-allow-if",
            format!(
                "env `{}` is not allowed here: `allow_if = {expr}` is false",
                spec.name
            ),
            span,
            "false for this commit",
        )
        .with_help(help),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dotenv_with_lines() {
        let e = DotEnv::parse(
            "# comment\nexport A=1\n\nB=\"two words\"\nC='x y' # trailing\nA=3\nD=\n",
        );
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        assert_eq!(e.vars["A"], "3");
        assert_eq!(e.vars["B"], "two words");
        assert_eq!(e.vars["C"], "x y");
        assert_eq!(e.vars["D"], "");
        assert_eq!(e.lines["A"], 6);
        assert_eq!(e.lines["B"], 4);
        assert_eq!(e.lines["D"], 7);
        assert_eq!(&e.text[e.ranges["B"].clone()], "B=\"two words\"");
    }

    #[test]
    fn a_rule_span_is_the_whole_word() {
        let mut sources = SourceMap::new();
        let text = "forbid = { NODEBUG = \"1\", DEBUG = \"true\" }";
        let id = sources.add("p.pipe", text);
        let all = Span::new(id, 9, text.len());
        let s = sub_span(&sources, all, "DEBUG");
        assert_eq!(sources.snippet(s), "DEBUG");
        assert_eq!(s.start, 26);
        assert_eq!(sub_span(&sources, all, "MISSING"), all);
    }

    #[test]
    fn reports_the_line_of_a_parse_error() {
        let e = DotEnv::parse("A=1\nB C\nD=4\n");
        assert_eq!(e.errors.len(), 1, "{:?}", e.errors);
        assert_eq!(e.errors[0].line, 2);
        assert_eq!(e.vars.get("D").map(String::as_str), Some("4"));
    }
}
