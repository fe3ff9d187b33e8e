//! [`OpenAiLlm`]: an [`Llm`] for any OpenAI-compatible endpoint (OpenAI, Azure's `/openai/v1`,
//! Groq, vLLM, Ollama, this crate's `TestServer`), built on async-openai.
//!
//! ```no_run
//! use flow_llm::OpenAiLlm;
//!
//! // OPENAI_API_KEY, OPENAI_BASE_URL (default https://api.openai.com/v1), OPENAI_MODEL.
//! let llm = OpenAiLlm::from_env()?;
//! # Ok::<(), flow_llm::LlmError>(())
//! ```

mod convert;
mod retry;
mod transport;

use std::fmt;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};

pub use self::retry::RetryPolicy;
pub(crate) use self::transport::MAX_RETRY_AFTER;
use crate::chat::{ChatRequest, ChatResponse};
use crate::error::LlmError;
use crate::limit::ConcurrencyLimit;
use crate::llm::Llm;
use crate::stream::ChatStream;

/// The model used when neither the builder nor `OPENAI_MODEL` names one.
///
/// ```
/// use flow_llm::Llm;
/// let llm = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:9/v1").build().unwrap();
/// assert_eq!(llm.model(), flow_llm::openai::DEFAULT_MODEL);
/// ```
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// The endpoint used when neither the builder nor `OPENAI_BASE_URL` names one.
///
/// ```
/// assert!(flow_llm::openai::DEFAULT_BASE_URL.ends_with("/v1"));
/// ```
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The per-call timeout unless configured.
///
/// ```
/// assert_eq!(flow_llm::openai::DEFAULT_TIMEOUT.as_secs(), 120);
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The first bytes of a body, for error messages (never the whole body: it may be large or hold
/// personal data).
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A client for an OpenAI-compatible chat completions endpoint.
///
/// One retry owner ([`RetryPolicy`], honouring `Retry-After`), a per-call timeout, and a
/// [`ConcurrencyLimit`] shared by every client in the process unless another is given. The API
/// key is kept as a secret: it is sent as a bearer token and appears in no `Debug` output or log.
///
/// ```
/// use std::time::Duration;
/// use flow_llm::{ChatRequest, Llm, Message, OpenAiLlm, Reply, TestServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestServer::start().await?;
/// server.enqueue(Reply::text("Bonjour"));
/// let llm = OpenAiLlm::builder()
///     .base_url(server.base_url())
///     .api_key("sk-test")
///     .model("gpt-4o-mini")
///     .temperature(0.0)
///     .timeout(Duration::from_secs(10))
///     .build()?;
/// let reply = llm.chat(ChatRequest::new(vec![Message::user("Say hello in French")])).await?;
/// assert_eq!(reply.content.as_deref(), Some("Bonjour"));
/// assert!(!format!("{llm:?}").contains("sk-test"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct OpenAiLlm {
    client: Client<OpenAIConfig>,
    base_url: String,
    model: String,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    timeout: Duration,
    retry: RetryPolicy,
    limit: ConcurrencyLimit,
}

impl fmt::Debug for OpenAiLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiLlm")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("concurrency", &self.limit.permits())
            .finish_non_exhaustive()
    }
}

impl OpenAiLlm {
    /// A builder with the defaults ([`DEFAULT_BASE_URL`], [`DEFAULT_MODEL`], no key); nothing is
    /// read from the environment.
    ///
    /// ```
    /// let llm = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:9/v1").build().unwrap();
    /// assert_eq!(llm.base_url(), "http://127.0.0.1:9/v1");
    /// ```
    pub fn builder() -> OpenAiLlmBuilder {
        OpenAiLlmBuilder::default()
    }

    /// A client configured from `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_MODEL`,
    /// `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID`.
    ///
    /// ```no_run
    /// let llm = flow_llm::OpenAiLlm::from_env()?;
    /// # Ok::<(), flow_llm::LlmError>(())
    /// ```
    pub fn from_env() -> Result<Self, LlmError> {
        OpenAiLlmBuilder::from_env().build()
    }

    /// The endpoint, ending in `/v1` (or the provider's equivalent).
    ///
    /// ```
    /// let llm = flow_llm::OpenAiLlm::builder().base_url("http://localhost:11434/v1/").build().unwrap();
    /// assert_eq!(llm.base_url(), "http://localhost:11434/v1");
    /// ```
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The concurrency limit this client observes.
    ///
    /// ```
    /// let llm = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:9/v1").build().unwrap();
    /// assert!(llm.concurrency_limit().same_as(&flow_llm::ConcurrencyLimit::shared()));
    /// ```
    pub fn concurrency_limit(&self) -> &ConcurrencyLimit {
        &self.limit
    }

