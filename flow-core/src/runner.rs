//! [`Runner`]: starts, resumes and forks runs of one flow, with an optional [`Store`].

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::ctx::RunShared;
use crate::error::FlowError;
use crate::events::FlowEvent;
use crate::executor::{AbortOnDrop, Durability, Execution, decode_state, panic_text, result_of};
use crate::flow::{Flow, State};
use crate::graph::{Graph, MethodId};
use crate::handle::{RunHandle, StartOptions};
use crate::input::PauseRequest;
use crate::outcome::RunOutcome;
use crate::plan::Plan;
use crate::progress::{Halt, Progress};
use crate::store::{
    Claim, Commit, DamagedRun, Listing, NewRun, Placement, RunFilter, RunRecord, RunStatus, RunSummary, Snapshot,
    Start, StepRecord, StepStatus, Store, StoreError, now_ms,
};

/// Runs one flow: `kickoff` new runs, `resume` stored ones, `fork` from checkpoints.
///
/// Without a store, runs live in memory only. With one ([`MemoryStore`](crate::store::MemoryStore),
/// [`SqliteStore`](crate::store::SqliteStore)) every method completion is checkpointed and a run
/// can be resumed after a crash, a failure or a pause, here or in another process.
///
/// Cloning a runner is cheap; clones share the flow, the store and the event stream.
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::store::MemoryStore;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S { steps: u32 }
/// struct Two;
///
/// #[flow(state = S)]
/// impl Two {
///     #[start]
///     async fn a(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.steps += 1); Ok(()) }
///     #[listen(a)]
///     async fn b(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.steps += 1); Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(Two).with_store(MemoryStore::new());
/// let first = runner.kickoff(S::default()).await?.completed()?;
/// let second = runner.kickoff(S::default()).await?.completed()?;
/// assert_ne!(first.run_id, second.run_id);
/// assert_eq!(second.state.steps, 2);
/// // A completed run resumes to its stored result without running anything again.
/// let again = runner.resume(first.run_id).await?.completed()?;
/// assert_eq!(again.state.steps, 2);
/// # Ok(())
/// # }
/// ```
pub struct Runner<F: Flow> {
    flow: Arc<F>,
    plan: Arc<Plan>,
    store: Option<Arc<dyn Store>>,
    events: broadcast::Sender<FlowEvent>,
    owner: Arc<str>,
    lease: Duration,
    placement: Placement,
    park_after: Duration,
    /// Whether and how the items of its runs are kept in the store (`Runner::keep_stream`).
    pub(crate) stream_log: Option<crate::stream::StreamLog>,
    /// What embeds the memory of its runs ([`Runner::with_embedder`]).
    embedder: Option<Arc<dyn crate::memory::Embedder>>,
}

/// How far away a timer ([`Ctx::sleep`](crate::Ctx::sleep)) or a retry backoff must be for a run
/// with a store to park in it rather than wait in this process, unless
/// [`Runner::park_after`] says otherwise.
///
/// Ten seconds: a parked run is continued by a worker's next poll of the store (and pays a
/// commit, a claim and a re-run of the sleeping step), so a shorter wait would come out late by
/// a large share of itself; a longer one would keep a worker's slot and a lease held for
/// nothing. A process holding a run for ten seconds costs little; a run parked for ten
/// seconds is late by at most a poll interval, a small fraction of its wait.
///
/// ```
/// assert_eq!(flow_core::DEFAULT_PARK_AFTER, std::time::Duration::from_secs(10));
/// ```
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_secs(10);

impl<F: Flow> Clone for Runner<F> {
    fn clone(&self) -> Self {
        Runner {
            flow: Arc::clone(&self.flow),
            plan: Arc::clone(&self.plan),
            store: self.store.clone(),
            events: self.events.clone(),
            owner: Arc::clone(&self.owner),
            lease: self.lease,
            placement: self.placement.clone(),
            park_after: self.park_after,
            stream_log: self.stream_log.clone(),
            embedder: self.embedder.clone(),
        }
    }
}

impl<F: Flow> std::fmt::Debug for Runner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("flow", &self.plan.graph.name)
            .field("durable", &self.store.is_some())
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .field("placement", &self.placement)
            .field("park_after", &self.park_after)
            .finish()
    }
}

/// A process-unique worker name: host, pid and a random suffix.
fn worker_name() -> String {
    let host = gethostname::gethostname()
        .into_string()
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let nonce: u32 = fastrand::u32(..);
    format!("{host}:{}:{nonce:08x}", std::process::id())
}

static WORKER: Mutex<Option<Arc<str>>> = Mutex::new(None);

/// The name this process holds leases under (`host:pid:nonce`), the same for every runner.
pub(crate) fn this_worker() -> Arc<str> {
    let mut w = WORKER.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(w.get_or_insert_with(|| Arc::from(worker_name())))
}

impl<F: Flow> Runner<F> {
    /// A runner with no store: runs live in memory.
    pub fn new(flow: F) -> Self {
        Self::from_arc(Arc::new(flow))
    }

    /// A runner for a flow value that is already shared.
    pub fn from_arc(flow: Arc<F>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Runner {
            flow,
            plan: Arc::new(Plan::new(F::graph())),
            store: None,
            events,
            owner: this_worker(),
            lease: Duration::from_secs(30),
            placement: Placement::default(),
            park_after: F::graph().options.park_after.unwrap_or(DEFAULT_PARK_AFTER),
            stream_log: None,
            embedder: None,
        }
    }

    /// Checkpoints every method completion to `store`.
    pub fn with_store(self, store: impl Store) -> Self {
        self.with_shared_store(Arc::new(store))
    }

    /// Embeds the memory of its runs ([`Ctx::recall`](crate::Ctx::recall),
    /// [`Ctx::remember`](crate::Ctx::remember)) with `embedder`, such as
    /// `flow_llm::OpenAiEmbedder`; without one, the offline
    /// [`HashEmbedder`](crate::memory::HashEmbedder) is used. Records are compared only with
    /// queries embedded by the same model, so keep one embedder per store.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::memory::HashEmbedder;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// # struct F;
    /// # #[flow(state = S)]
    /// # impl F { #[start] async fn go(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) } }
    /// let runner = Runner::new(F).with_embedder(HashEmbedder::new(256));
    /// # let _ = runner;
    /// ```
    pub fn with_embedder(mut self, embedder: impl crate::memory::Embedder) -> Self {
        self.embedder = Some(Arc::new(embedder));
        self
    }

