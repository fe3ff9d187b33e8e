//! The graph as data: what a program without the flow's code needs to draw a run's flow and
//! explain it (a dashboard, `flows plot`). Stores keep one per flow version, and every run
//! refers to the one it was created with.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backoff, DEFAULT_STEP_TIMEOUT, Graph, MethodDef, OnFailure, RetryPolicy, RouteEnd, Trigger};

/// The version of the [`GraphDoc`] layout; a reader that finds a newer one should say so
/// rather than guess.
pub const GRAPH_FORMAT: u32 = 1;

/// A flow's graph as plain data: serializable, comparable, and free of `'static` references, so
/// it can be stored with a run and read back by a program that does not have the flow.
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::graph::{GraphDoc, TriggerDoc};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S;
/// struct Hello;
///
/// #[flow(state = S)]
/// impl Hello {
///     #[start]
///     async fn greet(&self, _cx: &Ctx<S>) -> Result<String> { Ok("hi".into()) }
///     #[listen(greet)]
///     async fn shout(&self, _cx: &Ctx<S>, text: String) -> Result<String> { Ok(text.to_uppercase()) }
/// }
///
/// let doc = Hello::graph().doc();
/// assert_eq!(doc.methods[1].trigger, Some(TriggerDoc::Method { name: "greet".into() }));
/// let json = serde_json::to_string(&doc)?;
/// let back: GraphDoc = serde_json::from_str(&json)?;
/// assert_eq!(back, doc);
/// assert_eq!(back.to_mermaid(), Hello::graph().to_mermaid());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphDoc {
    /// [`GRAPH_FORMAT`] when written.
    pub format: u32,
    /// The flow's registered name.
    pub name: String,
    /// The Rust type name of the state.
    pub state_type: String,
    /// Every method, in declaration order.
    pub methods: Vec<MethodDoc>,
    /// How many times one method may be called in one run.
    pub max_calls: u32,
    /// `cancel_running` or `finish_running`: what a failure does to the methods still running.
    pub on_failure: String,
}

/// One method of a [`GraphDoc`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodDoc {
    /// The method's name.
    pub name: String,
    /// `#[start]`.
    pub start: bool,
    /// `#[start] #[listen(trigger)]`: a start that runs at kickoff and again each time its
    /// trigger fires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_listens: bool,
    /// `#[router]`.
    pub router: bool,
    /// `#[compensate(method)]`: the method this one undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensates: Option<String>,
    /// A plain `fn`, run on the blocking thread pool.
    #[serde(default)]
    pub blocking: bool,
    /// What makes it run; `None` for unconditional starts and undo steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerDoc>,
    /// The output type as written; for routers, the route type.
    pub output_type: String,
    /// The payload parameter type as written, when it takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_type: Option<String>,
    /// For routers: every route the flow knows it can emit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteDoc>,
    /// For routers: the routes that end the branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ends: Vec<RouteEndDoc>,
    /// The retry policy in force (the method's own, else the flow's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDoc>,
    /// The time limit of one attempt in force, in milliseconds; `None` is no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `non_critical`: its failure is recorded and the flow goes on.
    #[serde(default)]
    pub non_critical: bool,
}

impl MethodDoc {
    /// What the method is, as shown under its name in a drawing: `start`, `router`,
    /// `undo step`, joined with ` · `, or `listener` (`start · listener` for a start that also
    /// listens).
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
    /// assert_eq!(One::graph().doc().methods[0].kind(), "start");
    /// ```
    pub fn kind(&self) -> String {
        let mut kind = Vec::new();
        if self.start {
            kind.push("start");
        }
        if self.start_listens {
            kind.push("listener");
        }
        if self.router {
            kind.push("router");
        }
        if self.compensates.is_some() {
            kind.push("undo step");
        }
        if kind.is_empty() {
            kind.push("listener");
        }
        kind.join(" · ")
    }
}

/// A route label: one variant of a route enum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDoc {
    /// The route enum as written (`Quality`).
    pub route_type: String,
    /// The variant (`Sufficient`).
    pub variant: String,
}

impl fmt::Display for RouteDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.route_type, self.variant)
    }
}

