//! **Ticket routing**: many support tickets processed at once. Each run summarises its ticket,
//! routes it to a squad, saves it through a SQLite tool and notifies the squad through a chat
//! tool. When the notification fails for good, the saved ticket is deleted again (compensation),
//! so no squad owns a ticket it was never told about.
//!
//! ```text
//! summarise ─► route_ticket ─Billing / Technical / Security─► save_ticket ─► notify_squad
//!                                                                  ↶ delete_ticket (compensates save_ticket)
//! ```
//!
//! - All tickets run concurrently (one flow run each); every LLM call goes through one client
//!   whose [`ConcurrencyLimit`] bounds the requests in flight, whatever the number of runs. The
//!   offline server reports the most requests it saw at once.
//! - `save_ticket`, `delete_ticket` and `notify_squad` are [`flow_llm::Tool`]s (the same ones an
//!   agent could be given). The steps call them directly through [`Ctx::effect`], so each call
//!   is journaled and a re-run step replays it; the save passes the effect's idempotency key
//!   to the table, which ignores a repeat.
//! - The security squad's pager webhook is down: `notify_squad` retries, then fails, and the
//!   run's compensation runs `delete_ticket` with the saved ticket.
//!
//! Read it top down: the state, the flow, then the run. The offline LLM's scripted replies are
//! in `replies.rs` next to this file (with the sample tickets they answer), the helpdesk table
//! and the chat tools in `services.rs`, and what the binary prints in [`report`].

mod replies;
pub mod report;
mod services;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flow_core::console::{Detail, short_id};
use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_core::store::Store;
use flow_core::{RunStatus, TokenUsage};
use flow_llm::{Agent, ConcurrencyLimit, FnTool, Llm, LlmError, TestServer, Tool, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::error::ExampleError;
use crate::setup::{Setup, display_path};

pub use replies::{sample_tickets, script};
pub use services::{Helpdesk, notify_tool};

/// The run's typed state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TicketState {
    /// The ticket.
    pub ticket: Ticket,
    /// Its one-sentence summary.
    pub summary: Option<String>,
    /// The dispatcher's decision.
    pub triage: Option<Triage>,
    /// The saved row.
    pub saved: Option<SavedTicket>,
    /// The chat's delivery receipt.
    pub notified: Option<String>,
}

/// A support ticket as it arrives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Its id.
    pub id: String,
    /// Who wrote it.
    pub customer: String,
    /// The subject line.
    pub subject: String,
    /// The text.
    pub body: String,
}

/// The squad a ticket goes to: the routes of `route_ticket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Route)]
pub enum Squad {
    /// Invoices, payments, refunds, plans.
    Billing,
    /// Bugs, errors, performance, integrations.
    Technical,
    /// Suspicious access, leaked credentials, vulnerabilities.
    Security,
}

/// How urgent a ticket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Priority {
    /// Can wait a few days.
    Low,
    /// Within a working day.
    Normal,
    /// Now.
    Urgent,
}

/// The dispatcher's typed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Triage {
    /// Who handles it.
    pub squad: Squad,
    /// How urgent it is.
    pub priority: Priority,
    /// Why, in one sentence.
    pub reason: String,
}

/// A ticket as saved in the helpdesk table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTicket {
    /// The row's id.
    pub row_id: i64,
    /// The ticket's id.
    pub ticket_id: String,
    /// Its squad.
    pub squad: Squad,
}

/// The environment variable bounding the LLM requests in flight.
pub const MAX_IN_FLIGHT_ENV: &str = "TICKETS_MAX_LLM_IN_FLIGHT";
/// The bound when [`MAX_IN_FLIGHT_ENV`] is not set.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 3;

/// The flow: two agents and three tools.
pub struct TicketFlow {
    summariser: Agent,
    dispatcher: Agent,
    save: FnTool,
    delete: FnTool,
    notify: FnTool,
}

#[flow(
    state = TicketState,
    name = "ticket_routing",
    retry(attempts = 3, backoff = exponential("500ms", max = "10s"), jitter, invalid_reply = 2),
    timeout = "60s"
)]
impl TicketFlow {
    /// One sentence for the squad.
    #[start]
    async fn summarise(&self, cx: &Ctx<TicketState>) -> Result<String> {
        let t = cx.read(|s| s.ticket.clone());
        let prompt = format!("Summarise ticket {} in one sentence.\nSubject: {}\n\n{}", t.id, t.subject, t.body);
        let summary = self.summariser.run(cx, prompt).await?.raw;
        let kept = summary.clone();
        cx.update(move |s| s.summary = Some(kept.clone()));
        Ok(summary)
    }

