//! What `cargo run --example lead_enrichment` prints around the console's lines, and the
//! reviewer it plays.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_core::input::PauseRequest;

use super::{Outcome, ReviewAnswer, sample_leads};
use crate::setup::{StoreLocation, display_path, operate_hint};

/// The first line: how many leads.
pub fn heading() {
    println!("Lead enrichment: {} leads\n", sample_leads().len());
}

/// The person: reads the draft and answers in their own words.
pub fn reviewer(request: &PauseRequest) -> ReviewAnswer {
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

/// Every lead's outcome, the tokens, and where to look at the runs with `flows`.
pub fn summary(out: &Outcome) {
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
}
