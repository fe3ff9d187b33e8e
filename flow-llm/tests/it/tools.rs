//! Tools in the agent loop: typed arguments and schema, concurrent execution, errors fed back to
//! the model, and the iteration bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flow_core::{Classify, ErrorClass, NoJournal};
use flow_llm::{Agent, FnTool, LlmError, Match, Reply, Role, TestServer, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::common::llm;

/// Arguments of the `add` tool.
#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    /// First addend.
    a: i64,
    /// Second addend.
    b: i64,
    /// Optional label for the result.
    label: Option<String>,
}

fn add_tool(counter: Arc<AtomicUsize>) -> FnTool {
    FnTool::new("add", "Adds two integers", move |x: AddArgs| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ToolError>(match x.label {
                Some(label) => format!("{label}: {}", x.a + x.b),
                None => (x.a + x.b).to_string(),
            })
        }
    })
    .unwrap()
}

#[tokio::test]
async fn a_typed_tool_is_offered_with_a_strict_schema_and_called() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::has_tool_results()).respond(|req| {
        let result = req.chat.messages.iter().rev().find(|m| m.role == Role::Tool).unwrap();
        Reply::text(format!("The sum is {}", result.text_or_empty()))
    });
    server.when(Match::any()).reply(Reply::tool_call("add", json!({"a": 2, "b": 40, "label": null})));
    let calls = Arc::new(AtomicUsize::new(0));
    let agent = Agent::builder("Calculator", "Compute", "Exact")
        .llm(Arc::new(llm(&server)))
        .tool(add_tool(Arc::clone(&calls)))
        .build()
        .unwrap();

    let out = agent.run(&NoJournal, "What is 2 + 40?").await.unwrap();
    assert_eq!(out.raw, "The sum is 42");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(out.usage.calls.len(), 2);

    let offered = &server.requests()[0].body["tools"][0];
    assert_eq!(offered["type"], "function");
    assert_eq!(offered["function"]["name"], "add");
    assert_eq!(offered["function"]["strict"], true);
    let params = &offered["function"]["parameters"];
    assert_eq!(params["additionalProperties"], false);
    assert_eq!(params["required"], json!(["a", "b", "label"]));
    assert_eq!(params["properties"]["label"]["type"], json!(["string", "null"]));
    assert_eq!(params["properties"]["a"]["description"], "First addend.");
}

#[tokio::test]
async fn parallel_tool_calls_run_concurrently_and_answer_in_order() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::has_tool_results()).reply(Reply::text("both done"));
    server.when(Match::any()).reply(Reply::tool_calls([
        ("rendezvous", json!({"name": "first"})),
        ("rendezvous", json!({"name": "second"})),
    ]));
    #[derive(Deserialize, JsonSchema)]
    struct Who {
        name: String,
    }
    // Each call waits until the other has started: run one after the other, they would hang.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let tool = FnTool::new("rendezvous", "Meets the other call", move |w: Who| {
        let barrier = Arc::clone(&barrier);
        async move {
            barrier.wait().await;
            Ok::<_, ToolError>(format!("{} arrived", w.name))
        }
    })
    .unwrap();
    let agent =
        Agent::builder("Coordinator", "Coordinate", "Patient").llm(Arc::new(llm(&server))).tool(tool).build().unwrap();

    let out = tokio::time::timeout(Duration::from_secs(5), agent.run(&NoJournal, "meet"))
        .await
        .expect("the tool calls ran one after the other")
        .unwrap();
    assert_eq!(out.raw, "both done");
    let messages = &server.requests()[1].body["messages"];
    assert_eq!(messages[3], json!({"role": "tool", "content": "first arrived", "tool_call_id": "call_1_0"}));
    assert_eq!(messages[4], json!({"role": "tool", "content": "second arrived", "tool_call_id": "call_1_1"}));
}

