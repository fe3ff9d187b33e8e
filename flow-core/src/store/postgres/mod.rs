//! The PostgreSQL store: many workers on many machines sharing one database (feature
//! `postgres`).
//!
//! Layout: [`schema`] migrates; [`queries`] holds the SQL; [`error`] maps PostgreSQL's and the
//! pool's failures.
//!
//! **Driver.** `tokio-postgres` with a `deadpool-postgres` pool, chosen over sqlx (postgres,
//! runtime-tokio, runtime-checked queries) by measurement and by weight: a bare
//! `BEGIN; INSERT; COMMIT` loop of 1,000 against the same local PostgreSQL 15, run three
//! times each on a machine shared with other builds, took 2.7, 3.0 and 2.7 ms per transaction
//! with tokio-postgres and 2.7, 1.5 and 2.5 ms with sqlx (a second run: 4.7/2.4/4.5 against
//! 4.1/3.1/6.2): the same within the noise, both bound by the server's fsync. So the choice
//! rests on the rest: tokio-postgres pulls 81 crates against sqlx's 138 (and builds in a
//! fraction of the time, which every CI run pays), reports failures as typed SQLSTATE codes
//! this module maps to [`StoreError`]s, and pipelines statements sent together on one
//! connection.
//!
//! **Round trips.** A step's commit is one statement of data-modifying CTEs, all hinging on the
//! fenced update of the run row, sent alone (no `BEGIN`/`COMMIT`: a statement is atomic): one
//! round trip per durable step, the same as a bare autocommit insert. The fenced case costs a
//! second query to say why. Creating a run is one statement too.
//!
//! **Group commit.** When many runs of one process commit at once, [`group`] gathers their
//! commits into one statement over arrays (`COMMIT_BATCH`), each run still fenced by its own
//! epoch: one round trip, one transaction and one WAL flush for the lot. A commit that finds
//! no batch under way goes out alone at once, so a lone run waits for nobody
//! ([`PgStore::group_commit`]).
//!
//! **Server work per step.** A step that stays running updates its run row in place (a HOT
//! update: no index of `flow_runs` covers a column such a commit changes, and the table keeps
//! room on its pages), inserts one checkpoint row and upserts its step rows; steps and
//! checkpoints have no foreign keys, whose checks cost every commit a lookup and a row lock on
//! the run it had just updated (they cannot dangle: only the statement that writes their run row
//! writes them, and `delete_run` deletes them under the run row's lock). Pruning probes the
//! checkpoints only once a run has more than it keeps, and only a commit that queues the run
//! sends `pg_notify`.
//!
//! **Fencing.** Every statement that changes a run is fenced by the lease epoch in the same
//! statement (`UPDATE ... WHERE run_id = $1 AND epoch = $2`) or, for `journal_put`, after
//! locking the run row `FOR SHARE` and comparing its epoch in the same transaction, so no claim
//! can bump the epoch between the check and the write. `Store::journal_put` carries no epoch,
//! so the store compares the epoch of the lease it last took on the run itself (`create_run`,
//! `claim`), which is the lease every execution in this process writes under: a process whose
//! run another process claimed since records nothing more. A store that took no lease on the
//! run (or whose run came to rest) writes first-writer-wins without a fence, as SqliteStore does.
//!
//! **Clock.** Lease expiries and timestamps come from the database's clock (`now()`), so
//! workers on machines whose clocks disagree still agree on whether a lease is live.
//!
//! **Queues.** `claim_next` claims in one short transaction: candidates are read
//! `FOR UPDATE SKIP LOCKED` (two workers never wait on each other's candidates), and claimers of
//! a queue with limits first take that queue's advisory lock and count the live leases of the
//! whole queue, so a limit holds across every worker even when they claim at the same moment.
//! Every write that makes a run runnable sends `pg_notify` on the schema's channel in its
//! transaction; [`listen`] wakes `wait_for_work` from it.

