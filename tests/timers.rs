//! Durable timers (issue 17, point 4): `cx.sleep` parks a run in its store until the wake time,
//! holding no lease; a resume before then parks it again without running anything, a resume
//! after it finishes the run; the wake time is journaled, so a crash does not move it; runs
//! without a store, and short waits, sleep in the process; a long retry backoff parks the same
//! way. Wake times are on the wall clock: tests that need one to pass use a tiny wait with a
//! threshold of zero and wait for the wall clock (never asserting how long anything took).

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_core::store::{MemoryStore, PgStore, SqliteStore, Store};
use flow_core::{RunStatus, ServeOptions, Sleeping, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use flow_tests::{now_ms, resume_when_free, until};

#[allow(dead_code, reason = "shared with the PostgreSQL store's tests, which use all of it")]
mod pg_support;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ms(at: SystemTime) -> i64 {
    i64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Waits (on the wall clock, which wake times are on) until `at` has passed.
async fn until_passed(at: SystemTime) {
    until("the wake time to pass", || async move { now_ms() > ms(at) }).await;
}

fn drain(events: &mut broadcast::Receiver<FlowEvent>) -> Vec<FlowEvent> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

fn sleeping<S: std::fmt::Debug>(outcome: RunOutcome<S>) -> Sleeping<S> {
    match outcome {
        RunOutcome::Sleeping(s) => s,
        other => panic!("expected the run to park, got {other:?}"),
    }
}

// ------------------------------------------------------------------ a step that sleeps

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Trial {
    charge: String,
    woke: bool,
    followed_up: bool,
}

#[derive(Clone)]
struct Reminder {
    nap: Duration,
    /// How often the charge effect really ran.
    charges: Arc<AtomicU32>,
    /// How often the sleeping step was entered.
    entries: Arc<AtomicU32>,
}

impl Reminder {
    fn new(nap: Duration) -> Self {
        Reminder { nap, charges: Arc::default(), entries: Arc::default() }
    }
}

#[flow(state = Trial, name = "timers_reminder")]
impl Reminder {
    #[start]
    async fn wait(&self, cx: &Ctx<Trial>) -> Result<()> {
        self.entries.fetch_add(1, Ordering::SeqCst);
        let charges = Arc::clone(&self.charges);
        let charge: String = cx
            .effect("charge", |key| async move {
                charges.fetch_add(1, Ordering::SeqCst);
                Ok(format!("ch_{key}"))
            })
            .await?;
        cx.sleep(self.nap).await?;
        cx.update(move |s| {
            s.charge = charge.clone();
            s.woke = true;
        });
        Ok(())
    }

    #[listen(wait)]
    async fn follow_up(&self, cx: &Ctx<Trial>) -> Result<()> {
        cx.update(|s| s.followed_up = true);
        Ok(())
    }
}

#[tokio::test]
async fn a_long_sleep_parks_the_run_and_an_early_resume_parks_it_again() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = Reminder::new(DAY);
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    let mut events = runner.subscribe();
    let before = SystemTime::now();

    let parked = sleeping(runner.kickoff(Trial::default()).await.unwrap());
    assert!(ms(parked.until) >= ms(before + DAY), "{parked:?}");
    assert_eq!(parked.waiting, ["wait#1"]);
    assert!(!parked.state.woke);

    let record = store.load_run(parked.run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Queued);
    assert_eq!(record.available_at_ms, Some(ms(parked.until)));
    assert_eq!((record.lease_owner, record.lease_expires_at_ms), (None, None), "a parked run holds no lease");
    let timer = store.journal_get(parked.run_id, "wait#1", 1).await.unwrap().expect("the wake time is journaled");
    assert_eq!((timer.kind.as_str(), timer.output.as_i64()), ("timer", Some(ms(parked.until))));

    let seen = drain(&mut events);
    assert!(
        seen.iter().any(
            |e| matches!(e, FlowEvent::Sleeping { method: "wait", parks: true, until, .. } if *until == parked.until)
        ),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, FlowEvent::Parked { waiting, .. } if waiting == &["wait#1"])), "{seen:?}");
    assert!(seen.iter().any(|e| matches!(e, FlowEvent::RunFinished { status: RunStatus::Queued, .. })), "{seen:?}");

    // Resumed a day early: it parks again, until the same time, without running the step.
    let again = sleeping(runner.resume(parked.run_id).await.unwrap());
    assert_eq!(again.until, parked.until);
    assert_eq!(flow.entries.load(Ordering::SeqCst), 1, "the sleeping step ran again before its time");
    assert_eq!(flow.charges.load(Ordering::SeqCst), 1);
    let record = store.load_run(parked.run_id).await.unwrap();
    assert_eq!((record.status, record.available_at_ms), (RunStatus::Queued, Some(ms(parked.until))));
    assert!(record.lease_owner.is_none());
}

