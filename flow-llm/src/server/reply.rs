//! [`Reply`]: what the [`TestServer`](crate::TestServer) answers to one request.

use std::time::Duration;

use flow_core::TokenUsage;
use serde_json::Value;

use crate::chat::FinishReason;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScriptedCall {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ReplyKind {
    Message { content: Option<String>, refusal: Option<String>, tool_calls: Vec<ScriptedCall> },
    Error { status: u16, body: String },
    Raw { status: u16, content_type: String, body: String },
    StreamCut { content: String },
    StreamError { content: String, message: String },
}

/// One scripted answer of the [`TestServer`](crate::TestServer).
///
/// A message reply is sent as a chat completion, or as an SSE stream when the request asks for
/// `stream: true` (text in several chunks, tool-call arguments in fragments, a usage chunk when
/// `stream_options.include_usage` is set, then `data: [DONE]`). Usage defaults to a deterministic
/// estimate from the text lengths.
///
/// ```
/// use std::time::Duration;
/// use flow_llm::Reply;
///
/// let slow = Reply::text("done").delay(Duration::from_millis(50)).usage(12, 3);
/// let call = Reply::tool_call("get_weather", serde_json::json!({"city": "Paris"}));
/// let limited = Reply::rate_limited(1);
/// # let _ = (slow, call, limited);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub(crate) kind: ReplyKind,
    pub(crate) delay: Duration,
    pub(crate) chunk_delay: Duration,
    pub(crate) usage: Option<TokenUsage>,
    pub(crate) finish_reason: Option<FinishReason>,
    pub(crate) headers: Vec<(String, String)>,
    /// The text pieces to stream, as scripted ([`Reply::deltas`]); else the text is cut into
    /// pieces of a few words.
    pub(crate) deltas: Option<Vec<String>>,
    /// Keeps the end of a streamed reply back until released ([`Reply::hold_finish`]).
    pub(crate) hold: Option<super::Hold>,
}

impl Reply {
    fn of(kind: ReplyKind) -> Self {
        Reply {
            kind,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            usage: None,
            finish_reason: None,
            headers: Vec::new(),
            deltas: None,
            hold: None,
        }
    }

    /// A text answer streamed in exactly these pieces (one chunk each) to a request that asks
    /// for a stream; a request that does not gets their concatenation.
    ///
    /// ```
    /// let r = flow_llm::Reply::deltas(["Once ", "upon ", "a time"]);
    /// # let _ = r;
    /// ```
    pub fn deltas<P: Into<String>>(pieces: impl IntoIterator<Item = P>) -> Self {
        let pieces: Vec<String> = pieces.into_iter().map(Into::into).collect();
        let mut reply = Self::text(pieces.concat());
        reply.deltas = Some(pieces);
        reply
    }

    /// Streams the text pieces, then keeps the rest of the reply (the chunk with the finish
    /// reason, the usage, `[DONE]`) back until `hold` is released: a test sees the pieces
    /// arrive while the call is still going, with no timing involved.
    ///
    /// ```
    /// let hold = flow_llm::server::Hold::new();
    /// let r = flow_llm::Reply::deltas(["a", "b"]).hold_finish(&hold);
    /// # let _ = r;
    /// ```
    pub fn hold_finish(mut self, hold: &super::Hold) -> Self {
        self.hold = Some(hold.clone());
        self
    }

    /// A text answer.
    ///
    /// ```
    /// let r = flow_llm::Reply::text("Hello");
    /// # let _ = r;
    /// ```
    pub fn text(content: impl Into<String>) -> Self {
        Self::of(ReplyKind::Message { content: Some(content.into()), refusal: None, tool_calls: Vec::new() })
    }

    /// A structured answer: `value` as JSON text in the message content.
    ///
    /// ```
    /// let r = flow_llm::Reply::json(&serde_json::json!({"score": 7}));
    /// # let _ = r;
    /// ```
    pub fn json(value: &Value) -> Self {
        Self::text(value.to_string())
    }

