//! The HTTP transport under async-openai: plain reqwest, no retries, and every non-2xx response
//! turned into an [`HttpFailure`] that keeps the status, the `Retry-After` delay and the body.
//!
//! async-openai on its own loses the status of a 4xx whose body is not OpenAI-shaped (vLLM sends
//! `"code": 400` as a number) and drops all headers; catching the response here, below its
//! parser, keeps both.

use std::time::{Duration, SystemTime};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// A non-2xx response, carried through async-openai as `OpenAIError::Boxed`.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}: {message}")]
pub(crate) struct HttpFailure {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) kind: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) param: Option<String>,
    pub(crate) message: String,
}

/// A tower service that sends each request once.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = BoxFuture<'static, Result<reqwest::Response, OpenAIError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers(), SystemTime::now());
            let body = response.bytes().await.map_err(OpenAIError::Reqwest)?;
            Err(OpenAIError::Boxed(Box::new(parse_failure(status, retry_after, &body))))
        })
    }
}

/// Reads `retry-after-ms` (OpenAI's millisecond variant) or `Retry-After` as seconds or as an
/// HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn string_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Understands OpenAI's `{"error":{...}}`, vLLM's flat `{"object":"error",...}`, `{"error":"..."}`,
/// FastAPI's `{"detail":...}` and plain text.
pub(crate) fn parse_failure(status: u16, retry_after: Option<Duration>, body: &[u8]) -> HttpFailure {
    let mut failure = HttpFailure { status, retry_after, kind: None, code: None, param: None, message: String::new() };
    let text = String::from_utf8_lossy(body);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let object = match &parsed {
        Some(Value::Object(map)) => match map.get("error") {
            Some(inner @ Value::Object(_)) => Some(inner),
            Some(Value::String(message)) => {
                failure.message.clone_from(message);
                None
            }
            _ => parsed.as_ref(),
        },
        _ => None,
    };
    if let Some(obj) = object {
        failure.kind = string_field(obj, "type");
        failure.code = string_field(obj, "code");
        failure.param = string_field(obj, "param");
        if let Some(m) = string_field(obj, "message").or_else(|| string_field(obj, "detail")) {
            failure.message = m;
        }
    }
    if failure.message.is_empty() {
        failure.message = crate::openai::excerpt(&text);
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_vllm_and_text_bodies() {
        let f = parse_failure(
            429,
            None,
            br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            (f.kind.as_deref(), f.code.as_deref(), f.message.as_str()),
            (Some("requests"), Some("rate_limit_exceeded"), "slow down")
        );
        let f = parse_failure(400, None, br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#);
        assert_eq!((f.code.as_deref(), f.message.as_str()), (Some("400"), "bad"));
        let f = parse_failure(502, None, b"<html>bad gateway</html>");
        assert_eq!(f.message, "<html>bad gateway</html>");
        let f = parse_failure(422, None, br#"{"detail":"missing model"}"#);
        assert_eq!(f.message, "missing model");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
