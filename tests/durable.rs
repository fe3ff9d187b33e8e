//! Durable runs on SQLite (DESIGN.md §6): resume, pause for a person, fork, state evolution,
//! idempotency keys, the effect journal, and faults.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{RunFilter, SqliteStore, StepStatus, Store, StoreError};
use flow_core::{RunStatus, Worker};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use flow_tests::{Gate, Intercept, now_ms, resume_when_free, until, until_lease_lapses};

async fn store_at(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("runs.db")).await.unwrap()
}

fn sql(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("runs.db")).unwrap()
}

// ---------------------------------------------------------------- resume after a failure

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    id: String,
    steps: Vec<String>,
}

struct Fulfil {
    fail_ship: Arc<AtomicU32>,
    runs: Arc<[AtomicU32; 3]>,
}

impl Fulfil {
    fn new(failures: u32) -> Self {
        Fulfil { fail_ship: Arc::new(AtomicU32::new(failures)), runs: Arc::new(Default::default()) }
    }
}

#[flow(state = Order, name = "fulfil")]
impl Fulfil {
    #[start]
    async fn reserve(&self, cx: &Ctx<Order>) -> Result<()> {
        self.runs[0].fetch_add(1, Ordering::SeqCst);
        cx.update(|s| s.steps.push("reserve".into()));
        Ok(())
    }
    #[listen(reserve)]
    async fn ship(&self, cx: &Ctx<Order>) -> Result<String> {
        self.runs[1].fetch_add(1, Ordering::SeqCst);
        if self.fail_ship.load(Ordering::SeqCst) > 0 {
            self.fail_ship.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::permanent("carrier API rejected the address"));
        }
        cx.update(|s| s.steps.push("ship".into()));
        Ok(format!("label for {}", cx.read(|s| s.id.clone())))
    }
    #[listen(ship)]
    async fn notify(&self, cx: &Ctx<Order>, label: String) -> Result<String> {
        self.runs[2].fetch_add(1, Ordering::SeqCst);
        cx.update(|s| s.steps.push("notify".into()));
        Ok(label)
    }
}

#[tokio::test]
async fn a_failed_run_resumes_by_running_the_failed_method_again() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Fulfil::new(1);
    let runs = flow.runs.clone();
    let runner = Runner::new(flow).with_store(store_at(dir.path()).await);
    let err = runner.kickoff(Order { id: "o-1".into(), ..Order::default() }).await.unwrap_err();
    let FlowError::MethodFailed { run_id, method, .. } = &err else { panic!("{err:?}") };
    assert_eq!(method, "ship");
    let run_id = *run_id;
    let record = runner.store().unwrap().load_run(run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);

    let run = runner.resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(run.state.steps, ["reserve", "ship", "notify"]);
    assert_eq!(run.output::<String>().unwrap(), "label for o-1");
    let counts: Vec<u32> = runs.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [1, 2, 1], "reserve must not run again; ship runs again; notify once");
    // Outputs of steps completed by the first execution come back from the step rows, in the
    // order the flow declares its methods.
    assert_eq!(run.outputs.keys().collect::<Vec<_>>(), ["reserve", "ship", "notify"]);
    assert_eq!(run.output_of::<String>("ship").unwrap(), "label for o-1");

    // Resuming a completed run returns its stored result, outputs included.
    let again = runner.resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(again.outputs, run.outputs);
    assert_eq!(again.last_method.as_deref(), Some("notify"));
    assert_eq!(counts, runs.iter().map(|c| c.load(Ordering::SeqCst)).collect::<Vec<_>>(), "nothing ran");
}