    /// The squad and priority, as a typed answer; the squad is the route.
    #[router(summarise)]
    async fn route_ticket(&self, cx: &Ctx<TicketState>, summary: String) -> Result<Squad> {
        let t = cx.read(|s| s.ticket.clone());
        let prompt = format!("Route ticket {} from {}.\nSubject: {}\nSummary: {summary}", t.id, t.customer, t.subject);
        let triage: Triage = self.dispatcher.run_typed(cx, prompt).await?;
        let squad = triage.squad;
        cx.update(move |s| s.triage = Some(triage.clone()));
        Ok(squad)
    }

    /// Saves the ticket through the `save_ticket` tool.
    #[listen(or(Squad::Billing, Squad::Technical, Squad::Security))]
    async fn save_ticket(&self, cx: &Ctx<TicketState>, squad: Squad) -> Result<SavedTicket> {
        let (ticket_id, triage, summary) = cx.read(|s| (s.ticket.id.clone(), s.triage.clone(), s.summary.clone()));
        let priority = triage.map_or(Priority::Normal, |t| t.priority);
        let args = json!({ "ticket_id": ticket_id, "squad": squad, "priority": priority, "summary": summary.unwrap_or_default() });
        let reply = call_tool(cx, &self.save, args, true).await?;
        let row_id = serde_json::from_str::<serde_json::Value>(&reply)
            .ok()
            .and_then(|v| v["row_id"].as_i64())
            .ok_or_else(|| Error::permanent(format!("save_ticket answered {reply:?}, not a row")))?;
        let saved = SavedTicket { row_id, ticket_id, squad };
        let kept = saved.clone();
        cx.update(move |s| s.saved = Some(kept.clone()));
        Ok(saved)
    }

    /// Tells the squad through the `notify_squad` tool; retried, then fails the run, which
    /// deletes the saved ticket.
    #[listen(save_ticket, retry(attempts = 3, backoff = exponential("100ms", max = "400ms")))]
    async fn notify_squad(&self, cx: &Ctx<TicketState>, saved: SavedTicket) -> Result<String> {
        let (summary, priority) =
            cx.read(|s| (s.summary.clone().unwrap_or_default(), s.triage.as_ref().map(|t| t.priority)));
        let text = format!("[{priority:?}] {} (row {}): {summary}", saved.ticket_id, saved.row_id);
        let receipt =
            call_tool(cx, &self.notify, json!({ "channel": channel(saved.squad), "text": text }), false).await?;
        let kept = receipt.clone();
        cx.update(move |s| s.notified = Some(kept.clone()));
        Ok(receipt)
    }

    /// The undo of `save_ticket`: runs when the run fails after the ticket was saved.
    #[compensate(save_ticket, retry(attempts = 3, backoff = fixed("100ms")))]
    async fn delete_ticket(&self, cx: &Ctx<TicketState>, saved: SavedTicket) -> Result<()> {
        call_tool(cx, &self.delete, json!({ "row_id": saved.row_id }), false).await?;
        Ok(())
    }
}

impl TicketFlow {
    /// Builds the flow on `llm`, with the helpdesk's tools and a notifier whose `broken`
    /// channels are down.
    ///
    /// # Errors
    ///
    /// [`LlmError`] when an agent or tool cannot be built.
    pub fn new(llm: Arc<dyn Llm>, helpdesk: &Helpdesk, broken: Vec<String>) -> Result<Self, LlmError> {
        Ok(TicketFlow {
            summariser: Agent::builder(
                "Support Triage Agent",
                "Summarise support tickets in one factual sentence",
                "You read hundreds of tickets a day and keep only what matters.",
            )
            .llm(Arc::clone(&llm))
            .temperature(0.0)
            .build()?,
            dispatcher: Agent::builder(
                "Support Dispatcher",
                "Send each ticket to the squad that can solve it, with a fair priority",
                "Billing handles money, Technical handles the product, Security handles anything that smells of an attack.",
            )
            .llm(llm)
            .temperature(0.0)
            .build()?,
            save: helpdesk.save_tool()?,
            delete: helpdesk.delete_tool()?,
            notify: notify_tool(broken)?,
        })
    }
}

