//! **Lead enrichment**: validate a form, enrich the company and the contact, score the lead and
//! route it: a hot lead gets a personalised email that waits for a person's approval, a warm
//! one goes to nurture, a cold one is archived, an invalid one is rejected on its own branch.
//!
//! ```text
//! validate ─Valid─► enrich_company ─► enrich_contact ─► score_lead ─Hot──► draft_email ─► review_draft ─Send─► send_email
//!    │                                                      │ Warm ─► nurture    ▲              │
//!  Invalid ─► reject_invalid                                └ Cold ─► archive    └───Revise─────┘   (Discard ends)
//! ```
//!
//! - `validate` is a start that routes: bad forms take the `Invalid` branch, which records why
//!   and ends the run normally (a handled outcome, not a failure).
//! - `enrich_company` is an agent with a `lookup_company` tool and a typed
//!   [`CompanyProfile`] answer; `enrich_contact` and `score_lead` are typed answers too.
//! - `review_draft` pauses the run with [`Ctx::ask`]: the run is stored as paused and
//!   `kickoff` returns. A person answers in their own words, maybe days later, in another
//!   process; [`flow_llm::feedback::route_feedback`] maps the answer onto
//!   [`EmailDecision`], and an unclear answer is asked again instead of guessed.
//!
//! Read it top down: the state, the flow, then the run. The offline LLM's scripted replies are
//! in `replies.rs` next to this file, the firmographics service behind `lookup_company` in
//! `services.rs`, the sample leads in `samples.rs`, and what the binary prints (and the reviewer
//! it plays) in [`report`].

mod replies;
pub mod report;
mod samples;
mod services;

use std::path::PathBuf;
use std::sync::Arc;

use flow_core::events::FlowEvent;
use flow_core::input::PauseRequest;
use flow_core::prelude::*;
use flow_core::store::Store;
use flow_core::{RunStatus, TokenUsage};
use flow_llm::feedback::route_feedback;
use flow_llm::{Agent, Llm, LlmError, TestServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::error::ExampleError;
use crate::setup::{Setup, display_path};

pub use replies::script;
pub use samples::sample_leads;
use services::company_lookup_tool;
pub use services::firmographics;

/// The run's typed state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadState {
    /// The form.
    pub form: LeadForm,
    /// Why the form was rejected, when it was.
    pub problems: Vec<String>,
    /// What the company enrichment found.
    pub company: Option<CompanyProfile>,
    /// What the contact enrichment found.
    pub contact: Option<ContactProfile>,
    /// The score and its reasons.
    pub score: Option<LeadScore>,
    /// The tier the score maps to.
    pub tier: Option<Tier>,
    /// The latest email draft.
    pub email_draft: Option<String>,
    /// Drafts written (the first plus each revision).
    pub drafts: u32,
    /// The person's answers, in order.
    pub reviews: Vec<Review>,
    /// The email provider's message id, once sent.
    pub sent_message_id: Option<String>,
    /// The nurture sequence the lead was enrolled in.
    pub nurture_track: Option<String>,
    /// Where the lead ended up.
    pub disposition: Disposition,
    /// What earlier runs had learned about the company (recalled from memory).
    #[serde(default)]
    pub recalled: Vec<String>,
}

/// A contact form as submitted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadForm {
    /// The person's name.
    pub name: String,
    /// Their work email.
    pub email: String,
    /// Their company.
    pub company: String,
    /// Their job title.
    pub title: String,
    /// What they wrote.
    pub message: String,
}

/// Where a lead ended up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// Not decided yet.
    #[default]
    Open,
    /// The form was invalid.
    Rejected,
    /// Hot: the approved email was sent.
    EmailSent,
    /// Hot, but the person discarded the email.
    EmailDiscarded,
    /// Warm: enrolled in a nurture sequence.
    Nurture,
    /// Cold: archived.
    Archived,
}

