//! Tools from [MCP](https://modelcontextprotocol.io) servers (feature `mcp`), through the official
//! `rmcp` client: a server started as a child process speaking MCP on its stdin/stdout, or one
//! reached over streamable HTTP.
//!
//! [`McpServer::stdio`] or [`McpServer::http`], then [`McpServerBuilder::connect`], starts or
//! reaches the server, completes the MCP handshake and lists its tools. Each tool becomes an
//! [`McpTool`], a [`Tool`] like any other: its name, description and input JSON Schema go to the
//! model, and the agent's calls to it are journaled like native tool calls (a step run again gets
//! the recorded result without calling the server).
//!
//! Nothing the server does can hang or fail the agent: a call that gets no answer within the
//! call timeout, a server that exited or closed the connection (an HTTP server is pinged every
//! few seconds while a call is in flight, so its death is noticed before the timeout), a JSON-RPC
//! error and a reply that is not a tool result all come back to the model as the tool's error
//! result, and are logged with what to do. Only setting the connection up fails, with an
//! [`McpError`].
//!
//! The tool list is read once, at connection; a server that changes its tools later needs a new
//! connection. There is no reconnection either: once a server is gone its tools answer with
//! errors, and a step run again connects anew.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flow_llm::mcp::McpServer;
//! use flow_llm::{Agent, OpenAiLlm};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // A server run as a child process (its log lines on stderr go to `tracing` at debug level).
//! let files = McpServer::stdio("npx")
//!     .args(["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"])
//!     .name("files")
//!     .connect()
//!     .await?;
//! // A server reached over streamable HTTP, its tools renamed `crm_<tool>`.
//! let crm = McpServer::http("https://crm.example.com/mcp")
//!     .bearer_token(std::env::var("CRM_TOKEN")?)
//!     .tool_prefix("crm")
//!     .call_timeout(Duration::from_secs(20))
//!     .connect()
//!     .await?;
//!
//! let agent = Agent::builder("Researcher", "Answer from the documents", "Careful")
//!     .llm(Arc::new(OpenAiLlm::from_env()?))
//!     .tools(files.tools())
//!     .tool(crm.tool("crm_find_company")?)
//!     .build()?;
//! # let _ = agent;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flow_core::{Classify, ErrorClass};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest, ContentBlock, ErrorCode,
    Implementation, PingRequest, ResourceContents,
};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use rmcp::transport::{DynamicTransportError, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceError, ServiceExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStderr, Command};

use crate::tool::{Tool, ToolError};

