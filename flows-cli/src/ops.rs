//! The operations that change a run from outside its flow's code: answer a paused run, cancel
//! a run, retry a failed one. Shared by the `flows` command line and the dashboard, over any
//! [`Store`]; each checks what it can before it writes anything, and its error names the run
//! and says what to do.
//!
//! ```
//! use flow_core::store::{MemoryStore, Store};
//! use flows_cli::ops::{self, OpError};
//! use uuid::Uuid;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let missing = Uuid::now_v7();
//! let e = ops::retry(&store, missing).await.err();
//! assert!(matches!(e, Some(OpError::Store(_))));
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use flow_core::PauseRequest;
use flow_core::store::{
    Commit, DamagedRun, RunCursor, RunFilter, RunStatus, RunSummary, StepStatus, Store, StoreError,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// One way an answer does not fit the schema its question stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where in the answer, as a JSON Pointer (`""` is the whole answer).
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() { "(the whole answer)" } else { self.pointer.as_str() };
        write!(f, "{at}: {}", self.message)
    }
}

/// Why an operation was refused or failed. Nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The run is not paused, so it takes no answer.
    #[error("run {run_id} is {status}, not paused: it waits for no answer and nothing was written; {advice}")]
    NotPaused {
        /// The run.
        run_id: Uuid,
        /// Its status.
        status: RunStatus,
        /// What to do instead.
        advice: String,
    },
    /// The answer does not fit the schema of the type the step asks for.
    #[error(
        "run {run_id}: the answer does not fit what step `{step_key}` asks for, so nothing was written and the run \
         stays paused; fix these and answer again:\n{}",
        violations.iter().map(|v| format!("  {v}")).collect::<Vec<_>>().join("\n")
    )]
    InvalidAnswer {
        /// The run.
        run_id: Uuid,
        /// The step that asked.
        step_key: String,
        /// Each violation, with where it is.
        violations: Vec<Violation>,
    },
    /// The run's stored question cannot be read (no step key, a schema that does not compile).
    #[error(
        "run {run_id}: its stored question cannot be used ({detail}); nothing was written: inspect it with `flows show {run_id}`"
    )]
    BadQuestion {
        /// The run.
        run_id: Uuid,
        /// What is wrong.
        detail: String,
    },
    /// The run has ended (completed or cancelled).
    #[error("run {run_id} is {status} already: there is nothing to cancel, and nothing was written")]
    Ended {
        /// The run.
        run_id: Uuid,
        /// Its status.
        status: RunStatus,
    },
    /// A cancel without compensation for a run some worker is executing.
    #[error(
        "run {run_id} is being executed by `{owner}`, so it cannot be ended without compensation at once; nothing was \
         written: cancel it with compensation (its worker then stops it), or wait until it is at rest"
    )]
    Executing {
        /// The run.
        run_id: Uuid,
        /// The lease holder.
        owner: String,
    },
    /// Only a failed run can be retried.
    #[error(
        "run {run_id} is {status}, not failed: only a failed run can be retried, and nothing was written; {advice}"
    )]
    NotFailed {
        /// The run.
        run_id: Uuid,
        /// Its status.
        status: RunStatus,
        /// What to do instead.
        advice: String,
    },
    /// The store failed or refused (no such run, unavailable, damaged row).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`answer`] stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answered {
    /// The run, now queued for a worker to continue it with the answer.
    pub run_id: Uuid,
    /// The step that asked.
    pub step_key: String,
    /// Whether the answer was checked against a stored schema (runs paused by older builds
    /// store none, and any JSON is accepted then).
    pub validated: bool,
}

/// How [`cancel`] cancels.
///
/// ```
/// let options = flows_cli::ops::CancelOptions::new("ordered twice").no_compensate();
/// assert!(!options.compensate);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelOptions {
    /// Why; stored on the run.
    pub reason: String,
    /// Run the undo steps of the completed steps first (the default). Without, a run at rest
    /// ends `cancelled` at once, its completed steps left as they are.
    pub compensate: bool,
}

impl CancelOptions {
    /// Cancel with compensation, for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        CancelOptions { reason: reason.into(), compensate: true }
    }

    /// End the run at once, without running any undo step.
    pub fn no_compensate(mut self) -> Self {
        self.compensate = false;
        self
    }
}

/// What [`cancel`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cancel {
    /// The run.
    pub run_id: Uuid,
    /// Its status before.
    pub was: RunStatus,
    /// Its status now: `cancelled` (ended at once, without compensation), `queued` (waiting for
    /// a worker to compensate and end it) or `running` (its worker stops it at its next lease
    /// renewal).
    pub status: RunStatus,
    /// Whether its completed steps are compensated.
    pub compensate: bool,
}

/// What [`retry`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// The run, now queued.
    pub run_id: Uuid,
    /// The failed steps a worker runs again, with a fresh retry budget.
    pub failed_steps: Vec<String>,
}

/// One page of a listing ([`page`]).
#[derive(Debug, Default)]
pub struct RunsPage {
    /// The runs, newest first.
    pub runs: Vec<RunSummary>,
    /// The cursor of the next page (its [`RunFilter::after`]), when more runs match.
    pub next: Option<RunCursor>,
    /// Runs whose rows cannot be read, left out of `runs`.
    pub damaged: Vec<DamagedRun>,
}

