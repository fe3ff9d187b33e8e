//! The embedded SQLite store: one file (plus its `-wal` and `-shm` companions), WAL mode,
//! durable commits shared by concurrent runs.
//!
//! Layout: [`schema`] opens connections and migrates; [`writer`] owns the only writing
//! connection and group-commits; [`queries`] holds the SQL; [`error`] maps SQLite's codes.
//! Reads run on a small pool of read-only connections on tokio's blocking threads, and writes
//! on the writer thread, so a tokio worker waits on SQLite only when its task is the only one
//! alive on the runtime and writes while the writer is idle (see [`writer`]).

mod error;
mod memory;
mod queries;
mod schema;
mod stream;
mod trace;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use self::queries::Db;
use self::writer::WriterHandle;
use crate::graph::GraphDoc;
use crate::store::{
    CheckpointInfo, Claim, ClaimRequest, Commit, JournalEntry, Listing, NewRun, RunFilter, RunRecord, RunStatus,
    RunSummary, Snapshot, Start, StateEdit, StepRecord, Store, StoreError, StreamRecord, now_ms,
};

/// How hard SQLite pushes each commit to the disk (`PRAGMA synchronous`).
///
/// ```
/// use flow_core::store::{SqliteOptions, Synchronous};
/// let options = SqliteOptions::new("runs.db").synchronous(Synchronous::Normal);
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// Commits survive a process crash but the last few may be lost on power failure or an
    /// OS crash. Faster: no fsync per commit, only at WAL checkpoints. Breaks the "no lost
    /// runs" promise for those failures; use it where runs can be started again.
    Normal,
    /// Every commit is on disk when the store answers (one fsync per group commit). The
    /// default.
    #[default]
    Full,
    /// Like `Full`, and also syncs the directory after the WAL is reset: for file systems
    /// that need it to keep a commit through power loss.
    Extra,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// How to open a [`SqliteStore`].
///
/// ```
/// use std::time::Duration;
/// use flow_core::store::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::new(".flows/runs.db")
///     .keep_checkpoints(20)
///     .synchronous(Synchronous::Full)
///     .busy_timeout(Duration::from_secs(10));
/// assert_eq!(options.path().to_str(), Some(".flows/runs.db"));
/// ```
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    path: PathBuf,
    synchronous: Synchronous,
    busy_timeout: Duration,
    keep_checkpoints: Option<usize>,
    read_connections: usize,
    read_only: bool,
    max_size: Option<u64>,
}

impl SqliteOptions {
    /// Options for the database at `path` (created if missing; its directory must exist),
    /// with `synchronous=FULL`, a 5 s busy timeout, the newest
    /// [`DEFAULT_KEEP_CHECKPOINTS`](crate::store::DEFAULT_KEEP_CHECKPOINTS) checkpoints of each
    /// run kept and 4 read connections.
    ///
    /// ```
    /// let options = flow_core::store::SqliteOptions::new("runs.db");
    /// # let _ = options;
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            keep_checkpoints: Some(crate::store::DEFAULT_KEEP_CHECKPOINTS),
            read_connections: 4,
            read_only: false,
            max_size: None,
        }
    }

    /// The database file.
    ///
    /// ```
    /// let options = flow_core::store::SqliteOptions::new("runs.db");
    /// assert_eq!(options.path(), std::path::Path::new("runs.db"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How hard each commit is pushed to disk; see [`Synchronous`].
    ///
    /// ```
    /// use flow_core::store::{SqliteOptions, Synchronous};
    /// let options = SqliteOptions::new("runs.db").synchronous(Synchronous::Normal);
    /// # let _ = options;
    /// ```
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long to wait for another process's lock before reporting [`StoreError::Busy`]
    /// (the writer retries a few more times with backoff after each wait).
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = flow_core::store::SqliteOptions::new("runs.db").busy_timeout(Duration::from_secs(1));
    /// # let _ = options;
    /// ```
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Keep only the newest `n` checkpoints of each run (at least 1); older ones are deleted in
    /// the same transaction as the commit that makes them surplus.
    ///
    /// ```
    /// let options = flow_core::store::SqliteOptions::new("runs.db").keep_checkpoints(10);
    /// # let _ = options;
    /// ```
    pub fn keep_checkpoints(mut self, n: usize) -> Self {
        self.keep_checkpoints = Some(n.max(1));
        self
    }

    /// Keep every checkpoint of every run (no retention): the whole history stays available
    /// to fork from, at the cost of one stored state per step.
    ///
    /// ```
    /// let options = flow_core::store::SqliteOptions::new("runs.db").keep_all_checkpoints();
    /// # let _ = options;
    /// ```
    pub fn keep_all_checkpoints(mut self) -> Self {
        self.keep_checkpoints = None;
        self
    }

    /// How many reads may run at once, each on its own connection (at least 1).
    ///
    /// ```
    /// let options = flow_core::store::SqliteOptions::new("runs.db").read_connections(8);
    /// # let _ = options;
    /// ```
    pub fn read_connections(mut self, n: usize) -> Self {
        self.read_connections = n.max(1);
        self
    }

    /// Open the file without write access, to inspect runs a process may not change (a CLI
    /// listing runs, a file owned by another user). Every write then fails with
    /// [`StoreError::ReadOnly`]. The file must exist and be at this build's schema version.
    ///
    /// ```
    /// let options = flow_core::store::SqliteOptions::new("runs.db").read_only(true);
    /// # let _ = options;
    /// ```
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Refuse writes that would grow the database past about `bytes` (a quota on a shared
    /// disk): such a write fails with [`StoreError::DiskFull`] and is rolled back, exactly as
    /// when the disk itself is full. SQLite cannot shrink the limit below the file's current
    /// size; it then keeps the current size as the limit.
    ///
    /// ```
    /// let options = flow_core::store::SqliteOptions::new("runs.db").max_size(1 << 30);
    /// # let _ = options;
    /// ```
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }
}

