//! `PgStore` on a real PostgreSQL server: the `Store` contract, migrations, an application's
//! own pool, fencing across processes, claim races and clear errors. `pg_support` finds or
//! starts the server and gives each test a schema of its own.

#[path = "../flow-core/tests/store_conformance/mod.rs"]
mod store_conformance;

mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use flow_core::store::{JournalEntry, PgStore, Placement, QueueLimit, RunStatus, Store, StoreError};
use serde_json::json;
use store_conformance::{KEEP, TestResult, commit, new_run};

const LONG: Duration = Duration::from_secs(60);

fn entry(run_id: uuid::Uuid, seq: u32, output: serde_json::Value) -> JournalEntry {
    JournalEntry {
        run_id,
        step_key: "charge#0".into(),
        seq,
        kind: "effect".into(),
        name: "charge".into(),
        request_hash: 42,
        output,
    }
}

async fn versions(db: &pg_support::TestDb) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    let client = db.connect().await?;
    let rows = client.query("SELECT version FROM flow_schema_migrations ORDER BY version", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_store_meets_the_contract() -> TestResult {
    let Some(db) = pg_support::database("pg_store_meets_the_contract").await else { return Ok(()) };
    let store = PgStore::from_pool(db.pool(4)).await?.keep_checkpoints(KEEP);
    store_conformance::check(&store).await
}

/// Memory needs no extension: records are ranked in the client (whether or not pgvector is
/// installed), and a record one store keeps is recalled and erased through another, as
/// workers on other machines would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_store_meets_the_memory_contract() -> TestResult {
    let Some(db) = pg_support::database("pg_store_meets_the_memory_contract").await else { return Ok(()) };
    let store = PgStore::from_pool(db.pool(2)).await?;
    store_conformance::memory::check_memory(&store).await?;
    store_conformance::memory::check_memory_at_scale(&store, 10_000).await?;
    let other = PgStore::from_pool(db.pool(1)).await?;
    store
        .memory_put(flow_core::memory::MemoryRecord::new("shared", "notes", "seen by every worker", vec![1.0]))
        .await?;
    let search = flow_core::memory::MemorySearch {
        scope: "notes".into(),
        query: String::new(),
        subscopes: false,
        filter: Default::default(),
        embedding: vec![1.0],
        k: 1,
        weights: Default::default(),
        now_ms: i64::MAX / 2,
    };
    assert_eq!(other.memory_search(&search).await?[0].content, "seen by every worker");
    assert_eq!(other.memory_forget(&flow_core::memory::Forget::Record("shared".into())).await?, 1);
    assert!(store.memory_search(&search).await?.is_empty());
    Ok(())
}

/// Over runs created at the same millisecond (set in the database by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_store_pages_listings() -> TestResult {
    let Some(db) = pg_support::database("pg_store_pages_listings").await else { return Ok(()) };
    let store = PgStore::from_pool(db.pool(2)).await?;
    let pool = db.pool(1);
    let set = move |ids: Vec<uuid::Uuid>,
                    at: i64|
          -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + Send>> {
        let pool = pool.clone();
        Box::pin(async move {
            let client = pool.get().await?;
            for id in ids {
                client.execute("UPDATE flow_runs SET created_at = $1 WHERE run_id = $2", &[&at, &id]).await?;
            }
            Ok(())
        })
    };
    store_conformance::paging(&store, Some(&set)).await
}

/// Three stores with pools of their own over one database, as three worker processes: the
/// queue contract, limits across the stores claiming at the same moment, and wake-ups through
/// LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_store_meets_the_queue_contract() -> TestResult {
    let Some(db) = pg_support::database("pg_store_meets_the_queue_contract").await else { return Ok(()) };
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(PgStore::from_pool(db.pool(4)).await?.keep_checkpoints(KEEP).listen_with(db.config())));
    }
    store_conformance::check_queues(&stores).await
}

