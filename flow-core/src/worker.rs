//! [`Worker`]: resumes any stored run by its id, finding its flow by the name the run was
//! stored under; at start-up it recovers every run a crashed process left running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::error::FlowError;
use crate::flow::{Flow, registered_flows};
use crate::runner::{Runner, deliver_answer};
use crate::serve::{ServeOptions, Serving};
use crate::store::{Claim, RunFilter, RunStatus, Store, StoreError};

/// A runner whatever its flow: what a worker calls on it.
pub(crate) trait AnyRunner: Send + Sync {
    fn resume(&self, run_id: Uuid) -> BoxFuture<'_, Result<RunStatus, FlowError>>;
    fn resume_with(&self, run_id: Uuid, input: serde_json::Value) -> BoxFuture<'_, Result<RunStatus, FlowError>>;
    /// Runs a run claimed by a serving worker, under the lease it was claimed with.
    fn run_claim(&self, claim: Claim, lease: Duration) -> BoxFuture<'_, Result<RunStatus, FlowError>>;
}

impl<F: Flow> AnyRunner for Runner<F> {
    fn resume(&self, run_id: Uuid) -> BoxFuture<'_, Result<RunStatus, FlowError>> {
        Box::pin(async move { self.resume(run_id).await.map(|o| o.status()) })
    }

    fn resume_with(&self, run_id: Uuid, input: serde_json::Value) -> BoxFuture<'_, Result<RunStatus, FlowError>> {
        Box::pin(async move { self.resume_with(run_id, input).await.map(|o| o.status()) })
    }

    fn run_claim(&self, claim: Claim, lease: Duration) -> BoxFuture<'_, Result<RunStatus, FlowError>> {
        Box::pin(async move { self.run_claim(claim, lease).await.map(|o| o.status()) })
    }
}

/// Resumes stored runs of any registered flow.
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::store::{MemoryStore, Store};
/// use flow_core::{RunStatus, Worker};
/// use serde::{Deserialize, Serialize};
/// use std::sync::Arc;
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S { done: bool }
/// struct Job;
///
/// #[flow(state = S, name = "worker_doc_job")]
/// impl Job {
///     #[start]
///     async fn work(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.done = true); Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let run = Runner::new(Job).with_shared_store(store.clone()).kickoff(S::default()).await?;
/// let worker = Worker::new(store).register(Job);
/// assert_eq!(worker.resume(run.run_id()).await?, RunStatus::Completed);
/// # Ok(())
/// # }
/// ```
pub struct Worker {
    store: Arc<dyn Store>,
    runners: BTreeMap<&'static str, Arc<dyn AnyRunner>>,
    lease: Option<Duration>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("flows", &self.runners.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker over a store, with no flows yet.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Worker { store, runners: BTreeMap::new(), lease: None }
    }

    /// The lease the runners of flows registered after this call take on runs, and the one
    /// [`Worker::serve`] claims with unless [`ServeOptions::lease`] says otherwise.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Adds a flow: its runs can now be resumed by this worker.
    pub fn register<F: Flow>(self, flow: F) -> Self {
        let mut runner = Runner::new(flow).with_shared_store(Arc::clone(&self.store));
        if let Some(lease) = self.lease {
            runner = runner.lease(lease);
        }
        self.register_runner(runner)
    }

    /// Adds a configured runner (its store is replaced by the worker's).
    pub fn register_runner<F: Flow>(mut self, runner: Runner<F>) -> Self {
        let runner = runner.with_shared_store(Arc::clone(&self.store));
        self.runners.insert(F::graph().name, Arc::new(runner));
        self
    }

    /// Resumes a stored run, whatever its flow.
    pub async fn resume(&self, run_id: Uuid) -> Result<RunStatus, FlowError> {
        self.runner_of(run_id).await?.resume(run_id).await
    }

