//! The OpenAI-compatible client: configuration, wire format both ways, key handling.

use std::io::Write;
use std::sync::{Arc, Mutex};

use flow_core::TokenUsage;
use flow_llm::server::{TEST_API_KEY, TEST_MODEL};
use flow_llm::{
    ChatRequest, FinishReason, Llm, LlmError, Message, OpenAiLlm, OpenAiLlmBuilder, Reply, TestServer, ToolCall,
};
use serde_json::json;

use crate::common::llm;

#[tokio::test]
async fn chat_sends_the_openai_wire_format_and_parses_the_reply() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("Bonjour").usage(11, 7));
    let client = server.llm_builder().temperature(0.25).max_tokens(50).seed(7).build().unwrap();

    let reply = client
        .chat(ChatRequest::new(vec![Message::system("Translate to French."), Message::user("Hello")]))
        .await
        .unwrap();

    assert_eq!(reply.content.as_deref(), Some("Bonjour"));
    assert_eq!(reply.finish_reason, Some(FinishReason::Stop));
    assert_eq!(reply.id, "chatcmpl-1");
    assert_eq!(reply.model, TEST_MODEL);
    assert_eq!(reply.usage, Some(TokenUsage { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 }));

    let sent = &server.requests()[0];
    assert_eq!(sent.bearer_token(), Some(TEST_API_KEY));
    assert_eq!(sent.body["model"], TEST_MODEL);
    assert_eq!(sent.body["temperature"], 0.25);
    assert_eq!(sent.body["max_completion_tokens"], 50);
    assert_eq!(sent.body["seed"], 7);
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "system", "content": "Translate to French."},
            {"role": "user", "content": "Hello"}
        ])
    );
    assert!(sent.body.get("stream").is_none());
    assert!(sent.body.get("tools").is_none());
}

#[tokio::test]
async fn request_model_and_knobs_override_client_defaults() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("ok"));
    let client = server.llm_builder().temperature(0.9).build().unwrap();
    client.chat(ChatRequest::new(vec![Message::user("hi")]).model("gpt-4.1").temperature(0.0)).await.unwrap();
    let body = &server.requests()[0].body;
    assert_eq!(body["model"], "gpt-4.1");
    assert_eq!(body["temperature"], 0.0);
}

#[tokio::test]
async fn tool_calls_and_tool_results_round_trip() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_calls([
        ("get_weather", json!({"city": "Paris"})),
        ("get_weather", json!({"city": "Rome"})),
    ]));
    server.enqueue(Reply::text("Sunny in both."));
    let client = llm(&server);

    let first = client.chat(ChatRequest::new(vec![Message::user("Weather in Paris and Rome?")])).await.unwrap();
    assert_eq!(first.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        first.tool_calls,
        vec![
            ToolCall::new("call_1_0", "get_weather", r#"{"city":"Paris"}"#),
            ToolCall::new("call_1_1", "get_weather", r#"{"city":"Rome"}"#)
        ]
    );

    let mut messages = vec![Message::user("Weather in Paris and Rome?"), first.to_message()];
    messages.push(Message::tool("call_1_0", "sunny"));
    messages.push(Message::tool("call_1_1", "sunny"));
    let second = client.chat(ChatRequest::new(messages)).await.unwrap();
    assert_eq!(second.content.as_deref(), Some("Sunny in both."));

    let body = &server.requests()[1].body;
    assert_eq!(body["messages"][1]["role"], "assistant");
    assert_eq!(body["messages"][1]["tool_calls"][0]["type"], "function");
    assert_eq!(body["messages"][1]["tool_calls"][1]["function"]["arguments"], r#"{"city":"Rome"}"#);
    assert_eq!(body["messages"][2], json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1_0"}));
}

#[tokio::test]
async fn configuration_comes_from_openai_environment_variables() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("ok"));
    let base = server.base_url();
    let client = OpenAiLlmBuilder::from_vars(|name| match name {
        "OPENAI_BASE_URL" => Some(format!("{base}/")),
        "OPENAI_API_KEY" => Some("sk-from-env".into()),
        "OPENAI_MODEL" => Some("env-model".into()),
        _ => None,
    })
    .build()
    .unwrap();
    assert_eq!(client.model(), "env-model");
    assert_eq!(client.base_url(), base, "a trailing slash would make async-openai request //chat/completions");
    client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap();
    let sent = &server.requests()[0];
    assert_eq!(sent.bearer_token(), Some("sk-from-env"));
    assert_eq!(sent.body["model"], "env-model");
}

#[test]
fn misconfiguration_is_reported_before_any_call() {
    let err = OpenAiLlmBuilder::from_vars(|_| None).build().unwrap_err();
    assert!(matches!(err, LlmError::Config(_)));
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    let err = OpenAiLlm::builder().base_url("localhost:8000/v1").build().unwrap_err();
    assert!(err.to_string().contains("not an http(s) URL"), "{err}");
    // A local server needs no key.
    assert!(OpenAiLlm::builder().base_url("http://127.0.0.1:11434/v1").build().is_ok());
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_api_key_appears_in_no_log_and_no_debug_output() {
    const KEY: &str = "sk-very-secret-0123456789";
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start().await.unwrap();
    server.require_api_key(KEY);
    server.enqueue(Reply::server_error());
    server.enqueue(Reply::text("ok"));
    let builder = server.llm_builder().api_key(KEY).retry(crate::common::fast_retry());
    assert!(!format!("{builder:?}").contains(KEY));
    let client = builder.build().unwrap();
    assert!(!format!("{client:?}").contains(KEY));
    client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap();
    let wrong = server.llm_builder().api_key("sk-wrong-key-987").build().unwrap();
    let err = wrong.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!format!("{err:?} {err}").contains("sk-wrong-key-987"));

    assert_eq!(server.requests()[0].bearer_token(), Some(KEY), "the key is sent");
    assert!(!format!("{:?}", server.requests()[0]).contains(KEY), "recorded requests redact it");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("retrying"), "the retry was logged: {text}");
    assert!(!text.contains(KEY) && !text.contains("sk-wrong-key-987"), "a key leaked into the logs:\n{text}");
}
