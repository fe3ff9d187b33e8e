//! What `Runner::submit`, `Runner::answer` and `Worker::serve` promise, as checks that take any
//! store: each `pub async fn` gets a fresh, empty store and runs against it, so the same bodies
//! run on every implementation (`tests/serve.rs` runs them on `MemoryStore`; a test file per
//! store calls them with its own).
//!
//! Workers here are tasks of one test process, each with a `Worker` of its own over the store,
//! as workers in separate processes would be. Nothing waits on a clock: tests wait for states
//! of the store (`until`) or for steps to reach a `Gate`.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{Commit, QueueLimit, RunFilter, Snapshot, Store};
use flow_core::{RunStatus, ServeOptions, SubmitOptions, Worker};
use flow_tests::{Gate, Intercept, until, until_lease_lapses};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A short poll, so that an idle worker finds work that the store could not wake it for
/// (a limit freed on another worker) without the test waiting long.
const POLL: Duration = Duration::from_millis(10);

// --- Captured logs -------------------------------------------------------------------------

/// Everything logged by the test process at INFO and above, for the tests that check what a
/// worker says. One subscriber for the whole process (workers log from any thread); tests find
/// their own lines by run id.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter(Arc::clone(&self.0))
    }
}

impl Logs {
    /// The process's logs, capturing from the first call on.
    pub fn get() -> &'static Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other subscriber in the test process");
            logs
        })
    }

    /// The lines that mention `what`.
    pub fn lines_with(&self, what: &str) -> Vec<String> {
        let text = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&text).lines().filter(|l| l.contains(what)).map(str::to_string).collect()
    }
}

// --- Flows -----------------------------------------------------------------------------------

/// How often each step of each run ran, over every worker.
type Executions = Arc<Mutex<HashMap<(Uuid, String), u32>>>;

#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
pub struct Numbers {
    pub input: u64,
    pub doubled: u64,
    pub result: u64,
}

/// Two steps, each counting its executions.
pub struct Counted {
    executions: Executions,
}

impl Counted {
    fn ran(&self, cx: &Ctx<Numbers>) {
        let mut e = self.executions.lock().unwrap();
        *e.entry((cx.run_id(), cx.step_key().to_string())).or_default() += 1;
    }
}

#[flow(state = Numbers, name = "serve_counted")]
impl Counted {
    #[start]
    async fn double(&self, cx: &Ctx<Numbers>) -> Result<()> {
        self.ran(cx);
        tokio::task::yield_now().await;
        cx.update(|s| s.doubled = s.input * 2);
        Ok(())
    }
    #[listen(double)]
    async fn add_one(&self, cx: &Ctx<Numbers>) -> Result<()> {
        self.ran(cx);
        tokio::task::yield_now().await;
        cx.update(|s| s.result = s.doubled + 1);
        Ok(())
    }
}

/// Another flow, for ids taken across flows.
pub struct Other;

#[flow(state = Numbers, name = "serve_other")]
impl Other {
    #[start]
    async fn only(&self, _cx: &Ctx<Numbers>) -> Result<()> {
        Ok(())
    }
}

/// Steps executing right now, per queue and per concurrency key, with the most seen at once.
#[derive(Default)]
pub struct InFlight {
    now: Mutex<HashMap<String, u32>>,
    max: Mutex<HashMap<String, u32>>,
}

impl InFlight {
    fn enter(&self, group: &str) {
        let mut now = self.now.lock().unwrap();
        let n = now.entry(group.to_string()).or_default();
        *n += 1;
        let mut max = self.max.lock().unwrap();
        let m = max.entry(group.to_string()).or_default();
        *m = (*m).max(*n);
    }
    fn leave(&self, group: &str) {
        *self.now.lock().unwrap().entry(group.to_string()).or_default() -= 1;
    }
    fn max(&self, group: &str) -> u32 {
        self.max.lock().unwrap().get(group).copied().unwrap_or(0)
    }
}

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
pub struct Keyed {
    pub queue: String,
    pub key: String,
    pub done: bool,
}

