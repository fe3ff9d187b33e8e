//! The sample tickets and the offline LLM's replies to them: each ticket's summary and triage,
//! matched on text unique to the ticket.

use flow_llm::{Match, Reply, TestServer};
use serde_json::json;

use super::{Priority, Squad, Ticket};

/// The offline server's replies: for every ticket, a summary and a triage, matched on the
/// agent and the ticket id (the runs are concurrent, so order cannot be relied on).
pub fn script(server: &TestServer) {
    for s in scripted_tickets() {
        server
            .when(
                Match::system_contains("Support Triage Agent")
                    .and(Match::last_user_contains(format!("ticket {} ", s.id))),
            )
            .reply(Reply::text(s.summary));
        let triage = json!({
            "squad": s.squad,
            "priority": s.priority,
            "reason": format!("{:?} issue: {}", s.squad, s.summary),
        });
        server
            .when(Match::schema_named("Triage").and(Match::last_user_contains(format!("ticket {} ", s.id))))
            .reply(Reply::json(&triage));
    }
}

/// A sample ticket and what the scripted model says about it.
struct Scripted {
    id: &'static str,
    customer: &'static str,
    subject: &'static str,
    body: &'static str,
    summary: &'static str,
    squad: Squad,
    priority: Priority,
}

fn scripted_tickets() -> Vec<Scripted> {
    use Priority::{Low, Normal, Urgent};
    use Squad::{Billing, Security, Technical};
    let t = |id, customer, subject, body, summary, squad, priority| Scripted {
        id,
        customer,
        subject,
        body,
        summary,
        squad,
        priority,
    };
    vec![
        t(
            "T-1001",
            "Ana Ruiz",
            "Charged twice for October",
            "My card shows two charges of 49 EUR for October.",
            "Customer was charged twice for the October subscription.",
            Billing,
            Normal,
        ),
        t(
            "T-1002",
            "Ben Okafor",
            "CSV export times out",
            "Exporting last year's orders to CSV spins and then fails after a minute.",
            "CSV export of a year of orders times out.",
            Technical,
            Normal,
        ),
        t(
            "T-1003",
            "Chloe Martin",
            "Login from a country I've never been to",
            "I got an alert about a login from Belarus at 3am and my password was changed.",
            "Account likely taken over: foreign login followed by a password change.",
            Security,
            Urgent,
        ),
        t(
            "T-1004",
            "Dev Patel",
            "VAT number on invoices",
            "Please add our VAT number to future invoices.",
            "Customer wants their VAT number on invoices.",
            Billing,
            Low,
        ),
        t(
            "T-1005",
            "Eva Novak",
            "API returns 500 on /orders",
            "Since this morning every POST /orders returns HTTP 500.",
            "POST /orders fails with HTTP 500 since this morning.",
            Technical,
            Urgent,
        ),
        t(
            "T-1006",
            "Farid Haddad",
            "Dark mode?",
            "Any plans for a dark mode in the dashboard?",
            "Feature request: dark mode for the dashboard.",
            Technical,
            Low,
        ),
        t(
            "T-1007",
            "Grace Liu",
            "Refund for cancelled plan",
            "I cancelled in the first week; where is my refund?",
            "Customer awaits the refund for a plan cancelled in week one.",
            Billing,
            Normal,
        ),
        t(
            "T-1008",
            "Hugo Berg",
            "SSO login loop",
            "Signing in with Okta sends me back to the login page forever.",
            "Okta SSO sign-in loops back to the login page.",
            Technical,
            Urgent,
        ),
        t(
            "T-1009",
            "Iris Tan",
            "Update credit card",
            "How do I change the card we pay with?",
            "Customer asks how to change the payment card.",
            Billing,
            Low,
        ),
        t(
            "T-1010",
            "Jon Silva",
            "Webhooks delayed",
            "Order webhooks arrive 20 minutes late since yesterday.",
            "Order webhooks are delivered about 20 minutes late.",
            Technical,
            Normal,
        ),
    ]
}

/// Ten tickets for three squads; `T-1003` is a security incident.
pub fn sample_tickets() -> Vec<Ticket> {
    scripted_tickets()
        .into_iter()
        .map(|s| Ticket {
            id: s.id.into(),
            customer: s.customer.into(),
            subject: s.subject.into(),
            body: s.body.into(),
        })
        .collect()
}
