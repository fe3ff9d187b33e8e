//! The `Store` contract as executable checks, run against every implementation.
//!
//! [`check`] takes any `&dyn Store` built with `keep_checkpoints(KEEP)`; `MemoryStore` is the
//! reference, so a backend that passes behaves like it for every method the executor calls.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use flow_core::TokenUsage;
use flow_core::graph::{GRAPH_FORMAT, GraphDoc, MethodDoc, RouteDoc, RouteEndDoc, TriggerDoc};
use flow_core::store::{
    Answer, CheckpointInfo, Claim, ClaimRequest, Commit, EditNote, JournalEntry, NewRun, Placement, QueueLimit,
    RunCursor, RunFilter, RunGraph, RunStatus, Snapshot, Start, StateEdit, StepRecord, StepStatus, Store, StoreError,
    StreamRecord,
};
use serde_json::{Value, json};
use uuid::Uuid;

pub mod memory;

pub type TestResult = Result<(), Box<dyn Error>>;

/// The retention the store under test must be built with.
pub const KEEP: usize = 3;

const LONG: Duration = Duration::from_secs(60);

#[allow(clippy::expect_used, reason = "a test fixture: JSON literals always encode")]
pub fn snapshot(n: u64) -> Snapshot {
    Snapshot::encode(&json!({ "n": n, "text": format!("state {n}") }), &json!({ "pending": [n] }))
        .expect("JSON values encode")
}

pub fn step(key: &str, status: StepStatus) -> StepRecord {
    StepRecord { input: Some(Value::Null), ..StepRecord::new(key, key.split('#').next().unwrap_or(key), status) }
}

pub fn new_run(flow: &str, owner: &str, lease: Duration) -> NewRun {
    NewRun {
        run_id: Uuid::new_v4(),
        flow: flow.to_string(),
        parent_run_id: None,
        snapshot: snapshot(0),
        steps: vec![step("start#0", StepStatus::Ready)],
        start: Start::Leased { owner: owner.to_string(), lease },
        placement: Placement::default(),
        graph: None,
    }
}

/// A running checkpoint numbered `n`, completing `step_key`.
pub fn commit(run_id: Uuid, epoch: u64, n: u64) -> Commit {
    Commit {
        run_id,
        epoch,
        status: RunStatus::Running,
        snapshot: snapshot(n),
        steps: vec![StepRecord {
            output: Some(json!(n)),
            attempt: 1,
            ..step(&format!("m#{n}"), StepStatus::Completed)
        }],
        step_key: Some(format!("m#{n}")),
        output: None,
        error: None,
        pause: None,
        available_at_ms: None,
    }
}

/// Every check, in turn. Each makes its own runs, so the store may be shared.
pub async fn check(store: &dyn Store) -> TestResult {
    create_and_load(store).await?;
    unknown_run_is_not_found(store).await?;
    lease_rules(store).await?;
    commit_semantics(store).await?;
    retention(store).await?;
    journal_first_writer_wins(store).await?;
    listing(store).await?;
    deleting(store).await?;
    stream_log(store).await?;
    graphs_and_step_records(store).await?;
    trace_context(store).await?;
    editing_state(store).await?;
    Ok(())
}

fn state_edit(run_id: Uuid, version: u64, n: u64, author: &str) -> Result<StateEdit, Box<dyn Error>> {
    Ok(StateEdit {
        run_id,
        version,
        state: serde_json::value::to_raw_value(&json!({ "n": n, "edited": true }))?,
        note: EditNote { author: author.into(), reason: format!("set n to {n}") },
    })
}

