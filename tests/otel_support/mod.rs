//! What the OpenTelemetry tests share: an OTLP/HTTP receiver on loopback that decodes the
//! export requests with the official proto types, and ways to look at the spans it got.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::sync::watch;

/// What the receiver got: every span of every export request, and how many so far.
#[derive(Clone)]
pub struct Received {
    pub spans: Arc<Mutex<Vec<Span>>>,
    pub count: watch::Sender<usize>,
}

impl Received {
    /// The spans received so far, in the order they arrived.
    pub fn snapshot(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
    if let Ok(request) = ExportTraceServiceRequest::decode(body) {
        let mut spans = received.spans.lock().unwrap_or_else(|p| p.into_inner());
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        received.count.send_replace(spans.len());
    }
    // Answered once the spans are stored: an exporter whose flush returned has been heard.
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// An OTLP/HTTP receiver on an ephemeral loopback port; returns the traces endpoint.
pub async fn receiver() -> Result<(String, Received), Box<dyn std::error::Error + Send + Sync>> {
    let received = Received { spans: Arc::default(), count: watch::Sender::new(0) };
    let app = Router::new().route("/v1/traces", post(export)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/v1/traces"), received))
}

pub fn attr<'s>(span: &'s Span, key: &str) -> Option<&'s Any> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

pub fn text_attr(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("span {} has no text attribute {key}: {other:?}", span.name),
    }
}

pub fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Any::IntValue(n)) => *n,
        other => panic!("span {} has no integer attribute {key}: {other:?}", span.name),
    }
}

pub fn named<'s>(spans: &'s [Span], name: &str) -> Vec<&'s Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

pub fn one<'s>(spans: &'s [Span], name: &str) -> &'s Span {
    match named(spans, name).as_slice() {
        [span] => span,
        other => panic!(
            "expected one span {name}, got {}: {:?}",
            other.len(),
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        ),
    }
}

pub fn parent_of<'s>(spans: &'s [Span], span: &Span) -> &'s Span {
    match spans.iter().find(|p| p.span_id == span.parent_span_id) {
        Some(parent) => parent,
        None => panic!("the parent of {} was not exported", span.name),
    }
}

/// Checks the GenAI semantic-convention attributes of a `chat` span of the test server's
/// model, and returns its (input, output) token counts.
pub fn chat_usage(chat: &Span) -> (i64, i64) {
    assert_eq!(text_attr(chat, "gen_ai.operation.name"), "chat");
    assert_eq!(text_attr(chat, "gen_ai.provider.name"), "openai");
    assert_eq!(text_attr(chat, "gen_ai.request.model"), "test-model");
    (int_attr(chat, "gen_ai.usage.input_tokens"), int_attr(chat, "gen_ai.usage.output_tokens"))
}
