//! What every example needs before its flow runs: an LLM endpoint, a SQLite file for runs, and
//! logging.
//!
//! - **LLM**: with `OPENAI_API_KEY` set, [`OpenAiLlmBuilder::from_env`] is used
//!   (`OPENAI_BASE_URL` is honoured; the model is `FLOWS_MODEL`, else `OPENAI_MODEL`, else
//!   [`DEFAULT_MODEL`]). Without a key, or with `FLOWS_OFFLINE=1`, flow-llm's [`TestServer`]
//!   starts on loopback with the example's scripted replies and an [`OpenAiLlm`] is pointed at
//!   it. Either way the flow talks HTTP to an OpenAI-compatible endpoint through the same
//!   client: there is no separate offline code path in the flows.
//! - **Runs**: stored in `$FLOWS_DB`, else `./.flows/examples.db`.
//! - **Console**: flow-core's [`console`](flow_core::console) prints each run's events;
//!   `FLOWS_TRACE=full|milestones|quiet` picks how much (see [`Setup::console`]).
//!
//! ```no_run
//! use flow_examples::setup::{LlmMode, Setup};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_examples::ExampleError> {
//! let setup = Setup::offline("/tmp/flows-doc/examples.db");
//! assert_eq!(setup.llm, LlmMode::Offline);
//! let (store, path) = setup.open_store().await?;
//! let llm = setup.connect_llm(None, |server| {
//!     server.when(flow_llm::Match::any()).reply(flow_llm::Reply::text("hello"));
//! }).await?;
//! assert!(llm.is_offline());
//! # let _ = (store, path);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flow_core::console::{Console, Detail};
use flow_core::store::SqliteStore;
use flow_llm::{ConcurrencyLimit, OpenAiLlm, OpenAiLlmBuilder, TestServer};

use crate::error::ExampleError;

/// The model used against a real endpoint when neither `FLOWS_MODEL` nor `OPENAI_MODEL` is set.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Where runs are stored when `FLOWS_DB` is not set, relative to the current directory.
pub const DEFAULT_DB: &str = ".flows/examples.db";

/// Which LLM endpoint an example talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmMode {
    /// A real endpoint when `OPENAI_API_KEY` is set (and `FLOWS_OFFLINE` is not), otherwise the
    /// in-process test server with scripted replies.
    FromEnv,
    /// Always the in-process test server with scripted replies (what the tests use).
    Offline,
}

/// The settings every example shares.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The SQLite file runs are stored in; `None`: `$FLOWS_DB`, else [`DEFAULT_DB`].
    pub db: Option<PathBuf>,
    /// Which LLM endpoint to use.
    pub llm: LlmMode,
    /// How much of the runs the console prints; `None`: nothing (the console still records).
    pub trace: Option<Detail>,
}

impl Setup {
    /// What the example binaries use: the endpoint and database from the environment, and the
    /// trace `FLOWS_TRACE` names (`full`, the default; `milestones`; `quiet`).
    pub fn from_env() -> Self {
        let trace = match std::env::var("FLOWS_TRACE").as_deref() {
            Ok("quiet") => None,
            Ok("milestones") => Some(Detail::Milestones),
            _ => Some(Detail::Full),
        };
        Setup { db: None, llm: LlmMode::FromEnv, trace }
    }

    /// What the tests use: the scripted offline server whatever the environment says, runs in
    /// `db`, nothing printed.
    pub fn offline(db: impl Into<PathBuf>) -> Self {
        Setup { db: Some(db.into()), llm: LlmMode::Offline, trace: None }
    }

    /// The console the example's runs print on: stdout with [`Setup::trace`]'s detail, or
    /// nothing when it is `None`. It records every event and line, which the example reads
    /// back for its outcome (the routes a run took) and the tests for their assertions.
    pub fn console(&self) -> Console {
        self.console_with_prefix("")
    }

    /// [`Setup::console`] with every printed line starting with `prefix` (the order-return
    /// child process marks its lines this way).
    pub fn console_with_prefix(&self, prefix: &str) -> Console {
        let builder = Console::builder().record(true).prefix(prefix);
        match self.trace {
            Some(detail) => builder.detail(detail),
            None => builder.silent(),
        }
        .build()
    }