    /// Like [`Runner::with_store`], for a store shared with other runners.
    pub fn with_shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// How long this process's claim on a run lasts without renewal (default 30 s). Another
    /// process can take a run over once its lease has expired, so this bounds the time to
    /// recover a run from a process that died.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// Where this runner's runs wait whenever no process runs them: the queue that
    /// [`Worker::serve`](crate::Worker::serve) takes them from, and a concurrency key its
    /// per-key limit counts (default: the `default` queue, no key). [`Runner::submit`] stores
    /// runs there, and [`Runner::kickoff`] and [`Runner::fork`] record it too, so that a run whose
    /// process died is continued by a worker serving that queue.
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # use flow_core::store::{MemoryStore, Placement, Store};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// # struct Mail;
    /// # #[flow(state = S, name = "runner_doc_placement")]
    /// # impl Mail {
    /// #     #[start]
    /// #     async fn send(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let store = std::sync::Arc::new(MemoryStore::new());
    /// let runner = Runner::new(Mail).with_shared_store(store.clone()).placement(Placement::in_queue("emails"));
    /// let run_id = runner.submit(S).await?;
    /// assert_eq!(store.load_run(run_id).await?.placement.queue, "emails");
    /// # Ok(())
    /// # }
    /// ```
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Puts this runner's runs in `queue`, keeping the concurrency key (see
    /// [`Runner::placement`]).
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// # struct Mail;
    /// # #[flow(state = S, name = "runner_doc_queue")]
    /// # impl Mail {
    /// #     #[start]
    /// #     async fn send(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
    /// # }
    /// let runner = Runner::new(Mail).queue("emails");
    /// assert!(format!("{runner:?}").contains("emails"));
    /// ```
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.placement.queue = queue.into();
        self
    }

    /// Gives every run of this runner the concurrency key `key` (see [`Runner::placement`]);
    /// [`SubmitOptions::key`](crate::SubmitOptions::key) gives one run its own.
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// # struct Mail;
    /// # #[flow(state = S, name = "runner_doc_key")]
    /// # impl Mail {
    /// #     #[start]
    /// #     async fn send(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
    /// # }
    /// let runner = Runner::new(Mail).queue("emails").concurrency_key("smtp-relay-1");
    /// assert!(format!("{runner:?}").contains("smtp-relay-1"));
    /// ```
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.placement.key = Some(key.into());
        self
    }

    /// How far away a timer or a retry must be for a run with a store to **park** rather than
    /// wait in this process (default: the flow's `#[flow(park_after = "..")]`, else
    /// [`DEFAULT_PARK_AFTER`]): once nothing else of the run
    /// runs, it is stored as queued until then, its lease given back, and `kickoff`/`resume`
    /// return [`RunOutcome::Sleeping`]; a serving [`Worker`](crate::Worker) continues it when it
    /// is due. `Duration::MAX` never parks (every wait is spent here); `Duration::ZERO` parks
    /// every wait. A run without a store always waits in this process.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::MemoryStore;
    /// use serde::{Deserialize, Serialize};
    /// use std::time::Duration;
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct S { done: bool }
    /// struct Pause;
    ///
    /// #[flow(state = S)]
    /// impl Pause {
    ///     #[start]
    ///     async fn breathe(&self, cx: &Ctx<S>) -> Result<()> {
    ///         cx.sleep(Duration::from_millis(20)).await?;
    ///         cx.update(|s| s.done = true);
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// // Short waits stay in the process by default...
    /// let runner = Runner::new(Pause).with_store(MemoryStore::new());
    /// assert!(runner.kickoff(S::default()).await?.completed()?.state.done);
    /// // ...and with a threshold of zero, every wait parks the run.
    /// let parking = Runner::new(Pause).with_store(MemoryStore::new()).park_after(Duration::ZERO);
    /// assert!(parking.kickoff(S::default()).await?.sleeping().is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn park_after(mut self, threshold: Duration) -> Self {
        self.park_after = threshold;
        self
    }

    /// The name this process holds leases under.
    pub fn worker(&self) -> &str {
        &self.owner
    }

    /// The flow's graph.
    pub fn graph(&self) -> &'static Graph {
        self.plan.graph
    }

    /// The store, if any.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Subscribes to the events of every run of this runner (and its clones).
    pub fn subscribe(&self) -> broadcast::Receiver<FlowEvent> {
        self.events.subscribe()
    }

    fn shared(&self, run_id: Uuid) -> Arc<RunShared> {
        Arc::new(RunShared {
            run_id,
            store: self.store.clone(),
            events: self.events.clone(),
            usage: Mutex::default(),
            journal: Mutex::default(),
            park_after: self.store.as_ref().map(|_| self.park_after),
            stream: crate::stream::RunStream::for_run(run_id, self.store.as_ref(), self.stream_log.as_ref()),
            flow: self.plan.graph.name,
            outputs: Mutex::default(),
            embedder: self.embedder.clone(),
        })
    }

    fn store_for(&self, run_id: Uuid) -> Result<&Arc<dyn Store>, FlowError> {
        self.store.as_ref().ok_or(FlowError::NoStore { run_id })
    }

    /// Starts a new run with a fresh id: every unconditional start runs, concurrently.
    pub async fn kickoff(&self, state: F::State) -> Result<RunOutcome<F::State>, FlowError> {
        self.kickoff_from(state, None).await
    }

    /// A new run, with a fresh id, whose initial state is the state of a stored run at its
    /// latest checkpoint (`at = None`: for a finished run, its final state) or at checkpoint
    /// `at` (see [`Store::checkpoints`]), and which runs the starts again, as a CrewAI flow
    /// restored from its persisted state does. Nothing else is carried over: no step, output
    /// or join. The new run records the run it came from as its parent
    /// ([`RunRecord::parent_run_id`](crate::store::RunRecord::parent_run_id), shown by
    /// `flows show`); the source run is not touched. [`Runner::fork`] instead goes on from the
    /// checkpoint with what was pending there.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::MemoryStore;
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct Visits { count: u32 }
    /// struct Visit;
    ///
    /// #[flow(state = Visits)]
    /// impl Visit {
    ///     #[start]
    ///     async fn visit(&self, cx: &Ctx<Visits>) -> Result<()> {
    ///         cx.update(|s| s.count += 1);
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Visit).with_store(MemoryStore::new());
    /// let first = runner.kickoff(Visits::default()).await?.completed()?;
    /// let again = runner.restart(first.run_id, None).await?.completed()?;
    /// assert_eq!(again.state.count, 2);
    /// let record = runner.store().expect("a store").load_run(again.run_id).await?;
    /// assert_eq!(record.parent_run_id, Some(first.run_id));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn restart(&self, run_id: Uuid, at: Option<u64>) -> Result<RunOutcome<F::State>, FlowError> {
        let snapshot = self.source_snapshot(run_id, at).await?;
        // Only the state is taken over, so progress written by another version of the flow
        // does not stand in the way.
        let state = decode_state(run_id, self.plan.graph.state_type, &snapshot)?;
        self.kickoff_from(state, Some(run_id)).await
    }

    /// The snapshot a fork or a restart begins from: the run's latest, or checkpoint `at`.
    async fn source_snapshot(&self, run_id: Uuid, at: Option<u64>) -> Result<Snapshot, FlowError> {
        let store = self.store_for(run_id)?;
        // An earlier checkpoint needs only the run's flow: the latest snapshot is not read, so a
        // run whose latest state is damaged can still be forked from before the damage.
        Ok(match at {
            Some(seq) => {
                let summary = store.run_summary(run_id).await.map_err(not_found)?;
                self.check_flow(run_id, summary.flow)?;
                store.load_checkpoint(run_id, seq).await?
            }
            None => self.load(run_id).await?.snapshot,
        })
    }

    /// Starts a new run from `state`, recording `parent` as the run it came from.
    async fn kickoff_from(&self, state: F::State, parent: Option<Uuid>) -> Result<RunOutcome<F::State>, FlowError> {
        let exec = self.create(state, self.shared(Uuid::now_v7()), parent).await?;
        drive(exec).await
    }

    /// An execution of the new run `run` with its starts scheduled, stored (leased to this
    /// runner, with `parent` as the run it came from) when the runner has a store.
    async fn create(
        &self,
        state: F::State,
        run: Arc<RunShared>,
        parent: Option<Uuid>,
    ) -> Result<Execution<F>, FlowError> {
        let run_id = run.run_id;
        let progress = Progress::new(self.plan.graph, self.plan.initial_joins());
        let mut exec =
            Execution::new(Arc::clone(&self.flow), Arc::clone(&self.plan), run, None, Arc::new(state), progress);
        exec.schedule_starts();
        if let Some(store) = &self.store {
            let epoch = store
                .create_run(NewRun {
                    run_id,
                    flow: self.plan.graph.name.to_string(),
                    parent_run_id: parent,
                    snapshot: exec.snapshot()?,
                    steps: Vec::new(),
                    start: Start::Leased { owner: self.owner.to_string(), lease: self.lease },
                    placement: self.placement.clone(),
                    graph: Some(self.plan.run_graph()),
                })
                .await?;
            exec.durability = Some(Durability { store: Arc::clone(store), epoch, lease: self.lease });
        }
        Ok(exec)
    }

    /// [`Runner::kickoff`] under an id of the caller's choosing, idempotently: with a store, a
    /// second kickoff with the same id (a retried request) starts nothing and returns the run
    /// stored first, whatever state it is given. A run that has ended returns its stored
    /// outcome (its result, its compensation, its pause or escalation, or its failure as the
    /// error it failed with); one running in another process is waited for; one waiting in
    /// its queue is run here. An id taken by a run of another flow is refused with
    /// [`FlowError::DuplicateRunId`]. Without a store the run simply gets the id.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::MemoryStore;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S { n: u32 }
    /// struct Charge;
    /// #[flow(state = S, name = "runner_doc_kickoff_with_id")]
    /// impl Charge {
    ///     #[start]
    ///     async fn charge(&self, cx: &Ctx<S>) -> Result<u32> { cx.update(|s| s.n += 1); Ok(cx.read(|s| s.n)) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Charge).with_store(MemoryStore::new());
    /// let id = uuid::Uuid::now_v7();
    /// let first = runner.kickoff_with_id(id, S { n: 10 }).await?.completed()?;
    /// // The retry charges nothing again: it gets the stored run's outcome.
    /// let again = runner.kickoff_with_id(id, S { n: 50 }).await?.completed()?;
    /// assert_eq!((first.state.n, again.state.n, again.run_id), (11, 11, id));
    /// assert_eq!(runner.runs(Default::default()).await?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn kickoff_with_id(&self, run_id: Uuid, state: F::State) -> Result<RunOutcome<F::State>, FlowError> {
        match self.create(state, self.shared(run_id), None).await {
            Ok(exec) => drive(exec).await,
            Err(FlowError::Store(StoreError::Duplicate(_))) => self.existing_outcome(run_id).await,
            Err(e) => Err(e),
        }
    }

    /// Starts a new run with a fresh id in a task of its own, as [`Runner::kickoff`], and
    /// returns at once, once the run is stored (with a store): its [`RunHandle`] has its id,
    /// awaits its outcome, follows its events and cancels it.
    ///
    /// See [`RunHandle`] for an example.
    pub async fn start(&self, state: F::State) -> Result<RunHandle<F::State>, FlowError> {
        self.start_with(state, StartOptions::new()).await
    }

    /// [`Runner::start`] with options: the run's id, idempotent with a store as
    /// [`Runner::kickoff_with_id`] (a second start with the same id hands back a handle on the
    /// run stored first, [`RunHandle::is_existing`]), and the channels
    /// [`RunHandle::items`] streams.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::StartOptions;
    /// use flow_core::store::MemoryStore;
    /// use flow_core::stream::{Channels, RunItem};
    /// use futures::StreamExt;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct Hello;
    /// #[flow(state = S, name = "runner_doc_start_with")]
    /// impl Hello {
    ///     #[start]
    ///     async fn hello(&self) -> Result<String> { Ok("hi".into()) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Hello).with_store(MemoryStore::new());
    /// let id = uuid::Uuid::now_v7();
    /// let handle = runner.start_with(S, StartOptions::new().run_id(id).channels(Channels::OUTPUTS)).await?;
    /// let items: Vec<(u64, RunItem)> = handle.items().collect().await;
    /// assert!(matches!(&items[0].1, RunItem::Output { output, .. } if output == "hi"));
    /// handle.outcome().await?.completed()?;
    /// let again = runner.start_with(S, StartOptions::new().run_id(id)).await?;
    /// assert!(again.is_existing());
    /// assert_eq!(again.outcome().await?.completed()?.output::<String>()?, "hi");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_with(&self, state: F::State, options: StartOptions) -> Result<RunHandle<F::State>, FlowError> {
        let run_id = options.run_id.unwrap_or_else(Uuid::now_v7);
        let first_events = self.events.subscribe();
        let (tx, items, first_items) = if options.channels.is_empty() {
            (None, None, None)
        } else {
            let (tx, rx) = broadcast::channel(crate::stream::STREAM_BUFFER);
            let weak = tx.downgrade();
            (Some(tx), Some(weak), Some(rx))
        };
        let run = match tx {
            Some(tx) => crate::stream::with_live(options.channels, tx, || self.shared(run_id)),
            None => self.shared(run_id),
        };
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let signal = crate::lease::CancelSignal::default();
        let (task, existing, cancel) = match self.create(state, run, None).await {
            Ok(mut exec) => {
                exec.cancel = Some(signal.clone());
                let run = drive(exec);
                let task = tokio::spawn(async move {
                    let outcome = run.await;
                    let _ = done_tx.send(true);
                    outcome
                });
                (task, false, Some(signal))
            }
            Err(FlowError::Store(StoreError::Duplicate(_))) if options.run_id.is_some() => {
                let summary = self.store_for(run_id)?.run_summary(run_id).await?;
                if summary.flow != self.plan.graph.name {
                    return Err(FlowError::DuplicateRunId {
                        run_id,
                        flow: self.plan.graph.name.to_string(),
                        existing_flow: summary.flow,
                    });
                }
                let runner = self.clone();
                let task = tokio::spawn(async move {
                    let outcome = runner.existing_outcome(run_id).await;
                    let _ = done_tx.send(true);
                    outcome
                });
                (task, true, None)
            }
            Err(e) => return Err(e),
        };
        Ok(RunHandle {
            run_id,
            task,
            events: self.events.clone(),
            first_events: std::sync::Mutex::new(Some(first_events)),
            items,
            first_items: std::sync::Mutex::new(first_items),
            done,
            cancel,
            store: self.store.clone(),
            existing,
        })
    }

    /// The outcome of a run stored before under an id given again: a run that has ended
    /// returns how it ended without running anything; one running elsewhere is waited for;
    /// one waiting in its queue is run here.
    async fn existing_outcome(&self, run_id: Uuid) -> Result<RunOutcome<F::State>, FlowError> {
        loop {
            let record = match self.load(run_id).await {
                Err(FlowError::WrongFlow { found, .. }) => {
                    return Err(FlowError::DuplicateRunId {
                        run_id,
                        flow: self.plan.graph.name.to_string(),
                        existing_flow: found,
                    });
                }
                other => other?,
            };
            let live = record.lease_owner.is_some() && record.lease_expires_at_ms.is_some_and(|at| at > now_ms());
            match record.status {
                RunStatus::Running if live => tokio::time::sleep(EXISTING_POLL).await,
                RunStatus::Running | RunStatus::Queued | RunStatus::Completed | RunStatus::Compensated => {
                    match self.continue_run(run_id, None).await {
                        // Claimed by another process between the read and the claim.
                        Err(FlowError::RunLocked { .. }) => tokio::time::sleep(EXISTING_POLL).await,
                        other => return other,
                    }
                }
                RunStatus::Paused | RunStatus::Failed | RunStatus::Escalated | RunStatus::Cancelled => {
                    return self.stored_outcome(&record);
                }
            }
        }
    }

    /// How a run at rest ended, read from its record: a pause or an escalation as an outcome, a
    /// failure or a cancellation as the error it ended with.
    fn stored_outcome(&self, record: &RunRecord) -> Result<RunOutcome<F::State>, FlowError> {
        let run_id = record.run_id;
        let (state, progress) = self.decode(run_id, &record.snapshot)?;
        let state_json = || Box::new(serde_json::from_str::<Value>(record.snapshot.state.get()).unwrap_or(Value::Null));
        let name = |m: u16| self.plan.graph.methods.get(usize::from(m)).map_or("?", |d| d.name).to_string();
        match (record.status, &progress.halt) {
            (RunStatus::Paused, _) => {
                let request = record
                    .pause
                    .clone()
                    .ok_or_else(|| "a paused run has no stored request".to_string())
                    .and_then(|p| serde_json::from_value::<PauseRequest>(p).map_err(|e| e.to_string()))
                    .map_err(|e| FlowError::Corrupt { run_id, what: format!("its pause request: {e}") })?;
                Ok(RunOutcome::Paused(crate::outcome::Paused { run_id, request, state }))
            }
            (RunStatus::Escalated, Some(Halt::Escalated { method, reason })) => {
                Ok(RunOutcome::Escalated(crate::outcome::Escalated {
                    run_id,
                    method: name(*method),
                    reason: reason.clone(),
                    state,
                }))
            }
            (RunStatus::Failed, Some(Halt::Failure { method, attempt, error, class, .. })) => {
                Err(match &progress.compensation {
                    Some(c) => FlowError::Compensated {
                        run_id,
                        method: name(*method),
                        message: error.clone(),
                        compensation: c.results.join("; "),
                        failed: c.failed.len(),
                        state: state_json(),
                        resumable: true,
                    },
                    None => FlowError::MethodFailed {
                        run_id,
                        method: name(*method),
                        attempt: *attempt,
                        message: error.clone(),
                        class: *class,
                        source: crate::Error::msg(error).with_class(*class).into_std(),
                        state: state_json(),
                        resumable: true,
                    },
                })
            }
            (RunStatus::Failed, Some(Halt::CallLimit { method })) => Err(FlowError::CallLimit {
                run_id,
                method: name(*method),
                limit: self.plan.graph.options.max_calls,
                state: state_json(),
            }),
            (RunStatus::Cancelled, _) => Err(FlowError::Cancelled {
                run_id,
                reason: record.cancel_requested.clone().unwrap_or_default(),
                compensation: progress.compensation.as_ref().filter(|c| !c.results.is_empty()).map_or_else(
                    || "no completed step had an undo step to run".to_string(),
                    |c| format!("compensation ran: {}", c.results.join("; ")),
                ),
                state: state_json(),
            }),
            (status, _) => Err(FlowError::InvalidStatus {
                run_id,
                status,
                action: "read back as the outcome of a kickoff (its checkpoint does not say how it ended; \
                         `flows show` reads its error)",
            }),
        }
    }

    /// Starts a new run from JSON inputs merged onto the state's default, as CrewAI's
    /// `kickoff(inputs=...)`: each top-level key of `inputs` replaces that field of
    /// `F::State::default()`, and the rest keep their default.
    ///
    /// A key that is not a field of the state, or a value that does not fit its field, is
    /// refused with [`FlowError::InvalidInputs`] naming the key, before anything is stored.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct Research { topic: String, depth: u32, notes: Vec<String> }
    /// struct Study;
    ///
    /// #[flow(state = Research)]
    /// impl Study {
    ///     #[start]
    ///     async fn go(&self, cx: &Ctx<Research>) -> Result<()> {
    ///         let note = cx.read(|s| format!("{} at depth {}", s.topic, s.depth));
    ///         cx.update(move |s| s.notes.push(note.clone()));
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Study);
    /// let run = runner.kickoff_with_inputs(serde_json::json!({ "topic": "tides" })).await?.completed()?;
    /// assert_eq!(run.state.notes, ["tides at depth 0"]);
    ///
    /// let refused = runner.kickoff_with_inputs(serde_json::json!({ "depht": 3 })).await;
    /// assert!(matches!(refused, Err(FlowError::InvalidInputs { ref key, .. }) if key == "depht"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn kickoff_with_inputs(&self, inputs: serde_json::Value) -> Result<RunOutcome<F::State>, FlowError>
    where
        F::State: Default,
    {
        let state = state_from_inputs(self.plan.graph.state_type, inputs)?;
        self.kickoff(state).await
    }

    /// Stores a new run, with a fresh id, in this runner's queue ([`Runner::placement`]) without
    /// running it, and returns its id: whichever [`Worker::serve`](crate::Worker::serve) serving
    /// that queue, in this process or another, is free first runs it. [`Runner::resume`] runs it
    /// here instead.
    ///
    /// The state is checked as [`Runner::kickoff`] checks it: a state JSON cannot hold is
    /// refused and nothing is stored.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, Store};
    /// use flow_core::{RunStatus, ServeOptions, Worker};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct S { done: bool }
    /// struct Job;
    ///
    /// #[flow(state = S, name = "runner_doc_submit")]
    /// impl Job {
    ///     #[start]
    ///     async fn work(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.done = true); Ok(()) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    /// let run_id = Runner::new(Job).with_shared_store(store.clone()).submit(S::default()).await?;
    /// assert_eq!(store.load_run(run_id).await?.status, RunStatus::Queued);
    ///
    /// // A worker, here or in any other process, runs it.
    /// let serving = Worker::new(store.clone()).register(Job).serve(ServeOptions::default());
    /// while store.load_run(run_id).await?.status != RunStatus::Completed {
    ///     tokio::time::sleep(Duration::from_millis(5)).await;
    /// }
    /// let summary = serving.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!(summary.finished, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit(&self, state: F::State) -> Result<Uuid, FlowError> {
        self.submit_with(state, SubmitOptions::default()).await
    }

    /// [`Runner::submit`] under an id of the caller's choosing, idempotently: submitting the
    /// same id again (a retried request, a client that did not see the answer) stores nothing
    /// and returns the id of the run stored first, whatever state it was given. An id taken by
    /// a run of another flow is refused with [`FlowError::DuplicateRunId`].
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # use flow_core::store::MemoryStore;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S { n: u32 }
    /// # struct Job;
    /// # #[flow(state = S, name = "runner_doc_submit_with_id")]
    /// # impl Job {
    /// #     #[start]
    /// #     async fn work(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Job).with_store(MemoryStore::new());
    /// let id = uuid::Uuid::now_v7();
    /// assert_eq!(runner.submit_with_id(id, S { n: 1 }).await?, id);
    /// // The retry stores nothing: the run keeps the state it was first submitted with.
    /// assert_eq!(runner.submit_with_id(id, S { n: 2 }).await?, id);
    /// assert_eq!(runner.runs(Default::default()).await?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit_with_id(&self, run_id: Uuid, state: F::State) -> Result<Uuid, FlowError> {
        self.submit_with(state, SubmitOptions::new().run_id(run_id)).await
    }

    /// [`Runner::submit`] with options: the run's id (idempotent, as
    /// [`Runner::submit_with_id`]), its queue and concurrency key, and a time before which no
    /// worker starts it.
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # use flow_core::store::{MemoryStore, Store};
    /// # use flow_core::SubmitOptions;
    /// # use std::time::Duration;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// # struct Invoice;
    /// # #[flow(state = S, name = "runner_doc_submit_with")]
    /// # impl Invoice {
    /// #     #[start]
    /// #     async fn bill(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let store = std::sync::Arc::new(MemoryStore::new());
    /// let runner = Runner::new(Invoice).with_shared_store(store.clone()).queue("invoices");
    /// let options = SubmitOptions::new().key("customer-42").delay(Duration::from_secs(3600));
    /// let run_id = runner.submit_with(S, options).await?;
    /// let stored = store.load_run(run_id).await?;
    /// assert_eq!(stored.placement.key.as_deref(), Some("customer-42"));
    /// assert!(stored.available_at_ms.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit_with(&self, state: F::State, options: SubmitOptions) -> Result<Uuid, FlowError> {
        let run_id = options.run_id.unwrap_or_else(Uuid::now_v7);
        let store = self.store_for(run_id)?;
        let mut exec = Execution::new(
            Arc::clone(&self.flow),
            Arc::clone(&self.plan),
            self.shared(run_id),
            None,
            Arc::new(state),
            Progress::new(self.plan.graph, self.plan.initial_joins()),
        );
        exec.schedule_starts();
        let placement = Placement {
            queue: options.queue.unwrap_or_else(|| self.placement.queue.clone()),
            key: options.key.or_else(|| self.placement.key.clone()),
        };
        let flow = self.plan.graph.name;
        let created = store
            .create_run(NewRun {
                run_id,
                flow: flow.to_string(),
                parent_run_id: None,
                snapshot: exec.snapshot()?,
                steps: Vec::new(),
                start: Start::Queued { available_at_ms: options.not_before_ms },
                placement: placement.clone(),
                graph: Some(self.plan.run_graph()),
            })
            .await;
        match created {
            Ok(_) => {
                tracing::debug!(%run_id, flow, queue = %placement.queue, key = ?placement.key, "run submitted");
                Ok(run_id)
            }
            // Only an id the caller chose can be taken: fresh ones are unique.
            Err(StoreError::Duplicate(_)) if options.run_id.is_some() => {
                let existing = store.run_summary(run_id).await?;
                if existing.flow == flow {
                    tracing::debug!(%run_id, flow, "run submitted again: it was stored already, nothing stored");
                    Ok(run_id)
                } else {
                    Err(FlowError::DuplicateRunId { run_id, flow: flow.to_string(), existing_flow: existing.flow })
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Continues a stored run from its last checkpoint: completed methods never run again,
    /// methods that were running when the process stopped run again, a failed method runs
    /// again with a fresh retry budget. A completed run returns its stored result; a paused
    /// run runs what can run and pauses again (give the answer with [`Runner::resume_with`]).
    pub async fn resume(&self, run_id: Uuid) -> Result<RunOutcome<F::State>, FlowError> {
        self.continue_run(run_id, None).await
    }

    /// Continues a paused run with a person's answer to its question. An answer that does
    /// not fit the requested type is [`FlowError::InvalidInput`] and the run stays paused.
    ///
    /// An answer is never dropped: given to a run that is not paused (completed, failed,
    /// escalated, running), or to one whose question was answered elsewhere meanwhile (it then
    /// waits at another step, or has ended), it is refused with [`FlowError::NotWaiting`],
    /// which says the run's status and what to do, and the run is left as it was.
    pub async fn resume_with(&self, run_id: Uuid, input: impl Serialize) -> Result<RunOutcome<F::State>, FlowError> {
        let value = answer_value(run_id, &input)?;
        self.continue_run(run_id, Some(value)).await
    }

    /// Answers a paused run's question and hands the run back to its queue, from any process:
    /// the answer is stored, and whichever [`Worker::serve`](crate::Worker::serve) serving the
    /// run's queue is free first continues the run, giving the answer to the step that asked.
    /// Returns once the answer is stored. [`Runner::resume_with`] instead continues the run in
    /// this process and returns how it ended.
    ///
    /// An answer the run is not waiting for is refused with [`FlowError::NotWaiting`], which
    /// says the run's status and what to do, and nothing is stored: the run is not paused
    /// (completed, failed, running, queued), it was answered already, or it waits at another
    /// question than the one it waited at when the answer was read. A value JSON cannot hold
    /// (a NaN) is [`FlowError::InvalidInput`]. Whether the answer fits the type the step asks
    /// for is checked by the step: one that does not leaves the run paused, as
    /// [`Runner::resume_with`] does, and the worker logs why.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, Store};
    /// use flow_core::{RunStatus, ServeOptions, Worker};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct S { approved: bool }
    /// struct Approve;
    ///
    /// #[flow(state = S, name = "runner_doc_answer")]
    /// impl Approve {
    ///     #[start]
    ///     async fn ask(&self, cx: &Ctx<S>) -> Result<()> {
    ///         let yes: bool = cx.ask(InputRequest::new("Approve?")).await?;
    ///         cx.update(move |s| s.approved = yes);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    /// let runner = Runner::new(Approve).with_shared_store(store.clone());
    /// let run_id = runner.kickoff(S::default()).await?.run_id();
    /// runner.answer(run_id, true).await?;
    /// assert_eq!(store.load_run(run_id).await?.status, RunStatus::Queued);
    /// // Answered already: a second answer is refused, saying why.
    /// assert!(matches!(runner.answer(run_id, false).await, Err(FlowError::NotWaiting { .. })));
    ///
    /// let serving = Worker::new(store.clone()).register(Approve).serve(ServeOptions::default());
    /// while store.load_run(run_id).await?.status != RunStatus::Completed {
    ///     tokio::time::sleep(Duration::from_millis(5)).await;
    /// }
    /// serving.shutdown(Duration::from_secs(5)).await;
    /// assert!(runner.resume(run_id).await?.completed()?.state.approved);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn answer(&self, run_id: Uuid, answer: impl Serialize) -> Result<(), FlowError> {
        let value = answer_value(run_id, &answer)?;
        let store = self.store_for(run_id)?;
        let record = self.load(run_id).await?;
        deliver_answer(store, &record, value).await
    }

    /// Cancels a run: records the request ([`Store::request_cancel`]) and, when nobody is
    /// executing the run, compensates its completed steps here (their `#[compensate]` undo
    /// steps run, newest first) and ends it `cancelled`. Returns [`RunStatus::Cancelled`] then;
    /// [`RunStatus::Running`] when another process executes it, which stops its steps,
    /// compensates and ends it cancelled once its next lease renewal tells it (within a third
    /// of its lease); the status it reached when it ended another way meanwhile.
    ///
    /// A run that has ended (completed, cancelled) is refused with
    /// [`FlowError::InvalidStatus`] and left as it is.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, Store};
    /// use flow_core::RunStatus;
    /// use std::sync::Arc;
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct S { booked: bool, released: bool }
    /// struct Trip;
    ///
    /// #[flow(state = S, name = "runner_doc_cancel")]
    /// impl Trip {
    ///     #[start]
    ///     async fn book(&self, cx: &Ctx<S>) -> Result<String> {
    ///         cx.update(|s| s.booked = true);
    ///         Ok("room 12".into())
    ///     }
    ///     #[compensate(book)]
    ///     async fn release(&self, cx: &Ctx<S>, _room: String) -> Result<()> {
    ///         cx.update(|s| s.released = true);
    ///         Ok(())
    ///     }
    ///     #[listen(book)]
    ///     async fn confirm(&self, cx: &Ctx<S>) -> Result<()> {
    ///         let _: bool = cx.ask(InputRequest::new("Confirm?")).await?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    /// let runner = Runner::new(Trip).with_shared_store(store.clone());
    /// let run_id = runner.kickoff(S::default()).await?.run_id();
    /// assert_eq!(runner.cancel(run_id, "customer changed their mind").await?, RunStatus::Cancelled);
    /// let run = store.load_run(run_id).await?;
    /// assert_eq!(run.status, RunStatus::Cancelled);
    /// assert!(run.snapshot.state_as::<S>()?.released);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cancel(&self, run_id: Uuid, reason: &str) -> Result<RunStatus, FlowError> {
        let store = self.store_for(run_id)?;
        self.load(run_id).await?;
        match store.request_cancel(run_id, reason).await {
            Ok(()) => {}
            Err(StoreError::Ended { status, .. }) => {
                return Err(FlowError::InvalidStatus { run_id, status, action: "cancelled (it has ended already)" });
            }
            Err(e) => return Err(not_found(e)),
        }
        match self.continue_run(run_id, None).await {
            Err(FlowError::Cancelled { .. }) => Ok(RunStatus::Cancelled),
            Err(FlowError::RunLocked { .. }) => Ok(RunStatus::Running),
            Err(e) => Err(e),
            Ok(outcome) => Ok(outcome.status()),
        }
    }

    /// Edits the state of a paused or failed run before it is resumed (LangGraph's
    /// `update_state`): `edit` changes the run's stored state, which is written as a checkpoint
    /// of its own that names `author` and `reason` ([`CheckpointInfo::edit`](crate::store::CheckpointInfo::edit)),
    /// so the run's history shows who changed what. The run's progress is untouched: the next
    /// resume (or answer) continues from the edited state. Returns the new checkpoint's number.
    ///
    /// Refused, with the state left as it was: a run held by a live lease (a worker running it)
    /// with [`FlowError::RunLocked`]; a run in another status than paused or failed with
    /// [`FlowError::InvalidStatus`]; a run that moved on between the read and the write with
    /// [`StoreError::Moved`] (in [`FlowError::Store`]); an edited state JSON cannot hold with
    /// [`FlowError::Unfaithful`].
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::MemoryStore;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct Order { address: String, shipped_to: Option<String> }
    /// struct Ship;
    /// #[flow(state = Order, name = "runner_doc_update_state")]
    /// impl Ship {
    ///     #[start]
    ///     async fn ship(&self, cx: &Ctx<Order>) -> Result<()> {
    ///         let address = cx.read(|s| s.address.clone());
    ///         if address.is_empty() {
    ///             return Err(Error::permanent("no address"));
    ///         }
    ///         cx.update(move |s| s.shipped_to = Some(address.clone()));
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Ship).with_store(MemoryStore::new());
    /// let run_id = runner.kickoff(Order::default()).await.err().and_then(|e| e.run_id()).expect("a failed run");
    /// runner.update_state(run_id, "alice", "the customer gave the address", |s: &mut Order| {
    ///     s.address = "1 Main St".into();
    /// }).await?;
    /// let done = runner.resume(run_id).await?.completed()?;
    /// assert_eq!(done.state.shipped_to.as_deref(), Some("1 Main St"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_state(
        &self,
        run_id: Uuid,
        author: &str,
        reason: &str,
        edit: impl FnOnce(&mut F::State),
    ) -> Result<u64, FlowError> {
        let store = self.store_for(run_id)?;
        let record = self.load(run_id).await?;
        let now = now_ms();
        if let (Some(owner), Some(expires_at_ms)) = (&record.lease_owner, record.lease_expires_at_ms)
            && expires_at_ms > now
        {
            return Err(FlowError::RunLocked { run_id, owner: owner.clone(), expires_at_ms });
        }
        if !matches!(record.status, RunStatus::Paused | RunStatus::Failed) {
            return Err(not_editable(run_id, record.status));
        }
        let mut state = decode_state::<F::State>(run_id, self.plan.graph.state_type, &record.snapshot)?;
        edit(&mut state);
        let state = crate::faithful::to_raw_value(&state)
            .map_err(|r| crate::faithful::state_error(run_id, self.plan.graph.state_type, r))?;
        let note = crate::store::EditNote { author: author.to_string(), reason: reason.to_string() };
        let edit = crate::store::StateEdit { run_id, version: record.version, state, note };
        let seq = store.edit_state(edit).await.map_err(|e| match e {
            StoreError::Locked { run_id, owner, expires_at_ms } => {
                FlowError::RunLocked { run_id, owner, expires_at_ms }
            }
            StoreError::NotEditable { run_id, status } => not_editable(run_id, status),
            StoreError::NotFound(id) => FlowError::RunNotFound(id),
            e => FlowError::Store(e),
        })?;
        tracing::info!(%run_id, author, reason, seq, "run {run_id}: state edited by {author} ({reason})");
        Ok(seq)
    }

    /// A new run, with a fresh id, from a stored run's latest checkpoint (`at = None`) or
    /// from checkpoint `at` (see [`Store::checkpoints`]). The source run is not touched.
    pub async fn fork(&self, run_id: Uuid, at: Option<u64>) -> Result<RunOutcome<F::State>, FlowError> {
        let store = self.store_for(run_id)?;
        let snapshot = self.source_snapshot(run_id, at).await?;
        let (state, mut progress) = self.decode(run_id, &snapshot)?;
        reopen(&mut progress);
        // The fork inherits the completed steps it starts from: they hold its outputs.
        let inherited = outputs_from_steps(store, run_id, &self.plan, &mut progress).await?;
        let new_id = Uuid::now_v7();
        let mut exec = Execution::new(
            Arc::clone(&self.flow),
            Arc::clone(&self.plan),
            self.shared(new_id),
            None,
            Arc::new(state),
            progress,
        );
        let epoch = store
            .create_run(NewRun {
                run_id: new_id,
                flow: self.plan.graph.name.to_string(),
                parent_run_id: Some(run_id),
                snapshot: exec.snapshot()?,
                steps: inherited,
                start: Start::Leased { owner: self.owner.to_string(), lease: self.lease },
                placement: self.placement.clone(),
                graph: Some(self.plan.run_graph()),
            })
            .await?;
        exec.durability = Some(Durability { store: Arc::clone(store), epoch, lease: self.lease });
        exec.resumed = true;
        drive(exec).await
    }

    /// Stored runs of this flow, newest first. A run whose stored row cannot be read does not
    /// stop the listing: it is reported in [`Listing::damaged`] with its id and error.
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # use flow_core::store::{MemoryStore, RunFilter};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct Once;
    ///
    /// #[flow(state = S)]
    /// impl Once {
    ///     #[start]
    ///     async fn go(&self, _cx: &Ctx<S>) -> Result<()> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Once).with_store(MemoryStore::new());
    /// runner.kickoff(S).await?;
    /// let runs = runner.runs(RunFilter::default()).await?;
    /// assert_eq!(runs.len(), 1);
    /// assert!(runs.damaged.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn runs(&self, mut filter: RunFilter) -> Result<Listing<RunSummary>, FlowError> {
        let store = self.store_for(Uuid::nil())?;
        filter.flow = Some(self.plan.graph.name.to_string());
        Ok(store.list_runs_checked(&filter).await?)
    }

    /// Every step of a stored run: its step rows in the order they were first written (steps
    /// that finished, failed, paused, were skipped or undone, or wait for a retry), then the
    /// steps its newest checkpoint has scheduled that have no row yet, as
    /// [`StepStatus::Ready`](crate::store::StepStatus::Ready) with the input they will get.
    ///
    /// A run writes a step's row when the step first finishes or fails, not when it is
    /// scheduled: scheduled work is already in the checkpoint that schedules it, and a second
    /// copy would cost every durable step a row write. [`Store::steps`] alone lists the rows.
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # use flow_core::store::{SqliteStore, StepStatus};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct Doc;
    /// struct Review;
    ///
    /// #[flow(state = Doc)]
    /// impl Review {
    ///     #[start]
    ///     async fn draft(&self, _cx: &Ctx<Doc>) -> Result<String> {
    ///         Ok("text".into())
    ///     }
    ///     #[listen(draft)]
    ///     async fn check(&self, _cx: &Ctx<Doc>, text: String) -> Result<usize> {
    ///         Ok(text.len())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let runner = Runner::new(Review).with_store(SqliteStore::open(dir.path().join("runs.db")).await?);
    /// let run_id = runner.kickoff(Doc).await?.run_id();
    /// let steps = runner.steps(run_id).await?;
    /// assert_eq!(steps.len(), 2);
    /// assert!(steps.iter().all(|s| s.status == StepStatus::Completed));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, FlowError> {
        // The run first, its rows second: a step that finishes between the two reads is then
        // listed by its row rather than missed.
        let record = self.load(run_id).await?;
        let mut steps = self.store_for(run_id)?.steps(run_id).await?;
        let progress = self.decode_progress(run_id, &record.snapshot)?;
        let graph = self.plan.graph;
        let with_rows: HashSet<&str> = steps.iter().map(|s| s.step_key.as_str()).collect();
        let scheduled: Vec<StepRecord> = progress
            .pending
            .iter()
            .map(|a| (a, a.step_key.to_string()))
            .filter(|(_, key)| !with_rows.contains(key.as_str()))
            .map(|(a, step_key)| StepRecord {
                attempt: a.attempt,
                input: a.payload.as_deref().cloned(),
                ..StepRecord::new(step_key, graph.method(MethodId(a.method)).name, StepStatus::Ready)
            })
            .collect();
        steps.extend(scheduled);
        Ok(steps)
    }

    /// Paused runs of this flow, with what each waits for. A paused run whose stored request
    /// cannot be read is reported in [`Listing::damaged`] and the others are listed.
    pub async fn paused_runs(&self) -> Result<Listing<PauseRequest>, FlowError> {
        let runs = self.runs(RunFilter { status: Some(RunStatus::Paused), ..RunFilter::default() }).await?;
        let mut listing = Listing { items: Vec::with_capacity(runs.items.len()), damaged: runs.damaged };
        for r in runs.items {
            let request = match r.pause {
                Some(pause) => serde_json::from_value::<PauseRequest>(pause).map_err(|e| e.to_string()),
                None => Err("a paused run has no stored request".into()),
            };
            match request {
                Ok(request) => listing.items.push(request),
                Err(detail) => listing.damaged.push(DamagedRun {
                    run_id: r.run_id,
                    error: StoreError::Corrupt { run_id: r.run_id, what: "pause request".into(), detail },
                }),
            }
        }
        Ok(listing)
    }

    async fn load(&self, run_id: Uuid) -> Result<RunRecord, FlowError> {
        let store = self.store_for(run_id)?;
        let record = store.load_run(run_id).await.map_err(not_found)?;
        self.check_flow(run_id, record.flow.clone())?;
        Ok(record)
    }

    fn check_flow(&self, run_id: Uuid, found: String) -> Result<(), FlowError> {
        if found != self.plan.graph.name {
            return Err(FlowError::WrongFlow { run_id, expected: self.plan.graph.name.to_string(), found });
        }
        Ok(())
    }

    fn decode(&self, run_id: Uuid, snapshot: &Snapshot) -> Result<(F::State, Progress), FlowError> {
        let state = decode_state(run_id, self.plan.graph.state_type, snapshot)?;
        Ok((state, self.decode_progress(run_id, snapshot)?))
    }

    fn decode_progress(&self, run_id: Uuid, snapshot: &Snapshot) -> Result<Progress, FlowError> {
        let mut progress = serde_json::from_str::<Progress>(snapshot.progress.get())
            .map_err(|e| FlowError::Corrupt { run_id, what: format!("its progress record: {e}") })?;
        progress.restore(&self.plan).map_err(|what| FlowError::Corrupt { run_id, what })?;
        Ok(progress)
    }

    async fn continue_run(
        &self,
        run_id: Uuid,
        input: Option<serde_json::Value>,
    ) -> Result<RunOutcome<F::State>, FlowError> {
        let store = self.store_for(run_id)?;
        let record = self.load(run_id).await?;
        // Refused before anything else, so an answer to a run that cannot take it is never
        // taken for a plain resume and dropped.
        if input.is_some() && record.status != RunStatus::Paused {
            return Err(not_waiting(&record));
        }
        let (state, mut progress) = self.decode(run_id, &record.snapshot)?;
        match record.status {
            RunStatus::Completed => {
                outputs_from_steps(store, run_id, &self.plan, &mut progress).await?;
                return Ok(RunOutcome::Completed(result_of(
                    &self.plan,
                    run_id,
                    &progress,
                    state,
                    &self.shared(run_id),
                )));
            }
            RunStatus::Compensated => return compensated_outcome(run_id, &self.plan, &progress, state),
            RunStatus::Escalated if record.cancel_requested.is_none() => return Err(escalated(run_id)),
            RunStatus::Cancelled => return Err(cancelled(run_id)),
            RunStatus::Paused | RunStatus::Running | RunStatus::Queued | RunStatus::Failed | RunStatus::Escalated => {}
        }
        if record.cancel_requested.is_none()
            && was_failed(record.status, &progress)
            && progress.compensation.as_ref().is_some_and(|c| c.finished)
        {
            return Err(compensated(run_id, record.status));
        }
        let input = match (input, progress.pending.iter().find(|a| a.paused.is_some())) {
            (Some(v), Some(a)) => Some((a.step_key.to_string(), v)),
            (Some(_), None) => {
                return Err(FlowError::NotWaiting {
                    run_id,
                    status: record.status,
                    advice: "no step of it waits for an answer (its checkpoint schedules none); resume it \
                             without one, and answer when it asks"
                        .into(),
                });
            }
            (None, _) => None,
        };
        let claim = store.claim(run_id, &self.owner, self.lease).await.map_err(|e| match e {
            StoreError::Locked { run_id, owner, expires_at_ms } => {
                FlowError::RunLocked { run_id, owner, expires_at_ms }
            }
            e => FlowError::Store(e),
        })?;
        let known = Decoded { version: record.version, state, progress };
        self.continue_claimed(store, claim, self.lease, Some(known), input, GiveBack::Release).await
    }

    /// Continues a run claimed by [`Worker::serve`](crate::Worker::serve) (`claim_next`), with
    /// the answer stored with it, if any, under the lease it was claimed with. A run this
    /// process cannot continue is not left in its queue to be claimed again and again: a run
    /// whose record cannot be read, or that is not in a status to continue, is stored failed
    /// with the reason; one a store error interrupted is tried again once its lease lapses.
    pub(crate) async fn run_claim(&self, claim: Claim, lease: Duration) -> Result<RunOutcome<F::State>, FlowError> {
        let run_id = claim.run.run_id;
        let store = self.store_for(run_id)?;
        if let Err(e) = self.check_flow(run_id, claim.run.flow.clone()) {
            release(store, &claim).await;
            return Err(e);
        }
        let refused = match claim.run.status {
            RunStatus::Escalated => Some(escalated(run_id)),
            RunStatus::Cancelled => Some(cancelled(run_id)),
            RunStatus::Completed | RunStatus::Paused | RunStatus::Failed | RunStatus::Compensated => {
                Some(FlowError::InvalidStatus {
                    run_id,
                    status: claim.run.status,
                    action: "continued by a serving worker (only queued runs and runs whose worker died are)",
                })
            }
            RunStatus::Queued | RunStatus::Running => None,
        };
        if let Some(e) = refused {
            // Not runnable: a store claimed it by mistake. Given back as it is.
            release(store, &claim).await;
            return Err(e);
        }
        // An execution that ends without bringing the run to rest (a store that kept failing)
        // keeps its lease, renewed no more: the run is tried again once it lapses, by
        // whichever worker is free. Giving it back at once would have a run that fails the
        // same way every time claimed again and again without pause.
        self.continue_claimed(store, claim, lease, None, None, GiveBack::FailPermanent).await
    }

    /// Everything that follows a claim: the run as claimed (decoded again only if it moved on
    /// since `known` was read), the answer for the step that asked (`input`, else the one
    /// stored with the run), then the execution.
    async fn continue_claimed(
        &self,
        store: &Arc<dyn Store>,
        claim: Claim,
        lease: Duration,
        known: Option<Decoded<F::State>>,
        input: Option<(String, Value)>,
        give_back: GiveBack,
    ) -> Result<RunOutcome<F::State>, FlowError> {
        let run_id = claim.run.run_id;
        // Decode what was claimed: another process may have moved the run on since `load`.
        let (state, mut progress) = match known {
            Some(k) if k.version == claim.run.version => (k.state, k.progress),
            _ => {
                let decoded = self.decode(run_id, &claim.run.snapshot);
                give_back.on_error(store, &claim, decoded).await?
            }
        };
        let failed = was_failed(claim.run.status, &progress);
        // A cancel request wins over everything the run waited for: an answer, a timer, a
        // retry, the repair of a failed step.
        let cancel = claim.run.cancel_requested.clone().filter(|_| !claim.run.status.is_terminal());
        if failed && cancel.is_none() {
            if progress.compensation.as_ref().is_some_and(|c| c.finished) {
                return give_back.on_error(store, &claim, Err(compensated(run_id, claim.run.status))).await;
            }
            if progress.compensation.is_none() {
                reopen(&mut progress);
            }
        }
        let given = input.is_some();
        let input = input.or_else(|| claim.run.answer.clone().map(|a| (a.step_key, a.value)));
        let input = match cancel {
            Some(reason) => {
                tracing::info!(%run_id, %reason, "cancel requested: compensating the run's completed steps");
                progress.cancel(reason);
                None
            }
            None => input,
        };
        if let Some((key, _)) = &input {
            let waits = progress.pending.iter().any(|a| a.paused.is_some() && a.step_key.is(key));
            // Another answer may have reached the run between `load` and the claim, moving it
            // on to another question (or to its end): this answer was for the question that
            // is gone.
            if given && (claim.run.status != RunStatus::Paused || !waits) {
                release(store, &claim).await;
                return Err(moved_on(&claim.run, key));
            }
            if !waits {
                tracing::warn!(
                    %run_id,
                    step_key = %key,
                    "the run holds an answer for step `{key}`, which does not wait for one in its checkpoint; \
                     the answer is dropped and the run goes on without it (it asks again if it needs one)"
                );
            }
        }
        // A step row that cannot be read fails this run alone, and leaves it claimable.
        let outputs = outputs_from_steps(store, run_id, &self.plan, &mut progress).await;
        give_back.on_error(store, &claim, outputs).await?;
        if claim.run.status == RunStatus::Completed {
            release(store, &claim).await;
            return Ok(RunOutcome::Completed(result_of(&self.plan, run_id, &progress, state, &self.shared(run_id))));
        }
        // A retry's backoff holds in a run that was running or parked (resumed early, it parks
        // again), and a sleeping step's wake time always does: it is in the journal anyway.
        let keep_backoff = matches!(claim.run.status, RunStatus::Running | RunStatus::Queued);
        for a in &mut progress.pending {
            a.not_before_ms = a.not_before_ms.filter(|_| keep_backoff || a.sleeping);
        }
        let mut exec = Execution::new(
            Arc::clone(&self.flow),
            Arc::clone(&self.plan),
            self.shared(run_id),
            Some(Durability { store: Arc::clone(store), epoch: claim.epoch, lease }),
            Arc::new(state),
            progress,
        );
        exec.input = input;
        exec.resumed = true;
        if failed {
            exec.retry_failed_undos();
        }
        drive(exec).await
    }
}

