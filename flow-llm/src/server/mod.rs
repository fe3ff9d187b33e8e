//! [`TestServer`]: a local OpenAI-compatible HTTP server for tests, examples and users' own tests.
//!
//! It listens on an ephemeral loopback port and speaks the real chat completions wire format:
//! completions, tool calls, structured JSON, OpenAI-shaped errors with `Retry-After`, malformed
//! bodies, injected latency, SSE streams ending in `data: [DONE]`, and streams whose connection
//! is cut. It records every request and counts hits and concurrent requests.
//!
//! It answers where a real client looks: `POST /v1/chat/completions`, `POST /v1/embeddings`,
//! `GET /v1/models` and `GET /v1/models/{id}`, with request bodies up to [`MAX_BODY_BYTES`]. Any
//! other path, a wrong method, or a body too large gets OpenAI's error JSON
//! (`{"error": {"message", "type", "param", "code"}}`) with the matching status, and so does a
//! request for what the server does not serve (`n` above 1, `logprobs`): a 400 that names the
//! parameter, never a reply that silently ignores it.
//!
//! Replies come from, in order: the FIFO queue ([`TestServer::enqueue`]), the first matching
//! rule ([`TestServer::when`]), the fallback responder ([`TestServer::respond_with`]); a request
//! nothing answers gets a 400 `no_scripted_reply` error that says so. Rules are what examples
//! running many flows at once use, since the order of their requests is not deterministic.
//!
//! ```
//! use flow_llm::{ChatRequest, Llm, Match, Message, Reply, TestServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start().await?;
//! server.when(Match::last_user_contains("capital of France")).reply(Reply::text("Paris"));
//! server.when(Match::any()).reply(Reply::text("I don't know"));
//!
//! let llm = server.llm_builder().build()?;
//! let r = llm.chat(ChatRequest::new(vec![Message::user("What is the capital of France?")])).await?;
//! assert_eq!(r.content.as_deref(), Some("Paris"));
//! assert_eq!(server.hits(), 1);
//! assert_eq!(server.requests()[0].chat.model.as_deref(), Some("test-model"));
//! # Ok(()) }
//! ```

mod embeddings;
mod hold;
mod reply;
mod wire;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use self::hold::Hold;
pub use self::reply::Reply;
use self::reply::ReplyKind;
use crate::chat::{ChatRequest, ChatResponse, FinishReason, ToolCall};
use crate::matching::Match;
use crate::openai::OpenAiLlmBuilder;

