//! Each example's plot, rendered by headless Chromium and checked from the DOM: every method,
//! edge, undo edge and terminal route is drawn; no two labels intersect; no label lies on a box;
//! no edge runs through a box other than its two ends.
//!
//! Chromium is Debian's (`apt-get install -y chromium chromium-driver`), driven through
//! chromedriver. Under `CI=true` a missing browser fails the test; elsewhere it is skipped with a
//! loud line on stderr. `PLOT_OUT=DIR` keeps the pages it checked, to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/browser_support/mod.rs"]
mod browser_support;

use std::path::PathBuf;

use flow_core::Flow;
use flow_core::graph::Graph;
use serde::Deserialize;

fn examples() -> Vec<(&'static str, &'static Graph)> {
    vec![
        ("content_pipeline", flow_examples::content_pipeline::ContentFlow::graph()),
        ("lead_enrichment", flow_examples::lead_enrichment::LeadFlow::graph()),
        ("invoice_processing", flow_examples::invoice_processing::InvoiceFlow::graph()),
        ("order_return", flow_examples::order_return::ReturnFlow::graph()),
        ("ticket_routing", flow_examples::ticket_routing::TicketFlow::graph()),
    ]
}

#[derive(Debug, Deserialize)]
struct Box4 {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

impl Box4 {
    /// Whether the two boxes share more than a hairline.
    fn overlaps(&self, o: &Box4) -> bool {
        const EPS: f64 = 0.5;
        self.left + EPS < o.right && o.left + EPS < self.right && self.top + EPS < o.bottom && o.top + EPS < self.bottom
    }

