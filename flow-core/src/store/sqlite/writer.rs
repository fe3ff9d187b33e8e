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
//!
//! One exception to the hand-off: a write from the only task alive on its runtime, while the
//! writer is idle, is committed on the caller's own thread ([`WriterHandle::write`]). Nobody
//! could share that commit, and the hand-off costs two thread wake-ups per write, which on a
//! virtual machine cost as much as the commit's own CPU work.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError, mpsc};
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

/// What the writer thread and inline writers share.
struct Shared {
    writer: Mutex<Writer>,
    /// Requests sent to the writer thread that it has not yet taken under the lock. An inline
    /// write goes only when this is zero, so it never overtakes a write queued before it (one
    /// whose caller stopped waiting, say, then wrote again).
    queued: AtomicUsize,
    /// Writes handed to [`WriterHandle::write`]: with [`Writer::transactions`], the group-commit
    /// test's evidence that concurrent writes share commits.
    #[cfg(test)]
    requests: AtomicUsize,
}

impl Shared {
    /// The writer, also after a panic while it was held: each batch begins by rolling back
    /// whatever transaction the panic left open.
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, Writer>> {
        match self.writer.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// The sending side: what [`super::SqliteStore`] holds.
pub(super) struct WriterHandle {
    queue: mpsc::Sender<Box<dyn Job>>,
    shared: Arc<Shared>,
    path: PathBuf,
    /// What happened to the store's file, once a commit found it gone.
    gone: Arc<OnceLock<String>>,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`.
    pub(super) fn start(conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let (queue, requests) = mpsc::channel::<Box<dyn Job>>();
        let gone = Arc::new(OnceLock::new());
        let watch = FileWatch::new(&path, Arc::clone(&gone));
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                conn,
                path: path.clone(),
                watch,
                #[cfg(test)]
                transactions: AtomicUsize::new(0),
            }),
            queued: AtomicUsize::new(0),
            #[cfg(test)]
            requests: AtomicUsize::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("flows-sqlite-writer".into())
            .spawn(move || run(&thread_shared, &requests))
            .map_err(|e| {
                StoreError::Backend(format!("{}: cannot start the SQLite writer thread: {e}", path.display()))
            })?;
        Ok(WriterHandle { queue, shared, path, gone })
    }

    /// [`StoreError::Gone`] once a commit found the store's file deleted or replaced: what the
    /// read connections would read is then not the store this process wrote to.
    pub(super) fn found_gone(&self) -> Result<(), StoreError> {
        found_gone(&self.gone, &self.path)
    }

    /// Commits `work` and waits until it is committed (or failed).
    ///
    /// Normally the write is queued for the writer thread's next group commit. When the caller
    /// is the only task alive on its runtime and the writer is idle with nothing queued, the
    /// write is committed right here instead, blocking this thread for the commit: there is no
    /// other task for the thread to run meanwhile and no other write to share the commit with.
    ///
    /// Dropping the returned future does not cancel the write: once queued it is applied, as a
    /// write whose reply was lost on the network would be.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Request { work, result: None, reply });
        #[cfg(test)]
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(job) = self.commit_inline(job) {
            self.shared.queued.fetch_add(1, Ordering::SeqCst);
            if self.queue.send(job).is_err() {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(writer_stopped(&self.path));
            }
        }
        answer.await.map_err(|_| writer_stopped(&self.path))?
    }

    /// Commits `job` on this thread if that is what [`WriterHandle::write`] says; otherwise
    /// gives it back to be queued.
    fn commit_inline(&self, job: Box<dyn Job>) -> Option<Box<dyn Job>> {
        if !alone_on_runtime() {
            return Some(job);
        }
        let Some(mut writer) = self.shared.try_lock() else { return Some(job) };
        if self.shared.queued.load(Ordering::SeqCst) != 0 {
            return Some(job);
        }
        writer.commit_batch(vec![job]);
        None
    }
}

/// Whether the caller is a task, and the only one alive on its runtime. Code outside any task
/// (a `block_on` future) may be running anything beside the write, so it never qualifies.
fn alone_on_runtime() -> bool {
    tokio::task::try_id().is_some()
        && tokio::runtime::Handle::try_current().is_ok_and(|rt| rt.metrics().num_alive_tasks() == 1)
}

/// The writer thread: runs until every [`WriterHandle`] is gone; the connection then closes
/// (the thread holds the last reference), which checkpoints the WAL into the database file.
fn run(shared: &Shared, requests: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut writer = shared.lock();
        // Counted down only under the lock, so an inline write cannot slip in between taking
        // these requests and committing them.
        shared.queued.fetch_sub(batch.len(), Ordering::SeqCst);
        let started = Instant::now();
        let size = batch.len();
        writer.commit_batch(batch);
        tracing::trace!(requests = size, elapsed_us = started.elapsed().as_micros() as u64, "group commit");
    }
    tracing::debug!(path = %shared.lock().path.display(), "SQLite writer stopped: store dropped");
}

/// Which file a path names (device and inode on unix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Ok(FileId(meta.dev(), meta.ino()))
        }
        // Elsewhere only the file's disappearance is seen.
        #[cfg(not(unix))]
        {
            let _ = meta;
            Ok(FileId(0, 0))
        }
    }
}

/// Notices the store's files being deleted or replaced under the open connection: SQLite keeps
/// writing to the files it opened, so without this a commit would report success while landing
/// in a file nobody can open again. One `stat` per file per group commit, after it committed.
struct FileWatch {
    /// The database file as opened; `None` when it could not be read then (nothing to compare).
    db: Option<FileId>,
    /// The write-ahead log, learnt at the first commit (SQLite creates it lazily) and stable
    /// while this connection is open: SQLite deletes it only when the last connection closes.
    wal: Option<FileId>,
    wal_path: PathBuf,
    /// Set for good once a file was found gone (what happened to it): every later write is
    /// refused, and reads too ([`WriterHandle::found_gone`]).
    gone: Arc<OnceLock<String>>,
}

impl FileWatch {
    fn new(path: &Path, gone: Arc<OnceLock<String>>) -> Self {
        let db = FileId::of(path)
            .inspect_err(|e| tracing::debug!(path = %path.display(), error = %e, "cannot identify the store file"))
            .ok();
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        FileWatch { db, wal: None, wal_path: PathBuf::from(wal_path), gone }
    }

    /// Whether the files are still the ones this connection writes, after a commit.
    fn check(&mut self, path: &Path) -> Result<(), StoreError> {
        if self.gone.get().is_none()
            && let Some(what) = self.what_happened(path)
        {
            tracing::error!(path = %path.display(), "the store file {what} while open; refusing every write and read from now on");
            let _ = self.gone.set(what);
        }
        self.found_gone(path)
    }

    /// Whether a file was found gone before (no system call).
    fn found_gone(&self, path: &Path) -> Result<(), StoreError> {
        found_gone(&self.gone, path)
    }

    fn what_happened(&mut self, path: &Path) -> Option<String> {
        let expected = self.db?;
        match FileId::of(path) {
            Ok(found) if found != expected => return Some("was replaced by another file".into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                return Some(if dir.is_dir() {
                    "was deleted".into()
                } else {
                    format!("was deleted with its directory {}", dir.display())
                });
            }
            Err(e) => return Some(format!("can no longer be checked ({e})")),
        }
        match (FileId::of(&self.wal_path), self.wal) {
            (Ok(found), None) => self.wal = Some(found),
            (Ok(found), Some(wal)) if found != wal => {
                return Some(format!(
                    "has a new write-ahead log {} (the old one was replaced)",
                    self.wal_path.display()
                ));
            }
            (Ok(_), Some(_)) => {}
            (Err(e), Some(_)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("lost its write-ahead log {} (deleted)", self.wal_path.display()));
            }
            // Not in WAL mode, or not created yet: nothing to compare.
            (Err(_), _) => {}
        }
        None
    }
}

/// [`StoreError::Gone`] if a commit found the store's file gone.
fn found_gone(gone: &OnceLock<String>, path: &Path) -> Result<(), StoreError> {
    match gone.get() {
        None => Ok(()),
        Some(what) => Err(StoreError::Gone { run_id: None, path: path.display().to_string(), what: what.clone() }),
    }
}

/// The same failure again, for each request of a batch it failed (a [`StoreError`] is not
/// `Clone`: its variants carry what they need to be rebuilt).
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Gone { run_id, path, what } => {
            StoreError::Gone { run_id: *run_id, path: path.clone(), what: what.clone() }
        }
        StoreError::Busy(m) => StoreError::Busy(m.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
        StoreError::DiskFull(m) => StoreError::DiskFull(m.clone()),
        StoreError::ReadOnly(m) => StoreError::ReadOnly(m.clone()),
        StoreError::FileCorrupt { path, detail } => {
            StoreError::FileCorrupt { path: path.clone(), detail: detail.clone() }
        }
        StoreError::Open { path, message } => StoreError::Open { path: path.clone(), message: message.clone() },
        other => StoreError::Backend(other.to_string()),
    }
}

/// The writing connection.
struct Writer {
    conn: Connection,
    path: PathBuf,
    watch: FileWatch,
    /// Transactions committed (see [`Shared::requests`]).
    #[cfg(test)]
    transactions: AtomicUsize,
}

impl Writer {
    fn db(&self) -> Db<'_> {
        Db { conn: &self.conn, path: &self.path }
    }

    fn commit_batch(&mut self, mut jobs: Vec<Box<dyn Job>>) {
        // A connection to a file that is gone can only write where nobody will read.
        if let Err(e) = self.watch.found_gone(&self.path) {
            for job in jobs {
                job.answer(Some(same_error(&e)));
            }
            return;
        }
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
            // In queue order, each with its refusal if it failed. Refusals are answered after
            // the transaction ends too, so no caller learns of state that might not commit.
            let mut done: Vec<(Box<dyn Job>, Option<StoreError>)> = Vec::with_capacity(jobs.len());
            // A lone request needs no savepoint: if it fails, the whole transaction is its own.
            let shared = jobs.len() > 1;
            let mut pending = jobs.into_iter();
            while let Some(mut job) = pending.next() {
                match self.apply_one(job.as_mut(), shared) {
                    Ok(()) => done.push((job, None)),
                    Err(e) if !shared || self.conn.is_autocommit() => {
                        // The whole transaction is gone: a lone request's failure rolled it
                        // back, or SQLite rolled it back itself (it does for a full disk or an
                        // I/O error), taking every request applied so far with it. Nothing of
                        // it is committed. Answer the one that failed; re-apply the others,
                        // refused ones included, since their refusal may have rested on what
                        // was lost.
                        job.answer(Some(e));
                        jobs = done.into_iter().map(|(job, _)| job).chain(pending).collect();
                        continue 'pass;
                    }
                    Err(e) => done.push((job, Some(e))),
                }
            }
            let committed = match self.with_busy_retry("COMMIT") {
                Ok(()) => {
                    // Counted before any answer, so a caller that heard back sees its
                    // transaction counted.
                    #[cfg(test)]
                    self.transactions.fetch_add(1, Ordering::SeqCst);
                    // Committed, but to the file at the path only if that is still the file opened.
                    self.watch.check(&self.path)
                }
                Err(e) => {
                    self.rollback();
                    Err(map(&e, &self.path))
                }
            };
            for (job, refusal) in done {
                match (refusal, &committed) {
                    (Some(refusal), _) => job.answer(Some(refusal)),
                    (None, Ok(())) => job.answer(None),
                    (None, Err(e)) => job.answer(Some(same_error(e))),
                }
            }
            return;
        }
    }

    /// Applies one job. In a `shared` transaction it runs in a savepoint, rolled back on
    /// failure, so the job leaves nothing behind for the others; alone, a failure rolls the
    /// whole transaction back, which leaves the connection in autocommit for the caller to see.
    fn apply_one(&self, job: &mut dyn Job, shared: bool) -> Result<(), StoreError> {
        if !shared {
            let applied = job.apply(self.db());
            if applied.is_err() {
                self.rollback();
            }
            return applied;
        }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn insert(db: Db<'_>, name: &str) -> Result<(), StoreError> {
        db.conn.execute("INSERT INTO scratch (name) VALUES (?1)", [name]).map(drop).map_err(|e| map(&e, db.path))
    }

    fn names(db: Db<'_>) -> Result<Vec<String>, StoreError> {
        let mut stmt = db.conn.prepare("SELECT name FROM scratch ORDER BY name").map_err(|e| map(&e, db.path))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| map(&e, db.path))?;
        rows.collect::<Result<_, _>>().map_err(|e| map(&e, db.path))
    }

    /// A writer on a new WAL file with a `scratch (name)` table.
    fn scratch_writer() -> Result<(tempfile::TempDir, WriterHandle), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE scratch (name TEXT NOT NULL);")?;
        Ok((dir, WriterHandle::start(conn, path)?))
    }

    /// A writer whose first job blocks until `open` is sent, so the jobs queued meanwhile all
    /// land in the next batch.
    async fn gated_writer()
    -> Result<(tempfile::TempDir, WriterHandle, std_mpsc::Sender<()>), Box<dyn std::error::Error>> {
        let (dir, writer) = scratch_writer()?;
        let (open, gate) = std_mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(Some(gate));
        let blocked = writer.write(move |_| {
            if let Some(gate) = gate.lock().ok().and_then(|mut g| g.take()) {
                let _ = gate.recv();
            }
            Ok(())
        });
        // Queue the gate job (the first poll sends it) and wait for the writer to take it, so
        // the jobs the test queues next wait behind it and land in one batch.
        tokio::select! {
            biased;
            _ = blocked => return Err("the gate job finished before it was opened".into()),
            () = until_queued(&writer, 0) => {}
        }
        Ok((dir, writer, open))
    }

    /// Waits until exactly `n` requests wait in the writer's queue: how the tests order the
    /// requests they queue, rather than by sleeping and hoping.
    async fn until_queued(writer: &WriterHandle, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while writer.shared.queued.load(Ordering::SeqCst) != n {
            assert!(Instant::now() < deadline, "the writer's queue never held {n} requests");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn writing_thread(_: Db<'_>) -> Result<Option<String>, StoreError> {
        Ok(std::thread::current().name().map(String::from))
    }

    /// A lone task commits on its own thread; with another task alive, or from outside any
    /// task, the write goes to the writer thread (where it can share a commit).
    async fn who_writes() -> Result<[Option<String>; 3], Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("w.db");
        let writer = std::sync::Arc::new(WriterHandle::start(Connection::open(&path)?, path)?);
        let alone = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(writing_thread).await }
        })
        .await??;
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let other = tokio::spawn(held);
        let crowded = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(writing_thread).await }
        })
        .await??;
        let _ = release.send(());
        other.await??;
        let outside = writer.write(writing_thread).await?;
        Ok([alone, crowded, outside])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_lone_task_commits_on_its_own_thread() -> TestResult {
        let writer_thread = Some("flows-sqlite-writer".to_string());
        let [alone, crowded, outside] = who_writes().await.map_err(|e| e.to_string())?;
        assert_ne!(alone, writer_thread);
        assert_eq!((crowded, outside), (writer_thread.clone(), writer_thread.clone()));

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let [alone, crowded, outside] = std::thread::spawn(move || runtime.block_on(who_writes()))
            .join()
            .map_err(|_| "the current-thread runtime panicked")?
            .map_err(|e| e.to_string())?;
        assert_ne!(alone, writer_thread);
        assert_eq!((crowded, outside), (writer_thread.clone(), writer_thread));
        Ok(())
    }

    /// A write that panics on the caller's thread (a bug, but it must not wedge the store): the
    /// panic reaches the caller's task, the half-done transaction is rolled back by the next
    /// write, and the store goes on.
    #[tokio::test]
    async fn a_write_that_panics_inline_leaves_the_store_usable() -> TestResult {
        let (_dir, writer) = scratch_writer()?;
        let writer = std::sync::Arc::new(writer);
        let panicking = writer.clone();
        let outcome = tokio::spawn(async move {
            panicking
                .write(|db| -> Result<(), StoreError> {
                    insert(db, "lost")?;
                    panic!("a bug inside a write")
                })
                .await
        })
        .await;
        assert!(outcome.is_err_and(|e| e.is_panic()));
        let next = writer.clone();
        tokio::spawn(async move { next.write(|db| insert(db, "kept")).await }).await??;
        assert_eq!(writer.write(names).await?, ["kept"]);
        Ok(())
    }

    /// Many runs committing at once share transactions. Another connection holds the write
    /// lock, so the writer's first batch waits in `BEGIN IMMEDIATE` while every other commit
    /// queues behind it; once the lock goes they take at most three transactions (a lone first
    /// commit made inline, the writer's blocked batch, the rest), not one each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions() -> TestResult {
        use crate::store::{Commit, NewRun, RunStatus, Snapshot, SqliteStore, Store};

        const RUNS: usize = 64;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let store = Arc::new(SqliteStore::open(&path).await?);
        let snapshot = Snapshot::encode(&serde_json::json!({ "n": 0 }), &serde_json::json!({}))?;
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let run_id = uuid::Uuid::new_v4();
            let epoch = store
                .create_run(NewRun {
                    run_id,
                    flow: "group".into(),
                    parent_run_id: None,
                    snapshot: snapshot.clone(),
                    steps: Vec::new(),
                    start: crate::store::Start::Leased { owner: "w1".into(), lease: Duration::from_secs(600) },
                    placement: crate::store::Placement::default(),
                    graph: None,
                })
                .await?;
            runs.push((run_id, epoch));
        }
        let shared = Arc::clone(&store.inner.writer.shared);
        let requests = shared.requests.load(Ordering::SeqCst);
        let transactions = shared.lock().transactions.load(Ordering::SeqCst);

        let blocker = Connection::open(&path)?;
        blocker.execute_batch("BEGIN IMMEDIATE")?;
        let commits: Vec<_> = runs
            .into_iter()
            .map(|(run_id, epoch)| {
                let (store, snapshot) = (Arc::clone(&store), snapshot.clone());
                tokio::spawn(async move {
                    store
                        .commit(Commit {
                            run_id,
                            epoch,
                            status: RunStatus::Running,
                            snapshot,
                            steps: Vec::new(),
                            step_key: None,
                            output: None,
                            error: None,
                            pause: None,
                            available_at_ms: None,
                        })
                        .await
                })
            })
            .collect();
        // Every commit in the writer's hands (its blocked batch or its queue) before the lock goes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while shared.requests.load(Ordering::SeqCst) < requests + RUNS {
            assert!(Instant::now() < deadline, "the commits never reached the writer");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        blocker.execute_batch("COMMIT")?;
        for commit in commits {
            commit.await??;
        }
        let used = shared.lock().transactions.load(Ordering::SeqCst) - transactions;
        assert!((1..=3).contains(&used), "{RUNS} concurrent commits took {used} transactions");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_request_undoes_only_its_own_writes() -> TestResult {
        let (_dir, writer, open) = gated_writer().await?;
        let writer = std::sync::Arc::new(writer);
        let queue = |f: fn(Db<'_>) -> Result<(), StoreError>| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(f).await })
        };
        let first = queue(|db| insert(db, "a"));
        until_queued(&writer, 1).await;
        let failing = queue(|db| {
            insert(db, "partial")?;
            Err(StoreError::Backend("refused after writing".into()))
        });
        until_queued(&writer, 2).await;
        let last = queue(|db| insert(db, "c"));
        until_queued(&writer, 3).await;
        open.send(())?;

        first.await??;
        assert!(matches!(failing.await?, Err(StoreError::Backend(_))));
        last.await??;
        assert_eq!(writer.write(names).await?, ["a", "c"]);
        Ok(())
    }

    /// A request alone in its transaction runs without a savepoint; failing after a write
    /// must still leave nothing behind.
    #[tokio::test]
    async fn a_lone_failed_request_leaves_nothing() -> TestResult {
        let (_dir, writer) = scratch_writer()?;
        let failed = writer
            .write(|db| {
                insert(db, "partial")?;
                Err::<(), _>(StoreError::Backend("refused after writing".into()))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
        writer.write(|db| insert(db, "next")).await?;
        assert_eq!(writer.write(names).await?, ["next"]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_lost_with_a_rolled_back_transaction_are_applied_again() -> TestResult {
        let (_dir, writer, open) = gated_writer().await?;
        let writer = std::sync::Arc::new(writer);
        let queue = |f: fn(Db<'_>) -> Result<(), StoreError>| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(f).await })
        };
        let first = queue(|db| insert(db, "a"));
        until_queued(&writer, 1).await;
        // As SQLite does on a full disk or an I/O error: the whole transaction is gone.
        let culprit = queue(|db| {
            db.conn.execute_batch("ROLLBACK").map_err(|e| map(&e, db.path))?;
            Err(StoreError::DiskFull("simulated".into()))
        });
        until_queued(&writer, 2).await;
        let last = queue(|db| insert(db, "c"));
        until_queued(&writer, 3).await;
        open.send(())?;

        first.await??;
        assert!(matches!(culprit.await?, Err(StoreError::DiskFull(_))));
        last.await??;
        assert_eq!(writer.write(names).await?, ["a", "c"], "`a` was applied again after the rollback");
        Ok(())
    }
}
