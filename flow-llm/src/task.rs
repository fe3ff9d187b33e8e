//! [`Task`]: a piece of work for an agent, with `{input}` templating, an expected output, context
//! from earlier tasks and an optional typed output.
//!
//! ```
//! use std::sync::Arc;
//! use flow_core::NoJournal;
//! use flow_llm::{Agent, Inputs, ScriptedLlm, Task};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_llm::LlmError> {
//! let llm = ScriptedLlm::new("m").reply_text("3 bullet points");
//! let writer = Agent::builder("Writer", "Summarize", "Concise").llm(Arc::new(llm.clone())).build()?;
//! let task = Task::new("Summarize {topic}", "Three bullet points").agent(&writer);
//! let out = task.execute(&NoJournal, &Inputs::from([("topic", "fusion")])).await?;
//! assert_eq!(out.raw, "3 bullet points");
//! assert!(llm.requests()[0].last_user_text().unwrap().starts_with("Summarize fusion"));
//! # Ok(()) }
//! ```

use flow_core::Journal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::agent::Agent;
use crate::error::LlmError;
use crate::executor;
use crate::structured::OutputSchema;
use crate::template::Inputs;
use crate::usage::{UsageLog, UsageSummary};

/// Which earlier outputs a task sees.
///
/// ```
/// use flow_llm::TaskContext;
/// assert_eq!(TaskContext::default(), TaskContext::Previous);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TaskContext {
    /// The outputs of all earlier tasks of the crew (CrewAI's default).
    #[default]
    Previous,
    /// The outputs of the named earlier tasks.
    Tasks(Vec<String>),
    /// None.
    None,
}

/// A task.
///
/// ```
/// use flow_llm::{Task, TaskContext};
///
/// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// struct Outline { sections: Vec<String> }
///
/// let t = Task::new("Outline an article on {topic}", "A list of section titles")
///     .name("outline")
///     .context(TaskContext::None)
///     .output::<Outline>()?;
/// assert_eq!(t.task_name(), Some("outline"));
/// # Ok::<(), flow_llm::LlmError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Task {
    pub(crate) name: Option<String>,
    pub(crate) description: String,
    pub(crate) expected_output: String,
    pub(crate) agent: Option<Agent>,
    pub(crate) context: TaskContext,
    pub(crate) output: Option<OutputSchema>,
}

/// What a task produced.
///
/// ```
/// let out = flow_llm::TaskOutput {
///     name: "t".into(), description: "d".into(), agent: "a".into(),
///     raw: "{\"x\":1}".into(), json: Some(serde_json::json!({"x": 1})), usage: Default::default(),
/// };
/// #[derive(serde::Deserialize)]
/// struct X { x: i32 }
/// assert_eq!(out.value::<X>().unwrap().x, 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOutput {
    /// The task's name (or `task-<n>`).
    pub name: String,
    /// The description, inputs filled in.
    pub description: String,
    /// The role of the agent that gave the answer.
    pub agent: String,
    /// The answer's text.
    pub raw: String,
    /// The validated structured answer, for tasks with a typed output.
    pub json: Option<Value>,
    /// Usage of the task's calls (delegated work included).
    pub usage: UsageSummary,
}

impl TaskOutput {
    /// The typed answer.
    ///
    /// ```
    /// let out = flow_llm::TaskOutput {
    ///     name: "t".into(), description: "d".into(), agent: "a".into(),
    ///     raw: "plain".into(), json: None, usage: Default::default(),
    /// };
    /// assert!(out.value::<String>().is_err());
    /// ```
    pub fn value<T: DeserializeOwned>(&self) -> Result<T, LlmError> {
        let json = self.json.clone().ok_or_else(|| {
            LlmError::Config(format!(
                "task `{}` has no typed output; declare one with `Task::output::<T>()`",
                self.name
            ))
        })?;
        serde_json::from_value(json).map_err(|e| LlmError::InvalidReply {
            expected: std::any::type_name::<T>().to_owned(),
            raw: self.raw.clone(),
            reason: e.to_string(),
        })
    }
}

/// CrewAI's task prompt, which models are used to.
pub(crate) fn task_prompt(description: &str, expected_output: &str, context: Option<&str>) -> String {
    let mut prompt = format!(
        "{description}\n\nThis is the expected criteria for your final answer: {expected_output}\nyou MUST return the actual complete content as the final answer, not a summary."
    );
    if let Some(context) = context {
        prompt.push_str("\n\nThis is the context you're working with:\n");
        prompt.push_str(context);
    }
    prompt
}