/// A run's state and progress as decoded from the record read at `version`.
struct Decoded<S> {
    version: u64,
    state: S,
    progress: Progress,
}

/// What to do with a claim that turns out not to be continuable.
#[derive(Clone, Copy)]
enum GiveBack {
    /// Give the lease back and leave the run as it is (a caller's `resume`: the caller gets the
    /// error and decides).
    Release,
    /// A serving worker: store a run that cannot be read (or is not in a status to go on) as
    /// failed with the reason, so that it leaves its queue rather than being claimed over and
    /// over; leave the lease of one a store error stopped to lapse, so that it is tried again
    /// then (not at once: a run that fails the same way every time would be claimed again and
    /// again without pause).
    FailPermanent,
}

impl GiveBack {
    async fn on_error<T>(
        self,
        store: &Arc<dyn Store>,
        claim: &Claim,
        result: Result<T, FlowError>,
    ) -> Result<T, FlowError> {
        let Err(e) = result else { return result };
        match self {
            GiveBack::FailPermanent if is_permanent(&e) => fail_claimed(store, claim, &e).await,
            GiveBack::FailPermanent => {}
            GiveBack::Release => release(store, claim).await,
        }
        Err(e)
    }
}

/// Whether an error says the run itself cannot be continued by this build (its record does not
/// read, or it is not in a status to go on), as opposed to a store that failed this time.
fn is_permanent(e: &FlowError) -> bool {
    matches!(
        e,
        FlowError::Corrupt { .. }
            | FlowError::StateMismatch { .. }
            | FlowError::InvalidStatus { .. }
            | FlowError::Store(StoreError::Corrupt { .. })
    )
}

