//! `POST /v1/embeddings`: deterministic vectors from flow-core's
//! [`HashEmbedder`](flow_core::memory::HashEmbedder), so memory recalls by meaning offline.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flow_core::memory::HashEmbedder;
use serde_json::{Value, json};

use super::{Shared, error_response, read_body};

/// The most dimensions a request may ask for (OpenAI's largest model has 3072).
const MAX_DIMENSIONS: u64 = 4096;

pub(super) async fn embeddings(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    shared.embedding_hits.fetch_add(1, Ordering::SeqCst);
    let required_key = shared.script().api_key.clone();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(key) = required_key
        && bearer.as_deref() != Some(key.as_str())
    {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return invalid("We could not parse the JSON body of your request.");
    };
    let texts: Vec<String> = match value.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(Value::Array(items)) if items.is_empty() => return invalid("'input' must not be empty."),
        Some(_) => {
            return invalid(
                "flows test server: 'input' must be a string or an array of strings (token arrays are not served)",
            );
        }
        None => return invalid("you must provide an 'input' parameter"),
    };
    if value.get("encoding_format").and_then(Value::as_str) == Some("base64") {
        return invalid("flows test server: encoding_format 'base64' is not served; ask for 'float'");
    }
    let dimensions = match value.get("dimensions") {
        None | Some(Value::Null) => HashEmbedder::DEFAULT_DIMENSIONS,
        Some(d) => match d.as_u64().filter(|d| (1..=MAX_DIMENSIONS).contains(d)) {
            Some(d) => d as usize,
            None => return invalid(&format!("'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}")),
        },
    };
    let model = value.get("model").and_then(Value::as_str).unwrap_or(HashEmbedder::MODEL).to_owned();
    let embedder = HashEmbedder::new(dimensions);
    let mut tokens = 0usize;
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += text.split_whitespace().count().max(1);
            json!({ "object": "embedding", "index": index, "embedding": embedder.vector(text) })
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    });
    axum::Json(body).into_response()
}

fn invalid(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, message, "invalid_request_error", None)
}
