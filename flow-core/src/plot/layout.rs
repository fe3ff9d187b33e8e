//! A layered (Sugiyama) layout, top to bottom.
//!
//! 1. Cycle removal: a depth-first search reverses the edges that close a loop, so the rest of
//!    the pipeline sees a DAG (the drawing turns them back).
//! 2. Layering: longest path from the sources, where an edge with a label spans two layers so
//!    its label gets a slot of its own in the layer between; sources are then pulled down next
//!    to what they feed.
//! 3. Long edges are cut into chains of dummy items, one per layer they cross, so that they are
//!    routed around boxes rather than through them; a label is a (wide) dummy.
//! 4. Crossing reduction: barycenter sweeps down and up plus adjacent transpositions, keeping
//!    the best order seen.
//! 5. Coordinates: every layer is placed as close as possible (least squares) to the average
//!    position of its neighbours, under the order and the minimum separations, alternating
//!    downward and upward passes.
//!
//! Everything that sits in a layer (box, label, edge passing through) owns a horizontal slot
//! that no other item overlaps, and edges only run diagonally in the gaps between layers, where
//! there is nothing to cross: that is why no edge goes through a box and no label overlaps
//! another or a box, whatever the graph.

use super::model::LABEL_H;

pub(crate) const MARGIN: f64 = 24.0;
const GAP_Y: f64 = 38.0;
/// Horizontal space between a box and anything next to it.
const GAP_NODE: f64 = 26.0;
/// Horizontal space between two edges (or an edge and a label) passing through a layer.
const GAP_EDGE: f64 = 10.0;
/// Half the width of the slot of an edge passing through a layer.
const DUMMY_HALF: f64 = 3.0;
/// A label sits this far right of the edge it names.
pub(crate) const LABEL_OFFSET: f64 = 7.0;
/// How far the `k`-th self loop of a box reaches right of it (its curve's control points; the
/// curve itself stays within three quarters of that).
pub(crate) fn loop_reach(k: usize) -> f64 {
    34.0 + 16.0 * k as f64
}

/// One edge to lay out, in the direction it is drawn.
#[derive(Debug, Clone)]
pub(crate) struct InEdge {
    pub(crate) from: usize,
    pub(crate) to: usize,
    /// Width of its label, when it has one.
    pub(crate) label_w: Option<f64>,
    /// Lay it out as if it ran from `to` to `from` (the arrow still points at `to`).
    pub(crate) upward: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rect {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) w: f64,
    pub(crate) h: f64,
}

/// Where an edge runs, in drawing order (from its source to its target).
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// Points joined by vertical lines (same x) or by S-curves with vertical tangents.
    Points(Vec<(f64, f64)>),
    /// An edge from a box to itself, drawn as a loop on its right side.
    SelfLoop { x: f64, y: f64, reach: f64 },
}

#[derive(Debug, Clone)]
pub(crate) struct OutEdge {
    pub(crate) route: Route,
    pub(crate) label: Option<Rect>,
    /// The edge runs against the layout's direction (it closes a loop, or points up at what an
    /// undo step undoes).
    pub(crate) upward: bool,
}

#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) nodes: Vec<Rect>,
    pub(crate) edges: Vec<OutEdge>,
    pub(crate) width: f64,
    pub(crate) height: f64,
}

#[derive(Debug, Clone)]
struct Item {
    node: Option<usize>,
    layer: usize,
    /// Extent left and right of the item's x (its edge line, for dummies and labels).
    left: f64,
    right: f64,
    height: f64,
}

