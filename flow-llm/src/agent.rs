//! [`Agent`]: a role with a goal, a backstory, tools and a model, that works on a prompt in a
//! bounded tool-call loop.
//!
//! ```
//! use std::sync::Arc;
//! use flow_core::NoJournal;
//! use flow_llm::{Agent, ScriptedLlm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_llm::LlmError> {
//! let llm = ScriptedLlm::new("m").reply_text("Batteries are getting denser.");
//! let researcher = Agent::builder("Researcher", "Find facts", "A careful analyst")
//!     .llm(Arc::new(llm.clone()))
//!     .build()?;
//! let out = researcher.run(&NoJournal, "One fact about batteries").await?;
//! assert_eq!(out.raw, "Batteries are getting denser.");
//! assert!(llm.requests()[0].system_text().contains("You are Researcher."));
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use flow_core::Journal;
use serde_json::Value;

use crate::error::LlmError;
use crate::executor::{self, ToolEntry};
use crate::llm::Llm;
use crate::profile::Profile;
use crate::structured::OutputSchema;
use crate::template::Inputs;
use crate::tool::{Tool, validate_tool_name};
use crate::usage::{UsageLog, UsageSummary};

/// Tool-loop iterations allowed unless configured (CrewAI uses 25; a flow step is usually
/// narrower).
///
/// ```
/// assert!(flow_llm::agent::DEFAULT_MAX_ITER > 1);
/// ```
pub const DEFAULT_MAX_ITER: u32 = 15;

/// An agent. Cheap to clone (shared).
///
/// Its system prompt is `You are {role}. {backstory}\nYour personal goal is: {goal}`. With
/// tools, each model reply that calls tools is answered with the tools' results until the model
/// gives a final answer; after `max_iter` tool-calling replies the model is told to answer now and
/// is called once more without tools (logged as a warning naming the tools it still wanted). If it
/// asks for tools even then, the run fails with [`LlmError::MaxIterReached`](crate::LlmError),
/// which says so and names the tools.
///
/// ```
/// use std::sync::Arc;
/// use flow_llm::{Agent, ScriptedLlm};
/// let a = Agent::builder("Writer", "Write clearly", "Ten years of tech journalism")
///     .llm(Arc::new(ScriptedLlm::new("m")))
///     .model("gpt-4.1")
///     .max_iter(5)
///     .build()
///     .unwrap();
/// assert_eq!(a.role(), "Writer");
/// assert_eq!(a.max_iter(), 5);
/// ```
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Profile>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("role", &self.inner.role)
            .field("tools", &self.inner.tools.iter().map(|t| t.name().to_owned()).collect::<Vec<_>>())
            .field("max_iter", &self.inner.max_iter)
            .field("model", &self.model())
            .finish_non_exhaustive()
    }
}

/// What an agent produced.
///
/// ```
/// let out = flow_llm::AgentOutput { raw: "x".into(), json: None, usage: Default::default() };
/// assert_eq!(out.raw, "x");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct AgentOutput {
    /// The final answer's text.
    pub raw: String,
    /// The validated structured answer, when one was requested.
    pub json: Option<Value>,
    /// Usage of every call the agent made (delegated work included).
    pub usage: UsageSummary,
}

impl Agent {
    /// Starts building an agent.
    ///
    /// ```
    /// let b = flow_llm::Agent::builder("Role", "Goal", "Backstory");
    /// # let _ = b;
    /// ```
    pub fn builder(role: impl Into<String>, goal: impl Into<String>, backstory: impl Into<String>) -> AgentBuilder {
        AgentBuilder {
            role: role.into(),
            goal: goal.into(),
            backstory: backstory.into(),
            tools: Vec::new(),
            max_iter: DEFAULT_MAX_ITER,
            llm: None,
            model: None,
            temperature: None,
            max_tokens: None,
        }
    }

    /// The default manager of a hierarchical crew, as in CrewAI: it plans and delegates, and
    /// has no tools of its own.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let m = flow_llm::Agent::manager(Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// assert_eq!(m.role(), "Crew Manager");
    /// ```
    pub fn manager(llm: Arc<dyn Llm>) -> Agent {
        Agent {
            inner: Arc::new(Profile {
                role: "Crew Manager".into(),
                goal: "Manage the team to complete the task in the best way possible.".into(),
                backstory: "You are a seasoned manager with a knack for getting the best out of your team. You are also known for your ability to delegate work to the right people, and to ask the right questions to get the best out of your team. Even though you don't perform tasks by yourself, you have a lot of experience in the field, which allows you to properly evaluate the work of your team members.".into(),
                tools: Vec::new(),
                max_iter: DEFAULT_MAX_ITER,
                llm,
                model: None,
                temperature: None,
                max_tokens: None,
            }),
        }
    }

