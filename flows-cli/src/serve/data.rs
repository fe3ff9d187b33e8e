//! What the dashboard reads from and writes to the store, behind small functions so each
//! follows the store's API in one place.

use flow_core::store::{RunFilter, RunStatus, RunSummary, StepRecord, Store, StoreError};
use serde_json::Value;
use uuid::Uuid;

/// Where a page of runs starts: after the run created at `created_at_ms` with id `run_id`
/// (newest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: i64,
    pub run_id: Uuid,
}

impl Cursor {
    pub fn of(run: &RunSummary) -> Self {
        Cursor { created_at_ms: run.created_at_ms, run_id: run.run_id }
    }

    /// As it travels in a link: `MILLIS_UUID`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at_ms, self.run_id)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        Some(Cursor { created_at_ms: ms.parse().ok()?, run_id: Uuid::parse_str(id).ok()? })
    }

    /// Whether `run` comes after the cursor, newest first.
    fn precedes(&self, run: &RunSummary) -> bool {
        (run.created_at_ms, run.run_id) < (self.created_at_ms, self.run_id)
    }
}

/// One page of runs, newest first, and whether more follow.
pub struct Page {
    pub runs: Vec<RunSummary>,
    pub more: bool,
    pub damaged: usize,
}

/// Up to `size` runs after `cursor` (from the newest when none).
///
/// The store lists newest first with a limit, through an index on `(created_at, run_id)`; a
/// page further down asks for a longer prefix and skips what the cursor has seen, doubling
/// until it has a full page or the store runs out.
pub async fn page(
    store: &dyn Store,
    status: Option<RunStatus>,
    flow: Option<String>,
    cursor: Option<Cursor>,
    size: usize,
) -> Result<Page, StoreError> {
    let mut limit = size.saturating_add(1);
    if cursor.is_some() {
        limit = limit.saturating_mul(4);
    }
    loop {
        let listing = store.list_runs_checked(&RunFilter { status, flow: flow.clone(), limit: Some(limit) }).await?;
        let exhausted = listing.items.len() + listing.damaged.len() < limit;
        let damaged = listing.damaged.len();
        let mut runs: Vec<RunSummary> =
            listing.items.into_iter().filter(|r| cursor.is_none_or(|c| c.precedes(r))).collect();
        if runs.len() > size || exhausted {
            let more = runs.len() > size;
            runs.truncate(size);
            return Ok(Page { runs, more, damaged });
        }
        limit = limit.saturating_mul(2);
    }
}

/// The SVG of the run's flow graph, when the store keeps one.
///
/// The store keeps no graph yet (flow code is not compiled into `flows`), so this is `None`
/// until it does; the page then says so.
pub async fn graph_svg(store: &dyn Store, run_id: Uuid) -> Result<Option<String>, StoreError> {
    let _ = (store, run_id);
    Ok(None)
}

/// When a step started and finished, in milliseconds since the Unix epoch, where the store
/// records it.
pub fn step_times(step: &StepRecord) -> (Option<i64>, Option<i64>) {
    let _ = step;
    (None, None)
}

/// The LLM tokens a step used (`{"input": N, "output": N, ...}`), where the store records them.
pub fn step_usage(step: &StepRecord) -> Option<Value> {
    let _ = step;
    None
}

/// The JSON Schema the answer to a paused run must fit, when the pause carries one.
pub fn answer_schema(pause: &Value) -> Option<&Value> {
    pause.get("answer_schema").filter(|s| s.is_object())
}

/// Stores a person's answer to the run paused at `step_key`.
pub async fn answer(store: &dyn Store, run_id: Uuid, step_key: &str, value: Value) -> Result<(), StoreError> {
    store.answer(run_id, step_key, value).await
}

/// Cancels a run that has not ended.
pub async fn cancel(store: &dyn Store, run_id: Uuid) -> Result<(), StoreError> {
    let _ = (store, run_id);
    Err(StoreError::Unsupported { what: "cancelling runs".into() })
}

/// Puts a failed run back in its queue to run its failed step again.
pub async fn retry(store: &dyn Store, run_id: Uuid) -> Result<(), StoreError> {
    store.requeue(run_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor { created_at_ms: 1_700_000_000_123, run_id: Uuid::now_v7() };
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
        assert_eq!(Cursor::parse("12"), None);
        assert_eq!(Cursor::parse("x_0193a5c2-7d41-7e1b-9c3a-5f2e8d6b4a10"), None);
        assert_eq!(Cursor::parse("12_nope"), None);
    }
}
