//! Memory records (`flow_memory`, schema version 8): what `Ctx::remember` stores and
//! `Ctx::recall` ranks.
//!
//! Embeddings are `bytea` (little-endian `f32`s) and a recall scores the scope's candidates in
//! Rust, with the same code as the other stores, so it works on every PostgreSQL whether or not
//! the `vector` extension (pgvector) is installed. Scopes sort in the "C" collation so that the
//! scopes below `company` are exactly the range `[company/, company0)`.

use deadpool_postgres::GenericClient;

use super::error::Pg;
use crate::memory::{
    Forget, MemoryRecord, MemorySearch, Ranked, Recalled, RecalledParts, TopK, cosine_bytes, decode_metadata,
    metadata_matches, recalled, score, subscope_range, to_bytes,
};
use crate::store::StoreError;

const INSERT: &str = "INSERT INTO flow_memory
    (id, scope, content, metadata, importance, created_at, expires_at, model, embedding)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING";
const PURGE: &str = "DELETE FROM flow_memory WHERE expires_at IS NOT NULL AND expires_at <= $1";
const CANDIDATES: &str = "SELECT id, importance, created_at, embedding, CASE WHEN $5 THEN metadata END
    FROM flow_memory
    WHERE (scope = $1 OR ($4 AND scope >= $2 AND scope < $3)) AND (expires_at IS NULL OR expires_at > $6)";
const WINNERS: &str = "SELECT id, scope, content, metadata, importance, expires_at FROM flow_memory WHERE id = ANY($1)";
const FORGET_ONE: &str = "DELETE FROM flow_memory WHERE id = $1";
const FORGET_SCOPE: &str = "DELETE FROM flow_memory WHERE scope = $1 OR (scope >= $2 AND scope < $3)";
const MATCH_SCOPE: &str = "SELECT id, metadata FROM flow_memory WHERE scope = $1 OR (scope >= $2 AND scope < $3)";
const MATCH_ALL: &str = "SELECT id, metadata FROM flow_memory";
const FORGET_IDS: &str = "DELETE FROM flow_memory WHERE id = ANY($1)";

pub(super) async fn put(
    client: &impl GenericClient,
    pg: &Pg,
    record: &MemoryRecord,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, None);
    let stmt = client.prepare_cached(PURGE).await.map_err(fail)?;
    client.execute(&stmt, &[&now_ms]).await.map_err(fail)?;
    let metadata = serde_json::Value::Object(record.metadata.clone()).to_string();
    let stmt = client.prepare_cached(INSERT).await.map_err(fail)?;
    let inserted = client
        .execute(
            &stmt,
            &[
                &record.id,
                &record.scope,
                &record.content,
                &metadata,
                &record.importance,
                &record.created_at_ms,
                &record.expires_at_ms,
                &record.model,
                &to_bytes(&record.embedding),
            ],
        )
        .await
        .map_err(fail)?;
    Ok(inserted == 1)
}

pub(super) async fn purge(client: &impl GenericClient, pg: &Pg, now_ms: i64) -> Result<u64, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, None);
    let stmt = client.prepare_cached(PURGE).await.map_err(fail)?;
    client.execute(&stmt, &[&now_ms]).await.map_err(fail)
}

pub(super) async fn search(
    client: &impl GenericClient,
    pg: &Pg,
    search: &MemorySearch,
) -> Result<Vec<Recalled>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, None);
    let (low, high) = subscope_range(&search.scope);
    let filtered = !search.filter.is_empty();
    let stmt = client.prepare_cached(CANDIDATES).await.map_err(fail)?;
    let rows = client
        .query(&stmt, &[&search.scope, &low, &high, &search.subscopes, &filtered, &search.now_ms])
        .await
        .map_err(fail)?;
    let query_norm = search.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut top = TopK::new(search.k);
    for row in &rows {
        let importance: f32 = row.try_get(1).map_err(fail)?;
        let created_at_ms: i64 = row.try_get(2).map_err(fail)?;
        let embedding: &[u8] = row.try_get(3).map_err(fail)?;
        let similarity = cosine_bytes(&search.embedding, query_norm, embedding).clamp(0.0, 1.0);
        let score = score(search, similarity, created_at_ms, importance);
        if !top.admits(score) {
            continue;
        }
        let id: String = row.try_get(0).map_err(fail)?;
        if filtered {
            let text: Option<String> = row.try_get(4).map_err(fail)?;
            if !text.and_then(|t| decode_metadata(&id, &t)).is_some_and(|m| metadata_matches(&m, &search.filter)) {
                continue;
            }
        }
        top.push(Ranked { score, similarity, created_at_ms, id, item: () });
    }
    let ranked = top.into_sorted();
    let ids: Vec<&str> = ranked.iter().map(|r| r.id.as_str()).collect();
    let stmt = client.prepare_cached(WINNERS).await.map_err(fail)?;
    let rows = client.query(&stmt, &[&ids]).await.map_err(fail)?;
    let mut parts = std::collections::HashMap::new();
    for row in rows {
        let id: String = row.try_get(0).map_err(fail)?;
        let metadata: String = row.try_get(3).map_err(fail)?;
        let Some(metadata) = decode_metadata(&id, &metadata) else { continue };
        parts.insert(
            id,
            RecalledParts {
                scope: row.try_get(1).map_err(fail)?,
                content: row.try_get(2).map_err(fail)?,
                metadata,
                importance: row.try_get(4).map_err(fail)?,
                expires_at_ms: row.try_get(5).map_err(fail)?,
            },
        );
    }
    Ok(ranked.into_iter().filter_map(|r| parts.remove(&r.id).map(|p| recalled(r, p))).collect())
}

pub(super) async fn forget(client: &impl GenericClient, pg: &Pg, forget: &Forget) -> Result<u64, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, None);
    match forget {
        Forget::Record(id) => {
            let stmt = client.prepare_cached(FORGET_ONE).await.map_err(fail)?;
            client.execute(&stmt, &[id]).await.map_err(fail)
        }
        Forget::Scope(scope) => {
            let (low, high) = subscope_range(scope);
            let stmt = client.prepare_cached(FORGET_SCOPE).await.map_err(fail)?;
            client.execute(&stmt, &[scope, &low, &high]).await.map_err(fail)
        }
        Forget::Matching { scope, metadata } => {
            // Metadata is matched in Rust, as recall does, so both agree on what matches.
            let rows = match scope {
                Some(scope) => {
                    let (low, high) = subscope_range(scope);
                    let stmt = client.prepare_cached(MATCH_SCOPE).await.map_err(fail)?;
                    client.query(&stmt, &[scope, &low, &high]).await.map_err(fail)?
                }
                None => {
                    let stmt = client.prepare_cached(MATCH_ALL).await.map_err(fail)?;
                    client.query(&stmt, &[]).await.map_err(fail)?
                }
            };
            let mut ids = Vec::new();
            for row in rows {
                let id: String = row.try_get(0).map_err(fail)?;
                let text: String = row.try_get(1).map_err(fail)?;
                // Erasure by metadata must not skip a record silently.
                let Some(m) = decode_metadata(&id, &text) else {
                    return Err(StoreError::Backend(format!(
                        "{}: memory record `{id}` has damaged metadata, so it cannot be checked against the erasure; forget it by id",
                        pg.shown
                    )));
                };
                if metadata_matches(&m, metadata) {
                    ids.push(id);
                }
            }
            let stmt = client.prepare_cached(FORGET_IDS).await.map_err(fail)?;
            client.execute(&stmt, &[&ids]).await.map_err(fail)
        }
    }
}
