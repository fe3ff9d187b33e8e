//! MCP tools in the agent loop, against real MCP servers built here with rmcp: one run as a child
//! process over stdio (this test binary again, running the entry point below, which does nothing when run alone), one served
//! in-process over streamable HTTP on 127.0.0.1.
//!
//! The model is the project's `TestServer`: the tests check that an MCP tool's schema reaches the
//! model, its result reaches the next model turn, calls are journaled and replayed without the
//! server, and that every way a server can fail (an error result, refused arguments, a reply that
//! is not a tool result, silence, death, never starting) ends as a clear message, never a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{SqliteStore, Store};
use flow_core::{Classify, ErrorClass, NoJournal};
use flow_llm::mcp::{McpError, McpServer, McpServerBuilder};
use flow_llm::{Agent, Match, Reply, Role, TestServer, Tool};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::common::llm;

const MODE_VAR: &str = "FLOW_LLM_MCP_CHILD";
const CHILD: &str = "mcp::child_serves_mcp_on_stdio";
/// In a result line, makes the child replace the result with something that is not a tool result.
const GARBLE: &str = "@@garble@@";
/// In a result line, makes the child replace the whole line with text that is not JSON.
const NOISE: &str = "@@noise@@";
/// A guard against hangs only: every test finishes far sooner.
const NO_HANG: Duration = Duration::from_secs(120);

/// Arguments of `add`.
#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    /// First addend.
    a: i64,
    /// Second addend.
    b: i64,
}

/// Arguments of `lookup`.
#[derive(Deserialize, JsonSchema)]
struct Who {
    /// The customer's name.
    name: String,
}

/// The MCP server under test.
#[derive(Clone)]
struct Calculator {
    tool_router: ToolRouter<Self>,
    served: Arc<AtomicUsize>,
}

impl Calculator {
    fn new(served: Arc<AtomicUsize>) -> Self {
        Calculator { tool_router: Self::tool_router(), served }
    }

    fn count(&self) {
        self.served.fetch_add(1, Ordering::SeqCst);
    }
}

