//! Start again from a stored run (issue 19, point 5): a new run whose initial state is a stored
//! run's final state, or any checkpoint's, runs the starts again and records the run it came
//! from; and a start that also listens runs at kickoff and again each time its route fires, so
//! a flow made only of a loop needs no start of its own.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use flow_core::prelude::*;
use flow_core::store::{MemoryStore, Store};
use flow_core::{RunStatus, plot};
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Visits {
    count: u32,
    log: Vec<String>,
}

struct Visit;

#[flow(state = Visits, name = "restart_visit")]
impl Visit {
    #[start]
    async fn visit(&self, cx: &Ctx<Visits>) -> Result<u32> {
        cx.update(|s| s.count += 1);
        Ok(cx.read(|s| s.count))
    }

    #[listen(visit)]
    async fn note(&self, cx: &Ctx<Visits>, count: u32) -> Result<()> {
        cx.update(move |s| s.log.push(format!("visit {count}")));
        Ok(())
    }
}

#[tokio::test]
async fn a_restart_begins_from_the_final_state_runs_the_starts_again_and_names_its_parent() {
    let store = Arc::new(MemoryStore::new());
    let runner = Runner::new(Visit).with_shared_store(store.clone());
    let first = runner.kickoff(Visits::default()).await.unwrap().completed().unwrap();
    assert_eq!(first.state, Visits { count: 1, log: vec!["visit 1".into()] });

    let again = runner.restart(first.run_id, None).await.unwrap().completed().unwrap();
    assert_ne!(again.run_id, first.run_id);
    assert_eq!(again.state, Visits { count: 2, log: vec!["visit 1".into(), "visit 2".into()] });
    // Its own steps from the first: nothing of the source run's steps is carried over.
    let keys: Vec<String> = store.steps(again.run_id).await.unwrap().into_iter().map(|s| s.step_key).collect();
    assert_eq!(keys, ["visit#1", "note#1"]);
    let record = store.load_run(again.run_id).await.unwrap();
    assert_eq!((record.parent_run_id, record.status), (Some(first.run_id), RunStatus::Completed));

    // The source run is left as it was.
    let source = store.load_run(first.run_id).await.unwrap();
    assert_eq!((source.parent_run_id, source.status), (None, RunStatus::Completed));
    let state: Visits = serde_json::from_str(source.snapshot.state.get()).unwrap();
    assert_eq!(state.count, 1);

    // A restart of the restart goes on from there.
    let third = runner.restart(again.run_id, None).await.unwrap().completed().unwrap();
    assert_eq!(third.state.count, 3);
    assert_eq!(store.load_run(third.run_id).await.unwrap().parent_run_id, Some(again.run_id));
}

#[tokio::test]
async fn a_restart_from_a_checkpoint_takes_that_checkpoints_state() {
    let store = Arc::new(MemoryStore::new());
    let runner = Runner::new(Visit).with_shared_store(store.clone());
    let first = runner.kickoff(Visits::default()).await.unwrap().completed().unwrap();
    let checkpoints = store.checkpoints(first.run_id).await.unwrap();
    let created = checkpoints.iter().find(|c| c.step_key.is_none()).unwrap().seq;
    let after_visit = checkpoints.iter().find(|c| c.step_key.as_deref() == Some("visit#1")).unwrap().seq;

    // From the checkpoint written at creation: the state the run was kicked off with.
    let from_start = runner.restart(first.run_id, Some(created)).await.unwrap().completed().unwrap();
    assert_eq!(from_start.state, Visits { count: 1, log: vec!["visit 1".into()] });
    // From the one after `visit`: its count, but not yet `note`'s line.
    let from_visit = runner.restart(first.run_id, Some(after_visit)).await.unwrap().completed().unwrap();
    assert_eq!(from_visit.state, Visits { count: 2, log: vec!["visit 2".into()] });
    assert_eq!(store.load_run(from_visit.run_id).await.unwrap().parent_run_id, Some(first.run_id));

    let missing = runner.restart(first.run_id, Some(999)).await.unwrap_err();
    assert!(missing.to_string().contains("999"), "{missing}");
}

