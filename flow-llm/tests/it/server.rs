//! The test server itself, spoken to with a plain HTTP client and with the real one.

use std::time::Duration;

use flow_llm::{ChatRequest, Llm, LlmError, Match, Message, Reply, TestServer};
use serde_json::{Value, json};

use crate::common::llm;

async fn post(server: &TestServer, body: &Value) -> (u16, Value) {
    let response =
        reqwest::Client::new().post(format!("{}/chat/completions", server.base_url())).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn completions_carry_every_field_strict_clients_require() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("hi"));
    server.enqueue(Reply::tool_call("lookup", json!({"id": 7})));
    let ask = json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]});

    let (status, text) = post(&server, &ask).await;
    assert_eq!(status, 200);
    assert_eq!(text["object"], "chat.completion");
    assert!(text["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(text["created"].is_u64());
    assert_eq!(text["model"], "gpt-x");
    assert_eq!(text["choices"][0]["index"], 0);
    assert_eq!(text["choices"][0]["message"]["role"], "assistant");
    assert_eq!(text["choices"][0]["message"]["content"], "hi");
    assert_eq!(text["choices"][0]["finish_reason"], "stop");
    let usage = &text["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let (_, call) = post(&server, &ask).await;
    let tc = &call["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"]["name"], "lookup");
    assert_eq!(tc["function"]["arguments"], r#"{"id":7}"#);
    assert_eq!(call["choices"][0]["finish_reason"], "tool_calls");
    assert!(call["choices"][0]["message"]["content"].is_null());
}

#[tokio::test]
async fn the_models_endpoint_lists_models() {
    let server = TestServer::start().await.unwrap();
    server.set_models(["gpt-4o-mini", "gpt-4.1"]);
    let list: Value = reqwest::get(format!("{}/models", server.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4.1"]);
    assert_eq!(server.model_list_hits(), 1);
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn rules_answer_concurrent_requests_by_their_content() {
    let server = TestServer::start().await.unwrap();
    server.set_latency(Duration::from_millis(20));
    server.when(Match::last_user_contains("topic-3")).times(1).reply(Reply::text("special answer for 3"));
    server.when(Match::last_user_contains("topic-")).respond(|req| {
        let topic = req.chat.last_user_text().unwrap_or("").to_owned();
        Reply::text(format!("answer about {topic}"))
    });
    let client = llm(&server);
    let calls = (0..20).map(|i| {
        let client = client.clone();
        async move { client.chat(ChatRequest::new(vec![Message::user(format!("topic-{i}"))])).await.unwrap() }
    });
    let replies = futures::future::join_all(calls).await;
    for (i, reply) in replies.iter().enumerate() {
        let expected = if i == 3 { "special answer for 3".to_owned() } else { format!("answer about topic-{i}") };
        assert_eq!(reply.content.as_deref(), Some(expected.as_str()));
    }
    assert!(server.max_in_flight() > 1, "requests did not overlap");
    // The one-shot rule is used up: topic-3 now gets the general answer.
    let again = client.chat(ChatRequest::new(vec![Message::user("topic-3")])).await.unwrap();
    assert_eq!(again.content.as_deref(), Some("answer about topic-3"));
}

#[tokio::test]
async fn the_queue_comes_before_rules_and_rules_before_the_fallback() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|req| Reply::text(format!("fallback #{}", req.index)));
    server.when(Match::last_user_contains("rule")).reply(Reply::text("by rule"));
    server.enqueue(Reply::text("queued"));
    let client = llm(&server);
    let say = |text: &'static str| {
        let client = client.clone();
        async move { client.chat(ChatRequest::new(vec![Message::user(text)])).await.unwrap().content.unwrap() }
    };
    assert_eq!(say("rule").await, "queued");
    assert_eq!(say("rule").await, "by rule");
    assert_eq!(say("other").await, "fallback #3");
}

#[tokio::test]
async fn a_request_nothing_answers_gets_a_clear_error() {
    let server = TestServer::start().await.unwrap();
    let err = llm(&server).chat(ChatRequest::new(vec![Message::user("unscripted question")])).await.unwrap_err();
    match &err {
        LlmError::Api { status: 400, code: Some(code), message, .. } => {
            assert_eq!(code, "no_scripted_reply");
            assert!(message.contains("unscripted question"), "{message}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_required_api_key_is_checked() {
    let server = TestServer::start().await.unwrap();
    server.require_api_key("sk-right");
    server.respond_with(|_| Reply::text("welcome"));
    let wrong = server.llm_builder().api_key("sk-wrong").build().unwrap();
    let err = wrong.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let right = server.llm_builder().api_key("sk-right").build().unwrap();
    assert!(right.chat(ChatRequest::new(vec![Message::user("hi")])).await.is_ok());
}

/// On the paused clock the waits are virtual, so the elapsed time is exact, not a race.
#[tokio::test(start_paused = true)]
async fn latency_is_injected() {
    let server = TestServer::start().await.unwrap();
    server.set_latency(Duration::from_millis(150));
    server.enqueue(Reply::text("slow").delay(Duration::from_millis(100)));
    let started = tokio::time::Instant::now();
    llm(&server).chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}

#[tokio::test]
async fn bad_bodies_get_openai_shaped_400s_and_counters_reset() {
    let server = TestServer::start().await.unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, _) = post(&server, &json!({"model": "m", "messages": []})).await;
    assert_eq!(status, 400);
    assert_eq!(server.hits(), 2);
    server.reset_counters();
    assert_eq!((server.hits(), server.requests().len()), (0, 0));
}

/// `Duration::MAX` on top of the server-wide latency is a server that never answers (the
/// client times out), not an overflow panic that drops the connection.
#[tokio::test(start_paused = true)]
async fn a_delay_of_duration_max_hangs_instead_of_panicking() {
    let server = TestServer::start().await.unwrap();
    server.set_latency(Duration::from_secs(1));
    server.enqueue(Reply::text("never").delay(Duration::MAX));
    let client = server.llm_builder().timeout(Duration::from_secs(30)).build().unwrap();
    let err = client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout { .. }), "{err:?}");
}

async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.json().await.unwrap())
}

