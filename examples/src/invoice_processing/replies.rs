//! The offline LLM's replies for invoice processing, matched on the agent and on text unique to
//! each invoice.

use flow_llm::{Match, Reply, TestServer};
use serde_json::json;

/// The offline server's replies, matched on the agent and on text unique to each invoice.
pub fn script(server: &TestServer) {
    let clerk = || Match::system_contains("Accounts Payable Clerk");
    let specialist = || Match::system_contains("Senior AP Specialist");
    let line = |description: &str, amount: f64| json!({ "description": description, "amount": amount });

    server.when(clerk().and(Match::last_user_contains("INV-2024-0117"))).reply(Reply::json(&json!({
        "vendor": "Acme Office Supplies GmbH", "invoice_number": "INV-2024-0117", "currency": "EUR",
        "total": 1284.50, "due_date": "2024-12-04",
        "line_items": [line("120 x A4 paper boxes", 1080.00), line("12 x toner cartridges", 204.50)],
        "confidence": 0.97,
    })));
    server.when(clerk().and(Match::last_user_contains("Invoice 88231"))).reply(Reply::json(&json!({
        "vendor": "Helix Cloud Services Ltd", "invoice_number": "88231", "currency": "EUR",
        "total": 18400.00, "due_date": "2024-11-30",
        "line_items": [line("Annual platform licence, 40 seats", 16000.00), line("Priority support", 2400.00)],
        "confidence": 0.95,
    })));
    // The fax: the quick extraction is unsure; the careful one recovers it.
    server.when(clerk().and(Match::last_user_contains("N0RDIC FRE1GHT"))).reply(Reply::json(&json!({
        "vendor": "N0RDIC FRE1GHT AB", "invoice_number": "NF-5512?", "currency": "EUR",
        "total": 2150.0, "due_date": "2024-12-1?",
        "line_items": [line("Pallet transport", 215.0)],
        "confidence": 0.42,
    })));
    server.when(specialist().and(Match::last_user_contains("N0RDIC FRE1GHT"))).reply(Reply::json(&json!({
        "vendor": "Nordic Freight AB", "invoice_number": "NF-5512", "currency": "EUR",
        "total": 2150.00, "due_date": "2024-12-15",
        "line_items": [line("Pallet transport Oslo-Gothenburg", 2150.00)],
        "confidence": 0.91,
    })));
    // The receipt nobody can read.
    let unreadable = json!({
        "vendor": "unknown", "invoice_number": "unknown", "currency": "EUR", "total": 4.0, "due_date": "unknown",
        "line_items": [], "confidence": 0.2,
    });
    server.when(Match::last_user_contains("THERMAL RECEIPT")).reply(Reply::json(&unreadable));
}