/// The embedded, durable [`Store`]: one SQLite file in WAL mode.
///
/// - **Durable**: with the default `synchronous=FULL`, a write is on disk when its future
///   resolves. A killed process leaves a consistent file; the run continues from its last
///   commit.
/// - **Group commit**: writes go through one writer thread that applies every request
///   waiting in its queue in one transaction, each in its own savepoint, and commits once; so
///   concurrent runs share fsyncs, and a request that fails (fenced, disk full) undoes only
///   itself. A write from the only task alive on its runtime, while the writer is idle, is
///   committed on the caller's thread instead (nothing could share it), which saves a lone
///   run two thread wake-ups per durable step.
/// - **Multi-process**: several processes (or several `SqliteStore`s) may open one file; leases
///   and epochs decide who drives a run. Never put the file on a network file system.
/// - **Queues**: [`Store::claim_next`] counts and claims inside the single writer's
///   transaction, so a queue's limits hold over every process on the file.
///   [`Store::wait_for_work`] wakes when any store of this process on the same file makes a run
///   runnable; runs made runnable by other processes are found at the next poll.
/// - **Where**: [`SqliteStore::open_default`] uses `$FLOWS_DB`, else `./.flows/runs.db`, and
///   logs the location at info level so the user is told where their runs are.
///
/// Cloning is cheap and shares the connections. The writer thread ends when the last clone is
/// dropped. A write whose future is dropped after it was queued is still applied, as a write
/// whose reply was lost would be; the epoch fencing makes that safe to retry.
///
/// ```
/// use flow_core::store::{RunFilter, SqliteOptions, SqliteStore, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open_with(SqliteOptions::new(dir.path().join("runs.db")).keep_checkpoints(50)).await?;
/// assert!(store.list_runs(&RunFilter::default()).await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

// Field order is drop order: the read connections close before the writer's channel does,
// so the writer's connection is the file's last and checkpoints and removes the WAL on close.
struct Inner {
    path: PathBuf,
    keep_checkpoints: Option<usize>,
    /// Wakes `wait_for_work` in every store of this process on the same file.
    work: Arc<Notify>,
    read_only: bool,
    /// The graphs (flow and digest) this store has written: a run of a known flow version
    /// only refers to its graph, so creating a run does not write the graph again.
    graphs: Mutex<HashSet<(String, String)>>,
    readers: Readers,
    writer: WriterHandle,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("keep_checkpoints", &self.inner.keep_checkpoints)
            .finish_non_exhaustive()
    }
}

