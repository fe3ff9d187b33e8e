//! **Content pipeline**: a research crew with structured output, a quality router that sends the
//! work back for deeper research at most twice, then writing and editing, over typed state.
//!
//! ```text
//! research ──► evaluate_quality ──Sufficient / BestEffort──► write_draft ──► edit
//!                 ▲        │
//!                 │   Insufficient
//!                 └── deepen_research
//! ```
//!
//! - `research` runs a two-agent [`Crew`]: a researcher that calls a `search_web` tool and an
//!   analyst whose answer is a typed [`ResearchBrief`] (summary, key statistics, sources,
//!   confidence) through strict structured output.
//! - `evaluate_quality` is a router over the brief: below the bar it routes to
//!   `deepen_research`, which runs the crew again focused on the gaps; after
//!   [`MAX_DEEPENING`] rounds it stops looping and routes to `BestEffort`, so the article is
//!   written with its caveats instead of the flow looping forever.
//! - `write_draft` and `edit` are single agents; the editor returns a typed [`Article`].
//!
//! Every LLM and tool call takes the method's `cx` as its journal, so a step that runs again
//! after a crash replays the calls it already paid for.
//!
//! Offline, the scripted analyst knows one topic well ([`DEFAULT_TOPIC`]: it becomes confident
//! on the third round); for any other topic it stays unsure, which shows the loop's cap.
//!
//! Read it top down: the state, the flow, then the run. The offline LLM's scripted replies are
//! in `replies.rs` next to this file, the `search_web` tool's corpus in `services.rs`, and what
//! the binary prints in [`report`].

mod replies;
pub mod report;
mod services;

use std::path::PathBuf;
use std::sync::Arc;

use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_core::store::Store;
use flow_core::stream::{Channels, RunItem, StreamItem};
use flow_core::{RunStatus, TokenUsage};
use flow_llm::{Agent, Crew, Inputs, Llm, Task, TaskContext, TestServer};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ExampleError;
use crate::setup::{Setup, display_path};

pub use replies::script;
pub use services::search_corpus;
use services::search_tool;

/// The run's typed state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentState {
    /// The topic.
    pub topic: String,
    /// The audience.
    pub audience: String,
    /// The latest research brief.
    pub research: Option<ResearchBrief>,
    /// Research rounds done (the first plus each deepening).
    pub research_rounds: u32,
    /// What the quality bar found missing in the latest brief.
    pub quality_gaps: Vec<String>,
    /// The quality router's latest verdict.
    pub verdict: Option<Quality>,
    /// Every quality check, in order.
    pub checks: Vec<QualityCheck>,
    /// The writer's draft.
    pub draft: Option<String>,
    /// The edited article.
    pub article: Option<Article>,
}

/// The analyst's structured answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResearchBrief {
    /// Three to five sentences on what the research found.
    pub summary: String,
    /// The figures an article should quote, each with its context.
    pub key_statistics: Vec<String>,
    /// Where the figures come from.
    pub sources: Vec<Source>,
    /// How sure the analyst is that the brief is accurate and complete, from 0 to 1.
    pub confidence: f64,
}

/// A source of the research.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Source {
    /// The document's title.
    pub title: String,
    /// Where it is.
    pub url: String,
}

/// The quality router's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Route)]
pub enum Quality {
    /// The brief meets the bar.
    Sufficient,
    /// The brief is below the bar and another research round is allowed.
    Insufficient,
    /// The brief is below the bar but the deepening rounds are used up: write with caveats.
    BestEffort,
}

/// One pass of the quality router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityCheck {
    /// The research round checked.
    pub round: u32,
    /// The analyst's confidence.
    pub confidence: f64,
    /// Sources found.
    pub sources: usize,
    /// Key statistics found.
    pub statistics: usize,
    /// What was missing.
    pub gaps: Vec<String>,
    /// The route taken.
    pub verdict: Quality,
}

/// The editor's structured answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Article {
    /// The headline.
    pub title: String,
    /// The article, in Markdown.
    pub body: String,
    /// What the editor changed, one line each.
    pub editor_notes: Vec<String>,
}

