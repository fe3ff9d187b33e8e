//! **Order return**: validate the order, check eligibility (outside the 60-day window a person
//! decides), create a return label, send a confirmation email, restock, refund. Each step has
//! its own failure policy, and the run survives a crash.
//!
//! ```text
//! validate_order ─► check_eligibility ─► create_return_label ─┬─► send_confirmation   (non-critical)
//!                     (escalates > 60 d)   (retries, timeout)   └─► restock_inventory ─► refund
//! ```
//!
//! - `check_eligibility` returns [`Error::escalate`] for a late return: the run ends as
//!   escalated (stored, with the reason), neither failed nor paused.
//! - `create_return_label` calls a flaky carrier API ([`LabelService`]): the first call gets a
//!   503, the second hangs past the step's 1 s timeout, the third succeeds; the step retries
//!   with exponential backoff and jitter.
//! - `send_confirmation` is `non_critical` and the mail relay is down: its failure is recorded
//!   on the run and the refund still happens. It is a side branch, so nothing waits for it.
//! - `restock_inventory` and `refund` change another system ([`Shop`], a SQLite file): their
//!   calls are journaled effects keyed by an idempotency key, so a re-run after a crash replays
//!   them or, when the crash hit the call in flight, the shop recognises the repeat.
//!
//! The crash: [`run`] starts the first return in a child process (the example binary re-runs
//! itself), kills it with SIGKILL while `restock_inventory` is talking to the warehouse, waits
//! for the dead process's lease to expire and resumes the stored run in this process.
//! [`CrashMode::InProcess`] does the same without a child process: it drops the execution
//! mid-step and resumes in a fresh runner.
//!
//! Read it top down: the state, the flow, then the run. The offline LLM's scripted replies are
//! in `replies.rs` next to this file, the carrier, the mail relay, the order book and the shop
//! in `services.rs`, the customers' emails in `samples.rs`, the staged crash (the child process
//! and its killing) in `crash.rs`, and what the binary prints in [`report`].

mod crash;
mod replies;
pub mod report;
mod samples;
mod services;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_core::console::{Console, human_duration};
use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_core::store::{SqliteStore, StepRecord, StepStatus, Store};
use flow_core::{RecordedFailure, RunStatus, TokenUsage};
use flow_llm::{Agent, Llm, LlmError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ExampleError;
use crate::setup::{Setup, display_path};

pub use crash::{CHILD_ENV, child_main, is_child};
use crash::{kill_when_restocking, now_ms, restocking_run, spawn_child};
pub use replies::script;
pub use samples::sample_messages;
pub use services::{LabelService, MailRelay, Shop, ShopRow, find_order};

/// The run's typed state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReturnState {
    /// The customer's email.
    pub message: CustomerMessage,
    /// What it asks for.
    pub request: Option<ReturnRequest>,
    /// The order it refers to.
    pub order: Option<Order>,
    /// The return label.
    pub label: Option<ReturnLabel>,
    /// Whether the confirmation email went out.
    pub confirmation_sent: bool,
    /// The restock.
    pub restock: Option<StockMovement>,
    /// The refund's id at the payment provider.
    pub refund_id: Option<String>,
}

/// A customer's email to the returns desk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerMessage {
    /// The sender.
    pub from: String,
    /// What they wrote.
    pub text: String,
}

/// What the intake agent reads out of the customer's email.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReturnRequest {
    /// The order number as written, e.g. `ORD-1234`.
    pub order_number: String,
    /// The item to return.
    pub item: String,
    /// Why.
    pub reason: ReturnReason,
}

/// Why an item comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReturnReason {
    /// Wrong size or fit.
    WrongSize,
    /// Broken or faulty.
    Defective,
    /// Not what the listing described.
    NotAsDescribed,
    /// The customer does not want it any more.
    ChangedMind,
}

/// An order in the order system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Its number.
    pub number: String,
    /// The buyer's email.
    pub email: String,
    /// The buyer's name.
    pub customer: String,
    /// The stock keeping unit.
    pub sku: String,
    /// What it is.
    pub item: String,
    /// What was paid, in cents.
    pub amount_cents: i64,
    /// Days since delivery.
    pub delivered_days_ago: u32,
}

