//! **Invoice processing**: an LLM extracts the invoice with a confidence, and a router decides
//! how much autonomy the flow has: standard invoices are approved automatically, high-value
//! ones wait for a person, low-confidence extractions get a second, more careful extraction.
//!
//! ```text
//! extract ──► triage ──Standard────────► auto_approve ──────────┐
//!               ▲   ├─HighValue / StillUnclear─► human_review ─Approved─► post_to_ledger
//!               │   └─LowConfidence─► fallback_extraction        └Rejected─► reject
//!               └───────────────────────────┘
//! ```
//!
//! The autonomy threshold comes from the environment (`INVOICE_AUTO_APPROVE_LIMIT`, default
//! [`DEFAULT_AUTO_APPROVE_LIMIT`]), so a team can raise it as the flow proves itself without a
//! code change. Each run records the limit it was started under in its state, so a run resumed
//! after the limit changed keeps the rule it began with, and the audit trail shows which rule
//! approved what.
//!
//! Read it top down: the state, the flow, then the run. The offline LLM's scripted replies are
//! in `replies.rs` next to this file, the sample invoices in `samples.rs`, and what the binary
//! prints (and the approver it plays) in [`report`].

mod replies;
pub mod report;
mod samples;

use std::path::PathBuf;
use std::sync::Arc;

use flow_core::events::FlowEvent;
use flow_core::input::PauseRequest;
use flow_core::memory::{Recall, Remember};
use flow_core::prelude::*;
use flow_core::store::Store;
use flow_core::{RunStatus, TokenUsage};
use flow_llm::{Agent, Llm, LlmError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::error::ExampleError;
use crate::setup::{Setup, display_path};

pub use replies::script;
pub use samples::{illegible_receipt, sample_invoices};

/// The run's typed state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InvoiceState {
    /// The invoice as it arrived.
    pub invoice: Option<IncomingInvoice>,
    /// The limit in force when the run started.
    pub auto_approve_limit: f64,
    /// The latest extraction.
    pub extraction: Option<Extraction>,
    /// Extractions made (the first plus the fallback).
    pub extraction_attempts: u32,
    /// The latest triage route.
    pub route: Option<InvoiceRoute>,
    /// The person's answer, when one was needed.
    pub review: Option<ApprovalAnswer>,
    /// Where the invoice stands.
    pub status: InvoiceStatus,
    /// The ERP's ledger entry, once posted.
    pub ledger_entry: Option<String>,
}

/// Where an invoice stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceStatus {
    /// Not decided yet.
    #[default]
    Open,
    /// Approved by the flow under the limit.
    AutoApproved,
    /// Approved by a person.
    Approved,
    /// Rejected by a person.
    Rejected,
}

/// The extraction's typed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Extraction {
    /// Who sent the invoice.
    pub vendor: String,
    /// Its number.
    pub invoice_number: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The total due.
    pub total: f64,
    /// When it is due, `YYYY-MM-DD`.
    pub due_date: String,
    /// The lines.
    pub line_items: Vec<LineItem>,
    /// How sure the extraction is, from 0 to 1: low when the text is garbled or totals do not add up.
    pub confidence: f64,
}

/// One invoice line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineItem {
    /// What was bought.
    pub description: String,
    /// Its amount.
    pub amount: f64,
}

/// The triage router's routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Route)]
pub enum InvoiceRoute {
    /// Confident extraction, total within the limit: approve automatically.
    Standard,
    /// Confident extraction, total above the limit: a person approves.
    HighValue,
    /// The extraction is unsure: try the careful fallback extraction.
    LowConfidence,
    /// Still unsure after the fallback: a person looks at it.
    StillUnclear,
}

/// The person's decision on an invoice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Route)]
pub enum ReviewDecision {
    /// Post it.
    Approved,
    /// Do not pay it.
    Rejected,
}

/// What the approver answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovalAnswer {
    /// Whether to pay.
    pub approve: bool,
    /// Who decided.
    pub approver: String,
    /// Why, for the audit trail.
    pub note: String,
}

/// The environment variable holding the auto-approval limit.
pub const LIMIT_ENV: &str = "INVOICE_AUTO_APPROVE_LIMIT";
/// The auto-approval limit when [`LIMIT_ENV`] is not set, in the invoice's currency.
pub const DEFAULT_AUTO_APPROVE_LIMIT: f64 = 5_000.0;
/// Extractions below this confidence are not trusted.
pub const MIN_CONFIDENCE: f64 = 0.8;
/// Extraction attempts before an unsure invoice goes to a person.
pub const MAX_EXTRACTIONS: u32 = 2;

/// The flow: the extraction agents.
pub struct InvoiceFlow {
    clerk: Agent,
    specialist: Agent,
}