/// The topic the binary writes about (`CONTENT_TOPIC` overrides it).
pub const DEFAULT_TOPIC: &str = "heat pumps in cold climates";
/// The audience the binary writes for (`CONTENT_AUDIENCE` overrides it).
pub const DEFAULT_AUDIENCE: &str = "homeowners in northern Europe";
/// How many times the quality router may send the work back for deeper research.
pub const MAX_DEEPENING: u32 = 2;
/// The lowest analyst confidence the quality bar accepts.
pub const MIN_CONFIDENCE: f64 = 0.75;
/// The fewest sources the quality bar accepts.
pub const MIN_SOURCES: usize = 3;
/// The fewest key statistics the quality bar accepts.
pub const MIN_STATISTICS: usize = 3;

/// The flow: its agents and the research crew.
pub struct ContentFlow {
    research_crew: Crew,
    writer: Agent,
    editor: Agent,
}

#[flow(
    state = ContentState,
    name = "content_pipeline",
    retry(attempts = 3, backoff = exponential("500ms", max = "10s"), jitter, invalid_reply = 2),
    timeout = "180s"
)]
impl ContentFlow {
    /// The first research round.
    #[start]
    async fn research(&self, cx: &Ctx<ContentState>) -> Result<()> {
        self.research_round(cx, "Start with a broad overview: adoption, performance and costs.".into()).await
    }

    /// The quality bar: enough confidence, sources and statistics; loops back at most
    /// [`MAX_DEEPENING`] times.
    #[router(or(research, deepen_research))]
    async fn evaluate_quality(&self, cx: &Ctx<ContentState>) -> Result<Quality> {
        let (brief, rounds) = cx.read(|s| (s.research.clone(), s.research_rounds));
        let brief = brief.ok_or_else(|| Error::permanent("evaluate_quality ran without a research brief"))?;
        let gaps = quality_gaps(&brief);
        let verdict = if gaps.is_empty() {
            Quality::Sufficient
        } else if rounds <= MAX_DEEPENING {
            Quality::Insufficient
        } else {
            Quality::BestEffort
        };
        let check = QualityCheck {
            round: rounds,
            confidence: brief.confidence,
            sources: brief.sources.len(),
            statistics: brief.key_statistics.len(),
            gaps: gaps.clone(),
            verdict,
        };
        cx.update(move |s| {
            s.quality_gaps = gaps.clone();
            s.verdict = Some(verdict);
            s.checks.push(check.clone());
        });
        Ok(verdict)
    }

    /// Another research round, focused on what the bar found missing.
    #[listen(Quality::Insufficient)]
    async fn deepen_research(&self, cx: &Ctx<ContentState>) -> Result<()> {
        let gaps = cx.read(|s| s.quality_gaps.join("; "));
        let focus = format!(
            "The previous brief fell short: {gaps}. Dig deeper: find more independent sources and concrete figures."
        );
        self.research_round(cx, focus).await
    }

    /// The draft, from the brief; with caveats when the research stayed below the bar.
    #[listen(or(Quality::Sufficient, Quality::BestEffort))]
    async fn write_draft(&self, cx: &Ctx<ContentState>, quality: Quality) -> Result<String> {
        let (topic, audience, brief, gaps) =
            cx.read(|s| (s.topic.clone(), s.audience.clone(), s.research.clone(), s.quality_gaps.clone()));
        let brief = serde_json::to_string_pretty(&brief).map_err(|e| Error::permanent(e.to_string()))?;
        let mut prompt = format!(
            "Write a 400-word article about {topic} for {audience}, in Markdown, from this research brief:\n{brief}"
        );
        if quality == Quality::BestEffort {
            prompt.push_str(&format!(
                "\n\nThe research stayed below our quality bar ({}). Say plainly what is uncertain and do not overclaim.",
                gaps.join("; ")
            ));
        }
        let draft = self.writer.run(cx, prompt).await?.raw;
        let kept = draft.clone();
        cx.update(move |s| s.draft = Some(kept.clone()));
        Ok(draft)
    }

    /// The edited, typed article.
    #[listen(write_draft)]
    async fn edit(&self, cx: &Ctx<ContentState>, draft: String) -> Result<Article> {
        let topic = cx.read(|s| s.topic.clone());
        let prompt = format!(
            "Edit this draft about {topic}: tighten it, check every figure against the brief it cites, keep caveats. Give the headline, the body and what you changed.\n\n{draft}"
        );
        let article: Article = self.editor.run_typed(cx, prompt).await?;
        let kept = article.clone();
        cx.update(move |s| s.article = Some(kept.clone()));
        Ok(article)
    }
}

