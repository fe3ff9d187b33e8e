//! The executor's persisted progress: everything besides the state that a run needs to go on
//! from a checkpoint exactly where it stopped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorClass;
use crate::graph::Graph;
use crate::input::PauseRequest;
use crate::journal::TokenUsage;
use crate::outcome::RecordedFailure;
use crate::plan::{Clock, NodeState, Plan};
use crate::step_key::StepKey;
use crate::store::{StepRecord, StepStatus};

/// Bumped when the persisted layout changes incompatibly.
pub(crate) const PROGRESS_FORMAT: u32 = 1;

/// A scheduled method call that has not completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Activation {
    pub(crate) method: u16,
    pub(crate) step_key: StepKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<Arc<Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) clock: Clock,
    /// Failed attempts so far.
    #[serde(default)]
    pub(crate) attempt: u32,
    /// Earliest start of the next attempt (ms since the Unix epoch), after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) not_before_ms: Option<i64>,
    /// Its method sleeps ([`crate::Ctx::sleep`]) until `not_before_ms`: it runs again then
    /// and finds its wake time in the journal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) sleeping: bool,
    /// Waiting for a person. Boxed: rare, and large next to the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) paused: Option<Box<PauseRequest>>,
    /// For undo steps: the step key they undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) undo_of: Option<String>,
    /// While running in this execution: its slot among the running futures.
    #[serde(skip)]
    pub(crate) slot: Option<u64>,
    /// When the next attempt may start, in this process's clock.
    #[serde(skip)]
    pub(crate) wake: Option<tokio::time::Instant>,
}

/// A completed step that has an undo method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Undoable {
    pub(crate) method: u16,
    pub(crate) step_key: String,
    pub(crate) output: Arc<Value>,
}

/// Why the run stopped scheduling new work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Halt {
    Failure {
        method: u16,
        step_key: String,
        attempt: u32,
        error: String,
        class: ErrorClass,
    },
    CallLimit {
        method: u16,
    },
    Escalated {
        method: u16,
        reason: String,
    },
    /// Cancelled on request: nothing new starts, completed steps are compensated, and the run
    /// ends `cancelled`.
    Cancelled {
        reason: String,
    },
}

/// Undo steps after a failure.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Compensation {
    /// Completed steps still to undo, next last.
    pub(crate) remaining: Vec<Undoable>,
    /// What each undo step did.
    pub(crate) results: Vec<String>,
    /// Whether every undo step has run and none failed: only then is the run past saving.
    pub(crate) finished: bool,
    /// Completed steps whose undo step failed for good, in the order they were tried; a
    /// resume tries them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) failed: Vec<Undoable>,
}

impl Progress {
    /// Stops the run for good on a cancel request: nothing new is started (the halt), and what
    /// waits (a question, a timer, a retry) is dropped. Undo steps already scheduled stay, and
    /// the steps still to undo after a failure are undone as well.
    pub(crate) fn cancel(&mut self, reason: String) {
        self.pending.retain(|a| a.undo_of.is_some() || a.slot.is_some());
        self.halt = Some(Halt::Cancelled { reason });
    }
}

impl Compensation {
    /// Puts the steps whose undo failed back in line, to be undone in the order first tried.
    pub(crate) fn retry_failed(&mut self) -> bool {
        if self.failed.is_empty() {
            return false;
        }
        self.remaining.extend(self.failed.drain(..).rev());
        self.finished = false;
        true
    }
}

/// The executor's persisted progress.
///
/// In memory the per-method parts are dense vectors (indexed by method id); on the wire they
/// are sparse maps holding only what is set, so a checkpoint's size follows what the run did,
/// not how many methods the flow has.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    pub(crate) format: u32,
    /// Activations per method so far.
    pub(crate) calls: Vec<u32>,
    /// Join progress of composite triggers, per method.
    pub(crate) joins: Vec<Vec<NodeState>>,
    /// Scheduled activations that have not completed, in the order they were scheduled
    /// (which is the order they are launched in). A deque because completions mostly come
    /// in that same order: removing the oldest moves nothing.
    pub(crate) pending: VecDeque<Activation>,
    /// Latest output per method. Not in checkpoints: the step rows hold every output, and
    /// [`Progress::restore_outputs`] reads them back, so a checkpoint's size follows what is
    /// pending rather than everything the run did.
    pub(crate) outputs: Vec<Option<Arc<Value>>>,
    /// The method that completed last.
    pub(crate) last: Option<u16>,
    /// Failures of non-critical methods.
    pub(crate) failures: Vec<RecordedFailure>,
    /// Completed steps that can be undone, in completion order.
    pub(crate) undoable: Vec<Undoable>,
    pub(crate) halt: Option<Halt>,
    pub(crate) compensation: Option<Compensation>,
    /// Tokens used by LLM calls over every execution of the run.
    pub(crate) usage: TokenUsage,
}

