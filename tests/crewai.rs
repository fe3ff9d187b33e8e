//! What CrewAI Flows users expect (issue 19): a failure stops the run promptly, kickoff
//! inputs merged onto the state's default, or-joins fed by and-joins fire once per wave, and
//! parallel `cx.update`s that never lose a write.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use flow_core::RunStatus;
use flow_core::prelude::*;
use flow_core::store::{MemoryStore, RunFilter, Store};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Log {
    done: Vec<String>,
}

fn push(cx: &Ctx<Log>, what: &str) {
    let what = what.to_string();
    cx.update(move |s| s.done.push(what.clone()));
}

// ---------------------------------------------------------------- 2. a failure stops the run promptly

/// What the slow sibling got to do.
#[derive(Default)]
struct Sibling {
    /// It slept its hour out.
    finished: AtomicBool,
    /// Its future was dropped (on completion or on cancellation).
    dropped: AtomicBool,
}

struct DropFlag<'a>(&'a AtomicBool);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A sibling that takes an hour, beside a method that fails after a second.
async fn slow_sibling(sibling: &Sibling, cx: &Ctx<Log>) -> Result<()> {
    let _dropped = DropFlag(&sibling.dropped);
    push(cx, "slow started");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    sibling.finished.store(true, Ordering::SeqCst);
    push(cx, "slow");
    Ok(())
}

async fn fail_after_a_second() -> Result<()> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    Err(Error::permanent("card declined"))
}

#[derive(Default)]
struct StopsAtOnce(Sibling);

#[flow(state = Log, timeout = "none")]
impl StopsAtOnce {
    #[start]
    async fn slow(&self, cx: &Ctx<Log>) -> Result<()> {
        slow_sibling(&self.0, cx).await
    }
    #[start]
    async fn charge(&self, _cx: &Ctx<Log>) -> Result<()> {
        fail_after_a_second().await
    }
}

#[derive(Default)]
struct LetsThemFinish(Sibling);

#[flow(state = Log, timeout = "none", on_failure = "finish_running")]
impl LetsThemFinish {
    #[start]
    async fn slow(&self, cx: &Ctx<Log>) -> Result<()> {
        slow_sibling(&self.0, cx).await
    }
    #[start]
    async fn charge(&self, _cx: &Ctx<Log>) -> Result<()> {
        fail_after_a_second().await
    }
}

fn failed_method(result: Result<RunOutcome<Log>, FlowError>) -> String {
    match result {
        Err(FlowError::MethodFailed { method, message, .. }) => {
            assert_eq!(message, "card declined");
            method
        }
        other => panic!("expected the failure of `charge`, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_cancels_the_running_siblings_at_once() {
    let flow = Arc::new(StopsAtOnce::default());
    let started = Instant::now();
    let result = Runner::from_arc(Arc::clone(&flow)).kickoff(Log::default()).await;
    assert_eq!(failed_method(result), "charge");
    // The paused clock moves only as far as something waits: the hour was never waited for.
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(flow.0.dropped.load(Ordering::SeqCst), "the sibling's future was not dropped");
    assert!(!flow.0.finished.load(Ordering::SeqCst), "the sibling ran to its end");
}

#[tokio::test(start_paused = true)]
async fn finish_running_waits_for_the_siblings() {
    assert_eq!(LetsThemFinish::graph().options.on_failure, flow_core::graph::OnFailure::FinishRunning);
    assert_eq!(StopsAtOnce::graph().options.on_failure, flow_core::graph::OnFailure::CancelRunning);
    let flow = Arc::new(LetsThemFinish::default());
    let started = Instant::now();
    let result = Runner::from_arc(Arc::clone(&flow)).kickoff(Log::default()).await;
    assert_eq!(failed_method(result), "charge");
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
    assert!(flow.0.finished.load(Ordering::SeqCst), "the sibling was stopped");
}

/// A durable flow whose `charge` fails until fixed, beside a sibling that journals an effect,
/// updates the state and then takes an hour.
#[derive(Default)]
struct Checkout {
    broken: AtomicBool,
    slow_runs: AtomicU32,
    bookings: AtomicU32,
}

#[flow(state = Log, name = "crewai_checkout", timeout = "none")]
impl Checkout {
    #[start]
    async fn book(&self, cx: &Ctx<Log>) -> Result<()> {
        self.slow_runs.fetch_add(1, Ordering::SeqCst);
        let booking: u32 =
            cx.effect("book_room", |_key| async { Ok(self.bookings.fetch_add(1, Ordering::SeqCst) + 1) }).await?;
        push(cx, &format!("booked #{booking}"));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
    #[start]
    async fn charge(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::permanent("card declined"));
        }
        push(cx, "charged");
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_sibling_runs_again_on_resume_and_keeps_its_effects() {
    let flow = Arc::new(Checkout { broken: AtomicBool::new(true), ..Checkout::default() });
    let store = MemoryStore::new();
    let runner = Runner::from_arc(Arc::clone(&flow)).with_store(store.clone());
    let started = Instant::now();
    let result = runner.kickoff(Log::default()).await;
    assert_eq!(failed_method(result), "charge");
    assert_eq!(started.elapsed(), Duration::from_secs(1));

    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    let run_id = runs[0].run_id;
    let record = store.load_run(run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    // The cancelled sibling's update was discarded with it.
    let state: Log = serde_json::from_str(record.snapshot.state.get()).unwrap();
    assert_eq!(state, Log::default());
    // Its effect was journaled before the cancellation.
    assert_eq!(flow.bookings.load(Ordering::SeqCst), 1);

    flow.broken.store(false, Ordering::SeqCst);
    let run = runner.resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(flow.slow_runs.load(Ordering::SeqCst), 2, "the cancelled sibling did not run again");
    assert_eq!(flow.bookings.load(Ordering::SeqCst), 1, "the journaled effect ran twice");
    let mut done = run.state.done.clone();
    done.sort();
    assert_eq!(done, ["booked #1", "charged"]);
}

