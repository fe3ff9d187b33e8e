//! The PostgreSQL workloads run through the binary (W6 and takeover start worker processes of
//! it) at small sizes, get the right result and report the fields BENCHMARKS.md reads. Timing
//! is not checked. They need a server: `DATABASE_URL`, else 127.0.0.1:5432; without one they
//! say so and pass, except under `CI=true`, where they fail.

use std::process::Command;

use flow_bench::measure::Record;
use flow_bench::pg;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Whether a server answers; under `CI=true` a missing server is an error.
fn server() -> Result<bool, String> {
    let url = pg::url();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let reached = runtime.block_on(async {
        let config: flow_core::store::tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        let (client, connection) =
            config.connect(flow_core::store::tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.map_err(|e| e.to_string()).map(drop)
    });
    match reached {
        Ok(()) => Ok(true),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => Err(format!("no PostgreSQL at {url}: {e}")),
        Err(e) => {
            eprintln!("skipped: no PostgreSQL at {url} ({e}); set DATABASE_URL");
            Ok(false)
        }
    }
}

/// Runs `flow-bench <args> --reps 1` and returns its record.
fn bench(args: &[&str]) -> Result<Record, Box<dyn std::error::Error + Send + Sync>> {
    let out = Command::new(env!("CARGO_BIN_EXE_flow-bench")).args(args).args(["--reps", "1"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rec = text.lines().rev().find_map(Record::from_line);
    match rec {
        Some(rec) if out.status.success() => Ok(rec),
        _ => Err(format!("flow-bench {args:?}: {} {text} {}", out.status, String::from_utf8_lossy(&out.stderr)).into()),
    }
}

fn num(rec: &Record, key: &str) -> Result<f64, String> {
    rec.num(key).ok_or_else(|| format!("no `{key}` in {}", rec.to_line()))
}

#[test]
fn w5_on_postgres_runs_its_chain_and_its_limit() -> TestResult {
    if !server()? {
        return Ok(());
    }
    let durable = bench(&["w5-pg", "10"])?;
    assert_eq!(durable.get("ok"), Some(&Value::Bool(true)), "{}", durable.to_line());
    assert_eq!(durable.get("counter").and_then(Value::as_u64), Some(10), "{}", durable.to_line());
    let ratio = num(&durable, "per_step_us")? / num(&durable, "bare_commit_us")?;
    assert!((num(&durable, "ratio_to_bare_commit")? - ratio).abs() < 1e-6 * ratio, "{}", durable.to_line());
    let limit = bench(&["w5-pg-limit", "10"])?;
    assert_eq!(num(&limit, "steps")?, 10.0, "{}", limit.to_line());
    Ok(())
}

#[test]
fn w6_adds_up_the_steps_of_every_worker() -> TestResult {
    if !server()? {
        return Ok(());
    }
    for id in ["w6", "w6-limit"] {
        let rec = bench(&[id, "3", "--workers", "2", "--secs", "0.3"])?;
        assert_eq!(rec.get("ok"), Some(&Value::Bool(true)), "{}", rec.to_line());
        assert_eq!(num(&rec, "workers")?, 2.0, "{}", rec.to_line());
        let per_worker = rec.get("per_worker_steps_per_s").and_then(Value::as_array).map(Vec::len);
        assert_eq!(per_worker, Some(2), "{}", rec.to_line());
        let steps = num(&rec, "steps")?;
        // Each worker keeps 3 runs (writers) busy until the deadline, so every one of the 6
        // made at least one.
        assert!(steps >= 6.0, "{}", rec.to_line());
        if id == "w6" {
            assert_eq!(steps % 10.0, 0.0, "W6 counts whole runs of 10 steps: {}", rec.to_line());
        }
        let rate = steps / num(&rec, "wall_s")?;
        assert!((num(&rec, "steps_per_s")? - rate).abs() < 1e-6 * rate, "{}", rec.to_line());
    }
    Ok(())
}

#[test]
fn takeover_finishes_the_run_of_a_killed_worker() -> TestResult {
    if !server()? {
        return Ok(());
    }
    let rec = bench(&["takeover", "300"])?;
    assert_eq!(rec.get("ok"), Some(&Value::Bool(true)), "the survivor completed the run: {}", rec.to_line());
    assert_eq!(num(&rec, "lease_ms")?, 300.0, "{}", rec.to_line());
    assert!(num(&rec, "takeover_s")? <= num(&rec, "recovered_s")?, "{}", rec.to_line());
    Ok(())
}