/// `edit_state`: a checkpoint of its own with the new state, the run's progress and status,
/// and who edited it; refused for a leased run, a run in another status, a stale version.
async fn editing_state(store: &dyn Store) -> TestResult {
    let run = new_run("edits", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    // Leased (running): refused, nothing written.
    match store.edit_state(state_edit(id, 1, 5, "alice")?).await {
        Err(StoreError::Locked { run_id, owner, .. }) if run_id == id && owner == "w1" => {}
        other => return Err(format!("edit of a leased run: expected Locked, got {other:?}").into()),
    }
    store.commit(Commit { status: RunStatus::Failed, error: Some("boom".into()), ..commit(id, 1, 1) }).await?;
    let failed = store.load_run(id).await?;
    assert_eq!((failed.status, failed.version), (RunStatus::Failed, 2));
    // Made from an older version: refused.
    match store.edit_state(state_edit(id, 1, 5, "alice")?).await {
        Err(StoreError::Moved { run_id, expected: 1, current: 2 }) if run_id == id => {}
        other => return Err(format!("edit from a stale version: expected Moved, got {other:?}").into()),
    }
    let edit = state_edit(id, 2, 7, "alice")?;
    let edited_text = edit.state.get().to_string();
    assert_eq!(store.edit_state(edit).await?, 3);
    let edited = store.load_run(id).await?;
    assert_eq!((edited.status, edited.version), (RunStatus::Failed, 3), "the status stays");
    assert_eq!(edited.snapshot.state.get(), edited_text.as_str());
    assert_eq!(edited.snapshot.progress.get(), snapshot(1).progress.get(), "the progress is the run's");
    assert_eq!(edited.error.as_deref(), Some("boom"), "the run's error stays");
    assert!(edited.lease_owner.is_none());
    let history = store.checkpoints(id).await?;
    let last = history.last().ok_or("no checkpoints")?;
    assert_eq!((last.seq, last.status, last.step_key.as_deref()), (3, RunStatus::Failed, None));
    let note = EditNote { author: "alice".into(), reason: "set n to 7".into() };
    assert_eq!(last.edit.as_ref(), Some(&note));
    assert!(history[..history.len() - 1].iter().all(|c| c.edit.is_none()), "{history:?}");
    assert_eq!(store.load_checkpoint(id, 3).await?.state.get(), edited_text.as_str());
    // A claim sees the edited state and goes on from it.
    let claim = store.claim(id, "w2", LONG).await?;
    assert_eq!(claim.run.snapshot.state.get(), edited_text.as_str());
    match store.edit_state(state_edit(id, 3, 9, "bob")?).await {
        Err(StoreError::Locked { owner, .. }) if owner == "w2" => {}
        other => return Err(format!("edit of a claimed run: expected Locked, got {other:?}").into()),
    }
    store.commit(Commit { status: RunStatus::Completed, ..commit(id, claim.epoch, 4) }).await?;
    match store.edit_state(state_edit(id, 4, 9, "bob")?).await {
        Err(StoreError::NotEditable { run_id, status: RunStatus::Completed }) if run_id == id => {}
        other => return Err(format!("edit of a completed run: expected NotEditable, got {other:?}").into()),
    }
    assert_eq!(store.load_run(id).await?.version, 4, "refused edits write nothing");
    // Paused runs are editable too.
    let paused = new_run("edits", "w1", LONG);
    let pid = paused.run_id;
    store.create_run(paused).await?;
    let pause = json!({ "step_key": "ask#0", "question": "publish?" });
    store.commit(Commit { status: RunStatus::Paused, pause: Some(pause.clone()), ..commit(pid, 1, 1) }).await?;
    assert_eq!(store.edit_state(state_edit(pid, 2, 1, "carol")?).await?, 3);
    let record = store.load_run(pid).await?;
    assert_eq!((record.status, record.pause), (RunStatus::Paused, Some(pause)), "still waiting for its answer");
    let unknown = Uuid::new_v4();
    expect_not_found("edit_state", unknown, store.edit_state(state_edit(unknown, 1, 1, "x")?).await)?;
    Ok(())
}

/// A graph as a flow's code would describe it: `decide` routes to `act` or ends; `variant`
/// tells two versions of the flow apart.
pub fn graph_doc(variant: &str) -> GraphDoc {
    let method = |name: &str| MethodDoc {
        name: name.to_string(),
        start: false,
        start_listens: false,
        router: false,
        compensates: None,
        blocking: false,
        trigger: None,
        output_type: "()".into(),
        payload_type: None,
        routes: Vec::new(),
        ends: Vec::new(),
        retry: None,
        timeout_ms: Some(600_000),
        non_critical: false,
    };
    let route = |v: &str| RouteDoc { route_type: "Choice".into(), variant: v.into() };
    GraphDoc {
        format: GRAPH_FORMAT,
        name: "conformance_graph".into(),
        state_type: "S".into(),
        methods: vec![
            MethodDoc {
                start: true,
                router: true,
                routes: vec![route("Act"), route("Stop")],
                ends: vec![RouteEndDoc::Variant("Stop".into())],
                ..method("decide")
            },
            MethodDoc {
                trigger: Some(TriggerDoc::Route { route: route("Act") }),
                payload_type: Some("String".into()),
                ..method(variant)
            },
        ],
        max_calls: 100,
        on_failure: "cancel_running".into(),
    }
}

/// `run_graph` returns the graph a run was created with, each run its own version's even when
/// runs share it, `None` for a run created without one; step rows keep their timings and usage.
async fn graphs_and_step_records(store: &dyn Store) -> TestResult {
    let (v1, v2) = (Arc::new(RunGraph::new(graph_doc("act"))), Arc::new(RunGraph::new(graph_doc("act_v2"))));
    assert_ne!(v1.digest, v2.digest);
    let mut runs = Vec::new();
    for graph in [Some(&v1), Some(&v1), Some(&v2), None] {
        let run = NewRun { graph: graph.cloned(), ..new_run("conformance_graph", "w1", LONG) };
        runs.push(run.run_id);
        store.create_run(run).await?;
    }
    assert_eq!(store.run_graph(runs[0]).await?.as_ref(), Some(&v1.doc));
    assert_eq!(store.run_graph(runs[1]).await?.as_ref(), Some(&v1.doc));
    assert_eq!(store.run_graph(runs[2]).await?.as_ref(), Some(&v2.doc));
    assert_eq!(store.run_graph(runs[3]).await?, None);
    let unknown = Uuid::new_v4();
    expect_not_found("run_graph", unknown, store.run_graph(unknown).await)?;

    let usage = TokenUsage { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150 };
    let timed = StepRecord {
        output: Some(json!("done")),
        attempt: 2,
        error: Some("first attempt: timed out".into()),
        started_at_ms: Some(1_700_000_000_000),
        finished_at_ms: Some(1_700_000_000_250),
        usage: Some(usage),
        ..step("decide#1", StepStatus::Completed)
    };
    store
        .commit(Commit { steps: vec![timed.clone()], step_key: Some("decide#1".into()), ..commit(runs[0], 1, 1) })
        .await?;
    let steps = store.steps(runs[0]).await?;
    assert_eq!(steps.iter().find(|s| s.step_key == "decide#1"), Some(&timed));
    assert_eq!(steps[0].duration_ms(), None, "a step recorded without timings has none");
    assert_eq!(timed.duration_ms(), Some(250));
    // A later attempt's row replaces the timings and usage of the earlier one.
    let again = StepRecord { started_at_ms: Some(1_700_000_001_000), finished_at_ms: None, usage: None, ..timed };
    store
        .commit(Commit { steps: vec![again.clone()], step_key: Some("decide#1".into()), ..commit(runs[0], 1, 2) })
        .await?;
    assert_eq!(store.steps(runs[0]).await?.iter().find(|s| s.step_key == "decide#1"), Some(&again));
    Ok(())
}

async fn create_and_load(store: &dyn Store) -> TestResult {
    let parent = Uuid::new_v4();
    let mut run = new_run("conformance", "w1", Duration::from_secs(30));
    run.parent_run_id = Some(parent);
    run.steps.push(StepRecord { input: None, ..step("other#0", StepStatus::Ready) });
    let id = run.run_id;
    assert_eq!(store.create_run(run.clone()).await?, 1);

    let record = store.load_run(id).await?;
    assert_eq!(record.run_id, id);
    assert_eq!(record.flow, "conformance");
    assert_eq!(record.parent_run_id, Some(parent));
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(record.snapshot, run.snapshot);
    assert_eq!((record.version, record.epoch), (1, 1));
    assert_eq!((record.output, record.error, record.pause), (None, None, None));
    assert_eq!(record.lease_owner.as_deref(), Some("w1"));
    assert_eq!(record.lease_expires_at_ms, Some(record.created_at_ms + 30_000));
    assert_eq!(record.updated_at_ms, record.created_at_ms);

    // `Some(Null)` and `None` inputs stay distinct.
    assert_eq!(store.steps(id).await?, run.steps);
    let history = store.checkpoints(id).await?;
    assert_eq!(
        history,
        vec![CheckpointInfo {
            seq: 1,
            step_key: None,
            status: RunStatus::Running,
            created_at_ms: record.created_at_ms,
            edit: None,
        }]
    );
    assert_eq!(store.load_checkpoint(id, 1).await?, run.snapshot);

    match store.create_run(run).await {
        Err(StoreError::Duplicate(dup)) => assert_eq!(dup, id),
        other => return Err(format!("second create_run: expected Duplicate, got {other:?}").into()),
    }
    assert_eq!(store.load_run(id).await?.version, 1, "a refused duplicate changes nothing");
    Ok(())
}

fn expect_not_found<T: std::fmt::Debug>(what: &str, id: Uuid, r: Result<T, StoreError>) -> TestResult {
    match r {
        Err(StoreError::NotFound(missing)) if missing == id => Ok(()),
        other => Err(format!("{what} on an unknown run: expected NotFound({id}), got {other:?}").into()),
    }
}

async fn unknown_run_is_not_found(store: &dyn Store) -> TestResult {
    let id = Uuid::new_v4();
    expect_not_found("load_run", id, store.load_run(id).await)?;
    expect_not_found("claim", id, store.claim(id, "w", LONG).await)?;
    expect_not_found("renew", id, store.renew(id, 1, LONG).await)?;
    expect_not_found("commit", id, store.commit(commit(id, 1, 1)).await)?;
    expect_not_found("steps", id, store.steps(id).await)?;
    expect_not_found("checkpoints", id, store.checkpoints(id).await)?;
    expect_not_found("load_checkpoint", id, store.load_checkpoint(id, 1).await)?;
    let entry = JournalEntry {
        run_id: id,
        step_key: "a#0".into(),
        seq: 0,
        kind: "llm".into(),
        name: "m".into(),
        request_hash: 1,
        output: json!(1),
    };
    expect_not_found("journal_put", id, store.journal_put(entry).await)?;
    assert_eq!(store.journal_get(id, "a#0", 0).await?, None);
    expect_not_found("journal", id, store.journal(id).await)?;
    Ok(())
}

async fn lease_rules(store: &dyn Store) -> TestResult {
    let run = new_run("conformance", "a", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    let expires = store.load_run(id).await?.lease_expires_at_ms;

    match store.claim(id, "b", LONG).await {
        Err(StoreError::Locked { run_id, owner, expires_at_ms }) => {
            assert_eq!((run_id, owner.as_str(), Some(expires_at_ms)), (id, "a", expires));
        }
        other => return Err(format!("claim of a held run: expected Locked, got {other:?}").into()),
    }
    assert_eq!(store.load_run(id).await?.epoch, 1, "a refused claim changes nothing");

    // A live lease refuses its own owner's second claim too (two executions of one worker).
    match store.claim(id, "a", LONG).await {
        Err(StoreError::Locked { owner, .. }) => assert_eq!(owner, "a"),
        other => return Err(format!("second claim by the holder: expected Locked, got {other:?}").into()),
    }
    // Renewing for zero lets the lease lapse at once; then every claim is a new epoch.
    store.renew(id, 1, Duration::ZERO).await?;
    let again = store.claim(id, "a", Duration::ZERO).await?;
    assert_eq!(again.epoch, 2);
    assert_eq!(again.run.epoch, 2);
    assert_eq!(again.run.lease_owner.as_deref(), Some("a"));

    // A zero lease is expired at once: another owner takes over and the old epoch is fenced.
    let taken = store.claim(id, "b", LONG).await?;
    assert_eq!(taken.epoch, 3);
    match store.commit(commit(id, 2, 1)).await {
        Err(StoreError::Fenced { run_id, epoch: 2, current: 3 }) if run_id == id => {}
        other => return Err(format!("commit under a lost lease: expected Fenced, got {other:?}").into()),
    }
    match store.renew(id, 2, LONG).await {
        Err(StoreError::Fenced { epoch: 2, current: 3, .. }) => {}
        other => return Err(format!("renew under a lost lease: expected Fenced, got {other:?}").into()),
    }
    let before = store.load_run(id).await?;
    assert_eq!(before.version, 1, "fenced writes change nothing");
    store.renew(id, 3, Duration::from_secs(120)).await?;
    let renewed = store.load_run(id).await?;
    assert!(renewed.lease_expires_at_ms > before.lease_expires_at_ms);
    assert_eq!(renewed.lease_owner.as_deref(), Some("b"));

    // A run at rest holds no lease and can be claimed by anyone; its status is kept.
    let done = Commit { status: RunStatus::Completed, output: Some(json!("out")), ..commit(id, 3, 1) };
    store.commit(done).await?;
    let at_rest = store.load_run(id).await?;
    assert_eq!((at_rest.lease_owner, at_rest.lease_expires_at_ms), (None, None));
    // A heartbeat's renewal that lands after the run came to rest under the same epoch must
    // not hand the resting run an expiry again.
    match store.renew(id, 3, LONG).await {
        Err(StoreError::Released { run_id, epoch: 3 }) if run_id == id => {}
        other => return Err(format!("renew after the run came to rest: expected Released, got {other:?}").into()),
    }
    let still = store.load_run(id).await?;
    assert_eq!((still.lease_owner, still.lease_expires_at_ms), (None, None), "a late renewal holds nothing");
    let claim = store.claim(id, "c", LONG).await?;
    assert_eq!((claim.epoch, claim.run.status), (4, RunStatus::Completed));

    // A claim that has nothing to do gives the lease back and leaves the run as it was.
    store.release(id, 4).await?;
    let released = store.load_run(id).await?;
    assert_eq!((released.lease_owner, released.lease_expires_at_ms), (None, None));
    assert_eq!((released.status, released.version), (RunStatus::Completed, at_rest.version), "nothing else changes");
    match store.release(id, 3).await {
        Err(StoreError::Fenced { epoch: 3, current: 4, .. }) => {}
        other => return Err(format!("release under a lost lease: expected Fenced, got {other:?}").into()),
    }
    assert_eq!(store.claim(id, "d", LONG).await?.epoch, 5, "claimable at once after a release");
    Ok(())
}

async fn commit_semantics(store: &dyn Store) -> TestResult {
    let run = new_run("conformance", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    let created = store.load_run(id).await?;

    let first = Commit {
        steps: vec![
            StepRecord { output: Some(json!({"x": 1})), attempt: 1, ..step("start#0", StepStatus::Completed) },
            step("next#0", StepStatus::Ready),
        ],
        step_key: Some("start#0".into()),
        ..commit(id, 1, 1)
    };
    store.commit(first.clone()).await?;
    let after = store.load_run(id).await?;
    assert_eq!((after.version, after.status), (2, RunStatus::Running));
    assert_eq!(after.snapshot, first.snapshot);
    assert_eq!(after.lease_owner.as_deref(), Some("w1"), "a running commit keeps the lease");
    assert_eq!(after.lease_expires_at_ms, created.lease_expires_at_ms);
    assert!(after.updated_at_ms >= created.updated_at_ms);
    // Upserted by key, kept in creation order.
    assert_eq!(store.steps(id).await?, first.steps);

    let question = json!({ "question": "publish?" });
    let paused = Commit {
        status: RunStatus::Paused,
        pause: Some(question.clone()),
        // New and known rows in every status: a known ready row is rewritten too (a retry).
        steps: vec![
            step("ask#0", StepStatus::Paused),
            step("start#0", StepStatus::Failed),
            StepRecord { attempt: 2, ..step("next#0", StepStatus::Ready) },
        ],
        ..commit(id, 1, 2)
    };
    store.commit(paused).await?;
    let after = store.load_run(id).await?;
    assert_eq!((after.status, after.version), (RunStatus::Paused, 3));
    assert_eq!(after.pause, Some(question));
    assert_eq!((after.lease_owner, after.lease_expires_at_ms), (None, None), "at rest releases the lease");
    let keys: Vec<String> =
        store.steps(id).await?.into_iter().map(|s| format!("{}={:?}", s.step_key, s.status)).collect();
    assert_eq!(keys, ["start#0=Failed", "next#0=Ready", "ask#0=Paused"]);
    assert_eq!(store.steps(id).await?[1].attempt, 2);

    let claim = store.claim(id, "w2", LONG).await?;
    let failed = Commit {
        status: RunStatus::Failed,
        error: Some("method `ask` failed".into()),
        output: Some(Value::Null),
        ..commit(id, claim.epoch, 3)
    };
    store.commit(failed).await?;
    let after = store.load_run(id).await?;
    assert_eq!(after.status, RunStatus::Failed);
    assert_eq!(after.error.as_deref(), Some("method `ask` failed"));
    assert_eq!(after.output, Some(Value::Null), "Some(null) output is not None");
    assert_eq!(after.pause, None, "each commit sets the pause request");
    Ok(())
}

async fn retention(store: &dyn Store) -> TestResult {
    let run = new_run("conformance", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    let commits = KEEP as u64 + 2;
    for n in 1..=commits {
        store.commit(commit(id, 1, n)).await?;
    }
    let total = commits + 1;
    let history = store.checkpoints(id).await?;
    let seqs: Vec<u64> = history.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, ((total - KEEP as u64 + 1)..=total).collect::<Vec<_>>(), "the newest KEEP remain");
    let last = history.last().ok_or("no checkpoints")?;
    assert_eq!(last.step_key.as_deref(), Some(format!("m#{commits}").as_str()));
    assert_eq!(last.status, RunStatus::Running);
    assert_eq!(store.load_checkpoint(id, total).await?, snapshot(commits));
    assert_eq!(store.load_run(id).await?.version, total);
    match store.load_checkpoint(id, 1).await {
        Err(StoreError::CheckpointNotFound { run_id, seq: 1 }) if run_id == id => Ok(()),
        other => Err(format!("pruned checkpoint: expected CheckpointNotFound, got {other:?}").into()),
    }
}

async fn journal_first_writer_wins(store: &dyn Store) -> TestResult {
    let run = new_run("conformance", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    let first = JournalEntry {
        run_id: id,
        step_key: "write#0".into(),
        seq: 0,
        kind: "llm".into(),
        name: "gpt".into(),
        request_hash: u64::MAX,
        output: json!({ "text": "first" }),
    };
    assert_eq!(store.journal_put(first.clone()).await?, first);
    let second = JournalEntry { output: json!({ "text": "second" }), request_hash: 7, ..first.clone() };
    assert_eq!(store.journal_put(second).await?, first, "the first recorded result wins");
    assert_eq!(store.journal_get(id, "write#0", 0).await?, Some(first.clone()));
    assert_eq!(store.journal_get(id, "write#0", 1).await?, None);
    assert_eq!(store.journal_get(id, "other#0", 0).await?, None);
    let next = JournalEntry { seq: 1, output: Value::Null, request_hash: 0, ..first.clone() };
    assert_eq!(store.journal_put(next.clone()).await?, next);
    // The whole journal in one read, by step key and then position.
    let earlier = JournalEntry { step_key: "draft#0".into(), kind: "tool".into(), ..first.clone() };
    store.journal_put(earlier.clone()).await?;
    assert_eq!(store.journal(id).await?, [earlier, first, next]);
    Ok(())
}

async fn listing(store: &dyn Store) -> TestResult {
    let flow = format!("listing-{}", Uuid::new_v4());
    let mut records = Vec::new();
    for _ in 0..4 {
        let run = new_run(&flow, "w1", LONG);
        let id = run.run_id;
        store.create_run(run).await?;
        records.push(store.load_run(id).await?);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let done = records[1].run_id;
    store.commit(Commit { status: RunStatus::Completed, ..commit(done, 1, 1) }).await?;
    let paused = records[2].run_id;
    store
        .commit(Commit { status: RunStatus::Paused, pause: Some(json!({ "question": "ok?" })), ..commit(paused, 1, 1) })
        .await?;
    records.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.run_id.cmp(&a.run_id)));
    let expected: Vec<Uuid> = records.iter().map(|r| r.run_id).collect();

    let by_flow = RunFilter { flow: Some(flow.clone()), ..RunFilter::default() };
    let ids = |v: Vec<flow_core::store::RunSummary>| v.into_iter().map(|s| s.run_id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_runs(&by_flow).await?), expected, "newest first");
    let limited = RunFilter { limit: Some(2), ..by_flow.clone() };
    assert_eq!(ids(store.list_runs(&limited).await?), expected[..2]);
    let completed = RunFilter { status: Some(RunStatus::Completed), ..by_flow.clone() };
    let found = store.list_runs(&completed).await?;
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].run_id, found[0].status, found[0].flow.as_str()), (done, RunStatus::Completed, flow.as_str()));
    let running = RunFilter { status: Some(RunStatus::Running), ..by_flow };
    assert_eq!(store.list_runs(&running).await?.len(), 2);

    let all = store.list_runs(&RunFilter::default()).await?;
    assert!(!expected.is_empty() && expected.iter().all(|id| all.iter().any(|s| s.run_id == *id)));
    assert!(
        all.windows(2).all(|w| (w[0].created_at_ms, w[0].run_id) >= (w[1].created_at_ms, w[1].run_id)),
        "unfiltered listing is newest first"
    );
    let paused_anywhere = RunFilter { status: Some(RunStatus::Paused), ..RunFilter::default() };
    let paused_runs = store.list_runs(&paused_anywhere).await?;
    // Other checks sharing the store may have left paused runs of their own: this one must be
    // among them, and nothing else.
    assert!(paused_runs.iter().any(|s| s.run_id == paused), "{paused_runs:?}");
    assert!(paused_runs.iter().all(|s| s.status == RunStatus::Paused), "{paused_runs:?}");
    Ok(())
}

