//! What a run returns: completed with a result, paused for a person, escalated, or parked
//! until a timer or a retry is due.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::error::FlowError;
use crate::graph::Graph;
use crate::input::PauseRequest;
use crate::journal::TokenUsage;
use crate::store::RunStatus;

/// How a run stopped without failing.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Ask;
///
/// #[flow(state = S)]
/// impl Ask {
///     #[start]
///     async fn confirm(&self, cx: &Ctx<S>) -> Result<bool> { cx.ask::<bool>("Ship it?").await }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(Ask).with_store(flow_core::store::MemoryStore::new());
/// match runner.kickoff(S).await? {
///     RunOutcome::Completed(run) => println!("done: {:?}", run.last_method),
///     RunOutcome::Paused(p) => assert_eq!(p.request.prompt, "Ship it?"),
///     RunOutcome::Escalated(e) => println!("a person must look at it: {}", e.reason),
///     RunOutcome::Sleeping(s) => println!("parked until {:?}", s.until),
///     RunOutcome::Compensated(c) => println!("`{}` failed and was undone: {:?}", c.method, c.undone),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub enum RunOutcome<S> {
    /// Every method that could run has run.
    Completed(RunResult<S>),
    /// A method waits for a person's input; resume with
    /// [`Runner::resume_with`](crate::Runner::resume_with).
    Paused(Paused<S>),
    /// A method handed the run to a person (`Error::escalate`).
    Escalated(Escalated<S>),
    /// Nothing could run before a timer ([`Ctx::sleep`](crate::Ctx::sleep)) or a retry
    /// backoff comes due, at least the park threshold away: the run is stored as
    /// [`RunStatus::Queued`] until then, holding no lease. A serving
    /// [`Worker`](crate::Worker) continues it when it is due, or
    /// [`Runner::resume`](crate::Runner::resume) does (before then it parks again).
    Sleeping(Sleeping<S>),
    /// A method failed for good and the run's `#[compensate]` undo steps all ran, newest first:
    /// the run is stored [`RunStatus::Compensated`], ended for good with the state the undo
    /// steps left. (When an undo step fails, the run is a
    /// [`FlowError::Compensated`] error instead: something is left to undo.)
    Compensated(Compensated<S>),
}

impl<S> RunOutcome<S> {
    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        match self {
            RunOutcome::Completed(r) => r.run_id,
            RunOutcome::Paused(p) => p.run_id,
            RunOutcome::Escalated(e) => e.run_id,
            RunOutcome::Sleeping(s) => s.run_id,
            RunOutcome::Compensated(c) => c.run_id,
        }
    }

    /// The run's status.
    pub fn status(&self) -> RunStatus {
        match self {
            RunOutcome::Completed(_) => RunStatus::Completed,
            RunOutcome::Paused(_) => RunStatus::Paused,
            RunOutcome::Escalated(_) => RunStatus::Escalated,
            RunOutcome::Sleeping(_) => RunStatus::Queued,
            RunOutcome::Compensated(_) => RunStatus::Compensated,
        }
    }

    /// The state at the end of this execution.
    pub fn state(&self) -> &S {
        match self {
            RunOutcome::Completed(r) => &r.state,
            RunOutcome::Paused(p) => &p.state,
            RunOutcome::Escalated(e) => &e.state,
            RunOutcome::Sleeping(s) => &s.state,
            RunOutcome::Compensated(c) => &c.state,
        }
    }

    /// The result, or [`FlowError::InvalidStatus`] when the run paused or escalated.
    pub fn completed(self) -> Result<RunResult<S>, FlowError> {
        match self {
            RunOutcome::Completed(r) => Ok(r),
            other => Err(FlowError::InvalidStatus {
                run_id: other.run_id(),
                status: other.status(),
                action: "read as completed",
            }),
        }
    }

    /// The pause, if the run paused.
    pub fn paused(&self) -> Option<&Paused<S>> {
        match self {
            RunOutcome::Paused(p) => Some(p),
            _ => None,
        }
    }

    /// The failure and its compensation, if the run was compensated.
    pub fn compensated(&self) -> Option<&Compensated<S>> {
        match self {
            RunOutcome::Compensated(c) => Some(c),
            _ => None,
        }
    }

    /// Until when the run is parked, if it is (see [`RunOutcome::Sleeping`]).
    pub fn sleeping(&self) -> Option<&Sleeping<S>> {
        match self {
            RunOutcome::Sleeping(s) => Some(s),
            _ => None,
        }
    }
}

/// A completed run.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S { n: u32 }
/// struct Add;
///
/// #[flow(state = S)]
/// impl Add {
///     #[start]
///     async fn add(&self, cx: &Ctx<S>) -> Result<u32> {
///         cx.update(|s| s.n += 2);
///         Ok(2)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let run = Add.kickoff(S::default()).await?.completed()?;
/// assert_eq!(run.state.n, 2);
/// assert_eq!(run.last_method.as_deref(), Some("add"));
/// assert_eq!(run.output::<u32>()?, 2);
/// assert!(run.failures.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RunResult<S> {
    /// The run's id.
    pub run_id: Uuid,
    /// The final state.
    pub state: S,
    /// The method that completed last.
    pub last_method: Option<String>,
    /// Its output.
    pub last_output: Option<Value>,
    /// The latest output of each method that completed.
    pub outputs: Outputs,
    /// Failures of `non_critical` methods, recorded while the flow went on.
    pub failures: Vec<RecordedFailure>,
    /// Tokens used by LLM calls in this run (in this process).
    pub usage: TokenUsage,
}

