//! [`Worker::serve`](crate::Worker::serve): claims runnable runs from the store and runs them,
//! on any number of processes at once; [`Serving`] stops it gracefully.
//!
//! The loop: claim as many runnable runs of the worker's flows in its queues as it has room
//! for ([`Store::claim_next`]); run each on a task of its own under the lease of its claim;
//! when nothing is claimable, wait for the store to say work may have arrived
//! ([`Store::wait_for_work`]), or for the poll interval (with jitter) when it cannot tell. A
//! store that fails (a database restarting) is logged and retried with backoff; the loop never
//! ends on its own.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::FlowError;
use crate::store::{Claim, ClaimRequest, Placement, QueueLimit, RunStatus, Store, StoreError};
use crate::worker::AnyRunner;

/// How [`Worker::serve`](crate::Worker::serve) claims and runs: which queues (with their
/// limits), how many runs at once, how often it looks for work when the store cannot say, and
/// the lease its claims take.
///
/// ```
/// use flow_core::ServeOptions;
/// use flow_core::store::QueueLimit;
/// use std::time::Duration;
///
/// let options = ServeOptions::new()
///     .queue(QueueLimit::new("invoices").concurrency(8).per_key(1))
///     .queue(QueueLimit::new("default"))
///     .max_in_flight(32)
///     .poll_interval(Duration::from_millis(500))
///     .lease(Duration::from_secs(30))
///     .name("billing-1");
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct ServeOptions {
    name: Option<String>,
    queues: Option<Vec<QueueLimit>>,
    max_in_flight: usize,
    poll_interval: Duration,
    lease: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            name: None,
            queues: None,
            max_in_flight: ServeOptions::DEFAULT_MAX_IN_FLIGHT,
            poll_interval: ServeOptions::DEFAULT_POLL_INTERVAL,
            lease: None,
        }
    }
}

impl ServeOptions {
    /// Runs held at once unless told otherwise.
    ///
    /// ```
    /// assert_eq!(flow_core::ServeOptions::DEFAULT_MAX_IN_FLIGHT, 16);
    /// ```
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
    /// How long an idle worker waits before it looks for work again, unless the store wakes it
    /// sooner.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(flow_core::ServeOptions::DEFAULT_POLL_INTERVAL, Duration::from_secs(1));
    /// ```
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// The defaults: the `default` queue with no limits, 16 runs at once, a poll every second,
    /// the worker's lease (30 s unless [`Worker::lease`](crate::Worker::lease) says otherwise).
    ///
    /// ```
    /// let options = flow_core::ServeOptions::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `queue` with its limits. The first call replaces the `default` queue; each
    /// further call adds a queue (a queue named twice keeps the limits given last). The limits
    /// hold over every worker serving the queue together, so give every worker the same ones.
    ///
    /// ```
    /// use flow_core::store::QueueLimit;
    ///
    /// let options = flow_core::ServeOptions::new().queue(QueueLimit::new("emails").concurrency(5));
    /// # let _ = options;
    /// ```
    pub fn queue(mut self, queue: QueueLimit) -> Self {
        let queues = self.queues.get_or_insert_with(Vec::new);
        queues.retain(|q| q.queue != queue.queue);
        queues.push(queue);
        self
    }

    /// At most `n` runs held by this worker at once (at least 1).
    ///
    /// ```
    /// let options = flow_core::ServeOptions::new().max_in_flight(4);
    /// # let _ = options;
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How long an idle worker waits before it looks for work again when the store does not
    /// wake it sooner (at least 1 ms; each wait is this ±20%, so that workers started together
    /// do not poll together).
    ///
    /// ```
    /// let options = flow_core::ServeOptions::new().poll_interval(std::time::Duration::from_millis(200));
    /// # let _ = options;
    /// ```
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The lease each claim takes, renewed every third of it while the run executes (at least
    /// 30 ms). A worker that dies has its runs taken over by another once the lease lapses,
    /// within the lease plus one poll interval.
    ///
    /// ```
    /// let options = flow_core::ServeOptions::new().lease(std::time::Duration::from_secs(10));
    /// # let _ = options;
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease.max(Duration::from_millis(30)));
        self
    }

    /// The name this worker claims runs under and logs with (default: the process's name,
    /// `host:pid:nonce`, and `#n` for the n-th worker served in the process). Give each worker
    /// a distinct name.
    ///
    /// ```
    /// let options = flow_core::ServeOptions::new().name("billing-1");
    /// # let _ = options;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// What a worker did while it served, returned when it stops.
