//! Group commit: the step commits of many runs in one process, gathered into one statement.
//!
//! **Why.** A durable step is one statement (`COMMIT`): one round trip, one transaction, one WAL
//! flush. With a hundred runs in flight per worker the server, not the worker, sets the pace,
//! and much of its work per statement does not depend on how many rows the statement writes
//! (receiving and binding it, starting the executor, committing, flushing the WAL, waking the
//! backend). `COMMIT_BATCH` writes several runs' commits at that cost once.
//!
//! **How (leader and followers).** A commit joins a queue. When fewer than `in_flight` writers
//! are at work, it starts one at once, which takes the queue: a commit that finds nothing in
//! flight goes out alone, at once, as the single-run statement, with no window to wait for
//! company, so one run's latency stays what it was. Commits that arrive while every writer is
//! busy wait in the queue and go out together in the next batch (at most `max_batch`, each run
//! at most once, so a run's commits keep their order). A writer keeps taking batches until the
//! queue is empty. Writers are tasks of their own, so a caller that stops waiting (its future
//! dropped) strands no other run's commit.
//!
//! **Each run still fenced.** Every run's update in the batch carries its own epoch; a run taken
//! over meanwhile matches no row and writes nothing, the others commit, and that run alone gets
//! [`StoreError::Fenced`] (or [`StoreError::NotFound`]), as from a commit of its own.
//!
//! **Errors.** A batch the server refuses (any database error, or a connection the pool could
//! not give) wrote nothing, so its commits are written again one by one, each on its own
//! statement, and each gets its own outcome. A batch whose connection was lost on the way may or
//! may not have been applied; each of its runs gets the transient error a single commit gets
//! then. Each caller hears `Ok` only after the transaction holding its commit committed.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::error::lost_connection;
use super::queries::{self, StepColumns};
use super::{PgStore, settle};
use crate::store::{Commit, StoreError};

/// How many commits one statement carries at most, by default.
pub(super) const DEFAULT_MAX_BATCH: usize = 64;

/// How many batches may be written at once, by default: each holds a pooled connection while
/// it is written, and the store's other calls need some too.
pub(super) const DEFAULT_IN_FLIGHT: usize = 4;

/// One store's queue of commits and its writers, shared by its clones.
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    max_batch: usize,
    in_flight: usize,
}

struct Queue {
    waiting: VecDeque<Pending>,
    /// Writer tasks at work.
    writers: usize,
}

/// A commit waiting for its batch, and where its outcome goes.
struct Pending {
    commit: Commit,
    steps: StepColumns,
    /// The retention of the store the commit came through: clones share the queue, not
    /// necessarily their retention.
    keep: Option<usize>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl Pending {
    fn answer(self, result: Result<(), StoreError>) {
        // The caller may have stopped waiting; the commit's outcome stands either way.
        let _ = self.done.send(result);
    }
}

impl GroupCommit {
    /// At most `max_batch` commits per statement, at most `in_flight` statements at once (each
    /// at least 1).
    pub(super) fn new(max_batch: usize, in_flight: usize) -> Self {
        GroupCommit {
            queue: Mutex::new(Queue { waiting: VecDeque::new(), writers: 0 }),
            max_batch: max_batch.max(1),
            in_flight: in_flight.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The lock only guards the queue (never held across an await), so a poisoned one is whole.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch: the oldest commits, at most `max_batch`, each run at most once (a run's
    /// later commit waits for the next batch, behind its earlier one). `None` when the queue is
    /// empty, and then the writer asking is no longer counted: deciding both under one lock
    /// means a commit queued later always finds a writer or starts one.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.writers = queue.writers.saturating_sub(1);
            return None;
        }
        let mut batch = Vec::with_capacity(queue.waiting.len().min(self.max_batch));
        let mut runs = HashSet::with_capacity(batch.capacity());
        let mut i = 0;
        while i < queue.waiting.len() && batch.len() < self.max_batch {
            if runs.insert(queue.waiting[i].commit.run_id) {
                batch.extend(queue.waiting.remove(i));
            } else {
                i += 1;
            }
        }
        Some(batch)
    }
}

/// Counts a writer task until it ends; one that ends without emptying the queue (a panic, the
/// runtime shutting down) starts a new writer for it if it can.
struct Writer {
    store: PgStore,
    group: Arc<GroupCommit>,
    done: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waiting = {
            let mut queue = self.group.lock();
            queue.writers = queue.writers.saturating_sub(1);
            !queue.waiting.is_empty()
        };
        if !waiting {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            // The successor takes a slot only once it runs: one spawned onto a runtime that is
            // shutting down never runs and so holds none.
            Ok(handle) => {
                handle.spawn(self.store.clone().resume_batches(Arc::clone(&self.group)));
            }
            Err(_) => {
                // No runtime to write on: the waiting commits are answered, not stranded.
                let waiting: Vec<Pending> = self.group.lock().waiting.drain(..).collect();
                for pending in waiting {
                    let run_id = pending.commit.run_id;
                    pending.answer(Err(stopped(run_id)));
                }
            }
        }
    }
}

/// The error of a commit whose writer stopped before it answered.
fn stopped(run_id: Uuid) -> StoreError {
    StoreError::Backend(format!(
        "run {run_id}: the task writing this commit stopped before it answered (the runtime is shutting \
         down); the commit may or may not have been applied: retry (resume the run) once the process runs \
         again, the lease epoch makes it safe"
    ))
}

impl PgStore {
    /// Commits through the group: returns once the transaction holding this commit committed,
    /// or with why not.
    pub(super) async fn commit_in_group(
        &self,
        group: &Arc<GroupCommit>,
        commit: Commit,
        steps: StepColumns,
    ) -> Result<(), StoreError> {
        let run_id = commit.run_id;
        let (done, outcome) = oneshot::channel();
        let start = {
            let mut queue = group.lock();
            queue.waiting.push_back(Pending { commit, steps, keep: self.keep_checkpoints, done });
            let start = queue.writers < group.in_flight;
            if start {
                queue.writers += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().write_batches(Arc::clone(group)));
        }
        outcome.await.unwrap_or_else(|_| Err(stopped(run_id)))
    }