/// A carrier's return label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReturnLabel {
    /// The carrier.
    pub carrier: String,
    /// Its tracking number.
    pub tracking: String,
}

/// What the warehouse recorded for a restock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockMovement {
    /// The movement's id in the warehouse.
    pub id: i64,
    /// How many times the warehouse received this request (more than 1: a repeat after a
    /// crash, recognised by its idempotency key and applied once).
    pub requests: u32,
}

/// Days after delivery within which a return needs no person.
pub const RETURN_WINDOW_DAYS: u32 = 60;
/// The order whose return crashes and resumes.
pub const CRASHING_ORDER: &str = "ORD-1042";
/// The order whose return is too late and escalates.
pub const LATE_ORDER: &str = "ORD-0977";
/// How long the warehouse takes to acknowledge a restock (the crash lands in this window).
pub const WAREHOUSE_ACK: Duration = Duration::from_millis(400);

/// The flow: its agents and the systems it talks to.
pub struct ReturnFlow {
    intake: Agent,
    writer: Agent,
    labels: LabelService,
    mail: MailRelay,
    shop: Shop,
}

#[flow(state = ReturnState, name = "order_return", timeout = "60s")]
impl ReturnFlow {
    /// Reads the email into a typed request and finds the order; a request for an order that
    /// does not exist, or not the sender's, fails permanently.
    #[start(retry(attempts = 3, backoff = exponential("500ms", max = "5s"), invalid_reply = 2))]
    async fn validate_order(&self, cx: &Ctx<ReturnState>) -> Result<()> {
        let message = cx.read(|s| s.message.clone());
        let prompt = format!("Read this return request.\nFrom: {}\n\n{}", message.from, message.text);
        let request: ReturnRequest = self.intake.run_typed(cx, prompt).await?;
        let order = find_order(&request.order_number)
            .ok_or_else(|| Error::permanent(format!("order {} does not exist", request.order_number)))?;
        if !order.email.eq_ignore_ascii_case(&message.from) {
            return Err(Error::permanent(format!("{} did not place order {}", message.from, order.number)));
        }
        cx.update(move |s| {
            s.request = Some(request.clone());
            s.order = Some(order.clone());
        });
        Ok(())
    }

    /// Within the window: go on. Outside: a person decides on a goodwill exception.
    #[listen(validate_order)]
    async fn check_eligibility(&self, cx: &Ctx<ReturnState>) -> Result<()> {
        let order = cx.read(|s| s.order.clone()).ok_or_else(|| Error::permanent("no order"))?;
        if order.delivered_days_ago > RETURN_WINDOW_DAYS {
            return Err(Error::escalate(format!(
                "{} was delivered {} days ago, outside the {RETURN_WINDOW_DAYS}-day return window: a person decides on a goodwill exception",
                order.number, order.delivered_days_ago
            )));
        }
        Ok(())
    }

    /// The carrier's label: retried on 503s and on hangs cut off by the 1 s timeout.
    #[listen(check_eligibility, retry(attempts = 4, backoff = exponential("200ms", max = "2s"), jitter), timeout = "1s")]
    async fn create_return_label(&self, cx: &Ctx<ReturnState>) -> Result<ReturnLabel> {
        let order = cx.read(|s| s.order.as_ref().map(|o| o.number.clone())).unwrap_or_default();
        let label = self.labels.create(&order, &cx.idempotency_key()).await?;
        let kept = label.clone();
        cx.update(move |s| s.label = Some(kept.clone()));
        Ok(label)
    }

    /// Non-critical: if the mail relay stays down, the failure is recorded and the return goes
    /// on. The drafted text is journaled, so the retry does not pay for the LLM call again.
    #[listen(create_return_label, non_critical, retry(attempts = 2, backoff = fixed("200ms")))]
    async fn send_confirmation(&self, cx: &Ctx<ReturnState>, label: ReturnLabel) -> Result<()> {
        let (message, order) = cx.read(|s| (s.message.clone(), s.order.clone()));
        let order = order.ok_or_else(|| Error::permanent("no order"))?;
        let prompt = format!(
            "Write the confirmation email for the return of {} (order {}) to {}. Label: {} tracking {}. The refund follows once the parcel is scanned.",
            order.item, order.number, order.customer, label.carrier, label.tracking
        );
        let body = self.writer.run(cx, prompt).await?.raw;
        self.mail.send(&message.from, &body).await?;
        cx.update(|s| s.confirmation_sent = true);
        Ok(())
    }

