//! The event graph of a flow, built at compile time by `#[flow]`.
//!
//! Every flow type carries one `&'static Graph`: its methods, the triggers that start them, the
//! route labels its routers can emit and the per-method policies. The runtime executes this data;
//! [`Graph::to_mermaid`] and [`crate::plot`] draw it.
//!
//! ```
//! use flow_core::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct S;
//! struct Hello;
//!
//! #[flow(state = S)]
//! impl Hello {
//!     #[start]
//!     async fn greet(&self, _cx: &Ctx<S>) -> Result<String> { Ok("hi".into()) }
//!     #[listen(greet)]
//!     async fn shout(&self, _cx: &Ctx<S>, text: String) -> Result<String> { Ok(text.to_uppercase()) }
//! }
//!
//! let graph = Hello::graph();
//! assert_eq!(graph.methods.len(), 2);
//! assert!(graph.to_mermaid().contains("greet --> shout"));
//! ```

use std::fmt;
use std::time::Duration;

mod doc;

pub use doc::{DocEdge, GRAPH_FORMAT, GraphDoc, MethodDoc, RetryDoc, RouteDoc, RouteEndDoc, TriggerDoc};

/// Index of a method in [`Graph::methods`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MethodId(pub u16);

/// Index of a route label in [`Graph::labels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelId(pub u16);

impl MethodId {
    /// The index as `usize`, for slice access.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl LabelId {
    /// The index as `usize`, for slice access.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// The static description of one flow.
#[derive(Debug)]
pub struct Graph {
    /// The flow's registered name (`#[flow(name = "...")]`, else the type name).
    pub name: &'static str,
    /// The Rust type name of the flow (for messages).
    pub type_name: &'static str,
    /// The Rust type name of the state.
    pub state_type: &'static str,
    /// All methods, in declaration order.
    pub methods: &'static [MethodDef],
    /// All route labels (`Enum::Variant`) that listeners or routers mention.
    pub labels: &'static [LabelDef],
    /// Flow-wide options.
    pub options: FlowOptions,
}

/// Flow-wide options set on `#[flow(...)]`.
#[derive(Debug, Clone, Copy)]
pub struct FlowOptions {
    /// How many times one method may be called in one run before the run fails
    /// (`max_calls = N`, default 100).
    pub max_calls: u32,
    /// Retry policy for methods that declare none (`retry(...)` on `#[flow]`).
    pub retry: Option<RetryPolicy>,
    /// Timeout for methods that declare none (`timeout = "30s"` on `#[flow]`); when neither
    /// sets one, [`DEFAULT_STEP_TIMEOUT`] applies. `Duration::MAX` (`timeout = "none"`) is
    /// no limit.
    pub timeout: Option<Duration>,
    /// What happens to the methods still running when a method fails for good
    /// (`on_failure = "..."` on `#[flow]`, default [`OnFailure::CancelRunning`]).
    pub on_failure: OnFailure,
    /// How far away a timer or a retry must be for a run with a store to park rather than
    /// wait in the process (`park_after = "30s"` on `#[flow]`; `"never"` is `Duration::MAX`);
    /// when unset, [`DEFAULT_PARK_AFTER`](crate::DEFAULT_PARK_AFTER) applies, and
    /// [`Runner::park_after`](crate::Runner::park_after) overrides either.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use std::time::Duration;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct Drip;
    ///
    /// #[flow(state = S, park_after = "2m")]
    /// impl Drip {
    ///     #[start]
    ///     async fn wait(&self, cx: &Ctx<S>) -> Result<()> { cx.sleep(Duration::from_secs(60)).await }
    /// }
    ///
    /// assert_eq!(Drip::graph().options.park_after, Some(Duration::from_secs(120)));
    /// ```
    pub park_after: Option<Duration>,
}

/// What a run does with the methods still running when a method fails for good (after its
/// retries; a `non_critical` method's failure does not count).
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::graph::OnFailure;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S;
/// struct Patient;
///
/// // Let siblings finish before the run reports the failure (CrewAI's behaviour).
/// #[flow(state = S, on_failure = "finish_running")]
/// impl Patient {
///     #[start]
///     async fn go(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
/// }
///
/// assert_eq!(Patient::graph().options.on_failure, OnFailure::FinishRunning);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// `on_failure = "cancel_running"`, the default: the methods still running are stopped at
    /// once (their futures dropped, their state updates discarded, their journaled effects
    /// kept), compensation runs, and `kickoff` returns the error without waiting for them. A
    /// durable run keeps them pending, so a resume runs them again. A method that has an undo
    /// step (`#[compensate(..)]`) is left to finish, so that it can be undone. A plain `fn`
    /// method runs on a thread, which cannot be stopped: its result is dropped when it arrives.
    #[default]
    CancelRunning,
    /// `on_failure = "finish_running"`: the methods still running finish (their updates are
    /// applied and checkpointed) before compensation runs and the error is returned.
    FinishRunning,
}

