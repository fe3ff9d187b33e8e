//! Where runs are kept: the [`Store`] trait, [`MemoryStore`] and, with the default `sqlite`
//! feature, [`SqliteStore`].
//!
//! The model follows the step/lease/journal design of durable-execution engines (DBOS, Hatchet,
//! River): a **run row** holds the run's status and a lease with an **epoch** that fences every
//! write; a **checkpoint** row per commit holds a snapshot (state and executor progress), the
//! newest being the run's current one and the older ones the history a run can be forked from; a
//! **step row** per method activation records its input, output, attempts and status; a
//! **journal** row per effect inside a step holds its recorded result. Every commit is one
//! transaction, fenced by the epoch of the lease it was made under.
//!
//! ```
//! use flow_core::store::{MemoryStore, RunFilter, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_core::store::StoreError> {
//! let store = MemoryStore::new();
//! assert!(store.list_runs(&RunFilter::default()).await?.is_empty());
//! # Ok(())
//! # }
//! ```

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod admission;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod decode;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::graph::GraphDoc;
use crate::journal::TokenUsage;

/// The attribute [`Store`] is declared with, for implementing it without depending on the
/// `async-trait` crate yourself: put `#[flow_core::store::async_trait]` on the `impl`.
pub use async_trait::async_trait;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PgStore, Pgvector, deadpool_postgres, tokio_postgres};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a worker ([`Worker::serve`](crate::Worker::serve)) to run it: submitted and
    /// not started yet, answered, put back in its queue, or parked until a timer or a retry is
    /// due (`available_at_ms`). Holds no lease.
    Queued,
    /// Being executed, or interrupted (crash) while being executed.
    Running,
    /// Waiting for a person's input.
    Paused,
    /// Finished successfully.
    Completed,
    /// A method failed after its retries; resumable.
    Failed,
    /// A method handed the run to a person.
    Escalated,
    /// Stopped for good on request ([`Store::request_cancel`]), after its completed steps were
    /// compensated (unless the request said not to). Terminal, like `Completed`.
    Cancelled,
    /// A method failed for good and every `#[compensate]` undo step of the run's completed
    /// steps ran: the failure was compensated. Terminal, like `Completed`; the run's error holds
    /// the failure and what the undo steps did.
    Compensated,
}

impl RunStatus {
    /// The status as stored (`running`, `paused`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Escalated => "escalated",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Compensated => "compensated",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "paused" => RunStatus::Paused,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "escalated" => RunStatus::Escalated,
            "cancelled" => RunStatus::Cancelled,
            "compensated" => RunStatus::Compensated,
            _ => return None,
        })
    }

    /// Whether the run holds no lease in this status (nothing is executing it).
    pub fn is_at_rest(self) -> bool {
        !matches!(self, RunStatus::Running)
    }

    /// Whether the run has ended for good: completed, cancelled or compensated. Nothing
    /// continues it, and a cancel request for it is refused ([`StoreError::Ended`]).
    ///
    /// ```
    /// use flow_core::store::RunStatus;
    /// assert!(RunStatus::Cancelled.is_terminal() && !RunStatus::Failed.is_terminal());
    /// assert!(RunStatus::Compensated.is_terminal());
    /// assert_eq!(RunStatus::parse("compensated"), Some(RunStatus::Compensated));
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Cancelled | RunStatus::Compensated)
    }

    /// Every status, in the order a run usually goes through them.
    ///
    /// ```
    /// use flow_core::store::RunStatus;
    /// assert!(RunStatus::ALL.iter().all(|s| RunStatus::parse(s.as_str()) == Some(*s)));
    /// ```
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Escalated,
        RunStatus::Cancelled,
        RunStatus::Compensated,
    ];
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one method activation (a step) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Scheduled: its trigger fired; it has not completed. The engine stores a row with this
    /// status only for a step waiting for its next attempt after a failure; a step that has not
    /// run yet is in its run's checkpoint, and `Runner::steps` lists it with this status.
    Ready,
    /// Completed; its output is recorded.
    Completed,
    /// Failed after its retries (or failed and is waiting for its next retry with `attempt` set).
    Failed,
    /// Waiting for a person's input.
    Paused,
    /// Its failure was recorded and the flow went on (`non_critical`).
    Skipped,
    /// An undo step ran for it.
    Compensated,
}

impl StepStatus {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ready => "ready",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Paused => "paused",
            StepStatus::Skipped => "skipped",
            StepStatus::Compensated => "compensated",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ready" => StepStatus::Ready,
            "completed" => StepStatus::Completed,
            "failed" => StepStatus::Failed,
            "paused" => StepStatus::Paused,
            "skipped" => StepStatus::Skipped,
            "compensated" => StepStatus::Compensated,
            _ => return None,
        })
    }
}

/// One method activation as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `method#n`: stable across re-runs; the n-th activation of the method in the run.
    pub step_key: String,
    /// The method.
    pub method: String,
    /// Where it stands.
    pub status: StepStatus,
    /// The payload it was triggered with.
    pub input: Option<Value>,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// The last error, if any attempt failed.
    pub error: Option<String>,
    /// Attempts made so far (failed ones; a completed step counts its successful one too).
    pub attempt: u32,
    /// When its latest attempt started, ms since the Unix epoch (`None`: not recorded, as in
    /// stores written before timings were).
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// When its latest attempt ended, ms since the Unix epoch.
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    /// Tokens of the LLM calls its latest attempt made ([`Journal::report_usage`](crate::Journal::report_usage));
    /// `None` when it made none.
    #[serde(default)]
    pub usage: Option<TokenUsage>,
}

impl StepRecord {
    /// A step with no input, output, error, timings or usage, and no attempt made.
    ///
    /// ```
    /// use flow_core::store::{StepRecord, StepStatus};
    ///
    /// let step = StepRecord { attempt: 1, ..StepRecord::new("greet#1", "greet", StepStatus::Completed) };
    /// assert_eq!(step.duration_ms(), None);
    /// ```
    pub fn new(step_key: impl Into<String>, method: impl Into<String>, status: StepStatus) -> Self {
        StepRecord {
            step_key: step_key.into(),
            method: method.into(),
            status,
            input: None,
            output: None,
            error: None,
            attempt: 0,
            started_at_ms: None,
            finished_at_ms: None,
            usage: None,
        }
    }

    /// How long its latest attempt took, when both ends were recorded.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at_ms?.saturating_sub(self.started_at_ms?))
    }
}

/// How many checkpoints of each run a store keeps unless told otherwise: the newest ones, enough
/// to fork or inspect the recent history of a run, while a run with a large state does not keep
/// a copy of it per step forever. `keep_checkpoints(n)` changes it, `keep_all_checkpoints()`
/// keeps every one.
///
/// ```
/// assert_eq!(flow_core::store::DEFAULT_KEEP_CHECKPOINTS, 50);
/// ```
pub const DEFAULT_KEEP_CHECKPOINTS: usize = 50;

