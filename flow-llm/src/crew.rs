//! [`Crew`]: agents working through tasks, one after another ([`Process::Sequential`]) or through a
//! manager that delegates to them ([`Process::Hierarchical`]).
//!
//! ```
//! use std::sync::Arc;
//! use flow_core::NoJournal;
//! use flow_llm::{Agent, Crew, Inputs, Match, ScriptedLlm, Task, ChatResponse};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_llm::LlmError> {
//! let llm = Arc::new(
//!     ScriptedLlm::new("m")
//!         .rule(Match::system_contains("Researcher"), ChatResponse::text("fact A; fact B"))
//!         .rule(Match::system_contains("Writer"), ChatResponse::text("An article.")),
//! );
//! let researcher = Agent::builder("Researcher", "Find facts on {topic}", "Careful").llm(llm.clone()).build()?;
//! let writer = Agent::builder("Writer", "Write about {topic}", "Clear").llm(llm.clone()).build()?;
//! let crew = Crew::builder()
//!     .task(Task::new("Research {topic}", "Facts").agent(&researcher))
//!     .task(Task::new("Write about {topic}", "An article").agent(&writer))
//!     .build()?;
//! let out = crew.kickoff(&NoJournal, &Inputs::from([("topic", "tides")])).await?;
//! assert_eq!(out.raw, "An article.");
//! assert_eq!(out.tasks.len(), 2);
//! assert_eq!(out.usage.calls.len(), 2);
//! # Ok(()) }
//! ```

use flow_core::Journal;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::agent::Agent;
use crate::delegation::Delegation;
use crate::error::LlmError;
use crate::task::{Task, TaskContext, TaskOutput};
use crate::template::Inputs;
use crate::usage::UsageSummary;

/// How a crew works through its tasks.
///
/// ```
/// use std::sync::Arc;
/// use flow_llm::{Agent, Process, ScriptedLlm};
/// let p = Process::Hierarchical { manager: Agent::manager(Arc::new(ScriptedLlm::new("m"))) };
/// assert!(matches!(p, Process::Hierarchical { .. }));
/// ```
#[derive(Clone, Debug, Default)]
pub enum Process {
    /// Each task by its own agent, in order.
    #[default]
    Sequential,
    /// Each task by the manager, which delegates to the other agents through delegation tools
    /// (the task's agent if it has one, otherwise all agents).
    Hierarchical {
        /// The manager; it must have no tools of its own and not be one of the crew's agents.
        manager: Agent,
    },
}

/// A crew.
///
/// ```
/// use std::sync::Arc;
/// use flow_llm::{Agent, Crew, ScriptedLlm, Task};
/// let a = Agent::builder("R", "G", "B").llm(Arc::new(ScriptedLlm::new("m"))).build()?;
/// let crew = Crew::builder().task(Task::new("d", "e").agent(&a)).build()?;
/// assert_eq!(crew.tasks().len(), 1);
/// # Ok::<(), flow_llm::LlmError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Crew {
    agents: Vec<Agent>,
    tasks: Vec<Task>,
    process: Process,
}

/// What a crew produced: the last task's answer, every task's output, and usage.
///
/// ```
/// let out = flow_llm::CrewOutput { raw: "r".into(), json: None, tasks: vec![], usage: Default::default() };
/// assert!(out.task("missing").is_none());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CrewOutput {
    /// The last task's answer text.
    pub raw: String,
    /// The last task's typed answer, if it has a typed output.
    pub json: Option<Value>,
    /// Every task's output, in order.
    pub tasks: Vec<TaskOutput>,
    /// Usage of every call of the crew run, per call and in total.
    pub usage: UsageSummary,
}

impl CrewOutput {
    /// The last task's typed answer.
    ///
    /// ```
    /// let out = flow_llm::CrewOutput { raw: "{}".into(), json: Some(serde_json::json!({"n": 2})), tasks: vec![], usage: Default::default() };
    /// #[derive(serde::Deserialize)]
    /// struct N { n: u8 }
    /// assert_eq!(out.value::<N>().unwrap().n, 2);
    /// ```
    pub fn value<T: DeserializeOwned>(&self) -> Result<T, LlmError> {
        let json = self.json.clone().ok_or_else(|| {
            LlmError::Config("the crew's last task has no typed output; declare one with `Task::output::<T>()`".into())
        })?;
        serde_json::from_value(json).map_err(|e| LlmError::InvalidReply {
            expected: std::any::type_name::<T>().to_owned(),
            raw: self.raw.clone(),
            reason: e.to_string(),
        })
    }