/// One step that counts itself in flight for its queue and key while it waits at a gate.
pub struct Limited {
    in_flight: Arc<InFlight>,
    gate: Gate,
}

#[flow(state = Keyed, name = "serve_limited")]
impl Limited {
    #[start]
    async fn work(&self, cx: &Ctx<Keyed>) -> Result<()> {
        let (queue, key) = cx.read(|s| (s.queue.clone(), format!("{}/{}", s.queue, s.key)));
        self.in_flight.enter(&queue);
        self.in_flight.enter(&key);
        self.gate.pass().await;
        self.in_flight.leave(&key);
        self.in_flight.leave(&queue);
        cx.update(|s| s.done = true);
        Ok(())
    }
}

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
pub struct Tagged {
    /// Which worker's flow instance completed the step.
    pub by: String,
    pub steps: u32,
}

/// One step that waits at the instance's gate (if any), then records the instance's tag.
pub struct Held {
    tag: &'static str,
    gate: Option<Gate>,
}

#[flow(state = Tagged, name = "serve_held")]
impl Held {
    #[start]
    async fn hold(&self, cx: &Ctx<Tagged>) -> Result<()> {
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        let tag = self.tag.to_string();
        cx.update(move |s| {
            s.by = tag.clone();
            s.steps += 1;
        });
        Ok(())
    }
}

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
pub struct Approval {
    pub approved: Option<bool>,
}

/// Asks a person, then records the answer.
pub struct Approver;

#[flow(state = Approval, name = "serve_approval")]
impl Approver {
    #[start]
    async fn ask(&self, cx: &Ctx<Approval>) -> Result<()> {
        let yes: bool = cx.ask(InputRequest::new("Approve?")).await?;
        cx.update(move |s| s.approved = Some(yes));
        Ok(())
    }
}

// --- Helpers ---------------------------------------------------------------------------------

async fn status(store: &dyn Store, run_id: Uuid) -> RunStatus {
    store.load_run(run_id).await.expect("the run is stored").status
}

async fn until_status(store: &Arc<dyn Store>, run_id: Uuid, want: RunStatus) {
    until(&format!("run {run_id} to be {want}"), || async { status(&**store, run_id).await == want }).await;
}

async fn count(store: &dyn Store, flow: &str, want: RunStatus) -> usize {
    let filter = RunFilter { status: Some(want), flow: Some(flow.into()), ..RunFilter::default() };
    store.list_runs(&filter).await.expect("runs list").len()
}

fn options(name: &str) -> ServeOptions {
    ServeOptions::new().name(name).poll_interval(POLL)
}

/// Submits a run of `serve_held` whose step never ends (for `serve_endless`).
pub async fn submit_endless(store: &Arc<dyn Store>) -> Uuid {
    Runner::new(Held { tag: "submitter", gate: None })
        .with_shared_store(store.clone())
        .submit(Tagged::default())
        .await
        .unwrap()
}

/// A worker whose `serve_held` step waits at a gate nobody opens.
pub fn serve_endless(store: &Arc<dyn Store>) -> flow_core::Serving {
    Worker::new(store.clone()).register(Held { tag: "endless", gate: Some(Gate::new()) }).serve(options("endless"))
}

/// Waits until some worker holds `run_id`.
pub async fn until_held(store: &Arc<dyn Store>, run_id: Uuid) {
    until(&format!("run {run_id} to be claimed"), || async {
        store.load_run(run_id).await.unwrap().lease_owner.is_some()
    })
    .await;
}

// --- The checks ------------------------------------------------------------------------------

