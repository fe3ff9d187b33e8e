//! The PostgreSQL workloads: W5 on PostgreSQL (`w5-pg`) against a bare insert-and-commit on the
//! same server (`w5-pg-limit`), W6 (durable steps per second with one or more worker processes
//! sharing one server, `w6`) against the bare commit throughput at the same concurrency
//! (`w6-limit`), and the time another worker takes a run over after its worker was killed
//! (`takeover`).
//!
//! The server is `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`. Every
//! measurement works in a schema of its own (`flows_bench_<uuid>`), dropped at its end.
//!
//! **The limit.** A bare write is one autocommit `INSERT` of a row (run, sequence number, the
//! state's JSON) through a prepared statement: one round trip and one commit, the least a durable
//! step can cost. The W6 limit runs the same number of tasks per process as W6 runs flows in
//! flight, each looping over that insert, on a pool of the same size as the store's.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flow_core::prelude::*;
use flow_core::store::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use flow_core::store::tokio_postgres::{Config, NoTls};
use flow_core::store::{PgStore, Store};
use flow_core::{RunStatus, ServeOptions, Worker};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::flows::{CHAIN_SIZES, Chain10, Counter, Visit, visit_chain};
use crate::measure::Record;
use crate::workloads::{BoxError, Sample};

/// The server when `DATABASE_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Connections per worker process, for the store and for the limit alike: what
/// `PgStore::connect` opens.
pub const POOL: usize = 16;

/// Steps per W6 run (a [`Chain10`]).
pub const W6_CHAIN: usize = 10;

/// The bare write of the limits.
const BARE_INSERT: &str = "INSERT INTO bare_commits (run, seq, state) VALUES ($1, $2, $3)";

const BARE_TABLE: &str = "CREATE TABLE IF NOT EXISTS bare_commits (run text NOT NULL, seq bigint NOT NULL, \
     state text NOT NULL, PRIMARY KEY (run, seq))";

/// The server's URL.
pub fn url() -> String {
    std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// A schema of its own for one measurement.
pub struct Schema {
    url: String,
    /// Its name.
    pub name: String,
}

impl Schema {
    /// Creates `flows_bench_<uuid>` on the server.
    pub async fn create() -> Result<Schema, BoxError> {
        Schema::create_at(url()).await
    }

    /// Creates `flows_bench_<uuid>` on the server at `url`.
    pub async fn create_at(url: String) -> Result<Schema, BoxError> {
        let name = format!("flows_bench_{}", Uuid::new_v4().simple());
        let admin = connect(url.parse()?).await?;
        admin.batch_execute(&format!("CREATE SCHEMA {name}")).await?;
        Ok(Schema { url, name })
    }

    /// An existing schema (a worker process's view of its parent's).
    pub fn existing(name: &str) -> Schema {
        Schema { url: url(), name: name.to_string() }
    }

    /// The connection settings, with the schema as `search_path`.
    pub fn config(&self) -> Result<Config, BoxError> {
        let mut config: Config = self.url.parse()?;
        config.options(format!("-c search_path={}", self.name));
        Ok(config)
    }

    /// A pool of `size` connections to the schema.
    pub fn pool(&self, size: usize) -> Result<Pool, BoxError> {
        let manager =
            Manager::from_config(self.config()?, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        Ok(Pool::builder(manager).max_size(size).build()?)
    }

    /// Drops the schema and everything in it.
    pub async fn drop_all(self) -> Result<(), BoxError> {
        let admin = connect(self.url.parse()?).await?;
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).await?;
        Ok(())
    }
}

async fn connect(config: Config) -> Result<flow_core::store::tokio_postgres::Client, BoxError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `n` bare writes in a row on one pooled connection; their wall time.
async fn bare_commits(pool: &Pool, run: &str, n: usize) -> Result<Duration, BoxError> {
    let client = pool.get().await?;
    client.batch_execute(BARE_TABLE).await?;
    let stmt = client.prepare_cached(BARE_INSERT).await?;
    let t0 = Instant::now();
    for i in 0..n {
        let state = format!("{{\"counter\":{}}}", i + 1);
        client.execute(&stmt, &[&run, &(i as i64), &state]).await?;
    }
    Ok(t0.elapsed())
}

/// Runs one PostgreSQL measurement in this process.
pub(crate) fn once(id: &str, n: usize, rt: &Runtime, workers: usize, secs: f64) -> Result<Sample, BoxError> {
    match id {
        "w5-pg" => w5(n, rt),
        "w5-pg-limit" => rt.block_on(async {
            let schema = Schema::create().await?;
            let pool = schema.pool(1)?;
            let wall = bare_commits(&pool, "limit", n).await;
            drop(pool);
            schema.drop_all().await?;
            let wall = wall?;
            Ok(Sample { wall, steps: n, ok: true, ..Sample::default() })
        }),
        "w6" | "w6-limit" => w6(id == "w6-limit", workers, n, secs, rt),
        "takeover" => rt.block_on(takeover(Duration::from_millis(n as u64))),
        _ => Err(format!("unknown PostgreSQL workload `{id}`").into()),
    }
}

/// W5 on PostgreSQL: a chain of `n` durable steps, bracketed by `n` bare writes before and after.
fn w5(n: usize, rt: &Runtime) -> Result<Sample, BoxError> {
    let schema = rt.block_on(Schema::create())?;
    let result = (|| {
        let pool = schema.pool(POOL)?;
        let before = rt.block_on(bare_commits(&pool, "before", n))?;
        let store = group_commit(rt.block_on(PgStore::from_pool(pool.clone()))?)?;
        let mut s = visit_chain(n, PgChain { rt, store })
            .ok_or_else(|| format!("W5 is compiled for sizes {CHAIN_SIZES:?} only, not {n}"))??;
        let after = rt.block_on(bare_commits(&pool, "after", n))?;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let per_step = per(s.wall);
        let (before, after) = (per(before), per(after));
        s.extra.push(("bare_commit_before_us", before.into()));
        s.extra.push(("bare_commit_us", after.into()));
        s.extra.push(("ratio_to_bare_commit", (per_step / after).into()));
        let bracket = (before + after) / 2.0;
        s.extra.push(("bare_commit_bracket_us", bracket.into()));
        s.extra.push(("ratio_to_bracket", (per_step / bracket).into()));
        Ok(s)
    })();
    rt.block_on(schema.drop_all())?;
    result
}

/// Runs a chain once on a [`PgStore`].
struct PgChain<'a> {
    rt: &'a Runtime,
    store: PgStore,
}

