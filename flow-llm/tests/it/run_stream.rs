//! Tokens end to end (issue 21, point 3): an agent inside a flow step asks the endpoint for a
//! stream when the run's stream takes tokens, and each piece reaches the flow's stream, named
//! with the method and the step, while the call is still going; the assembled reply is
//! journaled, so a resumed run replays it without a request and streams no tokens for it. Tool
//! calls an agent makes, and their results, are stream items too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flow_core::prelude::*;
use flow_core::store::MemoryStore;
use flow_core::stream::{Channels, RunItem, StreamItem};
use flow_llm::server::Hold;
use flow_llm::{Agent, FnTool, Match, Reply, TestServer, ToolError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::llm;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Story {
    published: bool,
}

/// Has a story told, then asks whether to publish it: the run pauses after the LLM call, and
/// its resume runs the step again from the start.
struct Storyteller {
    agent: Agent,
}

#[flow(state = Story, name = "run_stream_storyteller")]
impl Storyteller {
    #[start]
    async fn tell(&self, cx: &Ctx<Story>) -> Result<String> {
        let story = self.agent.run(cx, "Tell a very short story").await?;
        let publish: bool = cx.ask("Publish it?").await?;
        cx.update(move |s| s.published = publish);
        Ok(story.raw)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reach_the_flow_stream_before_the_call_completes_and_replay_without_a_request() {
    let server = TestServer::start().await.unwrap();
    let hold = Hold::new();
    server
        .when(Match::system_contains("Storyteller"))
        .reply(Reply::deltas(["Once ", "upon ", "a time."]).hold_finish(&hold));
    let agent = Agent::builder("Storyteller", "Tell stories", "Brief").llm(Arc::new(llm(&server))).build().unwrap();
    let runner = Runner::new(Storyteller { agent }).with_store(MemoryStore::new());

    let mut live = Box::pin(runner.stream(Story::default(), Channels::TOKENS | Channels::OUTPUTS));
    let mut text = String::new();
    while text != "Once upon a time." {
        match live.next().await.expect("the run goes on") {
            StreamItem::Item { item: RunItem::Token { method, step_key, model, delta }, .. } => {
                assert_eq!((method.as_str(), step_key.as_str(), model.as_str()), ("tell", "tell#1", "test-model"));
                text.push_str(&delta);
            }
            other => panic!("only tokens come while the call is going, got {other:?}"),
        }
    }
    // Every piece arrived while the server still held the end of the reply back.
    assert!(!hold.is_released());
    assert_eq!(server.hits(), 1);
    let request = &server.requests()[0];
    assert!(request.stream, "the call asked the endpoint for a stream");

    hold.release();
    let rest: Vec<_> = live.collect().await;
    let run_id = match rest.as_slice() {
        [StreamItem::Item { item: RunItem::Ended { status, .. }, .. }, StreamItem::Finished(Ok(outcome))] => {
            assert_eq!(*status, flow_core::RunStatus::Paused);
            outcome.run_id()
        }
        other => panic!("expected the pause, got {other:?}"),
    };

    // The step runs again on resume: its LLM call is replayed from the journal.
    runner.answer(run_id, true).await.unwrap();
    let resumed: Vec<_> = runner.resume_stream(run_id, Channels::ALL).collect().await;
    assert_eq!(server.hits(), 1, "no second request: the journaled reply was used");
    let mut outputs = Vec::new();
    for item in &resumed {
        match item {
            StreamItem::Item { item: RunItem::Token { .. }, .. } => panic!("a replayed call streams no tokens"),
            StreamItem::Item { item: RunItem::Output { output, .. }, .. } => outputs.push(output.clone()),
            _ => {}
        }
    }
    assert_eq!(outputs, [json!("Once upon a time.")]);
    match resumed.last() {
        Some(StreamItem::Finished(Ok(RunOutcome::Completed(run)))) => assert!(run.state.published),
        other => panic!("expected the completed run, got {other:?}"),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Lookup {
    city: String,
}

struct Forecaster {
    agent: Agent,
}

#[flow(state = Story, name = "run_stream_forecaster")]
impl Forecaster {
    #[start]
    async fn forecast(&self, cx: &Ctx<Story>) -> Result<String> {
        Ok(self.agent.run(cx, "Weather in Paris?").await?.raw)
    }
}

#[tokio::test]
async fn tool_calls_and_their_results_are_stream_items() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::has_tool_results()).reply(Reply::text("Sunny."));
    server.when(Match::system_contains("Forecaster")).reply(Reply::tool_call("lookup", json!({"city": "Paris"})));
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&lookups);
    let lookup = FnTool::new("lookup", "Weather station data", move |l: Lookup| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, ToolError>(format!("sunny in {}", l.city)) }
    })
    .unwrap();
    let agent =
        Agent::builder("Forecaster", "Forecast", "Precise").llm(Arc::new(llm(&server))).tool(lookup).build().unwrap();

    let items: Vec<_> = Runner::new(Forecaster { agent }).stream(Story::default(), Channels::TOOLS).collect().await;
    let tools: Vec<&RunItem> = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Item { item: item @ (RunItem::ToolCall { .. } | RunItem::ToolResult { .. }), .. } => Some(item),
            _ => None,
        })
        .collect();
    match tools.as_slice() {
        [
            RunItem::ToolCall { method, step_key, tool, call_id, arguments },
            RunItem::ToolResult { tool: result_tool, call_id: result_id, result, .. },
        ] => {
            assert_eq!((method.as_str(), step_key.as_str(), tool.as_str()), ("forecast", "forecast#1", "lookup"));
            assert_eq!(arguments, &json!({"city": "Paris"}));
            assert!(!call_id.is_empty());
            assert_eq!((result_tool, result_id), (tool, call_id));
            assert_eq!(result, &json!("sunny in Paris"));
        }
        other => panic!("expected the call and its result, got {other:?}"),
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    assert!(matches!(items.last(), Some(StreamItem::Finished(Ok(RunOutcome::Completed(_))))));
}
