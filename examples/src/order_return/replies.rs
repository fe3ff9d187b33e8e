//! The offline LLM's replies for order returns, matched on the agent and the order number.

use flow_llm::{Match, Reply, TestServer};
use serde_json::json;

use super::{CRASHING_ORDER, LATE_ORDER};

/// The offline server's replies, matched on the agent and the order number.
pub fn script(server: &TestServer) {
    let intake = || Match::schema_named("ReturnRequest");
    server.when(intake().and(Match::last_user_contains(CRASHING_ORDER))).reply(Reply::json(&json!({
        "order_number": CRASHING_ORDER, "item": "hiking boots", "reason": "WrongSize",
    })));
    server.when(intake().and(Match::last_user_contains(LATE_ORDER))).reply(Reply::json(&json!({
        "order_number": LATE_ORDER, "item": "espresso machine", "reason": "ChangedMind",
    })));
    server.when(Match::system_contains("Customer Care Writer")).respond(|req| {
        let text = req.chat.last_user_text().unwrap_or_default();
        let tracking = text.split("tracking ").nth(1).and_then(|t| t.split('.').next()).unwrap_or("(see label)");
        Reply::text(format!(
            "Hi Lena,\n\nYour return is on its way: drop the parcel at any PostNord point with tracking number {tracking}. We refund you as soon as it is scanned.\n\nThe shop team"
        ))
    });
}