mod error;
mod group;
mod listen;
mod memory;
mod queries;
mod schema;
mod stream;
mod trace;
mod vector;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use deadpool_postgres;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
pub use tokio_postgres;
use uuid::Uuid;

use serde_json::Value;

use self::error::Pg;
use self::listen::Wake;
pub use self::vector::Pgvector;
use self::vector::VectorSql;
use crate::graph::GraphDoc;
use crate::store::{
    CheckpointInfo, Claim, ClaimRequest, Commit, JournalEntry, Listing, NewRun, RunFilter, RunRecord, RunStatus,
    RunSummary, Snapshot, StateEdit, StepRecord, Store, StoreError, StreamRecord,
};

/// How many connections [`PgStore::connect`] opens at most.
const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// The durable [`Store`] on PostgreSQL, for many worker processes on many machines sharing one
/// database.
///
/// - **Fenced**: every write that changes a run carries the lease epoch it was made under; a
///   worker whose lease was taken over (a frozen process that woke up, a network partition)
///   gets [`StoreError::Fenced`] and changes nothing. `journal_put` is fenced by the epoch of
///   the lease this store last took on the run (at `create_run` or `claim`): once another
///   process claimed the run, this one can record no more effects for it.
/// - **Migrated**: opening applies the schema's pending migrations in one transaction under an
///   advisory lock (two processes starting at once migrate once); a schema written by a newer
///   build is refused with [`StoreError::SchemaTooNew`] and left as it is.
/// - **Your pool or ours**: [`PgStore::connect`] builds a pool from a URL;
///   [`PgStore::from_pool`] takes a [`deadpool_postgres::Pool`] the application already owns
///   (re-exported here with [`tokio_postgres`], so the versions match). The tables go in the
///   first schema of the connections' `search_path`.
/// - **Restarts**: a call that meets a connection the server dropped (a restart, a failover)
///   fails with a transient [`StoreError::Backend`] that says to retry, which the lease epoch
///   makes safe, and its connection is discarded, so the next call gets a new one from the
///   pool (at most one failed call per pooled connection, none for connections the pool
///   already saw closed).
/// - **Queues**: [`Store::claim_next`] holds each queue's limits across every worker on the
///   database, even when they claim at the same moment; [`Store::wait_for_work`] wakes as soon
///   as any process makes a run runnable, through `LISTEN`/`NOTIFY` on a connection of its own
///   ([`PgStore::listen_with`]; [`PgStore::connect`] sets it up), and falls back to sleeping its
///   timeout while that connection is down.
/// - **Poolers**: statements are prepared once per connection, so behind PgBouncer use session
///   pooling, or transaction pooling with PgBouncer 1.21 or later and `max_prepared_statements`.
///
/// Cloning is cheap and shares the pool.
///
/// ```no_run
/// use flow_core::store::{PgStore, RunFilter, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::store::StoreError> {
/// let store = PgStore::connect("postgres://flows:secret@db.internal:5432/flows").await?.keep_checkpoints(20);
/// let runs = store.list_runs(&RunFilter::default()).await?;
/// # let _ = runs;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    pg: Arc<Pg>,
    keep_checkpoints: Option<usize>,
    /// The epoch of the lease this store last took on each run it drives, to fence its
    /// `journal_put`s; forgotten when the run comes to rest.
    held: Arc<Mutex<HashMap<Uuid, u64>>>,
    /// The graphs (flow and digest) this store has written: a run of a known flow version
    /// only refers to its graph.
    graphs: Arc<Mutex<HashSet<(String, String)>>>,
    /// `wait_for_work`'s listener, shared by the clones.
    wake: Arc<Wake>,
    /// The queue of step commits written together ([`group`]), shared by the clones; `None`:
    /// each commit on its own.
    group: Option<Arc<group::GroupCommit>>,
    /// Whether memory ranks with pgvector ([`vector`]), decided at the first memory call and
    /// shared by the clones.
    vectors: Arc<Vectors>,
}