/// Submitted runs wait in their queue until a worker serves it, then complete, once each.
pub async fn submitted_runs_complete(store: Arc<dyn Store>) {
    Logs::get();
    let executions = Executions::default();
    let runner = Runner::new(Counted { executions: executions.clone() }).with_shared_store(store.clone());
    let mut ids = Vec::new();
    for input in 0..20 {
        ids.push(runner.submit(Numbers { input, ..Numbers::default() }).await.unwrap());
    }
    for id in &ids {
        let stored = store.load_run(*id).await.unwrap();
        assert_eq!(stored.status, RunStatus::Queued, "nothing runs a submitted run until a worker serves it");
        assert_eq!(stored.placement.queue, "default");
        assert!(stored.lease_owner.is_none());
    }
    assert!(executions.lock().unwrap().is_empty());

    let worker = Worker::new(store.clone()).register(Counted { executions: executions.clone() });
    let serving = worker.serve(options("submit-1"));
    until("every submitted run to complete", || async {
        count(&*store, "serve_counted", RunStatus::Completed).await == ids.len()
    })
    .await;
    let summary = serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!(summary.worker, "submit-1");
    assert_eq!((summary.claimed, summary.finished, summary.errors), (20, 20, 0));
    assert!(summary.released.is_empty() && summary.lost.is_empty());
    for (input, id) in (0..20).zip(&ids) {
        let done = runner.resume(*id).await.unwrap().completed().unwrap();
        assert_eq!(done.state, Numbers { input, doubled: input * 2, result: input * 2 + 1 });
    }
    let executions = executions.lock().unwrap();
    assert_eq!(executions.len(), 40, "two steps per run");
    assert!(executions.values().all(|n| *n == 1), "a step ran twice: {executions:?}");
}

/// Several workers over one store share 200 runs: each run completes once, with the right
/// state, and no step runs twice.
pub async fn workers_share_runs_exactly_once(store: Arc<dyn Store>) {
    Logs::get();
    const RUNS: u64 = 200;
    const WORKERS: usize = 4;
    let executions = Executions::default();
    let runner = Runner::new(Counted { executions: executions.clone() }).with_shared_store(store.clone());
    // Some runs are waiting before the workers start, the rest arrive while they serve.
    let mut ids = Vec::new();
    for input in 0..RUNS / 2 {
        ids.push((input, runner.submit(Numbers { input, ..Numbers::default() }).await.unwrap()));
    }
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            Worker::new(store.clone())
                .register(Counted { executions: executions.clone() })
                .serve(options(&format!("share-{w}")).max_in_flight(8))
        })
        .collect();
    for input in RUNS / 2..RUNS {
        ids.push((input, runner.submit(Numbers { input, ..Numbers::default() }).await.unwrap()));
    }
    until("all 200 runs to complete", || async {
        count(&*store, "serve_counted", RunStatus::Completed).await == RUNS as usize
    })
    .await;
    let mut claimed = 0;
    let mut finished = 0;
    for serving in workers {
        let summary = serving.shutdown(Duration::from_secs(60)).await;
        assert!(summary.lost.is_empty() && summary.released.is_empty(), "{summary:?}");
        assert_eq!(summary.errors, 0, "{summary:?}");
        claimed += summary.claimed;
        finished += summary.finished;
    }
    assert_eq!((claimed, finished), (RUNS, RUNS), "every run claimed and finished exactly once over all workers");
    for (input, id) in ids {
        let stored = store.load_run(id).await.unwrap();
        assert_eq!(stored.status, RunStatus::Completed);
        let state: Numbers = stored.snapshot.state_as().unwrap();
        assert_eq!(state, Numbers { input, doubled: input * 2, result: input * 2 + 1 });
        assert_eq!(stored.version, 3, "run {id}: one commit per step, nothing more: {stored:?}");
    }
    let executions = executions.lock().unwrap();
    assert_eq!(executions.len(), 2 * RUNS as usize);
    let twice: Vec<_> = executions.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "steps that ran more than once: {twice:?}");
}