/// Milliseconds since the Unix epoch, now, on this machine's clock (the tests' database runs on
/// the same machine, so due times an hour away are on the same side for both).
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A queue name no other check uses, so checks sharing a store do not claim each other's runs.
fn fresh_queue(what: &str) -> String {
    format!("{what}-{}", Uuid::new_v4().simple())
}

/// A run submitted to `queue` (with an optional concurrency key), due at `available_at_ms`.
pub fn queued_run(flow: &str, queue: &str, key: Option<&str>, available_at_ms: Option<i64>) -> NewRun {
    let mut placement = Placement::in_queue(queue);
    placement.key = key.map(str::to_string);
    NewRun { start: Start::Queued { available_at_ms }, placement, ..new_run(flow, "unused", LONG) }
}

/// A claim of up to `max` runs of `flows` in `queues`, for `owner`, with a long lease.
pub fn request(owner: &str, flows: &[&str], queues: Vec<QueueLimit>, max: usize) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_string(),
        lease: LONG,
        flows: flows.iter().map(|f| f.to_string()).collect(),
        queues,
        max,
    }
}

fn ids(claims: &[Claim]) -> Vec<Uuid> {
    claims.iter().map(|c| c.run.run_id).collect()
}

/// Every check of queued runs, in turn. `stores` are handles on the same runs (clones, or
/// stores opened on the same file or database, like separate processes), at least two; each
/// check makes its own queues, so the stores may be shared with other checks.
pub async fn check_queues(stores: &[Arc<dyn Store>]) -> TestResult {
    let store = stores.first().ok_or("check_queues needs at least two stores")?.as_ref();
    submit_and_claim_once(store).await?;
    due_times_and_order(store).await?;
    flows_and_queues_filter(store).await?;
    lapsed_and_released_leases(store).await?;
    limits_hold(store).await?;
    limits_hold_under_concurrent_claims(stores).await?;
    answers(store).await?;
    requeue_only_failed(store).await?;
    commit_to_queued(store).await?;
    cancelling(store).await?;
    wait_wakes_on_work_from_another_store(stores).await?;
    Ok(())
}