#[flow(
    state = InvoiceState,
    name = "invoice_processing",
    retry(attempts = 3, backoff = exponential("500ms", max = "10s"), jitter, invalid_reply = 2),
    timeout = "120s"
)]
impl InvoiceFlow {
    /// The first, quick extraction.
    #[start]
    async fn extract(&self, cx: &Ctx<InvoiceState>) -> Result<()> {
        let text = cx.read(|s| s.invoice.as_ref().map(|i| i.text.clone()).unwrap_or_default());
        let mut prompt = format!("Extract this invoice.\n\n{text}");
        // What reviewers corrected on this supplier's earlier invoices.
        let corrections = Recall::new(supplier_scope(&text), "reviewer correction of the invoice").k(3).exact_scope();
        let known = cx.recall_with(corrections.filter("kind", "correction")).await?;
        if !known.is_empty() {
            prompt.push_str("\n\nReviewers corrected this supplier's earlier invoices:");
            for memory in &known {
                prompt.push_str(&format!("\n- {}", memory.content));
            }
        }
        let extraction: Extraction = self.clerk.run_typed(cx, prompt).await?;
        cx.update(move |s| {
            s.extraction = Some(extraction.clone());
            s.extraction_attempts += 1;
        });
        Ok(())
    }

    /// How much autonomy this invoice gets.
    #[router(or(extract, fallback_extraction))]
    async fn triage(&self, cx: &Ctx<InvoiceState>) -> Result<InvoiceRoute> {
        let (extraction, attempts, limit) =
            cx.read(|s| (s.extraction.clone(), s.extraction_attempts, s.auto_approve_limit));
        let extraction = extraction.ok_or_else(|| Error::permanent("triage ran without an extraction"))?;
        let route = if extraction.confidence < MIN_CONFIDENCE {
            if attempts < MAX_EXTRACTIONS { InvoiceRoute::LowConfidence } else { InvoiceRoute::StillUnclear }
        } else if extraction.total > limit {
            InvoiceRoute::HighValue
        } else {
            InvoiceRoute::Standard
        };
        cx.update(move |s| s.route = Some(route));
        Ok(route)
    }

    /// The careful extraction: another agent that repairs OCR errors and reconciles totals.
    #[listen(InvoiceRoute::LowConfidence)]
    async fn fallback_extraction(&self, cx: &Ctx<InvoiceState>) -> Result<()> {
        let (text, first) =
            cx.read(|s| (s.invoice.as_ref().map(|i| i.text.clone()).unwrap_or_default(), s.extraction.clone()));
        let first = serde_json::to_string(&first).unwrap_or_default();
        let prompt = format!(
            "The first extraction of this invoice was unsure:\n{first}\n\nRe-read the original line by line, fix OCR confusions, and check that the lines add up to the total.\n\n{text}"
        );
        let extraction: Extraction = self.specialist.run_typed(cx, prompt).await?;
        cx.update(move |s| {
            s.extraction = Some(extraction.clone());
            s.extraction_attempts += 1;
        });
        Ok(())
    }

    /// Within the limit and confident: no person needed.
    #[listen(InvoiceRoute::Standard)]
    async fn auto_approve(&self, cx: &Ctx<InvoiceState>) -> Result<()> {
        cx.update(|s| s.status = InvoiceStatus::AutoApproved);
        Ok(())
    }

    /// Waits for a person (the run is stored as paused until they answer).
    #[router(or(InvoiceRoute::HighValue, InvoiceRoute::StillUnclear))]
    async fn human_review(&self, cx: &Ctx<InvoiceState>, why: InvoiceRoute) -> Result<ReviewDecision> {
        let (extraction, limit, invoice) = cx.read(|s| (s.extraction.clone(), s.auto_approve_limit, s.invoice.clone()));
        let prompt = match (&extraction, why) {
            (Some(e), InvoiceRoute::HighValue) => format!(
                "Approve invoice {} from {} for {} {:.2}? It is above the auto-approval limit of {limit:.2}.",
                e.invoice_number, e.vendor, e.currency, e.total
            ),
            _ => {
                "The invoice could not be read with confidence. Check the original and approve or reject it.".to_owned()
            }
        };
        let request = InputRequest::new(prompt).metadata(json!({ "extraction": extraction, "invoice": invoice }));
        let answer: ApprovalAnswer = cx.ask(request).await?;
        // The reviewer's note is what the next invoice of this supplier should know.
        if let (Some(e), Some(invoice)) = (&extraction, &invoice)
            && !answer.note.trim().is_empty()
        {
            let content = format!("{} on invoice {}: {}", answer.approver, e.invoice_number, answer.note.trim());
            let remember = Remember::new(supplier_scope(&invoice.text), content)
                .metadata(json!({ "kind": "correction", "approver": answer.approver, "approved": answer.approve }))
                .importance(0.8);
            cx.remember_with(remember).await?;
        }
        let decision = if answer.approve { ReviewDecision::Approved } else { ReviewDecision::Rejected };
        cx.update(move |s| {
            s.status = if answer.approve { InvoiceStatus::Approved } else { InvoiceStatus::Rejected };
            s.review = Some(answer.clone());
        });
        Ok(decision)
    }