impl ContentFlow {
    /// Builds the agents and the crew on `llm`.
    ///
    /// # Errors
    ///
    /// [`flow_llm::LlmError`] when an agent, tool or typed output cannot be built.
    pub fn new(llm: Arc<dyn Llm>) -> Result<Self, flow_llm::LlmError> {
        let researcher = Agent::builder(
            "Senior Research Analyst",
            "Find current, sourced figures about {topic}",
            "You have spent a decade fact-checking energy and technology reporting. You never quote a figure without its source.",
        )
        .llm(Arc::clone(&llm))
        .tool(search_tool()?)
        .max_iter(4)
        .build()?;
        let analyst = Agent::builder(
            "Research Synthesiser",
            "Turn research notes on {topic} into a brief a writer can trust",
            "You are a sceptical editor-analyst. You rate your confidence honestly and low when sources are thin.",
        )
        .llm(Arc::clone(&llm))
        .temperature(0.0)
        .build()?;
        let research_crew = Crew::builder()
            .task(
                Task::new(
                    "Research round {round} on \"{topic}\" for {audience}. {focus}\nUse the search_web tool, then report what you found.",
                    "Research notes: the key figures, each with the title and URL of its source.",
                )
                .name("gather")
                .agent(&researcher),
            )
            .task(
                Task::new(
                    "Write the research brief on \"{topic}\" for round {round} from the notes.",
                    "A summary, the key statistics, the sources (title and URL) and your confidence from 0 to 1 that the brief is accurate and complete enough to write from.",
                )
                .name("synthesise")
                .agent(&analyst)
                .context(TaskContext::Tasks(vec!["gather".into()]))
                .output::<ResearchBrief>()?,
            )
            .build()?;
        let writer = Agent::builder(
            "Content Writer",
            "Write clear, accurate articles for {audience}",
            "You turn research into plain-spoken articles and never overstate what the sources support.",
        )
        .llm(Arc::clone(&llm))
        .build()?;
        let editor = Agent::builder(
            "Senior Editor",
            "Make articles tight, correct and honest about uncertainty",
            "You have edited a consumer-advice magazine for fifteen years.",
        )
        .llm(llm)
        .temperature(0.0)
        .build()?;
        Ok(ContentFlow { research_crew, writer, editor })
    }

    /// One research round: the crew's typed brief replaces the previous one.
    async fn research_round(&self, cx: &Ctx<ContentState>, focus: String) -> Result<()> {
        let (topic, audience, round) = cx.read(|s| (s.topic.clone(), s.audience.clone(), s.research_rounds + 1));
        let inputs =
            Inputs::new().with("topic", &topic).with("audience", &audience).with("round", round).with("focus", &focus);
        let out = self.research_crew.kickoff(cx, &inputs).await?;
        let brief: ResearchBrief = out.value()?;
        cx.update(move |s| {
            s.research = Some(brief.clone());
            s.research_rounds = round;
        });
        Ok(())
    }
}

/// What the quality bar finds missing in a brief (empty: the brief passes).
pub fn quality_gaps(brief: &ResearchBrief) -> Vec<String> {
    let mut gaps = Vec::new();
    if brief.confidence < MIN_CONFIDENCE {
        gaps.push(format!("confidence {:.2} is below {MIN_CONFIDENCE:.2}", brief.confidence));
    }
    if brief.sources.len() < MIN_SOURCES {
        gaps.push(format!("{} source(s), need at least {MIN_SOURCES}", brief.sources.len()));
    }
    if brief.key_statistics.len() < MIN_STATISTICS {
        gaps.push(format!("{} key statistic(s), need at least {MIN_STATISTICS}", brief.key_statistics.len()));
    }
    gaps
}

/// What to write about, and where.
#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoint, database and trace.
    pub setup: Setup,
    /// The article's topic.
    pub topic: String,
    /// Who it is for.
    pub audience: String,
}