/// The time limit of one attempt of a method when neither the method nor its flow sets one:
/// a call that hangs (a server that never answers, a lock never released) ends as a
/// transient failure instead of holding its run forever. Set `timeout = "..."` on the method
/// or on `#[flow]` to change it, `timeout = "none"` to remove it.
///
/// ```
/// assert_eq!(flow_core::graph::DEFAULT_STEP_TIMEOUT, std::time::Duration::from_secs(600));
/// ```
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);

impl FlowOptions {
    /// The defaults: 100 calls per method, no retries, the timeout [`DEFAULT_STEP_TIMEOUT`],
    /// running methods cancelled when one fails.
    pub const DEFAULT: FlowOptions = FlowOptions {
        max_calls: 100,
        retry: None,
        timeout: None,
        on_failure: OnFailure::CancelRunning,
        park_after: None,
    };
}

impl Default for FlowOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One method of a flow.
#[derive(Debug)]
pub struct MethodDef {
    /// The method's identifier.
    pub name: &'static str,
    /// `#[start]`: runs at kickoff when it has no trigger; a start with a trigger
    /// (`#[start(Route::Variant)]`) runs only when triggered.
    pub is_start: bool,
    /// `#[start] #[listen(trigger)]`: a start with a trigger that runs at kickoff as well as
    /// each time its trigger fires (so a flow made only of a loop needs no start of its own).
    pub start_listens: bool,
    /// `#[router]`: the method returns a route enum (or `Option` of one).
    pub is_router: bool,
    /// What makes the method run. `None` for unconditional starts and compensation methods.
    pub trigger: Option<Trigger>,
    /// The output type as written (`()` for none); for routers, the route type.
    pub output_type: &'static str,
    /// The payload parameter type as written, when the method takes one.
    pub payload_type: Option<&'static str>,
    /// For routers: every label the route type can produce that this flow knows of.
    pub routes: &'static [LabelId],
    /// Failure handling.
    pub policy: MethodPolicy,
    /// `#[compensate(method)]`: this method undoes `method`.
    pub compensates: Option<MethodId>,
    /// For routers: the routes that end the branch instead of triggering a method (drawn by
    /// [`crate::plot`] as edges to an end marker).
    pub ends: &'static [RouteEnd],
    /// A plain `fn` rather than an `async fn`: run on the blocking thread pool.
    pub blocking: bool,
}