#[tokio::test]
async fn a_run_resumes_in_another_runner_found_by_its_flow_name() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(store_at(dir.path()).await);
    let err = Runner::new(Fulfil::new(1)).with_shared_store(store.clone()).kickoff(Order::default()).await.unwrap_err();
    let FlowError::MethodFailed { run_id, .. } = err else { panic!() };

    // A fresh "process": a new store handle on the same file and a worker that only knows flows
    // by name.
    let reopened: Arc<dyn Store> = Arc::new(store_at(dir.path()).await);
    let fresh = Fulfil::new(0);
    let runs = fresh.runs.clone();
    let worker = Worker::new(reopened).register(fresh);
    assert_eq!(worker.resume(run_id).await.unwrap(), RunStatus::Completed);
    assert_eq!(runs[0].load(Ordering::SeqCst), 0, "reserve completed before and must not run again");
    assert!(flow_core::find_flow("fulfil").is_some(), "registered by #[flow] through inventory");

    let unknown = Worker::new(store.clone());
    match unknown.resume(run_id).await.unwrap_err() {
        FlowError::UnknownFlow { flow, compiled_in, .. } => {
            assert_eq!(flow, "fulfil");
            assert!(compiled_in);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(unknown.resume(Uuid::now_v7()).await.unwrap_err(), FlowError::RunNotFound(_)));
}

#[tokio::test]
async fn a_final_commit_that_fails_leaves_the_last_step_to_run_again() {
    let dir = tempfile::tempdir().unwrap();
    // Refuses every commit that would put a run at rest while `refuse` is set, as a disk that
    // fails at that moment would.
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let store = Arc::new(Intercept {
        refuse_commit: Box::new({
            let refuse = refuse.clone();
            move |commit| {
                (commit.status.is_at_rest() && refuse.load(Ordering::SeqCst))
                    .then(|| StoreError::Busy("the disk went away".into()))
            }
        }),
        ..Intercept::new(Arc::new(store_at(dir.path()).await))
    });
    let flow = Fulfil::new(0);
    let runs = Arc::clone(&flow.runs);
    let runner = Runner::new(flow).with_shared_store(store.clone()).lease(Duration::from_millis(200));
    let err = runner.kickoff(Order::default()).await.unwrap_err();
    assert!(matches!(err, FlowError::Store(StoreError::Busy(_))), "{err:?}");
    let run_id = store.inner.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;

    // The last step's completion was to be recorded by the refused commit: nothing of it is
    // stored, and the run still has it to do.
    let steps = store.steps(run_id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.step_key.as_str()).collect::<Vec<_>>(), ["reserve#1", "ship#1"]);
    let steps = runner.steps(run_id).await.unwrap();
    assert_eq!(steps.last().map(|s| (s.step_key.as_str(), s.status)), Some(("notify#1", StepStatus::Ready)));

    refuse.store(false, Ordering::SeqCst);
    // The failed execution could not write the run's release either: its lease has to expire.
    let done = resume_when_free(&runner, &*store.inner, run_id).await.unwrap().completed().unwrap();
    assert_eq!(done.state.steps, ["reserve", "ship", "notify"]);
    let counts: Vec<u32> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [1, 1, 2], "only the unrecorded step runs again");
    let history = store.checkpoints(run_id).await.unwrap();
    assert_eq!(
        history.last().map(|c| (c.step_key.as_deref(), c.status)),
        Some((Some("notify#1"), RunStatus::Completed))
    );
}

#[tokio::test]
async fn checkpoint_history_is_listed_and_retention_applies() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let runner = Runner::new(Fulfil::new(0)).with_store(store.clone());
    let run = runner.kickoff(Order::default()).await.unwrap().completed().unwrap();
    let history = store.checkpoints(run.run_id).await.unwrap();
    let keys: Vec<Option<&str>> = history.iter().map(|c| c.step_key.as_deref()).collect();
    // The last completion ends the run: the final checkpoint records it, no second commit.
    assert_eq!(keys, [None, Some("reserve#1"), Some("ship#1"), Some("notify#1")]);
    assert_eq!(history.last().unwrap().status, RunStatus::Completed);
    let steps = store.steps(run.run_id).await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.step_key.as_str()).collect();
    assert_eq!(names, ["reserve#1", "ship#1", "notify#1"]);
    assert!(steps.iter().all(|s| s.status == StepStatus::Completed && s.attempt == 1), "{steps:?}");

    let small =
        SqliteStore::open_with(flow_core::store::SqliteOptions::new(dir.path().join("small.db")).keep_checkpoints(2))
            .await
            .unwrap();
    let run = Runner::new(Fulfil::new(0)).with_store(small.clone()).kickoff(Order::default()).await.unwrap();
    let kept = small.checkpoints(run.run_id()).await.unwrap();
    assert_eq!(kept.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 4]);
}

