//! `cargo run --example lead_enrichment`: validation with a handled invalid branch, company and
//! contact enrichment, scoring and a hot/warm/cold router. The hot lead's email waits for a
//! person's approval: the run pauses and is stored; this binary then plays the person and the
//! stored run is resumed with the answer.
//!
//! Offline by default; set `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`)
//! for a real endpoint, `FLOWS_DB` to store the runs elsewhere.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_core::input::PauseRequest;
use flow_examples::lead_enrichment::{self, Config, ReviewAnswer};
use flow_examples::setup::{StoreLocation, display_path, exit_code, init_logging, operate_hint};

/// The person: reads the draft and answers in their own words.
fn reviewer(request: &PauseRequest) -> ReviewAnswer {
    println!("\n  👤 The reviewer (played by this example) is asked: {}", request.prompt);
    if let Some(draft) = request.metadata.get("draft").and_then(|d| d.as_str()) {
        for line in draft.lines() {
            println!("     | {line}");
        }
    }
    let answer = ReviewAnswer { reviewer: "Maya (sales lead)".into(), answer: "Looks good, send it.".into() };
    println!("  👤 {} answers: \"{}\"\n", answer.reviewer, answer.answer);
    answer
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    exit_code(example().await)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    println!("Lead enrichment: {} leads\n", lead_enrichment::sample_leads().len());

    let out = lead_enrichment::run(Config::from_env(), reviewer).await?;

    println!("\nLeads:");
    for lead in &out.leads {
        let s = &lead.state;
        let score = s.score.as_ref().map_or_else(|| "-".into(), |sc| sc.score.to_string());
        println!(
            "  {:<16} score {:>3}  {:?}  (run {} is {})",
            s.form.name, score, s.disposition, lead.run_id, lead.stored_status
        );
        for route in &lead.routes {
            println!("      {route}");
        }
        if !s.problems.is_empty() {
            println!("      rejected: {}", s.problems.join("; "));
        }
        if let Some(track) = &s.nurture_track {
            println!("      nurture track: {track}");
        }
        for pause in &lead.pauses {
            println!("      paused (stored as {}) and resumed with \"{}\"", pause.stored_status, pause.answer.answer);
        }
        if let Some(id) = &s.sent_message_id {
            println!("      email sent: {id}");
        }
    }
    println!(
        "\nTokens: {}{}",
        out.usage.total_tokens,
        out.llm_requests.map(|n| format!(" over {n} LLM requests")).unwrap_or_default()
    );
    println!("Runs are stored in {}", display_path(&out.db_path));
    println!("{}", operate_hint(StoreLocation::Sqlite(&out.db_path), out.leads.first().map(|l| l.run_id)));
    Ok(())
}