/// OpenAI's error shape: every field present, `message` saying what happened.
fn assert_openai_error<'a>(body: &'a Value, kind: &str) -> &'a str {
    let error = body["error"].as_object().unwrap_or_else(|| panic!("not an OpenAI error: {body}"));
    for field in ["message", "type", "param", "code"] {
        assert!(error.contains_key(field), "no `{field}` in {body}");
    }
    assert_eq!(error["type"], kind, "{body}");
    error["message"].as_str().unwrap()
}

#[tokio::test]
async fn a_twenty_megabyte_prompt_is_read_in_full() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::any()).reply(Reply::text("read it"));
    // A long prompt, or a base64 image in a data URL: far above axum's default 2 MiB.
    let prompt = "a".repeat(21 * 1024 * 1024);
    let reply = llm(&server).chat(ChatRequest::new(vec![Message::user(prompt.clone())])).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("read it"));
    assert_eq!(server.requests()[0].chat.last_user_text().map(str::len), Some(prompt.len()));
}

/// A body over the limit gets a 413 in OpenAI's error JSON, not axum's plain text.
#[tokio::test]
async fn a_body_over_the_limit_gets_a_413_in_openai_error_json() {
    let server = TestServer::start().await.unwrap();
    let limit = flow_llm::server::MAX_BODY_BYTES;
    // One byte over: the server reads the whole body before it refuses, so the answer cannot
    // race the request's last bytes.
    let body = vec![b' '; limit + 1];
    let request = reqwest::Client::new().post(format!("{}/chat/completions", server.base_url())).body(body);
    let (status, _, body) = send(request).await;
    assert_eq!(status, 413);
    let message = assert_openai_error(&body, "invalid_request_error");
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(message.contains(&limit.to_string()), "{message}");
    assert!(server.requests().is_empty(), "nothing was recorded");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_in_openai_error_json() {
    let server = TestServer::start().await.unwrap();
    let http = reqwest::Client::new();
    let base = server.base_url();

    let (status, _, body) = send(http.get(format!("{base}/assistants"))).await;
    assert_eq!(status, 404);
    let message = assert_openai_error(&body, "invalid_request_error");
    assert!(message.contains("Invalid URL (GET /v1/assistants)"), "{message}");
    let (status, _, body) = send(http.post(format!("http://{}/", server.addr())).body("{}")).await;
    assert_eq!(status, 404);
    assert_openai_error(&body, "invalid_request_error");

    let (status, headers, body) = send(http.get(format!("{base}/chat/completions"))).await;
    assert_eq!(status, 405);
    assert_eq!(headers.get("allow").and_then(|v| v.to_str().ok()), Some("POST"));
    let message = assert_openai_error(&body, "invalid_request_error");
    assert!(message.contains("GET /v1/chat/completions"), "{message}");
    let (status, headers, body) = send(http.delete(format!("{base}/models"))).await;
    assert_eq!(status, 405);
    assert!(headers.get("allow").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("GET")), "{headers:?}");
    assert_openai_error(&body, "invalid_request_error");
    assert_eq!(server.hits(), 0, "no chat completion was served");
}