/// The company enrichment's typed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompanyProfile {
    /// The company's name.
    pub name: String,
    /// Its industry.
    pub industry: String,
    /// Its headcount.
    pub employees: u32,
    /// Where it operates.
    pub region: String,
    /// Why it may or may not be a fit, in one sentence.
    pub fit_notes: String,
}

/// The contact enrichment's typed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContactProfile {
    /// How senior the person is.
    pub seniority: Seniority,
    /// Their department.
    pub department: String,
    /// Whether they can sign a purchase.
    pub decision_maker: bool,
}

/// How senior a contact is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Seniority {
    /// C-level, VP, owner.
    Executive,
    /// Manages a team.
    Manager,
    /// Does the work.
    IndividualContributor,
}

/// The scoring's typed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeadScore {
    /// From 0 to 100.
    pub score: u32,
    /// The main reasons, one line each.
    pub reasons: Vec<String>,
}

/// The validation router's routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Route)]
pub enum Validity {
    /// The form can be enriched.
    Valid,
    /// It cannot; the reasons are in [`LeadState::problems`].
    Invalid,
}

/// The scoring router's routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Route)]
pub enum Tier {
    /// [`HOT_SCORE`] and up: a personal email, approved by a person.
    Hot,
    /// [`WARM_SCORE`] and up: nurture.
    Warm,
    /// Below: archive.
    Cold,
}

/// What the person decided about the email, mapped from their own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Route)]
pub enum EmailDecision {
    /// Send the email as it is.
    Send,
    /// Rewrite the email with the requested changes, then ask again.
    Revise,
    /// Do not send any email to this lead.
    Discard,
}

/// A person's answer to the review question, as a UI would submit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReviewAnswer {
    /// Who answered.
    pub reviewer: String,
    /// What they wrote, in their own words.
    pub answer: String,
}

/// An answer and what it was taken to mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// Who answered.
    pub reviewer: String,
    /// What they wrote.
    pub answer: String,
    /// The route it maps onto; `None` when it was unclear and the question was asked again.
    pub decision: Option<EmailDecision>,
    /// Why (the classifier's one-line reason).
    pub reason: String,
}

/// Scores from this value up are hot.
pub const HOT_SCORE: u32 = 75;
/// Scores from this value up (and below [`HOT_SCORE`]) are warm.
pub const WARM_SCORE: u32 = 45;
/// How often `review_draft` asks again when the answer is unclear before it escalates.
pub const MAX_ASKS: usize = 3;

/// The flow: its agents and the client the feedback classifier uses.
pub struct LeadFlow {
    llm: Arc<dyn Llm>,
    company_researcher: Agent,
    contact_researcher: Agent,
    scorer: Agent,
    writer: Agent,
}

#[flow(
    state = LeadState,
    name = "lead_enrichment",
    retry(attempts = 3, backoff = exponential("500ms", max = "10s"), jitter, invalid_reply = 2),
    timeout = "120s"
)]
impl LeadFlow {
    /// Cheap checks first: nothing is paid for a form that cannot be a lead.
    #[start]
    #[router]
    async fn validate(&self, cx: &Ctx<LeadState>) -> Result<Validity> {
        let problems = cx.read(|s| form_problems(&s.form));
        if problems.is_empty() {
            return Ok(Validity::Valid);
        }
        cx.update(move |s| s.problems = problems.clone());
        Ok(Validity::Invalid)
    }

    /// The handled invalid branch: the lead is rejected with its reasons; the run completes.
    #[listen(Validity::Invalid)]
    async fn reject_invalid(&self, cx: &Ctx<LeadState>) -> Result<()> {
        cx.update(|s| s.disposition = Disposition::Rejected);
        Ok(())
    }

