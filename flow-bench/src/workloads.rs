//! One measurement of one workload, in this process: the warm-up at size 3, then the timed
//! run, as `bench/WORKLOADS.md` defines them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_core::store::{SqliteOptions, SqliteStore, Synchronous};
use flow_core::{Flow, Runner};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::bare_sql::BareSqlCommits;
use crate::flows::{
    CHAIN_SIZES, Chain3, Chain10, Counter, FAN_SIZES, Gate, Gated, Loop, Visit, limit_chain, limit_fan, visit_chain,
    visit_fan,
};
use crate::limit;
use crate::measure::{Record, Sched, cur_rss_kb, peak_rss_kb};

/// Any failure of a measurement.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every measurement by id: `workload[-variant]`.
pub const IDS: &[&str] = &[
    "w1",
    "w1-limit",
    "w1-limit-loop",
    "w1-limit-spawn",
    "w1-spawned",
    "w1-stream",
    "w1-stream-outcome",
    "w2",
    "w2-limit",
    "w3",
    "w3-limit",
    "w3s",
    "w3s-limit",
    "w4",
    "w4-inflight",
    "w5",
    "w5-limit",
    "w5-normal",
    "w5-bare-sql",
    "w5-concurrent",
];

/// The PostgreSQL measurements ([`crate::pg`]): they need a server (`DATABASE_URL`, else
/// 127.0.0.1:5432), so `all` and the in-memory tests leave them out. `w6` and `w6-limit` take
/// the runs in flight per worker as their size; `takeover` the lease in milliseconds.
pub const PG_IDS: &[&str] = &["w5-pg", "w5-pg-limit", "w6", "w6-limit", "takeover"];

/// Steps per run in the W5 concurrent variant (a W1 chain of this length per run).
pub const CONCURRENT_CHAIN: usize = 10;

/// The size a measurement uses when none is given.
pub fn default_size(id: &str) -> usize {
    match (id, split(id).0) {
        ("w5-concurrent", _) => 1000,
        ("takeover", _) => 2000,
        (_, "w6") => 100,
        (_, "w1" | "w5") => 100,
        (_, "w2" | "w4") => 1000,
        _ => 10,
    }
}

/// Splits an id into workload and variant: `w1-limit` is (`w1`, `limit`), `w4` is (`w4`, `engine`).
pub fn split(id: &str) -> (&str, &str) {
    match id.split_once('-') {
        Some((w, v)) => (w, v),
        None => (id, "engine"),
    }
}

/// Which tokio runtime the measurement runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    /// `new_multi_thread` with one worker per core: what `#[tokio::main]` gives.
    Multi,
    /// `new_current_thread`: everything on the calling thread, like Python's asyncio loop.
    Current,
}

impl Rt {
    /// The name printed in records (`multi_thread`, `current_thread`).
    pub fn name(self) -> &'static str {
        match self {
            Rt::Multi => "multi_thread",
            Rt::Current => "current_thread",
        }
    }

    /// Parses `multi`/`multi_thread` or `current`/`current_thread`.
    pub fn parse(s: &str) -> Option<Rt> {
        match s {
            "multi" | "multi_thread" => Some(Rt::Multi),
            "current" | "current_thread" => Some(Rt::Current),
            _ => None,
        }
    }

    /// Builds the runtime.
    pub fn build(self) -> std::io::Result<Runtime> {
        match self {
            Rt::Multi => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
            Rt::Current => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        }
    }
}

/// How to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// The runtime.
    pub rt: Rt,
    /// Run the same workload at size 3 first.
    pub warmup: bool,
    /// Where the SQLite files of W5 go (`BENCH_TMP`, else the system temp folder).
    pub tmp: PathBuf,
    /// W6: worker processes sharing the server.
    pub workers: usize,
    /// W6: how long each worker starts new runs, in seconds.
    pub secs: f64,
}

