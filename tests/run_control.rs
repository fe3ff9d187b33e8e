//! Issue 19, points 7 and 9: a failed run explains itself (its id, its state, "resume" only
//! when it can be), a compensated failure is an outcome of its own, and a run has a handle
//! (its id at once, its outcome later, its events, cancel), an idempotent kickoff under a
//! caller's id, and a state a person can edit before it is resumed. Each check runs without a
//! store where that means something, and on memory, SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code, reason = "these checks use only the test database of the shared module")]
mod pg_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_core::store::{EditNote, MemoryStore, PgStore, RunFilter, SqliteStore, Store};
use flow_core::{RunHandle, RunStatus, StartOptions};
use flow_tests::Gate;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ------------------------------------------------------------------------------ the flows

#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    address: String,
    reserved: bool,
    charged: bool,
    shipped_to: Option<String>,
}

/// Reserves, then ships to the state's address: fails while the address is empty. Counts its
/// `ship` attempts so that a test sees whether a second kickoff ran anything.
struct Ship {
    ships: Arc<AtomicU32>,
}

#[flow(state = Order, name = "run_control_ship")]
impl Ship {
    #[start]
    async fn reserve(&self, cx: &Ctx<Order>) -> Result<()> {
        cx.update(|s| s.reserved = true);
        Ok(())
    }
    #[listen(reserve)]
    async fn ship(&self, cx: &Ctx<Order>) -> Result<String> {
        self.ships.fetch_add(1, Ordering::SeqCst);
        // Its own update is discarded with its failure.
        cx.update(|s| s.charged = true);
        let address = cx.read(|s| s.address.clone());
        if address.is_empty() {
            return Err(Error::permanent("no address to ship to"));
        }
        cx.update(move |s| s.shipped_to = Some(address.clone()));
        Ok("shipped".into())
    }
}

/// Reserves and charges, both undoable, then fails to ship: the failure is compensated.
struct Saga {
    fail_refund: bool,
}

#[flow(state = Order, name = "run_control_saga")]
impl Saga {
    #[start]
    async fn reserve(&self, cx: &Ctx<Order>) -> Result<String> {
        cx.update(|s| s.reserved = true);
        Ok("R-1".into())
    }
    #[compensate(reserve)]
    async fn release(&self, cx: &Ctx<Order>, _reservation: String) -> Result<()> {
        cx.update(|s| s.reserved = false);
        Ok(())
    }
    #[listen(reserve)]
    async fn charge(&self, cx: &Ctx<Order>) -> Result<u32> {
        cx.update(|s| s.charged = true);
        Ok(42)
    }
    #[compensate(charge)]
    async fn refund(&self, cx: &Ctx<Order>, _amount: u32) -> Result<()> {
        if self.fail_refund {
            return Err(Error::permanent("the payment service refused the refund"));
        }
        cx.update(|s| s.charged = false);
        Ok(())
    }
    #[listen(charge)]
    async fn ship(&self) -> Result<()> {
        Err(Error::permanent("the carrier is on strike"))
    }
}

/// Reserves (undoably), then waits at a gate: a run to cancel, or to find leased.
struct Held {
    gate: Gate,
}

#[flow(state = Order, name = "run_control_held")]
impl Held {
    #[start]
    async fn reserve(&self, cx: &Ctx<Order>) -> Result<String> {
        cx.update(|s| s.reserved = true);
        Ok("R-2".into())
    }
    #[compensate(reserve)]
    async fn release(&self, cx: &Ctx<Order>, _reservation: String) -> Result<()> {
        cx.update(|s| s.reserved = false);
        Ok(())
    }
    #[listen(reserve)]
    async fn wait(&self) -> Result<()> {
        self.gate.pass().await;
        Ok(())
    }
}

/// Asks for a confirmation, then ships to the state's address.
struct Confirm;

