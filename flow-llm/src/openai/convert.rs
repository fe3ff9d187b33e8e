//! Translation between this crate's chat types and async-openai's, and from async-openai's errors
//! to [`LlmError`].

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::chat as oa;
use flow_core::TokenUsage;

use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat, Role, ToolCall, ToolChoice};
use crate::error::LlmError;
use crate::openai::excerpt;
use crate::openai::transport::HttpFailure;
use crate::stream::{ChatDelta, ToolCallDelta};

pub(crate) fn request(req: &ChatRequest, model: &str, stream: bool) -> oa::CreateChatCompletionRequest {
    let tools: Vec<oa::ChatCompletionTools> = req
        .tools
        .iter()
        .map(|t| {
            oa::ChatCompletionTools::Function(oa::ChatCompletionTool {
                function: oa::FunctionObject {
                    name: t.name.clone(),
                    description: Some(t.description.clone()),
                    parameters: Some(t.parameters.clone()),
                    strict: t.strict.then_some(true),
                },
            })
        })
        .collect();
    #[allow(deprecated)] // `seed` is deprecated upstream but still honoured by OpenAI and vLLM.
    let seed = req.seed;
    let mut out = oa::CreateChatCompletionRequest {
        model: model.to_owned(),
        messages: req.messages.iter().map(message).collect(),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice: req.tool_choice.as_ref().map(tool_choice),
        parallel_tool_calls: req.parallel_tool_calls,
        response_format: req.response_format.as_ref().map(response_format),
        temperature: req.temperature,
        top_p: req.top_p,
        max_completion_tokens: req.max_tokens,
        stop: (!req.stop.is_empty()).then(|| oa::StopConfiguration::StringArray(req.stop.clone())),
        stream_options: stream
            .then_some(oa::ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None }),
        ..Default::default()
    };
    #[allow(deprecated)]
    {
        out.seed = seed;
    }
    out
}

fn message(m: &Message) -> oa::ChatCompletionRequestMessage {
    let text = m.content.clone().unwrap_or_default();
    match m.role {
        Role::System => oa::ChatCompletionRequestMessage::System(oa::ChatCompletionRequestSystemMessage {
            content: oa::ChatCompletionRequestSystemMessageContent::Text(text),
            name: None,
        }),
        Role::User => oa::ChatCompletionRequestMessage::User(oa::ChatCompletionRequestUserMessage {
            content: oa::ChatCompletionRequestUserMessageContent::Text(text),
            name: None,
        }),
        Role::Assistant => {
            let calls: Vec<oa::ChatCompletionMessageToolCalls> = m
                .tool_calls
                .iter()
                .map(|c| {
                    oa::ChatCompletionMessageToolCalls::Function(oa::ChatCompletionMessageToolCall {
                        id: c.id.clone(),
                        function: oa::FunctionCall { name: c.name.clone(), arguments: c.arguments.clone() },
                    })
                })
                .collect();
            oa::ChatCompletionRequestMessage::Assistant(oa::ChatCompletionRequestAssistantMessage {
                content: m.content.clone().map(oa::ChatCompletionRequestAssistantMessageContent::Text),
                tool_calls: (!calls.is_empty()).then_some(calls),
                ..Default::default()
            })
        }
        Role::Tool => oa::ChatCompletionRequestMessage::Tool(oa::ChatCompletionRequestToolMessage {
            content: oa::ChatCompletionRequestToolMessageContent::Text(text),
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
        }),
    }
}

fn tool_choice(c: &ToolChoice) -> oa::ChatCompletionToolChoiceOption {
    match c {
        ToolChoice::Auto => oa::ChatCompletionToolChoiceOption::Mode(oa::ToolChoiceOptions::Auto),
        ToolChoice::None => oa::ChatCompletionToolChoiceOption::Mode(oa::ToolChoiceOptions::None),
        ToolChoice::Required => oa::ChatCompletionToolChoiceOption::Mode(oa::ToolChoiceOptions::Required),
        ToolChoice::Function(name) => oa::ChatCompletionToolChoiceOption::Function(oa::ChatCompletionNamedToolChoice {
            function: oa::FunctionName { name: name.clone() },
        }),
    }
}

fn response_format(f: &ResponseFormat) -> oa::ResponseFormat {
    match f {
        ResponseFormat::Text => oa::ResponseFormat::Text,
        ResponseFormat::JsonObject => oa::ResponseFormat::JsonObject,
        ResponseFormat::JsonSchema { name, description, schema, strict } => oa::ResponseFormat::JsonSchema {
            json_schema: oa::ResponseFormatJsonSchema {
                description: description.clone(),
                name: name.clone(),
                schema: schema.clone(),
                strict: Some(*strict),
            },
        },
    }
}