/// The environment variable naming the default database file.
const DB_ENV: &str = "FLOWS_DB";

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with default [`SqliteOptions`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = flow_core::store::SqliteStore::open(dir.path().join("runs.db")).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file cannot be opened or is not a database,
    /// [`StoreError::ReadOnly`] when it cannot be written, [`StoreError::SchemaTooNew`] when a
    /// newer build wrote it (the file is left untouched).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: opening runs on tokio's blocking pool.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(SqliteOptions::new(path.as_ref())).await
    }

    /// Opens the store described by `options`.
    ///
    /// ```
    /// use flow_core::store::{SqliteOptions, SqliteStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = SqliteStore::open_with(SqliteOptions::new(dir.path().join("runs.db")).keep_checkpoints(5)).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`SqliteStore::open`].
    pub async fn open_with(options: SqliteOptions) -> Result<Self, StoreError> {
        let path = options.path.clone();
        let (conn, reader, options) = blocking(&path, move || {
            let conn = schema::open_writer(&options)?;
            // Opened now so a reader that cannot open fails `open`, not the first read.
            let reader = schema::open_reader(&options.path, options.busy_timeout)?;
            Ok((conn, reader, options))
        })
        .await?;
        let writer = WriterHandle::start(conn, path.clone())?;
        let readers = Readers {
            path: path.clone(),
            busy_timeout: options.busy_timeout,
            permits: Semaphore::new(options.read_connections),
            idle: Mutex::new(vec![reader]),
        };
        tracing::debug!(path = %path.display(), "opened SQLite store");
        let work = work_signal(&path);
        let inner = Inner {
            path,
            keep_checkpoints: options.keep_checkpoints,
            read_only: options.read_only,
            graphs: Mutex::new(HashSet::new()),
            work,
            readers,
            writer,
        };
        Ok(SqliteStore { inner: Arc::new(inner) })
    }

    /// Where runs are stored by default: `$FLOWS_DB` when set, else `./.flows/runs.db`
    /// (creating `./.flows`).
    ///
    /// ```no_run
    /// let path = flow_core::store::SqliteStore::default_path()?;
    /// # Ok::<(), flow_core::store::StoreError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when `./.flows` cannot be created.
    pub fn default_path() -> Result<PathBuf, StoreError> {
        if let Some(path) = std::env::var_os(DB_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        let dir = Path::new(".flows");
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.join("runs.db").display().to_string(),
            message: format!("cannot create the directory {}: {e}; set {DB_ENV} to another path", dir.display()),
        })?;
        Ok(dir.join("runs.db"))
    }

    /// Opens the store at [`SqliteStore::default_path`] and tells the user where it is: an
    /// info-level `tracing` event carries the absolute path, so runs never end up in a file
    /// nobody can find.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flow_core::store::StoreError> {
    /// let store = flow_core::store::SqliteStore::open_default().await?;
    /// let where_runs_are = store.path();
    /// # let _ = where_runs_are;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::default_path`] and [`SqliteStore::open`].
    pub async fn open_default() -> Result<Self, StoreError> {
        let path = Self::default_path()?;
        let store = Self::open(&path).await?;
        let shown = std::path::absolute(&path).unwrap_or(path);
        tracing::info!(path = %shown.display(), "flow runs are stored in {} (set {DB_ENV} to change)", shown.display());
        Ok(store)
    }

    /// The database file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = flow_core::store::SqliteStore::open(dir.path().join("runs.db")).await?;
    /// assert!(store.path().ends_with("runs.db"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(work).await
    }

    /// Runs `read` on a pooled read connection on a blocking thread. The semaphore caps open
    /// read connections at `read_connections`, whatever the number of concurrent callers.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        // Once the file was found gone, what a read connection sees is not what this process
        // wrote: a new connection opens whatever now has the path, or nothing.
        self.inner.writer.found_gone()?;
        let permit = self.inner.readers.permits.acquire().await.map_err(|_| {
            StoreError::Backend(format!("{}: the store's read pool is closed", self.inner.path.display()))
        })?;
        let inner = Arc::clone(&self.inner);
        let result = blocking(&self.inner.path, move || inner.readers.with(read)).await;
        drop(permit);
        result
    }
}

/// The signal shared by every store of this process open on the file at `path`, so a run
/// submitted through one wakes the workers waiting on another. Other processes are not told:
/// their workers find the run at their next poll.
fn work_signal(path: &Path) -> Arc<Notify> {
    static SIGNALS: OnceLock<Mutex<HashMap<PathBuf, Weak<Notify>>>> = OnceLock::new();
    // The file exists once opened; a path that cannot be resolved keeps a signal of its own.
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut signals = SIGNALS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    signals.retain(|_, signal| signal.strong_count() > 0);
    if let Some(signal) = signals.get(&key).and_then(Weak::upgrade) {
        return signal;
    }
    let signal = Arc::new(Notify::new());
    signals.insert(key, Arc::downgrade(&signal));
    signal
}