/// A router's route that ends its branch: nothing runs after it.
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::graph::RouteEnd;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S;
/// #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Route)]
/// enum Ticket { Answer, Spam }
/// #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Route)]
/// enum Next { Escalate, Close, Wait }
/// struct Desk;
///
/// #[flow(state = S)]
/// impl Desk {
///     #[start]
///     #[router(terminal(Ticket::Spam))]
///     async fn triage(&self, _cx: &Ctx<S>) -> Result<Ticket> { Ok(Ticket::Answer) }
///     #[router(Ticket::Answer, terminal)]
///     async fn answer(&self, _cx: &Ctx<S>) -> Result<Option<Next>> { Ok(None) }
///     #[listen(Next::Escalate)]
///     async fn escalate(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
/// }
///
/// let g = Desk::graph();
/// assert_eq!(g.method(g.method_id("triage").unwrap()).ends, &[RouteEnd::Variant("Spam")]);
/// // `Close` and `Wait` end the branch, and so does `None`.
/// assert_eq!(g.method(g.method_id("answer").unwrap()).ends, &[RouteEnd::Unhandled, RouteEnd::None]);
/// assert!(g.to_mermaid().contains("answer -->|any other| answer_end0(((end)))"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteEnd {
    /// A variant listed in `terminal(Route::Variant, ...)`.
    Variant(&'static str),
    /// A bare `terminal`: every variant no listener handles.
    Unhandled,
    /// The router returns an `Option` of its route, and `None` routes nowhere.
    None,
}

impl RouteEnd {
    /// The text an end marker's edge is labelled with.
    ///
    /// ```
    /// use flow_core::graph::RouteEnd;
    /// assert_eq!(RouteEnd::Variant("Spam").text(), "Spam");
    /// assert_eq!(RouteEnd::Unhandled.text(), "any other");
    /// assert_eq!(RouteEnd::None.text(), "None");
    /// ```
    pub fn text(&self) -> &'static str {
        match self {
            RouteEnd::Variant(v) => v,
            RouteEnd::Unhandled => "any other",
            RouteEnd::None => "None",
        }
    }
}

/// Failure handling of one method.
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodPolicy {
    /// `retry(...)`: how a transient failure is retried.
    pub retry: Option<RetryPolicy>,
    /// `timeout = "10s"`: how long one attempt may take; a timeout is a transient failure.
    /// `Duration::MAX` (`timeout = "none"`) is no limit.
    pub timeout: Option<Duration>,
    /// `non_critical`: a failure is recorded in the run and the flow goes on without this
    /// method's listeners.
    pub non_critical: bool,
}

/// How a transiently failing method is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (at least 1).
    pub attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Randomise each delay to between half and all of its value.
    pub jitter: bool,
    /// Total attempts for a reply that does not parse ([`crate::ErrorClass::InvalidReply`]):
    /// `invalid_reply = N` (default 1, no retry; an LLM may answer better a second time).
    pub invalid_reply_attempts: u32,
}

/// Delay between retry attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `initial * 2^(retry - 1)`, capped at `max`.
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// Largest delay.
        max: Duration,
    },
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 = the first retry), without jitter.
    ///
    /// ```
    /// use flow_core::graph::{Backoff, RetryPolicy};
    /// use std::time::Duration;
    /// let p = RetryPolicy {
    ///     attempts: 5,
    ///     backoff: Backoff::Exponential { initial: Duration::from_millis(100), max: Duration::from_millis(300) },
    ///     jitter: false,
    ///     invalid_reply_attempts: 1,
    /// };
    /// assert_eq!(p.delay(1), Duration::from_millis(100));
    /// assert_eq!(p.delay(2), Duration::from_millis(200));
    /// assert_eq!(p.delay(3), Duration::from_millis(300));
    /// ```
    pub fn delay(&self, retry: u32) -> Duration {
        match self.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { initial, max } => {
                let shift = retry.saturating_sub(1).min(31);
                initial.saturating_mul(1u32 << shift).min(max)
            }
        }
    }
}

/// A route label: one variant of a route enum, `Enum::Variant`.
#[derive(Debug)]
pub struct LabelDef {
    /// The route enum as written in the flow (`Quality`).
    pub route_type: &'static str,
    /// The variant (`Sufficient`).
    pub variant: &'static str,
}

impl fmt::Display for LabelDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.route_type, self.variant)
    }
}

