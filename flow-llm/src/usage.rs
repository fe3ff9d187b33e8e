//! Token usage per call ([`CallUsage`]) and summed over a task or crew ([`UsageSummary`]).
//!
//! Usage per flow run comes from the journal: every real call reports its usage to
//! [`Journal::report_usage`](flow_core::Journal::report_usage), which the runtime counts per run
//! and emits as a `LlmUsage` event.
//!
//! ```
//! use flow_core::TokenUsage;
//! use flow_llm::{CallUsage, UsageSummary};
//!
//! let mut summary = UsageSummary::default();
//! summary.push(CallUsage::new("gpt-4o-mini", TokenUsage { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 }));
//! summary.push(CallUsage::new("gpt-4o-mini", TokenUsage { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }));
//! assert_eq!(summary.total.total_tokens, 17);
//! assert_eq!(summary.calls.len(), 2);
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use flow_core::TokenUsage;
use serde::{Deserialize, Serialize};

/// The usage of one LLM call.
///
/// ```
/// let c = flow_llm::CallUsage::new("m", flow_core::TokenUsage::default()).agent("Researcher");
/// assert_eq!(c.agent.as_deref(), Some("Researcher"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallUsage {
    /// The model called.
    pub model: String,
    /// The agent's role, for calls made by an agent.
    pub agent: Option<String>,
    /// The task's name, for calls made for a task.
    pub task: Option<String>,
    /// Token counts.
    pub usage: TokenUsage,
}

impl CallUsage {
    /// Usage of a call to `model`.
    ///
    /// ```
    /// assert_eq!(flow_llm::CallUsage::new("m", Default::default()).model, "m");
    /// ```
    pub fn new(model: impl Into<String>, usage: TokenUsage) -> Self {
        CallUsage { model: model.into(), agent: None, task: None, usage }
    }

    /// Names the agent that made the call.
    ///
    /// ```
    /// assert!(flow_llm::CallUsage::new("m", Default::default()).agent("a").agent.is_some());
    /// ```
    pub fn agent(mut self, role: impl Into<String>) -> Self {
        self.agent = Some(role.into());
        self
    }
}

/// Usage of many calls: each call, and the total.
///
/// ```
/// let s = flow_llm::UsageSummary::default();
/// assert_eq!(s.total, flow_core::TokenUsage::default());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSummary {
    /// Every call, in order.
    pub calls: Vec<CallUsage>,
    /// All calls together.
    pub total: TokenUsage,
}

impl UsageSummary {
    /// Adds a call.
    ///
    /// ```
    /// let mut s = flow_llm::UsageSummary::default();
    /// s.push(flow_llm::CallUsage::new("m", flow_core::TokenUsage { prompt_tokens: 1, completion_tokens: 0, total_tokens: 1 }));
    /// assert_eq!(s.total.prompt_tokens, 1);
    /// ```
    pub fn push(&mut self, call: CallUsage) {
        self.total.add(call.usage);
        self.calls.push(call);
    }

    /// Adds all calls of another summary.
    ///
    /// ```
    /// let mut a = flow_llm::UsageSummary::default();
    /// a.extend(flow_llm::UsageSummary::default());
    /// assert!(a.calls.is_empty());
    /// ```
    pub fn extend(&mut self, other: UsageSummary) {
        for call in other.calls {
            self.push(call);
        }
    }

    /// Totals per model.
    ///
    /// ```
    /// use flow_llm::{CallUsage, UsageSummary};
    /// let mut s = UsageSummary::default();
    /// s.push(CallUsage::new("a", flow_core::TokenUsage { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }));
    /// s.push(CallUsage::new("b", flow_core::TokenUsage { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }));
    /// assert_eq!(s.by_model().len(), 2);
    /// ```
    pub fn by_model(&self) -> BTreeMap<String, TokenUsage> {
        let mut out: BTreeMap<String, TokenUsage> = BTreeMap::new();
        for call in &self.calls {
            out.entry(call.model.clone()).or_default().add(call.usage);
        }
        out
    }
}

/// A [`UsageSummary`] that concurrent parts of a crew run add to.
#[derive(Debug, Default)]
pub(crate) struct UsageLog {
    inner: Mutex<UsageSummary>,
}

impl UsageLog {
    pub(crate) fn push(&self, call: CallUsage) {
        match self.inner.lock() {
            Ok(mut s) => s.push(call),
            Err(poisoned) => poisoned.into_inner().push(call),
        }
    }

    pub(crate) fn take(&self) -> UsageSummary {
        match self.inner.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

/// A deterministic stand-in for a tokenizer (about four characters per token), so scripted models
/// and the test server report plausible, repeatable usage.
pub(crate) fn estimate(request: &crate::chat::ChatRequest, response: &crate::chat::ChatResponse) -> TokenUsage {
    let chars = |s: &str| u64::try_from(s.chars().count()).unwrap_or(u64::MAX);
    let prompt: u64 = request
        .messages
        .iter()
        .map(|m| chars(m.text_or_empty()) + m.tool_calls.iter().map(|c| chars(&c.arguments)).sum::<u64>())
        .sum();
    let completion = chars(response.content.as_deref().unwrap_or(""))
        + response.tool_calls.iter().map(|c| chars(&c.name) + chars(&c.arguments)).sum::<u64>();
    let prompt_tokens = prompt / 4 + 1;
    let completion_tokens = completion / 4 + 1;
    TokenUsage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
}
