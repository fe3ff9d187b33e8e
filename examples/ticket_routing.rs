//! `cargo run --example ticket_routing`: ten support tickets processed at once, with at most
//! three LLM requests in flight across all of them. Each run summarises its ticket, routes it
//! to a squad, saves it through a SQLite tool and notifies the squad through a chat tool; the
//! security squad's pager is down, so that ticket's notification fails for good and the saved
//! ticket is deleted again (compensation).
//!
//! `TICKETS_MAX_LLM_IN_FLIGHT=1` serialises the LLM calls; `FLOWS_TRACE=full` prints every
//! step of every run. Offline by default; set `OPENAI_API_KEY` (and optionally
//! `OPENAI_BASE_URL`, `FLOWS_MODEL`) for a real endpoint, `FLOWS_DB` to store the runs
//! elsewhere.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_examples::setup::{StoreLocation, display_path, exit_code, init_logging, operate_hint};
use flow_examples::ticket_routing::{self, Config};
use flow_examples::trace::{human_duration, short_id};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    exit_code(example().await)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    let config = Config::from_env()?;
    println!("Ticket routing: {} tickets at once\n", config.tickets.len());

    let out = ticket_routing::run(config).await?;

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
                s.saved.as_ref().map_or("?", |r| ticket_routing::channel(r.squad))
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
    Ok(())
}