    /// The database file: [`Setup::db`], else `$FLOWS_DB`, else [`DEFAULT_DB`]. Its directory
    /// is created if missing.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Io`] when the directory cannot be created.
    pub fn db_path(&self) -> Result<PathBuf, ExampleError> {
        let path = match &self.db {
            Some(path) => path.clone(),
            None => {
                std::env::var_os("FLOWS_DB").filter(|v| !v.is_empty()).map_or_else(|| DEFAULT_DB.into(), Into::into)
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(std::path::absolute(&path).unwrap_or(path))
    }

    /// A file next to the run database, for the business data an example keeps (tickets,
    /// stock movements): `sibling("helpdesk.db")` is `.flows/helpdesk.db` by default.
    ///
    /// # Errors
    ///
    /// As [`Setup::db_path`].
    pub fn sibling(&self, file: &str) -> Result<PathBuf, ExampleError> {
        let db = self.db_path()?;
        Ok(db.parent().map_or_else(|| PathBuf::from(file), |dir| dir.join(file)))
    }

    /// Opens the SQLite run store and returns it with its absolute path.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Io`] when the directory cannot be created, [`ExampleError::Store`] when
    /// the file cannot be opened.
    pub async fn open_store(&self) -> Result<(SqliteStore, PathBuf), ExampleError> {
        let path = self.db_path()?;
        let store = SqliteStore::open(&path).await?;
        Ok((store, path))
    }

    /// Whether this setup talks to the offline server.
    pub fn is_offline(&self) -> bool {
        match self.llm {
            LlmMode::Offline => true,
            LlmMode::FromEnv => {
                let key = std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.trim().is_empty());
                let forced = std::env::var("FLOWS_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
                !key || forced
            }
        }
    }

    /// Connects the LLM client. Offline, the [`TestServer`] starts and `script` installs the
    /// example's rules on it; online, `script` is not called. `limit` bounds the LLM requests
    /// in flight (default: flow-llm's process-wide limit).
    ///
    /// # Errors
    ///
    /// [`ExampleError::Io`] when the offline server cannot bind a loopback port,
    /// [`ExampleError::Llm`] when the client configuration is invalid (for instance a base URL
    /// that is not http(s)).
    pub async fn connect_llm(
        &self,
        limit: Option<ConcurrencyLimit>,
        script: impl FnOnce(&TestServer),
    ) -> Result<LlmBackend, ExampleError> {
        if self.is_offline() {
            let server = TestServer::start().await?;
            script(&server);
            let mut builder = server.llm_builder();
            if let Some(limit) = limit {
                builder = builder.concurrency(limit);
            }
            let llm = builder.build()?;
            let endpoint = format!(
                "offline: flow-llm's OpenAI-compatible test server at {} (scripted replies)",
                server.base_url()
            );
            return Ok(LlmBackend { llm: Arc::new(llm), server: Some(server), endpoint });
        }
        let mut builder = OpenAiLlmBuilder::from_env();
        let model = std::env::var("FLOWS_MODEL")
            .ok()
            .or_else(|| std::env::var("OPENAI_MODEL").ok())
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        builder = builder.model(model.clone());
        if let Some(limit) = limit {
            builder = builder.concurrency(limit);
        }
        let llm = builder.build()?;
        let endpoint = format!("{} with model {model}", llm.base_url());
        Ok(LlmBackend { llm: Arc::new(llm), server: None, endpoint })
    }
}

/// The LLM client an example uses, and the offline server behind it when there is one. The
/// server stops when this is dropped.
#[derive(Debug)]
pub struct LlmBackend {
    /// The client every agent of the example shares.
    pub llm: Arc<OpenAiLlm>,
    server: Option<TestServer>,
    endpoint: String,
}

impl LlmBackend {
    /// The offline server, when the example runs offline.
    pub fn server(&self) -> Option<&TestServer> {
        self.server.as_ref()
    }

    /// Whether the example runs against the offline server.
    pub fn is_offline(&self) -> bool {
        self.server.is_some()
    }

    /// What embeds the runs' memory: the endpoint's `/v1/embeddings` (the offline server
    /// serves deterministic vectors).
    pub fn embedder(&self) -> flow_llm::OpenAiEmbedder {
        flow_llm::OpenAiEmbedder::new(&self.llm)
    }

    /// The requests the offline server received (none against a real endpoint).
    pub fn requests(&self) -> Vec<flow_llm::RecordedRequest> {
        self.server.as_ref().map(TestServer::requests).unwrap_or_default()
    }

    /// A one-line description of the endpoint, for the trace.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Logs of the libraries (flow-core warns on every failed attempt; the trace shows those
/// already) go to stderr at `error` level unless `RUST_LOG` says otherwise. Call it once at the
/// start of `main`; later calls do nothing.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// What [`init_telemetry`] installed; dropping it sends the spans still buffered (with
/// feature `otel`, when a collector was configured).
#[must_use = "dropping it at once would stop the export before the run"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<flow_core::otel::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not send the last spans to the OpenTelemetry collector");
        }
    }
}

