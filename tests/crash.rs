//! A child process runs flows on a SQLite file and is killed with SIGKILL at random points,
//! again and again; after each kill a fresh process resumes the run. Afterwards: every run
//! completed, no completed step ran again, no journaled effect ran again, only effects in
//! flight at a kill repeated, and the file is intact.
//!
//! The number of kills is a knob: `FLOWS_CRASH_KILLS` (default 50, what CI runs), e.g.
//! `FLOWS_CRASH_KILLS=500 cargo test -p flow-tests --test crash -- --nocapture`. BENCHMARKS.md
//! records a 500-kill run.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flow_core::prelude::*;
use std::sync::Arc;

use flow_core::store::{SqliteStore, Store};
use flow_core::{RunStatus, Worker};
use serde::{Deserialize, Serialize};

const STEPS: [&str; 8] = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"];
/// Kills when `FLOWS_CRASH_KILLS` is not set: what CI runs.
const DEFAULT_KILLS: usize = 50;
const LEASE: Duration = Duration::from_millis(250);

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Progress {
    done: Vec<String>,
    violations: Vec<String>,
}

struct Crashy {
    ledger: PathBuf,
}

fn append(ledger: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(ledger).expect("ledger");
    // One write: `writeln!` writes the text and the newline separately, and a SIGKILL between
    // the two leaves a line without its end, which the next process's line then continues.
    f.write_all(format!("{line}\n").as_bytes()).expect("ledger write");
}

/// A small pseudo-random delay, different in every process.
fn jitter_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(nanos ^ std::process::id()) % max
}

impl Crashy {
    async fn step(&self, cx: &Ctx<Progress>, name: &'static str) -> Result<()> {
        append(&self.ledger, &format!("start {} {}", cx.run_id(), cx.step_key()));
        if cx.read(|s| s.done.iter().any(|d| d == name)) {
            // Reaching here means the step's checkpoint was stored and the step still ran.
            append(&self.ledger, &format!("VIOLATION {} {}", cx.run_id(), cx.step_key()));
            cx.update(move |s| s.violations.push(name.to_string()));
        }
        let ledger = self.ledger.clone();
        // The effect hands back its key (`run:step:seq`), from its body or from the journal.
        let key: String = cx
            .effect("side_effect", |key| async move {
                append(&ledger, &format!("effect {key}"));
                tokio::time::sleep(Duration::from_millis(jitter_ms(15))).await;
                Ok(key)
            })
            .await?;
        // Written once `effect` returned, that is, once its result is journaled: from here on
        // the journal must replay it, so its body running again is a violation. A kill between
        // the body's end and the journal write may legitimately run it again, which is why
        // completion is not recorded inside the body.
        append(&self.ledger, &format!("done {key}"));
        tokio::time::sleep(Duration::from_millis(jitter_ms(15))).await;
        cx.update(move |s| s.done.push(name.to_string()));
        Ok(())
    }
}

#[flow(state = Progress, name = "crashy")]
impl Crashy {
    #[start]
    async fn s1(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s1").await
    }
    #[listen(s1)]
    async fn s2(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s2").await
    }
    #[listen(s2)]
    async fn s3(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s3").await
    }
    #[listen(s3)]
    async fn s4(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s4").await
    }
    #[listen(s4)]
    async fn s5(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s5").await
    }
    #[listen(s5)]
    async fn s6(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s6").await
    }
    #[listen(s6)]
    async fn s7(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s7").await
    }
    #[listen(s7)]
    async fn s8(&self, cx: &Ctx<Progress>) -> Result<()> {
        self.step(cx, "s8").await
    }
}

/// The child process: kicks off a run, or resumes the one named in `FLOW_CRASH_RESUME`.
#[test]
fn crash_child() {
    let (Ok(db), Ok(ledger)) = (std::env::var("FLOW_CRASH_DB"), std::env::var("FLOW_CRASH_LEDGER")) else {
        return; // run as an ordinary test: nothing to do
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.expect("store"));
        let ledger = PathBuf::from(ledger);
        match std::env::var("FLOW_CRASH_RESUME") {
            Ok(id) => {
                // A fresh process knows the run only by its id: the worker finds its flow by
                // the name stored with it.
                let worker = Worker::new(store).lease(LEASE).register(Crashy { ledger });
                let id = id.parse().expect("run id");
                loop {
                    match worker.resume(id).await {
                        // The killed process's lease has not expired yet.
                        Err(FlowError::RunLocked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => {
                            assert_eq!(other.expect("resume"), RunStatus::Completed);
                            break;
                        }
                    }
                }
            }
            Err(_) => {
                let runner = Runner::new(Crashy { ledger }).with_shared_store(store).lease(LEASE);
                runner.kickoff(Progress::default()).await.expect("kickoff").completed().expect("completed");
            }
        }
    });
}

fn spawn_child(db: &Path, ledger: &Path, resume: Option<&str>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("FLOW_CRASH_DB", db)
        .env("FLOW_CRASH_LEDGER", ledger)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(id) = resume {
        cmd.env("FLOW_CRASH_RESUME", id);
    }
    cmd.spawn().expect("spawn child")
}

