//! Ticket routing, offline end to end: ten tickets at once, each routed to its squad, saved in
//! the SQLite helpdesk table and notified; the security ticket's notification fails for good
//! and compensation deletes its row; the offline server never sees more LLM requests at once
//! than the configured bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flow_core::RunStatus;
use flow_core::events::FlowEvent;
use flow_core::store::{SqliteStore, StepStatus, Store};
use flow_examples::ticket_routing::{self, Config, Squad};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_routed_saved_and_notified_and_a_failed_notification_is_compensated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let out = ticket_routing::run(Config::offline(&db)).await.unwrap();

    assert_eq!(out.tickets.len(), 10);
    let squads: Vec<Squad> = out.tickets.iter().map(|t| t.state.triage.as_ref().unwrap().squad).collect();
    use Squad::{Billing, Security, Technical};
    assert_eq!(
        squads,
        [Billing, Technical, Security, Billing, Technical, Technical, Billing, Technical, Billing, Technical]
    );
    for t in &out.tickets {
        let squad = t.state.triage.as_ref().unwrap().squad;
        assert_eq!(t.routes, [format!("route_ticket → Squad::{squad:?}")], "{}", t.ticket_id);
        assert!(t.state.summary.is_some());
        assert_eq!(t.state.saved.as_ref().unwrap().ticket_id, t.ticket_id);
    }

    // Nine completed and notified; the security ticket failed, compensated.
    let store = SqliteStore::open(&db).await.unwrap();
    for t in out.tickets.iter().filter(|t| t.ticket_id != "T-1003") {
        assert_eq!(t.stored_status, RunStatus::Completed, "{}", t.ticket_id);
        assert!(!t.compensated);
        let receipt = t.state.notified.as_deref().unwrap();
        assert!(receipt.starts_with("delivered to #"), "{receipt}");
    }
    let security = &out.tickets[2];
    assert_eq!(security.ticket_id, "T-1003");
    assert!(security.compensated);
    assert_eq!(security.stored_status, RunStatus::Compensated);
    assert!(security.state.notified.is_none());
    assert!(security.error.as_deref().unwrap().contains("#security-oncall returned 503"));
    assert!(security.events.iter().any(|e| matches!(
        e,
        FlowEvent::Compensated { method: "delete_ticket", undoes: "save_ticket", error: None, .. }
    )));
    let notify_failures =
        security.events.iter().filter(|e| matches!(e, FlowEvent::MethodFailed { method: "notify_squad", .. })).count();
    assert_eq!(notify_failures, 3, "three attempts, then it failed for good");
    let steps = store.steps(security.run_id).await.unwrap();
    let status = |method: &str| steps.iter().find(|s| s.method == method).map(|s| (s.status, s.attempt)).unwrap();
    assert_eq!(status("notify_squad"), (StepStatus::Failed, 3));
    assert_eq!(status("delete_ticket").0, StepStatus::Compensated);
    assert_eq!(store.load_run(security.run_id).await.unwrap().status, RunStatus::Compensated);

    // The helpdesk table: every ticket but the compensated one.
    let expected: Vec<String> =
        out.tickets.iter().filter(|t| t.ticket_id != "T-1003").map(|t| t.ticket_id.clone()).collect();
    assert_eq!(out.saved_tickets, expected);

    // Bounded concurrency: two LLM calls per ticket, never more than three in flight.
    assert_eq!(out.llm_requests, Some(20));
    let seen = out.server_max_in_flight.unwrap();
    assert!(seen <= out.max_llm_in_flight, "{seen} requests in flight, limit {}", out.max_llm_in_flight);
    assert!(seen > 1, "the runs' LLM calls overlapped ({seen})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_one_serialises_every_llm_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.max_llm_in_flight = 1;
    config.offline_latency = Duration::from_millis(10);
    config.tickets.truncate(4);
    let out = ticket_routing::run(config).await.unwrap();
    assert_eq!(out.server_max_in_flight, Some(1));
    assert_eq!(out.llm_requests, Some(8));
    assert_eq!(out.saved_tickets, ["T-1001", "T-1002", "T-1004"]);
}