/// The model [`TestServer::llm_builder`] configures, and the one named in responses when a
/// request names none.
///
/// ```
/// assert_eq!(flow_llm::server::TEST_MODEL, "test-model");
/// ```
pub const TEST_MODEL: &str = "test-model";
/// The API key [`TestServer::llm_builder`] configures.
///
/// ```
/// assert!(flow_llm::server::TEST_API_KEY.starts_with("sk-"));
/// ```
pub const TEST_API_KEY: &str = "sk-test-key";
/// The largest request body the server reads, 64 MiB: long prompts and base64 images fit. A
/// larger body gets a 413 in OpenAI's error JSON.
///
/// ```
/// assert!(flow_llm::server::MAX_BODY_BYTES >= 20 * 1024 * 1024);
/// ```
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A request the server received.
///
/// ```
/// # use flow_llm::{ChatRequest, Llm, Message, Reply, TestServer};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestServer::start().await?;
/// server.enqueue(Reply::text("ok"));
/// server.llm_builder().build()?.chat(ChatRequest::new(vec![Message::user("hi")])).await?;
/// let req = &server.requests()[0];
/// assert_eq!(req.body["messages"][0]["role"], "user");
/// assert_eq!(req.bearer_token(), Some(flow_llm::server::TEST_API_KEY));
/// assert!(!req.stream);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RecordedRequest {
    /// 1-based number of the request among all chat completion requests.
    pub index: usize,
    /// The JSON body as received.
    pub body: Value,
    /// The body read as a [`ChatRequest`].
    pub chat: ChatRequest,
    /// Whether it asked for a stream.
    pub stream: bool,
    /// Whether it asked for a usage chunk at the end of the stream.
    pub include_usage: bool,
    authorization: Option<String>,
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("index", &self.index)
            .field("body", &self.body)
            .field("stream", &self.stream)
            .field("authorization", &self.authorization.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl RecordedRequest {
    /// The bearer token the client sent.
    ///
    /// ```
    /// # use flow_llm::{ChatRequest, Llm, Message, Reply, TestServer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestServer::start().await?;
    /// server.enqueue(Reply::text("ok"));
    /// server.llm_builder().api_key("sk-abc").build()?.chat(ChatRequest::new(vec![Message::user("hi")])).await?;
    /// assert_eq!(server.requests()[0].bearer_token(), Some("sk-abc"));
    /// # Ok(()) }
    /// ```
    pub fn bearer_token(&self) -> Option<&str> {
        self.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "))
    }
}

type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

struct Rule {
    when: Match,
    remaining: Option<usize>,
    respond: Responder,
}

struct Script {
    queue: VecDeque<Reply>,
    rules: Vec<Rule>,
    fallback: Option<Responder>,
    latency: Duration,
    api_key: Option<String>,
    models: Vec<String>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    script: Mutex<Script>,
    hits: AtomicUsize,
    model_hits: AtomicUsize,
    embedding_hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        // Every update is a single push/pop/assignment, so a poisoned script is still consistent.
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts a request as in flight until dropped (for streams: until the last chunk is sent).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The local OpenAI-compatible server. It stops when dropped.
///
/// ```
/// use flow_llm::{Reply, TestServer};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = TestServer::start().await?;
/// assert!(server.base_url().starts_with("http://127.0.0.1:"));
/// assert!(server.base_url().ends_with("/v1"));
/// server.enqueue(Reply::rate_limited(1));
/// server.enqueue(Reply::text("after the rate limit"));
/// # Ok(()) }
/// ```
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer").field("base_url", &self.base_url()).field("hits", &self.hits()).finish()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Streams in progress would keep a graceful shutdown waiting; a test server has nothing
        // to finish.
        self.task.abort();
    }
}

/// Adds a rule: see [`TestServer::when`].
///
/// ```
/// # use flow_llm::{Match, Reply, TestServer};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = TestServer::start().await?;
/// let rule = server.when(Match::model("gpt-4.1")).times(2);
/// rule.reply(Reply::text("from the big model"));
/// # Ok(()) }
/// ```
#[must_use = "a rule is added only by `.reply(..)` or `.respond(..)`"]
pub struct When<'a> {
    server: &'a TestServer,
    when: Match,
    times: Option<usize>,
}

impl fmt::Debug for When<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("When").field("when", &self.when).field("times", &self.times).finish()
    }
}

impl When<'_> {
    /// Uses the rule at most `n` times.
    ///
    /// ```
    /// # use flow_llm::{Match, Reply, TestServer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = TestServer::start().await?;
    /// server.when(Match::any()).times(1).reply(Reply::server_error());
    /// server.when(Match::any()).reply(Reply::text("recovered"));
    /// # Ok(()) }
    /// ```
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Answers matching requests with `reply`.
    ///
    /// ```
    /// # use flow_llm::{Match, Reply, TestServer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = TestServer::start().await?;
    /// server.when(Match::system_contains("Writer")).reply(Reply::text("draft"));
    /// # Ok(()) }
    /// ```
    pub fn reply(self, reply: Reply) {
        self.respond(move |_| reply.clone());
    }

    /// Answers matching requests with what `respond` computes from the request.
    ///
    /// ```
    /// # use flow_llm::{Match, Reply, TestServer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = TestServer::start().await?;
    /// server.when(Match::any()).respond(|req| Reply::text(format!("echo: {}", req.chat.last_user_text().unwrap_or(""))));
    /// # Ok(()) }
    /// ```
    pub fn respond(self, respond: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) {
        self.server.shared.script().rules.push(Rule {
            when: self.when,
            remaining: self.times,
            respond: Arc::new(respond),
        });
    }
}

