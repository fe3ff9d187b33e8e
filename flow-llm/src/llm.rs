//! The [`Llm`] trait every model client implements, and [`LlmExt`], the journaled way to call one
//! from a flow step.
//!
//! ```
//! use flow_core::NoJournal;
//! use flow_llm::{ChatRequest, ChatResponse, LlmExt, Message, ScriptedLlm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_llm::LlmError> {
//! let llm = ScriptedLlm::new("test-model").reply(ChatResponse::text("Paris"));
//! let reply = llm.complete(&NoJournal, ChatRequest::new(vec![Message::user("Capital of France?")])).await?;
//! assert_eq!(reply.content.as_deref(), Some("Paris"));
//! # Ok(())
//! # }
//! ```

use std::sync::Mutex;

use flow_core::Journal;
use futures::StreamExt;
use serde_json::Value;
use tracing::Instrument;

use crate::chat::{ChatRequest, ChatResponse};
use crate::error::LlmError;
use crate::stream::{ChatDelta, ChatStream, StreamAccumulator};

/// A chat model.
///
/// Implementations make one call per `chat` and record nothing; call them through [`LlmExt`]
/// inside a flow so that each call is journaled and a re-run step replays it.
///
/// ```
/// use async_trait::async_trait;
/// use flow_llm::{ChatRequest, ChatResponse, Llm, LlmError};
///
/// struct Echo;
///
/// #[async_trait]
/// impl Llm for Echo {
///     fn model(&self) -> &str { "echo" }
///     async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
///         Ok(ChatResponse::text(request.last_user_text().unwrap_or_default()))
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Llm: Send + Sync {
    /// The model used when a request names none.
    fn model(&self) -> &str;

    /// Who serves the model, as the OpenTelemetry GenAI conventions name providers
    /// (`gen_ai.provider.name`: `"openai"`, `"ollama"`, `"anthropic"`, ...). The default is
    /// `"openai"`, the wire protocol every client of this crate speaks.
    ///
    /// ```
    /// use flow_llm::{Llm, ScriptedLlm};
    /// assert_eq!(ScriptedLlm::new("m").provider(), "openai");
    /// ```
    fn provider(&self) -> &str {
        "openai"
    }

    /// One chat completion.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError>;

    /// One chat completion, streamed. The default makes a normal call and yields it as one chunk.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError> {
        let response = self.chat(request).await?;
        let delta = ChatDelta {
            id: Some(response.id),
            model: Some(response.model),
            content: response.content,
            refusal: response.refusal,
            tool_calls: response
                .tool_calls
                .into_iter()
                .enumerate()
                .map(|(i, c)| crate::stream::ToolCallDelta {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    id: Some(c.id),
                    name: Some(c.name),
                    arguments: c.arguments,
                })
                .collect(),
            finish_reason: response.finish_reason,
            usage: response.usage,
        };
        Ok(futures::stream::once(async move { Ok(delta) }).boxed())
    }
}

/// The journaled way to call an [`Llm`]: each call goes through
/// [`Journal::record`] with kind `"llm"` and the model as name, so a flow step that runs again
/// after a crash gets the recorded reply instead of paying for the call twice. Token usage is
/// reported to the journal only when the call really happens.
///
/// Pass `cx` (a flow method's context) as the journal inside a flow, [`flow_core::NoJournal`]
/// outside one.
///
/// The recorded reply is replayed only for the same request (model, messages, tools, settings).
/// A step that runs again with a changed request, e.g. resumed after its prompt was fixed, fails
/// with a non-determinism error naming the run and the step: it is neither handed the old reply
/// to a different question nor sent again on top of a journal recorded for the old one. Fork
/// the run (`Runner::fork`) to ask the new question; see [`Journal::record`].
///
/// ```
/// use flow_core::NoJournal;
/// use flow_llm::{ChatRequest, ChatResponse, LlmExt, Message, ScriptedLlm};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_llm::LlmError> {
/// let llm = ScriptedLlm::new("m").reply(ChatResponse::text("ok"));
/// // Inside a flow method: `llm.complete(cx, request)`.
/// llm.complete(&NoJournal, ChatRequest::new(vec![Message::user("hi")])).await?;
/// # Ok(()) }
/// ```
pub trait LlmExt: Llm {
    /// A journaled chat completion.
    ///
    /// ```
    /// use flow_core::NoJournal;
    /// use flow_llm::{ChatRequest, ChatResponse, LlmExt, Message, ScriptedLlm};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_llm::LlmError> {
    /// let llm = ScriptedLlm::new("m").reply(ChatResponse::text("ok"));
    /// let r = llm.complete(&NoJournal, ChatRequest::new(vec![Message::user("hi")])).await?;
    /// assert_eq!(r.content.as_deref(), Some("ok"));
    /// # Ok(()) }
    /// ```
    fn complete<'a>(
        &'a self,
        journal: &'a dyn Journal,
        request: ChatRequest,
    ) -> impl Future<Output = Result<ChatResponse, LlmError>> + Send + 'a {
        async move { journaled(self, journal, request, None).await }
    }

    /// A journaled, streamed chat completion: `on_delta` sees each chunk as it arrives, the
    /// assembled reply is returned and recorded. A replayed call does not call `on_delta`.
    ///
    /// ```
    /// use flow_core::NoJournal;
    /// use flow_llm::{ChatRequest, ChatResponse, LlmExt, Message, ScriptedLlm};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_llm::LlmError> {
    /// let llm = ScriptedLlm::new("m").reply(ChatResponse::text("streamed"));
    /// let mut seen = String::new();
    /// let r = llm
    ///     .complete_streaming(&NoJournal, ChatRequest::new(vec![Message::user("hi")]), &mut |d| {
    ///         seen.push_str(d.content.as_deref().unwrap_or(""))
    ///     })
    ///     .await?;
    /// assert_eq!(seen, "streamed");
    /// assert_eq!(r.content.as_deref(), Some("streamed"));
    /// # Ok(()) }
    /// ```
    fn complete_streaming<'a>(
        &'a self,
        journal: &'a dyn Journal,
        request: ChatRequest,
        on_delta: &'a mut (dyn FnMut(&ChatDelta) + Send),
    ) -> impl Future<Output = Result<ChatResponse, LlmError>> + Send + 'a {
        async move { journaled(self, journal, request, Some(on_delta)).await }
    }
}