    /// Firmographics through the `lookup_company` tool, as a typed profile.
    #[listen(Validity::Valid)]
    async fn enrich_company(&self, cx: &Ctx<LeadState>) -> Result<()> {
        let form = cx.read(|s| s.form.clone());
        let domain = form.email.rsplit('@').next().unwrap_or_default().to_owned();
        let mut prompt = format!(
            "Profile the company of this lead. Look it up first.\ncompany: {}\ndomain: {domain}\nWhat they wrote: {}",
            form.company, form.message
        );
        // What earlier runs learned about this company, so research builds on it.
        let scope = company_scope(&form.company);
        let known = cx.recall(&scope, &format!("what we know about {}", form.company), 3).await?;
        if !known.is_empty() {
            prompt.push_str("\nWhat earlier runs learned about this company:");
            for memory in &known {
                prompt.push_str(&format!("\n- {}", memory.content));
            }
        }
        let profile: CompanyProfile = self.company_researcher.run_typed(cx, prompt).await?;
        let learned = format!(
            "{}: {} in {}, {} employees. {}",
            profile.name, profile.industry, profile.region, profile.employees, profile.fit_notes
        );
        cx.remember(&scope, learned, json!({ "company": scope, "source": "lead_enrichment", "lead": form.email }))
            .await?;
        let recalled: Vec<String> = known.into_iter().map(|m| m.content).collect();
        cx.update(move |s| {
            s.company = Some(profile.clone());
            s.recalled = recalled.clone();
        });
        Ok(())
    }

    /// The contact's seniority and buying power.
    #[listen(enrich_company)]
    async fn enrich_contact(&self, cx: &Ctx<LeadState>) -> Result<()> {
        let (form, company) = cx.read(|s| (s.form.clone(), s.company.clone()));
        let prompt = format!(
            "Assess this contact.\nname: {}\nemail: {}\ntitle: {}\ncompany profile: {}",
            form.name,
            form.email,
            form.title,
            serde_json::to_string(&company).unwrap_or_default()
        );
        let contact: ContactProfile = self.contact_researcher.run_typed(cx, prompt).await?;
        cx.update(move |s| s.contact = Some(contact.clone()));
        Ok(())
    }

    /// A typed score, mapped onto a tier by fixed thresholds.
    #[router(enrich_contact)]
    async fn score_lead(&self, cx: &Ctx<LeadState>) -> Result<Tier> {
        let (form, company, contact) = cx.read(|s| (s.form.clone(), s.company.clone(), s.contact.clone()));
        let prompt = format!(
            "Score this lead from 0 to 100.\nemail: {}\nmessage: {}\ncompany: {}\ncontact: {}",
            form.email,
            form.message,
            serde_json::to_string(&company).unwrap_or_default(),
            serde_json::to_string(&contact).unwrap_or_default()
        );
        let score: LeadScore = self.scorer.run_typed(cx, prompt).await?;
        let tier = match score.score {
            s if s >= HOT_SCORE => Tier::Hot,
            s if s >= WARM_SCORE => Tier::Warm,
            _ => Tier::Cold,
        };
        cx.update(move |s| {
            s.score = Some(score.clone());
            s.tier = Some(tier);
        });
        Ok(tier)
    }

    /// A personal first email; on a revision, with the reviewer's requested changes.
    #[listen(or(Tier::Hot, EmailDecision::Revise))]
    async fn draft_email(&self, cx: &Ctx<LeadState>) -> Result<String> {
        let (form, company, reviews, previous) =
            cx.read(|s| (s.form.clone(), s.company.clone(), s.reviews.clone(), s.email_draft.clone()));
        let mut prompt = format!(
            "Write a first email (under 120 words) to {} ({}, {}) at {}.\nThey wrote: {}\nCompany: {}",
            form.name,
            form.title,
            form.email,
            form.company,
            form.message,
            serde_json::to_string(&company).unwrap_or_default()
        );
        if let (Some(previous), Some(review)) = (previous, reviews.last()) {
            prompt.push_str(&format!("\n\nReviewer asked for changes: {}\nPrevious draft:\n{previous}", review.answer));
        }
        let draft = self.writer.run(cx, prompt).await?.raw;
        let kept = draft.clone();
        cx.update(move |s| {
            s.email_draft = Some(kept.clone());
            s.drafts += 1;
        });
        Ok(draft)
    }

