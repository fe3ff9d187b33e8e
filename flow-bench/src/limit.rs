//! The limits: the same calls as W1, W2, W3 and W5 written by hand, without the engine.
//!
//! Each step is a boxed async fn called through a table (as a dispatcher would call it) that
//! updates the state through an `Arc<Mutex<Counter>>`. The W1 and W3 tables hold one distinct
//! function per step ([`crate::flows::limit_chain`], [`crate::flows::limit_fan`]), as the flows
//! have one distinct method per step; [`chain_steps`] repeats one function, for comparison. For
//! W3 the branches are spawned as tokio tasks and joined. For W5 the limit is one SQLite insert
//! and commit per step on a reused connection with the same durability setting as the store
//! (`synchronous=FULL`, WAL).

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_core::store::Synchronous;
use futures::future::BoxFuture;

use crate::flows::{BRANCH_SLEEP, Counter};

/// The shared state the hand-written steps update.
pub type Shared = Arc<Mutex<Counter>>;

/// One hand-written step: an async fn behind a pointer, so the calls are not inlined away.
pub type Step = Box<dyn Fn(Shared) -> BoxFuture<'static, u64> + Send + Sync>;

/// Boxes one step (the generated limit tables call this once per distinct closure).
pub fn step(f: impl Fn(Shared) -> BoxFuture<'static, u64> + Send + Sync + 'static) -> Step {
    Box::new(f)
}

/// Locks the shared state, through a poisoned lock too.
pub fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Counter> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

async fn inc(s: Shared) -> u64 {
    let mut g = lock(&s);
    g.counter += 1;
    g.counter
}

/// `n` increment steps, all the same function: the W1 limit as a loop over one hot function.
pub fn chain_steps(n: usize) -> Vec<Step> {
    (0..n).map(|_| Box::new(|s: Shared| -> BoxFuture<'static, u64> { Box::pin(inc(s)) }) as Step).collect()
}

/// W1 limit: awaits each step in turn. Returns the wall time of the calls and the counter.
pub async fn w1(steps: &[Step]) -> (Duration, u64) {
    let state = Shared::default();
    let t0 = Instant::now();
    for step in steps {
        black_box(step(Arc::clone(&state)).await);
    }
    let wall = t0.elapsed();
    let counter = lock(&state).counter;
    (wall, counter)
}

/// W1 limit with one tokio task per step (spawned, then awaited), the isolation the engine gives
/// every method.
pub async fn w1_spawn(steps: &[Step]) -> (Duration, u64) {
    let state = Shared::default();
    let t0 = Instant::now();
    for step in steps {
        let fut = step(Arc::clone(&state));
        black_box(tokio::spawn(fut).await.unwrap_or_default());
    }
    let wall = t0.elapsed();
    let counter = lock(&state).counter;
    (wall, counter)
}

/// W2 limit: `route` then `step` while `counter < k`, each a boxed async fn call.
pub async fn w2(k: u64) -> (Duration, u64) {
    type Router = Box<dyn Fn(Shared) -> BoxFuture<'static, bool> + Send + Sync>;
    let route: Router = Box::new(move |s: Shared| -> BoxFuture<'static, bool> {
        Box::pin(async move { lock(&s).counter < black_box(k) })
    });
    let step = &chain_steps(1)[0];
    let state = Shared::default();
    let t0 = Instant::now();
    while route(Arc::clone(&state)).await {
        black_box(step(Arc::clone(&state)).await);
    }
    let wall = t0.elapsed();
    let counter = lock(&state).counter;
    (wall, counter)
}

/// W3 and W3s limit: a root call, the `branches` spawned (each sleeping 10 ms first when
/// `sleep`), joined, then the join call.
pub async fn w3(branches: &[Step], sleep: bool) -> (Duration, u64) {
    let state = Shared::default();
    let t0 = Instant::now();
    black_box(lock(&state).counter);
    let mut tasks = Vec::with_capacity(branches.len());
    for branch in branches {
        let work = branch(Arc::clone(&state));
        tasks.push(tokio::spawn(async move {
            if sleep {
                tokio::time::sleep(BRANCH_SLEEP).await;
            }
            work.await
        }));
    }
    for t in tasks {
        black_box(t.await.unwrap_or_default());
    }
    let counter = lock(&state).counter;
    let wall = t0.elapsed();
    (wall, counter)
}

/// The W5 limit's write: one row per step, the state's JSON under the run and a sequence number.
pub const W5_INSERT: &str = "INSERT INTO ck (run, seq, state) VALUES (?1, ?2, ?3)";

/// Opens a WAL database with the given durability setting and the table the W5 limit writes.
pub fn w5_open(path: &Path, sync: Synchronous) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if sync == Synchronous::Normal { "NORMAL" } else { "FULL" })?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS ck (run TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL, PRIMARY KEY (run, seq))")?;
    Ok(conn)
}

/// W5 limit: `n` inserts, each its own committed transaction, on a reused connection.
pub fn w5(conn: &rusqlite::Connection, run: &str, n: usize) -> rusqlite::Result<Duration> {
    let mut stmt = conn.prepare_cached(W5_INSERT)?;
    let t0 = Instant::now();
    for i in 0..n {
        let state = format!("{{\"counter\":{}}}", i + 1);
        stmt.execute(rusqlite::params![run, i as i64, state])?;
    }
    Ok(t0.elapsed())
}
