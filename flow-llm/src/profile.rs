//! What an agent is, apart from how it runs: its role, goal, backstory, tools and model settings.
//!
//! It sits below both [`Agent`](crate::Agent), the handle users hold, and the executor that runs
//! the tool loop, so neither has to import the other to share it. The order of the agent modules
//! is `profile` ← `executor` ← `agent` ← `task` ← `delegation` ← `crew`: each imports only
//! modules to its left.

use std::sync::Arc;

use crate::llm::Llm;
use crate::tool::Tool;

/// The settings of one agent, shared by its clones.
pub(crate) struct Profile {
    pub(crate) role: String,
    pub(crate) goal: String,
    pub(crate) backstory: String,
    pub(crate) tools: Vec<Arc<dyn Tool>>,
    pub(crate) max_iter: u32,
    pub(crate) llm: Arc<dyn Llm>,
    pub(crate) model: Option<String>,
    pub(crate) temperature: Option<f32>,
    pub(crate) max_tokens: Option<u32>,
}

impl Profile {
    /// The model the agent calls: its own, or its client's default.
    pub(crate) fn model(&self) -> &str {
        self.model.as_deref().unwrap_or_else(|| self.llm.model())
    }

    /// CrewAI's system prompt, which models are used to.
    pub(crate) fn system_prompt(&self) -> String {
        format!("You are {}. {}\nYour personal goal is: {}", self.role, self.backstory, self.goal)
    }
}
