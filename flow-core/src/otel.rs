//! OpenTelemetry export of runs (feature `otel`).
//!
//! The runtime's spans are ordinary `tracing` spans, named and attributed for OpenTelemetry:
//! `run {flow}` per execution of a run, `step {method}` per step attempt, and, from flow-llm,
//! `invoke_agent {role}`, `chat {model}` per LLM call and `execute_tool {name}` per tool call,
//! with the GenAI semantic-convention attributes (`gen_ai.operation.name`,
//! `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, `gen_ai.tool.name`). Exporting them is a matter of installing
//! the [`layer`] of a [`tracer_provider`] in the application's subscriber:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! # fn main() -> Result<(), flow_core::otel::OtelError> {
//! // OTLP over HTTP/protobuf to OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318).
//! let provider = flow_core::otel::tracer_provider("my-service", None)?;
//! let subscriber = tracing_subscriber::registry().with(flow_core::otel::layer(&provider));
//! tracing::subscriber::set_global_default(subscriber).ok();
//! // ... run flows ...
//! provider.shutdown().ok(); // sends what is still buffered
//! # Ok(()) }
//! ```
//!
//! A run with a store keeps the W3C trace context of its first exported execution
//! ([`Store::set_trace_context`]); every later execution, in another process or days later,
//! is a child of it, so the whole run is one trace. Spans are exported when they end: a process
//! killed mid-run takes its unended spans (its `run` span, the steps in flight) with it, while
//! those it had exported stay in the trace, and the next execution's retry of an interrupted
//! step is a `step` span of its own under that execution.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

pub use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
pub use tracing_opentelemetry::OpenTelemetryLayer;

use crate::store::{Store, StoreError};

/// The environment variables that say where OTLP goes; [`from_env`] exports only when one is
/// set.
pub const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// Why the OTLP exporter could not be set up.
///
/// ```
/// let e = flow_core::otel::OtelError::Exporter("bad endpoint".into());
/// assert!(e.to_string().contains("bad endpoint"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The exporter refused its configuration.
    #[error(
        "could not set up the OTLP span exporter: {0}; check OTEL_EXPORTER_OTLP_ENDPOINT (an http:// URL such as http://localhost:4318)"
    )]
    Exporter(String),
}

/// A tracer provider that sends spans by OTLP over HTTP/protobuf, batched from a thread of its
/// own, naming the service `service_name`. `endpoint` is the full URL of the traces endpoint
/// (`http://host:4318/v1/traces`); `None` reads the standard `OTEL_EXPORTER_OTLP_*` variables
/// (default `http://localhost:4318/v1/traces`). Nothing is sent until spans end, and a
/// collector that is not there costs a logged export error, not a failed run.
///
/// Call [`SdkTracerProvider::shutdown`] (or `force_flush`) before the process exits so the last
/// batch is sent; both block, so call them off the async runtime's threads
/// (`tokio::task::spawn_blocking`) or after it.
///
/// ```
/// # fn main() -> Result<(), flow_core::otel::OtelError> {
/// let provider = flow_core::otel::tracer_provider("doc", Some("http://127.0.0.1:9/v1/traces"))?;
/// provider.shutdown().ok();
/// # Ok(()) }
/// ```
pub fn tracer_provider(service_name: &str, endpoint: Option<&str>) -> Result<SdkTracerProvider, OtelError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder.build().map_err(|e| OtelError::Exporter(e.to_string()))?;
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// A [`tracer_provider`] when one of [`ENDPOINT_VARS`] is set, `None` otherwise: a program
/// exports its runs when pointed at a collector and stays quiet (and offline) when not.
///
/// ```
/// # fn main() -> Result<(), flow_core::otel::OtelError> {
/// if let Some(provider) = flow_core::otel::from_env("doc")? {
///     provider.shutdown().ok();
/// }
/// # Ok(()) }
/// ```
pub fn from_env(service_name: &str) -> Result<Option<SdkTracerProvider>, OtelError> {
    if ENDPOINT_VARS.iter().all(|v| std::env::var_os(v).is_none_or(|s| s.is_empty())) {
        return Ok(None);
    }
    tracer_provider(service_name, None).map(Some)
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`'s tracer.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// # fn main() -> Result<(), flow_core::otel::OtelError> {
/// let provider = flow_core::otel::tracer_provider("doc", Some("http://127.0.0.1:9/v1/traces"))?;
/// let _subscriber = tracing_subscriber::registry().with(flow_core::otel::layer(&provider));
/// # Ok(()) }
/// ```
pub fn layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("flow-core"))
}

/// The W3C `traceparent` of an OpenTelemetry context, if it holds a valid span.
fn traceparent(cx: &opentelemetry::Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` (an execution of the run, not yet entered) continue the run's trace: a child
/// of the execution whose context the store keeps, or, when none is kept, the execution whose
/// context is kept from now on. A store that cannot keep it only costs the continuity.
pub(crate) async fn continue_trace(span: &tracing::Span, store: &dyn Store, run_id: Uuid) {
    if span.is_disabled() {
        return;
    }
    let kept = match store.trace_context(run_id).await {
        Ok(kept) => kept,
        Err(StoreError::Unsupported { .. }) => return,
        Err(e) => {
            tracing::debug!(%run_id, error = %e, "could not read the run's trace context; this execution starts a trace of its own");
            None
        }
    };
    if let Some(kept) = kept {
        let carrier = HashMap::from([("traceparent".to_owned(), kept)]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        if parent.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer is installed: nothing to continue then.
            let _ = span.set_parent(parent);
            return;
        }
    }
    let Some(own) = traceparent(&span.context()) else { return };
    if let Err(e) = store.set_trace_context(run_id, &own).await {
        tracing::debug!(%run_id, error = %e, "could not keep the run's trace context; a later execution will start a trace of its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn traceparent_round_trips_and_an_empty_context_has_none() {
        assert_eq!(traceparent(&opentelemetry::Context::new()), None);
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
            SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        assert_eq!(traceparent(&cx).as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    }
}
