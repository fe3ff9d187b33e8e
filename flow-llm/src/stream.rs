//! Streamed replies: the pieces ([`ChatDelta`]) and how they add up to a [`ChatResponse`]
//! ([`StreamAccumulator`]).
//!
//! ```
//! use flow_llm::{ChatDelta, FinishReason, StreamAccumulator};
//!
//! let mut acc = StreamAccumulator::default();
//! acc.push(&ChatDelta { content: Some("Hel".into()), ..Default::default() });
//! acc.push(&ChatDelta { content: Some("lo".into()), finish_reason: Some(FinishReason::Stop), ..Default::default() });
//! assert_eq!(acc.finish().unwrap().content.as_deref(), Some("Hello"));
//! ```

use flow_core::TokenUsage;
use futures::stream::BoxStream;

use crate::chat::{ChatResponse, FinishReason, ToolCall};
use crate::error::LlmError;

/// A fragment of a tool call in a stream. The first fragment of an `index` carries `id` and
/// `name`; later ones carry more of `arguments`.
///
/// ```
/// let d = flow_llm::ToolCallDelta { index: 0, id: Some("c1".into()), name: Some("t".into()), arguments: String::new() };
/// assert_eq!(d.index, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which tool call this fragment belongs to.
    pub index: u32,
    /// The call's id (first fragment).
    pub id: Option<String>,
    /// The tool's name (first fragment).
    pub name: Option<String>,
    /// The next piece of the arguments text.
    pub arguments: String,
}

/// One chunk of a streamed reply.
///
/// ```
/// let d = flow_llm::ChatDelta { content: Some("Hi".into()), ..Default::default() };
/// assert!(d.finish_reason.is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatDelta {
    /// The completion id.
    pub id: Option<String>,
    /// The model.
    pub model: Option<String>,
    /// More text.
    pub content: Option<String>,
    /// More refusal text.
    pub refusal: Option<String>,
    /// Tool-call fragments.
    pub tool_calls: Vec<ToolCallDelta>,
    /// Set on the chunk that ends the reply.
    pub finish_reason: Option<FinishReason>,
    /// Set on the final usage chunk.
    pub usage: Option<TokenUsage>,
}

/// A streamed reply.
///
/// ```
/// use futures::StreamExt;
/// use flow_llm::{ChatDelta, ChatStream};
/// let s: ChatStream = futures::stream::iter(vec![Ok(ChatDelta::default())]).boxed();
/// # let _ = s;
/// ```
pub type ChatStream = BoxStream<'static, Result<ChatDelta, LlmError>>;

/// Adds up [`ChatDelta`]s into the [`ChatResponse`] they make.
///
/// Tool-call fragments are joined by `index`. [`finish`](Self::finish) fails with
/// [`LlmError::StreamIncomplete`] if no chunk carried a `finish_reason`, because a stream that is
/// cut off can otherwise look like a complete, shorter reply.
///
/// ```
/// use flow_llm::{ChatDelta, FinishReason, StreamAccumulator, ToolCallDelta};
///
/// let mut acc = StreamAccumulator::default();
/// acc.push(&ChatDelta {
///     tool_calls: vec![ToolCallDelta { index: 0, id: Some("c1".into()), name: Some("add".into()), arguments: "{\"a\":".into() }],
///     ..Default::default()
/// });
/// acc.push(&ChatDelta {
///     tool_calls: vec![ToolCallDelta { index: 0, arguments: "1}".into(), ..Default::default() }],
///     finish_reason: Some(FinishReason::ToolCalls),
///     ..Default::default()
/// });
/// let r = acc.finish().unwrap();
/// assert_eq!(r.tool_calls[0].arguments, "{\"a\":1}");
/// ```
#[derive(Clone, Debug, Default)]
pub struct StreamAccumulator {
    response: ChatResponse,
    content: Option<String>,
    refusal: Option<String>,
    // Ordered by index; fragments of one call may arrive in any chunk.
    calls: std::collections::BTreeMap<u32, ToolCall>,
}

impl StreamAccumulator {
    /// Adds one chunk.
    ///
    /// ```
    /// let mut acc = flow_llm::StreamAccumulator::default();
    /// acc.push(&flow_llm::ChatDelta::default());
    /// assert!(acc.finish().is_err());
    /// ```
    pub fn push(&mut self, delta: &ChatDelta) {
        if let Some(id) = &delta.id
            && self.response.id.is_empty()
        {
            self.response.id.clone_from(id);
        }
        if let Some(model) = &delta.model
            && self.response.model.is_empty()
        {
            self.response.model.clone_from(model);
        }
        if let Some(text) = &delta.content {
            self.content.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(text) = &delta.refusal {
            self.refusal.get_or_insert_with(String::new).push_str(text);
        }
        for fragment in &delta.tool_calls {
            let call = self.calls.entry(fragment.index).or_insert_with(|| ToolCall::new("", "", ""));
            if let Some(id) = &fragment.id {
                call.id.clone_from(id);
            }
            if let Some(name) = &fragment.name {
                call.name.push_str(name);
            }
            call.arguments.push_str(&fragment.arguments);
        }
        if let Some(reason) = &delta.finish_reason {
            self.response.finish_reason = Some(reason.clone());
        }
        if let Some(usage) = delta.usage {
            self.response.usage = Some(usage);
        }
    }

    /// The whole reply, or [`LlmError::StreamIncomplete`] if the model never finished.
    ///
    /// ```
    /// use flow_llm::{ChatDelta, FinishReason, StreamAccumulator};
    /// let mut acc = StreamAccumulator::default();
    /// acc.push(&ChatDelta { finish_reason: Some(FinishReason::Stop), ..Default::default() });
    /// assert!(acc.finish().is_ok());
    /// ```
    pub fn finish(self) -> Result<ChatResponse, LlmError> {
        if self.response.finish_reason.is_none() {
            return Err(LlmError::StreamIncomplete);
        }
        let mut response = self.response;
        response.content = self.content;
        response.refusal = self.refusal;
        response.tool_calls = self.calls.into_values().collect();
        Ok(response)
    }
}