/// A cancel request: recorded on the run; a run at rest goes back to its queue due now, a
/// running one learns of it at its next renewal (which still extends the lease), and a commit
/// that would bring it to rest waiting queues it instead. Ended runs refuse it.
async fn cancelling(store: &dyn Store) -> TestResult {
    let queue = fresh_queue("cancel");
    let q = || vec![QueueLimit::new(&queue)];

    // Running: marked only.
    let mut run = new_run("cancel", "w1", LONG);
    run.placement = Placement::in_queue(&queue);
    let id = run.run_id;
    store.create_run(run).await?;
    let before = store.load_run(id).await?.lease_expires_at_ms.ok_or("a created run holds a lease")?;
    store.request_cancel(id, "ordered twice").await?;
    store.request_cancel(id, "second thoughts").await?;
    let marked = store.load_run(id).await?;
    assert_eq!(marked.status, RunStatus::Running, "a running run keeps running until its holder learns of it");
    assert_eq!(marked.cancel_requested.as_deref(), Some("ordered twice"), "the first reason stays");
    tokio::time::sleep(Duration::from_millis(5)).await;
    match store.renew(id, 1, LONG).await {
        Err(StoreError::CancelRequested { run_id, reason }) if run_id == id && reason == "ordered twice" => {}
        other => return Err(format!("renewal with a cancel pending: expected CancelRequested, got {other:?}").into()),
    }
    let renewed = store.load_run(id).await?.lease_expires_at_ms.ok_or("the lease is still held")?;
    assert!(renewed > before, "the renewal that says so still extends the lease");
    // The holder pauses before it learned of the request: queued for a worker to cancel it.
    let pause = json!({ "step_key": "ask#0" });
    store.commit(Commit { status: RunStatus::Paused, pause: Some(pause.clone()), ..commit(id, 1, 1) }).await?;
    let requeued = store.load_run(id).await?;
    assert_eq!(requeued.status, RunStatus::Queued, "a pending cancel is never left waiting for a person");
    assert!(requeued.available_at_ms.is_some_and(|t| t <= now_ms() + 1_000), "due now");
    let claims = store.claim_next(&request("canceller", &["cancel"], q(), 5)).await?;
    assert_eq!(ids(&claims), [id]);
    assert_eq!(claims[0].run.cancel_requested.as_deref(), Some("ordered twice"), "the claim carries the request");
    store.commit(Commit { status: RunStatus::Cancelled, ..commit(id, claims[0].epoch, 2) }).await?;
    let cancelled = store.load_run(id).await?;
    assert_eq!((cancelled.status, cancelled.lease_owner), (RunStatus::Cancelled, None));
    match store.request_cancel(id, "again").await {
        Err(StoreError::Ended { run_id, status: RunStatus::Cancelled }) if run_id == id => {}
        other => return Err(format!("cancel of a cancelled run: expected Ended, got {other:?}").into()),
    }
    match store.renew(id, claims[0].epoch, LONG).await {
        Err(StoreError::Released { .. }) => {}
        other => return Err(format!("renewal of a cancelled run: expected Released, got {other:?}").into()),
    }
    assert_eq!(
        store
            .list_runs(&RunFilter { status: Some(RunStatus::Cancelled), ..RunFilter::default() })
            .await?
            .iter()
            .filter(|r| r.run_id == id)
            .count(),
        1,
        "cancelled runs are listed by their status"
    );

    // At rest (paused, parked for an hour): back in the queue, due now.
    let paused = paused_run(store, &queue).await?;
    let mut parked = new_run("cancel", "w1", LONG);
    parked.placement = Placement::in_queue(&queue);
    let parked_id = parked.run_id;
    store.create_run(parked).await?;
    let later = now_ms() + 3_600_000;
    store.commit(Commit { status: RunStatus::Queued, available_at_ms: Some(later), ..commit(parked_id, 1, 1) }).await?;
    for id in [paused, parked_id] {
        store.request_cancel(id, "closing the account").await?;
        let record = store.load_run(id).await?;
        assert_eq!(record.status, RunStatus::Queued);
        assert!(record.available_at_ms.is_some_and(|t| t < later), "due now, not when it was due");
    }
    let answers = store.claim_next(&request("canceller", &["answers"], q(), 5)).await?;
    assert_eq!(ids(&answers), [paused], "the paused run is claimable");
    let parked_claims = store.claim_next(&request("canceller", &["cancel"], q(), 5)).await?;
    assert_eq!(ids(&parked_claims), [parked_id], "the parked run is claimable at once");

    // Completed: refused, nothing written.
    let mut done = new_run("cancel", "w1", LONG);
    done.placement = Placement::in_queue(&queue);
    let done_id = done.run_id;
    store.create_run(done).await?;
    store.commit(Commit { status: RunStatus::Completed, ..commit(done_id, 1, 1) }).await?;
    match store.request_cancel(done_id, "too late").await {
        Err(StoreError::Ended { status: RunStatus::Completed, .. }) => {}
        other => return Err(format!("cancel of a completed run: expected Ended, got {other:?}").into()),
    }
    assert_eq!(store.load_run(done_id).await?.cancel_requested, None, "a refused request leaves nothing");
    let unknown = Uuid::new_v4();
    expect_not_found("request_cancel", unknown, store.request_cancel(unknown, "x").await)?;
    Ok(())
}

