//! Faults a production run meets: a step that blocks its thread, a step that outlives its
//! time limit, a panic in a state update, a compensation that fails, and the defaults that
//! protect a run nobody configured.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use flow_core::RunStatus;
use flow_core::prelude::*;
use flow_core::store::{SqliteStore, StepStatus, Store};
use serde::{Deserialize, Serialize};

async fn store_at(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("runs.db")).await.unwrap()
}

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Doc {
    steps: Vec<String>,
}

// ---------------------------------------------------------------- a step that blocks its thread

/// Blocks its thread on its first attempt until the test lets it go; later attempts return.
struct Blocking {
    attempts: Arc<AtomicU32>,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

#[flow(state = Doc, name = "blocking")]
impl Blocking {
    #[start]
    async fn crunch(&self, cx: &Ctx<Doc>) -> Result<()> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            self.entered.lock().unwrap().send(()).unwrap();
            // Blocks the runtime's only thread, as a blocking call or a CPU loop would.
            self.release.lock().unwrap().recv().unwrap();
        }
        cx.update(|s| s.steps.push("crunch".into()));
        Ok(())
    }
}

/// The heartbeat does not share the thread a step blocks: while the step holds the only
/// thread of its runtime for several leases, another worker still cannot take the run.
#[test]
fn a_step_that_blocks_its_thread_keeps_the_run_leased() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let attempts = Arc::new(AtomicU32::new(0));
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    // Generous, so that a keeper thread that a loaded machine schedules late still renews in
    // time; without the keeper no renewal happens at all and the lease lapses whatever its length.
    let lease = Duration::from_secs(2);
    let flow =
        Blocking { attempts: attempts.clone(), entered: Mutex::new(entered_tx), release: Mutex::new(release_rx) };
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let runner = Runner::new(flow).with_store(store_at(&path).await).lease(lease);
            runner.kickoff(Doc::default()).await
        })
    });
    entered.recv().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = store_at(dir.path()).await;
        let run_id = store.list_runs(&Default::default()).await.unwrap()[0].run_id;
        // Long enough for the lease to lapse twice over had nobody renewed it.
        let first = store.load_run(run_id).await.unwrap().lease_expires_at_ms.unwrap();
        std::thread::sleep(lease * 5 / 2);
        let now = store.load_run(run_id).await.unwrap().lease_expires_at_ms.unwrap();
        assert!(now > first, "the lease was renewed while the step blocked its thread");
        let other = Runner::new(Blocking {
            attempts: attempts.clone(),
            entered: Mutex::new(mpsc::channel().0),
            release: Mutex::new(mpsc::channel().1),
        })
        .with_store(store);
        let refused = other.resume(run_id).await.unwrap_err();
        assert!(
            matches!(refused, FlowError::RunLocked { .. }),
            "another worker took a run whose step is running: {refused:?}"
        );
    });
    release.send(()).unwrap();
    let outcome = worker.join().unwrap().unwrap();
    assert_eq!(outcome.status(), RunStatus::Completed);
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "the step ran once");
}

// ---------------------------------------------------------------- a step past its time limit

struct Overrun {
    attempts: Arc<AtomicU32>,
}

#[flow(state = Doc, name = "overrun")]
impl Overrun {
    #[start(timeout = "200ms")]
    async fn call_legacy_api(&self, cx: &Ctx<Doc>) -> Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        // A blocking client inside an async method: the runtime's timer cannot fire meanwhile.
        std::thread::sleep(Duration::from_millis(600));
        cx.update(|s| s.steps.push("called".into()));
        Ok(())
    }
}

/// A step that blocks past its limit is a timeout, not a success, even though its own
/// thread kept the timer from firing; its state change is discarded.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_call_past_its_timeout_is_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let store = store_at(dir.path()).await;
    let runner = Runner::new(Overrun { attempts: attempts.clone() }).with_store(store.clone());
    let err = runner.kickoff(Doc::default()).await.unwrap_err();
    let FlowError::MethodFailed { method, class, .. } = &err else { panic!("expected a method failure: {err:?}") };
    assert_eq!((method.as_str(), *class), ("call_legacy_api", ErrorClass::Transient));
    assert!(err.to_string().contains("timed out after 200ms"), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "no retry policy: one attempt");
    let run_id = store.list_runs(&Default::default()).await.unwrap()[0].run_id;
    let record = store.load_run(run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.snapshot.state_as::<Doc>().unwrap(), Doc::default(), "the late update is not applied");
}

// ---------------------------------------------------------------- a panic in a state update

struct PanickyUpdate {
    fail: Arc<AtomicU32>,
}

