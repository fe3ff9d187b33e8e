//! Memory recall through pgvector, where the database has the extension.
//!
//! A store that has pgvector keeps each memory's embedding a second time, as a `vector` in the
//! column `embedding_vector`, and ranks a scope in the server: one statement scores every row
//! of the scope with the same blend as [`crate::memory`] (cosine similarity from pgvector's
//! `<=>`, the share of the query's words from the row's `tsvector`, recency and importance) and
//! only the best few travel to the client, where they are scored again by the shared code so
//! every store returns the same scores. Unlike the fallback's sketches, the similarity the
//! server ranks by is exact.
//!
//! The column's storage is `MAIN`, as is `words`'s, and the `bytea` copy's is `EXTERNAL`: a
//! recall reads every vector and word list of the scope, so they stay in the row and the copy
//! only the client's scoring reads is the one moved out of line. A vector kept out of line cost
//! a TOAST lookup per row and per function reading it (10,000 rows: 71 ms with pgvector's
//! default `EXTERNAL`, about 25 ms in the row).
//!
//! The column is not part of the versioned schema, which must be the same on every server:
//! it is added (with its backfill) the first time a store of this build uses memory on a
//! database where pgvector is installed, or available and this role may install it. Rows
//! without it (written by an older build, or by a store with [`Pgvector::Off`]; embeddings
//! pgvector refuses, such as an empty one) are always scored in the client, so they are never
//! missed.
//!
//! There is no approximate (HNSW or IVFFlat) index: pgvector before 0.8 filters such an
//! index's candidates after the scan, so a scope holding a small share of the table would lose
//! records, and a memory scope is exactly such a filter. The exact scan costs about 2.5 µs per
//! record of the scope, a quarter of a second for 100,000 (BENCHMARKS.md).

use deadpool_postgres::GenericClient;

use super::error::{Pg, lost_connection};
use crate::store::StoreError;

/// Whether a [`PgStore`](super::PgStore) ranks memory with pgvector ([`PgStore::pgvector`]).
///
/// [`PgStore::pgvector`]: super::PgStore::pgvector
///
/// ```no_run
/// use flow_core::store::{PgStore, Pgvector};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::store::StoreError> {
/// let store = PgStore::connect("postgres://postgres@127.0.0.1:5432/flows").await?.pgvector(Pgvector::Required);
/// // Fails, saying what to install, on a server without the extension.
/// assert!(store.uses_pgvector().await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pgvector {
    /// Use the extension when the database has it, or when it is available on the server and
    /// this role may create it (`CREATE EXTENSION vector`); otherwise rank in the client, and
    /// log why once.
    #[default]
    Auto,
    /// Always rank in the client, whatever the server has; records stored this way are
    /// vectored by the next store that uses pgvector.
    Off,
    /// Use the extension, and fail memory calls with a [`StoreError::Backend`] that says what
    /// to install when it cannot be had.
    Required,
}

/// The statements of a store whose memory uses pgvector, with the extension's schema in them,
/// so they work whatever the connections' `search_path`.
#[derive(Debug)]
pub(super) struct VectorSql {
    /// `INSERT` of a record, its vector (`$11`, pgvector's text form, NULL when it has none).
    pub(super) insert: String,
    /// The candidates of a recall, see [`candidates`](Self::candidates).
    pub(super) candidates: String,
}

/// The extension's name, as PostgreSQL knows it.
const EXTENSION: &str = "vector";

/// pgvector's largest `vector`.
const MAX_DIMENSIONS: usize = 16_000;

/// pgvector's text form of `embedding` (`[0.5,-1,...]`), or `None` when pgvector cannot hold it
/// (empty, too long, or not finite) or when it is all zeros (its cosine distance is NaN, which
/// would rank first): such a record is scored in the client.
pub(super) fn literal(embedding: &[f32]) -> Option<String> {
    if embedding.is_empty()
        || embedding.len() > MAX_DIMENSIONS
        || !embedding.iter().all(|x| x.is_finite())
        || embedding.iter().all(|x| *x == 0.0)
    {
        return None;
    }
    let mut text = String::with_capacity(embedding.len() * 12 + 2);
    text.push('[');
    for (i, x) in embedding.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        // `Display` of an f32 is its shortest exact form, never an exponent.
        text.push_str(&x.to_string());
    }
    text.push(']');
    Some(text)
}

