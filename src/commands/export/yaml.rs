//! A small YAML writer for generated workflows: block maps and lists,
//! scalars double-quoted in JSON syntax (valid YAML) unless plainly safe,
//! multi-line strings as literal blocks, and comments anywhere in a map.
//!
//! Written here rather than taken from a crate because the exported
//! workflows must carry comments (for every construct GitHub cannot
//! express), which no maintained serde YAML serializer can emit; and
//! serde_yaml itself is archived. The output is checked by parsers in the
//! tests (check-jsonschema, actionlint, zizmor).

use std::fmt::Write as _;

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A string, quoted as needed.
    Str(String),
    /// Written as is: numbers, booleans.
    Plain(String),
    Map(Vec<Entry>),
    List(Vec<Node>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Pair(String, Node),
    Comment(String),
}

impl Node {
    pub fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    pub fn map() -> Node {
        Node::Map(Vec::new())
    }

    /// Adds a pair to a map (no-op on other nodes).
    pub fn set(&mut self, key: &str, value: Node) -> &mut Node {
        if let Node::Map(entries) = self {
            entries.push(Entry::Pair(key.to_string(), value));
        }
        self
    }

    /// Adds a comment line (or several) to a map.
    pub fn comment(&mut self, text: &str) -> &mut Node {
        if let Node::Map(entries) = self {
            for line in text.lines() {
                entries.push(Entry::Comment(line.to_string()));
            }
        }
        self
    }

    /// The value of `key` in a map.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find_map(|e| match e {
                Entry::Pair(k, v) if k == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }
}

/// The document as YAML text.
pub fn to_string(doc: &Node) -> String {
    let mut out = String::new();
    match doc {
        Node::Map(entries) => map(&mut out, entries, 0),
        other => {
            let _ = writeln!(out, "{}", inline(other).unwrap_or_default());
        }
    }
    out
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

/// A scalar or empty collection on one line; `None` for a block.
fn inline(n: &Node) -> Option<String> {
    match n {
        Node::Str(s) if s.contains('\n') => None,
        Node::Str(s) => Some(scalar(s)),
        Node::Plain(s) => Some(s.clone()),
        Node::Map(e) if e.is_empty() => Some("{}".into()),
        Node::List(l) if l.is_empty() => Some("[]".into()),
        _ => None,
    }
}

fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./ ".contains(c))
        && !s.ends_with(' ')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        serde_json::to_string(k).unwrap_or_default()
    }
}

fn map(out: &mut String, entries: &[Entry], indent: usize) {
    for e in entries {
        match e {
            Entry::Comment(c) => {
                let _ = writeln!(
                    out,
                    "{}#{}{c}",
                    pad(indent),
                    if c.is_empty() { "" } else { " " }
                );
            }
            Entry::Pair(k, v) => {
                let k = key(k);
                if let Some(s) = inline(v) {
                    let _ = writeln!(out, "{}{k}: {s}", pad(indent));
                    continue;
                }
                match v {
                    Node::Str(s) => {
                        let _ = writeln!(out, "{}{k}: {}", pad(indent), block_header(s));
                        block_body(out, s, indent + 2);
                    }
                    Node::Map(m) => {
                        let _ = writeln!(out, "{}{k}:", pad(indent));
                        map(out, m, indent + 2);
                    }
                    Node::List(l) => {
                        let _ = writeln!(out, "{}{k}:", pad(indent));
                        list(out, l, indent + 2);
                    }
                    Node::Plain(_) => {}
                }
            }
        }
    }
}

fn list(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        if let Some(s) = inline(item) {
            let _ = writeln!(out, "{}- {s}", pad(indent));
            continue;
        }
        match item {
            Node::Map(m) => {
                // The first line of the map goes after the dash.
                let mut inner = String::new();
                map(&mut inner, m, indent + 2);
                let rest = inner.get(indent + 2..).unwrap_or_default();
                let _ = write!(out, "{}- {rest}", pad(indent));
            }
            Node::List(l) => {
                let _ = writeln!(out, "{}-", pad(indent));
                list(out, l, indent + 2);
            }
            Node::Str(s) => {
                let _ = writeln!(out, "{}- {}", pad(indent), block_header(s));
                block_body(out, s, indent + 2);
            }
            Node::Plain(_) => {}
        }
    }
}

/// `|` keeps the final newline, `|-` strips it; an explicit indentation
/// indicator when the text starts with a space.
fn block_header(s: &str) -> String {
    let chomp = if s.ends_with('\n') { "" } else { "-" };
    let ind = if s.starts_with(' ') { "2" } else { "" };
    format!("|{ind}{chomp}")
}

fn block_body(out: &mut String, s: &str, indent: usize) {
    for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{}{line}", pad(indent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_maps_lists_comments_and_blocks() {
        let mut job = Node::map();
        job.comment("pipe: a note");
        job.set("runs-on", Node::str("ubuntu-latest"));
        let mut step = Node::map();
        step.set("name", Node::str("a: b"));
        step.set("run", Node::str("echo 1\necho 2"));
        job.set("steps", Node::List(vec![step, Node::str("x")]));
        job.set("timeout-minutes", Node::Plain("5".into()));
        job.set("if", Node::str("true"));
        let mut doc = Node::map();
        doc.set("jobs", Node::Map(vec![Entry::Pair("a.b".into(), job)]));
        assert_eq!(
            to_string(&doc),
            "jobs:\n  \"a.b\":\n    # pipe: a note\n    runs-on: ubuntu-latest\n    steps:\n      - name: \"a: b\"\n        run: |-\n          echo 1\n          echo 2\n      - x\n    timeout-minutes: 5\n    if: \"true\"\n"
        );
    }
}