/// The executor's snapshot of a run: everything needed to continue it.
///
/// Both parts are JSON text as the executor encoded it: a store writes them as they are, with
/// no second encoding, and hands them back as it read them.
///
/// ```
/// use flow_core::store::Snapshot;
///
/// let snapshot = Snapshot::encode(&serde_json::json!({ "counter": 3 }), &serde_json::json!({}))?;
/// assert_eq!(snapshot.state.get(), r#"{"counter":3}"#);
/// let state: serde_json::Value = snapshot.state_as()?;
/// assert_eq!(state["counter"], 3);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The state, as JSON.
    pub state: Box<RawValue>,
    /// The executor's progress (pending activations, join progress, call counts), as JSON.
    /// Opaque to stores.
    pub progress: Box<RawValue>,
}

impl Snapshot {
    /// Encodes a state and a progress into a snapshot.
    pub fn encode(state: &impl Serialize, progress: &impl Serialize) -> Result<Self, serde_json::Error> {
        Ok(Snapshot {
            state: serde_json::value::to_raw_value(state)?,
            progress: serde_json::value::to_raw_value(progress)?,
        })
    }

    /// Decodes the state; `serde_json::Value` inspects it without knowing its type.
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.state.get())
    }
}

/// Snapshots are equal when their JSON text is: what a store returns must be byte for byte
/// what was written.
impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.state.get() == other.state.get() && self.progress.get() == other.progress.get()
    }
}

/// A new run to insert.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Its id.
    pub run_id: Uuid,
    /// The flow's registered name.
    pub flow: String,
    /// The run it was forked from, if any.
    pub parent_run_id: Option<Uuid>,
    /// Its first checkpoint.
    pub snapshot: Snapshot,
    /// Step rows the run starts with: the steps a fork inherits from its source (a new run has
    /// none; its starts are in its first checkpoint).
    pub steps: Vec<StepRecord>,
    /// Who runs it first: the creator, under a lease, or any worker serving its queue.
    pub start: Start,
    /// The queue it waits in whenever no one runs it, and its concurrency key.
    pub placement: Placement,
    /// The flow's graph, which the store keeps once per version and the run refers to
    /// ([`Store::run_graph`]); `None` stores none.
    pub graph: Option<Arc<RunGraph>>,
}

/// A flow's graph ready to store: its document, its JSON text and the digest of that text,
/// made once per runner, so that creating a run costs no encoding of it.
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::store::RunGraph;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// # struct S;
/// struct One;
/// #[flow(state = S)]
/// impl One {
///     #[start]
///     async fn go(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
/// }
/// let a = RunGraph::new(One::graph().doc());
/// let b = RunGraph::new(One::graph().doc());
/// assert_eq!(a.digest, b.digest);
/// assert_eq!(serde_json::from_str::<flow_core::graph::GraphDoc>(&a.json)?, a.doc);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RunGraph {
    /// The graph.
    pub doc: GraphDoc,
    /// `doc` as JSON text.
    pub json: String,
    /// [`GraphDoc::digest_of`] the JSON text: with the flow's name, what a store keys it by.
    pub digest: String,
}

impl RunGraph {
    /// Encodes a graph and digests it.
    pub fn new(doc: GraphDoc) -> Self {
        // A GraphDoc holds only strings, numbers and lists: encoding it cannot fail.
        let json = serde_json::to_string(&doc).unwrap_or_default();
        let digest = GraphDoc::digest_of(&json);
        RunGraph { doc, json, digest }
    }
}

/// Who runs a new run first.
///
/// ```
/// use flow_core::store::Start;
/// use std::time::Duration;
///
/// let here = Start::Leased { owner: "host:42:abcd".into(), lease: Duration::from_secs(30) };
/// let anywhere = Start::Queued { available_at_ms: None };
/// # let _ = (here, anywhere);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The creator runs it at once: the run is stored `running` with a lease for `owner` at
    /// epoch 1 (`Runner::kickoff`).
    Leased {
        /// The lease holder.
        owner: String,
        /// How long the lease lasts without renewal.
        lease: Duration,
    },
    /// Stored `queued` with no lease (epoch 0), for whichever worker serving its queue claims it
    /// first, from `available_at_ms` on (`None`: now) (`Runner::submit`).
    Queued {
        /// Not before this time, ms since the Unix epoch.
        available_at_ms: Option<i64>,
    },
}

/// Where a run waits when no one runs it: a named queue, and an optional concurrency key that
/// a queue's per-key limit counts (for example a customer id, so that one customer's runs go
/// one at a time).
///
/// ```
/// use flow_core::store::Placement;
///
/// assert_eq!(Placement::default().queue, "default");
/// let per_customer = Placement::in_queue("invoices").key("customer-42");
/// assert_eq!(per_customer.key.as_deref(), Some("customer-42"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// The queue's name.
    pub queue: String,
    /// The concurrency key, if any.
    pub key: Option<String>,
}

impl Placement {
    /// The queue a run goes to unless told otherwise.
    pub const DEFAULT_QUEUE: &'static str = "default";

    /// A placement in `queue`, with no concurrency key.
    pub fn in_queue(queue: impl Into<String>) -> Self {
        Placement { queue: queue.into(), key: None }
    }

    /// The same placement with a concurrency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

impl Default for Placement {
    fn default() -> Self {
        Placement::in_queue(Placement::DEFAULT_QUEUE)
    }
}

/// A person's answer to a paused run's question, stored until a worker runs the step that asked
/// ([`Store::answer`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The step that asked.
    pub step_key: String,
    /// The answer as given.
    pub value: Value,
}

/// What [`Store::claim_next`] may claim, for whom.
///
/// ```
/// use flow_core::store::{ClaimRequest, QueueLimit};
/// use std::time::Duration;
///
/// let request = ClaimRequest {
///     owner: "host:42:abcd".into(),
///     lease: Duration::from_secs(30),
///     flows: vec!["invoice".into()],
///     queues: vec![QueueLimit::new("invoices").concurrency(8).per_key(1)],
///     max: 4,
/// };
/// # let _ = request;
/// ```
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// The claiming worker (the lease holder).
    pub owner: String,
    /// The lease each claim takes.
    pub lease: Duration,
    /// Only runs of these flows (the ones the worker can run).
    pub flows: Vec<String>,
    /// Only runs in these queues, each with its limits.
    pub queues: Vec<QueueLimit>,
    /// At most this many claims.
    pub max: usize,
}

/// A queue a worker serves, with the limits that hold over all workers together: at most
/// `concurrency` of its runs held under a live lease at once, and at most `per_key` of them
/// with the same concurrency key.
///
/// ```
/// use flow_core::store::QueueLimit;
///
/// let q = QueueLimit::new("emails").concurrency(5).per_key(1);
/// assert_eq!((q.concurrency, q.per_key), (Some(5), Some(1)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueLimit {
    /// The queue.
    pub queue: String,
    /// Runs of the queue held at once, by all workers together (`None`: no limit).
    pub concurrency: Option<u32>,
    /// Runs with the same concurrency key held at once (`None`: no limit).
    pub per_key: Option<u32>,
}

impl QueueLimit {
    /// A queue with no limits.
    pub fn new(queue: impl Into<String>) -> Self {
        QueueLimit { queue: queue.into(), concurrency: None, per_key: None }
    }

    /// At most `n` of its runs held at once, over all workers.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// At most `n` runs with the same concurrency key held at once, over all workers.
    pub fn per_key(mut self, n: u32) -> Self {
        self.per_key = Some(n);
        self
    }
}