    /// Puts the item back in stock through the warehouse (a journaled effect).
    #[listen(create_return_label, retry(attempts = 3, backoff = exponential("500ms", max = "5s")))]
    async fn restock_inventory(&self, cx: &Ctx<ReturnState>) -> Result<()> {
        let order = cx.read(|s| s.order.clone()).ok_or_else(|| Error::permanent("no order"))?;
        let shop = self.shop.clone();
        let movement: StockMovement = cx
            .effect("warehouse.restock", |key| async move { shop.restock(key, order.number, order.sku, 1).await })
            .await?;
        cx.update(move |s| s.restock = Some(movement.clone()));
        Ok(())
    }

    /// Refunds the customer through the payment provider (a journaled effect).
    #[listen(restock_inventory, retry(attempts = 5, backoff = exponential("1s", max = "30s")))]
    async fn refund(&self, cx: &Ctx<ReturnState>) -> Result<String> {
        let order = cx.read(|s| s.order.clone()).ok_or_else(|| Error::permanent("no order"))?;
        let shop = self.shop.clone();
        let refund_id: String = cx
            .effect("payments.refund", |key| async move { shop.refund(key, order.number, order.amount_cents).await })
            .await?;
        let kept = refund_id.clone();
        cx.update(move |s| s.refund_id = Some(kept.clone()));
        Ok(refund_id)
    }
}

impl ReturnFlow {
    /// Builds the flow on `llm` and `shop`.
    ///
    /// # Errors
    ///
    /// [`LlmError`] when an agent cannot be built.
    pub fn new(llm: Arc<dyn Llm>, shop: Shop, mail_relay_down: bool) -> Result<Self, LlmError> {
        Ok(ReturnFlow {
            intake: Agent::builder(
                "Returns Desk Assistant",
                "Read customers' return requests precisely",
                "You read customer emails and never invent order numbers.",
            )
            .llm(Arc::clone(&llm))
            .temperature(0.0)
            .build()?,
            writer: Agent::builder(
                "Customer Care Writer",
                "Write short, warm, clear emails",
                "You write the shop's customer emails.",
            )
            .llm(llm)
            .build()?,
            labels: LabelService::default(),
            mail: MailRelay { down: mail_relay_down },
            shop,
        })
    }
}

/// How the example crashes the first return.
#[derive(Clone, Debug)]
pub enum CrashMode {
    /// Re-executes `program args` as a child process (with [`CHILD_ENV`] set) that starts the
    /// run; SIGKILLs it while `restock_inventory` waits for the warehouse; resumes here.
    ChildProcess {
        /// The program: the example binary itself, or a test binary.
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Drops the execution in this process at the same point (as a crash would: nothing runs
    /// on, the lease is no longer renewed) and resumes in a fresh runner.
    InProcess,
}

/// How to run the example.
#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoint, database and trace.
    pub setup: Setup,
    /// How the first return crashes.
    pub crash: CrashMode,
    /// How long a run's lease lasts without renewal: how soon another process may take over
    /// the run of one that died. Short here so the example does not wait long.
    pub lease: Duration,
    /// Whether the mail relay is down (so the non-critical email fails).
    pub mail_relay_down: bool,
}

impl Config {
    /// The binary's configuration: [`Setup::from_env`], a child process that is the binary
    /// itself, a 1 s lease, the mail relay down.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Io`] when the binary's own path cannot be found.
    pub fn from_env() -> Result<Self, ExampleError> {
        Ok(Config {
            setup: Setup::from_env(),
            crash: CrashMode::ChildProcess { program: std::env::current_exe()?, args: Vec::new() },
            lease: Duration::from_secs(1),
            mail_relay_down: true,
        })
    }

