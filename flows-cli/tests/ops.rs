//! `flows_cli::ops` against a SQLite file that a `Worker` serves, as the dashboard and the
//! `flows` binary use them: a cancel compensates a paused run and a running one and ends them
//! cancelled, a retried run completes, and an answer is checked against the schema its
//! question stored before anything is written.

mod pause_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{RunStatus, SqliteStore, StepStatus, Store};
use flow_core::{ServeOptions, Serving, Worker};
use flows_cli::ops::{self, CancelOptions, OpError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Trip {
    booked: bool,
    released: bool,
    charged: bool,
    confirmed: Option<bool>,
}

/// Books, then asks for a confirmation: a run that pauses with a completed step to undo.
struct Ask {
    undone: Arc<AtomicUsize>,
}

#[flow(state = Trip, name = "ops_ask")]
impl Ask {
    #[start]
    async fn book(&self, cx: &Ctx<Trip>) -> Result<String> {
        cx.update(|s| s.booked = true);
        Ok("room 7".into())
    }

    #[compensate(book)]
    async fn release(&self, cx: &Ctx<Trip>, room: String) -> Result<()> {
        assert_eq!(room, "room 7");
        self.undone.fetch_add(1, Ordering::SeqCst);
        cx.update(|s| s.released = true);
        Ok(())
    }

    #[listen(book)]
    async fn confirm(&self, cx: &Ctx<Trip>) -> Result<()> {
        let yes: bool = cx.ask(InputRequest::new("Confirm the trip?")).await?;
        cx.update(move |s| s.confirmed = Some(yes));
        Ok(())
    }
}

/// Books, then waits in a step that never ends by itself: a run that is running when cancelled.
struct Hang {
    undone: Arc<AtomicUsize>,
    waiting: Arc<Notify>,
}

#[flow(state = Trip, name = "ops_hang")]
impl Hang {
    #[start]
    async fn book(&self, cx: &Ctx<Trip>) -> Result<String> {
        cx.update(|s| s.booked = true);
        Ok("room 9".into())
    }

    #[compensate(book)]
    async fn release(&self, cx: &Ctx<Trip>, _room: String) -> Result<()> {
        self.undone.fetch_add(1, Ordering::SeqCst);
        cx.update(|s| s.released = true);
        Ok(())
    }

    #[listen(book)]
    async fn wait(&self, _cx: &Ctx<Trip>) -> Result<()> {
        self.waiting.notify_one();
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// Charges, failing for good while `failures` lasts: a run that fails and succeeds when retried.
struct Flaky {
    failures: Arc<AtomicUsize>,
}

#[flow(state = Trip, name = "ops_flaky")]
impl Flaky {
    #[start]
    async fn charge(&self, cx: &Ctx<Trip>) -> Result<()> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(Error::permanent("card declined"));
        }
        cx.update(|s| s.charged = true);
        Ok(())
    }
}

async fn store_at(path: &Path) -> std::result::Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    Ok(Arc::new(SqliteStore::open(path).await?))
}

fn serve(worker: Worker) -> Serving {
    worker.serve(ServeOptions::new().lease(Duration::from_millis(300)).poll_interval(Duration::from_millis(20)))
}