#[flow(state = Doc, name = "panicky_update")]
impl PanickyUpdate {
    #[start]
    async fn first(&self, cx: &Ctx<Doc>) -> Result<()> {
        cx.update(|s| s.steps.push("first".into()));
        Ok(())
    }
    #[listen(first)]
    async fn second(&self, cx: &Ctx<Doc>) -> Result<()> {
        let fail = self.fail.load(Ordering::SeqCst) > 0;
        // The closure changes the state and then panics, as `v[i] = x` past the end would
        // after an earlier push: the half-done change must not survive.
        cx.update(move |s| {
            s.steps.push("second".into());
            assert!(!fail, "a bug in the update");
        });
        Ok(())
    }
}

/// A panic inside a `cx.update` closure fails that step like a panic in the step: recorded,
/// the lease released, the state as it was before the step, and the run resumable.
#[tokio::test]
async fn a_panic_in_a_state_update_fails_the_step_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicU32::new(1));
    let store = store_at(dir.path()).await;
    let runner = Runner::new(PanickyUpdate { fail: fail.clone() }).with_store(store.clone());
    let err = runner.kickoff(Doc::default()).await.unwrap_err();
    let FlowError::MethodFailed { method, .. } = &err else { panic!("expected the step to fail: {err:?}") };
    assert_eq!(method, "second");
    assert!(err.to_string().contains("panicked in a state update"), "{err}");

    let run_id = store.list_runs(&Default::default()).await.unwrap()[0].run_id;
    let record = store.load_run(run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!((record.lease_owner, record.lease_expires_at_ms), (None, None), "lease released");
    assert_eq!(record.snapshot.state_as::<Doc>().unwrap().steps, ["first"], "the half-done update is not stored");

    fail.store(0, Ordering::SeqCst);
    let done = runner.resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(done.state.steps, ["first", "second"]);
}

/// Without a store the step fails the same way and the caller gets the error, not a panic.
#[tokio::test]
async fn a_panic_in_a_state_update_without_a_store_is_an_error() {
    let runner = Runner::new(PanickyUpdate { fail: Arc::new(AtomicU32::new(1)) });
    let err = runner.kickoff(Doc::default()).await.unwrap_err();
    assert!(matches!(&err, FlowError::MethodFailed { method, .. } if method == "second"), "{err:?}");
}

// ---------------------------------------------------------------- a compensation that fails

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Trip {}

struct Booking {
    log: Arc<Mutex<Vec<String>>>,
    hotel_api_down: Arc<AtomicU32>,
}

#[flow(state = Trip, name = "booking")]
impl Booking {
    #[start]
    async fn flight(&self) -> Result<String> {
        Ok("FL-1".into())
    }
    #[listen(flight)]
    async fn hotel(&self) -> Result<String> {
        Ok("HO-2".into())
    }
    #[listen(hotel)]
    async fn car(&self) -> Result<String> {
        Ok("CA-3".into())
    }
    #[listen(car)]
    async fn pay(&self) -> Result<()> {
        Err(Error::permanent("card declined"))
    }
    #[compensate(flight)]
    async fn cancel_flight(&self, booking: String) -> Result<()> {
        self.log.lock().unwrap().push(format!("cancel {booking}"));
        Ok(())
    }
    #[compensate(hotel)]
    async fn cancel_hotel(&self, booking: String) -> Result<()> {
        if self.hotel_api_down.load(Ordering::SeqCst) > 0 {
            return Err(Error::permanent("hotel API down"));
        }
        self.log.lock().unwrap().push(format!("cancel {booking}"));
        Ok(())
    }
    #[compensate(car)]
    async fn cancel_car(&self, booking: String) -> Result<()> {
        self.log.lock().unwrap().push(format!("cancel {booking}"));
        Ok(())
    }
}