#[tokio::test]
async fn a_parked_run_resumed_after_its_wake_time_completes_with_effects_run_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = Reminder::new(Duration::from_millis(30));
    // A threshold of zero parks even this short wait.
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store)).park_after(Duration::ZERO);
    let mut events = runner.subscribe();

    let parked = sleeping(runner.kickoff(Trial::default()).await.unwrap());
    until_passed(parked.until).await;
    drain(&mut events);

    let done = runner.resume(parked.run_id).await.unwrap().completed().unwrap();
    assert!(done.state.woke && done.state.followed_up, "{:?}", done.state);
    assert!(done.state.charge.starts_with("ch_"));
    assert_eq!(flow.charges.load(Ordering::SeqCst), 1, "the effect before the sleep ran again");
    assert_eq!(flow.entries.load(Ordering::SeqCst), 2, "the step runs once to sleep and once to wake");
    let seen = drain(&mut events);
    assert!(
        seen.iter().any(
            |e| matches!(e, FlowEvent::Woke { method: "wait", parked: true, step_key, .. } if step_key == "wait#1")
        ),
        "{seen:?}"
    );
    let record = store.load_run(parked.run_id).await.unwrap();
    assert_eq!((record.status, record.available_at_ms), (RunStatus::Completed, None));
}

#[tokio::test]
async fn a_crash_after_the_timer_was_journaled_keeps_the_wake_time() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = Reminder::new(DAY);
    // This process would hold the run through the whole wait: the crash lands inside it.
    let holding = Runner::new(flow.clone())
        .with_shared_store(Arc::clone(&store))
        .lease(Duration::from_millis(200))
        .park_after(Duration::MAX);
    let mut events = holding.subscribe();
    let run_id = tokio::select! {
        outcome = holding.kickoff(Trial::default()) => panic!("the run ended while it should sleep: {outcome:?}"),
        run_id = async {
            loop {
                if let FlowEvent::Sleeping { run_id, parks: false, .. } = events.recv().await.unwrap() {
                    break run_id;
                }
            }
        } => run_id,
    };
    // The kickoff future is dropped: the execution is gone, as in a crash.
    let journaled = store.journal_get(run_id, "wait#1", 1).await.unwrap().expect("journaled before the wait");
    let wake = journaled.output.as_i64().unwrap();

    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    let parked = sleeping(resume_when_free(&runner, &*store, run_id).await.unwrap());
    assert_eq!(ms(parked.until), wake, "the wake time moved when the step ran again");
    assert_eq!(flow.charges.load(Ordering::SeqCst), 1);
    assert_eq!(store.load_run(run_id).await.unwrap().available_at_ms, Some(wake));
}