/// Readies `client`'s database for recall through pgvector as `mode` asks: `None` when memory
/// ranks in the client.
pub(super) async fn setup(
    client: &mut deadpool_postgres::Object,
    pg: &Pg,
    mode: Pgvector,
) -> Result<Option<VectorSql>, StoreError> {
    if mode == Pgvector::Off {
        return Ok(None);
    }
    let tx = client.transaction().await.map_err(|e| pg.map(&e, None))?;
    // The migrations' lock: two processes adding the column at once add it once.
    tx.execute(super::schema::LOCK, &[]).await.map_err(|e| pg.map(&e, None))?;
    let why_not = match prepare(&tx).await {
        Ok(Ready::Schema(schema)) => {
            tx.commit().await.map_err(|e| pg.map(&e, None))?;
            tracing::info!(database = %pg.shown, schema = %schema, "memory recall ranks with pgvector");
            return Ok(Some(VectorSql::new(&schema)));
        }
        Ok(Ready::Unavailable) => format!(
            "the server has no `{EXTENSION}` extension (pgvector); install it (Debian: postgresql-<version>-pgvector) \
             and run `CREATE EXTENSION vector` in the database"
        ),
        Err(e) if lost_connection(&e) => return Err(pg.map(&e, None)),
        Err(e) => match e.as_db_error() {
            Some(db) => format!(
                "pgvector could not be set up ({}, SQLSTATE {}); a superuser can run `CREATE EXTENSION vector` in the \
                 database, and the store's role must own `flow_memory`",
                db.message(),
                db.code().code()
            ),
            None => format!("pgvector could not be set up ({e})"),
        },
    };
    // Dropping the transaction rolls back whatever part was done.
    drop(tx);
    if mode == Pgvector::Required {
        return Err(StoreError::Backend(format!(
            "{}: memory needs pgvector (Pgvector::Required), and {why_not}; or use Pgvector::Auto to rank in the client",
            pg.shown
        )));
    }
    tracing::info!(database = %pg.shown, reason = %why_not, "memory recall ranks in the client, without pgvector");
    Ok(None)
}

enum Ready {
    /// The extension's schema, quoted as an identifier.
    Schema(String),
    Unavailable,
}

const INSTALLED: &str = "SELECT quote_ident(n.nspname) FROM pg_extension e \
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'";
const AVAILABLE: &str = "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')";
const HAS_COLUMN: &str = "SELECT EXISTS (SELECT 1 FROM pg_attribute \
    WHERE attrelid = 'flow_memory'::regclass AND attname = 'embedding_vector' AND NOT attisdropped)";
const UNVECTORED: &str = "SELECT id, embedding FROM flow_memory WHERE embedding_vector IS NULL";

async fn prepare(tx: &impl GenericClient) -> Result<Ready, tokio_postgres::Error> {
    let installed = async || match tx.query_opt(INSTALLED, &[]).await? {
        Some(row) => row.try_get::<_, String>(0).map(Some),
        None => Ok(None),
    };
    let mut schema = installed().await?;
    if schema.is_none() {
        if !tx.query_one(AVAILABLE, &[]).await?.try_get::<_, bool>(0)? {
            return Ok(Ready::Unavailable);
        }
        tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").await?;
        schema = installed().await?;
    }
    let Some(schema) = schema else { return Ok(Ready::Unavailable) };
    if !tx.query_one(HAS_COLUMN, &[]).await?.try_get::<_, bool>(0)? {
        tx.batch_execute(&format!(
            "ALTER TABLE flow_memory ADD COLUMN embedding_vector {schema}.vector;
             ALTER TABLE flow_memory ALTER COLUMN embedding_vector SET STORAGE MAIN,
                 ALTER COLUMN words SET STORAGE MAIN, ALTER COLUMN embedding SET STORAGE EXTERNAL;
             CREATE INDEX flow_memory_unvectored ON flow_memory (scope) WHERE embedding_vector IS NULL;"
        ))
        .await?;
    }
    backfill(tx, &schema).await?;
    Ok(Ready::Schema(schema))
}

