//! Reading stored values back, shared by the SQL stores: a value that does not decode is
//! damage to its run's row ([`StoreError::Corrupt`]), named by the run and the part.

use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{Answer, RunStatus, StoreError};
use crate::graph::GraphDoc;
use crate::journal::TokenUsage;

/// Damage to one run's row: the part and why.
pub(super) fn corrupt(run_id: Uuid, what: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { run_id, what: what.into(), detail: detail.to_string() }
}

pub(super) fn decode_json(run_id: Uuid, what: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(run_id, what, format!("not valid JSON: {e}")))
}

/// Keeps stored JSON as text, after checking that it is JSON.
pub(super) fn decode_raw(run_id: Uuid, what: &str, text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| corrupt(run_id, what, format!("not valid JSON: {e}")))
}

pub(super) fn decode_opt_json(run_id: Uuid, what: &str, text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| decode_json(run_id, what, &t)).transpose()
}

pub(super) fn decode_run_status(run_id: Uuid, what: &str, s: &str) -> Result<RunStatus, StoreError> {
    RunStatus::parse(s).ok_or_else(|| corrupt(run_id, what, format!("unknown run status `{s}`")))
}

pub(super) fn decode_u64(run_id: Uuid, what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(run_id, what, format!("negative value {v}")))
}

pub(super) fn decode_u32(run_id: Uuid, what: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(run_id, what, format!("value {v} out of range")))
}

pub(super) fn decode_uuid(run_id: Uuid, what: &str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| corrupt(run_id, what, format!("`{s}` is not a UUID: {e}")))
}

/// A stored answer: `{"step_key": ..., "value": ...}` as JSON text.
pub(super) fn decode_answer(run_id: Uuid, text: Option<String>) -> Result<Option<Answer>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(run_id, "answer", format!("not a stored answer: {e}"))))
        .transpose()
}

/// The step a pause request waits at (its `step_key`), if it names one.
pub(super) fn waiting_at(pause: Option<&Value>) -> Option<String> {
    pause.and_then(crate::input::PauseRequest::stored_step_key).map(str::to_string)
}

/// A step's token usage as stored (`TokenUsage` as JSON text; NULL when none was recorded).
pub(super) fn encode_usage(usage: Option<TokenUsage>) -> Option<String> {
    usage.map(|u| serde_json::json!(u).to_string())
}

/// A step's stored token usage, read back.
pub(super) fn decode_usage(run_id: Uuid, what: &str, text: Option<String>) -> Result<Option<TokenUsage>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(run_id, what, e))).transpose()
}

/// A run's graph from its digest and the graph row it refers to: none for a run created before
/// graphs were stored; a digest without its row, or a row that does not read, is damage.
pub(super) fn decode_graph(
    run_id: Uuid,
    digest: Option<String>,
    json: Option<String>,
) -> Result<Option<GraphDoc>, StoreError> {
    match (digest, json) {
        (None, _) => Ok(None),
        (Some(digest), None) => {
            Err(corrupt(run_id, "graph", format!("the run refers to graph {digest}, which the store does not hold")))
        }
        (Some(_), Some(json)) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| corrupt(run_id, "graph", format!("the stored graph does not read as a GraphDoc: {e}"))),
    }
}

/// The edit note of a checkpoint row: both columns or neither.
pub(crate) fn edit_note(author: Option<String>, reason: Option<String>) -> Option<super::EditNote> {
    match (author, reason) {
        (None, None) => None,
        (author, reason) => {
            Some(super::EditNote { author: author.unwrap_or_default(), reason: reason.unwrap_or_default() })
        }
    }
}