#[tool_router]
impl Calculator {
    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        self.count();
        (a + b).to_string()
    }

    #[tool(description = "Looks a customer up")]
    fn lookup(&self, Parameters(Who { name }): Parameters<Who>) -> Result<CallToolResult, ErrorData> {
        self.count();
        if name.is_empty() {
            return Err(ErrorData::invalid_params("name must not be empty", None));
        }
        Ok(CallToolResult::error(vec![ContentBlock::text(format!("no customer named {name}; check the spelling"))]))
    }

    #[tool(description = "Never answers")]
    async fn hang(&self) -> String {
        self.count();
        std::future::pending::<String>().await
    }

    #[tool(description = "Answers with a reply that is not a tool result (stdio only)")]
    fn garble(&self) -> String {
        self.count();
        GARBLE.to_owned()
    }

    #[tool(description = "Answers with a line that is not JSON (stdio only)")]
    fn noise(&self) -> String {
        self.count();
        NOISE.to_owned()
    }

    #[tool(description = "Ends the server process in the middle of the call (stdio only)")]
    async fn crash(&self) -> String {
        eprintln!("fatal: the disk is on fire");
        std::process::exit(7)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Calculator {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// The child process's entry point: does nothing unless spawned by the tests below. What libtest
/// itself prints on stdout is not JSON, and MCP clients skip lines that are not.
#[tokio::test]
async fn child_serves_mcp_on_stdio() {
    let Ok(mode) = std::env::var(MODE_VAR) else {
        return;
    };
    match mode.as_str() {
        "serve" => serve_stdio().await,
        "exit_at_start" => {
            eprintln!("error: config file /etc/calculator.toml not found");
            std::process::exit(2);
        }
        // Reads its input and never answers, until the parent closes the pipe.
        _ => {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
        }
    }
}

/// Serves the calculator on stdin/stdout, through a relay that tampers with marked replies.
async fn serve_stdio() {
    let (server_side, relay_side) = tokio::io::duplex(1 << 16);
    let (_, server_writer) = tokio::io::split(server_side);
    let relay = tokio::spawn(async move {
        let mut lines = BufReader::new(relay_side).lines();
        let mut stdout = tokio::io::stdout();
        // Ends whatever libtest printed on this line, so that it is one line of its own for the
        // client to skip.
        stdout.write_all(b"\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let out = if line.contains(GARBLE) {
                let mut message: Value = serde_json::from_str(&line).unwrap();
                message["result"] = json!("not a tool result");
                message.to_string()
            } else if line.contains(NOISE) {
                "this line is not JSON-RPC".to_owned()
            } else {
                line
            };
            stdout.write_all(format!("{out}\n").as_bytes()).await.unwrap();
            stdout.flush().await.unwrap();
        }
    });
    let running = Calculator::new(Arc::default()).serve((tokio::io::stdin(), server_writer)).await.unwrap();
    let _ = running.waiting().await;
    relay.abort();
}

/// The stdio server: this test binary, running the child entry point in `mode`.
fn stdio(mode: &str) -> McpServerBuilder {
    McpServer::stdio(std::env::current_exe().unwrap())
        .args([CHILD, "--exact", "--nocapture", "--test-threads=1", "--quiet"])
        .env(MODE_VAR, mode)
        .name("calculator")
}

/// The calculator served over streamable HTTP on 127.0.0.1.
struct HttpCalculator {
    url: String,
    served: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpCalculator {
    async fn start() -> Self {
        let served = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let for_sessions = Arc::clone(&served);
        let service: StreamableHttpService<Calculator, LocalSessionManager> = StreamableHttpService::new(
            move || Ok(Calculator::new(Arc::clone(&for_sessions))),
            Arc::default(),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None).with_cancellation_token(stop.child_token()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let router = axum::Router::new().nest_service("/mcp", service);
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        });
        HttpCalculator { url, served, stop, task }
    }

    /// Ends the sessions and stops listening: the server is gone.
    async fn stop(self) {
        self.stop.cancel();
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The tool results the model got in request `i` (0-based), in order.
fn tool_results(server: &TestServer, i: usize) -> Vec<String> {
    server.requests()[i]
        .chat
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.text_or_empty().to_owned())
        .collect()
}

fn agent(server: &TestServer, mcp: &McpServer) -> Agent {
    Agent::builder("Bookkeeper", "Compute and look things up", "Exact")
        .llm(Arc::new(llm(server)))
        .tools(mcp.tools())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_stdio_server_tools_reach_the_model_and_their_results_come_back() {
    let mcp = stdio("serve").connect().await.unwrap();
    assert_eq!(mcp.tool_names().len(), 6, "{:?}", mcp.tool_names());
    let server = TestServer::start().await.unwrap();
    server.when(Match::has_tool_results()).respond(|req| {
        let result = req.chat.messages.iter().rev().find(|m| m.role == Role::Tool).unwrap();
        Reply::text(format!("The sum is {}", result.text_or_empty()))
    });
    server.when(Match::any()).reply(Reply::tool_call("add", json!({"a": 2, "b": 40})));

    let out =
        tokio::time::timeout(NO_HANG, agent(&server, &mcp).run(&NoJournal, "What is 2 + 40?")).await.unwrap().unwrap();
    assert_eq!(out.raw, "The sum is 42");

    // The model was offered the server's own schema and description, not in strict form.
    let offered = server.requests()[0].body["tools"].as_array().unwrap().clone();
    let add = offered.iter().find(|t| t["function"]["name"] == "add").expect("add offered");
    let schema = Value::Object((*Calculator::add_tool_attr().input_schema).clone());
    assert_eq!(add["function"]["parameters"], schema);
    assert_eq!(add["function"]["parameters"]["properties"]["a"]["description"], "First addend.");
    assert_eq!(add["function"]["description"], "Adds two integers");
    assert!(add["function"].get("strict").is_none(), "{add}");
    assert_eq!(tool_results(&server, 1), ["42"]);

    let add = mcp.tool("add").unwrap();
    mcp.close().await;
    let err = add.call(json!({"a": 1, "b": 2})).await.unwrap_err();
    assert!(err.to_string().contains("`calculator` is not reachable any more"), "{err}");
}

#[tokio::test]
async fn two_servers_with_the_same_tools_serve_one_agent_through_prefixes() {
    let http = HttpCalculator::start().await;
    let local = stdio("serve").tool_prefix("local").connect().await.unwrap();
    let remote = McpServer::http(&http.url).tool_prefix("remote").connect().await.unwrap();
    let server = TestServer::start().await.unwrap();
    server
        .enqueue(Reply::tool_calls([("local_add", json!({"a": 1, "b": 2})), ("remote_add", json!({"a": 3, "b": 4}))]));
    server.enqueue(Reply::text("3 and 7"));
    let agent = Agent::builder("Bookkeeper", "Compute", "Exact")
        .llm(Arc::new(llm(&server)))
        .tools(local.tools())
        .tools(remote.tools())
        .build()
        .unwrap();

    let out = tokio::time::timeout(NO_HANG, agent.run(&NoJournal, "go")).await.unwrap().unwrap();
    assert_eq!(out.raw, "3 and 7");
    assert_eq!(tool_results(&server, 1), ["3", "7"]);
    assert_eq!(http.served.load(Ordering::SeqCst), 1, "only remote_add went to the HTTP server");
    let offered: Vec<String> = server.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(offered.contains(&"local_add".to_owned()) && offered.contains(&"remote_add".to_owned()), "{offered:?}");
    http.stop().await;
}

#[tokio::test]
async fn error_results_refused_arguments_and_garbage_go_back_to_the_model() {
    let mcp = stdio("serve").connect().await.unwrap();
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_calls([
        ("lookup", json!({"name": "Zed"})),
        ("add", json!({"a": "two", "b": 2})),
        ("garble", json!({})),
        ("add", json!([1, 2])),
        ("lookup", json!({"name": ""})),
    ]));
    server.enqueue(Reply::text("I could not do it."));

    let out = tokio::time::timeout(NO_HANG, agent(&server, &mcp).run(&NoJournal, "go")).await.unwrap().unwrap();
    assert_eq!(out.raw, "I could not do it.");
    let results = tool_results(&server, 1);
    assert_eq!(results[0], "Error executing tool `lookup`: no customer named Zed; check the spelling");
    // rmcp servers answer arguments that do not deserialize with an error result.
    assert!(results[1].starts_with("Error executing tool `add`"), "{}", results[1]);
    assert!(results[1].contains("invalid type: string \"two\", expected i64"), "{}", results[1]);
    assert!(results[2].starts_with("Error executing tool `garble`"), "{}", results[2]);
    assert!(results[2].contains("not a tool result"), "{}", results[2]);
    assert!(results[3].contains("do not fit the schema of tool `add`"), "{}", results[3]);
    assert!(results[3].contains("expected a JSON object"), "{}", results[3]);
    assert!(results[4].starts_with("Error executing tool `lookup`"), "{}", results[4]);
    assert!(
        results[4].contains("`calculator` refused the call (JSON-RPC error -32602): name must not be empty"),
        "{}",
        results[4]
    );

    // The connection survived all of it.
    let sum = mcp.tool("add").unwrap().call(json!({"a": 1, "b": 2})).await.unwrap();
    assert_eq!(sum, "3");
}

#[tokio::test]
async fn a_tool_that_never_answers_times_out_into_an_error_for_the_model() {
    let mcp = stdio("serve").call_timeout(Duration::from_millis(300)).connect().await.unwrap();
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_calls([("hang", json!({})), ("noise", json!({}))]));
    server.enqueue(Reply::text("Both tools were silent."));

    let out = tokio::time::timeout(NO_HANG, agent(&server, &mcp).run(&NoJournal, "go")).await.unwrap().unwrap();
    assert_eq!(out.raw, "Both tools were silent.");
    for (tool, text) in ["hang", "noise"].iter().zip(tool_results(&server, 1)) {
        assert!(text.starts_with(&format!("Error executing tool `{tool}`")), "{text}");
        assert!(text.contains("`calculator` did not answer within 300ms"), "{text}");
    }
}

#[tokio::test]
async fn a_server_that_dies_mid_call_is_a_tool_error_and_stays_one() {
    let mcp = stdio("serve").connect().await.unwrap();
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_call("crash", json!({})));
    server.enqueue(Reply::tool_call("add", json!({"a": 1, "b": 1})));
    server.enqueue(Reply::text("The calculator is down."));

    let out = tokio::time::timeout(NO_HANG, agent(&server, &mcp).run(&NoJournal, "go")).await.unwrap().unwrap();
    assert_eq!(out.raw, "The calculator is down.");
    let crashed = &tool_results(&server, 1)[0];
    assert!(crashed.starts_with("Error executing tool `crash`"), "{crashed}");
    assert!(crashed.contains("`calculator` is not reachable any more"), "{crashed}");
    let after = &tool_results(&server, 2)[1];
    assert!(after.starts_with("Error executing tool `add`"), "{after}");
    assert!(after.contains("`calculator` is not reachable any more"), "{after}");
}