/// Stores a claimed run as failed with `error`, its checkpoint as claimed (unchanged), so that
/// it leaves its queue. When that cannot be written, the lease is given back instead.
async fn fail_claimed(store: &Arc<dyn Store>, claim: &Claim, error: &FlowError) {
    let run_id = claim.run.run_id;
    let commit = Commit {
        run_id,
        epoch: claim.epoch,
        status: RunStatus::Failed,
        snapshot: claim.run.snapshot.clone(),
        steps: Vec::new(),
        step_key: None,
        output: None,
        error: Some(error.to_string()),
        pause: None,
        available_at_ms: None,
    };
    match store.commit(commit).await {
        Ok(()) => tracing::error!(
            %run_id,
            error = %error,
            "run {run_id} cannot be continued and was taken out of its queue (stored failed, its checkpoint \
             unchanged): {error}"
        ),
        Err(e) => {
            tracing::warn!(%run_id, error = %e, "could not store the run as failed; giving its lease back");
            release(store, claim).await;
        }
    }
}

/// Whether a run stands failed: stored failed, or put back in its queue after failing
/// ([`Store::requeue`]), its progress still holding the failure.
fn was_failed(status: RunStatus, progress: &Progress) -> bool {
    match status {
        RunStatus::Failed => true,
        RunStatus::Queued => matches!(progress.halt, Some(Halt::Failure { .. } | Halt::CallLimit { .. })),
        _ => false,
    }
}

