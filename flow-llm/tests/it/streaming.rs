//! Streaming: SSE chunks accumulated into a reply, tool-call fragments, cut and failed streams.

use flow_core::{Classify, ErrorClass, NoJournal, TokenUsage};
use flow_llm::{ChatRequest, FinishReason, LlmError, LlmExt, Message, Reply, TestServer};
use serde_json::{Value, json};

use crate::common::llm;

fn ask() -> ChatRequest {
    ChatRequest::new(vec![Message::user("tell me")])
}

#[tokio::test]
async fn a_text_stream_accumulates_with_usage() {
    let server = TestServer::start().await.unwrap();
    let text = "The quick brown fox jumps over the lazy dog and keeps running.";
    server.enqueue(Reply::text(text).usage(9, 10));
    let mut pieces = Vec::new();
    let reply = llm(&server)
        .complete_streaming(&NoJournal, ask(), &mut |d| {
            if let Some(c) = &d.content {
                pieces.push(c.clone());
            }
        })
        .await
        .unwrap();
    assert!(pieces.iter().filter(|p| !p.is_empty()).count() > 3, "text came in one piece: {pieces:?}");
    assert_eq!(pieces.concat(), text);
    assert_eq!(reply.content.as_deref(), Some(text));
    assert_eq!(reply.finish_reason, Some(FinishReason::Stop));
    assert_eq!(reply.usage, Some(TokenUsage { prompt_tokens: 9, completion_tokens: 10, total_tokens: 19 }));
    let sent = &server.requests()[0];
    assert!(sent.stream && sent.include_usage);
}

#[tokio::test]
async fn tool_call_fragments_are_joined_by_index() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_calls([
        ("get_weather", json!({"city": "Paris", "unit": "celsius"})),
        ("get_time", json!({"zone": "Europe/Rome"})),
    ]));
    let mut fragments = 0;
    let reply =
        llm(&server).complete_streaming(&NoJournal, ask(), &mut |d| fragments += d.tool_calls.len()).await.unwrap();
    assert!(fragments >= 4, "arguments were not fragmented: {fragments}");
    assert_eq!(reply.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(reply.tool_calls.len(), 2);
    assert_eq!(reply.tool_calls[0].id, "call_1_0");
    assert_eq!(reply.tool_calls[1].name, "get_time");
    let args: Value = serde_json::from_str(&reply.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "celsius"}));
}

#[tokio::test]
async fn the_raw_stream_is_openai_sse_ending_in_done() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("Hello there, streaming world"));
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let body = response.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let chunks: Vec<Value> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_cut_stream_is_a_transient_stream_error_after_the_partial_text() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::stream_cut("Once upon a time"));
    let mut seen = String::new();
    let err = llm(&server)
        .complete_streaming(&NoJournal, ask(), &mut |d| seen.push_str(d.content.as_deref().unwrap_or("")))
        .await
        .unwrap_err();
    assert_eq!(seen, "Once upon a time", "the partial text was delivered before the cut");
    assert!(matches!(&err, LlmError::Stream { message } if message.contains("Transport")), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

/// A stream that ends cleanly but without a finish reason (a proxy that closes the body early)
/// is incomplete, not a short answer.
#[tokio::test]
async fn a_stream_ending_without_a_finish_reason_is_incomplete() {
    let server = TestServer::start().await.unwrap();
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Once upon"}, "finish_reason": null}]
    });
    server.enqueue(Reply::raw(200, "text/event-stream", format!("data: {chunk}\n\n")));
    let mut seen = String::new();
    let err = llm(&server)
        .complete_streaming(&NoJournal, ask(), &mut |d| seen.push_str(d.content.as_deref().unwrap_or("")))
        .await
        .unwrap_err();
    assert_eq!(seen, "Once upon");
    assert!(matches!(err, LlmError::StreamIncomplete), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn an_error_event_mid_stream_is_a_transient_stream_error() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::stream_error("Hel", "upstream overloaded"));
    let err = llm(&server).complete_streaming(&NoJournal, ask(), &mut |_| {}).await.unwrap_err();
    assert!(matches!(&err, LlmError::Stream { message } if message.contains("upstream overloaded")), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn an_error_status_before_the_stream_is_retried_like_any_call() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::server_error());
    server.enqueue(Reply::text("second try"));
    let reply = llm(&server).complete_streaming(&NoJournal, ask(), &mut |_| {}).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("second try"));
    assert_eq!(server.hits(), 2);
}

/// A stream that stalls after its first chunk ends with the per-call timeout, named as such,
/// not as a transport or decode failure of the body.
#[tokio::test(start_paused = true)]
async fn a_stalled_stream_says_it_timed_out() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("one two three four").chunk_delay(std::time::Duration::from_secs(3600)));
    let client = server.llm_builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
    let mut seen = String::new();
    let err = client
        .complete_streaming(&NoJournal, ask(), &mut |d| seen.push_str(d.content.as_deref().unwrap_or("")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { after } if after == std::time::Duration::from_secs(30)),
        "expected a timeout naming 30s, got {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("did not finish within 30s") && text.contains("timeout"), "{text}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(seen.is_empty() || "one two three four".starts_with(&seen), "{seen:?}");
    assert_eq!(server.hits(), 1, "a timeout is left to the flow's retry policy");
}

/// A streaming request whose server never sends the response headers times out the same way.
#[tokio::test(start_paused = true)]
async fn a_stream_that_never_starts_says_it_timed_out() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("too late").delay(std::time::Duration::from_secs(3600)));
    let client = server.llm_builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
    let err = client.complete_streaming(&NoJournal, ask(), &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout { after } if after == std::time::Duration::from_secs(30)), "{err:?}");
    assert_eq!(server.hits(), 1);
}