#[flow(state = Order, name = "run_control_confirm")]
impl Confirm {
    #[start]
    async fn ask(&self, cx: &Ctx<Order>) -> Result<bool> {
        cx.ask::<bool>("Ship it?").await
    }
    #[listen(ask)]
    async fn ship(&self, cx: &Ctx<Order>, yes: bool) -> Result<()> {
        if yes {
            cx.update(|s| s.shipped_to = Some(s.address.clone()));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ stores

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap())
}

async fn pg(db: &pg_support::TestDb) -> Arc<dyn Store> {
    Arc::new(PgStore::from_pool(db.pool(4)).await.unwrap())
}

/// Runs `check` on memory, SQLite and PostgreSQL (when a server is there; see `pg_support`).
macro_rules! on_every_store {
    ($memory:ident, $sqlite:ident, $pg:ident, $check:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            $check(Arc::new(MemoryStore::new())).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            $check(sqlite(&dir).await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $pg() {
            let Some(db) = pg_support::database(concat!("run_control_", stringify!($pg))).await else { return };
            $check(pg(&db).await).await;
        }
    };
}

// ------------------------------------------------------------------- 7: a failed run explains itself

#[tokio::test]
async fn a_failure_without_a_store_names_its_run_and_state_and_does_not_say_resume() {
    let runner = Runner::new(Ship { ships: Arc::default() });
    let err = runner.kickoff(Order::default()).await.unwrap_err();
    let run_id = err.run_id().expect("the error names its run");
    let state: Order = err.state_as().expect("a state").unwrap();
    assert_eq!(state, Order { reserved: true, ..Order::default() }, "ship's own update is not in it");
    assert!(!err.is_resumable());
    assert!(!err.to_string().contains("resum"), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "run {run_id}: method `ship` failed on attempt 1: no address to ship to; the run was not stored (the \
             runner has no store), so nothing can take it up again: fix the cause and kick off a new run"
        )
    );
}

async fn stored_failure_says_resume(store: Arc<dyn Store>) {
    let runner = Runner::new(Ship { ships: Arc::default() }).with_shared_store(store.clone());
    let err = runner.kickoff(Order::default()).await.unwrap_err();
    let run_id = err.run_id().unwrap();
    assert!(err.is_resumable());
    assert_eq!(
        err.to_string(),
        format!(
            "run {run_id}: method `ship` failed on attempt 1: no address to ship to; fix the cause and resume the \
             run to run `ship` again"
        )
    );
    assert_eq!(err.state(), Some(&serde_json::to_value(Order { reserved: true, ..Order::default() }).unwrap()));
    assert_eq!(store.load_run(run_id).await.unwrap().status, RunStatus::Failed);
}

on_every_store!(
    a_stored_failure_says_resume_on_memory,
    a_stored_failure_says_resume_on_sqlite,
    a_stored_failure_says_resume_on_postgres,
    stored_failure_says_resume
);

#[tokio::test]
async fn a_compensated_failure_without_a_store_is_an_outcome() {
    let outcome = Runner::new(Saga { fail_refund: false }).kickoff(Order::default()).await.unwrap();
    assert_eq!(outcome.status(), RunStatus::Compensated);
    let RunOutcome::Compensated(c) = outcome else { panic!("compensated") };
    assert_eq!((c.method.as_str(), c.error.as_str()), ("ship", "the carrier is on strike"));
    assert_eq!(c.undone, ["`refund` undid `charge#1`", "`release` undid `reserve#1`"]);
    assert_eq!(c.state, Order::default(), "both undo steps ran");
}

async fn compensated_is_stored_and_listed(store: Arc<dyn Store>) {
    let runner = Runner::new(Saga { fail_refund: false }).with_shared_store(store.clone());
    let RunOutcome::Compensated(c) = runner.kickoff(Order::default()).await.unwrap() else { panic!("compensated") };
    let record = store.load_run(c.run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Compensated);
    assert_eq!(
        record.error.as_deref(),
        Some(
            "method `ship` failed (the carrier is on strike); compensation ran: `refund` undid `charge#1`; \
             `release` undid `reserve#1`"
        )
    );
    let listed =
        store.list_runs(&RunFilter { status: Some(RunStatus::Compensated), ..RunFilter::default() }).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.run_id).collect::<Vec<_>>(), [c.run_id]);
    // Ended for good: a resume reads the same outcome back, running nothing; a cancel is refused.
    let RunOutcome::Compensated(again) = runner.resume(c.run_id).await.unwrap() else { panic!("compensated") };
    assert_eq!((again.method, again.undone, again.state), (c.method, c.undone, c.state));
    let refused = runner.cancel(c.run_id, "too late").await.unwrap_err();
    assert!(matches!(refused, FlowError::InvalidStatus { status: RunStatus::Compensated, .. }), "{refused:?}");
}

on_every_store!(
    a_compensated_run_is_stored_compensated_on_memory,
    a_compensated_run_is_stored_compensated_on_sqlite,
    a_compensated_run_is_stored_compensated_on_postgres,
    compensated_is_stored_and_listed
);

#[tokio::test]
async fn a_failed_undo_step_stays_an_error_that_says_resume_only_when_stored() {
    let err = Runner::new(Saga { fail_refund: true }).kickoff(Order::default()).await.unwrap_err();
    let FlowError::Compensated { failed, resumable, .. } = &err else { panic!("{err:?}") };
    assert_eq!((*failed, *resumable), (1, false));
    assert!(
        err.to_string().ends_with("the run was not stored (the runner has no store), so undo them by hand"),
        "{err}"
    );
    let state: Order = err.state_as().unwrap().unwrap();
    assert_eq!(state, Order { charged: true, ..Order::default() }, "the reservation was released, the charge not");

    let store = MemoryStore::new();
    let err = Runner::new(Saga { fail_refund: true }).with_store(store.clone()).kickoff(Order::default()).await;
    let err = err.unwrap_err();
    assert!(err.is_resumable());
    assert!(err.to_string().ends_with("fix the cause and resume the run to try them again"), "{err}");
    assert_eq!(store.load_run(err.run_id().unwrap()).await.unwrap().status, RunStatus::Failed);
}

