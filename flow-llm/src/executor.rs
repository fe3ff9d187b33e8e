//! The agent loop: call the model, run the tools it asks for, feed the results back, until it
//! gives a final answer or runs out of iterations; then validate a structured answer.

use std::sync::Arc;

use flow_core::Journal;
use futures::future::{BoxFuture, join_all};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::chat::{ChatRequest, ChatResponse, Message, ToolCall, ToolSpec};
use crate::error::LlmError;
use crate::llm::LlmExt;
use crate::profile::Profile;
use crate::structured::OutputSchema;
use crate::tool::{Tool, ToolError};
use crate::usage::{CallUsage, UsageLog};

/// CrewAI's wording, which models are used to.
pub(crate) const FORCE_FINAL_ANSWER: &str = "Now it's time you MUST give your absolute best final answer. You'll ignore all previous instructions, stop using any tools, and just return your absolute BEST Final answer.";

/// A tool that runs other agents (a hierarchical crew's delegation tools). Its calls are not
/// journaled as one effect: the executions they start journal their own calls.
///
/// A trait, so that the executor need not know the crew's delegation, which itself runs agents
/// through the executor.
pub(crate) trait Delegate: Send + Sync {
    fn name(&self) -> &str;
    fn spec(&self) -> ToolSpec;
    /// Runs the call that `exec`'s model made with `args`; the text is the tool result.
    fn call<'a>(&'a self, exec: &'a Exec<'_>, args: &'a Value) -> BoxFuture<'a, Result<String, LlmError>>;
}

/// A tool an agent can call during one execution.
#[derive(Clone)]
pub(crate) enum ToolEntry {
    User(Arc<dyn Tool>),
    Delegate(Arc<dyn Delegate>),
}

impl ToolEntry {
    fn name(&self) -> &str {
        match self {
            ToolEntry::User(t) => t.name(),
            ToolEntry::Delegate(d) => d.name(),
        }
    }

    fn spec(&self) -> ToolSpec {
        match self {
            ToolEntry::User(t) => t.spec(),
            ToolEntry::Delegate(d) => d.spec(),
        }
    }
}

/// The final answer of an execution.
pub(crate) struct Answer {
    pub(crate) raw: String,
    pub(crate) json: Option<Value>,
}

/// One agent working on one prompt.
pub(crate) struct Exec<'a> {
    pub(crate) agent: &'a Profile,
    pub(crate) journal: &'a dyn Journal,
    pub(crate) log: &'a UsageLog,
    pub(crate) task: Option<&'a str>,
}

/// Runs `agent` on `prompt`. Boxed because delegation makes it recursive (a manager's tool call
/// runs a coworker's execution).
pub(crate) fn execute<'a>(
    agent: &'a Profile,
    journal: &'a dyn Journal,
    log: &'a UsageLog,
    task: Option<&'a str>,
    prompt: String,
    tools: Vec<ToolEntry>,
    output: Option<&'a OutputSchema>,
) -> BoxFuture<'a, Result<Answer, LlmError>> {
    let span = tracing::info_span!(
        "agent",
        otel.name = %format_args!("invoke_agent {}", agent.role),
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = %agent.role,
        role = %agent.role,
        task = task.unwrap_or("")
    );
    Box::pin(
        async move {
            let exec = Exec { agent, journal, log, task };
            exec.run(prompt, &tools, output).await
        }
        .instrument(span),
    )
}