/// Sets the creation time of runs, where the store under test can (its tests reach into the
/// database), so that paging can be checked over runs created at the same millisecond.
pub type SetCreated = dyn Fn(Vec<Uuid>, i64) -> Pin<Box<dyn Future<Output = TestResult> + Send>> + Sync;

/// Listing page by page, newest first: the pages together are the whole listing, in order,
/// each run once, also over runs created at the same millisecond (ordered by id then); the
/// creation-time bounds keep what they say.
pub async fn paging(store: &dyn Store, set_created: Option<&SetCreated>) -> TestResult {
    let flow = format!("paging-{}", Uuid::new_v4().simple());
    let mut made = Vec::new();
    for _ in 0..7 {
        let run = queued_run(&flow, &fresh_queue("paging"), None, None);
        made.push(run.run_id);
        store.create_run(run).await?;
    }
    let t = now_ms() - 60_000;
    if let Some(set) = set_created {
        set(made[..5].to_vec(), t).await?;
        set(vec![made[5]], t - 10).await?;
        set(vec![made[6]], t + 10).await?;
    }
    let by_flow = RunFilter { flow: Some(flow.clone()), ..RunFilter::default() };
    let all = store.list_runs(&by_flow).await?;
    assert_eq!(all.len(), 7);
    let order: Vec<(i64, Uuid)> = all.iter().map(|r| (r.created_at_ms, r.run_id)).collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted, "newest first, then by id, descending");

    for filter in [by_flow.clone(), RunFilter { status: Some(RunStatus::Queued), ..by_flow.clone() }] {
        let mut pages = Vec::new();
        let mut page_filter = RunFilter { limit: Some(2), ..filter.clone() };
        loop {
            let page = store.list_runs(&page_filter).await?;
            assert!(page.len() <= 2);
            pages.extend(page.iter().map(|r| r.run_id));
            match page.last() {
                Some(last) if page.len() == 2 => page_filter.after = Some(RunCursor::of(last)),
                _ => break,
            }
        }
        assert_eq!(pages, all.iter().map(|r| r.run_id).collect::<Vec<_>>(), "the pages make the whole listing");
    }
    // A cursor from the middle of the runs created together.
    let middle = &all[3];
    let rest = store.list_runs(&RunFilter { after: Some(RunCursor::of(middle)), ..by_flow.clone() }).await?;
    assert_eq!(
        rest.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        all[4..].iter().map(|r| r.run_id).collect::<Vec<_>>()
    );

    let (from, before) = (all[5].created_at_ms, all[0].created_at_ms);
    let bounded =
        store.list_runs(&RunFilter { created_from_ms: Some(from), created_before_ms: Some(before), ..by_flow }).await?;
    let expected: Vec<Uuid> =
        all.iter().filter(|r| r.created_at_ms >= from && r.created_at_ms < before).map(|r| r.run_id).collect();
    assert_eq!(bounded.iter().map(|r| r.run_id).collect::<Vec<_>>(), expected);
    if set_created.is_some() {
        assert_eq!(all[0].run_id, made[6], "the newest");
        assert_eq!(all[6].run_id, made[5], "the oldest");
        assert_eq!(expected.len(), 5, "the five created at the same millisecond");
        assert!(all[1..6].iter().all(|r| r.created_at_ms == t));
    }
    Ok(())
}

async fn submit_and_claim_once(store: &dyn Store) -> TestResult {
    let queue = fresh_queue("once");
    let run = queued_run("queued", &queue, Some("k1"), None);
    let id = run.run_id;
    assert_eq!(store.create_run(run.clone()).await?, 0, "a queued run starts at epoch 0");
    let record = store.load_run(id).await?;
    assert_eq!(record.status, RunStatus::Queued);
    assert_eq!((record.epoch, record.lease_owner.as_deref(), record.lease_expires_at_ms), (0, None, None));
    assert_eq!(record.placement, run.placement);
    assert_eq!((record.available_at_ms, record.answer.as_ref()), (None, None));
    assert_eq!(store.checkpoints(id).await?[0].status, RunStatus::Queued);
    let summary = store.run_summary(id).await?;
    assert_eq!(
        (summary.status, &summary.placement, summary.available_at_ms),
        (RunStatus::Queued, &run.placement, None)
    );
    let listed = store.list_runs(&RunFilter { flow: Some("queued".into()), ..RunFilter::default() }).await?;
    let listed = listed.iter().find(|s| s.run_id == id).ok_or("the queued run is not listed")?;
    assert_eq!(listed.placement, run.placement);

    let claims = store.claim_next(&request("w1", &["queued"], vec![QueueLimit::new(&queue)], 5)).await?;
    assert_eq!(ids(&claims), [id]);
    let claim = &claims[0];
    assert_eq!(claim.epoch, 1);
    assert_eq!((claim.run.epoch, claim.run.status), (1, RunStatus::Queued), "claimed as it was, its status kept");
    assert_eq!(claim.run.lease_owner.as_deref(), Some("w1"));
    assert_eq!(claim.run.snapshot, run.snapshot);
    assert_eq!(claim.run.placement, run.placement);
    let again = store.claim_next(&request("w2", &["queued"], vec![QueueLimit::new(&queue)], 5)).await?;
    assert!(again.is_empty(), "a claimed run is claimed once: {:?}", ids(&again));
    match store.claim(id, "w3", LONG).await {
        Err(StoreError::Locked { owner, .. }) => assert_eq!(owner, "w1"),
        other => return Err(format!("claim of a run claimed from its queue: expected Locked, got {other:?}").into()),
    }
    // The claimant's first commit moves it on.
    store.commit(commit(id, 1, 1)).await?;
    let record = store.load_run(id).await?;
    assert_eq!((record.status, record.lease_owner.as_deref()), (RunStatus::Running, Some("w1")));
    assert!(store.claim_next(&request("w2", &["queued"], vec![QueueLimit::new(&queue)], 5)).await?.is_empty());
    let nothing = store.claim_next(&request("w2", &["queued"], vec![QueueLimit::new(&queue)], 0)).await?;
    assert!(nothing.is_empty(), "max 0 claims nothing");
    Ok(())
}

async fn due_times_and_order(store: &dyn Store) -> TestResult {
    let queue = fresh_queue("due");
    let now = now_ms();
    let later = queued_run("due", &queue, None, Some(now + 3_600_000));
    let newer = queued_run("due", &queue, None, Some(now - 1_000));
    let older = queued_run("due", &queue, None, Some(now - 2_000));
    for run in [&later, &newer, &older] {
        store.create_run(run.clone()).await?;
    }
    assert_eq!(store.load_run(later.run_id).await?.available_at_ms, Some(now + 3_600_000));
    let q = || vec![QueueLimit::new(&queue)];
    assert_eq!(ids(&store.claim_next(&request("w", &["due"], q(), 1)).await?), [older.run_id], "longest due first");
    assert_eq!(ids(&store.claim_next(&request("w", &["due"], q(), 5)).await?), [newer.run_id]);
    assert!(store.claim_next(&request("w", &["due"], q(), 5)).await?.is_empty(), "a run due in an hour waits");
    Ok(())
}