#[tokio::test(start_paused = true)]
async fn a_run_without_a_store_sleeps_in_the_process_beyond_its_time_limit() {
    let flow = Reminder::new(DAY);
    let runner = Runner::new(flow.clone());
    let mut events = runner.subscribe();
    // A day asleep, on the paused clock, far beyond the default step time limit (10 minutes):
    // the wait does not count.
    let done = runner.kickoff(Trial::default()).await.unwrap().completed().unwrap();
    assert!(done.state.woke && done.state.followed_up);
    assert_eq!(flow.entries.load(Ordering::SeqCst), 1);
    let seen = drain(&mut events);
    assert!(seen.iter().any(|e| matches!(e, FlowEvent::Sleeping { parks: false, .. })), "{seen:?}");
    assert!(seen.iter().any(|e| matches!(e, FlowEvent::Woke { parked: false, .. })), "{seen:?}");
    assert!(!seen.iter().any(|e| matches!(e, FlowEvent::Parked { .. })), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn a_wait_shorter_than_the_threshold_stays_in_the_process() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = Reminder::new(Duration::from_secs(5));
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    let done = runner.kickoff(Trial::default()).await.unwrap().completed().unwrap();
    assert!(done.state.followed_up);
    assert_eq!(flow.entries.load(Ordering::SeqCst), 1, "a short wait re-ran the step");
    assert_eq!(store.load_run(done.run_id).await.unwrap().status, RunStatus::Completed);
}

/// Parks, resumes early and parks again, then resumes once due and completes: what every
/// store must hold, the wake time included.
async fn parks_and_wakes_on(store: Arc<dyn Store>) {
    let flow = Reminder::new(DAY);
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    let parked = sleeping(runner.kickoff(Trial::default()).await.unwrap());
    let record = store.load_run(parked.run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Queued);
    assert_eq!(record.available_at_ms, Some(ms(parked.until)), "the store keeps the wake time as the due time");
    assert!(record.lease_owner.is_none() && record.lease_expires_at_ms.is_none(), "{record:?}");
    let again = sleeping(runner.resume(parked.run_id).await.unwrap());
    assert_eq!(again.until, parked.until);
    assert_eq!((flow.entries.load(Ordering::SeqCst), flow.charges.load(Ordering::SeqCst)), (1, 1));

    let flow = Reminder::new(Duration::from_millis(30));
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store)).park_after(Duration::ZERO);
    let parked = sleeping(runner.kickoff(Trial::default()).await.unwrap());
    until_passed(parked.until).await;
    let done = runner.resume(parked.run_id).await.unwrap().completed().unwrap();
    assert!(done.state.followed_up);
    assert_eq!((flow.entries.load(Ordering::SeqCst), flow.charges.load(Ordering::SeqCst)), (2, 1));
}

#[tokio::test]
async fn parks_and_wakes_on_memory() {
    parks_and_wakes_on(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn parks_and_wakes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    parks_and_wakes_on(Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap())).await;
}

#[tokio::test]
async fn parks_and_wakes_on_postgres() {
    let Some(db) = pg_support::database("timers_parks_and_wakes_on_postgres").await else { return };
    parks_and_wakes_on(Arc::new(PgStore::from_pool(db.pool(4)).await.unwrap())).await;
}

/// A serving worker runs a submitted run until its step parks, then takes it again once the
/// wake time is due and finishes it: no process holds the run while it waits.
async fn a_serving_worker_wakes_parked_runs(store: Arc<dyn Store>) {
    let flow = Reminder::new(Duration::from_millis(300));
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store)).park_after(Duration::ZERO);
    let run_id = runner.submit(Trial::default()).await.unwrap();
    let worker = Worker::new(Arc::clone(&store)).register_runner(runner);
    let serving = worker.serve(ServeOptions::new().poll_interval(Duration::from_millis(50)));
    until("the parked run to complete", || {
        let store = Arc::clone(&store);
        async move { store.load_run(run_id).await.is_ok_and(|r| r.status == RunStatus::Completed) }
    })
    .await;
    serving.shutdown(Duration::from_secs(5)).await;
    let record = store.load_run(run_id).await.unwrap();
    let state: Trial = record.snapshot.state_as().unwrap();
    assert!(state.woke && state.followed_up, "{state:?}");
    let history = store.checkpoints(run_id).await.unwrap();
    assert!(history.iter().skip(1).any(|c| c.status == RunStatus::Queued), "the run parked on the way: {history:?}");
    // Entered once to park and once when due; the effect before the sleep ran once.
    assert_eq!((flow.entries.load(Ordering::SeqCst), flow.charges.load(Ordering::SeqCst)), (2, 1));
}

#[tokio::test]
async fn a_serving_worker_wakes_parked_runs_on_memory() {
    a_serving_worker_wakes_parked_runs(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_serving_worker_wakes_parked_runs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_serving_worker_wakes_parked_runs(Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap())).await;
}

#[tokio::test]
async fn a_serving_worker_wakes_parked_runs_on_postgres() {
    let Some(db) = pg_support::database("timers_a_serving_worker_wakes_parked_runs_on_postgres").await else {
        return;
    };
    a_serving_worker_wakes_parked_runs(Arc::new(PgStore::from_pool(db.pool(4)).await.unwrap())).await;
}

// ------------------------------------------------------------------ retry backoff

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Calls {
    done: bool,
}

#[derive(Clone, Default)]
struct Flaky {
    attempts: Arc<AtomicU32>,
}

#[flow(state = Calls, name = "timers_flaky_hour")]
impl Flaky {
    #[start(retry(attempts = 3, backoff = fixed("1h")))]
    async fn call(&self, cx: &Ctx<Calls>) -> Result<()> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::transient("the service is down for maintenance"));
        }
        cx.update(|s| s.done = true);
        Ok(())
    }
}