    /// A writer started in place of one that stopped: works only if the queue still waits and a
    /// slot is free (else the writers at work empty it).
    async fn resume_batches(self, group: Arc<GroupCommit>) {
        {
            let mut queue = group.lock();
            if queue.waiting.is_empty() || queue.writers >= group.in_flight {
                return;
            }
            queue.writers += 1;
        }
        self.write_batches(group).await;
    }

    /// A writer: takes batches until the queue is empty.
    async fn write_batches(self, group: Arc<GroupCommit>) {
        let mut writer = Writer { store: self, group, done: false };
        while let Some(batch) = writer.group.take() {
            writer.store.write_batch(batch).await;
        }
        writer.done = true;
    }

    async fn write_batch(&self, mut batch: Vec<Pending>) {
        if batch.len() == 1 {
            if let Some(pending) = batch.pop() {
                let result = self.commit_alone(&pending.commit, &pending.steps, pending.keep).await;
                pending.answer(result);
            }
            return;
        }
        let client = match self.client(None).await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, commits = batch.len(), "no connection for a batch; committing one by one");
                return self.one_by_one(batch).await;
            }
        };
        let commits: Vec<_> = batch.iter().map(|p| (&p.commit, &p.steps, p.keep)).collect();
        let result = queries::commit_batch(&client, &commits).await;
        drop(commits);
        let rows = match result {
            Ok(rows) => rows,
            Err(e) if lost_connection(&e) => {
                // It may or may not have committed: writing it again could apply a step twice.
                drop(deadpool_postgres::Object::take(client));
                for pending in batch {
                    let run_id = pending.commit.run_id;
                    pending.answer(Err(self.pg.map(&e, Some(run_id))));
                }
                return;
            }
            Err(e) => {
                // Refused: nothing of it was written. The connection goes back only if it is
                // sound, as after any failed call.
                let error = self.pg.map(&e, None);
                tracing::debug!(error = %error, commits = batch.len(), "a batch of commits was refused; committing one by one");
                settle(client, &Err::<(), _>(error));
                return self.one_by_one(batch).await;
            }
        };
        let mut written = HashSet::with_capacity(rows.len());
        let mut unread = None;
        for row in &rows {
            match row.try_get::<_, Uuid>(0) {
                Ok(id) => {
                    written.insert(id);
                }
                Err(e) => unread = Some(e.to_string()),
            }
        }
        if let Some(why) = unread {
            // Committed, but which runs it wrote cannot be told; none is told it committed.
            for pending in batch {
                let run_id = pending.commit.run_id;
                pending.answer(Err(StoreError::Backend(format!(
                    "run {run_id}: a batch of commits was written but PostgreSQL at {}'s answer could not be \
                     read ({why}); this commit may or may not have been applied: resume the run",
                    self.pg.shown
                ))));
            }
            return;
        }
        let mut refused = Vec::new();
        for pending in batch {
            if written.contains(&pending.commit.run_id) {
                pending.answer(Ok(()));
            } else {
                refused.push(pending);
            }
        }
        let mut sound = true;
        for pending in refused {
            let (run_id, epoch) = (pending.commit.run_id, pending.commit.epoch);
            let why = queries::fenced_or_missing(&client, &self.pg, run_id, epoch).await;
            sound &= !matches!(why, StoreError::Backend(_) | StoreError::Busy(_));
            pending.answer(Err(why));
        }
        if !sound {
            drop(deadpool_postgres::Object::take(client));
        }
    }

    /// Each commit on a statement of its own, all at once.
    async fn one_by_one(&self, batch: Vec<Pending>) {
        futures::future::join_all(batch.into_iter().map(|pending| async move {
            let result = self.commit_alone(&pending.commit, &pending.steps, pending.keep).await;
            pending.answer(result);
        }))
        .await;
    }

    /// One commit, one statement (`COMMIT`), keeping `keep` newest checkpoints (`None`: all).
    pub(super) async fn commit_alone(
        &self,
        commit: &Commit,
        steps: &StepColumns,
        keep: Option<usize>,
    ) -> Result<(), StoreError> {
        let run_id = commit.run_id;
        let client = self.client(Some(run_id)).await?;
        // One statement, atomic on its own: no transaction to open or commit.
        let result = match queries::commit(&client, &self.pg, commit, steps, keep).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(queries::fenced_or_missing(&client, &self.pg, run_id, commit.epoch).await),
            Err(e) => Err(e),
        };
        settle(client, &result);
        result
    }
}
