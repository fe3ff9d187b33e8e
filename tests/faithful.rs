//! What JSON cannot hold faithfully (a NaN or infinite float, a map key that is not a string or
//! a number) is refused at the step that produced it, naming the field; nothing is stored that
//! cannot be read back, and the run resumes once the flow is fixed.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flow_core::RunStatus;
use flow_core::error::UnfaithfulValue;
use flow_core::prelude::*;
use flow_core::store::{MemoryStore, RunFilter, SqliteStore, StepStatus, Store};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

async fn store_at(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.join("runs.db")).await.unwrap())
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Cell {
    x: u8,
    y: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Item {
    sku: String,
    price: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Quote {
    items: Vec<Item>,
    prices: BTreeMap<String, f64>,
    by_pair: HashMap<(u8, u8), u32>,
    by_cell: BTreeMap<Cell, u32>,
    total: f64,
}

/// What the flow gets wrong, and where.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bug {
    None,
    NanPriceInMap,
    InfinitePriceInList,
    TupleKey,
    StructKey,
    /// In the run's last step, whose completion is recorded by the run's final checkpoint.
    NanTotal,
    NanInOutput,
    NanInEffect,
}

struct Pricing {
    bug: Bug,
    /// Times each step ran: load, price, total.
    runs: Arc<[AtomicU32; 3]>,
}

impl Pricing {
    fn new(bug: Bug) -> Self {
        Pricing { bug, runs: Arc::default() }
    }

    fn counts(&self) -> Arc<[AtomicU32; 3]> {
        Arc::clone(&self.runs)
    }
}

fn counts(runs: &[AtomicU32; 3]) -> [u32; 3] {
    [0, 1, 2].map(|i| runs[i].load(Ordering::SeqCst))
}

#[flow(state = Quote, name = "faithful_pricing")]
impl Pricing {
    #[start]
    async fn load(&self, cx: &Ctx<Quote>) -> Result<()> {
        self.runs[0].fetch_add(1, Ordering::SeqCst);
        cx.update(|s| {
            s.items = vec![Item { sku: "a".into(), price: 1.5 }, Item { sku: "b".into(), price: 2.5 }];
            s.prices.insert("a".into(), 1.5);
        });
        Ok(())
    }

    #[listen(load)]
    async fn price(&self, cx: &Ctx<Quote>) -> Result<Vec<Item>> {
        self.runs[1].fetch_add(1, Ordering::SeqCst);
        let bug = self.bug;
        let b = if bug == Bug::NanPriceInMap { f64::NAN } else { 2.5 };
        cx.update(move |s| {
            s.prices.insert("b".into(), b);
            match bug {
                Bug::InfinitePriceInList => s.items[1].price = f64::INFINITY,
                Bug::TupleKey => {
                    s.by_pair.insert((3, 4), 1);
                }
                Bug::StructKey => {
                    s.by_cell.insert(Cell { x: 3, y: 4 }, 1);
                }
                _ => {}
            }
        });
        if bug == Bug::NanInEffect {
            let _: f64 = cx.effect("fetch_rate", |_key| async { Ok(f64::NAN) }).await?;
        }
        // Built afresh rather than read from the state, so that only `NanInOutput` reaches it.
        let mut items = vec![Item { sku: "a".into(), price: 1.5 }, Item { sku: "b".into(), price: 2.5 }];
        if bug == Bug::NanInOutput {
            items[1].price = f64::NAN;
        }
        Ok(items)
    }

    #[listen(price)]
    async fn total(&self, cx: &Ctx<Quote>, items: Vec<Item>) -> Result<f64> {
        self.runs[2].fetch_add(1, Ordering::SeqCst);
        let total = if self.bug == Bug::NanTotal { f64::NAN } else { items.iter().map(|i| i.price).sum() };
        cx.update(move |s| s.total = total);
        Ok(4.0)
    }
}

/// Runs `bug` on a fresh store and returns the error, the run and the store.
async fn run_with(bug: Bug, store: Arc<dyn Store>) -> (FlowError, Uuid, Arc<[AtomicU32; 3]>) {
    let flow = Pricing::new(bug);
    let runs = flow.counts();
    let err = Runner::new(flow).with_shared_store(store.clone()).kickoff(Quote::default()).await.unwrap_err();
    let run_id = store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;
    (err, run_id, runs)
}

/// The stored run is failed at a checkpoint that decodes, the step's row says why, and a fixed
/// flow resumes it to completion without running `load` again.
async fn assert_resumable(store: Arc<dyn Store>, run_id: Uuid, failed_step: &str, first_runs: [u32; 3]) {
    let record = store.load_run(run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let stored: Quote = record.snapshot.state_as().expect("the latest checkpoint reads back");
    assert!(stored.prices.values().all(|p| p.is_finite()), "{stored:?}");
    assert!(stored.total.is_finite(), "{stored:?}");
    let steps = store.steps(run_id).await.unwrap();
    let row = steps.iter().find(|s| s.step_key == failed_step).unwrap_or_else(|| panic!("{steps:?}"));
    assert_eq!(row.status, StepStatus::Failed);
    assert!(row.error.as_deref().unwrap_or_default().contains("cannot hold faithfully"), "{row:?}");

    let fixed = Pricing::new(Bug::None);
    let runs = fixed.counts();
    let run = Runner::new(fixed).with_shared_store(store.clone()).resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(run.state.prices, BTreeMap::from([("a".into(), 1.5), ("b".into(), 2.5)]));
    assert_eq!(run.state.total, 4.0);
    assert_eq!(run.output::<f64>().unwrap(), 4.0);
    let again = counts(&runs);
    assert_eq!(again[0], 0, "load completed before the refused step and must not run again");
    assert_eq!(again[2], 1);
    assert_eq!(first_runs[0], 1);
    assert_eq!(store.load_run(run_id).await.unwrap().status, RunStatus::Completed);
}

#[tokio::test]
async fn a_nan_in_the_state_fails_the_step_naming_the_field_and_the_run_resumes_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let (err, run_id, runs) = run_with(Bug::NanPriceInMap, store.clone()).await;
    let FlowError::Unfaithful { run_id: id, method, path, value, run_stored, .. } = &err else { panic!("{err:?}") };
    assert!(run_stored);
    assert_eq!(
        (*id, method.as_deref(), path.as_str(), *value),
        (run_id, Some("price"), "prices.b", UnfaithfulValue::NaN)
    );
    let text = err.to_string();
    for needle in [&run_id.to_string(), "price#1", "prices.b", "NaN", "Option<f64>", "resume"] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
    assert_eq!(counts(&runs), [1, 1, 0], "nothing after the refused step ran");
    assert_resumable(store, run_id, "price#1", counts(&runs)).await;
}

#[tokio::test]
async fn an_infinity_in_a_list_is_refused_with_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let (err, run_id, runs) = run_with(Bug::InfinitePriceInList, store.clone()).await;
    let FlowError::Unfaithful { path, value, .. } = &err else { panic!("{err:?}") };
    assert_eq!((path.as_str(), *value), ("items[1].price", UnfaithfulValue::Infinity));
    assert_resumable(store, run_id, "price#1", counts(&runs)).await;
}

