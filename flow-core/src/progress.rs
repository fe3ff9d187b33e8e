//! The executor's persisted progress: everything besides the state that a run needs to go on
//! from a checkpoint exactly where it stopped.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorClass;
use crate::graph::Graph;
use crate::input::PauseRequest;
use crate::journal::TokenUsage;
use crate::outcome::RecordedFailure;
use crate::plan::{Clock, NodeState};

/// Bumped when the persisted layout changes incompatibly.
pub(crate) const PROGRESS_FORMAT: u32 = 1;

/// A scheduled method call that has not completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Activation {
    pub(crate) method: u16,
    pub(crate) step_key: String,
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
    /// Waiting for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) paused: Option<PauseRequest>,
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
    Failure { method: u16, step_key: String, attempt: u32, error: String, class: ErrorClass },
    CallLimit { method: u16 },
    Escalated { method: u16, reason: String },
}

/// Undo steps after a failure.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Compensation {
    /// Completed steps still to undo, next last.
    pub(crate) remaining: Vec<Undoable>,
    /// What each undo step did.
    pub(crate) results: Vec<String>,
    /// Whether every undo step has run.
    pub(crate) finished: bool,
}

/// The executor's persisted progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) format: u32,
    /// Activations per method so far.
    pub(crate) calls: Vec<u32>,
    /// Join progress of composite triggers, per method.
    pub(crate) joins: Vec<Vec<NodeState>>,
    /// Scheduled activations that have not completed.
    pub(crate) pending: Vec<Activation>,
    /// Latest output per method.
    pub(crate) outputs: Vec<Option<Arc<Value>>>,
    /// The method that completed last.
    pub(crate) last: Option<u16>,
    /// Failures of non-critical methods.
    #[serde(default)]
    pub(crate) failures: Vec<RecordedFailure>,
    /// Completed steps that can be undone, in completion order.
    #[serde(default)]
    pub(crate) undoable: Vec<Undoable>,
    #[serde(default)]
    pub(crate) halt: Option<Halt>,
    #[serde(default)]
    pub(crate) compensation: Option<Compensation>,
    /// Tokens used by LLM calls over every execution of the run.
    #[serde(default)]
    pub(crate) usage: TokenUsage,
}

impl Progress {
    pub(crate) fn new(graph: &Graph, joins: Vec<Vec<NodeState>>) -> Self {
        let n = graph.methods.len();
        Progress {
            format: PROGRESS_FORMAT,
            calls: vec![0; n],
            joins,
            pending: Vec::new(),
            outputs: vec![None; n],
            last: None,
            failures: Vec::new(),
            undoable: Vec::new(),
            halt: None,
            compensation: None,
            usage: TokenUsage::default(),
        }
    }

    /// Checks that stored progress belongs to this graph.
    pub(crate) fn validate(&self, graph: &Graph) -> Result<(), String> {
        let n = graph.methods.len();
        if self.format != PROGRESS_FORMAT {
            return Err(format!("progress format {} is not {PROGRESS_FORMAT}", self.format));
        }
        if self.calls.len() != n || self.outputs.len() != n || self.joins.len() != n {
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
            .find(|m| usize::from(*m) >= n);
        if let Some(m) = bad {
            return Err(format!("progress names method #{m}, which `{}` does not have", graph.name));
        }
        Ok(())
    }
}