#[tokio::test]
async fn tool_errors_bad_arguments_and_unknown_tools_go_back_to_the_model() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_calls([
        ("fail", json!({"a": 1, "b": 1, "label": null})),
        ("add", json!({"a": "one", "b": 2})),
        ("nope", json!({})),
    ]));
    server.enqueue(Reply::tool_call_raw("add", "{\"a\": 1, "));
    server.enqueue(Reply::text("I could not compute it."));
    let failing =
        FnTool::new("fail", "Always fails", |_: AddArgs| async move { Err::<String, _>(ToolError::new("disk full")) })
            .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let agent = Agent::builder("Calculator", "Compute", "Exact")
        .llm(Arc::new(llm(&server)))
        .tool(add_tool(Arc::clone(&calls)))
        .tool(failing)
        .build()
        .unwrap();

    let out = agent.run(&NoJournal, "compute").await.unwrap();
    assert_eq!(out.raw, "I could not compute it.");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "add never ran with bad arguments");
    let requests = server.requests();
    let tool_texts = |i: usize| -> Vec<String> {
        requests[i]
            .chat
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .map(|m| m.text_or_empty().to_owned())
            .collect()
    };
    let round1 = tool_texts(1);
    assert_eq!(round1.len(), 3);
    assert_eq!(round1[0], "Error executing tool `fail`: disk full");
    assert!(round1[1].contains("do not fit the schema of tool `add`"), "{}", round1[1]);
    assert!(round1[2].contains("no tool named `nope`") && round1[2].contains("add, fail"), "{}", round1[2]);
    let round2 = tool_texts(2);
    assert!(round2[3].contains("not valid JSON"), "{}", round2[3]);
}

#[tokio::test]
async fn max_iter_bounds_the_loop_and_forces_a_final_answer_without_tools() {
    let server = TestServer::start().await.unwrap();
    server
        .when(Match::last_user_contains("MUST give your absolute best final answer"))
        .reply(Reply::text("forced answer"));
    // A model that never stops calling tools.
    server.when(Match::any()).reply(Reply::tool_call("add", json!({"a": 1, "b": 1, "label": null})));
    let calls = Arc::new(AtomicUsize::new(0));
    let agent = Agent::builder("Looper", "Loop", "Stubborn")
        .llm(Arc::new(llm(&server)))
        .tool(add_tool(Arc::clone(&calls)))
        .max_iter(3)
        .build()
        .unwrap();

    let out = agent.run(&NoJournal, "add forever").await.unwrap();
    assert_eq!(out.raw, "forced answer");
    assert_eq!(server.hits(), 4, "three tool-calling replies, then one forced final call");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let last = &server.requests()[3].body;
    assert!(last.get("tools").is_none(), "the forced final call offers no tools: {last}");
}

/// A model that keeps calling tools even when told to answer without them: the agent's error says
/// it was stopped by max_iter, which tool the model still wanted, and what to raise.
#[tokio::test]
async fn a_model_still_calling_tools_at_max_iter_is_told_apart_from_an_empty_answer() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::any()).reply(Reply::tool_call("add", json!({"a": 1, "b": 1, "label": null})));
    let calls = Arc::new(AtomicUsize::new(0));
    let agent = Agent::builder("Looper", "Loop", "Stubborn")
        .llm(Arc::new(llm(&server)))
        .tool(add_tool(Arc::clone(&calls)))
        .max_iter(2)
        .build()
        .unwrap();

    let err = agent.run(&NoJournal, "add forever").await.unwrap_err();
    match &err {
        LlmError::MaxIterReached { agent, max_iter, tools } => {
            assert_eq!((agent.as_str(), *max_iter, tools.as_slice()), ("Looper", 2, ["add".to_owned()].as_slice()));
        }
        other => panic!("expected MaxIterReached, got {other:?}"),
    }
    let text = err.to_string();
    for part in ["`Looper`", "max_iter = 2 tool-calling rounds", "still wanted to call tools (`add`)", ".max_iter(n)"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(server.hits(), 3, "two tool-calling rounds, then the forced final call");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the tools asked for in the forced call are not run");
}
