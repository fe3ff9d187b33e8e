//! LLM replay through the real journal (`Ctx` on a `SqliteStore`), across processes.
//!
//! A child process (this test binary again, running the ignored entry point below) kicks off a
//! flow whose step calls the model and then dies before the step's checkpoint, as a crash
//! would. The parent resumes the run from the same database file: the step must get the
//! journaled reply without calling the endpoint again. A resume whose prompt changed in between
//! must not be handed the old reply for a different question.

use std::path::Path;
use std::time::Duration;

use flow_core::RunStatus;
use flow_core::prelude::*;
use flow_core::store::{RunFilter, SqliteStore, Store};
use flow_llm::{ChatRequest, LlmExt, Message, OpenAiLlm, Reply, TestServer};
use serde::{Deserialize, Serialize};

/// The child's exit code once the reply is journaled: tells the parent the child got that far.
const DIED_AFTER_THE_CALL: i32 = 42;
const DB_VAR: &str = "FLOW_LLM_REPLAY_DB";
const URL_VAR: &str = "FLOW_LLM_REPLAY_URL";
const PROMPT_VAR: &str = "FLOW_LLM_REPLAY_PROMPT";
const CHILD: &str = "replay::child_runs_the_step_until_its_llm_call_is_journaled";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Answer {
    text: String,
}

struct Oracle {
    llm: OpenAiLlm,
    prompt: String,
    die_after_the_call: bool,
}

#[flow(state = Answer)]
impl Oracle {
    #[start]
    async fn ask(&self, cx: &Ctx<Answer>) -> Result<String> {
        let reply = self.llm.complete(cx, ChatRequest::new(vec![Message::user(self.prompt.clone())])).await?;
        if self.die_after_the_call {
            // The reply is in the journal; the step's checkpoint is not written.
            std::process::exit(DIED_AFTER_THE_CALL);
        }
        let text = reply.content.unwrap_or_default();
        let kept = text.clone();
        cx.update(move |s| s.text = kept.clone());
        Ok(text)
    }
}

fn oracle(base_url: &str, prompt: &str, die_after_the_call: bool) -> Oracle {
    // No retries: every request the server counts is one the step made.
    let llm = OpenAiLlm::builder().base_url(base_url).retry(flow_llm::RetryPolicy::none()).build().unwrap();
    Oracle { llm, prompt: prompt.to_owned(), die_after_the_call }
}

/// The child process's entry point: does nothing unless spawned by the tests below.
#[tokio::test]
#[ignore = "entry point of the child process spawned by the replay tests; does nothing when run alone"]
async fn child_runs_the_step_until_its_llm_call_is_journaled() {
    let (Ok(db), Ok(url), Ok(prompt)) = (std::env::var(DB_VAR), std::env::var(URL_VAR), std::env::var(PROMPT_VAR))
    else {
        return;
    };
    let store = SqliteStore::open(&db).await.unwrap();
    let runner = Runner::new(oracle(&url, &prompt, true)).with_store(store).lease(Duration::from_millis(300));
    let outcome = runner.kickoff(Answer::default()).await;
    panic!("the child should have died inside the step, but the run ended: {outcome:?}");
}

/// Runs the child against `server` and the database at `db`; returns the run it left behind.
async fn crash_after_the_call(server: &TestServer, db: &Path, prompt: &str) -> uuid::Uuid {
    let status = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([CHILD, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DB_VAR, db)
        .env(URL_VAR, server.base_url())
        .env(PROMPT_VAR, prompt)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(DIED_AFTER_THE_CALL), "the child did not die after its LLM call: {status}");
    assert_eq!(server.hits(), 1, "the child called the endpoint once");
    let store = SqliteStore::open(db).await.unwrap();
    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_ne!(runs[0].status, RunStatus::Completed);
    let run_id = runs[0].run_id;
    let entry = store.journal_get(run_id, "ask#1", 0).await.unwrap().expect("the child journaled its LLM call");
    assert_eq!((entry.kind.as_str(), entry.name.as_str()), ("llm", flow_llm::openai::DEFAULT_MODEL));
    assert_eq!(entry.output["content"], "reply #1");
    run_id
}

/// Resumes `run_id` once the dead child's lease has run out.
async fn resume(runner: &Runner<Oracle>, run_id: uuid::Uuid) -> Result<RunOutcome<Answer>, FlowError> {
    loop {
        match runner.resume(run_id).await {
            Err(FlowError::RunLocked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
}

fn numbered_replies(server: &TestServer) {
    server.respond_with(|req| Reply::text(format!("reply #{}", req.index)));
}

#[tokio::test]
async fn a_step_resumed_in_another_process_replays_its_journaled_llm_reply() {
    let server = TestServer::start().await.unwrap();
    numbered_replies(&server);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let run_id = crash_after_the_call(&server, &db, "What is the capital of France?").await;

    let runner = Runner::new(oracle(&server.base_url(), "What is the capital of France?", false))
        .with_store(SqliteStore::open(&db).await.unwrap());
    let run = resume(&runner, run_id).await.unwrap().completed().unwrap();

    assert_eq!(server.hits(), 1, "the resumed step called the endpoint again instead of replaying the journal");
    assert_eq!(run.output::<String>().unwrap(), "reply #1", "the step did not get the journaled reply");
    assert_eq!(run.state.text, "reply #1");
}

#[tokio::test]
async fn a_step_resumed_with_a_changed_prompt_is_not_handed_the_old_reply() {
    let server = TestServer::start().await.unwrap();
    numbered_replies(&server);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let run_id = crash_after_the_call(&server, &db, "What is the capital of France?").await;
    let store = SqliteStore::open(&db).await.unwrap();

    // The prompt was fixed before the resume.
    let fixed =
        Runner::new(oracle(&server.base_url(), "What is the capital of Italy?", false)).with_store(store.clone());
    let err = resume(&fixed, run_id).await.unwrap_err();
    let FlowError::MethodFailed { method, class, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!((method.as_str(), *class), ("ask", ErrorClass::Permanent));
    for part in [
        "non-determinism".to_owned(),
        format!("run {run_id} step `ask#1`"),
        "llm `gpt-4o-mini`".to_owned(),
        "another request".to_owned(),
        format!("Runner::fork({run_id}, None)"),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }
    assert_eq!(server.hits(), 1, "the changed request is neither replayed nor sent");

    // The way the error points to: a fork asks the new question.
    let forked = fixed.fork(run_id, None).await.unwrap().completed().unwrap();
    assert_eq!(forked.output::<String>().unwrap(), "reply #2");
    assert_eq!(server.hits(), 2);
    assert_eq!(server.requests()[1].chat.last_user_text(), Some("What is the capital of Italy?"));

    // And the original run still resumes with the code that made its recorded request.
    let original = Runner::new(oracle(&server.base_url(), "What is the capital of France?", false)).with_store(store);
    let run = resume(&original, run_id).await.unwrap().completed().unwrap();
    assert_eq!(run.output::<String>().unwrap(), "reply #1");
    assert_eq!(server.hits(), 2);
}
