//! A crew inside a real flow method, with the method's `cx` as the journal: a retried step
//! replays its LLM and tool calls, usage is counted per run and emitted as flow events, and
//! error classes survive `?`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use flow_core::TokenUsage;
use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_llm::{Agent, Crew, FnTool, Inputs, Match, Reply, Task, TestServer, ToolError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::llm;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Article {
    topic: String,
}

struct Newsroom {
    crew: Crew,
    crash_once: AtomicBool,
}

#[flow(state = Article)]
impl Newsroom {
    #[start(retry(attempts = 2, backoff = fixed("1ms")))]
    async fn write(&self, cx: &Ctx<Article>) -> Result<String> {
        let topic = cx.read(|s| s.topic.clone());
        let out = self.crew.kickoff(cx, &Inputs::from([("topic", topic)])).await?;
        if self.crash_once.swap(false, Ordering::SeqCst) {
            // The step fails after paying for its LLM calls, as if the process died here.
            return Err(Error::transient("simulated failure after the LLM calls"));
        }
        Ok(out.raw)
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Query {
    q: String,
}

fn newsroom(server: &TestServer, searches: Arc<AtomicUsize>) -> Newsroom {
    server
        .when(Match::system_contains("Researcher").and(Match::has_tool_results()))
        .reply(Reply::text("notes").usage(20, 4));
    server
        .when(Match::system_contains("Researcher"))
        .reply(Reply::tool_calls([("search", json!({"q": "tides"})), ("search", json!({"q": "moon"}))]).usage(10, 2));
    server.when(Match::system_contains("Writer")).reply(Reply::text("The article.").usage(30, 6));
    let client = Arc::new(llm(server));
    let search = FnTool::new("search", "Search", move |q: Query| {
        let searches = Arc::clone(&searches);
        async move {
            searches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ToolError>(format!("results for {}", q.q))
        }
    })
    .unwrap();
    let researcher =
        Agent::builder("Researcher", "Research {topic}", "Thorough").llm(client.clone()).tool(search).build().unwrap();
    let writer = Agent::builder("Writer", "Write about {topic}", "Clear").llm(client).build().unwrap();
    let crew = Crew::builder()
        .task(Task::new("Research {topic}", "Notes").agent(&researcher))
        .task(Task::new("Write about {topic}", "An article").agent(&writer))
        .build()
        .unwrap();
    Newsroom { crew, crash_once: AtomicBool::new(true) }
}

#[tokio::test]
async fn a_retried_flow_step_replays_its_llm_and_tool_calls() {
    let server = TestServer::start().await.unwrap();
    let searches = Arc::new(AtomicUsize::new(0));
    let runner = Runner::new(newsroom(&server, Arc::clone(&searches)));
    let mut events = runner.subscribe();

    let run = runner.kickoff(Article { topic: "tides".into() }).await.unwrap().completed().unwrap();

    assert_eq!(run.output::<String>().unwrap(), "The article.");
    assert_eq!(server.hits(), 3, "the second attempt replayed all three LLM calls");
    assert_eq!(searches.load(Ordering::SeqCst), 2, "the second attempt replayed both parallel tool calls");
    let notes_request = &server.requests()[1].chat;
    let results: Vec<&str> =
        notes_request.messages.iter().filter_map(|m| m.tool_call_id.as_ref().map(|_| m.text_or_empty())).collect();
    assert_eq!(results, ["results for tides", "results for moon"]);
    let expected = TokenUsage { prompt_tokens: 60, completion_tokens: 12, total_tokens: 72 };
    assert_eq!(run.usage, expected, "usage per flow run counts real calls only");

    let mut usage_events = Vec::new();
    let mut attempts = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            FlowEvent::LlmUsage { model, usage, method, .. } => usage_events.push((method, model, usage)),
            FlowEvent::MethodStarted { .. } => attempts += 1,
            _ => {}
        }
    }
    assert_eq!(attempts, 2);
    assert_eq!(usage_events.len(), 3);
    assert!(usage_events.iter().all(|(method, model, _)| *method == "write" && model == "test-model"));
    let summed = usage_events.iter().fold(TokenUsage::default(), |acc, (_, _, u)| acc + *u);
    assert_eq!(summed, expected);
}

struct Picky;

#[derive(Deserialize, Serialize, schemars::JsonSchema)]
struct Verdict {
    ok: bool,
}

#[flow(state = Article)]
impl Picky {
    #[start]
    async fn judge(&self, cx: &Ctx<Article>) -> Result<bool> {
        let server_url = cx.read(|s| s.topic.clone());
        let client = flow_llm::OpenAiLlm::builder().base_url(server_url).build()?;
        let agent = Agent::builder("Judge", "Judge", "Fair").llm(Arc::new(client)).build()?;
        let verdict: Verdict = agent.run_typed(cx, "Is it fine?").await?;
        Ok(verdict.ok)
    }
}

#[tokio::test]
async fn an_unparseable_reply_fails_the_step_with_the_invalid_reply_class() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::text("I think it is fine."));
    let err = Picky.kickoff(Article { topic: server.base_url() }).await.unwrap_err();
    match &err {
        FlowError::MethodFailed { method, class, message, .. } => {
            assert_eq!(method, "judge");
            assert_eq!(*class, ErrorClass::InvalidReply);
            assert!(message.contains("I think it is fine."), "the raw reply is in the error: {message}");
        }
        other => panic!("{other:?}"),
    }
}
