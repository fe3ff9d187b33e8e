//! `memory-recall [n]`: recall latency with `n` memories in one scope of a `SqliteStore`
//! (issue 23). The store is filled through `Store::memory_put` with
//! [`HashEmbedder`] vectors (384 dimensions) of generated
//! facts, then the same recall (a query embedded once, k = 5, default weights) is timed
//! `queries` times on the opened store; what is timed is `Store::memory_search`, the part that
//! grows with the scope (embedding a query is the embedder's cost, one HTTP call to a real one).
//! Each timed recall alternates with the same recall filtered by a label every record has,
//! which the store answers by scoring every record exactly: the full scan, timed under the same
//! load.

use std::path::Path;
use std::time::Instant;

use flow_core::memory::{HashEmbedder, MemoryRecord, MemorySearch, Weights};
use flow_core::store::{SqliteOptions, SqliteStore, Store, Synchronous};
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

/// Fills a fresh store at `dir/memory.db` with `n` memories in `company/acme` and times
/// [`QUERIES`] recalls; one JSON line of figures.
pub fn measure(n: usize, dir: &Path) -> Result<Value, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let path = dir.join(format!("memory-{n}-{}.db", std::process::id()));
        let store = SqliteStore::open_with(SqliteOptions::new(&path).synchronous(Synchronous::Normal)).await?;
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
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        Ok(json!({
            "workload": "memory-recall",
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
            "db_mb": bytes as f64 / 1e6,
        }))
    })
}
