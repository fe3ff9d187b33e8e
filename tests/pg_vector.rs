//! Memory recall through pgvector (issue 23, point 2): a `PgStore` on a server with the
//! extension installs it, vectors the records it already holds, ranks whole scopes in the
//! server exactly, and still finds records that a store without pgvector wrote meanwhile; one
//! that may not have it says what to install, or ranks in the client. `pg_support` starts the
//! server with pgvector (`.ci/pgvector` unpacks it) and gives each test a database of its own.

#[path = "../flow-core/tests/store_conformance/mod.rs"]
#[allow(dead_code, reason = "only the memory part of the contract is checked here")]
mod store_conformance;

mod pg_support;

use flow_core::memory::{HashEmbedder, MemoryRecord, MemorySearch, Weights};
use flow_core::store::{MemoryStore, PgStore, Pgvector, Store, StoreError};
use store_conformance::TestResult;

fn recall(embedder: &HashEmbedder, scope: &str, query: &str, k: usize) -> MemorySearch {
    MemorySearch {
        scope: scope.into(),
        query: query.into(),
        subscopes: true,
        filter: Default::default(),
        embedding: embedder.vector(query),
        k,
        weights: Weights::default(),
        now_ms: now_ms(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn count(db: &pg_support::TestDb, sql: &str) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(db.connect().await?.query_one(sql, &[]).await?.get(0))
}

/// The whole memory contract with pgvector required, and at 10,000 records every recall
/// returns exactly what scoring every record returns, even with every record's sketch (which
/// the client's ranking shortlists by) wiped: the server ranks by the vectors themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_ranks_exactly_and_meets_the_memory_contract() -> TestResult {
    let Some(db) = pg_support::pgvector_database("pgvector_ranks_exactly_and_meets_the_memory_contract").await else {
        return Ok(());
    };
    let store = PgStore::from_pool(db.pool(8)).await?.pgvector(Pgvector::Required);
    assert!(store.uses_pgvector().await?);
    assert_eq!(count(&db, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'").await?, 1);
    store_conformance::memory::check_memory(&store).await?;

    // A year-old, unimportant record that only similarity can find, among 2,000 new and
    // important ones, with every sketch wiped: the client's shortlist (by sketch, then by
    // standing) has nothing to find it by, the server's ranking by the vectors does.
    let embedder = HashEmbedder::default();
    let paraphrased = "Initrode employs 400 staff in a huge firm";
    let old = MemoryRecord {
        created_at_ms: now_ms() - 400 * 24 * 3_600_000,
        importance: 0.1,
        ..MemoryRecord::new("staff", "company/initrode", paraphrased, embedder.vector(paraphrased))
    };
    store.memory_put(old).await?;
    let crowd: Vec<MemoryRecord> = (0..2_000)
        .map(|i| {
            let text = format!("note {i}: the invoice of the supplier needs a contract before the audit");
            let record = MemoryRecord::new(format!("n{i}"), "company/initrode", &text, embedder.vector(&text));
            MemoryRecord { importance: 0.9, ..record }
        })
        .collect();
    for chunk in crowd.chunks(200) {
        for put in futures::future::join_all(chunk.iter().map(|r| store.memory_put(r.clone()))).await {
            put?;
        }
    }
    db.connect().await?.batch_execute("UPDATE flow_memory SET sketch = '\\x'::bytea").await?;
    let by_meaning = MemorySearch {
        weights: Weights { similarity: 1.0, lexical: 0.0, recency: 0.0, importance: 0.0, ..Weights::default() },
        ..recall(&embedder, "company", "how many people does the business have, is it big", 1)
    };
    let found = store.memory_search(&by_meaning).await?;
    assert_eq!(found.first().map(|r| r.id.as_str()), Some("staff"), "{found:#?}");
    // The same recall ranked in the client misses it: what this test would see without pgvector.
    let client_side = PgStore::from_pool(db.pool(2)).await?.pgvector(Pgvector::Off);
    let missed = client_side.memory_search(&by_meaning).await?;
    assert_ne!(missed.first().map(|r| r.id.as_str()), Some("staff"));
    assert_eq!(store.memory_forget(&flow_core::memory::Forget::Scope("company".into())).await?, 2_001);

    store_conformance::memory::check_memory_exact_at_scale(&store, 10_000).await
}

/// Records a store without pgvector keeps are vectored by the first store that uses it, and
/// one such store keeps afterwards (as a worker of an older build would) is still recalled,
/// first when it is the best, then vectored by the next store to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_kept_without_pgvector_are_recalled_and_vectored() -> TestResult {
    let Some(db) = pg_support::pgvector_database("records_kept_without_pgvector_are_recalled_and_vectored").await
    else {
        return Ok(());
    };
    let embedder = HashEmbedder::default();
    let exact = MemoryStore::new();
    let remember = |id: &str, text: &str| MemoryRecord::new(id, "notes", text, embedder.vector(text));
    let plain = PgStore::from_pool(db.pool(2)).await?.pgvector(Pgvector::Off);
    assert!(!plain.uses_pgvector().await?);
    for i in 0..50 {
        let record = remember(&format!("old{i}"), &note(i));
        exact.memory_put(record.clone()).await?;
        plain.memory_put(record).await?;
    }
    // Not even the extension until a store that may use it comes.
    assert_eq!(count(&db, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'").await?, 0);

    let vectored = PgStore::from_pool(db.pool(2)).await?;
    assert!(vectored.uses_pgvector().await?);
    assert_eq!(count(&db, "SELECT count(*) FROM flow_memory WHERE embedding_vector IS NULL").await?, 0);
    let queries = ["pallet of paper for the warehouse", "when does Acme renew the toner contract", "no vector at all"];
    for query in queries {
        same_as_exact(&vectored, &exact, &embedder, query).await?;
    }

    // Kept without a vector (by a store without pgvector, or with an embedding pgvector cannot
    // hold), yet the best: recalled first.
    for record in [
        remember("late", "when does Acme renew the toner contract"),
        MemoryRecord::new("blank", "notes", "no vector at all", Vec::new()),
    ] {
        exact.memory_put(record.clone()).await?;
        plain.memory_put(record).await?;
    }
    assert_eq!(count(&db, "SELECT count(*) FROM flow_memory WHERE embedding_vector IS NULL").await?, 2);
    let found =
        vectored.memory_search(&recall(&embedder, "notes", "when does Acme renew the toner contract", 1)).await?;
    assert_eq!(found[0].id, "late", "{found:#?}");
    for query in queries {
        same_as_exact(&vectored, &exact, &embedder, query).await?;
    }

    let next = PgStore::from_pool(db.pool(2)).await?;
    assert!(next.uses_pgvector().await?);
    // The empty embedding stays without a vector; the rest have theirs now.
    assert_eq!(count(&db, "SELECT count(*) FROM flow_memory WHERE embedding_vector IS NULL").await?, 1);
    for query in queries {
        same_as_exact(&next, &exact, &embedder, query).await?;
    }
    assert_eq!(next.memory_search(&recall(&embedder, "notes", "anything", 60)).await?.len(), 52);
    Ok(())
}

fn note(i: usize) -> String {
    const WORDS: [&str; 10] =
        ["pallet", "paper", "toner", "contract", "warehouse", "invoice", "freight", "audit", "renewal", "printer"];
    format!("{} of {} for the {} in week {i}", WORDS[i % 10], WORDS[(i / 10 + 3) % 10], WORDS[(i * 7 + 1) % 10])
}

/// `store` recalls what scoring every record (`exact`) recalls, for every k.
async fn same_as_exact(store: &PgStore, exact: &MemoryStore, embedder: &HashEmbedder, query: &str) -> TestResult {
    for k in [1, 3, 10, 60] {
        let search = recall(embedder, "notes", query, k);
        let got = store.memory_search(&search).await?;
        let want = exact.memory_search(&search).await?;
        let ids = |found: &[flow_core::memory::Recalled]| found.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "query {query:?}, k {k}");
    }
    Ok(())
}

/// Workers starting at once on a database without the extension: each uses pgvector, and the
/// extension, the column and its index are added once (the setup takes the migrations' lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_starting_at_once_set_pgvector_up_once() -> TestResult {
    let Some(db) = pg_support::pgvector_database("stores_starting_at_once_set_pgvector_up_once").await else {
        return Ok(());
    };
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(PgStore::from_pool(db.pool(1)).await?);
    }
    let embedder = HashEmbedder::default();
    let puts = stores.iter().enumerate().map(|(i, store)| {
        let text = format!("worker {i} saw the pallet leave");
        store.memory_put(MemoryRecord::new(format!("w{i}"), "notes", &text, embedder.vector(&text)))
    });
    for put in futures::future::join_all(puts).await {
        put?;
    }
    for store in &stores {
        assert!(store.uses_pgvector().await?);
    }
    assert_eq!(count(&db, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'").await?, 1);
    let columns = "SELECT count(*) FROM pg_attribute WHERE attrelid = 'flow_memory'::regclass \
                   AND attname = 'embedding_vector' AND NOT attisdropped";
    assert_eq!(count(&db, columns).await?, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM pg_indexes WHERE indexname = 'flow_memory_unvectored'").await?, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM flow_memory WHERE embedding_vector IS NULL").await?, 0);
    let found = stores[0].memory_search(&recall(&embedder, "notes", "worker 3 saw the pallet leave", 1)).await?;
    assert_eq!(found[0].id, "w3");
    Ok(())
}

/// A role that may not create the extension: `Required` fails saying what to do and changes
/// nothing; `Auto` ranks in the client and keeps the memory contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_to_install_pgvector_the_store_says_so_or_ranks_in_the_client() -> TestResult {
    let test = "without_the_right_to_install_pgvector_the_store_says_so_or_ranks_in_the_client";
    let Some(db) = pg_support::pgvector_database(test).await else { return Ok(()) };
    let role = format!("app_{}", &db.schema["flows_test_".len()..]);
    let admin = db.connect().await?;
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN; GRANT ALL ON SCHEMA {schema} TO {role}", schema = db.schema))
        .await?;
    let mut config = db.config();
    config.user(&role);
    let pool = {
        use flow_core::store::deadpool_postgres::{Manager, Pool};
        Pool::builder(Manager::new(config, flow_core::store::tokio_postgres::NoTls)).max_size(2).build()?
    };
    let required = PgStore::from_pool(pool.clone()).await?.pgvector(Pgvector::Required);
    let Err(StoreError::Backend(message)) = required.uses_pgvector().await else {
        panic!("Required without the right to create the extension must fail");
    };
    assert!(message.contains("CREATE EXTENSION vector") && message.contains("Pgvector::Auto"), "{message}");
    let put = required.memory_put(MemoryRecord::new("r", "notes", "kept?", vec![1.0, 0.0])).await;
    assert!(matches!(put, Err(StoreError::Backend(_))), "{put:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'").await?, 0);

    let auto = PgStore::from_pool(pool).await?;
    assert!(!auto.uses_pgvector().await?);
    store_conformance::memory::check_memory(&auto).await?;
    let cleanup = format!("DROP OWNED BY {role}; DROP ROLE {role}");
    drop(auto);
    drop(required);
    admin.batch_execute(&cleanup).await?;
    Ok(())
}

/// On a server without the extension (the shared test server, Debian's PostgreSQL), `Required`
/// names the package to install; where the server has it, the store uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_pgvector_on_a_server_without_it_names_what_to_install() -> TestResult {
    let Some(db) = pg_support::database("required_pgvector_on_a_server_without_it_names_what_to_install").await else {
        return Ok(());
    };
    let available = count(&db, "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'").await? > 0;
    let store = PgStore::from_pool(db.pool(2)).await?.pgvector(Pgvector::Required);
    match store.uses_pgvector().await {
        Err(StoreError::Backend(message)) if !available => {
            assert!(message.contains("pgvector") && message.contains("postgresql-<version>-pgvector"), "{message}");
        }
        Ok(true) if available => {}
        other => panic!("extension available: {available}; got {other:?}"),
    }
    Ok(())
}