impl<T: Llm + ?Sized> LlmExt for T {}

async fn journaled<L: Llm + ?Sized>(
    llm: &L,
    journal: &dyn Journal,
    mut request: ChatRequest,
    on_delta: Option<&mut (dyn FnMut(&ChatDelta) + Send)>,
) -> Result<ChatResponse, LlmError> {
    // The journal entry must name the model that is really used, so a changed default model
    // shows up as a changed request on replay.
    let model = request.model.get_or_insert_with(|| llm.model().to_owned()).clone();
    let request_json = serde_json::to_value(&request).map_err(|e| LlmError::InvalidRequest(e.to_string()))?;
    // The journal speaks flow_core::Error; keep our own error aside so callers get the precise
    // variant back rather than a flattened message.
    let failure: Mutex<Option<LlmError>> = Mutex::new(None);
    // A run streaming its tokens gets the reply as the model writes it; the journal entry is
    // the assembled reply either way, so a replay neither knows nor cares how it was fetched.
    let tokens = journal.wants_tokens();
    // Only a call that really happens is a span: the span is made when the journal runs the
    // call, not before, so a replayed call (which asks nobody) has none.
    let effect = async {
        let span = tracing::info_span!(
            "llm_call",
            otel.name = %format_args!("chat {model}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = llm.provider(),
            gen_ai.system = llm.provider(),
            gen_ai.request.model = %model,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
        );
        let call = async {
            let outcome = match (on_delta, tokens) {
                (None, false) => llm.chat(request).await,
                (Some(on_delta), false) => stream_to_end(llm, request, on_delta).await,
                (mut on_delta, true) => {
                    let mut forward = |delta: &ChatDelta| {
                        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                            journal.stream_token(&model, text);
                        }
                        if let Some(on_delta) = on_delta.as_mut() {
                            on_delta(delta);
                        }
                    };
                    stream_to_end(llm, request, &mut forward).await
                }
            };
            let current = tracing::Span::current();
            match outcome {
                Ok(response) => {
                    current.record("gen_ai.response.model", response.model.as_str());
                    if let Some(usage) = response.usage {
                        // Signed: OpenTelemetry has no unsigned integers, and exports u64s as text.
                        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                        current.record("gen_ai.usage.input_tokens", signed(usage.prompt_tokens));
                        current.record("gen_ai.usage.output_tokens", signed(usage.completion_tokens));
                        journal.report_usage(&model, usage);
                    }
                    serde_json::to_value(&response)
                        .map_err(|e| flow_core::Error::permanent(format!("could not record the LLM reply: {e}")))
                }
                Err(err) => {
                    current.record("otel.status_code", "ERROR");
                    let flat = flow_core::Error::msg(err.to_string()).with_class(flow_core::Classify::class(&err));
                    if let Ok(mut slot) = failure.lock() {
                        *slot = Some(err);
                    }
                    Err(flat)
                }
            }
        };
        call.instrument(span).await
    };
    match journal.record("llm", &model, &request_json, Box::pin(effect)).await {
        Ok(value) => decode_reply(value),
        Err(err) => Err(take_failure(failure).unwrap_or_else(|| LlmError::journal(&err))),
    }
}

pub(crate) fn take_failure(slot: Mutex<Option<LlmError>>) -> Option<LlmError> {
    match slot.into_inner() {
        Ok(v) => v,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn decode_reply(value: Value) -> Result<ChatResponse, LlmError> {
    serde_json::from_value(value).map_err(|e| LlmError::ReplayMismatch { kind: "llm".into(), message: e.to_string() })
}

async fn stream_to_end<L: Llm + ?Sized>(
    llm: &L,
    request: ChatRequest,
    on_delta: &mut (dyn FnMut(&ChatDelta) + Send),
) -> Result<ChatResponse, LlmError> {
    let mut stream = llm.chat_stream(request).await?;
    let mut acc = StreamAccumulator::default();
    while let Some(delta) = stream.next().await {
        let delta = delta?;
        on_delta(&delta);
        acc.push(&delta);
    }
    acc.finish()
}