/// Calls `tool` as a journaled effect of the step: a re-run step gets the recorded result.
/// The effect's idempotency key is added to the arguments as `idempotency_key` when `keyed`.
/// A tool failure is transient (retried by the step's policy); bad arguments are permanent.
async fn call_tool(cx: &Ctx<TicketState>, tool: &dyn Tool, mut args: serde_json::Value, keyed: bool) -> Result<String> {
    cx.effect(tool.name(), |key| async move {
        if keyed {
            args["idempotency_key"] = json!(key);
        }
        tool.call(args).await.map_err(|e| match e {
            ToolError::InvalidArguments(_) => Error::permanent(format!("tool `{}`: {e}", tool.name())),
            e => Error::transient(format!("tool `{}`: {e}", tool.name())),
        })
    })
    .await
}

/// The chat channel of a squad.
pub fn channel(squad: Squad) -> &'static str {
    match squad {
        Squad::Billing => "#billing-queue",
        Squad::Technical => "#tech-support",
        Squad::Security => "#security-oncall",
    }
}

/// Which tickets to process, and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoint, database and trace.
    pub setup: Setup,
    /// The tickets, all processed at once.
    pub tickets: Vec<Ticket>,
    /// The most LLM requests in flight at any time, across all runs.
    pub max_llm_in_flight: usize,
    /// The offline server's answer time, so that requests overlap as they would against a real
    /// endpoint.
    pub offline_latency: Duration,
    /// Chat channels whose webhook is down.
    pub broken_channels: Vec<String>,
}

impl Config {
    /// The binary's configuration: [`Setup::from_env`] (with a milestones trace unless
    /// `FLOWS_TRACE` says otherwise), the bound from [`MAX_IN_FLIGHT_ENV`], [`sample_tickets`],
    /// the security pager down.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Env`] when [`MAX_IN_FLIGHT_ENV`] is not a positive whole number.
    pub fn from_env() -> Result<Self, ExampleError> {
        let mut setup = Setup::from_env();
        if std::env::var_os("FLOWS_TRACE").is_none() {
            setup.trace = Some(Detail::Milestones);
        }
        let mut config = Self::with_setup(setup);
        if let Ok(value) = std::env::var(MAX_IN_FLIGHT_ENV)
            && !value.trim().is_empty()
        {
            config.max_llm_in_flight = value.trim().parse().ok().filter(|n| *n > 0).ok_or(ExampleError::Env {
                name: MAX_IN_FLIGHT_ENV,
                value,
                reason: "expected a positive whole number".into(),
            })?;
        }
        Ok(config)
    }

    /// The tests' configuration: offline, runs (and the helpdesk table) next to `db`.
    pub fn offline(db: impl Into<PathBuf>) -> Self {
        Self::with_setup(Setup::offline(db))
    }

    fn with_setup(setup: Setup) -> Self {
        Config {
            setup,
            tickets: sample_tickets(),
            max_llm_in_flight: DEFAULT_MAX_IN_FLIGHT,
            offline_latency: Duration::from_millis(60),
            broken_channels: vec![channel(Squad::Security).to_owned()],
        }
    }
}

/// How one ticket's run went.
#[derive(Clone, Debug)]
pub struct TicketReport {
    /// The ticket.
    pub ticket_id: String,
    /// The run.
    pub run_id: Uuid,
    /// Its final state (read from the store when the run failed).
    pub state: TicketState,
    /// Its status as stored.
    pub stored_status: RunStatus,
    /// The run's error, when it failed.
    pub error: Option<String>,
    /// Whether a compensation step ran.
    pub compensated: bool,
    /// The routes taken.
    pub routes: Vec<String>,
    /// Every event of the run.
    pub events: Vec<FlowEvent>,
}

