//! A store in process memory: same semantics as the durable stores, nothing survives the
//! process. For tests and for runs that need fork and pause within one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use uuid::Uuid;

use serde_json::Value;
use tokio::sync::Notify;

use super::{
    Answer, CheckpointInfo, Claim, ClaimRequest, Commit, JournalEntry, NewRun, QueueLimit, RunFilter, RunGraph,
    RunRecord, RunStatus, RunSummary, Snapshot, Start, StateEdit, StepRecord, Store, StoreError, StreamRecord, now_ms,
};
use crate::graph::GraphDoc;
use crate::memory::{Forget, MemoryRecord, MemorySearch, Ranked, Recalled, RecalledParts, TopK};

#[derive(Default)]
struct Run {
    record: Option<RunRecord>,
    steps: Vec<StepRecord>,
    checkpoints: Vec<(CheckpointInfo, Snapshot)>,
    journal: HashMap<(String, u32), JournalEntry>,
    /// The run's stream log, by `seq`.
    stream: std::collections::BTreeMap<u64, StreamRecord>,
    /// Shared with every run of the same runner: one copy per flow version.
    graph: Option<Arc<RunGraph>>,
    /// The W3C trace context of the run's first exported execution.
    trace_context: Option<String>,
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
    /// Memory records by id ([`crate::memory`]): not tied to runs.
    memory: Arc<Mutex<HashMap<String, MemoryRecord>>>,
    keep_checkpoints: Option<usize>,
    /// Wakes the workers waiting in `wait_for_work` when a run becomes runnable.
    work: Arc<Notify>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            runs: Arc::default(),
            memory: Arc::default(),
            keep_checkpoints: Some(super::DEFAULT_KEEP_CHECKPOINTS),
            work: Arc::new(Notify::new()),
        }
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

/// Whether a run can be claimed by a serving worker now.
fn runnable(r: &RunRecord, now: i64) -> bool {
    let lease_free = r.lease_expires_at_ms.is_none_or(|t| t <= now) || r.lease_owner.is_none();
    match r.status {
        RunStatus::Queued => lease_free && r.available_at_ms.is_none_or(|t| t <= now),
        RunStatus::Running => lease_free,
        _ => false,
    }
}

/// Whether a run is held under a live lease (it counts against its queue's limits).
fn held(r: &RunRecord, now: i64) -> bool {
    r.lease_owner.is_some() && r.lease_expires_at_ms.is_some_and(|t| t > now)
}