/// One atomic checkpoint: everything a method completion changes.
#[derive(Clone, Debug)]
pub struct Commit {
    /// The run.
    pub run_id: Uuid,
    /// The lease epoch this commit was made under; a mismatch is [`StoreError::Fenced`].
    pub epoch: u64,
    /// The run's status after this commit. Any status but `Running` releases the lease.
    pub status: RunStatus,
    /// The new checkpoint.
    pub snapshot: Snapshot,
    /// Steps inserted or updated (by step key).
    pub steps: Vec<StepRecord>,
    /// The step whose completion (or failure) this commit records, for the checkpoint history.
    pub step_key: Option<String>,
    /// The run's final output, when it ends.
    pub output: Option<Value>,
    /// The run's error or escalation reason, when it ends that way.
    pub error: Option<String>,
    /// The pending request for input, when paused.
    pub pause: Option<Value>,
    /// With status [`RunStatus::Queued`]: when the run is due again, ms since the Unix epoch
    /// (`None`: now). A timer or a long retry backoff parks a run this way.
    pub available_at_ms: Option<i64>,
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Its id.
    pub run_id: Uuid,
    /// The flow's name.
    pub flow: String,
    /// The run it was forked from.
    pub parent_run_id: Option<Uuid>,
    /// Where it stands.
    pub status: RunStatus,
    /// The latest checkpoint.
    pub snapshot: Snapshot,
    /// How many commits were made (the state version).
    pub version: u64,
    /// The run's output, once completed.
    pub output: Option<Value>,
    /// The error or escalation reason.
    pub error: Option<String>,
    /// The pending request for input, when paused.
    pub pause: Option<Value>,
    /// The lease holder, if the lease is live or was never released (crash).
    pub lease_owner: Option<String>,
    /// Lease expiry, ms since the Unix epoch.
    pub lease_expires_at_ms: Option<i64>,
    /// The current lease epoch.
    pub epoch: u64,
    /// Its queue and concurrency key.
    pub placement: Placement,
    /// When queued: not before this time, ms since the Unix epoch.
    pub available_at_ms: Option<i64>,
    /// An answer given with [`Store::answer`] that no step has taken yet.
    pub answer: Option<Answer>,
    /// The reason of a cancel requested with [`Store::request_cancel`]: pending while the run
    /// is not `cancelled` yet (a worker compensates and ends it), the reason it ended once it is.
    pub cancel_requested: Option<String>,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Last changed, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A run in a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Its id.
    pub run_id: Uuid,
    /// The flow's name.
    pub flow: String,
    /// Where it stands.
    pub status: RunStatus,
    /// The pending request for input, when paused.
    pub pause: Option<Value>,
    /// Its queue and concurrency key.
    pub placement: Placement,
    /// When queued: not before this time, ms since the Unix epoch.
    pub available_at_ms: Option<i64>,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Last changed, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// The summary of a run read whole.
///
/// ```
/// use flow_core::store::{MemoryStore, RunFilter, RunSummary, Store};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::store::StoreError> {
/// let store = MemoryStore::new();
/// for summary in store.list_runs(&RunFilter::default()).await? {
///     let record = store.load_run(summary.run_id).await?;
///     assert_eq!(RunSummary::from(&record), summary);
/// }
/// # Ok(())
/// # }
/// ```
impl From<&RunRecord> for RunSummary {
    fn from(r: &RunRecord) -> Self {
        RunSummary {
            run_id: r.run_id,
            flow: r.flow.clone(),
            status: r.status,
            pause: r.pause.clone(),
            placement: r.placement.clone(),
            available_at_ms: r.available_at_ms,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

/// A run a listing could not read: its row is damaged (an unknown status, a pause that is not
/// JSON, an id that is not a UUID). The listing goes on with the other runs and reports this
/// one instead of failing.
#[derive(Debug)]
pub struct DamagedRun {
    /// The run; the nil UUID when even its stored id cannot be read (the error then shows the
    /// stored text).
    pub run_id: Uuid,
    /// What is wrong with it, as reading the run alone would report it.
    pub error: StoreError,
}

/// What a listing found: the items it could read, newest first, and the runs it could not.
///
/// It derefs to the slice of items, so it reads like the list of them; check
/// [`Listing::damaged`] to learn of runs that need repair.
///
/// ```
/// use flow_core::store::{MemoryStore, RunFilter, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::store::StoreError> {
/// let store = MemoryStore::new();
/// let listing = store.list_runs_checked(&RunFilter::default()).await?;
/// assert!(listing.is_empty() && listing.damaged.is_empty());
/// for damaged in &listing.damaged {
///     eprintln!("run {} cannot be read: {}", damaged.run_id, damaged.error);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Listing<T> {
    /// What could be read.
    pub items: Vec<T>,
    /// The runs that could not, each with its error.
    pub damaged: Vec<DamagedRun>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing { items: Vec::new(), damaged: Vec::new() }
    }
}

impl<T> std::ops::Deref for Listing<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> IntoIterator for Listing<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a Listing<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// Which runs to list, newest first (by creation time, then by run id, both descending).
///
/// A page of a long listing continues from the last run of the page before: set `after` to
/// [`RunCursor::of`] that run. Runs created at the same millisecond are ordered by id, so no run
/// is listed twice or skipped between pages, and runs created meanwhile (newer) do not shift
/// the pages that follow.
///
/// ```
/// use flow_core::store::{MemoryStore, RunCursor, RunFilter, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::store::StoreError> {
/// let store = MemoryStore::new();
/// let mut filter = RunFilter { limit: Some(100), ..RunFilter::default() };
/// loop {
///     let page = store.list_runs(&filter).await?;
///     // ... show the page ...
///     match page.last() {
///         Some(last) if page.len() == 100 => filter.after = Some(RunCursor::of(last)),
///         _ => break,
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this flow.
    pub flow: Option<String>,
    /// At most this many, newest first (`None`: all).
    pub limit: Option<usize>,
    /// Only runs created at or after this time, ms since the Unix epoch.
    pub created_from_ms: Option<i64>,
    /// Only runs created before this time, ms since the Unix epoch.
    pub created_before_ms: Option<i64>,
    /// Only runs that come after this one in the listing's order (older, or as old with a
    /// smaller id): the next page.
    pub after: Option<RunCursor>,
}

/// Where a page of runs ended: the creation time and id of its last run ([`RunFilter::after`]).
/// Its text form, `<created_at_ms>_<run_id>`, is what a command line or a URL carries.
///
/// ```
/// use flow_core::store::RunCursor;
/// use uuid::Uuid;
///
/// let cursor = RunCursor { created_at_ms: 1_700_000_000_000, run_id: Uuid::nil() };
/// let text = cursor.to_string();
/// assert_eq!(text, "1700000000000_00000000-0000-0000-0000-000000000000");
/// assert_eq!(text.parse::<RunCursor>(), Ok(cursor));
/// assert!("yesterday".parse::<RunCursor>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunCursor {
    /// The run's creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The run's id.
    pub run_id: Uuid,
}

impl RunCursor {
    /// The cursor just past `run`.
    pub fn of(run: &RunSummary) -> Self {
        RunCursor { created_at_ms: run.created_at_ms, run_id: run.run_id }
    }

