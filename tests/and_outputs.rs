//! Outputs of an `and(...)` (issue 19, point 1): a listener on `and(a, b, ..)` takes what its
//! parts sent as a tuple in the order written, also after a crash between the parts or after
//! the join fired; and any method reads the latest output of any completed method of the run
//! with `cx.output(Self::METHOD)`, without copying it into the state.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{MemoryStore, RunFilter, SqliteStore, StepStatus, Store};
use flow_tests::{Gate, resume_when_free};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Merged {
    merged: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Verdict {
    Keep,
    Drop,
}

// ---------------------------------------------------------------- the tuple, in the order written

/// `fetch_b` finishes first, then `fetch_a`: the tuple still follows the trigger as written.
struct Pair {
    b_done: Arc<Semaphore>,
}

#[flow(state = Merged)]
impl Pair {
    #[start]
    async fn fetch_a(&self) -> Result<u32> {
        self.b_done.acquire().await.expect("never closed").forget();
        Ok(7)
    }

    #[start]
    async fn fetch_b(&self) -> Result<String> {
        self.b_done.add_permits(1);
        Ok("seven".into())
    }

    #[router(fetch_b)]
    async fn judge(&self) -> Result<Verdict> {
        Ok(Verdict::Keep)
    }

    #[listen(Verdict::Drop)]
    async fn discard(&self) -> Result<()> {
        Ok(())
    }

    #[listen(and(fetch_a, fetch_b))]
    async fn merge(&self, cx: &Ctx<Merged>, (a, b): (u32, String)) -> Result<String> {
        let line = format!("{a}/{b}");
        cx.update({
            let line = line.clone();
            move |s| s.merged.push(line.clone())
        });
        Ok(line)
    }

    /// A route and a nested `or` as parts: the route value, and whichever part of the `or` fired.
    #[listen(and(Verdict::Keep, or(fetch_a, discard_count), merge))]
    async fn summary(&self, input: (Verdict, u32, String)) -> Result<String> {
        Ok(format!("{:?} {} {}", input.0, input.1, input.2))
    }

    #[listen(Verdict::Drop)]
    async fn discard_count(&self) -> Result<u32> {
        Ok(0)
    }
}

#[tokio::test]
async fn an_and_listener_receives_its_parts_outputs_as_a_tuple_in_the_order_written() {
    let store = Arc::new(MemoryStore::new());
    let runner = Runner::new(Pair { b_done: Arc::new(Semaphore::new(0)) }).with_shared_store(store.clone());
    let run = runner.kickoff(Merged::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.merged, ["7/seven"]);
    assert_eq!(run.output::<String>().unwrap(), "Keep 7 7/seven");

    // What each listener received is stored with its step: the tuple as a JSON array.
    let steps = store.steps(run.run_id).await.unwrap();
    let input = |key: &str| steps.iter().find(|s| s.step_key == key).and_then(|s| s.input.clone());
    assert_eq!(input("merge#1"), Some(json!([7, "seven"])));
    assert_eq!(input("summary#1"), Some(json!(["Keep", 7, "7/seven"])));
    assert_eq!(steps.iter().filter(|s| s.step_key.starts_with("discard")).count(), 0);
}

// ---------------------------------------------------------------- a loop: each wave its own tuple

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Again {
    More,
}

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Rounds {
    round: u32,
    seen: Vec<(u32, u32)>,
}

struct Waves;

#[flow(state = Rounds, max_calls = 10)]
impl Waves {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    #[listen(or(begin, Again::More))]
    async fn left(&self, cx: &Ctx<Rounds>) -> Result<u32> {
        Ok(cx.read(|s| s.round) * 10)
    }

    #[listen(or(begin, Again::More))]
    async fn right(&self, cx: &Ctx<Rounds>) -> Result<u32> {
        Ok(cx.read(|s| s.round) * 10 + 1)
    }

    #[router(and(left, right), terminal)]
    async fn pair(&self, cx: &Ctx<Rounds>, pair: (u32, u32)) -> Result<Option<Again>> {
        cx.update(move |s| {
            s.seen.push(pair);
            s.round += 1;
        });
        Ok((pair.0 < 20).then_some(Again::More))
    }
}

#[tokio::test]
async fn each_wave_of_a_loop_delivers_the_outputs_of_that_wave() {
    let run = Waves.kickoff(Rounds::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.seen, [(0, 1), (10, 11), (20, 21)]);
}

// ---------------------------------------------------------------- any method's latest output

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Seen {
    lines: Vec<String>,
}

struct Chain;

#[flow(state = Seen)]
impl Chain {
    #[start]
    async fn count(&self) -> Result<u32> {
        Ok(3)
    }

    #[listen(count)]
    async fn title(&self, cx: &Ctx<Seen>) -> Result<String> {
        // `render` has not run yet; `count` has, and its output is there without the state.
        let before: Option<String> = cx.output(Self::RENDER)?;
        let count = cx.output(Self::COUNT)?;
        cx.update(move |s| s.lines.push(format!("{before:?} {count:?}")));
        Ok("Weekly".into())
    }

    #[listen(title)]
    async fn render(&self, cx: &Ctx<Seen>) -> Result<String> {
        let count = cx.output(Self::COUNT)?.unwrap_or_default();
        let title = cx.output(Self::TITLE)?.unwrap_or_default();
        Ok(format!("{title}: {count}"))
    }
}

#[tokio::test]
async fn a_method_reads_the_latest_output_of_any_completed_method() {
    let run = Chain.kickoff(Seen::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.lines, ["None Some(3)"]);
    assert_eq!(run.output::<String>().unwrap(), "Weekly: 3");
}

/// Another flow with the same state: its constant names a method of a flow the run is not of.
struct Other;

#[flow(state = Seen)]
impl Other {
    #[start]
    async fn peek(&self, cx: &Ctx<Seen>) -> Result<()> {
        let _: Option<u32> = cx.output(Chain::COUNT)?;
        Ok(())
    }
}

#[tokio::test]
async fn an_output_of_another_flow_is_refused_naming_both_flows() {
    let err = Other.kickoff(Seen::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("a method of flow `Chain`, but the run is of flow `Other`"), "{text}");
}

// ---------------------------------------------------------------- after a crash

/// `fetch_a` returns 100 plus how often it ran, so a second run of it would show in the tuple.
#[derive(Clone, Default)]
struct Durable {
    a_runs: Arc<AtomicU32>,
    b_runs: Arc<AtomicU32>,
    merge_runs: Arc<AtomicU32>,
    /// `fetch_b` waits here when set.
    b_gate: Option<Gate>,
    /// `merge` waits here when set.
    merge_gate: Option<Gate>,
}

#[flow(state = Merged, name = "and_outputs_durable")]
impl Durable {
    #[start]
    async fn fetch_a(&self) -> Result<u32> {
        Ok(100 + self.a_runs.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[start]
    async fn fetch_b(&self) -> Result<String> {
        let n = self.b_runs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.b_gate {
            gate.pass().await;
        }
        Ok(format!("b{n}"))
    }

    #[listen(and(fetch_a, fetch_b))]
    async fn merge(&self, cx: &Ctx<Merged>, (a, b): (u32, String)) -> Result<String> {
        self.merge_runs.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.merge_gate {
            gate.pass().await;
        }
        // Read back after the crash too: outputs come from the stored steps.
        let a_again = cx.output(Self::FETCH_A)?;
        let line = format!("{a}/{b}/{a_again:?}");
        cx.update({
            let line = line.clone();
            move |s| s.merged.push(line.clone())
        });
        Ok(line)
    }
}

async fn store_at(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.join("runs.db")).await.unwrap())
}

/// Kicks off on `flow` and drops the run (a process that dies) once `gate` is reached.
async fn crash_at(flow: Durable, gate: &Gate, store: Arc<dyn Store>) -> uuid::Uuid {
    let dying = Runner::new(flow).with_shared_store(store.clone()).lease(Duration::from_millis(150));
    tokio::select! {
        done = dying.kickoff(Merged::default()) => panic!("the run ended before the gate: {done:?}"),
        () = gate.reached(1) => {}
    }
    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    runs[0].run_id
}

#[tokio::test]
async fn a_crash_between_the_parts_still_delivers_the_part_that_completed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let flow = Durable { b_gate: Some(gate.clone()), ..Durable::default() };
    let counts = flow.clone();
    let run_id = crash_at(flow, &gate, store_at(dir.path()).await).await;

    // A fresh process on the same file: `fetch_a` is done (its output waits in the join), and
    // `fetch_b` runs again.
    let store = store_at(dir.path()).await;
    let runner = Runner::new(Durable { b_gate: None, ..counts.clone() }).with_shared_store(store.clone());
    let done = resume_when_free(&runner, &*store, run_id).await.unwrap().completed().unwrap();
    assert_eq!(done.state.merged, ["101/b2/Some(101)"]);
    assert_eq!(counts.a_runs.load(Ordering::SeqCst), 1, "fetch_a completed before the crash");
    assert_eq!(counts.b_runs.load(Ordering::SeqCst), 2, "fetch_b was in flight at the crash");
    let steps = store.steps(run_id).await.unwrap();
    let merge = steps.iter().find(|s| s.step_key == "merge#1").unwrap();
    assert_eq!((merge.status, merge.input.clone()), (StepStatus::Completed, Some(json!([101, "b2"]))));
}

#[tokio::test]
async fn a_crash_after_the_join_fired_delivers_the_tuple_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let flow = Durable { merge_gate: Some(gate.clone()), ..Durable::default() };
    let counts = flow.clone();
    let run_id = crash_at(flow, &gate, store_at(dir.path()).await).await;

    let store = store_at(dir.path()).await;
    let runner = Runner::new(Durable { merge_gate: None, ..counts.clone() }).with_shared_store(store.clone());
    let done = resume_when_free(&runner, &*store, run_id).await.unwrap().completed().unwrap();
    assert_eq!(done.state.merged, ["101/b1/Some(101)"]);
    assert_eq!(done.output::<String>().unwrap(), "101/b1/Some(101)");
    assert_eq!(
        [&counts.a_runs, &counts.b_runs, &counts.merge_runs].map(|c| c.load(Ordering::SeqCst)),
        [1, 1, 2],
        "only merge, in flight at the crash, ran again"
    );
}