/// A new schema gets every migration once, even when two processes open it at the same
/// moment; a schema a newer build migrated is refused and left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_a_newer_schema_is_refused() -> TestResult {
    let Some(db) = pg_support::database("migrations_apply_once_and_a_newer_schema_is_refused").await else {
        return Ok(());
    };
    let (a, b) = tokio::join!(PgStore::from_pool(db.pool(2)), PgStore::from_pool(db.pool(2)));
    let (a, _b) = (a?, b?);
    assert_eq!(versions(&db).await?, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "each migration recorded once");
    let run = new_run("migrations", "w1", LONG);
    a.create_run(run.clone()).await?;

    // Opening again changes nothing.
    PgStore::from_pool(db.pool(1)).await?;
    assert_eq!(versions(&db).await?, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

    // A newer build's migration, recorded by hand.
    db.connect().await?.execute("INSERT INTO flow_schema_migrations (version) VALUES (11)", &[]).await?;
    match PgStore::from_pool(db.pool(1)).await {
        Err(e @ StoreError::SchemaTooNew { found: 11, supported: 10 }) => {
            assert!(e.to_string().contains("upgrade flows"), "{e}");
        }
        other => return Err(format!("expected SchemaTooNew, got {other:?}").into()),
    }
    assert_eq!(versions(&db).await?, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "the refused schema is left as it is");
    assert_eq!(a.load_run(run.run_id).await?.snapshot, run.snapshot, "its runs are untouched");
    Ok(())
}

/// The store works on the application's pool, and the application keeps using it.
#[tokio::test]
async fn takes_a_pool_the_application_owns() -> TestResult {
    let Some(db) = pg_support::database("takes_a_pool_the_application_owns").await else { return Ok(()) };
    let pool = db.pool(2);
    pool.get().await?.batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY)").await?;
    let store = PgStore::from_pool(pool.clone()).await?;
    let run = new_run("app-pool", "w1", LONG);
    store.create_run(run.clone()).await?;
    store.commit(commit(run.run_id, 1, 1)).await?;
    pool.get().await?.execute("INSERT INTO orders (id) VALUES (1)", &[]).await?;

    let other = PgStore::from_pool(db.pool(1)).await?;
    assert_eq!(other.load_run(run.run_id).await?.version, 2, "another pool sees the store's commits");
    let orders: i64 = store.pool().get().await?.query_one("SELECT count(*) FROM orders", &[]).await?.get(0);
    assert_eq!(orders, 1, "the store's pool is the application's");
    Ok(())
}

/// A process whose run was taken over by another (a worker frozen past its lease) can record
/// no effect for it: its journal write is fenced, like its commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_put_is_fenced_by_the_lease_epoch() -> TestResult {
    let Some(db) = pg_support::database("journal_put_is_fenced_by_the_lease_epoch").await else { return Ok(()) };
    let (zombie, successor) = (PgStore::from_pool(db.pool(2)).await?, PgStore::from_pool(db.pool(2)).await?);
    let run = new_run("fencing", "zombie", Duration::ZERO);
    let id = run.run_id;
    zombie.create_run(run).await?;
    assert_eq!(zombie.journal_put(entry(id, 0, json!("zombie's first"))).await?.output, json!("zombie's first"));

    let claim = successor.claim(id, "successor", LONG).await?;
    assert_eq!(claim.epoch, 2);
    match zombie.journal_put(entry(id, 1, json!("zombie's late"))).await {
        Err(StoreError::Fenced { run_id, epoch: 1, current: 2 }) if run_id == id => {}
        other => return Err(format!("journal_put under a lost lease: expected Fenced, got {other:?}").into()),
    }
    assert_eq!(successor.journal_get(id, "charge#0", 1).await?, None, "the fenced write left nothing");
    match zombie.commit(commit(id, 1, 1)).await {
        Err(StoreError::Fenced { epoch: 1, current: 2, .. }) => {}
        other => return Err(format!("commit under a lost lease: expected Fenced, got {other:?}").into()),
    }
    match zombie.renew(id, 1, LONG).await {
        Err(StoreError::Fenced { epoch: 1, current: 2, .. }) => {}
        other => return Err(format!("renew under a lost lease: expected Fenced, got {other:?}").into()),
    }

    let recorded = successor.journal_put(entry(id, 1, json!("successor's"))).await?;
    assert_eq!(recorded.output, json!("successor's"));
    assert_eq!(successor.journal_get(id, "charge#0", 0).await?.map(|e| e.output), Some(json!("zombie's first")));
    successor.commit(commit(id, 2, 1)).await?;
    assert_eq!(successor.load_run(id).await?.version, 2);
    Ok(())
}

