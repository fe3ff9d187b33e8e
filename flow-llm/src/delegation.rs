//! The manager's tools in a hierarchical crew, as in CrewAI: "delegate work to coworker" and
//! "ask question to coworker". Each call runs the named coworker on the delegated task, inside the
//! tool call, and returns its answer as the tool result.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::chat::ToolSpec;
use crate::error::LlmError;
use crate::executor::{self, Delegate, Exec, ToolEntry};
use crate::task::task_prompt;

/// What a delegated coworker is told its answer should be (CrewAI's wording).
const COWORKER_EXPECTED: &str = "Your best answer to your coworker asking you this, accounting for the context shared.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Work,
    Question,
}

/// One delegation tool over a set of coworkers.
pub(crate) struct Delegation {
    kind: Kind,
    coworkers: Vec<Agent>,
}

impl Delegation {
    /// Both delegation tools for `coworkers`.
    pub(crate) fn tools(coworkers: &[Agent]) -> Vec<ToolEntry> {
        [Kind::Work, Kind::Question]
            .into_iter()
            .map(|kind| ToolEntry::Delegate(std::sync::Arc::new(Delegation { kind, coworkers: coworkers.to_vec() })))
            .collect()
    }

    fn field(&self) -> &'static str {
        match self.kind {
            Kind::Work => "task",
            Kind::Question => "question",
        }
    }

    fn roles(&self) -> Vec<&str> {
        self.coworkers.iter().map(Agent::role).collect()
    }

    fn find(&self, name: &str) -> Option<&Agent> {
        let wanted = normalize(name);
        self.coworkers.iter().find(|a| normalize(a.role()) == wanted)
    }
}

impl Delegate for Delegation {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Work => "delegate_work_to_coworker",
            Kind::Question => "ask_question_to_coworker",
        }
    }

    fn spec(&self) -> ToolSpec {
        let roles = self.roles();
        let description = match self.kind {
            Kind::Work => format!(
                "Delegate a specific task to one of the following coworkers: {}. Give the coworker, the task you want them to do, and ALL necessary context to execute it: they know nothing about the task, so share absolutely everything you know; don't reference things, explain them.",
                roles.join(", ")
            ),
            Kind::Question => format!(
                "Ask a specific question to one of the following coworkers: {}. Give the coworker, the question, and ALL necessary context to answer it: they know nothing about the question, so share absolutely everything you know; don't reference things, explain them.",
                roles.join(", ")
            ),
        };
        let field = self.field();
        ToolSpec {
            name: self.name().to_owned(),
            description,
            parameters: json!({
                "type": "object",
                "properties": {
                    field: { "type": "string", "description": format!("The {field} for the coworker") },
                    "context": { "type": "string", "description": "Everything the coworker needs to know" },
                    "coworker": { "type": "string", "enum": roles, "description": "The coworker's role" }
                },
                "required": [field, "context", "coworker"],
                "additionalProperties": false
            }),
            strict: true,
        }
    }

    fn call<'a>(&'a self, exec: &'a Exec<'_>, args: &'a Value) -> BoxFuture<'a, Result<String, LlmError>> {
        Box::pin(self.run(exec, args))
    }
}

impl Delegation {
    /// Runs the coworker. A malformed request goes back to the manager as an error text; a failed
    /// LLM call of the coworker fails the step, because the manager cannot fix a rate limit.
    async fn run(&self, exec: &Exec<'_>, args: &Value) -> Result<String, LlmError> {
        let text = |key: &str| args.get(key).and_then(Value::as_str).unwrap_or("").trim().to_owned();
        let (what, context, coworker) = (text(self.field()), text("context"), text("coworker"));
        if what.is_empty() {
            return Ok(format!("Error: `{}` is empty; say what the coworker should do.", self.field()));
        }
        let Some(agent) = self.find(&coworker) else {
            return Ok(format!(
                "Error: there is no coworker named {coworker:?}. Choose one of: {}.",
                self.roles().join(", ")
            ));
        };
        tracing::debug!(manager = exec.agent.role, coworker = agent.role(), kind = ?self.kind, "delegating");
        let prompt = task_prompt(&what, COWORKER_EXPECTED, (!context.is_empty()).then_some(context.as_str()));
        let answer =
            executor::execute(&agent.inner, exec.journal, exec.log, exec.task, prompt, agent.user_tools(), None)
                .await?;
        Ok(answer.raw)
    }
}

fn normalize(role: &str) -> String {
    role.trim().trim_matches(|c| c == '"' || c == '\'').to_lowercase()
}
