//! robots.txt as RFC 9309 reads it: groups by user agent (the most specific
//! matching group, else `*`), `Allow`/`Disallow` with `*` and `$`, the longest
//! match winning and `Allow` winning a tie.

/// A group of robots.txt: its user agents and its `(allow, pattern)` rules.
type Group = (Vec<String>, Vec<(bool, String)>);

/// The rules that apply to one user agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Robots {
    /// `(allow, pattern)`.
    rules: Vec<(bool, String)>,
}

impl Robots {
    /// Everything allowed: no robots.txt (a 4xx answer).
    pub fn allow_all() -> Robots {
        Robots::default()
    }

    /// Everything disallowed: robots.txt could not be fetched (5xx, timeout).
    pub fn disallow_all() -> Robots {
        Robots {
            rules: vec![(false, "/".into())],
        }
    }

    /// The rules of `text` for `agent` (a product token such as `audit-worker`).
    pub fn parse(text: &str, agent: &str) -> Robots {
        let agent = agent.to_ascii_lowercase();
        // (agents of the group, rules of the group)
        let mut groups: Vec<Group> = Vec::new();
        let mut in_agents = false;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            match key.as_str() {
                "user-agent" => {
                    if !in_agents {
                        groups.push((Vec::new(), Vec::new()));
                    }
                    in_agents = true;
                    if let Some(g) = groups.last_mut() {
                        g.0.push(value.to_ascii_lowercase());
                    }
                }
                "allow" | "disallow" => {
                    in_agents = false;
                    if let Some(g) = groups.last_mut() {
                        // An empty Disallow allows everything: no rule.
                        if !value.is_empty() {
                            g.1.push((key == "allow", value.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        let specific: Vec<(bool, String)> = groups
            .iter()
            .filter(|(agents, _)| {
                agents
                    .iter()
                    .any(|a| a != "*" && agent.starts_with(a.as_str()))
            })
            .flat_map(|(_, r)| r.clone())
            .collect();
        let rules = if groups.iter().any(|(agents, _)| {
            agents
                .iter()
                .any(|a| a != "*" && agent.starts_with(a.as_str()))
        }) {
            specific
        } else {
            groups
                .iter()
                .filter(|(agents, _)| agents.iter().any(|a| a == "*"))
                .flat_map(|(_, r)| r.clone())
                .collect()
        };
        Robots { rules }
    }

    /// Whether `path` (with its query) may be fetched.
    pub fn allowed(&self, path: &str) -> bool {
        if path == "/robots.txt" {
            return true;
        }
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if matches(pattern, path) {
                let len = pattern.len();
                best = match best {
                    Some((l, a)) if l > len || (l == len && a) => Some((l, a)),
                    _ => Some((len, *allow)),
                };
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }

    /// True when nothing at all may be fetched.
    pub fn blocks_everything(&self) -> bool {
        !self.allowed("/") && self.rules.iter().all(|(allow, p)| !*allow || p.is_empty())
    }
}

/// A robots.txt path pattern: a prefix match with `*` for any run of
/// characters and a trailing `$` anchoring the end.
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some(first) = parts.first() else {
        return true;
    };
    if !path.starts_with(first) {
        return false;
    }
    let mut pos = first.len();
    for (i, part) in parts.iter().enumerate().skip(1) {
        let last = i == parts.len() - 1;
        if last && anchored {
            return path.len() >= pos + part.len() && path.ends_with(part);
        }
        match path[pos..].find(part) {
            Some(at) => pos += at + part.len(),
            None => return false,
        }
    }
    !anchored || pos == path.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_block() {
        let r = Robots::parse("User-agent: *\nDisallow: /\n", "audit-worker");
        assert!(!r.allowed("/"));
        assert!(!r.allowed("/page"));
        assert!(r.blocks_everything());
    }

    #[test]
    fn partial_block_with_longest_match() {
        let r = Robots::parse(
            "# site rules\nUser-agent: *\nDisallow: /private/\nAllow: /private/open\nDisallow: /*.pdf$\n",
            "audit-worker",
        );
        assert!(r.allowed("/"));
        assert!(!r.allowed("/private/x"));
        assert!(r.allowed("/private/open/y"));
        assert!(!r.allowed("/docs/a.pdf"));
        assert!(r.allowed("/docs/a.pdf?x=1"));
        assert!(!r.blocks_everything());
    }

    #[test]
    fn the_specific_group_wins() {
        let text = "User-agent: *\nDisallow: /\n\nUser-agent: audit-worker\nUser-agent: other\nDisallow: /admin\n";
        let r = Robots::parse(text, "audit-worker/1.0");
        assert!(r.allowed("/page"));
        assert!(!r.allowed("/admin/x"));
        let r = Robots::parse(text, "somebot");
        assert!(!r.allowed("/page"));
    }

    #[test]
    fn missing_and_empty() {
        assert!(Robots::allow_all().allowed("/anything"));
        assert!(Robots::parse("User-agent: *\nDisallow:\n", "a").allowed("/x"));
        assert!(Robots::parse("garbage\n\n", "a").allowed("/x"));
        assert!(!Robots::disallow_all().allowed("/x"));
        assert!(Robots::disallow_all().allowed("/robots.txt"));
    }

    #[test]
    fn wildcards() {
        assert!(matches("/a*c", "/abc"));
        assert!(matches("/a*c", "/abcdef"));
        assert!(!matches("/a*c$", "/abcdef"));
        assert!(matches("/a*c$", "/abc"));
        assert!(matches("/$", "/"));
        assert!(!matches("/$", "/x"));
        assert!(matches("*", "/x"));
    }
}