    /// The role.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// assert!(!a.role().is_empty());
    /// ```
    pub fn role(&self) -> &str {
        &self.inner.role
    }

    /// The goal.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// assert!(a.goal().contains("Manage"));
    /// ```
    pub fn goal(&self) -> &str {
        &self.inner.goal
    }

    /// The backstory.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// assert!(!a.backstory().is_empty());
    /// ```
    pub fn backstory(&self) -> &str {
        &self.inner.backstory
    }

    /// Tool-loop iterations allowed.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// assert_eq!(a.max_iter(), flow_llm::agent::DEFAULT_MAX_ITER);
    /// ```
    pub fn max_iter(&self) -> u32 {
        self.inner.max_iter
    }

    /// The model this agent calls: its own, or its client's default.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// assert_eq!(a.model(), "m");
    /// ```
    pub fn model(&self) -> &str {
        self.inner.model()
    }

    /// The names of its tools.
    ///
    /// ```
    /// # let a = flow_llm::Agent::manager(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// assert!(a.tool_names().is_empty());
    /// ```
    pub fn tool_names(&self) -> Vec<&str> {
        self.inner.tools.iter().map(|t| t.name()).collect()
    }

    /// A copy with `{name}` placeholders in role, goal and backstory filled from `inputs`.
    pub(crate) fn render(&self, inputs: &Inputs) -> Result<Agent, LlmError> {
        let place = format!("agent `{}`", self.inner.role);
        let i = &self.inner;
        Ok(Agent {
            inner: Arc::new(Profile {
                role: inputs.render(&i.role, &place)?,
                goal: inputs.render(&i.goal, &place)?,
                backstory: inputs.render(&i.backstory, &place)?,
                tools: i.tools.clone(),
                max_iter: i.max_iter,
                llm: Arc::clone(&i.llm),
                model: i.model.clone(),
                temperature: i.temperature,
                max_tokens: i.max_tokens,
            }),
        })
    }

    pub(crate) fn same_as(&self, other: &Agent) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn user_tools(&self) -> Vec<ToolEntry> {
        self.inner.tools.iter().cloned().map(ToolEntry::User).collect()
    }

    /// Works on `prompt` with the agent's tools and returns the final answer. Every LLM and tool
    /// call goes through `journal`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flow_core::NoJournal;
    /// use flow_llm::{Agent, ScriptedLlm};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_llm::LlmError> {
    /// let a = Agent::builder("R", "G", "B").llm(Arc::new(ScriptedLlm::new("m").reply_text("done"))).build()?;
    /// assert_eq!(a.run(&NoJournal, "go").await?.raw, "done");
    /// # Ok(()) }
    /// ```
    pub async fn run(&self, journal: &dyn Journal, prompt: impl Into<String>) -> Result<AgentOutput, LlmError> {
        let log = UsageLog::default();
        let answer =
            executor::execute(&self.inner, journal, &log, None, prompt.into(), self.user_tools(), None).await?;
        Ok(AgentOutput { raw: answer.raw, json: answer.json, usage: log.take() })
    }

    /// Like [`run`](Self::run), with the final answer in the shape of `T` (strict structured
    /// output, one repair attempt).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flow_core::NoJournal;
    /// use flow_llm::{Agent, ScriptedLlm};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct Verdict { approve: bool }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_llm::LlmError> {
    /// let a = Agent::builder("Reviewer", "Review", "Strict")
    ///     .llm(Arc::new(ScriptedLlm::new("m").reply_text(r#"{"approve": false}"#)))
    ///     .build()?;
    /// let v: Verdict = a.run_typed(&NoJournal, "Review this diff").await?;
    /// assert!(!v.approve);
    /// # Ok(()) }
    /// ```
    pub async fn run_typed<T>(&self, journal: &dyn Journal, prompt: impl Into<String>) -> Result<T, LlmError>
    where
        T: schemars::JsonSchema + serde::de::DeserializeOwned + serde::Serialize,
    {
        let schema = OutputSchema::of::<T>()?;
        let log = UsageLog::default();
        let answer =
            executor::execute(&self.inner, journal, &log, None, prompt.into(), self.user_tools(), Some(&schema))
                .await?;
        let value = answer.json.unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|e| schema.invalid(&answer.raw, e.to_string()))
    }
}

