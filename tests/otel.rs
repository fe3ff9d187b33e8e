//! OpenTelemetry (issue 21, point 4): a run exported through OTLP to a real receiver on
//! loopback, decoded with the official proto types. The run calls an agent that calls a tool,
//! pauses for a person, and is answered and resumed by a second runner on a store opened again
//! (as another process would): both executions are one trace, the resumed one a child of the
//! first, with a span per run execution, step attempt, LLM call and tool call carrying the
//! GenAI semantic-convention names and attributes.

mod otel_support;

use std::collections::HashMap;
use std::sync::Arc;

use flow_core::otel::SdkTracerProvider;
use flow_core::prelude::*;
use flow_core::store::SqliteStore;
use flow_llm::{Agent, FnTool, Match, Reply, TestServer, ToolError};
use opentelemetry_proto::tonic::trace::v1::Span;
use otel_support::{Received, chat_usage, int_attr, named, one, parent_of, receiver, text_attr};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Article {
    notes: String,
    text: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Topic {
    topic: String,
}

struct Newsroom {
    researcher: Agent,
    writer: Agent,
}

#[flow(state = Article, name = "otel_newsroom")]
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
        let text = self.writer.run(cx, format!("Write about: {notes}")).await?.raw;
        cx.update(move |s| s.text.clone_from(&text));
        Ok(())
    }
}

