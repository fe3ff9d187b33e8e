//! Retries, Retry-After, timeouts, error classes and the shared concurrency limit.

use std::time::Duration;

use flow_core::{Classify, ErrorClass};
use flow_llm::{ChatRequest, ConcurrencyLimit, Llm, LlmError, Match, Message, Reply, RetryPolicy, TestServer};

use crate::common::{fast_retry, llm};

fn ask() -> ChatRequest {
    ChatRequest::new(vec![Message::user("hi")])
}

// The waits below run on tokio's paused clock: it jumps ahead whenever every task is idle, so
// a one-second Retry-After costs no real time and the elapsed virtual time is exact.

#[tokio::test(start_paused = true)]
async fn a_rate_limit_is_retried_after_the_retry_after_delay() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::rate_limited(1));
    server.enqueue(Reply::text("after the wait"));
    // Backoff alone would wait about 10 ms; only Retry-After explains a full second.
    let client = llm(&server);
    let started = tokio::time::Instant::now();
    let reply = client.chat(ask()).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("after the wait"));
    assert_eq!(server.hits(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1), "waited only {:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_honoured_too() {
    let server = TestServer::start().await.unwrap();
    server
        .enqueue(Reply::error(429, "tokens", Some("rate_limit_exceeded"), "slow down").header("retry-after-ms", "300"));
    server.enqueue(Reply::text("ok"));
    let started = tokio::time::Instant::now();
    llm(&server).chat(ask()).await.unwrap();
    assert_eq!(server.hits(), 2);
    assert!(started.elapsed() >= Duration::from_millis(300), "waited only {:?}", started.elapsed());
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_returns_at_once_for_the_flow_to_reschedule() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::rate_limited(3600));
    let client = server.llm_builder().retry(fast_retry().max_retry_after(Duration::from_secs(5))).build().unwrap();
    let err = client.chat(ask()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::RetryAfterTooLong { status: 429, limit, .. } if limit == Duration::from_secs(5)),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(server.hits(), 1, "a wait longer than max_retry_after is not waited for");
    let text = err.to_string();
    for part in ["asked to wait 3600s", "max_retry_after = 5s", "not retried", "Rate limit reached"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert!(!text.contains("retried with backoff"), "{text}");
}

/// How a client that waits at most one second in-process fares against one 429 carrying
/// `header: value`, followed by a success.
async fn after_retry_after(header: &str, value: &str) -> (Result<flow_llm::ChatResponse, LlmError>, usize) {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::error(429, "requests", Some("rate_limit_exceeded"), "slow down").header(header, value));
    server.enqueue(Reply::text("after the wait"));
    let client = server
        .llm_builder()
        .retry(fast_retry().max_retry_after(Duration::from_secs(1)))
        .concurrency(ConcurrencyLimit::new(4))
        .build()
        .unwrap();
    let outcome = client.chat(ask()).await;
    (outcome, server.hits())
}

fn too_long(outcome: &Result<flow_llm::ChatResponse, LlmError>) -> Duration {
    match outcome {
        Err(e @ LlmError::RetryAfterTooLong { retry_after, limit, .. }) => {
            assert_eq!(*limit, Duration::from_secs(1));
            assert!(e.to_string().contains("max_retry_after = 1s"), "{e}");
            *retry_after
        }
        other => panic!("expected RetryAfterTooLong, got {other:?}"),
    }
}

fn retried(outcome: &Result<flow_llm::ChatResponse, LlmError>, hits: usize) {
    assert_eq!(outcome.as_ref().unwrap().content.as_deref(), Some("after the wait"));
    assert_eq!(hits, 2);
}

#[tokio::test]
async fn a_huge_retry_after_is_clamped_and_refused_without_panicking() {
    for value in ["1e30", "18446744073709551616", "1e308"] {
        let (outcome, hits) = after_retry_after("retry-after", value).await;
        assert_eq!(too_long(&outcome), Duration::from_secs(24 * 3600), "{value}");
        assert!(outcome.unwrap_err().to_string().contains("or more (the server's value was clamped)"));
        assert_eq!(hits, 1);
    }
}

