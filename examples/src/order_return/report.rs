//! What `cargo run --example order_return` prints around the console's lines.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_core::console::human_duration;

use super::{CRASHING_ORDER, Crash, LATE_ORDER, Outcome};
use crate::setup::{StoreLocation, display_path, operate_hint};

/// The first line.
pub fn heading() {
    println!("Order return: two returns, one crash\n");
}

/// Both returns: the crashed one step by step, the escalated one, the tokens, and where to look
/// at the runs with `flows`.
pub fn summary(out: &Outcome) {
    let r = &out.returned;
    println!("\nReturn of {CRASHING_ORDER}: run {} is {}", r.run_id, r.stored_status);
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
    println!("\nReturn of {LATE_ORDER}: run {} is {}", e.run_id, e.stored_status);
    println!("  escalated: {}", e.escalation.as_deref().unwrap_or("-"));

    println!(
        "\nTokens of LLM calls made in this process: {} (calls replayed from the journal cost nothing)",
        out.usage.total_tokens
    );
    println!("Runs are stored in {}; the shop in {}", display_path(&out.db_path), display_path(&out.shop_path));
    println!("{}", operate_hint(StoreLocation::Sqlite(&out.db_path), Some(out.escalated.run_id)));
}