    /// Waits for a person. Their free-text answer is mapped onto a route; an unclear answer is
    /// asked again (the run pauses again) rather than guessed.
    #[router(draft_email, terminal(EmailDecision::Discard))]
    async fn review_draft(&self, cx: &Ctx<LeadState>, draft: String) -> Result<EmailDecision> {
        let (name, email) = cx.read(|s| (s.form.name.clone(), s.form.email.clone()));
        let mut question = format!(
            "Send this email to {name} <{email}>? Answer in your own words: send it, ask for changes, or discard it."
        );
        for _ in 0..MAX_ASKS {
            let request = InputRequest::new(question.clone()).metadata(json!({ "to": email, "draft": draft }));
            let answer: ReviewAnswer = cx.ask(request).await?;
            match route_feedback::<EmailDecision>(&*self.llm, cx, &question, &answer.answer).await {
                Ok(decision) => {
                    let review = Review {
                        reviewer: answer.reviewer,
                        answer: answer.answer,
                        decision: Some(decision.route),
                        reason: decision.reason,
                    };
                    let route = decision.route;
                    cx.update(move |s| {
                        s.reviews.push(review.clone());
                        if route == EmailDecision::Discard {
                            s.disposition = Disposition::EmailDiscarded;
                        }
                    });
                    return Ok(route);
                }
                Err(LlmError::UnclearFeedback { reason, .. }) => {
                    let review = Review {
                        reviewer: answer.reviewer,
                        answer: answer.answer,
                        decision: None,
                        reason: reason.clone(),
                    };
                    cx.update(move |s| s.reviews.push(review.clone()));
                    question = format!(
                        "Sorry, I could not tell what you want ({reason}). Should the email to {name} be sent, changed (say what to change) or discarded?"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::escalate(format!("no clear answer about the email to {email} after {MAX_ASKS} questions")))
    }

    /// Sends the approved email once: the provider call is journaled, and the idempotency key
    /// lets the provider drop a duplicate sent by a re-run after a crash.
    #[listen(EmailDecision::Send, retry(attempts = 5, backoff = exponential("1s", max = "30s"), jitter))]
    async fn send_email(&self, cx: &Ctx<LeadState>) -> Result<()> {
        let to = cx.read(|s| s.form.email.clone());
        let message_id: String = cx
            .effect("email_provider.send", |key| async move {
                // Your email provider's API goes here; it gets `key` as its idempotency key.
                Ok(format!("msg_{:016x}", flow_core::journal::request_hash(&json!(key))))
            })
            .await?;
        tracing::info!(%to, %message_id, "email sent");
        cx.update(move |s| {
            s.sent_message_id = Some(message_id.clone());
            s.disposition = Disposition::EmailSent;
        });
        Ok(())
    }

    /// Warm leads get a nurture sequence that fits the company's size.
    #[listen(Tier::Warm)]
    async fn nurture(&self, cx: &Ctx<LeadState>) -> Result<()> {
        let employees = cx.read(|s| s.company.as_ref().map_or(0, |c| c.employees));
        let track = if employees < 100 { "small-team-onboarding" } else { "mid-market-case-studies" };
        let _enrolment: String = cx
            .effect("crm.enrol", |key| async move {
                // Your CRM's API goes here.
                Ok(format!("enrolment for {key}"))
            })
            .await?;
        cx.update(move |s| {
            s.nurture_track = Some(track.to_owned());
            s.disposition = Disposition::Nurture;
        });
        Ok(())
    }

    /// Cold leads are archived with their score, so a later signal can revive them.
    #[listen(Tier::Cold)]
    async fn archive(&self, cx: &Ctx<LeadState>) -> Result<()> {
        cx.update(|s| s.disposition = Disposition::Archived);
        Ok(())
    }
}

impl LeadFlow {
    /// Builds the agents on `llm`.
    ///
    /// # Errors
    ///
    /// [`LlmError`] when an agent or its tool cannot be built.
    pub fn new(llm: Arc<dyn Llm>) -> Result<Self, LlmError> {
        let agent = |role: &str, goal: &str, backstory: &str| {
            Agent::builder(role, goal, backstory).llm(Arc::clone(&llm)).temperature(0.0)
        };
        Ok(LeadFlow {
            company_researcher: agent(
                "Company Research Analyst",
                "Build an accurate company profile from firmographic data",
                "You work in sales operations and only state what the data supports.",
            )
            .tool(company_lookup_tool()?)
            .max_iter(3)
            .build()?,
            contact_researcher: agent(
                "Sales Intelligence Researcher",
                "Judge a contact's seniority and buying power",
                "You have qualified thousands of B2B leads.",
            )
            .build()?,
            scorer: agent(
                "Lead Scoring Analyst",
                "Score leads from 0 to 100 for fit and intent",
                "You score strictly: budget, authority, need and timing.",
            )
            .build()?,
            writer: Agent::builder(
                "Account Executive",
                "Write short, personal first emails that get replies",
                "You write like a helpful person, never like a template.",
            )
            .llm(Arc::clone(&llm))
            .build()?,
            llm,
        })
    }
}

/// The checks a form must pass before any enrichment is paid for.
pub fn form_problems(form: &LeadForm) -> Vec<String> {
    let mut problems = Vec::new();
    if form.name.trim().len() < 2 || form.name.trim().eq_ignore_ascii_case("test") {
        problems.push(format!("name {:?} is not a person's name", form.name));
    }
    match form.email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') => {
            if ["mailinator.com", "guerrillamail.com", "10minutemail.com"].contains(&domain) {
                problems.push(format!("{domain} is a disposable email domain"));
            }
        }
        _ => problems.push(format!("email {:?} is not an email address", form.email)),
    }
    if form.company.trim().is_empty() {
        problems.push("company is missing".into());
    }
    problems
}

/// The memory scope of a company: `company/<name in lower case, words joined by ->`.
pub fn company_scope(company: &str) -> String {
    let slug: Vec<String> =
        company.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    format!("company/{}", if slug.is_empty() { "unknown".to_string() } else { slug.join("-") })
}

/// Which leads to process, and where.
#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoint, database and trace.
    pub setup: Setup,
    /// The leads, processed one after another.
    pub leads: Vec<LeadForm>,
}

