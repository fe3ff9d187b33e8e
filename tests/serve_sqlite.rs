//! `Runner::submit`, `Runner::answer` and `Worker::serve` on `SqliteStore`: the checks of
//! `serve_suite`, each on a fresh database file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_suite;

use std::sync::Arc;

use flow_core::store::{SqliteStore, Store};

/// A fresh store; the directory lives as long as the test process (it is small).
async fn sqlite() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap().keep();
    Arc::new(SqliteStore::open(dir.join("runs.db")).await.unwrap())
}

#[tokio::test]
async fn submitted_runs_complete() {
    serve_suite::submitted_runs_complete(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_runs_exactly_once() {
    serve_suite::workers_share_runs_exactly_once(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limits_hold_across_workers() {
    serve_suite::queue_limits_hold_across_workers(sqlite().await).await;
}

#[tokio::test]
async fn workers_claim_only_their_queues_and_due_runs() {
    serve_suite::workers_claim_only_their_queues_and_due_runs(sqlite().await).await;
}

#[tokio::test]
async fn serve_takes_over_runs_whose_process_died() {
    serve_suite::serve_takes_over_runs_whose_process_died(sqlite().await).await;
}

#[tokio::test]
async fn graceful_stop_finishes_or_releases() {
    serve_suite::graceful_stop_finishes_or_releases(sqlite().await).await;
}

#[tokio::test]
async fn answers_from_anywhere_reach_the_serving_worker() {
    serve_suite::answers_from_anywhere_reach_the_serving_worker(sqlite().await).await;
}

#[tokio::test]
async fn resume_runs_queued_and_answered_runs_here() {
    serve_suite::resume_runs_queued_and_answered_runs_here(sqlite().await).await;
}

#[tokio::test]
async fn duplicate_submit_ids() {
    serve_suite::duplicate_submit_ids(sqlite().await).await;
}

#[tokio::test]
async fn a_lease_lost_mid_run_is_logged_and_another_worker_finishes() {
    serve_suite::a_lease_lost_mid_run_is_logged_and_another_worker_finishes(sqlite().await).await;
}

#[tokio::test]
async fn store_errors_are_retried() {
    serve_suite::store_errors_are_retried(sqlite().await).await;
}

#[tokio::test]
async fn a_run_that_cannot_be_read_leaves_its_queue_failed() {
    serve_suite::a_run_that_cannot_be_read_leaves_its_queue_failed(sqlite().await).await;
}
