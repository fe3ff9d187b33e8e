//! The chat request and response types every [`Llm`](crate::Llm) speaks.
//!
//! They are this crate's own serde types, not async-openai's, so the JSON the flow journal stores
//! stays the same when async-openai changes its types between versions.
//!
//! ```
//! use flow_llm::{ChatRequest, Message};
//!
//! let req = ChatRequest::new(vec![Message::system("You are terse."), Message::user("Hi")])
//!     .temperature(0.2)
//!     .max_tokens(64);
//! assert_eq!(req.messages.len(), 2);
//! let json = serde_json::to_value(&req).unwrap();
//! assert_eq!(json["messages"][1]["role"], "user");
//! ```

use flow_core::TokenUsage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a message.
///
/// ```
/// use flow_llm::Role;
/// assert_eq!(serde_json::to_value(Role::Tool).unwrap(), "tool");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person (or the program acting for them).
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// A tool call the model asked for.
///
/// ```
/// use flow_llm::ToolCall;
/// let call = ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#);
/// assert_eq!(call.name, "get_weather");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The id the tool result must refer to.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them: JSON text that may be invalid.
    pub arguments: String,
}

impl ToolCall {
    /// A tool call.
    ///
    /// ```
    /// let c = flow_llm::ToolCall::new("c1", "add", "{}");
    /// assert_eq!(c.id, "c1");
    /// ```
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }
}

/// One message of a conversation.
///
/// ```
/// use flow_llm::{Message, Role, ToolCall};
///
/// let ask = Message::assistant_tool_calls(vec![ToolCall::new("c1", "add", r#"{"a":1,"b":2}"#)]);
/// let result = Message::tool("c1", "3");
/// assert_eq!(ask.role, Role::Assistant);
/// assert_eq!(result.tool_call_id.as_deref(), Some("c1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text; `None` for an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn text(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: Some(content.into()), tool_calls: Vec::new(), tool_call_id: None }
    }

    /// A system message.
    ///
    /// ```
    /// assert_eq!(flow_llm::Message::system("be brief").content.as_deref(), Some("be brief"));
    /// ```
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    /// A user message.
    ///
    /// ```
    /// assert_eq!(flow_llm::Message::user("hi").role, flow_llm::Role::User);
    /// ```
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    /// An assistant message with text.
    ///
    /// ```
    /// assert_eq!(flow_llm::Message::assistant("hello").role, flow_llm::Role::Assistant);
    /// ```
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// An assistant message that calls tools.
    ///
    /// ```
    /// let m = flow_llm::Message::assistant_tool_calls(vec![]);
    /// assert!(m.content.is_none());
    /// ```
    pub fn assistant_tool_calls(tool_calls: Vec<ToolCall>) -> Self {
        Message { role: Role::Assistant, content: None, tool_calls, tool_call_id: None }
    }

    /// A tool's result for the call `tool_call_id`.
    ///
    /// ```
    /// let m = flow_llm::Message::tool("call_1", "sunny");
    /// assert_eq!(m.role, flow_llm::Role::Tool);
    /// ```
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(tool_call_id.into()),
        }
    }

    /// The text, or `""`.
    ///
    /// ```
    /// assert_eq!(flow_llm::Message::assistant_tool_calls(vec![]).text_or_empty(), "");
    /// ```
    pub fn text_or_empty(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }
}

/// A tool the model may call: name, description and JSON Schema of its arguments.
///
/// ```
/// use flow_llm::ToolSpec;
/// let spec = ToolSpec::new("now", "Current time", serde_json::json!({"type": "object", "properties": {}}));
/// assert!(!spec.strict);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name, `^[a-zA-Z0-9_-]{1,64}$`.
    pub name: String,
    /// What the tool does; the model reads it to decide when to call it.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    /// Whether the schema is OpenAI-strict (the model's arguments then always match it).
    #[serde(default)]
    pub strict: bool,
}

impl ToolSpec {
    /// A non-strict tool definition.
    ///
    /// ```
    /// let s = flow_llm::ToolSpec::new("t", "d", serde_json::json!({"type": "object"}));
    /// assert_eq!(s.name, "t");
    /// ```
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolSpec { name: name.into(), description: description.into(), parameters, strict: false }
    }
}

/// Whether and which tool the model must call.
///
/// ```
/// use flow_llm::ToolChoice;
/// assert_eq!(serde_json::to_value(ToolChoice::Required).unwrap(), serde_json::json!({"mode": "required"}));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "name")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Function(String),
}

/// The shape the reply must have.
///
/// ```
/// use flow_llm::ResponseFormat;
/// let f = ResponseFormat::JsonSchema {
///     name: "Answer".into(),
///     description: None,
///     schema: serde_json::json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false}),
///     strict: true,
/// };
/// assert!(matches!(f, ResponseFormat::JsonSchema { strict: true, .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name, `^[a-zA-Z0-9_-]{1,64}$`.
        name: String,
        /// What the object is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The JSON Schema.
        schema: Value,
        /// OpenAI strict mode.
        strict: bool,
    },
}

