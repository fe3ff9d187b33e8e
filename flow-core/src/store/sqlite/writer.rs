//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time and a durable commit costs an fsync, so every write of a
//! store goes through one thread that owns the writing connection. It takes every request
//! waiting in its queue, applies them in one `BEGIN IMMEDIATE` transaction (each inside its own
//! savepoint, so a request that fails, for example because it was fenced, undoes only itself),
//! commits once, then answers each request. A thousand runs checkpointing at once share a
//! handful of fsyncs instead of paying a thousand.
//!
//! A request is answered only after the transaction holding it committed: a caller that hears
//! `Ok` knows its write is durable (as durable as the `synchronous` setting makes it).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::{is_busy, map, writer_stopped};
use super::queries::Db;
use crate::store::StoreError;

/// The most requests one transaction takes: bounds the latency of the first request of a batch
/// and the size of the WAL a single commit writes.
const MAX_BATCH: usize = 1024;

/// How often the writer retries a lock another process holds, after SQLite's own busy timeout
/// gave up, and the first pause between tries (doubled each time).
const BUSY_RETRIES: u32 = 4;
const BUSY_BACKOFF: Duration = Duration::from_millis(25);

/// A write waiting for the writer thread.
trait Job: Send {
    /// Applies the write on the connection, inside the savepoint the writer opened for it,
    /// keeping its result for [`Job::answer`]. May run again when SQLite rolled back a whole
    /// transaction on its own (disk full, I/O error) and the writer re-applies the survivors.
    fn apply(&mut self, db: Db<'_>) -> Result<(), StoreError>;

    /// Sends the kept result, or `failure`, to the caller.
    fn answer(self: Box<Self>, failure: Option<StoreError>);
}

struct Request<T, F> {
    work: F,
    result: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Request<T, F>
where
    T: Send,
    F: FnMut(Db<'_>) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, db: Db<'_>) -> Result<(), StoreError> {
        self.result = Some((self.work)(db)?);
        Ok(())
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        let outcome = match (failure, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(value)) => Ok(value),
            // Only reachable if the writer answered a job it never applied successfully.
            (None, None) => Err(StoreError::Backend("the SQLite writer answered a write it did not apply".into())),
        };
        // The caller may have stopped waiting (its future was dropped); the write stands anyway.
        let _ = self.reply.send(outcome);
    }
}

/// The sending side: what [`super::SqliteStore`] holds.
pub(super) struct WriterHandle {
    queue: mpsc::Sender<Box<dyn Job>>,
    path: PathBuf,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`.
    pub(super) fn start(conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let (queue, requests) = mpsc::channel::<Box<dyn Job>>();
        let writer = Writer { conn, path: path.clone(), requests };
        std::thread::Builder::new().name("flows-sqlite-writer".into()).spawn(move || writer.run()).map_err(|e| {
            StoreError::Backend(format!("{}: cannot start the SQLite writer thread: {e}", path.display()))
        })?;
        Ok(WriterHandle { queue, path })
    }

    /// Queues `work` for the next group commit and waits until it is committed (or failed).
    ///
    /// Dropping the returned future does not cancel the write: once queued it is applied, as a
    /// write whose reply was lost on the network would be.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Box::new(Request { work, result: None, reply })).map_err(|_| writer_stopped(&self.path))?;
        answer.await.map_err(|_| writer_stopped(&self.path))?
    }
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    requests: mpsc::Receiver<Box<dyn Job>>,
}

impl Writer {
    /// Runs until every [`WriterHandle`] is gone; the connection then closes, which
    /// checkpoints the WAL into the database file.
    fn run(self) {
        while let Ok(first) = self.requests.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let size = batch.len();
            self.commit_batch(batch);
            tracing::trace!(requests = size, elapsed_us = started.elapsed().as_micros() as u64, "group commit");
        }
        tracing::debug!(path = %self.path.display(), "SQLite writer stopped: store dropped");
    }

    fn db(&self) -> Db<'_> {
        Db { conn: &self.conn, path: &self.path }
    }

    fn commit_batch(&self, mut jobs: Vec<Box<dyn Job>>) {
        // Each pass either commits or answers at least one job, so this ends.
        'pass: while !jobs.is_empty() {
            // A transaction left open by a failed ROLLBACK would make BEGIN fail forever.
            self.rollback();
            if let Err(e) = self.with_busy_retry("BEGIN IMMEDIATE") {
                for job in jobs {
                    job.answer(Some(map(&e, &self.path)));
                }
                return;
            }
            let mut applied: Vec<Box<dyn Job>> = Vec::with_capacity(jobs.len());
            let mut pending = jobs.into_iter();
            while let Some(mut job) = pending.next() {
                match self.apply_one(job.as_mut()) {
                    Ok(()) => applied.push(job),
                    Err(e) if self.conn.is_autocommit() => {
                        // SQLite rolled back the whole transaction itself (it does for a full
                        // disk or an I/O error): the jobs applied so far went with it. Answer
                        // the one that failed and apply the rest again in a new transaction.
                        job.answer(Some(e));
                        jobs = applied.into_iter().chain(pending).collect();
                        continue 'pass;
                    }
                    Err(e) => job.answer(Some(e)),
                }
            }
            match self.with_busy_retry("COMMIT") {
                Ok(()) => {
                    for job in applied {
                        job.answer(None);
                    }
                }
                Err(e) => {
                    self.rollback();
                    for job in applied {
                        job.answer(Some(map(&e, &self.path)));
                    }
                }
            }
            return;
        }
    }

    /// Applies one job in a savepoint: on failure the savepoint is rolled back, so the job
    /// leaves nothing behind in the shared transaction.
    fn apply_one(&self, job: &mut dyn Job) -> Result<(), StoreError> {
        self.exec("SAVEPOINT flows_request").map_err(|e| map(&e, &self.path))?;
        match job.apply(self.db()) {
            Ok(()) => self.exec("RELEASE flows_request").map_err(|e| map(&e, &self.path)),
            Err(e) => {
                if !self.conn.is_autocommit()
                    && let Err(undo) =
                        self.exec("ROLLBACK TO flows_request").and_then(|()| self.exec("RELEASE flows_request"))
                {
                    // Cannot undo this request alone: drop the whole transaction rather than
                    // commit a partial write; the caller re-applies the other requests.
                    tracing::error!(path = %self.path.display(), error = %undo, "rollback to savepoint failed; rolling back the batch");
                    self.rollback();
                }
                Err(e)
            }
        }
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(|_| ())
    }

    /// Runs a transaction-control statement, retrying while another process holds the lock.
    /// SQLite's busy timeout already waited before each failure; the pauses here add room for
    /// a process that holds the lock in long bursts.
    fn with_busy_retry(&self, sql: &str) -> rusqlite::Result<()> {
        let mut pause = BUSY_BACKOFF;
        let mut tries = 0;
        loop {
            match self.exec(sql) {
                Err(e) if is_busy(&e) && tries < BUSY_RETRIES => {
                    tries += 1;
                    tracing::warn!(path = %self.path.display(), statement = sql, tries, "store locked by another process; retrying");
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.exec("ROLLBACK")
        {
            // Nothing of this transaction is durable either way; the next batch's BEGIN will
            // report the connection's state to its callers.
            tracing::warn!(path = %self.path.display(), error = %e, "rollback failed");
        }
    }
}