    /// A copy of this client that uses another model (same connection pool, limit and key).
    ///
    /// ```
    /// use flow_llm::Llm;
    /// let llm = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:9/v1").build().unwrap();
    /// assert_eq!(llm.with_model("gpt-4.1").model(), "gpt-4.1");
    /// ```
    pub fn with_model(&self, model: impl Into<String>) -> Self {
        OpenAiLlm { model: model.into(), ..self.clone() }
    }

    fn prepare(&self, mut request: ChatRequest) -> (String, ChatRequest) {
        let model = request.model.take().unwrap_or_else(|| self.model.clone());
        request.temperature = request.temperature.or(self.temperature);
        request.max_tokens = request.max_tokens.or(self.max_tokens);
        request.top_p = request.top_p.or(self.top_p);
        request.seed = request.seed.or(self.seed);
        (model, request)
    }

    /// When the attempt starting now must have its whole reply; `None` for a timeout too large
    /// to add to the clock (nothing could wait that long anyway).
    fn deadline(&self) -> Option<tokio::time::Instant> {
        tokio::time::Instant::now().checked_add(self.timeout)
    }

    /// An error that arrives once the attempt's deadline has passed is its timeout, whatever the
    /// transport calls it.
    fn map_error(
        &self,
        err: async_openai::error::OpenAIError,
        phase: convert::Phase,
        deadline: Option<tokio::time::Instant>,
    ) -> LlmError {
        if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
            return LlmError::Timeout { after: self.timeout };
        }
        convert::error(err, &self.base_url, self.timeout, phase)
    }

    /// `POST /embeddings` with this client's timeout, retry policy and concurrency limit (for
    /// [`OpenAiEmbedder`](crate::OpenAiEmbedder)).
    pub(crate) async fn embeddings(
        &self,
        request: async_openai::types::embeddings::CreateEmbeddingRequest,
    ) -> Result<async_openai::types::embeddings::CreateEmbeddingResponse, LlmError> {
        let model = request.model.clone();
        let mut attempt = 0;
        loop {
            let outcome = {
                let _permit = self.limit.acquire().await;
                let deadline = self.deadline();
                let embeddings = self.client.embeddings();
                let call = embeddings.create(request.clone());
                match deadline {
                    Some(at) => match tokio::time::timeout_at(at, call).await {
                        Ok(outcome) => outcome.map_err(|e| self.map_error(e, convert::Phase::Request, deadline)),
                        Err(_) => Err(LlmError::Timeout { after: self.timeout }),
                    },
                    None => call.await.map_err(|e| self.map_error(e, convert::Phase::Request, None)),
                }
            };
            match outcome {
                Ok(response) => return Ok(response),
                Err(err) => self.backoff(attempt, err, &model).await?,
            }
            attempt += 1;
        }
    }

    /// Sleeps before the next attempt, or hands back the error that ends the call.
    async fn backoff(&self, attempt: u32, err: LlmError, model: &str) -> Result<(), LlmError> {
        let delay = match self.retry.next(attempt, &err) {
            retry::Next::Retry(delay) => delay,
            retry::Next::GiveUp => return Err(err),
            retry::Next::WaitTooLong(asked) => return Err(err.retry_after_too_long(asked, self.retry.max_retry_after)),
        };
        tracing::warn!(model, attempt = attempt + 1, ?delay, status = err.status(), error = %err, "LLM call failed, retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Llm for OpenAiLlm {
    fn model(&self) -> &str {
        &self.model
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let (model, request) = self.prepare(request);
        let wire = convert::request(&request, &model, false);
        let mut attempt = 0;
        loop {
            let outcome = {
                // The permit covers the HTTP exchange only, not the backoff sleep, so waiting
                // callers can use the endpoint while this one backs off.
                let _permit = self.limit.acquire().await;
                let deadline = self.deadline();
                let chat = self.client.chat();
                let call = chat.create(wire.clone());
                match deadline {
                    Some(at) => match tokio::time::timeout_at(at, call).await {
                        Ok(outcome) => outcome.map_err(|e| self.map_error(e, convert::Phase::Request, deadline)),
                        Err(_) => Err(LlmError::Timeout { after: self.timeout }),
                    },
                    None => call.await.map_err(|e| self.map_error(e, convert::Phase::Request, None)),
                }
            };
            let err = match outcome {
                Ok(resp) => {
                    tracing::debug!(model = %model, attempt, "LLM call succeeded");
                    return convert::response(resp);
                }
                Err(err) => err,
            };
            self.backoff(attempt, err, &model).await?;
            attempt += 1;
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError> {
        let (model, request) = self.prepare(request);
        let wire = convert::request(&request, &model, true);
        let mut attempt = 0;
        loop {
            let permit = self.limit.acquire().await;
            let deadline = self.deadline();
            let chat = self.client.chat();
            let opened = match deadline {
                Some(at) => tokio::time::timeout_at(at, chat.create_stream(wire.clone())).await.ok(),
                None => Some(chat.create_stream(wire.clone()).await),
            };
            let err = match opened {
                None => LlmError::Timeout { after: self.timeout },
                Some(Ok(stream)) => {
                    let (base_url, timeout) = (self.base_url.clone(), self.timeout);
                    // The permit lives as long as the stream: the request is in flight until
                    // the last chunk arrives.
                    let chunks = stream
                        .map(move |item| {
                            let _held = &permit;
                            item.map(convert::chunk)
                                .map_err(|e| convert::error(e, &base_url, timeout, convert::Phase::Stream))
                        })
                        .boxed();
                    return Ok(until_deadline(chunks, deadline, self.timeout));
                }
                Some(Err(e)) => self.map_error(e, convert::Phase::Request, deadline),
            };
            drop(permit);
            self.backoff(attempt, err, &model).await?;
            attempt += 1;
        }
    }
}

/// Ends `stream` with [`LlmError::Timeout`] once `deadline` passes.
///
/// reqwest's own timeout cuts a stalled body too, but async-openai turns that error into text
/// ("error decoding response body") on the way, so the stream would report a transport failure.
/// The deadline here starts before the request is sent, so it runs out no later than reqwest's;
/// an error that still arrives first but after the deadline is the same timeout.
fn until_deadline(stream: ChatStream, deadline: Option<tokio::time::Instant>, after: Duration) -> ChatStream {
    let timed_out = move || deadline.is_some_and(|at| tokio::time::Instant::now() >= at);
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        let item = match deadline {
            Some(at) => match tokio::time::timeout_at(at, stream.next()).await {
                Ok(item) => item,
                Err(_) => return Some((Err(LlmError::Timeout { after }), None)),
            },
            None => stream.next().await,
        };
        match item? {
            Err(_) if timed_out() => Some((Err(LlmError::Timeout { after }), None)),
            item => Some((item, Some(stream))),
        }
    })
    .boxed()
}

/// Configures an [`OpenAiLlm`].
///
/// ```
/// use std::time::Duration;
/// use flow_llm::{ConcurrencyLimit, OpenAiLlm, RetryPolicy};
///
/// let llm = OpenAiLlm::builder()
///     .base_url("http://localhost:11434/v1")
///     .api_key("ollama")
///     .model("llama3.2")
///     .temperature(0.1)
///     .max_tokens(512)
///     .timeout(Duration::from_secs(30))
///     .retry(RetryPolicy::default().max_retries(5))
///     .concurrency(ConcurrencyLimit::new(4))
///     .build()?;
/// assert_eq!(llm.concurrency_limit().permits(), 4);
/// # Ok::<(), flow_llm::LlmError>(())
/// ```
#[derive(Clone)]
pub struct OpenAiLlmBuilder {
    base_url: String,
    api_key: Option<SecretString>,
    model: String,
    org_id: Option<String>,
    project_id: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    limit: Option<ConcurrencyLimit>,
}

impl fmt::Debug for OpenAiLlmBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiLlmBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for OpenAiLlmBuilder {
    fn default() -> Self {
        OpenAiLlmBuilder {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            model: DEFAULT_MODEL.to_owned(),
            org_id: None,
            project_id: None,
            temperature: None,
            max_tokens: None,
            top_p: None,
            seed: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            limit: None,
        }
    }
}

impl OpenAiLlmBuilder {
    /// A builder filled from the process environment (see [`OpenAiLlm::from_env`]).
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlmBuilder::from_env();
    /// # let _ = b;
    /// ```
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// A builder filled from variables looked up by `lookup`: `OPENAI_API_KEY`,
    /// `OPENAI_BASE_URL`, `OPENAI_MODEL`, `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID`. Empty values
    /// count as unset.
    ///
    /// ```
    /// use flow_llm::{Llm, OpenAiLlmBuilder};
    /// let llm = OpenAiLlmBuilder::from_vars(|name| match name {
    ///     "OPENAI_BASE_URL" => Some("http://127.0.0.1:8000/v1".into()),
    ///     "OPENAI_API_KEY" => Some("sk-local".into()),
    ///     "OPENAI_MODEL" => Some("qwen2.5".into()),
    ///     _ => None,
    /// })
    /// .build()?;
    /// assert_eq!(llm.model(), "qwen2.5");
    /// # Ok::<(), flow_llm::LlmError>(())
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut b = OpenAiLlmBuilder::default();
        if let Some(url) = get("OPENAI_BASE_URL") {
            b.base_url = url;
        }
        if let Some(model) = get("OPENAI_MODEL") {
            b.model = model;
        }
        b.api_key = get("OPENAI_API_KEY").map(SecretString::from);
        b.org_id = get("OPENAI_ORG_ID");
        b.project_id = get("OPENAI_PROJECT_ID");
        b
    }

    /// The endpoint, including `/v1`.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:8000/v1");
    /// # let _ = b;
    /// ```
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The API key (kept secret: never logged, redacted in `Debug`).
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().api_key("sk-...");
    /// assert!(!format!("{b:?}").contains("sk-"));
    /// ```
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }

    /// The default model; agents and requests may name another.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().model("gpt-4.1-mini");
    /// # let _ = b;
    /// ```
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The OpenAI organization header.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().org_id("org-1");
    /// # let _ = b;
    /// ```
    pub fn org_id(mut self, id: impl Into<String>) -> Self {
        self.org_id = Some(id.into());
        self
    }

    /// The OpenAI project header.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().project_id("proj-1");
    /// # let _ = b;
    /// ```
    pub fn project_id(mut self, id: impl Into<String>) -> Self {
        self.project_id = Some(id.into());
        self
    }

    /// Default temperature for requests that set none.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().temperature(0.0);
    /// # let _ = b;
    /// ```
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Default reply token limit for requests that set none.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().max_tokens(256);
    /// # let _ = b;
    /// ```
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Default nucleus sampling for requests that set none.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().top_p(0.9);
    /// # let _ = b;
    /// ```
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Default seed for requests that set none.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().seed(42);
    /// # let _ = b;
    /// ```
    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The per-call timeout (connect, send, and the whole reply, streamed or not).
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().timeout(std::time::Duration::from_secs(20));
    /// # let _ = b;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connection timeout.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().connect_timeout(std::time::Duration::from_secs(2));
    /// # let _ = b;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The retry policy for 429, 5xx and connection failures.
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().retry(flow_llm::RetryPolicy::none());
    /// # let _ = b;
    /// ```
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The concurrency limit; by default the process-wide [`ConcurrencyLimit::shared`].
    ///
    /// ```
    /// let b = flow_llm::OpenAiLlm::builder().concurrency(flow_llm::ConcurrencyLimit::new(8));
    /// # let _ = b;
    /// ```
    pub fn concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Builds the client.
    ///
    /// Fails when the base URL is not http(s), or when it is OpenAI's own endpoint and no key
    /// was given.
    ///
    /// ```
    /// let err = flow_llm::OpenAiLlm::builder().build().unwrap_err();
    /// assert!(err.to_string().contains("OPENAI_API_KEY"));
    /// ```
    pub fn build(self) -> Result<OpenAiLlm, LlmError> {
        let base_url = self.base_url.trim().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "the LLM base URL {base_url:?} is not an http(s) URL; set OPENAI_BASE_URL to e.g. https://api.openai.com/v1"
            )));
        }
        // Without a TLS feature reqwest would fail each call with a puzzling "scheme is not http".
        #[cfg(not(any(feature = "native-tls", feature = "rustls")))]
        if base_url.starts_with("https://") {
            return Err(LlmError::Config(format!(
                "flow-llm was built without TLS, so it cannot reach {base_url}; enable its feature `native-tls` (the default) or `rustls`"
            )));
        }
        if self.api_key.is_none() && base_url.contains("api.openai.com") {
            return Err(LlmError::Config(
                "OPENAI_API_KEY is not set; export it (or pass `.api_key(..)`), or point OPENAI_BASE_URL at a local OpenAI-compatible server".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| LlmError::Config(format!("could not build the HTTP client: {e}")))?;
        let mut config = OpenAIConfig::new().with_api_base(&base_url);
        // Local servers need no key, but async-openai always sends the header; an empty bearer
        // token is what they expect.
        config = config.with_api_key(self.api_key.as_ref().map(|k| k.expose_secret().to_owned()).unwrap_or_default());
        config = config.with_org_id(self.org_id.unwrap_or_default());
        config = config.with_project_id(self.project_id.unwrap_or_default());
        let client = Client::with_config(config).with_http_service(transport::Transport { http });
        Ok(OpenAiLlm {
            client,
            base_url,
            model: self.model,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            top_p: self.top_p,
            seed: self.seed,
            timeout: self.timeout,
            retry: self.retry,
            limit: self.limit.unwrap_or_else(ConcurrencyLimit::shared),
        })
    }
}
