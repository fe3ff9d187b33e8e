//! The trace context a run keeps (`flow_runs.trace_context`, schema version 8).

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::error::map;
use super::queries::Db;
use crate::store::StoreError;

const KEEP: &str = "UPDATE flow_runs SET trace_context = COALESCE(trace_context, ?2) WHERE run_id = ?1";
const READ: &str = "SELECT trace_context FROM flow_runs WHERE run_id = ?1";

pub(super) fn keep(db: Db<'_>, run_id: Uuid, traceparent: &str) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    let changed =
        db.conn.prepare_cached(KEEP).map_err(fail)?.execute(params![run_id.to_string(), traceparent]).map_err(fail)?;
    if changed == 0 { Err(StoreError::NotFound(run_id)) } else { Ok(()) }
}

pub(super) fn read(db: Db<'_>, run_id: Uuid) -> Result<Option<String>, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    let row: Option<Option<String>> = db
        .conn
        .prepare_cached(READ)
        .map_err(fail)?
        .query_row([run_id.to_string()], |r| r.get(0))
        .optional()
        .map_err(fail)?;
    row.ok_or(StoreError::NotFound(run_id))
}
