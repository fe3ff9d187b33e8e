//! [`LlmError`]: everything that can go wrong talking to a model, with the class the flow runtime
//! uses to decide whether a step is worth running again.
//!
//! ```
//! use flow_core::{Classify, ErrorClass};
//! use flow_llm::LlmError;
//!
//! let limited = LlmError::Api {
//!     status: 429,
//!     kind: Some("requests".into()),
//!     code: Some("rate_limit_exceeded".into()),
//!     param: None,
//!     message: "Rate limit reached".into(),
//!     retry_after: None,
//! };
//! assert_eq!(limited.class(), ErrorClass::Transient);
//! // `?` into a flow method's error keeps the class.
//! assert_eq!(flow_core::Error::from(limited).class(), ErrorClass::Transient);
//! ```

use std::time::Duration;

use flow_core::{Classify, ErrorClass};

/// An error from an LLM call, a tool loop, a task or a crew.
///
/// Each variant says what went wrong and what to do about it. [`Classify`] maps it onto the flow
/// runtime's retry classes: rate limits, 5xx, timeouts, connection failures and cut streams are
/// [`ErrorClass::Transient`]; refused requests (400/401/403/404, exhausted quota) and bad
/// configuration are [`ErrorClass::Permanent`]; a structured reply that stays unparseable after the
/// repair attempt is [`ErrorClass::InvalidReply`].
///
/// ```
/// use flow_core::{Classify, ErrorClass};
/// use flow_llm::LlmError;
///
/// let e = LlmError::InvalidReply {
///     expected: "Invoice".into(),
///     raw: "{\"total\": \"n/a\"}".into(),
///     reason: "invalid type: string \"n/a\", expected f64".into(),
/// };
/// assert_eq!(e.class(), ErrorClass::InvalidReply);
/// assert!(e.to_string().contains("n/a"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The endpoint answered with an HTTP error status.
    #[error("the LLM endpoint returned HTTP {status}{}: {message}; {}", describe_kind(kind.as_deref(), code.as_deref()), api_hint(*status, code.as_deref(), kind.as_deref()))]
    Api {
        /// HTTP status code.
        status: u16,
        /// The error's `type` field, e.g. `invalid_request_error` or `insufficient_quota`.
        kind: Option<String>,
        /// The error's `code` field, e.g. `rate_limit_exceeded` or `context_length_exceeded`.
        code: Option<String>,
        /// The request parameter the error is about, if the endpoint named one.
        param: Option<String>,
        /// The endpoint's message (for bodies that are not OpenAI-shaped, the body text).
        message: String,
        /// How long the endpoint asked to wait before trying again (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The endpoint asked (`Retry-After`) to wait longer than this client waits in-process
    /// ([`RetryPolicy::max_retry_after`](crate::RetryPolicy::max_retry_after)), so the call was
    /// given up at once instead of holding a task asleep. Transient: the flow's retry policy
    /// may run the step again later.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flow_llm::LlmError;
    ///
    /// let e = LlmError::RetryAfterTooLong {
    ///     status: 429,
    ///     message: "Rate limit reached".into(),
    ///     retry_after: Duration::from_secs(3600),
    ///     limit: Duration::from_secs(60),
    /// };
    /// assert!(e.to_string().contains("asked to wait 3600s"), "{e}");
    /// assert!(e.to_string().contains("max_retry_after"), "{e}");
    /// ```
    #[error(
        "the LLM endpoint answered HTTP {status} ({message}) and asked to wait {} before trying again, longer than this client waits in-process (RetryPolicy::max_retry_after = {limit:?}), so the call was not retried; let the flow's retry policy run the step again after that long, or raise `RetryPolicy::max_retry_after` if waiting in-process is acceptable",
        describe_wait(*retry_after)
    )]
    RetryAfterTooLong {
        /// HTTP status code (429, 503, ...).
        status: u16,
        /// The endpoint's message.
        message: String,
        /// How long the endpoint asked to wait (a value above 24 hours is read as 24 hours).
        retry_after: Duration,
        /// The longest wait this client accepts in-process.
        limit: Duration,
    },
    /// The call did not finish within the per-call timeout.
    #[error(
        "the LLM call did not finish within {after:?}; the endpoint is slow or hung. Raise the timeout with `OpenAiLlm::builder().timeout(..)` if replies are legitimately long"
    )]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// No connection could be made to the endpoint.
    #[error(
        "could not connect to the LLM endpoint at {url}: {message}; check OPENAI_BASE_URL and that the server is running"
    )]
    Connect {
        /// The base URL that was tried.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The transport failed after the connection was made (reset, truncated body).
    #[error("the connection to the LLM endpoint failed: {message}; this is usually temporary")]
    Transport {
        /// What the transport said.
        message: String,
    },
    /// A success response that is not a valid chat completion.
    #[error(
        "the LLM endpoint's reply is not a valid OpenAI chat completion ({message}); the server is not OpenAI-compatible or a proxy rewrote the reply. Body starts with: {body}"
    )]
    MalformedResponse {
        /// What did not parse.
        message: String,
        /// The start of the body.
        body: String,
    },
    /// A streamed response failed part-way through.
    #[error("the LLM response stream failed part-way: {message}; the call can be retried")]
    Stream {
        /// What went wrong.
        message: String,
    },
    /// A streamed response ended before the model finished (no `finish_reason`).
    #[error(
        "the LLM response stream ended before the model finished (no finish_reason was received); the connection was cut, retry the call"
    )]
    StreamIncomplete,
    /// The reply had no choices.
    #[error("the LLM endpoint returned a completion without choices; the server is not OpenAI-compatible")]
    EmptyResponse,
    /// The model refused to answer.
    #[error("the model refused the request: {refusal}; rephrase the task or use another model")]
    Refusal {
        /// The model's refusal text.
        refusal: String,
    },
    /// A structured reply that still does not parse after the repair attempt.
    #[error(
        "the model's reply does not parse as `{expected}` even after a repair attempt ({reason}); raw reply: {raw}"
    )]
    InvalidReply {
        /// The type the reply should have been.
        expected: String,
        /// The model's last reply, verbatim.
        raw: String,
        /// Why it did not parse.
        reason: String,
    },
    /// A type whose JSON Schema cannot be used for strict structured output or tool arguments.
    #[error("`{type_name}` cannot be used as a strict JSON Schema: {reason}")]
    InvalidSchema {
        /// The Rust type.
        type_name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Missing or contradictory configuration.
    #[error("{0}")]
    Config(String),
    /// A task or agent text names an input that was not given.
    #[error("{place} uses `{{{name}}}` but no input named `{name}` was given; pass it in the inputs of `kickoff`")]
    MissingInput {
        /// The placeholder's name.
        name: String,
        /// Where it appears.
        place: String,
    },
    /// The model gave neither a final answer nor tool calls.
    #[error(
        "agent `{agent}` ended without a final answer (the model returned empty content); check the model and the prompt"
    )]
    NoFinalAnswer {
        /// The agent's role.
        agent: String,
    },
    /// The agent was stopped after `max_iter` tool-calling rounds, and when told to answer
    /// without tools the model still asked for tools instead of answering.
    ///
    /// ```
    /// use flow_llm::LlmError;
    ///
    /// let e = LlmError::MaxIterReached { agent: "Researcher".into(), max_iter: 3, tools: vec!["search".into()] };
    /// assert!(e.to_string().contains("after max_iter = 3 tool-calling rounds"), "{e}");
    /// assert!(e.to_string().contains("`search`"), "{e}");
    /// ```
    #[error(
        "agent `{agent}` was stopped after max_iter = {max_iter} tool-calling rounds while the model still wanted to call tools ({}), and it gave no final answer when told to answer without tools; raise the agent's limit with `Agent::builder(..).max_iter(n)`, or give it a task it can finish in fewer tool calls",
        tools.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
    )]
    MaxIterReached {
        /// The agent's role.
        agent: String,
        /// Its tool-calling round limit.
        max_iter: u32,
        /// The tools the model asked for in its last reply.
        tools: Vec<String>,
    },
    /// A person's answer could not be mapped onto one of the routes; nothing was chosen.
    #[error(
        "the answer {answer:?} could not be mapped onto one of the routes {routes:?} ({reason}); ask the person again with a clearer question"
    )]
    UnclearFeedback {
        /// The person's answer.
        answer: String,
        /// The routes that were offered.
        routes: Vec<String>,
        /// The classifier's explanation.
        reason: String,
    },
    /// A [`ScriptedLlm`](crate::ScriptedLlm) was asked something it has no reply for.
    #[error(
        "ScriptedLlm has no reply for a request whose last message is {last_message:?}; add one with `.reply(..)` or `.rule(..)`"
    )]
    NoScriptedReply {
        /// The request's last message.
        last_message: String,
    },
    /// The request could not be built (rejected before anything was sent).
    #[error("the chat request is invalid: {0}")]
    InvalidRequest(String),
    /// The journal refused or failed to record an effect (store failure, non-determinism on replay).
    #[error("the flow journal failed: {message}")]
    Journal {
        /// The journal's error message (chain included).
        message: String,
        /// Its class.
        class: ErrorClass,
    },
    /// A recorded result in the journal is not what this code records: the step changed between runs.
    #[error(
        "a recorded {kind} result in the journal does not fit the current code ({message}); the step's code changed since it was recorded"
    )]
    ReplayMismatch {
        /// `llm` or `tool`.
        kind: String,
        /// What did not fit.
        message: String,
    },
}

