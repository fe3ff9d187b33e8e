//! SVG text for a laid-out model. Every element the dashboard or a test looks for carries a data
//! attribute: `data-node` (the method's name, or `end:ROUTER:N`), `data-edge` (the edge's index),
//! `data-label` (the index of the edge it names), and `data-from` / `data-to` on edges and labels.

use std::fmt::Write as _;

use super::layout::{Layout, Route};
use super::model::{EdgeKind, KIND_FONT, LABEL_FONT, Model, NAME_FONT, NodeShape};

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn colour(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Plain | EdgeKind::And => "#555",
        EdgeKind::Route => "#9a5b00",
        EdgeKind::Undo => "#c62828",
        EdgeKind::End => "#888",
    }
}

fn dash(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::And => r#" stroke-dasharray="6 3""#,
        EdgeKind::Undo => r#" stroke-dasharray="4 3""#,
        _ => "",
    }
}

fn path_data(route: &Route) -> String {
    let mut d = String::new();
    match route {
        Route::Points(pts) => {
            for (i, &(x, y)) in pts.iter().enumerate() {
                if i == 0 {
                    let _ = write!(d, "M{x:.1},{y:.1}");
                    continue;
                }
                let (px, py) = pts[i - 1];
                if (px - x).abs() < 0.05 {
                    let _ = write!(d, " L{x:.1},{y:.1}");
                } else {
                    // Vertical tangents at both ends keep the curve inside the gap between layers.
                    let my = (py + y) / 2.0;
                    let _ = write!(d, " C{px:.1},{my:.1} {x:.1},{my:.1} {x:.1},{y:.1}");
                }
            }
        }
        Route::SelfLoop { x, y, reach } => {
            let r = x + reach;
            let _ = write!(
                d,
                "M{x:.1},{:.1} C{r:.1},{:.1} {r:.1},{:.1} {x:.1},{:.1}",
                y - 8.0,
                y - 26.0,
                y + 26.0,
                y + 8.0
            );
        }
    }
    d
}

pub(crate) fn svg(name: &str, model: &Model, layout: &Layout) -> String {
    let (width, height) = (layout.width, layout.height);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="flow-plot" data-flow="{}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{NAME_FONT}">"##,
        escape(name)
    );
    out.push_str("<defs>");
    for (id, fill) in [("arrow", "#555"), ("arrow-route", "#9a5b00"), ("arrow-undo", "#c62828"), ("arrow-end", "#888")]
    {
        let _ = write!(
            out,
            r##"<marker id="flow-{id}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{fill}"/></marker>"##
        );
    }
    out.push_str("</defs>");

    let key = |i: usize| escape(&model.nodes[i].key);
    out.push_str(r#"<g class="edges">"#);
    for (i, (e, l)) in model.edges.iter().zip(&layout.edges).enumerate() {
        let marker = match e.kind {
            EdgeKind::Plain | EdgeKind::And => "arrow",
            EdgeKind::Route => "arrow-route",
            EdgeKind::Undo => "arrow-undo",
            EdgeKind::End => "arrow-end",
        };
        let loop_class = if l.upward && e.kind != EdgeKind::Undo { " loop" } else { "" };
        let title = match &e.label {
            Some(t) => format!("{} -> {} ({t})", model.nodes[e.from].key, model.nodes[e.to].key),
            None => format!("{} -> {}", model.nodes[e.from].key, model.nodes[e.to].key),
        };
        let _ = write!(
            out,
            r##"<path class="edge {}{loop_class}" data-edge="{i}" data-from="{}" data-to="{}" d="{}" fill="none" stroke="{}" stroke-width="1.5"{} marker-end="url(#flow-{marker})"><title>{}</title></path>"##,
            e.kind.class(),
            key(e.from),
            key(e.to),
            path_data(&l.route),
            colour(e.kind),
            dash(e.kind),
            escape(&title),
        );
    }
    out.push_str("</g>");

    out.push_str(r#"<g class="labels">"#);
    for (i, (e, l)) in model.edges.iter().zip(&layout.edges).enumerate() {
        let (Some(text), Some(r)) = (&e.label, l.label) else { continue };
        let _ = write!(
            out,
            r##"<g class="label {}" data-label="{i}" data-from="{}" data-to="{}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3" fill="#fff" fill-opacity="0.9" stroke="{}" stroke-width="0.6"/><text x="{:.1}" y="{:.1}" dominant-baseline="central" font-size="{LABEL_FONT}" fill="{}">{}</text></g>"##,
            e.kind.class(),
            key(e.from),
            key(e.to),
            r.x,
            r.y,
            r.w,
            r.h,
            colour(e.kind),
            r.x + 4.0,
            r.y + r.h / 2.0,
            colour(e.kind),
            escape(text),
        );
    }
    out.push_str("</g>");

    out.push_str(r#"<g class="nodes">"#);
    for (i, (n, r)) in model.nodes.iter().zip(&layout.nodes).enumerate() {
        let has = |c: &str| n.classes.contains(&c);
        let cx = r.x + r.w / 2.0;
        let cy = r.y + r.h / 2.0;
        let (fill, stroke, stroke_w, rx, extra) = match n.shape {
            NodeShape::End => ("#eeeeee", "#888", 1.0, r.h / 2.0, ""),
            NodeShape::Method => {
                let fill = if has("router") {
                    "#fff4d6"
                } else if has("undo") {
                    "#f6e1e1"
                } else if has("start") {
                    "#dff3e4"
                } else {
                    "#e3ecfa"
                };
                // A start is a pill with a green rim whatever else it is, so a start that routes
                // shows both: the router's colour inside the start's shape.
                let (stroke, stroke_w, rx) = if has("start") {
                    ("#2e7d32", 2.5, r.h / 2.0)
                } else if has("undo") {
                    ("#c62828", 1.2, 4.0)
                } else if has("router") {
                    ("#9a5b00", 1.2, 4.0)
                } else {
                    ("#333", 1.0, 8.0)
                };
                let extra = if has("undo") { r#" stroke-dasharray="4 3""# } else { "" };
                (fill, stroke, stroke_w, rx, extra)
            }
        };
        let _ = write!(
            out,
            r##"<g class="node {}" data-node="{}"><title>{}</title><rect class="box" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="{rx:.1}" fill="{fill}" stroke="{stroke}" stroke-width="{stroke_w}"{extra}/>"##,
            n.classes.join(" "),
            key(i),
            escape(&n.title),
            r.x,
            r.y,
            r.w,
            r.h,
        );
        match n.shape {
            NodeShape::End => {
                let _ = write!(
                    out,
                    r##"<text x="{cx:.1}" y="{cy:.1}" text-anchor="middle" dominant-baseline="central" font-size="{KIND_FONT}" fill="#555">{}</text>"##,
                    escape(&n.text)
                );
            }
            NodeShape::Method => {
                let _ = write!(
                    out,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" dominant-baseline="central">{}</text><text class="kind" x="{cx:.1}" y="{:.1}" text-anchor="middle" dominant-baseline="central" font-size="{KIND_FONT}" fill="#555">{}</text>"##,
                    cy - 6.0,
                    escape(&n.text),
                    cy + 10.0,
                    escape(&n.kind)
                );
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</g></svg>");
    out
}