// ---------------------------------------------------------------- human in the loop

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Refund {
    amount: u32,
    approved_by: Option<String>,
    paid: bool,
}

#[derive(Debug, Serialize, Deserialize, flow_core::schemars::JsonSchema)]
#[schemars(crate = "flow_core::schemars")]
struct Approval {
    approver: String,
    approve: bool,
}

struct RefundFlow {
    prepared: Arc<AtomicU32>,
}

#[flow(state = Refund, name = "refund")]
impl RefundFlow {
    #[start]
    async fn prepare(&self, cx: &Ctx<Refund>) -> Result<u32> {
        // Journaled: runs once even though this method runs again with the answer.
        let n: u32 = cx
            .effect("prepare_refund", |_key| {
                let prepared = self.prepared.clone();
                async move { Ok(prepared.fetch_add(1, Ordering::SeqCst) + 1) }
            })
            .await?;
        let amount = cx.read(|s| s.amount);
        let answer: Approval = cx
            .ask(
                InputRequest::new(format!("Approve a refund of {amount} EUR?"))
                    .metadata(serde_json::json!({"amount": amount})),
            )
            .await?;
        if answer.approve {
            cx.update(move |s| s.approved_by = Some(answer.approver.clone()));
        }
        Ok(n)
    }
    #[listen(prepare)]
    async fn pay(&self, cx: &Ctx<Refund>) -> Result<()> {
        if cx.read(|s| s.approved_by.is_some()) {
            cx.update(|s| s.paid = true);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_paused_run_waits_for_typed_input_and_resumes_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = Arc::new(AtomicU32::new(0));
    let runner = Runner::new(RefundFlow { prepared: prepared.clone() }).with_store(store_at(dir.path()).await);
    let outcome = runner.kickoff(Refund { amount: 120, ..Refund::default() }).await.unwrap();
    let RunOutcome::Paused(paused) = outcome else { panic!("{outcome:?}") };
    assert_eq!(paused.request.prompt, "Approve a refund of 120 EUR?");
    assert_eq!(paused.request.metadata["amount"], 120);
    assert_eq!(paused.request.method, "prepare");
    assert!(paused.request.expected_type.ends_with("Approval"), "{}", paused.request.expected_type);

    let listed = runner.paused_runs().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].run_id, paused.run_id);

    // Another process: a new store handle and a new flow value.
    let later = Runner::new(RefundFlow { prepared: prepared.clone() }).with_store(store_at(dir.path()).await);
    let wrong = later.resume_with(paused.run_id, serde_json::json!({"approver": "ana"})).await.unwrap_err();
    assert!(matches!(wrong, FlowError::InvalidInput { .. }), "{wrong:?}");
    assert!(wrong.to_string().contains("approve"), "{wrong}");
    assert_eq!(later.store().unwrap().load_run(paused.run_id).await.unwrap().status, RunStatus::Paused);

    let done = later
        .resume_with(paused.run_id, Approval { approver: "ana".into(), approve: true })
        .await
        .unwrap()
        .completed()
        .unwrap();
    assert_eq!(done.state.approved_by.as_deref(), Some("ana"));
    assert!(done.state.paid);
    assert_eq!(prepared.load(Ordering::SeqCst), 1, "the journaled effect before the question ran once");
    assert!(later.paused_runs().await.unwrap().is_empty());
}

// ---------------------------------------------------------------- fork