    /// Whether a run created at `created_at_ms` with id `run_id` comes after this cursor in a
    /// newest-first listing.
    ///
    /// ```
    /// use flow_core::store::RunCursor;
    /// use uuid::Uuid;
    ///
    /// let cursor = RunCursor { created_at_ms: 10, run_id: Uuid::from_u128(5) };
    /// assert!(cursor.precedes(9, Uuid::from_u128(9)));
    /// assert!(cursor.precedes(10, Uuid::from_u128(4)));
    /// assert!(!cursor.precedes(10, Uuid::from_u128(5)));
    /// ```
    pub fn precedes(&self, created_at_ms: i64, run_id: Uuid) -> bool {
        (created_at_ms, run_id) < (self.created_at_ms, self.run_id)
    }
}

impl fmt::Display for RunCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.created_at_ms, self.run_id)
    }
}

impl std::str::FromStr for RunCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("`{s}` is not a page cursor: use the `next` value a listing printed (<created_at_ms>_<run_id>)");
        let (at, id) = s.trim().split_once('_').ok_or_else(bad)?;
        Ok(RunCursor { created_at_ms: at.parse().map_err(|_| bad())?, run_id: Uuid::parse_str(id).map_err(|_| bad())? })
    }
}

/// One entry of a run's checkpoint history.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    /// 1 for the checkpoint written at creation, then one more per commit.
    pub seq: u64,
    /// The step whose completion was recorded.
    pub step_key: Option<String>,
    /// The run's status after it.
    pub status: RunStatus,
    /// When, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Who edited the run's state at this checkpoint, and why ([`Store::edit_state`]); `None`
    /// for a checkpoint the run wrote itself.
    pub edit: Option<EditNote>,
}

/// Who edited a run's state and why, kept with the checkpoint the edit wrote.
///
/// ```
/// use flow_core::store::EditNote;
/// let note = EditNote { author: "alice@example.com".into(), reason: "fixed the address".into() };
/// assert_eq!(note.to_string(), "edited by alice@example.com: fixed the address");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditNote {
    /// Who made the edit.
    pub author: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for EditNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "edited by {}: {}", self.author, self.reason)
    }
}

/// An edit of a stored run's state ([`Store::edit_state`]): the whole new state, made from the
/// run as it was at `version`.
///
/// ```
/// use flow_core::store::{EditNote, StateEdit};
/// let edit = StateEdit {
///     run_id: uuid::Uuid::now_v7(),
///     version: 3,
///     state: serde_json::value::to_raw_value(&serde_json::json!({ "address": "1 Main St" }))?,
///     note: EditNote { author: "alice".into(), reason: "typo in the address".into() },
/// };
/// assert_eq!(edit.version, 3);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StateEdit {
    /// The run.
    pub run_id: Uuid,
    /// The run's version ([`RunRecord::version`]) the edit was made from: a run that moved on
    /// since is refused ([`StoreError::Moved`]).
    pub version: u64,
    /// The new state, as JSON.
    pub state: Box<RawValue>,
    /// Who edits it and why.
    pub note: EditNote,
}

/// A recorded effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The run.
    pub run_id: Uuid,
    /// The step the effect ran in.
    pub step_key: String,
    /// Its position among the step's effects, from 0.
    pub seq: u32,
    /// `llm`, `tool`, `input`, `effect`, ...
    pub kind: String,
    /// Which one (model, tool name, effect name).
    pub name: String,
    /// [`crate::journal::request_hash`] of the request.
    pub request_hash: u64,
    /// The recorded value.
    pub output: Value,
}

/// A lease taken on a run.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The epoch that fences this holder's writes.
    pub epoch: u64,
    /// The run as it was when claimed.
    pub run: RunRecord,
}

/// What went wrong in a store. Nothing already committed is lost by any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such run.
    #[error("run {0} not found in the store; check the id and the store path")]
    NotFound(Uuid),
    /// The run has no checkpoint with this number (never written, or pruned by retention).
    #[error(
        "run {run_id} has no checkpoint {seq} (never written, or pruned by retention); list them with `checkpoints`"
    )]
    CheckpointNotFound {
        /// The run.
        run_id: Uuid,
        /// The checkpoint asked for.
        seq: u64,
    },
    /// A run with this id exists already.
    #[error("run {0} already exists in the store")]
    Duplicate(Uuid),
    /// Another process holds a live lease on the run.
    #[error(
        "run {run_id} is held by `{owner}` until {expires_at_ms} ms since epoch; wait for it to finish or for the lease to expire"
    )]
    Locked {
        /// The run.
        run_id: Uuid,
        /// The holder.
        owner: String,
        /// Lease expiry, ms since the Unix epoch.
        expires_at_ms: i64,
    },
    /// The write was made under a lease that was since taken over.
    #[error(
        "run {run_id}: write fenced, lease epoch {epoch} is no longer current (now {current}); another worker took the run over"
    )]
    Fenced {
        /// The run.
        run_id: Uuid,
        /// The stale epoch.
        epoch: u64,
        /// The current epoch.
        current: u64,
    },
    /// The lease was released: the run came to rest (completed, failed, paused, cancelled)
    /// under this epoch, so there is nothing left to renew.
    #[error(
        "run {run_id}: the lease of epoch {epoch} was released when the run came to rest; claim the run again to work on it"
    )]
    Released {
        /// The run.
        run_id: Uuid,
        /// The epoch whose lease was released.
        epoch: u64,
    },
    /// An answer for a run that does not wait for one (at that step).
    #[error(
        "run {run_id} is {status}{}: the answer was not stored; read its current question before answering",
        waiting_at.as_ref().map(|k| format!(" and waits at step `{k}`")).unwrap_or_default()
    )]
    NotWaiting {
        /// The run.
        run_id: Uuid,
        /// Its status now.
        status: RunStatus,
        /// The step it waits at, when paused at another one.
        waiting_at: Option<String>,
    },
    /// A cancel request for a run that has ended for good (completed, cancelled or
    /// compensated).
    #[error("run {run_id} is {status} already: there is nothing to cancel")]
    Ended {
        /// The run.
        run_id: Uuid,
        /// Its status: completed, cancelled or compensated.
        status: RunStatus,
    },
    /// A state edit for a run that is not paused or failed ([`Store::edit_state`]).
    #[error("run {run_id} is {status}: only a paused or failed run's state can be edited; the state was not changed")]
    NotEditable {
        /// The run.
        run_id: Uuid,
        /// Its status.
        status: RunStatus,
    },
    /// A state edit made from a version of the run that is no longer its latest: the run moved
    /// on (it ran, or another edit came first) after the edit read it.
    #[error(
        "run {run_id} moved on to version {current} after the edit read version {expected}; the state was not \
         changed: read the run again and redo the edit"
    )]
    Moved {
        /// The run.
        run_id: Uuid,
        /// The version the edit was made from.
        expected: u64,
        /// The run's version now.
        current: u64,
    },
    /// A lease renewal found that the run was asked to stop ([`Store::request_cancel`]). The
    /// lease *was* extended: the holder stops the run's steps, compensates its completed ones
    /// and commits it `cancelled`.
    #[error("run {run_id}: cancel requested ({reason}); stop its steps, compensate and end it cancelled")]
    CancelRequested {
        /// The run.
        run_id: Uuid,
        /// The reason given with the request.
        reason: String,
    },
    /// The store does not implement an operation (a store of your own that predates it).
    #[error("this store does not support {what}; use SqliteStore, PgStore or MemoryStore, or implement it")]
    Unsupported {
        /// The operation.
        what: String,
    },
    /// A stored row cannot be read.
    #[error(
        "run {run_id}: stored {what} is corrupt ({detail}); the row was left as it is and other runs are not \
         affected: fork the run from an earlier checkpoint (`Runner::fork`), or repair the row by hand"
    )]
    Corrupt {
        /// The run.
        run_id: Uuid,
        /// Which part.
        what: String,
        /// Why.
        detail: String,
    },
    /// The disk is full; the transaction was rolled back.
    #[error(
        "the store's disk is full ({0}); the last commit was rolled back and nothing stored was lost: free space and resume the run"
    )]
    DiskFull(String),
    /// The store cannot be written.
    #[error("the store is read-only ({0}); check the file's and directory's permissions")]
    ReadOnly(String),
    /// The store file was written by a newer version of flows.
    #[error("the store's schema version {found} is newer than this build supports ({supported}); upgrade flows")]
    SchemaTooNew {
        /// Found in the file.
        found: i64,
        /// Known to this build.
        supported: i64,
    },
    /// The store could not be opened.
    #[error("cannot open the store at {path}: {message}")]
    Open {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
    /// The database file is damaged below the level of rows (SQLite reported corruption).
    #[error(
        "the store file {path} is damaged ({detail}); stop writing to it, keep a copy, and restore from a backup or run `sqlite3 {path} .recover`"
    )]
    FileCorrupt {
        /// The file.
        path: String,
        /// What SQLite reported.
        detail: String,
    },
    /// The store's file was deleted or replaced (or its directory removed) while this process
    /// had it open. SQLite would go on writing to the file it opened, which nobody can open
    /// again, so every write since is refused: a commit that reports success is in the file at
    /// `path`.
    #[error(
        "{}the store file {path} {what} while this process had it open: the last commit is not stored there \
         and was refused, as is every later write; stop this process, restore the file from a backup or \
         point the store at a new file, and resume the run",
        run_prefix(*run_id)
    )]
    Gone {
        /// The run whose write found out, when the store knows it.
        run_id: Option<Uuid>,
        /// The file.
        path: String,
        /// What happened to it: `was deleted`, `was replaced by another file`, ...
        what: String,
    },
    /// Another process kept the database locked through every retry.
    #[error(
        "the store is locked by another process ({0}) and stayed locked after several retries; nothing was written: \
         retry (resume the run) once the lock is released, and look for a stuck process holding the file"
    )]
    Busy(String),
    /// Any other database failure.
    #[error("store failure: {0}")]
    Backend(String),
}