fn not_editable(run_id: Uuid, status: RunStatus) -> FlowError {
    FlowError::InvalidStatus {
        run_id,
        status,
        action: "edited: only a paused or failed run's state can be edited (the state was not changed)",
    }
}

fn escalated(run_id: Uuid) -> FlowError {
    FlowError::InvalidStatus { run_id, status: RunStatus::Escalated, action: "resumed (fork it to continue)" }
}

fn cancelled(run_id: Uuid) -> FlowError {
    FlowError::InvalidStatus {
        run_id,
        status: RunStatus::Cancelled,
        action: "resumed: it was cancelled (fork an earlier checkpoint to take it up again)",
    }
}

fn compensated(run_id: Uuid, status: RunStatus) -> FlowError {
    FlowError::InvalidStatus {
        run_id,
        status,
        action: "resumed: its completed steps were compensated (fork an earlier checkpoint instead)",
    }
}

/// The outcome of a run stored compensated, read back from its last checkpoint: its halt holds
/// the failure, its compensation what the undo steps did.
fn compensated_outcome<S>(
    run_id: Uuid,
    plan: &Plan,
    progress: &Progress,
    state: S,
) -> Result<RunOutcome<S>, FlowError> {
    let (Some(Halt::Failure { method, error, .. }), Some(c)) = (&progress.halt, &progress.compensation) else {
        return Err(FlowError::Corrupt {
            run_id,
            what: "a compensated run's checkpoint holds no failure or no compensation".into(),
        });
    };
    let method = plan.graph.methods.get(usize::from(*method)).map(|m| m.name.to_string()).ok_or_else(|| {
        FlowError::Corrupt { run_id, what: format!("its failure names method #{method}, which the flow lacks") }
    })?;
    Ok(RunOutcome::Compensated(crate::outcome::Compensated {
        run_id,
        method,
        error: error.clone(),
        undone: c.results.clone(),
        state,
    }))
}