#[tokio::test]
async fn fork_starts_a_new_run_from_any_checkpoint_and_leaves_the_source_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let runner = Runner::new(Fulfil::new(0)).with_store(store.clone());
    let source = runner.kickoff(Order { id: "src".into(), ..Order::default() }).await.unwrap().completed().unwrap();
    let before = store.load_run(source.run_id).await.unwrap();

    // Checkpoint 2 is the one written after `reserve` completed.
    let forked = runner.fork(source.run_id, Some(2)).await.unwrap().completed().unwrap();
    assert_ne!(forked.run_id, source.run_id);
    assert_eq!(forked.state.steps, ["reserve", "ship", "notify"]);
    let forked_record = store.load_run(forked.run_id).await.unwrap();
    assert_eq!(forked_record.parent_run_id, Some(source.run_id));
    // The fork inherits the step that had completed by checkpoint 2, as the source recorded it.
    let forked_steps = store.steps(forked.run_id).await.unwrap();
    let keys: Vec<&str> = forked_steps.iter().map(|s| s.step_key.as_str()).collect();
    assert_eq!(keys, ["reserve#1", "ship#1", "notify#1"]);
    assert_eq!(forked_steps[0], store.steps(source.run_id).await.unwrap()[0], "reserve was not run again");
    assert_eq!(store.load_run(source.run_id).await.unwrap(), before, "the source is untouched");

    // From checkpoint 3 (after `ship`), only `notify` runs; `ship`'s output is the source's.
    let runs = Fulfil::new(0);
    let counts = runs.runs.clone();
    let late = Runner::new(runs).with_store(store.clone()).fork(source.run_id, Some(3)).await.unwrap();
    let late = late.completed().unwrap();
    assert_eq!(counts.iter().map(|c| c.load(Ordering::SeqCst)).collect::<Vec<_>>(), [0, 0, 1]);
    assert_eq!(late.output_of::<String>("ship").unwrap(), "label for src");
    assert_eq!(late.output::<String>().unwrap(), "label for src");
    assert!(matches!(runner.fork(source.run_id, Some(99)).await.unwrap_err(), FlowError::Store(_)));
}

// ---------------------------------------------------------------- state evolution

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct OrderV2 {
    id: String,
    steps: Vec<String>,
    #[serde(default)]
    priority: u8,
}

struct FulfilV2;

#[flow(state = OrderV2, name = "fulfil")]
impl FulfilV2 {
    #[start]
    async fn reserve(&self, _cx: &Ctx<OrderV2>) -> Result<()> {
        Ok(())
    }
    #[listen(reserve)]
    async fn ship(&self, cx: &Ctx<OrderV2>) -> Result<String> {
        cx.update(|s| s.steps.push("ship v2".into()));
        Ok(format!("priority {}", cx.read(|s| s.priority)))
    }
    #[listen(ship)]
    async fn notify(&self, cx: &Ctx<OrderV2>, label: String) -> Result<String> {
        cx.update(|s| s.steps.push("notify v2".into()));
        Ok(label)
    }
}

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct OrderV3 {
    id: u64,
    steps: Vec<String>,
}

struct FulfilV3;

#[flow(state = OrderV3, name = "fulfil")]
impl FulfilV3 {
    #[start]
    async fn reserve(&self, _cx: &Ctx<OrderV3>) -> Result<()> {
        Ok(())
    }
    #[listen(reserve)]
    async fn ship(&self, _cx: &Ctx<OrderV3>) -> Result<String> {
        Ok(String::new())
    }
    #[listen(ship)]
    async fn notify(&self, _cx: &Ctx<OrderV3>, label: String) -> Result<String> {
        Ok(label)
    }
}

#[tokio::test]
async fn old_rows_load_into_a_grown_state_and_incompatible_rows_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let err = Runner::new(Fulfil::new(1))
        .with_store(store.clone())
        .kickoff(Order { id: "o-7".into(), ..Order::default() })
        .await
        .unwrap_err();
    let FlowError::MethodFailed { run_id, .. } = err else { panic!() };
    let stored = store.load_run(run_id).await.unwrap();

    let incompatible = Runner::new(FulfilV3).with_store(store.clone()).resume(run_id).await.unwrap_err();
    match &incompatible {
        FlowError::StateMismatch { run_id: r, path, .. } => {
            assert_eq!(*r, run_id);
            assert_eq!(path, "id");
        }
        other => panic!("{other:?}"),
    }
    assert!(incompatible.to_string().contains(&run_id.to_string()));
    assert_eq!(store.load_run(run_id).await.unwrap(), stored, "nothing was overwritten");

    let run = Runner::new(FulfilV2).with_store(store.clone()).resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(run.state.id, "o-7");
    assert_eq!(run.state.priority, 0);
    assert_eq!(run.state.steps, ["reserve", "ship v2", "notify v2"]);
}