impl Visit for PgChain<'_> {
    type Out = Result<Sample, BoxError>;

    fn visit<F: Flow<State = Counter> + Default>(self) -> Self::Out {
        let runner = Runner::new(F::default()).with_store(self.store);
        let steps = F::graph().methods.len();
        self.rt.block_on(async {
            let t0 = Instant::now();
            let out = runner.kickoff(Counter::default()).await?.completed()?;
            let wall = t0.elapsed();
            let mut s = Sample { wall, steps, ok: out.state.counter == steps as u64, ..Sample::default() };
            s.counter = Some(out.state.counter);
            Ok(s)
        })
    }
}

/// W6 and its limit: `workers` processes, each keeping `in_flight` runs (or bare writers) busy
/// for `secs` seconds, started together; their steps (writes) per second added up.
fn w6(limit: bool, workers: usize, in_flight: usize, secs: f64, rt: &Runtime) -> Result<Sample, BoxError> {
    let schema = rt.block_on(Schema::create())?;
    let result = (|| {
        // The schema is migrated (or the table made) once, before the workers start.
        let pool = schema.pool(1)?;
        rt.block_on(async {
            if limit {
                pool.get().await?.batch_execute(BARE_TABLE).await?;
            } else {
                PgStore::from_pool(pool).await?;
            }
            Ok::<_, BoxError>(())
        })?;
        let kind = if limit { "w6-limit" } else { "w6" };
        let mut children = Vec::with_capacity(workers);
        for _ in 0..workers {
            children.push(spawn_worker(kind, in_flight, secs, &schema.name)?);
        }
        let mut lines = Vec::new();
        for child in &mut children {
            lines.push(ready(child)?);
        }
        for child in &mut children {
            let stdin = child.stdin.as_mut().ok_or("a worker's stdin is not piped")?;
            writeln!(stdin, "go")?;
            stdin.flush()?;
        }
        let mut steps = 0.0;
        let mut wall: f64 = 0.0;
        let mut per_worker = Vec::new();
        for (child, lines) in children.iter_mut().zip(lines) {
            let rec = lines.lines().find_map(|l| l.ok().and_then(|l| Record::from_line(&l)));
            let status = child.wait()?;
            let rec = rec.ok_or_else(|| format!("a {kind} worker printed no result ({status})"))?;
            let n = rec.num("steps").ok_or("a worker's result has no steps")?;
            let w = rec.num("wall_s").ok_or("a worker's result has no wall time")?;
            steps += n;
            wall = wall.max(w);
            per_worker.push(n / w);
        }
        let mut s =
            Sample { wall: Duration::from_secs_f64(wall), steps: steps as usize, ok: steps > 0.0, ..Sample::default() };
        s.extra.push(("workers", workers.into()));
        s.extra.push(("in_flight_per_worker", in_flight.into()));
        s.extra.push(("pool_per_worker", POOL.into()));
        s.extra.push(("steps_per_s", (steps / wall).into()));
        s.extra.push(("per_worker_steps_per_s", per_worker.into()));
        Ok(s)
    })();
    rt.block_on(schema.drop_all())?;
    result
}