impl<S> RunResult<S> {
    /// The last method's output as `T`.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use serde::{Deserialize, Serialize};
    /// #[derive(Clone, Default, Serialize, Deserialize)] struct S;
    /// struct F;
    /// #[flow(state = S)]
    /// impl F {
    ///     #[start] async fn a(&self, _cx: &Ctx<S>) -> Result<u32> { Ok(41) }
    ///     #[listen(a)] async fn b(&self, _cx: &Ctx<S>, n: u32) -> Result<u32> { Ok(n + 1) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let run = F.kickoff(S).await?.completed()?;
    /// assert_eq!(run.output::<u32>()?, 42);
    /// assert_eq!(run.output_of::<u32>("a")?, 41);
    /// # Ok(())
    /// # }
    /// ```
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, FlowError> {
        let value = self.last_output.as_ref().ok_or_else(|| FlowError::Serialize {
            run_id: self.run_id,
            what: "the last output".into(),
            message: "no method completed".into(),
        })?;
        decode(self.run_id, value, "the last output")
    }

    /// The latest output of `method` as `T`.
    pub fn output_of<T: DeserializeOwned>(&self, method: &str) -> Result<T, FlowError> {
        let value = self.outputs.get(method).ok_or_else(|| FlowError::Serialize {
            run_id: self.run_id,
            what: format!("the output of `{method}`"),
            message: "that method did not complete in this run".into(),
        })?;
        decode(self.run_id, value, &format!("the output of `{method}`"))
    }
}

/// The latest output of each method that completed, by method name, in the order the flow
/// declares its methods.
///
/// It shares the outputs the run holds rather than copying them: finishing a run costs the same
/// whatever the size of its outputs, and cloning a result is cheap.
///
/// ```
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
/// #[derive(Clone, Default, Serialize, Deserialize)] struct S;
/// struct F;
/// #[flow(state = S)]
/// impl F {
///     #[start] async fn a(&self, _cx: &Ctx<S>) -> Result<u32> { Ok(41) }
///     #[listen(a)] async fn b(&self, _cx: &Ctx<S>, n: u32) -> Result<u32> { Ok(n + 1) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let run = F.kickoff(S).await?.completed()?;
/// assert_eq!(run.outputs.get("a"), Some(&serde_json::json!(41)));
/// assert_eq!(run.outputs.keys().collect::<Vec<_>>(), ["a", "b"]);
/// assert!(!run.outputs.contains_key("c"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Outputs {
    graph: &'static Graph,
    /// By method index, as the run's progress holds them.
    values: Arc<[Option<Arc<Value>>]>,
}

impl Outputs {
    pub(crate) fn new(graph: &'static Graph, values: &[Option<Arc<Value>>]) -> Self {
        Outputs { graph, values: values.into() }
    }

    /// The latest output of `method`; `None` if it did not complete (or the flow has no such
    /// method).
    pub fn get(&self, method: &str) -> Option<&Value> {
        let id = self.graph.method_id(method)?;
        self.values.get(id.index())?.as_deref()
    }

    /// Whether `method` completed.
    pub fn contains_key(&self, method: &str) -> bool {
        self.get(method).is_some()
    }

    /// Each method that completed with its latest output.
    pub fn iter(&self) -> OutputsIter<'_> {
        OutputsIter { graph: self.graph, values: self.values.iter().enumerate() }
    }

    /// The methods that completed.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.iter().map(|(name, _)| name)
    }

    /// How many methods completed.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no method completed.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Outputs {
    type Item = (&'static str, &'a Value);
    type IntoIter = OutputsIter<'a>;

    fn into_iter(self) -> OutputsIter<'a> {
        self.iter()
    }
}

/// The iterator of [`Outputs::iter`]: method name and latest output, in declaration order.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Two;
///
/// #[flow(state = S)]
/// impl Two {
///     #[start] async fn a(&self) -> Result<u32> { Ok(1) }
///     #[listen(a)] async fn b(&self, n: u32) -> Result<u32> { Ok(n + 1) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let run = Two.kickoff(S).await?.completed()?;
/// let pairs: Vec<(&str, u64)> = run.outputs.iter().map(|(m, v)| (m, v.as_u64().unwrap_or(0))).collect();
/// assert_eq!(pairs, [("a", 1), ("b", 2)]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct OutputsIter<'a> {
    graph: &'static Graph,
    values: std::iter::Enumerate<std::slice::Iter<'a, Option<Arc<Value>>>>,
}

impl<'a> Iterator for OutputsIter<'a> {
    type Item = (&'static str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        let graph = self.graph;
        self.values.find_map(|(i, v)| Some((graph.methods.get(i)?.name, v.as_deref()?)))
    }
}

impl fmt::Debug for OutputsIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

