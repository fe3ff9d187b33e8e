//! What the dashboard reads from and writes to the store, behind small functions so each
//! follows the store's API in one place.

use flow_core::TokenUsage;
use flow_core::store::{RunFilter, RunStatus, RunSummary, StepRecord, Store, StoreError};
use flows_cli::ops::{self, OpError};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// Where a page of runs starts: after this run, newest first.
pub use flow_core::store::RunCursor as Cursor;

/// One page of runs, newest first, and whether more follow.
pub struct Page {
    pub runs: Vec<RunSummary>,
    pub more: bool,
    pub damaged: usize,
}

/// Up to `size` runs after `cursor` (from the newest when none), as `flows runs` pages them
/// ([`ops::page`]).
pub async fn page(
    store: &dyn Store,
    status: Option<RunStatus>,
    flow: Option<String>,
    cursor: Option<Cursor>,
    size: usize,
) -> Result<Page, OpError> {
    let filter = RunFilter { flow, after: cursor, ..RunFilter::default() };
    let page = ops::page(store, status.as_slice(), filter, size).await?;
    Ok(Page { runs: page.runs, more: page.next.is_some(), damaged: page.damaged.len() })
}

/// The SVG of the run's flow graph, when the store keeps one (runs created before graphs were
/// stored have none, and a store of your own may not keep them).
pub async fn graph_svg(store: &dyn Store, run_id: Uuid) -> Result<Option<String>, StoreError> {
    match store.run_graph(run_id).await {
        Ok(doc) => Ok(doc.map(|doc| flow_core::plot::svg_doc(&doc))),
        Err(StoreError::Unsupported { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One LLM call a step made, from the run's journal.
pub struct LlmCall {
    pub step_key: String,
    pub seq: u32,
    /// The model, as journaled.
    pub model: String,
    /// The tokens it used, as journaled.
    pub usage: Option<TokenUsage>,
}

/// The LLM calls the run journaled, in step order, from one read of its journal.
pub async fn llm_calls(store: &dyn Store, run_id: Uuid, steps: &[StepRecord]) -> Result<Vec<LlmCall>, StoreError> {
    let journal = match store.journal(run_id).await {
        Ok(journal) => journal,
        // A store of your own may not list journals: the page shows no calls then.
        Err(StoreError::Unsupported { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut calls: Vec<LlmCall> = journal
        .into_iter()
        .filter(|entry| entry.kind == "llm")
        .map(|entry| {
            let model = entry.output.get("model").and_then(Value::as_str).filter(|m| !m.is_empty());
            LlmCall {
                model: model.unwrap_or(&entry.name).to_string(),
                usage: entry.output.get("usage").and_then(|u| TokenUsage::deserialize(u).ok()),
                step_key: entry.step_key,
                seq: entry.seq,
            }
        })
        .collect();
    // The journal comes by step key; the page lists calls in the order the steps ran.
    let position = |key: &str| steps.iter().position(|s| s.step_key == key).unwrap_or(usize::MAX);
    calls.sort_by_key(|c| (position(&c.step_key), c.seq));
    Ok(calls)
}

/// Cancels a run that has not ended; its worker compensates what its steps did.
pub async fn cancel(store: &dyn Store, run_id: Uuid) -> Result<ops::Cancel, OpError> {
    ops::cancel(store, run_id, ops::CancelOptions::new("cancelled from the dashboard")).await
}