impl Default for Options {
    fn default() -> Self {
        let tmp = std::env::var_os("BENCH_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        Options { rt: Rt::Multi, warmup: true, tmp, workers: 1, secs: 5.0 }
    }
}

/// What one timed run produced.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    pub(crate) steps: usize,
    pub(crate) ok: bool,
    pub(crate) counter: Option<u64>,
    pub(crate) build_s: f64,
    /// The scheduler's account of the timed region, where the workload takes it.
    pub(crate) sched: Option<Sched>,
    pub(crate) extra: Vec<(&'static str, Value)>,
}

impl Sample {
    fn new(wall: Duration, steps: usize, counter: u64, expect: u64) -> Self {
        Sample { wall, steps, ok: counter == expect, counter: Some(counter), ..Sample::default() }
    }
}

/// Runs measurement `id` at `size` in this process: the warm-up (size 3) unless turned off,
/// then the timed run; returns its record.
pub fn measure(id: &str, size: usize, opts: &Options) -> Result<Record, BoxError> {
    if !IDS.contains(&id) && !PG_IDS.contains(&id) {
        return Err(format!("unknown workload `{id}`; known: {}, {}", IDS.join(", "), PG_IDS.join(", ")).into());
    }
    let rt = opts.rt.build()?;
    let (workload, variant) = split(id);
    let mut rec = Record::new(workload, variant, size);
    rec.set("rt", opts.rt.name());
    if opts.warmup && !matches!(id, "w6" | "w6-limit" | "takeover") {
        let t = Instant::now();
        let w = once(id, 3, &rt, opts)?;
        if !w.ok {
            return Err(format!("the warm-up of `{id}` at size 3 gave a wrong result: {w:?}").into());
        }
        rec.set_f("warmup_s", t.elapsed().as_secs_f64());
    }
    let baseline_cur = cur_rss_kb();
    rec.set("baseline_peak_rss_kb", peak_rss_kb());
    rec.set("baseline_cur_rss_kb", baseline_cur);
    let s = once(id, size, &rt, opts)?;
    rec.set_f("build_s", s.build_s);
    rec.set("ok", s.ok);
    if let Some(c) = s.counter {
        rec.set("counter", c);
    }
    let wall = s.wall.as_secs_f64();
    rec.timing(wall, s.steps);
    for (k, v) in s.extra {
        rec.set(k, v);
    }
    rec.process_end();
    if workload == "w4" || id == "w5-concurrent" {
        rec.set_f("runs_per_s", size as f64 / wall);
        rec.set_f("flows_per_s", size as f64 / wall);
        let peak = rec.num("peak_rss_kb").unwrap_or(0.0);
        rec.set_f("rss_per_run_kb", (peak - baseline_cur as f64).max(0.0) / size.max(1) as f64);
    }
    if workload == "w6" {
        rec.set("ratio_note", "steps_per_s of w6 over that of w6-limit at the same --workers");
    }
    if id == "w5-concurrent" {
        let steps_per_s = s.steps as f64 / wall;
        rec.set_f("steps_per_s", steps_per_s);
        if let Some(bare) = rec.num("bare_commit_us") {
            // > 1: more steps were made durable than one fsync'd commit each allows.
            rec.set_f("steps_per_bare_commit", steps_per_s * bare / 1e6);
        }
    }
    drop(rt);
    Ok(rec)
}

/// How many checkpoints the store wrote and the bytes of their state and progress JSON (the
/// store's own table, read after the store was closed; W5 only reports it).
fn checkpoint_sizes(db: &Path) -> rusqlite::Result<(i64, i64)> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.query_row(
        "SELECT count(*), coalesce(sum(length(state) + length(progress)), 0) FROM flow_checkpoints",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// The W5 limit's cost per commit: `n` bare inserts, each committed, in a new file at `db` with
/// the given durability; and the scheduler's account of them.
fn bare_commit_us(db: &Path, n: usize, sync: Synchronous) -> Result<(f64, Sched), BoxError> {
    let conn = limit::w5_open(db, sync)?;
    let before = Sched::now();
    let wall = limit::w5(&conn, "bare", n)?;
    Ok((wall.as_secs_f64() * 1e6 / n.max(1) as f64, Sched::now().since(before)))
}

/// Adds the scheduler's account per step (or per commit) under `keys`: microseconds on a
/// CPU, microseconds waiting for one, and times scheduled in.
fn per_step_sched(extra: &mut Vec<(&'static str, Value)>, keys: [&'static str; 3], sched: Sched, n: usize) {
    let n = n.max(1) as f64;
    extra.push((keys[0], (sched.on_cpu_ns as f64 / 1e3 / n).into()));
    extra.push((keys[1], (sched.runq_ns as f64 / 1e3 / n).into()));
    extra.push((keys[2], (sched.slices as f64 / n).into()));
}

/// Waits until the store has closed, which its last connection marks by removing the WAL
/// file; returns how long that took.
fn store_closed(wal: &Path) -> Result<Duration, BoxError> {
    let t0 = Instant::now();
    while wal.exists() {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("{} is still there 10 s after the run: the store did not close", wal.display()).into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(t0.elapsed())
}

fn not_compiled(what: &str, n: usize, sizes: &[usize]) -> BoxError {
    format!("{what} is compiled for sizes {sizes:?} only, not {n} (add it in flow-bench/build.rs)").into()
}

fn temp_dir(opts: &Options, prefix: &str) -> Result<tempfile::TempDir, BoxError> {
    std::fs::create_dir_all(&opts.tmp)?;
    Ok(tempfile::Builder::new().prefix(prefix).tempdir_in(&opts.tmp)?)
}

fn once(id: &str, n: usize, rt: &Runtime, opts: &Options) -> Result<Sample, BoxError> {
    let n64 = n as u64;
    if PG_IDS.contains(&id) {
        // W6 and takeover are measured once, without the warm-up at size 3 (their workers warm
        // up on their own).
        return crate::pg::once(id, n, rt, opts.workers, opts.secs);
    }
    match id {
        "w1-spawned" => visit_chain(n, Spawned { rt }).ok_or_else(|| not_compiled("W1", n, CHAIN_SIZES))?,
        "w1" => visit_chain(n, Kick { rt, durable: None }).ok_or_else(|| not_compiled("W1", n, CHAIN_SIZES))?,
        "w1-stream" => visit_chain(n, Streamed { rt, channels: flow_core::stream::Channels::ALL })
            .ok_or_else(|| not_compiled("W1", n, CHAIN_SIZES))?,
        "w1-stream-outcome" => visit_chain(n, Streamed { rt, channels: flow_core::stream::Channels::NONE })
            .ok_or_else(|| not_compiled("W1", n, CHAIN_SIZES))?,
        "w3" | "w3s" => visit_fan(n, id == "w3s", Kick { rt, durable: None })
            .ok_or_else(|| not_compiled("W3", n, FAN_SIZES))?
            .map(|mut s| {
                s.steps = n + 2;
                s.ok = s.counter == Some(n64);
                s
            }),
        "w5" | "w5-normal" | "w5-bare-sql" => {
            let dir = temp_dir(opts, "flows_w5_")?;
            let sync = if id == "w5-normal" { Synchronous::Normal } else { Synchronous::Full };
            // The disk's commit cost drifts with the machine's I/O load: the bare insert+commit
            // is measured in the same folder right before the run and right after it (once the
            // store has closed, so the two do not share the disk). The ratio to the one after is
            // the verdict's, as that commit is the faster one (the harder reference); the ratio
            // to the mean of the two brackets the run in time. On the VM of BENCHMARKS.md the bare
            // commit is 10-25 % slower before a run than after it, in every repetition.
            let (before, _) = bare_commit_us(&dir.path().join("limit-before.db"), n, sync)?;
            let mut s = visit_chain(
                n,
                Kick { rt, durable: Some(Durable { dir: dir.path(), sync, bare_sql: id == "w5-bare-sql" }) },
            )
            .ok_or_else(|| not_compiled("W5", n, CHAIN_SIZES))??;
            // The store closes on its writer thread after the run: its last connection folds the
            // WAL into the database file and fsyncs it. The bare commits below must not share the
            // disk with that, or they measure slower than they are.
            let closed = store_closed(&dir.path().join("runs.db-wal"))?;
            s.extra.push(("store_close_ms", (closed.as_secs_f64() * 1e3).into()));
            if let Ok((count, bytes)) = checkpoint_sizes(&dir.path().join("runs.db")) {
                s.extra.push(("checkpoints", count.into()));
                s.extra.push(("checkpoint_json_bytes", (bytes as f64 / count.max(1) as f64).into()));
            }
            s.extra.push(("synchronous", if sync == Synchronous::Full { "FULL" } else { "NORMAL" }.into()));
            let (bare, bare_sched) = bare_commit_us(&dir.path().join("limit-after.db"), n, sync)?;
            let per_step = s.wall.as_secs_f64() * 1e6 / n.max(1) as f64;
            if let Some(sched) = s.sched {
                per_step_sched(&mut s.extra, ["cpu_us_per_step", "runq_us_per_step", "slices_per_step"], sched, n);
            }
            per_step_sched(&mut s.extra, ["bare_cpu_us", "bare_runq_us", "bare_slices"], bare_sched, n);
            s.extra.push(("bare_commit_before_us", before.into()));
            s.extra.push(("bare_commit_us", bare.into()));
            s.extra.push(("ratio_to_bare_commit", (per_step / bare).into()));
            let bracket = (before + bare) / 2.0;
            s.extra.push(("bare_commit_bracket_us", bracket.into()));
            s.extra.push(("ratio_to_bracket", (per_step / bracket).into()));
            Ok(s)
        }
        "w2" => {
            let tb = Instant::now();
            let runner = Runner::new(Loop { k: n64 });
            let build_s = tb.elapsed().as_secs_f64();
            rt.block_on(async {
                let t0 = Instant::now();
                let out = runner.kickoff(Counter::default()).await?.completed()?;
                let wall = t0.elapsed();
                Ok(Sample { build_s, ..Sample::new(wall, n, out.state.counter, n64) })
            })
        }
        "w1-limit" | "w1-limit-loop" | "w1-limit-spawn" => {
            let tb = Instant::now();
            let steps = match id {
                "w1-limit-loop" => limit::chain_steps(n),
                _ => limit_chain(n).ok_or_else(|| not_compiled("W1", n, CHAIN_SIZES))?,
            };
            let build_s = tb.elapsed().as_secs_f64();
            let (wall, c) = rt.block_on(async {
                if id == "w1-limit-spawn" { limit::w1_spawn(&steps).await } else { limit::w1(&steps).await }
            });
            Ok(Sample { build_s, ..Sample::new(wall, n, c, n64) })
        }
        "w2-limit" => {
            let (wall, c) = rt.block_on(limit::w2(n64));
            Ok(Sample::new(wall, n, c, n64))
        }
        "w3-limit" | "w3s-limit" => {
            let branches = limit_fan(n).ok_or_else(|| not_compiled("W3", n, FAN_SIZES))?;
            let (wall, c) = rt.block_on(limit::w3(&branches, id == "w3s-limit"));
            Ok(Sample::new(wall, n + 2, c, n64))
        }
        "w4" => {
            let runner = Runner::new(Chain3);
            rt.block_on(async {
                let (wall, ok) = many(&runner, n, 3).await?;
                Ok(Sample { wall, steps: 3 * n, ok, ..Sample::default() })
            })
        }
        "w4-inflight" => in_flight(rt, n),
        "w5-limit" => {
            let dir = temp_dir(opts, "flows_w5_limit_")?;
            let conn = limit::w5_open(&dir.path().join("limit.db"), Synchronous::Full)?;
            let wall = limit::w5(&conn, "run", n)?;
            let rows: i64 = conn.query_row("SELECT count(*) FROM ck", [], |r| r.get(0))?;
            let mut s = Sample::new(wall, n, u64::try_from(rows).unwrap_or(0), n64);
            s.extra.push(("synchronous", "FULL".into()));
            Ok(s)
        }
        "w5-concurrent" => {
            let dir = temp_dir(opts, "flows_w5c_")?;
            let (bare, _) = bare_commit_us(&dir.path().join("limit.db"), 100, Synchronous::Full)?;
            rt.block_on(async {
                let store = SqliteStore::open(dir.path().join("runs.db")).await?;
                let runner = Runner::new(Chain10).with_store(store);
                let (wall, ok) = many(&runner, n, CONCURRENT_CHAIN as u64).await?;
                let mut s = Sample { wall, steps: CONCURRENT_CHAIN * n, ok, ..Sample::default() };
                s.extra.push(("chain", CONCURRENT_CHAIN.into()));
                s.extra.push(("bare_commit_us", bare.into()));
                Ok(s)
            })
        }
        _ => Err(format!("unknown workload `{id}`").into()),
    }
}

/// Runs flow `F` once with a fresh state (durably, when `store` names a folder).
struct Kick<'a> {
    rt: &'a Runtime,
    /// W5: the run checkpoints every step; without, it runs in memory.
    durable: Option<Durable<'a>>,
}

/// Where and how a W5 run checkpoints.
struct Durable<'a> {
    /// The folder of the store's file.
    dir: &'a Path,
    sync: Synchronous,
    /// Checkpoints become the W5 limit's bare insert ([`BareSqlCommits`]).
    bare_sql: bool,
}

impl Visit for Kick<'_> {
    type Out = Result<Sample, BoxError>;