/// A queue's concurrency limit and its per-key limit hold over all workers together.
pub async fn queue_limits_hold_across_workers(store: Arc<dyn Store>) {
    Logs::get();
    const CONCURRENCY: u32 = 3;
    const RUNS: usize = 24;
    let in_flight = Arc::new(InFlight::default());
    let gate = Gate::new();
    let flow = || Limited { in_flight: Arc::clone(&in_flight), gate: gate.clone() };
    let runner = Runner::new(flow()).with_shared_store(store.clone());
    let limited = QueueLimit::new("limited").concurrency(CONCURRENCY);
    let per_key = QueueLimit::new("per_key").per_key(1);
    let mut ids = Vec::new();
    for i in 0..RUNS {
        // Half the runs in a queue limited to 3 at once, half in one limited to 1 per key
        // (4 keys): each limit has more runs waiting than it lets through.
        let (queue, key) =
            if i % 2 == 0 { ("limited", format!("k{}", i / 2)) } else { ("per_key", format!("k{}", (i / 2) % 4)) };
        let state = Keyed { queue: queue.into(), key: key.clone(), done: false };
        ids.push(runner.submit_with(state, SubmitOptions::new().queue(queue).key(key)).await.unwrap());
    }
    let workers: Vec<_> = (0..3)
        .map(|w| {
            Worker::new(store.clone())
                .register(flow())
                .serve(options(&format!("limits-{w}")).queue(limited.clone()).queue(per_key.clone()).max_in_flight(10))
        })
        .collect();
    // Both limits are reached (3 in `limited`, one per key of the 4 in `per_key`) before any
    // step goes on: the checks below then see the limits full, not merely unreached.
    gate.reached(CONCURRENCY + 4).await;
    assert_eq!(in_flight.max("limited"), CONCURRENCY);
    assert_eq!(in_flight.max("per_key"), 4);
    gate.open(RUNS);
    until("every limited run to complete", || async {
        count(&*store, "serve_limited", RunStatus::Completed).await == RUNS
    })
    .await;
    for serving in workers {
        let summary = serving.shutdown(Duration::from_secs(60)).await;
        assert!(summary.lost.is_empty() && summary.released.is_empty() && summary.errors == 0, "{summary:?}");
    }
    assert!(in_flight.max("limited") <= CONCURRENCY, "queue limit exceeded: {}", in_flight.max("limited"));
    for k in 0..4 {
        let key = format!("per_key/k{k}");
        assert!(in_flight.max(&key) <= 1, "per-key limit exceeded for {key}: {}", in_flight.max(&key));
    }
    for id in ids {
        assert_eq!(status(&*store, id).await, RunStatus::Completed);
    }
}

/// A worker serves only its queues, and no run before the time it was submitted for.
pub async fn workers_claim_only_their_queues_and_due_runs(store: Arc<dyn Store>) {
    Logs::get();
    let runner = Runner::new(Held { tag: "submitter", gate: None }).with_shared_store(store.clone());
    let elsewhere = runner.submit_with(Tagged::default(), SubmitOptions::new().queue("elsewhere")).await.unwrap();
    let later =
        runner.submit_with(Tagged::default(), SubmitOptions::new().delay(Duration::from_secs(3600))).await.unwrap();
    let now = runner.submit(Tagged::default()).await.unwrap();
    let serving = Worker::new(store.clone()).register(Held { tag: "w", gate: None }).serve(options("queues-1"));
    until_status(&store, now, RunStatus::Completed).await;
    let summary = serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!(summary.claimed, 1, "{summary:?}");
    assert_eq!(status(&*store, elsewhere).await, RunStatus::Queued, "a queue the worker does not serve");
    assert_eq!(status(&*store, later).await, RunStatus::Queued, "a run not due yet");

    // A worker that serves the other queue takes the run there.
    let serving = Worker::new(store.clone())
        .register(Held { tag: "w", gate: None })
        .serve(options("queues-2").queue(QueueLimit::new("elsewhere")));
    until_status(&store, elsewhere, RunStatus::Completed).await;
    serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!(status(&*store, later).await, RunStatus::Queued);
}