    /// The output of the task with this name.
    ///
    /// ```
    /// let out = flow_llm::CrewOutput { raw: String::new(), json: None, tasks: vec![], usage: Default::default() };
    /// assert!(out.task("research").is_none());
    /// ```
    pub fn task(&self, name: &str) -> Option<&TaskOutput> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

impl Crew {
    /// Starts building a crew.
    ///
    /// ```
    /// let b = flow_llm::Crew::builder();
    /// # let _ = b;
    /// ```
    pub fn builder() -> CrewBuilder {
        CrewBuilder::default()
    }

    /// The tasks.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let a = flow_llm::Agent::builder("R", "G", "B").llm(Arc::new(flow_llm::ScriptedLlm::new("m"))).build().unwrap();
    /// let crew = flow_llm::Crew::builder().task(flow_llm::Task::new("d", "e").agent(&a)).build().unwrap();
    /// assert_eq!(crew.tasks()[0].description(), "d");
    /// ```
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Runs every task with `{name}` placeholders filled from `inputs`. Every LLM and tool call
    /// goes through `journal`: inside a flow method pass `cx`, so a re-run step replays them.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flow_core::NoJournal;
    /// use flow_llm::{Agent, Crew, Inputs, ScriptedLlm, Task};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_llm::LlmError> {
    /// let a = Agent::builder("R", "G", "B").llm(Arc::new(ScriptedLlm::new("m").reply_text("hi"))).build()?;
    /// let crew = Crew::builder().task(Task::new("Greet {who}", "A greeting").agent(&a)).build()?;
    /// assert_eq!(crew.kickoff(&NoJournal, &Inputs::from([("who", "Ada")])).await?.raw, "hi");
    /// # Ok(()) }
    /// ```
    pub async fn kickoff(&self, journal: &dyn Journal, inputs: &Inputs) -> Result<CrewOutput, LlmError> {
        let span = tracing::info_span!(
            "crew",
            tasks = self.tasks.len(),
            hierarchical = matches!(self.process, Process::Hierarchical { .. })
        );
        self.run(journal, inputs).instrument(span).await
    }

    async fn run(&self, journal: &dyn Journal, inputs: &Inputs) -> Result<CrewOutput, LlmError> {
        let mut outputs: Vec<TaskOutput> = Vec::with_capacity(self.tasks.len());
        let mut usage = UsageSummary::default();
        for (i, task) in self.tasks.iter().enumerate() {
            let name = task.display_name(i);
            let context = context_for(task, &outputs);
            let output = match &self.process {
                Process::Sequential => {
                    // `build` checked that every task has an agent.
                    let agent = task
                        .agent
                        .as_ref()
                        .ok_or_else(|| LlmError::Config(format!("task `{name}` has no agent")))?
                        .render(inputs)?;
                    task.run_with(&agent, journal, inputs, &name, context.as_deref(), agent.user_tools()).await?
                }
                Process::Hierarchical { manager } => {
                    let manager = manager.render(inputs)?;
                    let coworkers = match &task.agent {
                        Some(agent) => vec![agent.render(inputs)?],
                        None => self.agents.iter().map(|a| a.render(inputs)).collect::<Result<_, _>>()?,
                    };
                    let tools = Delegation::tools(&coworkers);
                    task.run_with(&manager, journal, inputs, &name, context.as_deref(), tools).await?
                }
            };
            tracing::debug!(task = %name, agent = %output.agent, tokens = output.usage.total.total_tokens, "task done");
            usage.extend(output.usage.clone());
            outputs.push(output);
        }
        let (raw, json) = outputs.last().map(|o| (o.raw.clone(), o.json.clone())).unwrap_or_default();
        Ok(CrewOutput { raw, json, tasks: outputs, usage })
    }
}

/// CrewAI's context: earlier raw outputs joined by a separator line.
fn context_for(task: &Task, earlier: &[TaskOutput]) -> Option<String> {
    const SEPARATOR: &str = "\n\n----------\n\n";
    let picked: Vec<&str> = match &task.context {
        TaskContext::None => return None,
        TaskContext::Previous => earlier.iter().map(|o| o.raw.as_str()).collect(),
        TaskContext::Tasks(names) => {
            earlier.iter().filter(|o| names.contains(&o.name)).map(|o| o.raw.as_str()).collect()
        }
    };
    (!picked.is_empty()).then(|| picked.join(SEPARATOR))
}

/// Builds a [`Crew`].
///
/// ```
/// use std::sync::Arc;
/// use flow_llm::{Agent, Crew, Process, ScriptedLlm, Task};
/// let llm = Arc::new(ScriptedLlm::new("m"));
/// let analyst = Agent::builder("Analyst", "Analyse", "Sharp").llm(llm.clone()).build()?;
/// let crew = Crew::builder()
///     .agent(&analyst)
///     .task(Task::new("Analyse Q3", "A short analysis"))
///     .process(Process::Hierarchical { manager: Agent::manager(llm) })
///     .build()?;
/// # let _ = crew;
/// # Ok::<(), flow_llm::LlmError>(())
/// ```
#[derive(Debug, Default)]
pub struct CrewBuilder {
    agents: Vec<Agent>,
    tasks: Vec<Task>,
    process: Process,
}

impl CrewBuilder {
    /// Adds an agent (for hierarchical crews: a coworker the manager may delegate to). Agents
    /// of tasks are added automatically.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// let b = flow_llm::Crew::builder().agent(&a);
    /// # let _ = b;
    /// ```
    pub fn agent(mut self, agent: &Agent) -> Self {
        self.agents.push(agent.clone());
        self
    }