    fn visit<F: Flow<State = Counter> + Default>(self) -> Self::Out {
        let tb = Instant::now();
        let runner = Runner::new(F::default());
        let build_s = tb.elapsed().as_secs_f64();
        let steps = F::graph().methods.len();
        self.rt.block_on(async {
            let runner = match &self.durable {
                Some(d) => {
                    let store =
                        SqliteStore::open_with(SqliteOptions::new(d.dir.join("runs.db")).synchronous(d.sync)).await?;
                    if d.bare_sql {
                        runner.with_store(BareSqlCommits::new(store, &d.dir.join("bare-sql.db"), d.sync)?)
                    } else {
                        runner.with_store(store)
                    }
                }
                None => runner,
            };
            // Only W5 (the durable chain) reports it.
            let sched = self.durable.as_ref().map(|_| Sched::now());
            let t0 = Instant::now();
            let out = runner.kickoff(Counter::default()).await?.completed()?;
            let wall = t0.elapsed();
            let sched = sched.map(|before| Sched::now().since(before));
            Ok(Sample { build_s, sched, ..Sample::new(wall, steps, out.state.counter, steps as u64) })
        })
    }
}

/// W1 started with `Runner::stream` (issue 21) on `channels`, the stream read to its end and
/// looked at only for its outcome: on every channel (`w1-stream`), what making and delivering
/// the items costs when the consumer drops them; on none (`w1-stream-outcome`), what a stream
/// read for its outcome alone costs. The run goes on in a task of its own, as
/// `Runner::stream` runs it.
struct Streamed<'a> {
    rt: &'a Runtime,
    channels: flow_core::stream::Channels,
}

