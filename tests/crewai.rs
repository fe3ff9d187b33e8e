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

/// A sibling with an undo step finishes (so it can be undone) while one without is stopped.
#[derive(Default)]
struct HoldAndCharge {
    undone: std::sync::Mutex<Vec<String>>,
    plain: Sibling,
}

#[flow(state = Log, timeout = "none")]
impl HoldAndCharge {
    #[start]
    async fn hold(&self, _cx: &Ctx<Log>) -> Result<String> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok("H-1".into())
    }
    #[start]
    async fn browse(&self, cx: &Ctx<Log>) -> Result<()> {
        let _dropped = DropFlag(&self.plain.dropped);
        tokio::time::sleep(Duration::from_secs(7200)).await;
        self.plain.finished.store(true, Ordering::SeqCst);
        push(cx, "browsed");
        Ok(())
    }
    #[start]
    async fn charge(&self, _cx: &Ctx<Log>) -> Result<()> {
        fail_after_a_second().await
    }
    #[compensate(hold)]
    async fn release(&self, _cx: &Ctx<Log>, hold: String) -> Result<()> {
        self.undone.lock().unwrap().push(format!("released {hold}"));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_sibling_with_an_undo_step_finishes_and_is_undone() {
    let flow = Arc::new(HoldAndCharge::default());
    let started = Instant::now();
    let outcome = Runner::from_arc(Arc::clone(&flow)).kickoff(Log::default()).await.unwrap();
    let RunOutcome::Compensated(c) = &outcome else { panic!("{outcome:?}") };
    assert_eq!(c.method, "charge");
    // Waited for `hold` (an hour), not for `browse` (two).
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
    assert_eq!(*flow.undone.lock().unwrap(), ["released H-1"]);
    assert!(flow.plain.dropped.load(Ordering::SeqCst) && !flow.plain.finished.load(Ordering::SeqCst));
}

/// A blocking sibling, held on its thread until the test lets it go.
struct BlockedSibling {
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    finished: AtomicU32,
}

#[flow(state = Log)]
impl BlockedSibling {
    #[start]
    fn wait_for_release(&self, cx: &Ctx<Log>) -> Result<()> {
        if let Some(release) = self.release.lock().unwrap().take() {
            let _ = release.recv();
        }
        self.finished.fetch_add(1, Ordering::SeqCst);
        push(cx, "late");
        Ok(())
    }
    #[start]
    async fn charge(&self, _cx: &Ctx<Log>) -> Result<()> {
        Err(Error::permanent("card declined"))
    }
}

/// A thread cannot be stopped: the run reports the failure without waiting for it, and its
/// late result is dropped.
#[tokio::test(flavor = "current_thread")]
async fn a_failure_does_not_wait_for_a_blocking_sibling() {
    let (release, held) = std::sync::mpsc::channel();
    let flow = Arc::new(BlockedSibling { release: std::sync::Mutex::new(Some(held)), finished: AtomicU32::new(0) });
    let result =
        tokio::time::timeout(Duration::from_secs(120), Runner::from_arc(Arc::clone(&flow)).kickoff(Log::default()))
            .await
            .expect("the run must report the failure without waiting for the blocked thread");
    assert_eq!(failed_method(result), "charge");
    assert_eq!(flow.finished.load(Ordering::SeqCst), 0, "the run ended while the thread was still in the step");
    release.send(()).unwrap();
}

// ---------------------------------------------------------------- 4. kickoff inputs

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Brief {
    topic: String,
    depth: u32,
    tags: Vec<String>,
    customer: Customer,
    notes: Vec<String>,
}

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Customer {
    name: String,
    age: u32,
}

impl Default for Brief {
    fn default() -> Self {
        Brief {
            topic: "nothing yet".into(),
            depth: 2,
            tags: vec!["default".into()],
            customer: Customer::default(),
            notes: Vec::new(),
        }
    }
}

struct Research;

#[flow(state = Brief, name = "crewai_research")]
impl Research {
    #[start]
    async fn study(&self, cx: &Ctx<Brief>) -> Result<()> {
        let note = cx.read(|s| format!("{} for {} at depth {}", s.topic, s.customer.name, s.depth));
        cx.update(move |s| s.notes.push(note.clone()));
        Ok(())
    }
}

#[tokio::test]
async fn kickoff_inputs_replace_the_defaults_they_name() {
    let inputs = serde_json::json!({ "topic": "tides", "customer": { "name": "Ann", "age": 40 } });
    let run = Runner::new(Research).kickoff_with_inputs(inputs).await.unwrap().completed().unwrap();
    assert_eq!(
        run.state,
        Brief {
            topic: "tides".into(),
            depth: 2,
            tags: vec!["default".into()],
            customer: Customer { name: "Ann".into(), age: 40 },
            notes: vec!["tides for Ann at depth 2".into()],
        }
    );
}

fn refused(result: Result<RunOutcome<Brief>, FlowError>) -> (String, String, String, String) {
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("No run was started and nothing was stored"), "{text}");
    match err {
        FlowError::InvalidInputs { state_type, key, problem, expected } => {
            assert_eq!(state_type, "Brief");
            (key, problem, expected, text)
        }
        other => panic!("expected InvalidInputs, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_input_key_is_refused_by_name_and_nothing_is_stored() {
    let store = MemoryStore::new();
    let runner = Runner::new(Research).with_store(store.clone());
    let (key, problem, expected, text) =
        refused(runner.kickoff_with_inputs(serde_json::json!({ "topic": "tides", "depht": 3 })).await);
    assert_eq!(key, "depht");
    assert_eq!(problem, "the state has no such field");
    assert_eq!(expected, "one of its fields: `customer`, `depth`, `notes`, `tags`, `topic`");
    assert!(text.starts_with("kickoff input `depht` was refused for state `Brief`"), "{text}");
    assert!(store.list_runs(&RunFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_input_of_the_wrong_type_is_refused_by_name_and_nothing_is_stored() {
    let store = MemoryStore::new();
    let runner = Runner::new(Research).with_store(store.clone());

    let (key, problem, expected, _) = refused(runner.kickoff_with_inputs(serde_json::json!({ "depth": "deep" })).await);
    assert_eq!(key, "depth");
    assert_eq!(problem, "at `depth`: invalid type: string \"deep\", expected u32");
    assert_eq!(expected, "a value shaped like the default's `depth`: 2");

    let nested = serde_json::json!({ "topic": "tides", "customer": { "name": "Ann", "age": "old" } });
    let (key, problem, _, _) = refused(runner.kickoff_with_inputs(nested).await);
    assert_eq!(key, "customer");
    assert_eq!(problem, "at `customer.age`: invalid type: string \"old\", expected u32");

    let (key, problem, expected, _) = refused(runner.kickoff_with_inputs(serde_json::json!(["tides"])).await);
    assert_eq!((key.as_str(), problem.as_str()), (".", "the inputs are an array, not an object"));
    assert_eq!(expected, "a JSON object whose keys are fields of the state");

    assert!(store.list_runs(&RunFilter::default()).await.unwrap().is_empty());
    // The same runner stores a run from good inputs.
    runner.kickoff_with_inputs(serde_json::json!({ "depth": 5 })).await.unwrap().completed().unwrap();
    assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap().len(), 1);
}

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Review {
    draft: String,
    /// Left out of the default's JSON: still a field inputs may set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reviewer: Option<String>,
}

struct Proofread;

#[flow(state = Review)]
impl Proofread {
    #[start]
    async fn read(&self, _cx: &Ctx<Review>) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_input_for_a_field_the_default_leaves_out_is_taken() {
    let runner = Runner::new(Proofread);
    let run = runner.kickoff_with_inputs(serde_json::json!({ "reviewer": "Bo" })).await.unwrap().completed().unwrap();
    assert_eq!(run.state, Review { draft: String::new(), reviewer: Some("Bo".into()) });
    let refused = runner.kickoff_with_inputs(serde_json::json!({ "reviewr": "Bo" })).await;
    assert!(matches!(refused, Err(FlowError::InvalidInputs { ref key, .. }) if key == "reviewr"), "{refused:?}");
}

// ---------------------------------------------------------------- 6. or-joins fed by and-joins

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Emit {
    Y,
}

/// CrewAI's `test_or_branch_does_not_leave_stale_and_state`: `joined` fires through
/// `and(a, x)`; `c` had half-filled `and(c, Y)`, and the `Y` that `joined` itself leads to
/// must not complete it.
struct StaleAnd;

#[flow(state = Log)]
impl StaleAnd {
    #[start]
    async fn begin(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "begin");
        Ok(())
    }
    #[listen(begin)]
    async fn a(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "a");
        Ok(())
    }
    #[listen(begin)]
    async fn c(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "c");
        Ok(())
    }
    #[listen(and(a, c))]
    async fn x(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "x");
        Ok(())
    }
    #[listen(or(and(a, x), and(c, Emit::Y)))]
    async fn joined(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "joined");
        Ok(())
    }
    #[router(joined)]
    async fn emit_y(&self, cx: &Ctx<Log>) -> Result<Emit> {
        push(cx, "emit_y");
        Ok(Emit::Y)
    }
}

