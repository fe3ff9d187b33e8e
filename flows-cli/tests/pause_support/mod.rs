//! Rewriting a paused run's stored question as another build would have stored it (with or
//! without an answer schema), for the tests of `flows answer` and `flows_cli::ops::answer`.

use std::time::Duration;

use flow_core::store::{Commit, RunStatus, Store};
use serde_json::Value;
use uuid::Uuid;

/// Rewrites a paused run's stored question under a lease of the test's own, as another build
/// would have stored it.
pub async fn rewrite_pause(
    store: &dyn Store,
    run_id: Uuid,
    edit: impl FnOnce(&mut Value),
) -> Result<(), Box<dyn std::error::Error>> {
    let record = store.load_run(run_id).await?;
    let mut pause = record.pause.clone().ok_or("a paused run has its question")?;
    edit(&mut pause);
    let claim = store.claim(run_id, "test", Duration::from_secs(60)).await?;
    store
        .commit(Commit {
            run_id,
            epoch: claim.epoch,
            status: RunStatus::Paused,
            snapshot: record.snapshot.clone(),
            steps: Vec::new(),
            step_key: None,
            output: None,
            error: None,
            pause: Some(pause),
            available_at_ms: None,
        })
        .await?;
    Ok(())
}