// ---------------------------------------------------------------- idempotency keys and the journal

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Keys {
    seen: Vec<String>,
}

struct KeyFlow {
    keys: Arc<std::sync::Mutex<Vec<String>>>,
    calls: Arc<AtomicU32>,
    fail_once: Arc<AtomicU32>,
}

#[flow(state = Keys, name = "keys", retry(attempts = 3, backoff = fixed("1ms")))]
impl KeyFlow {
    #[start]
    async fn charge(&self, cx: &Ctx<Keys>) -> Result<String> {
        self.keys.lock().unwrap().push(cx.idempotency_key());
        let receipt: String = cx
            .effect("charge_card", |key| {
                let calls = self.calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(format!("receipt:{key}"))
                }
            })
            .await?;
        if self.fail_once.swap(0, Ordering::SeqCst) == 1 {
            return Err(Error::transient("network blip after charging"));
        }
        Ok(receipt)
    }
}

#[tokio::test]
async fn the_idempotency_key_is_stable_and_journaled_effects_replay_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let flow = KeyFlow { keys: Arc::default(), calls: Arc::default(), fail_once: Arc::new(AtomicU32::new(1)) };
    let (keys, calls) = (flow.keys.clone(), flow.calls.clone());
    let run = Runner::new(flow).with_store(store_at(dir.path()).await).kickoff(Keys::default()).await.unwrap();
    let run = run.completed().unwrap();
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "two attempts");
    assert_eq!(keys[0], keys[1], "same key on every run of the step");
    assert_eq!(keys[0], format!("{}:charge#1", run.run_id));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the recorded effect was replayed on the retry");
    assert_eq!(run.output::<String>().unwrap(), format!("receipt:{}:charge#1:0", run.run_id));
}

struct Reordered {
    first_run: Arc<AtomicU32>,
}

