//! Drawing a flow: a self-contained HTML page with an inline SVG (no scripts, no network), and
//! Mermaid text ([`Graph::to_mermaid`]).
//!
//! ```
//! use flow_core::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct S;
//! struct Pipeline;
//!
//! #[flow(state = S)]
//! impl Pipeline {
//!     #[start]
//!     async fn fetch(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
//!     #[listen(fetch)]
//!     async fn store(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
//! }
//!
//! let html = flow_core::plot::html(Pipeline::graph());
//! assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
//! let path = std::env::temp_dir().join("pipeline-plot-doctest.html");
//! flow_core::plot::write(Pipeline::graph(), &path)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;

use crate::graph::{Graph, MethodId};

const NODE_W: usize = 170;
const NODE_H: usize = 44;
const GAP_X: usize = 40;
const GAP_Y: usize = 70;
const MARGIN: usize = 30;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Layer of each method: its shortest distance from a start (unreachable ones go last).
fn layers(graph: &Graph) -> Vec<usize> {
    let n = graph.methods.len();
    let edges = graph.edges();
    let mut layer = vec![usize::MAX; n];
    let mut queue: VecDeque<usize> = VecDeque::new();
    for s in graph.starts() {
        layer[s.index()] = 0;
        queue.push_back(s.index());
    }
    while let Some(m) = queue.pop_front() {
        for e in edges.iter().filter(|e| e.from.index() == m) {
            if layer[e.to.index()] == usize::MAX {
                layer[e.to.index()] = layer[m] + 1;
                queue.push_back(e.to.index());
            }
        }
    }
    let deepest = layer.iter().copied().filter(|l| *l != usize::MAX).max().unwrap_or(0);
    layer.iter().map(|l| if *l == usize::MAX { deepest + 1 } else { *l }).collect()
}

/// The graph as a standalone SVG document.
pub fn svg(graph: &Graph) -> String {
    let layer = layers(graph);
    let depth = layer.iter().copied().max().unwrap_or(0) + 1;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (m, l) in layer.iter().enumerate() {
        rows[*l].push(m);
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let width = 2 * MARGIN + widest * NODE_W + (widest - 1) * GAP_X;
    let height = 2 * MARGIN + depth * NODE_H + depth.saturating_sub(1) * GAP_Y;
    let mut pos = vec![(0usize, 0usize); graph.methods.len()];
    for (r, row) in rows.iter().enumerate() {
        let row_w = row.len() * NODE_W + row.len().saturating_sub(1) * GAP_X;
        let x0 = (width - row_w) / 2;
        for (i, m) in row.iter().enumerate() {
            pos[*m] = (x0 + i * (NODE_W + GAP_X), MARGIN + r * (NODE_H + GAP_Y));
        }
    }

    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"##
    );
    out.push_str(
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>"##,
    );
    for e in graph.edges() {
        let (fx, fy) = pos[e.from.index()];
        let (tx, ty) = pos[e.to.index()];
        let (x1, y1) = (fx + NODE_W / 2, fy + NODE_H);
        let (x2, y2) = (tx + NODE_W / 2, ty);
        let dash = if e.and_join { r#" stroke-dasharray="6 3""# } else { "" };
        let path = if y2 > y1 {
            let my = (y1 + y2) / 2;
            format!("M{x1},{y1} C{x1},{my} {x2},{my} {x2},{y2}")
        } else {
            // Back edge (a loop): swing out to the right.
            let bx = fx.max(tx) + NODE_W + GAP_X / 2;
            format!(
                "M{},{} C{bx},{} {bx},{} {},{}",
                fx + NODE_W,
                fy + NODE_H / 2,
                fy,
                ty + NODE_H,
                tx + NODE_W,
                ty + NODE_H / 2
            )
        };
        let _ = write!(
            out,
            r##"<path d="{path}" fill="none" stroke="#555" stroke-width="1.5"{dash} marker-end="url(#arrow)"/>"##
        );
        if let Some(l) = e.label {
            let (lx, ly) = ((x1 + x2) / 2, (y1 + y2) / 2);
            let _ = write!(
                out,
                r##"<text x="{lx}" y="{ly}" text-anchor="middle" fill="#7a3b00" font-size="11" dy="-3">{}</text>"##,
                escape(graph.label(l).variant)
            );
        }
    }
    for (i, m) in graph.methods.iter().enumerate() {
        let (x, y) = pos[i];
        let (fill, rx) = if m.is_router {
            ("#fff4d6", 4)
        } else if m.is_start {
            ("#dff3e4", 22)
        } else if m.compensates.is_some() {
            ("#f6e1e1", 4)
        } else {
            ("#e3ecfa", 8)
        };
        let mut title = format!("{} -> {}", m.name, m.output_type);
        if let Some(t) = graph.trigger_text(MethodId(i as u16)) {
            let _ = write!(title, " (on {t})");
        }
        let _ = write!(
            out,
            r##"<g><title>{}</title><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{rx}" fill="{fill}" stroke="#333"/><text x="{}" y="{}" text-anchor="middle" dominant-baseline="middle">{}</text></g>"##,
            escape(&title),
            x + NODE_W / 2,
            y + NODE_H / 2,
            escape(m.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// The graph as a self-contained HTML page: the SVG, a legend, and the Mermaid text.
pub fn html(graph: &Graph) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{name}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}pre{{background:#f5f5f5;padding:12px}}\
         .legend span{{display:inline-block;padding:2px 8px;margin-right:8px;border:1px solid #333}}</style></head>\
         <body><h1>{name}</h1><p>State: <code>{state}</code></p>\
         <p class=\"legend\"><span style=\"background:#dff3e4\">start</span><span style=\"background:#e3ecfa\">listener</span>\
         <span style=\"background:#fff4d6\">router</span><span style=\"background:#f6e1e1\">undo step</span> dashed edge: and-join</p>\
         {svg}<h2>Mermaid</h2><pre>{mermaid}</pre></body></html>\n",
        name = escape(graph.name),
        state = escape(graph.state_type),
        svg = svg(graph),
        mermaid = escape(&graph.to_mermaid()),
    )
}

/// Writes [`html`] to `path`.
pub fn write(graph: &Graph, path: impl AsRef<Path>) -> std::io::Result<()> {
    std::fs::write(path, html(graph))
}
