//! `memory-recall [n] [--store sqlite|pg|pgvector]`: recall latency with `n` memories in one
//! scope of a `SqliteStore` (issue 23), or of a `PgStore` ranking in the client (`pg`: the server
//! of [`crate::pg`]) or with pgvector (`pgvector`: the server at `FLOWS_PGVECTOR_URL`, such as a
//! cluster started from the binaries `.ci/pgvector` unpacks). The store is filled through `Store::memory_put` with
//! [`HashEmbedder`] vectors (384 dimensions) of generated
//! facts, then the same recall (a query embedded once, k = 5, default weights) is timed
//! `queries` times on the opened store; what is timed is `Store::memory_search`, the part that
//! grows with the scope (embedding a query is the embedder's cost, one HTTP call to a real one).
//! Each timed recall alternates with the same recall filtered by a label every record has,
//! which the store answers by scoring every record exactly: the full scan, timed under the same
//! load. A PostgreSQL table is vacuumed and analysed after the fill, as autovacuum would.

use std::path::Path;
use std::time::Instant;

use flow_core::memory::{HashEmbedder, MemoryRecord, MemorySearch, Weights};
use flow_core::store::{PgStore, Pgvector, SqliteOptions, SqliteStore, Store, Synchronous};
use serde_json::{Value, json};

use crate::workloads::BoxError;

/// Timed recalls per measurement.
pub const QUERIES: usize = 30;

const WORDS: &[&str] = &[
    "invoice",
    "supplier",
    "pallet",
    "freight",
    "licence",
    "seat",
    "renewal",
    "discount",
    "tax",
    "currency",
    "order",
    "delivery",
    "contract",
    "support",
    "cloud",
    "storage",
    "paper",
    "toner",
    "audit",
    "payment",
    "refund",
    "quarter",
    "region",
    "warehouse",
    "customs",
    "shipment",
    "printer",
    "laptop",
    "server",
    "network",
];

fn fact(i: usize) -> String {
    let w = |k: usize| WORDS[(i / k + k * 7) % WORDS.len()];
    format!("fact {i}: the {} of the {} needs a {} before the {} of {}", w(1), w(3), w(7), w(11), w(13))
}

/// The store a recall is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecallStore {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh schema on PostgreSQL, ranking in the client.
    Pg,
    /// A fresh schema on PostgreSQL with pgvector.
    Pgvector,
}

impl RecallStore {
    /// From its name on the command line.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sqlite" => Some(RecallStore::Sqlite),
            "pg" => Some(RecallStore::Pg),
            "pgvector" => Some(RecallStore::Pgvector),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RecallStore::Sqlite => "sqlite",
            RecallStore::Pg => "pg",
            RecallStore::Pgvector => "pgvector",
        }
    }
}

/// Fills a fresh store (at `dir/memory-*.db`, or a schema of its own) with `n` memories in
/// `company/acme` and times [`QUERIES`] recalls; one JSON line of figures.
pub fn measure(n: usize, dir: &Path, on: RecallStore) -> Result<Value, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let path = dir.join(format!("memory-{n}-{}.db", std::process::id()));
        let schema = match on {
            RecallStore::Sqlite => None,
            RecallStore::Pg => Some(crate::pg::Schema::create().await?),
            RecallStore::Pgvector => {
                let url = std::env::var("FLOWS_PGVECTOR_URL").ok().filter(|u| !u.is_empty()).ok_or(
                    "set FLOWS_PGVECTOR_URL to a server with pgvector (for one, start a cluster from the binaries \
                     `.ci/pgvector` prints)",
                )?;
                Some(crate::pg::Schema::create_at(url).await?)
            }
        };
        let result = fill_and_time(n, &path, on, schema.as_ref()).await;
        // FLOW_BENCH_KEEP_SCHEMA=1 keeps a PostgreSQL schema for a look at the plans afterwards.
        match schema {
            Some(schema) if std::env::var("FLOW_BENCH_KEEP_SCHEMA").is_ok_and(|v| v == "1") => {
                eprintln!("kept schema {}", schema.name);
            }
            Some(schema) => schema.drop_all().await?,
            None => {}
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        result
    })
}

