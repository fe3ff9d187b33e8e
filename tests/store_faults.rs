//! Faults at the edge of the store (issue 24): answers given to runs that are not waiting for
//! them, damaged rows next to healthy runs, the store file disappearing under a running
//! process, and the errors that name the run and say what to do.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{
    Commit, MemoryStore, NewRun, Placement, RunFilter, Snapshot, SqliteStore, Start, Store, StoreError,
};
use flow_core::{RunStatus, Worker};
use flow_tests::Intercept;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

/// One store of each kind, with the directory that holds the SQLite file.
async fn stores() -> Vec<(&'static str, Arc<dyn Store>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("runs.db")).await.unwrap();
    vec![("memory", Arc::new(MemoryStore::new()), tempfile::tempdir().unwrap()), ("sqlite", Arc::new(sqlite), dir)]
}

fn sql(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("runs.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// The run's status and version, to show that a refused answer changed nothing.
async fn status_and_version(store: &Arc<dyn Store>, run_id: Uuid) -> (RunStatus, u64, u64) {
    let r = store.load_run(run_id).await.unwrap();
    (r.status, r.version, r.epoch)
}

fn expect_not_waiting(err: FlowError, run_id: Uuid, status: RunStatus, advice: &str) {
    match &err {
        FlowError::NotWaiting { run_id: id, status: found, advice: said } => {
            assert_eq!((*id, *found), (run_id, status), "{err}");
            assert!(said.contains(advice), "advice `{said}` should mention `{advice}`");
            let text = err.to_string();
            assert!(text.contains(&run_id.to_string()) && text.contains(status.as_str()), "{text}");
            assert!(text.contains("not delivered"), "{text}");
        }
        other => panic!("expected NotWaiting for a {status} run, got {other:?}"),
    }
}

// ---------------------------------------------------------------- answers nobody waits for

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Ask {
    answers: Vec<String>,
    fail: bool,
    escalate: bool,
}

struct Questions;

#[flow(state = Ask, name = "faults_questions")]
impl Questions {
    #[start]
    async fn first(&self, cx: &Ctx<Ask>) -> Result<()> {
        if cx.read(|s| s.fail) {
            return Err(Error::permanent("refused on purpose"));
        }
        if cx.read(|s| s.escalate) {
            return Err(Error::escalate("a person must decide"));
        }
        let answer: String = cx.ask(InputRequest::new("first?")).await?;
        cx.update(move |s| s.answers.push(answer.clone()));
        Ok(())
    }
    #[listen(first)]
    async fn second(&self, cx: &Ctx<Ask>) -> Result<()> {
        let answer: String = cx.ask(InputRequest::new("second?")).await?;
        cx.update(move |s| s.answers.push(answer.clone()));
        Ok(())
    }
}

/// A completed run used to take an answer and return its stored result, dropping the answer.
#[tokio::test]
async fn an_answer_to_a_completed_run_is_refused_with_its_status() {
    for (name, store, _dir) in stores().await {
        let runner = Runner::new(Questions).with_shared_store(store.clone());
        let paused = runner.kickoff(Ask::default()).await.unwrap().run_id();
        runner.resume_with(paused, "a").await.unwrap();
        let done = runner.resume_with(paused, "b").await.unwrap().completed().unwrap();
        assert_eq!(done.state.answers, ["a", "b"], "{name}");

        let before = status_and_version(&store, paused).await;
        let err = runner.resume_with(paused, "late").await.unwrap_err();
        expect_not_waiting(err, paused, RunStatus::Completed, "fork");
        assert_eq!(status_and_version(&store, paused).await, before, "{name}: nothing claimed or written");
    }
}

#[tokio::test]
async fn an_answer_to_a_failed_or_escalated_run_is_refused_with_its_status() {
    for (name, store, _dir) in stores().await {
        let runner = Runner::new(Questions).with_shared_store(store.clone());
        let failed = match runner.kickoff(Ask { fail: true, ..Ask::default() }).await {
            Err(FlowError::MethodFailed { run_id, .. }) => run_id,
            other => panic!("{name}: expected a failure, got {other:?}"),
        };
        let before = status_and_version(&store, failed).await;
        let err = runner.resume_with(failed, "x").await.unwrap_err();
        expect_not_waiting(err, failed, RunStatus::Failed, "Runner::resume");
        assert_eq!(status_and_version(&store, failed).await, before, "{name}");

        let escalated = runner.kickoff(Ask { escalate: true, ..Ask::default() }).await.unwrap();
        assert_eq!(escalated.status(), RunStatus::Escalated);
        let escalated = escalated.run_id();
        let before = status_and_version(&store, escalated).await;
        let err = runner.resume_with(escalated, "x").await.unwrap_err();
        expect_not_waiting(err, escalated, RunStatus::Escalated, "fork");
        assert_eq!(status_and_version(&store, escalated).await, before, "{name}");
    }
}

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Held;

/// A second step that, when `gate` is set, waits until the test lets it go.
struct Hold {
    gate: Option<(Arc<Notify>, Arc<Notify>)>,
}

impl Hold {
    fn gated() -> (Self, Arc<Notify>, Arc<Notify>) {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        (Hold { gate: Some((entered.clone(), release.clone())) }, entered, release)
    }
}

#[flow(state = Held, name = "faults_hold")]
impl Hold {
    #[start]
    async fn before(&self, _cx: &Ctx<Held>) -> Result<()> {
        Ok(())
    }
    #[listen(before)]
    async fn wait(&self, _cx: &Ctx<Held>) -> Result<()> {
        if let Some((entered, release)) = &self.gate {
            entered.notify_one();
            release.notified().await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_answer_to_a_running_run_is_refused_and_the_run_goes_on() {
    for (name, store, _dir) in stores().await {
        let (hold, entered, release) = Hold::gated();
        let runner = Runner::new(hold).with_shared_store(store.clone());
        let running = tokio::spawn({
            let runner = runner.clone();
            async move { runner.kickoff(Held).await }
        });
        entered.notified().await;
        let run_id = store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;

        let before = status_and_version(&store, run_id).await;
        let err = runner.resume_with(run_id, "x").await.unwrap_err();
        expect_not_waiting(err, run_id, RunStatus::Running, runner.worker());
        assert_eq!(status_and_version(&store, run_id).await, before, "{name}: the lease was not touched");

        release.notify_one();
        assert_eq!(running.await.unwrap().unwrap().status(), RunStatus::Completed, "{name}");
    }
}

/// The worker's way to answer goes through the same checks.
#[tokio::test]
async fn a_worker_refuses_an_answer_nobody_waits_for() {
    for (name, store, _dir) in stores().await {
        let runner = Runner::new(Questions).with_shared_store(store.clone());
        let worker = Worker::new(store.clone()).register(Questions);
        let run_id = runner.kickoff(Ask::default()).await.unwrap().run_id();
        assert_eq!(worker.resume_with(run_id, "a".into()).await.unwrap(), RunStatus::Paused, "{name}");
        assert_eq!(worker.resume_with(run_id, "b".into()).await.unwrap(), RunStatus::Completed, "{name}");
        let before = status_and_version(&store, run_id).await;
        let err = worker.resume_with(run_id, "c".into()).await.unwrap_err();
        expect_not_waiting(err, run_id, RunStatus::Completed, "fork");
        assert_eq!(status_and_version(&store, run_id).await, before, "{name}");
    }
}

/// Two people answer the first question at once. The second answer used to be handed to a
/// step that no longer waited for it and vanish, with `resume_with` reporting a pause.
#[tokio::test]
async fn an_answer_whose_question_was_answered_meanwhile_is_refused_not_dropped() {
    for (name, store, _dir) in stores().await {
        let runner = Runner::new(Questions).with_shared_store(store.clone());
        let run_id = runner.kickoff(Ask::default()).await.unwrap().run_id();
        // Another process answers the first question between this caller's read and its claim.
        let racing = Intercept::new(store.clone());
        *racing.before_claim.lock().unwrap() = Some(Box::pin({
            let runner = runner.clone();
            async move {
                let next = runner.resume_with(run_id, "first answer").await.unwrap();
                assert_eq!(next.paused().unwrap().request.prompt, "second?");
            }
        }));
        let late = Runner::new(Questions).with_store(racing);
        let err = late.resume_with(run_id, "second answer to the first question").await.unwrap_err();
        expect_not_waiting(err, run_id, RunStatus::Paused, "second#");

        // The run waits at its second question, with no lease held: it can be answered now.
        let done = late.resume_with(run_id, "b").await.unwrap().completed().unwrap();
        assert_eq!(done.state.answers, ["first answer", "b"], "{name}");
    }
}

// ---------------------------------------------------------------- damaged rows

/// Damages one run's row behind the store's back.
fn damage(dir: &Path, sql_text: &str, run_id: Uuid) {
    let changed = sql(dir).execute(sql_text, [run_id.to_string()]).unwrap();
    assert_eq!(changed, 1, "{sql_text}");
}

fn damaged_ids(damaged: &[flow_core::store::DamagedRun]) -> Vec<Uuid> {
    sorted(damaged.iter().map(|d| d.run_id).collect())
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

fn expect_corrupt(error: &StoreError, run_id: Uuid, what: &str) {
    match error {
        StoreError::Corrupt { run_id: id, what: found, .. } if *id == run_id && found.contains(what) => {
            let text = error.to_string();
            assert!(text.contains(&run_id.to_string()) && text.contains("fork the run"), "{text}");
        }
        other => panic!("expected Corrupt({run_id}, {what}), got {other:?}"),
    }
}

/// A listing used to fail as a whole on the first row it could not decode, so one bad row hid
/// every run from `runs`, `paused_runs` and `list_runs`.
#[tokio::test]
async fn one_damaged_row_does_not_stop_listing_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap());
    let runner = Runner::new(Questions).with_shared_store(store.clone());
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(runner.kickoff(Ask::default()).await.unwrap().run_id());
    }
    let [bad_pause_json, bad_status, bad_request, good] = ids[..] else { unreachable!() };
    damage(dir.path(), "UPDATE flow_runs SET pause = '{\"step_key\": ' WHERE run_id = ?1", bad_pause_json);
    damage(dir.path(), "UPDATE flow_runs SET status = 'exploded' WHERE run_id = ?1", bad_status);
    damage(dir.path(), "UPDATE flow_runs SET pause = '{\"asked\": 1}' WHERE run_id = ?1", bad_request);

    let all = runner.runs(RunFilter::default()).await.unwrap();
    assert_eq!(sorted(all.iter().map(|r| r.run_id).collect()), sorted(vec![bad_request, good]));
    assert_eq!(damaged_ids(&all.damaged), sorted(vec![bad_pause_json, bad_status]));
    for d in &all.damaged {
        expect_corrupt(&d.error, d.run_id, if d.run_id == bad_status { "status" } else { "pause" });
    }
    // The plain listing leaves them out rather than failing.
    assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap().len(), 2);

    let paused = runner.paused_runs().await.unwrap();
    assert_eq!(paused.iter().map(|p| p.run_id).collect::<Vec<_>>(), [good]);
    assert_eq!(damaged_ids(&paused.damaged), sorted(vec![bad_pause_json, bad_request]));
    for d in &paused.damaged {
        expect_corrupt(&d.error, d.run_id, "pause");
    }
    // The healthy run is answered as ever.
    let next = runner.resume_with(good, "a").await.unwrap();
    assert_eq!(next.paused().unwrap().request.prompt, "second?");
}

/// `run_summary` is what a listing says of the run, on every store.
#[tokio::test]
async fn a_run_summary_matches_its_listing() {
    for (name, store, _dir) in stores().await {
        let runner = Runner::new(Questions).with_shared_store(store.clone());
        let run_id = runner.kickoff(Ask::default()).await.unwrap().run_id();
        let listed = store.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(store.run_summary(run_id).await.unwrap(), listed[0], "{name}");
        let unknown = Uuid::now_v7();
        assert!(matches!(store.run_summary(unknown).await, Err(StoreError::NotFound(id)) if id == unknown), "{name}");
    }
}

/// On any store: a paused run whose stored request is not a request is reported, not fatal.
#[tokio::test]
async fn a_pause_request_that_does_not_decode_is_reported_for_its_run_alone() {
    for (name, store, _dir) in stores().await {
        let runner = Runner::new(Questions).with_shared_store(store.clone());
        let good = runner.kickoff(Ask::default()).await.unwrap().run_id();
        let bad = runner.kickoff(Ask::default()).await.unwrap().run_id();
        // A writer that stored something else as the request (a bug, or another version).
        let claim = store.claim(bad, "test", Duration::from_secs(60)).await.unwrap();
        store
            .commit(Commit {
                run_id: bad,
                epoch: claim.epoch,
                status: RunStatus::Paused,
                snapshot: claim.run.snapshot,
                steps: Vec::new(),
                step_key: None,
                output: None,
                error: None,
                pause: Some(serde_json::json!("not a request")),
                available_at_ms: None,
            })
            .await
            .unwrap();
        let paused = runner.paused_runs().await.unwrap();
        assert_eq!(paused.iter().map(|p| p.run_id).collect::<Vec<_>>(), [good], "{name}");
        assert_eq!(damaged_ids(&paused.damaged), [bad], "{name}");
        expect_corrupt(&paused.damaged[0].error, bad, "pause request");
    }
}

/// A paused run with a damaged step row fails to resume with the damage named, every time:
/// the failed attempt used to keep the lease it had taken, so the next attempt was told the
/// run was locked by this very process.
#[tokio::test]
async fn a_damaged_step_row_fails_its_run_every_time_without_locking_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap());
    let runner = Runner::new(Questions).with_shared_store(store.clone());
    let run_id = runner.kickoff(Ask::default()).await.unwrap().run_id();
    runner.resume_with(run_id, "a").await.unwrap();
    damage(dir.path(), "UPDATE flow_steps SET status = 'melted' WHERE run_id = ?1 AND step_key = 'first#1'", run_id);
    for attempt in 0..2 {
        match runner.resume_with(run_id, "b").await.unwrap_err() {
            FlowError::Store(e) => expect_corrupt(&e, run_id, "step `first#1` status"),
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(store.load_run(run_id).await.unwrap().lease_owner, None, "no lease left behind");
}

/// Runs a `faults_hold` run into its second step, then drops it there, as a process that
/// died would, and lets its lease lapse.
async fn left_running(store: &Arc<dyn Store>, dir: &Path) -> Uuid {
    let (hold, entered, _release) = Hold::gated();
    let runner = Runner::new(hold).with_shared_store(store.clone());
    let known: Vec<Uuid> = store.list_runs(&RunFilter::default()).await.unwrap().iter().map(|r| r.run_id).collect();
    let task = tokio::spawn(async move { runner.kickoff(Held).await });
    entered.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let listed = store.list_runs(&RunFilter::default()).await.unwrap();
    let run_id = listed.iter().map(|r| r.run_id).find(|id| !known.contains(id)).unwrap();
    damage(dir, "UPDATE flow_runs SET lease_expires_at = 0 WHERE run_id = ?1", run_id);
    run_id
}

/// A run a dead process left running has asked nothing either: the answer is refused, with
/// the advice to resume it first.
#[tokio::test]
async fn an_answer_to_an_interrupted_run_is_refused_with_advice_to_resume_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap());
    let run_id = left_running(&store, dir.path()).await;
    let before = status_and_version(&store, run_id).await;
    let runner = Runner::new(Hold { gate: None }).with_shared_store(store.clone());
    let err = runner.resume_with(run_id, "x").await.unwrap_err();
    expect_not_waiting(err, run_id, RunStatus::Running, "interrupted");
    assert_eq!(status_and_version(&store, run_id).await, before, "not claimed");
    assert_eq!(runner.resume(run_id).await.unwrap().status(), RunStatus::Completed);
}

