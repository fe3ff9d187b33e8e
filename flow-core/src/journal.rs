//! Journaled effects: the results of LLM calls, tool calls and other side effects inside a
//! method, recorded so that a method that runs again after a crash or a retry replays them
//! instead of paying for them twice.
//!
//! Inside a flow method use [`Ctx::effect`](crate::Ctx::effect). Libraries such as `flow-llm`
//! take a `&dyn Journal`, which [`Ctx`](crate::Ctx) implements; [`NoJournal`] runs effects
//! directly, for use outside a flow.
//!
//! ```
//! use flow_core::journal::{Journal, NoJournal};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_core::Error> {
//! let request = serde_json::json!([1, 2]);
//! let sum = NoJournal
//!     .record("tool", "add", &request, Box::pin(async { Ok(serde_json::json!(3)) }))
//!     .await?;
//! assert_eq!(sum, 3);
//! # Ok(())
//! # }
//! ```

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// Token counts of one or more LLM calls.
///
/// ```
/// use flow_core::TokenUsage;
///
/// let first = TokenUsage { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150 };
/// let second = TokenUsage { prompt_tokens: 80, completion_tokens: 20, total_tokens: 100 };
/// assert_eq!((first + second).total_tokens, 250);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the completion.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

impl TokenUsage {
    /// Adds another usage to this one.
    ///
    /// ```
    /// use flow_core::TokenUsage;
    /// let mut u = TokenUsage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 };
    /// u.add(u);
    /// assert_eq!(u.total_tokens, 6);
    /// ```
    pub fn add(&mut self, other: TokenUsage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

impl std::ops::Add for TokenUsage {
    type Output = TokenUsage;
    fn add(mut self, rhs: TokenUsage) -> TokenUsage {
        TokenUsage::add(&mut self, rhs);
        self
    }
}

/// Where effects are recorded.
///
/// `record` runs `effect` unless an entry for the same position in the same step was already
/// recorded, in which case it returns the recorded value without running it. Entries are
/// matched by order: the n-th `record` call of a step replays the n-th entry.
///
/// A recorded entry is replayed only for the same call: a different `kind` or `name` at that
/// position, or the same effect asked with a different `request` (compared by
/// [`request_hash`]), is a non-determinism error that names the run and the step, and the
/// effect is not run. The recorded result answered another question (a prompt fixed since, a
/// request built from the clock), so replaying it would hand the step a wrong answer, and
/// running the effect again while later entries of the step were recorded on the old path
/// would mix two versions of the step. Fork the run to run the step with the new request
/// (the fork's journal starts empty), or restore the code that made the recorded request to
/// resume it. Requests must therefore be built from the state, the step's inputs and earlier
/// journaled results only.
///
/// ```
/// use flow_core::journal::Journal;
///
/// /// A library call that works inside a flow (pass `cx`) and outside one (pass `&NoJournal`).
/// async fn lookup(journal: &dyn Journal, sku: &str) -> Result<serde_json::Value, flow_core::Error> {
///     let request = serde_json::json!({ "sku": sku });
///     let sku = sku.to_string();
///     journal
///         .record("tool", "stock_lookup", &request, Box::pin(async move { Ok(serde_json::json!({ "sku": sku, "in_stock": 3 })) }))
///         .await
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::Error> {
/// let found = lookup(&flow_core::journal::NoJournal, "A-1").await?;
/// assert_eq!(found["in_stock"], 3);
/// # Ok(())
/// # }
/// ```
pub trait Journal: Send + Sync {
    /// Runs or replays one effect. `request` identifies the call (it is hashed and compared on
    /// replay: a different request is an error, not a replay); the effect's value is stored as
    /// JSON.
    fn record<'a>(
        &'a self,
        kind: &'a str,
        name: &'a str,
        request: &'a Value,
        effect: BoxFuture<'a, Result<Value, Error>>,
    ) -> BoxFuture<'a, Result<Value, Error>>;

    /// Reports token usage of an LLM call, so it is counted per run and emitted as an event.
    fn report_usage(&self, model: &str, usage: TokenUsage) {
        let _ = (model, usage);
    }

    /// A key that stays the same on every re-run of the current step; append the effect's own
    /// sequence to pass it to external APIs that deduplicate requests.
    fn idempotency_key(&self) -> String {
        String::new()
    }

    /// Whether something streams the LLM tokens of the current step
    /// ([`Channels::TOKENS`](crate::stream::Channels::TOKENS)): a client then asks the model to
    /// stream its reply and passes the pieces to [`Journal::stream_token`].
    fn wants_tokens(&self) -> bool {
        false
    }

    /// A piece of an LLM reply as it arrives, for the run's stream. Called only while the call
    /// really happens: a reply replayed from the journal sends no pieces.
    fn stream_token(&self, model: &str, delta: &str) {
        let _ = (model, delta);
    }

    /// A tool call an agent makes, for the run's stream (not called for replayed calls).
    fn stream_tool_call(&self, tool: &str, call_id: &str, arguments: &Value) {
        let _ = (tool, call_id, arguments);
    }

    /// What a tool call returned, for the run's stream (not called for replayed calls).
    fn stream_tool_result(&self, tool: &str, call_id: &str, result: &Value) {
        let _ = (tool, call_id, result);
    }
}

/// Runs every effect directly and records nothing: for code running outside a flow.
///
/// ```
/// use flow_core::journal::{Journal, NoJournal};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::Error> {
/// let value = NoJournal.record("effect", "ping", &serde_json::Value::Null, Box::pin(async { Ok(serde_json::json!("pong")) })).await?;
/// assert_eq!(value, "pong");
/// assert_eq!(NoJournal.idempotency_key(), "");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoJournal;

impl Journal for NoJournal {
    fn record<'a>(
        &'a self,
        _kind: &'a str,
        _name: &'a str,
        _request: &'a Value,
        effect: BoxFuture<'a, Result<Value, Error>>,
    ) -> BoxFuture<'a, Result<Value, Error>> {
        effect
    }
}

/// A stable 64-bit hash of a request, compared when an effect is replayed (FNV-1a over the
/// canonical JSON text, so it is the same in every process and build).
///
/// ```
/// use flow_core::journal::request_hash;
/// use serde_json::json;
///
/// assert_eq!(request_hash(&json!({"q": 1})), request_hash(&json!({"q": 1})));
/// assert_ne!(request_hash(&json!({"q": 1})), request_hash(&json!({"q": 2})));
/// ```
pub fn request_hash(request: &Value) -> u64 {
    let text = request.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