#[tokio::test]
async fn setup_failures_name_the_server_and_what_to_do() {
    let missing = McpServer::stdio("/nonexistent/mcp-server").arg("--stdio").connect().await.unwrap_err();
    assert!(matches!(missing, McpError::Spawn { .. }), "{missing:?}");
    let text = missing.to_string();
    assert!(text.contains("`/nonexistent/mcp-server --stdio`") && text.contains("PATH"), "{text}");
    assert_eq!(missing.class(), ErrorClass::Permanent);

    let exits = tokio::time::timeout(NO_HANG, stdio("exit_at_start").connect()).await.unwrap().unwrap_err();
    assert!(matches!(exits, McpError::Handshake { http: false, .. }), "{exits:?}");
    let text = exits.to_string();
    assert!(text.contains("`calculator` did not complete the MCP handshake"), "{text}");
    assert!(text.ends_with("stderr ended with:\n    error: config file /etc/calculator.toml not found"), "{text}");

    let silent = stdio("silent").connect_timeout(Duration::from_millis(500));
    let silent = tokio::time::timeout(NO_HANG, silent.connect()).await.unwrap().unwrap_err();
    assert!(matches!(silent, McpError::ConnectTimeout { .. }), "{silent:?}");
    assert!(silent.to_string().contains("connect_timeout"), "{silent}");

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/mcp");
    let refused = tokio::time::timeout(NO_HANG, McpServer::http(&url).connect()).await.unwrap().unwrap_err();
    assert!(matches!(refused, McpError::Handshake { http: true, .. }), "{refused:?}");
    let text = refused.to_string();
    assert!(text.contains(&url) && text.contains("that the server is running"), "{text}");
    assert!(text.contains("Connection refused") && !text.contains("rmcp::"), "the cause, no type names: {text}");
    assert_eq!(refused.class(), ErrorClass::Transient);

    let http = HttpCalculator::start().await;
    let mcp = McpServer::http(&http.url).tool_prefix("calc").connect().await.unwrap();
    let err = mcp.tool("add").unwrap_err();
    assert!(err.to_string().contains("has no tool `add`; it has: calc_add, calc_crash"), "{err}");
    assert_eq!(mcp.tool("calc_add").unwrap().server_name(), "add");
    let bad = McpServer::http(&http.url).header("bad header", "x").connect().await.unwrap_err();
    assert!(matches!(bad, McpError::Config(_)), "{bad:?}");
    http.stop().await;
}

