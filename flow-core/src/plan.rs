//! The graph compiled for execution: who listens to what, and the join trees of composite
//! triggers. Built once per runner.
//!
//! Joins follow the execution contract: `and(..)` fires when each part has fired since it last
//! fired, then resets; `or(..)` fires once per *wave*: after it fired, it fires again only for
//! an event that is causally downstream of the listener's last activation (a loop came back
//! round). Causality is tracked with a small vector clock per activation that holds, for each
//! method whose trigger contains an `or`, how many of its activations precede the event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::{Arc, OnceLock};

use crate::graph::{Graph, LabelId, MethodId, Trigger};
use crate::store::RunGraph;

/// Causal past of an event: `(method, activation ordinal)` for or-listeners, sorted by method.
pub(crate) type Clock = Vec<(u16, u32)>;

pub(crate) fn clock_get(clock: &Clock, method: u16) -> u32 {
    clock.binary_search_by_key(&method, |e| e.0).map_or(0, |i| clock[i].1)
}

pub(crate) fn clock_set(clock: &mut Clock, method: u16, ordinal: u32) {
    match clock.binary_search_by_key(&method, |e| e.0) {
        Ok(i) => clock[i].1 = clock[i].1.max(ordinal),
        Err(i) => clock.insert(i, (method, ordinal)),
    }
}

pub(crate) fn clock_merge(into: &mut Clock, other: &Clock) {
    for &(m, n) in other {
        clock_set(into, m, n);
    }
}

#[derive(Debug, Clone, Copy)]
enum NodeKind {
    Leaf,
    Or,
    And { arity: usize },
}

#[derive(Debug)]
struct Node {
    kind: NodeKind,
    /// Parent node and this node's position among its children.
    parent: Option<(usize, usize)>,
}

/// A composite trigger flattened into nodes; node 0 is the root.
#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn build(trigger: &Trigger, leaves: &mut Vec<(Source, usize)>) -> Tree {
        let mut tree = Tree { nodes: Vec::new() };
        tree.add(trigger, None, leaves);
        tree
    }

    fn add(&mut self, t: &Trigger, parent: Option<(usize, usize)>, leaves: &mut Vec<(Source, usize)>) -> usize {
        let idx = self.nodes.len();
        match t {
            Trigger::Method(m) => {
                self.nodes.push(Node { kind: NodeKind::Leaf, parent });
                leaves.push((Source::Method(*m), idx));
            }
            Trigger::Label(l) => {
                self.nodes.push(Node { kind: NodeKind::Leaf, parent });
                leaves.push((Source::Label(*l), idx));
            }
            Trigger::Or(parts) | Trigger::And(parts) => {
                let kind =
                    if matches!(t, Trigger::Or(_)) { NodeKind::Or } else { NodeKind::And { arity: parts.len() } };
                self.nodes.push(Node { kind, parent });
                for (pos, p) in parts.iter().enumerate() {
                    self.add(p, Some((idx, pos)), leaves);
                }
            }
        }
        idx
    }
}

/// An event source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Method(MethodId),
    Label(LabelId),
}

/// Persisted progress of one composite-trigger node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeState {
    /// And: which parts fired since the last firing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<bool>,
    /// And: the merged causal past of the parts seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    clock: Clock,
    /// Or: the listener's activation count when this node last fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fired_at: Option<u32>,
    /// And, for a listener that takes the parts' outputs as a tuple: what each part sent,
    /// kept until the `and` fires. Persisted with the join, so a run resumed after a crash
    /// still delivers the parts that completed before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<Option<Arc<Value>>>,
}

/// The executable form of a graph.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) graph: &'static Graph,
    by_method: Vec<Vec<(MethodId, usize)>>,
    by_label: Vec<Vec<(MethodId, usize)>>,
    trees: Vec<Option<Tree>>,
    /// Methods whose trigger contains an `or`: the clock tracks their activations.
    pub(crate) or_tracked: Vec<bool>,
    /// Methods that take an input: an `and(..)` in their trigger collects its parts' outputs
    /// into the tuple they receive.
    collects: Vec<bool>,
    /// For each method, the method that undoes it.
    pub(crate) compensator: Vec<Option<MethodId>>,
    /// The graph as the store keeps it, encoded the first time a run is stored.
    stored_graph: OnceLock<Arc<RunGraph>>,
}

