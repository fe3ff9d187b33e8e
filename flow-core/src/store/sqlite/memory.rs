//! Memory records (`flow_memory`, schema version 10): what `Ctx::remember` stores and
//! `Ctx::recall` ranks. Embeddings are little-endian `f32` blobs; a recall reads the scope's
//! candidates through `flow_memory_by_scope` and scores them in Rust, decoding the content
//! and metadata of the winners only.

use rusqlite::{OptionalExtension, params};

use super::error::map;
use super::queries::Db;
use crate::memory::{
    Forget, MemoryRecord, MemorySearch, Ranked, Recalled, RecalledParts, TopK, cosine_bytes, decode_metadata,
    metadata_matches, recalled, score, subscope_range, to_bytes,
};
use crate::store::StoreError;

const INSERT: &str = "INSERT INTO flow_memory
    (id, scope, content, metadata, importance, created_at, expires_at, model, embedding)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING";
const PURGE: &str = "DELETE FROM flow_memory WHERE expires_at IS NOT NULL AND expires_at <= ?1";
const LIVE: &str = "(expires_at IS NULL OR expires_at > ?2)";
const WINNER: &str = "SELECT scope, content, metadata, importance, expires_at FROM flow_memory WHERE rowid = ?1";
const FORGET_ONE: &str = "DELETE FROM flow_memory WHERE id = ?1";
const FORGET_SCOPE: &str = "DELETE FROM flow_memory WHERE scope = ?1 OR (scope >= ?2 AND scope < ?3)";
const FORGET_ROW: &str = "DELETE FROM flow_memory WHERE rowid = ?1";

pub(super) fn put(db: Db<'_>, record: &MemoryRecord, now_ms: i64) -> Result<bool, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    db.conn.prepare_cached(PURGE).map_err(fail)?.execute([now_ms]).map_err(fail)?;
    let metadata = serde_json::Value::Object(record.metadata.clone()).to_string();
    let inserted = db
        .conn
        .prepare_cached(INSERT)
        .map_err(fail)?
        .execute(params![
            record.id,
            record.scope,
            record.content,
            metadata,
            f64::from(record.importance),
            record.created_at_ms,
            record.expires_at_ms,
            record.model,
            to_bytes(&record.embedding),
        ])
        .map_err(fail)?;
    Ok(inserted == 1)
}

pub(super) fn purge(db: Db<'_>, now_ms: i64) -> Result<u64, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    Ok(db.conn.prepare_cached(PURGE).map_err(fail)?.execute([now_ms]).map_err(fail)? as u64)
}

pub(super) fn search(db: Db<'_>, search: &MemorySearch) -> Result<Vec<Recalled>, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    let (low, high) = subscope_range(&search.scope);
    let sql = if search.subscopes {
        format!(
            "SELECT rowid, id, importance, created_at, embedding, metadata FROM flow_memory
             WHERE (scope = ?1 OR (scope >= ?3 AND scope < ?4)) AND {LIVE}"
        )
    } else {
        format!(
            "SELECT rowid, id, importance, created_at, embedding, metadata FROM flow_memory
             WHERE scope = ?1 AND {LIVE} AND ?3 = ?3 AND ?4 = ?4"
        )
    };
    let query_norm = search.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut top = TopK::new(search.k);
    let mut stmt = db.conn.prepare_cached(&sql).map_err(fail)?;
    let mut rows = stmt.query(params![search.scope, search.now_ms, low, high]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let importance = row.get::<_, f64>(2).map_err(fail)? as f32;
        let created_at_ms: i64 = row.get(3).map_err(fail)?;
        let embedding = row.get_ref(4).map_err(fail)?.as_blob().map_err(|e| fail(e.into()))?;
        let similarity = cosine_bytes(&search.embedding, query_norm, embedding).clamp(0.0, 1.0);
        let score = score(search, similarity, created_at_ms, importance);
        if !top.admits(score) {
            continue;
        }
        let id: String = row.get(1).map_err(fail)?;
        if !search.filter.is_empty() {
            let text: String = row.get(5).map_err(fail)?;
            if !decode_metadata(&id, &text).is_some_and(|m| metadata_matches(&m, &search.filter)) {
                continue;
            }
        }
        let rowid: i64 = row.get(0).map_err(fail)?;
        top.push(Ranked { score, similarity, created_at_ms, id, item: rowid });
    }
    drop(rows);
    let mut winner = db.conn.prepare_cached(WINNER).map_err(fail)?;
    let mut out = Vec::new();
    for ranked in top.into_sorted() {
        let parts = winner
            .query_row([ranked.item], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get(4)?,
                ))
            })
            .optional()
            .map_err(fail)?;
        let Some((scope, content, metadata, importance, expires_at_ms)) = parts else { continue };
        let Some(metadata) = decode_metadata(&ranked.id, &metadata) else { continue };
        let ranked = Ranked {
            score: ranked.score,
            similarity: ranked.similarity,
            created_at_ms: ranked.created_at_ms,
            id: ranked.id,
            item: (),
        };
        out.push(recalled(
            ranked,
            RecalledParts { scope, content, metadata, importance: importance as f32, expires_at_ms },
        ));
    }
    Ok(out)
}

pub(super) fn forget(db: Db<'_>, forget: &Forget) -> Result<u64, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    match forget {
        Forget::Record(id) => Ok(db.conn.prepare_cached(FORGET_ONE).map_err(fail)?.execute([id]).map_err(fail)? as u64),
        Forget::Scope(scope) => {
            let (low, high) = subscope_range(scope);
            Ok(db.conn.prepare_cached(FORGET_SCOPE).map_err(fail)?.execute(params![scope, low, high]).map_err(fail)?
                as u64)
        }
        Forget::Matching { scope, metadata } => {
            // Metadata is matched in Rust, as recall does, so both agree on what matches.
            let rows: Vec<(i64, String, String)> = {
                let (sql, args) = match scope {
                    Some(scope) => {
                        let (low, high) = subscope_range(scope);
                        (
                            "SELECT rowid, id, metadata FROM flow_memory WHERE scope = ?1 OR (scope >= ?2 AND scope < ?3)",
                            vec![scope.clone(), low, high],
                        )
                    }
                    None => ("SELECT rowid, id, metadata FROM flow_memory", Vec::new()),
                };
                let mut stmt = db.conn.prepare_cached(sql).map_err(fail)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(fail)?;
                rows.collect::<Result<_, _>>().map_err(fail)?
            };
            let mut delete = db.conn.prepare_cached(FORGET_ROW).map_err(fail)?;
            let mut n = 0;
            for (rowid, id, text) in rows {
                // Damaged metadata cannot be matched: erasure by metadata must not miss records
                // silently, so say so.
                let Some(m) = decode_metadata(&id, &text) else {
                    return Err(StoreError::Backend(format!(
                        "{}: memory record `{id}` has damaged metadata, so it cannot be checked against the erasure; forget it by id",
                        db.path.display()
                    )));
                };
                if metadata_matches(&m, metadata) {
                    n += delete.execute([rowid]).map_err(fail)? as u64;
                }
            }
            Ok(n)
        }
    }
}