///
/// ```
/// use flow_core::store::{MemoryStore, Store};
/// use flow_core::{ServeOptions, Worker};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let serving = Worker::new(store).serve(ServeOptions::new().name("idle"));
/// let summary = serving.shutdown(Duration::from_secs(1)).await;
/// assert_eq!(summary.worker, "idle");
/// assert_eq!((summary.claimed, summary.finished), (0, 0));
/// assert!(summary.released.is_empty() && summary.lost.is_empty());
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSummary {
    /// The worker's name.
    pub worker: String,
    /// Runs claimed.
    pub claimed: u64,
    /// Executions that brought their run to rest: completed, paused for an answer, failed (the
    /// run stored failed), escalated, or parked in its queue until it is due.
    pub finished: u64,
    /// Executions that stopped on an error without bringing their run to rest (a store that
    /// kept failing); each such run is tried again once its lease lapses.
    pub errors: u64,
    /// Runs this worker stopped because another worker had taken them over (its lease lapsed
    /// while this worker was frozen or cut off); nothing was committed after the takeover.
    pub lost: Vec<Uuid>,
    /// Runs still in flight at the shutdown deadline, stopped and given back
    /// ([`Store::release`]) so that another worker takes them at once.
    pub released: Vec<Uuid>,
    /// Times claiming failed on a store error (retried with backoff).
    pub store_errors: u64,
}

/// A worker serving runs in the background ([`Worker::serve`](crate::Worker::serve)); stop it
/// with [`Serving::shutdown`], on a signal with [`Serving::until_signal`], or on any event with
/// [`Serving::stop_when`].
///
/// Dropping it stops the worker at once: it claims nothing more, stops its runs in flight and
/// gives them back, in the background.
///
/// ```
/// use flow_core::store::{MemoryStore, Store};
/// use flow_core::{ServeOptions, Worker};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let serving = Worker::new(store).serve(ServeOptions::new().name("w1"));
/// assert_eq!(serving.name(), "w1");
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// stop.send(()).ok();
/// // Stops when the future resolves, giving runs in flight 5 s to finish.
/// let summary = serving.stop_when(async { stopped.await.ok(); }, Duration::from_secs(5)).await;
/// assert_eq!(summary.worker, "w1");
/// # }
/// ```
#[must_use = "dropping the handle stops the worker at once"]
#[derive(Debug)]
pub struct Serving {
    name: Arc<str>,
    stop: watch::Sender<Option<Instant>>,
    task: Option<JoinHandle<ServeSummary>>,
}

impl Serving {
    /// The name the worker claims and logs under.
    ///
    /// ```
    /// # use flow_core::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let worker = flow_core::Worker::new(std::sync::Arc::new(MemoryStore::new()));
    /// let serving = worker.serve(flow_core::ServeOptions::new().name("w7"));
    /// assert_eq!(serving.name(), "w7");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops gracefully: claims nothing more, lets the runs in flight finish for up to
    /// `deadline`, then stops the rest (their executions are dropped: nothing more of them runs
    /// here) and gives their leases back so that another worker takes them at once. Returns
    /// what the worker did.
    ///
    /// ```
    /// # use flow_core::store::MemoryStore;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let worker = flow_core::Worker::new(std::sync::Arc::new(MemoryStore::new()));
    /// let summary = worker.serve(flow_core::ServeOptions::new()).shutdown(Duration::from_secs(10)).await;
    /// assert!(summary.released.is_empty());
    /// # }
    /// ```
    pub async fn shutdown(mut self, deadline: Duration) -> ServeSummary {
        let now = Instant::now();
        // A deadline too far to be a point in time is none: wait as long as the runs take.
        let at = now.checked_add(deadline).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        self.stop.send_replace(Some(at));
        let Some(task) = self.task.take() else {
            return ServeSummary { worker: self.name.to_string(), ..ServeSummary::default() };
        };
        match task.await {
            Ok(summary) => summary,
            Err(e) => {
                tracing::error!(worker = %self.name, error = %e, "the serving loop stopped unexpectedly; its runs' leases lapse on their own");
                ServeSummary { worker: self.name.to_string(), ..ServeSummary::default() }
            }
        }
    }