#[tokio::test]
async fn map_keys_that_json_cannot_hold_are_refused_naming_the_map() {
    for (bug, path, what) in [(Bug::TupleKey, "by_pair", "a tuple"), (Bug::StructKey, "by_cell", "a struct")] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (err, run_id, runs) = run_with(bug, store.clone()).await;
        let FlowError::Unfaithful { path: found, value, .. } = &err else { panic!("{err:?}") };
        assert_eq!((found.as_str(), *value), (path, UnfaithfulValue::Key(what)), "{bug:?}");
        assert!(err.to_string().contains("string"), "{err}");
        assert_resumable(store, run_id, "price#1", counts(&runs)).await;
    }
}

#[tokio::test]
async fn a_nan_left_by_the_last_step_never_reports_the_run_completed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let (err, run_id, runs) = run_with(Bug::NanTotal, store.clone()).await;
    let FlowError::Unfaithful { method, path, .. } = &err else { panic!("{err:?}") };
    assert_eq!((method.as_deref(), path.as_str()), (Some("total"), "total"));
    assert_eq!(counts(&runs), [1, 1, 1]);
    assert_resumable(store, run_id, "total#1", counts(&runs)).await;
}

#[tokio::test]
async fn a_nan_in_a_step_output_fails_the_step_without_applying_its_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let (err, run_id, runs) = run_with(Bug::NanInOutput, store.clone()).await;
    let FlowError::MethodFailed { method, message, class, .. } = &err else { panic!("{err:?}") };
    assert_eq!(method, "price");
    assert_eq!(*class, ErrorClass::Permanent, "the same code gives the same NaN: retrying cannot help");
    assert!(message.contains("its output holds NaN at `[1].price`"), "{message}");
    assert_eq!(counts(&runs), [1, 1, 0], "the listener never got the output");
    let stored: Quote = store.load_run(run_id).await.unwrap().snapshot.state_as().unwrap();
    assert!(!stored.prices.contains_key("b"), "the failed step's update is not applied: {stored:?}");
    assert_resumable(store, run_id, "price#1", counts(&runs)).await;
}

#[tokio::test]
async fn a_nan_effect_result_is_not_journaled_and_fails_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let (err, run_id, runs) = run_with(Bug::NanInEffect, store.clone()).await;
    let FlowError::MethodFailed { method, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(method, "price");
    assert!(message.contains("the result of effect `fetch_rate` holds NaN"), "{message}");
    assert_eq!(store.journal_get(run_id, "price#1", 0).await.unwrap(), None, "nothing unreadable is journaled");
    assert_resumable(store, run_id, "price#1", counts(&runs)).await;
}

#[tokio::test]
async fn a_nan_in_the_kickoff_state_is_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path()).await;
    let flow = Pricing::new(Bug::None);
    let runs = flow.counts();
    let state = Quote { prices: BTreeMap::from([("a".into(), f64::NEG_INFINITY)]), ..Quote::default() };
    let err = Runner::new(flow).with_shared_store(store.clone()).kickoff(state).await.unwrap_err();
    let FlowError::Unfaithful { method, path, value, run_stored, .. } = &err else { panic!("{err:?}") };
    assert_eq!((method.as_deref(), path.as_str(), *value), (None, "prices.a", UnfaithfulValue::NegativeInfinity));
    assert!(!run_stored);
    assert!(err.to_string().contains("nothing was stored"), "{err}");
    assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap(), [], "no run was created");
    assert_eq!(counts(&runs), [0, 0, 0]);
}