/// `run <id>: ` when the run is known.
fn run_prefix(run_id: Option<Uuid>) -> String {
    run_id.map(|id| format!("run {id}: ")).unwrap_or_default()
}

impl StoreError {
    /// Names the run in an error about the store as a whole (a full disk, a lock, a vanished
    /// file), so the message says which run's write or read it stopped. Errors that name
    /// their run already are returned as they are. A store of your own calls it on the errors
    /// of its run operations, as the SQLite store does.
    ///
    /// ```
    /// use flow_core::store::StoreError;
    /// use uuid::Uuid;
    ///
    /// let run_id = Uuid::now_v7();
    /// let e = StoreError::DiskFull("/data/runs.db: database or disk is full".into()).for_run(run_id);
    /// assert!(e.to_string().contains(&format!("run {run_id}")));
    /// ```
    pub fn for_run(self, run_id: Uuid) -> Self {
        let named = |message: String| {
            if message.contains(&run_id.to_string()) { message } else { format!("run {run_id}: {message}") }
        };
        match self {
            StoreError::DiskFull(m) => StoreError::DiskFull(named(m)),
            StoreError::ReadOnly(m) => StoreError::ReadOnly(named(m)),
            StoreError::Busy(m) => StoreError::Busy(named(m)),
            StoreError::Backend(m) => StoreError::Backend(named(m)),
            StoreError::FileCorrupt { path, detail } => StoreError::FileCorrupt { path, detail: named(detail) },
            StoreError::Gone { run_id: None, path, what } => StoreError::Gone { run_id: Some(run_id), path, what },
            other => other,
        }
    }
}

