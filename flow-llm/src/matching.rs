//! [`Match`]: a condition on a [`ChatRequest`], used by rule-based replies of
//! [`ScriptedLlm`](crate::ScriptedLlm) and `TestServer` (feature `test-server`).
//!
//! Rules instead of a FIFO queue matter when many runs share one scripted model concurrently: the
//! order of their requests is not deterministic, but each request's content is.
//!
//! ```
//! use flow_llm::{ChatRequest, Match, Message};
//!
//! let m = Match::system_contains("Researcher").and(Match::last_user_contains("AI"));
//! let req = ChatRequest::new(vec![Message::system("You are Researcher."), Message::user("Topic: AI")]);
//! assert!(m.matches(&req));
//! ```

use std::fmt;
use std::sync::Arc;

use crate::chat::{ChatRequest, ResponseFormat, Role};

type Predicate = Arc<dyn Fn(&ChatRequest) -> bool + Send + Sync>;

/// A condition on a chat request.
///
/// ```
/// use flow_llm::{ChatRequest, Match, Message};
/// let req = ChatRequest::new(vec![Message::user("hello")]);
/// assert!(Match::any().matches(&req));
/// assert!(!Match::has_tool_results().matches(&req));
/// ```
#[derive(Clone)]
pub struct Match {
    describe: String,
    predicate: Predicate,
}

impl fmt::Debug for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Match").field(&self.describe).finish()
    }
}

impl Match {
    fn new(describe: String, predicate: impl Fn(&ChatRequest) -> bool + Send + Sync + 'static) -> Self {
        Match { describe, predicate: Arc::new(predicate) }
    }

    /// Every request.
    ///
    /// ```
    /// assert!(flow_llm::Match::any().matches(&Default::default()));
    /// ```
    pub fn any() -> Self {
        Self::new("any".into(), |_| true)
    }

    /// The last user message contains `text`.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, Message};
    /// assert!(Match::last_user_contains("bye").matches(&ChatRequest::new(vec![Message::user("bye now")])));
    /// ```
    pub fn last_user_contains(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::new(format!("last user message contains {text:?}"), move |r| {
            r.last_user_text().is_some_and(|t| t.contains(&text))
        })
    }

    /// Some user message contains `text`.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, Message};
    /// let r = ChatRequest::new(vec![Message::user("a"), Message::user("b")]);
    /// assert!(Match::user_contains("a").matches(&r));
    /// ```
    pub fn user_contains(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::new(format!("a user message contains {text:?}"), move |r| {
            r.messages.iter().any(|m| m.role == Role::User && m.text_or_empty().contains(&text))
        })
    }

    /// The system prompt contains `text` (e.g. an agent's role).
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, Message};
    /// assert!(Match::system_contains("Writer").matches(&ChatRequest::new(vec![Message::system("You are Writer.")])));
    /// ```
    pub fn system_contains(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::new(format!("system prompt contains {text:?}"), move |r| r.system_text().contains(&text))
    }

    /// Any message, of any role, contains `text`.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, Message};
    /// assert!(Match::any_message_contains("x").matches(&ChatRequest::new(vec![Message::tool("c", "x")])));
    /// ```
    pub fn any_message_contains(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::new(format!("a message contains {text:?}"), move |r| {
            r.messages.iter().any(|m| m.text_or_empty().contains(&text))
        })
    }

    /// The conversation already holds tool results (the model is being asked to go on after
    /// calling tools).
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, Message};
    /// assert!(Match::has_tool_results().matches(&ChatRequest::new(vec![Message::tool("c", "1")])));
    /// ```
    pub fn has_tool_results() -> Self {
        Self::new("has tool results".into(), |r| r.messages.iter().any(|m| m.role == Role::Tool))
    }

    /// A tool result contains `text`.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, Message};
    /// assert!(Match::tool_result_contains("42").matches(&ChatRequest::new(vec![Message::tool("c", "42")])));
    /// ```
    pub fn tool_result_contains(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::new(format!("a tool result contains {text:?}"), move |r| {
            r.messages.iter().any(|m| m.role == Role::Tool && m.text_or_empty().contains(&text))
        })
    }

    /// The request offers a tool with this name.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, ToolSpec};
    /// let r = ChatRequest::default().tools(vec![ToolSpec::new("search", "", serde_json::json!({}))]);
    /// assert!(Match::offers_tool("search").matches(&r));
    /// ```
    pub fn offers_tool(name: impl Into<String>) -> Self {
        let name = name.into();
        Self::new(format!("offers tool {name:?}"), move |r| r.tools.iter().any(|t| t.name == name))
    }

    /// The request asks for structured output with this schema name.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match, ResponseFormat};
    /// let r = ChatRequest::default().response_format(ResponseFormat::JsonSchema {
    ///     name: "Quality".into(), description: None, schema: serde_json::json!({}), strict: true });
    /// assert!(Match::schema_named("Quality").matches(&r));
    /// ```
    pub fn schema_named(name: impl Into<String>) -> Self {
        let name = name.into();
        Self::new(
            format!("asks for schema {name:?}"),
            move |r| matches!(&r.response_format, Some(ResponseFormat::JsonSchema { name: n, .. }) if *n == name),
        )
    }

    /// The request names this model.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match};
    /// assert!(Match::model("m").matches(&ChatRequest::default().model("m")));
    /// ```
    pub fn model(model: impl Into<String>) -> Self {
        let model = model.into();
        Self::new(format!("model is {model:?}"), move |r| r.model.as_deref() == Some(model.as_str()))
    }

    /// Any condition on the request.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Match};
    /// assert!(Match::when(|r: &ChatRequest| r.messages.is_empty()).matches(&ChatRequest::default()));
    /// ```
    pub fn when(predicate: impl Fn(&ChatRequest) -> bool + Send + Sync + 'static) -> Self {
        Self::new("custom condition".into(), predicate)
    }

    /// Both conditions.
    ///
    /// ```
    /// use flow_llm::Match;
    /// assert!(Match::any().and(Match::any()).matches(&Default::default()));
    /// ```
    pub fn and(self, other: Match) -> Self {
        let (a, b) = (self.predicate, other.predicate);
        Self::new(format!("{} and {}", self.describe, other.describe), move |r| a(r) && b(r))
    }

    /// Whether `request` satisfies the condition.
    ///
    /// ```
    /// assert!(flow_llm::Match::any().matches(&Default::default()));
    /// ```
    pub fn matches(&self, request: &ChatRequest) -> bool {
        (self.predicate)(request)
    }
}

/// Not this condition.
///
/// ```
/// use flow_llm::Match;
/// assert!(!(!Match::any()).matches(&Default::default()));
/// ```
impl std::ops::Not for Match {
    type Output = Match;

    fn not(self) -> Match {
        let p = self.predicate;
        Match::new(format!("not ({})", self.describe), move |r| !p(r))
    }
}
