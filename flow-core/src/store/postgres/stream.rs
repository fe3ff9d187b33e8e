//! The stream log of runs (`flow_stream`, schema version 4): what `Runner::attach` reads.

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::error::{Pg, corrupt};
use crate::store::decode::decode_json;
use crate::store::{StoreError, StreamRecord};

const RUN_EXISTS: &str = "SELECT 1 FROM flow_runs WHERE run_id = $1";
const INSERT: &str = "INSERT INTO flow_stream (run_id, seq, at_ms, item)
    SELECT $1, s, a, i FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS t (s, a, i)
    ON CONFLICT (run_id, seq) DO NOTHING";
const PRUNE: &str = "DELETE FROM flow_stream WHERE run_id = $1 AND seq < $2";
const LAST: &str = "SELECT MAX(seq) FROM flow_stream WHERE run_id = $1";
const READ: &str = "SELECT seq, at_ms, item FROM flow_stream WHERE run_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3";

fn seq_to_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(super) async fn append(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
    items: &[StreamRecord],
    keep_last: Option<u64>,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(RUN_EXISTS).await.map_err(fail)?;
    if client.query_opt(&stmt, &[&run_id]).await.map_err(fail)?.is_none() {
        return Err(StoreError::NotFound(run_id));
    }
    let seqs: Vec<i64> = items.iter().map(|i| seq_to_sql(i.seq)).collect();
    let ats: Vec<i64> = items.iter().map(|i| i.at_ms).collect();
    let texts: Vec<String> = items.iter().map(|i| i.item.to_string()).collect();
    let stmt = client.prepare_cached(INSERT).await.map_err(fail)?;
    client.execute(&stmt, &[&run_id, &seqs, &ats, &texts]).await.map_err(fail)?;
    if let (Some(keep), Some(last)) = (keep_last, items.iter().map(|i| i.seq).max()) {
        let first_kept = seq_to_sql((last + 1).saturating_sub(keep));
        let stmt = client.prepare_cached(PRUNE).await.map_err(fail)?;
        client.execute(&stmt, &[&run_id, &first_kept]).await.map_err(fail)?;
    }
    Ok(())
}

pub(super) async fn read(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<StreamRecord>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(READ).await.map_err(fail)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client.query(&stmt, &[&run_id, &seq_to_sql(from_seq), &limit]).await.map_err(fail)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.try_get(0).map_err(|e| corrupt(run_id, "stream item number", e))?;
        let at_ms: i64 = row.try_get(1).map_err(|e| corrupt(run_id, "stream item time", e))?;
        let item: String = row.try_get(2).map_err(|e| corrupt(run_id, "stream item", e))?;
        let seq = u64::try_from(seq).unwrap_or(0);
        out.push(StreamRecord { seq, at_ms, item: decode_json(run_id, &format!("stream item #{seq}"), &item)? });
    }
    Ok(out)
}

pub(super) async fn last_seq(client: &impl GenericClient, pg: &Pg, run_id: Uuid) -> Result<Option<u64>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(LAST).await.map_err(fail)?;
    let row = client.query_one(&stmt, &[&run_id]).await.map_err(fail)?;
    let last: Option<i64> = row.try_get(0).map_err(|e| corrupt(run_id, "stream item number", e))?;
    Ok(last.and_then(|s| u64::try_from(s).ok()))
}