/// Lays out boxes of the given sizes and the edges between them.
pub(crate) fn layout(sizes: &[(f64, f64)], edges: &[InEdge]) -> Layout {
    let n = sizes.len();
    // Orientation in the layered DAG: (tail, head), and whether it is drawn head to tail.
    let mut oriented: Vec<(usize, usize, bool)> =
        edges.iter().map(|e| if e.upward { (e.to, e.from, true) } else { (e.from, e.to, false) }).collect();
    for (i, rev) in back_edges(n, &oriented).into_iter().enumerate() {
        if rev {
            let (a, b, up) = oriented[i];
            oriented[i] = (b, a, !up);
        }
    }
    let minlen: Vec<usize> = edges.iter().map(|e| if e.label_w.is_some() { 2 } else { 1 }).collect();
    let layer = layers(n, &oriented, &minlen);

    // Items: one per box, then the dummies of each edge.
    let mut items: Vec<Item> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| Item { node: Some(i), layer: layer[i], left: w / 2.0, right: w / 2.0, height: h })
        .collect();
    // Self loops of a box nest on its right, each reaching further; their labels stand in a
    // row beyond the outermost one.
    let mut loops = vec![(0usize, 0.0f64); n];
    let mut loop_at: Vec<(usize, f64)> = vec![(0, 0.0); edges.len()];
    for (i, e) in edges.iter().enumerate() {
        if e.from == e.to {
            let (count, labels) = &mut loops[e.from];
            loop_at[i] = (*count, *labels);
            *count += 1;
            *labels += e.label_w.map_or(0.0, |w| w + LABEL_OFFSET);
        }
    }
    for (item, &(count, labels)) in items.iter_mut().zip(&loops) {
        if count > 0 {
            item.right += loop_reach(count - 1) + labels;
        }
    }
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    let mut label_item: Vec<Option<usize>> = vec![None; edges.len()];
    for (i, &(a, b, _)) in oriented.iter().enumerate() {
        if a == b {
            chains.push(Vec::new());
            continue;
        }
        let mut chain = vec![a];
        for l in layer[a] + 1..layer[b] {
            let id = items.len();
            let mut item = Item { node: None, layer: l, left: DUMMY_HALF, right: DUMMY_HALF, height: 0.0 };
            if let Some(w) = edges[i].label_w
                && label_item[i].is_none()
            {
                item.right = LABEL_OFFSET + w + 2.0;
                item.height = LABEL_H;
                label_item[i] = Some(id);
            }
            items.push(item);
            chain.push(id);
        }
        chain.push(b);
        chains.push(chain);
    }

    let depth = items.iter().map(|it| it.layer).max().map_or(0, |d| d + 1);
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for chain in &chains {
        for w in chain.windows(2) {
            down[w[0]].push(w[1]);
            up[w[1]].push(w[0]);
        }
    }
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, it) in items.iter().enumerate() {
        layers[it.layer].push(i);
    }
    let order = Order { up: &up, down: &down };
    let layers = order.reduce(layers, items.len());
    let x = coordinates(&items, &layers, &up, &down);

    // Vertical bands.
    let mut band_top = vec![MARGIN; depth];
    let mut band_h = vec![0.0f64; depth];
    for (l, row) in layers.iter().enumerate() {
        band_h[l] = row.iter().map(|&i| items[i].height).fold(0.0, f64::max);
    }
    for l in 1..depth {
        band_top[l] = band_top[l - 1] + band_h[l - 1] + GAP_Y;
    }
    let nodes: Vec<Rect> = (0..n)
        .map(|i| {
            let (w, h) = sizes[i];
            let l = items[i].layer;
            Rect { x: x[i] - w / 2.0, y: band_top[l] + (band_h[l] - h) / 2.0, w, h }
        })
        .collect();

    // Ports: the edges leaving a box's bottom (entering its top) are spread along that side in
    // the order of where they go, so parallel edges start and end apart.
    let mut bottom: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
    let mut top: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
    for (e, chain) in chains.iter().enumerate() {
        if chain.len() < 2 {
            continue;
        }
        bottom[chain[0]].push((x[chain[1]], e));
        top[chain[chain.len() - 1]].push((x[chain[chain.len() - 2]], e));
    }
    let mut port_out = vec![0.0; edges.len()];
    let mut port_in = vec![0.0; edges.len()];
    for (side, ports) in [(&mut bottom, &mut port_out), (&mut top, &mut port_in)] {
        for (node, list) in side.iter_mut().enumerate() {
            list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let r = nodes[node];
            let span = (r.w - 24.0).max(0.0);
            let k = list.len() as f64;
            for (j, &(_, e)) in list.iter().enumerate() {
                ports[e] = r.x + 12.0 + span * (j as f64 + 1.0) / (k + 1.0);
            }
        }
    }

    let mut out = Vec::with_capacity(edges.len());
    for (e, chain) in chains.iter().enumerate() {
        let (_, _, drawn_up) = oriented[e];
        if chain.is_empty() {
            let r = nodes[edges[e].from];
            let (k, before) = loop_at[e];
            let outermost = loop_reach(loops[edges[e].from].0 - 1);
            let label = edges[e].label_w.map(|w| Rect {
                x: r.x + r.w + outermost + before + LABEL_OFFSET,
                y: r.y + r.h / 2.0 - LABEL_H / 2.0,
                w,
                h: LABEL_H,
            });
            let route = Route::SelfLoop { x: r.x + r.w, y: r.y + r.h / 2.0, reach: loop_reach(k) };
            out.push(OutEdge { route, label, upward: false });
            continue;
        }
        let (a, b) = (chain[0], chain[chain.len() - 1]);
        let (ra, rb) = (nodes[a], nodes[b]);
        let (la, lb) = (items[a].layer, items[b].layer);
        let mut pts = vec![(port_out[e], ra.y + ra.h)];
        if band_top[la] + band_h[la] > ra.y + ra.h {
            pts.push((port_out[e], band_top[la] + band_h[la]));
        }
        for &d in &chain[1..chain.len() - 1] {
            let l = items[d].layer;
            pts.push((x[d], band_top[l]));
            if band_h[l] > 0.0 {
                pts.push((x[d], band_top[l] + band_h[l]));
            }
        }
        if band_top[lb] < rb.y {
            pts.push((port_in[e], band_top[lb]));
        }
        pts.push((port_in[e], rb.y));
        let label = label_item[e].map(|d| {
            let l = items[d].layer;
            let w = items[d].right - LABEL_OFFSET - 2.0;
            Rect { x: x[d] + LABEL_OFFSET, y: band_top[l] + (band_h[l] - LABEL_H) / 2.0, w, h: LABEL_H }
        });
        if drawn_up {
            pts.reverse();
        }
        out.push(OutEdge { route: Route::Points(pts), label, upward: drawn_up });
    }

    let right = items.iter().zip(&x).map(|(it, x)| x + it.right).fold(0.0, f64::max);
    let bottom_y = (0..depth).map(|l| band_top[l] + band_h[l]).fold(0.0, f64::max);
    Layout { nodes, edges: out, width: (right + MARGIN).ceil(), height: (bottom_y + MARGIN).ceil() }
}