/// How long a tool call may take unless [`McpServerBuilder::call_timeout`] says otherwise.
///
/// ```
/// assert_eq!(flow_llm::mcp::DEFAULT_CALL_TIMEOUT.as_secs(), 60);
/// ```
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long starting the server, the handshake and listing its tools may take unless
/// [`McpServerBuilder::connect_timeout`] says otherwise (a server fetched by `npx` or `uvx` on
/// first use may need most of it).
///
/// ```
/// assert_eq!(flow_llm::mcp::DEFAULT_CONNECT_TIMEOUT.as_secs(), 60);
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of the server's stderr kept to explain a failure.
const STDERR_TAIL_LINES: usize = 12;
/// Characters kept of one stderr line.
const STDERR_LINE_CHARS: usize = 400;
/// How often a long call to an HTTP server checks that the server is still there: a server that
/// dies mid-call does not always end the call's response stream, and the model should hear that
/// it died, not wait the whole call timeout to hear it was slow.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(3);
/// How long a failed connection waits for the rest of the child's stderr (it usually says why).
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// Setting up an MCP connection failed. Calls on a working connection never fail this way: their
/// failures are tool results for the model (see the [module docs](self)).
///
/// ```
/// use flow_core::{Classify, ErrorClass};
/// use flow_llm::mcp::McpError;
///
/// let e = McpError::NoSuchTool { server: "files".into(), tool: "rm".into(), available: vec!["read_file".into()] };
/// assert!(e.to_string().contains("read_file"));
/// assert_eq!(e.class(), ErrorClass::Permanent);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The server's command could not be started.
    #[error(
        "could not start the MCP server `{command}`: {reason}; check that the program is installed and on PATH (or give its full path), and that it is executable"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// What the operating system said.
        reason: String,
    },
    /// The server did not complete the MCP handshake or the tool listing.
    #[error("the MCP server {server} did not complete {stage}: {reason}; {}{}", handshake_hint(*http), stderr_suffix(stderr))]
    Handshake {
        /// The server: its name, command line or URL.
        server: String,
        /// `the MCP handshake` or `listing its tools`.
        stage: &'static str,
        /// What the MCP client said.
        reason: String,
        /// The last lines the server wrote to stderr (stdio servers).
        stderr: Vec<String>,
        /// Whether the server is reached over HTTP (its failures are often temporary).
        http: bool,
    },
    /// Starting the server, the handshake and the tool listing took longer than allowed.
    #[error(
        "the MCP server {server} was not ready within {after:?}; check that it is the right command or URL and that it answers, or raise `McpServerBuilder::connect_timeout` if it is slow to start{}",
        stderr_suffix(stderr)
    )]
    ConnectTimeout {
        /// The server: its name, command line or URL.
        server: String,
        /// The limit that elapsed.
        after: Duration,
        /// The last lines the server wrote to stderr (stdio servers).
        stderr: Vec<String>,
    },
    /// Two of the server's tools end up with the same name for the model.
    #[error(
        "the MCP server {server} has tools `{first}` and `{second}`, which both become `{name}` for the model (names are limited to 64 ASCII letters, digits, '_' or '-'); the server must rename one"
    )]
    ToolNameClash {
        /// The server.
        server: String,
        /// The name both map to.
        name: String,
        /// The first tool's name on the server.
        first: String,
        /// The second tool's name on the server.
        second: String,
    },
    /// A tool the server does not have was asked for.
    #[error("the MCP server {server} has no tool `{tool}`; it has: {}", list_or_none(available))]
    NoSuchTool {
        /// The server.
        server: String,
        /// The name asked for.
        tool: String,
        /// The names it has (as the model sees them).
        available: Vec<String>,
    },
    /// The configuration cannot work.
    #[error("invalid MCP server configuration: {0}")]
    Config(String),
}

fn stderr_suffix(stderr: &[String]) -> String {
    if stderr.is_empty() { String::new() } else { format!(". Its stderr ended with:\n    {}", stderr.join("\n    ")) }
}

fn handshake_hint(http: bool) -> &'static str {
    if http {
        "check the URL (the MCP endpoint, often ending in /mcp), that the server is running, and any token it needs"
    } else {
        "check that the command starts an MCP server on stdio, that it writes only MCP messages to stdout (logs go to stderr), and its arguments"
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() { "no tools".to_owned() } else { names.join(", ") }
}

impl Classify for McpError {
    fn class(&self) -> ErrorClass {
        match self {
            McpError::Handshake { http: true, .. } | McpError::ConnectTimeout { .. } => ErrorClass::Transient,
            McpError::Spawn { .. }
            | McpError::Handshake { http: false, .. }
            | McpError::ToolNameClash { .. }
            | McpError::NoSuchTool { .. }
            | McpError::Config(_) => ErrorClass::Permanent,
        }
    }
}

flow_core::classify_errors!(McpError);

/// Where the server is.
enum Endpoint {
    Stdio { program: OsString, args: Vec<OsString>, env: Vec<(OsString, OsString)>, dir: Option<PathBuf> },
    Http { url: String, token: Option<SecretString>, headers: Vec<(String, String)> },
}