fn describe_wait(d: Duration) -> String {
    if d >= crate::openai::MAX_RETRY_AFTER {
        format!("{d:?} or more (the server's value was clamped)")
    } else {
        format!("{d:?}")
    }
}

fn describe_kind(kind: Option<&str>, code: Option<&str>) -> String {
    match (kind, code) {
        (Some(k), Some(c)) => format!(" ({k}/{c})"),
        (Some(k), None) => format!(" ({k})"),
        (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    }
}

fn is_quota(code: Option<&str>, kind: Option<&str>) -> bool {
    code == Some("insufficient_quota") || kind == Some("insufficient_quota")
}

fn api_hint(status: u16, code: Option<&str>, kind: Option<&str>) -> &'static str {
    match status {
        429 if is_quota(code, kind) => {
            "the account's quota is used up: add credit or use another key; retrying will not help"
        }
        429 => {
            "rate limited: the client's retries (RetryPolicy::max_retries) did not get through; lower the concurrency limit or allow more retries"
        }
        401 => "the API key was rejected: check OPENAI_API_KEY",
        403 => "the key may not use this endpoint or model: check the account's permissions",
        404 => "the model or path does not exist: check the model name and OPENAI_BASE_URL (it must end in /v1)",
        400 if code == Some("context_length_exceeded") => "the prompt is too long for the model: shorten the context",
        400 | 422 => "the request was rejected: fix the request (see the message)",
        408 | 409 => "temporary conflict or timeout at the endpoint: retry",
        s if s >= 500 => "the endpoint failed: this is usually temporary and is retried",
        _ => "see the message",
    }
}

