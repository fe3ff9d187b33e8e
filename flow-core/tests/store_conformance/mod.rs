//! The `Store` contract as executable checks, run against every implementation.
//!
//! [`check`] takes any `&dyn Store` built with `keep_checkpoints(KEEP)`; `MemoryStore` is the
//! reference, so a backend that passes behaves like it for every method the executor calls.

use std::error::Error;
use std::time::Duration;

use flow_core::store::{
    CheckpointInfo, Commit, JournalEntry, NewRun, RunFilter, RunStatus, Snapshot, StepRecord, StepStatus, Store,
    StoreError,
};
use serde_json::{Value, json};
use uuid::Uuid;

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
    StepRecord {
        step_key: key.to_string(),
        method: key.split('#').next().unwrap_or(key).to_string(),
        status,
        input: Some(Value::Null),
        output: None,
        error: None,
        attempt: 0,
    }
}

pub fn new_run(flow: &str, owner: &str, lease: Duration) -> NewRun {
    NewRun {
        run_id: Uuid::new_v4(),
        flow: flow.to_string(),
        parent_run_id: None,
        snapshot: snapshot(0),
        steps: vec![step("start#0", StepStatus::Ready)],
        owner: owner.to_string(),
        lease,
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
            created_at_ms: record.created_at_ms
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
    let next = JournalEntry { seq: 1, output: Value::Null, request_hash: 0, ..first };
    assert_eq!(store.journal_put(next.clone()).await?, next);
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