/// What makes a method run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerDoc {
    /// The completion of a method.
    Method {
        /// The method.
        name: String,
    },
    /// A router returning this route.
    Route {
        /// The route.
        route: RouteDoc,
    },
    /// Fires once per wave, on the first of its parts.
    Or {
        /// The parts.
        parts: Vec<TriggerDoc>,
    },
    /// Fires when every part has fired since it last fired.
    And {
        /// The parts.
        parts: Vec<TriggerDoc>,
    },
}

impl TriggerDoc {
    fn leaves<'a>(&'a self, out: &mut Vec<&'a TriggerDoc>) {
        match self {
            TriggerDoc::Method { .. } | TriggerDoc::Route { .. } => out.push(self),
            TriggerDoc::Or { parts } | TriggerDoc::And { parts } => parts.iter().for_each(|p| p.leaves(out)),
        }
    }
}

/// Written out as in the flow: `or(a, Route::B)`.
impl fmt::Display for TriggerDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerDoc::Method { name } => f.write_str(name),
            TriggerDoc::Route { route } => route.fmt(f),
            TriggerDoc::Or { parts } | TriggerDoc::And { parts } => {
                f.write_str(if matches!(self, TriggerDoc::Or { .. }) { "or(" } else { "and(" })?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    p.fmt(f)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A router's route that ends its branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "variant", rename_all = "snake_case")]
pub enum RouteEndDoc {
    /// A variant listed in `terminal(...)`.
    Variant(String),
    /// A bare `terminal`: every variant no listener handles.
    Unhandled,
    /// The router returns an `Option`, and `None` routes nowhere.
    None,
}

impl RouteEndDoc {
    /// The text an end marker's edge is labelled with (see [`RouteEnd::text`]).
    pub fn text(&self) -> &str {
        match self {
            RouteEndDoc::Variant(v) => v,
            RouteEndDoc::Unhandled => RouteEnd::Unhandled.text(),
            RouteEndDoc::None => RouteEnd::None.text(),
        }
    }
}

/// A retry policy, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryDoc {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Delay before the first retry.
    pub initial_ms: u64,
    /// Largest delay (equal to `initial_ms` for a fixed backoff).
    pub max_ms: u64,
    /// Whether the delay doubles between retries.
    pub exponential: bool,
    /// Whether delays are randomised.
    pub jitter: bool,
    /// Total attempts for a reply that does not parse.
    pub invalid_reply_attempts: u32,
}

/// An edge of a [`GraphDoc`], by method index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocEdge {
    /// The method whose completion (or route) fires it.
    pub from: usize,
    /// The method it triggers.
    pub to: usize,
    /// The route carried, for a router's edge.
    pub route: Option<RouteDoc>,
    /// Whether the target joins this edge with others in an `and`.
    pub and_join: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&RetryPolicy> for RetryDoc {
    fn from(p: &RetryPolicy) -> Self {
        let (initial, max, exponential) = match p.backoff {
            Backoff::Fixed(d) => (d, d, false),
            Backoff::Exponential { initial, max } => (initial, max, true),
        };
        RetryDoc {
            attempts: p.attempts,
            initial_ms: ms(initial),
            max_ms: ms(max),
            exponential,
            jitter: p.jitter,
            invalid_reply_attempts: p.invalid_reply_attempts,
        }
    }
}

impl Graph {
    /// This graph as data ([`GraphDoc`]).
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
    /// assert_eq!((doc.name.as_str(), doc.methods.len()), ("One", 1));
    /// ```
    pub fn doc(&self) -> GraphDoc {
        GraphDoc::from(self)
    }

    fn trigger_doc(&self, t: &Trigger) -> TriggerDoc {
        match t {
            Trigger::Method(m) => TriggerDoc::Method { name: self.method(*m).name.to_owned() },
            Trigger::Label(l) => TriggerDoc::Route { route: self.route_doc(l.index()) },
            Trigger::Or(parts) => TriggerDoc::Or { parts: parts.iter().map(|p| self.trigger_doc(p)).collect() },
            Trigger::And(parts) => TriggerDoc::And { parts: parts.iter().map(|p| self.trigger_doc(p)).collect() },
        }
    }

    fn route_doc(&self, label: usize) -> RouteDoc {
        let l = &self.labels[label];
        RouteDoc { route_type: l.route_type.to_owned(), variant: l.variant.to_owned() }
    }