/// An undo step that fails for good is kept: the run says so, and a resume tries exactly the
/// undo steps that failed again (not the ones that worked, not the failed step itself).
#[tokio::test]
async fn a_failed_compensation_is_retried_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let down = Arc::new(AtomicU32::new(1));
    let runner = Runner::new(Booking { log: log.clone(), hotel_api_down: down.clone() }).with_store(store.clone());
    let err = runner.kickoff(Trip::default()).await.unwrap_err();
    let FlowError::Compensated { run_id, compensation, .. } = &err else { panic!("{err:?}") };
    let run_id = *run_id;
    assert!(compensation.contains("`cancel_hotel` failed to undo `hotel#1`: hotel API down"), "{compensation}");
    assert!(err.to_string().ends_with("resume the run to try them again"), "{err}");
    assert_eq!(*log.lock().unwrap(), ["cancel CA-3", "cancel FL-1"]);

    down.store(0, Ordering::SeqCst);
    // Every undo step has run now: the failure is compensated, an outcome of its own.
    let outcome = runner.resume(run_id).await.unwrap();
    let RunOutcome::Compensated(c) = &outcome else { panic!("{outcome:?}") };
    assert_eq!(
        c.undone,
        [
            "`cancel_car` undid `car#1`",
            "`cancel_hotel` failed to undo `hotel#1`: hotel API down",
            "`cancel_flight` undid `flight#1`",
            "`cancel_hotel` undid `hotel#1`"
        ]
    );
    assert_eq!(store.load_run(run_id).await.unwrap().status, RunStatus::Compensated);
    assert_eq!(*log.lock().unwrap(), ["cancel CA-3", "cancel FL-1", "cancel HO-2"], "only the failed undo ran again");

    let hotel: Vec<_> = store
        .steps(run_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.method == "cancel_hotel")
        .map(|s| s.status)
        .collect();
    assert_eq!(hotel, [StepStatus::Failed, StepStatus::Compensated]);
    // Now fully undone: a resume reads the same outcome back and runs nothing again.
    let again = runner.resume(run_id).await.unwrap();
    assert!(matches!(&again, RunOutcome::Compensated(a) if a.undone == c.undone), "{again:?}");
    assert_eq!(log.lock().unwrap().len(), 3);
}

// ---------------------------------------------------------------- defaults that protect

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Count {
    n: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Loop {
    Again,
    Done,
}

/// Loops `rounds` times: two checkpoints per round.
struct Looper {
    rounds: u32,
}

#[flow(state = Count, name = "looper")]
impl Looper {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }
    #[router(or(begin, step), terminal(Loop::Done))]
    async fn check(&self, cx: &Ctx<Count>) -> Result<Loop> {
        Ok(if cx.read(|s| s.n) < self.rounds { Loop::Again } else { Loop::Done })
    }
    #[listen(Loop::Again)]
    async fn step(&self, cx: &Ctx<Count>) -> Result<()> {
        cx.update(|s| s.n += 1);
        Ok(())
    }
}

/// Retention is on by default: a long run keeps its newest checkpoints, not one per step
/// forever; `keep_all_checkpoints` keeps them all.
#[tokio::test]
async fn checkpoint_retention_is_on_by_default() {
    use flow_core::store::{DEFAULT_KEEP_CHECKPOINTS, MemoryStore, SqliteOptions};
    let dir = tempfile::tempdir().unwrap();
    let rounds = 40; // 81 checkpoints and more: past the default
    let sqlite = store_at(dir.path()).await;
    let all =
        SqliteStore::open_with(SqliteOptions::new(dir.path().join("all.db")).keep_all_checkpoints()).await.unwrap();
    let stores: [(&str, Arc<dyn Store>, bool); 4] = [
        ("sqlite", Arc::new(sqlite), true),
        ("memory", Arc::new(MemoryStore::new()), true),
        ("sqlite, keep all", Arc::new(all), false),
        ("memory, keep all", Arc::new(MemoryStore::new().keep_all_checkpoints()), false),
    ];
    for (name, store, bounded) in stores {
        let runner = Runner::new(Looper { rounds }).with_shared_store(store.clone());
        let done = runner.kickoff(Count::default()).await.unwrap().completed().unwrap();
        assert_eq!(done.state.n, rounds);
        let kept = store.checkpoints(done.run_id).await.unwrap();
        if bounded {
            assert_eq!(kept.len(), DEFAULT_KEEP_CHECKPOINTS, "{name}");
        } else {
            assert!(kept.len() > 2 * rounds as usize, "{name}: {} kept", kept.len());
        }
        assert_eq!(kept.last().unwrap().status, RunStatus::Completed, "{name}: the newest is kept");
    }
}

struct Hangs;