/// One chat completion request.
///
/// `model: None` means the [`Llm`](crate::Llm)'s own model. Fields left `None` are not sent.
///
/// ```
/// use flow_llm::{ChatRequest, Message};
/// let r = ChatRequest::new(vec![Message::user("hi")]).model("gpt-4o-mini").seed(7);
/// assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
/// assert_eq!(r.last_user_text(), Some("hi"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model; `None` uses the client's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The shape of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Sampling temperature, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Upper bound of generated tokens (`max_completion_tokens` on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Seed for best-effort deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl ChatRequest {
    /// A request with these messages and nothing else set.
    ///
    /// ```
    /// let r = flow_llm::ChatRequest::new(vec![flow_llm::Message::user("hi")]);
    /// assert!(r.tools.is_empty());
    /// ```
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest { messages, ..Default::default() }
    }

    /// Sets the model.
    ///
    /// ```
    /// let r = flow_llm::ChatRequest::default().model("m");
    /// assert_eq!(r.model.as_deref(), Some("m"));
    /// ```
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the temperature.
    ///
    /// ```
    /// assert_eq!(flow_llm::ChatRequest::default().temperature(0.5).temperature, Some(0.5));
    /// ```
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the token limit of the reply.
    ///
    /// ```
    /// assert_eq!(flow_llm::ChatRequest::default().max_tokens(10).max_tokens, Some(10));
    /// ```
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the seed.
    ///
    /// ```
    /// assert_eq!(flow_llm::ChatRequest::default().seed(1).seed, Some(1));
    /// ```
    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Adds tools.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, ToolSpec};
    /// let r = ChatRequest::default().tools(vec![ToolSpec::new("t", "d", serde_json::json!({}))]);
    /// assert_eq!(r.tools.len(), 1);
    /// ```
    pub fn tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// Sets the response format.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, ResponseFormat};
    /// let r = ChatRequest::default().response_format(ResponseFormat::JsonObject);
    /// assert_eq!(r.response_format, Some(ResponseFormat::JsonObject));
    /// ```
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// The text of the last user message.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Message};
    /// let r = ChatRequest::new(vec![Message::user("a"), Message::assistant("b")]);
    /// assert_eq!(r.last_user_text(), Some("a"));
    /// ```
    pub fn last_user_text(&self) -> Option<&str> {
        self.messages.iter().rev().find(|m| m.role == Role::User).and_then(|m| m.content.as_deref())
    }

    /// The text of the system message(s), joined.
    ///
    /// ```
    /// use flow_llm::{ChatRequest, Message};
    /// let r = ChatRequest::new(vec![Message::system("You are X"), Message::user("a")]);
    /// assert_eq!(r.system_text(), "You are X");
    /// ```
    pub fn system_text(&self) -> String {
        let parts: Vec<&str> =
            self.messages.iter().filter(|m| m.role == Role::System).filter_map(|m| m.content.as_deref()).collect();
        parts.join("\n")
    }
}

/// Why the model stopped.
///
/// ```
/// use flow_llm::FinishReason;
/// assert_eq!(serde_json::to_value(FinishReason::ToolCalls).unwrap(), "tool_calls");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit was reached: the reply is cut off.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The reply was withheld by a content filter.
    ContentFilter,
    /// The legacy function call.
    FunctionCall,
}

/// The model's reply.
///
/// ```
/// use flow_llm::{ChatResponse, FinishReason};
/// let r = ChatResponse::text("hello");
/// assert_eq!(r.content.as_deref(), Some("hello"));
/// assert_eq!(r.finish_reason, Some(FinishReason::Stop));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The completion id.
    #[serde(default)]
    pub id: String,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A safety refusal instead of content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The tools the model asked to call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// Tokens used, when the endpoint reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

impl ChatResponse {
    /// A text reply that finished normally (for scripted models).
    ///
    /// ```
    /// assert!(flow_llm::ChatResponse::text("x").tool_calls.is_empty());
    /// ```
    pub fn text(content: impl Into<String>) -> Self {
        ChatResponse { content: Some(content.into()), finish_reason: Some(FinishReason::Stop), ..Default::default() }
    }

    /// A reply that calls tools (for scripted models).
    ///
    /// ```
    /// use flow_llm::{ChatResponse, ToolCall};
    /// let r = ChatResponse::tool_calls(vec![ToolCall::new("c", "t", "{}")]);
    /// assert_eq!(r.finish_reason, Some(flow_llm::FinishReason::ToolCalls));
    /// ```
    pub fn tool_calls(tool_calls: Vec<ToolCall>) -> Self {
        ChatResponse { tool_calls, finish_reason: Some(FinishReason::ToolCalls), ..Default::default() }
    }

    /// A structured reply: the JSON text of `value` (for scripted models).
    ///
    /// ```
    /// let r = flow_llm::ChatResponse::json(&serde_json::json!({"ok": true}));
    /// assert_eq!(r.content.as_deref(), Some(r#"{"ok":true}"#));
    /// ```
    pub fn json(value: &Value) -> Self {
        Self::text(value.to_string())
    }

    /// Sets the usage (for scripted models).
    ///
    /// ```
    /// let r = flow_llm::ChatResponse::text("x").with_usage(3, 1);
    /// assert_eq!(r.usage.unwrap().total_tokens, 4);
    /// ```
    pub fn with_usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.usage =
            Some(TokenUsage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens });
        self
    }

    /// The assistant message this reply adds to the conversation.
    ///
    /// ```
    /// let m = flow_llm::ChatResponse::text("x").to_message();
    /// assert_eq!(m.role, flow_llm::Role::Assistant);
    /// ```
    pub fn to_message(&self) -> Message {
        Message {
            role: Role::Assistant,
            content: self.content.clone(),
            tool_calls: self.tool_calls.clone(),
            tool_call_id: None,
        }
    }
}