/// Configures and opens an [`McpServer`] connection; from [`McpServer::stdio`] or
/// [`McpServer::http`].
///
/// ```
/// use std::time::Duration;
/// let b = flow_llm::mcp::McpServer::stdio("my-mcp-server")
///     .arg("--read-only")
///     .env("LOG_LEVEL", "warn")
///     .call_timeout(Duration::from_secs(10));
/// # let _ = b;
/// ```
pub struct McpServerBuilder {
    endpoint: Endpoint,
    name: Option<String>,
    prefix: Option<String>,
    call_timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for McpServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the environment, headers or token: they may hold secrets.
        f.debug_struct("McpServerBuilder").field("server", &self.label()).finish_non_exhaustive()
    }
}

impl McpServerBuilder {
    fn new(endpoint: Endpoint) -> Self {
        McpServerBuilder {
            endpoint,
            name: None,
            prefix: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Adds a command-line argument (stdio servers; ignored for HTTP).
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("uvx").arg("mcp-server-fetch");
    /// # let _ = b;
    /// ```
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        if let Endpoint::Stdio { args, .. } = &mut self.endpoint {
            args.push(arg.as_ref().to_owned());
        }
        self
    }

    /// Adds command-line arguments (stdio servers; ignored for HTTP).
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("npx").args(["-y", "@modelcontextprotocol/server-memory"]);
    /// # let _ = b;
    /// ```
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// Sets an environment variable of the server process (stdio servers; ignored for HTTP).
    /// The process otherwise inherits this process's environment.
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("github-mcp-server").env("GITHUB_TOKEN", "…");
    /// # let _ = b;
    /// ```
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        if let Endpoint::Stdio { env, .. } = &mut self.endpoint {
            env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        }
        self
    }

