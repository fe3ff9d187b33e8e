//! Memory records (`flow_memory`, schema version 11): what `Ctx::remember` stores and
//! `Ctx::recall` ranks.
//!
//! Embeddings are little-endian `f32` blobs, each with its sketch (`crate::memory::rank`'s
//! `sketch`) beside it in the covering index `flow_memory_by_scope`; `flow_memory_fts` (FTS5,
//! external content, kept by triggers) indexes the content. A recall on a large scope reads the
//! scope's sketches from the index alone, then scores exactly the best of them and the newest
//! records sharing the query's words; one with a metadata filter scores the whole scope
//! exactly (see the `crate::memory` docs).

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, params};

use super::error::map;
use super::queries::Db;
use crate::memory::{
    Forget, LEXICAL_CANDIDATES, MemoryRecord, MemorySearch, Ranked, Recalled, RecalledParts, Shortlist, TopK,
    cosine_bytes, decode_metadata, fts5_query, lexical, metadata_matches, query_terms, recalled, score, sketch,
    subscope_range, to_bytes,
};
use crate::store::StoreError;

const INSERT: &str = "INSERT INTO flow_memory
    (id, scope, content, metadata, importance, created_at, expires_at, model, embedding, sketch)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING";
const PURGE: &str = "DELETE FROM flow_memory WHERE expires_at IS NOT NULL AND expires_at <= ?1";
/// A row is live at `?2`; the scope is `?1`, with (`SUBSCOPES`) the range `[?3, ?4)` below it.
const LIVE: &str = "(expires_at IS NULL OR expires_at > ?2)";
const SUBSCOPES: &str = "(scope = ?1 OR (scope >= ?3 AND scope < ?4))";
const EXACT_SCOPE: &str = "(scope = ?1 AND ?3 = ?3 AND ?4 = ?4)";
/// What exact scoring reads of a row; the first column is the row's number.
const SCORED: &str = "mem_no, id, importance, created_at, embedding, content, metadata";
const WINNER: &str = "SELECT scope, content, metadata, importance, expires_at FROM flow_memory WHERE mem_no = ?1";
const FORGET_ONE: &str = "DELETE FROM flow_memory WHERE id = ?1";
const FORGET_SCOPE: &str = "DELETE FROM flow_memory WHERE scope = ?1 OR (scope >= ?2 AND scope < ?3)";
const FORGET_ROW: &str = "DELETE FROM flow_memory WHERE mem_no = ?1";

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
            sketch(&record.embedding),
        ])
        .map_err(fail)?;
    Ok(inserted == 1)
}

/// Gives every record without a sketch (those stored before schema version 11) its sketch; run
/// by the migration to version 11, inside its transaction.
pub(super) fn fill_sketches(conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT mem_no, embedding FROM flow_memory WHERE sketch IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = conn.prepare("UPDATE flow_memory SET sketch = ?1 WHERE mem_no = ?2")?;
    for (mem_no, bytes) in &rows {
        let embedding = crate::memory::from_bytes(bytes);
        update.execute(params![sketch(&embedding), mem_no])?;
    }
    Ok(rows.len())
}

pub(super) fn purge(db: Db<'_>, now_ms: i64) -> Result<u64, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    Ok(db.conn.prepare_cached(PURGE).map_err(fail)?.execute([now_ms]).map_err(fail)? as u64)
}