    /// The tests' configuration: offline, runs in `db`, an in-process crash, a 2 s lease (long
    /// enough that the resume still finds the dead execution's lease on a busy machine).
    pub fn offline(db: impl Into<PathBuf>) -> Self {
        Config {
            setup: Setup::offline(db),
            crash: CrashMode::InProcess,
            lease: Duration::from_secs(2),
            mail_relay_down: true,
        }
    }
}

/// How the crash happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Crash {
    /// A child process ran the first part and was killed with SIGKILL.
    ChildKilled {
        /// Its process id.
        pid: u32,
    },
    /// The execution was dropped in this process.
    ExecutionDropped,
}

/// How one return's run went.
#[derive(Clone, Debug)]
pub struct ReturnReport {
    /// The run.
    pub run_id: Uuid,
    /// Its final state.
    pub state: ReturnState,
    /// Its status as stored.
    pub stored_status: RunStatus,
    /// Its steps as stored.
    pub steps: Vec<StepRecord>,
    /// Failures of non-critical steps.
    pub failures: Vec<RecordedFailure>,
    /// Why it escalated, when it did.
    pub escalation: Option<String>,
    /// The events this process saw (a child process's events stay in the child's output).
    pub events: Vec<FlowEvent>,
}

/// Where the example ended.
#[derive(Debug)]
pub struct Outcome {
    /// How the first return crashed.
    pub crash: Crash,
    /// The steps the stored run had yet to finish when it crashed, read from the store before
    /// the resume: the one in flight is among them.
    pub crashed_in: Vec<String>,
    /// How often the resume was refused because the dead execution's lease was still held.
    pub lease_refusals: u32,
    /// How long the resume waited for the dead execution's lease to expire.
    pub waited_for_lease: Duration,
    /// The first return: crashed, resumed, completed.
    pub returned: ReturnReport,
    /// The second return: escalated.
    pub escalated: ReturnReport,
    /// The first return's stock movements in the shop.
    pub stock_movements: Vec<ShopRow>,
    /// The first return's refunds in the shop.
    pub refunds: Vec<ShopRow>,
    /// Tokens used by LLM calls this process made.
    pub usage: TokenUsage,
    /// Where runs are stored.
    pub db_path: PathBuf,
    /// The shop's file.
    pub shop_path: PathBuf,
    /// The LLM endpoint used.
    pub endpoint: String,
}