impl Plan {
    /// The graph every run this plan creates refers to in its store ([`NewRun::graph`](crate::store::NewRun::graph)).
    pub(crate) fn run_graph(&self) -> Arc<RunGraph> {
        Arc::clone(self.stored_graph.get_or_init(|| Arc::new(RunGraph::new(self.graph.doc()))))
    }

    pub(crate) fn new(graph: &'static Graph) -> Plan {
        let n = graph.methods.len();
        let mut by_method = vec![Vec::new(); n];
        let mut by_label = vec![Vec::new(); graph.labels.len()];
        let mut trees = Vec::with_capacity(n);
        let mut or_tracked = vec![false; n];
        let collects = graph.methods.iter().map(|m| m.payload_type.is_some()).collect();
        let mut compensator = vec![None; n];
        for (i, m) in graph.methods.iter().enumerate() {
            let id = MethodId(i as u16);
            if let Some(target) = m.compensates {
                compensator[target.index()] = Some(id);
            }
            let Some(trigger) = &m.trigger else {
                trees.push(None);
                continue;
            };
            or_tracked[i] = trigger.has_or();
            let mut leaves = Vec::new();
            trees.push(Some(Tree::build(trigger, &mut leaves)));
            for (source, node) in leaves {
                match source {
                    Source::Method(src) => by_method[src.index()].push((id, node)),
                    Source::Label(l) => by_label[l.index()].push((id, node)),
                }
            }
        }
        Plan { graph, by_method, by_label, trees, or_tracked, collects, compensator, stored_graph: OnceLock::new() }
    }

    /// Empty join progress for every method.
    pub(crate) fn initial_joins(&self) -> Vec<Vec<NodeState>> {
        self.trees
            .iter()
            .map(|t| match t {
                Some(t) if t.nodes.len() > 1 => vec![NodeState::default(); t.nodes.len()],
                _ => Vec::new(),
            })
            .collect()
    }

    /// Delivers an event that sent `value`; returns the listeners that fire, each with its
    /// causal past (`None` when that is the event's own `clock` unchanged, which the caller
    /// can then hand over without a copy) and its input: the event's value, the outputs of an
    /// `and`'s parts as an array (a tuple to the listener), or nothing. `calls` is the
    /// activation count per method (read to arm `or` nodes).
    pub(crate) fn deliver(
        &self,
        source: Source,
        clock: &Clock,
        value: &Arc<Value>,
        joins: &mut [Vec<NodeState>],
        calls: &[u32],
        fired: &mut Vec<Fired>,
    ) {
        let listeners = match source {
            Source::Method(m) => &self.by_method[m.index()],
            Source::Label(l) => &self.by_label[l.index()],
        };
        for &(listener, leaf) in listeners {
            let Some(tree) = &self.trees[listener.index()] else { continue };
            let state = &mut joins[listener.index()];
            let event = Event { leaf, clock, value, collect: self.collects[listener.index()] };
            if let Some((clock, payload)) = bubble(tree, state, &event, listener.0, calls[listener.index()]) {
                fired.push((listener, clock, payload));
            }
        }
    }
}

/// A listener that fires: its causal past (`None`: the event's own) and its input.
pub(crate) type Fired = (MethodId, Option<Clock>, Option<Arc<Value>>);

/// One event on its way to one listener.
struct Event<'a> {
    leaf: usize,
    clock: &'a Clock,
    value: &'a Arc<Value>,
    /// Whether the `and`s on the way keep what their parts sent (the listener takes an input).
    collect: bool,
}