#[tokio::test]
async fn an_or_clears_what_its_other_and_half_collected() {
    let run = StaleAnd.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.done, ["begin", "a", "c", "x", "joined", "emit_y"]);
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Next {
    B,
}

/// `or(and(a, B), c)` where `B` is routed from the listener itself: `a` and `c` come from one
/// wave, so the or fires once for them, whichever comes first.
struct OrOfAnd {
    a_after: Duration,
    c_after: Duration,
}

#[flow(state = Log)]
impl OrOfAnd {
    #[start]
    async fn begin(&self, _cx: &Ctx<Log>) -> Result<()> {
        Ok(())
    }
    #[listen(begin)]
    async fn a(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(self.a_after).await;
        push(cx, "a");
        Ok(())
    }
    #[listen(begin)]
    async fn c(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(self.c_after).await;
        push(cx, "c");
        Ok(())
    }
    #[listen(or(and(a, Next::B), c))]
    async fn joined(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "joined");
        Ok(())
    }
    #[router(joined)]
    async fn then(&self, cx: &Ctx<Log>) -> Result<Next> {
        push(cx, "then");
        Ok(Next::B)
    }
}

#[tokio::test(start_paused = true)]
async fn an_or_fed_by_an_and_fires_once_per_wave_when_the_and_part_came_first() {
    let flow = OrOfAnd { a_after: Duration::from_secs(1), c_after: Duration::from_secs(2) };
    let run = flow.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.done, ["a", "c", "joined", "then"]);
}

