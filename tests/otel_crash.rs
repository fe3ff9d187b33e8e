//! OpenTelemetry across a pause, a crash and two resumes (issue 21, point 4), each execution of
//! the run in a process of its own, all exporting to one OTLP receiver on loopback:
//!
//! 1. the first process starts the run, which researches (an agent calling a tool) and pauses
//!    for the editor; the process exports its spans and exits;
//! 2. the editor's answer is given; a second process resumes the run, which takes the answer
//!    and starts writing: the writer's LLM call is made (and journaled), then the step holds
//!    still, its process exports what has ended and says so through a file, and is killed
//!    with SIGKILL there, inside the step;
//! 3. a third process resumes the run once the dead process's lease has lapsed: the
//!    interrupted step runs again, its journaled writer call replays without the model, the
//!    editor's call is made, and the run completes.
//!
//! The receiver then holds one trace: each execution's spans under its own run span, the third
//! execution's run span a child of the first (the context kept with the run), the retried
//! step's attempt under the third execution, and GenAI attributes on every LLM call. What the
//! killed process had not ended (its run span and the step it died in) is lost with it, as any
//! span of a killed process is: its spans that had ended name those lost spans as parents.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod otel_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use flow_core::otel::SdkTracerProvider;
use flow_core::prelude::*;
use flow_core::store::SqliteStore;
use flow_llm::{Agent, FnTool, Match, Reply, TestServer, ToolError};
use opentelemetry_proto::tonic::trace::v1::Span;
use otel_support::{chat_usage, int_attr, named, one, parent_of, receiver, text_attr};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// Short, so the third process takes the run over soon after the second one's death.
const LEASE: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Article {
    notes: String,
    draft: String,
    text: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Topic {
    topic: String,
}

/// Where the second process's run holds still to be killed.
struct KillPoint {
    provider: SdkTracerProvider,
    ready: PathBuf,
}

impl KillPoint {
    /// Exports every span ended so far, says so through the `ready` file, then waits for the
    /// kill: the kill lands inside the step, after its journaled LLM call, whatever the load.
    async fn wait_for_the_kill(&self) {
        let provider = self.provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush()).await.expect("flush task").expect("flush");
        std::fs::write(&self.ready, b"ready").expect("ready file");
        std::future::pending::<()>().await;
    }
}

struct Newsroom {
    researcher: Agent,
    writer: Agent,
    editor: Agent,
    kill_point: Option<KillPoint>,
}

impl Newsroom {
    fn new(llm_url: &str, kill_point: Option<KillPoint>) -> Newsroom {
        let lookup = FnTool::new("lookup", "Facts about a topic", |t: Topic| async move {
            Ok::<_, ToolError>(format!("{} hold hands while asleep", t.topic))
        })
        .expect("tool");
        let llm = Arc::new(
            flow_llm::OpenAiLlm::builder()
                .base_url(llm_url)
                .api_key(flow_llm::server::TEST_API_KEY)
                .model(flow_llm::server::TEST_MODEL)
                .build()
                .expect("llm"),
        );
        let agent = |role: &str| Agent::builder(role, "Do the job", "Careful").llm(llm.clone());
        Newsroom {
            researcher: agent("Researcher").tool(lookup).build().expect("researcher"),
            writer: agent("Writer").build().expect("writer"),
            editor: agent("Editor").build().expect("editor"),
            kill_point,
        }
    }
}

#[flow(state = Article, name = "otel_crash_newsroom")]
impl Newsroom {
    #[start]
    async fn research(&self, cx: &Ctx<Article>) -> Result<String> {
        let notes = self.researcher.run(cx, "Research otters").await?.raw;
        let kept = notes.clone();
        cx.update(move |s| s.notes.clone_from(&kept));
        Ok(notes)
    }

    #[listen(research)]
    async fn review(&self, cx: &Ctx<Article>, notes: String) -> Result<String> {
        let go: bool = cx.ask("Write the article from these notes?").await?;
        if !go {
            return Err(Error::permanent("the editor said no"));
        }
        Ok(notes)
    }

