//! The memory part of the `Store` contract (`memory_put`, `memory_search`, `memory_forget`,
//! `memory_purge_expired`): every store keeps, ranks, expires and erases records alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flow_core::memory::{Forget, MemoryRecord, MemorySearch, Recalled, Weights};
use flow_core::store::Store;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::TestResult;

const HOUR_MS: i64 = 3_600_000;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn meta(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn record(id: &str, scope: &str, embedding: [f32; 4], metadata: Value, created_at_ms: i64) -> MemoryRecord {
    MemoryRecord {
        metadata: meta(metadata),
        created_at_ms,
        model: "test".into(),
        ..MemoryRecord::new(id, scope, format!("content of {id}"), embedding.to_vec())
    }
}

fn search(scope: &str, embedding: [f32; 4], k: usize, now_ms: i64) -> MemorySearch {
    MemorySearch {
        scope: scope.to_string(),
        query: String::new(),
        subscopes: true,
        filter: Map::new(),
        embedding: embedding.to_vec(),
        k,
        weights: Weights::default(),
        now_ms,
    }
}

fn ids(found: &[Recalled]) -> Vec<&str> {
    found.iter().map(|r| r.id.as_str()).collect()
}

/// Every memory check. Scopes are prefixed with a fresh id, so the store may be shared.
pub async fn check_memory(store: &dyn Store) -> TestResult {
    let p = format!("t{}", Uuid::new_v4().simple());
    let id = |name: &str| format!("{p}-{name}");
    let scope = |s: &str| format!("{p}/{s}");
    let t = now();

    let acme = record(
        &id("acme"),
        &scope("company/acme"),
        [1.0, 0.0, 0.0, 0.0],
        json!({"customer": "acme", "kind": "fact"}),
        t,
    );
    let globex =
        record(&id("globex"), &scope("company/globex"), [0.0, 1.0, 0.0, 0.0], json!({"customer": "globex"}), t);
    let contact =
        record(&id("contact"), &scope("company/acme/contacts"), [0.7, 0.7, 0.0, 0.0], json!({"customer": "acme"}), t);
    let beside = record(&id("beside"), &scope("companyx"), [1.0, 0.0, 0.0, 0.0], json!({"customer": "acme"}), t);
    let other_model = MemoryRecord {
        embedding: vec![1.0, 0.0],
        ..record(&id("other-model"), &scope("company/initech"), [0.0; 4], json!({}), t)
    };
    for r in [&acme, &globex, &contact, &beside, &other_model] {
        assert!(store.memory_put(r.clone()).await?, "{} is new", r.id);
    }
    assert!(
        !store.memory_put(MemoryRecord { content: "changed".into(), ..acme.clone() }).await?,
        "an id is stored once"
    );

    // Scope and subscopes, ranked by similarity; `companyx` is not below `company`.
    let found = store.memory_search(&search(&scope("company"), [1.0, 0.1, 0.0, 0.0], 10, t)).await?;
    assert_eq!(ids(&found)[..3], [id("acme"), id("contact"), id("globex")]);
    assert_eq!(found.len(), 4, "the record of another model is in scope, with similarity 0: {found:?}");
    assert_eq!(found[3].id, id("other-model"));
    assert_eq!(found[3].similarity, 0.0);
    assert!(found.windows(2).all(|w| w[0].score >= w[1].score), "best first: {found:?}");
    assert_eq!(found[0].content, format!("content of {}", id("acme")), "the first content stays");
    assert_eq!(found[0].metadata, acme.metadata);
    assert_eq!(found[0].scope, acme.scope);
    assert_eq!(found[0].created_at_ms, t);
    assert!((found[0].similarity - 0.995).abs() < 0.01, "{}", found[0].similarity);
    let expected = 0.995 + 0.2 * 1.0 + 0.2 * 0.5;
    assert!((found[0].score - expected).abs() < 0.01, "score {} (expected {expected})", found[0].score);

    // Exact scope, k, and metadata filters.
    let exact = MemorySearch { subscopes: false, ..search(&scope("company/acme"), [1.0, 0.0, 0.0, 0.0], 10, t) };
    assert_eq!(ids(&store.memory_search(&exact).await?), [id("acme")]);
    assert_eq!(store.memory_search(&search(&scope("company"), [0.0, 1.0, 0.0, 0.0], 1, t)).await?.len(), 1);
    assert!(store.memory_search(&search(&scope("company"), [0.0, 1.0, 0.0, 0.0], 0, t)).await?.is_empty());
    let filtered = MemorySearch {
        filter: meta(json!({"customer": "acme"})),
        ..search(&scope("company"), [0.0, 1.0, 0.0, 0.0], 10, t)
    };
    assert_eq!(ids(&store.memory_search(&filtered).await?), [id("contact"), id("acme")]);
    let two_keys = MemorySearch { filter: meta(json!({"customer": "acme", "kind": "fact"})), ..filtered.clone() };
    assert_eq!(ids(&store.memory_search(&two_keys).await?), [id("acme")]);
    assert!(store.memory_search(&search(&scope("nothing"), [1.0, 0.0, 0.0, 0.0], 10, t)).await?.is_empty());

    // Recency and importance, weighted as the caller says.
    let w =
        Weights { similarity: 0.0, lexical: 0.0, recency: 1.0, importance: 0.0, half_life: Duration::from_secs(3600) };
    let old = record(&id("old"), &scope("rank"), [1.0, 0.0, 0.0, 0.0], json!({}), t - HOUR_MS);
    let new =
        MemoryRecord { importance: 0.1, ..record(&id("new"), &scope("rank"), [0.0, 1.0, 0.0, 0.0], json!({}), t) };
    let heavy = MemoryRecord {
        importance: 0.9,
        ..record(&id("heavy"), &scope("rank"), [0.0, 0.0, 1.0, 0.0], json!({}), t - 2 * HOUR_MS)
    };
    for r in [&old, &new, &heavy] {
        store.memory_put(r.clone()).await?;
    }
    let by_recency =
        store.memory_search(&MemorySearch { weights: w, ..search(&scope("rank"), [1.0, 0.0, 0.0, 0.0], 3, t) }).await?;
    assert_eq!(ids(&by_recency), [id("new"), id("old"), id("heavy")]);
    assert!((by_recency[1].score - 0.5).abs() < 1e-3, "one half-life old: {}", by_recency[1].score);
    assert!((by_recency[2].score - 0.25).abs() < 1e-3, "two half-lives old: {}", by_recency[2].score);
    let by_importance = Weights { recency: 0.0, importance: 1.0, ..w };
    let found = store
        .memory_search(&MemorySearch { weights: by_importance, ..search(&scope("rank"), [1.0, 0.0, 0.0, 0.0], 3, t) })
        .await?;
    assert_eq!(ids(&found)[0], id("heavy"));
    let by_similarity = store.memory_search(&search(&scope("rank"), [0.0, 0.0, 1.0, 0.0], 1, t)).await?;
    assert_eq!(ids(&by_similarity), [id("heavy")]);

    // Shared words: two records alike in meaning, the one holding the query's words first, by
    // the lexical weight times the share of the words it holds.
    let pumps = MemoryRecord {
        content: "Globex ships PUMPS to Brazil".into(),
        ..record(&id("pumps"), &scope("words"), [1.0, 0.0, 0.0, 0.0], json!({}), t)
    };
    let printers = MemoryRecord {
        content: "Initech sells printers to Chile".into(),
        ..record(&id("printers"), &scope("words"), [1.0, 0.0, 0.0, 0.0], json!({}), t)
    };
    for r in [&pumps, &printers] {
        store.memory_put(r.clone()).await?;
    }
    let worded = MemorySearch {
        query: "the pumps of Brazil, and Peru".into(),
        ..search(&scope("words"), [1.0, 0.0, 0.0, 0.0], 2, t)
    };
    let found = store.memory_search(&worded).await?;
    assert_eq!(ids(&found), [id("pumps"), id("printers")]);
    let gap = found[0].score - found[1].score;
    assert!((gap - 0.3 * 2.0 / 3.0).abs() < 1e-4, "two of three words, weighted 0.3: {gap}");
    let unworded = Weights { lexical: 0.0, ..Weights::default() };
    let found = store.memory_search(&MemorySearch { weights: unworded, ..worded.clone() }).await?;
    assert!((found[0].score - found[1].score).abs() < 1e-6, "{found:?}");
    // A forgotten record is no longer found by its words.
    assert_eq!(store.memory_forget(&Forget::Record(id("pumps"))).await?, 1);
    assert_eq!(ids(&store.memory_search(&worded).await?), [id("printers")]);
    assert_eq!(store.memory_forget(&Forget::Scope(scope("words"))).await?, 1);

    // Time to live: never recalled once expired, and purged.
    let brief = MemoryRecord {
        expires_at_ms: Some(t + HOUR_MS),
        ..record(&id("brief"), &scope("ttl"), [1.0, 0.0, 0.0, 0.0], json!({}), t)
    };
    store.memory_put(brief.clone()).await?;
    assert_eq!(ids(&store.memory_search(&search(&scope("ttl"), [1.0, 0.0, 0.0, 0.0], 5, t)).await?), [id("brief")]);
    assert!(store.memory_search(&search(&scope("ttl"), [1.0, 0.0, 0.0, 0.0], 5, t + 2 * HOUR_MS)).await?.is_empty());
    assert!(store.memory_purge_expired(t + 2 * HOUR_MS).await? >= 1);
    assert!(store.memory_search(&search(&scope("ttl"), [1.0, 0.0, 0.0, 0.0], 5, t)).await?.is_empty(), "purged");
    // A record that has expired already is purged by the next write.
    let gone = MemoryRecord {
        expires_at_ms: Some(t - 1),
        ..record(&id("gone"), &scope("ttl"), [1.0, 0.0, 0.0, 0.0], json!({}), t - HOUR_MS)
    };
    store.memory_put(gone).await?;
    store.memory_put(record(&id("after"), &scope("ttl"), [1.0, 0.0, 0.0, 0.0], json!({}), t)).await?;
    assert_eq!(store.memory_forget(&Forget::Record(id("gone"))).await?, 0, "purged by the next write");

    // Forgetting: one record, a metadata match (a customer's data), a scope and those below it.
    assert_eq!(store.memory_forget(&Forget::Record(id("acme"))).await?, 1);
    assert_eq!(store.memory_forget(&Forget::Record(id("acme"))).await?, 0);
    let customer = Forget::Matching { scope: Some(p.clone()), metadata: meta(json!({"customer": "acme"})) };
    assert_eq!(store.memory_forget(&customer).await?, 2, "the contact and the `companyx` record");
    let left = store.memory_search(&search(&scope("company"), [1.0, 0.0, 0.0, 0.0], 10, t)).await?;
    assert_eq!(ids(&left), [id("globex"), id("other-model")]);
    assert_eq!(store.memory_forget(&Forget::Scope(scope("company"))).await?, 2);
    assert!(store.memory_search(&search(&scope("company"), [1.0, 0.0, 0.0, 0.0], 10, t)).await?.is_empty());
    assert_eq!(store.memory_forget(&Forget::Scope(p.clone())).await?, 4, "rank (3) and ttl (1)");
    // Matching everywhere reaches every scope.
    store.memory_put(record(&id("a1"), &scope("x"), [1.0, 0.0, 0.0, 0.0], json!({"customer": p}), t)).await?;
    store
        .memory_put(record(&id("a2"), &format!("{p}-elsewhere"), [1.0, 0.0, 0.0, 0.0], json!({"customer": p}), t))
        .await?;
    let everywhere = Forget::Matching { scope: None, metadata: meta(json!({"customer": p})) };
    assert_eq!(store.memory_forget(&everywhere).await?, 2);
    Ok(())
}

/// Filler facts: words that share no stem, synonym or word with the paraphrase below.
const FILLER: &[&str] = &[
    "pallet",
    "freight",
    "licence",
    "seat",
    "renewal",
    "discount",
    "currency",
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
    "printer",
    "laptop",
    "server",
    "network",
    "invoice",
    "portal",
    "ledger",
    "forecast",
    "budget",
    "tariff",
];

fn filler(i: usize) -> String {
    let w = |k: usize| FILLER[(i / k + k * 7) % FILLER.len()];
    format!("note {i}: the {} of the {} needs a {} before the {} of {}", w(1), w(3), w(7), w(11), w(13))
}

/// Recall in a scope of `n` records (`n` ≥ 10,000 makes the stores shortlist): a paraphrase that
/// shares no word with its record finds it, though the record is a year old and every other is
/// new; a query's exact words find a record among thousands sharing some of them; and the stores
/// return what scoring every record exactly returns (checked against a `MemoryStore`).
pub async fn check_memory_at_scale(store: &dyn Store, n: usize) -> TestResult {
    at_scale(store, n, false).await
}

/// As [`check_memory_at_scale`], for a store that ranks exactly (PostgreSQL with pgvector): every
/// recall returns the very records, in the same order, that scoring every record returns.
#[allow(dead_code, reason = "only the pgvector tests use it; not every test crate including this module does")]
pub async fn check_memory_exact_at_scale(store: &dyn Store, n: usize) -> TestResult {
    at_scale(store, n, true).await
}

async fn at_scale(store: &dyn Store, n: usize, exact_ranking: bool) -> TestResult {
    use flow_core::memory::HashEmbedder;
    use flow_core::store::MemoryStore;
    let p = format!("t{}", Uuid::new_v4().simple());
    let scope = format!("{p}/company/initrode");
    let embedder = HashEmbedder::default();
    let exact = MemoryStore::new();
    let t = now();
    let mut records: Vec<MemoryRecord> = (0..n)
        .map(|i| MemoryRecord {
            created_at_ms: t - (i as i64 % 1000) * 60_000,
            importance: (i % 7) as f32 / 7.0,
            ..MemoryRecord::new(format!("{p}-{i}"), scope.clone(), filler(i), embedder.vector(&filler(i)))
        })
        .collect();
    let paraphrased = "Initrode employs 400 staff in a huge firm";
    records.push(MemoryRecord {
        created_at_ms: t - 365 * 24 * HOUR_MS,
        importance: 0.2,
        ..MemoryRecord::new(format!("{p}-staff"), scope.clone(), paraphrased, embedder.vector(paraphrased))
    });
    let worded = "the Zanzibar tariff ledger of quarter nine";
    records.push(MemoryRecord {
        created_at_ms: t - 30 * 24 * HOUR_MS,
        ..MemoryRecord::new(format!("{p}-zanzibar"), scope.clone(), worded, embedder.vector(worded))
    });
    for chunk in records.chunks(256) {
        let puts = chunk.iter().map(|r| store.memory_put(r.clone()));
        for put in futures::future::join_all(puts).await {
            put?;
        }
        for r in chunk {
            exact.memory_put(r.clone()).await?;
        }
    }
    let recall = |query: &str, k: usize| MemorySearch {
        query: query.to_string(),
        embedding: embedder.vector(query),
        k,
        ..search(&format!("{p}/company"), [0.0; 4], k, t)
    };
    let paraphrase = "how many people does the business have, is it big";
    let found = store.memory_search(&recall(paraphrase, 3)).await?;
    assert_eq!(found.first().map(|r| r.content.as_str()), Some(paraphrased), "{found:#?}");
    let found = store.memory_search(&recall("zanzibar", 1)).await?;
    assert_eq!(ids(&found), [format!("{p}-zanzibar")]);
    // Against scoring every record: where one record stands out, the same winner; everywhere,
    // the same scores for what is returned, and results nearly as good as the exact best (when
    // nothing stands out, records whose scores differ by less than the sketch's noise may
    // trade places at the edge of the k).
    let copied = filler(4321);
    let queries = [
        (paraphrase, true),
        ("zanzibar", true),
        (copied.as_str(), true),
        ("which warehouse needs a contract renewal before the audit", false),
        ("toner and paper for the printer", false),
        ("refund of the customs payment", false),
        ("", false),
    ];
    for (query, stands_out) in queries {
        let every = exact.memory_search(&recall(query, n + 2)).await?;
        for k in [1, 5, 20] {
            let got = store.memory_search(&recall(query, k)).await?;
            let want = exact.memory_search(&recall(query, k)).await?;
            assert_eq!(got.len(), want.len(), "query {query:?}, k {k}");
            if stands_out {
                assert_eq!(got[0].id, want[0].id, "query {query:?}, k {k}");
            }
            if exact_ranking {
                assert_eq!(ids(&got), ids(&want), "query {query:?}, k {k}");
            }
            for r in &got {
                let same = every.iter().find(|e| e.id == r.id).map(|e| e.score);
                assert!(same.is_some_and(|s| (s - r.score).abs() < 1e-4), "query {query:?}: {r:?} scored {same:?}");
            }
            let (sum_got, sum_want) =
                (got.iter().map(|r| r.score).sum::<f32>(), want.iter().map(|r| r.score).sum::<f32>());
            assert!(sum_got >= 0.97 * sum_want, "query {query:?}, k {k}: {sum_got} of {sum_want}");
        }
    }
    assert_eq!(store.memory_forget(&Forget::Scope(p)).await?, n as u64 + 2);
    Ok(())
}