#[flow(state = Doc, name = "hangs")]
impl Hangs {
    #[start]
    async fn call_a_server_that_never_answers(&self) -> Result<()> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

struct HangsUnlimited;

#[flow(state = Doc, name = "hangs_unlimited")]
impl HangsUnlimited {
    #[start(timeout = "none")]
    async fn wait_for_ever(&self) -> Result<()> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// A step nobody gave a limit still ends: after the default timeout it is a timeout failure.
/// `timeout = "none"` opts out. On the paused clock, so the 10 minutes pass at once.
#[tokio::test(start_paused = true)]
async fn a_hung_step_ends_at_the_default_timeout() {
    // An hour of the paused clock: without a default limit the run would still be waiting.
    let ended = tokio::time::timeout(Duration::from_secs(3600), Runner::new(Hangs).kickoff(Doc::default())).await;
    let err = ended.expect("a step with no timeout of its own must end at the default").unwrap_err();
    let FlowError::MethodFailed { method, class, .. } = &err else { panic!("{err:?}") };
    assert_eq!((method.as_str(), *class), ("call_a_server_that_never_answers", ErrorClass::Transient));
    assert!(err.to_string().contains("timed out after 600s"), "{err}");
    assert_eq!(flow_core::graph::DEFAULT_STEP_TIMEOUT, Duration::from_secs(600));

    let unlimited =
        tokio::time::timeout(Duration::from_secs(24 * 3600), Runner::new(HangsUnlimited).kickoff(Doc::default())).await;
    assert!(unlimited.is_err(), "`timeout = \"none\"` has no limit: still waiting after a day");
}

// ---------------------------------------------------------------- blocking methods

/// Two blocking starts that can only finish together, and a blocking step that outlives its
/// limit.
struct Threads {
    meet: Arc<std::sync::Barrier>,
    late: Mutex<Option<mpsc::Receiver<()>>>,
    finished_late: Arc<AtomicU32>,
}

#[flow(state = Doc, name = "threads")]
impl Threads {
    #[start]
    fn left(&self, cx: &Ctx<Doc>) -> Result<()> {
        self.meet.wait();
        cx.update(|s| s.steps.push("left".into()));
        Ok(())
    }
    #[start]
    fn right(&self, cx: &Ctx<Doc>) -> Result<()> {
        self.meet.wait();
        cx.update(|s| s.steps.push("right".into()));
        Ok(())
    }
    #[listen(and(left, right), timeout = "300ms")]
    fn stuck(&self, cx: &Ctx<Doc>) -> Result<()> {
        // Held until the test has seen the run end: only a timeout can end this step first.
        if let Some(late) = self.late.lock().unwrap().take() {
            let _ = late.recv();
        }
        self.finished_late.fetch_add(1, Ordering::SeqCst);
        cx.update(|s| s.steps.push("stuck".into()));
        Ok(())
    }
}

/// A plain `fn` method runs on the blocking pool: blocking branches overlap (they meet at a
/// barrier, on a runtime with one thread), and the time limit ends a blocking step without
/// waiting for its thread, whose late result is discarded.
#[tokio::test(flavor = "current_thread")]
async fn blocking_methods_overlap_and_their_timeout_ends_them() {
    let (release, late) = mpsc::channel();
    let finished_late = Arc::new(AtomicU32::new(0));
    let flow = Threads {
        meet: Arc::new(std::sync::Barrier::new(2)),
        late: Mutex::new(Some(late)),
        finished_late: finished_late.clone(),
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), Runner::new(flow).kickoff(Doc::default()))
        .await
        .expect("the run must end at the step's timeout, not wait for its thread");
    let err = outcome.unwrap_err();
    let FlowError::MethodFailed { method, class, .. } = &err else { panic!("{err:?}") };
    assert_eq!((method.as_str(), *class), ("stuck", ErrorClass::Transient));
    assert!(err.to_string().contains("timed out after 300ms"), "{err}");
    assert_eq!(finished_late.load(Ordering::SeqCst), 0, "the run ended while the thread was still in the step");
    release.send(()).unwrap();
}

// ---------------------------------------------------------------- an answer JSON cannot hold

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Quote {
    price: Option<f64>,
}

struct AskPrice;

#[flow(state = Quote, name = "ask_price")]
impl AskPrice {
    #[start]
    async fn ask(&self, cx: &Ctx<Quote>) -> Result<()> {
        let price: Option<f64> = cx.ask("What price?").await?;
        cx.update(move |s| s.price = price);
        Ok(())
    }
}

/// A NaN answer would reach the step as `null` (a silent `None`); it is refused naming what
/// JSON cannot hold, and the run stays paused for a valid answer.
#[tokio::test]
async fn an_answer_json_cannot_hold_is_refused_and_the_run_stays_paused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let runner = Runner::new(AskPrice).with_store(store.clone());
    let run_id = runner.kickoff(Quote::default()).await.unwrap().run_id();
    let err = runner.resume_with(run_id, f64::NAN).await.unwrap_err();
    assert!(matches!(err, FlowError::InvalidInput { .. }), "{err:?}");
    assert!(err.to_string().contains("NaN"), "{err}");
    assert_eq!(store.load_run(run_id).await.unwrap().status, RunStatus::Paused);
    let done = runner.resume_with(run_id, 12.5).await.unwrap().completed().unwrap();
    assert_eq!(done.state.price, Some(12.5));
}
