//! The journal contract, through the real journal (a flow method's `Ctx` on a `SqliteStore`):
//! every LLM and tool call is one journaled effect, a step run again replays them without any
//! HTTP call or tool execution, usage is reported only for real calls, and a call whose request
//! changed is not replayed. `replay.rs` does the same across processes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use flow_core::events::FlowEvent;
use flow_core::journal::request_hash;
use flow_core::prelude::*;
use flow_core::store::{SqliteStore, Store};
use flow_core::{RunStatus, TokenUsage};
use flow_llm::{
    Agent, ChatRequest, Crew, FnTool, Inputs, LlmExt, Match, Message, OpenAiLlm, Reply, Task, TestServer, ToolError,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::llm;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Trip {
    destination: String,
}

#[derive(Deserialize, JsonSchema)]
struct Lookup {
    city: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Forecast {
    city: String,
    sunny: bool,
}

fn scripted_server_rules(server: &TestServer) {
    server
        .when(Match::system_contains("You are Forecaster").and(Match::has_tool_results()))
        .reply(Reply::json(&json!({"city": "Paris", "sunny": true})).usage(40, 8));
    server.when(Match::system_contains("You are Forecaster")).reply(
        Reply::tool_calls([("lookup", json!({"city": "Paris"})), ("lookup", json!({"city": "Rome"}))]).usage(30, 6),
    );
    server.when(Match::system_contains("You are Scout")).reply(Reply::text("Paris and Rome").usage(10, 2));
}

fn crew(server: &TestServer, tool_runs: Arc<AtomicUsize>) -> Crew {
    let client = Arc::new(llm(server));
    let lookup = FnTool::new("lookup", "Weather station data", move |l: Lookup| {
        let runs = Arc::clone(&tool_runs);
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ToolError>(format!("{}: clear sky", l.city))
        }
    })
    .unwrap();
    let scout = Agent::builder("Scout", "Pick cities", "Travels a lot").llm(client.clone()).build().unwrap();
    let forecaster =
        Agent::builder("Forecaster", "Forecast", "Meteorologist").llm(client).tool(lookup).build().unwrap();
    Crew::builder()
        .task(Task::new("Pick cities for {trip}", "City names").agent(&scout))
        .task(Task::new("Forecast for the cities", "A forecast").agent(&forecaster).output::<Forecast>().unwrap())
        .build()
        .unwrap()
}

/// Runs a crew, then fails once after paying for its calls (as a step that crashes or hits a
/// bug after them would).
struct Planner {
    crew: Crew,
    fail_after_the_crew: Arc<AtomicBool>,
}

#[flow(state = Trip)]
impl Planner {
    #[start]
    async fn plan(&self, cx: &Ctx<Trip>) -> Result<Forecast> {
        let trip = cx.read(|s| s.destination.clone());
        let out = self.crew.kickoff(cx, &Inputs::from([("trip", trip)])).await?;
        if self.fail_after_the_crew.swap(false, Ordering::SeqCst) {
            return Err(Error::permanent("a bug after the LLM calls"));
        }
        Ok(out.value::<Forecast>()?)
    }
}

async fn store_at(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("runs.db")).await.unwrap()
}

#[tokio::test]
async fn a_replayed_crew_makes_no_http_calls_and_runs_no_tools() {
    let server = TestServer::start().await.unwrap();
    scripted_server_rules(&server);
    let tool_runs = Arc::new(AtomicUsize::new(0));
    let dir = tempfile::tempdir().unwrap();
    let planner = |fail| Planner { crew: crew(&server, Arc::clone(&tool_runs)), fail_after_the_crew: Arc::new(fail) };
    let trip = Trip { destination: "Italy".into() };

    let first = Runner::new(planner(AtomicBool::new(true))).with_store(store_at(dir.path()).await);
    let mut events = first.subscribe();
    let err = first.kickoff(trip).await.unwrap_err();
    let FlowError::MethodFailed { run_id, .. } = err else { panic!("{err:?}") };
    assert_eq!(server.hits(), 3);
    assert_eq!(tool_runs.load(Ordering::SeqCst), 2);
    let store = store_at(dir.path()).await;
    let mut kinds = Vec::new();
    for seq in 0.. {
        match store.journal_get(run_id, "plan#1", seq).await.unwrap() {
            Some(entry) => kinds.push((entry.kind, entry.name)),
            None => break,
        }
    }
    let expected =
        [("llm", "test-model"), ("llm", "test-model"), ("tool", "lookup"), ("tool", "lookup"), ("llm", "test-model")];
    assert_eq!(kinds, expected.map(|(k, n)| (k.to_owned(), n.to_owned())));
    let mut reported = TokenUsage::default();
    while let Ok(event) = events.try_recv() {
        if let FlowEvent::LlmUsage { usage, .. } = event {
            reported = reported + usage;
        }
    }
    assert_eq!(reported.total_tokens, 12 + 36 + 48, "every real call reported its usage to the run");

    // The step runs again from another runner and store instance (no in-process journal cache):
    // everything replays from the store.
    server.reset_counters();
    let second = Runner::new(planner(AtomicBool::new(false))).with_store(store_at(dir.path()).await);
    let mut replay_events = second.subscribe();
    let run = second.resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(server.hits(), 0, "a replayed step must not call the LLM again");
    assert_eq!(tool_runs.load(Ordering::SeqCst), 2, "a replayed step must not run tools again");
    assert_eq!(run.output::<Forecast>().unwrap(), Forecast { city: "Paris".into(), sunny: true });
    assert_eq!(run.usage, reported, "the run's usage counts the real calls once; replays add nothing");
    while let Ok(event) = replay_events.try_recv() {
        assert!(!matches!(event, FlowEvent::LlmUsage { .. }), "a replay reported usage: {event:?}");
    }
}