async fn flows_and_queues_filter(store: &dyn Store) -> TestResult {
    let (queue, other_queue) = (fresh_queue("filter"), fresh_queue("filter-other"));
    let a = queued_run("flow-a", &queue, None, None);
    let b = queued_run("flow-b", &queue, None, None);
    let elsewhere = queued_run("flow-a", &other_queue, None, None);
    for run in [&a, &b, &elsewhere] {
        store.create_run(run.clone()).await?;
    }
    let claims = store.claim_next(&request("w", &["flow-a"], vec![QueueLimit::new(&queue)], 10)).await?;
    assert_eq!(ids(&claims), [a.run_id], "only its flows, only its queues");
    let none = store.claim_next(&request("w", &["flow-a"], vec![], 10)).await?;
    assert!(none.is_empty(), "no queue, no claim");
    let none = store.claim_next(&request("w", &[], vec![QueueLimit::new(&queue)], 10)).await?;
    assert!(none.is_empty(), "no flow, no claim");
    let claims = store
        .claim_next(&request(
            "w",
            &["flow-a", "flow-b"],
            vec![QueueLimit::new(&queue), QueueLimit::new(&other_queue)],
            10,
        ))
        .await?;
    let mut got = ids(&claims);
    got.sort();
    let mut expected = vec![b.run_id, elsewhere.run_id];
    expected.sort();
    assert_eq!(got, expected);
    Ok(())
}

async fn lapsed_and_released_leases(store: &dyn Store) -> TestResult {
    let queue = fresh_queue("lapsed");
    let in_queue = |mut run: NewRun| {
        run.placement = Placement::in_queue(&queue);
        run
    };
    // A worker that died: its run is running under a lease that lapsed.
    let dead = in_queue(new_run("lapsed", "dead", Duration::ZERO));
    let live = in_queue(new_run("lapsed", "alive", LONG));
    let done = in_queue(new_run("lapsed", "w", Duration::ZERO));
    for run in [&dead, &live, &done] {
        store.create_run(run.clone()).await?;
    }
    store.commit(Commit { status: RunStatus::Completed, ..commit(done.run_id, 1, 1) }).await?;
    let q = || vec![QueueLimit::new(&queue)];
    let claims = store.claim_next(&request("heir", &["lapsed"], q(), 10)).await?;
    assert_eq!(ids(&claims), [dead.run_id], "a lapsed lease is claimed, a live one and a finished run are not");
    assert_eq!((claims[0].epoch, claims[0].run.status), (2, RunStatus::Running));
    assert_eq!(claims[0].run.lease_owner.as_deref(), Some("heir"));
    match store.commit(commit(dead.run_id, 1, 1)).await {
        Err(StoreError::Fenced { epoch: 1, current: 2, .. }) => {}
        other => return Err(format!("the dead worker's commit: expected Fenced, got {other:?}").into()),
    }
    // A worker that gives its run back: claimable at once.
    store.release(live.run_id, 1).await?;
    let claims = store.claim_next(&request("next", &["lapsed"], q(), 10)).await?;
    assert_eq!(ids(&claims), [live.run_id]);
    assert_eq!(claims[0].epoch, 2);
    Ok(())
}

/// How many runs of `runs` are held under a live lease now.
async fn held(store: &dyn Store, runs: &[Uuid]) -> Result<usize, Box<dyn Error>> {
    let now = now_ms();
    let mut n = 0;
    for id in runs {
        let r = store.load_run(*id).await?;
        if r.lease_owner.is_some() && r.lease_expires_at_ms.is_some_and(|t| t > now) {
            n += 1;
        }
    }
    Ok(n)
}

async fn limits_hold(store: &dyn Store) -> TestResult {
    // A concurrency limit counts every live lease of the queue, whoever took it.
    let queue = fresh_queue("limited");
    let mut runs = Vec::new();
    for _ in 0..5 {
        let run = queued_run("limited", &queue, None, None);
        runs.push(run.run_id);
        store.create_run(run).await?;
    }
    let limit = || vec![QueueLimit::new(&queue).concurrency(2)];
    let first = store.claim_next(&request("a", &["limited"], limit(), 1)).await?;
    assert_eq!(first.len(), 1);
    let second = store.claim_next(&request("b", &["limited"], limit(), 10)).await?;
    assert_eq!(second.len(), 1, "one more fits beside the one `a` holds");
    assert!(store.claim_next(&request("c", &["limited"], limit(), 10)).await?.is_empty(), "the queue is full");
    assert_eq!(held(store, &runs).await?, 2);
    // A run that comes to rest frees its place.
    store.commit(Commit { status: RunStatus::Completed, ..commit(first[0].run.run_id, first[0].epoch, 1) }).await?;
    assert_eq!(store.claim_next(&request("c", &["limited"], limit(), 10)).await?.len(), 1);
    assert!(store.claim_next(&request("c", &["limited"], limit(), 10)).await?.is_empty());

    // A per-key limit: one run per customer at a time, the others go on.
    let queue = fresh_queue("per-key");
    let mut by_key: Vec<(Uuid, &str)> = Vec::new();
    for key in ["k1", "k1", "k1", "k2", "k2"] {
        let run = queued_run("per-key", &queue, Some(key), None);
        by_key.push((run.run_id, key));
        store.create_run(run).await?;
    }
    let unkeyed = queued_run("per-key", &queue, None, None);
    store.create_run(unkeyed.clone()).await?;
    let limit = || vec![QueueLimit::new(&queue).per_key(1)];
    let claims = store.claim_next(&request("a", &["per-key"], limit(), 10)).await?;
    let key_of = |id: Uuid| by_key.iter().find(|(r, _)| *r == id).map(|(_, k)| *k);
    let mut keys: Vec<Option<&str>> = claims.iter().map(|c| key_of(c.run.run_id)).collect();
    keys.sort();
    assert_eq!(keys, [None, Some("k1"), Some("k2")], "one per key, and runs without a key are not limited by it");
    assert_eq!(claims.iter().find(|c| c.run.placement.key.is_none()).map(|c| c.run.run_id), Some(unkeyed.run_id));
    assert!(store.claim_next(&request("b", &["per-key"], limit(), 10)).await?.is_empty(), "every key is busy");
    // The k1 run ends: the next k1 run goes, and only one.
    let k1 = claims.iter().find(|c| c.run.placement.key.as_deref() == Some("k1")).ok_or("no k1 claim")?;
    store.commit(Commit { status: RunStatus::Completed, ..commit(k1.run.run_id, k1.epoch, 1) }).await?;
    let next = store.claim_next(&request("b", &["per-key"], limit(), 10)).await?;
    assert_eq!(next.iter().map(|c| c.run.placement.key.as_deref()).collect::<Vec<_>>(), [Some("k1")]);

    // Both limits together.
    let queue = fresh_queue("both");
    for key in ["a", "a", "b", "c", "d"] {
        store.create_run(queued_run("both", &queue, Some(key), None)).await?;
    }
    let claims =
        store.claim_next(&request("w", &["both"], vec![QueueLimit::new(&queue).concurrency(3).per_key(1)], 10)).await?;
    assert_eq!(claims.len(), 3);
    let mut keys: Vec<_> = claims.iter().filter_map(|c| c.run.placement.key.clone()).collect();
    keys.dedup();
    assert_eq!(keys.len(), 3, "three different keys: {keys:?}");
    Ok(())
}

/// Eight workers (spread over the stores given, as over processes) claim at the same moment,
/// round after round: the runs held never exceed the queue's limit nor a key's.
async fn limits_hold_under_concurrent_claims(stores: &[Arc<dyn Store>]) -> TestResult {
    const WORKERS: usize = 8;
    const CONCURRENCY: u32 = 3;
    let store = stores[0].as_ref();
    let queue = fresh_queue("race");
    let mut runs = Vec::new();
    for n in 0..24 {
        let key = format!("k{}", n % 4);
        let run = queued_run("race", &queue, Some(&key), None);
        runs.push(run.run_id);
        store.create_run(run).await?;
    }
    let limit = QueueLimit::new(&queue).concurrency(CONCURRENCY).per_key(1);
    let mut finished = 0;
    for round in 0..6 {
        let barrier = Arc::new(tokio::sync::Barrier::new(WORKERS));
        let tasks: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (store, barrier) = (Arc::clone(&stores[w % stores.len()]), Arc::clone(&barrier));
                let request = request(&format!("w{w}"), &["race"], vec![limit.clone()], 2);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim_next(&request).await
                })
            })
            .collect();
        let mut claims = Vec::new();
        for task in tasks {
            claims.extend(task.await??);
        }
        assert!(claims.len() <= CONCURRENCY as usize, "round {round}: {} claimed at once", claims.len());
        let mut keys: Vec<_> = claims.iter().map(|c| c.run.placement.key.clone()).collect();
        keys.sort();
        let claimed = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), claimed, "round {round}: two runs of one key held at once: {keys:?}");
        assert!(held(store, &runs).await? <= CONCURRENCY as usize, "round {round}");
        assert!(!claims.is_empty(), "round {round}: runs were waiting and the queue had room");
        // Finish what was claimed, freeing the places for the next round.
        for claim in claims {
            store.commit(Commit { status: RunStatus::Completed, ..commit(claim.run.run_id, claim.epoch, 1) }).await?;
            finished += 1;
        }
    }
    assert!(finished >= 6);
    Ok(())
}