/// `kickoff` records the runner's queue, so that a run whose process died is continued by a
/// worker serving that queue.
pub async fn serve_takes_over_runs_whose_process_died(store: Arc<dyn Store>) {
    Logs::get();
    let gate = Gate::new();
    let dying = Runner::new(Held { tag: "dead", gate: Some(gate.clone()) })
        .with_shared_store(store.clone())
        .lease(Duration::from_millis(100))
        .queue("jobs");
    let kickoff = tokio::spawn(async move { dying.kickoff(Tagged::default()).await });
    gate.reached(1).await;
    let run_id = store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;
    assert_eq!(store.load_run(run_id).await.unwrap().placement.queue, "jobs");
    // The process "dies": its execution is dropped mid-step, and its lease lapses.
    kickoff.abort();
    assert!(kickoff.await.unwrap_err().is_cancelled());
    until_lease_lapses(&*store, run_id).await;

    let serving = Worker::new(store.clone())
        .register(Held { tag: "server", gate: None })
        .serve(options("takeover-1").queue(QueueLimit::new("jobs")));
    until_status(&store, run_id, RunStatus::Completed).await;
    let summary = serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!((summary.claimed, summary.finished), (1, 1));
    let state: Tagged = store.load_run(run_id).await.unwrap().snapshot.state_as().unwrap();
    assert_eq!((state.by.as_str(), state.steps), ("server", 1));
    assert!(!Logs::get().lines_with(&format!("claimed run {run_id} (taking it over")).is_empty());
}

/// A graceful stop lets a run in flight finish when it can within the deadline; past the
/// deadline it stops the run and gives it back, and another worker takes it at once.
pub async fn graceful_stop_finishes_or_releases(store: Arc<dyn Store>) {
    Logs::get();
    let runner = Runner::new(Held { tag: "submitter", gate: None }).with_shared_store(store.clone());

    // Finishes within the deadline.
    let gate = Gate::new();
    let run_id = runner.submit(Tagged::default()).await.unwrap();
    let serving =
        Worker::new(store.clone()).register(Held { tag: "a", gate: Some(gate.clone()) }).serve(options("stop-a"));
    gate.reached(1).await;
    let stopping = tokio::spawn(serving.shutdown(Duration::from_secs(600)));
    gate.open(1);
    let summary = stopping.await.unwrap();
    assert_eq!((summary.claimed, summary.finished), (1, 1), "{summary:?}");
    assert!(summary.released.is_empty());
    assert_eq!(status(&*store, run_id).await, RunStatus::Completed);

    // Stopped at the deadline and given back.
    let gate = Gate::new();
    let run_id = runner.submit(Tagged::default()).await.unwrap();
    let serving =
        Worker::new(store.clone()).register(Held { tag: "b", gate: Some(gate.clone()) }).serve(options("stop-b"));
    gate.reached(1).await;
    let summary = serving.shutdown(Duration::ZERO).await;
    assert_eq!(summary.released, vec![run_id], "{summary:?}");
    assert_eq!(summary.finished, 0);
    let stored = store.load_run(run_id).await.unwrap();
    assert!(stored.lease_owner.is_none(), "given back: no lease left to lapse: {stored:?}");
    assert!(!Logs::get().lines_with(&format!("stopped run {run_id} unfinished and gave it back")).is_empty());

    // Another worker takes it at once (no lease to wait for) and finishes it.
    let serving = Worker::new(store.clone()).register(Held { tag: "c", gate: None }).serve(options("stop-c"));
    until_status(&store, run_id, RunStatus::Completed).await;
    let summary = serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!((summary.claimed, summary.finished), (1, 1));
    let state: Tagged = store.load_run(run_id).await.unwrap().snapshot.state_as().unwrap();
    assert_eq!((state.by.as_str(), state.steps), ("c", 1));
}

