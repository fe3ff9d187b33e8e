//! Many worker processes over one PostgreSQL, under chaos: the test submits runs of a flow with
//! fan-out, an and-join, journaled effects and a person's question, while worker processes
//! serve them; it SIGKILLs random workers (and starts new ones), freezes some with SIGSTOP past
//! their lease and thaws them with SIGCONT, answers the questions as they come, and restarts
//! the database server itself. Afterwards: every run completed with the state a calm run gives,
//! no step's update was committed twice, and no effect ran more often than the disruptions in
//! flight allow. It prints those figures.
//!
//! The server is a throwaway cluster of the test's own (it restarts it), started from the
//! installed server binaries; under `CI=true` a missing server fails the test.
//!
//! Knob: `FLOWS_CHAOS_SCALE` multiplies runs, kills and restarts (default 1, what CI runs):
//! `FLOWS_CHAOS_SCALE=10 cargo test -p flow-tests --test chaos -- --nocapture` is the soak run.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, reason = "the chaos test uses only the restartable cluster of the shared module")]
#[path = "pg_support/mod.rs"]
mod pg_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_core::prelude::*;
use flow_core::store::{PgStore, RunFilter, Store};
use flow_core::{RunStatus, ServeOptions, Worker};
use serde::{Deserialize, Serialize};

/// Worker processes serving at once.
const WORKERS: usize = 4;
/// Runs per unit of scale.
const RUNS: usize = 300;
/// SIGKILLs per unit of scale.
const KILLS: usize = 100;
/// SIGSTOP/SIGCONT freezes per unit of scale.
const FREEZES: usize = 8;
/// Database restarts per unit of scale.
const RESTARTS: usize = 3;
/// Every this many runs, one asks a person.
const ASK_EVERY: usize = 5;
const LEASE: Duration = Duration::from_millis(600);
/// Runs each worker executes at once.
const IN_FLIGHT: usize = 16;

#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    /// Which run of the test this is (its position in submission order).
    n: usize,
    /// How many times each step's update was applied: 1 each when nothing ran twice.
    applied: BTreeMap<String, u32>,
    /// The effects' results, per step: the journal hands back the first one on a re-run.
    receipts: BTreeMap<String, String>,
    /// The person's answer, for the runs that ask.
    approved: Option<bool>,
}

struct Chaos {
    ledger: PathBuf,
}

fn append(ledger: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(ledger).expect("ledger");
    // One write of one line, appended: lines of concurrent processes never interleave.
    f.write_all(format!("{line}\n").as_bytes()).expect("ledger write");
}

/// A small pseudo-random number, different in every call and process.
fn jitter(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(nanos ^ std::process::id().rotate_left(16)) % max.max(1)
}

impl Chaos {
    async fn step(&self, cx: &Ctx<Order>, name: &'static str) -> Result<()> {
        append(&self.ledger, &format!("start {} {}", cx.run_id(), cx.step_key()));
        let ledger = self.ledger.clone();
        let receipt: String = cx
            .effect("charge", |key| async move {
                append(&ledger, &format!("effect {key}"));
                tokio::time::sleep(Duration::from_millis(5 + jitter(25))).await;
                Ok(format!("receipt:{key}"))
            })
            .await?;
        append(&self.ledger, &format!("done {receipt}"));
        tokio::time::sleep(Duration::from_millis(jitter(10))).await;
        cx.update(move |s| {
            *s.applied.entry(name.to_string()).or_default() += 1;
            s.receipts.insert(name.to_string(), receipt.clone());
        });
        Ok(())
    }
}

#[flow(state = Order, name = "chaos_order")]
impl Chaos {
    #[start]
    async fn intake(&self, cx: &Ctx<Order>) -> Result<()> {
        self.step(cx, "intake").await
    }
    #[listen(intake)]
    async fn price(&self, cx: &Ctx<Order>) -> Result<()> {
        self.step(cx, "price").await
    }
    #[listen(intake)]
    async fn stock(&self, cx: &Ctx<Order>) -> Result<()> {
        self.step(cx, "stock").await
    }
    #[listen(and(price, stock))]
    async fn review(&self, cx: &Ctx<Order>) -> Result<()> {
        self.step(cx, "review").await?;
        if cx.read(|s| s.n % ASK_EVERY == 0) {
            let yes: bool = cx.ask(InputRequest::new("Approve the order?")).await?;
            cx.update(move |s| s.approved = Some(yes));
        }
        Ok(())
    }
    #[listen(review)]
    async fn ship(&self, cx: &Ctx<Order>) -> Result<()> {
        self.step(cx, "ship").await
    }
}

const STEPS: [&str; 5] = ["intake", "price", "stock", "review", "ship"];