/// Vectors for the records that have none and can have one: every record on the first setup,
/// then those a store without pgvector stored since.
async fn backfill(tx: &impl GenericClient, schema: &str) -> Result<(), tokio_postgres::Error> {
    const BATCH: usize = 1_000;
    let rows = tx.query(UNVECTORED, &[]).await?;
    if rows.is_empty() {
        return Ok(());
    }
    let update = tx
        .prepare(&format!(
            "UPDATE flow_memory m SET embedding_vector = v.e::{schema}.vector \
             FROM unnest($1::text[], $2::text[]) AS v(id, e) WHERE m.id = v.id"
        ))
        .await?;
    let mut vectored = 0usize;
    let (mut ids, mut texts) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    for (i, row) in rows.iter().enumerate() {
        let bytes: &[u8] = row.try_get(1)?;
        let embedding = crate::memory::from_bytes(bytes);
        if let Some(text) = literal(&embedding) {
            ids.push(row.try_get::<_, String>(0)?);
            texts.push(text);
        }
        if ids.len() == BATCH || (i + 1 == rows.len() && !ids.is_empty()) {
            vectored += tx.execute(&update, &[&ids, &texts]).await? as usize;
            ids.clear();
            texts.clear();
        }
    }
    tracing::info!(records = vectored, "gave memory records their pgvector vectors");
    Ok(())
}

impl VectorSql {
    fn new(schema: &str) -> Self {
        let insert = format!(
            "INSERT INTO flow_memory
                (id, scope, content, metadata, importance, created_at, expires_at, model, embedding, sketch,
                 embedding_vector)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::{schema}.vector) ON CONFLICT (id) DO NOTHING"
        );
        // Parameters: $1-$5 as `IN_SCOPE`; $6 the query's vector (text; NULL: none), $7 its
        // dimensions (-1: rank without similarity), $8 the query's terms; $9, $10, $11 the
        // weights of similarity, words and recency, $12 the recency half-life in ms, $13 the
        // weight of importance, $14 how many. The score is `crate::memory::score`'s, in double
        // precision (the recency's exponent capped where it is 0 in single precision anyway, as
        // PostgreSQL's `power` refuses to underflow). Rows without a vector all come too (the second part, through the partial
        // index `flow_memory_unvectored`). `q` is MATERIALIZED: inlined into a generic plan
        // (the sixth run of a prepared statement on), the query's vector was parsed from its
        // text once per row, which made a recall of 10,000 rows four times slower.
        let candidates = format!(
            "WITH q AS MATERIALIZED (
                 SELECT $6::text::{schema}.vector AS v,
                        ARRAY(SELECT plainto_tsquery('simple', t) FROM unnest($8::text[]) AS t) AS terms
             ),
             best AS (
                 SELECT id FROM flow_memory, q
                 WHERE {in_scope} AND embedding_vector IS NOT NULL
                 ORDER BY
                     $9::float8 * (CASE
                         WHEN {schema}.vector_dims(embedding_vector) <> $7::int4 THEN 0
                         ELSE GREATEST(0, LEAST(1, 1 - (embedding_vector OPERATOR({schema}.<=>) q.v))) END)
                     + $10::float8 * (SELECT count(*) FROM unnest(q.terms) AS w WHERE words @@ w)::float8
                         / GREATEST(cardinality(q.terms), 1)
                     + $11::float8 * (CASE WHEN $12::float8 <= 0 THEN 0
                         ELSE power(0.5, LEAST(1000, GREATEST(0, $5 - created_at)::float8 / $12::float8)) END)
                     + $13::float8 * GREATEST(0, LEAST(1, importance))
                     DESC, created_at DESC, id
                 LIMIT $14
             )
             SELECT {scored} FROM flow_memory
                 WHERE id IN (SELECT id FROM best) AND (expires_at IS NULL OR expires_at > $5)
             UNION ALL
             SELECT {scored} FROM flow_memory WHERE {in_scope} AND embedding_vector IS NULL",
            in_scope = super::memory::IN_SCOPE,
            scored = super::memory::SCORED,
        );
        VectorSql { insert, candidates }
    }
}

/// How many of a scope's best by the server's score are scored again in the client: the
/// server's score is the client's (in double precision, with PostgreSQL's word splitting), so
/// a margin over `k` covers what the two round differently.
pub(super) fn candidates(k: usize) -> i64 {
    i64::try_from(k.saturating_mul(2).saturating_add(32)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_what_pgvector_reads_or_none() {
        assert_eq!(literal(&[0.5, -1.0, 1e-7]).as_deref(), Some("[0.5,-1,0.0000001]"));
        assert_eq!(literal(&[]), None);
        assert_eq!(literal(&[0.0, -0.0]), None);
        assert_eq!(literal(&[1.0, f32::NAN]), None);
        assert_eq!(literal(&[f32::INFINITY]), None);
        assert_eq!(literal(&vec![1.0; MAX_DIMENSIONS + 1]), None);
        assert!(literal(&vec![1.0; MAX_DIMENSIONS]).is_some());
    }
}