#[tokio::test]
async fn an_http_server_that_stops_is_a_tool_error_for_the_model() {
    let http = HttpCalculator::start().await;
    let mcp = McpServer::http(&http.url).name("ledger").connect().await.unwrap();
    assert_eq!(mcp.tool("add").unwrap().call(json!({"a": 20, "b": 22})).await.unwrap(), "42");
    let served = Arc::clone(&http.served);
    http.stop().await;

    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_call("add", json!({"a": 1, "b": 1})));
    server.enqueue(Reply::text("The ledger is down."));
    let out = tokio::time::timeout(NO_HANG, agent(&server, &mcp).run(&NoJournal, "go")).await.unwrap().unwrap();
    assert_eq!(out.raw, "The ledger is down.");
    let after = &tool_results(&server, 1)[0];
    assert!(after.starts_with("Error executing tool `add`"), "{after}");
    assert!(after.contains("`ledger` is not reachable any more"), "{after}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

/// The server goes away while a call is in flight: the model hears that it is gone, rather than
/// waiting out the call timeout to hear that it was slow.
#[tokio::test]
async fn an_http_server_that_dies_mid_call_is_a_tool_error_before_the_call_timeout() {
    let http = HttpCalculator::start().await;
    let mcp = McpServer::http(&http.url).name("ledger").call_timeout(NO_HANG * 2).connect().await.unwrap();
    let served = Arc::clone(&http.served);
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::tool_call("hang", json!({})));
    server.enqueue(Reply::text("The ledger died."));
    let agent = agent(&server, &mcp);
    let run = agent.run(&NoJournal, "go");
    let kill = async {
        while served.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        http.stop().await;
    };
    let (out, ()) = tokio::time::timeout(NO_HANG, async { tokio::join!(run, kill) }).await.unwrap();
    assert_eq!(out.unwrap().raw, "The ledger died.");
    let text = &tool_results(&server, 1)[0];
    assert!(text.starts_with("Error executing tool `hang`"), "{text}");
    assert!(text.contains("`ledger` is not reachable any more"), "{text}");
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Books {
    answer: String,
}

/// Runs the agent, then fails once after it (as a step that crashes after its calls would).
struct Desk {
    agent: Agent,
    fail_after_the_agent: Arc<AtomicBool>,
}

#[flow(state = Books)]
impl Desk {
    #[start]
    async fn answer(&self, cx: &Ctx<Books>) -> Result<String> {
        let out = self.agent.run(cx, "What is 2 + 40?").await?;
        if self.fail_after_the_agent.swap(false, Ordering::SeqCst) {
            return Err(Error::permanent("a bug after the agent"));
        }
        Ok(out.raw)
    }
}

#[tokio::test]
async fn mcp_calls_are_journaled_and_a_resumed_step_does_not_call_the_server_again() {
    let http = HttpCalculator::start().await;
    let server = TestServer::start().await.unwrap();
    server.when(Match::has_tool_results()).respond(|req| {
        let result = req.chat.messages.iter().rev().find(|m| m.role == Role::Tool).unwrap();
        Reply::text(format!("The sum is {}", result.text_or_empty()))
    });
    server.when(Match::any()).reply(Reply::tool_call("add", json!({"a": 2, "b": 40})));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let desk = |mcp: &McpServer, fail| Desk { agent: agent(&server, mcp), fail_after_the_agent: Arc::new(fail) };

    let mcp = McpServer::http(&http.url).connect().await.unwrap();
    let first = Runner::new(desk(&mcp, AtomicBool::new(true))).with_store(SqliteStore::open(&db).await.unwrap());
    let err = first.kickoff(Books::default()).await.unwrap_err();
    let FlowError::MethodFailed { run_id, .. } = err else { panic!("{err:?}") };
    assert_eq!((server.hits(), http.served.load(Ordering::SeqCst)), (2, 1));
    let store = SqliteStore::open(&db).await.unwrap();
    let tool = store.journal_get(run_id, "answer#1", 1).await.unwrap().unwrap();
    assert_eq!((tool.kind.as_str(), tool.name.as_str()), ("tool", "add"));
    mcp.close().await;

    // Another connection, as a new process would make: the step replays from the store.
    server.reset_counters();
    let mcp = McpServer::http(&http.url).connect().await.unwrap();
    let second = Runner::new(desk(&mcp, AtomicBool::new(false))).with_store(SqliteStore::open(&db).await.unwrap());
    let run = second.resume(run_id).await.unwrap().completed().unwrap();
    assert_eq!(run.output::<String>().unwrap(), "The sum is 42");
    assert_eq!(server.hits(), 0, "a replayed step must not call the LLM again");
    assert_eq!(http.served.load(Ordering::SeqCst), 1, "a replayed step must not call the MCP server again");
    http.stop().await;
}
