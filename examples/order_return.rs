//! `cargo run --example order_return`: validate the order, check eligibility (outside 60 days
//! a person decides), a return label from a flaky carrier API (retries with backoff, a 1 s
//! timeout), a non-critical confirmation email, restock and refund, and a crash: the first
//! return runs in a child process (this binary, re-executed) that is killed with SIGKILL in the
//! middle of restocking; the stored run is then resumed here once the dead process's lease has
//! expired.
//!
//! Offline by default; set `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`)
//! for a real endpoint, `FLOWS_DB` to store the runs elsewhere.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_examples::order_return::{self, Config, Crash};
use flow_examples::setup::{StoreLocation, display_path, exit_code, init_logging, operate_hint};
use flow_examples::trace::human_duration;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let result = if order_return::is_child() { order_return::child_main().await } else { example().await };
    exit_code(result)
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    println!("Order return: two returns, one crash\n");
    let out = order_return::run(Config::from_env()?).await?;

    let r = &out.returned;
    println!("\nReturn of {}: run {} is {}", order_return::CRASHING_ORDER, r.run_id, r.stored_status);
    match out.crash {
        Crash::ChildKilled { pid } => println!(
            "  crash: child process {pid} was killed with SIGKILL during {}; resumed here after waiting {} for its lease",
            out.crashed_in.join(", "),
            human_duration(out.waited_for_lease)
        ),
        Crash::ExecutionDropped => println!(
            "  crash: the execution was dropped during {}; resumed in a fresh runner after {}",
            out.crashed_in.join(", "),
            human_duration(out.waited_for_lease)
        ),
    }
    for step in &r.steps {
        println!("  step {:<22} {:<10} attempts {}", step.step_key, step.status.as_str(), step.attempt);
    }
    if let Some(label) = &r.state.label {
        println!("  label: {} {}", label.carrier, label.tracking);
    }
    for failure in &r.failures {
        println!("  non-critical failure recorded: {} ({})", failure.method, failure.error);
    }
    for row in &out.stock_movements {
        println!(
            "  warehouse: restock for {} received {} time(s), applied once (idempotency key {})",
            row.order_number, row.requests, row.idempotency_key
        );
    }
    println!(
        "  refund: {} ({} row in the payment ledger)",
        r.state.refund_id.as_deref().unwrap_or("-"),
        out.refunds.len()
    );

    let e = &out.escalated;
    println!("\nReturn of {}: run {} is {}", order_return::LATE_ORDER, e.run_id, e.stored_status);
    println!("  escalated: {}", e.escalation.as_deref().unwrap_or("-"));

    println!(
        "\nTokens of LLM calls made in this process: {} (calls replayed from the journal cost nothing)",
        out.usage.total_tokens
    );
    println!("Runs are stored in {}; the shop in {}", display_path(&out.db_path), display_path(&out.shop_path));
    println!("{}", operate_hint(StoreLocation::Sqlite(&out.db_path), Some(out.escalated.run_id)));
    Ok(())
}