impl Progress {
    pub(crate) fn new(graph: &Graph, joins: Vec<Vec<NodeState>>) -> Self {
        let n = graph.methods.len();
        Progress {
            format: PROGRESS_FORMAT,
            calls: vec![0; n],
            joins,
            pending: VecDeque::new(),
            outputs: vec![None; n],
            last: None,
            failures: Vec::new(),
            undoable: Vec::new(),
            halt: None,
            compensation: None,
            usage: TokenUsage::default(),
        }
    }

    /// Checks that stored progress belongs to this flow and gives every composite trigger its
    /// join state (the wire form leaves out untouched ones).
    pub(crate) fn restore(&mut self, plan: &Plan) -> Result<(), String> {
        let graph = plan.graph;
        let n = graph.methods.len();
        if self.format != PROGRESS_FORMAT {
            return Err(format!("progress format {} is not {PROGRESS_FORMAT}", self.format));
        }
        if self.calls.len() != n {
            return Err(format!(
                "progress was written for a flow with {} methods, `{}` has {n}; the flow changed since the run was stored",
                self.calls.len(),
                graph.name
            ));
        }
        let bad = self
            .pending
            .iter()
            .map(|a| a.method)
            .chain(self.undoable.iter().map(|u| u.method))
            .chain(self.last)
            .find(|m| usize::from(*m) >= n);
        if let Some(m) = bad {
            return Err(format!("progress names method #{m}, which `{}` does not have", graph.name));
        }
        for (i, shape) in plan.initial_joins().into_iter().enumerate() {
            let stored = &mut self.joins[i];
            if stored.is_empty() {
                *stored = shape;
            } else if stored.len() != shape.len() {
                return Err(format!(
                    "the join state of `{}` does not match its trigger; the flow changed since the run was stored",
                    graph.methods[i].name
                ));
            }
        }
        Ok(())
    }

    /// Fills in the latest output of each method from the run's step rows, as of this
    /// progress: a completed step counts when this progress had scheduled it (`n` within the
    /// method's calls) and no longer waits for it, so the progress of an older checkpoint
    /// (a fork) sees only what had completed by then. Among a method's activations the
    /// highest `n` wins. Returns the rows that count, which a fork inherits.
    pub(crate) fn restore_outputs(&mut self, graph: &Graph, steps: Vec<StepRecord>) -> Vec<StepRecord> {
        let mut best: Vec<u32> = vec![0; self.outputs.len()];
        let mut kept = Vec::new();
        for step in steps {
            if step.status != StepStatus::Completed || self.pending.iter().any(|a| a.step_key.is(&step.step_key)) {
                continue;
            }
            let Some((name, n)) = step.step_key.rsplit_once('#') else { continue };
            let (Some(m), Ok(n)) = (graph.method_id(name), n.parse::<u32>()) else { continue };
            let i = m.index();
            if n == 0 || n > self.calls[i] {
                continue;
            }
            if n > best[i] {
                best[i] = n;
                self.outputs[i] = Some(Arc::new(step.output.clone().unwrap_or(Value::Null)));
            }
            kept.push(step);
        }
        kept
    }
}

/// Entries of a dense per-method vector that are set, as a map from method id.
struct Sparse<'a, T, F>(&'a [T], F);

impl<T, V, F> Serialize for Sparse<'_, T, F>
where
    F: for<'x> Fn(&'x T) -> Option<&'x V>,
    V: Serialize + ?Sized,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (i, item) in self.0.iter().enumerate() {
            if let Some(v) = (self.1)(item) {
                map.serialize_entry(&i, v)?;
            }
        }
        map.end()
    }
}