async fn flush(provider: &SdkTracerProvider, received: &Received, at_least: usize) -> TestResult {
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush()).await??;
    let mut count = received.count.subscribe();
    count.wait_for(|n| *n >= at_least).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_resumed_by_another_runner_is_one_trace_of_genai_spans() -> TestResult {
    let (endpoint, received) = receiver().await?;
    let provider = flow_core::otel::tracer_provider("otel-test", Some(&endpoint))?;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(flow_core::otel::layer(&provider)))?;

    let server = TestServer::start().await?;
    server.when(Match::has_tool_results()).reply(Reply::text("Otters hold hands.").usage(40, 5));
    server
        .when(Match::system_contains("Researcher"))
        .reply(Reply::tool_call("lookup", json!({"topic": "otters"})).usage(30, 7));
    server.when(Match::system_contains("Writer")).reply(Reply::text("Otters, hand in hand.").usage(50, 9));
    let newsroom = || -> Result<Newsroom, Box<dyn std::error::Error + Send + Sync>> {
        let lookup = FnTool::new("lookup", "Facts about a topic", |t: Topic| async move {
            Ok::<_, ToolError>(format!("{} hold hands while asleep", t.topic))
        })?;
        let llm = Arc::new(server.llm_builder().build()?);
        Ok(Newsroom {
            researcher: Agent::builder("Researcher", "Find facts", "Careful").llm(llm.clone()).tool(lookup).build()?,
            writer: Agent::builder("Writer", "Write articles", "Brief").llm(llm).build()?,
        })
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runs.db");

    // The first process: the run researches, then pauses for the editor.
    let first = Runner::new(newsroom()?).with_store(SqliteStore::open(&path).await?);
    let run_id = match first.kickoff(Article::default()).await? {
        RunOutcome::Paused(paused) => paused.run_id,
        other => panic!("expected the pause, got {other:?}"),
    };
    drop(first);
    flush(&provider, &received, 7).await?;

    // Another process, later: the editor answers and the run goes on from the store.
    let second = Runner::new(newsroom()?).with_store(SqliteStore::open(&path).await?);
    second.answer(run_id, true).await?;
    match second.resume(run_id).await? {
        RunOutcome::Completed(done) => assert_eq!(done.state.text, "Otters, hand in hand."),
        other => panic!("expected the completed run, got {other:?}"),
    }
    drop(second);
    flush(&provider, &received, 12).await?;
    assert_eq!(server.hits(), 3, "the resume asked the model only for the article");

    let spans = received.snapshot();
    let trace = &spans[0].trace_id;
    assert!(spans.iter().all(|s| &s.trace_id == trace), "one trace across the resume");

    // Two executions of the run; the one in the second process continues the first.
    let runs = named(&spans, "run otel_newsroom");
    let [first_run, second_run] = runs.as_slice() else { panic!("expected two executions, got {}", runs.len()) };
    let (first_run, second_run) =
        if first_run.parent_span_id.is_empty() { (*first_run, *second_run) } else { (*second_run, *first_run) };
    assert!(first_run.parent_span_id.is_empty(), "the first execution starts the trace");
    assert_eq!(second_run.parent_span_id, first_run.span_id, "the resumed execution is a child of the first");
    assert_eq!(text_attr(first_run, "run_id"), run_id.to_string());

    // Step attempts under their execution.
    let research = one(&spans, "step research");
    assert_eq!(research.parent_span_id, first_run.span_id);
    assert_eq!(int_attr(research, "attempt"), 1);
    let reviews = named(&spans, "step review");
    assert_eq!(reviews.len(), 2, "the review ran once to ask, once to take the answer");
    let mut parents: Vec<&[u8]> = reviews.iter().map(|r| r.parent_span_id.as_slice()).collect();
    parents.sort_unstable();
    let mut executions = [first_run.span_id.as_slice(), second_run.span_id.as_slice()];
    executions.sort_unstable();
    assert_eq!(parents, executions, "one review attempt under each execution");
    let write = one(&spans, "step write");
    assert_eq!(write.parent_span_id, second_run.span_id);

    // The researcher's agent: two LLM calls and the tool call between them, under its step.
    let agent = one(&spans, "invoke_agent Researcher");
    assert_eq!(agent.parent_span_id, research.span_id);
    assert_eq!(text_attr(agent, "gen_ai.operation.name"), "invoke_agent");
    let chats = named(&spans, "chat test-model");
    assert_eq!(chats.len(), 3, "one span per LLM call really made");
    let mut usage: Vec<(i64, i64)> = Vec::new();
    for chat in &chats {
        usage.push(chat_usage(chat));
        let step = parent_of(&spans, parent_of(&spans, chat));
        assert!(step.name == "step research" || step.name == "step write", "{} under {}", chat.name, step.name);
    }
    usage.sort_unstable();
    assert_eq!(usage, [(30, 7), (40, 5), (50, 9)]);
    let writer_chat = chats.iter().find(|c| parent_of(&spans, c).name == "invoke_agent Writer");
    let writer_chat = writer_chat.unwrap_or_else(|| panic!("the writer's call is under its agent"));
    assert_eq!(parent_of(&spans, parent_of(&spans, writer_chat)).span_id, write.span_id);

    let tool = one(&spans, "execute_tool lookup");
    assert_eq!(tool.parent_span_id, agent.span_id, "execute_tool under {}", parent_of(&spans, tool).name);
    assert_eq!(text_attr(tool, "gen_ai.operation.name"), "execute_tool");
    assert_eq!(text_attr(tool, "gen_ai.tool.name"), "lookup");
    assert!(!text_attr(tool, "gen_ai.tool.call.id").is_empty());
    // The tool ran between the researcher's two calls.
    let mut researcher_calls: Vec<&Span> =
        chats.iter().copied().filter(|c| c.parent_span_id == agent.span_id).collect();
    researcher_calls.sort_by_key(|c| c.start_time_unix_nano);
    let [asked, answered] = researcher_calls.as_slice() else { panic!("the researcher made two calls") };
    assert!(asked.end_time_unix_nano <= tool.start_time_unix_nano);
    assert!(tool.end_time_unix_nano <= answered.start_time_unix_nano);

    let by_name: HashMap<&str, usize> = spans.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.name.as_str()).or_default() += 1;
        m
    });
    assert_eq!(spans.len(), 12, "nothing else, nothing twice: {by_name:?}");
    tokio::task::spawn_blocking(move || provider.shutdown()).await??;
    Ok(())
}
