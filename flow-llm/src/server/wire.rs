//! The OpenAI chat completions wire format, server side: reading requests leniently (any client
//! may call the server) and writing responses and SSE chunks exactly as OpenAI does.

use flow_core::TokenUsage;
use serde_json::{Value, json};

use crate::chat::{
    ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec,
};

/// Fixed so that responses are repeatable in snapshots.
pub(crate) const CREATED: u64 = 1_741_569_952;
const FINGERPRINT: &str = "fp_flows_test";

fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""))
        }
        _ => None,
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

pub(crate) fn parse_request(body: &Value) -> ChatRequest {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let role = match m.get("role").and_then(Value::as_str) {
                        Some("system" | "developer") => Role::System,
                        Some("assistant") => Role::Assistant,
                        Some("tool" | "function") => Role::Tool,
                        _ => Role::User,
                    };
                    let tool_calls = m
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .map(|calls| {
                            calls
                                .iter()
                                .map(|c| {
                                    let f = c.get("function").cloned().unwrap_or(Value::Null);
                                    ToolCall::new(
                                        str_of(c, "id").unwrap_or_default(),
                                        str_of(&f, "name").unwrap_or_default(),
                                        str_of(&f, "arguments").unwrap_or_default(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Message {
                        role,
                        content: m.get("content").and_then(text_of),
                        tool_calls,
                        tool_call_id: str_of(m, "tool_call_id"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.get("function"))
                .map(|f| ToolSpec {
                    name: str_of(f, "name").unwrap_or_default(),
                    description: str_of(f, "description").unwrap_or_default(),
                    parameters: f.get("parameters").cloned().unwrap_or(Value::Null),
                    strict: f.get("strict").and_then(Value::as_bool).unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    let tool_choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(ToolChoice::Auto),
        Some(Value::String(s)) if s == "none" => Some(ToolChoice::None),
        Some(Value::String(s)) if s == "required" => Some(ToolChoice::Required),
        Some(v @ Value::Object(_)) => v.get("function").and_then(|f| str_of(f, "name")).map(ToolChoice::Function),
        _ => None,
    };
    let response_format = body.get("response_format").and_then(|rf| match rf.get("type").and_then(Value::as_str) {
        Some("text") => Some(ResponseFormat::Text),
        Some("json_object") => Some(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let js = rf.get("json_schema").cloned().unwrap_or(Value::Null);
            Some(ResponseFormat::JsonSchema {
                name: str_of(&js, "name").unwrap_or_default(),
                description: str_of(&js, "description"),
                schema: js.get("schema").cloned().unwrap_or(Value::Null),
                strict: js.get("strict").and_then(Value::as_bool).unwrap_or(false),
            })
        }
        _ => None,
    });
    let number = |key: &str| body.get(key).and_then(Value::as_f64);
    ChatRequest {
        model: str_of(body, "model"),
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: body.get("parallel_tool_calls").and_then(Value::as_bool),
        response_format,
        // The wire carries f64; requests only ever hold small sampling values.
        #[allow(clippy::cast_possible_truncation)]
        temperature: number("temperature").map(|t| t as f32),
        #[allow(clippy::cast_possible_truncation)]
        top_p: number("top_p").map(|t| t as f32),
        max_tokens: body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        seed: body.get("seed").and_then(Value::as_i64),
        stop: match body.get("stop") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        },
    }
}

pub(crate) fn finish_text(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
}

fn usage_json(u: &TokenUsage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(
                |c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }),
            )
            .collect(),
    )
}

/// A non-streaming `chat.completion` object.
pub(crate) fn completion(id: &str, r: &ChatResponse) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": r.content,
        "refusal": r.refusal,
        "annotations": [],
    });
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = tool_calls_json(&r.tool_calls);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": r.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": r.finish_reason.as_ref().map(finish_text),
        }],
        "usage": r.usage.as_ref().map(usage_json),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    })
}

fn chunk(id: &str, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        "usage": null,
    })
}

/// Splits text into stream-sized pieces at character boundaries (a few words each), the way
/// real streams deliver it.
pub(crate) fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for word in text.split_inclusive(' ') {
        current.push_str(word);
        if current.chars().count() >= 8 {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn halves(text: &str) -> (String, String) {
    let mid = text.char_indices().map(|(i, _)| i).nth(text.chars().count() / 2).unwrap_or(text.len());
    (text[..mid].to_owned(), text[mid..].to_owned())
}

/// The SSE events of a streamed reply, without the `data: ` framing. `finish` false leaves the
/// stream unfinished (no finish_reason, no usage) to imitate a cut connection.
pub(crate) fn stream_events(
    id: &str,
    r: &ChatResponse,
    include_usage: bool,
    finish: bool,
    scripted: Option<&[String]>,
) -> Vec<Value> {
    let model = r.model.as_str();
    let mut events = vec![chunk(id, model, json!({ "role": "assistant", "content": "", "refusal": null }), None)];
    if let Some(content) = &r.content {
        let pieces = scripted.map_or_else(|| pieces(content), <[String]>::to_vec);
        for piece in pieces {
            events.push(chunk(id, model, json!({ "content": piece }), None));
        }
    }
    if let Some(refusal) = &r.refusal {
        events.push(chunk(id, model, json!({ "refusal": refusal }), None));
    }
    for (index, call) in r.tool_calls.iter().enumerate() {
        events.push(chunk(
            id,
            model,
            json!({ "tool_calls": [{ "index": index, "id": call.id, "type": "function",
                                      "function": { "name": call.name, "arguments": "" } }] }),
            None,
        ));
        let (a, b) = halves(&call.arguments);
        for part in [a, b].into_iter().filter(|p| !p.is_empty()) {
            events.push(chunk(
                id,
                model,
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": part } }] }),
                None,
            ));
        }
    }
    if !finish {
        return events;
    }
    events.push(chunk(id, model, json!({}), r.finish_reason.as_ref().map(finish_text)));
    if include_usage && let Some(u) = &r.usage {
        let mut last = chunk(id, model, json!({}), None);
        last["choices"] = json!([]);
        last["usage"] = usage_json(u);
        events.push(last);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rejoin_to_the_text() {
        let text = "The quick brown fox jumps over the lazy dog — déjà vu.";
        assert!(pieces(text).len() > 2);
        assert_eq!(pieces(text).concat(), text);
        let (a, b) = halves("{\"city\":\"Zürich\"}");
        assert_eq!(format!("{a}{b}"), "{\"city\":\"Zürich\"}");
    }

    #[test]
    fn requests_parse_leniently() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "t", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "42"}
            ],
            "tool_choice": {"type": "function", "function": {"name": "t"}},
            "max_tokens": 5,
            "stop": "END"
        });
        let r = parse_request(&body);
        assert_eq!(r.system_text(), "be brief");
        assert_eq!(r.messages[1].tool_calls[0].name, "t");
        assert_eq!(r.messages[2].tool_call_id.as_deref(), Some("c"));
        assert_eq!(r.tool_choice, Some(ToolChoice::Function("t".into())));
        assert_eq!((r.max_tokens, r.stop), (Some(5), vec!["END".to_owned()]));
    }
}
