//! Micro-benchmarks of the engine's hot paths, on the flows of the W1-W4 workloads, so that
//! regressions show: the cost of a kickoff (one-method run), a chain step (W1), a router
//! iteration (W2), an and-join fan-in (W3, and a small one whose branches are pending once),
//! a checkpoint (state and progress serialized into a `MemoryStore` after every step, and the
//! same committed to SQLite with `synchronous=NORMAL`: the durable commit's CPU path, which the
//! W5 profile found to be most of a durable step's instructions, without the fsync's noise), and
//! the hand-written limit for scale.
//!
//! `CARGO_TARGET_DIR=target-bench cargo bench -p flow-bench --bench engine [-- filter]`

#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flow_bench::flows::{Chain10, Chain100, Counter, Fan10, Fan100, FanYield4, Loop, One, limit_chain, limit_fan};
use flow_bench::limit;
use flow_core::store::{MemoryStore, SqliteOptions, SqliteStore, Synchronous};
use flow_core::{Flow, Runner};
use tokio::runtime::Runtime;

fn current() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("building a tokio runtime")
}

fn multi() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("building a tokio runtime")
}

fn kick<F: Flow<State = Counter>>(rt: &Runtime, runner: &Runner<F>) -> u64 {
    rt.block_on(async { runner.kickoff(Counter::default()).await.expect("kickoff").completed().expect("completed") })
        .state
        .counter
}

fn kickoff(c: &mut Criterion) {
    let rt = current();
    let mut g = c.benchmark_group("kickoff");
    g.throughput(Throughput::Elements(1));
    let runner = Runner::new(One);
    g.bench_function("one_method", |b| b.iter(|| black_box(kick(&rt, &runner))));
    g.bench_function("runner_new_plus_one_method", |b| b.iter(|| black_box(kick(&rt, &Runner::new(One)))));
    g.finish();
}

fn chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain_step");
    g.throughput(Throughput::Elements(100));
    let runner = Runner::new(Chain100);
    let rt = current();
    g.bench_function("w1_100_current_thread", |b| b.iter(|| black_box(kick(&rt, &runner))));
    let rt = multi();
    g.bench_function("w1_100_multi_thread", |b| b.iter(|| black_box(kick(&rt, &runner))));
    let rt = current();
    let steps = limit_chain(100).expect("100 is a compiled chain size");
    g.bench_function("w1_100_limit", |b| b.iter(|| black_box(rt.block_on(limit::w1(&steps)))));
    g.bench_function("w1_100_limit_spawn", |b| b.iter(|| black_box(rt.block_on(limit::w1_spawn(&steps)))));
    let one = limit::chain_steps(100);
    g.bench_function("w1_100_limit_loop", |b| b.iter(|| black_box(rt.block_on(limit::w1(&one)))));
    g.finish();
}

fn router(c: &mut Criterion) {
    let rt = current();
    let mut g = c.benchmark_group("router_iteration");
    g.throughput(Throughput::Elements(100));
    let runner = Runner::new(Loop { k: 100 });
    g.bench_function("w2_100", |b| b.iter(|| black_box(kick(&rt, &runner))));
    g.finish();
}

fn and_join(c: &mut Criterion) {
    let rt = current();
    let mut g = c.benchmark_group("and_join");
    g.throughput(Throughput::Elements(12));
    let runner = Runner::new(Fan10);
    g.bench_function("w3_10", |b| b.iter(|| black_box(kick(&rt, &runner))));
    g.throughput(Throughput::Elements(102));
    let runner = Runner::new(Fan100);
    g.bench_function("w3_100", |b| b.iter(|| black_box(kick(&rt, &runner))));
    let branches = limit_fan(100).expect("100 is a compiled fan width");
    g.bench_function("w3_100_limit", |b| b.iter(|| black_box(rt.block_on(limit::w3(&branches, false)))));
    // Branches that are pending once: the wake-up path of the running set.
    g.throughput(Throughput::Elements(6));
    let runner = Runner::new(FanYield4);
    g.bench_function("w3_4_yielding", |b| b.iter(|| black_box(kick(&rt, &runner))));
    g.finish();
}

fn checkpoint(c: &mut Criterion) {
    let rt = current();
    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Elements(10));
    let runner = Runner::new(Chain10);
    g.bench_function("w1_10_no_store", |b| b.iter(|| black_box(kick(&rt, &runner))));
    // Every step: state + progress to JSON values, a commit into the in-memory store.
    let runner = Runner::new(Chain10).with_store(MemoryStore::new().keep_checkpoints(1));
    g.bench_function("w1_10_memory_store", |b| b.iter(|| black_box(kick(&rt, &runner))));
    // Every step: the same snapshot, committed by the SQLite store (fence read, checkpoint row,
    // step row) without an fsync; the bare insert+commit of the W5 limit beside it.
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions::new(dir.path().join("runs.db")).synchronous(Synchronous::Normal);
    let store = rt.block_on(SqliteStore::open_with(options)).expect("open the store");
    let runner = Runner::new(Chain10).with_store(store);
    g.bench_function("w1_10_sqlite_store_normal", |b| b.iter(|| black_box(kick(&rt, &runner))));
    let conn = limit::w5_open(&dir.path().join("limit.db"), Synchronous::Normal).expect("open the limit's db");
    let mut batch = 0u64;
    g.bench_function("w5_limit_10_bare_commits_normal", |b| {
        b.iter(|| {
            // A run name per batch: the limit's table keys rows by (run, seq).
            batch += 1;
            black_box(limit::w5(&conn, &format!("bench-{batch}"), 10).expect("bare commits"))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = kickoff, chain, router, and_join, checkpoint
}
criterion_main!(benches);
