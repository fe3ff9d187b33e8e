//! `cargo run --example order_return`: validate the order, check eligibility (outside 60 days
//! a person decides), a return label from a flaky carrier API (retries with backoff, a 1 s
//! timeout), a non-critical confirmation email, restock and refund, and a crash: the first
//! return runs in a child process (this binary, re-executed) that is killed with SIGKILL in the
//! middle of restocking; the stored run is then resumed here once the dead process's lease has
//! expired.
//!
//! The state, the flow and its run are in `examples/src/order_return.rs`
//! ([`flow_examples::order_return`]); this binary runs it and prints the outcome.
//!
//! Offline by default; set `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`)
//! for a real endpoint, `FLOWS_DB` to store the runs elsewhere.

use flow_examples::order_return::{self, Config, report};
use flow_examples::setup::{exit_code, init_logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let result = if order_return::is_child() { order_return::child_main().await } else { example().await };
    exit_code(result)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    report::heading();
    let out = order_return::run(Config::from_env()?).await?;
    report::summary(&out);
    Ok(())
}
