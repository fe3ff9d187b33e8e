//! Helpers shared by the integration tests: explicit synchronisation in place of real-time
//! sleeps, so the tests order events the same way on an idle machine and on a busy one.

// A helper's failure is the failing test's message.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flow_core::store::{
    CheckpointInfo, Claim, ClaimRequest, Commit, JournalEntry, Listing, NewRun, RunFilter, RunRecord, RunSummary,
    Snapshot, StepRecord, Store, StoreError, StreamRecord,
};
use flow_core::{Flow, FlowError, RunOutcome, Runner};
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

/// Where a step stops until the test lets it through, counting the steps that reached it.
///
/// A step calls [`Gate::pass`]; the test waits for [`Gate::reached`] (the step is in flight:
/// a crash staged now lands inside it) and lets steps on with [`Gate::open`].
#[derive(Clone, Debug)]
pub struct Gate {
    reached: Arc<Semaphore>,
    open: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { reached: Arc::new(Semaphore::new(0)), open: Arc::new(Semaphore::new(0)) }
    }
}

impl Gate {
    /// A closed gate nobody has reached.
    pub fn new() -> Self {
        Self::default()
    }

    /// For the step: says it arrived, then waits until the test lets one step through.
    pub async fn pass(&self) {
        self.reached.add_permits(1);
        self.open.acquire().await.expect("the gate is never closed for good").forget();
    }

    /// Waits until `n` more steps have reached the gate.
    pub async fn reached(&self, n: u32) {
        self.reached.acquire_many(n).await.expect("the gate is never closed for good").forget();
    }

    /// Lets `n` steps through, now or whenever they arrive.
    pub fn open(&self, n: usize) {
        self.open.add_permits(n);
    }

    /// Takes back the passes [`Gate::open`] gave that no step has used.
    pub fn close(&self) {
        self.open.forget_permits(usize::MAX);
    }
}

/// Milliseconds since the Unix epoch, the clock stores measure leases with.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit an i64")
}

/// Waits until `run_id` holds no unexpired lease: what another process waits for after the
/// one running it died. Leases are wall-clock, so this polls the store (with a deadline of a
/// minute of real time) rather than trusting a sleep of the lease's length, which a busy
/// machine may cut short of the lease or a paused clock may skip.
pub async fn until_lease_lapses(store: &dyn Store, run_id: Uuid) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = store.load_run(run_id).await.expect("the run is stored");
        if record.lease_expires_at_ms.is_none_or(|expires| expires < now_ms()) {
            return;
        }
        assert!(Instant::now() < deadline, "run {run_id}'s lease never lapsed: {record:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `done` (every 2 ms of the tokio clock, up to a minute of real time) until it holds.
pub async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Resumes `run_id` as a process taking over from a dead one does: once the dead holder's lease
/// has lapsed, and again whenever it is refused for a lease still held. A test's "crash" drops
/// an execution inside this process, and a lease renewal it had already handed to the store
/// may land after the lease was seen to lapse.
pub async fn resume_when_free<F: Flow>(
    runner: &Runner<F>,
    store: &dyn Store,
    run_id: Uuid,
) -> Result<RunOutcome<F::State>, FlowError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        until_lease_lapses(store, run_id).await;
        match runner.resume(run_id).await {
            Err(FlowError::RunLocked { .. }) if Instant::now() < deadline => {}
            other => return other,
        }
    }
}

/// Says whether to refuse a commit, and with what.
pub type RefuseCommit = Box<dyn Fn(&Commit) -> Option<StoreError> + Send + Sync>;

/// Says whether to refuse a journal write, and with what.
pub type RefuseJournal = Box<dyn Fn(&JournalEntry) -> Option<StoreError> + Send + Sync>;

/// A store that passes everything on to `inner`, with ways to stand for the world acting at a
/// precise point: `before_claim` runs once, at the first claim, before claiming (another
/// process acting on the run between a caller's read of it and its claim); `refuse_commit`
/// and `refuse_journal` may refuse a write (a disk that fails at that moment); `freeze` makes
/// lease renewals and queue claims wait, as a process stopped with SIGSTOP does; `fail_claims`
/// fails the next queue claims as a restarting database does.
pub struct Intercept {
    /// The store underneath.
    pub inner: Arc<dyn Store>,
    /// Run once, at the first claim, before it.
    pub before_claim: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
    /// Asked before each commit; an error refuses the commit.
    pub refuse_commit: RefuseCommit,
    /// Asked before each journal write; an error refuses it.
    pub refuse_journal: RefuseJournal,
    /// While set, renewals and queue claims wait (see [`Intercept::freeze`]).
    pub frozen: AtomicBool,
    /// Wakes what waits on `frozen`.
    pub thawed: Notify,
    /// How many of the next queue claims fail.
    pub claim_failures: AtomicU32,
}