#[tokio::test]
async fn models_are_listed_and_retrieved_by_id() {
    let server = TestServer::start().await.unwrap();
    server.set_models(["gpt-4o-mini", "meta-llama/Llama-3.1-8B-Instruct"]);
    let http = reqwest::Client::new();
    let base = server.base_url();

    let (status, _, list) = send(http.get(format!("{base}/models"))).await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
    for id in ["gpt-4o-mini", "meta-llama/Llama-3.1-8B-Instruct"] {
        let (status, _, model) = send(http.get(format!("{base}/models/{id}"))).await;
        assert_eq!(status, 200, "{model}");
        assert_eq!(model["id"], id);
        assert_eq!(model["object"], "model");
        assert!(model["created"].is_u64() && model["owned_by"].is_string(), "{model}");
    }
    let (status, _, missing) = send(http.get(format!("{base}/models/gpt-5-nonexistent"))).await;
    assert_eq!(status, 404);
    let message = assert_openai_error(&missing, "invalid_request_error");
    assert!(message.contains("gpt-5-nonexistent"), "{message}");
    assert_eq!(missing["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn choices_and_logprobs_it_cannot_serve_are_refused_not_ignored() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("the only reply"));
    let ask = |extra: Value| {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, param) in [
        (json!({"n": 3}), "n"),
        (json!({"n": 0}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"logprobs": false, "top_logprobs": 2}), "top_logprobs"),
    ] {
        let (status, body) = post(&server, &ask(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        let message = assert_openai_error(&body, "invalid_request_error");
        assert!(message.contains(param), "{extra}: {message}");
        assert_eq!(body["error"]["param"], param);
    }
    // What it can serve is served, and the refusals did not use up the scripted reply.
    let (status, body) = post(&server, &ask(json!({"n": 1, "logprobs": false}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "the only reply");
    assert_eq!(body["choices"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_cut_reply_drops_the_connection_after_the_partial_text() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::stream_cut("Once upon a time"));
    server.enqueue(Reply::stream_cut("Once upon a time"));
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let ask = json!({"model": "m", "messages": [{"role": "user", "content": "a story"}], "stream": true});

    let response = http.post(&url).json(&ask).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let error = loop {
        match futures::StreamExt::next(&mut body).await {
            Some(Ok(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Some(Err(e)) => break e,
            None => panic!("the stream ended cleanly; expected a dropped connection. Body: {seen}"),
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    for piece in ["\"Once upon \"", "\"a time\""] {
        assert!(seen.contains(piece), "the partial text came before the cut: {seen}");
    }
    assert!(!seen.contains("[DONE]") && !seen.contains("finish_reason\":\"stop"), "{seen}");

    // Without `stream`, the JSON body is cut half-way the same way.
    let ask = json!({"model": "m", "messages": [{"role": "user", "content": "a story"}]});
    let response = http.post(&url).json(&ask).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let error = response.bytes().await.unwrap_err();
    assert!(error.is_body() || error.is_decode(), "{error:?}");
}
