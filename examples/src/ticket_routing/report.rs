//! What `cargo run --example ticket_routing` prints around the console's lines.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_core::console::{human_duration, short_id};

use super::{Config, Outcome, channel};
use crate::setup::{StoreLocation, display_path, operate_hint};

/// The first line: how many tickets.
pub fn heading(config: &Config) {
    println!("Ticket routing: {} tickets at once\n", config.tickets.len());
}

/// Every ticket's outcome, the LLM requests in flight, the tickets left in the table, and where
/// to look at the runs with `flows`.
pub fn summary(out: &Outcome) {
    println!("\nTickets:");
    for t in &out.tickets {
        let s = &t.state;
        let (squad, priority) = s
            .triage
            .as_ref()
            .map_or(("-".into(), "-".into()), |tr| (format!("{:?}", tr.squad), format!("{:?}", tr.priority)));
        let outcome = if t.compensated {
            format!(
                "saved as row {}, notifying {} failed for good, row deleted by compensation",
                s.saved.as_ref().map_or(0, |r| r.row_id),
                s.saved.as_ref().map_or("?", |r| channel(r.squad))
            )
        } else if let Some(receipt) = &s.notified {
            format!("saved as row {}, {receipt}", s.saved.as_ref().map_or(0, |r| r.row_id))
        } else {
            "not saved".into()
        };
        println!(
            "  {} {:<9} {:<6} run {} {:<11} {outcome}",
            t.ticket_id,
            squad,
            priority,
            short_id(t.run_id),
            t.stored_status.as_str()
        );
    }
    println!(
        "\nLLM requests in flight: at most {} (limit {}){}",
        out.server_max_in_flight.map_or_else(|| "n/a (a real endpoint does not report it)".into(), |n| n.to_string()),
        out.max_llm_in_flight,
        out.llm_requests.map(|n| format!(", {n} requests in all")).unwrap_or_default()
    );
    println!("Tickets left in the helpdesk table: {}", out.saved_tickets.join(", "));
    println!("Tokens: {}; the batch took {}", out.usage.total_tokens, human_duration(out.elapsed));
    println!("Runs are stored in {}; tickets in {}", display_path(&out.db_path), display_path(&out.helpdesk_path));
    println!("{}", operate_hint(StoreLocation::Sqlite(&out.db_path), out.tickets.first().map(|t| t.run_id)));
}
