//! The offline scripted model.

use std::sync::Arc;

use flow_core::NoJournal;
use flow_llm::{Agent, ChatRequest, ChatResponse, LlmError, LlmExt, Match, Message, ScriptedLlm, ToolCall};

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::user(text)])
}

#[tokio::test]
async fn queue_then_rules_then_fallback_then_a_clear_error() {
    let llm = ScriptedLlm::new("offline")
        .reply_text("queued")
        .rule_times(Match::last_user_contains("once"), 1, ChatResponse::text("rule once"))
        .rule(Match::last_user_contains("always"), ChatResponse::text("rule always"));
    let text = |r: ChatResponse| r.content.unwrap();
    assert_eq!(text(llm.complete(&NoJournal, ask("once")).await.unwrap()), "queued");
    assert_eq!(text(llm.complete(&NoJournal, ask("once")).await.unwrap()), "rule once");
    let err = llm.complete(&NoJournal, ask("once")).await.unwrap_err();
    assert!(matches!(&err, LlmError::NoScriptedReply { last_message } if last_message == "once"), "{err:?}");
    assert_eq!(text(llm.complete(&NoJournal, ask("always")).await.unwrap()), "rule always");
    let llm = llm.fallback(|r| Ok(ChatResponse::text(format!("echo {}", r.last_user_text().unwrap_or("")))));
    assert_eq!(text(llm.complete(&NoJournal, ask("x")).await.unwrap()), "echo x");
    assert_eq!(llm.calls(), 5);
    assert_eq!(llm.requests()[4].model.as_deref(), Some("offline"));
}

#[tokio::test]
async fn a_scripted_agent_runs_tools_and_reports_estimated_usage() {
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct Echo {
        text: String,
    }
    let llm = ScriptedLlm::new("offline")
        .rule(Match::has_tool_results(), ChatResponse::text("tool said hello"))
        .rule(Match::any(), ChatResponse::tool_calls(vec![ToolCall::new("c1", "echo", r#"{"text":"hello"}"#)]));
    let echo =
        flow_llm::FnTool::new("echo", "Echoes", |e: Echo| async move { Ok::<_, flow_llm::ToolError>(e.text) }).unwrap();
    let agent = Agent::builder("Echoer", "Echo", "Loud").llm(Arc::new(llm.clone())).tool(echo).build().unwrap();
    let out = agent.run(&NoJournal, "say hello").await.unwrap();
    assert_eq!(out.raw, "tool said hello");
    assert_eq!(llm.requests()[1].messages.last().unwrap().text_or_empty(), "hello");
    assert_eq!(out.usage.calls.len(), 2);
    assert!(out.usage.total.total_tokens > 0);
}