impl Visit for Streamed<'_> {
    type Out = Result<Sample, BoxError>;

    fn visit<F: Flow<State = Counter> + Default>(self) -> Self::Out {
        use futures::StreamExt as _;
        let tb = Instant::now();
        let runner = Runner::new(F::default());
        let build_s = tb.elapsed().as_secs_f64();
        let steps = F::graph().methods.len();
        self.rt.block_on(async {
            let t0 = Instant::now();
            let mut items = std::pin::pin!(runner.stream(Counter::default(), self.channels));
            let mut outcome = None;
            while let Some(item) = items.next().await {
                if let flow_core::stream::StreamItem::Finished(o) = item {
                    outcome = Some(o);
                }
            }
            let wall = t0.elapsed();
            let out = outcome.ok_or("the stream ended without the run's outcome")??.completed()?;
            Ok(Sample { build_s, ..Sample::new(wall, steps, out.state.counter, steps as u64) })
        })
    }
}

/// W1 with the run inside a spawned task rather than the future `block_on` polls: the
/// executor is then woken through the run queue, not through the runtime's park path.
struct Spawned<'a> {
    rt: &'a Runtime,
}

impl Visit for Spawned<'_> {
    type Out = Result<Sample, BoxError>;

    fn visit<F: Flow<State = Counter> + Default>(self) -> Self::Out {
        let runner = Runner::new(F::default());
        let steps = F::graph().methods.len();
        self.rt.block_on(async {
            let task = tokio::spawn(async move {
                let t0 = Instant::now();
                let out = runner.kickoff(Counter::default()).await?.completed()?;
                Ok::<_, BoxError>((t0.elapsed(), out.state.counter))
            });
            let (wall, counter) = task.await??;
            Ok(Sample::new(wall, steps, counter, steps as u64))
        })
    }
}