/// Runs blocking SQLite work off the tokio workers.
async fn blocking<T, F>(path: &Path, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        StoreError::Backend(format!("{}: a blocking SQLite task failed ({e}); see the log", path.display()))
    })?
}

/// Idle read connections, reused across reads.
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(&self, read: impl FnOnce(Db<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // The lock only guards the Vec (never held during a query), so a poisoned lock still
        // holds whole connections.
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => schema::open_reader(&self.path, self.busy_timeout)?,
        };
        let result = read(Db { conn: &conn, path: &self.path });
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        result
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<u64, StoreError> {
        let run_id = run.run_id;
        let queued = matches!(run.start, Start::Queued { .. });
        let graph = run.graph.as_ref().map(|g| (run.flow.clone(), g.digest.clone()));
        let stored =
            graph.as_ref().is_some_and(|g| self.inner.graphs.lock().unwrap_or_else(|p| p.into_inner()).contains(g));
        let epoch = self
            .write(move |db| queries::create_run(db, &run, stored, now_ms()))
            .await
            .map_err(|e| e.for_run(run_id))?;
        // Remembered once committed: a rolled-back write leaves the graph unwritten.
        if let Some(graph) = graph.filter(|_| !stored) {
            self.inner.graphs.lock().unwrap_or_else(|p| p.into_inner()).insert(graph);
        }
        if queued {
            self.inner.work.notify_waiters();
        }
        Ok(epoch)
    }

    async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let owner = owner.to_string();
        self.write(move |db| queries::claim(db, run_id, &owner, lease, now_ms())).await.map_err(|e| e.for_run(run_id))
    }

    async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError> {
        // Reported once the extension is committed: an error from inside the write would roll
        // it back.
        match self.write(move |db| queries::renew(db, run_id, epoch, lease, now_ms())).await {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(StoreError::CancelRequested { run_id, reason }),
            Err(e) => Err(e.for_run(run_id)),
        }
    }

    async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
        let runnable =
            self.write(move |db| queries::release(db, run_id, epoch)).await.map_err(|e| e.for_run(run_id))?;
        if runnable {
            self.inner.work.notify_waiters();
        }
        Ok(())
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let keep = self.inner.keep_checkpoints;
        let run_id = commit.run_id;
        let queued = commit.status == RunStatus::Queued;
        self.write(move |db| queries::commit(db, &commit, keep, now_ms())).await.map_err(|e| e.for_run(run_id))?;
        if queued {
            self.inner.work.notify_waiters();
        }
        Ok(())
    }

    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
        self.read(move |db| queries::load_run(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn edit_state(&self, edit: StateEdit) -> Result<u64, StoreError> {
        let run_id = edit.run_id;
        self.write(move |db| queries::edit_state(db, &edit, now_ms())).await.map_err(|e| e.for_run(run_id))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        let listing = self.list_runs_checked(filter).await?;
        for damaged in &listing.damaged {
            tracing::warn!(run_id = %damaged.run_id, error = %damaged.error, "left a damaged run out of a listing");
        }
        Ok(listing.items)
    }

    async fn list_runs_checked(&self, filter: &RunFilter) -> Result<Listing<RunSummary>, StoreError> {
        let filter = filter.clone();
        self.read(move |db| queries::list_runs(db, &filter)).await
    }

    async fn run_summary(&self, run_id: Uuid) -> Result<RunSummary, StoreError> {
        self.read(move |db| queries::run_summary(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
        self.read(move |db| queries::steps(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
        self.read(move |db| queries::checkpoints(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
        self.read(move |db| queries::load_checkpoint(db, run_id, seq)).await.map_err(|e| e.for_run(run_id))
    }

    async fn journal(&self, run_id: Uuid) -> Result<Vec<JournalEntry>, StoreError> {
        self.read(move |db| queries::journal(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError> {
        let step_key = step_key.to_string();
        self.read(move |db| queries::journal_get(db, run_id, &step_key, seq)).await.map_err(|e| e.for_run(run_id))
    }

    async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError> {
        let run_id = entry.run_id;
        self.write(move |db| queries::journal_put(db, &entry, now_ms())).await.map_err(|e| e.for_run(run_id))
    }

    async fn claim_next(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let request = request.clone();
        self.write(move |db| queries::claim_next(db, &request, now_ms())).await
    }

    async fn answer(&self, run_id: Uuid, step_key: &str, value: Value) -> Result<(), StoreError> {
        let step_key = step_key.to_string();
        self.write(move |db| queries::answer(db, run_id, &step_key, &value, now_ms()))
            .await
            .map_err(|e| e.for_run(run_id))?;
        self.inner.work.notify_waiters();
        Ok(())
    }

    async fn requeue(&self, run_id: Uuid) -> Result<(), StoreError> {
        self.write(move |db| queries::requeue(db, run_id, now_ms())).await.map_err(|e| e.for_run(run_id))?;
        self.inner.work.notify_waiters();
        Ok(())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.work.notified()).await;
    }

    async fn request_cancel(&self, run_id: Uuid, reason: &str) -> Result<(), StoreError> {
        let reason = reason.to_string();
        let queued = self
            .write(move |db| queries::request_cancel(db, run_id, &reason, now_ms()))
            .await
            .map_err(|e| e.for_run(run_id))?;
        if queued {
            self.inner.work.notify_waiters();
        }
        Ok(())
    }

    /// On a connection of its own, with foreign keys off (see `queries::delete_run`), in a
    /// transaction of its own: SQLite's file lock orders it with the writer's transactions as
    /// it does another process's, so the lease check and the delete see the same run.
    async fn delete_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        self.inner.writer.found_gone()?;
        if self.inner.read_only {
            return Err(StoreError::ReadOnly(format!(
                "{} was opened with `SqliteOptions::read_only(true)`; open it writable to delete runs",
                self.inner.path.display()
            )));
        }
        let (path, busy_timeout) = (self.inner.path.clone(), self.inner.readers.busy_timeout);
        blocking(&self.inner.path, move || {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&path, flags).map_err(|e| error::map(&e, &path))?;
            conn.busy_timeout(busy_timeout).map_err(|e| error::map(&e, &path))?;
            conn.pragma_update(None, "foreign_keys", "OFF").map_err(|e| error::map(&e, &path))?;
            conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| error::map(&e, &path))?;
            // Dropping the connection with its transaction open rolls it back.
            queries::delete_run(Db { conn: &conn, path: &path }, run_id, now_ms())?;
            conn.execute_batch("COMMIT").map_err(|e| error::map(&e, &path))
        })
        .await
        .map_err(|e| e.for_run(run_id))
    }

    async fn stream_append(
        &self,
        run_id: Uuid,
        items: Vec<StreamRecord>,
        keep_last: Option<u64>,
    ) -> Result<(), StoreError> {
        self.write(move |db| stream::append(db, run_id, &items, keep_last)).await.map_err(|e| e.for_run(run_id))
    }

    async fn stream_read(&self, run_id: Uuid, from_seq: u64, limit: usize) -> Result<Vec<StreamRecord>, StoreError> {
        self.read(move |db| stream::read(db, run_id, from_seq, limit)).await.map_err(|e| e.for_run(run_id))
    }

    async fn stream_last_seq(&self, run_id: Uuid) -> Result<Option<u64>, StoreError> {
        self.read(move |db| stream::last_seq(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn set_trace_context(&self, run_id: Uuid, traceparent: &str) -> Result<(), StoreError> {
        let traceparent = traceparent.to_owned();
        self.write(move |db| trace::keep(db, run_id, &traceparent)).await.map_err(|e| e.for_run(run_id))
    }

    async fn trace_context(&self, run_id: Uuid) -> Result<Option<String>, StoreError> {
        self.read(move |db| trace::read(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn run_graph(&self, run_id: Uuid) -> Result<Option<GraphDoc>, StoreError> {
        self.read(move |db| queries::run_graph(db, run_id)).await.map_err(|e| e.for_run(run_id))
    }

    async fn memory_put(&self, record: crate::memory::MemoryRecord) -> Result<bool, StoreError> {
        self.write(move |db| memory::put(db, &record, now_ms())).await
    }

    async fn memory_search(
        &self,
        search: &crate::memory::MemorySearch,
    ) -> Result<Vec<crate::memory::Recalled>, StoreError> {
        let search = search.clone();
        self.read(move |db| memory::search(db, &search)).await
    }

    async fn memory_forget(&self, forget: &crate::memory::Forget) -> Result<u64, StoreError> {
        let forget = forget.clone();
        self.write(move |db| memory::forget(db, &forget)).await
    }

    async fn memory_purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |db| memory::purge(db, now_ms)).await
    }
}
