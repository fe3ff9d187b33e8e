//! `Runner::submit`, `Runner::answer` and `Worker::serve` on `MemoryStore`: the checks of
//! `serve_suite`, which take any store, each on a fresh one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_suite;

use std::sync::Arc;

use flow_core::store::{MemoryStore, Store};

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

#[tokio::test]
async fn submitted_runs_complete() {
    serve_suite::submitted_runs_complete(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_runs_exactly_once() {
    serve_suite::workers_share_runs_exactly_once(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limits_hold_across_workers() {
    serve_suite::queue_limits_hold_across_workers(memory()).await;
}

#[tokio::test]
async fn workers_claim_only_their_queues_and_due_runs() {
    serve_suite::workers_claim_only_their_queues_and_due_runs(memory()).await;
}

#[tokio::test]
async fn serve_takes_over_runs_whose_process_died() {
    serve_suite::serve_takes_over_runs_whose_process_died(memory()).await;
}

#[tokio::test]
async fn graceful_stop_finishes_or_releases() {
    serve_suite::graceful_stop_finishes_or_releases(memory()).await;
}

#[tokio::test]
async fn answers_from_anywhere_reach_the_serving_worker() {
    serve_suite::answers_from_anywhere_reach_the_serving_worker(memory()).await;
}

#[tokio::test]
async fn resume_runs_queued_and_answered_runs_here() {
    serve_suite::resume_runs_queued_and_answered_runs_here(memory()).await;
}

#[tokio::test]
async fn duplicate_submit_ids() {
    serve_suite::duplicate_submit_ids(memory()).await;
}

#[tokio::test]
async fn a_lease_lost_mid_run_is_logged_and_another_worker_finishes() {
    serve_suite::a_lease_lost_mid_run_is_logged_and_another_worker_finishes(memory()).await;
}

#[tokio::test]
async fn store_errors_are_retried() {
    serve_suite::store_errors_are_retried(memory()).await;
}

/// The child process of `sigterm_stops_gracefully_and_gives_runs_back`: serves a run whose step
/// never ends, listens for SIGTERM, says so, and reports what the worker did once stopped.
#[test]
fn sigterm_child() {
    if std::env::var("FLOWS_SERVE_SIGTERM_CHILD").is_err() {
        return; // run as an ordinary test: nothing to do
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = memory();
        let run_id = serve_suite::submit_endless(&store).await;
        let serving = serve_suite::serve_endless(&store);
        serve_suite::until_held(&store, run_id).await;
        let stop = serving.until_signal(std::time::Duration::ZERO);
        tokio::pin!(stop);
        // The first poll starts listening for the signal: only then may the parent send it.
        assert!(futures::poll!(&mut stop).is_pending());
        println!("listening");
        let summary = stop.await;
        let record = store.load_run(run_id).await.unwrap();
        println!("released {:?} lease {:?}", summary.released == vec![run_id], record.lease_owner);
    });
}

/// SIGTERM stops a serving worker gracefully: it gives back the run it held.
#[cfg(unix)]
#[test]
fn sigterm_stops_gracefully_and_gives_runs_back() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["sigterm_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("FLOWS_SERVE_SIGTERM_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.by_ref().map_while(Result::ok).find(|l| l.contains("listening"));
    assert!(listening.is_some(), "the child never listened for SIGTERM");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "the child did not exit cleanly on SIGTERM: {status}; it said {rest:#?}");
    let report = rest.iter().find(|l| l.starts_with("released"));
    assert_eq!(report.map(String::as_str), Some("released true lease None"), "the held run was given back");
}

#[tokio::test]
async fn a_run_that_cannot_be_read_leaves_its_queue_failed() {
    serve_suite::a_run_that_cannot_be_read_leaves_its_queue_failed(memory()).await;
}