/// Walks an event from a leaf towards the root. Returns the causal past to fire with (`None`:
/// the event's own), and the input the firing carries: the event's value, or past an `and`
/// the array of what its parts sent (nothing when the listener takes no input).
fn bubble(
    tree: &Tree,
    state: &mut [NodeState],
    event: &Event<'_>,
    listener: u16,
    listener_calls: u32,
) -> Option<(Option<Clock>, Option<Arc<Value>>)> {
    let (leaf, event_clock) = (event.leaf, event.clock);
    if served_by_an_or(tree, state, leaf, event_clock, listener) {
        return None;
    }
    let mut clock: Option<Clock> = None;
    let mut carried = Some(Arc::clone(event.value));
    let mut node = leaf;
    while let Some((parent, pos)) = tree.nodes[node].parent {
        let st = &mut state[parent];
        match tree.nodes[parent].kind {
            NodeKind::And { arity } => {
                if st.seen.len() != arity {
                    st.seen = vec![false; arity];
                }
                st.seen[pos] = true;
                clock_merge(&mut st.clock, clock.as_ref().unwrap_or(event_clock));
                if event.collect {
                    if st.values.len() != arity {
                        st.values = vec![None; arity];
                    }
                    st.values[pos] = carried.take();
                }
                if !st.seen.iter().all(|s| *s) {
                    return None;
                }
                clock = Some(std::mem::take(&mut st.clock));
                st.seen.iter_mut().for_each(|s| *s = false);
                carried = event.collect.then(|| {
                    let parts = std::mem::take(&mut st.values);
                    Arc::new(Value::Array(
                        parts.into_iter().map(|v| v.map_or(Value::Null, Arc::unwrap_or_clone)).collect(),
                    ))
                });
            }
            NodeKind::Or => {
                let armed =
                    st.fired_at.is_none_or(|at| clock_get(clock.as_ref().unwrap_or(event_clock), listener) > at);
                if !armed {
                    return None;
                }
                st.fired_at = Some(listener_calls);
                clear_half_joins(tree, state, parent);
            }
            NodeKind::Leaf => {}
        }
        node = parent;
    }
    Some((clock, carried))
}

/// Whether `node` is `ancestor` or lies below it.
fn within(tree: &Tree, mut node: usize, ancestor: usize) -> bool {
    loop {
        if node == ancestor {
            return true;
        }
        match tree.nodes[node].parent {
            Some((parent, _)) => node = parent,
            None => return false,
        }
    }
}

/// When an `or` fires, what its branches had half-collected (the parts of an `and` that did
/// not complete) belongs to the wave it just served: cleared, so that the rest of such an
/// `and` arriving later, even from downstream of the listener, does not fire it again with
/// a part of the old wave (CrewAI clears its pending events the same way).
fn clear_half_joins(tree: &Tree, state: &mut [NodeState], or: usize) {
    for (i, node) in tree.nodes.iter().enumerate().skip(or + 1) {
        if matches!(node.kind, NodeKind::And { .. }) && within(tree, i, or) {
            state[i].seen.clear();
            state[i].clock.clear();
            state[i].values.clear();
        }
    }
}

/// Whether an `or` above `leaf` already fired for the wave this event belongs to (it is not
/// downstream of the listener's activation from that firing): the event is then spent, and
/// an `and` below that `or` must not keep it as a part, for the same reason as
/// [`clear_half_joins`].
fn served_by_an_or(tree: &Tree, state: &[NodeState], leaf: usize, event_clock: &Clock, listener: u16) -> bool {
    let mut node = leaf;
    let mut below_an_and = false;
    while let Some((parent, _)) = tree.nodes[node].parent {
        match tree.nodes[parent].kind {
            NodeKind::And { .. } => below_an_and = true,
            NodeKind::Or if below_an_and => {
                if state[parent].fired_at.is_some_and(|at| clock_get(event_clock, listener) <= at) {
                    return true;
                }
            }
            NodeKind::Or | NodeKind::Leaf => {}
        }
        node = parent;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_keeps_max_and_order() {
        let mut c = Clock::new();
        clock_set(&mut c, 3, 1);
        clock_set(&mut c, 1, 2);
        clock_set(&mut c, 3, 0);
        assert_eq!(c, vec![(1, 2), (3, 1)]);
        let mut d = vec![(2, 5)];
        clock_merge(&mut d, &c);
        assert_eq!(d, vec![(1, 2), (2, 5), (3, 1)]);
        assert_eq!(clock_get(&d, 2), 5);
        assert_eq!(clock_get(&d, 9), 0);
    }
}
