//! LLM agents, tasks, crews and tools for flows, over any OpenAI-compatible endpoint.
//!
//! - [`Llm`]: a chat model. [`OpenAiLlm`] talks to OpenAI, Azure, Groq, vLLM, Ollama or any other
//!   OpenAI-compatible endpoint through async-openai, with retries that honour `Retry-After`, a
//!   per-call timeout and a process-wide [`ConcurrencyLimit`]. [`ScriptedLlm`] answers from a
//!   script, offline.
//! - [`LlmExt::complete`]: a call through the flow journal, so a re-run step replays recorded
//!   replies instead of paying twice. Agents, tasks and crews call models and tools only this way.
//! - [`Agent`], [`Task`], [`Crew`]: CrewAI's model of work, sequential or hierarchical, with
//!   typed tools ([`FnTool`]) and typed outputs ([`OutputSchema`], strict JSON Schema).
//! - [`feedback::route_feedback`]: a person's free-text answer mapped onto a route enum, failing
//!   closed when it is unclear.
//! - `TestServer` (feature `test-server`): a local OpenAI-compatible server for tests and
//!   examples; enable it for your tests only, as a dev-dependency feature.
//! - `mcp` (feature `mcp`): tools from MCP servers, see below.
//! - [`schemars`]: the JSON Schema crate typed outputs and tools are described with, re-exported
//!   so a `#[derive(JsonSchema)]` needs no dependency of your own (see below).
//!
//! # Cargo features
//!
//! - `native-tls` (default): HTTPS through the platform's TLS; on Linux that links the system's
//!   OpenSSL (it needs its headers, Debian's `libssl-dev`) instead of compiling a C crypto
//!   library.
//! - `rustls`: HTTPS through rustls on aws-lc-rs, for builds without OpenSSL (static or musl
//!   binaries); it compiles the AWS-LC C library. Use it with `default-features = false`.
//! - `test-server`: the `TestServer` (axum), for your tests: `flow-llm = { version = "..",
//!   features = ["test-server"] }` under `[dev-dependencies]`.
//! - `mcp`: tools from MCP servers. `otel`: OpenTelemetry export of runs (`flow_core::otel`).
//!
//! Inside a flow method, pass the method's context `cx` wherever a `&dyn Journal` is asked for
//! (this example answers from the `TestServer`, feature `test-server`):
//!
//! ```
//! use std::sync::Arc;
//! use flow_core::NoJournal;
//! use flow_llm::{Agent, Crew, Inputs, Match, Reply, Task, TestServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start().await?;
//! server.when(Match::system_contains("Researcher")).reply(Reply::text("Three facts about tides."));
//! server.when(Match::system_contains("Writer")).reply(Reply::text("A short article about tides."));
//!
//! let llm = Arc::new(server.llm_builder().build()?); // or OpenAiLlm::from_env()?
//! let researcher = Agent::builder("Researcher", "Find facts about {topic}", "Meticulous").llm(llm.clone()).build()?;
//! let writer = Agent::builder("Writer", "Explain {topic}", "Clear and brief").llm(llm).build()?;
//! let crew = Crew::builder()
//!     .task(Task::new("Research {topic}", "Three facts").agent(&researcher))
//!     .task(Task::new("Write about {topic}", "One paragraph").agent(&writer))
//!     .build()?;
//!
//! // In a flow method: `crew.kickoff(cx, &inputs).await?`
//! let out = crew.kickoff(&NoJournal, &Inputs::from([("topic", "tides")])).await?;
//! assert_eq!(out.raw, "A short article about tides.");
//! assert_eq!(server.hits(), 2);
//! assert!(out.usage.total.total_tokens > 0);
//! # Ok(()) }
//! ```

//!
//! # Tools from MCP servers
//!
//! With the `mcp` feature, `mcp::McpServer` connects to a
//! [Model Context Protocol](https://modelcontextprotocol.io) server through the official `rmcp`
//! client, either a command run as a child process (stdio) or a URL (streamable HTTP), and turns
//! its tools into [`Tool`]s: an agent offers them to the model with the server's descriptions and
//! input JSON Schemas, and journals their calls like any tool call, so a re-run step does not call
//! the server again. A server that errs, answers garbage, stays silent past the call timeout or
//! dies gives the model an error result to work with; the agent never hangs on it.
//!
//! # Typed outputs without a schemars dependency
//!
//! [`Task::output`], [`Agent::run_typed`] and [`FnTool`] describe their types with schemars. Derive
//! through the re-export:
//!
//! ```
//! use flow_llm::schemars::JsonSchema;
//!
//! #[derive(serde::Serialize, serde::Deserialize, JsonSchema)]
//! #[schemars(crate = "flow_llm::schemars")]
//! struct Verdict {
//!     approve: bool,
//!     reason: String,
//! }
//! let schema = flow_llm::strict_schema_for::<Verdict>()?;
//! assert_eq!(schema["required"], serde_json::json!(["approve", "reason"]));
//! # Ok::<(), flow_llm::LlmError>(())
//! ```
//!
//! ```no_run
//! # #[cfg(feature = "mcp")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use flow_llm::mcp::McpServer;
//! use flow_llm::{Agent, OpenAiLlm};
//!
//! let fetch = McpServer::stdio("uvx").arg("mcp-server-fetch").connect().await?;
//! let agent = Agent::builder("Researcher", "Read the sources", "Thorough")
//!     .llm(Arc::new(OpenAiLlm::from_env()?))
//!     .tools(fetch.tools())
//!     .build()?;
//! // In a flow method: `agent.run(cx, "Summarise https://example.com").await?`
//! # let _ = agent;
//! # Ok(()) }
//! ```

pub mod agent;
pub mod chat;
pub mod crew;
mod delegation;
pub mod embedding;
pub mod error;
mod executor;
pub mod feedback;
pub mod limit;
pub mod llm;
pub mod matching;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod openai;
mod profile;
pub mod scripted;
#[cfg(feature = "test-server")]
pub mod server;
pub mod stream;
pub mod structured;
pub mod task;
pub mod template;
pub mod tool;
pub mod usage;

pub use agent::{Agent, AgentBuilder, AgentOutput};
pub use chat::{
    ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec,
};
pub use crew::{Crew, CrewBuilder, CrewOutput, Process};
pub use embedding::{DEFAULT_EMBEDDING_MODEL, OpenAiEmbedder};
pub use error::LlmError;
pub use limit::ConcurrencyLimit;
pub use llm::{Llm, LlmExt};
pub use matching::Match;
pub use openai::{OpenAiLlm, OpenAiLlmBuilder, RetryPolicy};
pub use scripted::ScriptedLlm;
#[cfg(feature = "test-server")]
pub use server::{RecordedRequest, Reply, TestServer};
pub use stream::{ChatDelta, ChatStream, StreamAccumulator, ToolCallDelta};
pub use structured::{OutputSchema, strict_schema_for};
pub use task::{Task, TaskContext, TaskOutput};
pub use template::Inputs;
pub use tool::{FnTool, Tool, ToolError};
pub use usage::{CallUsage, UsageSummary};

/// The JSON Schema crate flow-llm describes typed outputs and tools with; derive `JsonSchema`
/// with `#[schemars(crate = "flow_llm::schemars")]` to use it without a dependency of your own.
///
/// ```
/// let schema = flow_llm::schemars::schema_for!(String);
/// assert_eq!(schema.as_value()["type"], "string");
/// ```
pub use schemars;