impl LlmError {
    /// The HTTP status, for errors the endpoint answered with.
    ///
    /// ```
    /// use flow_llm::LlmError;
    /// assert_eq!(LlmError::StreamIncomplete.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            LlmError::Api { status, .. } | LlmError::RetryAfterTooLong { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the endpoint asked to wait before the next attempt, if it said so.
    ///
    /// ```
    /// use flow_llm::LlmError;
    /// assert_eq!(LlmError::EmptyResponse.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Api { retry_after, .. } => *retry_after,
            LlmError::RetryAfterTooLong { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// This API error as [`LlmError::RetryAfterTooLong`]; other errors are returned unchanged.
    pub(crate) fn retry_after_too_long(self, retry_after: Duration, limit: Duration) -> Self {
        match self {
            LlmError::Api { status, message, .. } => {
                LlmError::RetryAfterTooLong { status, message, retry_after, limit }
            }
            other => other,
        }
    }

    /// Whether the client itself should try the same call again (rate limits, 5xx, connection
    /// failures). Timeouts are transient but not retried in-process, because each one already
    /// cost a full timeout; the flow's retry policy decides.
    pub(crate) fn retryable_in_process(&self) -> bool {
        match self {
            LlmError::Api { status, code, kind, .. } => {
                matches!(status, 408 | 409 | 500..=599)
                    || (*status == 429 && !is_quota(code.as_deref(), kind.as_deref()))
            }
            LlmError::Connect { .. } => true,
            _ => false,
        }
    }

    /// Wraps an error coming back from [`flow_core::Journal::record`] that is not one of ours.
    pub(crate) fn journal(error: &flow_core::Error) -> Self {
        LlmError::Journal { message: error.chain_text(), class: error.class() }
    }
}

impl Classify for LlmError {
    fn class(&self) -> ErrorClass {
        match self {
            LlmError::Api { status, code, kind, .. } => match status {
                429 if is_quota(code.as_deref(), kind.as_deref()) => ErrorClass::Permanent,
                408 | 409 | 429 | 500..=599 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            LlmError::Timeout { .. }
            | LlmError::RetryAfterTooLong { .. }
            | LlmError::Connect { .. }
            | LlmError::Transport { .. }
            | LlmError::Stream { .. }
            | LlmError::StreamIncomplete => ErrorClass::Transient,
            LlmError::InvalidReply { .. } => ErrorClass::InvalidReply,
            LlmError::Journal { class, .. } => *class,
            LlmError::MalformedResponse { .. }
            | LlmError::EmptyResponse
            | LlmError::Refusal { .. }
            | LlmError::InvalidSchema { .. }
            | LlmError::Config(_)
            | LlmError::MissingInput { .. }
            | LlmError::NoFinalAnswer { .. }
            | LlmError::MaxIterReached { .. }
            | LlmError::UnclearFeedback { .. }
            | LlmError::NoScriptedReply { .. }
            | LlmError::InvalidRequest(_)
            | LlmError::ReplayMismatch { .. } => ErrorClass::Permanent,
        }
    }
}

flow_core::classify_errors!(LlmError);

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>) -> LlmError {
        LlmError::Api {
            status,
            kind: code.map(str::to_owned),
            code: code.map(str::to_owned),
            param: None,
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn statuses_map_onto_classes() {
        for s in [429, 500, 502, 503, 504, 408] {
            assert_eq!(api(s, None).class(), ErrorClass::Transient, "{s}");
            assert!(api(s, None).retryable_in_process(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(api(s, None).class(), ErrorClass::Permanent, "{s}");
            assert!(!api(s, None).retryable_in_process(), "{s}");
        }
        assert_eq!(api(429, Some("insufficient_quota")).class(), ErrorClass::Permanent);
        assert!(!api(429, Some("insufficient_quota")).retryable_in_process());
    }

    #[test]
    fn class_survives_question_mark() {
        fn step() -> Result<(), flow_core::Error> {
            Err(LlmError::InvalidReply { expected: "T".into(), raw: "x".into(), reason: "r".into() })?;
            Ok(())
        }
        let err = step().unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidReply);
        assert!(err.downcast_ref::<LlmError>().is_some());
        let timeout = flow_core::Error::from(LlmError::Timeout { after: Duration::from_secs(1) });
        assert_eq!(timeout.class(), ErrorClass::Transient);
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = api(401, Some("invalid_api_key"));
        assert!(e.to_string().contains("OPENAI_API_KEY"), "{e}");
        let e = api(429, Some("insufficient_quota"));
        assert!(e.to_string().contains("quota"), "{e}");
    }
}