/// Two processes (two pools) claiming the same runs at the same moment: exactly one wins each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_racing_a_claim_exactly_one_wins() -> TestResult {
    let Some(db) = pg_support::database("two_stores_racing_a_claim_exactly_one_wins").await else {
        return Ok(());
    };
    let (a, b) = (PgStore::from_pool(db.pool(2)).await?, PgStore::from_pool(db.pool(2)).await?);
    for round in 0..20 {
        let run = new_run("race", "creator", Duration::ZERO);
        let id = run.run_id;
        a.create_run(run).await?;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let claim = |store: PgStore, owner: &'static str| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim(id, owner, LONG).await
            })
        };
        let (ra, rb) = tokio::join!(claim(a.clone(), "a"), claim(b.clone(), "b"));
        let (ra, rb) = (ra?, rb?);
        let (winner, loser) = match (ra, rb) {
            (Ok(w), Err(l)) => (("a", w), l),
            (Err(l), Ok(w)) => (("b", w), l),
            other => return Err(format!("round {round}: expected one winner, got {other:?}").into()),
        };
        assert_eq!(winner.1.epoch, 2, "round {round}: one epoch bump");
        match loser {
            StoreError::Locked { owner, .. } => assert_eq!(owner, winner.0, "round {round}"),
            other => return Err(format!("round {round}: loser expected Locked, got {other:?}").into()),
        }
        let stored = a.load_run(id).await?;
        assert_eq!((stored.epoch, stored.lease_owner.as_deref()), (2, Some(winner.0)));
    }
    Ok(())
}

/// A server that does not answer is named (host and port, no password) with what to check.
#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() -> TestResult {
    // A port nothing listens on: bound, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("postgres://flows:hunter2@127.0.0.1:{port}/flows");
    match PgStore::connect(&url).await {
        Err(e @ StoreError::Open { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            assert!(!message.contains("hunter2"), "the password leaked: {message}");
            assert!(message.contains("check that the server is running"), "{message}");
        }
        other => return Err(format!("expected Open, got {other:?}").into()),
    }
    match PgStore::connect("postgres://flows:hunter2@127.0.0.1:notaport/flows").await {
        Err(e @ StoreError::Open { .. }) => assert!(!e.to_string().contains("hunter2"), "{e}"),
        other => return Err(format!("expected Open for a bad URL, got {other:?}").into()),
    }
    Ok(())
}

/// A connection the server ends (a restart) costs at most the call that meets it, which says it
/// is transient; the connection is discarded, the pool opens a new one for the next call, and
/// nothing committed is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_reconnect_through_the_pool() -> TestResult {
    let Some(db) = pg_support::database("dropped_connections_reconnect_through_the_pool").await else {
        return Ok(());
    };
    // One connection, so the call after a failure would get the same one back if the store
    // returned it to the pool.
    let store = PgStore::from_pool(db.pool(1)).await?;
    let run = new_run("restart", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    store.commit(commit(id, 1, 1)).await?;
    assert_eq!(db.terminate_connections().await?, 1, "the store's connection was open");

    let mut failures = Vec::new();
    let record = loop {
        match store.load_run(id).await {
            Ok(record) => break record,
            Err(e) if failures.is_empty() => failures.push(e),
            Err(e) => return Err(format!("still failing after {failures:?}: {e}").into()),
        }
    };
    assert_eq!((record.version, record.status), (2, RunStatus::Running));
    for e in &failures {
        assert!(matches!(e, StoreError::Backend(m) if m.contains("retry") && m.contains(&id.to_string())), "{e}");
    }
    store.commit(commit(id, 1, 2)).await?;
    assert_eq!(store.load_run(id).await?.version, 3);
    Ok(())
}

/// A row damaged by hand is reported for its run alone: listings leave it out (or report it,
/// checked), the other runs still list, and reading it names the run and the damage.
#[tokio::test]
async fn a_damaged_row_is_reported_for_its_run_alone() -> TestResult {
    let Some(db) = pg_support::database("a_damaged_row_is_reported_for_its_run_alone").await else {
        return Ok(());
    };
    let store = PgStore::from_pool(db.pool(2)).await?;
    let (good, bad) = (new_run("damage", "w1", LONG), new_run("damage", "w1", LONG));
    store.create_run(good.clone()).await?;
    store.create_run(bad.clone()).await?;
    let listed = store.list_runs(&flow_core::store::RunFilter::default()).await?;
    let listed_good = listed.iter().find(|s| s.run_id == good.run_id).ok_or("the run is listed")?;
    assert_eq!(&store.run_summary(good.run_id).await?, listed_good, "a summary is what the listing says");
    db.connect().await?.execute("UPDATE flow_runs SET status = 'bogus' WHERE run_id = $1", &[&bad.run_id]).await?;

    let all = flow_core::store::RunFilter::default();
    let ids: Vec<_> = store.list_runs(&all).await?.into_iter().map(|s| s.run_id).collect();
    assert_eq!(ids, [good.run_id]);
    let checked = store.list_runs_checked(&all).await?;
    assert_eq!(checked.items.len(), 1);
    assert_eq!(checked.damaged.len(), 1);
    assert_eq!(checked.damaged[0].run_id, bad.run_id);
    for e in [store.load_run(bad.run_id).await.err(), store.run_summary(bad.run_id).await.err()] {
        match e {
            Some(StoreError::Corrupt { run_id, what, detail }) => {
                assert_eq!((run_id, what.as_str()), (bad.run_id, "status"));
                assert!(detail.contains("bogus"), "{detail}");
            }
            other => return Err(format!("expected Corrupt, got {other:?}").into()),
        }
    }
    let unknown = uuid::Uuid::new_v4();
    assert!(matches!(store.run_summary(unknown).await, Err(StoreError::NotFound(id)) if id == unknown));
    Ok(())
}