impl Exec<'_> {
    async fn call(
        &self,
        messages: &[Message],
        tools: &[ToolEntry],
        output: Option<&OutputSchema>,
    ) -> Result<ChatResponse, LlmError> {
        let inner = self.agent;
        let request = ChatRequest {
            model: inner.model.clone(),
            messages: messages.to_vec(),
            tools: tools.iter().map(ToolEntry::spec).collect(),
            response_format: output.map(OutputSchema::response_format),
            temperature: inner.temperature,
            max_tokens: inner.max_tokens,
            ..Default::default()
        };
        let response = inner.llm.complete(self.journal, request).await?;
        if let Some(usage) = response.usage {
            self.log.push(CallUsage {
                model: self.agent.model().to_owned(),
                agent: Some(inner.role.clone()),
                task: self.task.map(str::to_owned),
                usage,
            });
        }
        Ok(response)
    }

    async fn run(
        &self,
        prompt: String,
        tools: &[ToolEntry],
        output: Option<&OutputSchema>,
    ) -> Result<Answer, LlmError> {
        let mut messages = vec![Message::system(self.agent.system_prompt()), Message::user(prompt)];
        for iteration in 0..self.agent.max_iter {
            let response = self.call(&messages, tools, output).await?;
            // Tool calls decide, not finish_reason: some compatible servers report "stop" with
            // tool calls.
            if response.tool_calls.is_empty() {
                return self.finish(response, messages, output).await;
            }
            tracing::debug!(iteration, calls = response.tool_calls.len(), "model called tools");
            messages.push(response.to_message());
            let results = self.run_tools(&response.tool_calls, tools).await?;
            for (call, result) in response.tool_calls.iter().zip(results) {
                messages.push(Message::tool(call.id.clone(), result));
            }
        }
        let wanted: Vec<String> = messages
            .iter()
            .rev()
            .find(|m| !m.tool_calls.is_empty())
            .map(|m| m.tool_calls.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        tracing::warn!(
            agent = %self.agent.role,
            max_iter = self.agent.max_iter,
            tools = ?wanted,
            "agent stopped after max_iter tool-calling rounds while the model still wanted to call tools; asking for a final answer without tools (raise max_iter if the answer is cut short)"
        );
        messages.push(Message::user(FORCE_FINAL_ANSWER));
        let response = self.call(&messages, &[], output).await?;
        // A model that answers the forced call with more tool calls (some servers let it even
        // when no tools are offered) has no answer: say it was the limit, not an empty reply.
        let no_content = response.content.as_deref().is_none_or(|c| c.trim().is_empty());
        if !response.tool_calls.is_empty() && no_content {
            let mut tools: Vec<String> = Vec::new();
            for call in &response.tool_calls {
                if !tools.contains(&call.name) {
                    tools.push(call.name.clone());
                }
            }
            return Err(LlmError::MaxIterReached {
                agent: self.agent.role.to_owned(),
                max_iter: self.agent.max_iter,
                tools,
            });
        }
        self.finish(response, messages, output).await
    }

    async fn finish(
        &self,
        response: ChatResponse,
        mut messages: Vec<Message>,
        output: Option<&OutputSchema>,
    ) -> Result<Answer, LlmError> {
        let Some(schema) = output else {
            return match response.content.filter(|c| !c.trim().is_empty()) {
                Some(raw) => Ok(Answer { raw, json: None }),
                None => match response.refusal {
                    Some(refusal) => Err(LlmError::Refusal { refusal }),
                    None => Err(LlmError::NoFinalAnswer { agent: self.agent.role.to_owned() }),
                },
            };
        };
        let raw = response.content.clone().unwrap_or_default();
        let reason = match schema.check(&response)? {
            Ok(json) => return Ok(Answer { raw, json: Some(json) }),
            Err(reason) => reason,
        };
        tracing::debug!(schema = schema.name(), %reason, "final answer does not fit the schema, asking for a repair");
        messages.push(Message::assistant(raw));
        messages.push(schema.repair_message(&reason));
        let second = self.call(&messages, &[], output).await?;
        let raw = second.content.clone().unwrap_or_default();
        match schema.check(&second)? {
            Ok(json) => Ok(Answer { raw, json: Some(json) }),
            Err(reason) => Err(schema.invalid(&raw, reason)),
        }
    }

    /// Runs one reply's tool calls and returns their results in call order.
    ///
    /// Ordinary tools run concurrently, each journaled as one effect; the journal calls are made
    /// in call order so a replay lines up. Delegations run one after another afterwards, because
    /// each is a whole agent execution with several journaled calls of its own that must not
    /// interleave.
    async fn run_tools(&self, calls: &[ToolCall], tools: &[ToolEntry]) -> Result<Vec<String>, LlmError> {
        enum Plan<'t> {
            Done(String),
            Leaf(&'t Arc<dyn Tool>, Value),
            Delegate(&'t Arc<dyn Delegate>, Value),
        }
        let plans: Vec<Plan<'_>> = calls
            .iter()
            .map(|call| {
                let Some(entry) = tools.iter().find(|t| t.name() == call.name) else {
                    let names: Vec<&str> = tools.iter().map(ToolEntry::name).collect();
                    return Plan::Done(format!(
                        "Error: there is no tool named `{}`. Available tools: {}. Call one of these, or give your final answer.",
                        call.name,
                        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                    ));
                };
                match parse_arguments(&call.arguments) {
                    Err(e) => Plan::Done(format!(
                        "Error: the arguments for tool `{}` are not valid JSON ({e}). Call the tool again with a JSON object that matches its schema.",
                        call.name
                    )),
                    Ok(args) => match entry {
                        ToolEntry::User(tool) => Plan::Leaf(tool, json!({ "arguments": args })),
                        ToolEntry::Delegate(d) => Plan::Delegate(d, args),
                    },
                }
            })
            .collect();

        let mut results: Vec<Option<String>> =
            plans.iter().map(|p| if let Plan::Done(text) = p { Some(text.clone()) } else { None }).collect();

        let mut leaf_index = Vec::new();
        let mut leaf_runs = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            if let Plan::Leaf(tool, request) = plan {
                leaf_index.push(i);
                let (journal, call) = (self.journal, &calls[i]);
                // Announced only when the tool really runs: a replayed call streams nothing.
                let effect = async move {
                    let arguments = request.get("arguments").unwrap_or(&Value::Null);
                    journal.stream_tool_call(tool.name(), &call.id, arguments);
                    let span = tracing::info_span!(
                        "tool_call",
                        otel.name = %format_args!("execute_tool {}", tool.name()),
                        gen_ai.operation.name = "execute_tool",
                        gen_ai.tool.name = tool.name(),
                        gen_ai.tool.call.id = call.id.as_str(),
                    );
                    let result = run_tool(tool, request).instrument(span).await;
                    if let Ok(value) = &result {
                        journal.stream_tool_result(tool.name(), &call.id, value);
                    }
                    result
                };
                leaf_runs.push(self.journal.record("tool", tool.name(), request, Box::pin(effect)));
            }
        }
        for (i, outcome) in leaf_index.into_iter().zip(join_all(leaf_runs).await) {
            let value = outcome.map_err(|e| LlmError::journal(&e))?;
            let text = match value {
                Value::String(s) => s,
                other => {
                    return Err(LlmError::ReplayMismatch {
                        kind: "tool".into(),
                        message: format!("expected the tool result text, found {other}"),
                    });
                }
            };
            results[i] = Some(text);
        }

        for (i, plan) in plans.iter().enumerate() {
            if let Plan::Delegate(delegation, args) = plan {
                results[i] = Some(delegation.call(self, args).await?);
            }
        }
        Ok(results.into_iter().map(Option::unwrap_or_default).collect())
    }
}

/// Models sometimes send `""` for a tool without parameters.
fn parse_arguments(text: &str) -> Result<Value, serde_json::Error> {
    if text.trim().is_empty() { Ok(json!({})) } else { serde_json::from_str(text) }
}

/// A tool's failure is the model's problem to solve, not the step's: it is returned (and
/// journaled) as the result text.
async fn run_tool(tool: &Arc<dyn Tool>, request: &Value) -> Result<Value, flow_core::Error> {
    let args = request.get("arguments").cloned().unwrap_or(Value::Null);
    tracing::debug!(tool = tool.name(), "calling tool");
    let text = match tool.call(args).await {
        Ok(text) => text,
        Err(ToolError::InvalidArguments(e)) => format!(
            "Error: the arguments do not fit the schema of tool `{}`: {e}. Call it again with arguments that match its schema.",
            tool.name()
        ),
        Err(e) => {
            tracing::debug!(tool = tool.name(), error = %e, "tool failed");
            format!("Error executing tool `{}`: {e}", tool.name())
        }
    };
    Ok(Value::String(text))
}