impl TestServer {
    /// Starts a server on `127.0.0.1` with an ephemeral port.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = flow_llm::TestServer::start().await?;
    /// assert_ne!(server.addr().port(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn start() -> std::io::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                rules: Vec::new(),
                fallback: None,
                latency: Duration::ZERO,
                api_key: None,
                models: vec![TEST_MODEL.to_owned()],
                requests: Vec::new(),
            }),
            hits: AtomicUsize::new(0),
            model_hits: AtomicUsize::new(0),
            embedding_hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            // A wildcard, since served model names often hold a slash (`meta-llama/Llama-3.1-8B`).
            .route("/v1/models/{*id}", get(model))
            .route("/v1/embeddings", post(embeddings::embeddings))
            .method_not_allowed_fallback(wrong_method)
            .fallback(unknown_route)
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "test server stopped with an error");
            }
        });
        tracing::debug!(%addr, "test server listening");
        Ok(TestServer { addr, shared, shutdown: Some(tx), task })
    }

    /// The socket address.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert!(s.addr().ip().is_loopback());
    /// # Ok(()) }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for clients, `http://127.0.0.1:<port>/v1`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert_eq!(s.base_url(), format!("http://{}/v1", s.addr()));
    /// # Ok(()) }
    /// ```
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// An [`OpenAiLlm`](crate::OpenAiLlm) builder pointed at this server, with key
    /// [`TEST_API_KEY`] and model [`TEST_MODEL`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let s = flow_llm::TestServer::start().await?;
    /// let llm = s.llm_builder().build()?;
    /// assert_eq!(llm.base_url(), s.base_url());
    /// # Ok(()) }
    /// ```
    pub fn llm_builder(&self) -> OpenAiLlmBuilder {
        crate::OpenAiLlm::builder().base_url(self.base_url()).api_key(TEST_API_KEY).model(TEST_MODEL)
    }

    /// Queues a reply; queued replies are used first, in order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// s.enqueue(flow_llm::Reply::text("first"));
    /// # Ok(()) }
    /// ```
    pub fn enqueue(&self, reply: Reply) {
        self.shared.script().queue.push_back(reply);
    }

    /// Starts a rule for requests matching `when`; finish it with [`When::reply`] or
    /// [`When::respond`]. Rules are tried in the order added.
    ///
    /// ```
    /// # use flow_llm::{Match, Reply, TestServer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = TestServer::start().await?;
    /// s.when(Match::has_tool_results()).reply(Reply::text("final answer"));
    /// s.when(Match::any()).reply(Reply::tool_call("search", serde_json::json!({"q": "x"})));
    /// # Ok(()) }
    /// ```
    pub fn when(&self, when: Match) -> When<'_> {
        When { server: self, when, times: None }
    }

    /// Answers every request that no queued reply or rule covers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// s.respond_with(|req| flow_llm::Reply::text(format!("request #{}", req.index)));
    /// # Ok(()) }
    /// ```
    pub fn respond_with(&self, respond: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) {
        self.shared.script().fallback = Some(Arc::new(respond));
    }

    /// Delays every chat completion response by `latency`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// s.set_latency(std::time::Duration::from_millis(10));
    /// # Ok(()) }
    /// ```
    pub fn set_latency(&self, latency: Duration) {
        self.shared.script().latency = latency;
    }

    /// Requires `Authorization: Bearer <key>`; other requests get OpenAI's 401.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// s.require_api_key(flow_llm::server::TEST_API_KEY);
    /// # Ok(()) }
    /// ```
    pub fn require_api_key(&self, key: impl Into<String>) {
        self.shared.script().api_key = Some(key.into());
    }

    /// The models `GET /v1/models` lists and `GET /v1/models/{id}` finds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// s.set_models(["gpt-4o-mini", "gpt-4.1"]);
    /// # Ok(()) }
    /// ```
    pub fn set_models<S: Into<String>>(&self, models: impl IntoIterator<Item = S>) {
        self.shared.script().models = models.into_iter().map(Into::into).collect();
    }

    /// Every chat completion request received, in arrival order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert!(s.requests().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script().requests.clone()
    }

    /// Chat completion requests received (including rejected ones).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert_eq!(s.hits(), 0);
    /// # Ok(()) }
    /// ```
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// `GET /v1/models` requests received.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert_eq!(s.model_list_hits(), 0);
    /// # Ok(()) }
    /// ```
    pub fn model_list_hits(&self) -> usize {
        self.shared.model_hits.load(Ordering::SeqCst)
    }

    /// `POST /v1/embeddings` requests received. The server answers them with deterministic
    /// vectors from [`HashEmbedder`](flow_core::memory::HashEmbedder) (of the requested
    /// `dimensions`, 384 by default), so memory recalls by meaning in offline tests.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert_eq!(s.embedding_requests(), 0);
    /// # Ok(()) }
    /// ```
    pub fn embedding_requests(&self) -> usize {
        self.shared.embedding_hits.load(Ordering::SeqCst)
    }

    /// Chat completion requests being answered right now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert_eq!(s.in_flight(), 0);
    /// # Ok(()) }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most chat completion requests that were in flight at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// assert_eq!(s.max_in_flight(), 0);
    /// # Ok(()) }
    /// ```
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Clears the recorded requests and the counters; the script stays.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let s = flow_llm::TestServer::start().await?;
    /// s.reset_counters();
    /// assert_eq!(s.hits(), 0);
    /// # Ok(()) }
    /// ```
    pub fn reset_counters(&self) {
        self.shared.script().requests.clear();
        self.shared.hits.store(0, Ordering::SeqCst);
        self.shared.model_hits.store(0, Ordering::SeqCst);
        self.shared.embedding_hits.store(0, Ordering::SeqCst);
        self.shared.max_in_flight.store(self.in_flight(), Ordering::SeqCst);
    }
}

