//! Lead enrichment, offline end to end: each sample lead takes its route (hot, warm, cold,
//! invalid); the hot lead's run pauses, is stored as paused, and is resumed with a person's
//! answer; unclear answers are asked again, a revision loops back to drafting, a discard ends
//! the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flow_core::RunStatus;
use flow_core::events::FlowEvent;
use flow_core::store::{SqliteStore, StepStatus, Store};
use flow_examples::lead_enrichment::{self, Config, Disposition, EmailDecision, ReviewAnswer, sample_leads};

fn answer(text: &str) -> ReviewAnswer {
    ReviewAnswer { reviewer: "Maya".into(), answer: text.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_lead_takes_its_route_and_the_hot_email_waits_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let mut asked = Vec::new();
    let out = lead_enrichment::run(Config::offline(&db), |request| {
        asked.push(request.clone());
        answer("Looks good, send it.")
    })
    .await
    .unwrap();

    let dispositions: Vec<Disposition> = out.leads.iter().map(|l| l.state.disposition).collect();
    assert_eq!(
        dispositions,
        [Disposition::EmailSent, Disposition::Nurture, Disposition::Archived, Disposition::Rejected]
    );
    let routes: Vec<Vec<String>> = out.leads.iter().map(|l| l.routes.clone()).collect();
    assert_eq!(
        routes,
        [
            vec!["validate → Validity::Valid", "score_lead → Tier::Hot", "review_draft → EmailDecision::Send"],
            vec!["validate → Validity::Valid", "score_lead → Tier::Warm"],
            vec!["validate → Validity::Valid", "score_lead → Tier::Cold"],
            vec!["validate → Validity::Invalid"],
        ]
    );

    // The hot lead: paused, stored as paused, resumed with the answer, email sent.
    let hot = &out.leads[0];
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].run_id, hot.run_id);
    assert_eq!(asked[0].method, "review_draft");
    assert!(asked[0].metadata["draft"].as_str().unwrap().starts_with("Hi Dana"));
    assert_eq!(hot.pauses.len(), 1);
    assert_eq!(hot.pauses[0].stored_status, RunStatus::Paused);
    assert!(hot.pauses[0].prompt.starts_with("Send this email to Dana Whitfield"));
    assert_eq!(hot.state.reviews.len(), 1);
    assert_eq!(hot.state.reviews[0].decision, Some(EmailDecision::Send));
    assert!(hot.state.sent_message_id.as_deref().unwrap().starts_with("msg_"));
    assert_eq!(hot.state.score.as_ref().unwrap().score, 88);
    assert_eq!(hot.state.company.as_ref().unwrap().employees, 1200);
    let resumed = hot.events.iter().filter(|e| matches!(e, FlowEvent::RunStarted { resumed: true, .. })).count();
    assert_eq!(resumed, 1, "one resume after the pause");
    assert!(hot.events.iter().any(|e| matches!(e, FlowEvent::Paused { method: "review_draft", .. })));

    // Warm, cold, invalid.
    assert_eq!(out.leads[1].state.nurture_track.as_deref(), Some("small-team-onboarding"));
    assert_eq!(out.leads[2].state.score.as_ref().unwrap().score, 18);
    let invalid = &out.leads[3];
    assert_eq!(invalid.state.problems.len(), 3, "{:?}", invalid.state.problems);
    assert!(invalid.state.company.is_none());
    assert!(
        !invalid.events.iter().any(|e| matches!(e, FlowEvent::LlmUsage { .. })),
        "nothing paid for an invalid form"
    );

    // The stored runs: all completed; the hot run's review step completed after its pause.
    assert!(out.leads.iter().all(|l| l.stored_status == RunStatus::Completed));
    let store = SqliteStore::open(&db).await.unwrap();
    for lead in &out.leads {
        assert_eq!(store.load_run(lead.run_id).await.unwrap().status, RunStatus::Completed);
    }
    let steps = store.steps(hot.run_id).await.unwrap();
    let review = steps.iter().find(|s| s.method == "review_draft").unwrap();
    assert_eq!(review.status, StepStatus::Completed);
    assert!(steps.iter().any(|s| s.method == "send_email" && s.status == StepStatus::Completed));
    // 4 (hot) + 1 draft + 1 feedback, 4 (warm), 4 (cold).
    assert_eq!(out.llm_requests, Some(14));
    assert!(out.usage.total_tokens > 0);
    assert_eq!(sample_leads().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclear_answer_is_asked_again_and_a_revision_loops_back_to_drafting() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.leads.truncate(1);
    let mut answers =
        ["What's the weather like in Oslo?", "Please mention our SOC 2 report.", "Perfect, send it."].into_iter();
    let out = lead_enrichment::run(config, |_| answer(answers.next().unwrap())).await.unwrap();

    let hot = &out.leads[0];
    assert_eq!(
        hot.routes,
        [
            "validate → Validity::Valid",
            "score_lead → Tier::Hot",
            "review_draft → EmailDecision::Revise",
            "review_draft → EmailDecision::Send"
        ]
    );
    assert_eq!(hot.pauses.len(), 3);
    assert!(hot.pauses.iter().all(|p| p.stored_status == RunStatus::Paused));
    assert!(hot.pauses[1].prompt.starts_with("Sorry, I could not tell"), "{}", hot.pauses[1].prompt);
    let decisions: Vec<Option<EmailDecision>> = hot.state.reviews.iter().map(|r| r.decision).collect();
    assert_eq!(decisions, [None, Some(EmailDecision::Revise), Some(EmailDecision::Send)]);
    assert_eq!(hot.state.drafts, 2);
    assert!(hot.state.email_draft.as_deref().unwrap().contains("SOC 2"));
    assert_eq!(hot.state.disposition, Disposition::EmailSent);
    assert_eq!(hot.stored_status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_email_ends_the_run_without_sending() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.leads.truncate(1);
    let out = lead_enrichment::run(config, |_| answer("Discard it, they are a competitor.")).await.unwrap();
    let hot = &out.leads[0];
    // `Discard` is a terminal route: no listener follows, but the decision is still an event.
    assert_eq!(
        hot.routes,
        ["validate → Validity::Valid", "score_lead → Tier::Hot", "review_draft → EmailDecision::Discard"]
    );
    assert_eq!(hot.state.reviews.last().unwrap().decision, Some(EmailDecision::Discard));
    assert_eq!(hot.state.disposition, Disposition::EmailDiscarded);
    assert!(hot.state.sent_message_id.is_none());
    assert_eq!(hot.stored_status, RunStatus::Completed);
}

/// What a run learned about a company is recalled by the next run for the same company: the
/// second run's research prompt carries the first run's profile; another company's does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_run_for_a_company_builds_on_what_the_last_one_learned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let leads = sample_leads();
    let first = lead_enrichment::run(Config { leads: vec![leads[1].clone()], ..Config::offline(&db) }, |_| {
        answer("Looks good, send it.")
    })
    .await
    .unwrap();
    let profile = first.leads[0].state.company.clone().unwrap();
    assert!(first.leads[0].state.recalled.is_empty(), "nothing known before the first run");
    let research = |out: &lead_enrichment::Outcome| -> Vec<String> {
        out.requests
            .iter()
            .map(|r| r.body.to_string())
            .filter(|b| b.contains("Profile the company of this lead"))
            .collect()
    };
    assert!(research(&first).iter().all(|b| !b.contains("What earlier runs learned")));

    let second = lead_enrichment::run(
        Config { leads: vec![leads[1].clone(), leads[2].clone()], ..Config::offline(&db) },
        |_| answer("Looks good, send it."),
    )
    .await
    .unwrap();
    let learned = format!(
        "{}: {} in {}, {} employees. {}",
        profile.name, profile.industry, profile.region, profile.employees, profile.fit_notes
    );
    assert_eq!(second.leads[0].state.recalled, std::slice::from_ref(&learned));
    let prompts = research(&second);
    let brightleaf: Vec<&String> = prompts.iter().filter(|b| b.contains("Brightleaf")).collect();
    assert!(!brightleaf.is_empty());
    let escaped = serde_json::to_string(&learned).unwrap();
    let escaped = escaped.trim_matches('"');
    assert!(
        brightleaf.iter().all(|b| b.contains("What earlier runs learned about this company") && b.contains(escaped)),
        "{brightleaf:#?}"
    );
    assert!(second.leads[1].state.recalled.is_empty(), "Lindqvist Bakery knows nothing of Brightleaf");
    assert!(prompts.iter().filter(|b| b.contains("Lindqvist")).all(|b| !b.contains("What earlier runs learned")));
}