/// One page of runs in any of `statuses` (none: every status) matching the rest of `filter`
/// (flow, creation-time bounds, the cursor `after`), newest first, at most `limit` of them
/// (0: all). Each status is a keyset range of its own index in the store, so a page costs the
/// same at the start of 100,000 runs as at their end.
///
/// ```
/// use flow_core::store::{MemoryStore, RunFilter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flows_cli::ops::OpError> {
/// let store = MemoryStore::new();
/// let first = flows_cli::ops::page(&store, &[], RunFilter::default(), 50).await?;
/// assert!(first.runs.is_empty() && first.next.is_none());
/// # Ok(())
/// # }
/// ```
pub async fn page(
    store: &dyn Store,
    statuses: &[RunStatus],
    filter: RunFilter,
    limit: usize,
) -> Result<RunsPage, OpError> {
    let wanted = (limit > 0).then_some(limit);
    // One more than the limit, to know whether there is a next page.
    let base = RunFilter { limit: wanted.map(|l| l.saturating_add(1)), ..filter };
    let mut each: Vec<Option<RunStatus>> = Vec::new();
    for s in statuses {
        if !each.contains(&Some(*s)) {
            each.push(Some(*s));
        }
    }
    if each.is_empty() {
        each.push(None);
    }
    let mut page = RunsPage::default();
    for status in each {
        let listing = store.list_runs_checked(&RunFilter { status, ..base.clone() }).await?;
        page.runs.extend(listing.items);
        page.damaged.extend(listing.damaged);
    }
    page.runs.sort_by_key(|r| std::cmp::Reverse((r.created_at_ms, r.run_id)));
    if let Some(l) = wanted
        && page.runs.len() > l
    {
        page.runs.truncate(l);
        page.next = page.runs.last().map(RunCursor::of);
    }
    Ok(page)
}

/// The summary of a run, or `NotFound` as a store error.
async fn summary(store: &dyn Store, run_id: Uuid) -> Result<RunSummary, OpError> {
    Ok(store.run_summary(run_id).await?)
}

fn not_paused_advice(status: RunStatus) -> String {
    match status {
        RunStatus::Queued => "it waits in its queue for a worker (answered already, or not asking yet); answer once \
                              it pauses (`flows runs --status paused`)"
            .into(),
        RunStatus::Running => "it is running and has asked nothing; answer once it pauses".into(),
        RunStatus::Failed => "retry it (`flows retry`) and answer when it asks".into(),
        RunStatus::Completed | RunStatus::Cancelled | RunStatus::Compensated => {
            "it has ended and asks nothing more".into()
        }
        RunStatus::Escalated => "a step handed it to a person; fork it to continue".into(),
        RunStatus::Paused => "read its current question with `flows show`".into(),
    }
}

/// Checks `value` against a JSON Schema; returns every violation.
///
/// ```
/// use serde_json::json;
///
/// let schema = json!({ "type": "object", "properties": { "n": { "type": "integer" } }, "required": ["n"] });
/// let violations = flows_cli::ops::check(&schema, &json!({ "n": "three" }))?;
/// assert_eq!(violations[0].pointer, "/n");
/// assert!(flows_cli::ops::check(&schema, &json!({ "n": 3 }))?.is_empty());
/// # Ok::<(), String>(())
/// ```
pub fn check(schema: &Value, value: &Value) -> Result<Vec<Violation>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("its answer schema is not valid: {e}"))?;
    Ok(validator
        .iter_errors(value)
        .map(|e| Violation { pointer: e.instance_path().to_string(), message: e.to_string() })
        .collect())
}

