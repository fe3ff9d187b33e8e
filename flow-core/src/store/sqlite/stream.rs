//! The stream log of runs (`flow_stream`, schema version 6): what `Runner::attach` reads.

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::error::map;
use super::queries::Db;
use crate::store::decode::decode_json;
use crate::store::{StoreError, StreamRecord};

const RUN_EXISTS: &str = "SELECT 1 FROM flow_runs WHERE run_id = ?1";
const INSERT: &str = "INSERT INTO flow_stream (run_id, seq, at_ms, item) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (run_id, seq) DO NOTHING";
const PRUNE: &str = "DELETE FROM flow_stream WHERE run_id = ?1 AND seq < ?2";
const LAST: &str = "SELECT MAX(seq) FROM flow_stream WHERE run_id = ?1";
const READ: &str = "SELECT seq, at_ms, item FROM flow_stream WHERE run_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3";

fn seq_to_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(super) fn append(
    db: Db<'_>,
    run_id: Uuid,
    items: &[StreamRecord],
    keep_last: Option<u64>,
) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    let id = run_id.to_string();
    let found =
        db.conn.prepare_cached(RUN_EXISTS).map_err(fail)?.query_row([&id], |_| Ok(())).optional().map_err(fail)?;
    if found.is_none() {
        return Err(StoreError::NotFound(run_id));
    }
    let mut insert = db.conn.prepare_cached(INSERT).map_err(fail)?;
    let mut last = None;
    for item in items {
        insert.execute(params![id, seq_to_sql(item.seq), item.at_ms, item.item.to_string()]).map_err(fail)?;
        last = last.max(Some(item.seq));
    }
    if let (Some(keep), Some(last)) = (keep_last, last) {
        let first_kept = (last + 1).saturating_sub(keep);
        db.conn.prepare_cached(PRUNE).map_err(fail)?.execute(params![id, seq_to_sql(first_kept)]).map_err(fail)?;
    }
    Ok(())
}

pub(super) fn read(db: Db<'_>, run_id: Uuid, from_seq: u64, limit: usize) -> Result<Vec<StreamRecord>, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    let mut stmt = db.conn.prepare_cached(READ).map_err(fail)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![run_id.to_string(), seq_to_sql(from_seq), limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
        })
        .map_err(fail)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at_ms, item) = row.map_err(fail)?;
        let seq = u64::try_from(seq).unwrap_or(0);
        out.push(StreamRecord { seq, at_ms, item: decode_json(run_id, &format!("stream item #{seq}"), &item)? });
    }
    Ok(out)
}

pub(super) fn last_seq(db: Db<'_>, run_id: Uuid) -> Result<Option<u64>, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    let last: Option<i64> =
        db.conn.prepare_cached(LAST).map_err(fail)?.query_row([run_id.to_string()], |r| r.get(0)).map_err(fail)?;
    Ok(last.and_then(|s| u64::try_from(s).ok()))
}