fn finish_reason(f: oa::FinishReason) -> FinishReason {
    match f {
        oa::FinishReason::Stop => FinishReason::Stop,
        oa::FinishReason::Length => FinishReason::Length,
        oa::FinishReason::ToolCalls => FinishReason::ToolCalls,
        oa::FinishReason::ContentFilter => FinishReason::ContentFilter,
        oa::FinishReason::FunctionCall => FinishReason::FunctionCall,
    }
}

fn usage(u: &oa::CompletionUsage) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u64::from(u.prompt_tokens),
        completion_tokens: u64::from(u.completion_tokens),
        total_tokens: u64::from(u.total_tokens),
    }
}

pub(crate) fn response(resp: oa::CreateChatCompletionResponse) -> Result<ChatResponse, LlmError> {
    let usage = resp.usage.as_ref().map(usage);
    // Only the first choice is used: requests never ask for n > 1.
    let choice = resp.choices.into_iter().next().ok_or(LlmError::EmptyResponse)?;
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| match c {
            oa::ChatCompletionMessageToolCalls::Function(f) => {
                ToolCall::new(f.id, f.function.name, f.function.arguments)
            }
            oa::ChatCompletionMessageToolCalls::Custom(c) => {
                ToolCall::new(c.id, c.custom_tool.name, c.custom_tool.input)
            }
        })
        .collect();
    Ok(ChatResponse {
        id: resp.id,
        model: resp.model,
        content: choice.message.content,
        refusal: choice.message.refusal,
        tool_calls,
        finish_reason: choice.finish_reason.map(finish_reason),
        usage,
    })
}

pub(crate) fn chunk(chunk: oa::CreateChatCompletionStreamResponse) -> ChatDelta {
    let mut delta = ChatDelta {
        id: Some(chunk.id),
        model: Some(chunk.model),
        usage: chunk.usage.as_ref().map(usage),
        ..Default::default()
    };
    if let Some(choice) = chunk.choices.into_iter().next() {
        delta.content = choice.delta.content;
        delta.refusal = choice.delta.refusal;
        delta.finish_reason = choice.finish_reason.map(finish_reason);
        delta.tool_calls = choice
            .delta
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|t| ToolCallDelta {
                index: t.index,
                id: t.id,
                name: t.function.as_ref().and_then(|f| f.name.clone()),
                arguments: t.function.and_then(|f| f.arguments).unwrap_or_default(),
            })
            .collect();
    }
    delta
}

/// Where the error happened matters: a body that does not parse mid-stream is usually an error
/// event (`data: {"error":...}`), not a compatibility problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Request,
    Stream,
}

pub(crate) fn error(err: OpenAIError, base_url: &str, timeout: Duration, phase: Phase) -> LlmError {
    match err {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpFailure>() {
            Ok(f) => LlmError::Api {
                status: f.status,
                kind: f.kind,
                code: f.code,
                param: f.param,
                message: f.message,
                retry_after: f.retry_after,
            },
            Err(other) => LlmError::Transport { message: other.to_string() },
        },
        OpenAIError::Reqwest(e) => reqwest_error(&e, base_url, timeout),
        OpenAIError::ApiError(api) => LlmError::Api {
            status: api.status_code.as_u16(),
            kind: api.api_error.r#type,
            code: api.api_error.code,
            param: api.api_error.param,
            message: api.api_error.message,
            retry_after: None,
        },
        OpenAIError::JSONDeserialize(e, body) => match phase {
            Phase::Stream => LlmError::Stream { message: stream_error_text(&body).unwrap_or_else(|| e.to_string()) },
            Phase::Request => LlmError::MalformedResponse { message: e.to_string(), body: excerpt(&body) },
        },
        OpenAIError::StreamError(e) => LlmError::Stream { message: e.to_string() },
        OpenAIError::InvalidArgument(m) => LlmError::InvalidRequest(m),
        other => LlmError::Transport { message: other.to_string() },
    }
}

fn stream_error_text(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?;
    Some(e.get("message").and_then(|m| m.as_str()).map_or_else(|| e.to_string(), str::to_owned))
}

pub(crate) fn reqwest_error(e: &reqwest::Error, base_url: &str, timeout: Duration) -> LlmError {
    // Display of reqwest errors omits the cause ("error sending request"); the chain says why.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        LlmError::Timeout { after: timeout }
    } else if e.is_connect() {
        LlmError::Connect { url: base_url.to_owned(), message }
    } else {
        LlmError::Transport { message }
    }
}