/// Recovery used to stop at the listing when one stuck run's row was damaged, leaving every
/// other stuck run where it was.
#[tokio::test]
async fn one_damaged_run_does_not_stop_recovering_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap());
    let healthy = left_running(&store, dir.path()).await;
    let bad_state = left_running(&store, dir.path()).await;
    let bad_step = left_running(&store, dir.path()).await;
    let bad_row = left_running(&store, dir.path()).await;
    damage(
        dir.path(),
        "UPDATE flow_checkpoints SET state = '{\"oops' WHERE run_id = ?1 \
         AND seq = (SELECT MAX(seq) FROM flow_checkpoints WHERE run_id = ?1)",
        bad_state,
    );
    damage(dir.path(), "UPDATE flow_steps SET status = 'melted' WHERE run_id = ?1", bad_step);
    damage(dir.path(), "UPDATE flow_runs SET pause = '[' WHERE run_id = ?1", bad_row);

    let worker = Worker::new(store.clone()).register(Hold { gate: None });
    let recovered = worker.recover().await.unwrap();
    let seen = sorted(recovered.iter().map(|(id, _)| *id).collect());
    assert_eq!(seen, sorted(vec![healthy, bad_state, bad_step, bad_row]), "{recovered:?}");
    let expected = [(bad_state, "state"), (bad_step, "step `before#1` status"), (bad_row, "pause")];
    for (id, result) in &recovered {
        match result {
            Ok(status) => assert_eq!((*id, *status), (healthy, RunStatus::Completed)),
            Err(FlowError::Store(e)) => {
                let (_, what) = expected.iter().find(|(bad, _)| bad == id).unwrap_or_else(|| panic!("{id}: {e}"));
                expect_corrupt(e, *id, what);
            }
            Err(other) => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(store.load_run(healthy).await.unwrap().status, RunStatus::Completed);
}

/// Forking used to load the run's latest snapshot first, whatever checkpoint it forked from,
/// so a damaged latest state made every earlier, intact checkpoint unreachable.
#[tokio::test]
async fn a_run_whose_latest_state_is_damaged_forks_from_an_earlier_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap());
    let runner = Runner::new(Hold { gate: None }).with_shared_store(store.clone());
    let run_id = runner.kickoff(Held).await.unwrap().run_id();
    let checkpoints = store.checkpoints(run_id).await.unwrap();
    let latest = checkpoints.last().unwrap().seq;
    let after_before = checkpoints.iter().find(|c| c.step_key.as_deref() == Some("before#1")).unwrap().seq;
    assert!(after_before < latest);
    damage(
        dir.path(),
        "UPDATE flow_checkpoints SET state = 'truncat' WHERE run_id = ?1 \
         AND seq = (SELECT MAX(seq) FROM flow_checkpoints WHERE run_id = ?1)",
        run_id,
    );

    let fork = runner.fork(run_id, Some(after_before)).await.unwrap();
    assert_eq!(fork.status(), RunStatus::Completed);
    assert_ne!(fork.run_id(), run_id);
    // The damaged checkpoint itself is reported, naming the run.
    for at in [None, Some(latest)] {
        match runner.fork(run_id, at).await.unwrap_err() {
            FlowError::Store(e) => expect_corrupt(&e, run_id, "state"),
            other => panic!("fork at {at:?}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- the store file disappears

#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// `rm runs.db`
    Delete,
    /// `mv other.db runs.db`: another database now has the path.
    Replace,
    /// `rm -r` of the store's directory.
    RemoveDirectory,
}

/// The run's first step is committed, then the store's file goes away while its second step
/// runs. SQLite goes on writing to the file it opened, so the run used to complete, report
/// `Completed`, and leave nothing of its completion in any file anybody could open.
async fn a_run_whose_store_vanishes(vanish: Vanish) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("runs.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let (hold, entered, release) = Hold::gated();
    let runner = Runner::new(hold).with_store(store.clone());
    let task = tokio::spawn(async move { runner.kickoff(Held).await });
    entered.notified().await;
    let run_id = store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;

    match vanish {
        Vanish::Delete => std::fs::remove_file(&path).unwrap(),
        Vanish::Replace => {
            let other = root.path().join("other.db");
            drop(SqliteStore::open(&other).await.unwrap());
            std::fs::rename(&other, &path).unwrap();
        }
        Vanish::RemoveDirectory => std::fs::remove_dir_all(&dir).unwrap(),
    }
    release.notify_one();

    let err = task.await.unwrap().expect_err("the completion could not be stored: the run must not complete");
    let what = match vanish {
        Vanish::Delete => "was deleted",
        Vanish::Replace => "was replaced",
        Vanish::RemoveDirectory => "was deleted with its directory",
    };
    match &err {
        FlowError::Store(StoreError::Gone { run_id: Some(id), path: shown, what: found }) => {
            assert_eq!(*id, run_id, "{err}");
            assert!(shown.ends_with("runs.db"), "{err}");
            assert!(found.starts_with(what), "{vanish:?}: {err}");
        }
        other => panic!("{vanish:?}: expected Gone, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&run_id.to_string()) && text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("resume the run"), "{text}");

    // Every later write is refused too, whichever run it is for, and so are reads: they would
    // see another file than the one written, or none.
    match store.create_run(a_new_run()).await {
        Err(StoreError::Gone { .. }) => {}
        other => panic!("{vanish:?}: a write after the loss: expected Gone, got {other:?}"),
    }
    match store.load_run(run_id).await {
        Err(StoreError::Gone { run_id: Some(id), .. }) => assert_eq!(id, run_id),
        other => panic!("{vanish:?}: a read after the loss: expected Gone, got {other:?}"),
    }
    assert!(matches!(store.list_runs(&RunFilter::default()).await, Err(StoreError::Gone { run_id: None, .. })));
}

/// A new run's row; its contents do not matter.
fn a_new_run() -> NewRun {
    NewRun {
        run_id: Uuid::now_v7(),
        flow: "faults_hold".into(),
        parent_run_id: None,
        snapshot: Snapshot::encode(&serde_json::json!(null), &serde_json::json!({})).unwrap(),
        steps: Vec::new(),
        start: Start::Leased { owner: "test".into(), lease: Duration::from_secs(60) },
        placement: Placement::default(),
        graph: None,
    }
}

#[tokio::test]
async fn a_store_file_deleted_under_a_run_fails_its_next_commit() {
    a_run_whose_store_vanishes(Vanish::Delete).await;
}

#[tokio::test]
async fn a_store_file_replaced_under_a_run_fails_its_next_commit() {
    a_run_whose_store_vanishes(Vanish::Replace).await;
}

#[tokio::test]
async fn a_store_directory_removed_under_a_run_fails_its_next_commit() {
    a_run_whose_store_vanishes(Vanish::RemoveDirectory).await;
}

/// Deleting only the write-ahead log loses every commit not yet checkpointed into the main
/// file: the writer notices that too.
#[tokio::test]
async fn a_write_ahead_log_deleted_under_a_run_fails_its_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let (hold, entered, release) = Hold::gated();
    let runner = Runner::new(hold).with_store(store.clone());
    let task = tokio::spawn(async move { runner.kickoff(Held).await });
    entered.notified().await;
    std::fs::remove_file(dir.path().join("runs.db-wal")).unwrap();
    release.notify_one();
    match task.await.unwrap() {
        Err(FlowError::Store(StoreError::Gone { what, .. })) => assert!(what.contains("write-ahead log"), "{what}"),
        other => panic!("expected Gone, got {other:?}"),
    }
}

// ---------------------------------------------------------------- errors that say what to do

/// The run's lease is taken over while its step runs (as when this process stalled past the
/// lease): its next commit is fenced, and the error names the run and says what happens next.
#[tokio::test]
async fn a_lost_lease_names_the_run_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).await.unwrap();
    let (hold, entered, release) = Hold::gated();
    let runner = Runner::new(hold).with_store(store.clone());
    let task = tokio::spawn(async move { runner.kickoff(Held).await });
    entered.notified().await;
    let run_id = store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;
    damage(dir.path(), "UPDATE flow_runs SET lease_expires_at = 0 WHERE run_id = ?1", run_id);
    store.claim(run_id, "another worker", Duration::from_secs(60)).await.unwrap();
    release.notify_one();

    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, FlowError::LeaseLost { run_id: id } if id == run_id), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&run_id.to_string()), "{text}");
    assert!(text.contains("resume the run once its lease expires"), "says what to do: {text}");
}

