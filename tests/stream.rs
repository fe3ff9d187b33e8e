//! Streaming a run (issue 21, points 1 and 2): the live stream of a run on the channels asked
//! for, ending with its outcome; a consumer that does not read never holds the run up and is
//! told what it missed; runs kept in the store are replayed from any point and followed from
//! another runner on the same SQLite file, item for item as the live stream had them; a resumed
//! run numbers its items on; retention keeps the newest items.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_core::store::{MemoryStore, PgStore, SqliteStore, Store};
use flow_core::stream::{Channels, KeptItem, RunItem, STREAM_BUFFER, StreamItem, StreamLog};
use flow_core::{RunStatus, store::StreamRecord};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use flow_tests::Gate;

#[allow(dead_code, reason = "shared with the PostgreSQL store's tests, which use all of it")]
mod pg_support;

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Doc {
    words: u32,
    title: String,
}

/// Two steps: `draft` emits progress and counts words, `polish` waits at a gate the test holds,
/// then sets the title.
struct Writing {
    gate: Gate,
}

#[flow(state = Doc, name = "stream_writing")]
impl Writing {
    #[start]
    async fn draft(&self, cx: &Ctx<Doc>) -> Result<u32> {
        cx.emit(json!({ "progress": 50 }))?;
        cx.update(|d| d.words += 120);
        cx.emit("drafted")?;
        Ok(120)
    }

    #[listen(draft)]
    async fn polish(&self, cx: &Ctx<Doc>, words: u32) -> Result<String> {
        self.gate.pass().await;
        let title = format!("{words} words");
        let kept = title.clone();
        cx.update(move |d| d.title = kept.clone());
        Ok(title)
    }
}

fn open_gate() -> Gate {
    let gate = Gate::new();
    gate.open(usize::MAX >> 4);
    gate
}

type Outcome = Option<Result<RunOutcome<Doc>, FlowError>>;