/// An error in OpenAI's shape: what every refusal of this server answers, streamed or not.
pub(super) fn error_json(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    error_response_on(status, message, kind, code, None)
}

/// [`error_response`] naming the request parameter at fault.
fn error_response_on(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    let body = error_json(message, kind, code, param);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Reads a request body of up to [`MAX_BODY_BYTES`]; a larger one is answered with a 413 in
/// OpenAI's shape rather than axum's plain-text one.
pub(super) async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("flows test server: the request body could not be read in full ({e}); it takes at most {MAX_BODY_BYTES} bytes"),
            "invalid_request_error",
            Some("request_too_large"),
        )
    })
}

fn model_object(id: &str) -> Value {
    json!({ "id": id, "object": "model", "created": wire::CREATED, "owned_by": "flows-test-server" })
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    shared.model_hits.fetch_add(1, Ordering::SeqCst);
    let models = shared.script().models.clone();
    let data: Vec<Value> = models.iter().map(|m| model_object(m)).collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

async fn model(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if shared.script().models.contains(&id) {
        return axum::Json(model_object(&id)).into_response();
    }
    error_response(
        StatusCode::NOT_FOUND,
        &format!("The model `{id}` does not exist or you do not have access to it."),
        "invalid_request_error",
        Some("model_not_found"),
    )
}

/// OpenAI's answer to a path it does not serve.
async fn unknown_route(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!(
            "Invalid URL ({method} {}); the flows test server serves POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models and GET /v1/models/{{id}}",
            uri.path()
        ),
        "invalid_request_error",
        None,
    )
}

/// OpenAI's answer to a known path with the wrong method; axum adds the `Allow` header.
async fn wrong_method(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Invalid method for URL ({method} {}); the Allow header lists the methods it takes", uri.path()),
        "invalid_request_error",
        None,
    )
}

/// A 400 for a parameter the server would otherwise ignore: `n` above 1 (it serves one choice)
/// and `logprobs` / `top_logprobs` (scripted replies carry no token probabilities).
fn unsupported(body: &Value) -> Option<Response> {
    let refuse = |param: &str, message: String| {
        error_response_on(
            StatusCode::BAD_REQUEST,
            &message,
            "invalid_request_error",
            Some("unsupported_parameter"),
            Some(param),
        )
    };
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(n) if n.as_u64().is_some_and(|n| n > 1) => {
            return Some(refuse(
                "n",
                format!(
                    "flows test server: 'n' = {n} is not supported; it serves one choice per request, so leave 'n' out or set it to 1"
                ),
            ));
        }
        Some(n) => return Some(refuse("n", format!("{n} is not valid for 'n': it must be an integer of at least 1"))),
    }
    if body.get("logprobs").is_some_and(|v| v.as_bool() != Some(false) && !v.is_null()) {
        return Some(refuse(
            "logprobs",
            "flows test server: 'logprobs' is not supported; scripted replies carry no token log probabilities, so leave it out or set it to false".to_owned(),
        ));
    }
    if body.get("top_logprobs").is_some_and(|v| !v.is_null()) {
        return Some(refuse(
            "top_logprobs",
            "flows test server: 'top_logprobs' is not supported; scripted replies carry no token log probabilities"
                .to_owned(),
        ));
    }
    None
}