    /// The server process's working directory (stdio servers; ignored for HTTP).
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("./server").current_dir("/srv/tools");
    /// # let _ = b;
    /// ```
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        if let Endpoint::Stdio { dir: d, .. } = &mut self.endpoint {
            *d = Some(dir.into());
        }
        self
    }

    /// A bearer token sent as `Authorization: Bearer <token>` (HTTP servers; ignored for stdio).
    /// Kept out of `Debug` output and error messages.
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::http("https://mcp.example.com/mcp").bearer_token("secret");
    /// assert!(!format!("{b:?}").contains("secret"));
    /// ```
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        if let Endpoint::Http { token: t, .. } = &mut self.endpoint {
            *t = Some(SecretString::from(token.into()));
        }
        self
    }

    /// An HTTP header sent with every request (HTTP servers; ignored for stdio). A name or value
    /// that is not a valid header fails [`connect`](Self::connect).
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::http("https://mcp.example.com/mcp").header("x-tenant", "acme");
    /// # let _ = b;
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Endpoint::Http { headers, .. } = &mut self.endpoint {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// The server's name in logs, errors and the messages the model gets; the command line or
    /// URL (without its query) by default.
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("python").args(["-m", "crm_tools"]).name("crm");
    /// assert!(format!("{b:?}").contains("crm"));
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Offers the server's tools to the model as `<prefix>_<tool>`, so two servers with a tool of
    /// the same name can serve one agent. The server is still called with the tool's own name.
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::http("http://127.0.0.1:8000/mcp").tool_prefix("wiki");
    /// # let _ = b;
    /// ```
    pub fn tool_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long one tool call may take ([`DEFAULT_CALL_TIMEOUT`] unless set). A call that takes
    /// longer is cancelled (the server is told) and the model is told it timed out.
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("srv").call_timeout(std::time::Duration::from_secs(5));
    /// # let _ = b;
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How long starting the server, the handshake and listing its tools may take together
    /// ([`DEFAULT_CONNECT_TIMEOUT`] unless set).
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("srv").connect_timeout(std::time::Duration::from_secs(5));
    /// # let _ = b;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    fn label(&self) -> String {
        if let Some(name) = &self.name {
            return format!("`{name}`");
        }
        match &self.endpoint {
            Endpoint::Stdio { program, args, .. } => format!("`{}`", command_line(program, args)),
            Endpoint::Http { url, .. } => format!("at {}", url.split(['?', '#']).next().unwrap_or(url)),
        }
    }

    /// Starts (stdio) or reaches (HTTP) the server, completes the MCP handshake and lists its
    /// tools.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), flow_llm::mcp::McpError> {
    /// let server = flow_llm::mcp::McpServer::stdio("uvx").arg("mcp-server-time").connect().await?;
    /// assert!(!server.tool_names().is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<McpServer, McpError> {
        if self.call_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(McpError::Config(format!(
                "the timeouts of MCP server {} must be longer than zero",
                self.label()
            )));
        }
        if let Some(prefix) = &self.prefix
            && (prefix.is_empty() || !prefix.chars().all(valid_name_char))
        {
            return Err(McpError::Config(format!(
                "tool prefix {prefix:?} of MCP server {} is invalid: use ASCII letters, digits, '_' or '-'",
                self.label()
            )));
        }
        let label = self.label();
        let stderr = StderrTail::default();
        let http = matches!(self.endpoint, Endpoint::Http { .. });
        let setup = async {
            let service = match &self.endpoint {
                Endpoint::Stdio { program, args, env, dir } => {
                    let mut command = Command::new(program);
                    command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
                    if let Some(dir) = dir {
                        command.current_dir(dir);
                    }
                    let (transport, child_stderr) = TokioChildProcess::builder(command)
                        .stderr(Stdio::piped())
                        .spawn()
                        .map_err(|e| McpError::Spawn { command: command_line(program, args), reason: e.to_string() })?;
                    if let Some(child_stderr) = child_stderr {
                        stderr.follow(child_stderr, label.clone());
                    }
                    client_config().serve(transport).await
                }
                Endpoint::Http { url, token, headers } => {
                    let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                    if let Some(token) = token {
                        config = config.auth_header(token.expose_secret());
                    }
                    config = config.custom_headers(header_map(headers, &label)?);
                    client_config().serve(StreamableHttpClientTransport::from_config(config)).await
                }
            };
            let service = service.map_err(|e| McpError::Handshake {
                server: label.clone(),
                stage: "the MCP handshake",
                reason: init_reason(&e),
                stderr: Vec::new(),
                http,
            })?;
            let tools = service.peer().list_all_tools().await.map_err(|e| McpError::Handshake {
                server: label.clone(),
                stage: "listing its tools",
                reason: error_chain(&e),
                stderr: Vec::new(),
                http,
            })?;
            Ok::<_, McpError>((service, tools))
        };
        let outcome = tokio::time::timeout(self.connect_timeout, setup).await;
        let (service, listed) = match outcome {
            Ok(Ok(ready)) => ready,
            Ok(Err(mut e)) => {
                if let McpError::Handshake { stderr: lines, .. } = &mut e {
                    *lines = stderr.settled().await;
                }
                return Err(e);
            }
            Err(_) => {
                return Err(McpError::ConnectTimeout {
                    server: label,
                    after: self.connect_timeout,
                    stderr: stderr.settled().await,
                });
            }
        };

        let connection = Arc::new(Connection {
            label: label.clone(),
            peer: service.peer().clone(),
            service: Mutex::new(Some(service)),
            closed: AtomicBool::new(false),
            call_timeout: self.call_timeout,
            http,
            stderr,
        });
        let mut tools: Vec<McpTool> = Vec::with_capacity(listed.len());
        for tool in listed {
            let remote = tool.name.to_string();
            let name = model_name(self.prefix.as_deref(), &remote);
            if let Some(other) = tools.iter().find(|t| t.name == name) {
                return Err(McpError::ToolNameClash {
                    server: label,
                    name,
                    first: other.remote.clone(),
                    second: remote,
                });
            }
            let description = tool.description.as_deref().map(str::to_owned).or(tool.title.clone()).unwrap_or_default();
            tools.push(McpTool {
                connection: Arc::clone(&connection),
                name,
                remote,
                description,
                parameters: Value::Object((*tool.input_schema).clone()),
            });
        }
        if tools.is_empty() {
            tracing::warn!(server = %label, "the MCP server offers no tools");
        }
        tracing::debug!(server = %label, tools = ?tools.iter().map(|t| &t.name).collect::<Vec<_>>(), "MCP server connected");
        Ok(McpServer { connection, tools })
    }
}

