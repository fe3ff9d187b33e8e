//! The journal contract: every LLM and tool call is one journaled effect, a re-run step replays
//! them without any HTTP call or tool execution, and usage is reported only for real calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flow_core::{Classify, ErrorClass};
use flow_llm::{
    Agent, ChatRequest, Crew, FnTool, Inputs, LlmError, LlmExt, Match, Message, Reply, Task, TestServer, ToolError,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{ReplayJournal, llm};

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

#[tokio::test]
async fn a_replayed_crew_makes_no_http_calls_and_runs_no_tools() {
    let server = TestServer::start().await.unwrap();
    scripted_server_rules(&server);
    let tool_runs = Arc::new(AtomicUsize::new(0));
    let crew = crew(&server, Arc::clone(&tool_runs));
    let journal = ReplayJournal::default();
    let inputs = Inputs::from([("trip", "Italy")]);

    let first = crew.kickoff(&journal, &inputs).await.unwrap();
    assert_eq!(server.hits(), 3);
    assert_eq!(tool_runs.load(Ordering::SeqCst), 2);
    assert_eq!(first.value::<Forecast>().unwrap(), Forecast { city: "Paris".into(), sunny: true });
    let kinds: Vec<(String, String)> = journal.entries().into_iter().map(|e| (e.kind, e.name)).collect();
    let expected =
        [("llm", "test-model"), ("llm", "test-model"), ("tool", "lookup"), ("tool", "lookup"), ("llm", "test-model")];
    assert_eq!(kinds, expected.map(|(k, n)| (k.to_owned(), n.to_owned())));
    assert_eq!(journal.reported_total(), first.usage.total, "every real call reported its usage to the run");
    assert_eq!(first.usage.total.total_tokens, 12 + 36 + 48);

    // The step runs again, e.g. after a crash: everything replays from the journal.
    server.reset_counters();
    journal.restart();
    let second = crew.kickoff(&journal, &inputs).await.unwrap();
    assert_eq!(server.hits(), 0, "a replayed step must not call the LLM again");
    assert_eq!(tool_runs.load(Ordering::SeqCst), 2, "a replayed step must not run tools again");
    assert_eq!(second, first);
    assert_eq!(journal.usage_reports().len(), 3, "replays cost nothing and report no usage");
}

#[tokio::test]
async fn a_failed_call_is_not_recorded_and_keeps_its_error_variant() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::bad_request("Invalid 'temperature'"));
    let journal = ReplayJournal::default();
    let err = llm(&server).complete(&journal, ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert!(matches!(&err, LlmError::Api { status: 400, message, .. } if message.contains("temperature")), "{err:?}");
    assert!(journal.entries().is_empty());
    assert!(journal.usage_reports().is_empty());
}

#[tokio::test]
async fn a_step_whose_calls_changed_is_caught_on_replay() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::text("ok"));
    let client = llm(&server);
    let journal = ReplayJournal::default();
    client.complete(&journal, ChatRequest::new(vec![Message::user("first version")])).await.unwrap();
    journal.restart();
    let err = client.complete(&journal, ChatRequest::new(vec![Message::user("changed prompt")])).await.unwrap_err();
    assert!(matches!(err, LlmError::Journal { .. }), "{err:?}");
    assert!(err.to_string().contains("non-determinism"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn the_journal_names_the_model_really_used() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::text("ok").usage(3, 4));
    let journal = ReplayJournal::default();
    let client = llm(&server);
    client.complete(&journal, ChatRequest::new(vec![Message::user("a")])).await.unwrap();
    client.complete(&journal, ChatRequest::new(vec![Message::user("b")]).model("gpt-4.1")).await.unwrap();
    let entries = journal.entries();
    assert_eq!(entries[0].name, "test-model");
    assert_eq!(entries[0].request["model"], "test-model");
    assert_eq!(entries[1].name, "gpt-4.1");
    let reports = journal.usage_reports();
    assert_eq!(reports[1].0, "gpt-4.1");
    assert_eq!(reports[1].1.total_tokens, 7);
}
