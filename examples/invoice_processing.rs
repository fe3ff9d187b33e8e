//! `cargo run --example invoice_processing`: extraction with a confidence and a router that
//! decides how much autonomy the flow has: standard invoices are approved automatically, large
//! ones wait for a person (this binary plays the approver), unsure extractions get a careful
//! second extraction.
//!
//! `INVOICE_AUTO_APPROVE_LIMIT=20000 cargo run --example invoice_processing` raises the limit:
//! the large invoice is then approved without a person. Offline by default; set
//! `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`) for a real endpoint,
//! `FLOWS_DB` to store the runs elsewhere.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_core::input::PauseRequest;
use flow_examples::invoice_processing::{self, ApprovalAnswer, Config};
use flow_examples::setup::{StoreLocation, display_path, exit_code, init_logging, operate_hint};

/// The approver: reads the request and approves.
fn approver(request: &PauseRequest) -> ApprovalAnswer {
    println!("\n  👤 The approver (played by this example) is asked: {}", request.prompt);
    if let Some(lines) = request.metadata.pointer("/extraction/line_items").and_then(|l| l.as_array()) {
        for line in lines {
            println!("     | {} .... {}", line["description"].as_str().unwrap_or("?"), line["amount"]);
        }
    }
    let answer = ApprovalAnswer {
        approve: true,
        approver: "Priya (AP lead)".into(),
        note: "Matches the signed licence renewal.".into(),
    };
    println!("  👤 {} approves: {}\n", answer.approver, answer.note);
    answer
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    exit_code(example().await)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    let config = Config::from_env()?;
    println!(
        "Invoice processing: {} invoices, auto-approval limit {:.2}\n",
        config.invoices.len(),
        config.auto_approve_limit
    );

    let out = invoice_processing::run(config, approver).await?;

    println!("\nInvoices:");
    for inv in &out.invoices {
        let s = &inv.state;
        let (vendor, total, confidence) = s
            .extraction
            .as_ref()
            .map_or(("?".into(), 0.0, 0.0), |e| (format!("{} {}", e.vendor, e.invoice_number), e.total, e.confidence));
        println!(
            "  {vendor:<38} {total:>10.2}  confidence {confidence:.2} after {} extraction(s)  {:?}  ledger {}",
            s.extraction_attempts,
            s.status,
            s.ledger_entry.as_deref().unwrap_or("-")
        );
        println!("      {}", inv.routes.join(", "));
        if let Some((_, stored, answer)) = &inv.pause {
            println!("      waited for a person (stored as {stored}); {} answered", answer.approver);
        }
        println!("      run {} is {}", inv.run_id, inv.stored_status);
    }
    println!("\nTokens: {}", out.usage.total_tokens);
    println!("Runs are stored in {}", display_path(&out.db_path));
    println!("{}", operate_hint(StoreLocation::Sqlite(&out.db_path), out.invoices.first().map(|i| i.run_id)));
    Ok(())
}