/// The `(seq, item)` pairs of a live stream, and its outcome.
fn split(items: Vec<StreamItem<Doc>>) -> (Vec<(u64, RunItem)>, Outcome) {
    let mut pairs = Vec::new();
    let mut outcome = None;
    for item in items {
        match item {
            StreamItem::Item { seq, item } => pairs.push((seq, item)),
            StreamItem::Finished(o) => {
                assert!(outcome.is_none(), "one outcome");
                outcome = Some(o);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (pairs, outcome)
}

fn kept_pairs(kept: Vec<Result<KeptItem, FlowError>>) -> Vec<(u64, RunItem)> {
    kept.into_iter().map(|k| k.expect("a kept item")).map(|k| (k.seq, k.item)).collect()
}

#[tokio::test]
async fn a_live_stream_carries_the_channels_asked_for_then_the_outcome() {
    let runner = Runner::new(Writing { gate: open_gate() });
    let items: Vec<_> = runner.stream(Doc::default(), Channels::STATE | Channels::CUSTOM).collect().await;
    assert!(matches!(items.last(), Some(StreamItem::Finished(Ok(RunOutcome::Completed(_))))), "{items:?}");
    let (pairs, outcome) = split(items);
    let run = outcome.unwrap().unwrap().completed().unwrap();
    assert_eq!(run.state, Doc { words: 120, title: "120 words".into() });
    let seqs: Vec<u64> = pairs.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..5).collect::<Vec<_>>(), "numbered in order, from 0, with no gap");
    let items: Vec<RunItem> = pairs.into_iter().map(|(_, i)| i).collect();
    assert_eq!(
        items,
        [
            RunItem::Custom { method: "draft".into(), step_key: "draft#1".into(), value: json!({ "progress": 50 }) },
            RunItem::Custom { method: "draft".into(), step_key: "draft#1".into(), value: json!("drafted") },
            RunItem::State {
                method: "draft".into(),
                step_key: "draft#1".into(),
                state: json!({ "words": 120, "title": "" })
            },
            RunItem::State {
                method: "polish".into(),
                step_key: "polish#1".into(),
                state: json!({ "words": 120, "title": "120 words" })
            },
            RunItem::Ended { status: RunStatus::Completed, error: None },
        ]
    );

    // Outputs alone: no state, no custom values.
    let items: Vec<_> = runner.stream(Doc::default(), Channels::OUTPUTS).collect().await;
    let (pairs, _) = split(items);
    let outputs: Vec<_> = pairs
        .iter()
        .filter_map(|(_, i)| match i {
            RunItem::Output { step_key, output, .. } => Some((step_key.as_str(), output.clone())),
            RunItem::Ended { .. } => None,
            other => panic!("not asked for: {other:?}"),
        })
        .collect();
    assert_eq!(outputs, [("draft#1", json!(120)), ("polish#1", json!("120 words"))]);
}

/// Emits many more values than the stream buffers, then says it is done.
struct Chatty {
    done: Arc<Notify>,
}

#[flow(state = Doc, name = "stream_chatty")]
impl Chatty {
    #[start]
    async fn talk(&self, cx: &Ctx<Doc>) -> Result<()> {
        for n in 0..(STREAM_BUFFER * 3) {
            cx.emit(n)?;
        }
        self.done.notify_one();
        Ok(())
    }
}

#[tokio::test]
async fn a_consumer_that_does_not_read_never_holds_the_run_up_and_is_told_what_it_missed() {
    let done = Arc::new(Notify::new());
    let runner = Runner::new(Chatty { done: Arc::clone(&done) });
    let mut stream = std::pin::pin!(runner.stream(Doc::default(), Channels::CUSTOM));
    // Nothing is read until the run has made every item: it did not wait for the consumer.
    done.notified().await;
    let mut missed = 0;
    let mut got = Vec::new();
    let mut finished = false;
    while let Some(item) = stream.next().await {
        match item {
            StreamItem::Lagged { missed: n } => missed += n,
            StreamItem::Item { seq, item: RunItem::Custom { value, .. } } => got.push((seq, value)),
            StreamItem::Item { item: RunItem::Ended { .. }, .. } => {}
            StreamItem::Finished(outcome) => {
                outcome.unwrap().completed().unwrap();
                finished = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(finished);
    let total = u64::try_from(STREAM_BUFFER * 3).unwrap();
    assert!(missed > 0, "the buffer holds {STREAM_BUFFER} items, {total} were made");
    assert_eq!(
        u64::try_from(got.len()).unwrap() + missed + 1,
        total + 1,
        "each item either arrived or was counted missed"
    );
    // What arrived is the newest, in order, each with its own number.
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(got.last().map(|(s, v)| (*s, v.clone())), Some((total - 1, json!(total - 1))));
}

fn kept_log() -> StreamLog {
    StreamLog::new().flush_every(Duration::from_millis(5)).keep_all()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runner_on_the_same_file_attaches_mid_run_and_replays_from_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    // The watcher has its own store on the file, as another process would.
    let running: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let watching: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    attach_mid_run_and_replay(running, watching).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runner_on_the_same_postgres_database_attaches_mid_run() {
    let Some(db) = pg_support::database("stream_attach_mid_run").await else { return };
    let running: Arc<dyn Store> = Arc::new(PgStore::from_pool(db.pool(4)).await.unwrap());
    let watching: Arc<dyn Store> = Arc::new(PgStore::from_pool(db.pool(4)).await.unwrap());
    attach_mid_run_and_replay(running, watching).await;
}

/// One runner streams a run; a runner on another store over the same database attaches while
/// the run waits mid-way, follows it to its end with the same items, and replays it after.
async fn attach_mid_run_and_replay(running_store: Arc<dyn Store>, watcher_store: Arc<dyn Store>) {
    let gate = Gate::new();
    let running = Runner::new(Writing { gate: gate.clone() }).with_shared_store(running_store).keep_stream(kept_log());
    let watcher = Runner::new(Writing { gate: Gate::new() }).with_shared_store(Arc::clone(&watcher_store));
    let mut events = running.subscribe();

    let mut live = Box::pin(running.stream(Doc::default(), Channels::ALL));
    let mut live_items = Vec::new();
    // Until `draft`'s state: the run is mid-way, `polish` waits at the gate.
    let run_id = loop {
        let item = live.next().await.expect("the run goes on");
        let state_of_draft =
            matches!(&item, StreamItem::Item { item: RunItem::State { method, .. }, .. } if method == "draft");
        live_items.push(item);
        if state_of_draft {
            gate.reached(1).await;
            match events.recv().await.unwrap() {
                FlowEvent::RunStarted { run_id, .. } => break run_id,
                other => panic!("expected the run's start, got {other:?}"),
            }
        }
    };
    assert_eq!(watcher_store.load_run(run_id).await.unwrap().status, RunStatus::Running);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follow = watcher.attach(run_id, 0);
    tokio::spawn(async move {
        let mut follow = std::pin::pin!(follow);
        while let Some(item) = follow.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    // The watcher gets what `draft` made (two values, its output, its state) while the run
    // still waits at the gate.
    let mut attached = Vec::new();
    while attached.len() < 4 {
        attached.push(rx.recv().await.expect("the watcher follows the run"));
    }
    assert_eq!(watcher_store.load_run(run_id).await.unwrap().status, RunStatus::Running);
    gate.open(1);
    while let Some(item) = live.next().await {
        live_items.push(item);
    }
    let (live_pairs, outcome) = split(live_items);
    outcome.unwrap().unwrap().completed().unwrap();
    // ...and follows it to its end.
    while let Some(item) = rx.recv().await {
        attached.push(item);
    }
    let attached = kept_pairs(attached);
    assert_eq!(attached, live_pairs, "the same items, in the same order, with the same numbers");
    assert!(matches!(attached.last(), Some((_, RunItem::Ended { status: RunStatus::Completed, .. }))));
    assert!(attached.iter().any(|(_, i)| matches!(i, RunItem::Output { method, .. } if method == "polish")));

    // Replays of the finished run: whole, and from a middle point.
    let whole = kept_pairs(watcher.attach(run_id, 0).collect().await);
    assert_eq!(whole, live_pairs);
    let from = live_pairs[3].0;
    let tail = kept_pairs(watcher.attach(run_id, from).collect().await);
    assert_eq!(tail, live_pairs[3..]);
    // Past the end: nothing, and no waiting for more.
    let past = watcher.attach(run_id, whole.len() as u64 + 10).collect::<Vec<_>>().await;
    assert!(past.is_empty(), "{past:?}");
}

/// Asks a person, then finishes.
struct Approval;

#[flow(state = Doc, name = "stream_approval")]
impl Approval {
    #[start]
    async fn ask(&self, cx: &Ctx<Doc>) -> Result<String> {
        cx.emit("asking")?;
        let title: String = cx.ask("A title?").await?;
        cx.update({
            let t = title.clone();
            move |d| d.title = t.clone()
        });
        Ok(title)
    }
}

#[tokio::test]
async fn a_resumed_run_numbers_its_items_on_and_its_log_holds_both_executions() {
    let runner = Runner::new(Approval).with_store(MemoryStore::new()).keep_stream(kept_log());
    let first: Vec<_> = runner.stream(Doc::default(), Channels::ALL).collect().await;
    let (first, outcome) = split(first);
    let run_id = outcome.unwrap().unwrap().run_id();
    assert_eq!(first.last().map(|(_, i)| i.clone()), Some(RunItem::Ended { status: RunStatus::Paused, error: None }));

    runner.answer(run_id, "Tides").await.unwrap();
    let second: Vec<_> = runner.resume_stream(run_id, Channels::ALL).collect().await;
    let (second, outcome) = split(second);
    assert_eq!(outcome.unwrap().unwrap().completed().unwrap().state.title, "Tides");
    assert_eq!(second.first().map(|(s, _)| *s), Some(first.len() as u64), "numbered on from the first execution");

    let kept = kept_pairs(runner.attach(run_id, 0).collect().await);
    let both: Vec<_> = first.into_iter().chain(second).collect();
    assert_eq!(kept, both, "a replay goes through the pause to the end");
}

#[tokio::test]
async fn retention_keeps_the_newest_items_and_the_log_goes_with_the_run() {
    let store = Arc::new(MemoryStore::new());
    let runner = Runner::new(Chatty { done: Arc::new(Notify::new()) })
        .with_shared_store(store.clone())
        .keep_stream(StreamLog::new().channels(Channels::CUSTOM).keep_last(5));
    let run_id = runner.kickoff(Doc::default()).await.unwrap().run_id();
    let kept = kept_pairs(runner.attach(run_id, 0).collect().await);
    let total = u64::try_from(STREAM_BUFFER * 3).unwrap();
    let seqs: Vec<u64> = kept.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, ((total - 4)..=total).collect::<Vec<_>>(), "the newest five: four values and the end");
    store.delete_run(run_id).await.unwrap();
    let after: Vec<StreamRecord> = store.stream_read(run_id, 0, 100).await.unwrap();
    assert!(after.is_empty());
}