/// An answer given through a runner or a worker that serves nothing reaches the serving
/// worker, which continues the run with it; answers the run does not wait for are refused.
pub async fn answers_from_anywhere_reach_the_serving_worker(store: Arc<dyn Store>) {
    Logs::get();
    let serving = Worker::new(store.clone()).register(Approver).serve(options("answers-1"));
    let submitter = Runner::new(Approver).with_shared_store(store.clone());
    let first = submitter.submit(Approval::default()).await.unwrap();
    let second = submitter.submit(Approval::default()).await.unwrap();
    until_status(&store, first, RunStatus::Paused).await;
    until_status(&store, second, RunStatus::Paused).await;

    // Through a runner of another "process" (it never serves).
    let elsewhere = Runner::new(Approver).with_shared_store(store.clone());
    elsewhere.answer(first, true).await.unwrap();
    // Answered already, and not yet continued: a second answer is refused.
    let again = elsewhere.answer(first, false).await;
    match &again {
        Err(FlowError::NotWaiting { status: RunStatus::Queued, advice, .. }) => {
            assert!(advice.contains("answered already"), "{advice}")
        }
        Err(FlowError::NotWaiting { status: RunStatus::Running | RunStatus::Completed, .. }) => {}
        other => panic!("a second answer must be refused, got {other:?}"),
    }
    until_status(&store, first, RunStatus::Completed).await;
    let state: Approval = store.load_run(first).await.unwrap().snapshot.state_as().unwrap();
    assert_eq!(state.approved, Some(true));

    // Through a worker that runs no flow, with an answer that does not fit `bool` first: the
    // step refuses it and the run pauses again, then a fitting one completes it.
    let bystander = Worker::new(store.clone());
    bystander.answer(second, serde_json::json!("maybe")).await.unwrap();
    until("the unfitting answer to be refused by the step", || async {
        let r = store.load_run(second).await.unwrap();
        r.status == RunStatus::Paused && r.answer.is_none()
    })
    .await;
    bystander.answer(second, serde_json::json!(false)).await.unwrap();
    until_status(&store, second, RunStatus::Completed).await;
    let state: Approval = store.load_run(second).await.unwrap().snapshot.state_as().unwrap();
    assert_eq!(state.approved, Some(false));

    // Refusals: a completed run, a run that does not exist, a value JSON cannot hold.
    let done = bystander.answer(first, serde_json::json!(true)).await;
    assert!(matches!(done, Err(FlowError::NotWaiting { status: RunStatus::Completed, .. })), "{done:?}");
    let missing = Uuid::now_v7();
    assert!(
        matches!(bystander.answer(missing, serde_json::json!(true)).await, Err(FlowError::RunNotFound(id)) if id == missing)
    );
    let third = submitter.submit(Approval::default()).await.unwrap();
    until_status(&store, third, RunStatus::Paused).await;
    assert!(matches!(elsewhere.answer(third, f64::NAN).await, Err(FlowError::InvalidInput { .. })));
    assert_eq!(status(&*store, third).await, RunStatus::Paused, "a refused answer stores nothing");
    let wrong_flow = Runner::new(Counted { executions: Executions::default() }).with_shared_store(store.clone());
    assert!(matches!(wrong_flow.answer(third, true).await, Err(FlowError::WrongFlow { .. })));

    let summary = serving.shutdown(Duration::from_secs(60)).await;
    // Each run: claimed when submitted (it pauses), then once per answer.
    assert_eq!(summary.claimed, 2 + 3 + 1, "{summary:?}");
    assert_eq!(summary.errors, 0, "{summary:?}");
    assert!(!Logs::get().lines_with(&format!("claimed run {first} (answered)")).is_empty());
}

