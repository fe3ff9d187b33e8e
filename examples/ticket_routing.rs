//! `cargo run --example ticket_routing`: ten support tickets processed at once, with at most
//! three LLM requests in flight across all of them. Each run summarises its ticket, routes it
//! to a squad, saves it through a SQLite tool and notifies the squad through a chat tool; the
//! security squad's pager is down, so that ticket's notification fails for good and the saved
//! ticket is deleted again (compensation).
//!
//! The state, the flow and its run are in `examples/src/ticket_routing.rs`
//! ([`flow_examples::ticket_routing`]); this binary runs it and prints the outcome.
//!
//! `TICKETS_MAX_LLM_IN_FLIGHT=1` serialises the LLM calls; `FLOWS_TRACE=full` prints every
//! step of every run. Offline by default; set `OPENAI_API_KEY` (and optionally
//! `OPENAI_BASE_URL`, `FLOWS_MODEL`) for a real endpoint, `FLOWS_DB` to store the runs
//! elsewhere.

use flow_examples::setup::{exit_code, init_logging};
use flow_examples::ticket_routing::{self, Config, report};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    exit_code(example().await)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    let config = Config::from_env()?;
    report::heading(&config);
    let out = ticket_routing::run(config).await?;
    report::summary(&out);
    Ok(())
}