/// Decides the reply: queue, then rules, then the fallback.
fn pick(shared: &Shared, request: &RecordedRequest) -> Option<Reply> {
    let responder = {
        let mut script = shared.script();
        if let Some(reply) = script.queue.pop_front() {
            return Some(reply);
        }
        let rule =
            script.rules.iter_mut().find(|r| r.remaining != Some(0) && r.when.matches(&request.chat)).map(|rule| {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                Arc::clone(&rule.respond)
            });
        rule.or_else(|| script.fallback.clone())?
    };
    // User code runs outside the lock.
    Some(responder(request))
}

async fn chat_completions(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let index = shared.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let guard = InFlight::enter(&shared);
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let stream = value.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage =
        value.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let request =
        RecordedRequest { index, chat: wire::parse_request(&value), body: value, stream, include_usage, authorization };
    let (required_key, latency) = {
        let mut script = shared.script();
        script.requests.push(request.clone());
        (script.api_key.clone(), script.latency)
    };
    if let Some(key) = required_key
        && request.bearer_token() != Some(key.as_str())
    {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    if let Some(refused) = unsupported(&request.body) {
        return refused;
    }
    if request.chat.messages.is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "'messages' must be a non-empty array.",
            "invalid_request_error",
            None,
        );
    }
    let Some(reply) = pick(&shared, &request) else {
        let last = request.chat.messages.last().map(|m| m.text_or_empty().to_owned()).unwrap_or_default();
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "flows test server: no scripted reply matches this request (last message: {last:?}); add one with enqueue, when(..) or respond_with"
            ),
            "invalid_request_error",
            Some("no_scripted_reply"),
        );
    };
    // A test's `Duration::MAX` means "never answer", not an overflow panic in the handler.
    let wait = latency.saturating_add(reply.delay);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    render(reply, &request, index, guard)
}

fn message_response(reply: &Reply, request: &RecordedRequest, index: usize) -> Option<ChatResponse> {
    let ReplyKind::Message { content, refusal, tool_calls } = &reply.kind else {
        return None;
    };
    let tool_calls: Vec<ToolCall> = tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCall::new(c.id.clone().unwrap_or_else(|| format!("call_{index}_{i}")), &c.name, &c.arguments))
        .collect();
    let finish = reply.finish_reason.clone().unwrap_or(if tool_calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    });
    let mut response = ChatResponse {
        id: format!("chatcmpl-{index}"),
        model: request.chat.model.clone().unwrap_or_else(|| TEST_MODEL.to_owned()),
        content: content.clone(),
        refusal: refusal.clone(),
        tool_calls,
        finish_reason: Some(finish),
        usage: None,
    };
    response.usage = Some(reply.usage.unwrap_or_else(|| crate::usage::estimate(&request.chat, &response)));
    Some(response)
}