/// Where runs are kept.
///
/// Every write is one transaction. `commit`, `renew` and `journal_put` are fenced by the lease
/// epoch: a holder whose lease was taken over can no longer change the run.
///
/// An implementation carries [`macro@async_trait`] (re-exported here). A store that wraps
/// another, here to count commits, delegates what it does not change. The methods with a
/// default body (queues and claims, answers, cancel requests, stream logs, a run's graph and
/// journal)
/// answer [`StoreError::Unsupported`] unless a wrapper forwards them too: one that workers,
/// `flows` or the dashboard use must.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
///
/// use flow_core::store::{
///     CheckpointInfo, Claim, Commit, JournalEntry, MemoryStore, NewRun, RunFilter, RunRecord,
///     RunSummary, Snapshot, StepRecord, Store, StoreError, async_trait,
/// };
/// use uuid::Uuid;
///
/// struct Counting<S> {
///     inner: S,
///     commits: AtomicU64,
/// }
///
/// #[async_trait]
/// impl<S: Store> Store for Counting<S> {
///     async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
///         self.commits.fetch_add(1, Ordering::Relaxed);
///         self.inner.commit(commit).await
///     }
///     async fn create_run(&self, run: NewRun) -> Result<u64, StoreError> {
///         self.inner.create_run(run).await
///     }
///     async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
///         self.inner.claim(run_id, owner, lease).await
///     }
///     async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError> {
///         self.inner.renew(run_id, epoch, lease).await
///     }
///     async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
///         self.inner.release(run_id, epoch).await
///     }
///     async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
///         self.inner.load_run(run_id).await
///     }
///     async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
///         self.inner.list_runs(filter).await
///     }
///     async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
///         self.inner.steps(run_id).await
///     }
///     async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
///         self.inner.checkpoints(run_id).await
///     }
///     async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
///         self.inner.load_checkpoint(run_id, seq).await
///     }
///     async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError> {
///         self.inner.journal_get(run_id, step_key, seq).await
///     }
///     async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError> {
///         self.inner.journal_put(entry).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), StoreError> {
/// let store = Counting { inner: MemoryStore::new(), commits: AtomicU64::new(0) };
/// assert!(store.list_runs(&RunFilter::default()).await?.is_empty());
/// assert_eq!(store.commits.load(Ordering::Relaxed), 0);
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a run with its first checkpoint, started as `run.start` says: under a lease for
    /// its owner at epoch 1, or queued with no lease at epoch 0. Returns that epoch.
    async fn create_run(&self, run: NewRun) -> Result<u64, StoreError>;

    /// Takes the lease on a run: succeeds when nobody holds a live lease (not even `owner`
    /// itself, through another execution), bumping the epoch.
    /// A run at rest (completed, failed, paused, escalated) can be claimed too; the caller
    /// decides whether to continue it.
    async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError>;

    /// Extends a held lease. Fails with [`StoreError::Fenced`] when it was taken over, and with
    /// [`StoreError::Released`] when the run came to rest under this epoch (a late renewal must
    /// not give a resting run an expiry again). A store that supports
    /// [`Store::request_cancel`] extends the lease and then answers
    /// [`StoreError::CancelRequested`] while a cancel is pending, so the holder learns of it.
    async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError>;

    /// Gives up the lease held under `epoch` and leaves the run as it is, so that another
    /// worker (or a later call) can claim it at once: for a claim that turned out to have
    /// nothing to do. Fails with [`StoreError::Fenced`] when the run was taken over.
    async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError>;

    /// Writes one checkpoint atomically.
    async fn commit(&self, commit: Commit) -> Result<(), StoreError>;

    /// The run's latest record.
    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError>;

    /// Runs matching a filter, newest first. A run whose row cannot be read is left out (and
    /// logged), so one damaged row never hides the others; [`Store::list_runs_checked`]
    /// reports it.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError>;

    /// Like [`Store::list_runs`], and reports each run whose row cannot be read, by its id,
    /// beside the runs that can. The default lists with `list_runs` and reports nothing: a
    /// store that can hold damaged rows overrides it, and a store wrapping another delegates it.
    async fn list_runs_checked(&self, filter: &RunFilter) -> Result<Listing<RunSummary>, StoreError> {
        Ok(Listing { items: self.list_runs(filter).await?, damaged: Vec::new() })
    }

    /// The run's summary: its flow and status without its snapshot, so it reads even when the
    /// run's latest state is damaged (forking an earlier checkpoint needs no more). The default
    /// loads the whole run.
    async fn run_summary(&self, run_id: Uuid) -> Result<RunSummary, StoreError> {
        Ok(RunSummary::from(&self.load_run(run_id).await?))
    }

    /// The run's step rows, in creation order. The engine writes a step's row when the step
    /// first finishes or fails; `Runner::steps` adds the steps the run has scheduled.
    async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError>;

    /// The run's checkpoint history, oldest first (subject to retention).
    async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError>;

    /// The snapshot saved by checkpoint `seq`.
    async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError>;

    /// The recorded effect at `(step_key, seq)`, if any.
    async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError>;

    /// Records an effect; when one is already recorded at that position, keeps the first and
    /// returns it (first writer wins).
    async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError>;

    /// Claims up to `request.max` runnable runs of `request.flows` in `request.queues`, each as
    /// [`Store::claim`] does (epoch bumped, lease taken for `request.owner`), the longest due
    /// first. Runnable: `queued` and due (`available_at_ms` passed), or `running` with no live
    /// lease (its worker died or gave it back). Each queue's limits hold over every live lease in
    /// the store, whichever worker holds it, even when workers claim at the same moment; a run
    /// another worker is claiming concurrently is skipped, not waited for.
    ///
    /// Each returned claim carries its run as claimed, its status unchanged (`queued`
    /// included) and its answer, if any: the claimant's first commit moves it on.
    async fn claim_next(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let _ = request;
        Err(StoreError::Unsupported { what: "claiming queued runs (claim_next)".into() })
    }

    /// Stores a person's answer to a run paused at step `step_key` and puts the run back in its
    /// queue (status `queued`, due now) for a worker to continue: the step asks again and gets
    /// this answer. Refused with [`StoreError::NotWaiting`] when the run is not paused at that
    /// step or already holds an answer (nothing is written). The next commit clears it.
    async fn answer(&self, run_id: Uuid, step_key: &str, value: Value) -> Result<(), StoreError> {
        let _ = (run_id, step_key, value);
        Err(StoreError::Unsupported { what: "storing answers (answer)".into() })
    }

    /// Puts a failed run back in its queue (status `queued`, due now) for a worker to run its
    /// failed step again. Refused with [`StoreError::NotWaiting`] for a run in any other status
    /// (nothing is written).
    async fn requeue(&self, run_id: Uuid) -> Result<(), StoreError> {
        let _ = run_id;
        Err(StoreError::Unsupported { what: "requeueing runs (requeue)".into() })
    }

    /// Waits until work may have become runnable (a run submitted, answered, released or
    /// requeued, here or, where the store can tell, in another process) or `timeout` passes.
    /// Only an early wake-up: a worker polls [`Store::claim_next`] after it either way, so a
    /// store that cannot tell just sleeps (the default).
    async fn wait_for_work(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    /// Deletes a run with its steps, checkpoints and journal, in one transaction: for pruning
    /// old runs. A run someone is executing (a live lease, whatever its status) is refused with
    /// [`StoreError::Locked`] and left whole; a run whose lease expired (its process died) can
    /// be deleted. Runs forked from it keep their own rows and their `parent_run_id`.
    ///
    /// The default returns [`StoreError::Unsupported`], so a store of your own written before
    /// this method existed still compiles; a store wrapping another delegates it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flow_core::store::{Commit, MemoryStore, NewRun, Placement, RunStatus, Snapshot, Start, Store, StoreError};
    /// use uuid::Uuid;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemoryStore::new();
    /// let run_id = Uuid::now_v7();
    /// let snapshot = Snapshot::encode(&serde_json::json!({}), &serde_json::json!({}))?;
    /// let lease = Duration::from_secs(60);
    /// store
    ///     .create_run(NewRun {
    ///         run_id, flow: "f".into(), parent_run_id: None, snapshot: snapshot.clone(), steps: vec![],
    ///         start: Start::Leased { owner: "w".into(), lease }, placement: Placement::default(), graph: None,
    ///     })
    ///     .await?;
    /// // Still held by its creator: refused.
    /// assert!(matches!(store.delete_run(run_id).await, Err(StoreError::Locked { .. })));
    /// let done = Commit {
    ///     run_id, epoch: 1, status: RunStatus::Completed, snapshot, steps: vec![], step_key: None,
    ///     output: None, error: None, pause: None, available_at_ms: None,
    /// };
    /// store.commit(done).await?;
    /// store.delete_run(run_id).await?;
    /// assert!(matches!(store.load_run(run_id).await, Err(StoreError::NotFound(_))));
    /// # Ok(())
    /// # }
    /// ```
    async fn delete_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        let _ = run_id;
        Err(StoreError::Unsupported { what: "deleting runs (`Store::delete_run`)".to_string() })
    }

    /// Asks a run to stop for good: its completed steps are compensated (their
    /// `#[compensate]` undo steps run, newest first) and it ends `cancelled`, by whoever runs it
    /// next. Records `reason` on the run ([`RunRecord::cancel_requested`]).
    ///
    /// A run at rest (queued, paused, failed, escalated, or parked until a timer) goes back to
    /// its queue due now, for a serving worker (or `Runner::resume`) to compensate and end it.
    /// A running run keeps running until its holder next renews its lease, which then answers
    /// [`StoreError::CancelRequested`]; a commit that would bring it to rest otherwise (paused,
    /// failed, ...) queues it instead, so the request is never lost. A second request keeps the
    /// first reason. A completed or cancelled run is refused with [`StoreError::Ended`].
    ///
    /// ```
    /// use flow_core::store::{MemoryStore, NewRun, Placement, RunStatus, Snapshot, Start, Store};
    /// use uuid::Uuid;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemoryStore::new();
    /// let run_id = Uuid::now_v7();
    /// let snapshot = Snapshot::encode(&serde_json::json!({}), &serde_json::json!({}))?;
    /// store
    ///     .create_run(NewRun {
    ///         run_id, flow: "f".into(), parent_run_id: None, snapshot, steps: vec![],
    ///         start: Start::Queued { available_at_ms: None }, placement: Placement::default(), graph: None,
    ///     })
    ///     .await?;
    /// store.request_cancel(run_id, "ordered by mistake").await?;
    /// let run = store.load_run(run_id).await?;
    /// assert_eq!(run.status, RunStatus::Queued);
    /// assert_eq!(run.cancel_requested.as_deref(), Some("ordered by mistake"));
    /// # Ok(())
    /// # }
    /// ```
    async fn request_cancel(&self, run_id: Uuid, reason: &str) -> Result<(), StoreError> {
        let _ = (run_id, reason);
        Err(StoreError::Unsupported { what: "cancelling runs (`Store::request_cancel`)".to_string() })
    }

    /// Appends items of a run's stream log ([`Runner::keep_stream`](crate::Runner::keep_stream)),
    /// in `seq` order; an item whose `seq` is stored already is left as it is. With `keep_last`,
    /// only the newest `keep_last` items of the run are kept afterwards. The log is deleted
    /// with the run ([`Store::delete_run`]).
    ///
    /// ```
    /// # use flow_core::store::{MemoryStore, Store, StreamRecord};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = MemoryStore::new();
    /// let run_id = uuid::Uuid::now_v7();
    /// // A run the store does not hold has no log to append to.
    /// let item = StreamRecord { seq: 0, at_ms: 0, item: serde_json::json!({}) };
    /// assert!(store.stream_append(run_id, vec![item], None).await.is_err());
    /// # Ok(()) }
    /// ```
    async fn stream_append(
        &self,
        run_id: Uuid,
        items: Vec<StreamRecord>,
        keep_last: Option<u64>,
    ) -> Result<(), StoreError> {
        let _ = (run_id, items, keep_last);
        Err(StoreError::Unsupported { what: "keeping run streams (`Store::stream_append`)".to_string() })
    }

    /// Up to `limit` items of a run's stream log from `from_seq` on, oldest first (none for a
    /// run the store does not hold).
    ///
    /// ```
    /// # use flow_core::store::{MemoryStore, Store};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let items = MemoryStore::new().stream_read(uuid::Uuid::now_v7(), 0, 100).await?;
    /// assert!(items.is_empty());
    /// # Ok(()) }
    /// ```
    async fn stream_read(&self, run_id: Uuid, from_seq: u64, limit: usize) -> Result<Vec<StreamRecord>, StoreError> {
        let _ = (run_id, from_seq, limit);
        Err(StoreError::Unsupported { what: "reading run streams (`Store::stream_read`)".to_string() })
    }

    /// The `seq` of the newest item of a run's stream log, if it has one.
    ///
    /// ```
    /// # use flow_core::store::{MemoryStore, Store};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// assert_eq!(MemoryStore::new().stream_last_seq(uuid::Uuid::now_v7()).await?, None);
    /// # Ok(()) }
    /// ```
    async fn stream_last_seq(&self, run_id: Uuid) -> Result<Option<u64>, StoreError> {
        let _ = run_id;
        Err(StoreError::Unsupported { what: "reading run streams (`Store::stream_last_seq`)".to_string() })
    }

    /// Keeps `traceparent` (a W3C trace context, `00-{trace id}-{span id}-{flags}`) as the run's
    /// trace context, unless the run has one already: the first execution's wins, so every
    /// later execution of the run, in any process and however much later, continues the trace
    /// it started. [`StoreError::NotFound`] when there is no such run. The runner calls it
    /// with feature `otel` when the run's span is exported.
    ///
    /// ```
    /// # use flow_core::store::{MemoryStore, Store, StoreError};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let unknown = uuid::Uuid::now_v7();
    /// let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// assert!(matches!(MemoryStore::new().set_trace_context(unknown, tp).await, Err(StoreError::NotFound(_))));
    /// # Ok(()) }
    /// ```
    async fn set_trace_context(&self, run_id: Uuid, traceparent: &str) -> Result<(), StoreError> {
        let _ = (run_id, traceparent);
        Err(StoreError::Unsupported { what: "keeping trace contexts (`Store::set_trace_context`)".to_string() })
    }

    /// The trace context kept with [`Store::set_trace_context`], if any.
    /// [`StoreError::NotFound`] when there is no such run.
    ///
    /// ```
    /// # use flow_core::store::{MemoryStore, Store, StoreError};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let unknown = uuid::Uuid::now_v7();
    /// assert!(matches!(MemoryStore::new().trace_context(unknown).await, Err(StoreError::NotFound(_))));
    /// # Ok(()) }
    /// ```
    async fn trace_context(&self, run_id: Uuid) -> Result<Option<String>, StoreError> {
        let _ = run_id;
        Err(StoreError::Unsupported { what: "reading trace contexts (`Store::trace_context`)".to_string() })
    }

    /// The graph the run was created with (see [`NewRun::graph`]): `None` for a run created
    /// without one, as runs stored before graphs were. [`StoreError::NotFound`] when there is
    /// no such run.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, Store};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct One;
    /// #[flow(state = S)]
    /// impl One {
    ///     #[start]
    ///     async fn go(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = std::sync::Arc::new(MemoryStore::new());
    /// let run = Runner::new(One).with_shared_store(store.clone()).kickoff(S).await?.completed()?;
    /// let graph = store.run_graph(run.run_id).await?.ok_or("no graph stored")?;
    /// assert_eq!(graph, One::graph().doc());
    /// # Ok(())
    /// # }
    /// ```
    async fn run_graph(&self, run_id: Uuid) -> Result<Option<GraphDoc>, StoreError> {
        let _ = run_id;
        Err(StoreError::Unsupported { what: "reading a run's graph (`Store::run_graph`)".to_string() })
    }

    /// Every effect a run journaled, ordered by step key and then position: what a program
    /// without the flow's code shows of a run's LLM and tool calls, in one read rather than one
    /// [`Store::journal_get`] per entry. [`StoreError::NotFound`] when there is no such run.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, Store};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct Pay;
    /// #[flow(state = S)]
    /// impl Pay {
    ///     #[start]
    ///     async fn charge(&self, cx: &Ctx<S>) -> Result<String> {
    ///         cx.effect("charge_card", |_key| async { Ok("ch_1".to_string()) }).await
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = std::sync::Arc::new(MemoryStore::new());
    /// let run = Runner::new(Pay).with_shared_store(store.clone()).kickoff(S).await?.completed()?;
    /// let journal = store.journal(run.run_id).await?;
    /// assert_eq!((journal[0].step_key.as_str(), journal[0].name.as_str()), ("charge#1", "charge_card"));
    /// # Ok(())
    /// # }
    /// ```
    async fn journal(&self, run_id: Uuid) -> Result<Vec<JournalEntry>, StoreError> {
        let _ = run_id;
        Err(StoreError::Unsupported { what: "reading a run's journal (`Store::journal`)".to_string() })
    }

    /// Writes a checkpoint of its own holding a person's edit of a run's state, with who made
    /// it and why ([`CheckpointInfo::edit`]), keeping the run's progress and status: the next
    /// resume continues from the edited state. Only a paused or failed run at rest is edited:
    /// one held under a live lease is refused with [`StoreError::Locked`], one in another
    /// status with [`StoreError::NotEditable`], one that moved on since `edit.version` with
    /// [`StoreError::Moved`]. Returns the new checkpoint's number (the run's new version).
    /// [`Runner::update_state`](crate::Runner::update_state) is the typed way in.
    ///
    /// ```
    /// use flow_core::store::{EditNote, MemoryStore, StateEdit, Store, StoreError};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemoryStore::new();
    /// let edit = StateEdit {
    ///     run_id: uuid::Uuid::now_v7(),
    ///     version: 1,
    ///     state: serde_json::value::to_raw_value(&serde_json::json!({}))?,
    ///     note: EditNote { author: "alice".into(), reason: "no such run".into() },
    /// };
    /// assert!(matches!(store.edit_state(edit).await, Err(StoreError::NotFound(_))));
    /// # Ok(())
    /// # }
    /// ```
    async fn edit_state(&self, edit: StateEdit) -> Result<u64, StoreError> {
        let _ = edit;
        Err(StoreError::Unsupported { what: "editing a run's state (`Store::edit_state`)".to_string() })
    }

    /// Stores a memory record ([`crate::memory`]) and returns whether it was new: a record
    /// whose id is stored already is left as it is, so storing again after an ambiguous
    /// failure is safe. Records expired by now are deleted in the same write. Memory is not
    /// tied to a run: [`Store::delete_run`] leaves it.
    ///
    /// ```
    /// use flow_core::memory::MemoryRecord;
    /// use flow_core::store::{MemoryStore, Store};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = MemoryStore::new();
    /// let record = MemoryRecord::new("r1", "company/acme", "Acme sells rockets", vec![1.0, 0.0]);
    /// assert!(store.memory_put(record.clone()).await?);
    /// assert!(!store.memory_put(record).await?);
    /// # Ok(()) }
    /// ```
    async fn memory_put(&self, record: crate::memory::MemoryRecord) -> Result<bool, StoreError> {
        let _ = record;
        Err(StoreError::Unsupported { what: "memory (`Store::memory_put`)".to_string() })
    }

    /// The `k` records that rank best for a search, best first, scored as the
    /// [`crate::memory`] docs say; records expired at `search.now_ms` are left out.
    ///
    /// ```
    /// use flow_core::memory::{MemoryRecord, MemorySearch, Weights};
    /// use flow_core::store::{MemoryStore, Store};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = MemoryStore::new();
    /// store.memory_put(MemoryRecord::new("r1", "company/acme", "rockets", vec![1.0, 0.0])).await?;
    /// store.memory_put(MemoryRecord::new("r2", "company/globex", "pumps", vec![0.0, 1.0])).await?;
    /// let search = MemorySearch {
    ///     scope: "company".into(), query: String::new(), subscopes: true, filter: Default::default(),
    ///     embedding: vec![0.9, 0.1],
    ///     k: 1, weights: Weights::default(), now_ms: 0,
    /// };
    /// assert_eq!(store.memory_search(&search).await?[0].id, "r1");
    /// # Ok(()) }
    /// ```
    async fn memory_search(
        &self,
        search: &crate::memory::MemorySearch,
    ) -> Result<Vec<crate::memory::Recalled>, StoreError> {
        let _ = search;
        Err(StoreError::Unsupported { what: "memory (`Store::memory_search`)".to_string() })
    }

    /// Erases memory records and returns how many.
    ///
    /// ```
    /// use flow_core::memory::{Forget, MemoryRecord};
    /// use flow_core::store::{MemoryStore, Store};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = MemoryStore::new();
    /// store.memory_put(MemoryRecord::new("r1", "company/acme", "rockets", vec![1.0])).await?;
    /// assert_eq!(store.memory_forget(&Forget::Scope("company".into())).await?, 1);
    /// # Ok(()) }
    /// ```
    async fn memory_forget(&self, forget: &crate::memory::Forget) -> Result<u64, StoreError> {
        let _ = forget;
        Err(StoreError::Unsupported { what: "memory (`Store::memory_forget`)".to_string() })
    }

    /// Deletes the memory records expired at `now_ms` and returns how many.
    ///
    /// ```
    /// use flow_core::memory::MemoryRecord;
    /// use flow_core::store::{MemoryStore, Store};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = MemoryStore::new();
    /// let mut record = MemoryRecord::new("r1", "notes", "short-lived", vec![1.0]);
    /// record.expires_at_ms = Some(record.created_at_ms + 60_000);
    /// store.memory_put(record.clone()).await?;
    /// assert_eq!(store.memory_purge_expired(record.created_at_ms + 120_000).await?, 1);
    /// # Ok(()) }
    /// ```
    async fn memory_purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        let _ = now_ms;
        Err(StoreError::Unsupported { what: "memory (`Store::memory_purge_expired`)".to_string() })
    }
}