fn client_config() -> ClientConfig {
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("flow-llm", env!("CARGO_PKG_VERSION")))
}

fn header_map(
    headers: &[(String, String)],
    label: &str,
) -> Result<HashMap<reqwest::header::HeaderName, reqwest::header::HeaderValue>, McpError> {
    let mut map = HashMap::new();
    for (name, value) in headers {
        let bad =
            |what: &str| McpError::Config(format!("header {name:?} of MCP server {label} is not a valid HTTP {what}"));
        let key = reqwest::header::HeaderName::try_from(name.as_str()).map_err(|_| bad("header name"))?;
        let mut value = reqwest::header::HeaderValue::try_from(value.as_str()).map_err(|_| bad("header value"))?;
        value.set_sensitive(true);
        map.insert(key, value);
    }
    Ok(map)
}

fn command_line(program: &OsStr, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The tool's name for the model: `^[a-zA-Z0-9_-]{1,64}$`, which MCP names need not be.
fn model_name(prefix: Option<&str>, remote: &str) -> String {
    let full = match prefix {
        Some(p) => format!("{p}_{remote}"),
        None => remote.to_owned(),
    };
    let mut name: String = full.chars().map(|c| if valid_name_char(c) { c } else { '_' }).take(64).collect();
    if name.is_empty() {
        name.push('_');
    }
    name
}

/// The text of an error and its sources.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

fn init_reason(error: &ClientInitializeError) -> String {
    match error {
        // Its Display is a Debug dump of the whole message.
        ClientInitializeError::ExpectedInitResponse(None) | ClientInitializeError::ExpectedInitResult(None) => {
            "the connection closed before the server answered `initialize`".to_owned()
        }
        ClientInitializeError::ExpectedInitResponse(Some(_)) | ClientInitializeError::ExpectedInitResult(Some(_)) => {
            "the server answered `initialize` with something other than an initialize result".to_owned()
        }
        ClientInitializeError::TransportError { error, context } => {
            format!("{} (when trying to {context})", transport_error(error))
        }
        other => error_chain(other),
    }
}

/// A transport error without the transport's type name, which says nothing to a reader.
fn transport_error(error: &DynamicTransportError) -> String {
    // The HTTP client's error does not name its cause (connection refused, DNS, TLS) as its
    // source, so the reader would not learn it.
    if let Some(StreamableHttpError::Client(e)) = error.error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return error_chain(e);
    }
    error_chain(error.error.as_ref())
}

/// The last lines a stdio server wrote to stderr, kept to explain its failures; every line is
/// also logged at debug level.
#[derive(Clone, Default)]
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl StderrTail {
    fn follow(&self, stderr: ChildStderr, label: String) {
        let lines = Arc::clone(&self.lines);
        let task = tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                tracing::debug!(target: "flow_llm::mcp", server = %label, "stderr: {line}");
                let line: String = line.chars().take(STDERR_LINE_CHARS).collect();
                let mut kept = lines.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() == STDERR_TAIL_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        *self.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The tail once the process has closed stderr, or after a short grace if it has not.
    async fn settled(&self) -> Vec<String> {
        let task = self.reader.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut task) = task
            && tokio::time::timeout(STDERR_GRACE, &mut task).await.is_err()
        {
            *self.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        self.snapshot()
    }
}

/// One live connection, shared by the server handle and its tools.
struct Connection {
    label: String,
    peer: rmcp::Peer<RoleClient>,
    /// Kept so the connection lives as long as a handle or tool does; taken by `close`.
    service: Mutex<Option<RunningService<RoleClient, ClientConfig>>>,
    closed: AtomicBool,
    call_timeout: Duration,
    http: bool,
    stderr: StderrTail,
}

impl Connection {
    /// Returns once the server is found gone. A stdio server's death closes its stdout, which
    /// ends the calls in flight by itself; an HTTP server is pinged. A ping that is refused or
    /// unanswered only means the server is busy.
    async fn gone(&self) -> ServiceError {
        if !self.http {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(LIVENESS_INTERVAL).await;
            let ping = self.peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
            match tokio::time::timeout(LIVENESS_INTERVAL, ping).await {
                Ok(Err(e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)))) => return e,
                _ => continue,
            }
        }
    }
}

