//! Order return, offline end to end: the flaky label service succeeds on its third attempt
//! (a 503, then a hang cut off by the timeout), the non-critical email's failure is recorded
//! while the refund goes on, the late return escalates, and the first return survives a crash
//! in the middle of restocking: once with the execution dropped in-process, once with a child
//! process killed by SIGKILL (this test binary, re-executed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flow_core::RunStatus;
use flow_core::events::FlowEvent;
use flow_core::store::{SqliteStore, StepStatus, Store};
use flow_examples::order_return::{self, Config, Crash, CrashMode, Outcome};

/// The child process of `a_child_process_killed_with_sigkill_mid_run_is_resumed`: does nothing
/// when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    if order_return::is_child() {
        order_return::child_main().await.unwrap();
    }
}

fn step<'a>(out: &'a Outcome, method: &str) -> &'a flow_core::store::StepRecord {
    out.returned.steps.iter().find(|s| s.method == method).unwrap()
}

/// What holds however the crash happened.
async fn assert_survived_the_crash(out: &Outcome, db: &std::path::Path) {
    let r = &out.returned;
    // The crash hit restock_inventory (stored as not yet finished), before refund was scheduled;
    // the non-critical email may still have been waiting for its retry.
    assert!(out.crashed_in.iter().any(|m| m == "restock_inventory"), "{:?}", out.crashed_in);
    assert!(
        out.crashed_in.iter().all(|m| m == "restock_inventory" || m == "send_confirmation"),
        "{:?}",
        out.crashed_in
    );
    assert_eq!(r.stored_status, RunStatus::Completed);
    let store = SqliteStore::open(db).await.unwrap();
    assert_eq!(store.load_run(r.run_id).await.unwrap().status, RunStatus::Completed);

    // Every step ran once to completion, except the retried label and the skipped email.
    let label = step(out, "create_return_label");
    assert_eq!((label.status, label.attempt), (StepStatus::Completed, 3));
    let email = step(out, "send_confirmation");
    assert_eq!((email.status, email.attempt), (StepStatus::Skipped, 2));
    for method in ["validate_order", "check_eligibility", "restock_inventory", "refund"] {
        assert_eq!(step(out, method).status, StepStatus::Completed, "{method}");
    }
    assert_eq!(r.steps.len(), 6, "no step was scheduled twice");

    // The non-critical email failed for good; the refund happened anyway.
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].method, "send_confirmation");
    assert!(r.failures[0].error.contains("mail relay"));
    assert!(!r.state.confirmation_sent);
    assert!(r.state.label.as_ref().unwrap().tracking.starts_with("RL"));

    // The warehouse got the restock twice (the killed execution's call and the resumed one's)
    // and applied it once; the refund was made once.
    assert_eq!(out.stock_movements.len(), 1);
    assert_eq!(out.stock_movements[0].requests, 2);
    assert_eq!(r.state.restock.as_ref().unwrap().requests, 2);
    assert_eq!(out.refunds.len(), 1);
    assert_eq!(out.refunds[0].requests, 1);
    assert_eq!(r.state.refund_id.as_deref(), Some(format!("re_{:06}", 1).as_str()));

    // The resume found the dead execution's lease still held, waited it out and ran in this
    // process.
    assert!(out.lease_refusals >= 1, "the resume was never refused for the dead execution's lease");
    assert!(r.events.iter().any(|e| matches!(e, FlowEvent::RunStarted { resumed: true, .. })));

    // The late return escalated to a person: stored as escalated, nothing after eligibility ran.
    let e = &out.escalated;
    assert_eq!(e.stored_status, RunStatus::Escalated);
    let reason = e.escalation.as_deref().unwrap();
    assert!(reason.contains("75 days") && reason.contains("60-day"), "{reason}");
    let record = store.load_run(e.run_id).await.unwrap();
    assert_eq!((record.status, record.error.as_deref()), (RunStatus::Escalated, Some(reason)));
    let methods: Vec<&str> = e.steps.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["validate_order", "check_eligibility"]);
    assert!(e.state.label.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_dropped_mid_run_is_resumed_in_a_fresh_runner() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let out = order_return::run(Config::offline(&db)).await.unwrap();
    assert_eq!(out.crash, Crash::ExecutionDropped);
    assert_survived_the_crash(&out, &db).await;

    // This process saw the label's attempts: a 503, then a timeout, then success.
    let failures: Vec<(u32, String)> = out
        .returned
        .events
        .iter()
        .filter_map(|e| match e {
            FlowEvent::MethodFailed { method: "create_return_label", attempt, error, retry_in, .. } => {
                assert!(retry_in.is_some(), "attempt {attempt} was retried");
                Some((*attempt, error.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].1.contains("503"));
    assert!(failures[1].1.contains("timed out"), "{}", failures[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_process_killed_with_sigkill_mid_run_is_resumed() {
    if order_return::is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let mut config = Config::offline(&db);
    config.crash = CrashMode::ChildProcess {
        program: std::env::current_exe().unwrap(),
        args: ["crash_child", "--exact", "--nocapture", "--test-threads=1"].map(String::from).to_vec(),
    };
    let out = order_return::run(config).await.unwrap();
    assert!(matches!(out.crash, Crash::ChildKilled { pid } if pid != std::process::id()), "{:?}", out.crash);
    assert_survived_the_crash(&out, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_mail_relay_up_the_confirmation_is_sent() {
    if order_return::is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.mail_relay_down = false;
    let out = order_return::run(config).await.unwrap();
    assert!(out.returned.state.confirmation_sent);
    assert!(out.returned.failures.is_empty());
    assert_eq!(out.returned.stored_status, RunStatus::Completed);
}