/// Lets the child run for `budget`, then kills it. Returns whether it was killed (true) or
/// finished on its own (false).
fn run_then_kill(mut child: Child, budget: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < budget {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "child failed: {status}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    true
}

/// `FLOWS_CRASH_KILLS`, or the CI default.
fn kills_wanted() -> usize {
    match std::env::var("FLOWS_CRASH_KILLS") {
        Ok(v) => v.trim().parse().unwrap_or_else(|e| panic!("FLOWS_CRASH_KILLS={v:?} is not a count of kills: {e}")),
        Err(_) => DEFAULT_KILLS,
    }
}

fn unfinished_run(db: &Path) -> Option<String> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row("SELECT run_id FROM flow_runs WHERE status != 'completed' LIMIT 1", [], |r| r.get(0)).ok()
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    if std::env::var("FLOW_CRASH_DB").is_ok() {
        return; // inside a child
    }
    let wanted = kills_wanted();
    assert!(wanted > 0, "FLOWS_CRASH_KILLS must be at least 1");
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("runs.db");
    let ledger = dir.path().join("ledger.txt");
    let mut kills = 0usize;
    let mut runs = 0usize;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while kills < wanted {
        runs += 1;
        assert!(runs <= 8 * wanted, "too few kills landed: {kills} in {runs} runs");
        // A fresh run: the whole chain takes about 150 ms after start-up.
        if run_then_kill(spawn_child(&db, &ledger, None), Duration::from_millis(5 + next() % 150)) {
            kills += 1;
        }
        // Resume in fresh processes until the run completes, killing most of them too.
        while let Some(id) = unfinished_run(&db) {
            let child = spawn_child(&db, &ledger, Some(&id));
            if kills < wanted && next() % 4 != 0 {
                // The resumer first waits for the killed process's lease to expire.
                if run_then_kill(child, LEASE + Duration::from_millis(next() % 150)) {
                    kills += 1;
                }
            } else {
                let out = child.wait_with_output().expect("resume to completion");
                assert!(out.status.success(), "resume failed: {}", out.status);
            }
        }
    }

    let conn = rusqlite::Connection::open(&db).expect("open");
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity");
    assert_eq!(integrity, "ok");
    let mut stmt = conn
        .prepare(
            "SELECT r.run_id, r.status, c.state FROM flow_runs r JOIN flow_checkpoints c ON c.run_id = r.run_id \
             WHERE c.seq = (SELECT MAX(seq) FROM flow_checkpoints WHERE run_id = r.run_id)",
        )
        .expect("query");
    let rows: Vec<(String, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("rows").map(|r| r.expect("row")).collect();
    // A child killed during its own start-up never created its run.
    assert!(!rows.is_empty() && rows.len() <= runs, "{} stored runs for {runs} kickoffs", rows.len());
    let kickoffs = runs;
    let runs = rows.len();
    // Completed steps that ran again, as the steps themselves saw it in their state.
    let mut step_reruns = Vec::new();
    for (id, status, state) in &rows {
        assert_eq!(status, "completed", "run {id}");
        let state: Progress = serde_json::from_str(state).expect("state");
        assert_eq!(state.done, STEPS, "run {id}: every step applied exactly once, in order");
        step_reruns.extend(state.violations.iter().map(|step| format!("{id} {step}")));
    }

    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let mut effects: HashMap<&str, usize> = HashMap::new();
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut completed: HashSet<&str> = HashSet::new();
    let mut replays_broken = Vec::new();
    // The ledger is in the order things happened: processes never overlap (the next one is
    // spawned after the previous one was reaped).
    for line in text.lines() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("effect"), Some(key), None) => {
                *effects.entry(key).or_default() += 1;
                if completed.contains(key) {
                    replays_broken.push(key);
                }
            }
            (Some("done"), Some(key), None) => {
                completed.insert(key);
            }
            (Some("start"), Some(run), Some(step)) => *starts.entry(format!("{run} {step}")).or_default() += 1,
            // A step whose checkpoint was stored ran again (a kill may have kept it out of the state).
            (Some("VIOLATION"), Some(run), Some(step)) => step_reruns.push(format!("{run} {step} (ledger)")),
            _ => panic!("bad ledger line {line:?}"),
        }
    }
    let repeated_effects: usize = effects.values().map(|n| n - 1).sum();
    let repeated_bodies: usize = starts.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {kills} SIGKILLs over {kickoffs} kickoffs, {runs} runs stored and completed, {} effects \
         ({repeated_effects} ran again after a kill), {repeated_bodies} step bodies ran again, \
         violations: {} step re-runs + {} effect re-runs, {:.1} s",
        effects.len(),
        step_reruns.len(),
        replays_broken.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(step_reruns.is_empty(), "completed steps ran again: {step_reruns:?}");
    assert!(
        replays_broken.is_empty(),
        "{} journaled effects ran their body again instead of replaying: {replays_broken:?}",
        replays_broken.len()
    );
    assert_eq!(starts.len(), runs * STEPS.len(), "every step of every run started");
    assert_eq!(effects.len(), runs * STEPS.len(), "one journaled effect per step");
    assert_eq!(completed.len(), runs * STEPS.len(), "every effect completed");
    assert!(repeated_effects <= kills, "only an effect in flight at a kill may repeat: {repeated_effects} > {kills}");
    assert!(repeated_bodies <= kills, "only a step in flight at a kill may run again: {repeated_bodies} > {kills}");
}