fn called(c: &u32) -> Option<&u32> {
    (*c != 0).then_some(c)
}

/// Activation counts on the wire: a list up to the last method called when that is the shorter
/// form (a run that called most of its methods, as chains and loops do), else a map of the
/// methods called (a large flow that took one branch). Both read back; rows written before the
/// list form existed hold the map.
struct Calls<'a>(&'a [u32]);

impl Serialize for Calls<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let set = self.0.iter().filter(|c| **c != 0).count();
        let through = self.0.iter().rposition(|c| *c != 0).map_or(0, |last| last + 1);
        // A list entry costs about two bytes, a map entry about eight.
        if through <= set * 4 {
            serializer.collect_seq(&self.0[..through])
        } else {
            Sparse(self.0, called).serialize(serializer)
        }
    }
}

/// Reads [`Calls`] in either form into a map from method id.
fn calls_from_wire<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<usize, u32>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<usize, u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of activation counts or a map from method id to count")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            let mut i = 0;
            while let Some(count) = seq.next_element::<u32>()? {
                if count != 0 {
                    out.insert(i, count);
                }
                i += 1;
            }
            Ok(out)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((i, count)) = map.next_entry::<usize, u32>()? {
                out.insert(i, count);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(Visitor)
}

fn joined(j: &Vec<NodeState>) -> Option<&Vec<NodeState>> {
    j.iter().any(|n| *n != NodeState::default()).then_some(j)
}

impl Serialize for Progress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // Parts that are empty, as they mostly are, are left out: every one of them reads back as
        // its default, and a checkpoint is encoded at every durable step.
        let mut st = serializer.serialize_struct("Progress", 11)?;
        st.serialize_field("format", &self.format)?;
        st.serialize_field("methods", &self.calls.len())?;
        st.serialize_field("calls", &Calls(&self.calls))?;
        if self.joins.iter().any(|j| joined(j).is_some()) {
            st.serialize_field("joins", &Sparse(&self.joins, joined))?;
        }
        st.serialize_field("pending", &self.pending)?;
        if self.last.is_some() {
            st.serialize_field("last", &self.last)?;
        }
        if !self.failures.is_empty() {
            st.serialize_field("failures", &self.failures)?;
        }
        if !self.undoable.is_empty() {
            st.serialize_field("undoable", &self.undoable)?;
        }
        if self.halt.is_some() {
            st.serialize_field("halt", &self.halt)?;
        }
        if self.compensation.is_some() {
            st.serialize_field("compensation", &self.compensation)?;
        }
        if self.usage != TokenUsage::default() {
            st.serialize_field("usage", &self.usage)?;
        }
        st.end()
    }
}

#[derive(Deserialize)]
struct Wire {
    format: u32,
    methods: usize,
    #[serde(default, deserialize_with = "calls_from_wire")]
    calls: BTreeMap<usize, u32>,
    #[serde(default)]
    joins: BTreeMap<usize, Vec<NodeState>>,
    #[serde(default)]
    pending: Vec<Activation>,
    #[serde(default)]
    last: Option<u16>,
    #[serde(default)]
    failures: Vec<RecordedFailure>,
    #[serde(default)]
    undoable: Vec<Undoable>,
    #[serde(default)]
    halt: Option<Halt>,
    #[serde(default)]
    compensation: Option<Compensation>,
    #[serde(default)]
    usage: TokenUsage,
}

