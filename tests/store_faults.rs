//! Faults at the edge of the store (issue 24): answers given to runs that are not waiting for
//! them, damaged rows next to healthy runs, the store file disappearing under a running
//! process, and the errors that name the run and say what to do.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{
    CheckpointInfo, Claim, Commit, JournalEntry, MemoryStore, NewRun, RunFilter, RunRecord, RunSummary, Snapshot,
    SqliteStore, StepRecord, Store, StoreError,
};
use flow_core::{RunStatus, Worker};
use futures::future::BoxFuture;
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

/// A step that waits until the test lets it go.
struct Hold {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[flow(state = Held, name = "faults_hold")]
impl Hold {
    #[start]
    async fn wait(&self, _cx: &Ctx<Held>) -> Result<()> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn an_answer_to_a_running_run_is_refused_and_the_run_goes_on() {
    for (name, store, _dir) in stores().await {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let runner =
            Runner::new(Hold { entered: entered.clone(), release: release.clone() }).with_shared_store(store.clone());
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

/// Runs `hook` once, at the first claim, before claiming: stands for another process acting
/// on the run between a caller's read of it and its claim.
struct BeforeClaim {
    inner: Arc<dyn Store>,
    hook: Mutex<Option<BoxFuture<'static, ()>>>,
}

#[flow_core::store::async_trait]
impl Store for BeforeClaim {
    async fn create_run(&self, run: NewRun) -> Result<u64, StoreError> {
        self.inner.create_run(run).await
    }
    async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
        self.inner.claim(run_id, owner, lease).await
    }
    async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError> {
        self.inner.renew(run_id, epoch, lease).await
    }
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.inner.commit(commit).await
    }
    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
        self.inner.load_run(run_id).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        self.inner.list_runs(filter).await
    }
    async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
        self.inner.steps(run_id).await
    }
    async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
        self.inner.checkpoints(run_id).await
    }
    async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
        self.inner.load_checkpoint(run_id, seq).await
    }
    async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError> {
        self.inner.journal_get(run_id, step_key, seq).await
    }
    async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError> {
        self.inner.journal_put(entry).await
    }
}

/// Two people answer the first question at once. The second answer used to be handed to a
/// step that no longer waited for it and vanish, with `resume_with` reporting a pause.
#[tokio::test]
async fn an_answer_whose_question_was_answered_meanwhile_is_refused_not_dropped() {
    for (name, store, _dir) in stores().await {
        let runner = Runner::new(Questions).with_shared_store(store.clone());
        let run_id = runner.kickoff(Ask::default()).await.unwrap().run_id();
        let racing = BeforeClaim {
            inner: store.clone(),
            hook: Mutex::new(Some(Box::pin({
                let runner = runner.clone();
                async move {
                    let next = runner.resume_with(run_id, "first answer").await.unwrap();
                    assert_eq!(next.paused().unwrap().request.prompt, "second?");
                }
            }))),
        };
        let late = Runner::new(Questions).with_store(racing);
        let err = late.resume_with(run_id, "second answer to the first question").await.unwrap_err();
        expect_not_waiting(err, run_id, RunStatus::Paused, "second#");

        // The run waits at its second question, with no lease held: it can be answered now.
        let done = late.resume_with(run_id, "b").await.unwrap().completed().unwrap();
        assert_eq!(done.state.answers, ["first answer", "b"], "{name}");
    }
}