impl Config {
    /// The binary's configuration: [`Setup::from_env`], `CONTENT_TOPIC` and `CONTENT_AUDIENCE`.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
        };
        Config {
            setup: Setup::from_env(),
            topic: var("CONTENT_TOPIC", DEFAULT_TOPIC),
            audience: var("CONTENT_AUDIENCE", DEFAULT_AUDIENCE),
        }
    }

    /// The tests' configuration: offline, runs in `db`, the default topic.
    pub fn offline(db: impl Into<PathBuf>) -> Self {
        Config { setup: Setup::offline(db), topic: DEFAULT_TOPIC.into(), audience: DEFAULT_AUDIENCE.into() }
    }
}

/// Where a run of the content pipeline ended.
#[derive(Debug)]
pub struct Outcome {
    /// The run.
    pub run_id: Uuid,
    /// Its status as stored.
    pub stored_status: RunStatus,
    /// The final state.
    pub state: ContentState,
    /// The routes taken, `router → Enum::Variant`, in order.
    pub routes: Vec<String>,
    /// Tokens used by the run's LLM calls.
    pub usage: TokenUsage,
    /// LLM requests the offline server answered (`None` online).
    pub llm_requests: Option<usize>,
    /// Where runs are stored.
    pub db_path: PathBuf,
    /// The LLM endpoint used.
    pub endpoint: String,
    /// Every event of the run.
    pub events: Vec<FlowEvent>,
}

/// Runs the pipeline once on `config.topic`.
///
/// # Errors
///
/// [`ExampleError`] when the store or the endpoint cannot be set up, or the run fails.
pub async fn run(config: Config) -> Result<Outcome, ExampleError> {
    run_streaming(config, |_| {}).await
}

/// The article's draft as [`run_streaming`] hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Draft<'a> {
    /// The next piece, as the writer's model streamed it.
    Token(&'a str),
    /// The draft is complete.
    Done,
}

/// Runs the pipeline once on `config.topic`, handing `on_draft` each piece of the article's
/// draft as the writer's model streams it (through [`Runner::stream`]'s token channel), while
/// the call is still going, then [`Draft::Done`]. The trace's lines about earlier events are
/// printed before the first piece.
///
/// # Errors
///
/// As [`run`].
pub async fn run_streaming(config: Config, mut on_draft: impl FnMut(Draft<'_>)) -> Result<Outcome, ExampleError> {
    let trace = config.setup.console();
    let (store, db_path) = config.setup.open_store().await?;
    let topic = config.topic.clone();
    let backend = config.setup.connect_llm(None, |server| script(server, &topic)).await?;
    trace.note(format!("LLM endpoint: {}", backend.endpoint()));
    trace.note(format!("runs are stored in {}", display_path(&db_path)));

    let runner = Runner::new(ContentFlow::new(backend.llm.clone())?).with_store(store.clone());
    trace.follow(&runner);
    let initial = ContentState { topic: config.topic.clone(), audience: config.audience.clone(), ..Default::default() };
    let mut items = std::pin::pin!(runner.stream(initial, Channels::TOKENS | Channels::OUTPUTS));
    let (mut finished, mut drafting) = (None, false);
    while let Some(item) = items.next().await {
        match item {
            StreamItem::Item { item: RunItem::Token { method, delta, .. }, .. } if method == "write_draft" => {
                if !drafting {
                    drafting = true;
                    trace.flush();
                }
                on_draft(Draft::Token(&delta));
            }
            StreamItem::Item { item: RunItem::Output { method, .. }, .. } if method == "write_draft" && drafting => {
                drafting = false;
                on_draft(Draft::Done);
            }
            StreamItem::Finished(outcome) => finished = Some(outcome),
            _ => {}
        }
    }
    let Some(outcome) = finished else {
        return Err(ExampleError::Unexpected("the run's stream ended without its outcome".to_owned()));
    };
    let result = outcome?.completed()?;
    let stored_status = store.load_run(result.run_id).await?.status;

    Ok(Outcome {
        run_id: result.run_id,
        stored_status,
        routes: trace.routes_of(result.run_id),
        events: trace.events_of(result.run_id),
        state: result.state,
        usage: result.usage,
        llm_requests: backend.server().map(TestServer::hits),
        db_path,
        endpoint: backend.endpoint().to_owned(),
    })
}
