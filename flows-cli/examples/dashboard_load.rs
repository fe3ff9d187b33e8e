#![allow(clippy::print_stdout, reason = "a measurement that prints its figures")]

//! How fast the dashboard's pages answer with 100,000 runs in a SQLite store.
//!
//! Fills a fresh store (through the `Store` API: a fifth each completed, failed, paused,
//! running and queued, over four flows), starts the `flows` binary built beside this example
//! (`flows serve --db FILE --port 0`), and times each page over plain HTTP on loopback:
//! the runs list (first page, a status filter, a flow filter, a page deep down through its
//! cursor) and a run page. Prints one line per page with the median and slowest of the
//! requests, in milliseconds.
//!
//! ```text
//! cargo build --release -p flows-cli --bin flows --example dashboard_load
//! target/release/examples/dashboard_load [RUNS] [REQUESTS]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flow_core::store::{
    Commit, NewRun, Placement, RunFilter, RunStatus, Snapshot, SqliteOptions, SqliteStore, Start, Store, Synchronous,
};
use serde_json::json;
use uuid::Uuid;

type Error = Box<dyn std::error::Error>;

fn get(addr: &str, path: &str) -> Result<(u16, usize), Error> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, raw.len()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let requests: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(30);
    let flows = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("flows"))
        .ok_or("cannot find the target directory")?;
    if !flows.is_file() {
        return Err(format!(
            "build the binary first: cargo build --release -p flows-cli --bin flows ({})",
            flows.display()
        )
        .into());
    }

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("runs.db");
    let store = SqliteStore::open_with(SqliteOptions::new(&db).synchronous(Synchronous::Normal)).await?;
    let started = Instant::now();
    let snapshot = Snapshot::encode(&json!({"n": 1, "note": "filler"}), &json!({}))?;
    let statuses = [RunStatus::Completed, RunStatus::Failed, RunStatus::Paused, RunStatus::Running];
    let mut sample = Uuid::nil();
    for i in 0..runs {
        let run_id = Uuid::now_v7();
        let queued = i % 5 == 4;
        let start = if queued {
            Start::Queued { available_at_ms: None }
        } else {
            Start::Leased { owner: "filler".into(), lease: Duration::from_secs(3600) }
        };
        let flow = format!("flow_{}", i % 4);
        store
            .create_run(NewRun {
                run_id,
                flow,
                parent_run_id: None,
                snapshot: snapshot.clone(),
                steps: vec![],
                start,
                placement: Placement::default(),
                graph: None,
            })
            .await?;
        if !queued {
            let status = statuses[i % 5];
            let pause = (status == RunStatus::Paused)
                .then(|| json!({"run_id": run_id, "method": "m", "step_key": "m#0", "prompt": "ok?", "metadata": null, "expected_type": "bool"}));
            store
                .commit(Commit {
                    run_id,
                    epoch: 1,
                    status,
                    snapshot: snapshot.clone(),
                    steps: vec![],
                    step_key: None,
                    output: None,
                    error: (status == RunStatus::Failed).then(|| "boom".to_string()),
                    pause,
                    available_at_ms: None,
                })
                .await?;
        }
        if i == runs / 2 {
            sample = run_id;
        }
    }
    let fill = started.elapsed();
    // A cursor half way down the listing: the page a person reaches by paging far.
    let half = store.list_runs(&RunFilter { limit: Some(runs / 2), ..RunFilter::default() }).await?;
    let deep = half.last().map(|r| format!("{}_{}", r.created_at_ms, r.run_id)).unwrap_or_default();
    drop(store);
    println!("filled {runs} runs in {:.1} s", fill.as_secs_f64());

    let mut child =
        Command::new(&flows).arg("--db").arg(&db).args(["serve", "--port", "0"]).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr = line.trim().trim_start_matches("listening on http://").trim_end_matches('/').to_string();

    let pages = [
        ("runs list, newest 50", "/runs".to_string()),
        ("runs list, status=paused", "/runs?status=paused".to_string()),
        ("runs list, flow=flow_2", "/runs?flow=flow_2".to_string()),
        ("runs list, half way down (cursor)", format!("/runs?before={deep}")),
        ("live rows fragment", "/runs/rows".to_string()),
        ("run page", format!("/runs/{sample}")),
    ];
    println!("{:<36} {:>10} {:>10} {:>8}", "page", "median ms", "max ms", "bytes");
    let mut result = Ok(());
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        for _ in 0..requests {
            let t = Instant::now();
            let (status, n) = get(&addr, path)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = n;
            if status != 200 {
                result = Err(format!("{path} answered {status}"));
            }
        }
        times.sort_by(f64::total_cmp);
        println!("{name:<36} {:>10.2} {:>10.2} {bytes:>8}", times[times.len() / 2], times[times.len() - 1]);
    }
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(Into::into)
}