/// A connection to one MCP server and the tools it offers. Cheap to clone (shared); the
/// connection (and a stdio server's process) ends when the last clone and the last of its tools
/// are dropped, or at [`close`](Self::close).
///
/// ```no_run
/// use flow_llm::mcp::McpServer;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let server = McpServer::http("http://127.0.0.1:8000/mcp").connect().await?;
/// tracing::info!(tools = ?server.tool_names(), "connected to {}", server.name());
/// server.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct McpServer {
    connection: Arc<Connection>,
    tools: Vec<McpTool>,
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServer")
            .field("server", &self.connection.label)
            .field("tools", &self.tool_names())
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// A server started as `program`, speaking MCP on its stdin and stdout. Add arguments and
    /// environment on the builder, then [`connect`](McpServerBuilder::connect).
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::stdio("uvx").arg("mcp-server-git");
    /// # let _ = b;
    /// ```
    pub fn stdio(program: impl AsRef<OsStr>) -> McpServerBuilder {
        McpServerBuilder::new(Endpoint::Stdio {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
        })
    }

    /// A server reached over MCP's streamable HTTP transport at `url` (the MCP endpoint, e.g.
    /// `http://127.0.0.1:8000/mcp`).
    ///
    /// ```
    /// let b = flow_llm::mcp::McpServer::http("http://127.0.0.1:8000/mcp");
    /// # let _ = b;
    /// ```
    pub fn http(url: impl Into<String>) -> McpServerBuilder {
        McpServerBuilder::new(Endpoint::Http { url: url.into(), token: None, headers: Vec::new() })
    }

    /// The server's name in logs and messages: the one given to
    /// [`McpServerBuilder::name`], or its command line or URL, quoted.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), flow_llm::mcp::McpError> {
    /// let s = flow_llm::mcp::McpServer::stdio("srv").name("crm").connect().await?;
    /// assert_eq!(s.name(), "`crm`");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.connection.label
    }

    /// The names the model sees for the server's tools, in the server's order.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), flow_llm::mcp::McpError> {
    /// let s = flow_llm::mcp::McpServer::stdio("srv").tool_prefix("crm").connect().await?;
    /// assert!(s.tool_names().iter().all(|n| n.starts_with("crm_")));
    /// # Ok(()) }
    /// ```
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name.as_str()).collect()
    }

    /// All the server's tools, ready for [`AgentBuilder::tools`](crate::AgentBuilder::tools).
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = flow_llm::mcp::McpServer::stdio("srv").connect().await?;
    /// let agent = flow_llm::Agent::builder("R", "G", "B")
    ///     .llm(Arc::new(flow_llm::OpenAiLlm::from_env()?))
    ///     .tools(server.tools())
    ///     .build()?;
    /// # let _ = agent;
    /// # Ok(()) }
    /// ```
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools.iter().map(|t| Arc::new(t.clone()) as Arc<dyn Tool>).collect()
    }

    /// One tool, by the name the model sees (with the prefix, if one was set).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), flow_llm::mcp::McpError> {
    /// let server = flow_llm::mcp::McpServer::stdio("srv").connect().await?;
    /// let search = server.tool("search")?;
    /// # let _ = search;
    /// # Ok(()) }
    /// ```
    pub fn tool(&self, name: &str) -> Result<McpTool, McpError> {
        self.tools.iter().find(|t| t.name == name).cloned().ok_or_else(|| McpError::NoSuchTool {
            server: self.connection.label.clone(),
            tool: name.to_owned(),
            available: self.tools.iter().map(|t| t.name.clone()).collect(),
        })
    }

    /// Closes the connection and, for a stdio server, waits (a few seconds at most) for the
    /// process to exit, then kills it. Its tools answer the model with an error afterwards.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), flow_llm::mcp::McpError> {
    /// let server = flow_llm::mcp::McpServer::stdio("srv").connect().await?;
    /// server.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        self.connection.closed.store(true, Ordering::SeqCst);
        let service = self.connection.service.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut service) = service
            && let Err(e) = service.close().await
        {
            tracing::warn!(server = %self.connection.label, error = %e, "closing the MCP connection failed");
        }
    }
}