fn spawn_worker(kind: &str, in_flight: usize, secs: f64, schema: &str) -> Result<Child, BoxError> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["pg-worker", kind, &in_flight.to_string(), &secs.to_string(), schema])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// Waits for a worker's `ready` line; returns the rest of its output.
fn ready(child: &mut Child) -> Result<BufReader<std::process::ChildStdout>, BoxError> {
    let stdout = child.stdout.take().ok_or("a worker's stdout is not piped")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("a worker said `{}` instead of `ready`", line.trim()).into());
    }
    Ok(reader)
}

/// A worker process of W6 (`flow-bench pg-worker <w6|w6-limit|takeover> <in_flight> <secs>
/// <schema>`): sets up, prints `ready`, waits for a line on stdin, works, prints its record.
pub fn worker_main(args: &[String]) -> Result<(), BoxError> {
    let [kind, in_flight, secs, schema] = args else {
        return Err("usage: flow-bench pg-worker <w6|w6-limit|takeover> <in_flight> <secs> <schema>".into());
    };
    let in_flight: usize = in_flight.parse()?;
    let secs: f64 = secs.parse()?;
    let schema = Schema::existing(schema);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let pool = schema.pool(POOL)?;
        if kind == "takeover" {
            return takeover_worker(pool).await;
        }
        let deadline = Duration::from_secs_f64(secs);
        let steps = Arc::new(AtomicU64::new(0));
        let mut set = JoinSet::new();
        let t0;
        if kind == "w6-limit" {
            // Every connection prepared before the start, as the store's are after its warm-up.
            let mut held = Vec::new();
            for _ in 0..POOL {
                let client = pool.get().await?;
                client.prepare_cached(BARE_INSERT).await?;
                held.push(client);
            }
            drop(held);
            go()?;
            t0 = Instant::now();
            for task in 0..in_flight {
                let (pool, steps) = (pool.clone(), Arc::clone(&steps));
                set.spawn(async move {
                    let run = Uuid::new_v4().to_string();
                    let mut seq = 0_i64;
                    while t0.elapsed() < deadline {
                        let client = pool.get().await?;
                        let stmt = client.prepare_cached(BARE_INSERT).await?;
                        seq += 1;
                        let state = format!("{{\"counter\":{seq},\"task\":{task}}}");
                        client.execute(&stmt, &[&run, &seq, &state]).await?;
                        steps.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, BoxError>(())
                });
            }
        } else {
            let store = group_commit(PgStore::from_pool(pool).await?)?;
            let runner = Runner::new(Chain10).with_store(store);
            // Warm-up: enough runs at once to prepare every connection's statements.
            let mut warm = JoinSet::new();
            for _ in 0..POOL * 2 {
                let r = runner.clone();
                warm.spawn(async move { r.kickoff(Counter::default()).await?.completed() });
            }
            while let Some(done) = warm.join_next().await {
                done??;
            }
            go()?;
            t0 = Instant::now();
            for _ in 0..in_flight {
                let (runner, steps) = (runner.clone(), Arc::clone(&steps));
                set.spawn(async move {
                    while t0.elapsed() < deadline {
                        let out = runner.kickoff(Counter::default()).await?.completed()?;
                        if out.state.counter != W6_CHAIN as u64 {
                            return Err(format!("a W6 run ended at counter {}", out.state.counter).into());
                        }
                        steps.fetch_add(W6_CHAIN as u64, Ordering::Relaxed);
                    }
                    Ok::<_, BoxError>(())
                });
            }
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
        let wall = t0.elapsed();
        let mut rec = Record::new(kind, "worker", in_flight);
        rec.timing(wall.as_secs_f64(), steps.load(Ordering::Relaxed) as usize);
        emit(&rec.to_line());
        Ok(())
    })
}

/// The store's group commit as `FLOW_BENCH_PG_GROUP=<max_batch>,<in_flight>` sets it (unset: the
/// store's default; `1,1`: every commit on its own statement), to compare settings without a
/// rebuild.
fn group_commit(store: PgStore) -> Result<PgStore, BoxError> {
    let Ok(setting) = std::env::var("FLOW_BENCH_PG_GROUP") else { return Ok(store) };
    let parsed = setting.split_once(',').and_then(|(b, f)| Some((b.trim().parse().ok()?, f.trim().parse().ok()?)));
    let Some((max_batch, in_flight)) = parsed else {
        return Err(
            format!("FLOW_BENCH_PG_GROUP is `{setting}`; write it as <max_batch>,<in_flight>, e.g. 64,4").into()
        );
    };
    Ok(store.group_commit(max_batch, in_flight))
}