#[tokio::test]
async fn a_fractional_retry_after_is_read_exactly() {
    let (outcome, hits) = after_retry_after("retry-after", "1.5").await;
    assert_eq!(too_long(&outcome), Duration::from_millis(1500));
    assert_eq!(hits, 1);
    let (outcome, hits) = after_retry_after("retry-after", "0.01").await;
    retried(&outcome, hits);
}

#[tokio::test]
async fn a_negative_retry_after_is_ignored_in_favour_of_the_backoff() {
    for value in ["-5", "-1e30", "-inf"] {
        let (outcome, hits) = after_retry_after("retry-after", value).await;
        retried(&outcome, hits);
    }
}

#[tokio::test]
async fn a_garbage_retry_after_is_ignored_in_favour_of_the_backoff() {
    for value in ["soon", "NaN", "inf", "1s", ""] {
        let (outcome, hits) = after_retry_after("retry-after", value).await;
        retried(&outcome, hits);
    }
}

#[tokio::test]
async fn an_http_date_retry_after_is_read_relative_to_now() {
    let in_an_hour = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let (outcome, hits) = after_retry_after("retry-after", &in_an_hour).await;
    let asked = too_long(&outcome);
    // The date has whole seconds and a little time passes before it is read.
    assert!(asked > Duration::from_secs(3500) && asked <= Duration::from_secs(3600), "{asked:?}");
    assert_eq!(hits, 1);
    let a_minute_ago = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(60));
    let (outcome, hits) = after_retry_after("retry-after", &a_minute_ago).await;
    retried(&outcome, hits);
}

#[tokio::test]
async fn retry_after_ms_values_are_clamped_or_ignored_too() {
    let (outcome, hits) = after_retry_after("retry-after-ms", "1e300").await;
    assert_eq!(too_long(&outcome), Duration::from_secs(24 * 3600));
    assert_eq!(hits, 1);
    let (outcome, _) = after_retry_after("retry-after-ms", "2500").await;
    assert_eq!(too_long(&outcome), Duration::from_millis(2500));
    for value in ["-1", "NaN", "soon"] {
        let (outcome, hits) = after_retry_after("retry-after-ms", value).await;
        retried(&outcome, hits);
    }
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_backoff_then_fail_as_transient() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::server_error());
    let client = server
        .llm_builder()
        .retry(RetryPolicy::default().max_retries(3).initial_backoff(Duration::from_millis(40)))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = client.chat(ask()).await.unwrap_err();
    assert_eq!(server.hits(), 4, "one attempt and three retries, no more (async-openai's own retry is off)");
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(flow_core::Error::from(err).class(), ErrorClass::Transient);
    // Jittered 40 + 80 + 160 ms, each at least halved.
    assert!(started.elapsed() >= Duration::from_millis(140), "backoff too short: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_503_html_page_then_success_recovers() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::any()).times(1).reply(Reply::raw(503, "text/html", "<html>Service Unavailable</html>"));
    server.when(Match::any()).reply(Reply::text("recovered"));
    let reply = llm(&server).chat(ask()).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("recovered"));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn refused_requests_are_permanent_and_not_retried() {
    let server = TestServer::start().await.unwrap();
    let cases = [
        (Reply::bad_request("Invalid 'messages'"), 400, "fix the request"),
        (Reply::unauthorized(), 401, "OPENAI_API_KEY"),
        (
            Reply::error(
                403,
                "invalid_request_error",
                Some("unsupported_country_region_territory"),
                "Country not supported",
            ),
            403,
            "permissions",
        ),
        (
            Reply::error(404, "invalid_request_error", Some("model_not_found"), "The model `x` does not exist"),
            404,
            "model name",
        ),
        (Reply::quota_exceeded(), 429, "quota"),
    ];
    let client = llm(&server);
    for (i, (reply, status, hint)) in cases.into_iter().enumerate() {
        server.enqueue(reply);
        let err = client.chat(ask()).await.unwrap_err();
        assert_eq!(server.hits(), i + 1, "status {status} must not be retried");
        assert_eq!(err.status(), Some(status));
        assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
        assert!(err.to_string().contains(hint), "{err}");
    }
}