/// Which edges close a cycle, found by a depth-first search from the sources (then from any
/// box not reached yet), in declaration order so the drawing follows the code.
fn back_edges(n: usize, edges: &[(usize, usize, bool)]) -> Vec<bool> {
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut has_in = vec![false; n];
    for (i, &(a, b, _)) in edges.iter().enumerate() {
        if a != b {
            out_edges[a].push(i);
            has_in[b] = true;
        }
    }
    // 0 unseen, 1 on the stack, 2 done.
    let mut state = vec![0u8; n];
    let mut back = vec![false; edges.len()];
    let roots = (0..n).filter(|&v| !has_in[v]).chain(0..n);
    for root in roots {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        let mut stack = vec![(root, 0usize)];
        while let Some(top) = stack.last_mut() {
            let (v, next) = *top;
            top.1 += 1;
            if let Some(&e) = out_edges[v].get(next) {
                let w = edges[e].1;
                match state[w] {
                    0 => {
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => back[e] = true,
                    _ => {}
                }
            } else {
                state[v] = 2;
                stack.pop();
            }
        }
    }
    back
}

/// Longest-path layering over the DAG, then each source moved down to just above the highest
/// box it feeds.
fn layers(n: usize, edges: &[(usize, usize, bool)], minlen: &[usize]) -> Vec<usize> {
    let mut indeg = vec![0usize; n];
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &(a, b, _)) in edges.iter().enumerate() {
        if a != b {
            indeg[b] += 1;
            out_edges[a].push(i);
        }
    }
    let mut layer = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&v| indeg[v] == 0).rev().collect();
    while let Some(v) = ready.pop() {
        for &e in &out_edges[v] {
            let w = edges[e].1;
            layer[w] = layer[w].max(layer[v] + minlen[e]);
            indeg[w] -= 1;
            if indeg[w] == 0 {
                ready.push(w);
            }
        }
    }
    let mut has_in = vec![false; n];
    for &(a, b, _) in edges {
        if a != b {
            has_in[b] = true;
        }
    }
    for v in 0..n {
        if !has_in[v]
            && let Some(lowest) = out_edges[v].iter().map(|&e| layer[edges[e].1] - minlen[e]).min()
        {
            layer[v] = lowest;
        }
    }
    layer
}

