//! What `cargo run --example invoice_processing` prints around the console's lines, and the
//! approver it plays.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_core::input::PauseRequest;

use super::{ApprovalAnswer, Config, Outcome};
use crate::setup::{StoreLocation, display_path, operate_hint};

/// The first line: how many invoices, under which limit.
pub fn heading(config: &Config) {
    println!(
        "Invoice processing: {} invoices, auto-approval limit {:.2}\n",
        config.invoices.len(),
        config.auto_approve_limit
    );
}

/// The approver: reads the request and approves.
pub fn approver(request: &PauseRequest) -> ApprovalAnswer {
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

/// Every invoice's outcome, the tokens, and where to look at the runs with `flows`.
pub fn summary(out: &Outcome) {
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
}