#[tokio::test]
async fn a_non_openai_error_body_keeps_its_status() {
    let server = TestServer::start().await.unwrap();
    // vLLM's flat error object with a numeric code, which async-openai alone turns into a
    // deserialization error without the status.
    server.enqueue(Reply::raw(
        400,
        "application/json",
        r#"{"object":"error","message":"max_tokens too large","type":"BadRequestError","param":null,"code":400}"#,
    ));
    let err = llm(&server).chat(ask()).await.unwrap_err();
    match &err {
        LlmError::Api { status, message, code, .. } => {
            assert_eq!((*status, message.as_str(), code.as_deref()), (400, "max_tokens too large", Some("400")));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_success_bodies_are_clear_permanent_errors() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::malformed(r#"{"choices": "not a list"}"#));
    server.enqueue(Reply::malformed(r#"{"id":"x","object":"chat.completion","created":0,"model":"#));
    server.enqueue(Reply::malformed(r#"{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[]}"#));
    let client = llm(&server);
    for _ in 0..2 {
        let err = client.chat(ask()).await.unwrap_err();
        assert!(matches!(err, LlmError::MalformedResponse { .. }), "{err:?}");
        assert!(err.to_string().contains("not a valid OpenAI chat completion"), "{err}");
        assert_eq!(err.class(), ErrorClass::Permanent);
    }
    let err = client.chat(ask()).await.unwrap_err();
    assert!(matches!(err, LlmError::EmptyResponse), "{err:?}");
    assert_eq!(server.hits(), 3, "malformed replies are not retried");
}

/// A connection that drops half-way through the body is the network failing, not the server
/// answering garbage: a transient error for the flow's retry policy (the client itself retries
/// only failures to connect, as for timeouts).
#[tokio::test]
async fn a_connection_cut_mid_body_is_a_transient_transport_error() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::stream_cut("truncated body"));
    let err = llm(&server).chat(ask()).await.unwrap_err();
    assert!(matches!(&err, LlmError::Transport { message } if message.contains("body")), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(server.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_timeout_fails_fast_as_transient() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("too late").delay(Duration::from_secs(3600)));
    let client = server.llm_builder().timeout(Duration::from_secs(30)).build().unwrap();
    let err = client.chat(ask()).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout { after } if after == Duration::from_secs(30)), "{err:?}");
    assert!(err.to_string().contains("did not finish within 30s"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(server.hits(), 1, "a timeout is left to the flow's retry policy");
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_then_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = flow_llm::OpenAiLlm::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .retry(RetryPolicy::default().max_retries(2).initial_backoff(Duration::from_millis(50)))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = client.chat(ask()).await.unwrap_err();
    assert!(matches!(err, LlmError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("OPENAI_BASE_URL"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(started.elapsed() >= Duration::from_millis(75), "no backoff between attempts: {:?}", started.elapsed());
}

#[tokio::test]
async fn the_concurrency_limit_caps_requests_in_flight_across_clients() {
    let server = TestServer::start().await.unwrap();
    server.set_latency(Duration::from_millis(80));
    server.respond_with(|_| Reply::text("ok"));
    let limit = ConcurrencyLimit::new(3);
    // Two clients (think: two agents with different models) share one limit.
    let a = server.llm_builder().concurrency(limit.clone()).build().unwrap();
    let b = server.llm_builder().model("other").concurrency(limit.clone()).build().unwrap();
    let calls = (0..16).map(|i| {
        let client = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { client.chat(ask()).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(server.hits(), 16);
    assert_eq!(server.max_in_flight(), 3, "the server saw more (or fewer) than 3 requests at once");
    assert_eq!(limit.available(), 3, "every permit was returned");
}

#[tokio::test]
async fn a_stream_holds_its_permit_until_it_ends() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::text("one two three four five six").chunk_delay(Duration::from_millis(30)));
    let client = server.llm_builder().concurrency(ConcurrencyLimit::new(1)).build().unwrap();
    let run = || async {
        use flow_llm::LlmExt;
        client.complete_streaming(&flow_core::NoJournal, ask(), &mut |_| {}).await
    };
    let (x, y) = tokio::join!(run(), run());
    assert!(x.is_ok() && y.is_ok());
    assert_eq!(server.max_in_flight(), 1);
}

#[test]
fn clients_share_the_process_wide_limit_by_default() {
    let a = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:1/v1").build().unwrap();
    let b = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:2/v1").model("m2").build().unwrap();
    assert!(a.concurrency_limit().same_as(b.concurrency_limit()));
    assert!(a.concurrency_limit().same_as(&ConcurrencyLimit::shared()));
}