    /// Posts the approved invoice to the ERP once (journaled; the idempotency key lets the ERP
    /// drop a duplicate from a re-run after a crash).
    #[listen(or(auto_approve, ReviewDecision::Approved), retry(attempts = 5, backoff = exponential("1s", max = "30s")))]
    async fn post_to_ledger(&self, cx: &Ctx<InvoiceState>) -> Result<String> {
        let entry: String = cx
            .effect("erp.post_invoice", |key| async move {
                // Your ERP's API goes here; it gets `key` as its idempotency key.
                Ok(format!("GL-{:08X}", flow_core::journal::request_hash(&json!(key)) & 0xFFFF_FFFF))
            })
            .await?;
        let kept = entry.clone();
        cx.update(move |s| s.ledger_entry = Some(kept.clone()));
        Ok(entry)
    }

    /// A rejected invoice is not paid; the vendor is told why (left to your mail system here).
    #[listen(ReviewDecision::Rejected)]
    async fn reject(&self, cx: &Ctx<InvoiceState>) -> Result<()> {
        let note = cx.read(|s| s.review.as_ref().map(|r| r.note.clone()).unwrap_or_default());
        tracing::info!(%note, "invoice rejected");
        Ok(())
    }
}

impl InvoiceFlow {
    /// Builds the agents on `llm`.
    ///
    /// # Errors
    ///
    /// [`LlmError`] when an agent cannot be built.
    pub fn new(llm: Arc<dyn Llm>) -> Result<Self, LlmError> {
        Ok(InvoiceFlow {
            clerk: Agent::builder(
                "Accounts Payable Clerk",
                "Extract invoices accurately and say honestly how sure you are",
                "You process hundreds of invoices a week.",
            )
            .llm(Arc::clone(&llm))
            .temperature(0.0)
            .build()?,
            specialist: Agent::builder(
                "Senior AP Specialist",
                "Recover the exact figures from damaged or badly scanned invoices",
                "You read OCR output character by character, fix typical OCR confusions (0/O, 1/l, 5/S) and check that the lines add up to the total.",
            )
            .llm(llm)
            .temperature(0.0)
            .build()?,
        })
    }
}

/// The memory scope of an invoice's supplier: `supplier/<first line of the invoice in lower
/// case, words joined by ->` (the letterhead, as it stands before any extraction).
pub fn supplier_scope(invoice_text: &str) -> String {
    let header = invoice_text.lines().next().unwrap_or_default();
    let slug: Vec<String> =
        header.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    format!("supplier/{}", if slug.is_empty() { "unknown".to_string() } else { slug.join("-") })
}

/// An invoice as it arrived: where from, and its text (from the PDF or the OCR of a scan).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingInvoice {
    /// Where it came from.
    pub source: String,
    /// Its text.
    pub text: String,
}

/// Which invoices to process, and under which limit.
#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoint, database and trace.
    pub setup: Setup,
    /// Invoices up to this total (inclusive) are approved without a person.
    pub auto_approve_limit: f64,
    /// The invoices, processed one after another.
    pub invoices: Vec<IncomingInvoice>,
}

impl Config {
    /// The binary's configuration: [`Setup::from_env`], the limit from [`LIMIT_ENV`] and
    /// [`sample_invoices`].
    ///
    /// # Errors
    ///
    /// [`ExampleError::Env`] when [`LIMIT_ENV`] is set to something that is not an amount.
    pub fn from_env() -> Result<Self, ExampleError> {
        let auto_approve_limit = match std::env::var(LIMIT_ENV) {
            Ok(value) if !value.trim().is_empty() => parse_limit(&value)?,
            _ => DEFAULT_AUTO_APPROVE_LIMIT,
        };
        Ok(Config { setup: Setup::from_env(), auto_approve_limit, invoices: sample_invoices() })
    }

    /// The tests' configuration: offline, runs in `db`, the default limit, [`sample_invoices`].
    pub fn offline(db: impl Into<PathBuf>) -> Self {
        Config {
            setup: Setup::offline(db),
            auto_approve_limit: DEFAULT_AUTO_APPROVE_LIMIT,
            invoices: sample_invoices(),
        }
    }
}