/// Waits until the run is in `status` (a minute at most, so a broken build fails rather than
/// hangs).
async fn until(store: &dyn Store, run_id: Uuid, status: RunStatus) -> TestResult {
    for _ in 0..6_000 {
        if store.load_run(run_id).await?.status == status {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("run {run_id} never became {status}: it is {}", store.load_run(run_id).await?.status).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_paused_run_is_compensated_by_a_worker_and_ends_cancelled() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = store_at(&dir.path().join("runs.db")).await?;
    let undone = Arc::new(AtomicUsize::new(0));
    let runner = Runner::new(Ask { undone: undone.clone() }).with_shared_store(store.clone());
    let serving = serve(Worker::new(store.clone()).register(Ask { undone: undone.clone() }));
    let run_id = runner.submit(Trip::default()).await?;
    until(store.as_ref(), run_id, RunStatus::Paused).await?;

    let cancel = ops::cancel(store.as_ref(), run_id, CancelOptions::new("trip called off")).await?;
    assert_eq!((cancel.was, cancel.compensate), (RunStatus::Paused, true));
    until(store.as_ref(), run_id, RunStatus::Cancelled).await?;
    serving.shutdown(Duration::from_secs(5)).await;

    assert_eq!(undone.load(Ordering::SeqCst), 1, "the booking was released once");
    let run = store.load_run(run_id).await?;
    let state: Trip = run.snapshot.state_as()?;
    assert!(state.booked && state.released && state.confirmed.is_none(), "{state:?}");
    assert_eq!(run.cancel_requested.as_deref(), Some("trip called off"));
    let error = run.error.unwrap_or_default();
    assert!(error.contains("trip called off") && error.contains("`release` undid `book#1`"), "{error}");
    let steps = store.steps(run_id).await?;
    assert!(steps.iter().any(|s| s.method == "release" && s.status == StepStatus::Compensated), "{steps:?}");
    assert!(steps.iter().all(|s| s.method != "confirm" || s.status != StepStatus::Completed));

    // Ended: nothing more to cancel, answer or resume.
    let again = ops::cancel(store.as_ref(), run_id, CancelOptions::new("twice")).await;
    assert!(matches!(again, Err(OpError::Ended { status: RunStatus::Cancelled, .. })), "{again:?}");
    assert!(matches!(ops::answer(store.as_ref(), run_id, json!(true)).await, Err(OpError::NotPaused { .. })));
    assert!(matches!(runner.resume(run_id).await, Err(FlowError::InvalidStatus { .. })));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_run_stops_its_steps_compensates_and_ends_cancelled() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = store_at(&dir.path().join("runs.db")).await?;
    let undone = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(Notify::new());
    let flow = || Hang { undone: undone.clone(), waiting: waiting.clone() };
    let runner = Runner::new(flow()).with_shared_store(store.clone());
    let serving = serve(Worker::new(store.clone()).register(flow()));
    let run_id = runner.submit(Trip::default()).await?;
    waiting.notified().await;
    assert_eq!(store.load_run(run_id).await?.status, RunStatus::Running);

    let cancel = ops::cancel(store.as_ref(), run_id, CancelOptions::new("stuck")).await?;
    assert_eq!(cancel.status, RunStatus::Running, "its worker learns of it at its next renewal");
    until(store.as_ref(), run_id, RunStatus::Cancelled).await?;
    let summary = serving.shutdown(Duration::from_secs(5)).await;
    assert!(summary.lost.is_empty() && summary.released.is_empty(), "{summary:?}");

    assert_eq!(undone.load(Ordering::SeqCst), 1);
    let run = store.load_run(run_id).await?;
    assert!(run.snapshot.state_as::<Trip>()?.released);
    assert_eq!((run.lease_owner, run.lease_expires_at_ms), (None, None), "the lease is given back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_cancel_compensates_a_paused_run_in_process() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = store_at(&dir.path().join("runs.db")).await?;
    let undone = Arc::new(AtomicUsize::new(0));
    let runner = Runner::new(Ask { undone: undone.clone() }).with_shared_store(store.clone());
    let run_id = runner.kickoff(Trip::default()).await?.run_id();
    assert_eq!(runner.cancel(run_id, "not needed").await?, RunStatus::Cancelled);
    assert_eq!(undone.load(Ordering::SeqCst), 1);
    assert_eq!(store.load_run(run_id).await?.status, RunStatus::Cancelled);
    assert!(matches!(runner.cancel(run_id, "again").await, Err(FlowError::InvalidStatus { .. })));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_without_compensation_ends_a_run_at_rest_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = store_at(&dir.path().join("runs.db")).await?;
    let undone = Arc::new(AtomicUsize::new(0));
    let runner = Runner::new(Ask { undone: undone.clone() }).with_shared_store(store.clone());
    let run_id = runner.kickoff(Trip::default()).await?.run_id();
    let cancel = ops::cancel(store.as_ref(), run_id, CancelOptions::new("test run").no_compensate()).await?;
    assert_eq!(cancel.status, RunStatus::Cancelled);
    let run = store.load_run(run_id).await?;
    assert_eq!((run.status, run.lease_owner), (RunStatus::Cancelled, None));
    assert!(run.error.unwrap_or_default().contains("without compensation: test run"));
    assert_eq!(undone.load(Ordering::SeqCst), 0, "nothing was undone");

    // One being executed is refused, and left running.
    let held = Runner::new(Ask { undone }).with_shared_store(store.clone()).kickoff(Trip::default()).await?.run_id();
    let claim = store.claim(held, "busy-worker", Duration::from_secs(60)).await?;
    let refused = ops::cancel(store.as_ref(), held, CancelOptions::new("x").no_compensate()).await;
    match refused {
        Err(e @ OpError::Executing { .. }) => assert!(e.to_string().contains("busy-worker"), "{e}"),
        other => return Err(format!("expected Executing, got {other:?}").into()),
    }
    store.release(held, claim.epoch).await?;
    assert_eq!(store.load_run(held).await?.status, RunStatus::Paused);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_runs_its_failed_step_again_and_completes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = store_at(&dir.path().join("runs.db")).await?;
    let failures = Arc::new(AtomicUsize::new(1));
    let runner = Runner::new(Flaky { failures: failures.clone() }).with_shared_store(store.clone());
    let serving = serve(Worker::new(store.clone()).register(Flaky { failures: failures.clone() }));
    let run_id = runner.submit(Trip::default()).await?;
    until(store.as_ref(), run_id, RunStatus::Failed).await?;

    let retry = ops::retry(store.as_ref(), run_id).await?;
    assert_eq!(retry.failed_steps, ["charge#1"]);
    until(store.as_ref(), run_id, RunStatus::Completed).await?;
    serving.shutdown(Duration::from_secs(5)).await;
    assert!(store.load_run(run_id).await?.snapshot.state_as::<Trip>()?.charged);

    let again = ops::retry(store.as_ref(), run_id).await;
    assert!(matches!(again, Err(OpError::NotFailed { status: RunStatus::Completed, .. })), "{again:?}");
    Ok(())
}

/// Pages over several statuses at once make the whole listing, each run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_over_several_statuses_make_the_whole_listing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = store_at(&dir.path().join("runs.db")).await?;
    let asking = Runner::new(Ask { undone: Arc::default() }).with_shared_store(store.clone());
    let flaky = Runner::new(Flaky { failures: Arc::new(AtomicUsize::new(2)) }).with_shared_store(store.clone());
    let mut expected = Vec::new();
    for _ in 0..3 {
        expected.push(asking.kickoff(Trip::default()).await?.run_id());
        expected.push(flaky.submit(Trip::default()).await?);
    }
    let statuses = [RunStatus::Paused, RunStatus::Queued];
    let whole = ops::page(store.as_ref(), &statuses, flow_core::store::RunFilter::default(), 0).await?;
    assert!(whole.next.is_none());
    let mut sorted = expected.clone();
    sorted.sort();
    let mut listed: Vec<Uuid> = whole.runs.iter().map(|r| r.run_id).collect();
    listed.sort();
    assert_eq!(listed, sorted);
    let mut paged = Vec::new();
    let mut filter = flow_core::store::RunFilter::default();
    loop {
        let page = ops::page(store.as_ref(), &statuses, filter.clone(), 4).await?;
        assert!(page.runs.len() <= 4);
        paged.extend(page.runs.iter().map(|r| r.run_id));
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, whole.runs.iter().map(|r| r.run_id).collect::<Vec<_>>());
    Ok(())
}

/// The same through the `flows` binary, another process than the worker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_retry_hands_a_failed_run_to_a_serving_worker() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runs.db");
    let store = store_at(&path).await?;
    let failures = Arc::new(AtomicUsize::new(1));
    let runner = Runner::new(Flaky { failures: failures.clone() }).with_shared_store(store.clone());
    let serving = serve(Worker::new(store.clone()).register(Flaky { failures }));
    let run_id = runner.submit(Trip::default()).await?;
    until(store.as_ref(), run_id, RunStatus::Failed).await?;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flows"))
        .env_remove("FLOWS_DB")
        .env_remove("DATABASE_URL")
        .arg("--db")
        .arg(&path)
        .args(["retry", &run_id.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text} / {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("`charge#1` again"), "{text}");
    until(store.as_ref(), run_id, RunStatus::Completed).await?;
    serving.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_checked_against_the_stored_schema_before_it_is_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = store_at(&dir.path().join("runs.db")).await?;
    let runner = Runner::new(Ask { undone: Arc::default() }).with_shared_store(store.clone());
    // The question as this build stores it: with the schema of the asked type (`bool`).
    let current = runner.kickoff(Trip::default()).await?.run_id();
    let stored = store.load_run(current).await?.pause.ok_or("a paused run has its question")?;
    assert_eq!(stored["answer_schema"]["type"], "boolean", "{stored}");
    match ops::answer(store.as_ref(), current, json!("anything")).await {
        Err(OpError::InvalidAnswer { violations, .. }) => assert_eq!(violations[0].pointer, "", "{violations:?}"),
        other => return Err(format!("expected InvalidAnswer, got {other:?}").into()),
    }
    assert!(ops::answer(store.as_ref(), current, json!(true)).await?.validated);

    // A question stored without a schema (an older build's): any JSON is taken, and said so.
    let old = runner.kickoff(Trip::default()).await?.run_id();
    pause_support::rewrite_pause(store.as_ref(), old, |pause| {
        pause.as_object_mut().map(|p| p.remove("answer_schema"));
    })
    .await?;
    let unchecked = ops::answer(store.as_ref(), old, json!("anything")).await?;
    assert!(!unchecked.validated);
    assert_eq!(store.load_run(old).await?.status, RunStatus::Queued);

    // A question paused with a schema of an object, as the flow's answer type would give;
    // rewritten here under a lease of the test's own.
    let run_id = runner.kickoff(Trip::default()).await?.run_id();
    pause_support::rewrite_pause(store.as_ref(), run_id, |pause| {
        pause["answer_schema"] = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": { "approve": { "type": "boolean" }, "nights": { "type": "integer", "minimum": 1 } },
            "required": ["approve", "nights"]
        });
    })
    .await?;

    match ops::answer(store.as_ref(), run_id, json!({ "approve": "yes", "nights": 0 })).await {
        Err(OpError::InvalidAnswer { run_id: id, step_key, violations }) => {
            assert_eq!((id, step_key.as_str()), (run_id, "confirm#1"));
            let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
            assert!(pointers.contains(&"/approve") && pointers.contains(&"/nights"), "{violations:?}");
        }
        other => return Err(format!("expected InvalidAnswer, got {other:?}").into()),
    }
    let still = store.load_run(run_id).await?;
    assert_eq!((still.status, still.answer), (RunStatus::Paused, None), "nothing was written");

    let answered = ops::answer(store.as_ref(), run_id, json!({ "approve": true, "nights": 2 })).await?;
    assert!(answered.validated);
    let queued = store.load_run(run_id).await?;
    assert_eq!(queued.status, RunStatus::Queued);
    assert_eq!(queued.answer.map(|a| a.value), Some(json!({ "approve": true, "nights": 2 })));
    Ok(())
}