fn decode<T: DeserializeOwned>(run_id: Uuid, value: &Value, what: &str) -> Result<T, FlowError> {
    T::deserialize(value).map_err(|e| FlowError::Serialize {
        run_id,
        what: format!("{what} as `{}`", std::any::type_name::<T>()),
        message: e.to_string(),
    })
}

/// A failure of a `non_critical` method.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Notify;
///
/// #[flow(state = S)]
/// impl Notify {
///     #[start] async fn work(&self) -> Result<()> { Ok(()) }
///     #[listen(work, non_critical)]
///     async fn email(&self) -> Result<()> { Err(Error::permanent("mailbox full")) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let run = Notify.kickoff(S).await?.completed()?;
/// assert_eq!(run.failures[0].method, "email");
/// assert_eq!(run.failures[0].step_key, "email#1");
/// assert!(run.failures[0].error.contains("mailbox full"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordedFailure {
    /// The method.
    pub method: String,
    /// Its step key.
    pub step_key: String,
    /// The error.
    pub error: String,
}

/// A paused run.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Approve;
///
/// #[flow(state = S)]
/// impl Approve {
///     #[start]
///     async fn ask(&self, cx: &Ctx<S>) -> Result<bool> { cx.ask::<bool>("Approve?").await }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(Approve).with_store(flow_core::store::MemoryStore::new());
/// let RunOutcome::Paused(paused) = runner.kickoff(S).await? else { panic!("pauses") };
/// assert_eq!(paused.request.method, "ask");
/// let done = runner.resume_with(paused.run_id, true).await?.completed()?;
/// assert_eq!(done.output::<bool>()?, true);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Paused<S> {
    /// The run's id.
    pub run_id: Uuid,
    /// What it waits for.
    pub request: PauseRequest,
    /// The state so far.
    pub state: S,
}

/// An escalated run.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Returns;
///
/// #[flow(state = S)]
/// impl Returns {
///     #[start]
///     async fn check(&self) -> Result<()> { Err(Error::escalate("return requested after 75 days")) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let RunOutcome::Escalated(e) = Returns.kickoff(S).await? else { panic!("escalates") };
/// assert_eq!((e.method.as_str(), e.reason.as_str()), ("check", "return requested after 75 days"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Escalated<S> {
    /// The run's id.
    pub run_id: Uuid,
    /// The method that escalated.
    pub method: String,
    /// Why a person is needed.
    pub reason: String,
    /// The state when it escalated.
    pub state: S,
}

/// A run parked in its store until a timer or a retry is due.
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::store::MemoryStore;
/// use flow_core::RunStatus;
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S;
/// struct Later;
///
/// #[flow(state = S)]
/// impl Later {
///     #[start]
///     async fn wait(&self, cx: &Ctx<S>) -> Result<()> { cx.sleep(Duration::from_secs(3600)).await }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(Later).with_store(MemoryStore::new());
/// let RunOutcome::Sleeping(parked) = runner.kickoff(S).await? else { panic!("not parked") };
/// assert_eq!(parked.waiting, ["wait#1"]);
/// let stored = runner.store().expect("a store").load_run(parked.run_id).await?;
/// assert_eq!(stored.status, RunStatus::Queued);
/// assert!(stored.lease_owner.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Sleeping<S> {
    /// The run's id.
    pub run_id: Uuid,
    /// When it is due: the earliest wake time of what waits.
    pub until: SystemTime,
    /// The step keys that wait: sleeping steps and steps waiting for their next attempt.
    pub waiting: Vec<String>,
    /// The state so far.
    pub state: S,
}

/// A run whose failure was compensated: the method that failed, why, what each undo step did,
/// and the state after them.
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::RunStatus;
/// use flow_core::store::MemoryStore;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S { reserved: bool }
/// struct Order;
///
/// #[flow(state = S)]
/// impl Order {
///     #[start]
///     async fn reserve(&self, cx: &Ctx<S>) -> Result<String> { cx.update(|s| s.reserved = true); Ok("R-1".into()) }
///     #[compensate(reserve)]
///     async fn release(&self, cx: &Ctx<S>, _id: String) -> Result<()> { cx.update(|s| s.reserved = false); Ok(()) }
///     #[listen(reserve)]
///     async fn charge(&self) -> Result<()> { Err(Error::permanent("card declined")) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(Order).with_store(MemoryStore::new());
/// let RunOutcome::Compensated(c) = runner.kickoff(S::default()).await? else { panic!("compensated") };
/// assert_eq!((c.method.as_str(), c.error.as_str()), ("charge", "card declined"));
/// assert_eq!(c.undone, ["`release` undid `reserve#1`"]);
/// assert!(!c.state.reserved);
/// assert_eq!(runner.store().expect("a store").load_run(c.run_id).await?.status, RunStatus::Compensated);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Compensated<S> {
    /// The run's id.
    pub run_id: Uuid,
    /// The method whose failure started the compensation.
    pub method: String,
    /// Its error.
    pub error: String,
    /// What each undo step did, in the order they ran (newest completed step first).
    pub undone: Vec<String>,
    /// The state after the undo steps.
    pub state: S,
}