impl Task {
    /// A task with a description and the expected output; `{name}` placeholders in both are
    /// filled from the inputs at kickoff.
    ///
    /// ```
    /// let t = flow_llm::Task::new("Research {topic}", "Five facts");
    /// assert_eq!(t.description(), "Research {topic}");
    /// ```
    pub fn new(description: impl Into<String>, expected_output: impl Into<String>) -> Self {
        Task {
            name: None,
            description: description.into(),
            expected_output: expected_output.into(),
            agent: None,
            context: TaskContext::Previous,
            output: None,
        }
    }

    /// Names the task, so later tasks can pick its output as context.
    ///
    /// ```
    /// assert_eq!(flow_llm::Task::new("d", "e").name("research").task_name(), Some("research"));
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name given with [`name`](Self::name); unnamed tasks are called `task-<n>` in outputs.
    ///
    /// ```
    /// assert_eq!(flow_llm::Task::new("d", "e").task_name(), None);
    /// ```
    pub fn task_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The agent that performs it.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// let t = flow_llm::Task::new("d", "e").agent(&a);
    /// # let _ = t;
    /// ```
    pub fn agent(mut self, agent: &Agent) -> Self {
        self.agent = Some(agent.clone());
        self
    }

    /// Which earlier outputs it sees.
    ///
    /// ```
    /// let t = flow_llm::Task::new("d", "e").context(flow_llm::TaskContext::Tasks(vec!["research".into()]));
    /// # let _ = t;
    /// ```
    pub fn context(mut self, context: TaskContext) -> Self {
        self.context = context;
        self
    }

    /// Requires the answer to be a `T`: requested with a strict JSON Schema, validated with
    /// serde, repaired once.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct Score { value: u8 }
    /// let t = flow_llm::Task::new("Rate it", "A score").output::<Score>().unwrap();
    /// # let _ = t;
    /// ```
    pub fn output<T: schemars::JsonSchema + DeserializeOwned + Serialize>(mut self) -> Result<Self, LlmError> {
        self.output = Some(OutputSchema::of::<T>()?);
        Ok(self)
    }

    /// The description as written (placeholders unfilled).
    ///
    /// ```
    /// assert_eq!(flow_llm::Task::new("d", "e").description(), "d");
    /// ```
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The expected output as written.
    ///
    /// ```
    /// assert_eq!(flow_llm::Task::new("d", "e").expected_output(), "e");
    /// ```
    pub fn expected_output(&self) -> &str {
        &self.expected_output
    }

    pub(crate) fn display_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("task-{}", index + 1))
    }

    /// Runs this task alone with its agent (no context). For several tasks use a
    /// [`Crew`](crate::Crew).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flow_core::NoJournal;
    /// use flow_llm::{Agent, Inputs, ScriptedLlm, Task};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_llm::LlmError> {
    /// let a = Agent::builder("R", "G", "B").llm(Arc::new(ScriptedLlm::new("m").reply_text("ok"))).build()?;
    /// let out = Task::new("Do it", "ok").agent(&a).execute(&NoJournal, &Inputs::new()).await?;
    /// assert_eq!(out.raw, "ok");
    /// # Ok(()) }
    /// ```
    pub async fn execute(&self, journal: &dyn Journal, inputs: &Inputs) -> Result<TaskOutput, LlmError> {
        let name = self.display_name(0);
        let agent = self
            .agent
            .as_ref()
            .ok_or_else(|| LlmError::Config(format!("task `{name}` has no agent; set one with `.agent(..)`")))?
            .render(inputs)?;
        self.run_with(&agent, journal, inputs, &name, None, agent.user_tools()).await
    }

    /// Runs the task with `agent` (already rendered) and the given context and tools.
    pub(crate) async fn run_with(
        &self,
        agent: &Agent,
        journal: &dyn Journal,
        inputs: &Inputs,
        name: &str,
        context: Option<&str>,
        tools: Vec<executor::ToolEntry>,
    ) -> Result<TaskOutput, LlmError> {
        let place = format!("task `{name}`");
        let description = inputs.render(&self.description, &place)?;
        let expected = inputs.render(&self.expected_output, &place)?;
        let prompt = task_prompt(&description, &expected, context.filter(|c| !c.trim().is_empty()));
        let log = UsageLog::default();
        let answer =
            executor::execute(&agent.inner, journal, &log, Some(name), prompt, tools, self.output.as_ref()).await?;
        Ok(TaskOutput {
            name: name.to_owned(),
            description,
            agent: agent.role().to_owned(),
            raw: answer.raw,
            json: answer.json,
            usage: log.take(),
        })
    }
}