#[tokio::test]
async fn a_restart_needs_a_store_and_a_run_of_this_flow() {
    let err = Runner::new(Visit).restart(uuid::Uuid::now_v7(), None).await.unwrap_err();
    assert!(matches!(err, FlowError::NoStore { .. }), "{err:?}");

    let store = Arc::new(MemoryStore::new());
    let other = Runner::new(Loop).with_shared_store(store.clone());
    let run = other.kickoff(Rounds::default()).await.unwrap().completed().unwrap();
    let err = Runner::new(Visit).with_shared_store(store.clone()).restart(run.run_id, None).await.unwrap_err();
    assert!(err.to_string().contains("restart_loop"), "{err}");
    assert_eq!(store.list_runs(&Default::default()).await.unwrap().len(), 1, "nothing stored");
}

// ---------------------------------------------------------------- a start that also listens

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Step {
    Again,
}

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Rounds {
    rounds: u32,
    target: u32,
}

/// Only a loop: `work` is the start, and runs again each time `decide` says so.
struct Loop;

#[flow(state = Rounds, name = "restart_loop")]
impl Loop {
    #[start]
    #[listen(Step::Again)]
    async fn work(&self, cx: &Ctx<Rounds>) -> Result<u32> {
        cx.update(|s| s.rounds += 1);
        Ok(cx.read(|s| s.rounds))
    }

    #[router(work)]
    async fn decide(&self, cx: &Ctx<Rounds>, rounds: u32) -> Result<Option<Step>> {
        Ok((rounds < cx.read(|s| s.target.max(3))).then_some(Step::Again))
    }
}

#[tokio::test]
async fn a_start_that_listens_runs_at_kickoff_and_each_time_its_route_fires() {
    let store = Arc::new(MemoryStore::new());
    let runner = Runner::new(Loop).with_shared_store(store.clone());
    let run = runner.kickoff(Rounds::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.rounds, 3);
    let keys: Vec<String> = store.steps(run.run_id).await.unwrap().into_iter().map(|s| s.step_key).collect();
    assert_eq!(keys, ["work#1", "decide#1", "work#2", "decide#2", "work#3", "decide#3"]);

    // Restarted from its final state with a higher target: the loop starts over at kickoff.
    let record = store.load_run(run.run_id).await.unwrap();
    let mut state: Rounds = serde_json::from_str(record.snapshot.state.get()).unwrap();
    assert_eq!(state.rounds, 3);
    state.target = 5;
    let again = runner.kickoff(state).await.unwrap().completed().unwrap();
    assert_eq!(again.state.rounds, 5);
    let restarted = runner.restart(run.run_id, None).await.unwrap().completed().unwrap();
    assert_eq!(restarted.state.rounds, 4, "one more round: 4 is past the target of 3");
}

#[test]
fn a_start_that_listens_is_a_start_and_a_listener_in_the_graph_and_its_drawing() {
    let graph = Loop::graph();
    assert_eq!(graph.starts().map(|m| graph.method(m).name).collect::<Vec<_>>(), ["work"]);
    let doc = graph.doc();
    let work = &doc.methods[0];
    assert!(work.start && work.start_listens);
    assert_eq!(work.kind(), "start · listener");
    assert_eq!(graph.trigger_text(graph.method_id("work").unwrap()).as_deref(), Some("Step::Again"));
    let edges: Vec<(usize, usize, Option<String>)> =
        doc.edges().into_iter().map(|e| (e.from, e.to, e.route.map(|r| r.variant))).collect();
    assert_eq!(edges, [(1, 0, Some("Again".to_string())), (0, 1, None)]);
    let svg = plot::svg_doc(&doc);
    assert!(svg.contains("start · listener"), "the drawing names both roles");
}
