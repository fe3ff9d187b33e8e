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

/// The longest `Retry-After` read from a response: a server's larger value (up to `10^30`
/// seconds, or a date years ahead) is clamped to this, so every later conversion and comparison
/// stays in range. It is far above any sensible [`RetryPolicy::max_retry_after`], so a clamped
/// value still ends the call with [`LlmError::RetryAfterTooLong`](crate::LlmError).
///
/// [`RetryPolicy::max_retry_after`]: crate::RetryPolicy::max_retry_after
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads `retry-after-ms` (OpenAI's millisecond variant) or `Retry-After` as seconds (fractions
/// allowed) or as an HTTP date relative to `now`.
///
/// Values the server controls never panic here: a negative, NaN, infinite or unparseable value
/// is ignored (the caller falls back to its own backoff), a huge one is clamped to
/// [`MAX_RETRY_AFTER`], a date in the past means "now". A garbled `retry-after-ms` falls back to
/// `Retry-After`.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| seconds(v, 1000.0)) {
        return Some(ms);
    }
    let value = text("retry-after")?;
    if let Some(secs) = seconds(value, 1.0) {
        return Some(secs);
    }
    match httpdate::parse_http_date(value) {
        Ok(at) => Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER)),
        Err(_) => {
            // A number that did not pass (negative, NaN) is not a date either: one debug line
            // covers both.
            tracing::debug!(retry_after = value, "ignoring a Retry-After that is neither a delay nor an HTTP date");
            None
        }
    }
}

/// `value / per_second` seconds, clamped to [`MAX_RETRY_AFTER`]; `None` for anything that is not
/// a finite, non-negative number.
fn seconds(value: &str, per_second: f64) -> Option<Duration> {
    let n = value.parse::<f64>().ok()?;
    if !n.is_finite() || n < 0.0 {
        tracing::debug!(value, "ignoring a negative or non-finite retry delay");
        return None;
    }
    // `try_from` rejects what does not fit in a Duration (it never panics, unlike
    // `from_secs_f64`); anything that large is over the clamp anyway.
    Some(Duration::try_from_secs_f64(n / per_second).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
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

    /// Every value a server may send, including the ones that made `Duration::from_secs_f64`
    /// panic.
    #[test]
    fn hostile_retry_after_values_are_clamped_or_ignored() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let read = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            retry_after(&h, now)
        };
        for huge in ["1e30", "18446744073709551616", "1e308", "99999999999999999999999999999"] {
            assert_eq!(read("retry-after", huge), Some(MAX_RETRY_AFTER), "{huge}");
            assert_eq!(read("retry-after-ms", huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        assert_eq!(read("retry-after", "1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(read("retry-after-ms", "0.5"), Some(Duration::from_micros(500)));
        for ignored in ["-1", "-0.5", "-1e30", "NaN", "inf", "-inf", "infinity", "soon", "", "1s", "0x10"] {
            assert_eq!(read("retry-after", ignored), None, "{ignored:?}");
            assert_eq!(read("retry-after-ms", ignored), None, "{ignored:?}");
        }
        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        assert_eq!(read("retry-after", &past), Some(Duration::ZERO));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(400 * 24 * 60 * 60));
        assert_eq!(read("retry-after", &far), Some(MAX_RETRY_AFTER));
        // A garbled millisecond header falls back to the standard one.
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", "-5".parse().unwrap());
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
    }
}
