//! The README's "Running on many machines", as a test: three worker processes run the same
//! `fleet::cli` the example binary runs (`worker w1` ...), runs are submitted, one worker is
//! killed with SIGKILL while it holds runs, and every run completes, the dead worker's runs
//! finished by the others once its lease lapsed. The surviving workers stop on SIGTERM.
//!
//! PostgreSQL: `DATABASE_URL`, else 127.0.0.1:5432 db `test`, else a throwaway cluster, in a
//! fresh schema; under `CI=true` a missing server fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, reason = "the shared helper has more than this test uses")]
#[path = "../../tests/pg_support/mod.rs"]
mod pg_support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flow_core::RunStatus;
use flow_core::store::RunFilter;
use flow_examples::fleet::{self, Order};

const RUNS: u64 = 200;

/// A worker process of `three_workers_one_killed_every_run_completes`: does nothing when run
/// as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_worker() {
    if let Ok(name) = std::env::var("FLEET_TEST_WORKER") {
        let _ = tracing_subscriber::fmt().with_env_filter("flow_core=info,flow_examples=info").try_init();
        fleet::cli(&["worker".to_string(), name]).await.unwrap();
    }
}

struct Workers(Vec<(String, Child)>);

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_killed_every_run_completes() {
    let Some(db) = pg_support::database("fleet").await else { return };
    let url = db.url();
    let logs = std::env::temp_dir().join(format!("flows-fleet-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).unwrap();
    let mut workers = Workers(Vec::new());
    for name in ["w1", "w2", "w3"] {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["fleet_worker", "--exact", "--nocapture", "--test-threads=1"])
            .env("FLEET_TEST_WORKER", name)
            .env("DATABASE_URL", &url)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        workers.0.push((name.to_string(), child));
    }

    let store = fleet::connect(&url).await.unwrap();
    let ids = fleet::submit(&store, RUNS).await.unwrap();
    assert_eq!(ids.len() as u64, RUNS);

    // Wait until w2 holds runs, then kill it.
    let started = Instant::now();
    let held_by_w2 = || async {
        let running = RunFilter { status: Some(RunStatus::Running), ..RunFilter::default() };
        let mut held = HashSet::new();
        for run in store.list_runs(&running).await.unwrap().iter() {
            let record = store.load_run(run.run_id).await.unwrap();
            if record.status == RunStatus::Running && record.lease_owner.as_deref() == Some("w2") {
                held.insert(run.run_id);
            }
        }
        held
    };
    loop {
        assert!(started.elapsed() < Duration::from_secs(120), "w2 never held a run; logs in {}", logs.display());
        if !held_by_w2().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, mut w2) = workers.0.remove(1);
    w2.kill().unwrap();
    w2.wait().unwrap();
    // Nobody else may take these until the dead worker's lease lapses: these are its runs.
    let orphans = held_by_w2().await;
    assert!(!orphans.is_empty(), "w2 held runs a moment ago and none after its death; logs in {}", logs.display());

    let Ok(watched) =
        tokio::time::timeout(Duration::from_secs(300), fleet::watch(&store, Duration::from_millis(500))).await
    else {
        panic!("the runs did not finish; logs in {}", logs.display())
    };
    let tally = watched.unwrap();
    assert_eq!(tally.total as u64, RUNS);
    assert_eq!(tally.by_status.get("completed").copied(), Some(RUNS as usize), "{tally}");
    assert!(tally.taken_over >= orphans.len(), "{tally}; orphans {}", orphans.len());

    for id in &ids {
        let order: Order = store.load_run(*id).await.unwrap().snapshot.state_as().unwrap();
        assert!(order.charge.is_some() && order.tracking.is_some(), "run {id}: {order:?}");
        let steps: Vec<&str> = order.trail.iter().filter_map(|s| s.split_once('@')).map(|(step, _)| step).collect();
        assert_eq!(steps, ["reserve", "charge", "ship"], "run {id}: every step once: {order:?}");
        if orphans.contains(id) {
            let by = order.finished_by().unwrap();
            assert!(by == "w1" || by == "w3", "run {id}, held by the killed w2, was finished by {by}: {order:?}");
        }
    }

    // A graceful stop: SIGTERM, and the workers exit on their own, successfully.
    for (name, child) in &mut workers.0 {
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM {name}");
        let deadline = Instant::now() + Duration::from_secs(120);
        let exit = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM; log in {}", logs.display());
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(exit.success(), "{name} exited with {exit}; log in {}", logs.display());
        let log = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap();
        assert!(log.contains(&format!("worker {name} done")), "{name}'s log:\n{log}");
    }
    eprintln!("{tally}; w2 held {} runs when killed", orphans.len());
    let _ = std::fs::remove_dir_all(&logs);
}