    #[listen(review)]
    async fn write(&self, cx: &Ctx<Article>, notes: String) -> Result<()> {
        let draft = self.writer.run(cx, format!("Write about: {notes}")).await?.raw;
        if let Some(kill_point) = &self.kill_point {
            kill_point.wait_for_the_kill().await;
        }
        let text = self.editor.run(cx, format!("Polish: {draft}")).await?.raw;
        cx.update(move |s| {
            s.draft.clone_from(&draft);
            s.text.clone_from(&text);
        });
        Ok(())
    }
}

/// The child processes: one execution of the run each, exporting its spans to the receiver.
/// `FLOWS_OTEL_CRASH_PHASE` says which: `start` (kick off, pause), `crash` (resume, be killed
/// inside `write`) or `finish` (resume to completion).
#[test]
fn otel_crash_child() {
    let Ok(phase) = std::env::var("FLOWS_OTEL_CRASH_PHASE") else {
        return; // run as an ordinary test: nothing to do
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (db, endpoint, llm_url) =
        (var("FLOWS_OTEL_CRASH_DB"), var("FLOWS_OTEL_CRASH_ENDPOINT"), var("FLOWS_OTEL_CRASH_LLM"));
    let provider = flow_core::otel::tracer_provider("otel-crash-test", Some(&endpoint)).expect("provider");
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(flow_core::otel::layer(&provider)))
        .expect("subscriber");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open(&db).await.expect("store");
        match phase.as_str() {
            "start" => {
                let runner = Runner::new(Newsroom::new(&llm_url, None)).with_store(store).lease(LEASE);
                let outcome = runner.kickoff(Article::default()).await.expect("kickoff");
                assert!(matches!(outcome, RunOutcome::Paused(_)), "expected the pause, got {outcome:?}");
            }
            "crash" => {
                let kill_point = KillPoint { provider: provider.clone(), ready: var("FLOWS_OTEL_CRASH_READY").into() };
                let runner = Runner::new(Newsroom::new(&llm_url, Some(kill_point))).with_store(store).lease(LEASE);
                let run_id: Uuid = var("FLOWS_OTEL_CRASH_RUN").parse().expect("run id");
                let outcome = runner.resume(run_id).await;
                panic!("the run was to hold still inside `write` until killed, but it returned {outcome:?}");
            }
            "finish" => {
                let runner = Runner::new(Newsroom::new(&llm_url, None)).with_store(store).lease(LEASE);
                let run_id: Uuid = var("FLOWS_OTEL_CRASH_RUN").parse().expect("run id");
                loop {
                    match runner.resume(run_id).await {
                        // The killed process's lease has not lapsed yet.
                        Err(FlowError::RunLocked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => {
                            let done = other.expect("resume").completed().expect("completed");
                            assert_eq!(done.state.text, "Otters, hand in hand, polished.");
                            break;
                        }
                    }
                }
            }
            other => panic!("unknown phase {other}"),
        }
    });
    // Sends what is still buffered; the receiver has stored it once this returns.
    provider.shutdown().expect("export the last spans");
}

struct Processes {
    db: PathBuf,
    endpoint: String,
    llm_url: String,
}