/// Pauses a leased run at step `ask#0` and returns it.
async fn paused_run(store: &dyn Store, queue: &str) -> Result<Uuid, Box<dyn Error>> {
    let mut run = new_run("answers", "w1", LONG);
    run.placement = Placement::in_queue(queue);
    let id = run.run_id;
    store.create_run(run).await?;
    let pause = json!({ "step_key": "ask#0", "question": "publish?" });
    store.commit(Commit { status: RunStatus::Paused, pause: Some(pause), ..commit(id, 1, 1) }).await?;
    Ok(id)
}

async fn answers(store: &dyn Store) -> TestResult {
    let queue = fresh_queue("answers");
    let id = paused_run(store, &queue).await?;
    let q = || vec![QueueLimit::new(&queue)];
    assert!(store.claim_next(&request("w", &["answers"], q(), 5)).await?.is_empty(), "a paused run waits for a person");

    match store.answer(id, "other#0", json!("yes")).await {
        Err(StoreError::NotWaiting { run_id, status: RunStatus::Paused, waiting_at }) if run_id == id => {
            assert_eq!(waiting_at.as_deref(), Some("ask#0"));
        }
        other => return Err(format!("answer at the wrong step: expected NotWaiting, got {other:?}").into()),
    }
    assert_eq!(store.load_run(id).await?.status, RunStatus::Paused, "a refused answer changes nothing");
    store.answer(id, "ask#0", json!({ "approved": true })).await?;
    let answered = store.load_run(id).await?;
    assert_eq!(answered.status, RunStatus::Queued);
    assert!(answered.available_at_ms.is_some(), "due now");
    let expected = Answer { step_key: "ask#0".into(), value: json!({ "approved": true }) };
    assert_eq!(answered.answer.as_ref(), Some(&expected));
    match store.answer(id, "ask#0", json!("again")).await {
        Err(StoreError::NotWaiting { status: RunStatus::Queued, waiting_at: None, .. }) => {}
        other => return Err(format!("a second answer: expected NotWaiting, got {other:?}").into()),
    }
    assert_eq!(store.load_run(id).await?.answer.as_ref(), Some(&expected), "the first answer stands");

    let claims = store.claim_next(&request("w2", &["answers"], q(), 5)).await?;
    assert_eq!(ids(&claims), [id], "the answered run is back in its queue");
    assert_eq!(claims[0].run.answer.as_ref(), Some(&expected), "the claim carries the answer");
    // The step that asked takes it: the next commit clears it.
    store.commit(commit(id, claims[0].epoch, 2)).await?;
    let after = store.load_run(id).await?;
    assert_eq!((after.status, after.answer, after.available_at_ms), (RunStatus::Running, None, None));

    match store.answer(id, "ask#0", json!("late")).await {
        Err(StoreError::NotWaiting { status: RunStatus::Running, waiting_at: None, .. }) => {}
        other => return Err(format!("answer to a running run: expected NotWaiting, got {other:?}").into()),
    }
    let unknown = Uuid::new_v4();
    expect_not_found("answer", unknown, store.answer(unknown, "ask#0", json!(1)).await)?;
    Ok(())
}

async fn requeue_only_failed(store: &dyn Store) -> TestResult {
    let queue = fresh_queue("requeue");
    let mut run = new_run("requeue", "w1", LONG);
    run.placement = Placement::in_queue(&queue);
    let id = run.run_id;
    store.create_run(run).await?;
    match store.requeue(id).await {
        Err(StoreError::NotWaiting { run_id, status: RunStatus::Running, waiting_at: None }) if run_id == id => {}
        other => return Err(format!("requeue of a running run: expected NotWaiting, got {other:?}").into()),
    }
    store.commit(Commit { status: RunStatus::Failed, error: Some("boom".into()), ..commit(id, 1, 1) }).await?;
    store.requeue(id).await?;
    let record = store.load_run(id).await?;
    assert_eq!(record.status, RunStatus::Queued);
    match store.requeue(id).await {
        Err(StoreError::NotWaiting { status: RunStatus::Queued, .. }) => {}
        other => return Err(format!("requeue of a queued run: expected NotWaiting, got {other:?}").into()),
    }
    let claims = store.claim_next(&request("w2", &["requeue"], vec![QueueLimit::new(&queue)], 5)).await?;
    assert_eq!(ids(&claims), [id]);
    store.commit(Commit { status: RunStatus::Completed, ..commit(id, claims[0].epoch, 2) }).await?;
    match store.requeue(id).await {
        Err(StoreError::NotWaiting { status: RunStatus::Completed, .. }) => {}
        other => return Err(format!("requeue of a completed run: expected NotWaiting, got {other:?}").into()),
    }
    let unknown = Uuid::new_v4();
    expect_not_found("requeue", unknown, store.requeue(unknown).await)?;
    Ok(())
}

/// A timer or a long retry backoff parks a run: it commits itself back to its queue, due later.
async fn commit_to_queued(store: &dyn Store) -> TestResult {
    let queue = fresh_queue("parked");
    let mut run = new_run("parked", "w1", LONG);
    run.placement = Placement::in_queue(&queue).key("k");
    let id = run.run_id;
    store.create_run(run).await?;
    let due = now_ms() + 3_600_000;
    store.commit(Commit { status: RunStatus::Queued, available_at_ms: Some(due), ..commit(id, 1, 1) }).await?;
    let parked = store.load_run(id).await?;
    assert_eq!((parked.status, parked.available_at_ms), (RunStatus::Queued, Some(due)));
    assert_eq!((parked.lease_owner, parked.lease_expires_at_ms), (None, None), "a queued run holds no lease");
    assert_eq!(parked.placement, Placement::in_queue(&queue).key("k"), "its placement is kept");
    let q = || vec![QueueLimit::new(&queue)];
    assert!(store.claim_next(&request("w", &["parked"], q(), 5)).await?.is_empty(), "not before it is due");
    // Claimed directly (an operator resuming it now), then parked due at once.
    let claim = store.claim(id, "op", LONG).await?;
    store.commit(Commit { status: RunStatus::Queued, available_at_ms: None, ..commit(id, claim.epoch, 2) }).await?;
    let claims = store.claim_next(&request("w", &["parked"], q(), 5)).await?;
    assert_eq!(ids(&claims), [id]);
    // A running commit forgets the due time.
    store
        .commit(Commit { status: RunStatus::Running, available_at_ms: Some(due), ..commit(id, claims[0].epoch, 3) })
        .await?;
    assert_eq!(store.load_run(id).await?.available_at_ms, None, "only a queued run has a due time");
    Ok(())
}