#[derive(Clone, Default)]
struct FlakyBriefly {
    attempts: Arc<AtomicU32>,
}

#[flow(state = Calls, name = "timers_flaky_brief")]
impl FlakyBriefly {
    #[start(retry(attempts = 3, backoff = fixed("30ms")))]
    async fn call(&self, cx: &Ctx<Calls>) -> Result<()> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::transient("the service is down for maintenance"));
        }
        cx.update(|s| s.done = true);
        Ok(())
    }
}

#[tokio::test]
async fn a_long_retry_backoff_parks_the_run() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = Flaky::default();
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    let before = SystemTime::now();
    let parked = sleeping(runner.kickoff(Calls::default()).await.unwrap());
    assert_eq!(parked.waiting, ["call#1"]);
    // Jitter may shorten the hour to half of it.
    assert!(ms(parked.until) >= ms(before + Duration::from_secs(1800)), "{parked:?}");
    let record = store.load_run(parked.run_id).await.unwrap();
    assert_eq!((record.status, record.available_at_ms), (RunStatus::Queued, Some(ms(parked.until))));
    assert!(record.lease_owner.is_none());
    // Early: parked again, the attempt not made.
    let again = sleeping(runner.resume(parked.run_id).await.unwrap());
    assert_eq!(again.until, parked.until);
    assert_eq!(flow.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_parked_retry_runs_its_next_attempt_once_due() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = FlakyBriefly::default();
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store)).park_after(Duration::ZERO);
    let parked = sleeping(runner.kickoff(Calls::default()).await.unwrap());
    until_passed(parked.until).await;
    let done = runner.resume(parked.run_id).await.unwrap().completed().unwrap();
    assert!(done.state.done);
    assert_eq!(flow.attempts.load(Ordering::SeqCst), 2);
    let steps = store.steps(done.run_id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.attempt).collect::<Vec<_>>(), [2], "{steps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_backoff_stays_in_the_process() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = FlakyBriefly::default();
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    assert!(runner.kickoff(Calls::default()).await.unwrap().completed().unwrap().state.done);
    assert_eq!(flow.attempts.load(Ordering::SeqCst), 2);
}

// ------------------------------------------------------------------ parallel branches

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Both {
    fast: u32,
    slow: u32,
    joined: bool,
}

#[derive(Clone)]
struct Branches {
    nap: Duration,
    fast_runs: Arc<AtomicU32>,
}

#[flow(state = Both, name = "timers_branches")]
impl Branches {
    #[start]
    async fn fast(&self, cx: &Ctx<Both>) -> Result<()> {
        self.fast_runs.fetch_add(1, Ordering::SeqCst);
        cx.update(|s| s.fast += 1);
        Ok(())
    }

    #[start]
    async fn slow(&self, cx: &Ctx<Both>) -> Result<()> {
        cx.sleep(self.nap).await?;
        cx.update(|s| s.slow += 1);
        Ok(())
    }

    #[listen(and(fast, slow))]
    async fn join(&self, cx: &Ctx<Both>) -> Result<()> {
        cx.update(|s| s.joined = true);
        Ok(())
    }
}

#[tokio::test]
async fn one_branch_sleeps_while_the_other_completes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = Branches { nap: DAY, fast_runs: Arc::default() };
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    let parked = sleeping(runner.kickoff(Both::default()).await.unwrap());
    assert_eq!(parked.waiting, ["slow#1"]);
    assert_eq!(parked.state, Both { fast: 1, slow: 0, joined: false });
    let again = sleeping(runner.resume(parked.run_id).await.unwrap());
    assert_eq!((again.until, again.state.fast), (parked.until, 1));
    assert_eq!(flow.fast_runs.load(Ordering::SeqCst), 1, "the completed branch ran again");

    // The same with a wake time that passes.
    let flow = Branches { nap: Duration::from_millis(30), fast_runs: Arc::default() };
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store)).park_after(Duration::ZERO);
    let parked = sleeping(runner.kickoff(Both::default()).await.unwrap());
    until_passed(parked.until).await;
    let done = runner.resume(parked.run_id).await.unwrap().completed().unwrap();
    assert_eq!(done.state, Both { fast: 1, slow: 1, joined: true });
    assert_eq!(flow.fast_runs.load(Ordering::SeqCst), 1);
}

