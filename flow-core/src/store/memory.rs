//! A store in process memory: same semantics as the durable stores, nothing survives the
//! process. For tests and for runs that need fork and pause within one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use uuid::Uuid;

use super::{
    CheckpointInfo, Claim, Commit, JournalEntry, NewRun, RunFilter, RunRecord, RunStatus, RunSummary, Snapshot,
    StepRecord, Store, StoreError, now_ms,
};

#[derive(Default)]
struct Run {
    record: Option<RunRecord>,
    steps: Vec<StepRecord>,
    checkpoints: Vec<(CheckpointInfo, Snapshot)>,
    journal: HashMap<(String, u32), JournalEntry>,
}

/// A [`Store`] in memory.
///
/// ```
/// use flow_core::store::MemoryStore;
/// let store = MemoryStore::new().keep_checkpoints(10);
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    runs: Arc<Mutex<HashMap<Uuid, Run>>>,
    keep_checkpoints: Option<usize>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { runs: Arc::default(), keep_checkpoints: Some(super::DEFAULT_KEEP_CHECKPOINTS) }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("keep_checkpoints", &self.keep_checkpoints).finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store that keeps the newest
    /// [`DEFAULT_KEEP_CHECKPOINTS`](super::DEFAULT_KEEP_CHECKPOINTS) checkpoints of each run.
    ///
    /// ```
    /// let store = flow_core::store::MemoryStore::new();
    /// # let _ = store;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep only the newest `n` checkpoints of each run (at least 1).
    ///
    /// ```
    /// let store = flow_core::store::MemoryStore::new().keep_checkpoints(5);
    /// # let _ = store;
    /// ```
    pub fn keep_checkpoints(mut self, n: usize) -> Self {
        self.keep_checkpoints = Some(n.max(1));
        self
    }

    /// Keep every checkpoint of every run.
    ///
    /// ```
    /// let store = flow_core::store::MemoryStore::new().keep_all_checkpoints();
    /// # let _ = store;
    /// ```
    pub fn keep_all_checkpoints(mut self) -> Self {
        self.keep_checkpoints = None;
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Run>> {
        // A panic while holding this lock cannot leave a half-applied change (every change is
        // built before it is written), so a poisoned lock is still consistent.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn upsert_steps(steps: &mut Vec<StepRecord>, updates: Vec<StepRecord>) {
    for s in updates {
        match steps.iter_mut().find(|e| e.step_key == s.step_key) {
            Some(existing) => *existing = s,
            None => steps.push(s),
        }
    }
}

fn record_of(runs: &HashMap<Uuid, Run>, run_id: Uuid) -> Result<&RunRecord, StoreError> {
    runs.get(&run_id).and_then(|r| r.record.as_ref()).ok_or(StoreError::NotFound(run_id))
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn create_run(&self, run: NewRun) -> Result<u64, StoreError> {
        let mut runs = self.lock();
        if runs.contains_key(&run.run_id) {
            return Err(StoreError::Duplicate(run.run_id));
        }
        let now = now_ms();
        let record = RunRecord {
            run_id: run.run_id,
            flow: run.flow,
            parent_run_id: run.parent_run_id,
            status: RunStatus::Running,
            snapshot: run.snapshot.clone(),
            version: 1,
            output: None,
            error: None,
            pause: None,
            lease_owner: Some(run.owner),
            lease_expires_at_ms: Some(now + run.lease.as_millis() as i64),
            epoch: 1,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let info = CheckpointInfo { seq: 1, step_key: None, status: RunStatus::Running, created_at_ms: now };
        runs.insert(
            run.run_id,
            Run {
                record: Some(record),
                steps: run.steps,
                checkpoints: vec![(info, run.snapshot)],
                journal: HashMap::new(),
            },
        );
        Ok(1)
    }

    async fn claim(&self, run_id: Uuid, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()).ok_or(StoreError::NotFound(run_id))?;
        let now = now_ms();
        // Any live lease refuses, even one held under the same worker name.
        if let (Some(holder), Some(expires)) = (&run.lease_owner, run.lease_expires_at_ms)
            && expires > now
        {
            return Err(StoreError::Locked { run_id, owner: holder.clone(), expires_at_ms: expires });
        }
        run.epoch += 1;
        run.lease_owner = Some(owner.to_string());
        run.lease_expires_at_ms = Some(now + lease.as_millis() as i64);
        Ok(Claim { epoch: run.epoch, run: run.clone() })
    }

    async fn renew(&self, run_id: Uuid, epoch: u64, lease: Duration) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()).ok_or(StoreError::NotFound(run_id))?;
        if run.epoch != epoch {
            return Err(StoreError::Fenced { run_id, epoch, current: run.epoch });
        }
        if run.lease_owner.is_none() {
            return Err(StoreError::Released { run_id, epoch });
        }
        run.lease_expires_at_ms = Some(now_ms() + lease.as_millis() as i64);
        Ok(())
    }

    async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()).ok_or(StoreError::NotFound(run_id))?;
        if run.epoch != epoch {
            return Err(StoreError::Fenced { run_id, epoch, current: run.epoch });
        }
        run.lease_owner = None;
        run.lease_expires_at_ms = None;
        Ok(())
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let keep = self.keep_checkpoints;
        let entry = runs.get_mut(&commit.run_id).ok_or(StoreError::NotFound(commit.run_id))?;
        let run = entry.record.as_mut().ok_or(StoreError::NotFound(commit.run_id))?;
        if run.epoch != commit.epoch {
            return Err(StoreError::Fenced { run_id: commit.run_id, epoch: commit.epoch, current: run.epoch });
        }
        let now = now_ms();
        run.status = commit.status;
        run.snapshot = commit.snapshot.clone();
        run.version += 1;
        run.output = commit.output;
        run.error = commit.error;
        run.pause = commit.pause;
        run.updated_at_ms = now;
        if commit.status.is_at_rest() {
            run.lease_owner = None;
            run.lease_expires_at_ms = None;
        }
        let seq = entry.checkpoints.last().map_or(1, |(c, _)| c.seq + 1);
        entry.checkpoints.push((
            CheckpointInfo { seq, step_key: commit.step_key, status: commit.status, created_at_ms: now },
            commit.snapshot,
        ));
        if let Some(keep) = keep
            && entry.checkpoints.len() > keep
        {
            let excess = entry.checkpoints.len() - keep;
            entry.checkpoints.drain(..excess);
        }
        upsert_steps(&mut entry.steps, commit.steps);
        Ok(())
    }

    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
        record_of(&self.lock(), run_id).cloned()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        let runs = self.lock();
        let mut out: Vec<RunSummary> = runs
            .values()
            .filter_map(|r| r.record.as_ref())
            .filter(|r| filter.status.is_none_or(|s| s == r.status))
            .filter(|r| filter.flow.as_deref().is_none_or(|f| f == r.flow))
            .map(|r| RunSummary {
                run_id: r.run_id,
                flow: r.flow.clone(),
                status: r.status,
                pause: r.pause.clone(),
                created_at_ms: r.created_at_ms,
                updated_at_ms: r.updated_at_ms,
            })
            .collect();
        out.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.run_id.cmp(&a.run_id)));
        if let Some(limit) = filter.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    async fn steps(&self, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
        let runs = self.lock();
        record_of(&runs, run_id)?;
        Ok(runs.get(&run_id).map(|r| r.steps.clone()).unwrap_or_default())
    }

    async fn checkpoints(&self, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
        let runs = self.lock();
        record_of(&runs, run_id)?;
        Ok(runs.get(&run_id).map(|r| r.checkpoints.iter().map(|(c, _)| c.clone()).collect()).unwrap_or_default())
    }

    async fn load_checkpoint(&self, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
        let runs = self.lock();
        record_of(&runs, run_id)?;
        runs.get(&run_id)
            .and_then(|r| r.checkpoints.iter().find(|(c, _)| c.seq == seq))
            .map(|(_, s)| s.clone())
            .ok_or(StoreError::CheckpointNotFound { run_id, seq })
    }

    async fn journal_get(&self, run_id: Uuid, step_key: &str, seq: u32) -> Result<Option<JournalEntry>, StoreError> {
        let runs = self.lock();
        Ok(runs.get(&run_id).and_then(|r| r.journal.get(&(step_key.to_string(), seq)).cloned()))
    }

    async fn journal_put(&self, entry: JournalEntry) -> Result<JournalEntry, StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&entry.run_id).ok_or(StoreError::NotFound(entry.run_id))?;
        let key = (entry.step_key.clone(), entry.seq);
        Ok(run.journal.entry(key).or_insert(entry).clone())
    }

    async fn delete_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = record_of(&runs, run_id)?;
        if let (Some(holder), Some(expires)) = (&run.lease_owner, run.lease_expires_at_ms)
            && expires > now_ms()
        {
            return Err(StoreError::Locked { run_id, owner: holder.clone(), expires_at_ms: expires });
        }
        runs.remove(&run_id);
        Ok(())
    }
}