/// A worker process: serves the flow until it is killed.
/// Run as an ordinary test (without the variables the chaos test sets), it does nothing.
#[test]
fn chaos_worker() {
    let (Ok(url), Ok(ledger)) = (std::env::var("FLOWS_CHAOS_URL"), std::env::var("FLOWS_CHAOS_LEDGER")) else {
        return;
    };
    let _ = tracing_subscriber::fmt().with_env_filter("flow_core=info").with_writer(std::io::stderr).try_init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        // The database may be restarting when this process starts: try until it answers.
        let store = loop {
            match PgStore::connect(&url).await {
                Ok(store) => break store,
                Err(e) => {
                    eprintln!("worker {}: store not ready ({e}); retrying", std::process::id());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let store: Arc<dyn Store> = Arc::new(store);
        let worker = Worker::new(store).lease(LEASE).register(Chaos { ledger: PathBuf::from(ledger) });
        let options =
            ServeOptions::new().max_in_flight(IN_FLIGHT).poll_interval(Duration::from_millis(100)).lease(LEASE);
        // Serves until the test kills this process.
        worker.serve(options).until_signal(Duration::from_secs(5)).await;
    });
}

struct Workers {
    url: String,
    ledger: PathBuf,
    logs: PathBuf,
    live: Vec<Child>,
    started: usize,
}

impl Workers {
    fn spawn(&mut self) {
        self.started += 1;
        let log = std::fs::File::create(self.logs.join(format!("worker-{}.log", self.started))).expect("log file");
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["chaos_worker", "--exact", "--nocapture", "--test-threads=1"])
            .env("FLOWS_CHAOS_URL", &self.url)
            .env("FLOWS_CHAOS_LEDGER", &self.ledger)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn worker");
        self.live.push(child);
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.live[i].id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.live.swap_remove(i);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.live {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn scale() -> usize {
    match std::env::var("FLOWS_CHAOS_SCALE") {
        Ok(v) => v.trim().parse().unwrap_or_else(|e| panic!("FLOWS_CHAOS_SCALE={v:?} is not a whole number: {e}")),
        Err(_) => 1,
    }
}

#[test]
fn many_workers_survive_kills_freezes_and_database_restarts() {
    let cluster = match pg_support::Cluster::start() {
        Ok(c) => c,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the chaos test never skips under CI=true, and no cluster could be started: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED chaos: no throwaway PostgreSQL cluster: {why}");
            return;
        }
    };
    let scale = scale();
    let (runs_wanted, kills_wanted, freezes_wanted, restarts_wanted) =
        (RUNS * scale, KILLS * scale, FREEZES * scale, RESTARTS * scale);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.txt");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let store: Arc<dyn Store> = Arc::new(rt.block_on(PgStore::connect(&cluster.url)).expect("store"));
    let runner = Runner::new(Chaos { ledger: ledger.clone() }).with_shared_store(Arc::clone(&store));

    let mut workers = Workers {
        url: cluster.url.clone(),
        ledger: ledger.clone(),
        logs: dir.path().to_path_buf(),
        live: Vec::new(),
        started: 0,
    };
    for _ in 0..WORKERS {
        workers.spawn();
    }

    let started = Instant::now();
    let mut submitted: Vec<uuid::Uuid> = Vec::new();
    let (mut kills, mut freezes, mut restarts, mut answered) = (0usize, 0usize, 0usize, HashSet::new());
    let mut frozen: Option<(usize, Instant)> = None;
    // Chaos is paced so that it lands while runs are in flight: one run is submitted per tick
    // (a few hundred ticks), while nearly half the ticks kill a worker.
    let mut tick = 0usize;
    loop {
        tick += 1;
        assert!(started.elapsed() < Duration::from_secs(600 * scale as u64), "the chaos test did not converge");
        // Submit the next batch (a restart in progress fails a submit: try again next tick).
        while submitted.len() < runs_wanted && submitted.len() < tick {
            let n = submitted.len();
            match rt.block_on(runner.submit(Order { n, ..Order::default() })) {
                Ok(id) => submitted.push(id),
                Err(e) => {
                    eprintln!("submit {n} failed (the database may be restarting): {e}");
                    break;
                }
            }
        }
        // Answer the questions that are waiting (approve the even ones).
        if let Ok(paused) = rt.block_on(runner.paused_runs()) {
            for p in paused.iter() {
                if answered.contains(&p.run_id) {
                    continue;
                }
                let n = submitted.iter().position(|id| *id == p.run_id).expect("a submitted run");
                match rt.block_on(runner.answer(p.run_id, n % 2 == 0)) {
                    Ok(()) => {
                        answered.insert(p.run_id);
                    }
                    Err(e) => eprintln!("answer for run {} not taken yet: {e}", p.run_id),
                }
            }
        }
        // Thaw a frozen worker once its lease has surely lapsed (another worker took its runs).
        if let Some((i, since)) = frozen
            && since.elapsed() > LEASE * 3
        {
            workers.signal(i, "-CONT");
            frozen = None;
        }
        let roll = jitter(100);
        if kills < kills_wanted && roll < 45 && frozen.is_none() {
            let i = jitter(workers.live.len() as u64) as usize;
            workers.kill(i);
            kills += 1;
            workers.spawn();
        } else if freezes < freezes_wanted && roll < 55 && frozen.is_none() {
            let i = jitter(workers.live.len() as u64) as usize;
            workers.signal(i, "-STOP");
            frozen = Some((i, Instant::now()));
            freezes += 1;
        } else if restarts < restarts_wanted
            && roll < 58
            && submitted.len() > runs_wanted * (restarts + 1) / (restarts_wanted + 2)
        {
            cluster.restart().expect("restart the database");
            restarts += 1;
        }
        std::thread::sleep(Duration::from_millis(40 + jitter(80)));

        let chaos_done = kills >= kills_wanted && freezes >= freezes_wanted && restarts >= restarts_wanted;
        if chaos_done && frozen.is_none() && submitted.len() == runs_wanted {
            let open = rt
                .block_on(store.list_runs(&RunFilter::default()))
                .map(|l| l.iter().filter(|r| r.status != RunStatus::Completed).count());
            if open.is_ok_and(|n| n == 0) {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    drop(workers);

    // Every run completed, with the state a calm run gives.
    let mut step_reruns = Vec::new();
    for (n, id) in submitted.iter().enumerate() {
        let record = rt.block_on(store.load_run(*id)).expect("load run");
        assert_eq!(record.status, RunStatus::Completed, "run {id} (#{n})");
        let state: Order = record.snapshot.state_as().expect("state");
        assert_eq!(state.n, n);
        for step in STEPS {
            match state.applied.get(step) {
                Some(1) => {}
                other => step_reruns.push(format!("run {id} step {step}: applied {other:?} times")),
            }
            let receipt = state.receipts.get(step).expect("a receipt per step");
            assert!(receipt.starts_with(&format!("receipt:{id}:{step}#1:")), "run {id} step {step}: {receipt}");
        }
        let expected = (n % ASK_EVERY == 0).then_some(n % 2 == 0);
        assert_eq!(state.approved, expected, "run {id} (#{n}): the answer given");
    }

    // The ledger: how often each effect and step body ran.
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let mut effects: HashMap<&str, usize> = HashMap::new();
    let mut bodies: HashMap<String, usize> = HashMap::new();
    let mut done: HashSet<&str> = HashSet::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("effect"), Some(key), None) => *effects.entry(key).or_default() += 1,
            (Some("done"), Some(receipt), None) => {
                done.insert(receipt);
            }
            (Some("start"), Some(run), Some(step)) => *bodies.entry(format!("{run} {step}")).or_default() += 1,
            _ => panic!("bad ledger line {line:?}"),
        }
    }
    let steps = submitted.len() * STEPS.len();
    let repeated_effects: usize = effects.values().map(|n| n - 1).sum();
    let repeated_bodies: usize = bodies.values().map(|n| n - 1).sum();
    let most_runs_of_one_effect = effects.values().copied().max().unwrap_or(0);
    let fenced = count_in_logs(dir.path(), "lease lost");
    eprintln!(
        "chaos test: {} runs over {WORKERS} worker processes ({} started), {kills} SIGKILLs, {freezes} SIGSTOP/SIGCONT \
         freezes, {restarts} database restarts, {} questions answered, in {:.1} s; {steps} steps committed once each \
         ({} step updates applied twice); {} effects ({repeated_effects} ran again, at most {most_runs_of_one_effect} \
         times for one); {repeated_bodies} step bodies ran again; {fenced} executions stopped by a lost lease",
        submitted.len(),
        workers_started(&dir),
        answered.len(),
        elapsed.as_secs_f64(),
        step_reruns.len(),
        effects.len(),
    );
    assert!(step_reruns.is_empty(), "step updates committed more than once: {step_reruns:?}");
    assert_eq!(effects.len(), steps, "one journaled effect per step");
    assert_eq!(done.len(), steps, "every effect's result reached its step");
    // A body runs again only when its execution was cut: a kill or a freeze cuts at most the
    // runs that worker held, a restart at most every run in flight.
    let disruptions = (kills + freezes) * IN_FLIGHT + restarts * WORKERS * IN_FLIGHT;
    assert!(
        repeated_effects <= disruptions,
        "{repeated_effects} effects ran again, more than {disruptions} cuts allow"
    );
    assert!(
        most_runs_of_one_effect <= 1 + kills + freezes + restarts,
        "one effect ran {most_runs_of_one_effect} times, more than the disruptions allow"
    );
}

fn count_in_logs(dir: &Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| text.lines().filter(|l| l.contains(needle)).count())
        .sum()
}

fn workers_started(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
        .count()
}