/// What makes a method run.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// The completion of a method.
    Method(MethodId),
    /// A router returning this route.
    Label(LabelId),
    /// Fires once per wave, on the first of its parts.
    Or(&'static [Trigger]),
    /// Fires when every part has fired since it last fired.
    And(&'static [Trigger]),
}

impl Trigger {
    /// Every method and label this trigger mentions, depth first.
    pub fn leaves(&self, out: &mut Vec<Trigger>) {
        match self {
            Trigger::Method(_) | Trigger::Label(_) => out.push(*self),
            Trigger::Or(parts) | Trigger::And(parts) => parts.iter().for_each(|p| p.leaves(out)),
        }
    }

    /// Whether the trigger contains an `or`.
    pub fn has_or(&self) -> bool {
        match self {
            Trigger::Method(_) | Trigger::Label(_) => false,
            Trigger::Or(_) => true,
            Trigger::And(parts) => parts.iter().any(Trigger::has_or),
        }
    }

    fn render(&self, graph: &Graph, out: &mut String) {
        match self {
            Trigger::Method(m) => out.push_str(graph.method(*m).name),
            Trigger::Label(l) => out.push_str(&graph.label(*l).to_string()),
            Trigger::Or(parts) | Trigger::And(parts) => {
                out.push_str(if matches!(self, Trigger::Or(_)) { "or(" } else { "and(" });
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    p.render(graph, out);
                }
                out.push(')');
            }
        }
    }
}

/// An edge of the graph, for drawing and inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Where the event comes from (a method).
    pub from: MethodId,
    /// The method it triggers.
    pub to: MethodId,
    /// The route label carried, for router edges.
    pub label: Option<LabelId>,
    /// Whether the target joins this edge with others in an `and`.
    pub and_join: bool,
}

impl Graph {
    /// The method with this id.
    ///
    /// Ids come from the graph itself, so the index is always in range.
    pub fn method(&self, id: MethodId) -> &MethodDef {
        &self.methods[id.index()]
    }

    /// The label with this id.
    pub fn label(&self, id: LabelId) -> &LabelDef {
        &self.labels[id.index()]
    }

    /// Finds a method by name.
    pub fn method_id(&self, name: &str) -> Option<MethodId> {
        self.methods.iter().position(|m| m.name == name).map(|i| MethodId(i as u16))
    }

    /// Methods that run at kickoff: starts without a trigger, and starts that also listen.
    pub fn starts(&self) -> impl Iterator<Item = MethodId> + '_ {
        self.methods
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_start && (m.trigger.is_none() || m.start_listens) && m.compensates.is_none())
            .map(|(i, _)| MethodId(i as u16))
    }

    /// The trigger of a method written out, e.g. `or(a, Route::B)`.
    pub fn trigger_text(&self, id: MethodId) -> Option<String> {
        self.method(id).trigger.map(|t| {
            let mut s = String::new();
            t.render(self, &mut s);
            s
        })
    }

    /// Every edge: from a method (or, for labels, from each router that can emit the label) to
    /// the method its completion can trigger.
    pub fn edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for (to, m) in self.methods.iter().enumerate() {
            let Some(trigger) = m.trigger else { continue };
            let and_join = matches!(trigger, Trigger::And(_));
            let mut leaves = Vec::new();
            trigger.leaves(&mut leaves);
            for leaf in leaves {
                match leaf {
                    Trigger::Method(from) => edges.push(Edge { from, to: MethodId(to as u16), label: None, and_join }),
                    Trigger::Label(l) => {
                        for (from, r) in self.methods.iter().enumerate() {
                            if r.routes.contains(&l) {
                                edges.push(Edge {
                                    from: MethodId(from as u16),
                                    to: MethodId(to as u16),
                                    label: Some(l),
                                    and_join,
                                });
                            }
                        }
                    }
                    Trigger::Or(_) | Trigger::And(_) => {}
                }
            }
        }
        edges
    }

    /// The graph as a Mermaid flowchart.
    ///
    /// Starts are stadium-shaped, routers are diamonds, compensation methods are dashed.
    pub fn to_mermaid(&self) -> String {
        self.doc().to_mermaid()
    }
}