impl<'de> Deserialize<'de> for Progress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = Wire::deserialize(deserializer)?;
        // Bounded so a damaged row cannot ask for a huge allocation.
        if w.methods > usize::from(u16::MAX) {
            return Err(D::Error::custom(format!("{} methods is more than a flow can have", w.methods)));
        }
        let n = w.methods;
        let out_of_range = |what: &str, i: usize| D::Error::custom(format!("{what} names method #{i} of {n}"));
        let mut calls = vec![0; n];
        for (i, c) in w.calls {
            *calls.get_mut(i).ok_or_else(|| out_of_range("calls", i))? = c;
        }
        let mut joins = vec![Vec::new(); n];
        for (i, j) in w.joins {
            *joins.get_mut(i).ok_or_else(|| out_of_range("joins", i))? = j;
        }
        Ok(Progress {
            format: w.format,
            calls,
            joins,
            pending: w.pending.into(),
            // Rows of earlier versions also carry outputs; the step rows are the source now.
            outputs: vec![None; n],
            last: w.last,
            failures: w.failures,
            undoable: w.undoable,
            halt: w.halt,
            compensation: w.compensation,
            usage: w.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{FlowOptions, Graph};

    static EMPTY: Graph =
        Graph { name: "g", type_name: "G", state_type: "S", methods: &[], labels: &[], options: FlowOptions::DEFAULT };

    /// Fresh progress of a flow with `methods` methods.
    fn progress(methods: usize) -> Progress {
        Progress {
            calls: vec![0; methods],
            joins: vec![Vec::new(); methods],
            outputs: vec![None; methods],
            ..Progress::new(&EMPTY, Vec::new())
        }
    }

    #[test]
    fn the_wire_form_holds_only_what_is_set_and_round_trips() {
        let mut p = progress(500);
        p.calls[7] = 2;
        p.outputs[7] = Some(Arc::new(serde_json::json!("seven")));
        p.last = Some(7);
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.len() < 300, "{} bytes: {text}", text.len());
        assert!(text.contains(r#""calls":{"7":2}"#), "{text}");
        assert!(!text.contains("seven"), "outputs live in the step rows: {text}");
        let back: Progress = serde_json::from_str(&text).unwrap();
        assert_eq!(back, Progress { outputs: vec![None; 500], ..p });
    }

    #[test]
    fn activation_counts_take_the_shorter_form_and_both_read_back() {
        let mut chain = progress(100);
        for c in &mut chain.calls[..40] {
            *c = 1;
        }
        chain.calls[3] = 0;
        let text = serde_json::to_string(&chain).unwrap();
        let list = format!("[1,1,1,0{}]", ",1".repeat(36));
        assert!(text.contains(&format!(r#""calls":{list}"#)), "{text}");
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), chain);

        // The map form, as rows written before the list form hold it.
        let old = text.replace(&list, r#"{"0":1,"39":2}"#);
        let back: Progress = serde_json::from_str(&old).unwrap();
        assert_eq!((back.calls[0], back.calls[1], back.calls[39]), (1, 0, 2));

        let long = text.replace(&list, &format!("[{}]", ["1"; 101].join(",")));
        let err = serde_json::from_str::<Progress>(&long).unwrap_err().to_string();
        assert!(err.contains("calls names method #100 of 100"), "{err}");
        let wrong = text.replace(&list, r#""many""#);
        let err = serde_json::from_str::<Progress>(&wrong).unwrap_err().to_string();
        assert!(err.contains("a list of activation counts or a map"), "{err}");
    }

    #[test]
    fn empty_parts_are_left_out_and_set_ones_round_trip() {
        let mut p = progress(0);
        let bare = serde_json::to_string(&p).unwrap();
        for part in ["joins", "last", "failures", "undoable", "halt", "compensation", "usage"] {
            assert!(!bare.contains(part), "{part} in {bare}");
        }
        assert_eq!(serde_json::from_str::<Progress>(&bare).unwrap(), p);

        p = Progress { calls: vec![1; 3], ..progress(3) };
        p.joins[1] = vec![serde_json::from_value(serde_json::json!({ "fired_at": 1 })).unwrap(), NodeState::default()];
        p.last = Some(2);
        p.halt = Some(Halt::CallLimit { method: 1 });
        p.compensation = Some(Compensation { finished: true, ..Compensation::default() });
        p.usage = TokenUsage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 };
        let full = serde_json::to_string(&p).unwrap();
        for part in ["joins", "last", "halt", "compensation", "usage"] {
            assert!(full.contains(part), "{part} missing from {full}");
        }
        assert_eq!(serde_json::from_str::<Progress>(&full).unwrap(), p);
    }

    #[test]
    fn a_damaged_wire_form_is_refused() {
        let bad = serde_json::json!({"format": 1, "methods": 2, "calls": {"9": 1}});
        assert!(Progress::deserialize(&bad).unwrap_err().to_string().contains("method #9 of 2"));
        let huge = serde_json::json!({"format": 1, "methods": 1_000_000_000u64});
        assert!(Progress::deserialize(&huge).is_err());
    }
}