/// Checks a run about to be edited ([`Store::edit_state`]) as every store does: at rest,
/// paused or failed, at the version the edit was made from.
pub(crate) fn check_editable(run: &RunRecord, edit: &StateEdit, now: i64) -> Result<(), StoreError> {
    if let (Some(owner), Some(expires_at_ms)) = (&run.lease_owner, run.lease_expires_at_ms)
        && expires_at_ms > now
    {
        return Err(StoreError::Locked { run_id: run.run_id, owner: owner.clone(), expires_at_ms });
    }
    if !matches!(run.status, RunStatus::Paused | RunStatus::Failed) {
        return Err(StoreError::NotEditable { run_id: run.run_id, status: run.status });
    }
    if run.version != edit.version {
        return Err(StoreError::Moved { run_id: run.run_id, expected: edit.version, current: run.version });
    }
    Ok(())
}

/// Whether a run whose commit brings it to `status` goes back to its queue instead, because a
/// cancel is pending: whoever claims it next compensates it and ends it cancelled.
pub(crate) fn requeued_for_cancel(status: RunStatus) -> bool {
    matches!(status, RunStatus::Paused | RunStatus::Failed | RunStatus::Escalated | RunStatus::Queued)
}

/// One stored item of a run's stream log: what [`Runner::attach`](crate::Runner::attach)
/// reads back. `item` is a [`RunItem`](crate::stream::RunItem) as JSON.
///
/// ```
/// let r = flow_core::store::StreamRecord { seq: 3, at_ms: 0, item: serde_json::json!({"kind": "custom"}) };
/// assert_eq!(r.seq, 3);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    /// The item's number in its run, from 0, in the order the run made them.
    pub seq: u64,
    /// When it was made, in ms since the Unix epoch.
    pub at_ms: i64,
    /// The item, as JSON.
    pub item: Value,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