impl Intercept {
    /// Passes everything on, until told otherwise.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Intercept {
            inner,
            before_claim: std::sync::Mutex::new(None),
            refuse_commit: Box::new(|_| None),
            refuse_journal: Box::new(|_| None),
            frozen: AtomicBool::new(false),
            thawed: Notify::new(),
            claim_failures: AtomicU32::new(0),
        }
    }

    /// Renewals and queue claims wait from now on, until [`Intercept::thaw`].
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Lets what waits since [`Intercept::freeze`] go on.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        self.thawed.notify_waiters();
    }

    /// The next `n` queue claims fail as a database that is restarting fails them.
    pub fn fail_claims(&self, n: u32) {
        self.claim_failures.store(n, Ordering::SeqCst);
    }

    async fn until_thawed(&self) {
        loop {
            let thawed = self.thawed.notified();
            if !self.frozen.load(Ordering::SeqCst) {
                return;
            }
            thawed.await;
        }
    }
}

#[flow_core::store::async_trait]
impl Store for Intercept {
    async fn create_run(&self, run: NewRun) -> Result<u64, StoreError> {
        self.inner.create_run(run).await
    }
    async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let hook = self.before_claim.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(hook) = hook {
            hook.await;
        }
        self.inner.claim(run_id, owner, lease).await
    }
    async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError> {
        self.until_thawed().await;
        self.inner.renew(run_id, epoch, lease).await
    }
    async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
        self.inner.release(run_id, epoch).await
    }
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        if let Some(refused) = (self.refuse_commit)(&commit) {
            return Err(refused);
        }
        self.inner.commit(commit).await
    }
    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
        self.inner.load_run(run_id).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        self.inner.list_runs(filter).await
    }
    async fn list_runs_checked(&self, filter: &RunFilter) -> Result<Listing<RunSummary>, StoreError> {
        self.inner.list_runs_checked(filter).await
    }
    async fn run_summary(&self, run_id: Uuid) -> Result<RunSummary, StoreError> {
        self.inner.run_summary(run_id).await
    }
    async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
        self.inner.steps(run_id).await
    }
    async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
        self.inner.checkpoints(run_id).await
    }
    async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
        self.inner.load_checkpoint(run_id, seq).await
    }
    async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError> {
        self.inner.journal_get(run_id, step_key, seq).await
    }
    async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError> {
        if let Some(refused) = (self.refuse_journal)(&entry) {
            return Err(refused);
        }
        self.inner.journal_put(entry).await
    }
    async fn claim_next(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        self.until_thawed().await;
        let failing =
            self.claim_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(StoreError::Backend("connection refused: the database system is starting up".into()));
        }
        self.inner.claim_next(request).await
    }
    async fn answer(&self, run_id: Uuid, step_key: &str, value: serde_json::Value) -> Result<(), StoreError> {
        self.inner.answer(run_id, step_key, value).await
    }
    async fn requeue(&self, run_id: Uuid) -> Result<(), StoreError> {
        self.inner.requeue(run_id).await
    }
    async fn wait_for_work(&self, timeout: Duration) {
        self.inner.wait_for_work(timeout).await
    }
    async fn delete_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        self.inner.delete_run(run_id).await
    }
    async fn request_cancel(&self, run_id: Uuid, reason: &str) -> Result<(), StoreError> {
        self.inner.request_cancel(run_id, reason).await
    }
    async fn run_graph(&self, run_id: Uuid) -> Result<Option<flow_core::graph::GraphDoc>, StoreError> {
        self.inner.run_graph(run_id).await
    }
    async fn journal(&self, run_id: Uuid) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.journal(run_id).await
    }
    async fn edit_state(&self, edit: flow_core::store::StateEdit) -> Result<u64, StoreError> {
        self.inner.edit_state(edit).await
    }

    async fn memory_put(&self, record: flow_core::memory::MemoryRecord) -> Result<bool, StoreError> {
        self.inner.memory_put(record).await
    }

    async fn memory_search(
        &self,
        search: &flow_core::memory::MemorySearch,
    ) -> Result<Vec<flow_core::memory::Recalled>, StoreError> {
        self.inner.memory_search(search).await
    }

    async fn memory_forget(&self, forget: &flow_core::memory::Forget) -> Result<u64, StoreError> {
        self.inner.memory_forget(forget).await
    }

    async fn memory_purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.inner.memory_purge_expired(now_ms).await
    }

    async fn stream_append(
        &self,
        run_id: Uuid,
        items: Vec<StreamRecord>,
        keep_last: Option<u64>,
    ) -> Result<(), StoreError> {
        self.inner.stream_append(run_id, items, keep_last).await
    }

    async fn stream_read(&self, run_id: Uuid, from_seq: u64, limit: usize) -> Result<Vec<StreamRecord>, StoreError> {
        self.inner.stream_read(run_id, from_seq, limit).await
    }

    async fn stream_last_seq(&self, run_id: Uuid) -> Result<Option<u64>, StoreError> {
        self.inner.stream_last_seq(run_id).await
    }

    async fn set_trace_context(&self, run_id: Uuid, traceparent: &str) -> Result<(), StoreError> {
        self.inner.set_trace_context(run_id, traceparent).await
    }

    async fn trace_context(&self, run_id: Uuid) -> Result<Option<String>, StoreError> {
        self.inner.trace_context(run_id).await
    }
}