    /// One tool call (id `call_<request>_<n>`).
    ///
    /// ```
    /// let r = flow_llm::Reply::tool_call("add", serde_json::json!({"a": 1, "b": 2}));
    /// # let _ = r;
    /// ```
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::tool_calls([(name.into(), arguments)])
    }

    /// Several tool calls in one answer (parallel tool calls).
    ///
    /// ```
    /// use serde_json::json;
    /// let r = flow_llm::Reply::tool_calls([("weather", json!({"city": "Paris"})), ("weather", json!({"city": "Rome"}))]);
    /// # let _ = r;
    /// ```
    pub fn tool_calls<N: Into<String>>(calls: impl IntoIterator<Item = (N, Value)>) -> Self {
        let tool_calls = calls
            .into_iter()
            .map(|(name, args)| ScriptedCall { id: None, name: name.into(), arguments: args.to_string() })
            .collect();
        Self::of(ReplyKind::Message { content: None, refusal: None, tool_calls })
    }

    /// A tool call whose arguments text is sent verbatim, e.g. invalid JSON.
    ///
    /// ```
    /// let r = flow_llm::Reply::tool_call_raw("add", "{not json");
    /// # let _ = r;
    /// ```
    pub fn tool_call_raw(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        let call = ScriptedCall { id: None, name: name.into(), arguments: arguments.into() };
        Self::of(ReplyKind::Message { content: None, refusal: None, tool_calls: vec![call] })
    }

    /// A safety refusal (`content: null`, `refusal: text`).
    ///
    /// ```
    /// let r = flow_llm::Reply::refusal("I can't help with that.");
    /// # let _ = r;
    /// ```
    pub fn refusal(text: impl Into<String>) -> Self {
        Self::of(ReplyKind::Message { content: None, refusal: Some(text.into()), tool_calls: Vec::new() })
    }

    /// An OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}`.
    ///
    /// ```
    /// let r = flow_llm::Reply::error(400, "invalid_request_error", Some("context_length_exceeded"), "too long");
    /// # let _ = r;
    /// ```
    pub fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Self {
        Self::of(ReplyKind::Error { status, body: super::error_json(message, kind, code, None).to_string() })
    }

    /// 400 Bad Request.
    ///
    /// ```
    /// let r = flow_llm::Reply::bad_request("Invalid schema for response_format");
    /// # let _ = r;
    /// ```
    pub fn bad_request(message: &str) -> Self {
        Self::error(400, "invalid_request_error", None, message)
    }

    /// 401 with OpenAI's `invalid_api_key` body.
    ///
    /// ```
    /// let r = flow_llm::Reply::unauthorized();
    /// # let _ = r;
    /// ```
    pub fn unauthorized() -> Self {
        Self::error(401, "invalid_request_error", Some("invalid_api_key"), "Incorrect API key provided.")
    }

    /// 429 rate limit with `Retry-After: <seconds>`.
    ///
    /// ```
    /// let r = flow_llm::Reply::rate_limited(2);
    /// # let _ = r;
    /// ```
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::error(
            429,
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests. Please try again later.",
        )
        .header("retry-after", retry_after_secs.to_string())
    }

    /// 429 with `insufficient_quota`: not worth retrying.
    ///
    /// ```
    /// let r = flow_llm::Reply::quota_exceeded();
    /// # let _ = r;
    /// ```
    pub fn quota_exceeded() -> Self {
        Self::error(
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "You exceeded your current quota, please check your plan and billing details.",
        )
    }

    /// 500 with OpenAI's server error body.
    ///
    /// ```
    /// let r = flow_llm::Reply::server_error();
    /// # let _ = r;
    /// ```
    pub fn server_error() -> Self {
        Self::error(
            500,
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        )
    }

    /// Any status with any body and content type (e.g. an HTML 502 page, or a 200 whose body
    /// is not a completion).
    ///
    /// ```
    /// let r = flow_llm::Reply::raw(502, "text/html", "<html>Bad Gateway</html>");
    /// # let _ = r;
    /// ```
    pub fn raw(status: u16, content_type: &str, body: impl Into<String>) -> Self {
        Self::of(ReplyKind::Raw { status, content_type: content_type.to_owned(), body: body.into() })
    }

    /// A 200 JSON response that is not a valid chat completion.
    ///
    /// ```
    /// let r = flow_llm::Reply::malformed(r#"{"choices": "nope"}"#);
    /// # let _ = r;
    /// ```
    pub fn malformed(body: impl Into<String>) -> Self {
        Self::raw(200, "application/json", body)
    }

    /// A reply cut off mid-way: the connection drops, as when a proxy or the network fails, so
    /// the client sees an error reading the body rather than a clean end. A stream sends the
    /// partial text first (no `finish_reason`, no `[DONE]`); a non-streaming request gets half
    /// its JSON body. For a body that ends cleanly but is truncated, script
    /// [`Reply::malformed`] or [`Reply::raw`].
    ///
    /// ```
    /// let r = flow_llm::Reply::stream_cut("Once upon a");
    /// # let _ = r;
    /// ```
    pub fn stream_cut(partial_text: impl Into<String>) -> Self {
        Self::of(ReplyKind::StreamCut { content: partial_text.into() })
    }

    /// A stream that sends some text, then an error event (`data: {"error": ...}`).
    ///
    /// ```
    /// let r = flow_llm::Reply::stream_error("Hel", "upstream overloaded");
    /// # let _ = r;
    /// ```
    pub fn stream_error(partial_text: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of(ReplyKind::StreamError { content: partial_text.into(), message: message.into() })
    }

    /// Waits this long before answering (on top of the server-wide latency).
    ///
    /// ```
    /// let r = flow_llm::Reply::text("x").delay(std::time::Duration::from_millis(20));
    /// # let _ = r;
    /// ```
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits this long between stream chunks.
    ///
    /// ```
    /// let r = flow_llm::Reply::text("x").chunk_delay(std::time::Duration::from_millis(5));
    /// # let _ = r;
    /// ```
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Reports this usage instead of the estimate.
    ///
    /// ```
    /// let r = flow_llm::Reply::text("x").usage(100, 20);
    /// # let _ = r;
    /// ```
    pub fn usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.usage = Some(TokenUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        });
        self
    }

    /// Reports this finish reason (e.g. `Length` for a truncated answer).
    ///
    /// ```
    /// let r = flow_llm::Reply::text("{\"a\":").finish_reason(flow_llm::FinishReason::Length);
    /// # let _ = r;
    /// ```
    pub fn finish_reason(mut self, reason: FinishReason) -> Self {
        self.finish_reason = Some(reason);
        self
    }

    /// Adds a response header (e.g. `retry-after-ms`).
    ///
    /// ```
    /// let r = flow_llm::Reply::server_error().header("retry-after", "0");
    /// # let _ = r;
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_usage_saturates() {
        let r = Reply::text("x").usage(u64::MAX, 1);
        assert_eq!(r.usage.map(|u| u.total_tokens), Some(u64::MAX));
    }
}