/// Answers a paused run: checks `value` against the answer schema its question stored, when
/// it has one, then stores it ([`Store::answer`]) and so puts the run back in its queue for a
/// worker to continue. An answer that does not fit is [`OpError::InvalidAnswer`], listing
/// every violation with its JSON Pointer, and nothing is written.
///
/// ```
/// use flow_core::store::MemoryStore;
/// use flows_cli::ops::{self, OpError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new();
/// let e = ops::answer(&store, uuid::Uuid::now_v7(), serde_json::json!(true)).await.err();
/// assert!(matches!(e, Some(OpError::Store(_))), "no such run");
/// # }
/// ```
pub async fn answer(store: &dyn Store, run_id: Uuid, value: Value) -> Result<Answered, OpError> {
    let run = summary(store, run_id).await?;
    if run.status != RunStatus::Paused {
        return Err(OpError::NotPaused { run_id, status: run.status, advice: not_paused_advice(run.status) });
    }
    let pause = run.pause.unwrap_or(Value::Null);
    let step_key = PauseRequest::stored_step_key(&pause)
        .ok_or_else(|| OpError::BadQuestion { run_id, detail: "it names no step key".into() })?
        .to_string();
    let schema = PauseRequest::stored_answer_schema(&pause);
    if let Some(schema) = schema {
        let violations = check(schema, &value).map_err(|detail| OpError::BadQuestion { run_id, detail })?;
        if !violations.is_empty() {
            return Err(OpError::InvalidAnswer { run_id, step_key, violations });
        }
    }
    match store.answer(run_id, &step_key, value).await {
        Ok(()) => Ok(Answered { run_id, step_key, validated: schema.is_some() }),
        Err(StoreError::NotWaiting { status, .. }) => Err(OpError::NotPaused {
            run_id,
            status,
            advice: "another answer reached it first; read its current question with `flows show`".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Cancels a run. With compensation (the default) the request is stored
/// ([`Store::request_cancel`]): a run at rest goes to its queue for a worker with the flow's
/// code to run the undo steps of its completed steps and end it `cancelled`; a running run's
/// worker does so once its next lease renewal tells it. Without, a run at rest ends
/// `cancelled` at once; one being executed is refused ([`OpError::Executing`]).
///
/// ```
/// use flow_core::store::MemoryStore;
/// use flows_cli::ops::{self, CancelOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new();
/// let e = ops::cancel(&store, uuid::Uuid::now_v7(), CancelOptions::new("test")).await;
/// assert!(e.is_err(), "no such run");
/// # }
/// ```
pub async fn cancel(store: &dyn Store, run_id: Uuid, options: CancelOptions) -> Result<Cancel, OpError> {
    let run = summary(store, run_id).await?;
    if run.status.is_terminal() {
        return Err(OpError::Ended { run_id, status: run.status });
    }
    if options.compensate {
        match store.request_cancel(run_id, &options.reason).await {
            Ok(()) => {}
            Err(StoreError::Ended { status, .. }) => return Err(OpError::Ended { run_id, status }),
            Err(e) => return Err(e.into()),
        }
        let now = summary(store, run_id).await?;
        return Ok(Cancel { run_id, was: run.status, status: now.status, compensate: true });
    }
    // Ended at once: under a lease of its own, so no worker can be running it meanwhile and a
    // worker that claims it after finds it cancelled.
    let claim = match store.claim(run_id, "flows-cli:cancel", Duration::from_secs(60)).await {
        Ok(claim) => claim,
        Err(StoreError::Locked { owner, .. }) => return Err(OpError::Executing { run_id, owner }),
        Err(e) => return Err(e.into()),
    };
    if claim.run.status.is_terminal() {
        let _ = store.release(run_id, claim.epoch).await;
        return Err(OpError::Ended { run_id, status: claim.run.status });
    }
    let commit = Commit {
        run_id,
        epoch: claim.epoch,
        status: RunStatus::Cancelled,
        snapshot: claim.run.snapshot.clone(),
        steps: Vec::new(),
        step_key: None,
        output: None,
        error: Some(format!("cancelled without compensation: {}", options.reason)),
        pause: None,
        available_at_ms: None,
    };
    if let Err(e) = store.commit(commit).await {
        let _ = store.release(run_id, claim.epoch).await;
        return Err(e.into());
    }
    Ok(Cancel { run_id, was: run.status, status: RunStatus::Cancelled, compensate: false })
}

/// Whether a failed run's completed steps were all compensated already: it cannot run again.
fn compensated(progress: &str) -> bool {
    serde_json::from_str::<Value>(progress)
        .ok()
        .and_then(|p| p.pointer("/compensation/finished").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// Puts a failed run back in its queue ([`Store::requeue`]): a worker serving the queue runs
/// its failed step again with a fresh retry budget, and the run goes on from there.
///
/// ```
/// use flow_core::store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new();
/// assert!(flows_cli::ops::retry(&store, uuid::Uuid::now_v7()).await.is_err(), "no such run");
/// # }
/// ```
pub async fn retry(store: &dyn Store, run_id: Uuid) -> Result<Retry, OpError> {
    let run = summary(store, run_id).await?;
    if run.status != RunStatus::Failed {
        let advice = match run.status {
            RunStatus::Queued => "it waits in its queue for a worker already".to_string(),
            RunStatus::Escalated => "a step handed it to a person; fork it to continue".into(),
            RunStatus::Paused => "it waits for an answer: `flows answer`".into(),
            _ => "look at it with `flows show`".into(),
        };
        return Err(OpError::NotFailed { run_id, status: run.status, advice });
    }
    let record = store.load_run(run_id).await?;
    if compensated(record.snapshot.progress.get()) {
        return Err(OpError::NotFailed {
            run_id,
            status: run.status,
            advice: "its completed steps were compensated after the failure, so it cannot run again; fork an earlier \
                     checkpoint instead"
                .into(),
        });
    }
    let failed_steps =
        store.steps(run_id).await?.into_iter().filter(|s| s.status == StepStatus::Failed).map(|s| s.step_key).collect();
    match store.requeue(run_id).await {
        Ok(()) => Ok(Retry { run_id, failed_steps }),
        Err(StoreError::NotWaiting { status, .. }) => Err(OpError::NotFailed {
            run_id,
            status,
            advice: "it changed while the retry was on its way; look at it with `flows show`".into(),
        }),
        Err(e) => Err(e.into()),
    }
}