/// Waits on `waiter` until it claims a run of `queue`, while `submitter` submits one run after
/// another; a call a dropped connection fails is retried (the error says it is transient). Only
/// a waiter that is never woken fails, after a guard far beyond the time this takes.
async fn woken_by_another_store(waiter: PgStore, submitter: PgStore, queue: &str) -> TestResult {
    let request = store_conformance::request("waiter", &["wake"], vec![QueueLimit::new(queue)], 1);
    let waiting = tokio::spawn(async move {
        loop {
            waiter.wait_for_work(Duration::from_secs(3600)).await;
            match waiter.claim_next(&request).await {
                Ok(claims) if !claims.is_empty() => return,
                Ok(_) => {}
                Err(e) => eprintln!("claim_next failed, retrying at the next wake-up: {e}"),
            }
        }
    });
    let submitting = async {
        while !waiting.is_finished() {
            if let Err(e) = submitter.create_run(store_conformance::queued_run("wake", queue, None, None)).await {
                eprintln!("submitting failed, retrying: {e}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(300), submitting)
        .await
        .map_err(|_| format!("the waiter on queue {queue} was never woken"))?;
    waiting.await?;
    Ok(())
}

/// The listener's connection is dropped by the server (a restart): it reconnects by itself and
/// wakes waiters again, while nothing is lost in between (the waiters poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_listener_reconnects_after_the_server_drops_it() -> TestResult {
    let Some(db) = pg_support::database("the_work_listener_reconnects_after_the_server_drops_it").await else {
        return Ok(());
    };
    let waiter = PgStore::from_pool(db.pool(2)).await?.listen_with(db.config());
    let submitter = PgStore::from_pool(db.pool(2)).await?;
    woken_by_another_store(waiter.clone(), submitter.clone(), "before").await?;
    // The listener, the waiter's pool and the submitter's: every connection of the test.
    assert!(db.terminate_connections().await? >= 2, "the listener's connection was open");
    woken_by_another_store(waiter, submitter, "after").await
}

/// The listener is a connection of the store's own, opened at the first wait (not before), only
/// when the store was told how (a pool alone cannot say), and closed with the store's last clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_listener_opens_at_the_first_wait_and_closes_with_the_store() -> TestResult {
    let Some(db) = pg_support::database("the_work_listener_opens_at_the_first_wait_and_closes_with_the_store").await
    else {
        return Ok(());
    };
    let admin = db.connect().await?;
    let listeners = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                &[&db.schema],
            )
            .await
            .map(|row| row.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    let unable = PgStore::from_pool(db.pool(1)).await?;
    unable.wait_for_work(Duration::from_millis(10)).await;
    let able = PgStore::from_pool(db.pool(1)).await?.listen_with(db.config());
    assert_eq!(listeners().await, 0, "nothing listens before the first wait, nor for a store from a pool alone");
    let clone = able.clone();
    able.wait_for_work(Duration::from_millis(10)).await;
    flow_tests::until("the listener to connect", || async { listeners().await == 1 }).await;
    clone.wait_for_work(Duration::from_millis(10)).await;
    drop(able);
    assert_eq!(listeners().await, 1, "one listener per store, shared by its clones");
    drop(clone);
    flow_tests::until("the listener to close with the store", || async { listeners().await == 0 }).await;
    Ok(())
}

/// The tables version 1 created (only what its runs need), recorded as version 1.
const VERSION_1_TABLES: &str = "CREATE TABLE flow_schema_migrations (version bigint NOT NULL PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now());
     INSERT INTO flow_schema_migrations (version) VALUES (1);
     CREATE TABLE flow_runs (run_id uuid NOT NULL PRIMARY KEY, flow text NOT NULL, parent_run_id uuid, \
         status text NOT NULL, version bigint NOT NULL, output text, error text, pause text, \
         lease_owner text, lease_expires_at bigint, epoch bigint NOT NULL, created_at bigint NOT NULL, \
         updated_at bigint NOT NULL);
     CREATE INDEX flow_runs_by_created ON flow_runs (created_at DESC, run_id DESC);
     CREATE INDEX flow_runs_by_status ON flow_runs (status, created_at DESC, run_id DESC);
     CREATE INDEX flow_runs_by_flow ON flow_runs (flow, created_at DESC, run_id DESC);
     CREATE TABLE flow_steps (run_id uuid NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE, \
         step_key text NOT NULL, ord bigint NOT NULL, method text NOT NULL, status text NOT NULL, \
         input text, output text, error text, attempt bigint NOT NULL, created_at bigint NOT NULL, \
         updated_at bigint NOT NULL, PRIMARY KEY (run_id, step_key));
     CREATE TABLE flow_checkpoints (run_id uuid NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE, \
         seq bigint NOT NULL, step_key text, status text NOT NULL, state text NOT NULL, \
         progress text NOT NULL, created_at bigint NOT NULL, PRIMARY KEY (run_id, seq));
     CREATE TABLE step_journal (run_id uuid NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE, \
         step_key text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, name text NOT NULL, \
         request_hash bigint NOT NULL, output text NOT NULL, epoch bigint NOT NULL, \
         created_at bigint NOT NULL, PRIMARY KEY (run_id, step_key, seq));";

/// What version 2 added to [`VERSION_1_TABLES`], recorded as version 2.
const VERSION_2_CHANGES: &str = "ALTER TABLE flow_runs ADD COLUMN queue text NOT NULL DEFAULT 'default';
     ALTER TABLE flow_runs ADD COLUMN concurrency_key text;
     ALTER TABLE flow_runs ADD COLUMN available_at bigint;
     ALTER TABLE flow_runs ADD COLUMN answer text;
     CREATE INDEX flow_runs_runnable ON flow_runs (queue, (COALESCE(available_at, updated_at)), created_at) \
         WHERE status IN ('queued', 'running');
     CREATE INDEX flow_runs_leased ON flow_runs (queue, concurrency_key, lease_expires_at) \
         WHERE lease_owner IS NOT NULL;
     INSERT INTO flow_schema_migrations (version) VALUES (2);";

/// A step's commit updates its run row in place (a HOT update: no index entry written), since
/// no index of `flow_runs` covers a column such a commit changes (schema version 9); and
/// deleting a run deletes its steps and checkpoints, which have no foreign keys to cascade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_commit_updates_the_run_row_in_place() -> TestResult {
    let Some(db) = pg_support::database("a_step_commit_updates_the_run_row_in_place").await else { return Ok(()) };
    let store = PgStore::from_pool(db.pool(2)).await?;
    let run = new_run("in_place", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    const COMMITS: u64 = 10;
    for n in 1..=COMMITS {
        store.commit(commit(id, 1, n)).await?;
    }
    let client = db.connect().await?;
    // The server publishes a backend's counts once it has been idle a moment; wait for them.
    let stats = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'flow_runs'::regclass";
    let started = std::time::Instant::now();
    let (updated, hot) = loop {
        let row = client.query_one(stats, &[]).await?;
        let (updated, hot): (i64, i64) = (row.get(0), row.get(1));
        if updated >= COMMITS as i64 {
            break (updated, hot);
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(
                format!("the server never published the {COMMITS} updates of flow_runs ({updated} so far)").into()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((updated, hot), (COMMITS as i64, COMMITS as i64), "every step's commit is a HOT update");

    // A run at rest goes with all its rows.
    let mut last = commit(id, 1, COMMITS + 1);
    last.status = RunStatus::Completed;
    store.commit(last).await?;
    store.delete_run(id).await?;
    for table in ["flow_steps", "flow_checkpoints"] {
        let left: i64 =
            client.query_one(&format!("SELECT count(*) FROM {table} WHERE run_id = $1"), &[&id]).await?.get(0);
        assert_eq!(left, 0, "{table} rows of the deleted run");
    }
    Ok(())
}

/// Commits that wait together in a store's group commit queue, one statement for all of them.
/// On a current-thread runtime the writer the first commit starts only runs once every commit
/// is queued, so they all go out as one batch (`in_flight` 1).
async fn commit_together(store: &PgStore, commits: Vec<flow_core::store::Commit>) -> Vec<Result<(), StoreError>> {
    futures::future::join_all(commits.into_iter().map(|c| store.commit(c))).await
}

/// How many transactions last wrote these runs' rows.
async fn writers_of(db: &pg_support::TestDb, runs: &[uuid::Uuid]) -> Result<i64, Box<dyn std::error::Error>> {
    let client = db.connect().await?;
    let row =
        client.query_one("SELECT count(DISTINCT xmin::text) FROM flow_runs WHERE run_id = ANY($1)", &[&runs]).await?;
    Ok(row.get(0))
}

/// A batch that mixes a run another worker took over, and one never created, with good runs:
/// the good runs commit, in one transaction; the run taken over gets the fence error and the
/// missing one `NotFound`, as from commits of their own, and neither wrote anything. The batch
/// keeps the store's retention (one checkpoint here).
#[tokio::test]
async fn a_batch_commits_its_good_runs_and_fences_the_run_taken_over() -> TestResult {
    let Some(db) = pg_support::database("a_batch_commits_its_good_runs_and_fences_the_run_taken_over").await else {
        return Ok(());
    };
    let zombie = PgStore::from_pool(db.pool(4)).await?.group_commit(64, 1).keep_checkpoints(1);
    let successor = PgStore::from_pool(db.pool(1)).await?;
    let mut good = Vec::new();
    for _ in 0..5 {
        let run = new_run("batch", "zombie", LONG);
        good.push(run.run_id);
        zombie.create_run(run).await?;
    }
    let lost = new_run("batch", "zombie", Duration::ZERO);
    let lost_id = lost.run_id;
    zombie.create_run(lost).await?;
    assert_eq!(successor.claim(lost_id, "successor", LONG).await?.epoch, 2);
    let missing = uuid::Uuid::new_v4();

    let mut commits: Vec<_> = good.iter().map(|id| commit(*id, 1, 1)).collect();
    commits.insert(2, commit(lost_id, 1, 1));
    commits.push(commit(missing, 1, 1));
    let mut results = commit_together(&zombie, commits).await;
    match results.remove(2) {
        Err(StoreError::Fenced { run_id, epoch: 1, current: 2 }) if run_id == lost_id => {}
        other => return Err(format!("the run taken over: expected Fenced, got {other:?}").into()),
    }
    match results.pop() {
        Some(Err(StoreError::NotFound(id))) if id == missing => {}
        other => return Err(format!("the missing run: expected NotFound, got {other:?}").into()),
    }
    for (id, result) in good.iter().zip(results) {
        result.map_err(|e| format!("good run {id}: {e}"))?;
        let record = successor.load_run(*id).await?;
        assert_eq!((record.version, record.snapshot), (2, store_conformance::snapshot(1)), "run {id}");
        assert_eq!(successor.steps(*id).await?.len(), 2, "run {id}: its start step and the completed one");
        let kept: Vec<u64> = successor.checkpoints(*id).await?.iter().map(|c| c.seq).collect();
        assert_eq!(kept, [2], "run {id}: the batch pruned the checkpoint it made surplus");
    }
    assert_eq!(writers_of(&db, &good).await?, 1, "the good runs were committed by one transaction");
    let lost_run = successor.load_run(lost_id).await?;
    assert_eq!((lost_run.version, lost_run.epoch), (1, 2), "the fenced commit wrote nothing");
    assert_eq!(successor.checkpoints(lost_id).await?.len(), 1);
    assert_eq!(successor.steps(lost_id).await?.len(), 1);
    Ok(())
}

/// A batch the server refuses as a whole (one commit's error text holds a NUL byte, which no
/// `text` column takes) is written again commit by commit: the good runs commit, each on its
/// own statement, and only the bad one fails, with the error its own commit gets.
#[tokio::test]
async fn a_refused_batch_is_written_again_one_commit_at_a_time() -> TestResult {
    let Some(db) = pg_support::database("a_refused_batch_is_written_again_one_commit_at_a_time").await else {
        return Ok(());
    };
    let store = PgStore::from_pool(db.pool(8)).await?.group_commit(64, 1);
    let mut runs = Vec::new();
    for _ in 0..5 {
        let run = new_run("refused", "w1", LONG);
        runs.push(run.run_id);
        store.create_run(run).await?;
    }
    let bad_id = runs[3];
    let commits = runs
        .iter()
        .map(|id| {
            let mut c = commit(*id, 1, 1);
            if *id == bad_id {
                c.error = Some("a NUL \u{0} byte".into());
            }
            c
        })
        .collect();
    let results = commit_together(&store, commits).await;
    let mut good = Vec::new();
    for (id, result) in runs.iter().zip(results) {
        if *id == bad_id {
            match result {
                Err(StoreError::Backend(message)) => assert!(message.contains("0x00"), "{message}"),
                other => return Err(format!("the bad commit: expected the server's refusal, got {other:?}").into()),
            }
            assert_eq!(store.load_run(*id).await?.version, 1, "the refused commit wrote nothing");
        } else {
            result.map_err(|e| format!("good run {id}: {e}"))?;
            assert_eq!(store.load_run(*id).await?.version, 2, "run {id}");
            good.push(*id);
        }
    }
    assert_eq!(writers_of(&db, &good).await?, good.len() as i64, "each good run committed on its own");
    Ok(())
}

/// A schema version 2 made, with a run in it: the migration leaves its run readable, with no
/// graph and steps without timings or usage, and new runs store their graph once.
#[tokio::test]
async fn a_version_2_schema_reads_its_runs_without_graphs_or_timings() -> TestResult {
    let Some(db) = pg_support::database("a_version_2_schema_reads_its_runs_without_graphs_or_timings").await else {
        return Ok(());
    };
    let client = db.connect().await?;
    client.batch_execute(VERSION_1_TABLES).await?;
    client.batch_execute(VERSION_2_CHANGES).await?;
    let old = uuid::Uuid::new_v4();
    client
        .execute(
            "INSERT INTO flow_runs (run_id, flow, status, version, epoch, created_at, updated_at) \
             VALUES ($1, 'f', 'completed', 1, 1, 10, 20)",
            &[&old],
        )
        .await?;
    client
        .execute(
            "INSERT INTO flow_checkpoints (run_id, seq, status, state, progress, created_at) \
             VALUES ($1, 1, 'completed', '{\"v\":1}', '{}', 20)",
            &[&old],
        )
        .await?;
    client
        .execute(
            "INSERT INTO flow_steps (run_id, step_key, ord, method, status, output, attempt, created_at, updated_at) \
             VALUES ($1, 'go#1', 1, 'go', 'completed', '3', 1, 10, 20)",
            &[&old],
        )
        .await?;
    let store = PgStore::from_pool(db.pool(2)).await?;
    assert_eq!(versions(&db).await?, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(store.load_run(old).await?.snapshot.state.get(), r#"{"v":1}"#);
    assert_eq!(store.run_graph(old).await?, None);
    let steps = store.steps(old).await?;
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (steps[0].attempt, steps[0].started_at_ms, steps[0].finished_at_ms, steps[0].usage),
        (1, None, None, None)
    );

    // Runs of one flow version share one stored graph, whichever store wrote them.
    let graph = std::sync::Arc::new(flow_core::store::RunGraph::new(store_conformance::graph_doc("act")));
    let other = PgStore::from_pool(db.pool(1)).await?;
    for s in [&store, &store, &other] {
        let run = flow_core::store::NewRun { graph: Some(graph.clone()), ..new_run("conformance_graph", "w1", LONG) };
        s.create_run(run.clone()).await?;
        assert_eq!(store.run_graph(run.run_id).await?.as_ref(), Some(&graph.doc));
    }
    let copies: i64 = client.query_one("SELECT count(*) FROM flow_graphs", &[]).await?.get(0);
    assert_eq!(copies, 1);
    Ok(())
}

/// A schema version 1 made, with runs in it: the migration puts them in the default queue, and
/// a run its dead worker left running is claimed from there.
#[tokio::test]
async fn a_version_1_schema_puts_its_runs_in_the_default_queue() -> TestResult {
    let Some(db) = pg_support::database("a_version_1_schema_puts_its_runs_in_the_default_queue").await else {
        return Ok(());
    };
    // The tables as version 1 created them (only what its runs need).
    let client = db.connect().await?;
    client.batch_execute(VERSION_1_TABLES).await?;
    let (paused, crashed) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (id, status, owner) in [(paused, "paused", None), (crashed, "running", Some("dead"))] {
        client
            .execute(
                "INSERT INTO flow_runs (run_id, flow, status, version, pause, lease_owner, lease_expires_at, epoch, \
                 created_at, updated_at) VALUES ($1, 'f', $2, 1, '{\"step_key\":\"ask#0\"}', $3, 5, 1, 10, 20)",
                &[&id, &status, &owner],
            )
            .await?;
        client
            .execute(
                "INSERT INTO flow_checkpoints (run_id, seq, status, state, progress, created_at) \
                 VALUES ($1, 1, $2, '{\"v\":1}', '{}', 20)",
                &[&id, &status],
            )
            .await?;
    }
    let store = PgStore::from_pool(db.pool(2)).await?;
    assert_eq!(versions(&db).await?, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    let run = store.load_run(paused).await?;
    assert_eq!(
        (run.status, &run.placement, run.available_at_ms, &run.answer),
        (RunStatus::Paused, &Placement::default(), None, &None)
    );
    assert_eq!(store.run_summary(crashed).await?.placement, Placement::default());
    let request =
        store_conformance::request("heir", &["f"], vec![QueueLimit::new(Placement::DEFAULT_QUEUE).concurrency(4)], 10);
    let claims = store.claim_next(&request).await?;
    assert_eq!(claims.iter().map(|c| (c.run.run_id, c.epoch)).collect::<Vec<_>>(), [(crashed, 2)]);
    store.answer(paused, "ask#0", json!("yes")).await?;
    assert_eq!(store.load_run(paused).await?.status, RunStatus::Queued);
    Ok(())
}

/// What version 10 added to the memory table, taken back by hand: the schema a version 9 build
/// left (the table as version 8 made it).
const UNDO_VERSION_10: &str = "DELETE FROM flow_schema_migrations WHERE version = 10;
     DROP INDEX flow_memory_words;
     DROP INDEX flow_memory_by_scope;
     ALTER TABLE flow_memory DROP COLUMN words;
     ALTER TABLE flow_memory DROP COLUMN sketch;
     CREATE INDEX flow_memory_by_scope ON flow_memory (scope);";

/// Memory records a version 9 schema holds: the migration to version 10 sketches them and
/// indexes their words, so they are recalled by meaning and by word like new ones.
#[tokio::test]
async fn a_version_9_schema_sketches_and_indexes_its_memories() -> TestResult {
    use flow_core::memory::{Forget, HashEmbedder, MemoryRecord, MemorySearch, Weights};
    let Some(db) = pg_support::database("a_version_9_schema_sketches_and_indexes_its_memories").await else {
        return Ok(());
    };
    PgStore::from_pool(db.pool(1)).await?;
    let client = db.connect().await?;
    client.batch_execute(UNDO_VERSION_10).await?;
    assert_eq!(versions(&db).await?, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let embedder = HashEmbedder::default();
    for (id, content) in [("pumps", "Globex ships pumps to Brazil"), ("printers", "Initech sells printers to Chile")] {
        let bytes: Vec<u8> = embedder.vector(content).iter().flat_map(|x| x.to_le_bytes()).collect();
        client
            .execute(
                "INSERT INTO flow_memory (id, scope, content, metadata, importance, created_at, model, embedding) \
                 VALUES ($1, 'notes', $2, '{}', 0.5, 10, 'm', $3)",
                &[&id, &content, &bytes],
            )
            .await?;
    }
    let store = PgStore::from_pool(db.pool(1)).await?;
    assert_eq!(versions(&db).await?, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    let unsketched: i64 = client.query_one("SELECT count(*) FROM flow_memory WHERE sketch IS NULL", &[]).await?.get(0);
    assert_eq!(unsketched, 0);
    let worded: i64 = client
        .query_one("SELECT count(*) FROM flow_memory WHERE words @@ to_tsquery('simple', 'pumps')", &[])
        .await?
        .get(0);
    assert_eq!(worded, 1);
    let search = |query: &str| MemorySearch {
        scope: "notes".into(),
        query: query.into(),
        subscopes: true,
        filter: Default::default(),
        embedding: embedder.vector(query),
        k: 1,
        weights: Weights::default(),
        now_ms: 20,
    };
    assert_eq!(store.memory_search(&search("who sells printers")).await?[0].id, "printers");
    assert_eq!(store.memory_search(&search("Brazil")).await?[0].id, "pumps");
    assert_eq!(store.memory_forget(&Forget::Scope("notes".into())).await?, 2);
    store.memory_put(MemoryRecord::new("new", "notes", "Acme buys pumps", embedder.vector("Acme buys pumps"))).await?;
    let worded: i64 = client
        .query_one("SELECT count(*) FROM flow_memory WHERE words @@ to_tsquery('simple', 'pumps')", &[])
        .await?
        .get(0);
    assert_eq!(worded, 1, "the forgotten record's words went with it, the new one's came");
    Ok(())
}