/// `resume` and `resume_with` work on every status a queue gives a run: a queued run runs
/// here, and an answered one runs here with its stored answer.
pub async fn resume_runs_queued_and_answered_runs_here(store: Arc<dyn Store>) {
    Logs::get();
    let runner = Runner::new(Approver).with_shared_store(store.clone());
    let run_id = runner.submit(Approval::default()).await.unwrap();
    // No worker: resume runs it here, up to its question.
    let paused = runner.resume(run_id).await.unwrap();
    assert_eq!(paused.status(), RunStatus::Paused);
    runner.answer(run_id, true).await.unwrap();
    assert!(matches!(
        runner.resume_with(run_id, false).await,
        Err(FlowError::NotWaiting { status: RunStatus::Queued, .. })
    ));
    let done = runner.resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(done.state.approved, Some(true), "resume continues with the stored answer");

    // resume_with on a paused run continues it here, as before.
    let run_id = runner.kickoff(Approval::default()).await.unwrap().run_id();
    let done = runner.resume_with(run_id, false).await.unwrap().completed().unwrap();
    assert_eq!(done.state.approved, Some(false));
}

/// Submitting under an id already taken by the same flow returns it and stores nothing; one
/// taken by another flow is refused.
pub async fn duplicate_submit_ids(store: Arc<dyn Store>) {
    Logs::get();
    let executions = Executions::default();
    let runner = Runner::new(Counted { executions: executions.clone() }).with_shared_store(store.clone());
    let id = Uuid::now_v7();
    assert_eq!(runner.submit_with_id(id, Numbers { input: 1, ..Numbers::default() }).await.unwrap(), id);
    assert_eq!(runner.submit_with_id(id, Numbers { input: 2, ..Numbers::default() }).await.unwrap(), id);
    let other = Runner::new(Other).with_shared_store(store.clone());
    match other.submit_with_id(id, Numbers::default()).await {
        Err(FlowError::DuplicateRunId { run_id, flow, existing_flow }) => {
            assert_eq!((run_id, flow.as_str(), existing_flow.as_str()), (id, "serve_other", "serve_counted"));
        }
        other => panic!("an id taken by another flow must be refused, got {other:?}"),
    }
    assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap().len(), 1);

    let serving =
        Worker::new(store.clone()).register(Counted { executions: executions.clone() }).serve(options("dup-1"));
    until_status(&store, id, RunStatus::Completed).await;
    // Submitted again after it ran: still the same run, nothing new to run.
    assert_eq!(runner.submit_with_id(id, Numbers::default()).await.unwrap(), id);
    let summary = serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!(summary.claimed, 1, "{summary:?}");
    let state: Numbers = store.load_run(id).await.unwrap().snapshot.state_as().unwrap();
    assert_eq!(state, Numbers { input: 1, doubled: 2, result: 3 }, "the state it was first submitted with");
    assert!(executions.lock().unwrap().values().all(|n| *n == 1));
}

/// A worker frozen past its lease (its renewals wait, as under SIGSTOP) loses the run to
/// another worker; when it goes on, its commit is fenced: it logs one clear line, commits
/// nothing, and serves on.
pub async fn a_lease_lost_mid_run_is_logged_and_another_worker_finishes(store: Arc<dyn Store>) {
    Logs::get();
    let frozen = Arc::new(Intercept::new(store.clone()));
    let gate = Gate::new();
    let runner = Runner::new(Held { tag: "submitter", gate: None }).with_shared_store(store.clone());
    let run_id = runner.submit(Tagged::default()).await.unwrap();

    let zombie = Worker::new(frozen.clone())
        .register(Held { tag: "zombie", gate: Some(gate.clone()) })
        .serve(options("zombie").lease(Duration::from_millis(100)));
    gate.reached(1).await;
    // Frozen inside the step: no renewal, no claim, until it is thawed.
    frozen.freeze();
    until_lease_lapses(&*store, run_id).await;

    let rescuer = Worker::new(store.clone()).register(Held { tag: "rescuer", gate: None }).serve(options("rescuer"));
    until_status(&store, run_id, RunStatus::Completed).await;
    let rescued = store.load_run(run_id).await.unwrap();

    // The zombie wakes up and finishes its step: its commit is fenced.
    gate.open(1);
    frozen.thaw();
    let summary = zombie.shutdown(Duration::from_secs(600)).await;
    assert_eq!(summary.lost, vec![run_id], "{summary:?}");
    assert_eq!(summary.finished, 0);
    let line = format!(
        "run {run_id}: lease lost to another worker (epoch {}); stopped here without committing",
        rescued.epoch
    );
    let lines = Logs::get().lines_with(&line);
    assert_eq!(lines.len(), 1, "one clear line, found {lines:?}");
    assert!(lines[0].contains("zombie"), "the line names the worker: {}", lines[0]);

    let after = store.load_run(run_id).await.unwrap();
    assert_eq!(after.version, rescued.version, "the zombie committed nothing");
    let state: Tagged = after.snapshot.state_as().unwrap();
    assert_eq!((state.by.as_str(), state.steps), ("rescuer", 1));
    let summary = rescuer.shutdown(Duration::from_secs(60)).await;
    assert_eq!((summary.claimed, summary.finished), (1, 1));
}