/// How memory ranks: the mode asked for, and once decided, pgvector's statements (`None`:
/// in the client).
struct Vectors {
    mode: Pgvector,
    ready: tokio::sync::OnceCell<Option<VectorSql>>,
}

impl Vectors {
    fn new(mode: Pgvector) -> Arc<Self> {
        Arc::new(Vectors { mode, ready: tokio::sync::OnceCell::new() })
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.pg.shown)
            .field("keep_checkpoints", &self.keep_checkpoints)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or the
    /// key-value form `host=... user=...`) with a pool of up to 16 connections, and migrates
    /// its schema. No TLS: reach the server over a trusted network or a local proxy.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = flow_core::store::PgStore::connect("postgres://postgres@127.0.0.1:5432/flows").await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the URL does not parse or the server cannot be reached (the
    /// message names the host and port, never the password), [`StoreError::SchemaTooNew`]
    /// when a newer build migrated the database.
    ///
    /// `wait_for_work` listens for new work on a connection of its own to the same URL (see
    /// [`PgStore::listen_with`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Open {
            path: "the PostgreSQL URL".to_string(),
            // The parser's message never repeats the password.
            message: format!("it does not parse ({e}); write it as postgres://user:password@host:port/database"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let pg = Pg::of(&config);
        let listen = config.clone();
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(DEFAULT_MAX_CONNECTIONS)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Open { path: pg.shown.clone(), message: format!("cannot build the pool: {e}") })?;
        Ok(Self::open(pool, pg).await?.listen_with(listen))
    }

    /// Uses a pool the application already owns, and migrates the schema its connections'
    /// `search_path` points at.
    ///
    /// ```no_run
    /// use flow_core::store::PgStore;
    /// use flow_core::store::deadpool_postgres::{Manager, Pool};
    /// use flow_core::store::tokio_postgres::{Config, NoTls};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config: Config = "postgres://app@127.0.0.1/app".parse()?;
    /// let pool = Pool::builder(Manager::new(config, NoTls)).max_size(8).build()?;
    /// let store = PgStore::from_pool(pool.clone()).await?;
    /// // The application keeps using `pool` for its own tables.
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A pool does not tell how to open a connection outside it, so `wait_for_work` on such a
    /// store only sleeps its timeout (workers poll) until [`PgStore::listen_with`] gives it the
    /// connection settings.
    ///
    /// # Errors
    ///
    /// As [`PgStore::connect`].
    pub async fn from_pool(pool: Pool) -> Result<Self, StoreError> {
        let pg = Pg { shown: "the application's PostgreSQL pool".to_string() };
        Self::open(pool, pg).await
    }

    async fn open(pool: Pool, mut pg: Pg) -> Result<Self, StoreError> {
        let mut client = pool.get().await.map_err(|e| pg.open_pool(e))?;
        // Name the database as the server sees it, for every later message.
        let at = client
            .query_one(
                "SELECT current_user::text, COALESCE(host(inet_server_addr()), 'local socket'), \
                 COALESCE(inet_server_port(), 0), current_database()::text, current_schema()::text",
                &[],
            )
            .await
            .map_err(|e| pg.open(&e))?;
        let schema: Option<String> = at.try_get(4).ok().flatten();
        let Some(schema) = schema else {
            return Err(StoreError::Open {
                path: pg.shown.clone(),
                message: "no schema of the search_path exists to hold the store's tables; create one or fix \
                          search_path"
                    .to_string(),
            });
        };
        if let (Ok(user), Ok(host), Ok(port), Ok(db)) = (
            at.try_get::<_, String>(0),
            at.try_get::<_, String>(1),
            at.try_get::<_, i32>(2),
            at.try_get::<_, String>(3),
        ) {
            pg.shown = format!("postgres://{user}@{host}:{port}/{db} (schema {schema})");
        }
        schema::migrate(&mut client, &pg).await?;
        let channel: String =
            client.query_one(queries::WORK_CHANNEL, &[]).await.map_err(|e| pg.open(&e))?.try_get(0).map_err(|e| {
                StoreError::Open { path: pg.shown.clone(), message: format!("cannot name the work channel: {e}") }
            })?;
        tracing::debug!(database = %pg.shown, "opened PostgreSQL store");
        let wake = Arc::new(Wake::new(None, channel, pg.shown.clone()));
        Ok(PgStore {
            pool,
            pg: Arc::new(pg),
            keep_checkpoints: Some(crate::store::DEFAULT_KEEP_CHECKPOINTS),
            held: Arc::new(Mutex::new(HashMap::new())),
            graphs: Arc::new(Mutex::new(HashSet::new())),
            wake,
            group: Some(Arc::new(group::GroupCommit::new(group::DEFAULT_MAX_BATCH, group::DEFAULT_IN_FLIGHT))),
            vectors: Vectors::new(Pgvector::default()),
        })
    }

    /// Lets `wait_for_work` hear of work that other processes make runnable: from the first
    /// wait on, a connection of its own (outside the pool, opened with `config`, which must
    /// reach the same database) `LISTEN`s for the notifications every write that makes a run
    /// runnable sends, and wakes the waiters at once. It reconnects by itself when it drops;
    /// meanwhile waiting lasts its timeout. [`PgStore::connect`] sets it from its URL; a store
    /// from [`PgStore::from_pool`] needs it to wake early.
    ///
    /// ```no_run
    /// use flow_core::store::PgStore;
    /// use flow_core::store::deadpool_postgres::{Manager, Pool};
    /// use flow_core::store::tokio_postgres::{Config, NoTls};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config: Config = "postgres://app@127.0.0.1/app".parse()?;
    /// let pool = Pool::builder(Manager::new(config.clone(), NoTls)).max_size(8).build()?;
    /// let store = PgStore::from_pool(pool).await?.listen_with(config);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn listen_with(mut self, config: tokio_postgres::Config) -> Self {
        self.wake = Arc::new(self.wake.with_config(config));
        self
    }

    /// Keep only the newest `n` checkpoints of each run (at least 1); older ones are deleted in
    /// the same transaction as the commit that makes them surplus. The default keeps
    /// [`DEFAULT_KEEP_CHECKPOINTS`](crate::store::DEFAULT_KEEP_CHECKPOINTS).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = flow_core::store::PgStore::connect("postgres://postgres@127.0.0.1/flows").await?.keep_checkpoints(10);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_checkpoints(mut self, n: usize) -> Self {
        self.keep_checkpoints = Some(n.max(1));
        self
    }

    /// Keep every checkpoint of every run: the whole history stays available to fork from.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = flow_core::store::PgStore::connect("postgres://postgres@127.0.0.1/flows").await?.keep_all_checkpoints();
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_all_checkpoints(mut self) -> Self {
        self.keep_checkpoints = None;
        self
    }

    /// Writes the step commits of runs that commit at the same moment together: up to
    /// `max_batch` runs' commits in one statement (one round trip, one transaction, one WAL
    /// flush for all of them), with up to `in_flight` such statements under way at once, each on
    /// a pooled connection. A commit that finds fewer than `in_flight` under way goes out at
    /// once, so a lone run waits for no one; the others join the next batch. Each run's commit
    /// stays fenced by its own lease epoch and fails alone, and each returns only once the
    /// transaction holding it committed. The default is 64 and 4; `max_batch` 1 writes every
    /// commit on its own statement.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// // A bigger pool, more batches under way.
    /// let store = flow_core::store::PgStore::connect("postgres://postgres@127.0.0.1/flows").await?.group_commit(64, 8);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn group_commit(mut self, max_batch: usize, in_flight: usize) -> Self {
        self.group = (max_batch > 1).then(|| Arc::new(group::GroupCommit::new(max_batch, in_flight)));
        self
    }

    /// The pool, for the application's own queries on the same database.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = flow_core::store::PgStore::connect("postgres://postgres@127.0.0.1/flows").await?;
    /// let client = store.pool().get().await?;
    /// let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    /// # let _ = one;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether memory ranks with pgvector ([`Pgvector`]); [`Pgvector::Auto`] unless set.
    ///
    /// With it, a recall scores a whole scope in the server, with the exact cosine similarity,
    /// and only its best records travel; without it, the client scores a shortlist chosen by
    /// each record's sketch and by full-text search. Both return the same records with the
    /// same scores wherever one record stands out; pgvector's are exact everywhere, at about
    /// the same cost (a little less on large scopes: BENCHMARKS.md). The choice is made at the
    /// first memory call (the first store to use pgvector on a database adds and fills the
    /// column it needs), so set it before.
    ///
    /// ```no_run
    /// use flow_core::store::{PgStore, Pgvector};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// // Rank in the client whatever the server has: no extension is created, no column added.
    /// let store = PgStore::connect("postgres://app@db.internal/flows").await?.pgvector(Pgvector::Off);
    /// assert!(!store.uses_pgvector().await?);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn pgvector(mut self, mode: Pgvector) -> Self {
        self.vectors = Vectors::new(mode);
        self
    }

    /// Whether this store's memory ranks with pgvector, deciding it now if no memory call has
    /// yet (see [`PgStore::pgvector`]).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = flow_core::store::PgStore::connect("postgres://postgres@127.0.0.1:5432/flows").await?;
    /// if !store.uses_pgvector().await? {
    ///     eprintln!("memory recall ranks in the client: install pgvector for large scopes");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the server cannot be reached, and with
    /// [`Pgvector::Required`] when the extension cannot be had (saying what to install).
    pub async fn uses_pgvector(&self) -> Result<bool, StoreError> {
        Ok(self.vectors().await?.is_some())
    }

    async fn vectors(&self) -> Result<Option<&VectorSql>, StoreError> {
        let ready = self
            .vectors
            .ready
            .get_or_try_init(|| async {
                let mut client = self.client(None).await?;
                let result = vector::setup(&mut client, &self.pg, self.vectors.mode).await;
                settle(client, &result);
                result
            })
            .await?;
        Ok(ready.as_ref())
    }

    async fn client(&self, run: Option<Uuid>) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| self.pg.pool(e, run))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, u64>> {
        // The lock only guards the map (never held across an await), so a poisoned one is whole.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Gives a connection back to the pool, unless the call on it failed in the database or the
/// network: such a connection may be one the server dropped (a restart) before the pool noticed,
/// and handing it out again would fail the next call too.
fn settle<T>(client: deadpool_postgres::Object, result: &Result<T, StoreError>) {
    if matches!(result, Err(StoreError::Backend(_) | StoreError::Busy(_))) {
        drop(deadpool_postgres::Object::take(client));
    }
}

/// Runs `work` in a transaction on a pooled connection, committing when it succeeds; a failure
/// drops the transaction, which rolls it back.
macro_rules! in_transaction {
    ($store:expr, $run:expr, |$tx:ident| $work:expr) => {{
        let run: Uuid = $run;
        let mut client = $store.client(Some(run)).await?;
        let result = async {
            let fail = |e: tokio_postgres::Error| $store.pg.map(&e, Some(run));
            let $tx = client.transaction().await.map_err(fail)?;
            match $work.await {
                Ok(out) => {
                    $tx.commit().await.map_err(fail)?;
                    Ok::<_, StoreError>(out)
                }
                // Rolled back before the connection goes back to the pool: a dropped transaction
                // only queues its ROLLBACK, and until the server runs it the rows this one locked
                // (`FOR UPDATE`) stay locked, so a claim on another connection would skip them
                // (`SKIP LOCKED`) as if another worker held them.
                Err(e) => {
                    let _ = $tx.rollback().await;
                    Err(e)
                }
            }
        }
        .await;
        settle(client, &result);
        result
    }};
}

/// Runs `read` on a pooled connection.
macro_rules! on_connection {
    ($store:expr, $run:expr, |$client:ident| $read:expr) => {{
        let $client = $store.client($run).await?;
        let result = $read.await;
        settle($client, &result);
        result
    }};
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn create_run(&self, run: NewRun) -> Result<u64, StoreError> {
        let graph = run.graph.as_ref().map(|g| (run.flow.clone(), g.digest.clone()));
        let stored = graph.as_ref().is_some_and(|g| self.graphs.lock().unwrap_or_else(|p| p.into_inner()).contains(g));
        // One statement, atomic on its own.
        let epoch =
            on_connection!(self, Some(run.run_id), |client| queries::create_run(&client, &self.pg, &run, stored))?;
        // Remembered once written: a failed statement leaves the graph unwritten.
        if let Some(graph) = graph.filter(|_| !stored) {
            self.graphs.lock().unwrap_or_else(|p| p.into_inner()).insert(graph);
        }
        if epoch > 0 {
            self.held().insert(run.run_id, epoch);
        } else {
            self.wake.work.notify_waiters();
        }
        Ok(epoch)
    }

    async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let claim = in_transaction!(self, run_id, |tx| queries::claim(&tx, &self.pg, run_id, owner, lease))?;
        self.held().insert(run_id, claim.epoch);
        Ok(claim)
    }

    async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError> {
        on_connection!(self, Some(run_id), |client| queries::renew(&client, &self.pg, run_id, epoch, lease))
    }

    async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
        // The epoch stays in `held`: a late effect of this process is still fenced once another
        // claims the run.
        in_transaction!(self, run_id, |tx| queries::release(&tx, &self.pg, run_id, epoch))?;
        self.wake.work.notify_waiters();
        Ok(())
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let (run_id, epoch, status) = (commit.run_id, commit.epoch, commit.status);
        let steps = queries::StepColumns::of(run_id, &commit.steps)?;
        if let Some(group) = &self.group {
            self.commit_in_group(group, commit, steps).await?;
        } else {
            self.commit_alone(&commit, &steps, self.keep_checkpoints).await?;
        }
        if status == RunStatus::Queued {
            self.wake.work.notify_waiters();
        }
        if status.is_at_rest() {
            let mut held = self.held();
            if held.get(&run_id) == Some(&epoch) {
                held.remove(&run_id);
            }
        }
        Ok(())
    }

    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::load_run(&client, &self.pg, run_id))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        let listing = self.list_runs_checked(filter).await?;
        for damaged in &listing.damaged {
            tracing::warn!(run_id = %damaged.run_id, error = %damaged.error, "left a damaged run out of a listing");
        }
        Ok(listing.items)
    }

    async fn list_runs_checked(&self, filter: &RunFilter) -> Result<Listing<RunSummary>, StoreError> {
        on_connection!(self, None, |client| queries::list_runs(&client, &self.pg, filter))
    }

    async fn run_summary(&self, run_id: Uuid) -> Result<RunSummary, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::run_summary(&client, &self.pg, run_id))
    }

    async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::steps(&client, &self.pg, run_id))
    }

    async fn run_graph(&self, run_id: Uuid) -> Result<Option<GraphDoc>, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::run_graph(&client, &self.pg, run_id))
    }

    async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::checkpoints(&client, &self.pg, run_id))
    }

    async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::load_checkpoint(&client, &self.pg, run_id, seq))
    }

    async fn edit_state(&self, edit: StateEdit) -> Result<u64, StoreError> {
        let run_id = edit.run_id;
        on_connection!(self, Some(run_id), |client| queries::edit_state(&client, &self.pg, &edit))
    }

    async fn journal(&self, run_id: Uuid) -> Result<Vec<JournalEntry>, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::journal(&client, &self.pg, run_id))
    }

    async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError> {
        on_connection!(self, Some(run_id), |client| queries::journal_get(&client, &self.pg, run_id, step_key, seq))
    }

    async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError> {
        let held = self.held().get(&entry.run_id).copied();
        in_transaction!(self, entry.run_id, |tx| queries::journal_put(&tx, &self.pg, &entry, held))
    }

    async fn claim_next(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let mut client = self.client(None).await?;
        let result = async {
            let fail = |e: tokio_postgres::Error| self.pg.map(&e, None);
            let tx = client.transaction().await.map_err(fail)?;
            match queries::claim_next(&tx, &self.pg, request).await {
                Ok(claims) => {
                    tx.commit().await.map_err(fail)?;
                    Ok::<_, StoreError>(claims)
                }
                // As in `in_transaction!`: release the locked candidates before the connection
                // goes back to the pool.
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        }
        .await;
        settle(client, &result);
        let claims = result?;
        let mut held = self.held();
        for claim in &claims {
            held.insert(claim.run.run_id, claim.epoch);
        }
        Ok(claims)
    }

    async fn answer(&self, run_id: Uuid, step_key: &str, value: Value) -> Result<(), StoreError> {
        in_transaction!(self, run_id, |tx| queries::answer(&tx, &self.pg, run_id, step_key, &value))?;
        self.wake.work.notify_waiters();
        Ok(())
    }

    async fn requeue(&self, run_id: Uuid) -> Result<(), StoreError> {
        in_transaction!(self, run_id, |tx| queries::requeue(&tx, &self.pg, run_id))?;
        self.wake.work.notify_waiters();
        Ok(())
    }

    async fn request_cancel(&self, run_id: Uuid, reason: &str) -> Result<(), StoreError> {
        in_transaction!(self, run_id, |tx| queries::request_cancel(&tx, &self.pg, run_id, reason))?;
        self.wake.work.notify_waiters();
        Ok(())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let woken = self.wake.work.notified();
        self.wake.start();
        let _ = tokio::time::timeout(timeout, woken).await;
    }
    async fn delete_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        in_transaction!(self, run_id, |tx| queries::delete_run(&tx, &self.pg, run_id))?;
        self.held().remove(&run_id);
        Ok(())
    }

    async fn stream_append(
        &self,
        run_id: Uuid,
        items: Vec<StreamRecord>,
        keep_last: Option<u64>,
    ) -> Result<(), StoreError> {
        in_transaction!(self, run_id, |tx| stream::append(&tx, &self.pg, run_id, &items, keep_last))
    }

    async fn stream_read(&self, run_id: Uuid, from_seq: u64, limit: usize) -> Result<Vec<StreamRecord>, StoreError> {
        on_connection!(self, Some(run_id), |client| stream::read(&client, &self.pg, run_id, from_seq, limit))
    }

    async fn stream_last_seq(&self, run_id: Uuid) -> Result<Option<u64>, StoreError> {
        on_connection!(self, Some(run_id), |client| stream::last_seq(&client, &self.pg, run_id))
    }

    async fn set_trace_context(&self, run_id: Uuid, traceparent: &str) -> Result<(), StoreError> {
        on_connection!(self, Some(run_id), |client| trace::keep(&client, &self.pg, run_id, traceparent))
    }

    async fn trace_context(&self, run_id: Uuid) -> Result<Option<String>, StoreError> {
        on_connection!(self, Some(run_id), |client| trace::read(&client, &self.pg, run_id))
    }

    async fn memory_put(&self, record: crate::memory::MemoryRecord) -> Result<bool, StoreError> {
        let vectors = self.vectors().await?;
        on_connection!(self, None, |client| memory::put(&client, &self.pg, vectors, &record, crate::store::now_ms()))
    }

    async fn memory_search(
        &self,
        search: &crate::memory::MemorySearch,
    ) -> Result<Vec<crate::memory::Recalled>, StoreError> {
        let vectors = self.vectors().await?;
        on_connection!(self, None, |client| memory::search(&client, &self.pg, vectors, search))
    }

    async fn memory_forget(&self, forget: &crate::memory::Forget) -> Result<u64, StoreError> {
        on_connection!(self, None, |client| memory::forget(&client, &self.pg, forget))
    }

    async fn memory_purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        on_connection!(self, None, |client| memory::purge(&client, &self.pg, now_ms))
    }
}