// ------------------------------------------------------------------- 9: a handle on a run

async fn handle_outcome_and_events(store: Option<Arc<dyn Store>>) {
    let mut runner = Runner::new(Ship { ships: Arc::default() });
    if let Some(store) = store {
        runner = runner.with_shared_store(store);
    }
    let handle = runner.start(Order { address: "1 Main St".into(), ..Order::default() }).await.unwrap();
    let run_id = handle.id();
    assert!(!handle.is_existing());
    let events = handle.events();
    let run = handle.outcome().await.unwrap().completed().unwrap();
    assert_eq!((run.run_id, run.state.shipped_to.as_deref()), (run_id, Some("1 Main St")));
    let seen: Vec<String> = events
        .filter_map(|e| async move {
            match e {
                FlowEvent::RunStarted { .. } => Some("run started".to_string()),
                FlowEvent::MethodFinished { method, .. } => Some(format!("{method} finished")),
                FlowEvent::RunFinished { status, .. } => Some(format!("run {status}")),
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(seen, ["run started", "reserve finished", "ship finished", "run completed"]);
}

#[tokio::test]
async fn a_handle_gives_the_id_at_once_then_the_outcome_and_events_without_a_store() {
    handle_outcome_and_events(None).await;
}

on_every_store!(
    a_handle_gives_the_outcome_and_events_on_memory,
    a_handle_gives_the_outcome_and_events_on_sqlite,
    a_handle_gives_the_outcome_and_events_on_postgres,
    handle_with_store
);

async fn handle_with_store(store: Arc<dyn Store>) {
    handle_outcome_and_events(Some(store.clone())).await;
    handle_cancels(Some(store)).await;
}

/// Starts `Held`, waits until its `wait` step is at the gate, cancels through the handle.
async fn handle_cancels(store: Option<Arc<dyn Store>>) {
    let gate = Gate::new();
    let mut runner = Runner::new(Held { gate: gate.clone() });
    if let Some(store) = &store {
        runner = runner.with_shared_store(store.clone());
    }
    let handle: RunHandle<Order> = runner.start(Order::default()).await.unwrap();
    gate.reached(1).await;
    if let Some(store) = &store {
        // Held by this runner: a person cannot edit its state now.
        let refused = runner.update_state(handle.id(), "alice", "too early", |s| s.reserved = false).await;
        assert!(matches!(refused, Err(FlowError::RunLocked { .. })), "{refused:?}");
        assert_eq!(store.load_run(handle.id()).await.unwrap().status, RunStatus::Running);
    }
    handle.cancel("the customer changed their mind").await.unwrap();
    let run_id = handle.id();
    let err = handle.outcome().await.unwrap_err();
    let FlowError::Cancelled { reason, compensation, .. } = &err else { panic!("{err:?}") };
    assert_eq!(reason, "the customer changed their mind");
    assert_eq!(compensation, "compensation ran: `release` undid `reserve#1`");
    let state: Order = err.state_as().unwrap().unwrap();
    assert!(!state.reserved, "the undo step ran");
    if let Some(store) = &store {
        assert_eq!(store.load_run(run_id).await.unwrap().status, RunStatus::Cancelled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_cancels_with_compensation_without_a_store() {
    handle_cancels(None).await;
}

async fn idempotent_kickoff(store: Arc<dyn Store>) {
    let ships = Arc::new(AtomicU32::new(0));
    let runner = Runner::new(Ship { ships: ships.clone() }).with_shared_store(store.clone());
    // A completed run: the second kickoff returns its stored result, running nothing.
    let id = Uuid::now_v7();
    let to = |address: &str| Order { address: address.into(), ..Order::default() };
    let first = runner.kickoff_with_id(id, to("1 Main St")).await.unwrap().completed().unwrap();
    let again = runner.kickoff_with_id(id, to("2 Other St")).await.unwrap().completed().unwrap();
    assert_eq!(first.run_id, id);
    assert_eq!((again.run_id, again.state.shipped_to.as_deref()), (id, Some("1 Main St")));
    assert_eq!(again.output::<String>().unwrap(), "shipped");
    assert_eq!(ships.load(Ordering::SeqCst), 1, "ship ran once");
    // A failed run: the second kickoff returns the error it failed with, running nothing.
    let failed_id = Uuid::now_v7();
    let err = runner.kickoff_with_id(failed_id, Order::default()).await.unwrap_err();
    let again = runner.kickoff_with_id(failed_id, to("3 New St")).await.unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(again.state(), err.state());
    assert_eq!(ships.load(Ordering::SeqCst), 2, "the failed ship did not run again");
    // A handle with the same id is on the existing run.
    let handle = runner.start_with(to("4 St"), StartOptions::new().run_id(id)).await.unwrap();
    assert!(handle.is_existing());
    assert_eq!(handle.outcome().await.unwrap().completed().unwrap().state.shipped_to.as_deref(), Some("1 Main St"));
    let filter = RunFilter { flow: Some("run_control_ship".into()), ..RunFilter::default() };
    assert_eq!(store.list_runs(&filter).await.unwrap().len(), 2, "two ids, two runs");
    // An id another flow holds is refused.
    let other = Runner::new(Confirm).with_shared_store(store.clone());
    let taken = other.kickoff_with_id(id, Order::default()).await.unwrap_err();
    assert!(
        matches!(&taken, FlowError::DuplicateRunId { existing_flow, .. } if existing_flow == "run_control_ship"),
        "{taken:?}"
    );
    // A paused run: the second kickoff returns its pause.
    let paused_id = Uuid::now_v7();
    let RunOutcome::Paused(p) = other.kickoff_with_id(paused_id, Order::default()).await.unwrap() else {
        panic!("paused")
    };
    let RunOutcome::Paused(again) = other.kickoff_with_id(paused_id, to("x")).await.unwrap() else { panic!("paused") };
    assert_eq!((again.run_id, again.request.step_key.clone()), (paused_id, p.request.step_key));
}

on_every_store!(
    a_second_kickoff_with_an_id_returns_the_existing_run_on_memory,
    a_second_kickoff_with_an_id_returns_the_existing_run_on_sqlite,
    a_second_kickoff_with_an_id_returns_the_existing_run_on_postgres,
    idempotent_kickoff
);

async fn editing_state(store: Arc<dyn Store>) {
    // A failed run: the edit fixes what failed it, the resume goes on from the edited state.
    let runner = Runner::new(Ship { ships: Arc::default() }).with_shared_store(store.clone());
    let run_id = runner.kickoff(Order::default()).await.unwrap_err().run_id().unwrap();
    let seq = runner
        .update_state(run_id, "alice@example.com", "the customer phoned in the address", |s| {
            s.address = "1 Main St".into();
        })
        .await
        .unwrap();
    let history = store.checkpoints(run_id).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!((last.seq, last.status), (seq, RunStatus::Failed));
    let note = EditNote { author: "alice@example.com".into(), reason: "the customer phoned in the address".into() };
    assert_eq!(last.edit.as_ref(), Some(&note));
    assert_eq!(history.iter().filter(|c| c.edit.is_some()).count(), 1, "{history:?}");
    let done = runner.resume(run_id).await.unwrap().completed().unwrap();
    let shipped =
        Order { address: "1 Main St".into(), reserved: true, charged: true, shipped_to: Some("1 Main St".into()) };
    assert_eq!(done.state, shipped);
    // Completed: no more edits.
    let refused = runner.update_state(run_id, "bob", "late", |s| s.address.clear()).await.unwrap_err();
    assert!(matches!(refused, FlowError::InvalidStatus { status: RunStatus::Completed, .. }), "{refused:?}");

    // A paused run: edited while it waits, answered, goes on with the edit.
    let confirm = Runner::new(Confirm).with_shared_store(store.clone());
    let RunOutcome::Paused(p) = confirm.kickoff(Order::default()).await.unwrap() else { panic!("paused") };
    confirm.update_state(p.run_id, "carol", "address corrected", |s| s.address = "9 Elm St".into()).await.unwrap();
    assert_eq!(store.load_run(p.run_id).await.unwrap().status, RunStatus::Paused, "still waiting for its answer");
    let done = confirm.resume_with(p.run_id, true).await.unwrap().completed().unwrap();
    assert_eq!(done.state.shipped_to.as_deref(), Some("9 Elm St"));
}

on_every_store!(
    a_paused_or_failed_runs_state_is_edited_as_a_checkpoint_of_its_own_on_memory,
    a_paused_or_failed_runs_state_is_edited_as_a_checkpoint_of_its_own_on_sqlite,
    a_paused_or_failed_runs_state_is_edited_as_a_checkpoint_of_its_own_on_postgres,
    editing_state
);

#[tokio::test]
async fn editing_needs_a_store() {
    let runner = Runner::new(Confirm);
    let err = runner.update_state(Uuid::now_v7(), "a", "b", |_| {}).await.unwrap_err();
    assert!(matches!(err, FlowError::NoStore { .. }), "{err:?}");
}