/// Runs the example: the first return crashes mid-run (see [`CrashMode`]) and is resumed from
/// the store; the second is outside the return window and escalates.
///
/// # Errors
///
/// [`ExampleError`] when setting up fails, a run fails, or the crash does not happen as staged.
pub async fn run(config: Config) -> Result<Outcome, ExampleError> {
    let trace = config.setup.console();
    let (store, db_path) = config.setup.open_store().await?;
    let shop = Shop::open(config.setup.sibling("shop.db")?).await?;
    let backend = config.setup.connect_llm(None, script).await?;
    let llm: Arc<dyn Llm> = backend.llm.clone();
    trace.note(format!("LLM endpoint: {}", backend.endpoint()));
    trace.note(format!(
        "runs are stored in {}; the shop's warehouse and payments in {}",
        display_path(&db_path),
        display_path(shop.path())
    ));
    let [first, late] = sample_messages();

    // 1. The first return, crashed while restock_inventory waits for the warehouse.
    let started_ms = now_ms();
    let (run_id, crash) = match &config.crash {
        CrashMode::ChildProcess { program, args } => {
            let child = spawn_child(&config, &db_path, program, args)?;
            let pid = child.id().unwrap_or_default();
            trace.note(format!(
                "return of {CRASHING_ORDER}: started in child process {pid}, which will be killed with SIGKILL while restock_inventory waits for the warehouse"
            ));
            let run_id = kill_when_restocking(child, &store, &shop, started_ms).await?;
            trace.note(format!(
                "SIGKILL sent: child process {pid} is dead; its run {run_id} is left `running` in the store"
            ));
            (run_id, Crash::ChildKilled { pid })
        }
        CrashMode::InProcess => {
            let flow = ReturnFlow::new(Arc::clone(&llm), shop.clone(), config.mail_relay_down)?;
            let runner = Runner::new(flow).with_store(store.clone()).lease(config.lease);
            trace.follow(&runner);
            trace.note(format!(
                "return of {CRASHING_ORDER}: the execution will be dropped (an in-process crash) while restock_inventory waits for the warehouse"
            ));
            let kickoff = runner.kickoff(ReturnState { message: first, ..ReturnState::default() });
            let run_id = tokio::select! {
                outcome = kickoff => {
                    return Err(ExampleError::Unexpected(format!(
                        "the run ended ({}) before the staged crash",
                        outcome.map(|o| o.status().to_string()).unwrap_or_else(|e| e.to_string())
                    )));
                }
                found = restocking_run(&store, &shop, started_ms) => found?,
            };
            trace.note(format!(
                "crash: the execution of run {run_id} was dropped mid-step; no process renews its lease"
            ));
            (run_id, Crash::ExecutionDropped)
        }
    };

    // A fresh runner on a freshly opened store: what a restarted process would do.
    let (fresh_store, _) = config.setup.open_store().await?;
    let flow = ReturnFlow::new(Arc::clone(&llm), shop.clone(), config.mail_relay_down)?;
    let fresh = Runner::new(flow).with_store(fresh_store).lease(config.lease);
    trace.follow(&fresh);
    let crashed_in: Vec<String> = fresh
        .steps(run_id)
        .await?
        .into_iter()
        .filter(|s| !matches!(s.status, StepStatus::Completed | StepStatus::Skipped))
        .map(|s| s.method)
        .collect();
    let waited = Instant::now();
    let mut lease_refusals = 0;
    let outcome = loop {
        match fresh.resume(run_id).await {
            Err(FlowError::RunLocked { owner, expires_at_ms, .. }) => {
                lease_refusals += 1;
                let wait_ms = (expires_at_ms - now_ms()).clamp(10, 5_000);
                trace.note(format!(
                    "the run is still leased to {owner} for {}; waiting for the lease to expire",
                    human_duration(Duration::from_millis(wait_ms.unsigned_abs()))
                ));
                tokio::time::sleep(Duration::from_millis(wait_ms.unsigned_abs() + 20)).await;
            }
            other => break other?,
        }
    };
    let waited_for_lease = waited.elapsed();
    let RunOutcome::Completed(result) = outcome else {
        return Err(ExampleError::Unexpected(format!("the resumed run ended {}", outcome.status())));
    };
    let returned = report(&store, &trace, run_id, result.state, result.failures, None).await?;

    // 2. The late return: escalates to a person.
    trace.note(format!("return of {LATE_ORDER}: delivered 75 days ago"));
    let late_outcome = fresh.kickoff(ReturnState { message: late, ..ReturnState::default() }).await?;
    let RunOutcome::Escalated(escalated) = late_outcome else {
        return Err(ExampleError::Unexpected(format!("the late return ended {}", late_outcome.status())));
    };
    let escalated =
        report(&store, &trace, escalated.run_id, escalated.state, Vec::new(), Some(escalated.reason)).await?;
    trace.flush();

    let mut usage = TokenUsage::default();
    for event in trace.events() {
        if let FlowEvent::LlmUsage { usage: u, .. } = event {
            usage.add(u);
        }
    }
    Ok(Outcome {
        crash,
        crashed_in,
        lease_refusals,
        waited_for_lease,
        stock_movements: shop.stock_movements(run_id).await?,
        refunds: shop.refunds(run_id).await?,
        returned,
        escalated,
        usage,
        db_path,
        shop_path: shop.path().to_owned(),
        endpoint: backend.endpoint().to_owned(),
    })
}

async fn report(
    store: &SqliteStore,
    trace: &Console,
    run_id: Uuid,
    state: ReturnState,
    failures: Vec<RecordedFailure>,
    escalation: Option<String>,
) -> Result<ReturnReport, ExampleError> {
    Ok(ReturnReport {
        run_id,
        state,
        stored_status: store.load_run(run_id).await?.status,
        steps: store.steps(run_id).await?,
        failures,
        escalation,
        events: trace.events_of(run_id),
    })
}