/// How often a second start with an id waits before looking again at a run that another
/// process is running.
const EXISTING_POLL: Duration = Duration::from_millis(50);

/// Runs an execution: polled once right here, and moved into a task of its own only if it has
/// to wait. A run whose steps never wait (in-memory work, a lone durable run's inline commits)
/// then finishes without a task and without the two cross-thread wake-ups that handing it to a
/// worker and the result back would cost. A run that waits is driven by a tokio worker from its
/// first wait on, rather than by whatever polls the caller (`block_on` on another thread would
/// pay two cross-thread wake-ups per wait). Dropping the returned future stops the run, as
/// dropping an un-spawned future would.
///
/// The run's future is boxed here, so the returned future holds a pointer rather than the whole
/// run, and the task moves that pointer: a future polled once may still be spawned because the
/// box keeps it where it was pinned, and the task's first poll hands every resource it waits on
/// the task's waker.
fn drive<F: Flow>(exec: Execution<F>) -> impl Future<Output = Result<RunOutcome<F::State>, FlowError>> {
    let run_id = exec.run.run_id;
    let durable = exec.durability.is_some();
    let mut run = Box::pin(exec.run());
    async move {
        let first = std::future::poll_fn(|cx| {
            Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| run.as_mut().poll(cx))))
        })
        .await;
        match first {
            Ok(Poll::Ready(outcome)) => return outcome,
            Ok(Poll::Pending) => {}
            Err(panic) => {
                return Err(FlowError::Aborted {
                    run_id,
                    message: format!("panicked: {}", panic_text(panic)),
                    resumable: durable,
                });
            }
        }
        let mut task = AbortOnDrop(tokio::spawn(run));
        match (&mut task.0).await {
            Ok(outcome) => outcome,
            Err(e) => Err(FlowError::Aborted { run_id, message: e.to_string(), resumable: durable }),
        }
    }
}

