//! The DAG as SVG, laid out by `layout-rs` (a pure-Rust Sugiyama layout), so
//! `pipe graph --format svg` and the run report draw it without Graphviz.
//! Each node is a `<g class="node [critical]" data-step="ID">`, each edge a
//! `<g class="edge [critical]" data-from=".." data-to="..">`, so a page (and
//! its tests) can find steps and the critical path in the DOM.

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

/// A step as drawn.
pub struct Node<'a> {
    pub id: &'a str,
    /// Lines of text in the box.
    pub label: String,
    pub critical: bool,
    /// Extra class names (e.g. the step's status) and the fill colour.
    pub class: &'a str,
    pub fill: &'a str,
}

/// An edge from `from` to `to` (indices into the nodes).
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub critical: bool,
}

const CRITICAL: &str = "#d00000";
const FONT_SIZE: usize = 13;

/// Escapes text for an XML attribute or element.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `<svg>` element (no XML declaration): fit for inlining in HTML.
pub fn svg(title: &str, nodes: &[Node<'_>], edges: &[Edge]) -> String {
    if nodes.is_empty() {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"dag\" width=\"240\" height=\"40\" viewBox=\"0 0 240 40\" role=\"img\"><title>{}</title><text x=\"10\" y=\"25\">no steps</text></svg>",
            escape(title)
        );
    }
    let mut vg = VisualGraph::new(Orientation::LeftToRight);
    let handles: Vec<_> = nodes
        .iter()
        .map(|n| {
            let look = StyleAttr::new(
                Color::fast(if n.critical { CRITICAL } else { "#444444" }),
                if n.critical { 3 } else { 1 },
                Some(Color::fast(n.fill)),
                6,
                FONT_SIZE,
            );
            // Records grow across the rank direction; boxes are sized by text.
            let shape = ShapeKind::new_box(&n.label);
            let size = layout::std_shapes::render::get_shape_size(
                Orientation::TopToBottom,
                &shape,
                FONT_SIZE,
                false,
            );
            let class = if n.critical {
                format!("node critical {}", n.class)
            } else {
                format!("node {}", n.class)
            };
            let props = format!(
                "class=\"{}\" data-step=\"{}\"",
                escape(class.trim()),
                escape(n.id)
            );
            vg.add_node(Element::create_with_properties(
                shape,
                look,
                Orientation::TopToBottom,
                size,
                props,
            ))
        })
        .collect();
    for e in edges {
        let mut arrow = Arrow::simple_with_properties(
            "",
            format!(
                "class=\"edge{}\" data-from=\"{}\" data-to=\"{}\"",
                if e.critical { " critical" } else { "" },
                escape(nodes[e.from].id),
                escape(nodes[e.to].id)
            ),
        );
        if e.critical {
            arrow.look.line_color = Color::fast(CRITICAL);
            arrow.look.line_width = 3;
        } else {
            arrow.look.line_color = Color::fast("#666666");
            arrow.look.line_width = 1;
        }
        vg.add_edge(arrow, handles[e.from], handles[e.to]);
    }
    let mut writer = SVGWriter::new();
    vg.do_it(false, false, false, &mut writer);
    // The writer grows its canvas by a guess at each label's extent, which
    // leaves a band of empty space below; the laid-out boxes (edge routing
    // points included) bound the picture.
    let bottom = vg
        .iter_nodes()
        .map(|n| vg.pos(n).bottom(true))
        .fold(0.0_f64, f64::max);
    let raw = fit_height(&writer.finalize(), bottom + 24.0);
    tidy(&raw, title)
}

/// Sets the height of the `<svg>` element (and of its view box) to `h` when
/// that is smaller.
fn fit_height(raw: &str, h: f64) -> String {
    let re = regex::Regex::new(r#"height="([0-9.]+)" viewBox="0 0 ([0-9.]+) ([0-9.]+)""#)
        .expect("valid regex");
    re.replace(raw, |c: &regex::Captures<'_>| {
        let old: f64 = c[1].parse().unwrap_or(h);
        let h = h.min(old).ceil();
        format!("height=\"{h}\" viewBox=\"0 0 {} {h}\"", &c[2])
    })
    .into_owned()
}

/// Drops the XML declaration (invalid inside HTML), names the element, and
/// swaps the serif font for the page's.
fn tidy(raw: &str, title: &str) -> String {
    let body = raw
        .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>"#)
        .unwrap_or(raw);
    let body = body.replacen(
        "<svg ",
        &format!(
            "<svg class=\"dag\" role=\"img\" aria-label=\"{}\" ",
            escape(title)
        ),
        1,
    );
    let body = body.replace(
        "font-family: Times, serif;",
        "font-family: system-ui, sans-serif;",
    );
    // The title goes right after the opening tag, for tooltips and screen readers.
    match body.find('>') {
        Some(i) => format!(
            "{}<title>{}</title>{}\n",
            &body[..=i],
            escape(title),
            &body[i + 1..]
        ),
        None => body,
    }
}

/// A standalone SVG file.
pub fn svg_file(title: &str, nodes: &[Node<'_>], edges: &[Edge]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n{}",
        svg(title, nodes, edges)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_and_edge_is_addressable() {
        let nodes = [
            Node {
                id: "s.a",
                label: "a".into(),
                critical: true,
                class: "",
                fill: "white",
            },
            Node {
                id: "s.<b>",
                label: "<b>".into(),
                critical: false,
                class: "failed",
                fill: "#f8d0d0",
            },
        ];
        let edges = [Edge {
            from: 0,
            to: 1,
            critical: false,
        }];
        let s = svg("p", &nodes, &edges);
        assert!(s.starts_with("<svg class=\"dag\""), "{s}");
        assert!(
            s.contains(r#"class="node critical" data-step="s.a""#),
            "{s}"
        );
        assert!(
            s.contains(r#"class="node failed" data-step="s.&lt;b&gt;""#),
            "{s}"
        );
        assert!(
            s.contains(r#"class="edge" data-from="s.a" data-to="s.&lt;b&gt;""#),
            "{s}"
        );
        assert!(!s.contains("<b>"), "unescaped label: {s}");
    }
}