/// Builds an [`Agent`].
///
/// ```
/// use std::sync::Arc;
/// use flow_llm::{Agent, FnTool, ScriptedLlm, ToolError};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Q { query: String }
///
/// let search = FnTool::new("search", "Search the web", |q: Q| async move { Ok::<_, ToolError>(format!("results for {}", q.query)) })?;
/// let agent = Agent::builder("Researcher", "Find facts", "Curious")
///     .llm(Arc::new(ScriptedLlm::new("m")))
///     .tool(search)
///     .temperature(0.2)
///     .max_tokens(800)
///     .build()?;
/// assert_eq!(agent.tool_names(), ["search"]);
/// # Ok::<(), flow_llm::LlmError>(())
/// ```
pub struct AgentBuilder {
    role: String,
    goal: String,
    backstory: String,
    tools: Vec<Arc<dyn Tool>>,
    max_iter: u32,
    llm: Option<Arc<dyn Llm>>,
    model: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder").field("role", &self.role).finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// The model client (required). Share one client between agents to share its connection
    /// pool; all [`OpenAiLlm`](crate::OpenAiLlm)s share one concurrency limit by default.
    ///
    /// ```
    /// let b = flow_llm::Agent::builder("R", "G", "B").llm(std::sync::Arc::new(flow_llm::ScriptedLlm::new("m")));
    /// # let _ = b;
    /// ```
    pub fn llm(mut self, llm: Arc<dyn Llm>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// The model this agent uses, instead of its client's default.
    ///
    /// ```
    /// let b = flow_llm::Agent::builder("R", "G", "B").model("gpt-4.1-mini");
    /// # let _ = b;
    /// ```
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Adds a tool.
    ///
    /// ```
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct N { n: i32 }
    /// let t = flow_llm::FnTool::new("double", "Doubles n", |x: N| async move { Ok::<_, flow_llm::ToolError>(x.n * 2) }).unwrap();
    /// let b = flow_llm::Agent::builder("R", "G", "B").tool(t);
    /// # let _ = b;
    /// ```
    pub fn tool(mut self, tool: impl Tool + 'static) -> Self {
        self.tools.push(Arc::new(tool));
        self
    }

    /// Adds shared tools.
    ///
    /// ```
    /// let b = flow_llm::Agent::builder("R", "G", "B").tools(Vec::new());
    /// # let _ = b;
    /// ```
    pub fn tools(mut self, tools: impl IntoIterator<Item = Arc<dyn Tool>>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// Tool-calling replies allowed before a final answer is forced (at least 1).
    ///
    /// ```
    /// let b = flow_llm::Agent::builder("R", "G", "B").max_iter(3);
    /// # let _ = b;
    /// ```
    pub fn max_iter(mut self, n: u32) -> Self {
        self.max_iter = n.max(1);
        self
    }

    /// Sampling temperature of this agent's calls.
    ///
    /// ```
    /// let b = flow_llm::Agent::builder("R", "G", "B").temperature(0.0);
    /// # let _ = b;
    /// ```
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Reply token limit of this agent's calls.
    ///
    /// ```
    /// let b = flow_llm::Agent::builder("R", "G", "B").max_tokens(100);
    /// # let _ = b;
    /// ```
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Builds the agent. Fails without an LLM, or with two tools of one name.
    ///
    /// ```
    /// let err = flow_llm::Agent::builder("R", "G", "B").build().unwrap_err();
    /// assert!(err.to_string().contains("no LLM"));
    /// ```
    pub fn build(self) -> Result<Agent, LlmError> {
        let llm = self
            .llm
            .ok_or_else(|| LlmError::Config(format!("agent `{}` has no LLM; set one with `.llm(..)`", self.role)))?;
        let mut seen = std::collections::HashSet::new();
        for t in &self.tools {
            validate_tool_name(t.name())?;
            if !seen.insert(t.name().to_owned()) {
                return Err(LlmError::Config(format!(
                    "agent `{}` has two tools named `{}`; tool names must be unique",
                    self.role,
                    t.name()
                )));
            }
        }
        Ok(Agent {
            inner: Arc::new(Profile {
                role: self.role,
                goal: self.goal,
                backstory: self.backstory,
                tools: self.tools,
                max_iter: self.max_iter,
                llm,
                model: self.model,
                temperature: self.temperature,
                max_tokens: self.max_tokens,
            }),
        })
    }
}