/// [`init_logging`], plus, built with feature `otel` and with `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the export of every run's spans to that
/// OpenTelemetry collector by OTLP over HTTP. Without both, it is exactly [`init_logging`]:
/// nothing is sent and nothing needs to be listening.
///
/// ```
/// let _telemetry = flow_examples::setup::init_telemetry("doc");
/// ```
pub fn init_telemetry(service_name: &str) -> Telemetry {
    #[cfg(feature = "otel")]
    {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        match flow_core::otel::from_env(service_name) {
            Ok(Some(provider)) => {
                let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
                let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
                let spans = flow_core::otel::layer(&provider).with_filter(tracing::level_filters::LevelFilter::INFO);
                let _ = tracing_subscriber::registry().with(logs).with(spans).try_init();
                return Telemetry { provider: Some(provider) };
            }
            Ok(None) => {}
            Err(e) => {
                init_logging();
                tracing::error!(error = %e, "runs are not exported to OpenTelemetry");
                return Telemetry { provider: None };
            }
        }
    }
    let _ = service_name;
    init_logging();
    Telemetry {
        #[cfg(feature = "otel")]
        provider: None,
    }
}

/// The exit status of an example binary: success, or the error's message on stderr and
/// failure. Every example's `main` ends with it.
///
/// ```
/// let code = flow_examples::setup::exit_code(Ok(()));
/// assert_eq!(code, std::process::ExitCode::SUCCESS);
/// ```
#[allow(clippy::print_stderr)] // the binary's last word to the person who ran it
pub fn exit_code(result: Result<(), crate::ExampleError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Where an example's runs are, as the `flows` command line is told it.
#[derive(Debug, Clone, Copy)]
pub enum StoreLocation<'a> {
    /// A SQLite file: `flows --db PATH`.
    Sqlite(&'a Path),
    /// A PostgreSQL URL: `flows --database-url URL`.
    Postgres(&'a str),
}

impl StoreLocation<'_> {
    /// The `flows` option naming this store. A URL carrying a password is not echoed: the
    /// option then reads it from `$DATABASE_URL`, where the example found it.
    fn flag(self) -> String {
        match self {
            StoreLocation::Sqlite(path) => format!("--db {}", quoted(&display_path(path))),
            StoreLocation::Postgres(url) if has_password(url) => "--database-url \"$DATABASE_URL\"".to_string(),
            StoreLocation::Postgres(url) => format!("--database-url {}", quoted(url)),
        }
    }
}

/// `word` as a shell reads it back: a key=value connection string or a path with spaces
/// stays one argument.
fn quoted(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| word.to_string(), |q| q.into_owned())
}

fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split_once('@').is_some_and(|(user_info, _)| user_info.contains(':'))
}

/// The `flows` commands that show a run of an example and all of its runs, from the store the
/// example wrote (see the README's "Operating flows").
///
/// ```
/// use std::path::Path;
/// use flow_examples::setup::{operate_hint, StoreLocation};
///
/// let hint = operate_hint(StoreLocation::Sqlite(Path::new("/tmp/runs.db")), Some(uuid::Uuid::nil()));
/// assert!(hint.contains("flows --db /tmp/runs.db show 00000000-0000-0000-0000-000000000000"));
/// assert!(hint.contains("flows --db /tmp/runs.db serve"));
///
/// let hint = operate_hint(StoreLocation::Postgres("postgres://app:secret@db/flows"), None);
/// assert!(hint.contains("flows --database-url \"$DATABASE_URL\" runs"));
/// assert!(!hint.contains("secret"));
/// ```
pub fn operate_hint(store: StoreLocation<'_>, run: Option<uuid::Uuid>) -> String {
    let flag = store.flag();
    let show = run.map(|id| format!("  flows {flag} show {id}\n")).unwrap_or_default();
    format!("See it with `flows` (cargo install --path flows-cli):\n{show}  flows {flag} runs\n  flows {flag} serve")
}

/// Shows `path` relative to the current directory when it is below it.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}