fn take_lease(run: &mut RunRecord, owner: &str, lease: Duration, now: i64) -> Claim {
    run.epoch += 1;
    run.lease_owner = Some(owner.to_string());
    run.lease_expires_at_ms = Some(now + lease.as_millis() as i64);
    Claim { epoch: run.epoch, run: run.clone() }
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
        let (status, lease_owner, lease_expires_at_ms, epoch, available_at_ms) = match run.start {
            Start::Leased { owner, lease } => {
                (RunStatus::Running, Some(owner), Some(now + lease.as_millis() as i64), 1, None)
            }
            Start::Queued { available_at_ms } => (RunStatus::Queued, None, None, 0, available_at_ms),
        };
        let record = RunRecord {
            run_id: run.run_id,
            flow: run.flow,
            parent_run_id: run.parent_run_id,
            status,
            snapshot: run.snapshot.clone(),
            version: 1,
            output: None,
            error: None,
            pause: None,
            lease_owner,
            lease_expires_at_ms,
            epoch,
            placement: run.placement,
            available_at_ms,
            answer: None,
            cancel_requested: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let info = CheckpointInfo { seq: 1, step_key: None, status, created_at_ms: now, edit: None };
        runs.insert(
            run.run_id,
            Run {
                record: Some(record),
                steps: run.steps,
                checkpoints: vec![(info, run.snapshot)],
                journal: HashMap::new(),
                stream: Default::default(),
                graph: run.graph,
                trace_context: None,
            },
        );
        drop(runs);
        if status == RunStatus::Queued {
            self.work.notify_waiters();
        }
        Ok(epoch)
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
        Ok(take_lease(run, owner, lease, now))
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
        match &run.cancel_requested {
            Some(reason) if !run.status.is_terminal() => {
                Err(StoreError::CancelRequested { run_id, reason: reason.clone() })
            }
            _ => Ok(()),
        }
    }

    async fn release(&self, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()).ok_or(StoreError::NotFound(run_id))?;
        if run.epoch != epoch {
            return Err(StoreError::Fenced { run_id, epoch, current: run.epoch });
        }
        run.lease_owner = None;
        run.lease_expires_at_ms = None;
        let runnable = runnable(run, now_ms());
        drop(runs);
        if runnable {
            self.work.notify_waiters();
        }
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
        let cancelling = run.cancel_requested.is_some() && super::requeued_for_cancel(commit.status);
        let status = if cancelling { RunStatus::Queued } else { commit.status };
        run.status = status;
        run.snapshot = commit.snapshot.clone();
        run.version += 1;
        run.output = commit.output;
        run.error = commit.error;
        run.pause = commit.pause;
        run.answer = None;
        run.available_at_ms =
            if cancelling { Some(now) } else { commit.available_at_ms.filter(|_| commit.status == RunStatus::Queued) };
        run.updated_at_ms = now;
        if commit.status.is_at_rest() {
            run.lease_owner = None;
            run.lease_expires_at_ms = None;
        }
        let wake = status == RunStatus::Queued;
        let seq = entry.checkpoints.last().map_or(1, |(c, _)| c.seq + 1);
        entry.checkpoints.push((
            CheckpointInfo { seq, step_key: commit.step_key, status: commit.status, created_at_ms: now, edit: None },
            commit.snapshot,
        ));
        if let Some(keep) = keep
            && entry.checkpoints.len() > keep
        {
            let excess = entry.checkpoints.len() - keep;
            entry.checkpoints.drain(..excess);
        }
        upsert_steps(&mut entry.steps, commit.steps);
        drop(runs);
        if wake {
            self.work.notify_waiters();
        }
        Ok(())
    }

    async fn load_run(&self, run_id: Uuid) -> Result<RunRecord, StoreError> {
        record_of(&self.lock(), run_id).cloned()
    }

    async fn edit_state(&self, edit: StateEdit) -> Result<u64, StoreError> {
        let mut runs = self.lock();
        let keep = self.keep_checkpoints;
        let entry = runs.get_mut(&edit.run_id).ok_or(StoreError::NotFound(edit.run_id))?;
        let run = entry.record.as_mut().ok_or(StoreError::NotFound(edit.run_id))?;
        let now = now_ms();
        super::check_editable(run, &edit, now)?;
        let snapshot = Snapshot { state: edit.state, progress: run.snapshot.progress.clone() };
        run.snapshot = snapshot.clone();
        run.version += 1;
        run.updated_at_ms = now;
        let status = run.status;
        let seq = entry.checkpoints.last().map_or(1, |(c, _)| c.seq + 1);
        let info = CheckpointInfo { seq, step_key: None, status, created_at_ms: now, edit: Some(edit.note) };
        entry.checkpoints.push((info, snapshot));
        if let Some(keep) = keep
            && entry.checkpoints.len() > keep
        {
            let excess = entry.checkpoints.len() - keep;
            entry.checkpoints.drain(..excess);
        }
        Ok(seq)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        let runs = self.lock();
        let mut out: Vec<RunSummary> = runs
            .values()
            .filter_map(|r| r.record.as_ref())
            .filter(|r| filter.status.is_none_or(|s| s == r.status))
            .filter(|r| filter.flow.as_deref().is_none_or(|f| f == r.flow))
            .filter(|r| filter.created_from_ms.is_none_or(|t| r.created_at_ms >= t))
            .filter(|r| filter.created_before_ms.is_none_or(|t| r.created_at_ms < t))
            .filter(|r| filter.after.is_none_or(|c| c.precedes(r.created_at_ms, r.run_id)))
            .map(RunSummary::from)
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

    async fn claim_next(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let mut runs = self.lock();
        let now = now_ms();
        let limits: HashMap<&str, &QueueLimit> = request.queues.iter().map(|q| (q.queue.as_str(), q)).collect();
        // What every worker holds now, per queue and per (queue, key): the limits count them all.
        let mut in_queue: HashMap<String, u32> = HashMap::new();
        let mut per_key: HashMap<(String, String), u32> = HashMap::new();
        for r in runs.values().filter_map(|r| r.record.as_ref()).filter(|r| held(r, now)) {
            *in_queue.entry(r.placement.queue.clone()).or_default() += 1;
            if let Some(k) = &r.placement.key {
                *per_key.entry((r.placement.queue.clone(), k.clone())).or_default() += 1;
            }
        }
        let mut due: Vec<(i64, i64, Uuid)> = runs
            .values()
            .filter_map(|r| r.record.as_ref())
            .filter(|r| limits.contains_key(r.placement.queue.as_str()))
            .filter(|r| request.flows.contains(&r.flow))
            .filter(|r| runnable(r, now))
            .map(|r| (r.available_at_ms.unwrap_or(r.updated_at_ms), r.created_at_ms, r.run_id))
            .collect();
        due.sort_unstable();
        let mut claims = Vec::new();
        for (_, _, run_id) in due {
            if claims.len() >= request.max {
                break;
            }
            let Some(run) = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()) else { continue };
            let Some(limit) = limits.get(run.placement.queue.as_str()) else { continue };
            let queue_count = in_queue.get(&run.placement.queue).copied().unwrap_or(0);
            if limit.concurrency.is_some_and(|n| queue_count >= n) {
                continue;
            }
            let key = run.placement.key.clone().map(|k| (run.placement.queue.clone(), k));
            if let (Some(n), Some(key)) = (limit.per_key, &key)
                && per_key.get(key).copied().unwrap_or(0) >= n
            {
                continue;
            }
            *in_queue.entry(run.placement.queue.clone()).or_default() += 1;
            if let Some(key) = key {
                *per_key.entry(key).or_default() += 1;
            }
            claims.push(take_lease(run, &request.owner, request.lease, now));
        }
        Ok(claims)
    }

    async fn answer(&self, run_id: Uuid, step_key: &str, value: Value) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()).ok_or(StoreError::NotFound(run_id))?;
        let waiting_at = run.pause.as_ref().and_then(crate::input::PauseRequest::stored_step_key);
        if run.status != RunStatus::Paused || run.answer.is_some() || waiting_at != Some(step_key) {
            return Err(StoreError::NotWaiting {
                run_id,
                status: run.status,
                waiting_at: waiting_at.filter(|k| *k != step_key).map(str::to_string),
            });
        }
        let now = now_ms();
        run.answer = Some(Answer { step_key: step_key.to_string(), value });
        run.status = RunStatus::Queued;
        run.available_at_ms = Some(now);
        run.updated_at_ms = now;
        drop(runs);
        self.work.notify_waiters();
        Ok(())
    }

    async fn requeue(&self, run_id: Uuid) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()).ok_or(StoreError::NotFound(run_id))?;
        if run.status != RunStatus::Failed {
            return Err(StoreError::NotWaiting { run_id, status: run.status, waiting_at: None });
        }
        let now = now_ms();
        run.status = RunStatus::Queued;
        run.available_at_ms = Some(now);
        run.updated_at_ms = now;
        drop(runs);
        self.work.notify_waiters();
        Ok(())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
    }

    async fn request_cancel(&self, run_id: Uuid, reason: &str) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).and_then(|r| r.record.as_mut()).ok_or(StoreError::NotFound(run_id))?;
        if run.status.is_terminal() {
            return Err(StoreError::Ended { run_id, status: run.status });
        }
        let now = now_ms();
        run.cancel_requested.get_or_insert_with(|| reason.to_string());
        run.updated_at_ms = now;
        let wake = run.status != RunStatus::Running;
        if wake {
            run.status = RunStatus::Queued;
            run.available_at_ms = Some(now);
        }
        drop(runs);
        if wake {
            self.work.notify_waiters();
        }
        Ok(())
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

    async fn stream_append(
        &self,
        run_id: Uuid,
        items: Vec<StreamRecord>,
        keep_last: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).filter(|r| r.record.is_some()).ok_or(StoreError::NotFound(run_id))?;
        for item in items {
            run.stream.entry(item.seq).or_insert(item);
        }
        if let (Some(keep), Some(&last)) = (keep_last, run.stream.keys().next_back()) {
            let first_kept = (last + 1).saturating_sub(keep);
            run.stream = run.stream.split_off(&first_kept);
        }
        Ok(())
    }

    async fn stream_read(&self, run_id: Uuid, from_seq: u64, limit: usize) -> Result<Vec<StreamRecord>, StoreError> {
        let runs = self.lock();
        let Some(run) = runs.get(&run_id) else { return Ok(Vec::new()) };
        Ok(run.stream.range(from_seq..).take(limit).map(|(_, r)| r.clone()).collect())
    }

    async fn stream_last_seq(&self, run_id: Uuid) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().get(&run_id).and_then(|r| r.stream.keys().next_back().copied()))
    }

    async fn set_trace_context(&self, run_id: Uuid, traceparent: &str) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let run = runs.get_mut(&run_id).filter(|r| r.record.is_some()).ok_or(StoreError::NotFound(run_id))?;
        run.trace_context.get_or_insert_with(|| traceparent.to_owned());
        Ok(())
    }

    async fn trace_context(&self, run_id: Uuid) -> Result<Option<String>, StoreError> {
        let runs = self.lock();
        record_of(&runs, run_id)?;
        Ok(runs.get(&run_id).and_then(|r| r.trace_context.clone()))
    }

    async fn journal(&self, run_id: Uuid) -> Result<Vec<JournalEntry>, StoreError> {
        let runs = self.lock();
        record_of(&runs, run_id)?;
        let mut entries: Vec<JournalEntry> =
            runs.get(&run_id).map(|r| r.journal.values().cloned().collect()).unwrap_or_default();
        entries.sort_by(|a, b| (&a.step_key, a.seq).cmp(&(&b.step_key, b.seq)));
        Ok(entries)
    }

    async fn run_graph(&self, run_id: Uuid) -> Result<Option<GraphDoc>, StoreError> {
        let runs = self.lock();
        record_of(&runs, run_id)?;
        Ok(runs.get(&run_id).and_then(|r| r.graph.as_ref()).map(|g| g.doc.clone()))
    }

    async fn memory_put(&self, record: MemoryRecord) -> Result<bool, StoreError> {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let now = super::now_ms();
        memory.retain(|_, r| r.expires_at_ms.is_none_or(|at| at > now));
        if memory.contains_key(&record.id) {
            return Ok(false);
        }
        memory.insert(record.id.clone(), record);
        Ok(true)
    }

    async fn memory_search(&self, search: &MemorySearch) -> Result<Vec<Recalled>, StoreError> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let mut top = TopK::new(search.k);
        let terms = crate::memory::query_terms(&search.query);
        for r in memory.values() {
            if !crate::memory::scope_matches(&r.scope, &search.scope, search.subscopes)
                || r.expires_at_ms.is_some_and(|at| at <= search.now_ms)
                || !crate::memory::metadata_matches(&r.metadata, &search.filter)
            {
                continue;
            }
            let similarity = crate::memory::cosine(&search.embedding, &r.embedding).clamp(0.0, 1.0);
            let lexical = crate::memory::lexical(&terms, &r.content);
            let score = crate::memory::score(search, similarity, lexical, r.created_at_ms, r.importance);
            top.push(Ranked { score, similarity, created_at_ms: r.created_at_ms, id: r.id.clone(), item: () });
        }
        Ok(top
            .into_sorted()
            .into_iter()
            .filter_map(|ranked| {
                let r = memory.get(&ranked.id)?;
                let parts = RecalledParts {
                    scope: r.scope.clone(),
                    content: r.content.clone(),
                    metadata: r.metadata.clone(),
                    importance: r.importance,
                    expires_at_ms: r.expires_at_ms,
                };
                Some(crate::memory::recalled(ranked, parts))
            })
            .collect())
    }

    async fn memory_forget(&self, forget: &Forget) -> Result<u64, StoreError> {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let before = memory.len();
        memory.retain(|id, r| !forget.covers(id, &r.scope, &r.metadata));
        Ok((before - memory.len()) as u64)
    }

    async fn memory_purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let before = memory.len();
        memory.retain(|_, r| r.expires_at_ms.is_none_or(|at| at > now_ms));
        Ok((before - memory.len()) as u64)
    }
}