/// A store that fails while the worker claims (a database restarting) is retried with
/// backoff: the worker logs it, does not stop, and runs the work once the store is back.
pub async fn store_errors_are_retried(store: Arc<dyn Store>) {
    Logs::get();
    let flaky = Arc::new(Intercept::new(store.clone()));
    flaky.fail_claims(3);
    let serving = Worker::new(flaky.clone()).register(Held { tag: "w", gate: None }).serve(options("flaky-1"));
    let runner = Runner::new(Held { tag: "submitter", gate: None }).with_shared_store(store.clone());
    let run_id = runner.submit(Tagged::default()).await.unwrap();
    until_status(&store, run_id, RunStatus::Completed).await;
    let summary = serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!(summary.store_errors, 3, "{summary:?}");
    assert_eq!((summary.claimed, summary.finished), (1, 1));
    assert_eq!(Logs::get().lines_with("flaky-1").iter().filter(|l| l.contains("claiming runs failed")).count(), 3);
}

/// A claimed run whose stored state does not fit its flow's state type is taken out of its
/// queue, stored failed with the reason, rather than claimed again and again.
pub async fn a_run_that_cannot_be_read_leaves_its_queue_failed(store: Arc<dyn Store>) {
    Logs::get();
    let executions = Executions::default();
    let runner = Runner::new(Counted { executions: executions.clone() }).with_shared_store(store.clone());
    let run_id = runner.submit(Numbers::default()).await.unwrap();
    // Another build wrote a state this one cannot read, and put the run back in its queue.
    let claim = store.claim(run_id, "older-build", Duration::from_secs(60)).await.unwrap();
    let bad = Snapshot::encode(&serde_json::json!({ "input": "not a number" }), &serde_json::json!(null)).unwrap();
    let snapshot = Snapshot { state: bad.state, progress: claim.run.snapshot.progress.clone() };
    store
        .commit(Commit {
            run_id,
            epoch: claim.epoch,
            status: RunStatus::Queued,
            snapshot,
            steps: Vec::new(),
            step_key: None,
            output: None,
            error: None,
            pause: None,
            available_at_ms: None,
        })
        .await
        .unwrap();

    let serving =
        Worker::new(store.clone()).register(Counted { executions: executions.clone() }).serve(options("bad-1"));
    until_status(&store, run_id, RunStatus::Failed).await;
    let summary = serving.shutdown(Duration::from_secs(60)).await;
    assert_eq!(summary.claimed, 1, "{summary:?}");
    let stored = store.load_run(run_id).await.unwrap();
    let error = stored.error.unwrap_or_default();
    assert!(
        error.contains(&run_id.to_string()) && error.contains("input"),
        "the reason names the run and the field: {error}"
    );
    assert!(stored.lease_owner.is_none());
    assert!(executions.lock().unwrap().is_empty(), "nothing ran on a state that does not fit");
}