/// Starts `m` runs at once, each a task, and waits for all; whether every run's counter is
/// `expect`.
async fn many<F: Flow<State = Counter>>(
    runner: &Runner<F>,
    m: usize,
    expect: u64,
) -> Result<(Duration, bool), BoxError> {
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..m {
        let r = runner.clone();
        set.spawn(async move { r.kickoff(Counter::default()).await?.completed() });
    }
    let mut ok = true;
    while let Some(joined) = set.join_next().await {
        ok &= joined??.state.counter == expect;
    }
    Ok((t0.elapsed(), ok))
}

/// W4 with every run held at its first step until all `m` are in flight: samples the
/// resident memory then, for the memory per run in flight.
fn in_flight(rt: &Runtime, m: usize) -> Result<Sample, BoxError> {
    let gate = Gate::new();
    let runner = Runner::new(Gated { gate: Arc::clone(&gate) });
    let before = cur_rss_kb();
    rt.block_on(async {
        let t0 = Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..m {
            let r = runner.clone();
            set.spawn(async move { r.kickoff(Counter::default()).await?.completed() });
        }
        while gate.arrived() < m {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let all_in = t0.elapsed();
        let during = cur_rss_kb();
        gate.open();
        let mut ok = true;
        while let Some(joined) = set.join_next().await {
            ok &= joined??.state.counter == 3;
        }
        let wall = t0.elapsed();
        let mut s = Sample { wall, steps: 3 * m, ok, ..Sample::default() };
        s.extra.push(("in_flight_rss_kb", during.into()));
        s.extra.push(("rss_before_kb", before.into()));
        s.extra.push(("in_flight_rss_per_run_kb", ((during - before).max(0) as f64 / m.max(1) as f64).into()));
        s.extra.push(("all_in_flight_s", all_in.as_secs_f64().into()));
        Ok(s)
    })
}