impl Config {
    /// The binary's configuration: [`Setup::from_env`] and [`sample_leads`].
    pub fn from_env() -> Self {
        Config { setup: Setup::from_env(), leads: sample_leads() }
    }

    /// The tests' configuration: offline, runs in `db`, [`sample_leads`].
    pub fn offline(db: impl Into<PathBuf>) -> Self {
        Config { setup: Setup::offline(db), leads: sample_leads() }
    }
}

/// A pause, as seen by the example while the run waited.
#[derive(Clone, Debug)]
pub struct PauseRecord {
    /// The question.
    pub prompt: String,
    /// The run's status in the store while it waited.
    pub stored_status: RunStatus,
    /// The answer the person gave.
    pub answer: ReviewAnswer,
}

/// How one lead's run went.
#[derive(Clone, Debug)]
pub struct LeadReport {
    /// The run.
    pub run_id: Uuid,
    /// Its final state.
    pub state: LeadState,
    /// Its status as stored at the end.
    pub stored_status: RunStatus,
    /// The routes taken, `router → Enum::Variant`.
    pub routes: Vec<String>,
    /// Every pause and its answer, in order.
    pub pauses: Vec<PauseRecord>,
    /// The escalation reason, when the run escalated.
    pub escalation: Option<String>,
    /// Every event of the run (all executions).
    pub events: Vec<FlowEvent>,
}