/// A worker waiting on one store is woken when a run is submitted through another (another
/// process). The wait's own timeout is an hour, so the waiter finishing at all shows it was
/// woken; the submitter keeps submitting until then, since a wake-up that lands between the
/// waiter's claim and its next wait is only an early wake-up missed (it would poll again).
async fn wait_wakes_on_work_from_another_store(stores: &[Arc<dyn Store>]) -> TestResult {
    let (waiter, submitter) = match stores {
        [a, b, ..] => (Arc::clone(a), Arc::clone(b)),
        _ => return Err("the wake-up check needs two stores".into()),
    };
    let queue = fresh_queue("wake");
    let limits = vec![QueueLimit::new(&queue)];
    let waiting = tokio::spawn({
        let request = request("waiter", &["wake"], limits, 1);
        async move {
            loop {
                waiter.wait_for_work(Duration::from_secs(3600)).await;
                let claims = waiter.claim_next(&request).await?;
                if let Some(claim) = claims.into_iter().next() {
                    return Ok::<_, StoreError>(claim);
                }
            }
        }
    });
    let submitting = async {
        let mut submitted = Vec::new();
        while !waiting.is_finished() {
            let run = queued_run("wake", &queue, None, None);
            submitted.push(run.run_id);
            submitter.create_run(run).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, Box<dyn Error>>(submitted)
    };
    // Only a hang fails here: the waiter should be done long before.
    let submitted = tokio::time::timeout(Duration::from_secs(300), submitting)
        .await
        .map_err(|_| "wait_for_work was never woken by work submitted through another store")??;
    let claim = waiting.await??;
    assert!(submitted.contains(&claim.run.run_id), "the waiter claimed a run it was woken for");
    assert_eq!(claim.run.lease_owner.as_deref(), Some("waiter"));
    Ok(())
}

async fn deleting(store: &dyn Store) -> TestResult {
    let flow = format!("deleting-{}", Uuid::new_v4());
    let held = new_run(&flow, "w1", LONG);
    let held_id = held.run_id;
    store.create_run(held).await?;
    let expires = store.load_run(held_id).await?.lease_expires_at_ms;
    match store.delete_run(held_id).await {
        Err(StoreError::Locked { run_id, owner, expires_at_ms }) => {
            assert_eq!((run_id, owner.as_str(), Some(expires_at_ms)), (held_id, "w1", expires));
        }
        other => return Err(format!("delete of a run under a live lease: expected Locked, got {other:?}").into()),
    }
    assert_eq!(store.load_run(held_id).await?.version, 1, "a refused delete leaves the run whole");
    assert_eq!(store.checkpoints(held_id).await?.len(), 1);

    // A finished run with steps, several checkpoints and a journal goes whole.
    let done = new_run(&flow, "w1", LONG);
    let done_id = done.run_id;
    store.create_run(done).await?;
    for n in 1..=2 {
        store.commit(commit(done_id, 1, n)).await?;
    }
    let entry = JournalEntry {
        run_id: done_id,
        step_key: "m#1".into(),
        seq: 0,
        kind: "llm".into(),
        name: "m".into(),
        request_hash: 1,
        output: json!("recorded"),
    };
    store.journal_put(entry).await?;
    store.commit(Commit { status: RunStatus::Completed, output: Some(json!("out")), ..commit(done_id, 1, 3) }).await?;
    // A fork of it keeps its own rows and the id of its parent.
    let mut child = new_run(&flow, "w2", Duration::ZERO);
    child.parent_run_id = Some(done_id);
    let child_id = child.run_id;
    store.create_run(child).await?;

    store.delete_run(done_id).await?;
    expect_not_found("load_run after delete_run", done_id, store.load_run(done_id).await)?;
    expect_not_found("steps after delete_run", done_id, store.steps(done_id).await)?;
    expect_not_found("checkpoints after delete_run", done_id, store.checkpoints(done_id).await)?;
    expect_not_found("load_checkpoint after delete_run", done_id, store.load_checkpoint(done_id, 4).await)?;
    assert_eq!(store.journal_get(done_id, "m#1", 0).await?, None, "the journal goes with the run");
    expect_not_found("a second delete_run", done_id, store.delete_run(done_id).await)?;
    let listed = store.list_runs(&RunFilter { flow: Some(flow.clone()), ..RunFilter::default() }).await?;
    let listed: Vec<Uuid> = listed.into_iter().map(|s| s.run_id).collect();
    assert!(!listed.contains(&done_id) && listed.contains(&held_id) && listed.contains(&child_id), "{listed:?}");
    let child = store.load_run(child_id).await?;
    assert_eq!((child.parent_run_id, child.version), (Some(done_id), 1));
    assert_eq!(store.steps(child_id).await?.len(), 1);

    // A run whose holder died (its lease lapsed) can be deleted while still `running`.
    assert_eq!(child.status, RunStatus::Running);
    store.delete_run(child_id).await?;
    expect_not_found("load_run of a deleted crashed run", child_id, store.load_run(child_id).await)?;

    // A new run after deletions gets a history of its own, not the deleted runs' leftovers.
    let next = new_run(&flow, "w3", Duration::ZERO);
    let next_id = next.run_id;
    store.create_run(next).await?;
    let history: Vec<u64> = store.checkpoints(next_id).await?.into_iter().map(|c| c.seq).collect();
    assert_eq!(history, [1]);
    let unknown = Uuid::new_v4();
    expect_not_found("delete_run of an unknown run", unknown, store.delete_run(unknown).await)?;
    Ok(())
}

fn stream_records(seqs: std::ops::Range<u64>) -> Vec<StreamRecord> {
    seqs.map(|seq| StreamRecord { seq, at_ms: 1_000 + i64::try_from(seq).unwrap_or(0), item: json!({ "n": seq }) })
        .collect()
}

/// The stream log: appended in batches, read from any point in order, a repeated `seq` left as
/// it was, retention by count, deleted with its run, refused for a run the store does not hold.
async fn stream_log(store: &dyn Store) -> TestResult {
    let run = new_run(&format!("stream-{}", Uuid::new_v4()), "w1", Duration::ZERO);
    let run_id = run.run_id;
    store.create_run(run).await?;
    assert_eq!(store.stream_last_seq(run_id).await?, None);
    store.stream_append(run_id, stream_records(0..3), None).await?;
    store.stream_append(run_id, stream_records(3..5), None).await?;
    let mut again = stream_records(2..3);
    again[0].item = json!("changed");
    store.stream_append(run_id, again, None).await?;
    assert_eq!(store.stream_read(run_id, 0, 100).await?, stream_records(0..5));
    assert_eq!(store.stream_read(run_id, 2, 2).await?, stream_records(2..4));
    assert_eq!(store.stream_read(run_id, 9, 10).await?, []);
    assert_eq!(store.stream_last_seq(run_id).await?, Some(4));

    store.stream_append(run_id, stream_records(5..8), Some(3)).await?;
    assert_eq!(store.stream_read(run_id, 0, 100).await?, stream_records(5..8), "only the newest 3 are kept");

    let unknown = Uuid::new_v4();
    match store.stream_append(unknown, stream_records(0..1), None).await {
        Err(StoreError::NotFound(id)) => assert_eq!(id, unknown),
        other => return Err(format!("stream_append to an unknown run: expected NotFound, got {other:?}").into()),
    }
    assert_eq!(store.stream_read(unknown, 0, 10).await?, []);

    store.delete_run(run_id).await?;
    assert_eq!(store.stream_read(run_id, 0, 100).await?, [], "the log goes with its run");
    assert_eq!(store.stream_last_seq(run_id).await?, None);
    Ok(())
}

/// A run keeps the first trace context given to it, through commits and leases; none for a new
/// run; NotFound for a run the store does not hold.
async fn trace_context(store: &dyn Store) -> TestResult {
    let run = new_run(&format!("trace-{}", Uuid::new_v4()), "w1", LONG);
    let run_id = run.run_id;
    let epoch = store.create_run(run).await?;
    assert_eq!(store.trace_context(run_id).await?, None, "a new run has none");
    let first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let second = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    store.set_trace_context(run_id, first).await?;
    store.set_trace_context(run_id, second).await?;
    assert_eq!(store.trace_context(run_id).await?.as_deref(), Some(first), "the first one is kept");
    store.release(run_id, epoch).await?;
    assert_eq!(store.trace_context(run_id).await?.as_deref(), Some(first), "a released lease keeps it");
    let other = new_run(&format!("trace-{}", Uuid::new_v4()), "w1", LONG);
    let other_id = other.run_id;
    store.create_run(other).await?;
    assert_eq!(store.trace_context(other_id).await?, None, "each run has its own");

    let unknown = Uuid::new_v4();
    match store.set_trace_context(unknown, first).await {
        Err(StoreError::NotFound(id)) => assert_eq!(id, unknown),
        other => return Err(format!("set_trace_context of an unknown run: expected NotFound, got {other:?}").into()),
    }
    match store.trace_context(unknown).await {
        Err(StoreError::NotFound(id)) => assert_eq!(id, unknown),
        other => return Err(format!("trace_context of an unknown run: expected NotFound, got {other:?}").into()),
    }
    Ok(())
}