#[allow(clippy::print_stdout)]
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Says `ready` and waits for the parent's line.
fn go() -> Result<(), BoxError> {
    emit("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

/// How long the takeover run's step takes, each time it runs.
const SLOW_STEP: Duration = Duration::from_millis(300);

/// The takeover flow: one step that takes `SLOW_STEP` (300 ms), then a second that adds 1.
#[derive(Debug, Default)]
pub struct Slow;

#[flow(state = Counter, name = "bench_slow")]
impl Slow {
    #[start]
    async fn wait(&self, cx: &Ctx<Counter>) -> Result<()> {
        tokio::time::sleep(SLOW_STEP).await;
        cx.update(|s| s.counter += 1);
        Ok(())
    }

    #[listen(wait)]
    async fn done(&self, cx: &Ctx<Counter>) -> Result<()> {
        cx.update(|s| s.counter += 1);
        Ok(())
    }
}

/// The lease of the takeover measurement's workers, set by the size (milliseconds).
fn worker(store: Arc<dyn Store>, lease: Duration) -> Worker {
    Worker::new(store).lease(lease).register(Slow)
}

/// The worker the takeover measurement kills: serves the default queue until it is killed.
async fn takeover_worker(pool: Pool) -> Result<(), BoxError> {
    let lease: u64 = std::env::var("FLOW_BENCH_LEASE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let lease = Duration::from_millis(lease);
    let store: Arc<dyn Store> = Arc::new(PgStore::from_pool(pool).await?);
    let serving = worker(store, lease).serve(ServeOptions::new().lease(lease).name("bench-victim"));
    go()?;
    // Killed here, mid-run; a parent that goes away ends it too.
    tokio::time::sleep(Duration::from_secs(120)).await;
    serving.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Takeover: a worker process claims a run and is killed (SIGKILL) in its first step; a second
/// worker, serving all along with the same lease, takes the run over once the lease has lapsed.
/// Reports the time from the kill to the second worker's claim and to the run's completion.
async fn takeover(lease: Duration) -> Result<Sample, BoxError> {
    let schema = Schema::create().await?;
    let result = async {
        let store: Arc<dyn Store> = Arc::new(PgStore::from_pool(schema.pool(4)?).await?);
        let mut victim = Command::new(std::env::current_exe()?)
            .args(["pg-worker", "takeover", "0", "0", &schema.name])
            .env("FLOW_BENCH_LEASE_MS", lease.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let _ = ready(&mut victim)?;
        let run_id = Runner::new(Slow).with_shared_store(Arc::clone(&store)).submit(Counter::default()).await?;
        let victim_epoch = loop {
            let run = store.load_run(run_id).await?;
            if run.lease_owner.as_deref() == Some("bench-victim") {
                break run.epoch;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        // The victim is inside its first step: kill it there, then start the survivor.
        victim.kill()?;
        let killed = Instant::now();
        victim.wait()?;
        let serving = worker(Arc::clone(&store), lease).serve(ServeOptions::new().lease(lease).name("bench-survivor"));
        let mut taken = None;
        let status = loop {
            let run = store.load_run(run_id).await?;
            if taken.is_none() && run.epoch > victim_epoch {
                taken = Some(killed.elapsed());
            }
            // Queued is where the run starts, and where the victim's lease leaves it.
            if !matches!(run.status, RunStatus::Queued | RunStatus::Running) {
                break run.status;
            }
            if killed.elapsed() > lease * 4 + Duration::from_secs(10) {
                return Err(format!("run {run_id} was not taken over and finished ({:?})", run.status).into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let finished = killed.elapsed();
        serving.shutdown(Duration::from_secs(5)).await;
        let taken = taken.unwrap_or(finished);
        let mut s = Sample { wall: taken, steps: 1, ok: status == RunStatus::Completed, ..Sample::default() };
        s.extra.push(("lease_ms", (lease.as_millis() as u64).into()));
        s.extra.push(("takeover_s", taken.as_secs_f64().into()));
        s.extra.push(("recovered_s", finished.as_secs_f64().into()));
        s.extra.push(("step_ms", (SLOW_STEP.as_millis() as u64).into()));
        Ok::<_, BoxError>(s)
    }
    .await;
    schema.drop_all().await?;
    result
}