/// Reads the outputs of a stored run's completed steps back into its progress (checkpoints
/// leave them out); returns the step rows that hold them.
async fn outputs_from_steps(
    store: &Arc<dyn Store>,
    run_id: Uuid,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<Vec<StepRecord>, FlowError> {
    let steps = store.steps(run_id).await?;
    Ok(progress.restore_outputs(plan.graph, steps))
}

fn not_found(e: StoreError) -> FlowError {
    match e {
        StoreError::NotFound(id) => FlowError::RunNotFound(id),
        e => FlowError::Store(e),
    }
}

/// Why a run that is not paused cannot take an answer, and what to do instead.
fn not_waiting(record: &RunRecord) -> FlowError {
    let advice = match record.status {
        RunStatus::Completed => {
            "it has finished and asks nothing more; start a new run, or fork one of its checkpoints \
             (`Runner::fork`) to take another course"
                .to_string()
        }
        RunStatus::Failed => "resume it without an answer (`Runner::resume`) to run its failed step again, and \
                              answer when it pauses to ask"
            .to_string(),
        RunStatus::Escalated => "a step handed it to a person; fork it (`Runner::fork`) to continue".to_string(),
        RunStatus::Compensated => "a step failed and its completed steps were undone, so it asks nothing more; \
                                   fork one of its checkpoints (`Runner::fork`) to take it up again"
            .to_string(),
        RunStatus::Cancelled => "it was cancelled and asks nothing more; fork one of its checkpoints \
                                 (`Runner::fork`) to take it up again"
            .to_string(),
        RunStatus::Running => match (&record.lease_owner, record.lease_expires_at_ms) {
            (Some(owner), Some(until)) if until > now_ms() => format!(
                "`{owner}` is running it (lease until {until} ms since epoch) and it has asked nothing; \
                 answer once it pauses (`Runner::paused_runs` lists the runs waiting for an answer)"
            ),
            _ => "it was interrupted while running and has asked nothing; resume it without an answer \
                  (`Runner::resume`), and answer once it pauses"
                .to_string(),
        },
        RunStatus::Paused => "it waits for another answer; read its question (`Runner::paused_runs`)".to_string(),
        RunStatus::Queued => match &record.answer {
            Some(answer) => format!(
                "its question at step `{}` was answered already, and it waits in its queue for a worker to \
                 continue it with that answer; answer again if it asks again (`Runner::paused_runs`)",
                answer.step_key
            ),
            None => "it waits in its queue for a worker and has asked nothing; answer once it pauses \
                     (`Runner::paused_runs` lists the runs waiting for an answer)"
                .to_string(),
        },
    };
    FlowError::NotWaiting { run_id: record.run_id, status: record.status, advice }
}

/// An answer as the run will store it. Checked like everything a run stores: a NaN would
/// otherwise reach the step as `null`.
fn answer_value(run_id: Uuid, answer: &impl Serialize) -> Result<Value, FlowError> {
    crate::faithful::to_value(answer).map_err(|refused| FlowError::InvalidInput {
        run_id,
        expected: "an answer JSON can hold".into(),
        message: refused.into_step_error("the answer").message().to_string(),
    })
}

/// Stores `value` as the answer to the question `record` waits at ([`Store::answer`]), which
/// puts the run back in its queue for a serving worker.
pub(crate) async fn deliver_answer(store: &Arc<dyn Store>, record: &RunRecord, value: Value) -> Result<(), FlowError> {
    let run_id = record.run_id;
    if record.status != RunStatus::Paused {
        return Err(not_waiting(record));
    }
    let step_key = record
        .pause
        .as_ref()
        .and_then(PauseRequest::stored_step_key)
        .ok_or_else(|| FlowError::Corrupt { run_id, what: "its pause request names no step key".into() })?;
    match store.answer(run_id, step_key, value).await {
        Ok(()) => {
            tracing::debug!(%run_id, step_key, "answer stored; the run waits in its queue for a worker");
            Ok(())
        }
        Err(StoreError::NotWaiting { status, waiting_at, .. }) => {
            let now = match (&waiting_at, status) {
                (Some(other), _) => format!("it now waits at step `{other}`"),
                (None, RunStatus::Queued) => "another answer reached it first, and it waits in its queue for a \
                                              worker to continue it with that one"
                    .to_string(),
                (None, status) => format!("it is now {status}"),
            };
            Err(FlowError::NotWaiting {
                run_id,
                status,
                advice: format!(
                    "the question of step `{step_key}` was answered elsewhere while this answer was on its way, \
                     and {now}; read its current question (`Runner::paused_runs`) before answering again"
                ),
            })
        }
        Err(StoreError::NotFound(id)) => Err(FlowError::RunNotFound(id)),
        Err(e) => Err(FlowError::Store(e)),
    }
}

/// How [`Runner::submit_with`] stores a run: under which id, in which queue with which
/// concurrency key, and from when on a worker may start it. What is not set comes from the
/// runner ([`Runner::placement`]); the id is fresh, and the run is due at once.
///
/// ```
/// use flow_core::SubmitOptions;
/// use std::time::Duration;
///
/// let options = SubmitOptions::new()
///     .run_id(uuid::Uuid::now_v7())
///     .queue("invoices")
///     .key("customer-42")
///     .delay(Duration::from_secs(60));
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    run_id: Option<Uuid>,
    queue: Option<String>,
    key: Option<String>,
    not_before_ms: Option<i64>,
}