// ------------------------------------------------------------------ a store failing under a step

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Charged {
    receipt: String,
}

struct Charge {
    bodies: Arc<std::sync::atomic::AtomicU32>,
}

#[flow(state = Charged, name = "faults_charge")]
impl Charge {
    #[start]
    async fn charge(&self, cx: &Ctx<Charged>) -> Result<()> {
        let bodies = Arc::clone(&self.bodies);
        let receipt: String = cx
            .effect("charge", |key| async move {
                bodies.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(format!("r:{key}"))
            })
            .await?;
        cx.update(move |s| s.receipt = receipt.clone());
        Ok(())
    }
}

/// A journal write that fails while the database restarts is tried again: the step goes on.
#[tokio::test]
async fn a_journal_write_failing_for_a_moment_is_retried() {
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(2));
    let mut store = Intercept::new(Arc::new(MemoryStore::new()));
    let left = Arc::clone(&failures);
    store.refuse_journal = Box::new(move |_| {
        let n = left.load(std::sync::atomic::Ordering::SeqCst);
        (n > 0).then(|| {
            left.store(n - 1, std::sync::atomic::Ordering::SeqCst);
            StoreError::Backend("connection closed (the database is restarting)".into())
        })
    });
    let flow = Charge { bodies: Arc::default() };
    let bodies = Arc::clone(&flow.bodies);
    let run = Runner::new(flow).with_store(store).kickoff(Charged::default()).await.unwrap().completed().unwrap();
    assert!(run.state.receipt.starts_with("r:"), "{:?}", run.state);
    assert_eq!(failures.load(std::sync::atomic::Ordering::SeqCst), 0, "both failures were met");
    assert_eq!(bodies.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A store that keeps failing under a step does not fail the run: the execution stops with the
/// store's error, the run stays as its last checkpoint left it (running, no step recorded as
/// failed), and it completes once the store answers again.
#[tokio::test]
async fn a_store_failing_under_a_step_leaves_the_run_to_continue() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut store = Intercept::new(Arc::clone(&inner));
    let is_down = Arc::clone(&down);
    store.refuse_journal = Box::new(move |_| {
        is_down
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| StoreError::Backend("cannot reach the database (connection refused)".into()))
    });
    let store: Arc<dyn Store> = Arc::new(store);
    let flow = Charge { bodies: Arc::default() };
    let bodies = Arc::clone(&flow.bodies);
    let runner = Runner::new(flow).with_shared_store(Arc::clone(&store)).lease(Duration::from_millis(100));
    let err = runner.kickoff(Charged::default()).await.unwrap_err();
    let FlowError::Store(e) = &err else { panic!("expected the store's error, got {err:?}") };
    let text = e.to_string();
    assert!(text.contains("nothing was recorded as failed") && text.contains("connection refused"), "{text}");
    let run_id = store.list_runs(&RunFilter::default()).await.unwrap()[0].run_id;
    let record = store.load_run(run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Running, "not failed for the store's sake");
    assert!(store.steps(run_id).await.unwrap().iter().all(|s| s.status != flow_core::store::StepStatus::Failed));

    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let done = flow_tests::resume_when_free(&runner, store.as_ref(), run_id).await.unwrap().completed().unwrap();
    assert!(done.state.receipt.starts_with(&format!("r:{run_id}:")), "{:?}", done.state);
    // The effect ran in the first execution, but its result never reached the journal.
    assert_eq!(bodies.load(std::sync::atomic::Ordering::SeqCst), 2);
}