    fn strictly_contains(&self, (x, y): (f64, f64)) -> bool {
        const EPS: f64 = 1.0;
        x > self.left + EPS && x < self.right - EPS && y > self.top + EPS && y < self.bottom - EPS
    }
}

#[derive(Debug, Deserialize)]
struct DomNode {
    key: String,
    class: String,
    #[serde(rename = "box")]
    bbox: Box4,
}

#[derive(Debug, Deserialize)]
struct DomEdge {
    class: String,
    from: String,
    to: String,
    points: Vec<(f64, f64)>,
}

#[derive(Debug, Deserialize)]
struct DomLabel {
    text: String,
    edge: String,
    from: String,
    to: String,
    #[serde(rename = "box")]
    bbox: Box4,
}

#[derive(Debug, Deserialize)]
struct Dom {
    nodes: Vec<DomNode>,
    edges: Vec<(String, DomEdge)>,
    labels: Vec<DomLabel>,
}

/// Reads the drawing's geometry in page coordinates: node boxes, label boxes (frame and text
/// together) and points every 2 px along each edge.
const GEOMETRY: &str = r#"
const svg = document.querySelector('svg.flow-plot');
const box = el => { const r = el.getBoundingClientRect(); return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; };
const nodes = [...svg.querySelectorAll('[data-node]')].map(g => ({
  key: g.dataset.node, class: g.getAttribute('class'), box: box(g.querySelector('rect.box')) }));
const edges = [...svg.querySelectorAll('path[data-edge]')].map(p => {
  const m = p.getScreenCTM();
  const len = p.getTotalLength();
  const points = [];
  for (let l = 0; l <= len; l += 2) {
    const q = p.getPointAtLength(l);
    const s = new DOMPoint(q.x, q.y).matrixTransform(m);
    points.push([s.x, s.y]);
  }
  return [p.dataset.edge, {class: p.getAttribute('class'), from: p.dataset.from, to: p.dataset.to, points}];
});
const labels = [...svg.querySelectorAll('[data-label]')].map(g => ({
  text: g.textContent, edge: g.dataset.label, from: g.dataset.from, to: g.dataset.to, box: box(g) }));
return {nodes, edges, labels};
"#;

/// Three boxes in a column, an edge from the top one to the bottom one straight through the
/// middle one, and two labels on top of each other and of the middle box.
const BAD_PAGE: &str = r#"<!DOCTYPE html><html><body><svg xmlns="http://www.w3.org/2000/svg" class="flow-plot" width="300" height="400">
<g class="node" data-node="a"><rect class="box" x="100" y="10" width="100" height="40"/></g>
<g class="node" data-node="b"><rect class="box" x="100" y="150" width="100" height="40"/></g>
<g class="node" data-node="c"><rect class="box" x="100" y="300" width="100" height="40"/></g>
<path data-edge="0" class="edge plain" data-from="a" data-to="c" d="M150,50 L150,300" stroke="black"/>
<g data-label="0" data-from="a" data-to="c"><rect x="140" y="160" width="60" height="18"/><text x="144" y="172">one</text></g>
<g data-label="1" data-from="a" data-to="c"><rect x="150" y="165" width="60" height="18"/><text x="154" y="177">two</text></g>
</svg></body></html>"#;

fn check(name: &str, graph: &Graph, dom: &Dom) -> Vec<String> {
    let mut problems = Vec::new();
    let node = |key: &str| dom.nodes.iter().find(|n| n.key == key);

    // Everything is drawn.
    for m in graph.methods {
        match node(m.name) {
            None => problems.push(format!("{name}: method `{}` has no box", m.name)),
            Some(n) => {
                if m.is_start && !n.class.split(' ').any(|c| c == "start") {
                    problems.push(format!("{name}: start `{}` is not drawn as a start ({})", m.name, n.class));
                }
                if m.is_router && !n.class.split(' ').any(|c| c == "router") {
                    problems.push(format!("{name}: router `{}` is not drawn as a router ({})", m.name, n.class));
                }
            }
        }
    }
    let count = |class: &str| dom.edges.iter().filter(|(_, e)| e.class.split(' ').any(|c| c == class)).count();
    let undo = graph.methods.iter().filter(|m| m.compensates.is_some()).count();
    let ends: usize = graph.methods.iter().map(|m| m.ends.len()).sum();
    if count("undo") != undo {
        problems.push(format!("{name}: {} undo edges drawn, {undo} undo steps", count("undo")));
    }
    if count("end") != ends {
        problems.push(format!("{name}: {} terminal routes drawn, {ends} declared", count("end")));
    }
    let expected = graph.edges().len() + undo + ends;
    if dom.edges.len() != expected {
        problems.push(format!("{name}: {} edges drawn, {expected} expected", dom.edges.len()));
    }
    for e in graph.edges() {
        let (from, to) = (graph.method(e.from).name, graph.method(e.to).name);
        if let Some(l) = e.label {
            let variant = graph.label(l).variant;
            if !dom.labels.iter().any(|d| d.from == from && d.to == to && d.text.starts_with(variant)) {
                problems.push(format!("{name}: the route {from} -> {to} is not labelled `{variant}`"));
            }
        }
    }

    problems.extend(check_geometry(name, dom));
    problems
}

/// What a reader sees on top of what: labels on labels or boxes, edges through boxes.
fn check_geometry(name: &str, dom: &Dom) -> Vec<String> {
    let mut problems = Vec::new();
    // Labels: none on another, none on a box.
    for (i, a) in dom.labels.iter().enumerate() {
        for b in &dom.labels[i + 1..] {
            if a.bbox.overlaps(&b.bbox) {
                problems
                    .push(format!("{name}: labels `{}` and `{}` overlap: {:?} {:?}", a.text, b.text, a.bbox, b.bbox));
            }
        }
        for n in &dom.nodes {
            if a.bbox.overlaps(&n.bbox) {
                problems.push(format!(
                    "{name}: label `{}` (edge {}) lies on the box of `{}`: {:?} {:?}",
                    a.text, a.edge, n.key, a.bbox, n.bbox
                ));
            }
        }
    }

    // Edges: none through a box but its own two.
    for (id, e) in &dom.edges {
        if e.points.len() < 2 {
            problems.push(format!("{name}: edge {id} ({} -> {}) has no length", e.from, e.to));
        }
        for n in dom.nodes.iter().filter(|n| n.key != e.from && n.key != e.to) {
            if let Some(p) = e.points.iter().find(|p| n.bbox.strictly_contains(**p)) {
                problems
                    .push(format!("{name}: edge {id} ({} -> {}) passes through `{}` at {p:?}", e.from, e.to, n.key));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_plot_is_readable_in_chromium() {
    let Some(browser) = browser_support::open("every_example_plot_is_readable_in_chromium", "to check the plots").await
    else {
        return;
    };
    let client = &browser.client;

    // PLOT_OUT=DIR keeps the pages, to look at.
    let dir = tempfile::tempdir().unwrap();
    let out = std::env::var_os("PLOT_OUT").map_or_else(|| dir.path().to_owned(), PathBuf::from);

    // The checks see what is wrong: a page with a label on a box, two labels on each other and
    // an edge through a box it does not connect.
    let bad = out.join("bad.html");
    std::fs::write(&bad, BAD_PAGE).unwrap();
    client.goto(&format!("file://{}", bad.display())).await.unwrap();
    let dom: Dom = serde_json::from_value(client.execute(GEOMETRY, vec![]).await.unwrap()).unwrap();
    let found = check_geometry("bad", &dom);
    for expected in [
        "labels `one` and `two` overlap",
        "label `one` (edge 0) lies on the box of `b`",
        "edge 0 (a -> c) passes through `b`",
    ] {
        assert!(found.iter().any(|p| p.contains(expected)), "the check missed `{expected}`: {found:#?}");
    }

    let mut problems = Vec::new();
    for (name, graph) in examples() {
        let page = out.join(format!("{name}.html"));
        flow_core::plot::write(graph, &page).unwrap();
        client.goto(&format!("file://{}", page.display())).await.unwrap();
        let value = client.execute(GEOMETRY, vec![]).await.unwrap();
        let dom: Dom = serde_json::from_value(value).unwrap();
        assert!(!dom.nodes.is_empty(), "{name}: the page has no plot");
        problems.extend(check(name, graph, &dom));
    }
    client.clone().close().await.unwrap();
    assert!(problems.is_empty(), "the plots do not tell the truth:\n{}", problems.join("\n"));
}