impl Processes {
    fn spawn(&self, phase: &str, run_id: Option<Uuid>, ready: Option<&Path>) -> Child {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["otel_crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("FLOWS_OTEL_CRASH_PHASE", phase)
            .env("FLOWS_OTEL_CRASH_DB", &self.db)
            .env("FLOWS_OTEL_CRASH_ENDPOINT", &self.endpoint)
            .env("FLOWS_OTEL_CRASH_LLM", &self.llm_url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(id) = run_id {
            cmd.env("FLOWS_OTEL_CRASH_RUN", id.to_string());
        }
        if let Some(ready) = ready {
            cmd.env("FLOWS_OTEL_CRASH_READY", ready);
        }
        cmd.spawn().expect("spawn child")
    }
}

/// Waits, off the async runtime, for a child to exit on its own, successfully.
async fn succeeds(child: Child) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("wait task").expect("wait");
    assert!(out.status.success(), "child failed: {}", out.status);
}

/// Waits for the child to say (through `ready`) that it holds still inside its step, then
/// kills it with SIGKILL.
async fn kill_when_ready(mut child: Child, ready: &Path) {
    while !ready.exists() {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the child exited ({status}) before reaching the point where it was to be killed");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

fn the_run(db: &Path) -> Uuid {
    let conn = rusqlite::Connection::open(db).expect("open");
    let id: String = conn.query_row("SELECT run_id FROM flow_runs", [], |r| r.get(0)).expect("the run");
    id.parse().expect("run id")
}

fn names(spans: &[Span]) -> Vec<&str> {
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_pauses_crashes_and_resumes_across_processes_is_one_trace() {
    if std::env::var("FLOWS_OTEL_CRASH_PHASE").is_ok() {
        return; // inside a child
    }
    let (endpoint, received) = receiver().await.expect("receiver");
    let server = TestServer::start().await.expect("test server");
    server.when(Match::has_tool_results()).reply(Reply::text("Otters hold hands.").usage(40, 5));
    server
        .when(Match::system_contains("Researcher"))
        .reply(Reply::tool_call("lookup", json!({"topic": "otters"})).usage(30, 7));
    server.when(Match::system_contains("Writer")).reply(Reply::text("Otters, hand in hand.").usage(50, 9));
    server.when(Match::system_contains("Editor")).reply(Reply::text("Otters, hand in hand, polished.").usage(60, 11));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("runs.db");
    let procs = Processes { db: db.clone(), endpoint, llm_url: server.base_url() };

    // Process 1: research, then the pause. Each phase's spans are all in before the next
    // starts (a child's export returns once the receiver has them), so they are told apart
    // by where they fall in the arrival order.
    succeeds(procs.spawn("start", None, None)).await;
    let run_id = the_run(&db);
    let first: Vec<Span> = received.snapshot();
    assert_eq!(server.hits(), 2, "the researcher asked, used the tool, and answered");

    // The editor answers; process 2 resumes and is killed inside `write`.
    let answering =
        Runner::new(Newsroom::new(&server.base_url(), None)).with_store(SqliteStore::open(&db).await.expect("store"));
    answering.answer(run_id, true).await.expect("answer");
    drop(answering);
    let ready = dir.path().join("ready");
    kill_when_ready(procs.spawn("crash", Some(run_id), Some(&ready)), &ready).await;
    let second: Vec<Span> = received.snapshot()[first.len()..].to_vec();
    assert_eq!(server.hits(), 3, "the killed process made the writer's call");

    // Process 3: takes the run over and completes it.
    succeeds(procs.spawn("finish", Some(run_id), None)).await;
    let third: Vec<Span> = received.snapshot()[first.len() + second.len()..].to_vec();
    assert_eq!(server.hits(), 4, "the writer's journaled call replayed; only the editor was asked");
    let all = received.snapshot();

    // What each process exported.
    assert_eq!(
        names(&first),
        [
            "chat test-model",
            "chat test-model",
            "execute_tool lookup",
            "invoke_agent Researcher",
            "run otel_crash_newsroom",
            "step research",
            "step review"
        ]
    );
    // The killed process's run span and the `write` step it died in never ended.
    assert_eq!(names(&second), ["chat test-model", "invoke_agent Writer", "step review"]);
    assert_eq!(
        names(&third),
        ["chat test-model", "invoke_agent Editor", "invoke_agent Writer", "run otel_crash_newsroom", "step write"]
    );

    // One trace, across the three processes.
    let trace = &first[0].trace_id;
    assert!(all.iter().all(|s| &s.trace_id == trace), "every process's spans are in the run's trace");

    // Process 1's execution starts the trace; its steps are under it.
    let run1 = one(&first, "run otel_crash_newsroom");
    assert!(run1.parent_span_id.is_empty(), "the first execution starts the trace");
    assert_eq!(text_attr(run1, "run_id"), run_id.to_string());
    let research = one(&first, "step research");
    let review1 = one(&first, "step review");
    for step in [research, review1] {
        assert_eq!(step.parent_span_id, run1.span_id, "{} under the first execution", step.name);
        assert_eq!(int_attr(step, "attempt"), 1);
    }
    let researcher = one(&first, "invoke_agent Researcher");
    assert_eq!(researcher.parent_span_id, research.span_id);
    assert_eq!(text_attr(researcher, "gen_ai.operation.name"), "invoke_agent");
    let tool = one(&first, "execute_tool lookup");
    assert_eq!(tool.parent_span_id, researcher.span_id);
    assert_eq!(text_attr(tool, "gen_ai.tool.name"), "lookup");
    let mut usage: Vec<(i64, i64)> = named(&first, "chat test-model")
        .into_iter()
        .inspect(|chat| assert_eq!(chat.parent_span_id, researcher.span_id))
        .map(chat_usage)
        .collect();
    usage.sort_unstable();
    assert_eq!(usage, [(30, 7), (40, 5)]);

    // Process 2's execution: its run span died with it. The step that took the answer and the
    // writer's call inside the killed `write` attempt were exported before the kill; their
    // parents are the lost run span and the lost step span.
    let exported = |id: &[u8]| all.iter().any(|s| s.span_id == id);
    let review2 = one(&second, "step review");
    assert_eq!(int_attr(review2, "attempt"), 1);
    let run2_id = review2.parent_span_id.as_slice();
    assert!(!run2_id.is_empty() && !exported(run2_id), "the killed execution's run span is lost with it");
    let writer2 = one(&second, "invoke_agent Writer");
    let write2_id = writer2.parent_span_id.as_slice();
    assert!(!write2_id.is_empty() && !exported(write2_id), "the killed `write` attempt's span is lost with it");
    assert_ne!(write2_id, run2_id);
    let chat2 = one(&second, "chat test-model");
    assert_eq!(chat2.parent_span_id, writer2.span_id);
    assert_eq!(chat_usage(chat2), (50, 9));

    // Process 3's execution continues the trace kept with the run: a child of the first.
    let run3 = one(&third, "run otel_crash_newsroom");
    assert_eq!(run3.parent_span_id, run1.span_id, "the third execution continues the first's trace");
    assert_ne!(run3.span_id.as_slice(), run2_id);
    assert_eq!(text_attr(run3, "run_id"), run_id.to_string());
    // The interrupted step's retry, under the execution that retried it. A kill is not a
    // failure, so the attempt that died does not count: the retry is attempt 1 again, a new
    // span with the same step key.
    let write3 = one(&third, "step write");
    assert_eq!(write3.parent_span_id, run3.span_id);
    assert_ne!(write3.span_id.as_slice(), write2_id);
    assert_eq!(int_attr(write3, "attempt"), 1);
    assert_eq!(text_attr(write3, "method"), "write");
    // The retry's writer call replayed from the journal: an agent span, no LLM call under it.
    let writer3 = one(&third, "invoke_agent Writer");
    assert_eq!(writer3.parent_span_id, write3.span_id);
    assert!(!all.iter().any(|s| s.parent_span_id == writer3.span_id), "a replayed call asks nobody");
    // The editor's call, made for real in the retried step, with its GenAI attributes.
    let editor = one(&third, "invoke_agent Editor");
    assert_eq!(editor.parent_span_id, write3.span_id);
    let chat3 = one(&third, "chat test-model");
    assert_eq!(parent_of(&third, chat3).span_id, editor.span_id);
    assert_eq!(chat_usage(chat3), (60, 11));
}