/// One tool of an MCP server, usable by an [`Agent`](crate::Agent) like any [`Tool`]: its
/// description and input JSON Schema (as the server gives it, so not OpenAI-strict) are offered
/// to the model, and a call runs `tools/call` on the server, bounded by the call timeout.
///
/// The result text is the tool's text content (embedded text resources included, images and
/// other binary content named but left out), or its structured content as JSON when it has no
/// content. A result the server marks as an error, and any failure of the server, come back to
/// the model as an error result.
///
/// ```no_run
/// use flow_llm::Tool;
/// # async fn demo() -> Result<(), flow_llm::mcp::McpError> {
/// let server = flow_llm::mcp::McpServer::stdio("srv").connect().await?;
/// let add = server.tool("add")?;
/// assert!(add.parameters().is_object());
/// let sum = add.call(serde_json::json!({"a": 1, "b": 2})).await;
/// # let _ = sum;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct McpTool {
    connection: Arc<Connection>,
    name: String,
    remote: String,
    description: String,
    parameters: Value,
}

impl fmt::Debug for McpTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTool")
            .field("name", &self.name)
            .field("server", &self.connection.label)
            .finish_non_exhaustive()
    }
}

impl McpTool {
    /// The tool's name on its server (the model may see it prefixed or with characters
    /// replaced; see [`McpServerBuilder::tool_prefix`]).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), flow_llm::mcp::McpError> {
    /// let server = flow_llm::mcp::McpServer::stdio("srv").tool_prefix("fs").connect().await?;
    /// assert_eq!(server.tool("fs_read_file")?.server_name(), "read_file");
    /// # Ok(()) }
    /// ```
    pub fn server_name(&self) -> &str {
        &self.remote
    }

    fn failure(&self, error: ServiceError) -> ToolError {
        let server = &self.connection.label;
        match error {
            ServiceError::McpError(e) => {
                tracing::debug!(server = %server, tool = %self.remote, code = e.code.0, message = %e.message, "MCP tool call refused");
                // -32602 is also what servers answer for a tool they do not have (any more).
                let hint = if e.code == ErrorCode::INVALID_PARAMS {
                    "; check that the arguments match the tool's schema"
                } else {
                    ""
                };
                ToolError::new(format!(
                    "the MCP server {server} refused the call (JSON-RPC error {}): {}{hint}",
                    e.code.0, e.message
                ))
            }
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                if self.connection.closed.load(Ordering::SeqCst) {
                    tracing::warn!(server = %server, tool = %self.remote, "an MCP tool was called after its server was closed");
                } else {
                    let detail = match &error {
                        ServiceError::TransportSend(e) => format!(" ({})", transport_error(e)),
                        _ => String::new(),
                    };
                    let stderr = stderr_suffix(&self.connection.stderr.snapshot());
                    tracing::warn!(server = %server, tool = %self.remote, "the MCP server is gone{detail}; its tools answer the model with errors from now on; connect again to use them{stderr}");
                }
                ToolError::new(format!(
                    "the MCP server {server} is not reachable any more, so the tool could not run; do not call its tools again, answer with what you have"
                ))
            }
            ServiceError::UnexpectedResponse => {
                tracing::warn!(server = %server, tool = %self.remote, "the MCP server answered tools/call with something that is not a tool result");
                ToolError::new(format!(
                    "the MCP server {server} answered with something that is not a tool result (a fault in the server); try once more or answer without this tool"
                ))
            }
            other => ToolError::new(format!("the call to the MCP server {server} failed: {}", error_chain(&other))),
        }
    }
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    /// MCP schemas are plain JSON Schema: optional properties, open objects.
    fn strict(&self) -> bool {
        false
    }

    async fn call(&self, args: Value) -> Result<String, ToolError> {
        let arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                return Err(ToolError::InvalidArguments(format!("expected a JSON object of arguments, got {other}")));
            }
        };
        let mut params = CallToolRequestParams::new(self.remote.clone());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        let server = &self.connection.label;
        tracing::debug!(server = %server, tool = %self.remote, "calling MCP tool");
        // Dropping the call (at the timeout, or once the server is found gone) tells the server
        // it was cancelled.
        let call = async {
            tokio::select! {
                result = self.connection.peer.call_tool(params) => result,
                gone = self.connection.gone() => Err(gone),
            }
        };
        let outcome = tokio::time::timeout(self.connection.call_timeout, call).await;
        let result = match outcome {
            Err(_) => {
                let after = self.connection.call_timeout;
                tracing::warn!(server = %server, tool = %self.remote, ?after, "MCP tool call timed out; raise McpServerBuilder::call_timeout if the tool is legitimately slow");
                return Err(ToolError::new(format!(
                    "the MCP server {server} did not answer within {after:?}, so the call was cancelled; try again later or answer without this tool"
                )));
            }
            Ok(Err(e)) => return Err(self.failure(e)),
            Ok(Ok(result)) => result,
        };
        let text = result_text(&result);
        if result.is_error == Some(true) {
            return Err(ToolError::new(if text.is_empty() {
                "the tool reported an error without a message".to_owned()
            } else {
                text
            }));
        }
        Ok(if text.is_empty() { "(the tool returned no content)".to_owned() } else { text })
    }
}