#[tokio::test(start_paused = true)]
async fn an_or_fed_by_an_and_fires_once_per_wave_when_the_and_part_came_last() {
    let flow = OrOfAnd { a_after: Duration::from_secs(2), c_after: Duration::from_secs(1) };
    let run = flow.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.done, ["c", "joined", "then", "a"]);
}

// ---------------------------------------------------------------- 8. the read-then-write trap

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Count {
    n: u32,
    notes: Vec<String>,
}

/// Ten branches that each add one to `n`, the safe way (`safe`) or by writing back what they
/// read (the trap).
struct Tally {
    safe: bool,
}

fn add_one(flow: &Tally, cx: &Ctx<Count>) -> Result<()> {
    if flow.safe {
        // Reading for something else is fine; the count changes inside the update.
        let note = cx.read(|s| format!("saw {}", s.n));
        cx.update(move |s| {
            s.n += 1;
            s.notes.push(note.clone());
        });
    } else {
        let n = cx.read(|s| s.n);
        cx.update(move |s| s.n = n + 1);
    }
    Ok(())
}

#[flow(state = Count)]
impl Tally {
    #[start]
    async fn begin(&self, _cx: &Ctx<Count>) -> Result<()> {
        Ok(())
    }
    #[listen(begin)]
    async fn b0(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b1(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b2(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b3(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b4(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b5(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b6(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b7(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b8(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
    #[listen(begin)]
    async fn b9(&self, cx: &Ctx<Count>) -> Result<()> {
        add_one(self, cx)
    }
}

/// Log lines written while `run` runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn run_logged(flow: Tally) -> (Count, Vec<String>) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: the run's task runs on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let run = flow.kickoff(Count::default()).await.unwrap().completed().unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (run.state, text.lines().filter(|l| l.contains("read the state and then updated")).map(String::from).collect())
}

#[tokio::test(flavor = "current_thread")]
async fn updates_from_ten_parallel_branches_all_count() {
    let (state, warnings) = run_logged(Tally { safe: true }).await;
    assert_eq!(state.n, 10);
    // Each branch read the state as it was when they all started.
    assert_eq!(state.notes, vec!["saw 0"; 10]);
    assert_eq!(warnings, Vec::<String>::new());
}

#[tokio::test(flavor = "current_thread")]
async fn writing_back_a_value_read_loses_updates_and_is_warned_in_debug_builds() {
    let (state, warnings) = run_logged(Tally { safe: false }).await;
    // Every branch wrote 0 + 1: nine increments are lost.
    assert_eq!(state.n, 1);
    if cfg!(debug_assertions) {
        // The first branch to complete changed nothing anyone else had changed; each of the
        // nine after it overwrote `n`.
        assert_eq!(warnings.len(), 9, "{warnings:#?}");
        assert!(warnings[0].contains("updated `n` to the value it would have without a parallel branch's change"));
        assert!(warnings[0].contains("cx.update(|s| s.n += 1)"), "{}", warnings[0]);
    }
}
