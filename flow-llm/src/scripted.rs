//! [`ScriptedLlm`]: an in-process [`Llm`] with scripted replies, for offline examples and tests
//! that do not need the HTTP layer.
//!
//! ```
//! use flow_core::NoJournal;
//! use flow_llm::{ChatRequest, ChatResponse, LlmExt, Match, Message, ScriptedLlm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_llm::LlmError> {
//! let llm = ScriptedLlm::new("offline")
//!     .rule(Match::last_user_contains("weather"), ChatResponse::text("sunny"))
//!     .rule(Match::any(), ChatResponse::text("I don't know"));
//! let r = llm.complete(&NoJournal, ChatRequest::new(vec![Message::user("weather in Rome?")])).await?;
//! assert_eq!(r.content.as_deref(), Some("sunny"));
//! assert_eq!(llm.requests().len(), 1);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chat::{ChatRequest, ChatResponse};
use crate::error::LlmError;
use crate::llm::Llm;
use crate::matching::Match;

type Responder = Arc<dyn Fn(&ChatRequest) -> Result<ChatResponse, LlmError> + Send + Sync>;

struct Rule {
    when: Match,
    remaining: Option<usize>,
    respond: Responder,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<ChatResponse>,
    rules: Vec<Rule>,
    fallback: Option<Responder>,
    requests: Vec<ChatRequest>,
}

/// A model that answers from a script: queued replies first (in order), then the first matching
/// rule, then a fallback responder. It records every request. Clones share the script.
///
/// Replies without usage get a deterministic estimate (about four characters per token), so
/// usage accounting works offline too.
///
/// ```
/// use flow_llm::{ChatResponse, ScriptedLlm};
/// let llm = ScriptedLlm::new("m").reply(ChatResponse::text("first")).reply_text("second");
/// assert_eq!(llm.pending(), 2);
/// ```
#[derive(Clone)]
pub struct ScriptedLlm {
    model: String,
    script: Arc<Mutex<Script>>,
}

impl fmt::Debug for ScriptedLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedLlm").field("model", &self.model).field("pending", &self.pending()).finish()
    }
}