    /// Adds a task; tasks run in the order added.
    ///
    /// ```
    /// let b = flow_llm::Crew::builder().task(flow_llm::Task::new("d", "e"));
    /// # let _ = b;
    /// ```
    pub fn task(mut self, task: Task) -> Self {
        self.tasks.push(task);
        self
    }

    /// Sets the process (sequential by default).
    ///
    /// ```
    /// let b = flow_llm::Crew::builder().process(flow_llm::Process::Sequential);
    /// # let _ = b;
    /// ```
    pub fn process(mut self, process: Process) -> Self {
        self.process = process;
        self
    }

    /// Checks the crew and builds it.
    ///
    /// ```
    /// let err = flow_llm::Crew::builder().task(flow_llm::Task::new("d", "e")).build().unwrap_err();
    /// assert!(err.to_string().contains("has no agent"));
    /// ```
    pub fn build(self) -> Result<Crew, LlmError> {
        let CrewBuilder { mut agents, tasks, process } = self;
        if tasks.is_empty() {
            return Err(LlmError::Config("the crew has no tasks; add one with `.task(..)`".into()));
        }
        let mut names: Vec<String> = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            let name = task.display_name(i);
            if names.contains(&name) {
                return Err(LlmError::Config(format!("two tasks are named `{name}`; task names must be unique")));
            }
            if let TaskContext::Tasks(wanted) = &task.context
                && let Some(missing) = wanted.iter().find(|w| !names.contains(w))
            {
                return Err(LlmError::Config(format!(
                    "task `{name}` takes context from `{missing}`, which is not an earlier task of the crew"
                )));
            }
            names.push(name);
            if let Some(agent) = &task.agent
                && !agents.iter().any(|a| a.same_as(agent))
            {
                agents.push(agent.clone());
            }
        }
        match &process {
            Process::Sequential => {
                if let Some((i, task)) = tasks.iter().enumerate().find(|(_, t)| t.agent.is_none()) {
                    return Err(LlmError::Config(format!(
                        "task `{}` has no agent; a sequential crew needs `.agent(..)` on every task",
                        task.display_name(i)
                    )));
                }
            }
            Process::Hierarchical { manager } => {
                if !manager.tool_names().is_empty() {
                    return Err(LlmError::Config(format!(
                        "the manager `{}` has tools; a manager only delegates, give the tools to a coworker",
                        manager.role()
                    )));
                }
                if agents.iter().any(|a| a.same_as(manager)) {
                    return Err(LlmError::Config(format!(
                        "the manager `{}` is also one of the crew's agents; use a separate manager agent",
                        manager.role()
                    )));
                }
                if agents.is_empty() {
                    return Err(LlmError::Config(
                        "a hierarchical crew needs agents to delegate to; add them with `.agent(..)`".into(),
                    ));
                }
            }
        }
        Ok(Crew { agents, tasks, process })
    }
}
