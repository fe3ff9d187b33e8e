//! `Runner::submit`, `Runner::answer` and `Worker::serve` on `PgStore`: the checks of
//! `serve_suite`, each in a fresh schema of the test server (see `pg_support`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, reason = "the serve checks use only the test database of the shared module")]
mod pg_support;
mod serve_suite;

use std::sync::Arc;

use flow_core::store::{PgStore, Store};

async fn pg(db: &pg_support::TestDb) -> Arc<dyn Store> {
    // With its work listener, as `PgStore::connect` sets one up: wake-ups come by NOTIFY.
    Arc::new(PgStore::from_pool(db.pool(8)).await.unwrap().listen_with(db.config()))
}

#[tokio::test]
async fn submitted_runs_complete() {
    let Some(db) = pg_support::database("serve_pg_submitted_runs_complete").await else { return };
    serve_suite::submitted_runs_complete(pg(&db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_runs_exactly_once() {
    let Some(db) = pg_support::database("serve_pg_workers_share_runs_exactly_once").await else { return };
    serve_suite::workers_share_runs_exactly_once(pg(&db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limits_hold_across_workers() {
    let Some(db) = pg_support::database("serve_pg_queue_limits_hold_across_workers").await else { return };
    serve_suite::queue_limits_hold_across_workers(pg(&db).await).await;
}

#[tokio::test]
async fn workers_claim_only_their_queues_and_due_runs() {
    let Some(db) = pg_support::database("serve_pg_workers_claim_only_their_queues_and_due_runs").await else { return };
    serve_suite::workers_claim_only_their_queues_and_due_runs(pg(&db).await).await;
}

#[tokio::test]
async fn serve_takes_over_runs_whose_process_died() {
    let Some(db) = pg_support::database("serve_pg_serve_takes_over_runs_whose_process_died").await else { return };
    serve_suite::serve_takes_over_runs_whose_process_died(pg(&db).await).await;
}

#[tokio::test]
async fn graceful_stop_finishes_or_releases() {
    let Some(db) = pg_support::database("serve_pg_graceful_stop_finishes_or_releases").await else { return };
    serve_suite::graceful_stop_finishes_or_releases(pg(&db).await).await;
}

#[tokio::test]
async fn answers_from_anywhere_reach_the_serving_worker() {
    let Some(db) = pg_support::database("serve_pg_answers_from_anywhere_reach_the_serving_worker").await else {
        return;
    };
    serve_suite::answers_from_anywhere_reach_the_serving_worker(pg(&db).await).await;
}

#[tokio::test]
async fn resume_runs_queued_and_answered_runs_here() {
    let Some(db) = pg_support::database("serve_pg_resume_runs_queued_and_answered_runs_here").await else { return };
    serve_suite::resume_runs_queued_and_answered_runs_here(pg(&db).await).await;
}

#[tokio::test]
async fn duplicate_submit_ids() {
    let Some(db) = pg_support::database("serve_pg_duplicate_submit_ids").await else { return };
    serve_suite::duplicate_submit_ids(pg(&db).await).await;
}

#[tokio::test]
async fn a_lease_lost_mid_run_is_logged_and_another_worker_finishes() {
    let Some(db) = pg_support::database("serve_pg_a_lease_lost_mid_run_is_logged_and_another_worker_finishes").await
    else {
        return;
    };
    serve_suite::a_lease_lost_mid_run_is_logged_and_another_worker_finishes(pg(&db).await).await;
}

#[tokio::test]
async fn store_errors_are_retried() {
    let Some(db) = pg_support::database("serve_pg_store_errors_are_retried").await else { return };
    serve_suite::store_errors_are_retried(pg(&db).await).await;
}

#[tokio::test]
async fn a_run_that_cannot_be_read_leaves_its_queue_failed() {
    let Some(db) = pg_support::database("serve_pg_a_run_that_cannot_be_read_leaves_its_queue_failed").await else {
        return;
    };
    serve_suite::a_run_that_cannot_be_read_leaves_its_queue_failed(pg(&db).await).await;
}
