//! The offline LLM's replies for lead enrichment, matched on the request's content (agent role,
//! requested schema, the lead's email, the reviewer's words).

use flow_llm::{Match, Message, Reply, Role, TestServer};
use serde_json::json;

/// The offline server's replies, matched on the request's content (agent role, requested
/// schema, the lead's email, the reviewer's words).
pub fn script(server: &TestServer) {
    // Company research: look the domain up, then turn the record into a profile.
    server.when(Match::system_contains("Company Research Analyst").and(Match::has_tool_results())).respond(|req| {
        let record = req.chat.messages.iter().rev().find(|m| m.role == Role::Tool).map(Message::text_or_empty);
        let profile = match record.and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()) {
            Some(r) => {
                let employees = r["employees"].as_u64().unwrap_or(0);
                json!({
                    "name": r["name"], "industry": r["industry"], "employees": employees, "region": r["region"],
                    "fit_notes": if employees >= 100 { "Large operations team, a strong fit" } else { "Small team; fit depends on budget" },
                })
            }
            None => json!({ "name": "unknown", "industry": "unknown", "employees": 0, "region": "unknown", "fit_notes": "No data found" }),
        };
        Reply::json(&profile)
    });
    server.when(Match::system_contains("Company Research Analyst")).respond(|req| {
        let text = req.chat.last_user_text().unwrap_or_default();
        let domain = text.lines().find_map(|l| l.strip_prefix("domain: ")).unwrap_or_default();
        Reply::tool_call("lookup_company", json!({ "domain": domain }))
    });

    for (email, contact, score, reason) in lead_facts() {
        server
            .when(Match::schema_named("ContactProfile").and(Match::last_user_contains(email)))
            .reply(Reply::json(&contact));
        server
            .when(Match::schema_named("LeadScore").and(Match::last_user_contains(email)))
            .reply(Reply::json(&json!({ "score": score, "reasons": [reason] })));
    }

    // The account executive: a first draft, and a revision that takes the reviewer's note in.
    server.when(Match::system_contains("Account Executive").and(Match::last_user_contains("Reviewer asked"))).reply(Reply::text(
        "Hi Dana,\n\nThanks for reaching out about automating dispatch for your 40 dispatchers. Our SOC 2 Type II report is attached for your security review. Could we show you a 30-minute demo next Tuesday or Thursday?\n\nBest,\nAlex",
    ));
    server.when(Match::system_contains("Account Executive")).reply(Reply::text(
        "Hi Dana,\n\nThanks for reaching out about automating dispatch for your 40 dispatchers. Teams like Northwind's usually start with exception handling, where we save the most hours. Could we show you a 30-minute demo next Tuesday or Thursday?\n\nBest,\nAlex",
    ));

    // The feedback classifier: maps the person's own words onto a route, or says it is unclear.
    server.when(Match::user_contains("The person's answer:")).respond(|req| {
        let text = req.chat.last_user_text().unwrap_or_default();
        let answer = text.rsplit("The person's answer:\n").next().unwrap_or_default().to_lowercase();
        let (route, reason) = if answer.contains("discard") || answer.contains("don't send") {
            ("Discard", "the reviewer does not want the email sent")
        } else if answer.contains("change") || answer.contains("mention") || answer.contains("shorter") {
            ("Revise", "the reviewer asks for changes")
        } else if answer.contains("send") || answer.contains("approve") {
            ("Send", "the reviewer approves sending")
        } else {
            ("unclear", "the answer does not say what to do with the email")
        };
        Reply::json(&json!({ "route": route, "reason": reason }))
    });
}

/// What the scripted model knows about each sample lead: (email, contact, score, reasons).
fn lead_facts() -> Vec<(&'static str, serde_json::Value, u32, &'static str)> {
    vec![
        (
            "dana.whitfield@northwind-logistics.com",
            json!({ "seniority": "Executive", "department": "Operations", "decision_maker": true }),
            88,
            "Executive buyer with a concrete need and a timeline",
        ),
        (
            "sam@brightleaf.io",
            json!({ "seniority": "Manager", "department": "Product", "decision_maker": false }),
            58,
            "Good fit, early research, no timeline",
        ),
        (
            "jonas@lindqvist-bakery.se",
            json!({ "seniority": "Executive", "department": "Management", "decision_maker": true }),
            18,
            "Six-person company outside our segment, no stated need",
        ),
    ]
}
