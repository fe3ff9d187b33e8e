//! What a run leaves in its store for a program without the flow's code: its graph, each step's
//! timings and token usage, and a pending question with the JSON Schema of its answer.
#![cfg(feature = "sqlite")]

use std::sync::Arc;

use flow_core::TokenUsage;
use flow_core::prelude::*;
use flow_core::schemars::JsonSchema;
use flow_core::store::{RunStatus, SqliteStore, StepStatus, Store};
use serde::{Deserialize, Serialize};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Desk {
    approved_by: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "flow_core::schemars")]
struct Approval {
    approve: bool,
    reviewer: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Verdict {
    Ask,
    Skip,
}

struct Recorded;

#[flow(state = Desk, name = "recorded")]
impl Recorded {
    #[start]
    async fn draft(&self, cx: &Ctx<Desk>) -> Result<String> {
        cx.report_usage("m", TokenUsage { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
        cx.report_usage("m", TokenUsage { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 });
        Ok("text".into())
    }

    #[router(draft, terminal(Verdict::Skip))]
    async fn triage(&self, _cx: &Ctx<Desk>) -> Result<Verdict> {
        Ok(Verdict::Ask)
    }

    #[listen(Verdict::Ask)]
    async fn review(&self, cx: &Ctx<Desk>) -> Result<()> {
        let answer: Approval = cx.ask("Approve the draft?").await?;
        let reviewer = answer.approve.then_some(answer.reviewer);
        cx.update(move |s| s.approved_by = reviewer.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stores_its_graph_step_timings_usage_and_the_answer_schema() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runs.db");
    let store = Arc::new(SqliteStore::open(&path).await?);
    let runner = Runner::new(Recorded).with_shared_store(store.clone());

    let RunOutcome::Paused(paused) = runner.kickoff(Desk::default()).await? else {
        return Err("expected the run to pause at the review".into());
    };
    let run_id = paused.run_id;
    let graph = store.run_graph(run_id).await?.ok_or("the run's graph was not stored")?;
    assert_eq!(graph, Recorded::graph().doc());
    assert_eq!(graph.to_mermaid(), Recorded::graph().to_mermaid());
    assert!(graph.methods[1].router && graph.methods[1].ends.len() == 1, "{graph:?}");

    // The question as stored on the run: its answer's schema names the fields and their types.
    let record = store.load_run(run_id).await?;
    assert_eq!(record.status, RunStatus::Paused);
    let pause = record.pause.ok_or("no pause stored")?;
    assert_eq!(pause["prompt"], "Approve the draft?");
    let schema = &pause["answer_schema"];
    assert_eq!(schema["properties"]["approve"]["type"], "boolean", "{pause}");
    assert_eq!(schema["properties"]["reviewer"]["type"], "string", "{pause}");
    assert_eq!(paused.request.answer_schema, *schema);

    let steps = store.steps(run_id).await?;
    let step = |method: &str| steps.iter().find(|s| s.method == method).ok_or(format!("no `{method}` step"));
    let draft = step("draft")?;
    assert_eq!(draft.usage, Some(TokenUsage { prompt_tokens: 8, completion_tokens: 4, total_tokens: 12 }));
    assert_eq!(draft.attempt, 1);
    let (started, finished) = (draft.started_at_ms.ok_or("no start")?, draft.finished_at_ms.ok_or("no end")?);
    assert!(started <= finished && started >= record.created_at_ms - 1_000, "{draft:?}");
    let triage = step("triage")?;
    assert_eq!(triage.usage, None, "a step that called no LLM reports no usage");
    assert!(triage.duration_ms().is_some_and(|d| d >= 0), "{triage:?}");

    let done =
        runner.resume_with(run_id, serde_json::json!({"approve": true, "reviewer": "ann"})).await?.completed()?;
    assert_eq!(done.state.approved_by.as_deref(), Some("ann"));
    let review = store.steps(run_id).await?.into_iter().find(|s| s.method == "review").ok_or("no review step")?;
    assert_eq!((review.status, review.attempt), (StepStatus::Completed, 1));
    assert!(review.started_at_ms.is_some() && review.finished_at_ms.is_some(), "{review:?}");

    // Every run the runner creates refers to the same stored graph: one copy in the file.
    let submitted = runner.submit(Desk::default()).await?;
    assert_eq!(store.run_graph(submitted).await?.as_ref(), Some(&graph));
    let forked = runner.fork(run_id, Some(1)).await?;
    assert_eq!(store.run_graph(forked.run_id()).await?.as_ref(), Some(&graph));
    let copies: i64 =
        rusqlite::Connection::open(&path)?.query_row("SELECT count(*) FROM flow_graphs", [], |r| r.get(0))?;
    assert_eq!(copies, 1);
    Ok(())
}