    /// Answers a paused run's question, whatever its flow, as
    /// [`Runner::resume_with`](crate::Runner::resume_with) does: an answer the run is not waiting
    /// for (it is completed, failed, running, or waits at another question) is refused with
    /// [`FlowError::NotWaiting`] and the run is left as it was.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, Store};
    /// use flow_core::{RunStatus, Worker};
    /// use std::sync::Arc;
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct S { approved: bool }
    /// struct Approve;
    ///
    /// #[flow(state = S, name = "worker_doc_approve")]
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
    /// let run = Runner::new(Approve).with_shared_store(store.clone()).kickoff(S::default()).await?;
    /// let worker = Worker::new(store).register(Approve);
    /// assert_eq!(worker.resume_with(run.run_id(), serde_json::json!(true)).await?, RunStatus::Completed);
    /// // Answered: a second answer is refused, saying why.
    /// let late = worker.resume_with(run.run_id(), serde_json::json!(false)).await.unwrap_err();
    /// assert!(matches!(late, FlowError::NotWaiting { status: RunStatus::Completed, .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resume_with(&self, run_id: Uuid, input: serde_json::Value) -> Result<RunStatus, FlowError> {
        self.runner_of(run_id).await?.resume_with(run_id, input).await
    }

    /// Answers a paused run's question from any process, whatever its flow, as
    /// [`Runner::answer`](crate::Runner::answer) does: the answer is stored and the run goes
    /// back to its queue, where whichever serving worker is free first continues it. This
    /// worker need not run the run's flow. An answer the run is not waiting for is refused with
    /// [`FlowError::NotWaiting`] and nothing is stored.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, Store};
    /// use flow_core::{RunStatus, Worker};
    /// use std::sync::Arc;
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct S { name: String }
    /// struct Greet;
    ///
    /// #[flow(state = S, name = "worker_doc_answer")]
    /// impl Greet {
    ///     #[start]
    ///     async fn ask(&self, cx: &Ctx<S>) -> Result<()> {
    ///         let name: String = cx.ask(InputRequest::new("Your name?")).await?;
    ///         cx.update(move |s| s.name = name.clone());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    /// let run = Runner::new(Greet).with_shared_store(store.clone()).kickoff(S::default()).await?;
    /// // A process that does not run the flow can answer.
    /// Worker::new(store.clone()).answer(run.run_id(), serde_json::json!("Ada")).await?;
    /// let stored = store.load_run(run.run_id()).await?;
    /// assert_eq!(stored.status, RunStatus::Queued);
    /// assert_eq!(stored.answer.map(|a| a.value), Some(serde_json::json!("Ada")));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn answer(&self, run_id: Uuid, answer: serde_json::Value) -> Result<(), FlowError> {
        let record = self.store.load_run(run_id).await.map_err(|e| match e {
            StoreError::NotFound(id) => FlowError::RunNotFound(id),
            e => FlowError::Store(e),
        })?;
        deliver_answer(&self.store, &record, answer).await
    }

    /// Serves runs in the background until stopped: claims runnable runs of the flows
    /// registered on this worker in the queues it is given ([`ServeOptions`]), as many at once
    /// as it has room for, and runs each on a task of its own. Runnable: submitted
    /// ([`Runner::submit`](crate::Runner::submit)), answered
    /// ([`Runner::answer`](crate::Runner::answer)), due again, or left running by a worker
    /// whose lease lapsed (it died or froze). Any number of workers, in any number of
    /// processes, serve one store together; the queues' limits hold over all of them.
    ///
    /// When nothing is claimable it waits for the store to say work may have arrived, or for
    /// the poll interval when the store cannot tell. A failing store (a database restarting)
    /// is logged and retried with backoff: serving never stops on its own. The log says which
    /// worker claimed, finished, gave back or lost which run.
    ///
    /// Must be called inside a tokio runtime, on which the worker runs. Stop it with the
    /// returned [`Serving`].
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::{MemoryStore, QueueLimit, Store};
    /// use flow_core::{RunStatus, ServeOptions, Worker};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct S { sent: bool }
    /// struct Mail;
    ///
    /// #[flow(state = S, name = "worker_doc_serve")]
    /// impl Mail {
    ///     #[start]
    ///     async fn send(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.sent = true); Ok(()) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    /// let runner = Runner::new(Mail).with_shared_store(store.clone()).queue("emails");
    /// let ids = [runner.submit(S::default()).await?, runner.submit(S::default()).await?];
    ///
    /// let serving = Worker::new(store.clone())
    ///     .register(Mail)
    ///     .serve(ServeOptions::new().queue(QueueLimit::new("emails").concurrency(5)));
    /// for id in ids {
    ///     while store.load_run(id).await?.status != RunStatus::Completed {
    ///         tokio::time::sleep(Duration::from_millis(5)).await;
    ///     }
    /// }
    /// let summary = serving.shutdown(Duration::from_secs(30)).await;
    /// assert_eq!(summary.finished, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve(&self, options: ServeOptions) -> Serving {
        crate::serve::start(Arc::clone(&self.store), self.runners.clone(), options, self.lease)
    }

    async fn runner_of(&self, run_id: Uuid) -> Result<&Arc<dyn AnyRunner>, FlowError> {
        // The summary names the flow without decoding the run's state.
        let flow = self.store.run_summary(run_id).await.map_err(|e| match e {
            StoreError::NotFound(id) => FlowError::RunNotFound(id),
            e => FlowError::Store(e),
        })?;
        let flow = flow.flow;
        self.runners.get(flow.as_str()).ok_or_else(|| FlowError::UnknownFlow {
            run_id,
            compiled_in: registered_flows().any(|r| r.name == flow),
            registered: self.runners.keys().map(|k| k.to_string()).collect(),
            flow,
        })
    }

    /// Resumes every run left `running` (by a process that died), one after the other.
    /// Returns each run's id with how it ended this time. A run that cannot be read or resumed
    /// (a damaged row) is in the list with its error; the others are recovered all the same.
    pub async fn recover(&self) -> Result<Vec<(Uuid, Result<RunStatus, FlowError>)>, FlowError> {
        let stuck = self
            .store
            .list_runs_checked(&RunFilter { status: Some(RunStatus::Running), ..RunFilter::default() })
            .await?;
        let mut out = Vec::with_capacity(stuck.items.len() + stuck.damaged.len());
        for r in &stuck.items {
            if self.runners.contains_key(r.flow.as_str()) {
                out.push((r.run_id, self.resume(r.run_id).await));
            }
        }
        out.extend(stuck.damaged.into_iter().map(|d| (d.run_id, Err(FlowError::Store(d.error)))));
        Ok(out)
    }
}
