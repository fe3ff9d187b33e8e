//! What the drawing shows, before any geometry: one box per method, one end marker per
//! terminal route, and every edge with its kind and label.

use crate::graph::GraphDoc;

/// Font sizes the renderer uses; the layout sizes boxes from them.
pub(crate) const NAME_FONT: f64 = 13.0;
pub(crate) const KIND_FONT: f64 = 10.0;
pub(crate) const LABEL_FONT: f64 = 11.0;

pub(crate) const NODE_H: f64 = 44.0;
pub(crate) const END_W: f64 = 40.0;
pub(crate) const END_H: f64 = 22.0;
pub(crate) const LABEL_H: f64 = 18.0;

/// A width that holds `text` at `font` px in any common sans-serif face: generous on purpose,
/// since the layout cannot measure and an overflowing label would overlap its neighbour.
pub(crate) fn text_width(text: &str, font: f64) -> f64 {
    text.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | 't' | 'f' | 'r' | '.' | ',' | ':' | '\'' | '|' | ' ' => 0.42,
            'm' | 'w' | 'M' | 'W' => 0.95,
            c if c.is_uppercase() => 0.74,
            _ => 0.62,
        })
        .sum::<f64>()
        * font
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeShape {
    Method,
    End,
}

#[derive(Debug)]
pub(crate) struct Node {
    /// Stable name for `data-node`: the method's name, or `end:ROUTER:INDEX` for an end marker.
    pub(crate) key: String,
    /// The text in the box.
    pub(crate) text: String,
    /// What the method is (`start · router`), shown under its name.
    pub(crate) kind: String,
    /// Hover text.
    pub(crate) title: String,
    /// CSS classes besides `node`: `start`, `router`, `listener`, `undo`, `end`.
    pub(crate) classes: Vec<&'static str>,
    pub(crate) shape: NodeShape,
    pub(crate) w: f64,
    pub(crate) h: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    /// A method's completion triggers the target.
    Plain,
    /// A router's route triggers the target.
    Route,
    /// Part of an `and(...)` join.
    And,
    /// The source is the undo step (`#[compensate]`) of the target.
    Undo,
    /// A terminal route: the branch ends.
    End,
}

impl EdgeKind {
    pub(crate) fn class(self) -> &'static str {
        match self {
            EdgeKind::Plain => "plain",
            EdgeKind::Route => "route",
            EdgeKind::And => "and",
            EdgeKind::Undo => "undo",
            EdgeKind::End => "end",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Edge {
    /// Where the arrow starts.
    pub(crate) from: usize,
    /// Where the arrow points.
    pub(crate) to: usize,
    pub(crate) kind: EdgeKind,
    pub(crate) label: Option<String>,
    /// Whether the layout should treat the edge as running from `to` down to `from`: an undo
    /// step hangs below the method it undoes while its arrow points back up at it.
    pub(crate) upward: bool,
}

#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
}

impl Model {
    pub(crate) fn new(graph: &GraphDoc) -> Model {
        let mut nodes = Vec::new();
        for m in &graph.methods {
            let mut classes = Vec::new();
            if m.start {
                classes.push("start");
            }
            if m.router {
                classes.push("router");
            }
            if m.compensates.is_some() {
                classes.push("undo");
            }
            if classes.is_empty() {
                classes.push("listener");
            }
            let kind = m.kind();
            let mut title = format!("{} -> {}", m.name, m.output_type);
            if let Some(t) = &m.trigger {
                title.push_str(&format!(" (on {t})"));
            }
            let w = (text_width(&m.name, NAME_FONT).max(text_width(&kind, KIND_FONT)) + 28.0).max(110.0);
            nodes.push(Node {
                key: m.name.clone(),
                text: m.name.clone(),
                kind,
                title,
                classes,
                shape: NodeShape::Method,
                w: w.ceil(),
                h: NODE_H,
            });
        }
        let mut edges: Vec<Edge> = graph
            .edges()
            .into_iter()
            .map(|e| {
                let kind = match (&e.route, e.and_join) {
                    (Some(_), _) => EdgeKind::Route,
                    (None, true) => EdgeKind::And,
                    (None, false) => EdgeKind::Plain,
                };
                let label = match (e.route, e.and_join) {
                    (Some(r), true) => Some(format!("{} (and)", r.variant)),
                    (Some(r), false) => Some(r.variant),
                    (None, true) => Some("and".to_owned()),
                    (None, false) => None,
                };
                Edge { from: e.from, to: e.to, kind, label, upward: false }
            })
            .collect();
        for (i, m) in graph.methods.iter().enumerate() {
            if let Some(c) = m.compensates.as_deref().and_then(|c| graph.method_index(c)) {
                edges.push(Edge { from: i, to: c, kind: EdgeKind::Undo, label: Some("undo".to_owned()), upward: true });
            }
            for (k, end) in m.ends.iter().enumerate() {
                let node = nodes.len();
                nodes.push(Node {
                    key: format!("end:{}:{k}", m.name),
                    text: "end".to_owned(),
                    kind: String::new(),
                    title: format!("{} ends the branch on {}", m.name, end.text()),
                    classes: vec!["end"],
                    shape: NodeShape::End,
                    w: END_W,
                    h: END_H,
                });
                edges.push(Edge {
                    from: i,
                    to: node,
                    kind: EdgeKind::End,
                    label: Some(end.text().to_owned()),
                    upward: false,
                });
            }
        }
        Model { nodes, edges }
    }
}