/// Reads an amount such as `5000` or `12500.50`.
///
/// # Errors
///
/// [`ExampleError::Env`] naming [`LIMIT_ENV`] when `value` is not a non-negative number.
pub fn parse_limit(value: &str) -> Result<f64, ExampleError> {
    let invalid = |reason: &str| ExampleError::Env { name: LIMIT_ENV, value: value.to_owned(), reason: reason.into() };
    let limit: f64 = value.trim().parse().map_err(|_| invalid("expected an amount such as 5000 or 12500.50"))?;
    if !limit.is_finite() || limit < 0.0 {
        return Err(invalid("the limit must be a non-negative amount"));
    }
    Ok(limit)
}

/// How one invoice's run went.
#[derive(Clone, Debug)]
pub struct InvoiceReport {
    /// The run.
    pub run_id: Uuid,
    /// Its final state.
    pub state: InvoiceState,
    /// Its status as stored at the end.
    pub stored_status: RunStatus,
    /// The routes taken, `router → Enum::Variant`.
    pub routes: Vec<String>,
    /// The question a person was asked, the run's stored status while it waited, and the answer.
    pub pause: Option<(PauseRequest, RunStatus, ApprovalAnswer)>,
    /// Every event of the run.
    pub events: Vec<FlowEvent>,
}

/// Where the batch ended.
#[derive(Debug)]
pub struct Outcome {
    /// One report per invoice, in the order given.
    pub invoices: Vec<InvoiceReport>,
    /// The limit the runs were started under.
    pub auto_approve_limit: f64,
    /// Tokens used by the batch's LLM calls.
    pub usage: TokenUsage,
    /// The chat requests the offline server received, in order (none online).
    pub requests: Vec<flow_llm::RecordedRequest>,
    /// Where runs are stored.
    pub db_path: PathBuf,
    /// The LLM endpoint used.
    pub endpoint: String,
}

/// Processes every invoice. When a run waits for a person, `approver` plays them; the run is
/// then resumed with the answer in a fresh runner on a freshly opened store.
///
/// # Errors
///
/// [`ExampleError`] when the store or the endpoint cannot be set up, or a run fails.
pub async fn run(
    config: Config,
    mut approver: impl FnMut(&PauseRequest) -> ApprovalAnswer,
) -> Result<Outcome, ExampleError> {
    let trace = config.setup.console();
    let (store, db_path) = config.setup.open_store().await?;
    let backend = config.setup.connect_llm(None, script).await?;
    trace.note(format!("LLM endpoint: {}", backend.endpoint()));
    trace.note(format!("runs are stored in {}", display_path(&db_path)));
    trace.note(format!("auto-approval limit: {:.2} (set {LIMIT_ENV} to change it)", config.auto_approve_limit));
    let llm: Arc<dyn Llm> = backend.llm.clone();

    let runner =
        Runner::new(InvoiceFlow::new(Arc::clone(&llm))?).with_store(store.clone()).with_embedder(backend.embedder());
    trace.follow(&runner);
    let mut usage = TokenUsage::default();
    let mut reports = Vec::new();
    for invoice in config.invoices {
        trace.note(format!("invoice from {}", invoice.source));
        let initial = InvoiceState {
            invoice: Some(invoice),
            auto_approve_limit: config.auto_approve_limit,
            ..InvoiceState::default()
        };
        let mut outcome = runner.kickoff(initial).await?;
        let run_id = outcome.run_id();
        let mut pause = None;
        if let RunOutcome::Paused(paused) = &outcome {
            let waiting = store.load_run(run_id).await?.status;
            trace.note(format!("run {run_id} is {waiting}: the invoice waits for an approver"));
            let answer = approver(&paused.request);
            trace.note(format!(
                "{} {}; resuming the stored run in a fresh runner",
                answer.approver,
                if answer.approve { "approved" } else { "rejected" }
            ));
            let (fresh_store, _) = config.setup.open_store().await?;
            let fresh = Runner::new(InvoiceFlow::new(Arc::clone(&llm))?)
                .with_store(fresh_store)
                .with_embedder(backend.embedder());
            trace.follow(&fresh);
            let next = fresh.resume_with(run_id, &answer).await?;
            pause = Some((paused.request.clone(), waiting, answer));
            outcome = next;
        }
        if !matches!(outcome, RunOutcome::Completed(_)) {
            return Err(ExampleError::Unexpected(format!("invoice run {run_id} ended {}", outcome.status())));
        }
        let events = trace.events_of(run_id);
        for event in &events {
            if let FlowEvent::LlmUsage { usage: u, .. } = event {
                usage.add(*u);
            }
        }
        reports.push(InvoiceReport {
            run_id,
            state: outcome.state().clone(),
            stored_status: store.load_run(run_id).await?.status,
            routes: trace.routes_of(run_id),
            pause,
            events,
        });
    }
    trace.flush();
    Ok(Outcome {
        invoices: reports,
        auto_approve_limit: config.auto_approve_limit,
        usage,
        requests: backend.requests(),
        db_path,
        endpoint: backend.endpoint().to_owned(),
    })
}