// ------------------------------------------------------------------ a question beside a timer

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Approval {
    approved: Option<bool>,
    reminded: bool,
}

#[derive(Clone, Default)]
struct Approve;

#[flow(state = Approval, name = "timers_approve")]
impl Approve {
    #[start]
    async fn ask(&self, cx: &Ctx<Approval>) -> Result<()> {
        let yes: bool = cx.ask(InputRequest::new("Approve the refund?")).await?;
        cx.update(move |s| s.approved = Some(yes));
        Ok(())
    }

    #[start]
    async fn remind(&self, cx: &Ctx<Approval>) -> Result<()> {
        cx.sleep(DAY).await?;
        cx.update(|s| s.reminded = true);
        Ok(())
    }
}

/// The documented choice: an open question wins over a timer, so the person can answer at
/// once; the timer waits in the checkpoint and the run parks for it once the answer is in.
#[tokio::test]
async fn a_question_beside_a_timer_pauses_and_parks_once_answered() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = Runner::new(Approve).with_shared_store(Arc::clone(&store));
    let outcome = runner.kickoff(Approval::default()).await.unwrap();
    let paused = outcome.paused().expect("the question wins").clone();
    assert_eq!(store.load_run(paused.run_id).await.unwrap().status, RunStatus::Paused);
    let wake = store.journal_get(paused.run_id, "remind#1", 0).await.unwrap().unwrap().output.as_i64().unwrap();

    let parked = sleeping(runner.resume_with(paused.run_id, true).await.unwrap());
    assert_eq!(parked.state.approved, Some(true));
    assert_eq!(ms(parked.until), wake);
    assert_eq!(parked.waiting, ["remind#1"]);
    assert_eq!(store.load_run(paused.run_id).await.unwrap().status, RunStatus::Queued);
}

// ------------------------------------------------------------------ a changed step

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Changed {
    answer: Option<bool>,
}

/// A step whose code changed between executions: it first made an effect, then asked; the
/// new code sleeps where the effect was recorded.
#[derive(Clone, Default)]
struct Reordered {
    sleep_first: Arc<std::sync::atomic::AtomicBool>,
}

#[flow(state = Changed, name = "timers_reordered")]
impl Reordered {
    #[start]
    async fn step(&self, cx: &Ctx<Changed>) -> Result<()> {
        if self.sleep_first.load(Ordering::SeqCst) {
            cx.sleep(DAY).await?;
        } else {
            cx.effect("ping", |_| async { Ok(1u32) }).await?;
        }
        let yes: bool = cx.ask(InputRequest::new("go on?")).await?;
        cx.update(move |s| s.answer = Some(yes));
        Ok(())
    }
}

#[tokio::test]
async fn a_sleep_where_the_journal_holds_another_effect_is_non_determinism() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = Reordered::default();
    let runner = Runner::new(flow.clone()).with_shared_store(Arc::clone(&store));
    let run_id = runner.kickoff(Changed::default()).await.unwrap().paused().expect("asks").run_id;
    flow.sleep_first.store(true, Ordering::SeqCst);
    let err = runner.resume_with(run_id, true).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("non-determinism") && text.contains("timer"), "{text}");
    assert_eq!(store.load_run(run_id).await.unwrap().status, RunStatus::Failed);
}

// ------------------------------------------------------------------ the threshold per flow

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Nap {
    done: bool,
}

#[derive(Clone, Default)]
struct Patient;

#[flow(state = Nap, name = "timers_patient", park_after = "1h")]
impl Patient {
    #[start]
    async fn nap(&self, cx: &Ctx<Nap>) -> Result<()> {
        cx.sleep(Duration::from_secs(30 * 60)).await?;
        cx.update(|s| s.done = true);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_flow_sets_its_park_threshold_and_the_runner_overrides_it() {
    assert_eq!(Patient::graph().options.park_after, Some(Duration::from_secs(3600)));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Half an hour is below the flow's hour: spent in the process (on the paused clock).
    let runner = Runner::new(Patient).with_shared_store(Arc::clone(&store));
    assert!(runner.kickoff(Nap::default()).await.unwrap().completed().unwrap().state.done);
    // The runner's own threshold wins.
    let runner = runner.park_after(Duration::from_secs(60));
    let parked = sleeping(runner.kickoff(Nap::default()).await.unwrap());
    assert_eq!(parked.waiting, ["nap#1"]);
}