/// Makes one call, with `prompts[attempt]`; with more than one prompt the first attempt fails
/// after its call. With one prompt, hands back the call's error as the output.
struct OneCall {
    llm: OpenAiLlm,
    prompts: Vec<&'static str>,
    attempts: AtomicUsize,
}

#[flow(state = Trip)]
impl OneCall {
    #[start(retry(attempts = 3, backoff = fixed("1ms")))]
    async fn call(&self, cx: &Ctx<Trip>) -> Result<String> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        let prompt = self.prompts[attempt.min(self.prompts.len() - 1)];
        let outcome = self.llm.complete(cx, ChatRequest::new(vec![Message::user(prompt)])).await;
        if self.prompts.len() == 1 {
            return Ok(match outcome {
                Ok(reply) => reply.content.unwrap_or_default(),
                Err(e) => format!("{e:?}"),
            });
        }
        let reply = outcome?;
        if attempt == 0 {
            return Err(Error::transient("failed after the call"));
        }
        Ok(reply.content.unwrap_or_default())
    }
}

#[tokio::test]
async fn a_failed_call_is_not_recorded_and_keeps_its_error_variant() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::bad_request("Invalid 'temperature'"));
    let dir = tempfile::tempdir().unwrap();
    let flow = OneCall { llm: llm(&server), prompts: vec!["hi"], attempts: AtomicUsize::new(0) };
    let runner = Runner::new(flow).with_store(store_at(dir.path()).await);
    let run = runner.kickoff(Trip::default()).await.unwrap().completed().unwrap();
    let seen = run.output::<String>().unwrap();
    assert!(seen.starts_with("Api { status: 400") && seen.contains("temperature"), "{seen}");
    assert!(store_at(dir.path()).await.journal_get(run.run_id, "call#1", 0).await.unwrap().is_none());
    assert_eq!(run.usage, TokenUsage::default());
}

/// The in-process path of the real journal (its cache, before the store): a retried attempt
/// whose request changed is stopped, not retried again and not handed the old reply.
#[tokio::test]
async fn a_retried_step_whose_request_changed_is_caught_on_replay() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::text("ok"));
    let dir = tempfile::tempdir().unwrap();
    let flow =
        OneCall { llm: llm(&server), prompts: vec!["first version", "changed prompt"], attempts: AtomicUsize::new(0) };
    let runner = Runner::new(flow).with_store(store_at(dir.path()).await);
    let err = runner.kickoff(Trip::default()).await.unwrap_err();
    let FlowError::MethodFailed { run_id, class, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*class, ErrorClass::Permanent);
    assert!(message.contains(&format!("non-determinism in run {run_id} step `call#1`")), "{message}");
    assert!(message.contains("llm `test-model`") && message.contains("fork the run"), "{message}");
    assert_eq!(server.hits(), 1);
    let steps = runner.steps(*run_id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.attempt).max(), Some(2), "not retried after the non-determinism: {steps:?}");
    assert_eq!(runner.store().unwrap().load_run(*run_id).await.unwrap().status, RunStatus::Failed);
}

/// Two calls in one step: one with the client's model, one naming another.
struct TwoModels {
    llm: OpenAiLlm,
}

#[flow(state = Trip)]
impl TwoModels {
    #[start]
    async fn call(&self, cx: &Ctx<Trip>) -> Result<()> {
        self.llm.complete(cx, ChatRequest::new(vec![Message::user("a")])).await?;
        self.llm.complete(cx, ChatRequest::new(vec![Message::user("b")]).model("gpt-4.1")).await?;
        Ok(())
    }
}

#[tokio::test]
async fn the_journal_names_the_model_really_used() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::text("ok").usage(3, 4));
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(TwoModels { llm: llm(&server) }).with_store(store_at(dir.path()).await);
    let mut events = runner.subscribe();
    let run = runner.kickoff(Trip::default()).await.unwrap().completed().unwrap();
    let store = store_at(dir.path()).await;
    let first = store.journal_get(run.run_id, "call#1", 0).await.unwrap().unwrap();
    let second = store.journal_get(run.run_id, "call#1", 1).await.unwrap().unwrap();
    assert_eq!((first.name.as_str(), second.name.as_str()), ("test-model", "gpt-4.1"));
    // The model the client filled in is part of the request the journal compares on replay.
    let sent = serde_json::to_value(ChatRequest::new(vec![Message::user("a")]).model("test-model")).unwrap();
    assert_eq!(first.request_hash, request_hash(&sent));
    let mut reports = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let FlowEvent::LlmUsage { model, usage, .. } = event {
            reports.push((model, usage.total_tokens));
        }
    }
    assert_eq!(reports, [("test-model".to_owned(), 7), ("gpt-4.1".to_owned(), 7)]);
    assert_eq!(run.usage.total_tokens, 14);
}