#[flow(state = Keys, name = "reordered")]
impl Reordered {
    #[start]
    async fn work(&self, cx: &Ctx<Keys>) -> Result<()> {
        let first = self.first_run.swap(0, Ordering::SeqCst) == 1;
        let names = if first { ["fetch", "store"] } else { ["store", "fetch"] };
        for n in names {
            let _: u32 = cx.effect(n, |_| async { Ok(1) }).await?;
        }
        if first {
            return Err(Error::permanent("stop after recording both effects"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn replaying_effects_in_another_order_is_a_non_determinism_error() {
    let dir = tempfile::tempdir().unwrap();
    let runner =
        Runner::new(Reordered { first_run: Arc::new(AtomicU32::new(1)) }).with_store(store_at(dir.path()).await);
    let FlowError::MethodFailed { run_id, .. } = runner.kickoff(Keys::default()).await.unwrap_err() else { panic!() };
    let err = runner.resume(run_id).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("non-determinism") && text.contains("fetch") && text.contains("store"), "{text}");
}

// ---------------------------------------------------------------- faults

/// The progress of a run's newest checkpoint, which is the run's current one.
const LATEST_PROGRESS: &str = "SELECT progress FROM flow_checkpoints WHERE run_id = ?1 ORDER BY seq DESC LIMIT 1";

#[tokio::test]
async fn unknown_runs_and_corrupt_rows_are_clear_errors_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let runner = Runner::new(Fulfil::new(1)).with_store(store.clone());
    assert!(matches!(runner.resume(Uuid::now_v7()).await.unwrap_err(), FlowError::RunNotFound(_)));

    let FlowError::MethodFailed { run_id, .. } = runner.kickoff(Order::default()).await.unwrap_err() else { panic!() };
    let conn = sql(dir.path());
    let original: String = conn.query_row(LATEST_PROGRESS, [run_id.to_string()], |r| r.get(0)).unwrap();
    conn.execute(
        "UPDATE flow_checkpoints SET progress = '{\"format\":1,\"calls\":\"oops\"}' \
         WHERE run_id = ?1 AND seq = (SELECT MAX(seq) FROM flow_checkpoints WHERE run_id = ?1)",
        [run_id.to_string()],
    )
    .unwrap();
    let err = runner.resume(run_id).await.unwrap_err();
    assert!(matches!(err, FlowError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&run_id.to_string()));
    conn.execute(
        "UPDATE flow_checkpoints SET state = 'not json' \
         WHERE run_id = ?1 AND seq = (SELECT MAX(seq) FROM flow_checkpoints WHERE run_id = ?1)",
        [run_id.to_string()],
    )
    .unwrap();
    let err = runner.resume(run_id).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    let after: String = conn.query_row(LATEST_PROGRESS, [run_id.to_string()], |r| r.get(0)).unwrap();
    assert_ne!(after, original, "sanity: we did corrupt it");
    assert!(after.contains("oops"), "the corrupt row was left as it was");
}

/// A flow whose second step lasts until the test opens its gate.
#[derive(Clone, Default)]
struct Slow {
    ran: Arc<AtomicU32>,
    gate: Gate,
}

#[flow(state = Keys, name = "slow")]
impl Slow {
    #[start]
    async fn wait_a_bit(&self, _cx: &Ctx<Keys>) -> Result<()> {
        Ok(())
    }
    #[listen(wait_a_bit)]
    async fn long_step(&self, _cx: &Ctx<Keys>) -> Result<()> {
        self.ran.fetch_add(1, Ordering::SeqCst);
        self.gate.pass().await;
        Ok(())
    }
}

/// Leaves a run behind as a crashed process would: kickoff, then drop the future once the run
/// is in its long step. Returns the run's id, read from `store`.
async fn stopped_mid_step(runner: &Runner<Slow>, slow: &Slow, store: &SqliteStore) -> Uuid {
    tokio::select! {
        done = runner.kickoff(Keys::default()) => panic!("the run ended before its long step was reached: {done:?}"),
        () = slow.gate.reached(1) => {}
    }
    store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_resuming_one_run_at_once_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Slow::default();
    let ran = slow.ran.clone();
    let first = Runner::new(slow.clone()).with_store(store_at(dir.path()).await).lease(Duration::from_millis(200));
    let store = store_at(dir.path()).await;
    let run_id = stopped_mid_step(&first, &slow, &store).await;

    let a = Runner::new(slow.clone()).with_store(store_at(dir.path()).await);
    let b = Runner::new(slow.clone()).with_store(store_at(dir.path()).await);
    // The winner stays in its long step until the other was refused; if both got in, both are
    // let through, so that the double run fails the test instead of hanging it.
    let refused_opens_the_gate = |r: Result<RunOutcome<Keys>, FlowError>| {
        if r.is_err() {
            slow.gate.open(2);
        }
        r
    };
    let both = || async {
        tokio::join!(async { refused_opens_the_gate(a.resume(run_id).await) }, async {
            refused_opens_the_gate(b.resume(run_id).await)
        })
    };
    let (ok, refused) = loop {
        until_lease_lapses(&store, run_id).await; // the dead holder's lease expires
        let (ra, rb) = tokio::select! {
            both = both() => both,
            never = async {
                slow.gate.reached(2).await;
                slow.gate.open(2);
                std::future::pending::<std::convert::Infallible>().await
            } => match never {},
        };
        match (ra, rb) {
            (Ok(o), Err(e)) | (Err(e), Ok(o)) => break (o, e),
            // Both refused: a renewal the dropped execution had handed to the store landed
            // after its lease lapsed (see `resume_when_free`).
            (Err(FlowError::RunLocked { .. }), Err(FlowError::RunLocked { .. })) => slow.gate.close(),
            other => panic!("exactly one resume must win: {other:?}"),
        }
    };
    assert_eq!(ok.status(), RunStatus::Completed);
    assert!(matches!(refused, FlowError::RunLocked { .. }), "{refused:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 2, "once by the crashed process, once by the winner");
}

/// A scheduled step has no row until it first finishes or fails; `Runner::steps` lists it
/// from the run's newest checkpoint, and stops listing it that way once its row exists.
#[tokio::test]
async fn a_stopped_run_lists_the_step_it_had_scheduled() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Slow::default();
    let store = store_at(dir.path()).await;
    let runner = Runner::new(slow.clone()).with_store(store.clone()).lease(Duration::from_millis(50));
    let run_id = stopped_mid_step(&runner, &slow, &store).await;

    let rows: Vec<(String, StepStatus)> =
        store.steps(run_id).await.unwrap().into_iter().map(|s| (s.step_key, s.status)).collect();
    assert_eq!(rows, [("wait_a_bit#1".to_string(), StepStatus::Completed)], "no row for a step not yet finished");
    let steps = runner.steps(run_id).await.unwrap();
    let listed: Vec<(&str, &str, StepStatus, u32)> =
        steps.iter().map(|s| (s.step_key.as_str(), s.method.as_str(), s.status, s.attempt)).collect();
    assert_eq!(
        listed,
        [("wait_a_bit#1", "wait_a_bit", StepStatus::Completed, 1), ("long_step#1", "long_step", StepStatus::Ready, 0)]
    );

    slow.gate.open(1);
    assert_eq!(resume_when_free(&runner, &store, run_id).await.unwrap().status(), RunStatus::Completed);
    let after: Vec<StepStatus> = runner.steps(run_id).await.unwrap().into_iter().map(|s| s.status).collect();
    assert_eq!(after, [StepStatus::Completed, StepStatus::Completed], "listed once, by its row");
    assert!(matches!(Runner::new(slow).steps(run_id).await.unwrap_err(), FlowError::NoStore { .. }));
}

/// The run renews its lease while a step outlasts it, so another process cannot take the
/// run over; the renewals stop with the execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_keeps_its_lease_through_a_long_step() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Slow::default();
    let ran = slow.ran.clone();
    let store = store_at(dir.path()).await;
    // Long enough that a busy machine delaying a renewal by most of a second does not let the
    // lease lapse: what is tested is that renewals happen, not how promptly.
    let live = Runner::new(slow.clone()).with_store(store.clone()).lease(Duration::from_secs(1));
    let run = tokio::spawn(async move { live.kickoff(Keys::default()).await });
    slow.gate.reached(1).await;
    let run_id = store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;
    let first_expiry = store.load_run(run_id).await.unwrap().lease_expires_at_ms.unwrap();
    until("the step to outlast the lease it started with", || async { now_ms() > first_expiry }).await;
    let renewed = store.load_run(run_id).await.unwrap().lease_expires_at_ms;
    assert!(renewed.is_some_and(|e| e > first_expiry), "the lease was not renewed: {renewed:?} vs {first_expiry}");
    let other = Runner::new(slow.clone()).with_store(store_at(dir.path()).await);
    let refused = tokio::select! {
        r = other.resume(run_id) => r.unwrap_err(),
        () = slow.gate.reached(1) => panic!("another process took the live run over"),
    };
    assert!(matches!(refused, FlowError::RunLocked { .. }), "{refused:?}");
    slow.gate.open(1);
    assert_eq!(run.await.unwrap().unwrap().status(), RunStatus::Completed);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let record = store.load_run(run_id).await.unwrap();
    assert_eq!((record.lease_owner, record.lease_expires_at_ms), (None, None), "released at rest");
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_the_stored_run_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let runner = Runner::new(Fulfil::new(0)).with_store(store.clone());
    let done = runner.kickoff(Order { id: "kept".into(), ..Order::default() }).await.unwrap().completed().unwrap();
    drop(runner);
    drop(store);

    let size = std::fs::metadata(&path).unwrap().len();
    let tight =
        SqliteStore::open_with(flow_core::store::SqliteOptions::new(&path).max_size(size + 4096)).await.unwrap();
    let runner = Runner::new(Fulfil::new(0)).with_store(tight.clone());
    let big = "x".repeat(256 * 1024);
    let err = runner.kickoff(Order { id: big, ..Order::default() }).await.unwrap_err();
    assert!(err.to_string().contains("disk is full"), "{err}");
    let kept = tight.load_run(done.run_id).await.unwrap();
    assert_eq!(kept.status, RunStatus::Completed);
    assert_eq!(kept.snapshot.state_as::<serde_json::Value>().unwrap()["id"], "kept");
}

// ---------------------------------------------------------------- usage across executions

struct Metered;

#[flow(state = Keys, name = "metered")]
impl Metered {
    #[start]
    async fn draft(&self, cx: &Ctx<Keys>) -> Result<()> {
        // Reported once: the effect is journaled, so the re-run after the answer replays it.
        let _: u32 = cx
            .effect("draft_llm_call", |_| async {
                cx.report_usage(
                    "m",
                    flow_core::TokenUsage { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 },
                );
                Ok(1)
            })
            .await?;
        let _ok: bool = cx.ask("Send it?").await?;
        Ok(())
    }
    #[listen(draft)]
    async fn send(&self, cx: &Ctx<Keys>) -> Result<()> {
        cx.report_usage("m", flow_core::TokenUsage { prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 });
        Ok(())
    }
}

#[tokio::test]
async fn token_usage_adds_up_over_every_execution_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(Metered).with_store(store_at(dir.path()).await);
    let paused = runner.kickoff(Keys::default()).await.unwrap();
    let later = Runner::new(Metered).with_store(store_at(dir.path()).await);
    let done = later.resume_with(paused.run_id(), true).await.unwrap().completed().unwrap();
    assert_eq!(done.usage.total_tokens, 15);
    assert_eq!(done.usage.prompt_tokens, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_recovers_every_run_a_dead_process_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Slow::default();
    let ran = slow.ran.clone();
    let store: Arc<dyn Store> = Arc::new(store_at(dir.path()).await);
    // Two runs left mid-step by a "process" that dies (its executions are dropped).
    let dying = Runner::new(slow.clone()).with_shared_store(store.clone()).lease(Duration::from_millis(150));
    tokio::select! {
        done = futures::future::join(dying.kickoff(Keys::default()), dying.kickoff(Keys::default())) => {
            panic!("the runs ended before their long steps were reached: {done:?}")
        }
        () = slow.gate.reached(2) => {}
    }
    // A finished run, which recovery must leave alone.
    let done = Runner::new(Fulfil::new(0)).with_shared_store(store.clone()).kickoff(Order::default()).await.unwrap();
    let left: Vec<Uuid> = store
        .list_runs(&RunFilter { status: Some(RunStatus::Running), ..RunFilter::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    for run_id in left {
        until_lease_lapses(store.as_ref(), run_id).await;
    }

    slow.gate.open(2);
    let worker = Worker::new(store.clone()).register(slow.clone()).register(Fulfil::new(0));
    // A run refused for its lease is recovered on the next pass (see `resume_when_free`).
    let mut recovered = Vec::new();
    for _ in 0..100 {
        let (locked, done): (Vec<_>, Vec<_>) = worker
            .recover()
            .await
            .unwrap()
            .into_iter()
            .partition(|(_, r)| matches!(r, Err(FlowError::RunLocked { .. })));
        recovered.extend(done);
        if locked.is_empty() {
            break;
        }
        for (run_id, _) in locked {
            until_lease_lapses(store.as_ref(), run_id).await;
        }
    }
    assert_eq!(recovered.len(), 2, "{recovered:?}");
    assert!(recovered.iter().all(|(_, r)| matches!(r, Ok(RunStatus::Completed))), "{recovered:?}");
    assert!(recovered.iter().all(|(id, _)| *id != done.run_id()));
    assert_eq!(ran.load(Ordering::SeqCst), 4, "each long step: once before the death, once after");
    assert!(worker.recover().await.unwrap().is_empty(), "nothing left to recover");
}