/// Where the batch ended.
#[derive(Debug)]
pub struct Outcome {
    /// One report per ticket, in the order given.
    pub tickets: Vec<TicketReport>,
    /// The bound on LLM requests in flight.
    pub max_llm_in_flight: usize,
    /// The most requests the offline server saw at once (`None` online).
    pub server_max_in_flight: Option<usize>,
    /// LLM requests the offline server answered (`None` online).
    pub llm_requests: Option<usize>,
    /// The ticket ids the batch left in the helpdesk table.
    pub saved_tickets: Vec<String>,
    /// Tokens used by the batch's LLM calls.
    pub usage: TokenUsage,
    /// Wall time of the batch.
    pub elapsed: Duration,
    /// Where runs are stored.
    pub db_path: PathBuf,
    /// The helpdesk's file.
    pub helpdesk_path: PathBuf,
    /// The LLM endpoint used.
    pub endpoint: String,
}

/// Processes every ticket concurrently.
///
/// # Errors
///
/// [`ExampleError`] when setting up fails or a run fails other than by its notification (a
/// compensated run is an expected outcome, reported per ticket).
pub async fn run(config: Config) -> Result<Outcome, ExampleError> {
    let trace = config.setup.console();
    let (store, db_path) = config.setup.open_store().await?;
    let helpdesk = Helpdesk::open(config.setup.sibling("helpdesk.db")?).await?;
    let latency = config.offline_latency;
    let limit = ConcurrencyLimit::new(config.max_llm_in_flight);
    let backend = config
        .setup
        .connect_llm(Some(limit), |server| {
            server.set_latency(latency);
            script(server);
        })
        .await?;
    trace.note(format!("LLM endpoint: {}", backend.endpoint()));
    trace.note(format!("runs are stored in {}; tickets in {}", display_path(&db_path), display_path(helpdesk.path())));
    trace.note(format!(
        "{} tickets at once, at most {} LLM requests in flight",
        config.tickets.len(),
        config.max_llm_in_flight
    ));

    let flow = TicketFlow::new(backend.llm.clone(), &helpdesk, config.broken_channels.clone())?;
    let runner = Runner::new(flow).with_store(store.clone());
    trace.follow(&runner);
    let started = std::time::Instant::now();
    let mut starts = runner.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    let mut run_ids = Vec::new();
    for ticket in &config.tickets {
        let r = runner.clone();
        let state = TicketState { ticket: ticket.clone(), ..TicketState::default() };
        tasks.spawn(async move { r.kickoff(state).await });
        // Runs start one after another (each waits for its first checkpoint), so the next
        // `RunStarted` is this ticket's: it names the run in the trace.
        let run_id = loop {
            match starts.recv().await {
                Ok(FlowEvent::RunStarted { run_id, resumed: false, .. }) => break run_id,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err(ExampleError::Unexpected("the runner's events stopped".into())),
            }
        };
        trace.note(format!("{} \"{}\" is run {}", ticket.id, ticket.subject, short_id(run_id)));
        run_ids.push(run_id);
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            // A compensated ticket is an outcome (`RunOutcome::Compensated`), reported per ticket.
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(ExampleError::Unexpected(format!("a ticket's task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed();
    trace.flush();

    let mut reports = Vec::new();
    let mut usage = TokenUsage::default();
    for (ticket, run_id) in config.tickets.iter().zip(&run_ids) {
        let record = store.load_run(*run_id).await?;
        let state: TicketState = record
            .snapshot
            .state_as()
            .map_err(|e| ExampleError::Unexpected(format!("run {run_id}: stored state does not fit: {e}")))?;
        let events = trace.events_of(*run_id);
        for event in &events {
            if let FlowEvent::LlmUsage { usage: u, .. } = event {
                usage.add(*u);
            }
        }
        reports.push(TicketReport {
            ticket_id: ticket.id.clone(),
            run_id: *run_id,
            state,
            stored_status: record.status,
            error: record.error,
            compensated: events.iter().any(|e| matches!(e, FlowEvent::Compensated { error: None, .. })),
            routes: trace.routes_of(*run_id),
            events,
        });
    }
    Ok(Outcome {
        tickets: reports,
        max_llm_in_flight: config.max_llm_in_flight,
        server_max_in_flight: backend.server().map(TestServer::max_in_flight),
        llm_requests: backend.server().map(TestServer::hits),
        saved_tickets: helpdesk.saved_by(&run_ids).await?,
        usage,
        elapsed,
        db_path,
        helpdesk_path: helpdesk.path().to_owned(),
        endpoint: backend.endpoint().to_owned(),
    })
}