pub(super) fn search(db: Db<'_>, search: &MemorySearch) -> Result<Vec<Recalled>, StoreError> {
    let fail = |e: rusqlite::Error| map(&e, db.path);
    if search.k == 0 {
        return Ok(Vec::new());
    }
    let (low, high) = subscope_range(&search.scope);
    let in_scope = if search.subscopes { SUBSCOPES } else { EXACT_SCOPE };
    let mut scorer = Scorer::new(search);
    if !search.filter.is_empty() {
        // A filter may leave out any share of the scope, so no shortlist can be trusted to hold
        // the k best that pass it: every row is scored.
        let sql = format!("SELECT {SCORED} FROM flow_memory WHERE {in_scope} AND {LIVE}");
        let mut stmt = db.conn.prepare_cached(&sql).map_err(fail)?;
        let mut rows = stmt.query(params![search.scope, search.now_ms, low, high]).map_err(fail)?;
        while let Some(row) = rows.next().map_err(fail)? {
            scorer.offer(row).map_err(fail)?;
        }
        drop(rows);
        return scorer.finish(db);
    }

    // The shortlist, read from the covering index alone.
    let mut shortlist = Shortlist::new(search);
    let sql = format!(
        "SELECT mem_no, sketch, importance, created_at FROM flow_memory INDEXED BY flow_memory_by_scope
         WHERE {in_scope} AND {LIVE}"
    );
    let mut stmt = db.conn.prepare_cached(&sql).map_err(fail)?;
    let mut rows = stmt.query(params![search.scope, search.now_ms, low, high]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let mem_no: i64 = row.get(0).map_err(fail)?;
        let stored = row.get_ref(1).map_err(fail)?.as_blob_or_null().map_err(|e| fail(e.into()))?;
        let importance = row.get::<_, f64>(2).map_err(fail)? as f32;
        shortlist.offer(mem_no, stored, row.get(3).map_err(fail)?, importance);
    }
    drop(rows);
    let mut shortlist: BTreeSet<i64> = shortlist.into_items().collect();

    // The newest rows sharing every word of the query, then any.
    let terms = query_terms(&search.query);
    if !terms.is_empty() {
        let sql = format!(
            "SELECT m.mem_no FROM flow_memory_fts JOIN flow_memory AS m ON m.mem_no = flow_memory_fts.rowid
             WHERE flow_memory_fts MATCH ?5 AND {in_scope} AND {LIVE}
             ORDER BY flow_memory_fts.rowid DESC LIMIT ?6"
        );
        let mut stmt = db.conn.prepare_cached(&sql).map_err(fail)?;
        let mut queries = vec![fts5_query(&terms, true)];
        if terms.len() > 1 {
            queries.push(fts5_query(&terms, false));
        }
        for query in queries {
            let found = stmt
                .query_map(params![search.scope, search.now_ms, low, high, query, LEXICAL_CANDIDATES], |r| r.get(0))
                .map_err(fail)?;
            for mem_no in found {
                shortlist.insert(mem_no.map_err(fail)?);
            }
        }
    }

    let sql = format!("SELECT {SCORED} FROM flow_memory WHERE mem_no = ?1");
    let mut stmt = db.conn.prepare_cached(&sql).map_err(fail)?;
    for mem_no in shortlist {
        let mut rows = stmt.query([mem_no]).map_err(fail)?;
        if let Some(row) = rows.next().map_err(fail)? {
            scorer.offer(row).map_err(fail)?;
        }
    }
    drop(stmt);
    scorer.finish(db)
}

/// Exact scores, the k best kept.
struct Scorer<'a> {
    search: &'a MemorySearch,
    terms: Vec<String>,
    query_norm: f32,
    top: TopK<i64>,
}

impl<'a> Scorer<'a> {
    fn new(search: &'a MemorySearch) -> Self {
        Scorer {
            search,
            terms: query_terms(&search.query),
            query_norm: search.embedding.iter().map(|x| x * x).sum::<f32>().sqrt(),
            top: TopK::new(search.k),
        }
    }

    /// A row of [`SCORED`] columns.
    fn offer(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        let search = self.search;
        let importance = row.get::<_, f64>(2)? as f32;
        let created_at_ms: i64 = row.get(3)?;
        let embedding = row.get_ref(4)?.as_blob()?;
        let similarity = cosine_bytes(&search.embedding, self.query_norm, embedding).clamp(0.0, 1.0);
        // The best it could score, whatever words it holds: most rows stop here unread.
        let best = score(search, similarity, 1.0, created_at_ms, importance);
        if !self.top.admits(best) {
            return Ok(());
        }
        let lexical = lexical(&self.terms, row.get_ref(5)?.as_str()?);
        let score = score(search, similarity, lexical, created_at_ms, importance);
        if !self.top.admits(score) {
            return Ok(());
        }
        let id: String = row.get(1)?;
        if !search.filter.is_empty() {
            let text: String = row.get(6)?;
            if !decode_metadata(&id, &text).is_some_and(|m| metadata_matches(&m, &search.filter)) {
                return Ok(());
            }
        }
        self.top.push(Ranked { score, similarity, created_at_ms, id, item: row.get(0)? });
        Ok(())
    }

    /// The winners, read in full, best first.
    fn finish(self, db: Db<'_>) -> Result<Vec<Recalled>, StoreError> {
        let fail = |e: rusqlite::Error| map(&e, db.path);
        let mut winner = db.conn.prepare_cached(WINNER).map_err(fail)?;
        let mut out = Vec::new();
        for ranked in self.top.into_sorted() {
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
                            "SELECT mem_no, id, metadata FROM flow_memory WHERE scope = ?1 OR (scope >= ?2 AND scope < ?3)",
                            vec![scope.clone(), low, high],
                        )
                    }
                    None => ("SELECT mem_no, id, metadata FROM flow_memory", Vec::new()),
                };
                let mut stmt = db.conn.prepare_cached(sql).map_err(fail)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(fail)?;
                rows.collect::<Result<_, _>>().map_err(fail)?
            };
            let mut delete = db.conn.prepare_cached(FORGET_ROW).map_err(fail)?;
            let mut n = 0;
            for (mem_no, id, text) in rows {
                // Damaged metadata cannot be matched: erasure by metadata must not miss records
                // silently, so say so.
                let Some(m) = decode_metadata(&id, &text) else {
                    return Err(StoreError::Backend(format!(
                        "{}: memory record `{id}` has damaged metadata, so it cannot be checked against the erasure; forget it by id",
                        db.path.display()
                    )));
                };
                if metadata_matches(&m, metadata) {
                    n += delete.execute([mem_no]).map_err(fail)? as u64;
                }
            }
            Ok(n)
        }
    }
}
