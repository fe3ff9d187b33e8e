//! The trace context a run keeps (`flow_runs.trace_context`, schema version 6).

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::error::Pg;
use crate::store::StoreError;
use crate::store::decode::corrupt;

const KEEP: &str = "UPDATE flow_runs SET trace_context = COALESCE(trace_context, $2) WHERE run_id = $1";
const READ: &str = "SELECT trace_context FROM flow_runs WHERE run_id = $1";

pub(super) async fn keep(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
    traceparent: &str,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(KEEP).await.map_err(fail)?;
    let changed = client.execute(&stmt, &[&run_id, &traceparent]).await.map_err(fail)?;
    if changed == 0 { Err(StoreError::NotFound(run_id)) } else { Ok(()) }
}

pub(super) async fn read(client: &impl GenericClient, pg: &Pg, run_id: Uuid) -> Result<Option<String>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(READ).await.map_err(fail)?;
    let row = client.query_opt(&stmt, &[&run_id]).await.map_err(fail)?.ok_or(StoreError::NotFound(run_id))?;
    row.try_get(0).map_err(|e| corrupt(run_id, "trace context", e))
}
