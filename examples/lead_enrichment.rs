//! `cargo run --example lead_enrichment`: validation with a handled invalid branch, company and
//! contact enrichment, scoring and a hot/warm/cold router. The hot lead's email waits for a
//! person's approval: the run pauses and is stored; this binary then plays the person and the
//! stored run is resumed with the answer.
//!
//! The state, the flow and its run are in `examples/src/lead_enrichment.rs`
//! ([`flow_examples::lead_enrichment`]); this binary runs it and prints the outcome.
//!
//! Offline by default; set `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`)
//! for a real endpoint, `FLOWS_DB` to store the runs elsewhere.

use flow_examples::lead_enrichment::{self, Config, report};
use flow_examples::setup::{exit_code, init_logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    exit_code(example().await)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    report::heading();
    let out = lead_enrichment::run(Config::from_env(), report::reviewer).await?;
    report::summary(&out);
    Ok(())
}