async fn fill_and_time(
    n: usize,
    path: &Path,
    on: RecallStore,
    schema: Option<&crate::pg::Schema>,
) -> Result<Value, BoxError> {
    {
        let store: Box<dyn Store> = match (on, schema) {
            (RecallStore::Sqlite, _) => {
                Box::new(SqliteStore::open_with(SqliteOptions::new(path).synchronous(Synchronous::Normal)).await?)
            }
            (RecallStore::Pg, Some(schema)) => {
                Box::new(PgStore::from_pool(schema.pool(8)?).await?.pgvector(Pgvector::Off))
            }
            (RecallStore::Pgvector, Some(schema)) => {
                let store = PgStore::from_pool(schema.pool(8)?).await?.pgvector(Pgvector::Required);
                store.uses_pgvector().await?;
                Box::new(store)
            }
            _ => return Err("a PostgreSQL measurement needs its schema".into()),
        };
        let embedder = HashEmbedder::default();
        let fill = Instant::now();
        let mut puts = Vec::with_capacity(256);
        for i in 0..n {
            let record = MemoryRecord {
                metadata: json!({ "kind": "fact" }).as_object().cloned().unwrap_or_default(),
                ..MemoryRecord::new(format!("m{i}"), "company/acme", fact(i), embedder.vector(&fact(i)))
            };
            // Concurrent puts share the writer's group commits, as many steps remembering at once do.
            puts.push(store.memory_put(record));
            if puts.len() == 256 || i + 1 == n {
                for r in futures::future::join_all(puts.drain(..)).await {
                    r?;
                }
            }
        }
        drop(puts);
        let fill_s = fill.elapsed().as_secs_f64();
        if let Some(schema) = schema {
            // What autovacuum would have done by the time a scope holds this many memories (and
            // what a server with it off never does): statistics for the planner, and the
            // visibility map that lets an index-only scan skip the table.
            schema.pool(1)?.get().await?.batch_execute("VACUUM ANALYZE flow_memory").await?;
        }
        let text = "which supplier needs a contract renewal for the warehouse";
        let search = MemorySearch {
            scope: "company".into(),
            query: text.into(),
            subscopes: true,
            filter: Default::default(),
            embedding: embedder.vector(text),
            k: 5,
            weights: Weights::default(),
            now_ms: i64::MAX / 4,
        };
        // One untimed recall warms the page cache and the prepared statement.
        let found = store.memory_search(&search).await?;
        if found.len() != 5.min(n) {
            return Err(format!("recall found {} of {n} memories", found.len()).into());
        }
        // The same recall with a filter every record passes: the stores score every record of
        // the scope exactly then (a filter may leave out any share of it), as they did for every
        // recall before the shortlist, so this is the full scan measured under the same load.
        let mut full = search.clone();
        full.filter.insert("kind".into(), json!("fact"));
        if store.memory_search(&full).await? != found {
            return Err("the shortlist's recall differs from the full scan's".into());
        }
        let (mut ms, mut full_ms) = (Vec::with_capacity(QUERIES), Vec::with_capacity(QUERIES));
        for _ in 0..QUERIES {
            let t = Instant::now();
            store.memory_search(&search).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            store.memory_search(&full).await?;
            full_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        full_ms.sort_by(f64::total_cmp);
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        drop(store);
        Ok(json!({
            "workload": "memory-recall",
            "store": on.name(),
            "memories": n,
            "dimensions": HashEmbedder::DEFAULT_DIMENSIONS,
            "k": 5,
            "queries": QUERIES,
            "recall_ms_median": ms[ms.len() / 2],
            "recall_ms_p90": ms[ms.len() * 9 / 10],
            "recall_ms_max": ms[ms.len() - 1],
            "full_scan_ms_median": full_ms[full_ms.len() / 2],
            "full_scan_ms_p90": full_ms[full_ms.len() * 9 / 10],
            "fill_s": fill_s,
            // The SQLite file's size; PostgreSQL's tables are not measured.
            "db_mb": (on == RecallStore::Sqlite).then_some(bytes as f64 / 1e6),
        }))
    }
}