impl ScriptedLlm {
    /// An empty script for `model`.
    ///
    /// ```
    /// use flow_llm::Llm;
    /// assert_eq!(flow_llm::ScriptedLlm::new("m").model(), "m");
    /// ```
    pub fn new(model: impl Into<String>) -> Self {
        ScriptedLlm { model: model.into(), script: Arc::default() }
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        // A panic while holding the lock leaves the script consistent (every update is one
        // push or pop), so a poisoned lock is safe to keep using.
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a reply.
    ///
    /// ```
    /// let llm = flow_llm::ScriptedLlm::new("m").reply(flow_llm::ChatResponse::text("x"));
    /// assert_eq!(llm.pending(), 1);
    /// ```
    pub fn reply(self, response: ChatResponse) -> Self {
        self.push_reply(response);
        self
    }

    /// Queues a text reply.
    ///
    /// ```
    /// let llm = flow_llm::ScriptedLlm::new("m").reply_text("x");
    /// assert_eq!(llm.pending(), 1);
    /// ```
    pub fn reply_text(self, text: impl Into<String>) -> Self {
        self.reply(ChatResponse::text(text))
    }

    /// Queues a reply on a shared instance.
    ///
    /// ```
    /// let llm = flow_llm::ScriptedLlm::new("m");
    /// llm.push_reply(flow_llm::ChatResponse::text("x"));
    /// assert_eq!(llm.pending(), 1);
    /// ```
    pub fn push_reply(&self, response: ChatResponse) {
        self.script().queue.push_back(response);
    }

    /// Answers requests matching `when` with `response` (rules are tried in the order added).
    ///
    /// ```
    /// use flow_llm::{ChatResponse, Match, ScriptedLlm};
    /// let llm = ScriptedLlm::new("m").rule(Match::any(), ChatResponse::text("always"));
    /// # let _ = llm;
    /// ```
    pub fn rule(self, when: Match, response: ChatResponse) -> Self {
        self.rule_fn(when, move |_| Ok(response.clone()))
    }

    /// Answers requests matching `when` with what `respond` computes from the request.
    ///
    /// ```
    /// use flow_llm::{ChatResponse, Match, ScriptedLlm};
    /// let echo = ScriptedLlm::new("m").rule_fn(Match::any(), |r| {
    ///     Ok(ChatResponse::text(r.last_user_text().unwrap_or_default()))
    /// });
    /// # let _ = echo;
    /// ```
    pub fn rule_fn(
        self,
        when: Match,
        respond: impl Fn(&ChatRequest) -> Result<ChatResponse, LlmError> + Send + Sync + 'static,
    ) -> Self {
        self.script().rules.push(Rule { when, remaining: None, respond: Arc::new(respond) });
        self
    }

    /// Like [`rule`](Self::rule), but used at most `times` times.
    ///
    /// ```
    /// use flow_llm::{ChatResponse, Match, ScriptedLlm};
    /// let llm = ScriptedLlm::new("m").rule_times(Match::any(), 1, ChatResponse::text("once"));
    /// # let _ = llm;
    /// ```
    pub fn rule_times(self, when: Match, times: usize, response: ChatResponse) -> Self {
        self.script().rules.push(Rule {
            when,
            remaining: Some(times),
            respond: Arc::new(move |_| Ok(response.clone())),
        });
        self
    }

    /// Answers everything no queued reply or rule covers.
    ///
    /// ```
    /// use flow_llm::{ChatResponse, ScriptedLlm};
    /// let llm = ScriptedLlm::new("m").fallback(|_| Ok(ChatResponse::text("default")));
    /// # let _ = llm;
    /// ```
    pub fn fallback(
        self,
        respond: impl Fn(&ChatRequest) -> Result<ChatResponse, LlmError> + Send + Sync + 'static,
    ) -> Self {
        self.script().fallback = Some(Arc::new(respond));
        self
    }

    /// Every request received so far, in order.
    ///
    /// ```
    /// assert!(flow_llm::ScriptedLlm::new("m").requests().is_empty());
    /// ```
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.script().requests.clone()
    }

    /// How many requests were received.
    ///
    /// ```
    /// assert_eq!(flow_llm::ScriptedLlm::new("m").calls(), 0);
    /// ```
    pub fn calls(&self) -> usize {
        self.script().requests.len()
    }

    /// Queued replies not yet used.
    ///
    /// ```
    /// assert_eq!(flow_llm::ScriptedLlm::new("m").pending(), 0);
    /// ```
    pub fn pending(&self) -> usize {
        self.script().queue.len()
    }

    fn pick(&self, request: &ChatRequest) -> Option<Result<ChatResponse, LlmError>> {
        let responder = {
            let mut script = self.script();
            script.requests.push(request.clone());
            if let Some(reply) = script.queue.pop_front() {
                return Some(Ok(reply));
            }
            let rule =
                script.rules.iter_mut().find(|r| r.remaining != Some(0) && r.when.matches(request)).map(|rule| {
                    if let Some(n) = rule.remaining.as_mut() {
                        *n -= 1;
                    }
                    rule.respond.clone()
                });
            rule.or_else(|| script.fallback.clone())?
        };
        // The responder runs outside the lock: it is user code and may be slow or re-entrant.
        Some(responder(request))
    }
}

#[async_trait::async_trait]
impl Llm for ScriptedLlm {
    fn model(&self) -> &str {
        &self.model
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut response = self.pick(&request).unwrap_or_else(|| {
            Err(LlmError::NoScriptedReply {
                last_message: request.messages.last().map(|m| m.text_or_empty().to_owned()).unwrap_or_default(),
            })
        })?;
        if response.model.is_empty() {
            response.model = request.model.clone().unwrap_or_else(|| self.model.clone());
        }
        if response.id.is_empty() {
            response.id = format!("scripted-{}", self.calls());
        }
        if response.usage.is_none() {
            response.usage = Some(crate::usage::estimate(&request, &response));
        }
        Ok(response)
    }
}