/// Where the batch ended.
#[derive(Debug)]
pub struct Outcome {
    /// One report per lead, in the order given.
    pub leads: Vec<LeadReport>,
    /// Tokens used by the batch's LLM calls.
    pub usage: TokenUsage,
    /// LLM requests the offline server answered (`None` online).
    pub llm_requests: Option<usize>,
    /// The chat requests the offline server received, in order (none online).
    pub requests: Vec<flow_llm::RecordedRequest>,
    /// Where runs are stored.
    pub db_path: PathBuf,
    /// The LLM endpoint used.
    pub endpoint: String,
}

/// Processes every lead. When a run pauses for the email review, `reviewer` plays the person:
/// it gets the stored request and returns the answer, and the run is resumed with it in a
/// fresh runner on a freshly opened store, as another process would days later.
///
/// # Errors
///
/// [`ExampleError`] when the store or the endpoint cannot be set up, or a run fails.
pub async fn run(
    config: Config,
    mut reviewer: impl FnMut(&PauseRequest) -> ReviewAnswer,
) -> Result<Outcome, ExampleError> {
    let trace = config.setup.console();
    let (store, db_path) = config.setup.open_store().await?;
    let backend = config.setup.connect_llm(None, script).await?;
    trace.note(format!("LLM endpoint: {}", backend.endpoint()));
    trace.note(format!("runs are stored in {}", display_path(&db_path)));
    let llm: Arc<dyn Llm> = backend.llm.clone();

    let runner =
        Runner::new(LeadFlow::new(Arc::clone(&llm))?).with_store(store.clone()).with_embedder(backend.embedder());
    trace.follow(&runner);
    let mut usage = TokenUsage::default();
    let mut reports = Vec::new();
    for form in config.leads {
        trace.note(format!("lead: {} <{}>, {}", form.name, form.email, form.company));
        let mut outcome = runner.kickoff(LeadState { form, ..LeadState::default() }).await?;
        let run_id = outcome.run_id();
        let mut pauses = Vec::new();
        while let RunOutcome::Paused(paused) = &outcome {
            let stored_status = store.load_run(run_id).await?.status;
            trace.note(format!("run {run_id} is {stored_status}: nothing runs until a person answers"));
            let answer = reviewer(&paused.request);
            trace.note(format!(
                "{} answered \"{}\"; resuming the stored run in a fresh runner",
                answer.reviewer, answer.answer
            ));
            let (fresh_store, _) = config.setup.open_store().await?;
            let fresh =
                Runner::new(LeadFlow::new(Arc::clone(&llm))?).with_store(fresh_store).with_embedder(backend.embedder());
            trace.follow(&fresh);
            let next = fresh.resume_with(run_id, &answer).await?;
            pauses.push(PauseRecord { prompt: paused.request.prompt.clone(), stored_status, answer });
            outcome = next;
        }
        let escalation = match &outcome {
            RunOutcome::Escalated(e) => Some(e.reason.clone()),
            _ => None,
        };
        let events = trace.events_of(run_id);
        // Summed from the events: a result's own `usage` counts only its last execution.
        for event in &events {
            if let FlowEvent::LlmUsage { usage: u, .. } = event {
                usage.add(*u);
            }
        }
        let stored_status = store.load_run(run_id).await?.status;
        reports.push(LeadReport {
            run_id,
            state: outcome.state().clone(),
            stored_status,
            routes: trace.routes_of(run_id),
            pauses,
            escalation,
            events,
        });
    }
    trace.flush();
    Ok(Outcome {
        leads: reports,
        usage,
        llm_requests: backend.server().map(TestServer::hits),
        requests: backend.requests(),
        db_path,
        endpoint: backend.endpoint().to_owned(),
    })
}