    fn method_doc(&self, m: &MethodDef) -> MethodDoc {
        let timeout = m.policy.timeout.or(self.options.timeout).unwrap_or(DEFAULT_STEP_TIMEOUT);
        MethodDoc {
            name: m.name.to_owned(),
            start: m.is_start,
            start_listens: m.is_start && m.start_listens,
            router: m.is_router,
            compensates: m.compensates.map(|c| self.method(c).name.to_owned()),
            blocking: m.blocking,
            trigger: m.trigger.as_ref().map(|t| self.trigger_doc(t)),
            output_type: m.output_type.to_owned(),
            payload_type: m.payload_type.map(str::to_owned),
            routes: m.routes.iter().map(|l| self.route_doc(l.index())).collect(),
            ends: m
                .ends
                .iter()
                .map(|e| match e {
                    RouteEnd::Variant(v) => RouteEndDoc::Variant((*v).to_owned()),
                    RouteEnd::Unhandled => RouteEndDoc::Unhandled,
                    RouteEnd::None => RouteEndDoc::None,
                })
                .collect(),
            retry: m.policy.retry.or(self.options.retry).as_ref().map(RetryDoc::from),
            timeout_ms: (timeout != Duration::MAX).then(|| ms(timeout)),
            non_critical: m.policy.non_critical,
        }
    }
}

impl From<&Graph> for GraphDoc {
    fn from(g: &Graph) -> Self {
        GraphDoc {
            format: GRAPH_FORMAT,
            name: g.name.to_owned(),
            state_type: g.state_type.to_owned(),
            methods: g.methods.iter().map(|m| g.method_doc(m)).collect(),
            max_calls: g.options.max_calls,
            on_failure: match g.options.on_failure {
                OnFailure::CancelRunning => "cancel_running",
                OnFailure::FinishRunning => "finish_running",
            }
            .to_owned(),
        }
    }
}

impl GraphDoc {
    /// The index of the method with this name.
    pub fn method_index(&self, name: &str) -> Option<usize> {
        self.methods.iter().position(|m| m.name == name)
    }

    /// Every edge, in the order [`Graph::edges`] gives them: for each method, the leaves of its
    /// trigger depth first; a route leaf comes from every router that can emit the route.
    pub fn edges(&self) -> Vec<DocEdge> {
        let mut edges = Vec::new();
        for (to, m) in self.methods.iter().enumerate() {
            let Some(trigger) = &m.trigger else { continue };
            let and_join = matches!(trigger, TriggerDoc::And { .. });
            let mut leaves = Vec::new();
            trigger.leaves(&mut leaves);
            for leaf in leaves {
                match leaf {
                    TriggerDoc::Method { name } => {
                        if let Some(from) = self.method_index(name) {
                            edges.push(DocEdge { from, to, route: None, and_join });
                        }
                    }
                    TriggerDoc::Route { route } => {
                        for (from, r) in self.methods.iter().enumerate() {
                            if r.routes.contains(route) {
                                edges.push(DocEdge { from, to, route: Some(route.clone()), and_join });
                            }
                        }
                    }
                    TriggerDoc::Or { .. } | TriggerDoc::And { .. } => {}
                }
            }
        }
        edges
    }

    /// The graph as a Mermaid flowchart, as [`Graph::to_mermaid`] draws it.
    pub fn to_mermaid(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("flowchart TD\n");
        for m in &self.methods {
            let name = &m.name;
            let _ = if m.router {
                writeln!(out, "    {name}{{{name}}}")
            } else if m.start {
                writeln!(out, "    {name}([{name}])")
            } else {
                writeln!(out, "    {name}[{name}]")
            };
        }
        for e in self.edges() {
            let from = &self.methods[e.from].name;
            let to = &self.methods[e.to].name;
            let _ = match &e.route {
                Some(r) => writeln!(out, "    {from} -->|{}| {to}", r.variant),
                None if e.and_join => writeln!(out, "    {from} -->|and| {to}"),
                None => writeln!(out, "    {from} --> {to}"),
            };
        }
        for m in &self.methods {
            for (i, end) in m.ends.iter().enumerate() {
                let _ = writeln!(out, "    {0} -->|{1}| {0}_end{i}(((end)))", m.name, end.text());
            }
        }
        for m in &self.methods {
            if let Some(c) = &m.compensates {
                let _ = writeln!(out, "    {} -. undo .-> {c}", m.name);
            }
        }
        out
    }

    /// A short digest of the graph's JSON text (16 hex digits): equal graphs have equal digests,
    /// so a store keeps one copy per flow version.
    pub fn digest_of(json: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}
