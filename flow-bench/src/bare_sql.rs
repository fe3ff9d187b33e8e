//! A store whose checkpoints are the W5 limit's bare insert: the `w5-bare-sql` variant.
//!
//! W5 compares a durable step with a bare SQLite insert and commit. This store keeps
//! everything of [`SqliteStore`] (the run row, its lease, its first checkpoint) except the
//! per-step commit, which becomes exactly the limit's write: one `INSERT` into a two-column
//! table, committed on its own, on a connection with the same durability setting. The engine
//! still does all its work per step (runs the step, builds the snapshot, serializes state and
//! progress); only the SQL differs from `w5`. So `w5-bare-sql` against `w5` tells how much of
//! W5's distance to the limit is our store's SQL, and against `w5-limit` how much is the
//! engine's work between two fsyncs.
//!
//! Not a store to use: its checkpoints cannot be read back, so a run it recorded cannot resume.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use flow_core::store::{
    CheckpointInfo, Claim, Commit, JournalEntry, NewRun, RunFilter, RunRecord, RunSummary, Snapshot, SqliteStore,
    StepRecord, Store, StoreError, Synchronous, async_trait,
};
use uuid::Uuid;

use crate::limit;

/// [`SqliteStore`] with each commit replaced by the W5 limit's insert.
pub struct BareSqlCommits {
    inner: SqliteStore,
    conn: Mutex<rusqlite::Connection>,
    seq: AtomicI64,
}

impl BareSqlCommits {
    /// Wraps `inner`; commits go to a new database at `path`, opened as the W5 limit opens it.
    pub fn new(inner: SqliteStore, path: &Path, sync: Synchronous) -> Result<Self, StoreError> {
        let conn = limit::w5_open(path, sync).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(BareSqlCommits { inner, conn: Mutex::new(conn), seq: AtomicI64::new(0) })
    }
}

#[async_trait]
impl Store for BareSqlCommits {
    /// The limit's insert and commit, on this thread, as [`limit::w5`] makes it: the state's
    /// JSON under a sequence number. Blocking here is what `SqliteStore` does too when the run
    /// is the only task on its runtime.
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Backend("the bare-SQL connection is poisoned".into()))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        conn.prepare_cached(limit::W5_INSERT)
            .and_then(|mut stmt| stmt.execute(rusqlite::params!["bare-sql", seq, commit.snapshot.state.get()]))
            .map(drop)
            .map_err(|e| StoreError::Backend(format!("bare-SQL commit: {e}")))
    }

    async fn create_run(&self, run: NewRun) -> Result<u64, StoreError> {
        self.inner.create_run(run).await
    }

    async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(run_id, owner, lease).await
    }

    async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError> {
        self.inner.renew(run_id, epoch, lease).await
    }
    async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
        self.inner.release(run_id, epoch).await
    }

    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
        self.inner.load_run(run_id).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        self.inner.list_runs(filter).await
    }

    async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
        self.inner.steps(run_id).await
    }

    async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
        self.inner.checkpoints(run_id).await
    }

    async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
        self.inner.load_checkpoint(run_id, seq).await
    }

    async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError> {
        self.inner.journal_get(run_id, step_key, seq).await
    }

    async fn memory_put(&self, record: flow_core::memory::MemoryRecord) -> Result<bool, StoreError> {
        self.inner.memory_put(record).await
    }

    async fn memory_search(
        &self,
        search: &flow_core::memory::MemorySearch,
    ) -> Result<Vec<flow_core::memory::Recalled>, StoreError> {
        self.inner.memory_search(search).await
    }

    async fn memory_forget(&self, forget: &flow_core::memory::Forget) -> Result<u64, StoreError> {
        self.inner.memory_forget(forget).await
    }

    async fn memory_purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.inner.memory_purge_expired(now_ms).await
    }

    async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError> {
        self.inner.journal_put(entry).await
    }

    async fn set_trace_context(&self, run_id: Uuid, traceparent: &str) -> Result<(), StoreError> {
        self.inner.set_trace_context(run_id, traceparent).await
    }

    async fn trace_context(&self, run_id: Uuid) -> Result<Option<String>, StoreError> {
        self.inner.trace_context(run_id).await
    }
}
