//! [`ExampleError`]: why an example could not run to its end.

use flow_core::FlowError;
use flow_core::store::StoreError;
use flow_llm::LlmError;

/// Why an example stopped. Every variant carries the underlying error; the message says what
/// to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExampleError {
    /// A run could not go on (a method failed after its retries, the store refused a write...).
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The run store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The LLM client could not be configured, or the offline server could not start.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A SQLite table the example keeps for its business data (tickets, stock movements) failed.
    #[error("the example's business database failed: {0}")]
    Database(#[from] rusqlite::Error),
    /// A file, a directory or a child process could not be used.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An environment variable holds a value the example cannot use.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is expected instead.
        reason: String,
    },
    /// A run ended in a way the example does not expect (for instance a run that should pause
    /// completed). The message says what happened.
    #[error("{0}")]
    Unexpected(String),
}