struct Order<'a> {
    up: &'a [Vec<usize>],
    down: &'a [Vec<usize>],
}

impl Order<'_> {
    fn reduce(&self, mut layers: Vec<Vec<usize>>, items: usize) -> Vec<Vec<usize>> {
        let mut pos = vec![0usize; items];
        let index = |layers: &Vec<Vec<usize>>, pos: &mut Vec<usize>| {
            for row in layers {
                for (p, &i) in row.iter().enumerate() {
                    pos[i] = p;
                }
            }
        };
        // Start from a depth-first order so that the first sweep has something sensible.
        index(&layers, &mut pos);
        let mut best = layers.clone();
        let mut best_crossings = self.crossings(&layers, &pos);
        for round in 0..12 {
            let downward = round % 2 == 0;
            let range: Vec<usize> = if downward {
                (1..layers.len()).collect()
            } else {
                (0..layers.len().saturating_sub(1)).rev().collect()
            };
            for l in range {
                let nbrs = if downward { self.up } else { self.down };
                let mut keyed: Vec<(f64, usize)> = layers[l]
                    .iter()
                    .map(|&i| {
                        let ns = &nbrs[i];
                        let key = if ns.is_empty() {
                            pos[i] as f64
                        } else {
                            ns.iter().map(|&j| pos[j] as f64).sum::<f64>() / ns.len() as f64
                        };
                        (key, i)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                layers[l] = keyed.into_iter().map(|(_, i)| i).collect();
                for (p, &i) in layers[l].iter().enumerate() {
                    pos[i] = p;
                }
            }
            self.transpose(&mut layers, &mut pos);
            let c = self.crossings(&layers, &pos);
            if c < best_crossings {
                best_crossings = c;
                best = layers.clone();
            }
            if best_crossings == 0 {
                break;
            }
        }
        best
    }

    /// Swaps neighbours in a layer while that removes crossings.
    fn transpose(&self, layers: &mut [Vec<usize>], pos: &mut [usize]) {
        for _ in 0..8 {
            let mut improved = false;
            for row in layers.iter_mut() {
                for p in 0..row.len().saturating_sub(1) {
                    let (u, v) = (row[p], row[p + 1]);
                    if self.pair_crossings(v, u, pos) < self.pair_crossings(u, v, pos) {
                        row.swap(p, p + 1);
                        pos[u] = p + 1;
                        pos[v] = p;
                        improved = true;
                    }
                }
            }
            if !improved {
                break;
            }
        }
    }

    /// Crossings between the edges of `u` and those of `v` when `u` is left of `v`.
    fn pair_crossings(&self, u: usize, v: usize, pos: &[usize]) -> usize {
        let mut c = 0;
        for nbrs in [self.up, self.down] {
            for &a in &nbrs[u] {
                for &b in &nbrs[v] {
                    if pos[a] > pos[b] {
                        c += 1;
                    }
                }
            }
        }
        c
    }

    fn crossings(&self, layers: &[Vec<usize>], pos: &[usize]) -> usize {
        let mut c = 0;
        for row in layers {
            let segs: Vec<(usize, usize)> =
                row.iter().flat_map(|&u| self.down[u].iter().map(move |&w| (pos[u], pos[w]))).collect();
            for (i, a) in segs.iter().enumerate() {
                for b in &segs[i + 1..] {
                    if (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1) {
                        c += 1;
                    }
                }
            }
        }
        c
    }
}

fn gap(a: &Item, b: &Item) -> f64 {
    if a.node.is_some() || b.node.is_some() { GAP_NODE } else { GAP_EDGE }
}

/// x of every item: alternating passes that pull each layer toward its neighbours' average.
fn coordinates(items: &[Item], layers: &[Vec<usize>], up: &[Vec<usize>], down: &[Vec<usize>]) -> Vec<f64> {
    let mut x = vec![0.0; items.len()];
    for row in layers {
        let mut at = 0.0;
        for (p, &i) in row.iter().enumerate() {
            if p > 0 {
                at += items[row[p - 1]].right + gap(&items[row[p - 1]], &items[i]) + items[i].left;
            }
            x[i] = at;
        }
    }
    let sweep = |x: &mut Vec<f64>, l: usize, use_up: bool, use_down: bool| {
        let row = &layers[l];
        let targets: Vec<(f64, f64)> = row
            .iter()
            .map(|&i| {
                let mut ns: Vec<usize> = Vec::new();
                if use_up {
                    ns.extend(&up[i]);
                }
                if use_down {
                    ns.extend(&down[i]);
                }
                // Dummies hold on hardest, so long edges run straight.
                let weight = if items[i].node.is_some() { 1.0 } else { 3.0 };
                // An item that is all its neighbour has on that side (and vice versa) lines up
                // with it, so chains of single edges are drawn straight.
                let only = |mine: &Vec<usize>, theirs: &[Vec<usize>]| {
                    (mine.len() == 1 && theirs[mine[0]].len() == 1).then(|| mine[0])
                };
                if use_up
                    && use_down
                    && let Some(j) = only(&up[i], down).or_else(|| only(&down[i], up))
                {
                    return (x[j], 10.0 * weight);
                }
                if ns.is_empty() {
                    (x[i], 0.1)
                } else {
                    (ns.iter().map(|&j| x[j]).sum::<f64>() / ns.len() as f64, weight)
                }
            })
            .collect();
        let placed = place(items, row, &targets);
        for (&i, v) in row.iter().zip(placed) {
            x[i] = v;
        }
    };
    for _ in 0..10 {
        for l in 1..layers.len() {
            sweep(&mut x, l, true, false);
        }
        for l in (0..layers.len().saturating_sub(1)).rev() {
            sweep(&mut x, l, false, true);
        }
    }
    for _ in 0..30 {
        for l in 0..layers.len() {
            sweep(&mut x, l, true, true);
        }
    }
    let min = items.iter().zip(&x).map(|(it, x)| x - it.left).fold(f64::INFINITY, f64::min);
    if min.is_finite() {
        for v in &mut x {
            *v += MARGIN - min;
        }
    }
    x
}

/// The weighted least-squares placement of one layer's items near their targets, keeping their
/// order and separations: shifting each item by the room the ones before it need turns the
/// separations into a plain order constraint, solved by pooling adjacent violators.
fn place(items: &[Item], row: &[usize], targets: &[(f64, f64)]) -> Vec<f64> {
    let mut offset = Vec::with_capacity(row.len());
    let mut acc = 0.0;
    for (p, &i) in row.iter().enumerate() {
        if p > 0 {
            let prev = &items[row[p - 1]];
            acc += prev.right + gap(prev, &items[i]) + items[i].left;
        }
        offset.push(acc);
    }
    // Blocks of pooled items: (total weight, weighted sum, count).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for (p, &(t, w)) in targets.iter().enumerate() {
        blocks.push((w, w * (t - offset[p]), 1));
        while blocks.len() > 1 {
            let (w2, s2, c2) = blocks[blocks.len() - 1];
            let (w1, s1, c1) = blocks[blocks.len() - 2];
            if s1 / w1 > s2 / w2 {
                blocks.pop();
                blocks.pop();
                blocks.push((w1 + w2, s1 + s2, c1 + c2));
            } else {
                break;
            }
        }
    }
    let mut out = Vec::with_capacity(row.len());
    for (w, s, c) in blocks {
        for _ in 0..c {
            let p = out.len();
            out.push(s / w + offset[p]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: &Rect, b: &Rect) -> bool {
        a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
    }

    fn inside(r: &Rect, (x, y): (f64, f64)) -> bool {
        x > r.x + 0.5 && x < r.x + r.w - 0.5 && y > r.y + 0.5 && y < r.y + r.h - 0.5
    }

    /// Points along the route as the renderer draws it (lines and vertical-tangent cubics).
    fn samples(route: &Route) -> Vec<(f64, f64)> {
        let cubic = |p0: (f64, f64), p1: (f64, f64), p2: (f64, f64), p3: (f64, f64)| {
            (0..=40).map(move |k| {
                let t = k as f64 / 40.0;
                let u = 1.0 - t;
                let f = |a: f64, b: f64, c: f64, d: f64| {
                    u * u * u * a + 3.0 * u * u * t * b + 3.0 * u * t * t * c + t * t * t * d
                };
                (f(p0.0, p1.0, p2.0, p3.0), f(p0.1, p1.1, p2.1, p3.1))
            })
        };
        let mut out = Vec::new();
        match route {
            Route::Points(pts) => {
                for w in pts.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    let my = (a.1 + b.1) / 2.0;
                    out.extend(cubic(a, (a.0, my), (b.0, my), b));
                }
            }
            Route::SelfLoop { x, y, reach } => {
                let r = x + reach;
                out.extend(cubic((*x, y - 8.0), (r, y - 26.0), (r, y + 26.0), (*x, y + 8.0)));
            }
        }
        out
    }

    /// Random graphs (cycles, parallel edges, self loops, labels of all widths, upward edges)
    /// never get a box, a label or an edge on top of something it does not belong to.
    #[test]
    fn nothing_overlaps_on_random_graphs() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        for case in 0..300 {
            let n = 1 + next(12) as usize;
            let sizes: Vec<(f64, f64)> = (0..n).map(|_| (40.0 + next(160) as f64, 20.0 + next(30) as f64)).collect();
            let m = next(3 * n as u64 + 1) as usize;
            let edges: Vec<InEdge> = (0..m)
                .map(|_| InEdge {
                    from: next(n as u64) as usize,
                    to: next(n as u64) as usize,
                    label_w: (next(2) == 0).then(|| 20.0 + next(90) as f64),
                    upward: next(6) == 0,
                })
                .collect();
            let l = layout(&sizes, &edges);
            for (i, a) in l.nodes.iter().enumerate() {
                assert!((a.w, a.h) == sizes[i], "case {case}: box {i} resized");
                for (j, b) in l.nodes.iter().enumerate().skip(i + 1) {
                    assert!(!overlaps(a, b), "case {case}: boxes {i} and {j} overlap");
                }
            }
            let labels: Vec<(usize, Rect)> =
                l.edges.iter().enumerate().filter_map(|(e, o)| o.label.map(|r| (e, r))).collect();
            assert_eq!(labels.len(), edges.iter().filter(|e| e.label_w.is_some()).count(), "case {case}");
            for (k, (e, a)) in labels.iter().enumerate() {
                for (f, b) in &labels[k + 1..] {
                    assert!(!overlaps(a, b), "case {case}: labels of edges {e} and {f} overlap");
                }
                for (i, r) in l.nodes.iter().enumerate() {
                    assert!(!overlaps(a, r), "case {case}: the label of edge {e} lies on box {i}");
                }
            }
            for (e, o) in l.edges.iter().enumerate() {
                let pts = samples(&o.route);
                for (i, r) in l.nodes.iter().enumerate() {
                    if i == edges[e].from || i == edges[e].to {
                        continue;
                    }
                    assert!(
                        !pts.iter().any(|p| inside(r, *p)),
                        "case {case}: edge {e} ({} -> {}) runs through box {i}",
                        edges[e].from,
                        edges[e].to
                    );
                }
                // It starts at its source and ends at its target.
                if let Route::Points(p) = &o.route {
                    let (first, last) = (p[0], p[p.len() - 1]);
                    let (s, t) = (l.nodes[edges[e].from], l.nodes[edges[e].to]);
                    let on = |r: Rect, (x, y): (f64, f64)| {
                        x >= r.x - 0.01
                            && x <= r.x + r.w + 0.01
                            && ((y - r.y).abs() < 0.01 || (y - r.y - r.h).abs() < 0.01)
                    };
                    assert!(on(s, first) && on(t, last), "case {case}: edge {e} is not attached to its ends");
                }
            }
        }
    }
}