/// `flows memory forget` erases a customer's memories in every scope (and only theirs), by scope
/// and by record; it asks first, and without a terminal to ask on does nothing unless --yes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_memory_forget_erases_what_it_is_told_and_asks_first() -> TestResult {
    use flow_core::memory::{MemoryRecord, MemorySearch, Weights};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runs.db");
    let store = store_at(&path).await?;
    let keep = |id: &str, scope: &str, metadata: serde_json::Value| MemoryRecord {
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        ..MemoryRecord::new(id, scope, format!("note {id}"), vec![1.0, 0.0])
    };
    for record in [
        keep("a1", "company/acme", json!({ "customer": "acme" })),
        keep("a2", "supplier/globex", json!({ "customer": "acme", "tier": 3 })),
        keep("g1", "supplier/globex", json!({ "customer": "globex", "tier": "3" })),
        keep("g2", "company/globex", json!({ "customer": "globex" })),
        keep("g3", "company/globex/eu", json!({ "customer": "globex" })),
    ] {
        store.memory_put(record).await?;
    }
    let ids = async |scope: &str| -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let search = MemorySearch {
            scope: scope.into(),
            query: String::new(),
            subscopes: true,
            filter: Default::default(),
            embedding: vec![1.0, 0.0],
            k: 10,
            weights: Weights::default(),
            now_ms: 0,
        };
        let mut ids: Vec<String> = store.memory_search(&search).await?.into_iter().map(|r| r.id).collect();
        ids.sort();
        Ok(ids)
    };
    let flows = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flows"))
            .env_remove("FLOWS_DB")
            .env_remove("DATABASE_URL")
            .arg("--db")
            .arg(&path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
    };

    // No terminal to ask on, no --yes: nothing is erased.
    let out = flows(&["memory", "forget", "--matching", "customer=acme"])?;
    assert_eq!(out.status.code(), Some(8), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"every memory whose metadata has {"customer":"acme"}"#));
    assert_eq!(ids("supplier").await?, ["a2", "g1"]);

    // A value that is JSON is matched as JSON: tier=3 is the number, not g1's string "3".
    let out = flows(&["--json", "memory", "forget", "--matching", "tier=3", "--yes"])?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(body["forgotten"], 1, "{body}");
    assert_eq!(ids("supplier").await?, ["g1"]);

    let out = flows(&["memory", "forget", "--matching", "customer=acme", "--yes"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("forgot 1 memory record: "), "{text}");
    assert_eq!(ids("company").await?, ["g2", "g3"]);

    let out = flows(&["memory", "forget", "--scope", "company/globex", "-y"])?;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("forgot 2 memory records"));
    assert!(ids("company").await?.is_empty());
    let out = flows(&["memory", "forget", "--record", "g1", "-y"])?;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("forgot 1 memory record"));
    assert!(ids("supplier").await?.is_empty());

    // Nothing said to forget, or a record with a scope: usage errors, exit code 1.
    for args in [&["memory", "forget", "--yes"][..], &["memory", "forget", "--record", "x", "--scope", "y"]] {
        let out = flows(args)?;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = flows(&["memory", "forget", "--matching", "customer"])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not KEY=VALUE"));
    Ok(())
}