impl SubmitOptions {
    /// Nothing set: a fresh id, the runner's placement, due now.
    ///
    /// ```
    /// let options = flow_core::SubmitOptions::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores the run under `run_id`; submitting the same id again stores nothing and returns
    /// it (see [`Runner::submit_with_id`]).
    ///
    /// ```
    /// let options = flow_core::SubmitOptions::new().run_id(uuid::Uuid::now_v7());
    /// # let _ = options;
    /// ```
    pub fn run_id(mut self, run_id: Uuid) -> Self {
        self.run_id = Some(run_id);
        self
    }

    /// Puts the run in `queue` rather than the runner's.
    ///
    /// ```
    /// let options = flow_core::SubmitOptions::new().queue("urgent");
    /// # let _ = options;
    /// ```
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Gives the run the concurrency key `key` (a customer id, say), which a queue's per-key
    /// limit ([`QueueLimit::per_key`](crate::store::QueueLimit::per_key)) counts.
    ///
    /// ```
    /// let options = flow_core::SubmitOptions::new().key("customer-42");
    /// # let _ = options;
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// No worker starts the run before `at` (wall-clock time; workers compare it with the
    /// store's clock).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    ///
    /// let options = flow_core::SubmitOptions::new().not_before(SystemTime::now() + Duration::from_secs(60));
    /// # let _ = options;
    /// ```
    pub fn not_before(mut self, at: std::time::SystemTime) -> Self {
        let ms =
            at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.not_before_ms = Some(ms);
        self
    }

    /// No worker starts the run before `delay` from now.
    ///
    /// ```
    /// let options = flow_core::SubmitOptions::new().delay(std::time::Duration::from_secs(60));
    /// # let _ = options;
    /// ```
    pub fn delay(mut self, delay: Duration) -> Self {
        let ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        self.not_before_ms = Some(now_ms().saturating_add(ms));
        self
    }
}

/// The run moved on while an answer for its step `key` was on its way.
fn moved_on(run: &RunRecord, key: &str) -> FlowError {
    let now = match (run.status, run.pause.as_ref().and_then(PauseRequest::stored_step_key)) {
        (RunStatus::Paused, Some(step)) => format!("it now waits at step `{step}`"),
        (status, _) => format!("it is now {status}"),
    };
    FlowError::NotWaiting {
        run_id: run.run_id,
        status: run.status,
        advice: format!(
            "the question of step `{key}` was answered elsewhere while this answer was on its way, and {now}; \
             read its current question (`Runner::paused_runs`) before answering again"
        ),
    }
}

/// Gives back a lease taken for nothing ([`Store::release`]), leaving the run as it was, so
/// that another process can claim it at once. When that fails, the lease lapses on its own.
pub(crate) async fn release(store: &Arc<dyn Store>, claim: &Claim) {
    let run_id = claim.run.run_id;
    if let Err(e) = store.release(run_id, claim.epoch).await {
        tracing::warn!(%run_id, error = %e, "could not give back the lease of a run left as it was; it lapses on its own");
    }
}

/// The state `inputs` make when merged onto `S::default()` (see [`Runner::kickoff_with_inputs`]).
fn state_from_inputs<S: State + Default>(state_type: &'static str, inputs: Value) -> Result<S, FlowError> {
    let refuse = |key: &str, problem: String, expected: String| FlowError::InvalidInputs {
        state_type,
        key: key.to_string(),
        problem,
        expected,
    };
    let Value::Object(inputs) = inputs else {
        return Err(refuse(
            ".",
            format!("the inputs are {}, not an object", json_kind(&inputs)),
            "a JSON object whose keys are fields of the state".into(),
        ));
    };
    let mut merged = match serde_json::to_value(S::default()) {
        Ok(Value::Object(fields)) => fields,
        Ok(other) => {
            return Err(refuse(
                ".",
                format!("the state's default serializes as {}, which has no fields to set", json_kind(&other)),
                "a state that is a struct with named fields".into(),
            ));
        }
        Err(e) => {
            return Err(refuse(
                ".",
                format!("the state's default could not be serialized: {e}"),
                "a state that serializes".into(),
            ));
        }
    };
    let defaults = merged.clone();
    let field_list = || {
        let names: Vec<String> = defaults.keys().map(|k| format!("`{k}`")).collect();
        if names.is_empty() {
            "no key: the state has no fields".to_string()
        } else {
            format!("one of its fields: {}", names.join(", "))
        }
    };
    for (key, value) in &inputs {
        merged.insert(key.clone(), value.clone());
    }
    let state: S = serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| {
        let path = e.path().to_string();
        let key = path.split(['.', '[']).next().filter(|k| !k.is_empty() && inputs.contains_key(*k));
        match key {
            Some(key) => {
                let like = defaults.get(key).map_or_else(
                    || "a value of the field's type".to_string(),
                    |d| format!("a value shaped like the default's `{key}`: {d}"),
                );
                refuse(key, format!("at `{path}`: {}", e.inner()), like)
            }
            // The state refuses the merge as a whole (`deny_unknown_fields`, a custom check):
            // blame an input it does not know, else the first.
            None => {
                let key = inputs.keys().find(|k| !defaults.contains_key(*k)).or_else(|| inputs.keys().next());
                refuse(key.map_or(".", String::as_str), e.into_inner().to_string(), field_list())
            }
        }
    })?;
    // Serde skips a field it does not know unless the state denies unknown fields: a key the
    // default does not have counts only if the state read it (it appears in the state again).
    let unknown: Vec<&String> = inputs.keys().filter(|k| !defaults.contains_key(*k)).collect();
    if !unknown.is_empty() {
        let back = serde_json::to_value(&state).ok();
        let back = back.as_ref().and_then(Value::as_object);
        if let Some(key) = unknown.into_iter().find(|k| back.is_none_or(|b| !b.contains_key(k.as_str()))) {
            return Err(refuse(key, "the state has no such field".into(), field_list()));
        }
    }
    Ok(state)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Makes a failed run's progress runnable again: the failure is cleared and every pending
/// step gets a fresh retry budget.
fn reopen(progress: &mut Progress) {
    if matches!(progress.halt, Some(Halt::Failure { .. } | Halt::CallLimit { .. })) {
        progress.halt = None;
        for a in &mut progress.pending {
            a.attempt = 0;
            if !a.sleeping {
                a.not_before_ms = None;
            }
        }
    }
}

/// `kickoff` straight on a flow value, for runs that need no store.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S { n: u32 }
/// struct Inc;
///
/// #[flow(state = S)]
/// impl Inc {
///     #[start]
///     async fn inc(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.n += 1); Ok(()) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let run = Inc.kickoff(S::default()).await?.completed()?;
/// assert_eq!(run.state.n, 1);
/// let runner = Inc.runner(); // the same, as a Runner to configure
/// assert_eq!(runner.graph().name, "Inc");
/// # Ok(())
/// # }
/// ```
pub trait FlowExt: Flow {
    /// Runs the flow once, in memory: `Runner::new(self).kickoff(state)`.
    fn kickoff(self, state: Self::State) -> impl Future<Output = Result<RunOutcome<Self::State>, FlowError>> + Send {
        async move { Runner::new(self).kickoff(state).await }
    }

    /// A runner for this flow.
    fn runner(self) -> Runner<Self> {
        Runner::new(self)
    }
}

impl<F: Flow> FlowExt for F {}