fn with_headers(mut response: Response, reply: &Reply, index: usize) -> Response {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("req_{index}")) {
        h.insert("x-request-id", v);
    }
    h.insert("openai-processing-ms", HeaderValue::from_static("1"));
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            h.insert(n, v);
        }
    }
    response
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn render(reply: Reply, request: &RecordedRequest, index: usize, guard: InFlight) -> Response {
    let response = match &reply.kind {
        ReplyKind::Message { .. } => {
            let Some(message) = message_response(&reply, request, index) else {
                return error_response(StatusCode::INTERNAL_SERVER_ERROR, "unreachable", "server_error", None);
            };
            let id = message.id.clone();
            if request.stream {
                let scripted = reply.deltas.as_deref();
                let events = wire::stream_events(&id, &message, request.include_usage, true, scripted);
                // The end waits from the chunk after the last piece of the reply.
                let hold = reply
                    .hold
                    .clone()
                    .map(|hold| (wire::stream_events(&id, &message, false, false, scripted).len(), hold));
                sse(events, End::Done, reply.chunk_delay, guard, hold)
            } else {
                axum::Json(wire::completion(&id, &message)).into_response()
            }
        }
        ReplyKind::Error { status: code, body } => {
            (status(*code), [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
        }
        ReplyKind::Raw { status: code, content_type, body } => {
            (status(*code), [(header::CONTENT_TYPE, content_type.clone())], body.clone()).into_response()
        }
        ReplyKind::StreamCut { content } => {
            let partial = ChatResponse {
                id: format!("chatcmpl-{index}"),
                model: request.chat.model.clone().unwrap_or_else(|| TEST_MODEL.to_owned()),
                content: Some(content.clone()),
                ..Default::default()
            };
            if request.stream {
                let events = wire::stream_events(&partial.id, &partial, false, false, None);
                sse(events, End::Cut, reply.chunk_delay, guard, None)
            } else {
                let full = wire::completion(&partial.id, &partial).to_string();
                let half = full.char_indices().map(|(i, _)| i).nth(full.chars().count() / 2).unwrap_or(0);
                let frames = vec![full[..half].to_owned()];
                let mut response =
                    Response::new(Body::from_stream(frames_then(frames, End::Cut, Duration::ZERO, guard, None)));
                response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
        }
        ReplyKind::StreamError { content, message } => {
            let partial = ChatResponse {
                id: format!("chatcmpl-{index}"),
                model: request.chat.model.clone().unwrap_or_else(|| TEST_MODEL.to_owned()),
                content: Some(content.clone()),
                ..Default::default()
            };
            if request.stream {
                let events = wire::stream_events(&partial.id, &partial, false, false, None);
                let error = error_json(message, "server_error", None, None);
                sse(events, End::Error(error), reply.chunk_delay, guard, None)
            } else {
                error_response(StatusCode::INTERNAL_SERVER_ERROR, message, "server_error", None)
            }
        }
    };
    with_headers(response, &reply, index)
}

/// How a scripted stream ends.
enum End {
    /// `data: [DONE]`, as OpenAI ends a stream.
    Done,
    /// An error event, then the end of the body.
    Error(Value),
    /// The connection drops without ending the body, as when a proxy or the network fails.
    Cut,
}

/// The error that makes hyper abort the connection instead of ending the body.
fn cut_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "flows test server: scripted cut")
}

/// An SSE response: one `data:` event per chunk, then the `end`. With `hold`, the frames from
/// that index on wait until it is released.
fn sse(events: Vec<Value>, end: End, chunk_delay: Duration, guard: InFlight, hold: Option<(usize, Hold)>) -> Response {
    let mut frames: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    match &end {
        End::Done => frames.push("data: [DONE]\n\n".to_owned()),
        End::Error(error) => frames.push(format!("data: {error}\n\n")),
        End::Cut => {}
    }
    let mut response = Response::new(Body::from_stream(frames_then(frames, end, chunk_delay, guard, hold)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The body stream: the frames, `chunk_delay` apart, then for [`End::Cut`] an error that drops
/// the connection. The in-flight guard lives until the stream is done.
fn frames_then(
    frames: Vec<String>,
    end: End,
    chunk_delay: Duration,
    guard: InFlight,
    hold: Option<(usize, Hold)>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let cut = matches!(end, End::Cut);
    let frames = frames.into_iter().enumerate();
    futures::stream::unfold((frames, Some(guard), true, hold), move |(mut frames, guard, first, hold)| async move {
        // The guard is taken once the frames are out, so the stream ends after the cut.
        let guard = guard?;
        let Some((index, frame)) = frames.next() else {
            if !cut {
                return None;
            }
            // Let hyper flush the frames already written, so the client sees them before
            // the connection drops.
            tokio::task::yield_now().await;
            drop(guard);
            return Some((Err(cut_error()), (frames, None, false, hold)));
        };
        if !first && !chunk_delay.is_zero() {
            tokio::time::sleep(chunk_delay).await;
        }
        if let Some((at, hold)) = &hold
            && index == *at
        {
            hold.released().await;
        }
        Some((Ok(Bytes::from(frame)), (frames, Some(guard), false, hold)))
    })
}
