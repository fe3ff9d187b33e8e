//! Drawing a flow: a self-contained HTML page with an inline SVG (no scripts, no network), and
//! Mermaid text ([`Graph::to_mermaid`]). The layout is layered (Sugiyama): see [`svg`] for what
//! the drawing shows.
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

use std::path::Path;

use crate::graph::{Graph, GraphDoc};

mod layout;
mod model;
mod render;

use render::escape;

/// The graph as a standalone SVG document, laid out in layers from the starts down.
///
/// Boxes are methods (a start is a green-rimmed pill, a router is amber, a start that routes is
/// both, an undo step is red and dashed); small grey `end` pills are terminal routes. Edges are
/// grey for a completion, amber and labelled with the route for a router's route, dashed for an
/// `and` join, red and dashed from an undo step to what it undoes. Edges that close a loop run
/// upward. Elements carry `data-node`, `data-edge`, `data-label`, `data-from` and `data-to`
/// attributes, so scripts (and the tests) can find them.
///
/// ```
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S;
/// #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// enum Check { Good, Again }
/// struct Loop;
///
/// #[flow(state = S)]
/// impl Loop {
///     #[start]
///     async fn draft(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
///     #[router(or(draft, redo))]
///     async fn check(&self, _cx: &Ctx<S>) -> Result<Check> { Ok(Check::Good) }
///     #[listen(Check::Again)]
///     async fn redo(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
///     #[listen(Check::Good)]
///     async fn publish(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
/// }
///
/// let svg = flow_core::plot::svg(Loop::graph());
/// assert!(svg.contains(r#"data-node="check""#));
/// // redo -> check closes the loop: it is drawn upward, around the boxes.
/// assert!(svg.contains(r#"class="edge plain loop" data-edge="1" data-from="redo" data-to="check""#));
/// assert!(svg.contains(">Again</text>"));
/// ```
pub fn svg(graph: &Graph) -> String {
    svg_doc(&graph.doc())
}

/// [`svg`] of a graph read back as data, for example a run's graph from its store
/// ([`Store::run_graph`](crate::store::Store::run_graph)).
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// # struct S;
/// struct One;
/// #[flow(state = S)]
/// impl One {
///     #[start]
///     async fn go(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
/// }
/// let doc = One::graph().doc();
/// assert_eq!(flow_core::plot::svg_doc(&doc), flow_core::plot::svg(One::graph()));
/// ```
pub fn svg_doc(graph: &GraphDoc) -> String {
    let model = model::Model::new(graph);
    let sizes: Vec<(f64, f64)> = model.nodes.iter().map(|n| (n.w, n.h)).collect();
    let edges: Vec<layout::InEdge> = model
        .edges
        .iter()
        .map(|e| layout::InEdge {
            from: e.from,
            to: e.to,
            label_w: e.label.as_deref().map(|t| (model::text_width(t, model::LABEL_FONT) + 10.0).ceil()),
            upward: e.upward,
        })
        .collect();
    let laid = layout::layout(&sizes, &edges);
    render::svg(&graph.name, &model, &laid)
}

/// The graph as a self-contained HTML page: the SVG, a legend, and the Mermaid text.
pub fn html(graph: &Graph) -> String {
    html_doc(&graph.doc())
}

/// [`html`] of a graph read back as data.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// # struct S;
/// struct One;
/// #[flow(state = S)]
/// impl One {
///     #[start]
///     async fn go(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
/// }
/// assert_eq!(flow_core::plot::html_doc(&One::graph().doc()), flow_core::plot::html(One::graph()));
/// ```
pub fn html_doc(graph: &GraphDoc) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{name}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}pre{{background:#f5f5f5;padding:12px}}\
         .legend span{{display:inline-block;padding:2px 8px;margin-right:8px;border:1px solid #333}}</style></head>\
         <body><h1>{name}</h1><p>State: <code>{state}</code></p>\
         <p class=\"legend\"><span style=\"background:#dff3e4;border:2px solid #2e7d32;border-radius:10px\">start</span><span style=\"background:#e3ecfa\">listener</span>\
         <span style=\"background:#fff4d6\">router</span><span style=\"background:#f6e1e1\">undo step</span><span style=\"background:#fff4d6;border:2px solid #2e7d32;border-radius:10px\">start that routes</span>\
         <span style=\"background:#eee;border-radius:10px\">end (terminal route)</span> \
         dashed grey edge: and-join; dashed red edge: undo</p>\
         {svg}<h2>Mermaid</h2><pre>{mermaid}</pre></body></html>\n",
        name = escape(&graph.name),
        state = escape(&graph.state_type),
        svg = svg_doc(graph),
        mermaid = escape(&graph.to_mermaid()),
    )
}

/// Writes [`html`] to `path`.
pub fn write(graph: &Graph, path: impl AsRef<Path>) -> std::io::Result<()> {
    std::fs::write(path, html(graph))
}
