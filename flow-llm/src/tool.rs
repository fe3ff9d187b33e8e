//! Tools an agent can call: the [`Tool`] trait, and [`FnTool`] for building one from an async
//! function whose argument type generates the JSON Schema.
//!
//! ```
//! use flow_llm::{FnTool, Tool, ToolError};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! /// Arguments of `get_weather`.
//! #[derive(Deserialize, JsonSchema)]
//! struct City { city: String }
//!
//! let tool = FnTool::new("get_weather", "Current weather of a city", |args: City| async move {
//!     Ok::<_, ToolError>(format!("sunny in {}", args.city))
//! })
//! .unwrap();
//! assert_eq!(tool.parameters()["required"], serde_json::json!(["city"]));
//! ```

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::chat::ToolSpec;
use crate::error::LlmError;
use crate::structured::strict_schema_for;

/// Why a tool call failed. The message goes back to the model as the tool's result, so it
/// should say what to do differently.
///
/// ```
/// use flow_llm::ToolError;
/// let e = ToolError::new("no such city; use an English city name");
/// assert_eq!(e.to_string(), "no such city; use an English city name");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments do not fit the tool's argument type.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    /// A failure with a message for the model.
    ///
    /// ```
    /// assert!(matches!(flow_llm::ToolError::new("x"), flow_llm::ToolError::Failed(_)));
    /// ```
    pub fn new(message: impl fmt::Display) -> Self {
        ToolError::Failed(message.to_string())
    }
}

/// A tool the model can call.
///
/// ```
/// use async_trait::async_trait;
/// use flow_llm::{Tool, ToolError};
/// use serde_json::{Value, json};
///
/// struct Clock;
///
/// #[async_trait]
/// impl Tool for Clock {
///     fn name(&self) -> &str { "now" }
///     fn description(&self) -> &str { "The current UTC time" }
///     fn parameters(&self) -> Value {
///         json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
///     }
///     async fn call(&self, _args: Value) -> Result<String, ToolError> {
///         Ok("2025-01-01T00:00:00Z".into())
///     }
/// }
/// assert_eq!(Clock.spec().name, "now");
/// ```
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by, `^[a-zA-Z0-9_-]{1,64}$`.
    fn name(&self) -> &str;
    /// What it does and when to use it.
    fn description(&self) -> &str;
    /// JSON Schema of the arguments object.
    fn parameters(&self) -> Value;
    /// Whether [`parameters`](Self::parameters) is in OpenAI strict form.
    fn strict(&self) -> bool {
        true
    }
    /// Runs the tool; the `Ok` text is the tool result the model sees.
    async fn call(&self, args: Value) -> Result<String, ToolError>;

    /// The definition sent to the model.
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            parameters: self.parameters(),
            strict: self.strict(),
        }
    }
}

type Handler = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<String, ToolError>> + Send + Sync>;

/// A [`Tool`] from an async function of a typed argument.
///
/// The argument type's JSON Schema (strict form) is the tool's parameters; the model's
/// arguments are deserialized into it, and a mismatch goes back to the model as an error result.
/// The function's `Ok` value becomes the result text: a `String` as-is, anything else as JSON.
///
/// ```
/// use flow_llm::{FnTool, Tool};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Add { a: i64, b: i64 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let add = FnTool::new("add", "Adds two integers", |x: Add| async move {
///     Ok::<_, std::convert::Infallible>(x.a + x.b)
/// })
/// .unwrap();
/// assert_eq!(add.call(serde_json::json!({"a": 2, "b": 3})).await.unwrap(), "5");
/// assert!(add.call(serde_json::json!({"a": "two"})).await.is_err());
/// # }
/// ```
#[derive(Clone)]
pub struct FnTool {
    name: String,
    description: String,
    parameters: Value,
    handler: Handler,
}

impl fmt::Debug for FnTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool").field("name", &self.name).finish_non_exhaustive()
    }
}

impl FnTool {
    /// A tool named `name` that runs `f`.
    ///
    /// Fails if the name is not `^[a-zA-Z0-9_-]{1,64}$` or the argument type cannot be
    /// expressed as a strict schema.
    ///
    /// ```
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Q { q: String }
    /// let bad = flow_llm::FnTool::new("web search", "", |_: Q| async { Ok::<_, flow_llm::ToolError>("") });
    /// assert!(bad.is_err());
    /// ```
    pub fn new<A, F, Fut, R, E>(name: impl Into<String>, description: impl Into<String>, f: F) -> Result<Self, LlmError>
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize,
        E: fmt::Display,
    {
        let name = name.into();
        validate_tool_name(&name)?;
        let parameters = strict_schema_for::<A>()?;
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |args: Value| {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let args: A = serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
                let out = f(args).await.map_err(ToolError::new)?;
                result_text(&out)
            })
        });
        Ok(FnTool { name, description: description.into(), parameters, handler })
    }
}

fn result_text<R: Serialize>(out: &R) -> Result<String, ToolError> {
    match serde_json::to_value(out) {
        Ok(Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(ToolError::new(format!("could not serialize the result: {e}"))),
    }
}

pub(crate) fn validate_tool_name(name: &str) -> Result<(), LlmError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(LlmError::Config(format!("tool name {name:?} is invalid: use 1 to 64 ASCII letters, digits, '_' or '-'")))
    }
}

#[async_trait::async_trait]
impl Tool for FnTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> Value {
        self.parameters.clone()
    }
    async fn call(&self, args: Value) -> Result<String, ToolError> {
        (self.handler)(args).await
    }
}