/// What the model reads of a tool result.
fn result_text(result: &CallToolResult) -> String {
    let parts: Vec<String> = result.content.iter().filter_map(content_text).collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
        && !structured.is_null()
    {
        return structured.to_string();
    }
    parts.join("\n")
}

fn content_text(block: &ContentBlock) -> Option<String> {
    Some(match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => format!("[image ({}) not shown]", i.mime_type),
        ContentBlock::Audio(a) => format!("[audio ({}) not shown]", a.mime_type),
        ContentBlock::Resource(r) => match &r.resource {
            ResourceContents::TextResourceContents { text, .. } => text.clone(),
            ResourceContents::BlobResourceContents { uri, mime_type, .. } => {
                format!("[binary resource {uri} ({}) not shown]", mime_type.as_deref().unwrap_or("unknown type"))
            }
            _ => "[resource not shown]".to_owned(),
        },
        ContentBlock::ResourceLink(link) => format!("[resource {}: {}]", link.name, link.uri),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_the_model_fit_openai() {
        assert_eq!(model_name(None, "read_file"), "read_file");
        assert_eq!(model_name(Some("fs"), "read.file/v2"), "fs_read_file_v2");
        assert_eq!(model_name(None, &"x".repeat(80)).len(), 64);
        assert_eq!(model_name(None, ""), "_");
    }

    #[test]
    fn results_become_text() {
        let mut result =
            CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::image("AAAA", "image/png")]);
        assert_eq!(result_text(&result), "a\n[image (image/png) not shown]");
        result.content.clear();
        result.structured_content = Some(serde_json::json!({"n": 1}));
        assert_eq!(result_text(&result), r#"{"n":1}"#);
    }

    #[test]
    fn setup_errors_say_what_to_do() {
        let e = McpError::Handshake {
            server: "`srv`".into(),
            stage: "the MCP handshake",
            reason: "connection closed".into(),
            stderr: vec!["Traceback".into(), "ImportError: no module".into()],
            http: false,
        };
        let text = e.to_string();
        assert!(text.contains("only MCP messages to stdout"), "{text}");
        assert!(text.ends_with("Its stderr ended with:\n    Traceback\n    ImportError: no module"), "{text}");
        assert_eq!(e.class(), ErrorClass::Permanent);
    }
}
