//! `cargo run --example invoice_processing`: extraction with a confidence and a router that
//! decides how much autonomy the flow has: standard invoices are approved automatically, large
//! ones wait for a person (this binary plays the approver), unsure extractions get a careful
//! second extraction.
//!
//! The state, the flow and its run are in `examples/src/invoice_processing.rs`
//! ([`flow_examples::invoice_processing`]); this binary runs it and prints the outcome.
//!
//! `INVOICE_AUTO_APPROVE_LIMIT=20000 cargo run --example invoice_processing` raises the limit:
//! the large invoice is then approved without a person. Offline by default; set
//! `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`) for a real endpoint,
//! `FLOWS_DB` to store the runs elsewhere.

use flow_examples::invoice_processing::{self, Config, report};
use flow_examples::setup::{exit_code, init_logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    exit_code(example().await)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    let config = Config::from_env()?;
    report::heading(&config);
    let out = invoice_processing::run(config, report::approver).await?;
    report::summary(&out);
    Ok(())
}