    /// Serves until `signal` resolves, then [`Serving::shutdown`] with `deadline`.
    ///
    /// ```
    /// # use flow_core::store::MemoryStore;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let worker = flow_core::Worker::new(std::sync::Arc::new(MemoryStore::new()));
    /// let serving = worker.serve(flow_core::ServeOptions::new());
    /// let summary = serving.stop_when(tokio::time::sleep(Duration::from_millis(10)), Duration::from_secs(5)).await;
    /// assert_eq!(summary.claimed, 0);
    /// # }
    /// ```
    pub async fn stop_when(self, signal: impl Future<Output = ()>, deadline: Duration) -> ServeSummary {
        signal.await;
        tracing::info!(worker = %self.name, "stop requested; shutting down gracefully");
        self.shutdown(deadline).await
    }

    /// Serves until the process is asked to stop (SIGTERM, or ctrl-c / SIGINT), then
    /// [`Serving::shutdown`] with `deadline`: what a worker's `main` ends with, so that a
    /// deployment that stops it (Kubernetes, systemd) has its runs handed over at once.
    ///
    /// ```no_run
    /// use flow_core::store::{MemoryStore, Store};
    /// use flow_core::{ServeOptions, Worker};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// #[tokio::main]
    /// async fn main() {
    ///     let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    ///     let worker = Worker::new(store); // .register(MyFlow) ...
    ///     let summary = worker.serve(ServeOptions::new()).until_signal(Duration::from_secs(30)).await;
    ///     eprintln!("finished {} runs, handed {} over", summary.finished, summary.released.len());
    /// }
    /// ```
    pub async fn until_signal(self, deadline: Duration) -> ServeSummary {
        let name = Arc::clone(&self.name);
        self.stop_when(
            async move {
                let which = termination_signal().await;
                tracing::info!(worker = %name, signal = which, "received {which}");
            },
            deadline,
        )
        .await
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.task.is_some() {
            // Not shut down: stop at once; the loop gives its runs back in the background.
            self.stop.send_if_modified(|stop| {
                if stop.is_none() {
                    *stop = Some(Instant::now());
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// Resolves on SIGTERM or ctrl-c (SIGINT), naming which. A signal that cannot be listened for
/// is logged and the other one still is.
async fn termination_signal() -> &'static str {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "ctrl-c",
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for ctrl-c; stopping on SIGTERM only");
                std::future::pending().await
            }
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    which = ctrl_c => which,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on ctrl-c only");
                ctrl_c.await
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await
    }
}

/// A default name per served worker: the process's, numbered.
fn next_name() -> String {
    static SERVED: AtomicU64 = AtomicU64::new(0);
    let n = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    format!("{}#{n}", crate::runner::this_worker())
}

/// Starts serving: the loop on a task of its own.
pub(crate) fn start(
    store: Arc<dyn Store>,
    runners: BTreeMap<&'static str, Arc<dyn AnyRunner>>,
    options: ServeOptions,
    worker_lease: Option<Duration>,
) -> Serving {
    let name: Arc<str> = Arc::from(options.name.unwrap_or_else(next_name));
    let lease = options.lease.or(worker_lease).unwrap_or(Duration::from_secs(30));
    let queues = options.queues.unwrap_or_else(|| vec![QueueLimit::new(Placement::DEFAULT_QUEUE)]);
    let request = ClaimRequest {
        owner: name.to_string(),
        lease,
        flows: runners.keys().map(|f| f.to_string()).collect(),
        queues,
        max: 0,
    };
    let serve = Loop {
        name: Arc::clone(&name),
        store,
        runners,
        request,
        max_in_flight: options.max_in_flight,
        poll: options.poll_interval,
        running: JoinSet::new(),
        held: HashMap::new(),
        summary: ServeSummary { worker: name.to_string(), ..ServeSummary::default() },
    };
    let (stop, stopped) = watch::channel(None);
    let task = tokio::spawn(serve.run(stopped));
    Serving { name, stop, task: Some(task) }
}

/// A run this worker holds: what its task runs, under which lease.
struct Held {
    run_id: Uuid,
    epoch: u64,
    flow: String,
}

type Ran = Result<RunStatus, FlowError>;

struct Loop {
    name: Arc<str>,
    store: Arc<dyn Store>,
    runners: BTreeMap<&'static str, Arc<dyn AnyRunner>>,
    request: ClaimRequest,
    max_in_flight: usize,
    poll: Duration,
    running: JoinSet<Ran>,
    held: HashMap<tokio::task::Id, Held>,
    summary: ServeSummary,
}

/// What woke an idle loop.
enum Wake {
    Stop,
    Done(Result<(tokio::task::Id, Ran), JoinError>),
    Timer,
}

/// The deadline a stop request set, if any; a handle gone without a word is a stop now.
fn stop_requested(stop: &watch::Receiver<Option<Instant>>) -> Option<Instant> {
    let requested = *stop.borrow();
    match requested {
        Some(at) => Some(at),
        None if stop.has_changed().is_err() => Some(Instant::now()),
        None => None,
    }
}

/// `d` ±20%, so that workers started together do not poll the store together.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// The wait after the `n`-th store failure in a row: doubling from 50 ms up to the larger of
/// 5 s and the poll interval, with jitter.
fn backoff(n: u32, poll: Duration) -> Duration {
    let cap = poll.max(Duration::from_secs(5));
    let base = Duration::from_millis(50).saturating_mul(1 << n.saturating_sub(1).min(16));
    base.min(cap).mul_f64(0.5 + 0.5 * fastrand::f64())
}

impl Loop {
    async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) -> ServeSummary {
        let queues: Vec<&str> = self.request.queues.iter().map(|q| q.queue.as_str()).collect();
        tracing::info!(
            worker = %self.name,
            flows = ?self.request.flows,
            queues = ?queues,
            max_in_flight = self.max_in_flight,
            lease_ms = self.request.lease.as_millis() as u64,
            "worker {} serving",
            self.name
        );
        if self.request.flows.is_empty() || self.request.queues.is_empty() {
            tracing::warn!(
                worker = %self.name,
                "this worker has no flows or no queues, so it claims nothing; register flows (`Worker::register`) \
                 and give it queues (`ServeOptions::queue`)"
            );
        }
        let mut failures = 0u32;
        let deadline = loop {
            if let Some(at) = stop_requested(&stop) {
                break at;
            }
            while let Some(done) = self.running.try_join_next_with_id() {
                self.on_done(done).await;
            }
            let free = self.max_in_flight.saturating_sub(self.running.len());
            let mut idle = false;
            let mut pause = None;
            if free > 0 {
                self.request.max = free;
                match self.store.claim_next(&self.request).await {
                    Ok(claims) => {
                        if failures > 0 {
                            tracing::info!(worker = %self.name, failures, "the store answers again; claiming");
                            failures = 0;
                        }
                        if claims.is_empty() {
                            idle = true;
                        } else {
                            for claim in claims {
                                self.start(claim).await;
                            }
                            // There may be more: claim again before waiting.
                            continue;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        self.summary.store_errors += 1;
                        let delay = backoff(failures, self.poll);
                        tracing::warn!(
                            worker = %self.name,
                            error = %e,
                            failures,
                            retry_in_ms = delay.as_millis() as u64,
                            "claiming runs failed ({e}); retrying in {delay:?}"
                        );
                        pause = Some(delay);
                    }
                }
            }
            let wait = if idle { jittered(self.poll) } else { pause.unwrap_or(Duration::ZERO) };
            let timed = idle || pause.is_some();
            let wake = tokio::select! {
                biased;
                _ = stop.changed() => Wake::Stop,
                Some(done) = self.running.join_next_with_id() => Wake::Done(done),
                _ = self.store.wait_for_work(wait), if idle => Wake::Timer,
                _ = tokio::time::sleep(wait), if !idle && timed => Wake::Timer,
            };
            match wake {
                Wake::Done(done) => self.on_done(done).await,
                Wake::Stop | Wake::Timer => {}
            }
        };
        self.drain(deadline).await;
        tracing::info!(
            worker = %self.name,
            claimed = self.summary.claimed,
            finished = self.summary.finished,
            errors = self.summary.errors,
            lost = self.summary.lost.len(),
            released = self.summary.released.len(),
            "worker {} stopped",
            self.name
        );
        self.summary
    }

    /// Runs a claimed run on a task of its own.
    async fn start(&mut self, claim: Claim) {
        self.summary.claimed += 1;
        let run_id = claim.run.run_id;
        let epoch = claim.epoch;
        let flow = claim.run.flow.clone();
        let Some(runner) = self.runners.get(flow.as_str()).map(Arc::clone) else {
            // The store handed over a run of a flow this worker did not ask for.
            tracing::error!(
                worker = %self.name,
                %run_id,
                flow,
                "claimed run {run_id} of flow `{flow}`, which this worker does not run; giving it back"
            );
            self.release(run_id, epoch).await;
            return;
        };
        tracing::info!(
            worker = %self.name,
            %run_id,
            flow,
            queue = %claim.run.placement.queue,
            key = ?claim.run.placement.key,
            epoch,
            status = %claim.run.status,
            answered = claim.run.answer.is_some(),
            "worker {} claimed run {run_id}{}",
            self.name,
            match (claim.run.status, &claim.run.answer) {
                (RunStatus::Running, _) => " (taking it over: the worker running it stopped)",
                (_, Some(_)) => " (answered)",
                _ => "",
            }
        );
        let lease = self.request.lease;
        let task = self.running.spawn(async move { runner.run_claim(claim, lease).await });
        self.held.insert(task.id(), Held { run_id, epoch, flow });
    }

    async fn on_done(&mut self, done: Result<(tokio::task::Id, Ran), JoinError>) {
        match done {
            Ok((id, ran)) => {
                if let Some(held) = self.held.remove(&id) {
                    self.finished(held, ran).await;
                }
            }
            Err(e) => {
                let Some(held) = self.held.remove(&e.id()) else { return };
                if e.is_cancelled() {
                    self.give_back(held).await;
                } else {
                    self.summary.errors += 1;
                    tracing::error!(
                        worker = %self.name,
                        run_id = %held.run_id,
                        error = %e,
                        "the task running run {} stopped: {e}; the run is tried again once its lease lapses (within {:?})",
                        held.run_id,
                        self.request.lease
                    );
                }
            }
        }
    }

    /// Logs how an execution ended, and counts it.
    async fn finished(&mut self, held: Held, ran: Ran) {
        let Held { run_id, epoch, flow } = held;
        let worker = &self.name;
        match ran {
            Ok(status) => {
                self.summary.finished += 1;
                let what = match status {
                    RunStatus::Completed => "completed",
                    RunStatus::Paused => "paused: it waits for an answer",
                    RunStatus::Escalated => "escalated to a person",
                    RunStatus::Queued => "parked in its queue until it is due",
                    RunStatus::Failed => "failed",
                    RunStatus::Cancelled => "cancelled",
                    RunStatus::Compensated => "failed, and its completed steps were compensated",
                    RunStatus::Running => "stopped while running",
                };
                tracing::info!(%worker, %run_id, flow, %status, "worker {worker} finished run {run_id}: {what}");
            }
            Err(FlowError::LeaseLost { .. }) => {
                self.summary.lost.push(run_id);
                let now = self.store.load_run(run_id).await.ok();
                let (current, owner) = match &now {
                    Some(r) => {
                        (r.epoch.to_string(), r.lease_owner.clone().unwrap_or_else(|| "none (it is at rest)".into()))
                    }
                    None => (format!("after {epoch}"), "unknown".into()),
                };
                tracing::warn!(
                    %worker,
                    %run_id,
                    flow,
                    held_epoch = epoch,
                    epoch = %current,
                    owner = %owner,
                    "run {run_id}: lease lost to another worker (epoch {current}); stopped here without committing"
                );
            }
            Err(e) if at_rest(&e) => {
                self.summary.finished += 1;
                tracing::warn!(%worker, %run_id, flow, error = %e, "worker {worker} finished run {run_id} with an error: {e}");
            }
            Err(e) => {
                self.summary.errors += 1;
                tracing::error!(
                    %worker,
                    %run_id,
                    flow,
                    error = %e,
                    "worker {worker} could not continue run {run_id}: {e}; it is tried again once its lease lapses (within {:?})",
                    self.request.lease
                );
            }
        }
    }

    /// Stops claiming; lets the runs in flight finish until `deadline`, then stops the rest and
    /// gives them back.
    async fn drain(&mut self, deadline: Instant) {
        if !self.running.is_empty() {
            tracing::info!(
                worker = %self.name,
                in_flight = self.running.len(),
                "worker {} stopping: claiming nothing more; {} run(s) in flight may finish until the deadline",
                self.name,
                self.running.len()
            );
        }
        while !self.running.is_empty() {
            let done = tokio::select! {
                done = self.running.join_next_with_id() => done,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            if let Some(done) = done {
                self.on_done(done).await;
            }
        }
        if self.running.is_empty() {
            return;
        }
        tracing::warn!(
            worker = %self.name,
            left = self.running.len(),
            "shutdown deadline reached: stopping {} run(s) still in flight and giving them back",
            self.running.len()
        );
        self.running.abort_all();
        while let Some(done) = self.running.join_next_with_id().await {
            self.on_done(done).await;
        }
    }

    /// Gives back a run stopped at shutdown.
    async fn give_back(&mut self, held: Held) {
        let run_id = held.run_id;
        match self.store.release(run_id, held.epoch).await {
            Ok(()) => {
                self.summary.released.push(run_id);
                tracing::info!(
                    worker = %self.name,
                    %run_id,
                    "worker {} stopped run {run_id} unfinished and gave it back; another worker takes it at once",
                    self.name
                );
            }
            Err(StoreError::Fenced { current, .. }) => {
                self.summary.lost.push(run_id);
                tracing::warn!(
                    worker = %self.name,
                    %run_id,
                    epoch = current,
                    "run {run_id}: lease lost to another worker (epoch {current}); stopped here without committing"
                );
            }
            Err(e) => {
                self.summary.errors += 1;
                tracing::warn!(
                    worker = %self.name,
                    %run_id,
                    error = %e,
                    "could not give back run {run_id} ({e}); another worker takes it once its lease lapses (within {:?})",
                    self.request.lease
                );
            }
        }
    }

    async fn release(&self, run_id: Uuid, epoch: u64) {
        if let Err(e) = self.store.release(run_id, epoch).await {
            tracing::warn!(worker = %self.name, %run_id, error = %e, "could not give back run {run_id} ({e}); its lease lapses on its own");
        }
    }
}

/// Whether an execution that ended with this error left its run at rest in the store (failed,
/// or paused again after an answer that did not fit).
fn at_rest(e: &FlowError) -> bool {
    matches!(
        e,
        FlowError::MethodFailed { .. }
            | FlowError::CallLimit { .. }
            | FlowError::Compensated { .. }
            | FlowError::Cancelled { .. }
            | FlowError::InvalidInput { .. }
            | FlowError::Unfaithful { run_stored: true, .. }
            | FlowError::Corrupt { .. }
            | FlowError::StateMismatch { .. }
            | FlowError::InvalidStatus { .. }
    )
}
